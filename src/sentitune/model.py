"""Load or build the classifier, cut or freeze its layers, and read a run folder back.

The classifier is whatever `AutoModelForSequenceClassification` builds for the encoder (for BERT:
the pooled [CLS] output -> dropout -> linear, the walkthrough's head), so a run folder is a standard
Hugging Face model folder that any transformers user can load. With `--pooling mean` the same dropout
and linear layer read the mean of the post's token states instead (`MeanPooled`); the folder keeps the
standard weight names and records the pooling in config.json (`sentitune_pooling`), which sentitune's
loaders honour.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sentitune import LABELS
from sentitune.batching import tokenize
from sentitune.config import check_layers
from sentitune.errors import SentituneError, short
from sentitune.normalize import AS_WRITTEN, Normalization, take_from_tokenizer
from sentitune.normalize import CONFIG_KEY as NORMALIZE_KEY
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
# A mean-pooled run's config.json has a model_type of its own, with the encoder's in ENCODER_TYPE_KEY and an
# auto_map naming MODELING_FILE (copied into the folder): plain transformers loads it right with
# trust_remote_code=True and refuses it without, never [CLS] through a random pooler. sentitune itself never
# runs the folder's code: it builds the encoder family's own classes from the same config.
MEAN_POOLED_TYPE = "sentitune-mean-pooled"
ENCODER_TYPE_KEY = "sentitune_encoder_type"
MODELING_FILE = "modeling_sentitune.py"
OWN_KEYS = {
    "model_type",
    "auto_map",
    "architectures",
    "transformers_version",
    ENCODER_TYPE_KEY,
}  # not the encoder's
AUTO_MAP = {
    "AutoConfig": "modeling_sentitune.SentituneMeanPooledConfig",
    "AutoModelForSequenceClassification": "modeling_sentitune.SentituneMeanPooledForSequenceClassification",
}
# tokenizer_config.json's auto_map in every run folder: with trust_remote_code=True the tokenizer cuts posts
# at the run's max_length by default (transformers' own class cuts only when asked).
TOKENIZER_AUTO_MAP = {"AutoTokenizer": [None, "modeling_sentitune.SentituneTokenizerFast"]}


@dataclass
class Classifier:
    model: torch.nn.Module
    tokenizer: object
    labels: tuple[str, ...]
    source: str
    local_dir: str | None = None  # where a run folder from a URL was downloaded to (once)
    is_run: bool = False  # a sentitune run folder: its labels are its own classes, never mapped onto ours
    normalization: Normalization = AS_WRITTEN  # how the model reads posts (config.json records it)

    def encode(self, texts: Sequence[str], max_length: int):
        """`texts` tokenised as the model was trained to read them: normalised by the tokenizer itself, as
        the run folder's tokenizer.json does for plain transformers."""
        return tokenize(self.normalization.reading(self.tokenizer), texts, max_length)


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

    def save_pretrained(self, folder: str, **kwargs) -> None:
        """The standard folder, with the config and modeling file that make transformers pool as we do."""
        self.inner.save_pretrained(folder, **kwargs)
        path = os.path.join(folder, "config.json")
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        config[ENCODER_TYPE_KEY] = config["model_type"]
        config.update(
            model_type=MEAN_POOLED_TYPE,
            architectures=[AUTO_MAP["AutoModelForSequenceClassification"].split(".")[1]],
            auto_map=AUTO_MAP,
        )
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
        write_modeling_file(folder)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        from transformers.modeling_outputs import SequenceClassifierOutput

        hidden = self.inner.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return SequenceClassifierOutput(logits=self.inner.classifier(self.inner.dropout(pooled)))


def write_modeling_file(folder: str) -> None:
    """Copy this version's modeling_sentitune.py into a local model folder."""
    modeling = importlib.resources.files("sentitune").joinpath(MODELING_FILE).read_text(encoding="utf-8")
    with open(os.path.join(folder, MODELING_FILE), "w", encoding="utf-8") as f:
        f.write(modeling)


def pooled(model: torch.nn.Module, pooling: str) -> torch.nn.Module:
    """`model` as a classifier with the given pooling ('cls': the model itself)."""
    return MeanPooled(model) if pooling == "mean" else model


def has_bert_style_head(model: torch.nn.Module) -> bool:
    return isinstance(getattr(model, "classifier", None), torch.nn.Linear) and hasattr(model, "dropout")


