#!/usr/bin/env python3
"""The labelling loop simulated on the shared tweets: `sentitune select` against random choice; prints JSON.

A pool of --pool-size posts is drawn from ../shared/data/tweets/train.csv; their gold labels stand in for
the person who labels. Both strategies start from the same --start random posts; each round trains the
embedded default model on the labels so far (`sentitune train --preset fast`, the demo's setting, with
--epochs E and train's --min-steps: one epoch over 200 posts is 7 optimiser steps, too few to leave the
class prior, so small rounds train more epochs), validating
and calibrating on --calibration-posts posts of val.csv (the 2,000-tweet TweetEval validation split) as
a prepared folder's eval split would, reads macro-recall on --scored-posts other val posts, then adds
--step posts chosen by `sentitune select` (margin, or random). Rounds alternate between the strategies,
and --json is rewritten after each, so a run cut short keeps comparable curves. The target: select
reaches random choice's final macro-recall with at most half of its labels.

usage: active_learning.py [--pool-size 3000] [--start 200] [--step 200] [--rounds 5] [--epochs 3] [--min-steps 250]
                          [--json out.json] [--png curves.png] [--work DIR]
       active_learning.py --summarise seed0.json seed1.json ... [--png mean.png]
Set SENTITUNE_SHARED to read the data from elsewhere. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import torch

from sentitune.config import SelectConfig, TrainConfig
from sentitune.runtime import cpu_features, cpu_model
from sentitune.scoring import Predictor
from sentitune.select import select
from sentitune.train import train

SHARED = Path(os.environ.get("SENTITUNE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATA_DIR = SHARED / "data" / "tweets"
STRATEGIES = ("margin", "random")  # the default arms; --strategies picks others (select's, and random)
NAMES = {"random": "random choice"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool-size", type=int, default=3000)
    ap.add_argument("--start", type=int, default=200)
    ap.add_argument("--step", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5, help="rounds of selection after the start")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument(
        "--min-steps", type=int, default=250, help="train's --min-steps (0: exactly --epochs, the old rounds)"
    )
    ap.add_argument("--calibration-posts", type=int, default=200, help="val posts train validates on")
    ap.add_argument("--scored-posts", type=int, default=1000, help="other val posts macro-recall is read on")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: steady beside other work on a shared machine)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--strategies",
        default=",".join(STRATEGIES),
        help="arms, comma-separated: select's strategies (STRATEGY/pool: with --class-shares pool) and random "
        "(default margin,random); --summarise joins runs of one seed that ran different arms",
    )
    ap.add_argument(
        "--json", help="also write the JSON here, after every round (a cut-off run keeps its rounds)"
    )
    ap.add_argument("--png", help="draw the curves here, after every round")
    ap.add_argument("--work", help="keep the runs here (default: a temporary folder)")
    ap.add_argument(
        "--summarise",
        nargs="+",
        metavar="JSON",
        help="instead of running: the mean curves of these runs' --json files (seeds), the target read on "
        "them, and --png of the means",
    )
    args = ap.parse_args()
    if args.summarise:
        summary = summarise(args.summarise)
        if args.png:
            draw(
                summary["mean_curves"],
                args.png,
                f"Labelling loop, simulated: mean of {len(args.summarise)} seeds",
            )
        print(json.dumps(summary, indent=2))
        return
    train_csv, val_csv = DATA_DIR / "train.csv", DATA_DIR / "val.csv"
    if not (train_csv.is_file() and val_csv.is_file()):
        raise SystemExit(f"shared tweet data not found in {DATA_DIR}; set SENTITUNE_SHARED")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)  # select's scoring too

    tweets = pd.read_csv(train_csv, dtype=str, keep_default_na=False).drop_duplicates("text")
    pool = tweets.sample(n=args.pool_size, random_state=args.seed).reset_index(drop=True)
    gold = dict(zip(pool["text"], pool["label"], strict=True))
    val = pd.read_csv(val_csv, dtype=str, keep_default_na=False).sample(frac=1, random_state=args.seed)
    calibration = val.iloc[: args.calibration_posts]
    scored = val.iloc[args.calibration_posts : args.calibration_posts + args.scored_posts]
    start = pool.sample(n=args.start, random_state=args.seed + 1)[["text", "label"]]
    arms = tuple(args.strategies.split(","))
    labelled = {strategy: start.copy() for strategy in arms}
    curves = {strategy: [] for strategy in arms}
    report = {
        "benchmark": "active_learning",
        "date": datetime.date.today().isoformat(),
        "commit": _commit(),
        "machine": {"cpu": cpu_model(), "features": cpu_features(), "cores": os.cpu_count()},
        "settings": {
            **vars(args),
            "train": f"--preset fast --epochs {args.epochs} --min-steps {args.min_steps}, validation (and calibration) on "
            f"{args.calibration_posts} val posts",
            "scored_on": f"{len(scored)} other val posts",
        },
        "curves": curves,
    }
    with tempfile.TemporaryDirectory(prefix="sentitune-al-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        pool[["text"]].to_csv(work / "pool.csv", index=False)
        calibration.to_csv(work / "calibration.csv", index=False)
        for round_ in range(args.rounds + 1):
            for strategy in arms:
                folder = work / strategy / f"round-{round_}"
                if round_ == 0 and strategy != arms[0]:  # the same start: one run serves both
                    folder = work / arms[0] / "round-0"
                    curves[strategy].append(
                        {k: v for k, v in curves[arms[0]][0].items() if "select" not in k}
                    )
                else:
                    folder.mkdir(parents=True, exist_ok=True)
                    labelled[strategy].to_csv(folder / "labelled.csv", index=False)
                    curves[strategy].append(train_and_score(folder, work, scored, args))
                point = curves[strategy][-1]
                if round_ < args.rounds:
                    started = time.perf_counter()
                    out = work / strategy / f"round-{round_}" / "selected"
                    chosen = select(
                        SelectConfig(
                            run_dir=str(folder / "run"),
                            pool=[str(work / "pool.csv")],
                            n=args.step,
                            labelled=[str(folder / "labelled.csv")],
                            strategy=strategy.split("/")[0],  # "margin/pool": --class-shares pool
                            class_shares=strategy.split("/")[1] if "/" in strategy else "equal",
                            seed=args.seed + round_,
                            output_dir=str(out),
                            overwrite=True,
                        )
                    )
                    picked = pd.read_csv(out / "selected.csv", dtype=str, keep_default_na=False)
                    point["select_s"] = round(time.perf_counter() - started, 1)
                    point["selected_gold"] = picked["text"].map(gold).value_counts().to_dict()
                    point["selected_predicted"] = chosen.summary["selected_by_predicted_class"]
                    more = pd.DataFrame({"text": picked["text"], "label": picked["text"].map(gold)})
                    labelled[strategy] = pd.concat([labelled[strategy], more], ignore_index=True)
                print(f"{strategy} round {round_}: {json.dumps(point)}", file=sys.stderr, flush=True)
            if "random" in curves:  # else read by --summarise, joined with a seed's random arm
                report["target"] = target(curves)
            if args.json:
                Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
            if args.png:
                draw(curves, args.png)
    print(json.dumps(report, indent=2))


def train_and_score(folder: Path, work: Path, scored: pd.DataFrame, args) -> dict:
    """Train on folder/labelled.csv; macro-recall, macro-F1 and accuracy on the scored val posts."""
    started = time.perf_counter()
    train(
        TrainConfig(
            training_file=str(folder / "labelled.csv"),
            validation_file=str(work / "calibration.csv"),
            job_dir=str(folder / "run"),
            preset="fast",
            epochs=args.epochs,
            min_steps=args.min_steps,
            seed=args.seed,
            num_threads=args.threads,
            train_eval_examples=0,
            log_every=1000,
            overwrite=True,
        )
    )
    predictor = Predictor(str(folder / "run"))
    predicted = predictor.probabilities(scored["text"].tolist()).argmax(axis=1)
    truth = scored["label"].map({name: i for i, name in enumerate(predictor.labels)}).to_numpy()
    recalls = [(predicted[truth == c] == c).mean() for c in range(len(predictor.labels))]
    precisions = [
        (truth[predicted == c] == c).mean() if (predicted == c).any() else 0.0 for c in range(len(recalls))
    ]
    f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(precisions, recalls, strict=True)]
    return {
        "labels": len(pd.read_csv(folder / "labelled.csv")),
        "macro_recall": round(float(sum(recalls) / len(recalls)), 4),
        "macro_f1": round(float(sum(f1) / len(f1)), 4),
        "accuracy": round(float((predicted == truth).mean()), 4),
        "train_and_score_s": round(time.perf_counter() - started, 1),
    }


def target(curves: dict) -> dict:
    """Does each of select's strategies reach random choice's last macro-recall with at most half its
    labels? (The margin arm's fields stay at the top level, as earlier results files have them.)"""
    last = curves["random"][-1]
    found = {}
    for strategy in (s for s in curves if s != "random"):
        reached = next(
            (p["labels"] for p in curves[strategy] if p["macro_recall"] >= last["macro_recall"]), None
        )
        found[strategy] = {
            "select_labels_to_reach_it": reached,
            "met": reached is not None and reached <= last["labels"] / 2,
        }
    return {
        "random_final_labels": last["labels"],
        "random_final_macro_recall": last["macro_recall"],
        **found.get("margin", {}),
        "per_strategy": found,
    }


def joined_by_seed(runs: list[dict]) -> list[dict]:
    """Runs of one seed that ran different arms (--strategies) as one run with all their curves; their
    shared start round must agree."""
    by_seed: dict[int, dict] = {}
    for run in runs:
        seed = run["settings"]["seed"]
        if seed not in by_seed:
            by_seed[seed] = {**run, "curves": dict(run["curves"])}
            continue
        kept = by_seed[seed]
        for strategy, points in run["curves"].items():
            kept["curves"].setdefault(strategy, points)
        starts = {round(c[0]["macro_recall"], 4) for c in kept["curves"].values() if c}
        if len(starts) > 1:
            print(f"seed {seed}: the start rounds differ between runs ({sorted(starts)})", file=sys.stderr)
    return list(by_seed.values())


def summarise(paths: list[str]) -> dict:
    """The mean macro-recall per round over several runs (seeds) of the same settings, and the target on
    the means: one seed's gap is within the scored tweets' noise, the mean of several less so."""
    files = [json.loads(Path(p).read_text()) for p in paths]
    runs = joined_by_seed(files)
    arms = [s for s in runs[0]["curves"] if all(s in r["curves"] for r in runs)]
    rounds = min(len(r["curves"][s]) for r in runs for s in arms)
    mean = {
        strategy: [
            {
                "labels": runs[0]["curves"][strategy][i]["labels"],
                "macro_recall": round(
                    sum(r["curves"][strategy][i]["macro_recall"] for r in runs) / len(runs), 4
                ),
                "per_seed": [r["curves"][strategy][i]["macro_recall"] for r in runs],
            }
            for i in range(rounds)
        ]
        for strategy in arms
    }
    return {
        "benchmark": "active_learning_summary",
        "runs": [
            {
                "file": p,
                "seed": r["settings"]["seed"],
                "commit": r["commit"],
                "date": r["date"],
                "machine": r["machine"]["cpu"],
            }
            for p, r in zip(paths, files, strict=True)
        ],  # fmt: skip
        "settings": {
            k: v for k, v in runs[0]["settings"].items() if k not in ("seed", "json", "png", "work")
        },
        "mean_curves": mean,
        "target_on_means": target(mean),
        "target_per_seed": [target(r["curves"]) for r in runs],
        "selected_gold_per_seed": [  # the gold labels of all the posts each strategy picked
            {
                s: dict(sum((Counter(p.get("selected_gold") or {}) for p in r["curves"][s]), Counter()))
                for s in arms
            }
            for r in runs
        ],  # fmt: skip
    }


def draw(curves: dict, path: str, title: str = "Labelling loop, simulated") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for strategy, points in curves.items():
        name = NAMES.get(strategy, f"sentitune select ({strategy})")
        ax.plot([p["labels"] for p in points], [p["macro_recall"] for p in points], marker="o", label=name)
    ax.set_xlabel("labelled posts")
    ax.set_ylabel("macro-recall, TweetEval validation tweets")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    main()
