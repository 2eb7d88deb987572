"""`sentitune train`: the run folder, the walkthrough's flags, layer options, determinism, early stopping,
calibration kept only where it helps."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import PNG_SIGNATURE, RUN_ARGS, cli, cli_error, entries, label_ids, read_splits, scalars
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from sentitune import LABELS
from sentitune.card import base_model_of
from sentitune.cli import build_parser
from sentitune.config import TrainConfig, from_namespace
from sentitune.events import TuningReport
from sentitune.metrics import classification_metrics, nll, scale_temperature
from sentitune.model import load_classifier
from sentitune.splits import LabelledTexts, read_labelled
from sentitune.train import calibrate, train

METRIC_KEYS = {"examples", "loss", "accuracy", "macro_f1", "macro_recall", "per_class", "confusion_matrix"}


def weights(folder) -> dict[str, torch.Tensor]:
    """The encoder and head tensors of a saved model, named as in a base BertModel (no `bert.` prefix)."""
    return {k.removeprefix("bert."): v for k, v in load_file(str(folder / "model.safetensors")).items()}


def train_cli(capsys, prepared, tiny_model, job_dir, *flags) -> dict:
    code, out, err = cli(
        capsys,
        "train",
        "--data",
        prepared,
        "--job-dir",
        job_dir,
        "--model",
        tiny_model,
        "--batch-size",
        "16",
        "--train-eval-examples",
        "20",
        *flags,
    )
    assert code == 0, err
    assert f"run folder: {job_dir}" in out
    return json.loads((job_dir / "metrics.json").read_text())


def changed(a: dict, b: dict, prefix: str) -> set[bool]:
    names = [k for k in b if k.startswith(prefix)]
    assert names, prefix
    return {not torch.equal(a[k], b[k]) for k in names}


# ----------------------------------------------------------------------------- the run folder


def test_run_folder_is_complete_and_self_describing(trained_run, prepared):
    names = {p.name for p in trained_run.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "metrics.json",
        "history.jsonl",
        "run_config.json",
        "labels.json",
        "training_curves.png",
        "confusion_matrix.png",
    } <= names
    assert [n for n in names if n.startswith(".")] == [".sentitune-output.json"]  # no staging or lock left

    config = json.loads((trained_run / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    assert config["architectures"] == ["BertForSequenceClassification"]

    metrics = json.loads((trained_run / "metrics.json").read_text())
    for split in ("train", "val", "test"):
        m = metrics[split]
        assert METRIC_KEYS <= set(m), split
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1 and 0 <= m["macro_recall"] <= 1
        assert np.isfinite(m["loss"]) and m["loss"] > 0
        assert set(m["per_class"]) == set(LABELS)
        for c in m["per_class"].values():
            assert {"precision", "recall", "f1", "support"} <= set(c)
        cm = np.array(m["confusion_matrix"]["rows_true_columns_predicted"])
        assert cm.shape == (3, 3) and cm.sum() == m["examples"]
        assert [c["support"] for c in m["per_class"].values()] == cm.sum(axis=1).tolist()
        assert m["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert metrics["train"]["examples"] == 50
    assert metrics["training"]["steps"] == RUN_ARGS["max_steps"]
    assert metrics["test"]["examples"] == len(read_labelled(str(prepared / "test.csv")))

    history = [json.loads(line) for line in (trained_run / "history.jsonl").read_text().splitlines()]
    assert [row["step"] for row in history] == [RUN_ARGS["max_steps"]]  # one validation: at the last step
    assert {"val_loss", "val_accuracy", "val_macro_f1", "val_macro_recall", "train_loss"} <= set(history[0])

    run_config = json.loads((trained_run / "run_config.json").read_text())
    assert run_config["train"]["max_steps"] == RUN_ARGS["max_steps"]
    assert run_config["train"]["data"] == str(prepared)
    assert run_config["labels"] == list(LABELS)
    assert run_config["model"]["layers"] == 2

    for plot in ("training_curves.png", "confusion_matrix.png"):
        assert (trained_run / plot).read_bytes()[:8] == PNG_SIGNATURE


def test_run_folder_loads_with_plain_transformers(trained_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(trained_run).eval()
    tokenizer = AutoTokenizer.from_pretrained(trained_run)
    with torch.no_grad():
        logits = model(**tokenizer(["@united thanks for the upgrade!"], return_tensors="pt")).logits
    assert logits.shape == (1, 3)
    assert model.config.id2label[2] == "positive"


def _walkthrough_files(folder, corpus):
    """The walkthrough's split files: text in `bodyText`, class id in `Target` (0/1/2)."""
    frame = pd.DataFrame({"bodyText": corpus["text"], "Target": label_ids(corpus["sentiment"])})
    paths = {}
    for name, part in (("train", frame[:240]), ("validation", frame[240:270]), ("test", frame[270:])):
        paths[name] = folder / f"{name}.csv"
        part.to_csv(paths[name], index=False)
    return paths