def trained_pooling(folder: str) -> str:
    """'mean' for a sentence-transformers encoder trained with mean pooling (its modules.json names a
    Pooling module whose config sets pooling_mode_mean_tokens), else 'cls'. `folder`: a local model folder."""
    path = os.path.join(folder, "modules.json")
    if not os.path.isfile(path):
        return "cls"
    with open(path) as f:
        modules = json.load(f)
    for module in modules if isinstance(modules, list) else []:
        if str(module.get("type", "")).endswith(".Pooling"):
            config = os.path.join(folder, str(module.get("path", "")), "config.json")
            if not os.path.isfile(config):
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


# What a model folder needs from the hub: configs, tokenizer files, safetensors weights (never a pickle).
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*"]
HUB_TIMEOUT_S = 5
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # model, or user/model


def is_hub_id(name: str) -> bool:
    """A Hugging Face hub id (user/model) rather than a local folder or a URL."""
    name = str(name)
    return not is_url(name) and not os.path.exists(name) and "/" in name and bool(HUB_ID.match(name))


def model_folder(name_or_path: str) -> str:
    """A local folder holding the model: itself, a downloaded copy of a URL, or a hub snapshot. A hub id
    is checked with one short request first, so a wrong id or no network fails in seconds, not after
    minutes of retries; without network a model already in the local cache is used."""
    source = str(name_or_path)
    if is_url(source):
        return local_copy(source)
    if os.path.isdir(source):
        return source
    if not HUB_ID.match(source):  # a path: ./x, /x, ~/x, a/b/c
        raise SentituneError(f"model folder {source} not found; pass a local folder or a hub id (user/model)")
    from huggingface_hub import HfApi, snapshot_download, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    local_only = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if not local_only:
        try:
            HfApi().model_info(source, timeout=HUB_TIMEOUT_S)
        except (RepositoryNotFoundError, GatedRepoError, HFValidationError) as exc:
            raise SentituneError(
                f"model {source} is not on the Hugging Face hub, or is private or gated ({type(exc).__name__}); "
                "check the id, log in with `hf auth login`, or pass a local folder"
            ) from None
        except Exception as exc:  # no network, DNS, proxy, TLS: the hub cannot be asked
            if not isinstance(try_to_load_from_cache(source, "config.json"), str):
                raise SentituneError(
                    f"cannot reach the Hugging Face hub to download {source} ({short(exc)}); connect to the "
                    "network, or pass a local folder of the model"
                ) from None
            local_only = True
    try:
        return snapshot_download(
            source, allow_patterns=HUB_FILES, local_files_only=local_only, etag_timeout=HUB_TIMEOUT_S
        )
    except Exception as exc:
        raise SentituneError(
            f"cannot download model {source} from the Hugging Face hub: {short(exc)}"
        ) from None


def read_model_config(folder: str, source: str) -> dict:
    """config.json of a local model folder, checked for what makes a loadable encoder."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise SentituneError(
            f"model folder {source} has no config.json; pass a Hugging Face model folder "
            "or hub id (e.g. google/bert_uncased_L-2_H-128_A-2)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (ValueError, UnicodeDecodeError):
        raise SentituneError(
            f"cannot load model {source} as a local folder: its config.json is not valid JSON"
        ) from None
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind == MEAN_POOLED_TYPE:  # a mean-pooled run: the encoder's family is recorded beside it
        kind = config.get(ENCODER_TYPE_KEY)
    if kind not in ENCODER_TYPES or config.get("is_encoder_decoder"):
        raise SentituneError(
            f"model {source} is a '{short(kind, 40)}' model, not a BERT-family encoder; "
            "pass an encoder such as bert, roberta, distilbert or deberta"
        )
    return config


def check_weights(folder: str, source: str, labels: tuple[str, ...] | None) -> None:
    """model.safetensors is there and whole; with `labels` (a trained run), its head has that many outputs."""
    path = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(folder, "pytorch_model.bin")):
            raise SentituneError(
                f"cannot load model {source}: it has only pytorch_model.bin (a pickle); sentitune loads weights "
                "from safetensors only: convert it with transformers' save_pretrained(..., safe_serialization=True)"
            )
        if not any(name.endswith(".safetensors") for name in os.listdir(folder)):  # sharded models are fine
            raise SentituneError(f"cannot load model {source}: no model.safetensors in the folder")
        return
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    except (SafetensorError, OSError, ValueError):
        raise SentituneError(
            f"cannot load model {source}: model.safetensors is empty or truncated (not a safetensors file); "
            "download or copy the model again"
        ) from None
    if os.path.getsize(path) < 8 + sum(1 for _ in shapes):  # a header without the tensors behind it
        raise SentituneError(f"cannot load model {source}: model.safetensors is truncated; copy it again")
    heads = [
        shape for name, shape in shapes.items() if name.startswith("classifier") and name.endswith("weight")
    ]
    if labels is not None and heads and heads[-1][0] != len(labels):
        raise SentituneError(
            f"{source} has {len(labels)} labels ({', '.join(short(x, 40) for x in labels)}) in config.json but its "
            f"classifier has {heads[-1][0]} outputs; the folder was edited or mixed with another run"
        )


def output_layer(model: torch.nn.Module, n_labels: int) -> torch.nn.Linear:
    """The linear layer that writes the logits: the last one with one output per label."""
    found = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == n_labels]
    if not found:
        raise SentituneError(f"no linear layer with {n_labels} outputs in {type(model).__name__}")
    return found[-1]


@torch.no_grad()
def scale_logits(model: torch.nn.Module, n_labels: int, temperature: float) -> None:
    """Divide the model's logits by `temperature` for good, by scaling its output layer."""
    layer = output_layer(model, n_labels)
    layer.weight.div_(temperature)
    if layer.bias is not None:
        layer.bias.div_(temperature)


