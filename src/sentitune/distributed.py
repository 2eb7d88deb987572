"""Data-parallel training on torch.distributed: the process group from torchrun's environment.

`sentitune train` under `torchrun --nproc-per-node N [--nnodes M ...]` finds RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT in its environment, joins the group (NCCL on CUDA, gloo on CPU)
and trains with DistributedDataParallel. Without those variables it is a single process and nothing
here does anything.

Every rank computes the same global batches from the seed and takes every world-th row of each, so the
shards are disjoint and deterministic and each stays length-bucketed; the loss is scaled so that the
averaged gradient is the gradient of the global batch's mean loss, as in one process.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import transformers

from sentitune import __version__
from sentitune.errors import SentituneError

log = logging.getLogger("sentitune")


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, rows: np.ndarray) -> np.ndarray:
        """This rank's rows of a global batch (every world-th, starting at the rank)."""
        return rows[self.rank :: self.world_size]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, *values: float) -> list[float]:
        """Element-wise sum over ranks (float64 on the CPU side)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return t.cpu().tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (a SIGTERM on any rank stops them all)."""
        if not self.enabled:
            return flag
        return self.sum(float(flag))[0] > 0

    def gather_objects(self, value) -> list:
        """Every rank's `value`, in rank order (a list of one without a group)."""
        if not self.enabled:
            return [value]
        every = [None] * self.world_size
        dist.all_gather_object(every, value)
        return every

    def gather_rows(self, rows: np.ndarray, values: np.ndarray, total: int) -> np.ndarray:
        """Rebuild a (total, ...) array from every rank's (rows, values)."""
        if not self.enabled:
            out = np.empty((total, *values.shape[1:]), values.dtype)
            out[rows] = values
            return out
        parts = self.gather_objects((rows, values))
        out = np.empty((total, *values.shape[1:]), values.dtype)
        for part_rows, part_values in parts:
            if len(part_rows):
                out[part_rows] = part_values
        return out

    def _device(self) -> torch.device:
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


SINGLE = Dist()


def from_environment() -> Dist:
    env = os.environ
    if int(env.get("WORLD_SIZE", "1")) <= 1:
        return SINGLE
    try:
        return Dist(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))
    except (KeyError, ValueError) as exc:
        raise SentituneError(
            "WORLD_SIZE > 1 but RANK is missing or not a number: launch with torchrun, which sets "
            "RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT"
        ) from exc


def setup(device_name: str, timeout_s: float) -> tuple[Dist, str]:
    """Join the process group if torchrun started us; returns it and the device this rank uses."""
    d = from_environment()
    if not d.enabled:
        return d, device_name
    cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(d.local_rank)
        device_name = f"cuda:{d.local_rank}"
    elif device_name == "cuda":
        raise SentituneError("--device cuda: no CUDA GPU is visible on this rank; use --device cpu or auto")
    else:
        device_name = "cpu"
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
            **({"device_id": torch.device(device_name)} if cuda else {}),
        )
    except Exception as exc:  # a DistNetworkError, a RuntimeError from the store: one clear line
        raise SentituneError(
            f"rank {d.rank} of {d.world_size} could not join the job at {where} within {timeout_s:.0f} s "
            f"({type(exc).__name__}); check MASTER_ADDR/MASTER_PORT, that rank 0 is running and that the "
            "port is open between the machines (--dist-timeout sets the wait)"
        ) from exc
    if not d.is_main:
        logging.getLogger("sentitune").setLevel(logging.WARNING)  # one log: rank 0's
    check_same_versions(d)
    log.info(f"distributed: {d.world_size} processes ({'nccl' if cuda else 'gloo'}), master {where}")
    return d, device_name


def local_versions() -> dict:
    return {
        "sentitune": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def check_same_versions(d: Dist, versions: dict | None = None) -> None:
    """Every rank must run the same package versions, or the ranks would compute different things."""
    every = d.gather_objects(versions or local_versions())
    differing = sorted({k for v in every for k in v if v.get(k) != every[0].get(k)})
    if differing:
        detail = "; ".join(
            f"{k}: " + ", ".join(f"rank {r} {v.get(k)}" for r, v in enumerate(every)) for k in differing
        )
        raise SentituneError(
            f"the ranks run different package versions ({detail}); use the same image everywhere"
        )


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
