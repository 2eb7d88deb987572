#!/usr/bin/env python3
"""How fast could training be? The matmul ceiling of this CPU on the model's own shapes, in fp32 and bf16,
and the model's training FLOPs per token, so a measured examples/s becomes a fraction of the ceiling.

Ceiling. A BERT layer's matmuls, for a batch of T tokens (T = batch size x mean tokens per post), are
T x h @ h x h (query, key, value, output; 4 of them), T x h @ h x i (FFN up) and T x i @ i x h (FFN down),
with i = 4h. Training runs each of them three ways: the forward product Y = X W^T (as F.linear does), the
input gradient dX = dY W and the weight gradient dW = dY^T X. Each of the 3 x 3 products is timed with
torch (best of several calls, at least `min_time` seconds each), in fp32 and in bf16 (both operands bf16,
as autocast would give); the ceiling is the FLOP-weighted harmonic mean over the layer's products:
    ceiling = sum(flops_k) / sum(flops_k / rate_k),
i.e. the rate at which this CPU would run exactly the layer's matmul mix and nothing else.

FLOPs per token (training: forward + backward), with L layers, hidden h, FFN width i, s tokens per post:
    matmul:    6 * L * (4 h^2 + 2 h i)
        - 4 h^2 + 2 h i is the number of matmul weights per layer; a weight does one multiply-add
          (2 FLOPs) per token forward, and twice that backward (one for dX, one for dW): 2 + 4 = 6.
    attention: 3 * L * (2 * 2 * s * h)
        - per token, the scores q.K^T over s keys cost 2 s h and the weighted sum of s values 2 s h;
          backward is twice forward, hence the factor 3.
    head:      6 * (h^2 + 3 h) / s
        - the pooler (h x h) and the 3-class classifier run once per post, i.e. 1/s per token.
Embedding lookups, LayerNorm, GELU, softmax, dropout and the optimiser are not counted: they are memory
bound, not FLOPs, which is exactly why they show up as the gap between achieved and ceiling. s is the mean
tokenised length of the training tweets ([CLS] and [SEP] included, truncated at 100); padding is not
counted, so a pipeline that pads every post to 100 tokens is charged for its waste.

achieved fraction = examples/s x s x FLOPs per token / ceiling.

usage: ceiling.py [--models tiny,minilm] [--quick]      (prints one JSON object on stdout)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from speedlib import (
    MODEL_SIZES,
    TRAIN_CSV,
    emit,
    log,
    machine_info,
    mean_token_length,
    model_folder,
    model_shape,
    read_texts,
    stdout_to_stderr,
)


def flops_per_token(layers: int, hidden: int, intermediate: int, seq: float) -> dict:
    """Training FLOPs per (unpadded) token; see the module docstring for the formula."""
    matmul = 6 * layers * (4 * hidden * hidden + 2 * hidden * intermediate)
    attention = 3 * layers * (2 * 2 * seq * hidden)
    head = 6 * (hidden * hidden + 3 * hidden) / seq
    return {
        "matmul": matmul,
        "attention": round(attention),
        "head": round(head),
        "total": round(matmul + attention + head),
    }


def layer_products(tokens: int, hidden: int, intermediate: int) -> list[tuple[str, int, int, int, int]]:
    """(name, count per layer, M, K, N) of a layer's forward matmuls: M x K @ K x N."""
    return [
        (f"{tokens}x{hidden}@{hidden}x{hidden}", 4, tokens, hidden, hidden),
        (f"{tokens}x{hidden}@{hidden}x{intermediate}", 1, tokens, hidden, intermediate),
        (f"{tokens}x{intermediate}@{intermediate}x{hidden}", 1, tokens, intermediate, hidden),
    ]


def _time_call(fn, min_time: float, min_reps: int, max_reps: int = 200) -> float:
    """Best seconds per call of fn() over at least min_reps calls and min_time seconds (after a warm-up)."""
    fn()
    best, spent, reps = float("inf"), 0.0, 0
    while reps < min_reps or (spent < min_time and reps < max_reps):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, reps = min(best, dt), spent + dt, reps + 1
    return best


