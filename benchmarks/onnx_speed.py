#!/usr/bin/env python3
"""Prediction speed of a run's PyTorch, ONNX and ONNX int8 models, and the accuracy int8 costs; one JSON.

Two workloads on the TweetEval validation tweets (../shared/data/tweets/val.csv):
- `file`: all 2,000 tweets in one call (sorted by length inside, as `sentitune predict` does), at the
  Predictor's batch sizes 16 and 64;
- `micro_batch`: 40 batches of 35 random tweets, what the server sees at 64 clients, in forward passes of
  4, 8, 16, 32 or 64 posts (the server's --model-batch).
Backends and batch sizes alternate over --rounds rounds; medians are reported. The run needs an ONNX
export with int8 (`sentitune export RUN --quantize int8`); its parity report gives the accuracy figures.

usage: onnx_speed.py RUN_DIR [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speedlib import VAL_CSV, emit, log, machine_info, median  # noqa: E402

from sentitune.metrics import classification_metrics  # noqa: E402
from sentitune.scoring import Predictor  # noqa: E402
from sentitune.splits import read_labelled  # noqa: E402

BACKENDS = ("torch", "onnx", "onnx-int8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    split = read_labelled(str(VAL_CSV))
    texts = list(split.texts)
    rng = random.Random(0)
    micro = [rng.sample(texts, 35) for _ in range(40)]

    predictors = {
        b: {bs: Predictor(args.run_dir, backend=b, batch_size=bs) for bs in (4, 8, 16, 32, 64)}
        for b in BACKENDS
    }
    file_rates: dict = {b: {16: [], 64: []} for b in BACKENDS}
    micro_rates: dict = {b: {bs: [] for bs in (4, 8, 16, 32, 64)} for b in BACKENDS}
    for p in (p for per in predictors.values() for p in per.values()):
        p.probabilities(texts[:64])  # warm-up: allocations, thread pools
    for r in range(args.rounds):
        for b in BACKENDS:
            for bs in (16, 64):
                t = time.perf_counter()
                predictors[b][bs].probabilities(texts)
                file_rates[b][bs].append(len(texts) / (time.perf_counter() - t))
            for bs in micro_rates[b]:
                t = time.perf_counter()
                for batch in micro:
                    predictors[b][bs].probabilities(batch)
                micro_rates[b][bs].append(35 * len(micro) / (time.perf_counter() - t))
        log(f"round {r + 1}/{args.rounds} done")

    quality = {}
    for b in BACKENDS:
        probs = predictors[b][64].probabilities(texts)
        m = classification_metrics(split.labels, probs, predictors[b][64].labels)
        quality[b] = {k: round(m[k], 4) for k in ("accuracy", "macro_f1", "macro_recall")}
    report = json.loads((Path(args.run_dir) / "onnx" / "export_report.json").read_text())
    emit(
        {
            "benchmark": "onnx_speed",
            "machine": machine_info(),
            "run": args.run_dir,
            "model": json.loads((Path(args.run_dir) / "run_config.json").read_text())["model"],
            "rounds": args.rounds,
            "torch_precision": predictors["torch"][64].precision.name,  # bf16 where the CPU has it natively
            "file_tweets_per_s": {
                b: {str(bs): round(median(v), 1) for bs, v in per.items()} for b, per in file_rates.items()
            },
            "micro_batch_tweets_per_s": {
                b: {str(bs): round(median(v), 1) for bs, v in per.items()} for b, per in micro_rates.items()
            },
            "validation": quality,
            "export": {
                name: {k: m[k] for k in ("bytes", "label_agreement", "max_prob_diff")}
                for name, m in report["models"].items()
            },
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
