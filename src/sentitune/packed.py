"""Inference over posts packed end to end: a BERT or RoBERTa classifier's dense layers run on the real
tokens only.

A padded batch computes every layer over rows x longest post; random posts (a server's requests) pad
40-60 % more than length-sorted ones, and rows and tokens rounded up for few kernel shapes pad more. Here
the posts of a pass are laid end to end as one [tokens, hidden] matrix for the embeddings, the linear
layers, the layer norms and the activation; only attention, a small share of the FLOPs at post lengths,
spreads them into a padded [rows, heads, longest, head size] layout and back. The weights are the
model's own modules (BERT, MiniLM, BERT-Tiny with a mean-pooled or [CLS] head; RoBERTa and XLM-R with
their own head), traced and frozen as `runtime.traced_for_inference` does, and kept only where the
packed model gives the eager model's probabilities on the same checks; any other model runs padded.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from sentitune.batching import TokenizedTexts, probabilities_by_passes

ROW_MULTIPLE = 4  # attention's rows and longest post are rounded up, for few kernel shapes
LENGTH_MULTIPLE = 8
MIN_TOKEN_STEP = 64  # the packed tokens are rounded up to a step of this, or a 16th of their power of two


def _families():
    """(classifier class, encoder class, positions counted from the pad id + 1) of each packable family."""
    from transformers.models.bert.modeling_bert import BertForSequenceClassification, BertModel
    from transformers.models.roberta.modeling_roberta import RobertaForSequenceClassification, RobertaModel
    from transformers.models.xlm_roberta.modeling_xlm_roberta import (
        XLMRobertaForSequenceClassification,
        XLMRobertaModel,
    )

    return (
        (BertForSequenceClassification, BertModel, False),
        (RobertaForSequenceClassification, RobertaModel, True),
        (XLMRobertaForSequenceClassification, XLMRobertaModel, True),
    )


def packable(model: torch.nn.Module) -> str | None:
    """Why `model` cannot run packed, or None when it can: a BERT or RoBERTa encoder with absolute positions
    and no decoder parts, under a mean-pooled head or the family's own first-token head."""
    from sentitune.model import MeanPooled

    inner = model.inner if isinstance(model, MeanPooled) else model
    if not any(type(inner) is head and type(inner.base_model) is encoder for head, encoder, _ in _families()):
        return f"{type(inner).__name__} is not a BERT or RoBERTa classifier"
    config = inner.config
    if getattr(config, "position_embedding_type", "absolute") != "absolute" or config.is_decoder:
        return "not a plain encoder (relative positions or a decoder)"
    if config.problem_type not in (None, "single_label_classification"):
        return f"problem type {config.problem_type}"
    if not isinstance(model, MeanPooled) and position_pad(model) is None and inner.base_model.pooler is None:
        return "a [CLS] head without its pooler"  # (RoBERTa's head has its own dense layer)
    return None


def position_pad(model: torch.nn.Module) -> int | None:
    """RoBERTa's pad id, from which its positions count (None: positions from 0, as BERT's)."""
    from sentitune.model import MeanPooled

    inner = model.inner if isinstance(model, MeanPooled) else model
    roberta = any(type(inner) is head and counted for head, _, counted in _families())
    return int(inner.base_model.embeddings.padding_idx) if roberta else None


