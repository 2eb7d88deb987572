"""`sentitune train` under torchrun: two CPU processes (gloo) give one process's result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import assert_same_weights, cli_error, free_port
from safetensors.torch import load_file

from sentitune.builtin import build_random_bert

STEPS = ["--max-steps", "8", "--batch-size", "16", "--eval-every", "4", "--train-eval-examples", "0"]


@pytest.fixture(scope="module")
def model_without_dropout(tmp_path_factory) -> Path:
    """The tiny BERT with dropout off: with it on, ranks draw other masks than one process does."""
    folder = tmp_path_factory.mktemp("tiny-no-dropout")
    build_random_bert(folder, layers=2, hidden=32, heads=2)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def train_command(
    prepared, model, job: Path, processes: int, *extra: str, precision: str = "fp32"
) -> list[str]:
    """fp32 by default: the comparisons of 1 and 2 processes are exact to float rounding, which bf16 is
    not (the bf16 test passes its own precision and tolerances)."""
    args = ["train", "--data", str(prepared), "--model", str(model), "--job-dir", str(job), *STEPS]
    args += ["--precision", precision, *extra]
    if processes == 1:
        return [sys.executable, "-m", "sentitune.cli", *args]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(processes),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        "sentitune.cli",
        *args,
    ]


def run(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def history(job: Path) -> list[dict]:
    return [json.loads(line) for line in (job / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def single_and_pair(tmp_path_factory, prepared, model_without_dropout):
    root = tmp_path_factory.mktemp("ddp")
    run(train_command(prepared, model_without_dropout, root / "one", 1))
    done = run(train_command(prepared, model_without_dropout, root / "two", 2, "--checkpoint-every", "2"))
    return root, done


def test_two_processes_end_with_one_processs_weights_and_metrics(single_and_pair):
    root, done = single_and_pair
    one, two = (
        load_file(str(root / "one" / "model.safetensors")),
        load_file(str(root / "two" / "model.safetensors")),
    )
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=2e-5, rtol=0, msg=name)  # README: within 2e-5
    metrics_one = json.loads((root / "one" / "metrics.json").read_text())
    metrics_two = json.loads((root / "two" / "metrics.json").read_text())
    for split in ("val", "test"):
        assert metrics_two[split]["examples"] == metrics_one[split]["examples"]
        assert metrics_two[split]["confusion_matrix"] == metrics_one[split]["confusion_matrix"]
        assert metrics_two[split]["loss"] == pytest.approx(metrics_one[split]["loss"], abs=1e-5)
    assert [r["step"] for r in history(root / "two")] == [r["step"] for r in history(root / "one")] == [4, 8]
    for a, b in zip(history(root / "one"), history(root / "two"), strict=True):
        assert b["val_accuracy"] == a["val_accuracy"] and b["train_loss"] == pytest.approx(
            a["train_loss"], abs=1e-5
        )
    assert (
        metrics_two["training"]["processes"] == 2
        and metrics_two["training"]["examples"] == metrics_one["training"]["examples"]
    )
    assert "distributed: 2 processes (gloo)" in done.stderr


def test_only_rank_0_writes_and_logs(single_and_pair):
    root, done = single_and_pair
    assert sorted(p.name for p in root.iterdir()) == ["one", "two"]  # no second folder, no staging left
    assert not (root / "two" / "checkpoints").exists()
    assert done.stderr.count("run folder:") == 1
    assert done.stderr.count("validation at step 4") == 1


def test_bf16_two_processes_give_one_processs_labels_and_metrics_to_bf16_rounding(
    prepared, model_without_dropout, tmp_path
):
    for name, processes in (("one", 1), ("two", 2)):
        run(train_command(prepared, model_without_dropout, tmp_path / name, processes, precision="bf16"))
    one, two = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("one", "two"))
    for split in ("val", "test"):
        assert two[split]["confusion_matrix"] == one[split]["confusion_matrix"], split
        for key in ("loss", "accuracy", "macro_f1"):
            assert two[split][key] == pytest.approx(one[split][key], abs=1e-3), (split, key)
    for name in ("one", "two"):
        environment = json.loads((tmp_path / name / "run_config.json").read_text())["environment"]
        assert environment["precision"] == "bf16"


def test_kill_one_rank_then_resume_gives_the_uninterrupted_weights(
    single_and_pair, prepared, model_without_dropout, tmp_path
):
    root, _ = single_and_pair
    command = train_command(prepared, model_without_dropout, tmp_path / "job", 2, "--checkpoint-every", "2")
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    checkpoints = tmp_path / "job" / "checkpoints"
    deadline = time.monotonic() + 180
    while not list(checkpoints.glob("checkpoint-*/state.json")):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no checkpoint before the run ended:\n{proc.communicate()[1][-3000:]}")
        time.sleep(0.05)
    os.kill(rank_pid(proc.pid, 1), signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0, "torchrun reports the lost rank"
    assert not (tmp_path / "job" / "model.safetensors").exists()

    again = run(command)
    assert "resuming from" in again.stderr
    assert_same_weights(
        load_file(str(tmp_path / "job" / "model.safetensors")),
        load_file(str(root / "two" / "model.safetensors")),
    )


def rank_pid(launcher: int, rank: int) -> int:
    """The pid of the worker process with RANK=rank among the launcher's children."""
    for _ in range(100):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                env = (entry / "environ").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if ppid == launcher and f"RANK={rank}".encode() in env:
                return int(entry.name)
        time.sleep(0.05)
    raise AssertionError(f"no rank {rank} under pid {launcher}")


