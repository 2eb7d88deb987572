"""Dropout with cheaper masks (sentitune.dropout): the same Bernoulli keep-masks and scaling as torch's
dropout, drawn four elements per 64-bit random integer; swapped into a model on the CPU by train."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import train_tiny
from safetensors.torch import load_file

from sentitune.dropout import FastDropout, fast_dropout, use_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_the_mask_keeps_each_element_with_probability_1_minus_p_and_scales_the_rest(p):
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = fast_dropout(x, p)
    kept = y != 0
    n = x.numel()
    assert abs(kept.float().mean().item() - (1 - p)) < 4 * np.sqrt(p * (1 - p) / n)  # 4 sigma
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    # neighbouring elements (slices of one draw) are not correlated
    a, b = kept[0::4].float(), kept[1::4].float()
    assert abs(np.corrcoef(a.numpy(), b.numpy())[0, 1]) < 0.01


def test_the_gradient_flows_through_the_kept_elements_only():
    torch.manual_seed(1)
    x = torch.randn(64, 32, requires_grad=True)
    y = fast_dropout(x, 0.2)
    y.sum().backward()
    kept = (y != 0).float()
    assert torch.allclose(x.grad, kept / 0.8)


def test_a_swapped_model_drops_in_training_only_and_saves_the_same_weights(tiny_model):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3).eval()
    ids = torch.randint(1000, 2000, (4, 12))
    reference = model(input_ids=ids).logits
    before = set(model.state_dict())
    ps = sorted(m.p for m in model.modules() if type(m) is torch.nn.Dropout)
    assert use_fast_dropout(model) == len(ps) > 0
    assert sorted(m.p for m in model.modules() if isinstance(m, FastDropout)) == ps
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    assert set(model.state_dict()) == before
    assert torch.equal(model(input_ids=ids).logits, reference)  # swapped in eval mode: still no dropout
    model.train()
    assert not torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)


def test_train_uses_it_on_the_cpu_reproducibly_and_torch_masks_on_request(tmp_path, tiny_model, prepared):
    def weights(name, **settings):
        run = train_tiny(tmp_path / name, tiny_model, prepared, precision="fp32", **settings)
        assert json.loads((run / "run_config.json").read_text())["train"]["dropout_masks"] == settings.get(
            "dropout_masks", "fast"
        )
        return load_file(run / "model.safetensors")

    first, again = weights("a"), weights("b")
    assert all(torch.equal(first[k], again[k]) for k in first)  # same seed, same masks, same weights
    other = weights("c", dropout_masks="torch")
    assert any(not torch.equal(first[k], other[k]) for k in first)