class PackedBert(torch.nn.Module):
    """The forward pass over packed posts; its inputs are built by `packed_inputs`."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        from sentitune.model import MeanPooled

        self.mean = isinstance(model, MeanPooled)
        inner = model.inner if self.mean else model
        bert = inner.base_model
        self.embeddings = bert.embeddings
        self.layers = bert.encoder.layer
        self.first_token_head = position_pad(model) is not None  # RoBERTa's: dense, tanh, out_proj
        self.pooler = None if self.mean or self.first_token_head else bert.pooler
        self.classifier = inner.classifier
        self.heads = bert.config.num_attention_heads
        self.head_size = bert.config.hidden_size // self.heads

    def forward(
        self,
        ids: torch.Tensor,  # [T] the posts' token ids end to end (then filler up to T)
        positions: torch.Tensor,  # [T] each token's position in its post
        spread: torch.Tensor,  # [B * L] the packed row of each padded slot (T: padding)
        gather: torch.Tensor,  # [T] the padded slot of each packed row
        keys: torch.Tensor,  # [B, 1, 1, L] bool: the slots attention may read
        lengths: torch.Tensor,  # [B, 1] tokens per post, as the hidden states' dtype
        first: torch.Tensor,  # [B] the packed row of each post's first token
    ) -> torch.Tensor:
        rows, longest = keys.size(0), keys.size(3)
        emb = self.embeddings
        x = (
            emb.word_embeddings(ids)
            + emb.token_type_embeddings.weight[0]
            + emb.position_embeddings(positions)
        )
        x = emb.LayerNorm(x)
        for layer in self.layers:
            attention = layer.attention.self
            padded = [
                torch.cat([proj(x), x.new_zeros(1, x.size(1))])[spread]
                .view(rows, longest, self.heads, self.head_size)
                .transpose(1, 2)
                for proj in (attention.query, attention.key, attention.value)
            ]
            out = torch.nn.functional.scaled_dot_product_attention(
                padded[0], padded[1], padded[2], attn_mask=keys, scale=attention.scaling
            )
            out = out.transpose(1, 2).reshape(rows * longest, x.size(1))[gather]
            x = layer.attention.output(out, x)
            x = layer.output(layer.intermediate(x), x)
        if self.mean:
            hidden = torch.cat([x, x.new_zeros(1, x.size(1))])[spread].view(rows, longest, x.size(1))
            pooled = hidden.sum(dim=1) / lengths
        elif self.first_token_head:
            return self.classifier(x[first].unsqueeze(1))
        else:
            pooled = self.pooler.activation(self.pooler.dense(x[first]))
        return self.classifier(pooled)


def token_step(tokens: int) -> int:
    power = 1 << max(int(tokens) - 1, 1).bit_length()
    return max(MIN_TOKEN_STEP, power // 16)


def packed_inputs(
    tokens: TokenizedTexts, rows: np.ndarray, dtype: torch.dtype, pad: int | None = None
) -> tuple[torch.Tensor, ...]:
    """PackedBert's inputs for the posts at `rows` of `tokens`; `pad`: positions as RoBERTa counts them,
    from pad + 1 over the post's tokens that are not the pad id (which keep position pad)."""
    starts = tokens.offsets[rows]
    lengths = tokens.offsets[rows + 1] - starts
    count = int(lengths.sum())
    size = -(-count // token_step(count)) * token_step(count)
    batch = -(-len(rows) // ROW_MULTIPLE) * ROW_MULTIPLE
    longest = -(-int(lengths.max()) // LENGTH_MULTIPLE) * LENGTH_MULTIPLE
    post = np.repeat(np.arange(len(rows)), lengths)  # each real token's post
    begins = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # each post's first packed row
    position = np.arange(count) - begins[post]
    source = np.repeat(starts, lengths) + position  # each packed token's place in tokens.ids
    ids = np.full(size, tokens.pad_id, np.int64)
    ids[:count] = tokens.ids[source]
    positions = np.zeros(size, np.int64)
    positions[:count] = position
    if pad is not None:
        real = ids[:count] != pad
        counted = np.cumsum(real)
        before = np.concatenate([[0], counted])[begins][post]  # real tokens of earlier posts
        positions[:count] = np.where(real, pad + counted - before, pad)
        positions[count:] = pad
    slot = post * longest + position
    spread = np.full(batch * longest, size, np.int64)
    spread[slot] = np.arange(count)
    gather = np.zeros(size, np.int64)
    gather[:count] = slot
    keys = np.zeros((batch, longest), bool)
    keys.flat[slot] = True
    keys[len(rows) :, 0] = True  # filler rows read one (padding) slot: no row without keys
    counts = np.ones((batch, 1), np.float32)
    counts[: len(rows), 0] = lengths
    first = np.zeros(batch, np.int64)
    first[: len(rows)] = begins
    return (
        torch.from_numpy(ids),
        torch.from_numpy(positions),
        torch.from_numpy(spread),
        torch.from_numpy(gather),
        torch.from_numpy(keys).view(batch, 1, 1, longest),
        torch.from_numpy(counts).to(dtype),
        torch.from_numpy(first),
    )


class PackedClassifier(torch.nn.Module):
    """A frozen trace of `PackedBert`, scoring tokenised posts in length-sorted passes."""

    def __init__(self, graph: torch.jit.ScriptModule, dtype: torch.dtype, pad: int | None = None):
        super().__init__()
        self.graph, self.dtype, self.pad = graph, dtype, pad

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.graph(*inputs)

    def logits(self, tokens: TokenizedTexts, rows: np.ndarray) -> torch.Tensor:
        return self(*packed_inputs(tokens, rows, self.dtype, self.pad))[: len(rows)]

    def probabilities(self, tokens: TokenizedTexts, batch_size: int) -> np.ndarray:
        """Class probabilities of every post, in the input order."""
        return probabilities_by_passes(tokens, batch_size, lambda rows: self.logits(tokens, rows))


def packed_for_inference(
    model: torch.nn.Module, checks: list[TokenizedTexts], eager_probs, tolerance: float
) -> tuple[PackedClassifier | None, str]:
    """`model` (eval mode, on the CPU) packed, traced and frozen, if it gives `eager_probs(tokens)` on every
    one of `checks` within `tolerance` in every probability; else None. With the reason either way."""
    why_not = packable(model)
    if why_not:
        return None, f"padded: {why_not}"
    dtype = next(model.parameters()).dtype
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pad = position_pad(model)
            example = packed_inputs(checks[0], np.arange(len(checks[0])), dtype, pad)
            graph = torch.jit.freeze(torch.jit.trace(PackedBert(model).eval(), example, check_trace=False))
            packed = PackedClassifier(graph, dtype, pad)
            worst = 0.0
            for tokens in checks:
                got, expected = packed.probabilities(tokens, len(tokens)), eager_probs(tokens)
                differs = float(np.abs(got - expected).max()) if got.shape == expected.shape else np.inf
                if not differs <= tolerance:
                    return (
                        None,
                        f"padded: packed posts differed from the model by {differs:.2g} in a probability",
                    )
                worst = max(worst, differs)
    except Exception as exc:  # a model this cannot follow runs padded
        return None, f"padded: the model could not be packed ({type(exc).__name__}: {str(exc)[:120]})"
    return packed, f"packed posts, TorchScript trace, frozen (largest difference from eager {worst:.1g})"