def test_walkthrough_job_arguments(tmp_path, capsys, corpus, tiny_model):
    files = _walkthrough_files(tmp_path, corpus)
    code, out, err = cli(
        capsys,
        "train",
        "--training-file",
        files["train"],
        "--validation-file",
        files["validation"],
        "--testing-file",
        files["test"],
        "--job-dir",
        tmp_path / "job",
        "--epochs",
        "1",
        "--batch-size",
        "128",
        "--learning-rate",
        "0.0001",
        "--model",
        tiny_model,
        "--min-steps",  # 240 posts make 2 steps an epoch: exactly the one epoch asked for
        "0",
    )
    assert code == 0, err
    assert "test accuracy" in out

    metrics = json.loads((tmp_path / "job" / "metrics.json").read_text())
    assert metrics["training"]["steps"] == 2  # ceil(240 / 128): one epoch
    assert metrics["test"]["examples"] == 30 and metrics["val"]["examples"] == 30
    run_config = json.loads((tmp_path / "job" / "run_config.json").read_text())
    assert run_config["train"]["learning_rate"] == 0.0001
    for name, split in (("train", "train"), ("val", "validation"), ("test", "test")):
        counts = pd.read_csv(files[split])["Target"].value_counts()
        assert run_config["data"][name]["class_counts"] == {
            label: int(counts.get(i, 0)) for i, label in enumerate(LABELS)
        }


def test_target_ids_are_class_ids_even_when_a_file_lacks_class_2(tmp_path, corpus):
    # a small validation file of the walkthrough's schema that happens to hold no positive post
    part = corpus[corpus.sentiment != "positive"][:40]
    pd.DataFrame({"bodyText": part["text"], "Target": label_ids(part["sentiment"])}).to_csv(
        tmp_path / "validation.csv", index=False
    )
    got = read_labelled(str(tmp_path / "validation.csv"))
    assert got.labels.tolist() == label_ids(part["sentiment"]).tolist()


def test_dry_run_writes_nothing(tmp_path, capsys, prepared, tiny_model):
    before = entries(tmp_path)
    code, _, err = cli(
        capsys, "train", "--data", prepared, "--job-dir", tmp_path / "job", "--model", tiny_model, "--dry-run"
    )
    assert code == 0, err
    assert not (tmp_path / "job").exists()
    assert entries(tmp_path) == before


# ----------------------------------------------------------------------------- model options


def test_keep_layers_saves_a_smaller_model(tmp_path, capsys, prepared, tiny_model):
    train_cli(capsys, prepared, tiny_model, tmp_path / "job", "--max-steps", "2", "--keep-layers", "1")
    assert json.loads((tmp_path / "job" / "config.json").read_text())["num_hidden_layers"] == 1
    saved = weights(tmp_path / "job")
    assert any(k.startswith("encoder.layer.0.") for k in saved)
    assert not any(k.startswith("encoder.layer.1.") for k in saved)

    from sentitune.scoring import Predictor

    assert Predictor(str(tmp_path / "job")).predict(["on time and friendly crew"])[0].label in LABELS


def test_train_head_only_leaves_the_encoder_unchanged(tmp_path, capsys, prepared, tiny_model):
    train_cli(
        capsys,
        prepared,
        tiny_model,
        tmp_path / "job",
        "--max-steps",
        "3",
        "--learning-rate",
        "0.01",
        "--train-head-only",
    )
    before, after = weights(tiny_model), weights(tmp_path / "job")
    assert changed(before, after, "embeddings.") == {False}
    assert changed(before, after, "encoder.") == {False}
    assert changed(before, after, "pooler.") == {False}
    run_config = json.loads((tmp_path / "job" / "run_config.json").read_text())
    assert run_config["model"]["trainable_parameters"] == 32 * 3 + 3


