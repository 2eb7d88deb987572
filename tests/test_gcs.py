"""gs:// for real: every command against a Cloud Storage emulator server on localhost (gcsfs), and a run
killed with SIGKILL and resumed from checkpoints on gs://. See ../shared/NOTES.md for the settings."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import time

import pandas as pd
import pytest
from helpers import BUCKET, assert_same_weights, checkpointed_train_command, cli, scalars
from safetensors.torch import load_file

pytest.importorskip("gcsfs", reason="gs:// needs gcsfs: pip install 'sentitune[cloud]'")


def test_prepare_train_evaluate_predict_with_every_path_on_gs(
    gcs_env, gs, capsys, corpus, tiny_model, tmp_path
):
    local = tmp_path / "posts.csv"
    corpus[["text", "sentiment"]].to_csv(local, index=False)
    gs.put_file(str(local), f"{BUCKET}/in/posts.csv")
    root = f"gs://{BUCKET}/t1"

    code, _, err = cli(capsys, "prepare", f"gs://{BUCKET}/in/posts.csv", "--output-dir", f"{root}/data")
    assert code == 0, err
    assert {"train.csv", "eval.csv", "test.csv", "labels.json", "prepare_report.json"} <= {
        p.rsplit("/", 1)[1] for p in gs.ls(f"{BUCKET}/t1/data")
    }

    code, out, err = cli(
        capsys,
        "train",
        "--data",
        f"{root}/data",
        "--model",
        tiny_model,
        "--job-dir",
        f"{root}/run",
        "--max-steps",
        "4",
        "--batch-size",
        "16",
        "--checkpoint-every",
        "2",
        "--train-eval-examples",
        "0",
    )
    assert code == 0, err
    assert f"run folder: {root}/run" in out
    names = {p.rsplit("/", 1)[1] for p in gs.ls(f"{BUCKET}/t1/run")}
    assert {"model.safetensors", "config.json", "metrics.json", "history.jsonl", "README.md"} <= names
    assert "checkpoints" not in names, "checkpoints are cleared once the run is complete"
    metrics = json.loads(gs.cat(f"{BUCKET}/t1/run/metrics.json"))

    code, out, err = cli(capsys, "evaluate", f"{root}/run", "--data", f"{root}/data/test.csv")
    assert code == 0, err
    evaluation = json.loads(gs.cat(f"{BUCKET}/t1/run/evaluation-test/metrics.json"))
    assert evaluation["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)

    code, out, err = cli(
        capsys,
        "predict",
        f"{root}/run",
        "--input",
        f"{root}/data/eval.csv",
        "--output",
        f"{root}/out/pred.jsonl",
        "--prefix",
        "pred_",  # the split file has its own label column
    )
    assert code == 0, err
    rows = [json.loads(line) for line in gs.cat(f"{BUCKET}/t1/out/pred.jsonl").decode().splitlines()]
    assert len(rows) == metrics["val"]["examples"]
    assert {"text", "label", "pred_label", "pred_score_positive"} <= set(rows[0])


def test_missing_object_on_gs_is_a_one_line_error(gcs_env, capsys, tmp_path):
    code, _, err = cli(
        capsys, "prepare", f"gs://{BUCKET}/nope/missing.csv", "--output-dir", str(tmp_path / "o")
    )
    assert code == 2
    assert (
        err.strip().splitlines()[-1]
        == f"error: input not found: gs://{BUCKET}/nope/missing.csv; check the path or URL"
    )


def test_sigkill_then_resume_from_checkpoints_on_gs(gcs_env, gs, prepared, tiny_model, tmp_path):
    reference = subprocess.run(
        checkpointed_train_command(prepared, tiny_model, tmp_path / "ref", f"gs://{BUCKET}/t3/ref-ckpt"),
        capture_output=True,
        text=True,
    )
    assert reference.returncode == 0, reference.stderr[-2000:]
    cmd = checkpointed_train_command(prepared, tiny_model, tmp_path / "run", f"gs://{BUCKET}/t3/ckpt")

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not gs.glob(f"{BUCKET}/t3/ckpt/checkpoint-*/state.json"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no checkpoint on gs:// before the run ended:\n{proc.communicate()[1][-2000:]}")
        gs.invalidate_cache()
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from gs://" in again.stderr
    assert_same_weights(
        load_file(str(tmp_path / "run" / "model.safetensors")),
        load_file(str(tmp_path / "ref" / "model.safetensors")),
    )


def test_batch_prediction_of_a_gs_wildcard_into_a_gs_folder_resumes(
    gcs_env, gs, capsys, trained_run, tmp_path
):
    posts = pd.DataFrame(
        {"id": ["1", "2", "3"], "bodyText": ["great game", "awful service", "it is tuesday"]}
    )
    for name in ("day1.csv", "day2.csv"):
        posts.to_csv(tmp_path / name, index=False)
        gs.put_file(str(tmp_path / name), f"{BUCKET}/batch/in/{name}")
    gs.pipe(f"{BUCKET}/batch/in/notes.txt", b"not matched by the wildcard")
    args = ["predict", str(trained_run), "--input", f"gs://{BUCKET}/batch/in/*.csv"]

    code, out, err = cli(capsys, *args, "--output", f"gs://{BUCKET}/batch/out/")
    assert code == 0, err
    assert "labelled 6 rows of 2 files" in out
    assert sorted(p.rsplit("/", 1)[1] for p in gs.ls(f"{BUCKET}/batch/out")) == ["day1.csv", "day2.csv"]
    got = pd.read_csv(io.BytesIO(gs.cat(f"{BUCKET}/batch/out/day2.csv")), dtype=str)
    assert got["id"].tolist() == ["1", "2", "3"] and set(got["label"]) <= {"negative", "neutral", "positive"}

    gs.rm(f"{BUCKET}/batch/out/day2.csv")  # as if the job had stopped before the second file
    code, out, err = cli(capsys, *args, "--output", f"gs://{BUCKET}/batch/out/")
    assert code == 0, err
    assert "labelled 3 rows of 1 files" in out and "1 finished earlier, skipped" in out


def test_tensorboard_events_reach_gs(gcs_env, gs, capsys, prepared, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("AIP_TENSORBOARD_LOG_DIR", f"gs://{BUCKET}/tb/run1")
    args = ["train", "--data", str(prepared), "--model", str(tiny_model), "--job-dir", str(tmp_path / "run")]
    code, _, err = cli(capsys, *args, "--max-steps", "3", "--eval-every", "3", "--train-eval-examples", "0")
    assert code == 0, err
    (name,) = [p.rsplit("/", 1)[1] for p in gs.ls(f"{BUCKET}/tb/run1")]
    assert name.startswith("events.out.tfevents.")
    gs.get(f"{BUCKET}/tb/run1/{name}", str(tmp_path / "tb" / name))
    assert [step for step, _ in scalars(tmp_path / "tb")["val/macro_f1"]] == [3]
