#!/usr/bin/env python3
"""Where does sentitune's training step spend its time? A torch.profiler table of sentitune's own loop
on BERT-Tiny, and timed ablations of the step, to rank what is worth speeding up.

1. Profile: sentitune.train.fit() itself (the real step loop: bucketed batches, forward, loss, backward,
   clip_grad_norm_, fused AdamW, scheduler) runs `--steps` steps on train.csv under torch.profiler (CPU),
   after a short warm-up fit. Ops are ranked by self CPU time per step; they are also grouped (matmul,
   attention, embedding backward, optimiser, clipping, dropout, ...). The profiled op time is compared
   with the wall time: the rest is Python and framework overhead outside torch ops.
2. Ablations: a replica of sentitune's step (same model class, AdamW parameter groups, clipping and
   batches) is timed in variants, alternating the variants in every round, medians over rounds:
     baseline               sentitune's step as it is
     no_clip                without clip_grad_norm_
     frozen_word_embeddings word embeddings not trained (no dense 30522 x h gradient, update, clipping)
     no_attention_dropout   attention-probability dropout p = 0 only (lets SDPA use its fused kernel)
     no_dropout             every dropout p = 0 (hidden, attention, classifier)
     threads_1              torch.set_num_threads(1)
     torch_dropout          torch's dropout masks instead of sentitune.dropout's (train --dropout-masks torch)
     keep_grads             zero_grad(set_to_none=False): gradient buffers kept between steps
   and only when --variants names it: compiled (torch.compile(dynamic=True) over the model, torch's dropout).
   Variant costs are not additive; each says what removing that piece alone would save.

   and, where the CPU has native bf16, `fp32` (the same step without bf16 autocast) and `bf16_weights`
   (no autocast: the forward and backward run on a bf16 copy of the weights; the gradients are copied
   into the fp32 weights, which are clipped and stepped as in the baseline and cast back to the copy:
   what keeping bf16 working weights with fp32 masters would save over autocast's per-op casts).

usage: profile_train.py [--model tiny|minilm] [--batch-size 128] [--steps 20] [--rounds 3] [--top 25]
                        [--precision auto|fp32|bf16]   (auto: what `sentitune train` picks here)
                        [--variants baseline,bf16_weights,...] [--no-profile]
Prints one JSON object on stdout; the profiler table goes to stderr.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time

import numpy as np
from speedlib import (
    MAX_LENGTH,
    MODEL_SIZES,
    TRAIN_CSV,
    emit,
    log,
    machine_info,
    median,
    model_folder,
    stdout_to_stderr,
)

# Op-name fragments -> group, first match wins.
GROUPS = [
    ("optimizer (fused AdamW)", ("adam",)),
    ("layer norm", ("layer_norm",)),
    ("loss", ("cross_entropy", "nll_loss", "log_softmax")),
    ("gradient clipping", ("norm", "clamp", "_foreach_mul", "stack", "reciprocal")),
    ("embedding backward", ("embedding_dense_backward", "embedding_backward", "index_add", "index_put")),
    ("matmul (linear)", ("addmm", "::mm", "matmul", "linear", "bmm")),
    ("attention (sdpa)", ("scaled_dot_product", "flash_attention", "_efficient_attention", "softmax")),
    ("dropout", ("dropout", "bernoulli", "native_dropout")),
    ("gelu", ("gelu",)),
    ("zero / fill / copy", ("zero_", "fill_", "copy_", "zeros", "empty", "clone", "to_copy")),
    ("elementwise", ("add", "mul", "div", "sub", "where", "tanh", "masked")),
    ("embedding forward", ("embedding", "index_select")),
]


def group_of(name: str) -> str:
    low = name.lower()
    for group, fragments in GROUPS:
        if any(f in low for f in fragments):
            return group
    return "other"


def load_inputs(folder: str, batch_size: int, steps: int):
    """sentitune's own config, model, tokenised train split (no validation: no eval inside fit)."""
    from sentitune import LABELS
    from sentitune.batching import tokenize
    from sentitune.config import TrainConfig
    from sentitune.splits import read_prepared
    from sentitune.train import build_model, load_splits

    cfg = TrainConfig(
        training_file=str(TRAIN_CSV),
        model=folder,
        batch_size=batch_size,
        max_steps=steps,
        learning_rate=1e-4,
        train_eval_examples=0,
        log_every=10**9,
        max_length=MAX_LENGTH,
    )
    splits = load_splits(cfg, read_prepared(cfg))
    classifier, _ = build_model(cfg, LABELS)
    tokens = {"train": tokenize(classifier.tokenizer, splits["train"].texts, cfg.max_length)}
    return cfg, classifier.model, tokens, splits