def test_freeze_layers_freezes_embeddings_and_the_first_layers(tmp_path, capsys, prepared, tiny_model):
    train_cli(
        capsys,
        prepared,
        tiny_model,
        tmp_path / "job",
        "--max-steps",
        "3",
        "--learning-rate",
        "0.01",
        "--freeze-layers",
        "1",
    )
    before, after = weights(tiny_model), weights(tmp_path / "job")
    assert changed(before, after, "embeddings.") == {False}
    assert changed(before, after, "encoder.layer.0.") == {False}
    assert True in changed(before, after, "encoder.layer.1.")


def test_same_seed_gives_identical_weights(tmp_path, trained_run, prepared, tiny_model):
    result = train(
        TrainConfig(data=str(prepared), job_dir=str(tmp_path / "again"), model=str(tiny_model), **RUN_ARGS)
    )
    assert result.run_dir == str(tmp_path / "again")
    assert result.metrics["test"] == json.loads((tmp_path / "again" / "metrics.json").read_text())["test"]
    first, again = weights(trained_run), weights(tmp_path / "again")
    assert first.keys() == again.keys()
    for name in first:
        assert torch.equal(first[name], again[name]), name
    # and the training did change the weights it started from
    assert True in changed(weights(tiny_model), again, "encoder.")


def test_early_stopping_when_macro_f1_does_not_improve(tmp_path, capsys, prepared, tiny_model):
    metrics = train_cli(
        capsys,
        prepared,
        tiny_model,
        tmp_path / "job",
        "--max-steps",
        "12",
        "--eval-every",
        "1",
        "--early-stopping-patience",
        "2",
        "--learning-rate",
        "1e-9",
    )
    history = [json.loads(line) for line in (tmp_path / "job" / "history.jsonl").read_text().splitlines()]
    assert len(history) == 2 + 1
    assert [row["step"] for row in history] == [1, 2, 3]
    assert metrics["training"]["stopped_early"] is True
    assert metrics["training"]["steps"] == 3


def test_class_weights_auto(tmp_path, capsys, prepared, tiny_model):
    metrics = train_cli(
        capsys, prepared, tiny_model, tmp_path / "job", "--max-steps", "2", "--class-weights", "auto"
    )
    assert metrics["training"]["steps"] == 2
    assert json.loads((tmp_path / "job" / "run_config.json").read_text())["train"]["class_weights"] == "auto"


def test_the_loss_weights_each_class_by_its_inverse_frequency_and_smooths_labels():
    from sentitune.train import BatchLoss

    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)  # the training labels: 60 / 30 / 10 %
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 0.0, 3.0], [0.5, 0.5, 0.0]])
    rows = np.array([0, 6, 9, 1])  # a batch of training rows: classes 0, 1, 2, 0
    y = torch.from_numpy(labels[rows])
    ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    weight = torch.tensor([10 / 18, 10 / 9, 10 / 3])[y]  # n / (classes x count)

    loss, per_example = BatchLoss(labels, TrainConfig(data="d", class_weights="auto"), torch.device("cpu"))(
        logits, y, rows
    )
    torch.testing.assert_close(per_example, ce)
    torch.testing.assert_close(loss, (weight * ce).sum() / weight.sum())
    loss, _ = BatchLoss(labels, TrainConfig(data="d"), torch.device("cpu"))(logits, y, rows)
    torch.testing.assert_close(loss, ce.mean())

    eps = 0.2
    log_p = torch.log_softmax(logits, dim=-1)
    smoothed = (1 - eps) * ce - eps * log_p.mean(dim=-1)
    loss, _ = BatchLoss(labels, TrainConfig(data="d", label_smoothing=eps), torch.device("cpu"))(
        logits, y, rows
    )
    torch.testing.assert_close(loss, smoothed.mean())


def test_class_weights_change_what_an_imbalanced_run_learns(tmp_path, capsys, prepared, tiny_model):
    train = pd.read_csv(prepared / "train.csv")
    keep = train[(train["label"] != "positive") | (train.index % 4 == 0)]  # a quarter of the positives
    keep.to_csv(tmp_path / "train.csv", index=False)
    common = ["--training-file", tmp_path / "train.csv", "--max-steps", "4", "--train-eval-examples", "0"]
    weights = {}
    for mode in ("none", "auto"):
        code, _, err = cli(
            capsys,
            *("train", *common, "--model", tiny_model, "--job-dir", tmp_path / mode, "--class-weights", mode),
        )
        assert code == 0, err
        weights[mode] = load_file(str(tmp_path / mode / "model.safetensors"))
    assert any(changed(weights["none"], weights["auto"], "classifier."))


