"""A run folder read by plain transformers, the tokenizers library alone and the ONNX export scores raw posts
as `sentitune predict` does: the same token ids, probabilities within 1e-4 in fp32, on the check set in
parity_posts.jsonl (emoji, emoticons, mentions, links, HTML entities, elongations, RTL text, special tokens'
text, posts longer than the run's cut and than BERT's 512 positions)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import cli, train_tiny

from sentitune.normalize import NOT_APPLIED_BY, Normalization
from sentitune.runfolder import trained_max_length
from sentitune.scoring import Predictor

CHECK_SET = Path(__file__).with_name("parity_posts.jsonl")
TOLERANCE = 1e-4  # fp32 on both sides; what is left is the order of float sums in differently padded batches
KINDS = {"emoji", "emoticon", "mention", "link", "entity", "elongation", "rtl", "long", "odd"}


def check_set() -> list[dict]:
    """The posts with the kind each stands for: posts of the embedded corpus and SemEval tweets holding
    mentions, links, entities, elongations, emoticons, hashtags and mojibake, the same with emoji put in,
    posts in Arabic, Hebrew and Persian, special tokens' text, odd Unicode, and long posts joined from
    corpus posts (lines end at LF only: posts hold other line breaks)."""
    with CHECK_SET.open(encoding="utf-8", newline="\n") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def posts() -> list[str]:
    return [row["text"] for row in check_set()]


@pytest.fixture(scope="module")
def mean_run(tmp_path_factory, tiny_model, prepared) -> Path:
    """A short run whose head reads the mean of the token states: its folder carries modeling_sentitune.py."""
    return train_tiny(tmp_path_factory.mktemp("parity") / "mean", tiny_model, prepared, pooling="mean")


@pytest.fixture(params=["cls", "mean"])
def run(request, trained_run, mean_run) -> Path:
    return trained_run if request.param == "cls" else mean_run


def reference(run: Path, posts: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """What `sentitune predict` gives for `posts`, in fp32, and the order of its classes."""
    predictor = Predictor(str(run), precision="fp32")
    return predictor.probabilities(posts), predictor.labels


def sentitune_ids(run: Path, posts: list[str]) -> list[list[int]]:
    predictor = Predictor(str(run), precision="fp32")
    tokens = predictor.classifier.encode(posts, predictor.max_length)
    return [tokens.ids[tokens.offsets[i] : tokens.offsets[i + 1]].tolist() for i in range(len(tokens))]


def agreement(got: np.ndarray, expected: np.ndarray) -> str:
    worst = np.abs(got - expected).max(axis=1)
    labels = (got.argmax(1) == expected.argmax(1)).mean()
    return f"max abs difference {worst.max():.2e} (post {int(worst.argmax())}), labels agree {labels:.1%}"


def test_the_check_set_holds_every_kind_of_post_and_some_too_long_for_bert(posts, trained_run):
    rows = check_set()
    kinds = Counter(r["kind"] for r in rows)
    assert len(rows) >= 200 and KINDS <= set(kinds), kinds
    lengths = [len(ids) for ids in sentitune_ids(trained_run, posts)]
    tweet = Normalization("tweet")
    from transformers import AutoTokenizer

    uncut = AutoTokenizer.from_pretrained(trained_run)(posts, truncation=False)["input_ids"]
    assert max(lengths) == trained_max_length(str(trained_run))
    assert sum(len(ids) > 512 for ids in uncut) >= 5
    assert sum(tweet.apply(p) != p for p in posts) >= 200  # the normalisation changes what the model reads


def test_the_tokenizers_library_alone_reads_raw_posts_as_sentitune(run, posts):
    """A server that reads only tokenizer.json (normaliser, truncation and all) gets sentitune's token ids."""
    from tokenizers import Tokenizer

    alone = Tokenizer.from_file(str(run / "tokenizer.json"))
    assert [e.ids for e in alone.encode_batch(posts)] == sentitune_ids(run, posts)


def test_the_tokenizer_cuts_where_the_run_does(run, posts):
    """With the folder's code the tokenizer cuts by default; without it, when asked, at the same place."""
    from transformers import AutoTokenizer

    max_length = trained_max_length(str(run))
    ids = sentitune_ids(run, posts)
    assert json.loads((run / "tokenizer.json").read_text())["truncation"]["max_length"] == max_length
    own = AutoTokenizer.from_pretrained(run, trust_remote_code=True)
    assert type(own).__name__ == "SentituneTokenizerFast" and own.model_max_length == max_length
    assert own(posts)["input_ids"] == ids
    assert own(posts[:3], truncation=False)["input_ids"] == own(posts[:3])["input_ids"]  # short posts
    assert max(len(i) for i in own(posts, truncation=False)["input_ids"]) > 512  # told not to cut
    plain = AutoTokenizer.from_pretrained(run, trust_remote_code=False)
    assert type(plain).__name__ != "SentituneTokenizerFast" and plain.model_max_length == max_length
    assert plain(posts, truncation=True)["input_ids"] == ids
    for tokenizer in (own, plain):  # the encoder's own inputs, as its tokenizer class gave them (BERT's)
        assert list(tokenizer(posts[:2])) == ["input_ids", "token_type_ids", "attention_mask"]
    config = json.loads((run / "config.json").read_text())
    assert config["sentitune_max_length"] == max_length
    assert f"cut at {max_length} tokens" in config["sentitune_truncation"]