def test_global_batch_must_divide_by_the_processes(capsys, prepared, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    message = cli_error(
        capsys,
        "train",
        "--data",
        str(prepared),
        "--model",
        str(tiny_model),
        "--job-dir",
        str(tmp_path / "j"),
        "--batch-size",
        "15",
    )
    assert message == (
        "--batch-size 15 is the global batch and must divide by the 2 processes "
        "(each takes batch / processes); use e.g. --batch-size 14"
    )
    assert list(tmp_path.iterdir()) == [], "no run folder, staging folder or lock"


def test_a_rank_that_cannot_reach_the_master_fails_with_a_clear_message(
    capsys, prepared, tiny_model, tmp_path, monkeypatch
):
    port = free_port()  # nobody listens there
    for key, value in {
        "WORLD_SIZE": "2",
        "RANK": "1",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }.items():
        monkeypatch.setenv(key, value)
    started = time.monotonic()
    message = cli_error(
        capsys,
        "train",
        "--data",
        str(prepared),
        "--model",
        str(tiny_model),
        "--job-dir",
        str(tmp_path / "j"),
        "--batch-size",
        "16",
        "--dist-timeout",
        "3",
    )
    assert time.monotonic() - started < 60
    assert message.startswith(f"rank 1 of 2 could not join the job at 127.0.0.1:{port} within 3 s")
    assert "check MASTER_ADDR/MASTER_PORT" in message
    assert list(tmp_path.iterdir()) == [], "no staging folder or lock is left behind"


def _versions_worker(rank: int, port: int, queue) -> None:
    import torch.distributed as dist

    from sentitune import distributed
    from sentitune.errors import SentituneError

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    versions = {"sentitune": "0.1.0", "torch": "2.13.0+cpu" if rank == 0 else "2.12.1+cpu"}
    try:
        distributed.check_same_versions(distributed.Dist(rank, 2, rank), versions)
        queue.put((rank, "no error"))
    except SentituneError as exc:
        queue.put((rank, str(exc)))
    dist.destroy_process_group()


def test_ranks_with_different_versions_are_refused():
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_versions_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    answers = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    expected = "the ranks run different package versions (torch: rank 0 2.13.0+cpu, rank 1 2.12.1+cpu); use the same image everywhere"
    assert answers == {0: expected, 1: expected}


# ----------------------------------------------------------------------------- the image's entrypoint

CLUSTER_SPEC = {
    "cluster": {
        "workerpool0": ["cmle-training-workerpool0-ab-0:2222"],
        "workerpool1": ["w-1:2222", "w-2:2222"],
    },
    "environment": "cloud",
    "task": {"type": "workerpool1", "index": 1, "trial": ""},
    "job": "{}",
}


def test_vertex_cluster_spec_becomes_a_torchrun_launch():
    from sentitune.launch import command

    env = {"CLUSTER_SPEC": json.dumps(CLUSTER_SPEC)}
    assert command(env, ["--epochs", "3"], gpus=2)[1:] == [
        "-m",
        "torch.distributed.run",
        "--nnodes=3",
        "--node-rank=2",
        "--nproc-per-node=2",
        "--master-addr=cmle-training-workerpool0-ab-0",
        "--master-port=2222",
        "-m",
        "sentitune.cli",
        "train",
        "--epochs",
        "3",
    ]
    # Vertex AI's PyTorch variables win: WORLD_SIZE counts machines, RANK is the machine's index
    env.update(WORLD_SIZE="3", RANK="1", MASTER_ADDR="10.0.0.2", MASTER_PORT="23456")
    assert command(env, [], gpus=4)[3:8] == [
        "--nnodes=3",
        "--node-rank=1",
        "--nproc-per-node=4",
        "--master-addr=10.0.0.2",
        "--master-port=23456",
    ]


def test_one_machine_with_one_gpu_runs_train_directly():
    from sentitune.launch import command

    assert command({}, ["--epochs", "1"], gpus=1)[1:] == ["-m", "sentitune.cli", "train", "--epochs", "1"]
    assert command({}, [], gpus=0)[1:] == ["-m", "sentitune.cli", "train"]
    assert "--nproc-per-node=2" in command({"SENTITUNE_NPROC_PER_NODE": "2"}, [], gpus=0)


def test_the_entrypoint_launches_two_processes_that_train(prepared, model_without_dropout, tmp_path):
    env = {
        **os.environ,
        "SENTITUNE_NPROC_PER_NODE": "2",
        "OMP_NUM_THREADS": "1",
        "MASTER_PORT": str(free_port()),
    }
    args = [
        "--data",
        str(prepared),
        "--model",
        str(model_without_dropout),
        "--job-dir",
        str(tmp_path / "job"),
        *STEPS,
    ]
    done = subprocess.run(
        [sys.executable, "-m", "sentitune.launch", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sentitune.launch: " in done.stderr and "--nproc-per-node=2" in done.stderr
    assert json.loads((tmp_path / "job" / "metrics.json").read_text())["training"]["processes"] == 2