def test_model_card_states_data_metrics_intervals_and_limits(trained_run):
    card = (trained_run / "README.md").read_text()
    metrics = json.loads((trained_run / "metrics.json").read_text())
    config = json.loads((trained_run / "run_config.json").read_text())
    for name in ("train", "val", "test"):
        assert f"| {name} | `{config['data'][name]['path']}` | {config['data'][name]['examples']} |" in card
    for name in ("val", "test"):
        m = metrics[name]
        low, high = m["intervals_95"]["macro_f1"]
        assert low <= m["macro_f1"] <= high
        assert f"| {name} | {m['examples']} | {m['accuracy']:.3f} (" in card
        assert f"{m['macro_f1']:.3f} ({low:.3f}–{high:.3f})" in card
        assert 0 <= m["posts_with_unknown_tokens"] <= m["examples"]
    cm = metrics["test"]["confusion_matrix"]["rows_true_columns_predicted"]
    assert "| negative | " + " | ".join(str(v) for v in cm[0]) + " |" in card
    assert "## Known limits" in card and "Sarcasm" in card


def test_a_run_replayed_from_its_run_config_ends_with_its_weights(capsys, tmp_path, trained_run):
    code, _, err = cli(capsys, "train", "--config", trained_run, "--job-dir", tmp_path / "replay")
    assert code == 0, err
    first, again = weights(trained_run), weights(tmp_path / "replay")
    assert all(torch.equal(first[name], again[name]) for name in first)
    recorded = json.loads((trained_run / "run_config.json").read_text())["train"]
    replayed = json.loads((tmp_path / "replay" / "run_config.json").read_text())["train"]
    assert replayed["config"] == str(trained_run) and replayed["job_dir"] == str(tmp_path / "replay")
    for key in set(recorded) - TrainConfig.NOT_REPLAYED:
        assert replayed[key] == recorded[key], key


def test_options_given_with_a_replay_override_its_settings(capsys, tmp_path, trained_run):
    run_config = trained_run / "run_config.json"
    code, _, err = cli(
        capsys, "train", "--config", run_config, "--job-dir", tmp_path / "r", "--learning-rate", "0.001",
        "--max-steps", "2", "--train-head-only", "--dry-run",
    )  # fmt: skip
    assert code == 0, err
    assert not (tmp_path / "r").exists()  # a dry run, replayed: nothing written
    cfg = from_namespace(TrainConfig, build_parser().parse_args(
        ["train", "--config", str(run_config), "--learning-rate", "0.001", "--train-head-only", "--preset", "fast"]
    ))  # fmt: skip
    recorded = json.loads(run_config.read_text())["train"]
    assert cfg.learning_rate == 0.001 and cfg.train_head_only is True  # given now
    assert (
        cfg.keep_layers == TrainConfig.PRESETS["fast"]["keep_layers"]
    )  # the preset given now, over the run's
    assert (cfg.batch_size, cfg.seed, cfg.model, cfg.data) == (
        recorded["batch_size"], recorded["seed"], recorded["model"], recorded["data"],
    )  # fmt: skip
    assert cfg.job_dir is None  # where the run wrote is not replayed


def test_a_replay_of_a_config_it_cannot_use_is_one_line(capsys, tmp_path, trained_run):
    document = json.loads((trained_run / "run_config.json").read_text())
    document["sentitune_version"] = "9.0.0"
    document["train"]["warp_drive"] = True
    (tmp_path / "future.json").write_text(json.dumps(document))
    (tmp_path / "notes.json").write_text("these are notes")
    (tmp_path / "other.json").write_text(json.dumps({"model": "x"}))
    cases = {
        "future.json": "holds train settings this sentitune does not know (warp_drive); it was written by "
        "sentitune 9.0.0: delete them from a copy or use that version",
        "notes.json": "is not JSON; pass the run_config.json of a `sentitune train` run",
        "other.json": "has no train settings; pass the run_config.json of a `sentitune train` run",
    }
    for name, expected in cases.items():
        message = cli_error(capsys, "train", "--config", tmp_path / name, "--job-dir", tmp_path / "out")
        assert message == f"--config {tmp_path / name} {expected}"
    message = cli_error(capsys, "train", "--config", tmp_path / "nowhere", "--job-dir", tmp_path / "out")
    assert message.startswith(f"--config {tmp_path / 'nowhere' / 'run_config.json'}: cannot read it (")
    assert not (tmp_path / "out").exists()


