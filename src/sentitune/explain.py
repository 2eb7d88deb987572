"""Why this label: the words of a post that drove its prediction, by gradient × input.

For each post, the log-odds of the predicted class (log P / (1 - P), which keeps its gradient where P
nears 1 and log P's vanishes) is differentiated with respect to the word embeddings of its tokens; a token's attribution is the dot product of that gradient with its embedding
(gradient × input), and a word's is the sum over its tokens (the tokenizer's offsets say which). Positive
attributions pushed towards the predicted label, negative ones away from it.

Why gradient × input and not integrated gradients (Captum): it costs one forward and one backward pass
per post, so the server can answer `"explain": true` in the time of a prediction, and it needs no other
dependency; integrated gradients averages the same product over 20-50 scaled copies of the input,
20-50 times the cost, for attributions that sum exactly to the score difference from a baseline. For the
question a user asks of one post (which words mattered), the ranking of words is what is read, and on
a fine-tuned classifier the two rank the decisive words alike (the test checks that a word the model was
trained to rely on comes out on top).

Only the PyTorch backend can explain: an ONNX graph has no gradients.
"""

from __future__ import annotations

import bisect
import re

import numpy as np
import torch

from sentitune.errors import SentituneError
from sentitune.normalize import AS_WRITTEN, Normalization

WORD = re.compile(r"\S+")


def explain(predictor, texts: list[str]) -> list[dict]:
    """For each text: its label, and each word with its character span and attribution, from a
    Predictor (its PyTorch model; an ONNX backend cannot explain)."""
    if predictor.model is None:
        raise SentituneError(
            f"--explain needs the PyTorch model: use --backend torch (not {predictor.backend}); an ONNX "
            "graph has no gradients"
        )
    return explain_with(
        predictor.model,
        predictor.classifier.tokenizer,
        texts,
        max_length=predictor.max_length,
        device=predictor.device,
        labels=predictor.labels,
        to_ours=predictor.to_ours,
        normalization=predictor.classifier.normalization,
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
) -> list[dict]:
    """`explain` for a model and its tokenizer; `to_ours` sums a model's classes onto `labels`; the
    posts are normalised as the model reads them, and the words reported are the posts as written."""
    embeddings = model.base_model.get_input_embeddings()
    captured: dict[str, torch.Tensor] = {}

    def keep(module, inputs, output):
        output = output.detach().requires_grad_(True)
        captured["embeddings"] = output
        return output

    was_training = model.training
    model.eval()
    handle = embeddings.register_forward_hook(keep)
    try:
        return [
            explain_one(
                model, tokenizer, str(text), max_length, device, labels, to_ours, captured, normalization
            )
            for text in texts
        ]
    finally:
        handle.remove()
        model.train(was_training)


def explain_one(
    model, tokenizer, text: str, max_length, device, labels, to_ours, captured: dict, normalization
) -> dict:
    read, spans = normalization.apply_with_spans(text)  # spans: where each character of `read` came from
    encoded = tokenizer(
        read,
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_tensors="pt",
    )
    offsets = encoded.pop("offset_mapping")[0].tolist()
    inputs = {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
    with torch.enable_grad():
        logits = model(**inputs).logits.float()[0]  # fp32: bf16 gradients are too coarse to rank words
        # which of the model's classes make each of ours (a model from elsewhere may have several)
        members = torch.as_tensor(
            to_ours if to_ours is not None else np.eye(len(logits)), device=logits.device
        ).bool()
        probs = torch.softmax(logits, dim=-1) @ members.to(logits.dtype)
        label = int(probs.argmax())
        # the log-odds of the label, log P / (1 - P): unlike log P it does not flatten as P nears 1
        log_odds = torch.logsumexp(logits[members[:, label]], 0) - torch.logsumexp(
            logits[~members[:, label]], 0
        )
        log_odds.backward()
    emb = captured["embeddings"]
    per_token = (emb.grad * emb).sum(dim=-1)[0].detach().cpu().tolist()
    words = [
        {"word": m.group(), "start": m.start(), "end": m.end(), "attribution": 0.0}
        for m in WORD.finditer(text)
    ]
    starts = [w["start"] for w in words]
    for (start, end), value in zip(offsets, per_token, strict=True):
        if end <= start:  # [CLS], [SEP]: no characters of the text
            continue
        i = max(0, bisect.bisect_right(starts, spans[start][0]) - 1)  # the word the token falls in
        words[i]["attribution"] += value
    for w in words:
        w["attribution"] = float(f"{w['attribution']:.6g}")
    return {
        "label": labels[label],
        "score": float(probs[label].detach()),
        "method": "gradient x input",
        "words": words,
    }
