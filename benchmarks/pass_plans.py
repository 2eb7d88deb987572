#!/usr/bin/env python3
"""Forward passes as a server cuts them, replayed alone: padded against packed; prints one JSON object.

The run's Predictor (one torch thread, posts per CPU-second, so other work on the machine disturbs it
less) scores the 2,000 validation tweets in passes planned as:
  sorted64     the whole file sorted by length, passes of 64 (what the offline Predictor does)
  randomN-B    random posts taken N at a time (what a server's queue holds), each cut by the server's
               plan (sorted, a budget of B tokens: counting padding when padded, the posts' own when
               packed; 0: no budget)
and each plan runs padded (the frozen trace, rows in fours and tokens in eights) and packed
(sentitune/packed.py). Plans and paths take turns for --rounds rounds; medians and every round.

usage: pass_plans.py --run RUN_DIR [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speedlib import VAL_CSV, bench_main, log  # noqa: E402


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="a finished `sentitune train` run folder")
    parser.add_argument("--rounds", type=int, default=3)


def run_plans(args) -> dict:
    import pandas as pd
    import torch

    from sentitune.batching import passes_within_budget, sorted_batches
    from sentitune.packed import PackedClassifier
    from sentitune.runtime import SHAPE_MULTIPLE, bucketed_rows
    from sentitune.scoring import Predictor

    torch.set_num_threads(1)
    packed = Predictor(args.run)
    if not isinstance(packed.scorer, PackedClassifier):
        raise SystemExit(f"{args.run} does not run packed: {packed.scorer_reason}")
    os.environ["SENTITUNE_PACK"] = "0"
    padded = Predictor(args.run)
    tokens = packed.tokens_of(pd.read_csv(VAL_CSV)["text"].astype(str).tolist())
    lengths = tokens.lengths

    def random_plan(taken: int, budget: int, own: bool) -> list[np.ndarray]:
        order, plan = np.random.default_rng(1).permutation(len(lengths)), []
        for start in range(0, len(order), taken):
            chunk = order[start : start + taken]
            if budget:
                plan += [chunk[r] for r in passes_within_budget(lengths[chunk], budget, 64, padded=not own)]
            else:
                plan.append(chunk)
        return plan

    plans = {
        "sorted64": (list(sorted_batches(lengths, 64)),) * 2,
        "random32-1024": (random_plan(32, 1024, False), random_plan(32, 1024, True)),
        "random32-512": (random_plan(32, 512, False), random_plan(32, 512, True)),
        "random32-0": (random_plan(32, 0, False),) * 2,
        "random64-0": (random_plan(64, 0, False),) * 2,
        "random16-0": (random_plan(16, 0, False),) * 2,
    }

    def run(plan: list[np.ndarray], path: str) -> tuple[float, float]:
        started, run_tokens = time.process_time(), 0
        with torch.inference_mode():
            for rows in plan:
                if path == "packed":
                    packed.scorer.logits(tokens, rows)
                    run_tokens += int(lengths[rows].sum())
                else:
                    ids, mask = tokens.batch(bucketed_rows(rows, 64), multiple=SHAPE_MULTIPLE)
                    padded.scorer(input_ids=ids, attention_mask=mask)
                    run_tokens += ids.numel()
        return sum(len(r) for r in plan) / (time.process_time() - started), run_tokens / lengths.sum()

    cases = [(name, path) for name in plans for path in ("padded", "packed")]
    for name, path in cases:  # warm-up: kernels for every shape
        run(plans[name][path == "packed"], path)
    found: dict = {case: [] for case in cases}
    padding: dict = {}
    for i in range(args.rounds):
        for name, path in cases if i % 2 == 0 else cases[::-1]:
            rate, padding_of = run(plans[name][path == "packed"], path)
            found[(name, path)].append(round(rate, 1))
            padding[(name, path)] = round(float(padding_of), 3)
            log(f"round {i + 1}: {name} {path}: {rate:.0f} posts per CPU-second")
    return {
        "benchmark": "pass_plans",
        "run": args.run,
        "forward": {"packed": packed.scorer_reason, "padded": padded.scorer_reason},
        "unit": "posts per CPU-second, one torch thread",
        "plans": {
            name: {
                path: {
                    "median": statistics.median(found[(name, path)]),
                    "rounds": found[(name, path)],
                    "tokens_run_per_token": padding[(name, path)],
                    "passes": len(plans[name][path == "packed"]),
                }
                for path in ("padded", "packed")
            }
            for name in plans
        },
    }


if __name__ == "__main__":
    sys.exit(bench_main(__doc__, add_arguments, run_plans))
