"""A user's mistake: exit code 2, one `error: ...` line naming the problem and the fix, no traceback,
and nothing written (no output folder, no staging leftovers)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import cli, cli_error, entries, snapshot, walkthrough_frame


@pytest.fixture
def posts(tmp_path, corpus):
    """The walkthrough-schema posts as tmp_path/posts.csv."""
    walkthrough_frame(corpus).to_csv(tmp_path / "posts.csv", index=False)
    return tmp_path / "posts.csv"


def assert_refused(capsys, tmp_path, *args, expected: str) -> str:
    """The command fails with exactly the message `expected`, and leaves tmp_path as it was."""
    before = entries(tmp_path)
    message = cli_error(capsys, *args)
    assert message == expected
    assert entries(tmp_path) == before
    return message


# ----------------------------------------------------------------------------- prepare


def test_prepare_missing_input_file(tmp_path, capsys):
    assert_refused(
        capsys,
        tmp_path,
        "prepare",
        tmp_path / "posts.csv",
        "--output-dir",
        tmp_path / "out",
        expected=f"input not found: {tmp_path}/posts.csv; check the path or URL",
    )


def test_prepare_failure_creates_no_parent_folders(tmp_path, capsys):
    assert_refused(
        capsys,
        tmp_path,
        "prepare",
        tmp_path / "posts.csv",
        "--output-dir",
        tmp_path / "data" / "prepared",
        expected=f"input not found: {tmp_path}/posts.csv; check the path or URL",
    )


def test_prepare_unreadable_url(tmp_path, capsys):
    assert_refused(
        capsys,
        tmp_path,
        "prepare",
        "memory://nope/missing.csv",
        "--output-dir",
        tmp_path / "out",
        expected="input not found: memory://nope/missing.csv; check the path or URL",
    )


def test_prepare_missing_text_column(tmp_path, capsys, corpus):
    pd.DataFrame({"id": range(len(corpus)), "words": corpus["text"], "score": 0.5}).to_csv(
        tmp_path / "posts.csv", index=False
    )
    assert_refused(
        capsys,
        tmp_path,
        "prepare",
        tmp_path / "posts.csv",
        "--output-dir",
        tmp_path / "out",
        expected=f"{tmp_path}/posts.csv has no text column: none is named bodyText, text, tweet, message, content, "
        "body, post, review or comment (columns: id, words, score); pass --text-column words",
    )


def test_prepare_label_that_maps_to_no_class(tmp_path, capsys, corpus):
    labels = corpus["sentiment"].where(corpus.index % 50 != 0, "mixed")
    pd.DataFrame({"text": corpus["text"], "label": labels}).to_csv(tmp_path / "posts.csv", index=False)
    assert_refused(
        capsys,
        tmp_path,
        "prepare",
        tmp_path / "posts.csv",
        "--output-dir",
        tmp_path / "out",
        expected=f"{tmp_path}/posts.csv: label value 'mixed' maps to no class (known: neg, negative, neu, neutral, "
        "pos, positive); add --label-map 'negative=negative,mixed=neutral,neutral=neutral,positive=positive' "
        "to read them as negative, neutral and positive (guessed from the words: check it), or --labels "
        "negative,mixed,neutral,positive to keep them as 4 classes",
    )


def test_prepare_class_too_small_to_stratify(tmp_path, capsys, corpus):
    few = pd.concat([corpus[corpus.sentiment != "positive"], corpus[corpus.sentiment == "positive"][:3]])
    few[["text", "sentiment"]].to_csv(tmp_path / "posts.csv", index=False)
    assert_refused(
        capsys,
        tmp_path,
        "prepare",
        tmp_path / "posts.csv",
        "--output-dir",
        tmp_path / "out",
        expected="class 'positive' has 3 rows, too few to stratify 0.8/0.1/0.1 (needs about 5); add rows, or "
        "lower --val-fraction/--test-fraction",
    )


def test_prepare_nothing_left_after_cleaning(tmp_path, capsys, corpus):
    pd.DataFrame({"bodyText": ["", "   ", None] * 20, "sentiment": 0.5}).to_csv(
        tmp_path / "posts.csv", index=False
    )
    assert_refused(
        capsys,
        tmp_path,
        "prepare",
        tmp_path / "posts.csv",
        "--output-dir",
        tmp_path / "out",
        expected="nothing left after cleaning (60 rows read, 60 empty, 0 without a label); check --text-column "
        "and --label-column",
    )


def test_prepare_refuses_a_folder_holding_splits_unless_overwrite(tmp_path, capsys, posts, prepared):
    out = shutil.copytree(prepared, tmp_path / "out")
    before = snapshot(out)
    assert_refused(
        capsys,
        tmp_path,
        "prepare",
        posts,
        "--output-dir",
        out,
        expected=f"{out} already holds prepared splits (eval.csv, labels.json, prepare_report.json, test.csv); "
        "pass --overwrite to replace it or choose another folder",
    )
    assert snapshot(out) == before

    code, _, err = cli(capsys, "prepare", posts, "--output-dir", out, "--overwrite", "--seed", "5")
    assert code == 0, err
    after = snapshot(out)
    assert sorted(after) == sorted(before)
    assert after["train.csv"] != before["train.csv"]
    assert json.loads(after["prepare_report.json"])["split"]["seed"] == 5


def test_prepare_invalid_options_are_reported_together(tmp_path, capsys, posts):
    assert_refused(
        capsys,
        tmp_path,
        "prepare",
        posts,
        "--output-dir",
        tmp_path / "out",
        "--val-fraction",
        "0.6",
        "--test-fraction",
        "0.5",
        "--neutral-band",
        "-1",
        expected="invalid prepare options: --neutral-band must be >= 0, got -1.0; --val-fraction + "
        "--test-fraction must leave rows for training, got 0.6 + 0.5",
    )


# ----------------------------------------------------------------------------- train


def test_train_without_data(tmp_path, capsys, tiny_model):
    assert_refused(
        capsys,
        tmp_path,
        "train",
        "--job-dir",
        tmp_path / "run",
        "--model",
        tiny_model,
        expected="invalid train options: no training data: pass --data DIR (from `sentitune prepare`) or "
        "--training-file FILE",
    )


def test_train_unreadable_url(tmp_path, capsys, tiny_model):
    assert_refused(
        capsys,
        tmp_path,
        "train",
        "--training-file",
        "memory://nope/missing.csv",
        "--job-dir",
        tmp_path / "run",
        "--model",
        tiny_model,
        expected="input not found: memory://nope/missing.csv; check the path or URL",
    )


def test_train_refuses_a_finished_run_unless_overwrite(tmp_path, capsys, run_copy, prepared, tiny_model):
    before = snapshot(run_copy)
    args = [
        "train",
        "--data",
        prepared,
        "--job-dir",
        run_copy,
        "--model",
        tiny_model,
        "--batch-size",
        "16",
        "--train-eval-examples",
        "20",
    ]
    assert_refused(
        capsys,
        tmp_path,
        *args,
        "--max-steps",
        "2",
        expected=f"{run_copy} already holds a finished run (metrics.json, model.safetensors, run_config.json); "
        "pass --overwrite to replace it or choose another folder",
    )
    assert snapshot(run_copy) == before

    code, _, err = cli(capsys, *args, "--max-steps", "2", "--overwrite")
    assert code == 0, err
    assert json.loads((run_copy / "metrics.json").read_text())["training"]["steps"] == 2


def _gpt2_folder(folder):
    from transformers import GPT2Config, GPT2Model

    GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=100)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "kind,expected",
    [
        (
            "empty folder",
            "model folder {model} has no config.json; pass a Hugging Face model folder or hub id "
            "(e.g. google/bert_uncased_L-2_H-128_A-2)",
        ),
        (
            "gpt2",
            "model {model} is a 'gpt2' model, not a BERT-family encoder; pass an encoder such as bert, "
            "roberta, distilbert or deberta",
        ),
    ],
)
def test_train_refuses_a_model_that_is_not_an_encoder(tmp_path, capsys, prepared, kind, expected):
    model = tmp_path / "model"
    model.mkdir()
    if kind == "gpt2":
        _gpt2_folder(model)
    assert_refused(
        capsys,
        tmp_path,
        "train",
        "--data",
        prepared,
        "--job-dir",
        tmp_path / "run",
        "--model",
        model,
        expected=expected.format(model=model),
    )


def test_train_invalid_options_are_reported_together(tmp_path, capsys, prepared, tiny_model):
    assert_refused(
        capsys,
        tmp_path,
        "train",
        "--data",
        prepared,
        "--job-dir",
        tmp_path / "run",
        "--model",
        tiny_model,
        "--epochs",
        "0",
        "--learning-rate",
        "-1",
        "--max-length",
        "1000",
        expected="invalid train options: --epochs must be in [1, 1000], got 0; --learning-rate must be > 0, "
        "got -1.0; --max-length must be in [1, 512], got 1000",
    )


# ----------------------------------------------------------------------------- the installed command


def test_console_script_reports_a_bad_input_in_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sentitune.cli",
            "prepare",
            str(tmp_path / "missing.csv"),
            "--output-dir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: input not found: {tmp_path / 'missing.csv'}; check the path or URL"
    ]
    assert not (tmp_path / "out").exists()


def test_console_script_help():
    script = shutil.which("sentitune", path=str(Path(sys.executable).parent))
    assert script, "the sentitune console script is not installed next to this Python"
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for command in ("prepare", "train", "evaluate", "predict"):
        assert command in proc.stdout
