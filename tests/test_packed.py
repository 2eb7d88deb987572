"""Packed inference (sentitune/packed.py): a BERT classifier on a CPU scores posts laid end to end, with
the eager padded model's probabilities, or is refused with the reason and runs padded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import train_tiny

from sentitune.batching import passes_within_budget
from sentitune.packed import PackedBert, PackedClassifier, packable, packed_for_inference, packed_inputs
from sentitune.runtime import FP32, check_posts, infer_probs
from sentitune.scoring import Predictor

POSTS = ["I love this!", "worst service ever", "it is a phone", "meh.", "Great game tonight #win"]
ODD = [
    "",
    "   ",
    "😀😀 so good",
    "مرحبا بالعالم",
    "שלום עולם",
    "word " * 3000,
    "[UNK] [SEP] [CLS] [PAD]",
    "ok",
]


@pytest.fixture(scope="module")
def predictor(trained_run):
    return Predictor(str(trained_run), precision="fp32")


@pytest.fixture(scope="module")
def mean_run(tmp_path_factory, tiny_model, prepared):
    return train_tiny(tmp_path_factory.mktemp("packed") / "mean", tiny_model, prepared, pooling="mean")


@pytest.mark.precision
@pytest.mark.parametrize("precision", ["fp32", "auto"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_packed_posts_score_as_the_padded_model_whatever_the_passes(
    trained_run, mean_run, corpus, pooling, precision
):
    """Long, empty, emoji, right-to-left and special tokens' posts, in passes of every size and order."""
    predictor = Predictor(str(mean_run if pooling == "mean" else trained_run), precision=precision)
    assert isinstance(predictor.scorer, PackedClassifier), predictor.scorer_reason
    texts = [*corpus["text"].tolist()[:120], *POSTS, *ODD]
    tokens = predictor.tokens_of(texts)
    eager = infer_probs(predictor.runner, tokens, 16, predictor.device, predictor.precision)
    np.testing.assert_allclose(predictor.probabilities_of(tokens), eager, atol=2e-3)
    rng = np.random.default_rng(0)
    for size in (1, 3, 5, 17, 64):  # random passes, as a server's requests come
        rows = rng.choice(len(texts), size=size, replace=False)
        got = torch.softmax(predictor.scorer.logits(tokens, rows).float(), -1).numpy()
        np.testing.assert_allclose(got, eager[rows], atol=2e-3)
    one_by_one = np.concatenate([predictor.probabilities([t]) for t in ODD])
    np.testing.assert_allclose(one_by_one, eager[-len(ODD) :], atol=2e-3)


def test_packed_inputs_lay_the_posts_end_to_end(predictor):
    tokens = predictor.tokens_of(["a b c", "good", "a much longer post than the others here"])
    rows = np.array([2, 0])
    ids, positions, spread, gather, keys, lengths, first = packed_inputs(tokens, rows, torch.float32)
    n2, n0 = tokens.lengths[2], tokens.lengths[0]
    assert len(ids) % 64 == 0 and len(ids) >= n2 + n0  # filler up to a step of 64
    assert ids[: n2 + n0].tolist() == [*tokens.ids[tokens.offsets[2] : tokens.offsets[3]], *tokens.ids[:n0]]
    assert positions[: n2 + n0].tolist() == [*range(n2), *range(n0)]
    assert keys.shape[0] == 4 and keys.shape[3] % 8 == 0  # rows in fours, longest post in eights
    assert (
        keys[0, 0, 0].sum() == n2 and keys[1, 0, 0].sum() == n0 and keys[2:, 0, 0].sum(-1).tolist() == [1, 1]
    )
    assert lengths[:2, 0].tolist() == [n2, n0] and first[:2].tolist() == [0, n2]
    assert (gather[: n2 + n0] < keys.shape[0] * keys.shape[3]).all() and (spread == len(ids)).sum() > 0
    assert (spread[gather[: n2 + n0]] == torch.arange(n2 + n0)).all()  # each token back where it came from


