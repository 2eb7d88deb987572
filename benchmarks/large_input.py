#!/usr/bin/env python3
"""Write a large labelled CSV by resampling real tweets, for memory benchmarks (no file in the repo).

Rows are drawn with replacement from a labelled CSV (default: ../shared/data/tweets/train.csv, columns
text,label) with a fixed seed. With --unique, each text gets a short row tag so that `prepare` does not
collapse the copies as duplicates (the tag adds ~8 characters, like a hashtag).

usage: large_input.py OUT.csv --rows 1000000 [--source train.csv] [--unique] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweets" / "train.csv"


def write_large_csv(
    out: str,
    rows: int,
    source: str = str(DEFAULT_SOURCE),
    unique: bool = False,
    seed: int = 0,
    chunk: int = 200_000,
) -> str:
    base = pd.read_csv(source, dtype=str, keep_default_na=False)
    texts = base["text"].to_numpy(object)
    labels = base["label"].to_numpy(object)
    rng = np.random.default_rng(seed)
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["text", "label"])
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            pick = rng.integers(0, len(texts), n)
            t = texts[pick]
            if unique:
                t = [f"{s} #r{start + i:x}" for i, s in enumerate(t)]
            writer.writerows(zip(t, labels[pick], strict=True))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--source", default=str(DEFAULT_SOURCE))
    ap.add_argument("--unique", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    write_large_csv(args.out, args.rows, args.source, args.unique, args.seed)
    print(f"wrote {args.rows} rows to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
