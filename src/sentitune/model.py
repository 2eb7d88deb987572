"""Load or build the classifier, cut or freeze its layers, and read a run folder back.

The classifier is whatever `AutoModelForSequenceClassification` builds for the encoder (for BERT:
the pooled [CLS] output -> dropout -> linear, the walkthrough's head), so a run folder is a standard
Hugging Face model folder that any transformers user can load. With `--pooling mean` the same dropout
and linear layer read the mean of the post's token states instead (`MeanPooled`); the folder keeps the
standard weight names and records the pooling in config.json (`sentitune_pooling`), which sentitune's
loaders honour.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import torch

from sentitune import LABELS
from sentitune.errors import SentituneError
from sentitune.storage import is_url, local_copy

log = logging.getLogger("sentitune")

# Encoder families whose sequence-classification head reads the whole post (not decoders).
ENCODER_TYPES = {
    "albert",
    "bert",
    "camembert",
    "convbert",
    "data2vec-text",
    "deberta",
    "deberta-v2",
    "distilbert",
    "electra",
    "ernie",
    "flaubert",
    "funnel",
    "ibert",
    "megatron-bert",
    "mobilebert",
    "modernbert",
    "mpnet",
    "nezha",
    "rembert",
    "roberta",
    "roberta-prelayernorm",
    "roformer",
    "squeezebert",
    "xlm",
    "xlm-roberta",
    "xlm-roberta-xl",
    "xmod",
    "nomic_bert",
    "neobert",
}
POOLING_KEY = "sentitune_pooling"  # in config.json; absent means the model's own ([CLS]) head


@dataclass
class Classifier:
    model: torch.nn.Module
    tokenizer: object
    labels: tuple[str, ...]
    source: str
    local_dir: str | None = None  # where a run folder from a URL was downloaded to (once)


class MeanPooled(torch.nn.Module):
    """A BERT-style sequence classifier whose dropout + linear head reads the mean of the last hidden
    states over the post's tokens (padding excluded) instead of the pooled [CLS] token. The wrapped
    Hugging Face model keeps its weights and their names; its unused pooler is dropped."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        if not has_bert_style_head(inner):
            raise SentituneError(
                f"--pooling mean needs a BERT-style head (dropout + linear); {type(inner).__name__} has "
                "another; use --pooling cls"
            )
        if hasattr(inner.base_model, "pooler"):
            inner.base_model.pooler = None
        inner.config.update({POOLING_KEY: "mean"})
        self.inner = inner

    @property
    def config(self):
        return self.inner.config

    @property
    def base_model(self) -> torch.nn.Module:
        return self.inner.base_model

    def save_pretrained(self, *args, **kwargs):
        return self.inner.save_pretrained(*args, **kwargs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        from transformers.modeling_outputs import SequenceClassifierOutput

        hidden = self.inner.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return SequenceClassifierOutput(logits=self.inner.classifier(self.inner.dropout(pooled)))


def pooled(model: torch.nn.Module, pooling: str) -> torch.nn.Module:
    """`model` as a classifier with the given pooling ('cls': the model itself)."""
    return MeanPooled(model) if pooling == "mean" else model


def has_bert_style_head(model: torch.nn.Module) -> bool:
    return isinstance(getattr(model, "classifier", None), torch.nn.Linear) and hasattr(model, "dropout")


def _model_file(name_or_path: str, filename: str) -> str | None:
    """A file of a local model folder or of a hub model (cached), or None where there is none."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, filename)
        return path if os.path.isfile(path) else None
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(name_or_path, filename)
    except (OSError, ValueError):  # not on the hub, or offline: no sentence-transformers settings
        return None


def trained_pooling(name_or_path: str) -> str:
    """'mean' for a sentence-transformers encoder trained with mean pooling (its modules.json names a
    Pooling module whose config sets pooling_mode_mean_tokens), else 'cls'."""
    path = _model_file(name_or_path, "modules.json")
    if path is None:
        return "cls"
    with open(path) as f:
        modules = json.load(f)
    for module in modules if isinstance(modules, list) else []:
        if str(module.get("type", "")).endswith(".Pooling"):
            config = _model_file(name_or_path, f"{module.get('path', '')}/config.json")
            if config is None:
                return "cls"
            with open(config) as f:
                return "mean" if json.load(f).get("pooling_mode_mean_tokens") else "cls"
    return "cls"


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "weights not initialised" is expected for a new head
    hf_logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()  # "Writing model shards" bars in cloud logs
    except ImportError:
        pass


def load_classifier(name_or_path: str, labels=LABELS, *, for_training: bool = True) -> Classifier:
    """A sequence classifier with `labels`, from a hub id, a local folder or a run folder."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    quiet_transformers()
    source = str(name_or_path)
    path = local_copy(source) if is_url(source) else source
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        raise SentituneError(
            f"model folder {source} has no config.json; pass a Hugging Face model folder "
            "or hub id (e.g. google/bert_uncased_L-2_H-128_A-2)"
        )
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        where = (
            "local folder" if os.path.isdir(path) else "hub id (needs network access, or pass a local folder)"
        )
        raise SentituneError(f"cannot load model {source} as a {where}: {str(exc).splitlines()[0]}") from exc
    if config.model_type not in ENCODER_TYPES or getattr(config, "is_encoder_decoder", False):
        raise SentituneError(
            f"model {source} is a '{config.model_type}' model, not a BERT-family encoder; "
            "pass an encoder such as bert, roberta, distilbert or deberta"
        )
    id2label = dict(enumerate(labels))
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(labels),
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            ignore_mismatched_sizes=for_training,
        )
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    except (OSError, ValueError) as exc:
        raise SentituneError(f"cannot load model {source}: {str(exc).splitlines()[0]}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise SentituneError(f"model {source} has no fast tokenizer (tokenizer.json); sentitune needs one")
    pooling = getattr(config, POOLING_KEY, "cls")
    if pooling not in ("cls", "mean"):
        raise SentituneError(f"model {source} has an unknown {POOLING_KEY} '{pooling}' in config.json")
    return Classifier(pooled(model, pooling), tokenizer, tuple(labels), source)


def encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The encoder's stack of transformer layers, whatever the family names it."""
    base = model.base_model
    for path in ("encoder.layer", "transformer.layer", "encoder.layers", "layers"):
        node = base
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if isinstance(node, torch.nn.ModuleList):
            return node
    raise SentituneError(
        f"cannot find the encoder layers of {type(model).__name__}; "
        "--keep-layers and --freeze-layers support BERT-like encoders"
    )


def keep_first_layers(model: torch.nn.Module, n: int) -> None:
    layers = encoder_layers(model)
    if n > len(layers):
        raise SentituneError(f"--keep-layers {n} exceeds the model's {len(layers)} layers")
    del layers[n:]
    for attr in ("num_hidden_layers", "n_layers"):
        if hasattr(model.config, attr):
            setattr(model.config, attr, n)


def freeze(model: torch.nn.Module, layers: int, head_only: bool) -> None:
    """Freeze the embeddings and the first `layers` encoder layers, or everything but the head."""
    base = model.base_model
    if head_only:
        for p in base.parameters():
            p.requires_grad_(False)
        return
    if layers == 0:
        return
    stack = encoder_layers(model)
    if layers > len(stack):
        raise SentituneError(f"--freeze-layers {layers} exceeds the model's {len(stack)} layers")
    for p in base.embeddings.parameters():
        p.requires_grad_(False)
    for layer in stack[:layers]:
        for p in layer.parameters():
            p.requires_grad_(False)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