def load_classifier(
    name_or_path: str, labels=LABELS, *, for_training: bool = True, shown_as: str | None = None
) -> Classifier:
    """A sequence classifier with `labels`, from a hub id, a local folder or a run folder."""
    from safetensors import SafetensorError
    from transformers import AutoModelForSequenceClassification

    quiet_transformers()
    source = shown_as or str(name_or_path)
    folder = model_folder(str(name_or_path))
    config = read_model_config(folder, source)
    check_weights(folder, source, None if for_training else tuple(labels))
    id2label = dict(enumerate(labels))
    heads = {"num_labels": len(labels), "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
    try:
        own_code = config.get("model_type") == MEAN_POOLED_TYPE
        model = AutoModelForSequenceClassification.from_pretrained(
            folder,
            **({"config": encoder_config(config, **heads)} if own_code else heads),
            ignore_mismatched_sizes=for_training,
            use_safetensors=True,
            trust_remote_code=False,
        )
        tokenizer = load_tokenizer(folder, config)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise SentituneError(f"cannot load model {source}: {short(str(exc).splitlines()[0])}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise SentituneError(f"model {source} has no fast tokenizer (tokenizer.json); sentitune needs one")
    check_tokenizer(tokenizer, config, source)
    pooling = config.get(POOLING_KEY, "cls")
    if pooling not in ("cls", "mean"):
        raise SentituneError(
            f"model {source} has an unknown {POOLING_KEY} '{short(pooling, 40)}' in config.json"
        )
    normalization = take_from_tokenizer(tokenizer, config.get(NORMALIZE_KEY), source)
    return Classifier(
        pooled(model, pooling), tokenizer, tuple(labels), source, folder, normalization=normalization
    )


def encoder_config(config: dict, **overrides):
    """The encoder family's own transformers config for a mean-pooled run's config.json: sentitune builds
    the family's classes from it and never runs the folder's modeling code (nor lets transformers ask)."""
    from transformers import AutoConfig

    fields = {k: v for k, v in config.items() if k not in OWN_KEYS}
    return AutoConfig.for_model(config[ENCODER_TYPE_KEY], **{**fields, **overrides})


def load_tokenizer(folder: str, config: dict):
    """The folder's fast tokenizer; for a mean-pooled run, with the encoder's config handed over, since
    reading config.json itself would make transformers ask whether to run the folder's code."""
    from transformers import AutoTokenizer

    extra = {"config": encoder_config(config)} if config.get("model_type") == MEAN_POOLED_TYPE else {}
    return AutoTokenizer.from_pretrained(folder, use_fast=True, trust_remote_code=False, **extra)


def check_tokenizer(tokenizer, config: dict, source: str) -> None:
    """A tokenizer far smaller than the model's vocabulary is not this model's: its files are missing and
    transformers built a near-empty one, which would map every post to [UNK]."""
    vocab = int(config.get("vocab_size") or 0)
    if vocab and len(tokenizer) < vocab // 2:
        raise SentituneError(
            f"the tokenizer of {source} has {len(tokenizer)} tokens but the model {vocab}: its tokenizer files "
            "(tokenizer.json, vocab.txt) are missing or from another model; copy the whole folder"
        )


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
    for problem in check_layers(n, 0, False, len(layers)):
        raise SentituneError(problem)
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
    for problem in check_layers(None, layers, False, len(stack)):
        raise SentituneError(problem)
    for p in base.embeddings.parameters():
        p.requires_grad_(False)
    for layer in stack[:layers]:
        for p in layer.parameters():
            p.requires_grad_(False)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
