#!/usr/bin/env python3
"""Train and evaluate a grid of `sentitune train` settings on the shared tweets; prints one JSON object.

Every setting is one `sentitune train` run on ../shared/data/tweets/train.csv, scored on the 2,000
TweetEval validation tweets (val.csv): validation macro-recall (TweetEval's measure), macro-F1,
accuracy, and the training minutes on this machine. Runs go to --work DIR (one folder per setting, and
results.jsonl); a rerun skips the settings already there, so a long grid can be stopped and resumed.

Grids: `smoke` (a random BERT-Tiny, two settings, seconds: checks the runner), `quick` (the MiniLM cut
to 3 layers, half an epoch each, about 4 minutes a setting on 2 cores: learning rate, warm-up, batch size,
max length, layers, freezing, class weights, label smoothing, layer-wise learning-rate decay, pooling), `full`
(whole epochs: the presets' candidates, 3 or 6 layers, 1-3 epochs, 7-55 minutes a setting), `vader` (the
walkthrough's setting: train.csv labelled by VADER with `prepare --label-with vader`; 2 to 10 epochs,
learning rates, half the training data, every post there is (train.csv and the embedded corpus),
VADER's compound score as a soft target (`--soft-targets`), and synthetic training posts labelled by VADER
(`prepare --augment N`, settings named vader-all-augN-*) against the same minutes of more epochs, and the
posts as VADER read them (`--normalize none`, settings named *-raw); rows add
the prepared test split's accuracy with its bootstrap 95 % interval).

On a GPU, `--jobs N` trains N settings at once (batch-32 steps of these small models leave the GPU
mostly idle); benchmarks/gpu_quality.sh runs the `full` and `vader` grids that way.

usage: quality.py [--grid quick] [--work DIR] [--only NAME,...] [--jobs N] [--markdown]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speedlib import TRAIN_CSV, VAL_CSV, emit, log, machine_info  # noqa: E402

# Half an epoch (740 steps of 32 = 23,680 tweets): a screening budget; batch-size settings keep the
# number of tweets, not of steps. [CLS] pooling, the default when the grid was first run.
QUICK_BASE = ["--keep-layers", "3", "--max-steps", "740", "--learning-rate", "1e-4", "--pooling", "cls"]
# VADER's score as a soft target, screened: the MiniLM cut to 3 layers, one epoch, every post there is
VADER_SCREEN = ["--keep-layers", "3", "--epochs", "1", "--learning-rate", "1e-4"]


def vader_soft_l3(epochs: int) -> list[str]:
    """The screen's settings on soft targets (width 0.1) for `epochs` epochs."""
    return ["--keep-layers", "3", "--epochs", str(epochs), "--learning-rate", "1e-4", "--soft-targets", "0.1"]