def profile_fit(cfg, model, tokens, splits, steps: int, top: int, precision) -> dict:
    import dataclasses

    import torch
    from torch.profiler import ProfilerActivity, profile

    from sentitune.train import fit

    device = torch.device("cpu")
    fit(model, tokens, splits, dataclasses.replace(cfg, max_steps=3), device, precision)  # warm-up
    cfg = dataclasses.replace(cfg, max_steps=steps)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        fitted = fit(model, tokens, splits, cfg, device, precision)
        wall = time.perf_counter() - t0
    return {
        "steps": steps,
        "examples": fitted.stats["examples"],
        "wall_ms_per_step": round(1e3 * wall / steps, 2),
        "examples_per_s_under_profiler": round(fitted.stats["examples"] / wall, 1),
        **op_table(prof, steps, "step", top),
    }


def op_table(prof, count: int, unit: str, top: int) -> dict:
    """A finished torch.profiler run as JSON: self CPU time per `unit` (`count` of them were profiled),
    the `top` ops and every op group; the table goes to stderr."""
    averages = prof.key_averages()
    log(averages.table(sort_by="self_cpu_time_total", row_limit=top))
    rows = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)
    total_us = sum(e.self_cpu_time_total for e in rows)
    groups: dict[str, float] = {}
    for e in rows:
        groups[group_of(e.key)] = groups.get(group_of(e.key), 0.0) + e.self_cpu_time_total
    return {
        f"op_self_ms_per_{unit}": round(total_us / 1e3 / count, 2),
        "note": "self CPU time summed over ops; with 2 threads, intra-op time counts once (the calling thread)",
        "top_ops": [
            {
                "op": e.key,
                f"self_ms_per_{unit}": round(e.self_cpu_time_total / 1e3 / count, 3),
                "self_share": round(e.self_cpu_time_total / total_us, 4),
                f"calls_per_{unit}": round(e.count / count, 1),
            }
            for e in rows[:top]
        ],
        f"groups_ms_per_{unit}": {
            g: round(v / 1e3 / count, 2) for g, v in sorted(groups.items(), key=lambda kv: -kv[1])
        },
    }


class ReplicaStep:
    """sentitune's training step, reproduced so that single pieces can be switched off."""

    def __init__(self, base_model, cfg, tokens, labels, variant: str, precision):
        import torch

        from sentitune.optimizer import build_optimizer
        from sentitune.runtime import FP32

        self.torch = torch
        self.model = copy.deepcopy(base_model)
        self.model.train()
        if variant == "frozen_word_embeddings":
            self.model.base_model.embeddings.word_embeddings.weight.requires_grad_(False)
        for name, module in self.model.named_modules():
            if isinstance(module, torch.nn.Dropout):
                if variant == "no_dropout" or (
                    variant == "no_attention_dropout" and name.endswith("attention.self.dropout")
                ):
                    module.p = 0.0
        from sentitune.dropout import FastDropout, use_fast_dropout

        if variant not in ("torch_dropout", "compiled") and cfg.dropout_masks == "fast":  # as train does
            use_fast_dropout(self.model)
        else:  # torch's own masks, also where the profiled fit() swapped them into the model copied here
            for parent in self.model.modules():
                for name, child in list(parent.named_children()):
                    if isinstance(child, FastDropout):
                        setattr(parent, name, torch.nn.Dropout(child.p).train(child.training))
        self.variant = variant
        self.set_to_none = variant != "keep_grads"
        self.precision = FP32 if variant == "fp32" else precision
        self.clip = variant != "no_clip"
        self.threads = 1 if variant == "threads_1" else None
        self.optimizer = build_optimizer(self.model, cfg, torch.device("cpu"))
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.working = None  # bf16_weights: the bf16 copy the forward and backward run on
        if variant == "bf16_weights":
            self.working = copy.deepcopy(self.model).to(torch.bfloat16)
            self.working_trainable = [p for p in self.working.parameters() if p.requires_grad]
            self.precision = FP32  # the weights are bf16 already: no autocast
        if variant == "compiled":  # Inductor over the model (torch's dropout: it traces no randint views)
            self.model = torch.compile(self.model, dynamic=True)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.tokens, self.labels, self.cfg = tokens, labels, cfg

    def run(self, batches) -> float:
        """Seconds per step over `batches`."""
        torch = self.torch
        saved = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            t0 = time.perf_counter()
            forward = self.working if self.working is not None else self.model
            for rows in batches:
                ids, mask = self.tokens.batch(rows)
                y = torch.from_numpy(self.labels[rows])
                with self.precision.autocast(torch.device("cpu")):
                    logits = forward(input_ids=ids, attention_mask=mask).logits
                loss = self.loss_fn(logits.float(), y)
                loss.backward()
                if self.working is not None:  # bf16 gradients into the fp32 weights' .grad
                    for master, work in zip(self.trainable, self.working_trainable, strict=True):
                        master.grad = work.grad.float()
                        work.grad = None
                if self.clip:
                    torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=self.set_to_none)
                if self.working is not None:  # the stepped fp32 weights cast into the bf16 copy
                    with torch.no_grad():
                        torch._foreach_copy_(self.working_trainable, self.trainable)
            return (time.perf_counter() - t0) / len(batches)
        finally:
            torch.set_num_threads(saved)


