"""Training checkpoints that survive a preempted machine, resuming from the latest one, and SIGTERM.

A checkpoint is a folder `checkpoint-<step>/` holding everything the loop needs to continue as if it
had never stopped: model, best-so-far model, optimiser state (safetensors, no pickle), the torch RNG
states, and `state.json` (the loop's state: step, position in the epoch's batch order, history and
counters; the scheduler; the fp16 gradient scaler).
It is written to a local staging folder and moved into place with `state.json` last, so a
checkpoint without `state.json` is incomplete and ignored. The batch order of an epoch is a function
of (seed, epoch), so the position is just the epoch and the number of batches done.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import posixpath
import re
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sentitune.distributed import SINGLE, Dist
from sentitune.errors import SentituneError
from sentitune.storage import is_url, join, url_to_fs, writing

log = logging.getLogger("sentitune")
MARKER = "state.json"
FORMAT = 2  # of state.json; a checkpoint of another format is refused, not misread
_NAME = re.compile(r"^checkpoint-(\d+)$")


class StopSignal:
    """Turns SIGTERM (what Vertex AI sends before a Spot VM goes) into a flag the loop checks after
    each step, so it can save a checkpoint and stop cleanly instead of dying mid-step."""

    def __init__(self) -> None:
        self.received = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        self.received = True
        log.warning("SIGTERM received: stopping after this step with a checkpoint")

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, layout = {}, {"param_groups": state["param_groups"], "state": {}}
    for index, entry in state["state"].items():
        layout["state"][str(index)] = sorted(entry)
        for key, value in entry.items():
            tensors[f"{index}.{key}"] = value
    return _tensors(tensors), layout


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], layout: dict) -> dict:
    state = {int(i): {key: tensors[f"{i}.{key}"] for key in keys} for i, keys in layout["state"].items()}
    return {"state": state, "param_groups": layout["param_groups"]}


@dataclass
class Resumed:
    loop: dict  # the fields of the loop state that was saved (train.LoopState)
    best_state: dict[str, torch.Tensor] | None


class Checkpointer:
    """Saves and finds checkpoints under `root` (a local folder or an fsspec URL)."""

    def __init__(self, root: str, fingerprint: dict, keep: int = 1, dist: Dist = SINGLE):
        self.root = str(root)
        self.fingerprint = fingerprint
        self.keep = keep
        self.dist = dist  # under torchrun: every rank calls save(), rank 0 writes
        self.fs, self.inner = url_to_fs(self.root)
        if not is_url(self.root) and os.path.exists(self.root) and not os.path.isdir(self.root):
            raise SentituneError(f"--checkpoint-dir {self.root} is a file, not a folder; pass a folder")

    def _complete(self) -> list[tuple[int, str]]:
        if not self.fs.isdir(self.inner):
            return []
        found = []
        for path in self.fs.ls(self.inner, detail=False):
            match = _NAME.match(posixpath.basename(path.rstrip("/")))
            if match and self.fs.exists(posixpath.join(path, MARKER)):
                found.append((int(match.group(1)), path))
        return sorted(found)

    def save(self, model, optimizer, scheduler, best_state, loop, scaler=None) -> str:
        """Write checkpoint-<loop.step>; `loop` is the loop's state, a dataclass with a `step` field."""
        step = loop.step
        name = f"checkpoint-{step}"
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        every_rng = self.dist.gather_objects(rng)  # each rank resumes its own dropout stream
        if not self.dist.is_main:
            return join(self.root, name)
        if not is_url(self.root):  # staged beside its final place, so publishing is one rename
            os.makedirs(self.root, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=None if is_url(self.root) else self.root))
        try:
            with writing(staging):  # a full disk is an OSError, whatever the writer
                save_file(_tensors(model.state_dict()), str(staging / "model.safetensors"))
                if best_state is not None:
                    save_file(_tensors(best_state), str(staging / "best.safetensors"))
                tensors, layout = _flatten_optimizer(optimizer.state_dict())
                save_file(tensors, str(staging / "optimizer.safetensors"))
                save_file(rng, str(staging / "rng.safetensors"))
                for rank, state in enumerate(every_rng[1:], 1):
                    save_file(state, str(staging / f"rng-{rank}.safetensors"))
                state = {
                    "format": FORMAT,
                    "fingerprint": self.fingerprint,
                    "optimizer": layout,
                    "scheduler": scheduler.state_dict(),
                    # fp16's loss scale and its growth counter: a resumed run scales as the uninterrupted one
                    "grad_scaler": scaler.state_dict() if scaler is not None else None,
                    "loop": dataclasses.asdict(loop),
                }
                (staging / MARKER).write_text(json.dumps(state))
            target = posixpath.join(self.inner, name) if is_url(self.root) else os.path.join(self.root, name)
            self._publish(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for old_step, path in self._complete()[: -self.keep]:
            if old_step != step:
                self.fs.rm(path, recursive=True)
        log.info("checkpoint at step %d: %s", step, join(self.root, name))
        return join(self.root, name)

    def _publish(self, staging: Path, target: str) -> None:
        files = sorted(staging.iterdir(), key=lambda p: p.name == MARKER)  # state.json last
        if is_url(self.root):
            for p in files:
                self.fs.put_file(str(p), posixpath.join(target, p.name))
            return
        if os.path.exists(target):  # a checkpoint of the same step from a run that died after it
            shutil.rmtree(target)
        os.rename(staging, target)

    def resume(self, model, optimizer, scheduler, device: torch.device, scaler=None) -> Resumed | None:
        """Load the latest complete checkpoint into the objects, or None when there is none."""
        complete = self._complete()
        if not complete:
            return None
        step, path = complete[-1]
        local = Path(tempfile.mkdtemp(prefix="sentitune-resume-"))
        try:
            self.fs.get(path.rstrip("/") + "/", str(local), recursive=True)
            state = json.loads((local / MARKER).read_text())
            if state.get("format") != FORMAT:
                raise SentituneError(
                    f"the checkpoint in {self.root} was written by another version of sentitune; "
                    "delete it, or pass another --checkpoint-dir, to start the run again"
                )
            if state["fingerprint"] != self.fingerprint:
                changed = sorted(
                    k
                    for k in set(state["fingerprint"]) | set(self.fingerprint)
                    if state["fingerprint"].get(k) != self.fingerprint.get(k)
                )
                raise SentituneError(
                    f"the checkpoint in {self.root} was made with other settings ({', '.join(changed)}); "
                    "rerun with the same settings to resume, or pass another --checkpoint-dir"
                )
            model.load_state_dict(load_file(str(local / "model.safetensors"), device=str(device)))
            optimizer.load_state_dict(
                _unflatten_optimizer(load_file(str(local / "optimizer.safetensors")), state["optimizer"])
            )
            scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("grad_scaler"):
                scaler.load_state_dict(state["grad_scaler"])
            own = local / f"rng-{self.dist.rank}.safetensors"
            rng = load_file(str(own if self.dist.rank and own.exists() else local / "rng.safetensors"))
            torch.set_rng_state(rng["cpu"])
            cuda = [rng[k] for k in sorted(rng) if k.startswith("cuda")]
            if cuda and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(cuda)
            best = local / "best.safetensors"
            best_state = load_file(str(best)) if best.exists() else None
        finally:
            shutil.rmtree(local, ignore_errors=True)
        log.info("resuming from %s (step %d)", join(self.root, f"checkpoint-{step}"), step)
        return Resumed(state["loop"], best_state)

    def clear(self) -> None:
        """Remove the checkpoints once the run folder is complete."""
        if not self.dist.is_main:
            return
        for _, path in self._complete():
            self.fs.rm(path, recursive=True)
        if not is_url(self.root) and os.path.isdir(self.root):  # staging left by a process killed mid-save
            for entry in os.listdir(self.root):
                if entry.startswith(".partial-"):
                    shutil.rmtree(os.path.join(self.root, entry), ignore_errors=True)
        try:
            if self.fs.isdir(self.inner) and not self.fs.ls(self.inner, detail=False):
                self.fs.rmdir(self.inner)
        except OSError:
            pass