def test_the_model_cards_metadata_reads_back_with_the_results(trained_run, prepared):
    """The YAML a hub or registry reads: task, language, library, and a model-index with every split's
    accuracy, macro-F1 and macro-recall and their 95 % intervals, equal to metrics.json."""
    card = ModelCard.load(trained_run / "README.md")
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "text-classification" and data["language"] == "en"
    assert data["library_name"] == "transformers" and "sentitune" in data["tags"]
    assert "base_model" not in data and "license" not in data  # a local folder: neither is known
    metrics = json.loads((trained_run / "metrics.json").read_text())
    found = {(r.dataset_split, r.metric_type, r.metric_config): r for r in card.data.eval_results}
    assert len(found) == 6
    for split, name in (("val", "validation"), ("test", "test")):
        for key, kind, config in (("accuracy", "accuracy", None), ("macro_f1", "f1", "macro"), ("macro_recall", "recall", "macro")):  # fmt: skip
            result = found[(name, kind, config)]
            assert result.metric_value == pytest.approx(metrics[split][key], abs=5e-5)
            low, high = metrics[split]["intervals_95"][key]
            assert result.metric_name.endswith(f"(95 % interval {low:.4f}-{high:.4f})")
            assert result.dataset_name == prepared.name  # the prepared folder the run trained on
    assert card.text.lstrip().startswith("# Sentiment classifier:")  # the card for people follows


@pytest.mark.parametrize(
    "source, expected",
    [
        ("embedded:all-MiniLM-L6-v2", ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0")),
        ("google/bert_uncased_L-2_H-128_A-2", ("google/bert_uncased_L-2_H-128_A-2", None)),
        ("gs://bucket/runs/a", (None, None)),
        ("/models/local", (None, None)),
    ],
)
def test_the_cards_base_model_is_named_where_it_is_known(source, expected):
    assert base_model_of(source) == expected


def test_baseline_beside_the_model_in_metrics_card_and_summary(capsys, prepared, tiny_model, tmp_path):
    job = tmp_path / "run"
    code, out, err = cli(
        capsys,
        "train",
        "--data",
        prepared,
        "--job-dir",
        job,
        "--model",
        tiny_model,
        "--batch-size",
        "16",
        "--max-steps",
        "2",
        "--train-eval-examples",
        "0",
        "--baseline",
    )
    assert code == 0, err
    metrics = json.loads((job / "metrics.json").read_text())
    base = metrics["baseline"]
    for name in ("val", "test"):
        assert set(base[name]) == {"examples", "loss", "accuracy", "macro_f1", "macro_recall"}
        assert base[name]["examples"] == metrics[name]["examples"]
        assert 0.0 <= base[name]["macro_f1"] <= 1.0
    assert base["training"]["fit_s"] >= 0
    gain = 100 * (metrics["test"]["macro_f1"] - base["test"]["macro_f1"])
    assert f"baseline (TF-IDF + logistic regression) macro-F1 {base['test']['macro_f1']:.4f}" in out
    assert f"the model adds {gain:+.1f} points" in out
    card = (job / "README.md").read_text()
    assert f"| test: TF-IDF + logistic regression baseline | {base['test']['examples']} | " in card
    report = (job / "report.html").read_text()  # the baseline beside the model in the report too
    assert "<th>TF-IDF baseline</th>" in report
    assert f"<td>{metrics['test']['macro_f1']:.4f}</td><td>{base['test']['macro_f1']:.4f}</td>" in report


def test_baseline_without_scikit_learn_fails_before_training(
    capsys, prepared, tiny_model, tmp_path, monkeypatch
):
    monkeypatch.setitem(__import__("sys").modules, "sklearn", None)
    message = cli_error(
        capsys,
        "train",
        "--data",
        prepared,
        "--model",
        tiny_model,
        "--job-dir",
        tmp_path / "run",
        "--baseline",
    )
    assert message == (
        "train --baseline needs the Python package 'sklearn', which is not installed; "
        "run: pip install 'sentitune[baseline]'"
    )
    assert not (tmp_path / "run").exists()


def test_tensorboard_events_follow_the_log_and_the_validations(
    tmp_path, capsys, prepared, tiny_model, monkeypatch
):
    monkeypatch.setenv("AIP_TENSORBOARD_LOG_DIR", str(tmp_path / "tb"))  # what Vertex AI sets
    train_cli(
        capsys,
        prepared,
        tiny_model,
        tmp_path / "job",
        "--max-steps",
        "6",
        "--log-every",
        "2",
        "--eval-every",
        "3",
    )
    found = scalars(tmp_path / "tb")
    history = [json.loads(line) for line in (tmp_path / "job" / "history.jsonl").read_text().splitlines()]
    assert [s for s, _ in found["train/loss"]] == [2, 3, 4, 6]  # every log line, validations included
    assert found["val/macro_f1"] == [(row["step"], pytest.approx(row["val_macro_f1"])) for row in history]
    assert {
        "train/accuracy",
        "train/learning_rate",
        "train/examples_per_s",
        "val/loss",
        "val/accuracy",
    } <= set(found)

    train_cli(
        capsys,
        prepared,
        tiny_model,
        tmp_path / "job2",
        "--max-steps",
        "2",
        "--tensorboard-dir",
        str(tmp_path / "tb2"),
    )
    assert [s for s, _ in scalars(tmp_path / "tb2")["train/loss"]] == [2]  # the option wins over the variable


def test_a_tuning_trial_reports_validation_macro_f1(tmp_path, capsys, prepared, tiny_model, monkeypatch):
    """As a Vertex AI trial runs it: the trial's values appended as --name_with_underscores=value."""
    monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "7")
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(tmp_path / "hypertune" / "output.metrics"))
    train_cli(
        capsys,
        prepared,
        tiny_model,
        tmp_path / "job",
        "--max-steps",
        "6",
        "--eval-every",
        "2",
        "--learning_rate=0.0003",
        "--warmup_ratio=0.1",
        "--batch_size=8",
    )
    config = json.loads((tmp_path / "job" / "run_config.json").read_text())["train"]
    assert (config["learning_rate"], config["warmup_ratio"], config["batch_size"]) == (0.0003, 0.1, 8)
    reported = [
        json.loads(line) for line in (tmp_path / "hypertune" / "output.metrics").read_text().splitlines()
    ]
    history = [json.loads(line) for line in (tmp_path / "job" / "history.jsonl").read_text().splitlines()]
    assert {r["trial"] for r in reported} == {"7"}
    assert [float(r["val_macro_f1"]) for r in reported[:-1]] == pytest.approx(
        [row["val_macro_f1"] for row in history]
    )
    assert [int(r["global_step"]) for r in reported[:-1]] == [2, 4, 6]
    metrics = json.loads((tmp_path / "job" / "metrics.json").read_text())
    best = max(row["val_macro_f1"] for row in history)
    assert float(reported[-1]["val_macro_f1"]) == pytest.approx(best)  # the final measurement: the model kept
    assert metrics["val"]["macro_f1"] == pytest.approx(best, abs=1e-6)


