"""`sentitune baseline`: TF-IDF + logistic regression run folders, the pickle-free model and its reload."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import PNG_SIGNATURE, TWEETS, cli, cli_error, entries, require_shared, snapshot

from sentitune import LABELS
from sentitune.baseline import BaselineConfig, baseline
from sentitune.cli import build_parser, main
from sentitune.metrics import classification_metrics
from sentitune.splits import read_labelled
from sentitune.storage import StagedOutput
from sentitune.tfidf import fit, load_baseline

pytest.importorskip("sklearn", reason="the baseline needs scikit-learn: pip install 'sentitune[baseline]'")

RUN_FILES = {
    ".sentitune-output.json",
    "metrics.json",
    "confusion_matrix.png",
    "baseline.json",
    "baseline.safetensors",
}
METRIC_KEYS = {"examples", "loss", "accuracy", "macro_f1", "macro_recall", "per_class", "confusion_matrix"}


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory, prepared) -> tuple[Path, str]:
    """One `sentitune baseline --data prepared` run folder and its stdout (read-only)."""
    root = tmp_path_factory.mktemp("baseline")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # capsys is per test; this folder is shared by the module
        assert main(["baseline", "--data", str(prepared), "--job-dir", str(root / "run")]) == 0
    return root / "run", out.getvalue()


def test_baseline_writes_a_run_folder_in_trains_layout(baseline_run, prepared):
    run, out = baseline_run
    assert entries(run.parent) == {"run"}  # no staging folder left behind
    assert entries(run) == RUN_FILES
    assert (run / "confusion_matrix.png").read_bytes()[:8] == PNG_SIGNATURE
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"train", "val", "test", "training"}
    for split in ("train", "val", "test"):
        assert METRIC_KEYS <= set(metrics[split])
        assert metrics[split]["confusion_matrix"]["labels"] == list(LABELS)
    test = pd.read_csv(prepared / "test.csv")
    assert metrics["test"]["examples"] == len(test)
    assert metrics["test"]["per_class"]["negative"]["support"] == int((test["label"] == "negative").sum())
    training = metrics["training"]
    assert training["wall_s"] > 0 and training["fit_s"] > 0 and training["converged"]
    assert training["settings"]["c"] == 0.5 and training["settings"]["class_weights"] == "auto"
    assert training["examples"] == len(pd.read_csv(prepared / "train.csv"))
    assert set(training["features"]) == {"word", "char"} and min(training["features"].values()) > 0
    t = metrics["test"]
    assert (
        f"baseline test accuracy {t['accuracy']:.4f}, macro-F1 {t['macro_f1']:.4f}, "
        f"macro-recall {t['macro_recall']:.4f}"
    ) in out
    assert f"run folder: {run}" in out


def test_the_saved_model_is_json_and_safetensors_and_reloads_to_the_same_metrics(baseline_run, prepared):
    from safetensors.numpy import load_file

    run, _ = baseline_run
    document = json.loads((run / "baseline.json").read_text())
    assert document["labels"] == list(LABELS)
    arrays = load_file(str(run / "baseline.safetensors"))
    for name in ("word", "char"):
        assert len(document["vectorizers"][name]["vocabulary"]) == len(arrays[f"{name}.idf"])
    assert arrays["classifier.coef"].shape == (3, len(arrays["word.idf"]) + len(arrays["char.idf"]))

    model = load_baseline(str(run))
    test = read_labelled(str(prepared / "test.csv"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert classification_metrics(test.labels, model.probabilities(test.texts), LABELS) == metrics["test"]
    assert model.predict(["what a great day"])[0] in LABELS


def test_reloaded_model_gives_identical_probabilities(tmp_path, prepared, tweets):
    cfg = BaselineConfig(data=str(prepared), job_dir=str(tmp_path / "run"))
    model, _ = fit(cfg, read_labelled(str(prepared / "train.csv")))
    out = StagedOutput(cfg.job_dir, occupied_by=[], marker="baseline.json", what="", overwrite=False)
    model.save(out)
    out.commit()
    texts = tweets["text"].tolist()  # unseen posts: n-grams outside the vocabulary too
    reloaded = load_baseline(cfg.job_dir)
    np.testing.assert_array_equal(reloaded.probabilities(texts), model.probabilities(texts))
    assert reloaded.probabilities(texts).shape == (len(texts), len(LABELS))


def test_walkthrough_file_flags_without_a_test_file(tmp_path, capsys, prepared):
    code, out, err = cli(
        capsys,
        "baseline",
        "--training-file",
        prepared / "train.csv",
        "--validation-file",
        prepared / "eval.csv",
        "--job-dir",
        tmp_path / "run",
        "--c",
        "2",
        "--class-weights",
        "none",
        "--train-eval-examples",
        "0",
    )
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics) == {"val", "training"}
    assert metrics["training"]["settings"]["c"] == 2.0
    assert metrics["training"]["settings"]["class_weights"] == "none"
    assert "baseline validation accuracy" in out
    assert (tmp_path / "run" / "confusion_matrix.png").is_file()


def test_missing_scikit_learn_says_which_extra_installs_it(tmp_path, capsys, monkeypatch, prepared):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    build_parser()  # --help works without the extra
    message = cli_error(capsys, "baseline", "--data", prepared, "--job-dir", tmp_path / "run")
    assert message == (
        "sentitune baseline needs the Python package 'sklearn', which is not installed; "
        "run: pip install 'sentitune[baseline]'"
    )
    assert entries(tmp_path) == set()


def test_refuses_an_occupied_job_dir(tmp_path, capsys, baseline_run, prepared):
    run = Path(shutil.copytree(baseline_run[0], tmp_path / "run"))
    before = snapshot(run)
    message = cli_error(capsys, "baseline", "--data", prepared, "--job-dir", run)
    assert message == (
        f"{run} already holds a finished run (baseline.json, baseline.safetensors, metrics.json); "
        "pass --overwrite to replace it or choose another folder"
    )
    assert snapshot(run) == before
    assert entries(tmp_path) == {"run"}
    code, _, err = cli(capsys, "baseline", "--data", prepared, "--job-dir", run, "--overwrite")
    assert code == 0, err


def test_option_problems_are_reported_together(tmp_path, capsys, prepared):
    message = cli_error(
        capsys,
        "baseline",
        "--data",
        prepared,
        "--training-file",
        prepared / "train.csv",
        "--job-dir",
        tmp_path / "run",
        "--c",
        "0",
    )
    assert message == (
        "invalid baseline options: --c must be in (0, 1000000], got 0.0; pass either --data DIR or "
        "--training-file/--validation-file/--testing-file"
    )


def test_a_class_missing_from_training_is_named(tmp_path, capsys, prepared):
    train = pd.read_csv(prepared / "train.csv")
    train[train["label"] != "neutral"].to_csv(tmp_path / "train.csv", index=False)
    message = cli_error(
        capsys, "baseline", "--training-file", tmp_path / "train.csv", "--job-dir", tmp_path / "run"
    )
    assert message == (
        f"{tmp_path / 'train.csv'} has no training posts of class neutral; "
        "the baseline needs examples of every class"
    )
    assert entries(tmp_path) == {"train.csv"}


@pytest.mark.slow
def test_baseline_beats_the_published_svm_level_on_tweeteval_val(tmp_path):
    val = TWEETS.parent / "val.csv"
    require_shared(TWEETS, val)
    result = baseline(
        BaselineConfig(training_file=str(TWEETS), validation_file=str(val), job_dir=str(tmp_path / "run"))
    )
    assert result.metrics["val"]["examples"] == 2000
    assert result.metrics["val"]["macro_recall"] >= 0.60  # published SVM / FastText: 62.9 (test split)
    assert result.metrics["training"]["wall_s"] > 0
    assert result.metrics["training"]["converged"]
