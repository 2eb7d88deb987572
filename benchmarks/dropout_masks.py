#!/usr/bin/env python3
"""The cost of one dropout mask: torch's `F.dropout` against sentitune.dropout's `fast_dropout`, on an
activation the size of a BERT-Tiny layer's (batch 128, 40 tokens, hidden 128), in bf16 and fp32.
Alternated rounds, medians of the per-call time.

usage: dropout_masks.py [--rounds 5] [--calls 50] [--p 0.1]
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import sys
import time

from speedlib import emit, machine_info, median


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--p", type=float, default=0.1)
    args = ap.parse_args()
    import torch

    from sentitune.dropout import fast_dropout

    contenders = {
        "torch_dropout": lambda x: torch.nn.functional.dropout(x, args.p, True),
        "fast_dropout": lambda x: fast_dropout(x, args.p),
    }
    result = {"benchmark": "dropout_masks", "machine": machine_info(), "shape": [128, 40, 128], "p": args.p}
    for dtype in (torch.bfloat16, torch.float32):
        x = torch.randn(128, 40, 128, dtype=dtype)
        times = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, fn in contenders.items():
                fn(x)  # warm-up
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    fn(x)
                times[name].append(1e3 * (time.perf_counter() - t0) / args.calls)  # ms
        ms = {name: median(t) for name, t in times.items()}
        result[str(dtype).removeprefix("torch.")] = {
            "ms_per_call": ms,
            "torch_over_fast": round(ms["torch_dropout"] / ms["fast_dropout"], 2),
        }
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