def test_layer_lr_decay_gives_each_layer_its_learning_rate(tiny_model, prepared):
    from sentitune.model import load_classifier
    from sentitune.optimizer import build_optimizer

    model = load_classifier(str(tiny_model)).model  # 2 encoder layers
    cfg = TrainConfig(data=str(prepared), learning_rate=1e-3, layer_lr_decay=0.5)
    lr_of = {
        id(p): g["lr"]
        for g in build_optimizer(model, cfg, torch.device("cpu")).param_groups
        for p in g["params"]
    }
    named = dict(model.named_parameters())
    assert lr_of[id(named["classifier.weight"])] == pytest.approx(1e-3)
    assert lr_of[id(named["bert.pooler.dense.weight"])] == pytest.approx(1e-3)
    assert lr_of[id(named["bert.encoder.layer.1.output.dense.weight"])] == pytest.approx(5e-4)
    assert lr_of[id(named["bert.encoder.layer.0.attention.self.query.weight"])] == pytest.approx(2.5e-4)
    assert lr_of[id(named["bert.embeddings.word_embeddings.weight"])] == pytest.approx(1.25e-4)
    plain = build_optimizer(model, TrainConfig(data=str(prepared), learning_rate=1e-3), torch.device("cpu"))
    assert [g["lr"] for g in plain.param_groups] == [1e-3, 1e-3]  # decay and no-decay groups only


