"""Tokenise once, length buckets and dynamic padding (sentitune.batching), on real posts."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

from sentitune.batching import length_bucketed_batches, tokenize


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def tokens(tokenizer, corpus):
    return tokenize(tokenizer, corpus["text"].tolist(), max_length=64)


def test_tokenize_matches_the_tokenizer_and_truncates(tokenizer, corpus):
    texts = corpus["text"].tolist()
    tokens = tokenize(tokenizer, texts, max_length=24)
    expected = tokenizer(texts, truncation=True, max_length=24)["input_ids"]
    assert len(tokens) == len(texts)
    assert tokens.lengths.tolist() == [len(e) for e in expected]
    assert tokens.lengths.max() == 24  # real posts are longer than 24 tokens
    for i in (0, int(tokens.lengths.argmax()), len(texts) - 1):
        assert tokens.ids[tokens.offsets[i] : tokens.offsets[i + 1]].tolist() == expected[i]
    longest = tokens.ids[tokens.offsets[int(tokens.lengths.argmax())] :][:24]
    assert longest[0] == tokenizer.cls_token_id and longest[-1] == tokenizer.sep_token_id


def test_batch_pads_to_the_longest_row_of_the_batch(tokens, tokenizer):
    rows = np.array([5, 17, 3, 42])
    ids, mask = tokens.batch(rows)
    lengths = tokens.lengths[rows]
    assert ids.shape == mask.shape == (4, lengths.max())
    assert mask.sum(dim=1).tolist() == lengths.tolist()
    for r, (row, n) in enumerate(zip(rows, lengths, strict=True)):
        assert ids[r, :n].tolist() == tokens.ids[tokens.offsets[row] : tokens.offsets[row] + n].tolist()
        assert (ids[r, n:] == tokenizer.pad_token_id).all()
        assert mask[r, :n].eq(1).all() and mask[r, n:].eq(0).all()


def test_batch_of_short_rows_is_narrow(tokens):
    short = np.argsort(tokens.lengths, kind="stable")[:8]
    ids, _ = tokens.batch(short)
    assert ids.shape[1] == tokens.lengths[short].max() < tokens.lengths.max()


def test_bucketed_batches_cover_every_example_once_and_are_seeded(tokens):
    batches = length_bucketed_batches(tokens.lengths, 16, np.random.default_rng(3), pool_batches=4)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(len(tokens)))
    assert all(1 <= len(b) <= 16 for b in batches)

    again = length_bucketed_batches(tokens.lengths, 16, np.random.default_rng(3), pool_batches=4)
    other = length_bucketed_batches(tokens.lengths, 16, np.random.default_rng(4), pool_batches=4)
    assert [b.tolist() for b in again] == [b.tolist() for b in batches]
    assert [b.tolist() for b in other] != [b.tolist() for b in batches]


def _padding(lengths: np.ndarray, batches) -> int:
    return int(sum(lengths[b].max() * len(b) - lengths[b].sum() for b in batches))


def test_bucketed_batches_pad_much_less_than_random_batches(tokens):
    lengths = tokens.lengths
    rng = np.random.default_rng(0)
    bucketed = length_bucketed_batches(lengths, 16, rng)
    order = rng.permutation(len(lengths))
    random = [order[i : i + 16] for i in range(0, len(order), 16)]
    assert _padding(lengths, bucketed) < 0.25 * _padding(lengths, random)
