"""Helpers shared by the speed benchmarks (train_speed.py, eval_speed.py, ceiling.py, run.py).

- where the inputs are (the tweet splits and the two reference pipelines, read from ../shared, never
  copied into the repository);
- the model sizes compared (a random BERT-Tiny built on the fly, the embedded MiniLM);
- one child process run with its own wall time and peak RSS (os.wait4 gives that child's rusage);
- machine information, medians, ratios, and keeping stdout for the final JSON alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SENTITUNE_SHARED", REPO.parent / "shared"))
DATA_DIR = SHARED / "data" / "tweets"
BENCH_DIR = SHARED / "bench"
TRAIN_CSV = DATA_DIR / "train.csv"
VAL_CSV = DATA_DIR / "val.csv"
SEED_SCRIPT = BENCH_DIR / "seed_reference.py"
TRAINER_SCRIPT = BENCH_DIR / "hf_trainer_reference.py"
MAX_LENGTH = 100  # tokens per post, the walkthrough's and sentitune's default


@dataclass(frozen=True)
class ModelSize:
    name: str
    description: str
    batch_size: int  # the training batch size compared (the walkthrough's 128 for BERT-Tiny)


MODEL_SIZES = {
    "tiny": ModelSize("tiny", "random BERT-Tiny (2 layers x 128 hidden x 2 heads, real vocabulary)", 128),
    "minilm": ModelSize("minilm", "embedded all-MiniLM-L6-v2 (6 layers x 384 hidden x 12 heads)", 32),
    # So small that a step is almost all host work (Python, op launches, the optimiser, data): the
    # milliseconds per step measure a training loop's overhead, what a GPU step at small batches pays.
    "host": ModelSize(
        "host", "random 1 layer x 32 hidden x 2 heads BERT (real vocabulary): host overhead", 32
    ),
}
# model size -> (layers, hidden, heads) of the random models built on the fly
RANDOM_SHAPES = {"tiny": (2, 128, 2), "host": (1, 32, 2)}


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def model_folder(name: str, workdir: str | Path) -> str:
    """A Hugging Face folder for model size `name` (BERT-Tiny is built into `workdir` once)."""
    from sentitune.builtin import build_random_bert, default_model

    if name == "minilm":
        return default_model()
    if name in RANDOM_SHAPES:
        layers, hidden, heads = RANDOM_SHAPES[name]
        folder = Path(workdir) / f"bert-{name}"
        if not (folder / "config.json").is_file():
            with stdout_to_stderr():
                build_random_bert(folder, layers=layers, hidden=hidden, heads=heads)
        return str(folder)
    raise SystemExit(f"unknown model size {name!r}; choose from {', '.join(MODEL_SIZES)}")


def model_shape(folder: str) -> dict:
    """Layers, widths and parameter counts read from config.json (no weights loaded)."""
    cfg = json.loads((Path(folder) / "config.json").read_text())
    h, i, n_layers, vocab = (
        cfg["hidden_size"],
        cfg["intermediate_size"],
        cfg["num_hidden_layers"],
        cfg["vocab_size"],
    )
    embeddings = (vocab + cfg.get("max_position_embeddings", 512) + cfg.get("type_vocab_size", 2)) * h + 2 * h
    layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 4 * h  # attention, FFN, two LayerNorms
    head = h * h + h + 3 * h + 3  # pooler + 3-class classifier
    total = embeddings + n_layers * layer + head
    return {
        "layers": n_layers,
        "hidden": h,
        "heads": cfg["num_attention_heads"],
        "intermediate": i,
        "vocab": vocab,
        "parameters": total,
        "word_embedding_parameters": vocab * h,
        "word_embedding_fraction": round(vocab * h / total, 3),
    }


@dataclass
class ChildResult:
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_mib: float
    cpu_s: float = 0.0  # user + system CPU seconds of the child: cpu_s / wall_s < threads means it waited
    timed_out: bool = False

    def last_json(self) -> dict | None:
        """The last stdout line that parses as a JSON object (reference scripts print one)."""
        for line in reversed(self.stdout.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    continue
        return None

    def error_tail(self, lines: int = 6) -> str:
        text = (self.stderr or self.stdout).strip().splitlines()
        return "\n".join(text[-lines:])


def run_child(cmd: list[str], env: dict | None = None, timeout: float | None = None, echo: bool = False):
    """Run `cmd`, capture its output, and measure its wall time and peak RSS.

    The peak RSS is that child's own `ru_maxrss` from os.wait4 (it covers the child and any of its
    children it waited for), so it does not depend on the other children this process ran before.
    With `echo`, the child's stderr goes straight to ours (stdout is always captured).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=None if echo else err, env=env)
        deadline = t0 + timeout if timeout else None
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline and time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildResult(
            returncode=proc.returncode,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
            wall_s=wall,
            peak_rss_mib=usage.ru_maxrss / 1024,  # Linux reports KiB
            cpu_s=usage.ru_utime + usage.ru_stime,
            timed_out=timed_out,
        )


