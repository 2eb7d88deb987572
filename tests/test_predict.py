"""`sentitune predict` and the Predictor: labels and scores for texts, stdin and files."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import cli, cli_error, entries

from sentitune import LABELS
from sentitune.scoring import Predictor

POSTS = [
    "@united thanks for the quick rebooking, great crew!",
    "My flight got Cancelled Flightled again and nobody at the desk cares",
    "Self-driving cars will be on sale in 2020 according to the report",
    "",
    "#DeflateGate is the only thing on the news tonight",
]


@pytest.fixture(scope="module")
def predictor(trained_run):
    return Predictor(str(trained_run), precision="fp32")


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def assert_prediction(row: dict) -> None:
    assert row["label"] in LABELS
    assert set(row["scores"]) == set(LABELS)
    assert sum(row["scores"].values()) == pytest.approx(1, abs=1e-5)
    assert row["label"] == max(row["scores"], key=row["scores"].get)


def test_texts_as_arguments_print_json_lines(capsys, trained_run, predictor):
    texts = [t for t in POSTS if t]
    code, out, err = cli(capsys, "predict", trained_run, "--precision", "fp32", *texts)
    assert code == 0, err
    rows = json_lines(out)
    assert [r["text"] for r in rows] == texts
    for row, expected in zip(rows, predictor.predict(texts), strict=True):
        assert_prediction(row)
        assert row["scores"] == pytest.approx(expected.scores, abs=1e-5)


def test_texts_from_stdin(capsys, monkeypatch, trained_run):
    monkeypatch.setattr(
        sys, "stdin", io.StringIO("first post about @united\n\n  \nsecond post, a happy one :)\n")
    )
    code, out, err = cli(capsys, "predict", trained_run)
    assert code == 0, err
    rows = json_lines(out)
    assert [r["text"] for r in rows] == ["first post about @united", "second post, a happy one :)"]
    for row in rows:
        assert_prediction(row)


def _write_input(corpus: pd.DataFrame, path) -> pd.DataFrame:
    """40 posts with extra columns, as a CSV with CRLF rows (an Excel export; the bare CR in one
    post is then quoted)."""
    frame = pd.DataFrame(
        {
            "post_id": [f"{i:05d}" for i in range(40)],
            "bodyText": list(corpus["text"][:36]) + ["line one\rline two of the same post", "", "   ", "ok"],
            "likes": [str(i * 3) for i in range(40)],
            "source": ["twitter", "facebook"] * 20,
        }
    )
    frame.to_csv(path, index=False, lineterminator="\r\n")
    assert b'"line one\rline two of the same post"' in path.read_bytes()
    return frame


READERS = {
    "csv": lambda p: pd.read_csv(p, dtype=str, keep_default_na=False),
    "jsonl": lambda p: pd.read_json(p, lines=True, dtype=False).fillna(""),
    "parquet": lambda p: pd.read_parquet(p).fillna(""),
}


@pytest.mark.parametrize("fmt", READERS)
def test_input_file_to_output_file_keeps_every_column_and_row(
    tmp_path, capsys, corpus, trained_run, predictor, fmt
):
    frame = _write_input(corpus, tmp_path / "posts.csv")
    out_path = tmp_path / f"labelled.{fmt}"
    code, out, err = cli(
        capsys,
        "predict",
        trained_run,
        "--precision",
        "fp32",
        "--input",
        tmp_path / "posts.csv",
        "--output",
        out_path,
    )
    assert code == 0, err
    assert "labelled 40 rows" in out

    got = READERS[fmt](out_path)
    assert list(got.columns) == [*frame.columns, "label", "score_negative", "score_neutral", "score_positive"]
    pd.testing.assert_frame_equal(got[frame.columns].astype(str), frame, check_dtype=False)
    scores = got[["score_negative", "score_neutral", "score_positive"]].astype(float).to_numpy()
    np.testing.assert_allclose(scores.sum(axis=1), 1, atol=1e-5)
    assert got["label"].tolist() == [LABELS[i] for i in scores.argmax(axis=1)]
    expected = predictor.probabilities(frame["bodyText"].str.strip().tolist())
    np.testing.assert_allclose(scores, expected, atol=2e-6)
    assert entries(tmp_path) == {"posts.csv", out_path.name}


def test_prefix_keeps_the_files_own_label_column(tmp_path, capsys, corpus, trained_run, predictor):
    frame = _write_input(corpus, tmp_path / "posts.csv")
    frame["label"] = [LABELS[i % 3] for i in range(len(frame))]  # the user's labels: kept as given
    frame.to_csv(tmp_path / "labelled.csv", index=False, lineterminator="\r\n")  # the bare CR quoted
    argv = ["predict", trained_run, "--precision", "fp32", "--input", tmp_path / "labelled.csv"]
    code, out, err = cli(capsys, *argv, "--output", tmp_path / "out.csv", "--prefix", "pred_")
    assert code == 0, err
    got = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    added = ["pred_label", *(f"pred_score_{n}" for n in LABELS)]
    assert list(got.columns) == [*frame.columns, *added]
    assert got["label"].tolist() == frame["label"].tolist()
    expected = predictor.probabilities(frame["bodyText"].str.strip().tolist())
    assert got["pred_label"].tolist() == [LABELS[i] for i in expected.argmax(axis=1)]
    np.testing.assert_allclose(got[added[1:]].astype(float), expected, atol=2e-6)

    code, out, err = cli(capsys, *argv, "--prefix", "pred_")  # JSON lines on stdout: the same columns
    assert code == 0, err
    rows = json_lines(out)
    assert [r["label"] for r in rows] == frame["label"].tolist()
    assert [r["pred_label"] for r in rows] == got["pred_label"].tolist()


def test_input_file_without_output_prints_json_lines(tmp_path, capsys, corpus, trained_run):
    frame = _write_input(corpus, tmp_path / "posts.csv")
    code, out, err = cli(capsys, "predict", trained_run, "--input", tmp_path / "posts.csv")
    assert code == 0, err
    rows = json_lines(out)
    assert [r["post_id"] for r in rows] == frame["post_id"].tolist()
    assert all(r["label"] in LABELS for r in rows)


def test_existing_output_is_refused_without_overwrite(tmp_path, capsys, corpus, trained_run):
    _write_input(corpus, tmp_path / "posts.csv")
    (tmp_path / "labelled.csv").write_text("keep me\n")
    before = entries(tmp_path)
    message = cli_error(
        capsys,
        "predict",
        trained_run,
        "--input",
        tmp_path / "posts.csv",
        "--output",
        tmp_path / "labelled.csv",
    )
    assert message == f"{tmp_path / 'labelled.csv'} exists; pass --overwrite to replace it"
    assert (tmp_path / "labelled.csv").read_text() == "keep me\n"
    assert entries(tmp_path) == before

    code, _, err = cli(
        capsys,
        "predict",
        trained_run,
        "--input",
        tmp_path / "posts.csv",
        "--output",
        tmp_path / "labelled.csv",
        "--overwrite",
    )
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "labelled.csv")) == 40


@pytest.mark.parametrize(
    "args,expected",
    [
        (
            ["some text", "--output", "x.csv"],
            "--output needs --input FILE; texts from arguments or stdin print to stdout",
        ),
        (["some text", "--input", "posts.csv"], "pass texts as arguments or --input FILE, not both"),
    ],
)
def test_conflicting_predict_options(tmp_path, capsys, trained_run, args, expected):
    assert cli_error(capsys, "predict", trained_run, *args) == expected


def test_predict_with_a_folder_that_is_not_a_run(tmp_path, capsys, prepared):
    message = cli_error(capsys, "predict", prepared, "hello")
    assert message == (
        f"{prepared} is not a finished run (no config.json and model.safetensors); pass the --job-dir of a "
        "`sentitune train` run, or a classifier's folder or hub id"
    )
    message = cli_error(capsys, "predict", tmp_path / "nope", "hello")
    assert message == f"run folder not found: {tmp_path / 'nope'}"


def test_batching_does_not_change_probabilities(trained_run, corpus, predictor):
    texts = corpus["text"].tolist()[:50] + POSTS
    batched = predictor.probabilities(texts)
    one_by_one = Predictor(str(trained_run), batch_size=1, precision="fp32")
    single = np.concatenate([one_by_one.probabilities([t]) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    predictions = predictor.predict(texts)
    assert [p.label for p in predictions] == [LABELS[i] for i in single.argmax(axis=1)]
    for p, row in zip(predictions, single, strict=True):
        assert list(p.scores.values()) == pytest.approx(row.tolist(), abs=1e-5)


def test_a_wildcard_labels_every_file_into_a_folder_and_an_interrupted_batch_resumes(
    tmp_path, capsys, corpus, trained_run, predictor
):
    parts = tmp_path / "parts"
    parts.mkdir()
    frame = _write_input(corpus, parts / "a.csv")
    frame.to_json(parts / "b.jsonl", orient="records", lines=True)
    frame.rename(columns={"bodyText": "words"}).to_csv(parts / "c.csv.gz", index=False, lineterminator="\r\n")
    out = tmp_path / "out"

    # c.csv.gz has no bodyText column: the batch stops there, after a and b are complete.
    message = cli_error(capsys, "predict", trained_run, "--input", f"{parts}/*", "--output", f"{out}/")
    assert message == (
        f"{parts / 'c.csv.gz'} has no text column: none is named bodyText, text, tweet, message, content, body, "
        "post, review or comment (columns: post_id, words, likes, source); pass --text-column words"
    )
    assert entries(out) == {"a.csv", "b.jsonl"}
    (out / "a.csv").write_text("finished earlier\n")  # proves the rerun does not redo it

    frame.to_csv(parts / "c.csv.gz", index=False, lineterminator="\r\n")
    code, stdout, err = cli(
        capsys, "predict", trained_run, "--precision", "fp32", "--input", f"{parts}/*", "--output", f"{out}/"
    )
    assert code == 0, err
    assert "labelled 40 rows of 1 files" in stdout and "2 finished earlier, skipped" in stdout
    assert (out / "a.csv").read_text() == "finished earlier\n"
    assert entries(out) == {"a.csv", "b.jsonl", "c.csv"}
    got = pd.read_csv(out / "c.csv", dtype=str)
    assert got["post_id"].tolist() == frame["post_id"].tolist()
    expected = predictor.probabilities(frame["bodyText"].str.strip().tolist())
    np.testing.assert_allclose(
        got[["score_negative", "score_neutral", "score_positive"]].astype(float), expected, atol=2e-6
    )

    code, stdout, err = cli(
        capsys, "predict", trained_run, "--input", f"{parts}/*.csv", "--output", str(out), "--overwrite"
    )
    assert code == 0 and "labelled 40 rows of 1 files" in stdout  # a.csv only: c.csv.gz ends in .gz
    assert len(pd.read_csv(out / "a.csv")) == 40


def test_batch_prediction_bad_inputs(tmp_path, capsys, corpus, trained_run):
    message = cli_error(
        capsys, "predict", trained_run, "--input", f"{tmp_path}/*.csv", "--output", f"{tmp_path}/o/"
    )
    assert message == f"no files match {tmp_path}/*.csv"
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        _write_input(corpus, tmp_path / folder / "posts.csv")
    message = cli_error(
        capsys, "predict", trained_run, "--input", f"{tmp_path}/*/posts.csv", "--output", f"{tmp_path}/o/"
    )
    assert message == (
        f"{tmp_path}/x/posts.csv and {tmp_path}/y/posts.csv would both be written to {tmp_path}/o/posts.csv; "
        "label them in separate runs with different --output folders"
    )
    assert not (tmp_path / "o").exists()


def test_bf16_on_a_cpu_runs_on_weights_cast_once_and_explains_with_the_weights_that_score(
    trained_run, corpus, predictor
):
    import torch

    from sentitune.explain import GRADIENT_X_INPUT, WORD, explain

    bf16 = Predictor(str(trained_run), device="cpu", precision="bf16")
    assert {p.dtype for p in bf16.runner.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in bf16.model.parameters()} == {torch.float32}  # the model as trained, kept
    assert bf16.precision.name == "bf16" and str(bf16.precision).endswith("; weights cast once)")
    assert predictor.runner is predictor.model and not predictor.precision.cast_weights  # fp32: one copy
    texts = corpus["text"].tolist()[:200]
    np.testing.assert_allclose(bf16.probabilities(texts), predictor.probabilities(texts), atol=0.02)
    # occlusion, the default, scores with the bf16 weights the predictions come from: each word's
    # attribution is what removing it does to the bf16 score (within bf16's batch-to-batch 1e-4)
    for text, why in zip(texts[:3], explain(bf16, texts[:3]), strict=True):
        spans = [m.span() for m in WORD.finditer(text)]
        probs = bf16.probabilities([text, *(text[:s] + text[e:] for s, e in spans)])
        label = int(probs[0].argmax())
        assert why["label"] == bf16.labels[label] and why["method"] == "occlusion"
        moves = probs[0, label] - probs[1:, label]
        np.testing.assert_allclose([w["attribution"] for w in why["words"]], moves, atol=2e-4)
    assert explain(bf16, texts[:3]) != explain(predictor, texts[:3])  # not the fp32 model's scores
    # the gradient methods read the fp32 model (bf16 gradients are too coarse to rank words)
    assert explain(bf16, texts[:3], method=GRADIENT_X_INPUT) == explain(
        predictor, texts[:3], method=GRADIENT_X_INPUT
    )


@pytest.mark.precision
@pytest.mark.parametrize("precision", ["fp32", "auto"])
@pytest.mark.parametrize("packing", ["1", "0"])
def test_a_cpu_scores_with_a_frozen_trace_that_gives_the_eager_models_probabilities(
    trained_run, corpus, precision, packing, monkeypatch
):
    """The trace runs what the eager model runs, packed (the default for BERT) or padded: the same
    probabilities on posts it was not traced on (empty, whitespace, emoji, Arabic, far past max_length,
    special tokens' text), in every batch shape."""
    from sentitune.packed import PackedClassifier
    from sentitune.runtime import TracedClassifier, infer_probs

    monkeypatch.setenv("SENTITUNE_PACK", packing)
    predictor = Predictor(str(trained_run), device="cpu", precision=precision)
    if packing == "1":
        assert isinstance(predictor.scorer, PackedClassifier), predictor.scorer_reason
        assert predictor.scorer_reason.startswith("packed posts, TorchScript trace, frozen")
    else:
        assert isinstance(predictor.scorer, TracedClassifier), predictor.scorer_reason
        assert predictor.scorer_reason.startswith("TorchScript trace, frozen")
        assert predictor.scorer_reason.endswith("; padded: SENTITUNE_PACK=0")
    texts = [*corpus["text"].tolist()[:150], *POSTS, "   ", "😀😀 so good", "مرحبا بالعالم", "word " * 3000]
    texts.append("[UNK] [SEP] [CLS] [PAD]")
    tokens = predictor.tokens_of(texts)
    eager = infer_probs(predictor.runner, tokens, predictor.batch_size, predictor.device, predictor.precision)
    np.testing.assert_allclose(predictor.probabilities_of(tokens), eager, atol=2e-3)
    one_by_one = np.concatenate([predictor.probabilities([t]) for t in texts[-8:]])
    np.testing.assert_allclose(one_by_one, eager[-8:], atol=2e-3)


def test_a_trace_that_took_another_path_than_the_model_is_not_used(trained_run, predictor, monkeypatch):
    """A model whose Python branches on its input: the tracer records one branch; the checks on other
    shapes catch it and the eager model runs, with the reason. SENTITUNE_TRACE=0 turns tracing off."""
    from types import SimpleNamespace

    import torch

    from sentitune.runtime import trace_checks, traced_for_inference

    class Branching(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(1, 3)

        def forward(self, input_ids, attention_mask):
            x = self.head(attention_mask.float().sum(-1, keepdim=True))
            if bool(attention_mask.all()):  # no padding in the batch: a path the trace never saw
                x = x * -1
            return SimpleNamespace(logits=x)

    checks = trace_checks(
        lambda t: predictor.classifier.encode(t, predictor.max_length), predictor.max_length
    )
    assert not bool(checks[0][1].all()) and any(bool(mask.all()) for _, mask in checks)
    traced, reason = traced_for_inference(Branching().eval(), checks)
    assert traced is None and reason.startswith("eager: the trace differed from the model by ")
    traced, reason = traced_for_inference(Branching().eval(), checks[:1])  # the checks are what decides
    assert traced is not None
    monkeypatch.setenv("SENTITUNE_TRACE", "0")
    monkeypatch.setenv("SENTITUNE_PACK", "1")  # the packed model is a trace too: off with it
    eager = Predictor(str(trained_run), precision="fp32")
    assert eager.scorer is eager.runner and eager.scorer_reason == "eager: SENTITUNE_TRACE=0"
    np.testing.assert_allclose(eager.probabilities(POSTS), predictor.probabilities(POSTS), atol=1e-5)
