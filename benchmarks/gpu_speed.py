#!/usr/bin/env python3
"""Training and inference speed of sentitune on one CUDA GPU; prints one JSON object.

For BERT-Tiny (random weights, 2 x 128 x 2: speed does not depend on them) and the embedded MiniLM
(6 x 384): `sentitune.train.train` for --steps optimiser steps (bf16 autocast, fused AdamW, pinned
host batches, no per-step host sync) and `Predictor` over the validation texts. Each measurement is
repeated --rounds times after --warmup-rounds untimed ones (the first round in a process pays for CUDA's
start-up: library handles, kernel loading; on an H100 it ran at a fifth of the second's rate); the JSON
holds the medians of the timed rounds and lists every round. Data: ../shared/data/tweets when present
(SENTITUNE_SHARED overrides ../shared), else the embedded tweet corpus (prepared into a temporary folder).

usage: gpu_speed.py [--models bert-tiny,minilm] [--warmup-rounds 1] [--rounds 2] [--steps 300] [--tiny-batch 1024] [--minilm-batch 256]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speedlib import TRAIN_CSV, VAL_CSV  # noqa: E402

from sentitune.builtin import build_random_bert, default_model
from sentitune.config import PrepareConfig, TrainConfig
from sentitune.prepare import prepare
from sentitune.scoring import Predictor
from sentitune.splits import read_labelled
from sentitune.train import train

MODELS = ("bert-tiny", "minilm")


def data_files(tmp: Path) -> tuple[str, str]:
    if TRAIN_CSV.is_file():
        return str(TRAIN_CSV), str(VAL_CSV)
    prepare(PrepareConfig(inputs=[], output_dir=str(tmp / "data")))
    return str(tmp / "data" / "train.csv"), str(tmp / "data" / "eval.csv")


def measure(model: str, batch: int, steps: int, train_file: str, val_file: str, tmp: Path) -> dict:
    job = tmp / f"run-{Path(model).name}-{time.monotonic_ns()}"
    cfg = TrainConfig(
        training_file=train_file,
        validation_file=val_file,
        model=model,
        job_dir=str(job),
        batch_size=batch,
        max_steps=steps,
        learning_rate=1e-4,
        device="cuda",
        train_eval_examples=0,
        eval_batch_size=1024,
        log_every=100,
    )
    result = train(cfg)
    texts = read_labelled(val_file).texts
    predictor = Predictor(str(job), device="cuda", batch_size=1024)
    predictor.probabilities(texts)  # warm-up: kernels, allocator
    torch.cuda.synchronize()
    t = time.perf_counter()
    predictor.probabilities(texts)
    torch.cuda.synchronize()
    infer = len(texts) / (time.perf_counter() - t)
    training = result.metrics["training"]
    return {
        "train_examples_per_s": training["examples_per_s"],
        "time_to_first_step_s": training["time_to_first_step_s"],
        "inference_examples_per_s": round(infer, 1),
        "val_accuracy": round(result.metrics["val"]["accuracy"], 4),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated, of: " + ", ".join(MODELS))
    ap.add_argument("--warmup-rounds", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--tiny-batch", type=int, default=1024)
    ap.add_argument("--minilm-batch", type=int, default=256)
    args = ap.parse_args()
    names = args.models.split(",")
    if unknown := set(names) - set(MODELS):
        ap.error(f"--models: unknown {', '.join(sorted(unknown))}; choose from {', '.join(MODELS)}")
    if not torch.cuda.is_available():
        raise SystemExit("gpu_speed.py needs a CUDA GPU")
    report = {
        "benchmark": "gpu",
        "date": time.strftime("%Y-%m-%d"),
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "steps": args.steps,
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="sentitune-gpu-") as tmp:
        tmp = Path(tmp)
        train_file, val_file = data_files(tmp)
        models = {
            "bert-tiny": lambda: (build_random_bert(tmp / "tiny"), args.tiny_batch),
            "minilm": lambda: (default_model(), args.minilm_batch),
        }
        for name in names:
            folder, batch = models[name]()
            rounds = [
                measure(folder, batch, args.steps, train_file, val_file, tmp)
                for _ in range(args.warmup_rounds + args.rounds)
            ]
            warmup, runs = rounds[: args.warmup_rounds], rounds[args.warmup_rounds :]
            report["models"][name] = {
                "batch_size": batch,
                "warmup_rounds": warmup,
                "rounds": runs,
                **{k: statistics.median(r[k] for r in runs) for k in runs[0]},
            }
            print(
                f"{name}: {report['models'][name]['train_examples_per_s']} training examples/s",
                file=sys.stderr,
            )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
