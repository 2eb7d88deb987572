"""Dropout with cheaper random masks on the CPU.

A CPU training step of a small BERT spends a quarter of its time drawing dropout masks (profiled on
BERT-Tiny sizes in bf16 on an AMX Xeon: `aten::bernoulli_`, 25 % of op time), one draw of the random
generator per element. `fast_dropout` draws one 64-bit integer per four elements and keeps an element
where its 16-bit slice is at least p * 65536: the same Bernoulli(1 - p) keep-mask up to a resolution of
1/65536 in p (p = 0.1 keeps with probability 0.899994), with the same 1 / (1 - p) scaling, at less than
half the cost (benchmarks/dropout_masks.py). Only the masks' random source differs from torch's dropout, so training is the same
in distribution; `train` uses it on the CPU, where mask generation is the bound (on a GPU torch's own
Philox generator is already cheap).
"""

from __future__ import annotations

import torch

_SLICES = 4  # 16-bit slices per 64-bit draw


def fast_dropout(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    if p <= 0:
        return x
    if p >= 1:
        return torch.zeros_like(x)
    n = x.numel()
    bits = torch.randint(
        -(2**63), 2**63 - 1, (-(-n // _SLICES),), dtype=torch.int64, device=x.device, generator=generator
    )
    threshold = -32768 + round(p * 65536)  # int16 slices are uniform on [-32768, 32767]
    keep = bits.view(torch.int16)[:n].view(x.shape) >= threshold
    return x * keep * (1.0 / (1.0 - p))


class FastDropout(torch.nn.Dropout):
    """torch.nn.Dropout (same p, same place in the model, nothing saved) with `fast_dropout`'s masks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return fast_dropout(x, self.p)


def use_fast_dropout(model: torch.nn.Module) -> int:
    """Swap every torch.nn.Dropout module of `model` for a FastDropout of the same p; returns how many."""
    swapped = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace).train(child.training))
                swapped += 1
    return swapped
