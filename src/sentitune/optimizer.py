"""The optimiser of a fine-tuning run: AdamW, no weight decay on biases and LayerNorms, and optionally
layer-wise learning rates (--layer-lr-decay).

Parameters are grouped by (learning-rate scale, weight decay), so a model gets a handful of groups and
the fused AdamW kernel updates each group in one launch.
"""

from __future__ import annotations

import re

import torch

from sentitune.config import TrainConfig
from sentitune.model import encoder_layers

_LAYER = re.compile(r"\.layers?\.(\d+)\.")


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; with --layer-lr-decay D, layer i of L learns at
    lr * D ** (L + 1 - i) (the embeddings are i = 0, the head L + 1)."""
    layers = len(encoder_layers(model))
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = cfg.layer_lr_decay ** (layers + 1 - layer_depth(name, layers))
        no_decay = p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name
        groups.setdefault((scale, 0.0 if no_decay else cfg.weight_decay), []).append(p)
    params = [
        {"params": ps, "weight_decay": wd, "lr": cfg.learning_rate * scale}
        for (scale, wd), ps in groups.items()
    ]
    try:
        return torch.optim.AdamW(params, lr=cfg.learning_rate, fused=device.type in ("cpu", "cuda"))
    except (RuntimeError, TypeError):  # a device or torch build without the fused kernel
        return torch.optim.AdamW(params, lr=cfg.learning_rate, foreach=True)


def layer_depth(name: str, layers: int) -> int:
    """0 for the embeddings, i + 1 for encoder layer i, layers + 1 for the pooler and the head."""
    match = _LAYER.search(name)
    if match:
        return int(match.group(1)) + 1
    return 0 if "embeddings" in name else layers + 1
