"""Why this label: the words of a post that drove its prediction, by occlusion (word removal).

A word's attribution is what deleting it from the post as written does to the predicted label's
probability: P(label | post) - P(label | post without the word). Positive: the word pushed towards the
label (removing it lowers the score); negative: away from it. The post and its one-word-shorter copies
are scored in one batched pass through the same path as a prediction (the run's normalisation,
tokenizer, weights and precision), so each attribution is exactly what removing that word does to the
score the user is shown, and every word can be checked by hand. Words past the run's max length in
tokens are not read by the model: they get 0 and no pass.

Why occlusion (docs/benchmarks/explanations.md, `benchmarks/faithfulness.py` on TweetEval validation
tweets and a MiniLM run): it agrees in sign with removing the word for every word whose removal moves
the score by more than 0.01 (it is that removal), where integrated gradients (Captum, 32 steps) agreed
for 82 % and gradient x input for 41 %, fewer than random attributions (50 %); its top 20 % of words
also carry the most of the score (ERASER comprehensiveness 0.29, against 0.28 and 0.05). Its cost is one
forward pass over n_words + 1 posts in one batch: 62 ms for a 30-token tweet on one core of a busy
2-core machine (a prediction 16 ms, gradient x input 29 ms, integrated gradients 327 ms), within the
150 ms that the server and the page allow on 2 cores.

The gradient methods stay available (`method=`), both over the PyTorch model in fp32 (bf16 gradients
are too coarse to rank words), attributing the log-odds of the label to each token's word embedding and
summing a word's tokens: `gradient x input` (one backward pass) and `integrated gradients` (Captum's
LayerIntegratedGradients from a [PAD] baseline; `pip install 'sentitune[explain]'`).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence

import numpy as np
import torch

from sentitune.batching import tokenize
from sentitune.errors import SentituneError, require_extra
from sentitune.normalize import AS_WRITTEN, Normalization
from sentitune.runtime import FP32, infer_probs

WORD = re.compile(r"\S+")
OCCLUSION = "occlusion"
GRADIENT_X_INPUT = "gradient x input"
INTEGRATED_GRADIENTS = "integrated gradients"
METHODS = (OCCLUSION, INTEGRATED_GRADIENTS, GRADIENT_X_INPUT)
DEFAULT_METHOD = OCCLUSION
IG_STEPS = 32  # Riemann steps of integrated gradients (Captum's Gauss-Legendre rule)


def explain(predictor, texts: list[str], method: str = DEFAULT_METHOD) -> list[dict]:
    """For each text: its label, its score, the method, and each word with its character span (code
    points of the text as written) and attribution, from a Predictor."""
    check_method(method)
    reader = Reader(predictor.classifier.tokenizer, predictor.classifier.normalization, predictor.max_length)
    if method == OCCLUSION:
        return occlusion(predictor.probabilities, reader, texts, predictor.labels)
    if predictor.model is None:
        raise SentituneError(
            f"the {method} explanation needs the PyTorch model: use --backend torch (not "
            f"{predictor.backend}), or occlusion, which explains any backend; an ONNX graph has no gradients"
        )
    return gradients(
        predictor.model, reader, texts, predictor.device, predictor.labels, predictor.to_ours, method
    )


def explain_with(
    model,
    tokenizer,
    texts: list[str],
    *,
    max_length: int,
    device,
    labels,
    to_ours=None,
    normalization: Normalization = AS_WRITTEN,
    method: str = DEFAULT_METHOD,
) -> list[dict]:
    """`explain` for a model and its tokenizer (in fp32); `to_ours` sums a model's classes onto `labels`;
    the posts are normalised as the model reads them, and the words reported are the posts as written."""
    check_method(method)
    reader = Reader(tokenizer, normalization, max_length)
    if method != OCCLUSION:
        return gradients(model, reader, texts, device, labels, to_ours, method)

    def probabilities(posts: Sequence[str]) -> np.ndarray:
        tokens = tokenize(normalization.reading(tokenizer), posts, max_length)
        probs = infer_probs(model, tokens, 64, device, FP32)
        return probs if to_ours is None else probs @ to_ours

    return occlusion(probabilities, reader, texts, labels)


def check_method(method: str) -> None:
    if method not in METHODS:
        raise SentituneError(f"unknown explanation method {method!r}; choose one of {', '.join(METHODS)}")


class Reader:
    """How the model reads a post: normalised, tokenised and cut to max_length tokens; where each token
    came from in the post as written."""

    def __init__(self, tokenizer, normalization: Normalization, max_length: int):
        self.tokenizer, self.normalization, self.max_length = tokenizer, normalization, max_length

    def encode(self, text: str) -> tuple[dict, list[int | None]]:
        """The model's inputs for `text` (one row) and, per token, the code point of `text` where it
        starts (None for [CLS], [SEP] and the like, which hold no characters). The tokenizer that reads
        posts as written (the rules in its normalizer, as a prediction tokenises) gives offsets into the
        post as written; a token a rule wrote (`@user` for `@united`) starts inside what it replaced."""
        encoded = self.normalization.reading(self.tokenizer)(
            text,
            truncation=True,
            max_length=self.max_length,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        offsets = encoded.pop("offset_mapping")[0].tolist()
        return encoded, [start if end > start else None for start, end in offsets]

    def words_read(self, text: str, words: list[dict]) -> int:
        """How many of the post's words (in order) the model reads: the others lie past max_length."""
        _, starts = self.encode(text)
        last = max((s for s in starts if s is not None), default=-1)
        return bisect.bisect_right([w["start"] for w in words], last)


