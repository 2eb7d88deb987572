"""A run folder: what `sentitune train` writes and every later command reads.

The folder is a standard Hugging Face model folder (config.json, model.safetensors, the tokenizer) plus
sentitune's record of the run: the resolved settings and environment (run_config.json), the label
names, the validation history, plots, a model card (README.md) and metrics.json, written last: a
folder with metrics.json is finished; `write_report` adds report.html. `sentitune export` adds onnx/.
The file names are layout.py's.

The folder reads raw posts as sentitune does wherever a fast tokenizer reads it (`write_reading`):
tokenizer.json's normalizer begins with the run's normalisation and it truncates at the run's
max_length, tokenizer_config.json loads tokenizer.json as it is, with that model_max_length, and
config.json says so. sentitune takes the normalisation back out of the tokenizer when it loads a run
(`normalize.take_from_tokenizer`) and applies it itself, with the same rules.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np
import torch
import transformers

from sentitune import __version__
from sentitune.card import model_card, truncation_text
from sentitune.config import TrainConfig
from sentitune.errors import SentituneError
from sentitune.explain import explain_with
from sentitune.layout import (
    CARD,
    CONFIG,
    CONFUSION,
    CURVES,
    EXPORT_DIR,
    HISTORY,
    LABELS_FILE,
    METRICS,
    ONNX_FILES,
    REPORT,
    RUN_CONFIG,
    TOKENIZER,
    TOKENIZER_CONFIG,
    WEIGHTS,
)
from sentitune.metrics import plot_confusion_matrix, plot_training_curves
from sentitune.model import (
    POOLING_KEY,
    TOKENIZER_AUTO_MAP,
    Classifier,
    check_tokenizer,
    is_hub_id,
    load_classifier,
    load_tokenizer,
    model_folder,
    quiet_transformers,
    read_model_config,
    write_modeling_file,
)
from sentitune.normalize import CONFIG_KEY as NORMALIZE_KEY
from sentitune.normalize import Normalization, take_from_tokenizer, with_rules
from sentitune.report import people_labelled, run_report
from sentitune.runtime import Precision
from sentitune.splits import LabelledTexts, Prepared
from sentitune.storage import (
    StagedOutput,
    exists,
    join,
    listdir_names,
    local_copy,
    open_input,
    writing,
)

# transformers' class that loads tokenizer.json as it is; its BertTokenizer rebuilds BERT's own normalizer
# from the vocabulary, dropping the normalisation in front of it.
TOKENIZER_CLASS = "PreTrainedTokenizerFast"
# In config.json: the tokens a post is cut to (the run's --max-length), and what a loader must do for it.
MAX_LENGTH_KEY = "sentitune_max_length"
TRUNCATION_NOTE_KEY = "sentitune_truncation"
DEFAULT_MAX_LENGTH = 100  # the walkthrough's, for runs that do not record theirs

log = logging.getLogger("sentitune")


def load_run(run_dir: str, with_model: bool = True) -> Classifier:
    """The trained classifier of a run folder (local or URL), with its label names, after checking the
    folder holds everything it needs; without the weights (`model` None) when `with_model` is false, for
    runtimes that bring their own (ONNX)."""
    if str(run_dir).startswith(("http://", "https://")):
        raise SentituneError(
            f"{run_dir}: a run folder cannot be read over http(s), which cannot list a folder; download it, "
            "or use a local folder or a storage URL (gs://, s3://)"
        )
    if is_hub_id(run_dir):  # a classifier on the Hugging Face hub, downloaded once
        path = model_folder(str(run_dir))
        names = listdir_names(path)
    elif not exists(run_dir):
        raise SentituneError(f"run folder not found: {run_dir}")
    else:
        names, path = listdir_names(run_dir), None
    if CONFIG not in names or WEIGHTS not in names:
        raise SentituneError(
            f"{run_dir} is not a finished run (no config.json and model.safetensors); "
            "pass the --job-dir of a `sentitune train` run, or a classifier's folder or hub id"
        )
    if TOKENIZER not in names:
        raise SentituneError(f"{run_dir} is missing {TOKENIZER} (the tokenizer); copy the whole run folder")
    path = path or local_copy(run_dir)
    is_run = LABELS_FILE in names  # a sentitune run: its labels are its own classes
    config = read_model_config(path, run_dir)
    id2label = config.get("id2label") or {}
    try:
        labels = tuple(id2label[str(i)] for i in range(len(id2label)))
    except KeyError:
        raise SentituneError(
            f"{run_dir}: config.json's id2label is not 0..N-1; the folder was edited"
        ) from None
    if not with_model:
        quiet_transformers()
        tokenizer = load_tokenizer(path, config)
        check_tokenizer(tokenizer, config, run_dir)
        return Classifier(
            None,
            tokenizer,
            labels,
            run_dir,
            path,
            is_run=is_run,
            normalization=take_from_tokenizer(tokenizer, config.get(NORMALIZE_KEY), run_dir),
        )
    classifier = load_classifier(path, labels, for_training=False, shown_as=run_dir)
    classifier.source, classifier.local_dir = run_dir, path
    classifier.is_run = is_run
    classifier.model.eval()
    return classifier


def read_run_config(run_dir: str) -> dict:
    with open_input(join(run_dir, RUN_CONFIG), "rb") as f:
        return json.load(f)


def trained_max_length(run_dir: str) -> int:
    """The --max-length the run was trained with."""
    try:
        return int(read_run_config(run_dir)["train"]["max_length"])
    except (SentituneError, KeyError, TypeError):
        return DEFAULT_MAX_LENGTH


def onnx_path(run_dir: str, backend: str) -> str:
    """Where the export a backend runs (onnx, onnx-int8) lies in a run folder."""
    return join(run_dir, EXPORT_DIR, ONNX_FILES["int8" if backend == "onnx-int8" else "fp32"])


@dataclass(frozen=True)
class RunRecord:
    """A finished training, as its run folder records it: `save_run` writes it, `write_report` shows it."""

    cfg: TrainConfig
    model_info: dict  # what the model is: source, type, layers, pooling, parameters
    prepared: Prepared  # the data it was trained on, as read
    splits: dict[str, LabelledTexts]
    metrics: dict
    history: list[dict]  # one row per validation
    train_log: list[dict]  # one row per progress line
    device: torch.device
    precision: Precision
    scored: dict[str, np.ndarray] = field(default_factory=dict)  # the class probabilities of val and test


def save_run(out: StagedOutput, classifier: Classifier, run: RunRecord) -> None:
    """Write the run into `out` (committed by the caller): the model and tokenizer, run_config.json, the
    labels, the history and its plots, the model card and metrics.json."""
    model = classifier.model.to("cpu")
    classes = classifier.labels
    with writing(out.root):  # the weights and tokenizer.json are written by native code
        model.save_pretrained(out.root, safe_serialization=True)
        classifier.tokenizer.save_pretrained(out.root)
    write_reading(str(out.root), classifier.tokenizer, classifier.normalization, run.cfg.max_length)
    run_config = run_config_of(run, classes)
    out.path(RUN_CONFIG).write_text(json.dumps(run_config, indent=2) + "\n")
    out.path(LABELS_FILE).write_text(json.dumps({"labels": list(classes)}, indent=2) + "\n")
    with open(out.path(HISTORY), "w") as f:
        for row in run.history:
            f.write(json.dumps(row) + "\n")
    plot_training_curves(run.train_log, run.history, out.path(CURVES))
    if "test" in run.metrics:
        plot_confusion_matrix(run.metrics["test"], out.path(CONFUSION), "test split")
    out.path(CARD).write_text(model_card(run_config, run.metrics, run.prepared))
    out.path(METRICS).write_text(json.dumps(run.metrics, indent=2) + "\n")


def run_config_of(run: RunRecord, classes: tuple[str, ...]) -> dict:
    """run_config.json: the version, the settings, the model, the classes, each split's file and class
    counts, and the machine it ran on (and the cost estimate `sentitune cloud submit` passes)."""
    run_config = {
        "sentitune_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "train": asdict(run.cfg),
        "model": run.model_info,
        "labels": list(classes),
        "data": {
            name: {
                "path": s.path,
                "examples": len(s),
                "class_counts": dict(
                    zip(classes, np.bincount(s.labels, minlength=len(classes)).tolist(), strict=True)
                ),
                **(
                    {"people_labelled": people_labelled(len(s), s.weak, run.prepared.report)}
                    if name == "train"
                    else {}
                ),
            }
            for name, s in run.splits.items()
        },
        "environment": {
            "device": str(run.device),
            "precision": run.precision.name,
            "precision_reason": run.precision.reason,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": sys.version.split()[0],
        },
    }
    if os.environ.get("SENTITUNE_COST_ESTIMATE"):  # set by `sentitune cloud submit`
        try:
            run_config["cost_estimate"] = json.loads(os.environ["SENTITUNE_COST_ESTIMATE"])
        except ValueError:
            log.warning("SENTITUNE_COST_ESTIMATE is not JSON; not recorded")
    return run_config


def write_report(out: StagedOutput, classifier: Classifier, run: RunRecord) -> None:
    """report.html of the run `save_run` wrote into `out`, with the words that drove the most confident
    mistakes shaded by the run's model (on the CPU, where save_run left it)."""
    explain = partial(explain_with, classifier.model.to("cpu"), classifier.tokenizer,
                      max_length=run.cfg.max_length, device=torch.device("cpu"),
                      labels=list(classifier.labels), normalization=classifier.normalization)  # fmt: skip
    page = run_report(out.root, run.splits, run.scored, run.train_log, run.prepared.report, explain)
    out.path(REPORT).write_text(page)


