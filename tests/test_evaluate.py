"""`sentitune evaluate`: metrics of a run on a labelled file, checked against the Predictor."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from helpers import PNG_SIGNATURE, cli, cli_error, label_ids, snapshot

from sentitune import LABELS
from sentitune.config import EvaluateConfig
from sentitune.evaluate import evaluate
from sentitune.scoring import Predictor


def test_evaluate_writes_metrics_that_match_the_predictor(capsys, run_copy, prepared):
    code, out, err = cli(capsys, "evaluate", run_copy, "--data", prepared / "test.csv")
    assert code == 0, err
    folder = run_copy / "evaluation-test"
    assert f"wrote {folder}" in out
    assert (folder / "confusion_matrix.png").read_bytes()[:8] == PNG_SIGNATURE
    metrics = json.loads((folder / "metrics.json").read_text())

    data = pd.read_csv(prepared / "test.csv")
    predicted = [p.label for p in Predictor(str(run_copy)).predict(data["text"].tolist())]
    assert metrics["examples"] == len(data)
    assert metrics["accuracy"] == np.mean(np.array(predicted) == data["label"].to_numpy())
    assert metrics["per_class"]["negative"]["support"] == int((data["label"] == "negative").sum())
    assert f"accuracy {metrics['accuracy']:.4f}" in out


def test_evaluate_refuses_to_overwrite_an_evaluation(tmp_path, capsys, run_copy, prepared):
    assert cli(capsys, "evaluate", run_copy, "--data", prepared / "eval.csv")[0] == 0
    before = snapshot(run_copy)
    message = cli_error(capsys, "evaluate", run_copy, "--data", prepared / "eval.csv")
    assert message == (
        f"{run_copy / 'evaluation-eval'} already holds an evaluation (metrics.json); pass --overwrite to replace "
        "it or choose another folder"
    )
    assert snapshot(run_copy) == before
    code, _, err = cli(capsys, "evaluate", run_copy, "--data", prepared / "eval.csv", "--overwrite")
    assert code == 0, err


def test_python_api_on_the_walkthrough_schema(tmp_path, trained_run, corpus):
    part = corpus[:80]
    pd.DataFrame({"bodyText": part["text"], "Target": label_ids(part["sentiment"])}).to_csv(
        tmp_path / "testing.csv", index=False
    )
    before = snapshot(trained_run)
    cfg = EvaluateConfig(str(trained_run), str(tmp_path / "testing.csv"), output_dir=str(tmp_path / "eval"))
    result = evaluate(cfg)
    assert snapshot(trained_run) == before  # an explicit output folder leaves the run alone
    assert result.output_dir == str(tmp_path / "eval")
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == result.metrics
    probs = Predictor(str(trained_run)).probabilities(part["text"].tolist())
    cm = np.zeros((3, 3), int)
    np.add.at(cm, (label_ids(part["sentiment"]), probs.argmax(axis=1)), 1)
    assert result.metrics["confusion_matrix"]["rows_true_columns_predicted"] == cm.tolist()
    assert result.metrics["confusion_matrix"]["labels"] == list(LABELS)