def matmul_rates(m: int, k: int, n: int, dtype, min_time: float, min_reps: int) -> dict:
    """GFLOP/s of the forward, input-gradient and weight-gradient products of an M x K @ K x N linear."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=g).to(dtype)
    w = torch.randn(n, k, generator=g).to(dtype)  # nn.Linear stores weight as (out, in)
    dy = torch.randn(m, n, generator=g).to(dtype)
    flops = 2 * m * k * n
    products = {
        "forward": lambda: F.linear(x, w),  # X W^T
        "grad_input": lambda: dy @ w,  # dY W
        "grad_weight": lambda: dy.t() @ x,  # dY^T X
    }
    with torch.inference_mode():
        return {
            name: round(flops / _time_call(fn, min_time, min_reps) / 1e9, 2) for name, fn in products.items()
        }


def native_bf16() -> bool:
    from sentitune.runtime import cpu_has_native_bf16

    return cpu_has_native_bf16()


def ceiling(
    hidden: int, intermediate: int, tokens: int, dtypes=("fp32", "bf16"), min_time=0.3, min_reps=3
) -> dict:
    """Per-product GFLOP/s and the layer-mix ceiling for each dtype, on a batch of `tokens` tokens."""
    import torch

    out = {"tokens_per_batch": tokens}
    for name in dtypes:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[name]
        # bf16 without native support runs ~100x slower: one call per product is plenty there. With it,
        # bf16 is timed as fp32 is (one call after the warm-up read 396 GFLOP/s for 859 on a Zen 5).
        reps, budget = (min_reps, min_time) if name == "fp32" or native_bf16() else (1, 0.0)
        total_flops, total_time, shapes = 0.0, 0.0, {}
        for label, count, m, k, n in layer_products(tokens, hidden, intermediate):
            rates = matmul_rates(m, k, n, dtype, budget, reps)
            shapes[label] = rates
            flops = 2 * m * k * n * count
            for rate in rates.values():
                total_flops += flops
                total_time += flops / (rate * 1e9)
        out[name] = {"ceiling_gflops": round(total_flops / total_time / 1e9, 2), "per_shape_gflops": shapes}
        log(f"  {name} ceiling on {tokens} tokens x h{hidden}: {out[name]['ceiling_gflops']} GFLOP/s")
    return out


def model_ceiling(folder: str, batch_size: int, seq: float, quick: bool = False) -> dict:
    """Everything train_speed.py needs to turn examples/s into a fraction of the ceiling."""
    import torch

    shape = model_shape(folder)
    tokens = max(1, round(batch_size * seq))
    result = {
        "threads": torch.get_num_threads(),
        "mean_tokens_per_post": round(seq, 2),
        "flops_per_token": flops_per_token(shape["layers"], shape["hidden"], shape["intermediate"], seq),
    }
    result.update(
        ceiling(
            shape["hidden"],
            shape["intermediate"],
            tokens,
            min_time=0.1 if quick else 0.3,
            min_reps=2 if quick else 3,
        )
    )
    return result


def achieved(examples_per_s: float | None, ceil: dict) -> dict | None:
    """Achieved GFLOP/s of a measured rate and its fraction of the fp32 and bf16 ceilings."""
    if not examples_per_s:
        return None
    gflops = examples_per_s * ceil["mean_tokens_per_post"] * ceil["flops_per_token"]["total"] / 1e9
    out = {"gflops": round(gflops, 2)}
    for name in ("fp32", "bf16"):
        if name in ceil:
            out[f"fraction_of_{name}_ceiling"] = round(gflops / ceil[name]["ceiling_gflops"], 4)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="tiny,minilm", help="comma-separated: tiny, minilm")
    ap.add_argument("--batch-size", type=int, help="default: 128 for tiny, 32 for minilm")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args()
    t0 = time.perf_counter()
    result = {"benchmark": "ceiling", "machine": machine_info(), "models": {}}
    with stdout_to_stderr(), tempfile.TemporaryDirectory(prefix="sentitune-bench-") as work:
        texts, _ = read_texts(TRAIN_CSV)
        for name in args.models.split(","):
            folder = model_folder(name, work)
            seq = mean_token_length(texts, folder)
            batch = args.batch_size or MODEL_SIZES[name].batch_size
            log(f"{name}: mean {seq:.2f} tokens per post, batch {batch}")
            result["models"][name] = {
                "model": model_shape(folder),
                "batch_size": batch,
                **model_ceiling(folder, batch, seq, args.quick),
            }
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
