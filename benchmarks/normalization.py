#!/usr/bin/env python3
"""Does `--normalize tweet` help? Two runs that differ only in it, scored on the 2,000 TweetEval validation
tweets and on an emoji check set made from them; prints one JSON object.

Both runs: the embedded MiniLM cut to 3 layers, one epoch at learning rate 1e-4 (the demo's `--preset
fast`), trained on ../shared/data/tweets/train.csv and validated on val.csv, same seed; one with
`--normalize tweet`, one with `--normalize none`.

The emoji check set: neither the training tweets nor the validation tweets hold a single emoji, so
nothing in them can show what reading emoji is worth. The check set is val.csv with one emoji appended
to each positive and each negative post, drawn (seeded) from a fixed list whose every emoji means that
sentiment by its Unicode name (😍 smiling face with heart-eyes ... 😡 enraged face); neutral posts are
left as written. No label changes, no post is dropped, the test data is not touched, and the emoji lists
were fixed before any run. The models never saw an emoji in training, so what the emoji adds can only
come from the pre-trained encoder reading their names: with `none` an emoji is [UNK], and the set reads
(almost) as val.csv does.

  python benchmarks/normalization.py [--work DIR]      (about 10 minutes on 2 CPU cores)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from speedlib import TRAIN_CSV, VAL_CSV, bench_main, log, run_child

POSITIVE_EMOJI = ["😍", "😊", "❤️", "👍", "🎉", "😁", "🥰", "🙌"]
NEGATIVE_EMOJI = ["😡", "😢", "😭", "👎", "😞", "😠", "💔", "😤"]
SETTINGS = ["--keep-layers", "3", "--epochs", "1", "--learning-rate", "1e-4", "--train-eval-examples", "0"]
SENTITUNE = [sys.executable, "-m", "sentitune", "--quiet"]


def emoji_check_set(val: Path, out: Path) -> dict:
    """val.csv with a label-agreeing emoji appended to every positive and negative post."""
    frame = pd.read_csv(val)
    rng = np.random.default_rng(0)
    texts = []
    for text, label in zip(frame["text"], frame["label"], strict=True):
        pool = {"positive": POSITIVE_EMOJI, "negative": NEGATIVE_EMOJI}.get(label)
        texts.append(f"{text} {pool[int(rng.integers(len(pool)))]}" if pool else text)
    frame["text"] = texts
    frame.to_csv(out, index=False)
    return {"posts": len(frame), "with_emoji": int(frame["label"].isin(["positive", "negative"]).sum())}


def normalization_cost(path: Path) -> dict:
    """What normalising the training tweets takes, and how many of them it changes."""
    from sentitune.normalize import Normalization

    texts = pd.read_csv(path)["text"].astype(str).tolist()
    started = time.perf_counter()
    rewritten = Normalization("tweet").apply_all(texts)
    seconds = time.perf_counter() - started
    return {
        "posts": len(texts),
        "seconds": round(seconds, 2),
        "changed": sum(a != b for a, b in zip(texts, rewritten, strict=True)),
    }


def train_run(scheme: str, work: Path) -> Path:
    job = work / f"normalize-{scheme}"
    if not (job / "metrics.json").is_file():
        log(f"training with --normalize {scheme}")
        cmd = [*SENTITUNE, "train", "--training-file", str(TRAIN_CSV), "--validation-file", str(VAL_CSV),
               "--job-dir", str(job), "--normalize", scheme, "--overwrite", *SETTINGS]  # fmt: skip
        result = run_child(cmd, timeout=7200)
        if result.returncode:
            raise SystemExit(f"train failed ({result.returncode}): {result.stderr[-2000:]}")
    return job


def scores(metrics: dict) -> dict:
    row = {k: round(metrics[k], 4) for k in ("examples", "accuracy", "macro_f1", "macro_recall")}
    row["intervals_95"] = {
        k: [round(x, 4) for x in v]
        for k, v in metrics["intervals_95"].items()
        if k in ("accuracy", "macro_recall")
    }
    return row


def run(args) -> dict:
    work = Path(args.work or tempfile.mkdtemp(prefix="sentitune-normalization-"))
    work.mkdir(parents=True, exist_ok=True)
    check = work / "emoji_check.csv"
    built = emoji_check_set(VAL_CSV, check)
    runs = {scheme: train_run(scheme, work) for scheme in ("tweet", "none")}
    out = work / "emoji-evaluation"
    cmd = [*SENTITUNE, "evaluate", str(runs["tweet"]), str(runs["none"]), "--data", str(check),
           "--output-dir", str(out), "--overwrite"]  # fmt: skip
    result = run_child(cmd, timeout=3600)
    if result.returncode:
        raise SystemExit(f"evaluate failed ({result.returncode}): {result.stderr[-2000:]}")
    rows = {}
    for scheme, job in runs.items():
        metrics = json.loads((job / "metrics.json").read_text())
        rows[scheme] = {
            "val": scores(metrics["val"]),
            "emoji_check": scores(json.loads((out / job.name / "metrics.json").read_text())),
            "posts_with_unknown_tokens": metrics["normalization"]["posts_with_unknown_tokens"],
            "train_minutes": round(metrics["training"]["wall_s"] / 60, 1),
        }
    return {
        "benchmark": "normalization",
        "settings": SETTINGS,
        "emoji_check_set": {**built, "positive_emoji": POSITIVE_EMOJI, "negative_emoji": NEGATIVE_EMOJI},
        "runs": rows,
        "normalizing_the_training_tweets": normalization_cost(TRAIN_CSV),
        "work": str(work),
    }


def add_arguments(ap) -> None:
    ap.add_argument("--work", help="folder of the runs (default: a temporary one); a finished run is reused")


if __name__ == "__main__":
    raise SystemExit(bench_main(__doc__, add_arguments, run))