def words_of(text: str) -> list[dict]:
    return [
        {"word": m.group(), "start": m.start(), "end": m.end(), "attribution": 0.0}
        for m in WORD.finditer(text)
    ]


def without(text: str, word: dict) -> str:
    return text[: word["start"]] + text[word["end"] :]


def occlusion(
    probabilities: Callable[[Sequence[str]], np.ndarray], reader: Reader, texts: list[str], labels
) -> list[dict]:
    """Each word's attribution: the label's probability minus its probability with the word removed;
    every post of the request and all their one-word-shorter copies in one call of `probabilities`."""
    texts = [str(t) for t in texts]
    posts, plans = [], []
    for text in texts:
        words = words_of(text)
        read = reader.words_read(text, words)
        plans.append((len(posts), words, read))
        posts += [text, *(without(text, w) for w in words[:read])]
    probs = probabilities(posts) if posts else np.zeros((0, len(labels)))
    answers = []
    for first, words, read in plans:
        label = int(probs[first].argmax())
        score = float(probs[first, label])
        for i, w in enumerate(words[:read]):
            w["attribution"] = rounded(score - float(probs[first + 1 + i, label]))
        answers.append({"label": labels[label], "score": score, "method": OCCLUSION, "words": words})
    return answers


def rounded(value: float) -> float:
    return float(f"{value:.6g}")


# ----------------------------------------------------------------------------- the gradient methods


def gradients(model, reader: Reader, texts: list[str], device, labels, to_ours, method: str) -> list[dict]:
    was_training = model.training
    model.eval()
    try:
        return [gradient_one(model, reader, str(text), device, labels, to_ours, method) for text in texts]
    finally:
        model.train(was_training)


def gradient_one(model, reader: Reader, text: str, device, labels, to_ours, method: str) -> dict:
    encoded, starts = reader.encode(text)
    inputs = {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        logits = model(**inputs).logits.float()[0]
    # which of the model's classes make each of ours (a model from elsewhere may have several)
    members = torch.as_tensor(to_ours if to_ours is not None else np.eye(len(logits)), device=logits.device)
    members = members.bool()
    probs = torch.softmax(logits, dim=-1) @ members.to(logits.dtype)
    label = int(probs.argmax())

    def log_odds(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """log P / (1 - P) of the label, per row: unlike log P it does not flatten as P nears 1."""
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
        inside = members[:, label]
        return torch.logsumexp(logits[:, inside], -1) - torch.logsumexp(logits[:, ~inside], -1)

    if method == GRADIENT_X_INPUT:
        per_token = gradient_x_input(model, inputs, log_odds)
    else:
        per_token = integrated_gradients(model, inputs, starts, log_odds, reader.tokenizer)
    words = words_of(text)
    word_starts = [w["start"] for w in words]
    for start, value in zip(starts, per_token, strict=True):
        if start is not None:  # the word the token falls in
            words[max(0, bisect.bisect_right(word_starts, start) - 1)]["attribution"] += value
    for w in words:
        w["attribution"] = rounded(w["attribution"])
    return {"label": labels[label], "score": float(probs[label]), "method": method, "words": words}


def gradient_x_input(model, inputs: dict, log_odds) -> list[float]:
    """Per token: the gradient of the log-odds with respect to its word embedding, dotted with it."""
    captured = {}

    def keep(module, args, output):  # the word embeddings as a leaf the gradient is taken against
        captured["embedded"] = output.detach().requires_grad_(True)
        return captured["embedded"]

    handle = model.base_model.get_input_embeddings().register_forward_hook(keep)
    try:
        with torch.enable_grad():
            value = log_odds(inputs["input_ids"], inputs["attention_mask"]).sum()
            (grad,) = torch.autograd.grad(value, captured["embedded"])
    finally:
        handle.remove()
    return (grad * captured["embedded"]).sum(-1)[0].tolist()


def integrated_gradients(model, inputs: dict, starts, log_odds, tokenizer) -> list[float]:
    """Per token: Captum's integrated gradients of the log-odds at the word-embedding layer, from the
    same post with every token that holds characters replaced by [PAD] ([CLS] and [SEP] kept)."""
    require_extra("captum", "explain", "the integrated gradients explanation")
    from captum.attr import LayerIntegratedGradients

    ids = inputs["input_ids"]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    holds_text = torch.tensor([[s is not None for s in starts]], device=ids.device)
    baseline = torch.where(holds_text, torch.full_like(ids, pad), ids)
    layer = LayerIntegratedGradients(log_odds, model.base_model.get_input_embeddings())
    with torch.enable_grad():
        attributions = layer.attribute(
            ids,
            baselines=baseline,
            additional_forward_args=(inputs["attention_mask"],),
            n_steps=IG_STEPS,
            internal_batch_size=IG_STEPS,
        )
    return attributions.sum(-1)[0].detach().float().cpu().tolist()