def reading_tokenizer(tokenizer, normalization: Normalization, max_length: int) -> dict:
    """tokenizer.json as a run saves it: the tokenizer sentitune tokenises with, the normalisation's rules in
    front of its normalizer, truncation at the run's max_length (a reader of tokenizer.json cuts where
    sentitune does) and no padding (a reader pads as its batches need)."""
    state = with_rules(json.loads(tokenizer.backend_tokenizer.to_str()), normalization)
    state["truncation"] = {
        "direction": "Right",
        "max_length": max_length,
        "strategy": "LongestFirst",
        "stride": 0,
    }
    state["padding"] = None
    return state


def write_reading(folder: str, tokenizer, normalization: Normalization, max_length: int) -> None:
    """Make the model folder (local, with config.json and the tokenizer saved) read raw posts as sentitune
    does: tokenizer.json from `reading_tokenizer`, tokenizer_config.json loading it as it is with the
    run's model_max_length (and, with trust_remote_code=True, as modeling_sentitune.py's tokenizer, which
    cuts there by default), and config.json recording the normalisation, which loaders apply it, and the
    max_length (which a mean-pooled run's own code cuts longer inputs to)."""

    def update(name: str, change) -> None:
        path = os.path.join(folder, name)
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
        content = change(content) or content
        with open(path, "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2, sort_keys=name == CONFIG, ensure_ascii=False)
            f.write("\n")

    update(TOKENIZER, lambda _: reading_tokenizer(tokenizer, normalization, max_length))
    update(
        TOKENIZER_CONFIG,
        lambda c: c.update(
            tokenizer_class=TOKENIZER_CLASS,
            auto_map=TOKENIZER_AUTO_MAP,
            model_max_length=max_length,
            # the encoder's own inputs (BERT's token_type_ids too), as its tokenizer class gave them
            model_input_names=list(getattr(tokenizer, "model_input_names", ["input_ids", "attention_mask"])),
            **({"max_length": max_length} if "max_length" in c else {}),  # the truncation it was saved with
        ),
    )
    update(
        CONFIG,
        lambda c: c.update(
            {
                NORMALIZE_KEY: normalization.run_entry(),
                MAX_LENGTH_KEY: max_length,
                "tokenizer_class": TOKENIZER_CLASS,  # what pipeline() loads for a model type of its own
                TRUNCATION_NOTE_KEY: truncation_text(max_length, c.get(POOLING_KEY, "cls")),
            }
        ),
    )
    write_modeling_file(folder)