VARIANTS = (
    "baseline",
    "no_clip",
    "frozen_word_embeddings",
    "no_attention_dropout",
    "no_dropout",
    "threads_1",
    "torch_dropout",
    "keep_grads",
)


OPT_IN = ("compiled",)  # only when --variants names it: compiling costs about a minute


def ablations(cfg, model, tokens, splits, steps: int, rounds: int, precision, only=None) -> dict:
    from sentitune.batching import length_bucketed_batches

    train_tokens, labels = tokens["train"], splits["train"].labels
    batches = length_bucketed_batches(train_tokens.lengths, cfg.batch_size, np.random.default_rng(0))
    full = [b for b in batches if len(b) == cfg.batch_size]
    variants = VARIANTS + (("fp32", "bf16_weights") if precision.name == "bf16" else ())
    if only:
        variants = tuple(v for v in variants + OPT_IN if v in only)
    steppers = {v: ReplicaStep(model, cfg, train_tokens, labels, v, precision) for v in variants}
    for s in steppers.values():
        s.run(full[:2])  # warm-up: allocator, optimizer state
    times = {v: [] for v in variants}
    for r in range(rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]  # rotate the order
        chunk = full[(r * steps) % len(full) :][:steps]
        for v in order:
            times[v].append(steppers[v].run(chunk))
        log(
            f"  ablation round {r + 1}/{rounds}: "
            + ", ".join(f"{v} {1e3 * times[v][-1]:.0f}ms" for v in variants)
        )
    base = median(times["baseline"])
    return {
        "steps_per_round": steps,
        "rounds": rounds,
        "ms_per_step": {v: round(1e3 * median(t), 2) for v, t in times.items()},
        "saving_vs_baseline": {
            v: round(1 - median(t) / base, 3) for v, t in times.items() if v != "baseline"
        },
        "ms_per_step_rounds": {v: [round(1e3 * x, 1) for x in t] for v, t in times.items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", choices=sorted(MODEL_SIZES))
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--steps", type=int, default=20, help="profiled steps (and steps per ablation round)")
    ap.add_argument("--rounds", type=int, default=3, help="ablation rounds (0 = no ablations)")
    ap.add_argument("--top", type=int, default=25, help="ops in the table")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument(
        "--variants", help="comma-separated ablation variants (default: all; baseline is always run)"
    )
    ap.add_argument("--no-profile", action="store_true", help="the ablations only")
    args = ap.parse_args()
    import torch

    from sentitune.runtime import resolve_precision

    precision = resolve_precision(args.precision, torch.device("cpu"))
    result = {"benchmark": "profile_train", "machine": machine_info()}
    t0 = time.perf_counter()
    with stdout_to_stderr(), tempfile.TemporaryDirectory(prefix="sentitune-bench-") as work:
        folder = model_folder(args.model, work)
        batch = args.batch_size or MODEL_SIZES[args.model].batch_size
        cfg, model, tokens, splits = load_inputs(folder, batch, args.steps)
        result["config"] = {
            "model": args.model,
            "batch_size": batch,
            "threads": torch.get_num_threads(),
            "precision": precision.name,
        }
        base_state = copy.deepcopy(model.state_dict())
        if not args.no_profile:
            log(f"profiling {args.steps} steps of sentitune.train.fit on {args.model}, batch {batch}")
            result["profile"] = profile_fit(cfg, model, tokens, splits, args.steps, args.top, precision)
            model.load_state_dict(base_state)
        if args.rounds:
            log(f"ablations: {args.rounds} rounds of {args.steps} steps per variant")
            only = {"baseline", *args.variants.split(",")} if args.variants else None
            result["ablations"] = ablations(
                cfg, model, tokens, splits, args.steps, args.rounds, precision, only
            )
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
