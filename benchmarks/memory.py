#!/usr/bin/env python3
"""Peak memory of `sentitune prepare` and `sentitune train` on large inputs; prints one JSON object.

Each command runs as its own subprocess under `/usr/bin/time`-free measurement: the child's peak RSS
is read from `resource.getrusage(RUSAGE_CHILDREN)` after it exits (one child per measurement, so the
maximum is that child's). Inputs are real tweets resampled by large_input.py into a temporary folder.

- prepare: N rows with unique texts (--prepare-rows, default 5,000,000; target <= 2 GiB);
- train: M rows (--train-rows, default 1,000,000; target <= 2 GiB) read, tokenised and trained for a few
  steps on a BERT-Tiny-sized random model (memory does not depend on the number of steps).

usage: memory.py [--prepare-rows N] [--train-rows M] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from large_input import write_large_csv  # noqa: E402

from sentitune.builtin import build_random_bert  # noqa: E402

SENTITUNE = [sys.executable, "-m", "sentitune.cli", "--quiet"]


def run_child(cmd: list[str]) -> dict:
    """Run `cmd` alone and return its wall time and peak RSS (RUSAGE_CHILDREN covers only it here)."""
    code = (
        "import resource, subprocess, sys, json, time\n"
        "t = time.perf_counter()\n"
        "rc = subprocess.run(sys.argv[1:]).returncode\n"
        "wall = time.perf_counter() - t\n"
        "print(json.dumps({'rc': rc, 'wall_s': round(wall, 1), "
        "'peak_rss_mib': round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepare-rows", type=int, default=5_000_000)
    ap.add_argument("--train-rows", type=int, default=1_000_000)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    report = {
        "benchmark": "memory",
        "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "target_peak_rss_mib": 2048,
    }
    with tempfile.TemporaryDirectory(prefix="sentitune-mem-") as tmp:
        tmp = Path(tmp)
        if args.prepare_rows:
            t = time.perf_counter()
            big = write_large_csv(str(tmp / "big.csv"), args.prepare_rows, unique=True)
            gen_s = time.perf_counter() - t
            res = run_child([*SENTITUNE, "prepare", big, "--output-dir", str(tmp / "prep")])
            report["prepare"] = {
                "rows": args.prepare_rows,
                "input_mib": round(os.path.getsize(big) / 2**20, 1),
                "generate_s": round(gen_s, 1),
                **res,
            }
            os.remove(big)
        if args.train_rows:
            train = write_large_csv(str(tmp / "train.csv"), args.train_rows, seed=1)
            model = build_random_bert(tmp / "tiny")
            res = run_child(
                [
                    *SENTITUNE,
                    "train",
                    "--training-file",
                    train,
                    "--model",
                    str(model),
                    "--job-dir",
                    str(tmp / "run"),
                    "--max-steps",
                    str(args.steps),
                    "--batch-size",
                    "128",
                    "--train-eval-examples",
                    "0",
                ]
            )
            report["train"] = {"rows": args.train_rows, "steps": args.steps, **res}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