def test_pipeline_scores_raw_posts_as_sentitune_predict(run, posts):
    """pipeline() as the model card shows it, given posts as written, long ones included."""
    from transformers import pipeline

    expected, labels = reference(run, posts)
    classify = pipeline("text-classification", model=str(run), trust_remote_code=True, device="cpu")
    assert classify.tokenizer(posts)["input_ids"] == sentitune_ids(run, posts)
    answers = classify(posts, top_k=None, batch_size=32)
    got = np.array(
        [[{a["label"]: a["score"] for a in answer}[name] for name in labels] for answer in answers]
    )
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, err_msg=agreement(got, expected))
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_auto_classes_score_raw_posts_as_sentitune_predict(run, posts):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    expected, _ = reference(run, posts)
    model = AutoModelForSequenceClassification.from_pretrained(run, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(run, trust_remote_code=True)
    with torch.no_grad():
        got = torch.softmax(model(**tokenizer(posts, padding=True, return_tensors="pt")).logits, -1).numpy()
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, err_msg=agreement(got, expected))
    if run.name == "mean":  # its own code cuts an uncut input, here from the tokenizer told not to cut
        uncut = tokenizer(posts, padding=True, truncation=False, return_tensors="pt")
        assert uncut["input_ids"].shape[1] > 512
        with torch.no_grad():
            got = torch.softmax(model(**uncut).logits, -1).numpy()
        np.testing.assert_allclose(got, expected, atol=TOLERANCE, err_msg=agreement(got, expected))


def test_the_onnx_export_with_its_tokenizer_scores_raw_posts_as_sentitune(tmp_path, run, posts, capsys):
    """onnx/ alone (the graph and tokenizer.json, read by onnxruntime and tokenizers) gives sentitune's scores."""
    import shutil

    import onnxruntime as ort
    from tokenizers import Tokenizer

    folder = Path(shutil.copytree(run, tmp_path / run.name))
    expected, _ = reference(folder, posts)
    assert cli(capsys, "export", str(folder))[0] == 0
    tokenizer = Tokenizer.from_file(str(folder / "onnx" / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"))
    session = ort.InferenceSession(str(folder / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = []
    for start in range(0, len(posts), 32):
        batch = tokenizer.encode_batch(posts[start : start + 32])
        feed = {
            "input_ids": np.array([e.ids for e in batch], np.int64),
            "attention_mask": np.array([e.attention_mask for e in batch], np.int64),
        }
        logits = session.run(["logits"], feed)[0]
        got.append(np.exp(logits - logits.max(1, keepdims=True)))
    got = np.concatenate(got)
    got /= got.sum(1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, err_msg=agreement(got, expected))
    onnx = Predictor(str(folder), backend="onnx").probabilities(posts)
    np.testing.assert_allclose(onnx, expected, atol=TOLERANCE, err_msg=agreement(onnx, expected))


def test_loaders_that_cannot_apply_the_normalisation_are_named_in_config_and_card(trained_run):
    """BertTokenizer rebuilds BERT's own normalizer from the vocabulary: it reads an emoji as [UNK], which
    config.json and the card say, naming the rewrite to apply first."""
    from transformers import AutoTokenizer, BertTokenizer

    post = "sooo happy 😍 @bob"
    plain = BertTokenizer.from_pretrained(trained_run)
    assert "[UNK]" in plain.tokenize(post)
    assert plain.tokenize(Normalization("tweet").apply(post)) == AutoTokenizer.from_pretrained(
        trained_run
    ).tokenize(post)
    entry = json.loads((trained_run / "config.json").read_text())["sentitune_normalize"]
    assert entry["not_applied_by"] == NOT_APPLIED_BY and "BertTokenizer" in entry["not_applied_by"]
    card = (trained_run / "README.md").read_text(encoding="utf-8")
    assert (
        "BertTokenizer.from_pretrained" in card
        and "`sentitune.normalize.Normalization('tweet').apply`" in card
    )
    assert "pass `truncation=True`" in card  # what a [CLS] run needs loaded without the folder's code
