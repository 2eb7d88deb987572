#!/usr/bin/env python3
"""Where does inference spend its time? sentitune's Predictor on the 2,000 validation tweets, stage by
stage, beside the Hugging Face Trainer's evaluation stage by stage, and the forward passes under
torch.profiler: how far the 3x target is, and what bounds it.

Both contenders read the same run folder (eval_speed.py's: `sentitune train --max-steps 1`) and run at
their best precision on this CPU, set up as in eval_speed.py. In alternated rounds, medians of seconds:
  sentitune  normalise (the run's `tweet` normalisation), tokenise (the fast tokenizer into flat arrays),
             model (length-sorted batches, forward passes, softmax: runtime.infer_probs), and the whole
             Predictor.probabilities() call, which is the three in one
  trainer    tokenise (the fast tokenizer, rows as the Trainer takes them) and Trainer.evaluate()
Then the forward passes alone under torch.profiler (self CPU time by op group, profile_train.py's groups)
and the rate they ran at: forward FLOPs per token are a third of ceiling.py's training FLOPs; and the
positions the padded batches compute per real token (what packing posts without padding could save).
Derived: the seconds that 3x the Trainer's rate leaves for 2,000 tweets, against what sentitune spends
before the model runs.

usage: profile_predict.py [--model tiny|minilm] [--batch-size 256] [--rounds 5] [--top 15]
Prints one JSON object on stdout; the profiler table and progress go to stderr.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from ceiling import flops_per_token
from eval_speed import SentituneContender, TrainerContender, make_run
from profile_train import op_table
from speedlib import (
    MODEL_SIZES,
    VAL_CSV,
    bench_main,
    log,
    median,
    model_folder,
    model_shape,
    read_label_ids,
)

TARGET = 3.0  # the inference target, in multiples of the Trainer's rate


def sentitune_stages(predictor, texts) -> dict:
    """Seconds of each stage of one Predictor call on `texts`, then of the whole call."""
    from sentitune.batching import tokenize
    from sentitune.runtime import infer_probs

    run = predictor.classifier
    t0 = time.perf_counter()
    normalised = run.normalization.apply_all(texts)
    t1 = time.perf_counter()
    tokens = tokenize(run.tokenizer, normalised, predictor.max_length)
    t2 = time.perf_counter()
    infer_probs(predictor.runner, tokens, predictor.batch_size, predictor.device, predictor.precision)
    t3 = time.perf_counter()
    predictor.probabilities(texts)
    t4 = time.perf_counter()
    return {"normalise": t1 - t0, "tokenise": t2 - t1, "model": t3 - t2, "whole_call": t4 - t3}


def trainer_stages(trainer, texts, labels) -> dict:
    t0 = time.perf_counter()
    trainer(texts, labels)
    whole = time.perf_counter() - t0
    return {"tokenise": whole - trainer.evaluate_s, "evaluate": trainer.evaluate_s, "whole_call": whole}


def padded_tokens(tokens, batch_size: int) -> int:
    """Token positions the forward passes compute, padding included, as runtime.batched_probs pads."""
    from sentitune.batching import sorted_batches
    from sentitune.runtime import SHAPE_MULTIPLE, bucketed_rows

    total = 0
    for rows in sorted_batches(tokens.lengths, batch_size):
        rows = bucketed_rows(rows, batch_size)
        total += len(rows) * -(-int(tokens.lengths[rows].max()) // SHAPE_MULTIPLE) * SHAPE_MULTIPLE
    return total


def profile_forward(predictor, tokens, passes: int, top: int) -> dict:
    """The model stage alone, `passes` times under torch.profiler: self CPU time per pass by op group."""
    from torch.profiler import ProfilerActivity, profile

    from sentitune.runtime import infer_probs

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(passes):
            infer_probs(predictor.runner, tokens, predictor.batch_size, predictor.device, predictor.precision)
        wall = time.perf_counter() - t0
    return {
        "passes": passes,
        "wall_ms_per_pass": round(1e3 * wall / passes, 2),
        **op_table(prof, passes, "pass", top),
    }


def medians(rounds: list[dict]) -> dict:
    return {k: round(median([r[k] for r in rounds]), 4) for k in rounds[0]}


def run(args) -> dict:
    if not VAL_CSV.is_file():
        raise SystemExit(f"missing input {VAL_CSV}; set SENTITUNE_SHARED to the folder holding data/")
    import torch

    texts, labels = read_label_ids(VAL_CSV)
    result = {
        "benchmark": "profile_predict",
        "config": {
            "model": args.model,
            "rounds": args.rounds,
            "batch_size": args.batch_size,
            "threads": torch.get_num_threads(),
            "examples": len(texts),
        },
    }
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sentitune-bench-") as work:
        folder = model_folder(args.model, work)
        log(f"[{args.model}] sentitune train --max-steps 1 for a run folder")
        run_dir = make_run(folder, work, args.model, args.timeout)
        ours = SentituneContender(run_dir, args.batch_size)
        trainer = TrainerContender(run_dir, args.batch_size, work)
        predictor = ours.predictor
        ours(texts[:64], labels[:64])  # warm-up, as eval_speed.py does
        trainer(texts[:64], labels[:64])
        our_rounds, trainer_rounds = [], []
        for r in range(args.rounds):
            our_rounds.append(sentitune_stages(predictor, texts))
            trainer_rounds.append(trainer_stages(trainer, texts, labels))
            log(
                f"  round {r + 1}/{args.rounds}: sentitune "
                + ", ".join(f"{k} {v:.3f}s" for k, v in our_rounds[-1].items())
                + "; trainer "
                + ", ".join(f"{k} {v:.3f}s" for k, v in trainer_rounds[-1].items())
            )
        tokens = predictor.classifier.encode(texts, predictor.max_length)  # normalised, then tokenised
        log(f"profiling {args.passes} forward passes over the {len(texts)} tweets")
        profiled = profile_forward(predictor, tokens, args.passes, args.top)
        shape = model_shape(folder)
    seq = tokens.tokens / len(texts)
    forward_flops = flops_per_token(shape["layers"], shape["hidden"], shape["intermediate"], seq)["total"] / 3
    ours_s, theirs_s = medians(our_rounds), medians(trainer_rounds)
    target_s = theirs_s["whole_call"] / TARGET
    before_model = ours_s["normalise"] + ours_s["tokenise"]
    result.update(
        {
            "model": {"description": MODEL_SIZES[args.model].description, **shape},
            "precision": {"sentitune": ours.precision, "trainer": trainer.precision},
            "mean_tokens_per_post": round(seq, 2),
            # what packing posts without padding could save at most: the padded positions' share
            "padded_positions_per_token": round(padded_tokens(tokens, args.batch_size) / tokens.tokens, 4),
            "forward_mflop_per_token": round(forward_flops / 1e6, 3),
            "sentitune_seconds": ours_s,
            "sentitune_seconds_rounds": our_rounds,
            "trainer_seconds": theirs_s,
            "trainer_seconds_rounds": trainer_rounds,
            "examples_per_s": {
                "sentitune": round(len(texts) / ours_s["whole_call"], 1),
                "trainer": round(len(texts) / theirs_s["whole_call"], 1),
            },
            "ratio_sentitune_trainer": round(theirs_s["whole_call"] / ours_s["whole_call"], 3),
            "model_stage_gflops": round(tokens.tokens * forward_flops / ours_s["model"] / 1e9, 1),
            "target": {
                "times_trainer": TARGET,
                "seconds_allowed": round(target_s, 4),
                "sentitune_before_model_s": round(before_model, 4),
                "left_for_the_model_s": round(target_s - before_model, 4),
                "model_gflops_needed": round(
                    tokens.tokens * forward_flops / (target_s - before_model) / 1e9, 1
                )
                if target_s > before_model
                else None,
            },
            "forward_profile": profiled,
        }
    )
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    return result


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default="tiny", choices=sorted(MODEL_SIZES))
    ap.add_argument("--batch-size", type=int, default=256, help="inference batch size for both")
    ap.add_argument("--rounds", type=int, default=5, help="alternated rounds of the two contenders")
    ap.add_argument("--passes", type=int, default=3, help="forward passes over the tweets under the profiler")
    ap.add_argument("--top", type=int, default=15, help="ops in the profiler table and the JSON")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds for the one-step training run")


if __name__ == "__main__":
    sys.exit(bench_main(__doc__, add_arguments, run))
