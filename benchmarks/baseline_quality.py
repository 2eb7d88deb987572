#!/usr/bin/env python3
"""Quality and wall time of `sentitune baseline` on the shared tweet data; prints one JSON object.

Trains on ../shared/data/tweets/train.csv (47,389 tweets) and evaluates on val.csv (the 2,000-tweet
TweetEval validation split), exactly as

    sentitune baseline --training-file ../shared/data/tweets/train.csv \\
        --validation-file ../shared/data/tweets/val.csv --job-dir RUN [--c C --class-weights W --min-df M]

into a temporary run folder, once per combination of the settings given (comma-separated lists); the
defaults are the command's defaults, which this script was used to choose. The yardstick is published
macro-recall on TweetEval sentiment: SVM 62.9, FastText 62.9 (on the test split; we compare on val).

usage: baseline_quality.py [--c 1] [--class-weights auto] [--min-df 2]
Set SENTITUNE_SHARED to read the data from elsewhere. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from sentitune.baseline import BaselineConfig, baseline

SHARED = Path(os.environ.get("SENTITUNE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATA_DIR = SHARED / "data" / "tweets"


def main() -> None:
    defaults = BaselineConfig(training_file="-", job_dir="-")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--c", default=str(defaults.c), help="comma-separated values of C")
    ap.add_argument("--class-weights", default=defaults.class_weights, help="comma-separated: none, auto")
    ap.add_argument("--min-df", default=str(defaults.min_df), help="comma-separated values of min_df")
    args = ap.parse_args()
    train_csv, val_csv = DATA_DIR / "train.csv", DATA_DIR / "val.csv"
    if not (train_csv.is_file() and val_csv.is_file()):
        raise SystemExit(f"shared tweet data not found in {DATA_DIR}; set SENTITUNE_SHARED")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")

    runs = []
    grid = itertools.product(
        [float(c) for c in args.c.split(",")],
        args.class_weights.split(","),
        [int(m) for m in args.min_df.split(",")],
    )
    for c, weights, min_df in grid:
        with tempfile.TemporaryDirectory(prefix="sentitune-baseline-") as tmp:
            cfg = BaselineConfig(
                training_file=str(train_csv),
                validation_file=str(val_csv),
                job_dir=str(Path(tmp) / "run"),
                c=c,
                class_weights=weights,
                min_df=min_df,
            )
            result = baseline(cfg)
            size = sum(p.stat().st_size for p in (Path(tmp) / "run").iterdir())
        val, training = result.metrics["val"], result.metrics["training"]
        runs.append(
            {
                "settings": {"c": c, "class_weights": weights, "min_df": min_df},
                "val_macro_recall": round(val["macro_recall"], 4),
                "val_macro_f1": round(val["macro_f1"], 4),
                "val_accuracy": round(val["accuracy"], 4),
                "val_recall_per_class": {k: round(v["recall"], 4) for k, v in val["per_class"].items()},
                "wall_s": training["wall_s"],
                "fit_s": training["fit_s"],
                "iterations": training["iterations"],
                "features": training["features"],
                "run_folder_mib": round(size / 2**20, 1),
            }
        )
        print(json.dumps(runs[-1]), file=sys.stderr)
    best = max(runs, key=lambda r: r["val_macro_recall"])
    report = {
        "benchmark": "baseline_quality",
        "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "train": str(train_csv),
        "val": str(val_csv),
        "published_macro_recall_tweeteval_test": {"svm": 0.629, "fasttext": 0.629},
        "best": best,
        "runs": runs,
    }
    sys.stdout.write(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