def test_a_model_packing_cannot_follow_runs_padded_and_says_why(predictor, monkeypatch):
    """Another architecture, and a packed model whose probabilities differ from the model's: refused,
    with the reason; the Predictor then runs the padded trace and its reason names both."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    distil = DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=30522, dim=32, n_layers=1, n_heads=2, hidden_dim=64, num_labels=3)
    ).eval()
    assert packable(distil) == "DistilBertForSequenceClassification is not a BERT or RoBERTa classifier"
    checks = check_posts(lambda t: predictor.classifier.encode(t, predictor.max_length), predictor.max_length)
    eager = lambda tokens: infer_probs(predictor.runner, tokens, 8, predictor.device, FP32)  # noqa: E731
    packed, reason = packed_for_inference(distil, checks, eager, 2e-3)
    assert (
        packed is None
        and reason == "padded: DistilBertForSequenceClassification is not a BERT or RoBERTa classifier"
    )

    forward = PackedBert.forward
    monkeypatch.setattr(PackedBert, "forward", lambda self, *a: forward(self, *a).flip(-1))
    packed, reason = packed_for_inference(predictor.runner, checks, eager, 2e-3)
    assert packed is None and reason.startswith("padded: packed posts differed from the model by ")
    fallback = Predictor(str(predictor.classifier.source), precision="fp32")
    assert not isinstance(fallback.scorer, PackedClassifier)
    assert fallback.scorer_reason.startswith("TorchScript trace, frozen")
    assert "; padded: packed posts differed from the model by " in fallback.scorer_reason
    np.testing.assert_allclose(fallback.probabilities(POSTS), predictor.probabilities(POSTS), atol=1e-5)


def test_a_packed_servers_budget_counts_the_posts_own_tokens():
    """Padded, three short posts and a long one cost 4 x 30 tokens; packed, 3 x 3 + 30."""
    lengths = np.array([30, 3, 3, 3])
    assert [p.tolist() for p in passes_within_budget(lengths, 40, 8)] == [[1, 2, 3], [0]]
    assert [p.tolist() for p in passes_within_budget(lengths, 40, 8, padded=False)] == [[1, 2, 3, 0]]
    lengths = np.array([10, 3, 10, 3, 10, 10, 50, 200, 3, 3, 3, 3, 3])
    passes = passes_within_budget(lengths, 25, 8, padded=False)
    assert [p.tolist() for p in passes] == [[1, 3, 8, 9, 10, 11, 12], [0, 2], [4, 5], [6], [7]]
    assert all(len(rows) == 1 or lengths[rows].sum() <= 25 for rows in passes)


@pytest.mark.precision
@pytest.mark.parametrize("dtype, spread", [(torch.float32, 0.5), (torch.bfloat16, 0.02)])
def test_a_roberta_classifier_packs_with_its_own_positions_and_head(predictor, corpus, dtype, spread):
    """RoBERTa counts positions from its pad id + 1 and skips the pad token wherever it stands; its head
    reads the first token through dense, tanh and out_proj. A pad token's text inside a post is checked.
    In fp32 the weights are large enough that a token's position moves its probabilities (counted as BERT
    counts them, the check refuses the packed model by 0.59); bf16 rounding at that size is as large, so
    bf16 runs at the usual initialisation."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        pad_token_id=0, max_position_embeddings=600, num_labels=3, initializer_range=spread,
    )  # fmt: skip
    roberta = RobertaForSequenceClassification(config).eval().to(dtype)
    encode = lambda t: predictor.classifier.encode(t, predictor.max_length)  # noqa: E731
    precision = FP32 if dtype == torch.float32 else predictor.precision
    eager = lambda tokens: infer_probs(roberta, tokens, 8, predictor.device, precision)  # noqa: E731
    packed, reason = packed_for_inference(roberta, check_posts(encode, predictor.max_length), eager, 2e-3)
    assert packed is not None, reason
    assert packed.pad == 0 and reason.startswith("packed posts, TorchScript trace, frozen")
    texts = [*corpus["text"].tolist()[:60], *ODD, "[PAD] first", "two [PAD] [PAD] inside", "last [PAD]"]
    tokens = encode(texts)
    assert (tokens.ids == 0).sum() >= 4  # the pad token's text is the pad id
    np.testing.assert_allclose(packed.probabilities(tokens, 16), eager(tokens), atol=2e-3)
