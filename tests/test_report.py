"""report.html of runs, evaluations and prepared data; predictions.csv; temperature scaling of the scores
(fitted on validation, built into the saved head so every backend scores alike)."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pandas as pd
import pytest
from conftest import RUN_ARGS, cli, label_ids, train_tiny

from sentitune import LABELS
from sentitune.config import TrainConfig
from sentitune.metrics import calibration_bins, fit_temperature, nll, scale_temperature
from sentitune.predict import Predictor
from sentitune.train import train

HOSTILE = ["<script>window.pwned = 1</script> great", '<img src=x onerror="window.pwned = 2"> awful']


def metric_shown(page: str, key: str) -> str:
    return re.search(rf'data-metric="{key}">([^<]+)<', page).group(1)


def test_a_run_has_a_report_of_its_test_results_training_calibration_errors_and_data(trained_run):
    page = (trained_run / "report.html").read_text()
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "macro_recall", "loss"):
        assert metric_shown(page, key) == f"{metrics['test'][key]:.4f}"
    figures = set(re.findall(r'data-figure="([^"]+)"', page)) | set(
        re.findall(r"data-figure='([^']+)'", page)
    )
    assert {"loss", "reliability", "confidence", "confusion", "error-slices"} <= figures
    assert "most confident mistakes" in page
    assert "Class balance" in page and "Settings" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing loaded from elsewhere
    assert "<script" not in page


def test_calibration_is_fitted_on_validation_and_built_into_the_saved_head(tmp_path, tiny_model, prepared):
    runs = {}
    for mode in ("temperature", "none"):
        runs[mode] = train_tiny(tmp_path / mode, tiny_model, prepared, calibration=mode, precision="fp32")
    calibrated = json.loads((runs["temperature"] / "metrics.json").read_text())
    plain = json.loads((runs["none"] / "metrics.json").read_text())
    assert "calibration" not in plain
    c = calibrated["calibration"]
    assert c["val"]["nll_after"] <= c["val"]["nll_before"] + 1e-9  # the fit minimises validation NLL
    assert calibrated["test"]["accuracy"] == plain["test"]["accuracy"]  # labels unchanged
    assert calibrated["test"]["loss"] == pytest.approx(c["test"]["nll_after"], abs=1e-6)
    texts = pd.read_csv(prepared / "test.csv")["text"].tolist()
    before = Predictor(str(runs["none"]), precision="fp32").probabilities(texts)
    after = Predictor(str(runs["temperature"]), precision="fp32").probabilities(texts)
    assert np.array_equal(before.argmax(axis=1), after.argmax(axis=1))
    np.testing.assert_allclose(after, scale_temperature(before, c["temperature"]), atol=1e-5)


def test_temperature_scaling_cures_an_over_confident_model(tmp_path, tiny_model, prepared):
    """A tiny run trained until it has learned something, its logits then ×5: over-confident. The
    temperature fitted on validation brings the test split's calibration error and NLL down."""
    run = train_tiny(tmp_path / "run", tiny_model, prepared, max_steps=60, batch_size=32, learning_rate=2e-3,
                     calibration="none", precision="fp32")  # fmt: skip
    predictor = Predictor(str(run), precision="fp32")
    splits = {name: pd.read_csv(prepared / f"{name}.csv") for name in ("eval", "test")}
    probs = {
        n: scale_temperature(predictor.probabilities(s["text"].tolist()), 1 / 5) for n, s in splits.items()
    }
    gold = {n: label_ids(s["label"]) for n, s in splits.items()}
    temperature = fit_temperature(gold["eval"], probs["eval"])
    calibrated = scale_temperature(probs["test"], temperature)
    before, after = (
        calibration_bins(gold["test"], probs["test"])[1],
        calibration_bins(gold["test"], calibrated)[1],
    )
    assert after < before
    assert nll(gold["test"], calibrated) < nll(gold["test"], probs["test"])
    assert temperature > 1  # the scores of an over-confident model are softened


def test_evaluate_writes_predictions_and_a_report_that_shows_hostile_text_as_text(run_copy, tmp_path, capsys):
    frame = pd.DataFrame(
        {"text": [*HOSTILE, "just fine", "meh"], "label": ["positive", "negative", "neutral", "neutral"]}
    )
    frame.to_csv(tmp_path / "posts.csv", index=False)
    out = tmp_path / "eval"
    code, printed, err = cli(
        capsys, "evaluate", run_copy, "--data", tmp_path / "posts.csv", "--output-dir", out
    )
    assert code == 0, err
    assert printed.splitlines()[-1] == f"report: {out / 'report.html'}"
    predictions = pd.read_csv(out / "predictions.csv")
    assert list(predictions.columns) == [
        "text",
        "gold",
        "predicted",
        *(f"score_{x}" for x in LABELS),
        "correct",
    ]
    assert predictions["text"].tolist() == frame["text"].tolist()
    assert (predictions["correct"] == (predictions["gold"] == predictions["predicted"])).all()
    np.testing.assert_allclose(predictions[[f"score_{x}" for x in LABELS]].sum(axis=1), 1, atol=1e-5)
    page = (out / "report.html").read_text()
    assert "<script>" not in page and "<img" not in page
    visible = html.unescape(re.sub(r"<[^>]+>", "", page))  # the page's text, as a browser shows it
    for text in HOSTILE:
        assert text in visible
    metrics = json.loads((out / "metrics.json").read_text())
    assert metric_shown(page, "accuracy") == f"{metrics['accuracy']:.4f}"


def test_a_run_without_a_test_split_reports_validation_and_says_so(tmp_path, tiny_model, prepared):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train", "eval"):
        (data / f"{name}.csv").write_bytes((prepared / f"{name}.csv").read_bytes())
    run = tmp_path / "run"
    train(TrainConfig(training_file=str(data / "train.csv"), validation_file=str(data / "eval.csv"),
                      job_dir=str(run), model=str(tiny_model), **{**RUN_ARGS, "eval_every": 2}))  # fmt: skip
    page = (run / "report.html").read_text()
    assert "no test split: the results below are on the validation split" in page
    assert 'data-figure="validation"' in page  # three validations: a curve
    metrics = json.loads((run / "metrics.json").read_text())
    assert metric_shown(page, "accuracy") == f"{metrics['val']['accuracy']:.4f}"
