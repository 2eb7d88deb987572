#!/usr/bin/env python3
"""Inference speed on the 2,000 validation tweets: sentitune's Predictor against the Hugging Face
Trainer's evaluation loop and a transformers text-classification pipeline, on the same model folder.

The model folder is a real sentitune run: `sentitune train --max-steps 1` on a random BERT-Tiny (or the
embedded MiniLM), so all three load the same weights and fast tokenizer (speed does not depend on the
weights). Then, in this one process, each contender labels the same 2,000 texts (val.csv):
  sentitune  Predictor(run, device="cpu", batch_size=B).probabilities(texts): tokenise, length-sorted
             batches, inference mode, softmax (precision auto: bf16 on a CPU with native bf16, run on
             weights cast to bf16 once)
  trainer    fast-tokenise the texts (truncation, no padding), then Trainer.evaluate() with
             DataCollatorWithPadding (needs `accelerate`); `evaluate_only_examples_per_s` leaves the
             tokenisation out, as the Trainer's own eval_samples_per_second does. On a CPU with native
             bf16, `bf16=True, use_cpu=True` as ../shared/bench/hf_trainer_reference.py sets it up
  trainer-full-bf16  the same with `bf16_full_eval=True` too (the Trainer's own cast of the model to
             bf16 for evaluation); only on a CPU with native bf16
  pipeline   pipeline("text-classification", model=run, tokenizer=run, device=-1, batch_size=B)
             called on the texts with truncation at 100 tokens and top_k=None (all class scores, like
             the Predictor); on a CPU with native bf16, loaded with dtype=torch.bfloat16
After one warm-up call each, the contenders run in turn for --rounds rounds (A B C A B C ...); the
medians of examples/s are reported with every round's value, and ratios sentitune/trainer and
sentitune/pipeline. The Predictor's and the pipeline's predicted labels are compared as a check that
both did the same work (agreement should be 1.0).

usage: eval_speed.py [--models tiny,minilm] [--rounds 3] [--batch-size 256] [--quick]
Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from speedlib import (
    MAX_LENGTH,
    MODEL_SIZES,
    VAL_CSV,
    bench_main,
    child_env,
    log,
    median,
    model_folder,
    model_shape,
    ratio,
    read_label_ids,
    run_child,
    stdout_to_stderr,
)

PRESETS = {"quick": {"models": "tiny", "rounds": 3}, "full": {"models": "tiny,minilm", "rounds": 5}}
CONTENDERS = ("sentitune", "trainer", "trainer-full-bf16", "pipeline")
OTHERS = CONTENDERS[1:]


def native_bf16() -> bool:
    from sentitune.runtime import cpu_has_native_bf16

    return cpu_has_native_bf16()


def make_run(folder: str, work: str, name: str, timeout: float) -> str:
    """A finished sentitune run folder (one training step on val.csv: the weights do not matter)."""
    run_dir = str(Path(work) / f"run-{name}")
    cmd = [
        sys.executable,
        "-m",
        "sentitune.cli",
        "--quiet",
        "train",
        "--training-file",
        str(VAL_CSV),
        "--model",
        folder,
        "--job-dir",
        run_dir,
        "--max-steps",
        "1",
        "--batch-size",
        "32",
        "--train-eval-examples",
        "0",
        "--max-length",
        str(MAX_LENGTH),
        "--overwrite",
    ]
    res = run_child(cmd, child_env(), timeout)
    if res.returncode != 0:
        raise SystemExit(f"sentitune train --max-steps 1 failed: {res.error_tail()}")
    return run_dir


class SentituneContender:
    def __init__(self, run_dir: str, batch_size: int):
        from sentitune.scoring import Predictor

        self.predictor = Predictor(run_dir, device="cpu", batch_size=batch_size, max_length=MAX_LENGTH)
        p = self.predictor.precision
        self.precision = p.name + (
            ", weights cast once" if p.cast_weights else " autocast" if p.dtype else ""
        )

    def __call__(self, texts, labels):
        return self.predictor.probabilities(texts).argmax(axis=1)


class TrainerContender:
    def __init__(self, run_dir: str, batch_size: int, work: str, full_bf16: bool = False):
        from transformers import (
            AutoModelForSequenceClassification,
            AutoTokenizer,
            DataCollatorWithPadding,
            Trainer,
            TrainingArguments,
        )

        self.tok = AutoTokenizer.from_pretrained(run_dir, use_fast=True)
        # trust_remote_code: a mean-pooled run (the MiniLM's default) ships its pooling as code of its own
        model = AutoModelForSequenceClassification.from_pretrained(run_dir, trust_remote_code=True)
        args = TrainingArguments(
            output_dir=str(Path(work) / "trainer-eval"),
            per_device_eval_batch_size=batch_size,
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            save_strategy="no",
            **({"bf16": True, "use_cpu": True} if native_bf16() else {}),
            **({"bf16_full_eval": True} if full_bf16 else {}),
        )
        self.precision = "fp32"
        if native_bf16():
            self.precision = "bf16, weights cast once" if full_bf16 else "bf16 autocast"
        self.trainer = Trainer(model=model, args=args, data_collator=DataCollatorWithPadding(self.tok))
        self.evaluate_s = None

    def __call__(self, texts, labels):
        enc = self.tok(list(texts), truncation=True, max_length=MAX_LENGTH)
        rows = [  # the inputs the run's tokenizer gives, as a Trainer user would pass them
            {**{key: enc[key][i] for key in enc.keys()}, "labels": int(labels[i])} for i in range(len(texts))
        ]
        t0 = time.perf_counter()
        self.trainer.evaluate(eval_dataset=rows)
        self.evaluate_s = time.perf_counter() - t0
        return None


class PipelineContender:
    def __init__(self, run_dir: str, batch_size: int):
        import torch
        from transformers import pipeline

        dtype = torch.bfloat16 if native_bf16() else torch.float32
        self.pipe = pipeline(
            "text-classification",
            model=run_dir,
            tokenizer=run_dir,
            device=-1,
            batch_size=batch_size,
            dtype=dtype,
            trust_remote_code=True,
        )
        self.precision = "bf16, weights cast once" if native_bf16() else "fp32"
        self.label2id = self.pipe.model.config.label2id

    def __call__(self, texts, labels):
        out = self.pipe(list(texts), truncation=True, max_length=MAX_LENGTH, top_k=None)
        # top_k=None returns every class's score, sorted best first
        return np.array([self.label2id[scores[0]["label"]] for scores in out])


def bench_model(name: str, args, work: str) -> dict:
    size = MODEL_SIZES[name]
    folder = model_folder(name, work)
    log(f"[{name}] sentitune train --max-steps 1 for a run folder")
    run_dir = make_run(folder, work, name, args.timeout)
    texts, labels = read_label_ids(VAL_CSV)
    contenders, errors = {}, {}
    for c in args.contenders.split(","):
        try:
            if c == "sentitune":
                contenders[c] = SentituneContender(run_dir, args.batch_size)
            elif c == "trainer":
                contenders[c] = TrainerContender(run_dir, args.batch_size, work)
            elif c == "trainer-full-bf16":
                if not native_bf16():
                    continue  # without native bf16 the Trainer's best is fp32: the `trainer` row
                contenders[c] = TrainerContender(run_dir, args.batch_size, work, full_bf16=True)
            elif c == "pipeline":
                contenders[c] = PipelineContender(run_dir, args.batch_size)
            else:
                raise SystemExit(f"unknown contender {c!r}; choose from {', '.join(CONTENDERS)}")
            contenders[c](texts[:64], labels[:64])  # warm-up
        except (ImportError, RuntimeError) as exc:
            errors[c] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            contenders.pop(c, None)
            log(f"  {c} unavailable: {errors[c]}")
    rates = {c: [] for c in contenders}
    evaluate_only = {}
    predictions = {}
    for r in range(args.rounds):
        for c, fn in contenders.items():
            t0 = time.perf_counter()
            pred = fn(texts, labels)
            seconds = time.perf_counter() - t0
            rates[c].append(round(len(texts) / seconds, 1))
            if c.startswith("trainer"):
                evaluate_only.setdefault(c, []).append(round(len(texts) / fn.evaluate_s, 1))
            if pred is not None:
                predictions[c] = pred
        log(
            f"  [{name}] round {r + 1}/{args.rounds}: "
            + ", ".join(f"{c} {v[-1]}/s" for c, v in rates.items())
        )
    results = {}
    for c in contenders:
        results[c] = {
            "precision": contenders[c].precision,
            "examples_per_s": median(rates[c]),
            "examples_per_s_rounds": rates[c],
        }
    for c, only in evaluate_only.items():
        results[c]["evaluate_only_examples_per_s"] = median(only)
        results[c]["evaluate_only_examples_per_s_rounds"] = only
    for c, e in errors.items():
        results[c] = {"error": e}
    s = results.get("sentitune", {}).get("examples_per_s")
    entry = {
        "model": {"description": size.description, **model_shape(folder)},
        "examples": len(texts),
        "batch_size": args.batch_size,
        "contenders": results,
        "ratios": {
            f"sentitune/{o}": ratio(s, results[o]["examples_per_s"])
            for o in OTHERS
            if "examples_per_s" in results.get(o, {})
        },
    }
    if "sentitune" in predictions and "pipeline" in predictions:
        entry["label_agreement_sentitune_pipeline"] = round(
            float((predictions["sentitune"] == predictions["pipeline"]).mean()), 4
        )
    return entry


def run(args) -> dict:
    preset = PRESETS["quick" if args.quick else "full"]
    args.rounds = args.rounds or preset["rounds"]
    models = (args.models or preset["models"]).split(",")
    if not VAL_CSV.is_file():
        raise SystemExit(f"missing input {VAL_CSV}; set SENTITUNE_SHARED to the folder holding data/")
    import torch

    result = {
        "benchmark": "eval_speed",
        "config": {"rounds": args.rounds, "batch_size": args.batch_size, "threads": torch.get_num_threads()},
        "models": {},
    }
    t0 = time.perf_counter()
    with stdout_to_stderr(), tempfile.TemporaryDirectory(prefix="sentitune-bench-") as work:
        for name in models:
            result["models"][name] = bench_model(name, args, work)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    return result


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--models", help="comma-separated model sizes: tiny, minilm (default: quick tiny, full both)"
    )
    ap.add_argument("--rounds", type=int, help="rounds of the contenders (default: 3 quick, 5 full)")
    ap.add_argument("--batch-size", type=int, default=256, help="inference batch size for all of them")
    ap.add_argument("--contenders", default=",".join(CONTENDERS), help="subset and order of the contenders")
    ap.add_argument("--quick", action="store_true", help="short preset")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds for the one-step training run")


if __name__ == "__main__":
    sys.exit(bench_main(__doc__, add_arguments, run))
