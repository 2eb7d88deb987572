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
from conftest import cli, cli_error, entries, snapshot, walkthrough_frame


@pytest.fixture
def posts(tmp_path, corpus):
    """The walkthrough-schema posts as tmp_path/posts.csv."""
    walkthrough_frame(corpus).to_csv(tmp_path / "posts.csv", index=False)
    return tmp_path / "posts.csv"


def assert_refused(capsys, tmp_path, *args, words: list[str]) -> str:
    """The command fails with a message holding every word in `words`, and leaves tmp_path as it was."""
    before = entries(tmp_path)
    message = cli_error(capsys, *args)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
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
        words=["not found", str(tmp_path / "posts.csv"), "check the path"],
    )


def test_prepare_failure_creates_no_parent_folders(tmp_path, capsys):
    assert_refused(
        capsys,
        tmp_path,
        "prepare",
        tmp_path / "posts.csv",
        "--output-dir",
        tmp_path / "data" / "prepared",
        words=["not found"],
    )


def test_prepare_unreadable_url(tmp_path, capsys):
    assert_refused(
        capsys,
        tmp_path,
        "prepare",
        "memory://nope/missing.csv",
        "--output-dir",
        tmp_path / "out",
        words=["not found", "memory://nope/missing.csv"],
    )


def test_prepare_missing_text_column(tmp_path, capsys, corpus):
    pd.DataFrame({"id": range(len(corpus)), "body": corpus["text"], "score": 0.5}).to_csv(
        tmp_path / "posts.csv", index=False
    )
    assert_refused(
        capsys,
        tmp_path,
        "prepare",
        tmp_path / "posts.csv",
        "--output-dir",
        tmp_path / "out",
        words=["posts.csv", "no column 'bodyText'", "(columns: id, body, score)", "--text-column"],
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
        words=["'mixed'", "maps to no class", "negative", "--label-map"],
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
        words=["'positive'", "3 rows", "too few to stratify", "add rows", "--val-fraction"],
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
        words=["nothing left after cleaning", "60 rows read", "60 empty", "--text-column"],
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
        words=[str(out), "already holds prepared splits", "--overwrite"],
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
        words=["--val-fraction + --test-fraction", "--neutral-band must be >= 0"],
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
        words=["no training data", "--data DIR", "--training-file"],
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
        words=["not found", "memory://nope/missing.csv"],
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
        words=[str(run_copy), "already holds a finished run", "metrics.json", "--overwrite"],
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
    "kind,words",
    [
        ("empty folder", ["no config.json", "Hugging Face model folder"]),
        ("gpt2", ["'gpt2'", "not a BERT-family encoder", "pass an encoder"]),
    ],
)
def test_train_refuses_a_model_that_is_not_an_encoder(tmp_path, capsys, prepared, kind, words):
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
        words=[str(model), *words],
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
        words=["--epochs must be >= 1", "--learning-rate must be > 0", "exceeds BERT's 512"],
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
