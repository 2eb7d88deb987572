"""Tokenise once, group examples of similar length, pad each batch only to its own longest post.

Token ids live in one flat int32 array with offsets (no per-example Python objects), so building a
batch is a handful of vectorised numpy operations and the step loop does no per-example work. The
server's forward passes are cut by a budget of tokens (`passes_within_budget`), as Hugging Face's
text-embeddings-inference batches by `--max-batch-tokens`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

TOKENIZE_CHUNK = 4096


@dataclass
class TokenizedTexts:
    """Token ids of many texts, concatenated: text i is ids[offsets[i]:offsets[i + 1]]."""

    ids: np.ndarray  # int32, all texts back to back
    offsets: np.ndarray  # int64, len(texts) + 1
    pad_id: int

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def tokens(self) -> int:
        return int(self.offsets[-1])

    @classmethod
    def concat(cls, parts: Sequence[TokenizedTexts]) -> TokenizedTexts:
        """The texts of `parts`, one after another (the parts share one tokenizer, so one pad id)."""
        lengths = np.concatenate([part.lengths for part in parts])
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(np.concatenate([part.ids for part in parts]), offsets, parts[0].pad_id)

    def subset(self, rows: np.ndarray) -> TokenizedTexts:
        """The texts at `rows`, in that order."""
        lengths = self.lengths[rows]
        offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        parts = [self.ids[self.offsets[r] : self.offsets[r + 1]] for r in rows]
        return TokenizedTexts(np.concatenate(parts) if parts else self.ids[:0], offsets, self.pad_id)

    def batch(self, rows: np.ndarray, multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) for `rows`, padded to the longest of them (rounded up to `multiple`)."""
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        width = -(-int(lengths.max()) // multiple) * multiple
        positions = np.arange(width)
        mask = positions[None, :] < lengths[:, None]
        gather = np.minimum(starts[:, None] + positions[None, :], len(self.ids) - 1)
        ids = np.where(mask, self.ids[gather], self.pad_id)
        return torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> TokenizedTexts:
    """Tokenise with the fast tokenizer in chunks (special tokens added, truncated, unpadded): the ids its
    own call with `truncation=True, max_length=max_length` gives, read from its Rust tokenizer directly
    (`cutting`), without the offsets and Python objects that call builds for every post."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("sentitune needs a fast (Rust) tokenizer; the model folder has only a slow one")
    cut = cutting(tokenizer, max_length)
    encode = getattr(cut, "encode_batch_fast", None) or cut.encode_batch  # tokenizers < 0.21: with offsets
    parts, lengths = [], []
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        for encoding in encode(list(texts[start : start + TOKENIZE_CHUNK]), add_special_tokens=True):
            row = np.asarray(encoding.ids, dtype=np.int32)
            parts.append(row)
            lengths.append(len(row))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    return TokenizedTexts(ids, offsets, int(tokenizer.pad_token_id or 0))


_CUTTERS: dict[tuple[int, int], tuple[object, object]] = {}
_CUTTERS_KEPT = 16


def cutting(tokenizer, max_length: int):
    """A copy of `tokenizer`'s Rust tokenizer set as transformers sets it for a call with `truncation=True,
    max_length=max_length` and no padding (longest-first, no stride, the tokenizer's truncation side): the
    tokenizer itself is never changed, so threads tokenising at once never see another's settings. Kept per
    tokenizer and length (the source held too, so its id cannot be reused while kept)."""
    source = tokenizer.backend_tokenizer
    key = (id(source), max_length)
    found = _CUTTERS.get(key)
    if found is None or found[0] is not source:
        from tokenizers import Tokenizer

        cut = Tokenizer.from_str(source.to_str())
        side = getattr(tokenizer, "truncation_side", "right")
        cut.enable_truncation(max_length, stride=0, strategy="longest_first", direction=side)
        cut.no_padding()
        while len(_CUTTERS) >= _CUTTERS_KEPT:
            _CUTTERS.pop(next(iter(_CUTTERS)))
        found = _CUTTERS[key] = (source, cut)
    return found[1]


def length_bucketed_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool_batches: int = 50
) -> list[np.ndarray]:
    """Shuffled batches of similar-length examples.

    Shuffle all examples, cut the order into pools of `pool_batches` batches, sort each pool by
    length and cut it into batches, then shuffle the batches. Randomness stays (which examples meet
    is random), padding nearly vanishes (neighbours in a sorted pool have similar lengths).
    """
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Batches for inference: sorted by length, so padding is minimal; callers restore the order."""
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def probabilities_by_passes(tokens: TokenizedTexts, batch_size: int, logits_of_rows) -> np.ndarray:
    """Softmax of `logits_of_rows(rows)` (a tensor or an array, a row per post of `rows`) over
    length-sorted passes of `batch_size` posts, in the input order."""
    out = None
    for rows in sorted_batches(tokens.lengths, batch_size):
        logits = torch.as_tensor(logits_of_rows(rows))[: len(rows)]
        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        if out is None:
            out = np.empty((len(tokens), probs.shape[1]), np.float32)
        out[rows] = probs
    return out if out is not None else np.zeros((0, 0), np.float32)


def passes_within_budget(
    lengths: np.ndarray, max_tokens: int, max_rows: int, padded: bool = True
) -> list[np.ndarray]:
    """Forward passes over every text, sorted by length: each holds at most `max_rows` texts and at most
    `max_tokens` tokens once padded to its longest text (rows x longest), or of the texts' own (`padded`
    False: a model that runs them packed, sentitune/packed.py); a text longer than `max_tokens` on its own
    is a pass of its own."""
    order = np.argsort(lengths, kind="stable")
    passes, start, own = [], 0, 0
    for end in range(1, len(order) + 1):
        rows, length = end - start, int(lengths[order[end - 1]])
        own += length
        if rows > max_rows or (rows > 1 and (rows * length if padded else own) > max_tokens):
            passes.append(order[start : end - 1])
            start, own = end - 1, length
    if start < len(order):
        passes.append(order[start:])
    return passes
