"""Any label set: --labels names the classes (binary, 1-5 stars, one's own), --thresholds maps scores onto
them; prepare, train, evaluate, predict, the baseline, ONNX export, the server and the report handle N
classes; a run records its label set and every later command reads it from there."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import RUN_ARGS, cli, cli_error, serving, train_tiny

from sentitune.errors import SentituneError
from sentitune.labels import parse_labels, parse_thresholds, score_to_class
from sentitune.scoring import Predictor

BINARY = ("negative", "positive")
STARS = ("1", "2", "3", "4", "5")
STAR_THRESHOLDS = "-0.5,-0.05,0.05,0.5"


@pytest.mark.fast
def test_a_label_set_is_names_in_order_and_thresholds_increase():
    assert parse_labels(None) == ("negative", "neutral", "positive")
    assert parse_labels(" bad , good ") == ("bad", "good")
    assert parse_thresholds("-0.5,-0.05,0.05,0.5", STARS) == (-0.5, -0.05, 0.05, 0.5)
    for spec, message in (
        ("good", "--labels 'good' names one class; a classifier needs two or more"),
        ("a,,b", "--labels 'a,,b' has an empty name; e.g. --labels negative,positive"),
        ("Good,bad,good", "--labels names good twice; name each class once"),
    ):
        with pytest.raises(SentituneError) as caught:
            parse_labels(spec)
        assert str(caught.value) == message
    for spec, message in (
        ("-0.5,0.5,0.2,0.9", "--thresholds must increase, got -0.5,0.5,0.2,0.9"),
        ("0", "--thresholds gives 1 thresholds for 5 classes (1, 2, 3, 4, 5); give 4, increasing"),
        (
            "a,b,c,d",
            "--thresholds 'a,b,c,d' is not numbers separated by commas; e.g. --thresholds -0.05,0.05",
        ),
        ("-1,0,nan,1", "--thresholds '-1,0,nan,1' must be finite numbers"),
    ):
        with pytest.raises(SentituneError) as caught:
            parse_thresholds(spec, STARS)
        assert str(caught.value) == message


@pytest.mark.fast
def test_a_score_above_a_threshold_moves_up_a_class():
    scores = np.array([-1.0, -0.5, -0.49, -0.05, 0.0, 0.05, 0.06, 0.5, 0.51])
    assert score_to_class(scores, 0.0, (-0.5, -0.05, 0.05, 0.5)).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    assert score_to_class(scores, 0.0, (0.0,)).tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]


@pytest.fixture(scope="module")
def binary_data(tmp_path_factory, tweets):
    """The shared tweets without the neutral ones, prepared with --labels negative,positive."""
    root = tmp_path_factory.mktemp("binary")
    tweets[tweets["label"] != "neutral"].to_csv(root / "posts.csv", index=False)
    code = _main(
        "prepare", root / "posts.csv", "--output-dir", root / "data", "--labels", "negative,positive"
    )
    assert code == 0
    return root / "data"


@pytest.fixture(scope="module")
def star_data(tmp_path_factory, tweets):
    """The shared tweets labelled 1-5 stars by their VADER score through four thresholds."""
    root = tmp_path_factory.mktemp("stars")
    tweets[["text"]].to_csv(root / "posts.csv", index=False)
    code = _main("prepare", root / "posts.csv", "--output-dir", root / "data", "--label-with", "vader",
                 "--labels", ",".join(STARS), "--thresholds", STAR_THRESHOLDS)  # fmt: skip
    assert code == 0
    return root / "data"


def _main(*args) -> int:
    from sentitune.cli import main

    return main([str(a) for a in args])


def test_prepare_writes_the_label_set_and_its_counts(binary_data, star_data):
    assert json.loads((binary_data / "labels.json").read_text()) == {"labels": list(BINARY)}
    report = json.loads((binary_data / "prepare_report.json").read_text())
    assert set(report["class_counts"]["train"]) == set(BINARY) and all(
        report["class_counts"]["train"].values()
    )
    assert set(pd.read_csv(binary_data / "train.csv")["label"]) == set(BINARY)
    assert json.loads((star_data / "labels.json").read_text()) == {
        "labels": list(STARS),
        "score_boundaries": [-0.5, -0.05, 0.05, 0.5],
    }
    report = json.loads((star_data / "prepare_report.json").read_text())
    assert report["labels"] == {
        "source": "vader",
        "rule": "score <= -0.5: 1, -0.5 < score <= -0.05: 2, -0.05 < score <= 0.05: 3, 0.05 < score <= 0.5: 4, "
        "score > 0.5: 5",
    }
    frame = pd.concat(
        pd.read_csv(star_data / f"{s}.csv", dtype={"label": str}) for s in ("train", "eval", "test")
    )
    assert set(frame["label"]) == set(STARS)
    # each post's class is its VADER score through the thresholds
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    vader = SentimentIntensityAnalyzer()
    some = frame.sample(40, random_state=0)
    expected = score_to_class(
        np.array([vader.polarity_scores(t)["compound"] for t in some["text"]]), 0.0, (-0.5, -0.05, 0.05, 0.5)
    )
    assert some["label"].tolist() == [STARS[i] for i in expected]


@pytest.mark.parametrize("which, classes", [("binary", BINARY), ("stars", STARS)])
def test_every_command_handles_the_runs_classes(
    which, classes, binary_data, star_data, tiny_model, tmp_path, capsys
):
    import httpx

    from sentitune.config import ServeSettings
    from sentitune.serve import create_app

    data = binary_data if which == "binary" else star_data
    run = train_tiny(tmp_path / "run", tiny_model, data, precision="fp32", baseline=True)
    assert json.loads((run / "labels.json").read_text()) == {"labels": list(classes)}
    config = json.loads((run / "config.json").read_text())
    assert config["id2label"] == {str(i): c for i, c in enumerate(classes)}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["confusion_matrix"]["labels"] == list(classes)
    assert len(metrics["test"]["confusion_matrix"]["rows_true_columns_predicted"]) == len(classes)
    assert set(metrics["baseline"]["test"]) >= {"accuracy", "macro_f1"}
    card = (run / "README.md").read_text()
    assert "| split | file | posts | " + " | ".join(classes) + " |" in card
    assert all(f">{c}<" in (run / "report.html").read_text() for c in classes)

    # predict: one score column per class, summing to 1
    posts = tmp_path / "posts.csv"
    pd.DataFrame({"text": ["what a great day", "worst service ever", "meeting at noon"]}).to_csv(
        posts, index=False
    )
    code, _, err = cli(capsys, "predict", run, "--input", posts, "--output", tmp_path / "out.csv")
    assert code == 0, err
    out = pd.read_csv(tmp_path / "out.csv", dtype={"label": str})
    scores = [f"score_{c}" for c in classes]
    assert [c for c in out.columns if c.startswith("score_")] == scores
    np.testing.assert_allclose(out[scores].sum(axis=1), 1.0, atol=1e-4)
    assert set(out["label"]) <= set(classes)

    # evaluate on the prepared test split; ONNX gives the same probabilities; the server names the classes
    code, _, err = cli(capsys, "evaluate", run, "--data", data / "test.csv", "--precision", "fp32")
    assert code == 0, err
    evaluation = json.loads((run / "evaluation-test" / "metrics.json").read_text())
    assert (
        evaluation["confusion_matrix"]["labels"] == list(classes)
        and evaluation["examples"] == metrics["test"]["examples"]
    )
    assert cli(capsys, "export", run)[0] == 0
    texts = out["text"].tolist()
    torch_probs = Predictor(str(run), precision="fp32").probabilities(texts)
    assert torch_probs.shape == (3, len(classes))
    np.testing.assert_allclose(
        Predictor(str(run), backend="onnx").probabilities(texts), torch_probs, atol=1e-4
    )
    app = create_app(Predictor(str(run), precision="fp32"), ServeSettings(host="127.0.0.1", port=0))
    with serving(app) as running:
        answer = httpx.post(f"{running.url}/predict", json={"instances": texts}).json()
    assert [list(p["scores"]) for p in answer["predictions"]] == [list(classes)] * 3


def test_a_run_refuses_data_of_another_label_set(binary_data, star_data, tiny_model, tmp_path, capsys):
    run = train_tiny(tmp_path / "run", tiny_model, binary_data, **{**RUN_ARGS, "max_steps": 2})
    message = cli_error(capsys, "evaluate", run, "--data", star_data / "test.csv")
    assert message == (
        f"{star_data / 'test.csv'}: label values '1', '2', '3', '4', '5' are not the classes negative, positive; "
        f"{run} was trained on those classes; evaluate it on data labelled with them"
    )
