#!/usr/bin/env python3
"""The speed benchmark suite in one command: training speed (with the matmul ceiling) and inference speed,
as one JSON object on stdout (progress on stderr).

    python benchmarks/run.py --quick   # `make bench`: a few minutes on 2 idle cores (< 10 minutes)
    python benchmarks/run.py           # `make bench-full`: more examples, more rounds, MiniLM inference too

What runs (see each script's docstring for how it measures):
  train_speed.py  seed_reference.py vs hf_trainer_reference.py vs `sentitune train`, alternating rounds,
                  on BERT-Tiny (batch 128) and MiniLM (batch 32); each rate also as a fraction of the
                  fp32 / bf16 matmul ceiling measured by ceiling.py
  eval_speed.py   sentitune's Predictor vs Trainer.evaluate() vs a transformers pipeline on val.csv
  (profile_train.py, run by hand: torch.profiler table and ablations of sentitune's train step)

Inputs are read from ../shared (data/tweets/{train,val}.csv, bench/*_reference.py; SENTITUNE_SHARED
overrides). The Trainer contenders need `accelerate` (pip install 'accelerate>=1.1'); without it they
are reported with an error and the rest runs. Timings are only comparable on an otherwise idle machine:
the JSON records the load average before and after, and each training child's CPU seconds next to its
wall time (cpu/wall well under the thread count means it was waiting for the CPU).
"""

from __future__ import annotations

import argparse
import sys
import time

import eval_speed
import train_speed
from speedlib import emit, log, machine_info, stdout_to_stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the short preset (make bench)")
    ap.add_argument("--models", help="model sizes for both benchmarks, e.g. tiny or tiny,minilm")
    ap.add_argument("--threads", type=int, help="pin the training contenders' OMP/MKL threads")
    ap.add_argument("--skip", default="", help="comma-separated: train, eval")
    args = ap.parse_args()

    common = (["--quick"] if args.quick else []) + (["--models", args.models] if args.models else [])
    t0 = time.perf_counter()
    result = {
        "suite": "sentitune speed",
        "mode": "quick" if args.quick else "full",
        "machine": machine_info(),
    }
    skip = set(filter(None, args.skip.split(",")))
    with stdout_to_stderr():  # stdout carries the JSON alone
        if "train" not in skip:
            p = argparse.ArgumentParser()
            train_speed.add_arguments(p)
            targs = p.parse_args(common + (["--threads", str(args.threads)] if args.threads else []))
            log("== training speed")
            result["train"] = train_speed.run(targs)
        if "eval" not in skip:
            p = argparse.ArgumentParser()
            eval_speed.add_arguments(p)
            log("== inference speed")
            result["eval"] = eval_speed.run(p.parse_args(common))
    result["load_average_end"] = machine_info()["load_average"]
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    log(f"== done in {result['wall_s']}s")
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
