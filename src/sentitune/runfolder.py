"""A run folder: what `sentitune train` writes and every later command reads.

The folder is a standard Hugging Face model folder (config.json, model.safetensors, the tokenizer) plus
sentitune's record of the run: the resolved settings and environment (run_config.json), the label
names, the validation history, plots, a model card (README.md) and metrics.json, written last: a
folder with metrics.json is finished. `sentitune export` adds onnx/. The names below are the layout;
no other module spells them.

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
from dataclasses import asdict
from functools import partial

import numpy as np
import torch
import transformers

from sentitune import __version__
from sentitune.card import model_card, truncation_text
from sentitune.config import TrainConfig
from sentitune.errors import SentituneError
from sentitune.explain import explain_with
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
from sentitune.report import REPORT, ReportInput, explain_mistakes, render
from sentitune.runtime import Precision
from sentitune.splits import SPLIT_MARKER
from sentitune.storage import (
    StagedOutput,
    exists,
    join,
    listdir_names,
    local_copy,
    open_input,
    writing,
)

CONFIG = "config.json"  # the Hugging Face model config, with id2label and sentitune_pooling
TOKENIZER = "tokenizer.json"  # the fast tokenizer, which every run saves
TOKENIZER_CONFIG = "tokenizer_config.json"
# transformers' class that loads tokenizer.json as it is; its BertTokenizer rebuilds BERT's own normalizer
# from the vocabulary, dropping the normalisation in front of it.
TOKENIZER_CLASS = "PreTrainedTokenizerFast"
# In config.json: the tokens a post is cut to (the run's --max-length), and what a loader must do for it.
MAX_LENGTH_KEY = "sentitune_max_length"
TRUNCATION_NOTE_KEY = "sentitune_truncation"
WEIGHTS = "model.safetensors"
RUN_CONFIG = "run_config.json"
METRICS = "metrics.json"  # written last: its presence marks a finished run (and a finished evaluation)
LABELS_FILE = "labels.json"
HISTORY = "history.jsonl"
CARD = "README.md"
CURVES = "training_curves.png"
CONFUSION = "confusion_matrix.png"
CHECKPOINTS = "checkpoints"
EXPORT_DIR = "onnx"
ONNX_FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx"}
EXPORT_REPORT = "export_report.json"
FINISHED_RUN = (METRICS, RUN_CONFIG, WEIGHTS)  # any of these: the folder already holds a run
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


def save_run(
    out: StagedOutput,
    classifier,
    cfg: TrainConfig,
    model_info: dict,
    splits: dict,
    metrics: dict,
    history: list[dict],
    train_log: list[dict],
    device,
    precision: Precision,
    scored: dict | None = None,
) -> None:
    """Write the run into `out` (committed by the caller): the model, the settings, the logs and plots,
    the card, the report, and metrics.json last. `scored`: the class probabilities of val and test."""
    model = classifier.model.to("cpu")
    classes = classifier.labels
    with writing(out.root):  # the weights and tokenizer.json are written by native code
        model.save_pretrained(out.root, safe_serialization=True)
        classifier.tokenizer.save_pretrained(out.root)
    write_reading(str(out.root), classifier.tokenizer, classifier.normalization, cfg.max_length)
    run_config = {
        "sentitune_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "train": asdict(cfg),
        "model": model_info,
        "labels": list(classes),
        "data": {
            name: {
                "path": s.path,
                "examples": len(s),
                "class_counts": dict(
                    zip(classes, np.bincount(s.labels, minlength=len(classes)).tolist(), strict=True)
                ),
            }
            for name, s in splits.items()
        },
        "environment": {
            "device": str(device),
            "precision": precision.name,
            "precision_reason": precision.reason,
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
    out.path(RUN_CONFIG).write_text(json.dumps(run_config, indent=2) + "\n")
    out.path(LABELS_FILE).write_text(json.dumps({"labels": list(classes)}, indent=2) + "\n")
    with open(out.path(HISTORY), "w") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    plot_training_curves(train_log, history, out.path(CURVES))
    if "test" in metrics:
        plot_confusion_matrix(metrics["test"], out.path(CONFUSION), "test split")
    out.path(CARD).write_text(model_card(cfg, model_info, splits, metrics, run_config))
    report = run_report(cfg, splits, metrics, scored or {}, history, train_log, run_config)
    if report.probs is not None:
        report.explanations = explain_mistakes(
            report,
            partial(explain_with, model, classifier.tokenizer, max_length=cfg.max_length,
                    device=torch.device("cpu"), labels=list(classes),
                    normalization=classifier.normalization),
        )  # fmt: skip
    out.path(REPORT).write_text(render(report))
    out.path(METRICS).write_text(json.dumps(metrics, indent=2) + "\n")


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


def run_report(cfg, splits, metrics, scored, history, train_log, run_config) -> ReportInput:
    """What a run's report.html shows: the test split (the validation split when there is none)."""
    split = "test" if "test" in scored else "val"
    notes = [] if split == "test" else ["no test split: the results below are on the validation split"]
    data = None
    if cfg.data and exists(join(cfg.data, SPLIT_MARKER)):
        with open_input(join(cfg.data, SPLIT_MARKER)) as f:
            data = json.load(f)
    return ReportInput(
        title=f"sentitune run: {cfg.job_dir or os.environ.get('AIP_MODEL_DIR', '')}",
        metrics=metrics.get(split),
        split=f"the {split} split ({splits[split].path})" if split in splits else split,
        labels=list(run_config["labels"]),
        texts=list(splits[split].texts) if split in scored else None,
        gold=splits[split].labels if split in scored else None,
        probs=scored.get(split),
        history=history,
        train_log=train_log,
        best_step=metrics.get("training", {}).get("best_step"),
        calibration=metrics.get("calibration"),
        baseline=metrics.get("baseline"),
        data=data,
        class_counts={name: d["class_counts"] for name, d in run_config["data"].items()},
        settings=run_config["train"],
        notes=notes,
    )
