#!/usr/bin/env python3
"""Training speed of sentitune against the walkthrough's pipeline ('before') and a carefully set-up
Hugging Face Trainer ('instead'), on the same data, model, batch size and number of examples.

Contenders, each run as its own subprocess, in turn (seed, trainer, sentitune, seed, trainer, ... for
--rounds rounds), so slow drifts of the machine (other jobs, heat) hit all three alike:
  seed       ../shared/bench/seed_reference.py   (slow tokenizer per item, pad to 100, Adam, fp32)
  trainer    ../shared/bench/hf_trainer_reference.py  (needs `accelerate`; fast tokenizer, dynamic padding,
             length-grouped batches, fused AdamW); also times Trainer.evaluate() on val.csv
  sentitune  `python -m sentitune.cli train --training-file train.csv --validation-file val.csv
             --model DIR --max-steps N --batch-size B --learning-rate 1e-4 --train-eval-examples 0`
All three get the same model folder (a random BERT-Tiny built once, the embedded MiniLM, or a random
1-layer x 32 'host' model whose step is almost all host overhead), the same batch size (128 for
BERT-Tiny, 32 for the others), N = ceil(samples / batch) steps, and max length 100. Each contender runs
at its own default precision: the walkthrough fp32, the Trainer bf16 where the CPU or GPU has native bf16
(hf_trainer_reference.py --bf16 on where sentitune's auto picks bf16), sentitune its --precision auto; the
JSON records which. With torch, oneDNN and MKL held to AVX2 on a CPU that has more (`make bench-avx2`),
every contender runs fp32 as on an AVX2-only machine.

What is read from each run:
  train examples/s  seed and trainer: their own JSON line (time of the training loop only);
                    sentitune: the rate of its last progress line, which is logged before the final
                    validation pass (metrics.json's `training.examples_per_s` is also kept, as
                    `reported_examples_per_s`: its wall time includes that validation pass)
  eval examples/s   trainer: Trainer.evaluate() on val.csv; sentitune: 2,000 / (metrics.json wall_s -
                    the pre-validation elapsed time), i.e. its in-training validation pass; seed: none.
                    eval_speed.py measures inference on its own, more precisely.
  peak RSS          each child's own ru_maxrss (os.wait4), the same way for all three
  time to first step  sentitune's metrics.json (from the start of the loop); not reported by the others
  quality           what each reports after the same examples: seed its running train accuracy,
                    trainer the val loss, sentitune val loss / accuracy / macro-F1 (random BERT-Tiny
                    weights learn little in a few steps: quality is informative for MiniLM only)
Medians over rounds are reported, with every round's value, and ratios sentitune/seed and
sentitune/trainer. With ceiling measurement on (default), the matmul ceiling of ceiling.py turns each
rate into achieved GFLOP/s and a fraction of the fp32 and bf16 ceilings.

usage: train_speed.py [--models tiny,minilm,host] [--samples N] [--rounds R] [--quick] [--threads T]
                      [--contenders seed,trainer,sentitune] [--no-ceiling]
Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import ceiling as ceiling_mod
from speedlib import (
    MAX_LENGTH,
    MODEL_SIZES,
    SEED_SCRIPT,
    TRAIN_CSV,
    TRAINER_SCRIPT,
    VAL_CSV,
    bench_main,
    child_env,
    log,
    mean_token_length,
    median,
    model_folder,
    model_shape,
    ratio,
    read_texts,
    run_child,
    stdout_to_stderr,
)

CONTENDERS = ("seed", "trainer", "sentitune", "sentitune-torch-dropout")
# sentitune's step with torch's own dropout masks instead of its cheaper ones (--dropout-masks torch):
# what that one lever is worth, measured in the same rounds. Not in the default set.
DEFAULT_CONTENDERS = CONTENDERS[:3]
LEARNING_RATE = 1e-4
# Quick: a few minutes on 2 idle cores. Full: longer, more rounds. Both train long enough that the first
# steps' one-off costs (oneDNN builds kernels for every new batch shape: bucketed batches meet a new
# padded length for most of their first ~100 steps) are a small part of the rate: on 2 cores of an AMD
# EPYC (Zen 5, bf16) 20 MiniLM steps gave sentitune 1.40x the Trainer and 150 steps 1.07x, the rate a
# real run of thousands of steps has. The walkthrough's pipeline pads every batch to one shape (100
# tokens), so its rate is steady from its first steps: it trains `seed_samples`, fewer, as its steps
# are 5-10x slower.
PRESETS = {
    "quick": {
        "rounds": {"tiny": 3, "minilm": 2, "host": 3},
        "samples": {"tiny": 25600, "minilm": 4800, "host": 12800},
        "seed_samples": {"tiny": 2560, "minilm": 640, "host": 6400},
        "models": "tiny,minilm,host",
    },
    "full": {
        "rounds": {"tiny": 3, "minilm": 3, "host": 3},
        "samples": {"tiny": 51200, "minilm": 9600, "host": 25600},
        "seed_samples": {"tiny": 12800, "minilm": 1600, "host": 12800},
        "models": "tiny,minilm,host",
    },
}
# sentitune's progress line, logged every --log-every steps and at the last step when stderr is
# not a terminal (as here):
# "... step 20: loss 1.0566 accuracy 0.4215 lr 0.00e+00 110 examples/s 23.3s"
PROGRESS = re.compile(r"step (\d+): loss \S+ accuracy \S+ lr \S+ (\d+) examples/s ([\d.]+)s")


def seed_cmd(python: str, folder: str, batch: int, samples: int) -> list[str]:
    from sentitune.builtin import default_vocab

    return [
        python,
        str(SEED_SCRIPT),
        "--data",
        str(TRAIN_CSV),
        "--vocab",
        default_vocab(),
        "--model",
        folder,
        "--batch-size",
        str(batch),
        "--samples",
        str(samples),
        "--max-length",
        str(MAX_LENGTH),
        "--lr",
        str(LEARNING_RATE),
    ]


def trainer_cmd(python: str, folder: str, batch: int, samples: int) -> list[str]:
    from sentitune.runtime import cpu_has_native_bf16

    cmd = seed_cmd(python, folder, batch, samples)
    cmd[1] = str(TRAINER_SCRIPT)
    # bf16 where sentitune's auto picks it too: the script's own test reads the CPU alone, and would pick
    # emulated bf16 where torch's kernels are held to AVX2 (the AVX2 stand-in of `make bench-avx2`)
    return cmd + ["--eval-data", str(VAL_CSV), "--bf16", "on" if cpu_has_native_bf16() else "off"]


def sentitune_cmd(python: str, folder: str, batch: int, steps: int, job_dir: str) -> list[str]:
    return [
        python,
        "-m",
        "sentitune.cli",
        "train",
        "--training-file",
        str(TRAIN_CSV),
        "--validation-file",
        str(VAL_CSV),
        "--model",
        folder,
        "--job-dir",
        job_dir,
        "--max-steps",
        str(steps),
        "--batch-size",
        str(batch),
        "--learning-rate",
        str(LEARNING_RATE),
        "--max-length",
        str(MAX_LENGTH),
        "--train-eval-examples",
        "0",
        "--overwrite",
    ]


def parse_reference(name: str, res) -> dict:
    out = res.last_json()
    if res.returncode != 0 or out is None:
        raise RuntimeError(f"{name} exited {res.returncode}: {res.error_tail()}")
    row = {
        # the walkthrough trains in fp32; the Trainer in bf16 where the hardware has it (--bf16 on)
        "precision": "bf16" if out.get("bf16") else "fp32",
        "train_examples_per_s": out.get("train_samples_per_s"),
        "train_wall_s": out.get("train_wall_s"),
        "train_examples": out.get("train_samples"),
        "eval_examples_per_s": out.get("eval_samples_per_s"),
        "time_to_first_step_s": None,
        "tokenize_s": out.get("tokenize_s"),
        "threads": out.get("threads"),
    }
    if "train_accuracy" in out:
        row["quality"] = {"train_accuracy_running": out["train_accuracy"]}
    if "eval_loss" in out:
        row["quality"] = {"val_loss": out["eval_loss"]}
    return row


def parse_sentitune(res, job_dir: str) -> dict:
    metrics_path = Path(job_dir) / "metrics.json"
    if res.returncode != 0 or not metrics_path.is_file():
        raise RuntimeError(f"sentitune exited {res.returncode}: {res.error_tail()}")
    metrics = json.loads(metrics_path.read_text())
    training = metrics["training"]
    examples = training["examples"]
    last = None
    for match in PROGRESS.finditer(res.stderr):
        last = match
    train_rate, eval_rate = None, None
    if last and int(last.group(1)) == training["steps"]:
        train_rate = float(last.group(2))
        pre_val_s = examples / train_rate  # the logged rate has 4+ significant digits; 0.1 s elapsed has not
        val_s = training["wall_s"] - pre_val_s
        if "val" in metrics and val_s > 0.02:
            eval_rate = round(metrics["val"]["examples"] / val_s, 1)
    else:
        log("  (no final progress line from sentitune: its train rate includes the validation pass)")
    val = metrics.get("val", {})
    try:
        environment = json.loads((Path(job_dir) / "run_config.json").read_text())["environment"]
    except (OSError, KeyError, ValueError):
        environment = {}
    return {
        "threads": environment.get("threads"),
        "precision": environment.get("precision"),
        "train_examples_per_s": train_rate or training["examples_per_s"],
        "reported_examples_per_s": training["examples_per_s"],
        "train_wall_s": training["wall_s"],
        "train_examples": examples,
        "eval_examples_per_s": eval_rate,
        "time_to_first_step_s": training.get("time_to_first_step_s"),
        "tokenize_s": training.get("tokenize_s"),
        "quality": {
            "val_loss": round(val["loss"], 4) if val else None,
            "val_accuracy": round(val["accuracy"], 4) if val else None,
            "val_macro_f1": round(val["macro_f1"], 4) if val else None,
        },
    }


def run_contender(name: str, folder: str, batch: int, samples: int, args, work: str) -> dict:
    python = args.python
    env = child_env(args.threads)
    if name == "seed":
        res = run_child(seed_cmd(python, folder, batch, samples), env, args.timeout, args.verbose)
        row = parse_reference(name, res)
    elif name == "trainer":
        res = run_child(trainer_cmd(python, folder, batch, samples), env, args.timeout, args.verbose)
        row = parse_reference(name, res)
    else:
        job_dir = str(Path(work) / "sentitune-run")
        shutil.rmtree(job_dir, ignore_errors=True)
        steps = math.ceil(samples / batch)
        cmd = sentitune_cmd(python, folder, batch, steps, job_dir)
        if name == "sentitune-torch-dropout":
            cmd += ["--dropout-masks", "torch"]
        res = run_child(cmd, env, args.timeout, False)
        if args.verbose:
            sys.stderr.write(res.stderr)
        row = parse_sentitune(res, job_dir)
    row["peak_rss_mib"] = round(res.peak_rss_mib, 1)
    row["process_wall_s"] = round(res.wall_s, 2)
    row["process_cpu_s"] = round(res.cpu_s, 2)  # ~threads x wall on an idle machine; less: it waited
    return row


def summarise(rows: list[dict]) -> dict:
    """Medians over rounds (and each round's value) of one contender's rows."""
    keys = (
        "train_examples_per_s",
        "reported_examples_per_s",
        "eval_examples_per_s",
        "peak_rss_mib",
        "time_to_first_step_s",
        "process_wall_s",
        "process_cpu_s",
        "train_wall_s",
        "tokenize_s",
    )
    out = {}
    for key in keys:
        values = [r.get(key) for r in rows]
        if any(v is not None for v in values):
            out[key] = median(values)
            if key in ("train_examples_per_s", "eval_examples_per_s", "peak_rss_mib"):
                out[f"{key}_rounds"] = values
    out["train_examples"] = rows[-1].get("train_examples")
    out["threads"] = rows[-1].get("threads")
    out["precision"] = rows[-1].get("precision")
    quality = [r["quality"] for r in rows if r.get("quality")]
    if quality:
        out["quality"] = {k: median([q.get(k) for q in quality]) for k in quality[0]}
    return out


def compare(results: dict) -> dict:
    s = results.get("sentitune") or {}
    out = {}
    for other in ("seed", "trainer", "sentitune-torch-dropout"):
        o = results.get(other) or {}
        if not o or "error" in o or not s or "error" in s:
            continue
        out[f"sentitune/{other}"] = {
            "train_examples_per_s": ratio(s.get("train_examples_per_s"), o.get("train_examples_per_s")),
            "train_examples_per_s_as_reported": ratio(
                s.get("reported_examples_per_s"), o.get("train_examples_per_s")
            ),
            "eval_examples_per_s": ratio(s.get("eval_examples_per_s"), o.get("eval_examples_per_s")),
            "peak_rss": ratio(s.get("peak_rss_mib"), o.get("peak_rss_mib")),
            "process_wall": ratio(s.get("process_wall_s"), o.get("process_wall_s")),
        }
    return out


def run(args) -> dict:
    """Run the benchmark as `args` says and return the JSON-ready result."""
    preset = PRESETS["quick" if args.quick else "full"]
    models = (args.models or preset["models"]).split(",")
    contenders = args.contenders.split(",")
    for c in contenders:
        if c not in CONTENDERS:
            raise SystemExit(f"unknown contender {c!r}; choose from {', '.join(CONTENDERS)}")
    for path in (TRAIN_CSV, VAL_CSV):
        if not path.is_file():
            raise SystemExit(
                f"missing input {path}; set SENTITUNE_SHARED to the folder holding data/ and bench/"
            )
    result = {
        "benchmark": "train_speed",
        "config": {
            "order": contenders,
            "max_length": MAX_LENGTH,
            "learning_rate": LEARNING_RATE,
            "threads": args.threads,
            "train_file": str(TRAIN_CSV),
            "val_file": str(VAL_CSV),
        },
        "notes": [
            "train_examples_per_s: the training loop alone for all three; sentitune's "
            "reported_examples_per_s (metrics.json) also counts its end-of-training validation pass",
            "eval_examples_per_s: trainer = Trainer.evaluate() on val.csv at the training batch size; "
            "sentitune = its in-training validation pass (eval batch 256), derived from its log; "
            "eval_speed.py measures inference on its own",
            "peak_rss_mib: each child's ru_maxrss; process_cpu_s / process_wall_s well under the thread "
            "count means the child waited for the CPU (a busy machine): compare such rounds with care",
            "ceiling.achieved counts useful (unpadded) FLOPs, see ceiling.py",
        ],
        "models": {},
    }
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sentitune-bench-") as work:
        texts = None
        for name in models:
            size = MODEL_SIZES[name]
            folder = model_folder(name, work)
            batch = args.batch_size or size.batch_size
            samples = args.samples or preset["samples"][name]
            steps = math.ceil(samples / batch)
            samples = steps * batch  # every contender trains exactly `steps` full batches' worth
            # ... but the walkthrough's, whose one-shape steps are steady from the start (PRESETS)
            seed_steps = math.ceil((args.samples or preset["seed_samples"][name]) / batch)
            seed_samples = min(seed_steps * batch, samples)
            rounds = args.rounds or preset["rounds"][name]
            entry = {
                "model": {"description": size.description, **model_shape(folder)},
                "batch_size": batch,
                "samples": samples,
                "steps": steps,
                "rounds": rounds,
            }
            if "seed" in contenders and seed_samples != samples:
                entry["seed_samples"] = seed_samples
            rows = {c: [] for c in contenders}
            errors = {}
            for r in range(rounds):
                for c in contenders:
                    if c in errors:
                        continue
                    n = seed_samples if c == "seed" else samples
                    log(f"[{name}] round {r + 1}/{rounds}: {c} ({n} examples, batch {batch})")
                    try:
                        row = run_contender(c, folder, batch, n, args, work)
                    except RuntimeError as exc:
                        errors[c] = str(exc)
                        log(f"  {c} failed, skipped from now on: {exc}")
                        continue
                    rows[c].append(row)
                    log(
                        f"  {row['train_examples_per_s']} train examples/s, eval {row.get('eval_examples_per_s')}"
                        f", peak RSS {row['peak_rss_mib']} MiB, process {row['process_wall_s']}s"
                    )
            contender_results = {}
            for c in contenders:
                if rows[c]:
                    contender_results[c] = summarise(rows[c])
                if c in errors:
                    contender_results.setdefault(c, {})["error"] = errors[c]
            for v in contender_results.values():  # a step's time, for the host-overhead comparison
                if v.get("train_examples_per_s"):
                    v["ms_per_step"] = round(1000 * batch / v["train_examples_per_s"], 2)
            entry["contenders"] = contender_results
            entry["ratios"] = compare(contender_results)
            if not args.no_ceiling:
                if texts is None:
                    texts, _ = read_texts(TRAIN_CSV)
                log(f"[{name}] matmul ceiling")
                with stdout_to_stderr():
                    seq = mean_token_length(texts, folder)
                    ceil = ceiling_mod.model_ceiling(folder, batch, seq, quick=args.quick)
                ceil["achieved"] = {
                    c: ceiling_mod.achieved(v.get("train_examples_per_s"), ceil)
                    for c, v in contender_results.items()
                }
                entry["ceiling"] = ceil
            result["models"][name] = entry
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    return result


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--models", help="comma-separated model sizes: tiny, minilm, host (default: all)")
    ap.add_argument("--samples", type=int, help="training examples per run (default: preset per model)")
    ap.add_argument(
        "--rounds", type=int, help="rounds of seed, trainer, sentitune (default: preset per model)"
    )
    ap.add_argument("--batch-size", type=int, help="default: 128 for tiny, 32 for minilm and host")
    ap.add_argument(
        "--contenders",
        default=",".join(DEFAULT_CONTENDERS),
        help=f"subset and order of the contenders: {', '.join(CONTENDERS)}",
    )
    ap.add_argument("--threads", type=int, help="pin OMP/MKL threads of every contender (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="short preset: a few minutes on 2 idle cores")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the matmul-ceiling measurement")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the contenders")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds before a contender run is killed")
    ap.add_argument("--verbose", action="store_true", help="pass the contenders' stderr through")


if __name__ == "__main__":
    sys.exit(bench_main(__doc__, add_arguments, run))
