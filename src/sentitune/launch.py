"""The training image's entrypoint: `sentitune train`, or a torchrun launch of it across GPUs and machines.

Vertex AI describes a multi-machine job in CLUSTER_SPEC (JSON: the replicas of each worker pool and
this task's pool and index) and, for PyTorch, in MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK, where
WORLD_SIZE counts machines, not processes. This turns that into

    torchrun --nnodes MACHINES --node-rank THIS_MACHINE --nproc-per-node GPUS
             --master-addr ADDR --master-port PORT -m sentitune.cli train ARGS...

with one process per GPU (SENTITUNE_NPROC_PER_NODE overrides the count). One machine with at most one
GPU runs `sentitune train ARGS...` directly.

usage: python -m sentitune.launch [TRAIN_ARGS...]
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence

DEFAULT_PORT = "29500"


def machines(env: Mapping[str, str]) -> tuple[int, int, str, str]:
    """(number of machines, this machine's index, master address, master port) from Vertex AI's env."""
    spec = json.loads(env["CLUSTER_SPEC"]) if env.get("CLUSTER_SPEC") else {}
    cluster = spec.get("cluster", {})
    pools = [cluster[name] for name in sorted(cluster) if name.startswith("workerpool")]
    count = int(env["WORLD_SIZE"]) if env.get("WORLD_SIZE") else sum(len(p) for p in pools) or 1
    task = spec.get("task", {})
    if env.get("RANK"):
        index = int(env["RANK"])
    elif task:  # pool 0 holds the primary; pool 1's replicas follow it
        pool = int(str(task.get("type", "workerpool0")).removeprefix("workerpool") or 0)
        index = sum(len(p) for p in pools[:pool]) + int(task.get("index", 0))
    else:
        index = 0
    primary = pools[0][0] if pools and pools[0] else ""
    host, _, port = primary.rpartition(":") if ":" in primary else (primary, "", "")
    address = env.get("MASTER_ADDR") or host or "127.0.0.1"
    return count, index, address, env.get("MASTER_PORT") or port or DEFAULT_PORT


def command(env: Mapping[str, str], train_args: Sequence[str], gpus: int) -> list[str]:
    count, index, address, port = machines(env)
    per_machine = int(env.get("SENTITUNE_NPROC_PER_NODE") or max(gpus, 1))
    if count == 1 and per_machine == 1:
        return [sys.executable, "-m", "sentitune.cli", "train", *train_args]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={count}",
        f"--node-rank={index}",
        f"--nproc-per-node={per_machine}",
        f"--master-addr={address}",
        f"--master-port={port}",
        "-m",
        "sentitune.cli",
        "train",
        *train_args,
    ]


def main(argv: Sequence[str] | None = None) -> None:
    import torch

    args = list(sys.argv[1:] if argv is None else argv)
    cmd = command(os.environ, args, torch.cuda.device_count())
    env = dict(os.environ)
    if cmd[2] == "torch.distributed.run":  # torchrun sets RANK / WORLD_SIZE per process itself
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            env.pop(key, None)
    print("sentitune.launch: " + " ".join(cmd), file=sys.stderr, flush=True)
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