VADER_SOFT_SCREEN = vader_soft_l3(1)
VADER_AS_READ = [*VADER_SOFT_SCREEN, "--batch-size", "64", "--normalize", "none"]  # posts as VADER read them
GRIDS: dict[str, dict[str, list[str]]] = {
    "smoke": {
        "tiny-lr1e-3": ["--max-steps", "10", "--learning-rate", "1e-3"],
        "tiny-lr1e-3-smooth": ["--max-steps", "10", "--learning-rate", "1e-3", "--label-smoothing", "0.1"],
    },
    "quick": {  # in order of what most decides the defaults
        "l3-base": QUICK_BASE,
        "l3-mean-pool": [*QUICK_BASE, "--pooling", "mean"],
        "l3-lr2e-4": [*QUICK_BASE, "--learning-rate", "2e-4"],
        "l3-lr5e-5": [*QUICK_BASE, "--learning-rate", "5e-5"],
        "l3-llrd0.8": [*QUICK_BASE, "--layer-lr-decay", "0.8"],
        "l3-class-weights": [*QUICK_BASE, "--class-weights", "auto"],
        "l3-smooth0.1": [*QUICK_BASE, "--label-smoothing", "0.1"],
        "l2": [*QUICK_BASE, "--keep-layers", "2"],
        "l4": [*QUICK_BASE, "--keep-layers", "4"],
        "l6": [*QUICK_BASE, "--keep-layers", "6"],
        "l3-batch64": [*QUICK_BASE, "--batch-size", "64", "--max-steps", "370"],
        "l3-warmup0": [*QUICK_BASE, "--warmup-ratio", "0"],
        "l3-freeze1": [*QUICK_BASE, "--freeze-layers", "1"],
        "l3-head-only": [*QUICK_BASE, "--train-head-only", "--learning-rate", "1e-3"],
        "l3-head-only-mean": [
            *QUICK_BASE,
            "--train-head-only",
            "--learning-rate",
            "1e-3",
            "--pooling",
            "mean",
        ],
        "l3-batch16": [*QUICK_BASE, "--batch-size", "16", "--max-steps", "1480"],
        "l3-warmup0.1": [*QUICK_BASE, "--warmup-ratio", "0.1"],
        "l3-maxlen64": [*QUICK_BASE, "--max-length", "64"],
    },
    "full": {  # whole epochs on the whole training file: the presets' candidates
        "l3-e1-mean": ["--keep-layers", "3", "--epochs", "1", "--learning-rate", "1e-4", "--pooling", "mean"],
        "l6-e2-mean": ["--epochs", "2", "--pooling", "mean"],
        "l6-e2": ["--epochs", "2", "--pooling", "cls"],
        "l6-e3-mean": ["--epochs", "3", "--pooling", "mean"],
        "l6-e2-mean-class-weights": ["--epochs", "2", "--pooling", "mean", "--class-weights", "auto"],
        "l6-e2-mean-lr1e-4": ["--epochs", "2", "--pooling", "mean", "--learning-rate", "1e-4"],
    },
    # the walkthrough's setting: train.csv labelled by VADER (prepared once into --work), scored on the
    # prepared test split (accuracy, the walkthrough's measure) as well as its validation split
    "vader": {
        "vader-defaults": [],
        "vader-half-data": [],  # the defaults on half the training split (TRAIN_FRACTION): what data buys
        "vader-e5": ["--epochs", "5"],
        "vader-e5-lr1e-4": ["--epochs", "5", "--learning-rate", "1e-4"],
        "vader-e5-lr2e-4": ["--epochs", "5", "--learning-rate", "2e-4"],
        "vader-e6-lr1.5e-4": ["--epochs", "6", "--learning-rate", "1.5e-4"],
        "vader-e10": ["--epochs", "10"],
        # every post there is, labelled by VADER: the shared training tweets and the embedded corpus
        "vader-all-e4-lr1e-4": ["--epochs", "4", "--learning-rate", "1e-4"],
        # VADER's compound score as a soft target (--soft-targets WIDTH) against its sign alone: screened
        # on 3 layers and one epoch, then at the full setting
        "vader-all-l3-e1": VADER_SCREEN,
        "vader-all-l3-e1-soft0.1": VADER_SOFT_SCREEN,
        "vader-all-l3-e1-soft0.3": [*VADER_SCREEN, "--soft-targets", "0.3"],
        "vader-all-e4-lr1e-4-soft0.1": ["--epochs", "4", "--learning-rate", "1e-4", "--soft-targets", "0.1"],
        # more text to distil VADER from: `prepare --augment N` adds N synthetic training posts per post
        # (settings named vader-all-augN-*); against the same minutes spent on more epochs of real posts
        "vader-all-l3-e2-soft0.1": vader_soft_l3(2),
        "vader-all-aug1-l3-e1-soft0.1": VADER_SOFT_SCREEN,
        "vader-all-l3-e4-soft0.1": vader_soft_l3(4),
        "vader-all-aug3-l3-e1-soft0.1": VADER_SOFT_SCREEN,
        "vader-all-aug6-l3-e1-soft0.1": VADER_SOFT_SCREEN,
        # batch 64: more examples a minute than batch 32 on a CPU, so more synthetic posts in the same time
        "vader-all-aug10-l3-e1-b64-soft0.1": [*VADER_SOFT_SCREEN, "--batch-size", "64"],
        # the posts as VADER read them: `tweet` turns "@united" into "@user", but VADER scores a mention's
        # name as a word ("united" is positive in its lexicon), so that label cannot be learnt from @user
        "vader-all-aug10-l3-e1-b64-soft0.1-raw": VADER_AS_READ,
        "vader-all-aug3-l3-e1-b64-soft0.1-raw": VADER_AS_READ,
    },
}


# settings trained on a stratified sample of the training split (same validation and test splits)
TRAIN_FRACTION = {"vader-half-data": 0.5}
ALL_POSTS = {
    name for name in GRIDS["vader"] if name.startswith("vader-all")
}  # on vader_data(work, every_post=True)
SENTITUNE = [sys.executable, "-m", "sentitune", "--quiet"]


def score(split: dict) -> dict:
    return {
        "macro_recall": round(100 * split["macro_recall"], 2),
        "macro_f1": round(100 * split["macro_f1"], 2),
        "accuracy": round(100 * split["accuracy"], 2),
    }


def run_setting(name: str, options: list[str], data: list[str], work: Path) -> dict:
    """Train one setting into work/NAME and return its table row."""
    job = work / name
    command = [
        *SENTITUNE, "train", *data, "--job-dir", str(job),
        "--train-eval-examples", "0", "--overwrite", *options,
    ]  # fmt: skip
    log(f"{name}: {' '.join(options)}")
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((job / "metrics.json").read_text())
    val = score(metrics["val"])
    row = {
        "setting": name,
        "options": options,
        "val_macro_recall": val["macro_recall"],
        "val_macro_f1": val["macro_f1"],
        "val_accuracy": val["accuracy"],
        "train_minutes": round(metrics["training"]["wall_s"] / 60, 1),
        "command_minutes": round((time.perf_counter() - started) / 60, 1),
        "examples_per_s": metrics["training"]["examples_per_s"],
        "epochs_run": metrics["training"]["epochs_run"],
        # a run stopped earlier resumes from its checkpoint: its minutes cover only the rest
        "resumed_from_step": metrics["training"]["resumed_from_step"],
    }
    if "test" in metrics:
        test = metrics["test"]
        row["test"] = {
            **score(test),
            "accuracy_95": [round(100 * x, 2) for x in test["intervals_95"]["accuracy"]],
        }
    log(
        f"{name}: macro-recall {row['val_macro_recall']}, macro-F1 {row['val_macro_f1']}, {row['train_minutes']} min"
    )
    return row


