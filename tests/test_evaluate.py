"""`sentitune evaluate`: metrics of a run on a labelled file, checked against the Predictor."""

from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd
from helpers import PNG_SIGNATURE, cli, cli_error, label_ids, one_class_run, snapshot

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


def test_a_run_that_gives_every_post_one_class_is_evaluated_with_a_warning(
    capsys, caplog, run_copy, prepared
):
    code, _, err = cli(capsys, "evaluate", one_class_run(run_copy), "--data", prepared / "test.csv")
    assert code == 0, err
    metrics = json.loads((run_copy / "evaluation-test" / "metrics.json").read_text())
    n = metrics["examples"]
    neutral = metrics["per_class"]["neutral"]["support"]
    (warning,) = metrics["warnings"]
    assert (
        f"gives neutral to {n} of the {n} posts of {prepared / 'test.csv'}, {neutral} of which are neutral"
        in warning
    )
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [warning]
    page = (run_copy / "evaluation-test" / "report.html").read_text()
    assert f"<p class='note'>Warning: {html.escape(warning)}.</p>" in page


def test_a_run_that_tells_posts_apart_is_evaluated_without_one(capsys, caplog, run_copy, prepared):
    """The same run whose classifier reads its features a thousand times louder (no bias): its predictions
    follow the posts, and nothing is said; with one class's bias raised, the warning comes."""
    from safetensors.numpy import load_file, save_file

    path = run_copy / "model.safetensors"
    weights = load_file(path)
    (bias,) = [k for k in weights if k.endswith("classifier.bias")]
    (weight,) = [k for k in weights if k.endswith("classifier.weight")]
    weights[weight] = weights[weight] * 1000.0
    weights[bias] = np.zeros_like(weights[bias])
    save_file(weights, path, metadata={"format": "pt"})
    code, _, err = cli(
        capsys, "evaluate", run_copy, "--data", prepared / "test.csv", "--output-dir", run_copy / "a"
    )
    metrics = json.loads((run_copy / "a" / "metrics.json").read_text())
    predicted = np.array(metrics["confusion_matrix"]["rows_true_columns_predicted"]).sum(axis=0)
    assert code == 0 and predicted.max() < 0.98 * metrics["examples"]
    assert "warnings" not in metrics and "class balance" not in caplog.text
    one_class_run(run_copy, "neutral")
    code, _, err = cli(
        capsys, "evaluate", run_copy, "--data", prepared / "test.csv", "--output-dir", run_copy / "b"
    )
    assert code == 0 and "class balance" in caplog.text


def test_training_that_ends_giving_every_post_one_class_says_so_in_the_log_metrics_and_card(
    tmp_path, caplog, run_copy, prepared
):
    from helpers import RUN_ARGS

    from sentitune.config import TrainConfig
    from sentitune.train import train

    start = one_class_run(run_copy)  # trained on from there, too gently to move it
    settings = {**RUN_ARGS, "max_steps": 1, "learning_rate": 1e-9, "calibration": "none"}
    result = train(TrainConfig(data=str(prepared), job_dir=str(tmp_path / "r"), model=str(start), **settings))
    warnings = result.metrics["warnings"]
    assert [w.split(" to ")[0] for w in warnings] == ["the model gives neutral"] * 2
    assert "validation posts" in warnings[0] and "test posts" in warnings[1]
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["warnings"] == warnings
    card = (tmp_path / "r" / "README.md").read_text()
    assert all(f"- **Warning**: {w}." in card for w in warnings)
    page = (tmp_path / "r" / "report.html").read_text()
    assert all(f"<p class='note'>Warning: {html.escape(w)}.</p>" in page for w in warnings)
    assert [r.getMessage() for r in caplog.records if "class balance" in r.getMessage()] == warnings
