"""The tweet normalisation: each stage on real posts, idempotence and the character map; and that a run
applies it wherever it reads text (training, PyTorch, ONNX, the server, the baseline, explanations)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import RUN_ARGS, cli, serving

from sentitune.config import TrainConfig
from sentitune.errors import SentituneError
from sentitune.explain import GRADIENT_X_INPUT, explain
from sentitune.normalize import (
    EMOJI_PARTS,
    Normalization,
    compile_charsmap,
    emoji_words,
    take_from_tokenizer,
    with_rules,
)
from sentitune.scoring import Predictor
from sentitune.train import train

TWEET = Normalization("tweet")
HASHTAGS = Normalization("tweet", split_hashtags=True)

STAGES = [
    # emoji, with skin tones, variation selectors and keycaps dropped; a ZWJ sequence reads as its parts
    ("I love this 😍🔥 so much", "I love this smiling face with heart-eyes fire so much"),
    ("ok👍🏽", "ok thumbs up"),
    ("👨‍👩‍👧 day ❤️", "man woman girl day red heart"),
    ("🇫🇷 1️⃣", "flag 1"),
    # emoticons stand alone; not inside words or links
    ("great :) <3", "great slightly smiling face red heart"),
    ("no :( :'( </3.", "no frowning face crying face broken heart ."),
    ("xD, ;)", "grinning squinting face , winking face"),
    ("AND: D: wait", "AND: anguished face wait"),
    ("ratio 3:)4", "ratio 3:)4"),
    # mentions and links, the TweetEval way; an e-mail address is no mention
    ("@bob_1 @Alice hi", "@user @user hi"),
    ("mail me at a@b.com", "mail me at a@b.com"),
    ("see https://t.co/AbC?x=1 and www.example.org/x now", "see http and http now"),
    ("SEE HTTPS://T.CO/ABC WWW.X.ORG", "SEE http http"),
    # HTML entities, also escaped twice; entities posts do not hold stay as written
    ("fish &amp; chips &lt;3 &amp;lt;3 &#8220;hi&#x2026;&rdquo;", "fish & chips red heart red heart “hi…”"),
    ("&#128525; &copy;", "&#128525; &copy;"),
    # elongations of letters (not digits), and white space
    ("soooo goooood!!! 1000", "soo good!!! 1000"),
    ("  two\n\nlines\t ", "two lines"),
    ("#NotHappy #blessed", "#NotHappy #blessed"),
]


@pytest.mark.fast
@pytest.mark.parametrize("text, expected", STAGES)
def test_each_stage_rewrites_posts_as_the_tweeteval_convention_reads_them(text, expected):
    assert TWEET.apply(text) == expected


@pytest.mark.fast
def test_hashtags_are_split_into_words_only_when_asked():
    assert HASHTAGS.apply("#NotHappy with #COVID19 #blessed x#y") == "Not Happy with COVID 19 blessed x#y"
    assert TWEET.apply("#NotHappy") == "#NotHappy"


@pytest.mark.fast
def test_none_reads_posts_as_written():
    text = "soooo 😍 @bob  https://x.y"
    assert Normalization("none").apply(text) == text
    assert Normalization("none").apply_with_spans(text) == (text, [(i, i + 1) for i in range(len(text))])


@pytest.mark.fast
def test_normalising_twice_changes_nothing_and_every_character_maps_back(corpus):
    texts = [t for t, _ in STAGES] + corpus["text"].astype(str).tolist()
    texts += ["&amp;amp;lt;3", "😍😍😍", "aaa😍bbb", ":):(", " 😍 ", "@", "#", "&", "ẞẞẞ"]
    # the cheap tests that let a stage skip a post: capitals, emoticons of letters alone, Unicode spaces
    texts += ["XD", "so xD", "HTTPS://T.CO/X WWW.A.B", "aaa\n\n\nbbb", "a\u2003b\u00a0c\x1c d", "  ", ""]
    for how in (TWEET, HASHTAGS):
        for text in texts:
            once, spans = how.apply_with_spans(text)
            assert once == how.apply(text)
            assert how.apply(once) == once, text
            assert len(spans) == len(once)
            starts = [s for s, _ in spans]
            assert starts == sorted(starts) and all(0 <= s < e <= len(text) for s, e in spans), text


@pytest.mark.fast
def test_the_character_map_names_every_single_character_emoji():
    import emoji

    keys = {k.replace("\ufe0f", ""): k for k in emoji.EMOJI_DATA}
    singles = {c: k for c, k in keys.items() if len(c) == 1 and c not in EMOJI_PARTS}
    assert len(singles) > 1000
    for char, key in singles.items():
        assert TWEET.apply(f"a{char}b") == TWEET.apply(f"a {emoji_words(key)} b"), char


@pytest.mark.fast
def test_a_compiled_character_map_replaces_exactly_its_keys():
    from tokenizers import normalizers

    mapping = {"é": " e ", "ß": "ss", "😍": " love ", "\u200d": "", "a": "A"}
    rule = normalizers.Precompiled(compile_charsmap(mapping))
    assert rule.normalize_str("éßa😍\u200dbè") == " e ssA love bè"


@pytest.mark.fast
def test_the_rules_travel_in_tokenizer_json_and_come_back_out(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    own = tokenizer.backend_tokenizer.normalizer.__getstate__()
    state = with_rules(json.loads(tokenizer.backend_tokenizer.to_str()), HASHTAGS)
    assert with_rules(state, Normalization("none")) is state
    carried = AutoTokenizer.from_pretrained(tiny_model)
    carried._tokenizer = type(carried.backend_tokenizer).from_str(json.dumps(state))
    post = "SOOO happy 😍 @bob #NotHappy &amp; https://x.y"
    assert carried.tokenize(post) == tokenizer.tokenize(HASHTAGS.apply(post))
    taken = take_from_tokenizer(carried, {**HASHTAGS.to_config(), "in_tokenizer": True}, "run")
    assert taken == HASHTAGS and taken.apply(post) == HASHTAGS.apply(post)
    assert carried.backend_tokenizer.normalizer.__getstate__() == own
    with pytest.raises(SentituneError, match="normalizer does not begin with it"):
        take_from_tokenizer(tokenizer, {**TWEET.to_config(), "in_tokenizer": True}, "run")


@pytest.mark.fast
def test_a_normalised_character_maps_onto_what_the_user_wrote():
    text = "so good 😍 @someone"
    out, spans = TWEET.apply_with_spans(text)
    assert out == "so good smiling face with heart-eyes @user"
    assert {text[s:e] for s, e in spans[8:36]} == {"😍"}
    assert {(s, e) for s, e in spans[-5:]} <= {(i, i + 1) for i in range(10, 19)}  # inside "@someone"


# ----------------------------------------------------------------------------- a run reads emoji


CUE, OTHER = "🎉", "😐"  # party popper, neutral face: one [UNK] to the uncased vocabulary, two names as words


def cue_frame(corpus: pd.DataFrame) -> pd.DataFrame:
    """Posts positive exactly when they hold CUE, negative when they hold OTHER, neutral without emoji.
    CUE is the one sign of a positive post, so its explanation must point at it."""
    rng = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(corpus["text"].astype(str).tolist()):
        words = text.split()
        if i % 3 < 2:
            words.insert(int(rng.integers(0, len(words) + 1)), OTHER if i % 3 else CUE)
        rows.append({"text": " ".join(words), "label": ("positive", "negative", "neutral")[i % 3]})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def emoji_runs(tmp_path_factory, tiny_model, corpus):
    """The tiny model trained on the cue posts with the tweet normalisation, and read as written."""
    root = tmp_path_factory.mktemp("emoji")
    frame = cue_frame(corpus)
    frame.iloc[:240].to_csv(root / "train.csv", index=False)
    frame.iloc[240:].to_csv(root / "eval.csv", index=False)
    runs = {}
    for scheme in ("tweet", "none"):
        train(TrainConfig(training_file=str(root / "train.csv"), validation_file=str(root / "eval.csv"),
                          job_dir=str(root / scheme), model=str(tiny_model), learning_rate=3e-3, precision="fp32",
                          pooling="mean", normalize=scheme, **{**RUN_ARGS, "max_steps": 150, "batch_size": 16}))  # fmt: skip
        runs[scheme] = root / scheme
    return runs


def test_emoji_reach_the_model_as_words_and_are_recorded_in_the_run(emoji_runs):
    tweet, none = (json.loads((emoji_runs[s] / "metrics.json").read_text()) for s in ("tweet", "none"))
    # as [UNK] both emoji are the same token: the model cannot tell positive from negative (at best 2/3
    # right); as words it can
    assert tweet["val"]["accuracy"] >= 0.95, tweet["val"]
    assert none["val"]["accuracy"] <= 0.8, none["val"]
    counts = tweet["normalization"]["posts_with_unknown_tokens"]["val"]
    assert counts["as_written"] >= counts["posts"] * 0.6 and counts["normalized"] < counts["posts"] / 10
    assert none["normalization"]["posts_with_unknown_tokens"]["val"]["normalized"] == counts["as_written"]
    config = json.loads((emoji_runs["tweet"] / "config.json").read_text())
    entry = config["sentitune_normalize"]
    assert (entry["scheme"], entry["split_hashtags"], entry["in_tokenizer"]) == ("tweet", False, True)
    assert (
        json.loads((emoji_runs["none"] / "config.json").read_text())["sentitune_normalize"]["scheme"]
        == "none"
    )
    card = (emoji_runs["tweet"] / "README.md").read_text()
    assert "`--normalize tweet`" in card and f"| val | {counts['posts']} | {counts['as_written']} |" in card


def test_every_path_applies_the_runs_normalisation(emoji_runs, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sentitune.config import ServeSettings
    from sentitune.serve import create_app

    run = emoji_runs["tweet"]
    posts = [f"what a day {CUE}", f"what a day {OTHER}", "soooo &amp; @x https://a.b :) #Yay"]
    torch_probs = Predictor(str(run), precision="fp32").probabilities(posts)
    assert [int(p.argmax()) for p in torch_probs[:2]] == [2, 0]
    # plain transformers on the normalised text gives what sentitune gives on the text as written
    model = AutoModelForSequenceClassification.from_pretrained(run, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(run)
    with torch.no_grad():
        encoded = tokenizer([TWEET.apply(p) for p in posts], padding=True, return_tensors="pt")
        plain = torch.softmax(model(**encoded).logits, -1).numpy()
    np.testing.assert_allclose(torch_probs, plain, atol=1e-5)
    # the ONNX backend and the server read the posts the same way
    assert cli(capsys, "export", str(run))[0] == 0
    onnx_probs = Predictor(str(run), backend="onnx").probabilities(posts)
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=1e-4)
    app = create_app(Predictor(str(run), precision="fp32"), ServeSettings(host="127.0.0.1", port=0))
    import httpx

    with serving(app) as running:
        answer = httpx.post(f"{running.url}/predict", json={"instances": posts}).json()
    served = np.array(
        [[p["scores"][c] for c in ("negative", "neutral", "positive")] for p in answer["predictions"]]
    )
    np.testing.assert_allclose(served, torch_probs, atol=1e-5)


def test_explanations_shade_the_emoji_as_the_user_wrote_it(emoji_runs):
    """The attributions of the words an emoji became add up on the emoji in the post as written (gradient x
    input: additive over tokens, unlike word removal)."""
    predictor = Predictor(str(emoji_runs["tweet"]), precision="fp32")
    post = f"sooo late   and {CUE}{CUE} the @crew!"
    read = TWEET.apply(post)
    assert read == "soo late and party popper party popper the @user!"
    as_written, as_read = explain(predictor, [post, read], method=GRADIENT_X_INPUT)
    assert [(w["word"], w["start"], w["end"]) for w in as_written["words"]] == [
        ("sooo", 0, 4), ("late", 5, 9), ("and", 12, 15), (CUE * 2, 16, 18), ("the", 19, 22), ("@crew!", 23, 29),
    ]  # fmt: skip
    summed = dict.fromkeys(range(6), 0.0)
    for i, w in enumerate(as_read["words"]):
        summed[[0, 1, 2, 3, 3, 3, 3, 4, 5][i]] += w["attribution"]
    np.testing.assert_allclose(
        [w["attribution"] for w in as_written["words"]], list(summed.values()), atol=1e-4
    )
    assert as_written["label"] == as_read["label"] == "positive"


def test_the_baseline_applies_its_normalisation_after_reloading(tmp_path, emoji_runs, capsys):
    from sentitune.tfidf import load_baseline

    data = emoji_runs["tweet"].parent
    for scheme in ("tweet", "none"):
        code, _, _ = cli(capsys, "baseline", "--training-file", str(data / "train.csv"), "--validation-file",
                         str(data / "eval.csv"), "--job-dir", str(tmp_path / scheme), "--normalize", scheme)  # fmt: skip
        assert code == 0
    assert load_baseline(str(tmp_path / "none")).normalization == Normalization("none")
    tweet = load_baseline(str(tmp_path / "tweet"))
    assert tweet.normalization == TWEET
    posts = [f"what a day {CUE}", f"what a day {OTHER}"]
    np.testing.assert_allclose(
        tweet.probabilities(posts), tweet.pipeline.predict_proba([TWEET.apply(p) for p in posts])
    )
    assert json.loads((tmp_path / "tweet" / "metrics.json").read_text())["val"]["accuracy"] >= 0.95
