"""One writer at a time, and nothing stale: an output being written is locked (a second writer gets one
line), a dead writer's lock and leftovers are cleaned up by the next one, and --overwrite replaces a
whole prepared set."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from helpers import cli, cli_error, walkthrough_frame


def lock_of(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.lock"


def test_two_trainings_into_one_job_dir_one_wins_and_the_other_is_told(
    tmp_path, capsys, prepared, tiny_model
):
    job = tmp_path / "job"
    first = subprocess.Popen(
        [sys.executable, "-m", "sentitune", "train", "--data", str(prepared), "--model", str(tiny_model)]
        + ["--job-dir", str(job), "--max-steps", "60", "--batch-size", "4", "--train-eval-examples", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not lock_of(job).exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-2000:]
        time.sleep(0.02)
    owner = json.loads(lock_of(job).read_text())
    message = cli_error(capsys, "train", "--data", prepared, "--model", tiny_model, "--job-dir", job)
    assert message == (
        f"{job} is being written by another sentitune (pid {first.pid} on {socket.gethostname()}, since "
        f"{owner['started']}); wait for it to finish, or remove {lock_of(job)} if that process is gone"
    )
    assert first.wait(timeout=300) == 0, first.communicate()[1][-2000:]
    assert (job / "metrics.json").is_file() and not lock_of(job).exists()


def test_a_dead_writers_lock_and_leftovers_are_cleaned_up(tmp_path, capsys, corpus):
    walkthrough_frame(corpus).to_csv(tmp_path / "posts.csv", index=False)
    out = tmp_path / "splits"
    gone = subprocess.Popen(["true"])
    gone.wait()  # a PID that no longer runs
    owner = {"pid": gone.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00+0000"}
    lock_of(out).write_text(json.dumps(owner))
    (tmp_path / ".splits.staging-abc123").mkdir()
    (tmp_path / ".splits.staging-abc123" / "train.csv").write_text("half written")
    (tmp_path / ".splits.scratch-def456").mkdir()
    code, _, err = cli(capsys, "prepare", tmp_path / "posts.csv", "--output-dir", out)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posts.csv", "splits"]


def test_a_live_writers_lock_is_respected(tmp_path, capsys, corpus):
    walkthrough_frame(corpus).to_csv(tmp_path / "posts.csv", index=False)
    out = tmp_path / "splits"
    alive = subprocess.Popen(["sleep", "60"])
    try:
        owner = {"pid": alive.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00+0000"}
        lock_of(out).write_text(json.dumps(owner))
        message = cli_error(capsys, "prepare", tmp_path / "posts.csv", "--output-dir", out)
        assert message.startswith(f"{out} is being written by another sentitune (pid {alive.pid} on ")
        assert not out.exists()
    finally:
        alive.kill()
        alive.wait()
    code, _, err = cli(capsys, "prepare", tmp_path / "posts.csv", "--output-dir", out)  # now stale
    assert code == 0, err


def test_overwrite_replaces_the_whole_prepared_set_and_train_reads_the_format_written(
    tmp_path, capsys, corpus, tiny_model
):
    walkthrough_frame(corpus).to_csv(tmp_path / "posts.csv", index=False)
    out = tmp_path / "splits"
    assert cli(capsys, "prepare", tmp_path / "posts.csv", "--output-dir", out)[0] == 0
    code, _, err = cli(
        capsys, "prepare", tmp_path / "posts.csv", "--output-dir", out, "--format", "parquet", "--overwrite"
    )
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        ".sentitune-output.json",
        "eval.parquet",
        "labels.json",
        "prepare_report.json",
        "report.html",
        "test.parquet",
        "train.parquet",
    ]
    # A CSV put back beside the Parquet files (an older copy, say) is not what the report says was written.
    pd.DataFrame({"text": ["stale"] * 30, "label": ["positive"] * 30}).to_csv(out / "train.csv", index=False)
    code, _, err = cli(
        capsys,
        *("train", "--data", out, "--model", tiny_model, "--job-dir", tmp_path / "run", "--max-steps", "1"),
    )
    assert code == 0, err
    data = json.loads((tmp_path / "run" / "run_config.json").read_text())["data"]
    assert data["train"]["path"] == str(out / "train.parquet") and data["train"]["examples"] > 30


def test_a_locked_folder_on_another_host_is_not_taken_over(tmp_path, capsys, prepared, tiny_model):
    job = tmp_path / "job"
    owner = {"pid": os.getpid(), "host": "another-machine", "started": "2026-01-01T00:00:00+0000"}
    lock_of(job).write_text(json.dumps(owner))
    message = cli_error(capsys, "train", "--data", prepared, "--model", tiny_model, "--job-dir", job)
    assert message == (
        f"{job} is being written by another sentitune (pid {os.getpid()} on another-machine, since "
        f"2026-01-01T00:00:00+0000); wait for it to finish, or remove {lock_of(job)} if that process is gone"
    )
    assert not job.exists()