# The environment variables that hold torch's kernels, oneDNN and MKL to an instruction set below the CPU's.
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def child_env(threads: int | None = None, extra: dict | None = None) -> dict:
    """The environment for a contender: ours, with the thread count pinned when asked."""
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env.update(extra or {})
    return env


def median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def mean_token_length(texts, tokenizer_folder: str, max_length: int = MAX_LENGTH) -> float:
    """Mean tokens per post with [CLS] and [SEP], truncated at max_length (the fast tokenizer)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_folder, use_fast=True)
    enc = tok(list(texts), truncation=True, max_length=max_length, return_attention_mask=False)
    lengths = [len(ids) for ids in enc["input_ids"]]
    return sum(lengths) / max(len(lengths), 1)


def read_texts(path: Path) -> tuple[list[str], list[str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def read_label_ids(path: Path):
    """read_texts with each label as its class id in an array (sentitune's order: negative, neutral,
    positive)."""
    import numpy as np

    from sentitune import LABELS

    texts, names = read_texts(path)
    return texts, np.array([LABELS.index(n) for n in names])


def _git_commit() -> str | None:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return f"{head}{'+dirty-src' if dirty else ''}" if head else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    import torch
    import transformers

    import sentitune

    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gib = None
    from sentitune.environment import report

    env = report()  # what `sentitune env` prints: the same CPU, ISA and precision names
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_model": env["cpu"]["model"],
        "cpu_features": env["cpu"]["features"],
        "native_bf16": env["cpu"]["native_bf16"],
        "torch_kernels": env["cpu"]["torch_kernels"],
        # set by `make bench-avx2`: torch, oneDNN and MKL held to AVX2 on a CPU that has more
        "isa_limits": {name: os.environ[name] for name in ISA_LIMITS if name in os.environ},
        "precision_auto": env["choices"]["torch"]["precision"],
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": mem_gib,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpus": env["gpus"],
        "transformers": transformers.__version__,
        "sentitune": sentitune.__version__,
        "sentitune_commit": _git_commit(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


@contextlib.contextmanager
def stdout_to_stderr():
    """Send everything written to stdout (Python and C level) to stderr while the block runs, so the
    final JSON is the only thing on stdout (transformers and the Trainer print progress there)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def bench_main(doc: str, add_arguments, run) -> int:
    """The `main()` of a benchmark script: parse its options, run it with stdout kept for the JSON, and
    print the result with the machine (and the load average at the end)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    add_arguments(ap)
    args = ap.parse_args()
    machine = machine_info()
    with stdout_to_stderr():
        result = run(args)
    result = {"benchmark": result.pop("benchmark"), "machine": machine, **result}
    result["load_average_end"] = machine_info()["load_average"]
    emit(result)
    return 0


def emit(result: dict) -> None:
    """Print the one JSON object on stdout."""
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    sys.stdout.flush()
