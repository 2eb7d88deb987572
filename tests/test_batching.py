"""Tokenise once, length buckets and dynamic padding (sentitune.batching), on real posts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from sentitune.batching import TokenizedTexts, length_bucketed_batches, passes_within_budget, tokenize


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


ODD_POSTS = ["", "   ", "😂😂😂 🔥", "مرحبا كيف حالك اليوم؟", "שלום עולם", "alpha " + "word " * 3000 + "omega", "x" * 20000,
             "[CLS] [SEP] [PAD] [UNK]:)", "\n\n", "tab\tinside", "e\u0301 combining", "\u200b zero width"]  # fmt: skip


@pytest.mark.parametrize("side", ["right", "left"])
def test_tokenize_gives_the_ids_of_the_tokenizers_own_call_on_any_post(tokenizer, corpus, side):
    """tokenize reads the Rust tokenizer directly; transformers' own call (truncation=True, max_length)
    is the reference, on real posts, empty, emoji, right-to-left scripts, 15,000-word posts, special
    tokens' text, and both truncation sides; the tokenizer's own settings are left as they were."""
    with Path(__file__).with_name("parity_posts.jsonl").open(encoding="utf-8", newline="\n") as f:
        parity = [json.loads(line)["text"] for line in f]  # the parity check's posts: every kind of odd
    texts = [*corpus["text"], *ODD_POSTS, *parity]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer.name_or_path, truncation_side=side)
    for max_length in (2, 8, 64, 512):
        before = tokenizer.backend_tokenizer.truncation  # transformers' own call below changes it
        tokens = tokenize(tokenizer, texts, max_length=max_length)
        assert tokenizer.backend_tokenizer.truncation == before
        expected = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        got = [tokens.ids[tokens.offsets[i] : tokens.offsets[i + 1]].tolist() for i in range(len(texts))]
        assert got == expected
    long = expected[texts.index("alpha " + "word " * 3000 + "omega")]
    kept = long[-2] if side == "left" else long[1]  # [CLS] ... [SEP]: the end of the post or its start
    assert kept == tokenizer.convert_tokens_to_ids("omega" if side == "left" else "alpha")
    assert tokenize(tokenizer, [], max_length=8).ids.size == 0


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


@pytest.mark.parametrize("max_tokens, max_rows", [(256, 16), (1024, 64), (40, 64), (1, 4)])
def test_passes_within_budget_cover_every_post_once_within_the_budget(tokens, max_tokens, max_rows):
    lengths = tokens.lengths
    passes = passes_within_budget(lengths, max_tokens, max_rows)
    assert sorted(np.concatenate(passes).tolist()) == list(range(len(tokens)))
    for rows in passes:
        assert 1 <= len(rows) <= max_rows
        assert len(rows) == 1 or len(rows) * lengths[rows].max() <= max_tokens
    # sorted by length: each pass is no longer than the next one's shortest post
    assert all(lengths[a].max() <= lengths[b].min() for a, b in zip(passes, passes[1:], strict=False))


def test_passes_within_budget_fill_each_pass_and_run_long_posts_alone():
    lengths = np.array([10, 3, 10, 3, 10, 10, 50, 200, 3, 3, 3, 3, 3])
    # max_rows cuts the seven 3-token posts into 4 and 3; the budget (4 x 10 > 30) the four 10-token ones
    passes = passes_within_budget(lengths, max_tokens=30, max_rows=4)
    assert [p.tolist() for p in passes] == [[1, 3, 8, 9], [10, 11, 12], [0, 2, 4], [5], [6], [7]]
    assert passes_within_budget(np.zeros(0, np.int64), 30, 3) == []


def test_concat_keeps_every_post_and_subset_takes_them_back(tokens):
    parts = [tokens.subset(np.arange(0, 5)), tokens.subset(np.array([42])), tokens.subset(np.arange(7, 30))]
    joined = TokenizedTexts.concat(parts)
    rows = np.concatenate([np.arange(0, 5), [42], np.arange(7, 30)])
    assert joined.lengths.tolist() == tokens.lengths[rows].tolist()
    for i, row in enumerate(rows):
        assert (
            joined.ids[joined.offsets[i] : joined.offsets[i + 1]].tolist()
            == tokens.ids[tokens.offsets[row] : tokens.offsets[row + 1]].tolist()
        )
    assert joined.pad_id == tokens.pad_id