def test_label_smoothing_changes_the_loss_and_is_recorded(tmp_path, capsys, prepared, tiny_model):
    # scores as trained: calibration would flatten both near-random models to the same uniform scores
    steps = ("--max-steps", "2", "--log-every", "1", "--calibration", "none")
    plain = train_cli(capsys, prepared, tiny_model, tmp_path / "a", *steps)
    smooth = train_cli(capsys, prepared, tiny_model, tmp_path / "b", *steps, "--label-smoothing", "0.2")
    assert json.loads((tmp_path / "b" / "run_config.json").read_text())["train"]["label_smoothing"] == 0.2
    assert smooth["val"]["loss"] != plain["val"]["loss"]  # a different model after two steps
    message = cli_error(
        capsys, "train", "--data", str(prepared), "--job-dir", str(tmp_path / "c"), "--label-smoothing", "1"
    )
    assert message == "invalid train options: --label-smoothing must be in [0, 1), got 1.0"


def test_a_preset_sets_options_that_were_not_given(prepared):
    from sentitune.cli import build_parser
    from sentitune.config import TRAIN_PRESETS, from_namespace

    def parsed(*flags):
        return from_namespace(
            TrainConfig, build_parser().parse_args(["train", "--data", str(prepared), *flags])
        )

    fast = parsed("--preset", "fast")
    for name, value in TRAIN_PRESETS["fast"].items():
        assert getattr(fast, name) == value
    explicit = parsed("--preset", "fast", "--epochs", "5", "--keep-layers", "2")
    assert (explicit.epochs, explicit.keep_layers) == (5, 2)
    assert explicit.learning_rate == TRAIN_PRESETS["fast"].get(
        "learning_rate", TrainConfig(data="x").learning_rate
    )
    assert dataclasses.replace(parsed("--preset", "balanced"), preset=None) == parsed()  # the defaults
    with pytest.raises(SystemExit):
        parsed("--preset", "fastest")


DEFAULT_METRIC_FILE = Path("/tmp/hypertune/output.metrics")  # cloudml-hypertune's, which Vertex AI reads


@pytest.mark.parametrize(
    "variables, trial",
    [
        ({"CLUSTER_SPEC": json.dumps({"task": {"type": "workerpool0", "index": 0, "trial": "3"}})}, "3"),
        ({"AIP_MODEL_DIR": "unused"}, "0"),  # a Vertex AI job that sets none of the hypertune variables
        ({"SENTITUNE_REPORT_TUNING": "1"}, "0"),  # the image, with nothing set by Vertex AI
        ({}, None),  # a laptop: nothing is written
    ],
    ids=["trial-in-cluster-spec", "vertex-job-without-variables", "image-with-nothing-set", "outside-vertex"],
)
def test_the_tuning_metric_lands_where_vertex_reads_it(
    tmp_path, capsys, prepared, tiny_model, monkeypatch, variables, trial
):
    for name in TuningReport.JOB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    DEFAULT_METRIC_FILE.unlink(missing_ok=True)
    try:
        train_cli(capsys, prepared, tiny_model, tmp_path / "job", "--max-steps", "2", "--eval-every", "2")
        if trial is None:
            assert not DEFAULT_METRIC_FILE.exists()
            return
        reported = [json.loads(line) for line in DEFAULT_METRIC_FILE.read_text().splitlines()]
        assert {r["trial"] for r in reported} == {trial} and all("val_macro_f1" in r for r in reported)
    finally:
        DEFAULT_METRIC_FILE.unlink(missing_ok=True)


def test_a_replay_keeps_the_runs_normalisation_and_an_older_run_reads_posts_as_written(tmp_path, trained_run):
    document = json.loads((trained_run / "run_config.json").read_text())
    args = ["train", "--config", str(tmp_path / "run_config.json")]
    for recorded, expected in (("none", "none"), ("tweet", "tweet"), (None, "none")):
        settings = {k: v for k, v in document["train"].items() if k != "normalize"}
        if recorded:
            settings["normalize"] = recorded
        (tmp_path / "run_config.json").write_text(json.dumps({**document, "train": settings}))
        assert from_namespace(TrainConfig, build_parser().parse_args(args)).normalize == expected
    assert (
        from_namespace(TrainConfig, build_parser().parse_args([*args, "--normalize", "tweet"])).normalize
        == "tweet"
    )


# ----------------------------------------------------------------------------- calibration


