"""Preemption-safe training: a run killed with SIGKILL mid-epoch, or stopped by SIGTERM, and started
again with the same command ends with exactly the weights of an uninterrupted run (CPU, same seed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import assert_same_weights, checkpointed_train_command
from safetensors.torch import load_file


def weights(job: Path) -> dict[str, torch.Tensor]:
    return load_file(str(job / "model.safetensors"))


def checkpoint_steps(checkpoints: Path) -> list[int]:
    if not checkpoints.is_dir():
        return []
    return sorted(
        int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*") if (p / "state.json").exists()
    )


def start_and_wait_for_checkpoint(cmd: list[str], checkpoints: Path) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not checkpoint_steps(checkpoints):
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before its first checkpoint:\n{err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint within 120 s")
        time.sleep(0.002)
    return proc


@pytest.fixture(scope="module")
def reference(tmp_path_factory, prepared, tiny_model) -> dict[str, torch.Tensor]:
    root = tmp_path_factory.mktemp("reference")
    done = subprocess.run(
        checkpointed_train_command(prepared, tiny_model, root / "run", root / "ckpt"),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (root / "ckpt").exists(), "checkpoints are removed once the run folder is complete"
    return weights(root / "run")


def test_sigkill_mid_epoch_then_rerun_gives_the_uninterrupted_weights(
    tmp_path, prepared, tiny_model, reference
):
    job, checkpoints = tmp_path / "run", tmp_path / "ckpt"
    cmd = checkpointed_train_command(prepared, tiny_model, job, checkpoints)
    proc = start_and_wait_for_checkpoint(cmd, checkpoints)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed_at = checkpoint_steps(checkpoints)[-1]
    assert killed_at < 90 and killed_at % 60 != 0, "the kill must land before the end, mid-epoch"
    assert not (job / "metrics.json").exists(), "a killed run leaves no finished run folder"
    (checkpoints / ".partial-x1y2").mkdir(exist_ok=True)  # as if the kill had landed mid-save

    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"(step {killed_at})" in again.stderr and "resuming from" in again.stderr
    assert_same_weights(weights(job), reference)
    assert not checkpoints.exists(), "checkpoints, and any half-written one, go once the run is complete"
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["training"]["steps"] == 90
    assert metrics["training"]["resumed_from_step"] == killed_at
    assert metrics["training"]["examples_per_s"] > 0
    history = [json.loads(line) for line in (job / "history.jsonl").read_text().splitlines()]
    assert [row["step"] for row in history] == [20, 40, 60, 80, 90], "history survives the restart"


def test_sigterm_saves_a_checkpoint_and_exits_143_then_resumes(tmp_path, prepared, tiny_model, reference):
    job, checkpoints = tmp_path / "run", tmp_path / "ckpt"
    cmd = checkpointed_train_command(prepared, tiny_model, job, checkpoints)
    proc = start_and_wait_for_checkpoint(cmd, checkpoints)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    # The signal leaves within milliseconds of the first checkpoint (step 15), with 75 steps still to go:
    # a run that finishes anyway ignored it.
    assert proc.returncode == 143, f"exit {proc.returncode}, not 143: SIGTERM was not handled\n{err[-2000:]}"
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: stopped by SIGTERM at step ") and "run the same command again" in last
    stopped_at = int(last.split("at step ")[1].split(";")[0])
    assert stopped_at in checkpoint_steps(checkpoints)

    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert_same_weights(weights(job), reference)


def test_a_checkpoint_of_other_settings_is_refused(tmp_path, prepared, tiny_model):
    job, checkpoints = tmp_path / "run", tmp_path / "ckpt"
    proc = start_and_wait_for_checkpoint(
        checkpointed_train_command(prepared, tiny_model, job, checkpoints), checkpoints
    )
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    changed = [
        *checkpointed_train_command(prepared, tiny_model, job, checkpoints),
        "--learning-rate",
        "0.001",
    ]
    done = subprocess.run(changed, capture_output=True, text=True, env={**os.environ})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: the checkpoint in ")
    assert "learning_rate" in done.stderr and "another --checkpoint-dir" in done.stderr


def test_fp16_with_a_gradient_scaler_resumes_to_the_uninterrupted_weights(tmp_path, prepared, tiny_model):
    fp16 = ["--precision", "fp16"]
    reference = subprocess.run(
        checkpointed_train_command(prepared, tiny_model, tmp_path / "reference", tmp_path / "reference-ckpt")
        + fp16,
        capture_output=True,
        text=True,
    )
    assert reference.returncode == 0, reference.stderr[-2000:]
    assert (
        "precision fp16 (set by --precision fp16; with a gradient scaler when training)" in reference.stderr
    )

    job, checkpoints = tmp_path / "run", tmp_path / "ckpt"
    cmd = checkpointed_train_command(prepared, tiny_model, job, checkpoints) + fp16
    proc = start_and_wait_for_checkpoint(cmd, checkpoints)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    killed_at = checkpoint_steps(checkpoints)[-1]
    state = json.loads((checkpoints / f"checkpoint-{killed_at}" / "state.json").read_text())
    assert state["fingerprint"]["precision"] == "fp16"
    assert state["grad_scaler"]["scale"] > 0 and state["grad_scaler"]["_growth_tracker"] >= 0

    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"(step {killed_at})" in again.stderr
    assert_same_weights(weights(job), weights(tmp_path / "reference"))
    assert json.loads((job / "run_config.json").read_text())["environment"]["precision"] == "fp16"


def test_the_gradient_scalers_state_survives_a_checkpoint(tmp_path):
    """A scale lowered by overflows, and its growth counter, come back exactly on resume."""
    from transformers import get_linear_schedule_with_warmup

    from sentitune.checkpoint import Checkpointer
    from sentitune.train import LoopState

    def parts():
        model = torch.nn.Linear(4, 3)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        return (
            model,
            optimizer,
            get_linear_schedule_with_warmup(optimizer, 0, 10),
            torch.amp.GradScaler("cpu"),
        )

    model, optimizer, scheduler, scaler = parts()
    scaler.load_state_dict({**scaler.state_dict(), "scale": 1024.0, "_growth_tracker": 7})
    saver = Checkpointer(str(tmp_path), {"precision": "fp16"})
    saver.save(model, optimizer, scheduler, None, LoopState(step=3, batches_done=3), scaler)

    model, optimizer, scheduler, fresh = parts()
    assert fresh.get_scale() != 1024.0
    Checkpointer(str(tmp_path), {"precision": "fp16"}).resume(
        model, optimizer, scheduler, torch.device("cpu"), fresh
    )
    assert fresh.state_dict() == scaler.state_dict()


def test_a_checkpoint_of_another_precision_is_refused(tmp_path, prepared, tiny_model):
    """`auto` is bf16 on one CPU and fp32 on another: the precision used, not the option, must match."""
    job, checkpoints = tmp_path / "run", tmp_path / "ckpt"
    proc = start_and_wait_for_checkpoint(
        checkpointed_train_command(prepared, tiny_model, job, checkpoints) + ["--precision", "fp32"],
        checkpoints,
    )
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done = subprocess.run(
        checkpointed_train_command(prepared, tiny_model, job, checkpoints) + ["--precision", "bf16"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: the checkpoint in {checkpoints} was made with other settings (precision)")
