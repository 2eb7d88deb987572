#!/usr/bin/env python3
"""How a server's model threads share a small CPU with the work around them; prints one JSON object.

The run's `Predictor` scores the 2,000 validation tweets in random batches of --batch posts (the mix a
server of single-post requests takes from its queue), in --rounds alternating rounds of:
- one model thread with all torch threads (what `sentitune serve --model-workers 1` runs), and
- --workers model threads with an equal share of them each (`--model-workers N`, the auto default on a
  CPU),
each alone and then beside a process that keeps --duty of one core busy in short slices (a stand-in for
the server's event loop and its clients, which share the cores). Figures: posts/s per arrangement and
condition, and what the busy process cost each.

usage: model_threads.py --run RUN_DIR [--batch 32] [--workers 2] [--duty 0.2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speedlib import VAL_CSV, emit, log, machine_info  # noqa: E402

from sentitune.scoring import Predictor  # noqa: E402


def busy(stop, duty: float) -> None:
    """Keep `duty` of one core busy: spin, then sleep, in slices of about 0.3 ms of sleep."""
    while not stop.is_set():
        started = time.perf_counter()
        while time.perf_counter() - started < 0.0003 * duty / (1 - duty):
            pass
        time.sleep(0.0003)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a finished `sentitune train` run folder")
    parser.add_argument("--batch", type=int, default=32, help="posts per random batch")
    parser.add_argument("--workers", type=int, default=2, help="model threads of the second arrangement")
    parser.add_argument("--duty", type=float, default=0.2, help="share of one core the busy process takes")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    with open(VAL_CSV, encoding="utf-8") as f:
        posts = [row["text"] for row in csv.DictReader(f)]
    predictor = Predictor(args.run, device="cpu")
    tokens = predictor.tokens_of(posts)
    order = np.random.default_rng(0).permutation(len(posts))
    batches = [order[i : i + args.batch] for i in range(0, len(order), args.batch)]
    threads = torch.get_num_threads()
    share = max(1, threads // args.workers)

    def score(part: list[np.ndarray], torch_threads: int) -> None:
        torch.set_num_threads(torch_threads)
        for rows in part:
            predictor.probabilities_of(tokens.subset(rows))

    def rate(workers: int, torch_threads: int) -> float:
        running = [
            threading.Thread(target=score, args=(batches[i::workers], torch_threads)) for i in range(workers)
        ]
        started = time.perf_counter()
        for thread in running:
            thread.start()
        for thread in running:
            thread.join()
        return len(posts) / (time.perf_counter() - started)

    arrangements = {
        f"1 model thread x {threads} torch threads": (1, threads),
        f"{args.workers} model threads x {share} torch thread(s)": (args.workers, share),
    }
    score(batches[:4], threads)  # warm-up: allocations, kernels
    found: dict[str, dict[str, list[float]]] = {name: {"alone": [], "beside": []} for name in arrangements}
    for round_ in range(args.rounds):
        for condition in ("alone", "beside"):
            stop, other = multiprocessing.Event(), None
            if condition == "beside":
                other = multiprocessing.Process(target=busy, args=(stop, args.duty), daemon=True)
                other.start()
                time.sleep(0.5)
            try:
                for name, (workers, torch_threads) in arrangements.items():
                    found[name][condition].append(round(rate(workers, torch_threads), 1))
                    log(f"round {round_ + 1}, {condition}, {name}: {found[name][condition][-1]} posts/s")
            finally:
                stop.set()
                if other is not None:
                    other.join()
    torch.set_num_threads(threads)
    emit(
        {
            "benchmark": "model_threads",
            "machine": machine_info(),
            "run": args.run,
            "forward": predictor.scorer_reason,
            "precision": str(predictor.precision),
            "batch": args.batch,
            "busy_duty": args.duty,
            "posts_per_s": found,
            "median_posts_per_s": {
                name: {c: statistics.median(v) for c, v in conditions.items()}
                for name, conditions in found.items()
            },
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
