"""Classifiers from elsewhere in `predict` and `evaluate`: their labels read onto negative / neutral /
positive (names in any order, LABEL_0..2, 1-5 stars, or --model-labels), probabilities summed where
labels share a class, and labels that map to nothing refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli, cli_error
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sentitune import LABELS
from sentitune.labels import model_label_matrix
from sentitune.scoring import Predictor

POSTS = ["@united thanks for the quick rebooking, great crew!", "ok", "worst. airline. ever."]


def classifier_folder(tmp_path_factory, tiny_model: Path, names: list[str]) -> Path:
    """A sequence classifier as another tool saves it: random head, these labels, standard files."""
    folder = tmp_path_factory.mktemp("foreign")
    torch.manual_seed(len(names))
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    return folder


def own_probabilities(folder: Path) -> np.ndarray:
    """The classifier's probabilities over its own labels, computed with transformers alone (fp32)."""
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokens = AutoTokenizer.from_pretrained(folder)(POSTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**tokens).logits.softmax(-1).numpy()


@pytest.mark.parametrize(
    "names, classes",
    [
        (["Positive", "NEGATIVE", "neutral"], [2, 0, 1]),
        (["LABEL_0", "LABEL_1", "LABEL_2"], [0, 1, 2]),
        (["1 star", "2 stars", "3 stars", "4 stars", "5 stars"], [0, 0, 1, 2, 2]),
        (["NEG", "POS"], [0, 2]),
    ],
)
def test_a_classifiers_labels_are_read_onto_ours_and_its_scores_summed(
    names, classes, tmp_path_factory, tiny_model
):
    folder = classifier_folder(tmp_path_factory, tiny_model, names)
    predictor = Predictor(str(folder), device="cpu", precision="fp32")
    assert predictor.labels == LABELS
    got = predictor.probabilities(POSTS)
    own = own_probabilities(folder)
    expected = np.zeros((len(POSTS), 3), np.float32)
    for column, target in enumerate(classes):
        expected[:, target] += own[:, column]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert [p.label for p in predictor.predict(POSTS)] == [LABELS[i] for i in expected.argmax(axis=1)]


def test_labels_of_our_own_in_our_order_are_left_as_they_are():
    assert model_label_matrix(LABELS, None, "run") is None
    assert model_label_matrix(LABELS, "LABEL_0=negative,LABEL_1=neutral,LABEL_2=positive", "run") is None
    shuffled = model_label_matrix(("positive", "negative", "neutral"), None, "other")
    np.testing.assert_array_equal(shuffled, np.eye(3)[[2, 0, 1]])


def test_labels_that_map_to_nothing_are_refused_or_mapped_by_hand(
    tmp_path_factory, tiny_model, capsys, prepared
):
    folder = classifier_folder(tmp_path_factory, tiny_model, ["sports", "politics", "weather"])
    message = cli_error(capsys, "predict", folder, "hello")
    assert message == (
        f"the labels of {folder} (sports, politics, weather) do not map onto negative, neutral, positive; "
        "say how with --model-labels 'NAME=negative,NAME=neutral,NAME=positive'"
    )
    message = cli_error(
        capsys, "predict", folder, "hello", "--model-labels", "sports=negative,weather=positive"
    )
    assert message == (
        f"--model-labels does not map politics; map every label of {folder}: sports, politics, weather"
    )
    message = cli_error(capsys, "predict", folder, "hello", "--model-labels", "sports=angry")
    assert (
        message
        == "--model-labels maps 'sports' to 'angry', which is no class; use one of negative, neutral, positive"
    )
    message = cli_error(
        capsys,
        "predict",
        folder,
        "hi",
        "--model-labels",
        "sports=negative,politics=negative,weather=negative",
    )
    assert message == f"the labels of {folder} all mean negative; a classifier needs two classes or more"
    code, out, err = cli(
        capsys,
        "predict",
        folder,
        "hello",
        "--model-labels",
        "sports=negative,politics=neutral,weather=positive",
    )
    assert code == 0, err
    row = json.loads(out.splitlines()[0])
    assert row["label"] in LABELS and list(row["scores"]) == list(LABELS)


def test_evaluate_scores_a_classifier_from_elsewhere_on_our_classes(
    tmp_path_factory, tiny_model, capsys, prepared, tmp_path
):
    folder = classifier_folder(
        tmp_path_factory, tiny_model, ["1 star", "2 stars", "3 stars", "4 stars", "5 stars"]
    )
    code, _, err = cli(
        capsys, "evaluate", folder, "--data", prepared / "test.csv", "--output-dir", tmp_path / "eval",
        "--precision", "fp32",
    )  # fmt: skip
    assert code == 0, err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert list(metrics["per_class"]) == list(LABELS)
    assert sum(map(sum, metrics["confusion_matrix"]["rows_true_columns_predicted"])) == metrics["examples"]
    assert not (folder / "evaluation-test").exists()  # --output-dir given: the model's folder untouched


def test_a_hub_model_needs_an_output_folder_for_its_evaluation(capsys, prepared):
    message = cli_error(capsys, "evaluate", "someone/sentiment-model", "--data", prepared / "test.csv")
    assert message == (
        "someone/sentiment-model is a hub model, with no folder here for its results: pass --output-dir"
    )


def test_evaluate_puts_a_run_and_classifiers_from_elsewhere_side_by_side(
    tmp_path_factory, tiny_model, trained_run, capsys, prepared, tmp_path
):
    stars = classifier_folder(
        tmp_path_factory, tiny_model, ["1 star", "2 stars", "3 stars", "4 stars", "5 stars"]
    )
    generic = classifier_folder(tmp_path_factory, tiny_model, ["LABEL_0", "LABEL_1", "LABEL_2"])
    code, out, err = cli(
        capsys, "evaluate", trained_run, stars, generic, "--data", prepared / "test.csv",
        "--output-dir", tmp_path / "compared", "--precision", "fp32",
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "| model | examples | accuracy | macro-F1 | macro-recall | examples/s |"
    rows = [line for line in lines[2:] if line.startswith("| ")]
    assert [row.split(" | ")[0][2:] for row in rows] == [str(trained_run), str(stars), str(generic)]
    for row, folder in zip(rows, ("run", stars.name, generic.name), strict=True):
        metrics = json.loads((tmp_path / "compared" / folder / "metrics.json").read_text())
        low, high = metrics["intervals_95"]["macro_f1"]
        assert f" | {metrics['examples']} | {metrics['accuracy']:.4f} (" in row
        assert f" | {metrics['macro_f1']:.4f} ({low:.4f}-{high:.4f}) | " in row
        assert metrics["examples_per_s"] > 0 and row.endswith(f" | {metrics['examples_per_s']:,.0f} |")
    message = cli_error(
        capsys,
        "evaluate",
        trained_run,
        trained_run,
        "--data",
        prepared / "test.csv",
        "--output-dir",
        tmp_path / "x",
    )
    assert message == "a model is named twice; name each model to compare once"