def _calibration_case(ideal_temperature: float, n: int, seed: int):
    """Validation and test splits of `n` posts each with scores of a model whose scores would be right
    at `ideal_temperature` (labels drawn from softmax(logits / T)), and their metrics as evaluated."""
    rng = np.random.default_rng(seed)
    splits, scored, metrics = {}, {}, {}
    for name in ("val", "test"):
        logits = rng.normal(0, 2.5, (n, 3))
        truth = torch.softmax(torch.from_numpy(logits / ideal_temperature), dim=1).numpy()
        labels = (rng.random(n)[:, None] > truth.cumsum(axis=1)).sum(axis=1)
        splits[name] = LabelledTexts(name, [""] * n, labels)
        scored[name] = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        metrics[name] = classification_metrics(labels, scored[name], LABELS)
    return splits, scored, metrics


def _head_logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([[101, 2307, 3462, 102]])).logits


def test_calibration_keeps_a_temperature_that_helps_and_builds_it_into_the_head(tiny_model, caplog):
    model = load_classifier(str(tiny_model)).model.eval()
    before = _head_logits(model)
    splits, scored, metrics = _calibration_case(2.0, 300, seed=0)
    raw = dict(scored)
    with caplog.at_level("INFO", logger="sentitune"):
        result = calibrate(model, splits, scored, metrics, seed=0)
    assert result["decision"] == "kept" and result["temperature"] > 1.3
    torch.testing.assert_close(_head_logits(model), before / result["temperature"])
    for name in ("val", "test"):
        expected = scale_temperature(raw[name], result["temperature"])
        np.testing.assert_allclose(scored[name], expected)
        assert metrics[name]["loss"] == pytest.approx(nll(splits[name].labels, expected))
        assert result[name]["nll_after"] < result[name]["nll_before"]
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("calibration:")]
    assert logged == [
        f"calibration: temperature {result['temperature']:.3f} kept: {result['reason']}; ECE of the same held-out "
        f"posts {result['held_out']['ece_before']:.4f} -> {result['held_out']['ece_after']:.4f}"
    ]


@pytest.mark.parametrize("ideal_temperature,n", [(2.0, 60), (1.0, 300)], ids=["too-small", "no-gain"])
def test_calibration_that_cannot_be_shown_to_help_leaves_the_model_as_trained(
    tiny_model, caplog, ideal_temperature, n
):
    model = load_classifier(str(tiny_model)).model.eval()
    before = _head_logits(model)
    splits, scored, metrics = _calibration_case(ideal_temperature, n, seed=1)
    raw, evaluated = dict(scored), json.loads(json.dumps(metrics))
    with caplog.at_level("INFO", logger="sentitune"):
        result = calibrate(model, splits, scored, metrics, seed=0)
    assert result["decision"] == "refused" and result["temperature"] == 1.0
    assert ("too few" in result["reason"]) == (n < 100)
    torch.testing.assert_close(_head_logits(model), before, rtol=0, atol=0)
    assert all(scored[k] is raw[k] for k in raw) and metrics == evaluated
    assert result["val"]["nll_after"] == result["val"]["nll_before"]
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("calibration:")]
    assert logged == [f"calibration: none, the scores stay as trained: {result['reason']}"]


def test_few_training_posts_get_more_epochs_up_to_min_steps(tmp_path, capsys, caplog, prepared, tiny_model):
    splits = read_splits(prepared)
    per_epoch = math.ceil((splits["split"] == "train").sum() / 16)
    flags = ["--model", tiny_model, "--batch-size", "16", "--train-eval-examples", "0", "--epochs", "1"]
    code, _, err = cli(
        capsys, "train", "--data", prepared, "--job-dir", tmp_path / "more", *flags,
        "--min-steps", str(2 * per_epoch + 1),
    )  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "more" / "metrics.json").read_text())["training"]["steps"] == 3 * per_epoch
    assert f"training 3 epochs ({3 * per_epoch} steps) instead of 1, to reach --min-steps" in caplog.text
    # validated about as often as --epochs alone would have: once, at the end
    history = (tmp_path / "more" / "history.jsonl").read_text().splitlines()
    assert [json.loads(row)["step"] for row in history] == [3 * per_epoch]
    exactly = train_cli(capsys, prepared, tiny_model, tmp_path / "exact", "--epochs", "1", "--min-steps", "0")
    assert exactly["training"]["steps"] == per_epoch
    capped = train_cli(
        capsys, prepared, tiny_model, tmp_path / "capped", "--min-steps", "1000", "--max-steps", "5"
    )
    assert capped["training"]["steps"] == 5
