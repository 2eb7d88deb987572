#!/usr/bin/env python3
"""Where a run trained on VADER labels disagrees with VADER: its errors on a prepared test split by how
far VADER's compound score lies from the class boundaries. Prints one JSON object.

The split must come from `sentitune prepare --label-with vader` (its `score` column is the compound score
each label was read from; a split without one is scored with VADER here). Each run labels every post with
the PyTorch backend; the rows are bands of the score (the sign rule's neutral is the score 0 exactly),
with posts, errors and the error rate per band, for every run given, side by side.

Then what a run's text normalisation hides from it: for each rewrite of the `tweet` normalisation that drops
something VADER reads (a mention's name, a link, an elongation, capitals for an uncased vocabulary), the
posts whose VADER label changes when that rewrite alone is applied, and each run's errors among them. A run
that reads `@user` where VADER read `@united` ("united" is positive in VADER's lexicon) cannot know that
post's label. The split must be labelled by VADER's sign rule (what `quality.py --grid vader` prepares).

  python benchmarks/vader_errors.py --data WORK/vader-all-data/test.csv --runs RUN [RUN ...]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from speedlib import bench_main

# band edges of the compound score; 0 exactly is its own band (neutral under the sign rule)
EDGES = (-1.0, -0.5, -0.2, -0.05, 0.0, 0.05, 0.2, 0.5, 1.0)


def bands(scores: np.ndarray) -> np.ndarray:
    """A band name per score: 'exactly 0', or '[a, b)' / '(a, b]' away from 0."""
    names = np.empty(len(scores), object)
    names[scores == 0] = "exactly 0"
    for low, high in zip(EDGES, EDGES[1:], strict=False):
        if high <= 0:
            inside = (scores >= low) & (scores < high)
            names[inside] = f"[{low}, {high})"
        else:
            inside = (scores > low) & (scores <= high)
            names[inside] = f"({low}, {high}]"
    return names


def hidden_by_normalisation(texts: pd.Series, labels: np.ndarray) -> dict[str, np.ndarray]:
    """For each rewrite that drops what VADER reads, the posts whose sign-rule label it changes."""
    from sentitune import normalize
    from sentitune.labels import LABELS, score_to_class, vader_scores

    rewrites = {
        "mention names to @user": normalize.rewrite("mentions"),
        "links to http": normalize.rewrite("links"),
        "elongations cut to two letters": normalize.rewrite("elongations"),
        "capitals (an uncased vocabulary)": str.lower,
    }
    changed = {}
    for name, rewrite in rewrites.items():
        scores = vader_scores(texts.map(rewrite)).astype(float).to_numpy()
        changed[name] = np.asarray(LABELS)[score_to_class(scores, 0.0)] != labels
    changed["any of these"] = np.logical_or.reduce(list(changed.values()))
    return changed


def run(args) -> dict:
    from sentitune.labels import LABELS, score_to_class, vader_scores
    from sentitune.scoring import Predictor

    test = pd.read_csv(args.data, keep_default_na=False)
    scores = (
        test["score"].to_numpy(float)
        if "score" in test.columns
        else vader_scores(test["text"].astype(str)).astype(float).to_numpy()
    )
    if not (np.asarray(LABELS)[score_to_class(scores, 0.0)] == test["label"].to_numpy()).all():
        raise SystemExit(
            f"{args.data}: its labels are not the sign of VADER's score; prepare it with the vader grid"
        )
    band = bands(scores)
    hidden = hidden_by_normalisation(test["text"].astype(str), test["label"].to_numpy())
    order = sorted(set(band), key=lambda b: scores[band == b].mean())  # from most negative to most positive
    result = {
        "benchmark": "vader_errors",
        "data": args.data,
        "posts": len(test),
        "label_changed_by": {name: int(changed.sum()) for name, changed in hidden.items()},
        "runs": {},
    }
    for run_dir in args.runs:
        predictor = Predictor(run_dir, device="cpu")
        predicted = np.asarray(predictor.labels)[predictor.probabilities(test["text"].astype(str)).argmax(1)]
        wrong = predicted != test["label"].to_numpy()
        rows = {}
        for b in order:
            inside = band == b
            rows[b] = {
                "posts": int(inside.sum()),
                "errors": int(wrong[inside].sum()),
                "error_rate": round(float(wrong[inside].mean()), 4),
            }
        result["runs"][Path(run_dir).name] = {
            "accuracy": round(float(1 - wrong.mean()), 4),
            "errors": int(wrong.sum()),
            "bands": rows,
            "errors_where_label_changed_by": {
                name: int(wrong[changed].sum()) for name, changed in hidden.items()
            },
        }
    return result


def add_arguments(ap) -> None:
    ap.add_argument("--data", required=True, help="a prepared test split labelled by VADER")
    ap.add_argument("--runs", nargs="+", required=True, help="run folders trained on VADER labels")


if __name__ == "__main__":
    raise SystemExit(bench_main(__doc__, add_arguments, run))
