#!/usr/bin/env python3
"""bf16 inference two ways on a CPU with native bf16: autocast over fp32 weights (what `--precision bf16`
and `auto` do today) against weights cast to bf16 once (no autocast, no per-op weight casts); fp32 as the
reference. Prints one JSON object.

One process, one run folder (default: `make demo`'s), the 2,000 TweetEval validation tweets tokenised once
as the run reads them; each variant scores them through sentitune's own batched inference (length-sorted
batches, few shapes) in turn for --rounds rounds (A B C A B C ...); the medians of examples/s, every
round's value, and for each bf16 variant the largest probability difference from fp32 and the share of
labels that agree with it. With --compile, also the cast-once model under torch.compile(dynamic=True)
(inductor on the CPU; its first call, which compiles, is timed apart as `compile_s`).

  python benchmarks/bf16_weights.py [--run demo/run] [--rounds 5] [--batch-size 64] [--compile]
"""

from __future__ import annotations

import copy
import statistics
import time

import pandas as pd
from speedlib import VAL_CSV, bench_main, log


def run(args) -> dict:
    import torch

    from sentitune.runfolder import load_run, trained_max_length
    from sentitune.runtime import FP32, cpu_has_native_bf16, infer_probs, resolve_precision

    device = torch.device("cpu")
    classifier = load_run(args.run)
    texts = pd.read_csv(VAL_CSV)["text"].astype(str).tolist()
    tokens = classifier.encode(texts, trained_max_length(args.run))
    autocast = resolve_precision("bf16", device)
    cast_once = copy.deepcopy(classifier.model).to(torch.bfloat16)
    variants = {
        "fp32": (classifier.model, FP32),
        "bf16_autocast": (classifier.model, autocast),
        "bf16_weights": (cast_once, FP32),  # the weights are bf16: no autocast needed
    }
    if args.compile:
        variants["bf16_weights_compiled"] = (torch.compile(cast_once, dynamic=True), FP32)
    probs, rates, compile_s = {}, {name: [] for name in variants}, None
    with torch.inference_mode():
        for name, (model, precision) in variants.items():  # warm-up, and the answers compared below
            started = time.perf_counter()
            probs[name] = infer_probs(model, tokens, args.batch_size, device, precision)
            if name == "bf16_weights_compiled":
                compile_s = round(time.perf_counter() - started, 1)
        for r in range(args.rounds):
            for name, (model, precision) in variants.items():
                started = time.perf_counter()
                infer_probs(model, tokens, args.batch_size, device, precision)
                rates[name].append(round(len(texts) / (time.perf_counter() - started), 1))
            log(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]}/s" for n, v in rates.items()))
    reference = probs["fp32"]
    result = {}
    for name in variants:
        median = statistics.median(rates[name])
        row = {"examples_per_s": median, "rounds": rates[name]}
        if name != "fp32":
            row["vs_fp32"] = round(median / statistics.median(rates["fp32"]), 2)
            row["vs_bf16_autocast"] = round(median / statistics.median(rates["bf16_autocast"]), 2)
            row["max_prob_diff_from_fp32"] = float(abs(probs[name] - reference).max())
            row["label_agreement_with_fp32"] = float((probs[name].argmax(1) == reference.argmax(1)).mean())
        result[name] = row
    return {
        "benchmark": "bf16_weights",
        "run": args.run,
        "native_bf16": cpu_has_native_bf16(),
        "posts": len(texts),
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "variants": result,
        **({"compile_s": compile_s} if args.compile else {}),
    }


def add_arguments(ap) -> None:
    ap.add_argument("--run", default="demo/run", help="a finished run (default: the demo's)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--batch-size", type=int, default=64, help="posts per forward pass (the Predictor's default)"
    )
    ap.add_argument("--compile", action="store_true", help="also the cast-once model under torch.compile")


if __name__ == "__main__":
    raise SystemExit(bench_main(__doc__, add_arguments, run))