def vader_data(work: Path, every_post: bool = False, augment: int = 0) -> Path:
    """train.csv labelled by VADER's compound score (the walkthrough's rule), split by `prepare`; with
    `every_post`, the embedded corpus too (about 85,000 posts before duplicates are dropped); with
    `augment`, N synthetic training posts per post (`prepare --augment N`: the same validation and test
    posts, the same real training posts and more)."""
    from sentitune.builtin import default_dataset

    folder = work / f"{'vader-all' if every_post else 'vader'}{f'-aug{augment}' if augment else ''}-data"
    inputs = [str(TRAIN_CSV), *([default_dataset()] if every_post else [])]
    if not (folder / "train.csv").is_file():
        command = [
            *SENTITUNE, "prepare", *inputs, "--label-with", "vader", "--augment", str(augment),
            "--text-column", "text", "--output-dir", str(folder),
        ]  # fmt: skip
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return folder


def subset_files(data: Path, fraction: float) -> list[str]:
    """The prepared folder's splits with a stratified `fraction` of its training rows (fixed seed)."""
    import pandas as pd

    sample = data / f"train-{fraction:g}.csv"
    if not sample.is_file():
        train = pd.read_csv(data / "train.csv")
        part = train.groupby("label", group_keys=False).sample(frac=fraction, random_state=0).sort_index()
        part.to_csv(sample.with_suffix(".tmp"), index=False)
        sample.with_suffix(".tmp").rename(sample)
    return [
        "--training-file", str(sample), "--validation-file", str(data / "eval.csv"),
        "--testing-file", str(data / "test.csv"),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", default="quick", choices=sorted(GRIDS))
    parser.add_argument("--work", help="folder of the runs and results.jsonl (default: a temporary one)")
    parser.add_argument("--only", help="comma-separated setting names")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="settings trained at once (default 1; more only on a GPU, where small-batch steps leave it idle: "
        "on a CPU they share the cores and the minutes mean nothing)",
    )
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown on stderr")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix=f"sentitune-quality-{args.grid}-"))
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.jsonl"
    done = {}
    if results_path.exists():
        done = {r["setting"]: r for r in map(json.loads, results_path.read_text().splitlines())}
    settings = GRIDS[args.grid]
    if args.only:
        settings = {k: v for k, v in settings.items() if k in args.only.split(",")}
    data = {name: ["--training-file", str(TRAIN_CSV), "--validation-file", str(VAL_CSV)] for name in settings}
    if args.grid == "vader" and settings:
        for name in settings:
            augment = re.search(r"-aug(\d+)-", name)
            prepared = vader_data(
                work, every_post=name in ALL_POSTS, augment=int(augment[1]) if augment else 0
            )
            fraction = TRAIN_FRACTION.get(name)
            data[name] = subset_files(prepared, fraction) if fraction else ["--data", str(prepared)]
    if args.grid == "smoke":
        from sentitune.builtin import build_random_bert

        tiny = build_random_bert(work / "bert-tiny")
        data = {name: [*files, "--model", tiny] for name, files in data.items()}
    for name in done.keys() & settings.keys():
        log(f"{name}: done earlier")
    todo = {k: v for k, v in settings.items() if k not in done}
    lock = threading.Lock()

    def run_and_record(name: str) -> None:
        row = run_setting(name, todo[name], data[name], work)
        if name in TRAIN_FRACTION:
            row["train_fraction"] = TRAIN_FRACTION[name]
        with lock:
            with open(results_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            done[name] = row

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for future in [pool.submit(run_and_record, name) for name in todo]:
            future.result()
    rows = [done[name] for name in settings if name in done]
    if args.markdown:
        with_test = any("test" in r for r in rows)
        test_head = " test accuracy (95 % interval) |" if with_test else ""
        log(f"| setting | options | val macro-recall | macro-F1 | accuracy | training min |{test_head}")
        log("|---|---|---|---|---|---|" + ("---|" if with_test else ""))
        for r in rows:
            minutes = r["train_minutes"]
            if r.get("resumed_from_step"):
                minutes = f"{minutes} (resumed at step {r['resumed_from_step']})"
            test = " |" if with_test else ""
            if "test" in r:
                low, high = r["test"]["accuracy_95"]
                test = f" {r['test']['accuracy']} ({low}–{high}) |"
            log(
                f"| {r['setting']} | `{' '.join(r['options'])}` | {r['val_macro_recall']} | {r['val_macro_f1']} | {r['val_accuracy']} | {minutes} |{test}"
            )
    emit(
        {
            "benchmark": "quality",
            "grid": args.grid,
            "jobs": args.jobs,
            "machine": machine_info(),
            "work": str(work),
            "results": rows,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
