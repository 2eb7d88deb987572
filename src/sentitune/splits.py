"""The labelled splits that training, evaluation and export read: a folder written by `prepare`, or
the walkthrough's three files, or any labelled file.

A command reads a prepared folder once (`read_prepared`): its listing, its label set and prepare's report
become one `Prepared` value, which the splits, the model card and the run's report are made from. On
disk the validation split is `eval.*` (the walkthrough's name); in code and in metrics it is `val`
(layout.SPLIT_FILES maps one to the other).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sentitune import LABELS
from sentitune.errors import SentituneError, short
from sentitune.labels import DistinctLabels, apply_label_rule, decide_label_rule, missing_as_na, parse_labels
from sentitune.layout import (
    LABEL_SOURCE_COLUMN,
    SPLIT_ALIASES,
    SPLIT_EXTENSIONS,
    SPLIT_FILES,
    SPLIT_LABELS,
    SPLIT_MARKER,
    WEAK_LABEL,
)
from sentitune.storage import join, listdir_names, open_input
from sentitune.tables import pick_label_column, pick_text_column, read_chunks

log = logging.getLogger("sentitune")

SCORE_COLUMN = "score"  # beside `label` when prepare read the labels from scores


@dataclass
class LabelledTexts:
    """One split in memory: the texts and their class ids."""

    path: str
    texts: list[str]
    labels: np.ndarray  # int64 class ids
    classes: tuple[str, ...] = LABELS  # the names of the ids, in order
    scores: np.ndarray | None = None  # float64, the score each label was read from (when asked for and kept)
    weak: np.ndarray | None = None  # bool, rows labelled by VADER beside people's (a label_source column)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Prepared:
    """The labelled data a command reads, read once: a prepared folder's split files and what `prepare`
    recorded beside them, or the walkthrough's files (--training-file ...), which record nothing."""

    files: dict[str, str]  # split (train, val, test) -> its file, for the splits there are
    classes: tuple[str, ...] = LABELS  # --labels, else the folder's labels.json, else the default classes
    folder: str | None = None  # the prepared folder (None: the walkthrough's files)
    format: str | None = None  # the split format prepare recorded (csv, parquet), when it did
    score_boundaries: tuple[float, ...] | None = None  # between classes, for labels read from scores
    report: dict | None = None  # prepare_report.json: columns, label rule, rows dropped and why ...

    @property
    def label_source(self) -> str | None:
        """Where the labels came from (score, category, vader), or None when not recorded."""
        return _entry(self.report, "labels", "source")


def read_labelled(
    path: str,
    text_column: str | None = None,
    label_column: str | None = None,
    chunk_rows: int = 100_000,
    classes: tuple[str, ...] = LABELS,
    hint: str | None = None,
    with_scores: bool = False,
) -> LabelledTexts:
    """Read a labelled file: ours (text, label names), the walkthrough's (bodyText, Target ids), or any
    file whose label column holds names, ids or scores, onto `classes`. Rows without text or label are
    skipped. `hint`: how to fix labels that fit no class, where the command has no label options.
    `with_scores`: also the `score` column prepare keeps beside labels read from scores (None without one)."""
    texts: list[str] = []
    raw_labels: list[pd.Series] = []
    scores: list[np.ndarray] | None = [] if with_scores else None
    weak: list[np.ndarray] = []
    distinct = DistinctLabels()
    text_col = label_col = None
    skipped = 0
    for df in read_chunks(path, chunk_rows):
        if text_col is None:
            cols = [str(c) for c in df.columns]
            text_col = pick_text_column(df, text_column, path)
            label_col = pick_label_column(cols, label_column, path)
            if scores is not None and (SCORE_COLUMN not in cols or label_col == SCORE_COLUMN):
                scores = None
        t = df[text_col].str.strip()
        raw = missing_as_na(df[label_col])
        ok = (t.notna() & (t != "") & raw.notna()).to_numpy(bool, na_value=False)
        skipped += int((~ok).sum())
        texts.extend(t[ok].tolist())
        if scores is not None:
            scores.append(pd.to_numeric(df[SCORE_COLUMN][ok], errors="coerce").to_numpy(np.float64))
        if LABEL_SOURCE_COLUMN in df.columns:
            weak.append((df[LABEL_SOURCE_COLUMN][ok] == WEAK_LABEL).to_numpy(bool, na_value=False))
        raw_labels.append(raw[ok])
        distinct.update(raw[ok])
    if skipped:
        log.warning("%s: skipped %d rows without text or label", path, skipped)
    if not texts:
        raise SentituneError(
            f"{path} has no labelled rows (columns used: text '{text_col}', label '{label_col}')"
        )
    rule = decide_label_rule(
        distinct.sample(),
        "auto",
        0.0,
        None,
        integers_are_ids=True,
        where=path,
        classes=tuple(classes),
        hint=hint,
    )
    labels = apply_label_rule(rule, pd.concat(raw_labels, ignore_index=True), path)
    kept = np.concatenate(scores) if scores else None
    mixed = np.concatenate(weak) if weak else None
    if mixed is not None and len(mixed) != len(texts):  # a chunk without the column: not a prepared split
        mixed = None
    unscored = ~np.isfinite(kept) if kept is not None else None
    if unscored is not None and mixed is not None:
        unscored &= mixed  # people's labels beside VADER's carry no score
    if unscored is not None and unscored.any():
        bad = int(unscored.sum())
        raise SentituneError(
            f"{path}: the {SCORE_COLUMN} column is not all numbers ({bad} row{' is' if bad == 1 else 's are'} "
            "not); run `sentitune prepare` again"
        )
    return LabelledTexts(path, texts, labels.astype(np.int64), tuple(classes), kept, mixed)


def load_splits(
    cfg, prepared: Prepared | None = None, train_scores: bool = False
) -> dict[str, LabelledTexts]:
    """The train/val/test splits of `prepared` (default: `read_prepared(cfg)`), read with the config's
    `text_column` and `label_column` (`train_scores`: the training split's scores too)."""
    prepared = prepared or read_prepared(cfg)
    classes = prepared.classes
    splits = {}
    for name, path in prepared.files.items():
        splits[name] = read_labelled(
            path,
            cfg.text_column,
            cfg.label_column,
            classes=classes,
            with_scores=train_scores and name == "train",
        )
        counts = np.bincount(splits[name].labels, minlength=len(classes))
        log.info(
            "%s: %s, %d examples (%s)",
            name,
            path,
            len(splits[name]),
            ", ".join(f"{label} {c}" for label, c in zip(classes, counts, strict=True)),
        )
    return splits


def read_prepared(cfg) -> Prepared:
    """The data a config with `data` (a prepared folder) or `training_file` / `validation_file` /
    `testing_file`, and `labels`, names: the folder is listed and its label set and report read here, once.
    --labels that disagree with the folder's are refused."""
    given = parse_labels(cfg.labels) if cfg.labels is not None else None
    if not cfg.data:
        paths = {"train": cfg.training_file, "val": cfg.validation_file, "test": cfg.testing_file}
        return Prepared({split: path for split, path in paths.items() if path}, given or LABELS)
    names = listdir_names(cfg.data)
    if not names:
        raise SentituneError(f"--data {cfg.data} is not a folder or is empty; run `sentitune prepare` first")
    report = _report(cfg.data) if SPLIT_MARKER in names else None
    label_set = _label_set(cfg.data) if SPLIT_LABELS in names else None
    recorded = tuple(str(n) for n in label_set["labels"]) if label_set else None
    if given and recorded and given != recorded:
        raise SentituneError(
            f"--labels {','.join(given)} differs from the classes of {cfg.data} ({','.join(recorded)}); "
            "drop --labels or prepare the data with them"
        )
    written = _entry(report, "split", "format")
    return Prepared(
        files=_split_files(cfg.data, names, written),
        classes=given or recorded or LABELS,
        folder=cfg.data,
        format=written,
        score_boundaries=_boundaries(label_set, cfg.data) if label_set else None,
        report=report,
    )


def _boundaries(label_set: dict, data_dir: str) -> tuple[float, ...] | None:
    found = label_set.get("score_boundaries")
    if found is None:
        return None
    wanted = len(label_set["labels"]) - 1
    try:
        values = tuple(float(b) for b in found)
    except (TypeError, ValueError):
        values = ()
    if len(values) != wanted or not all(map(math.isfinite, values)) or list(values) != sorted(values):
        raise SentituneError(
            f"{join(data_dir, SPLIT_LABELS)}: score_boundaries {short(json.dumps(found), 60)} are not "
            f"{wanted} increasing numbers; run `sentitune prepare` again"
        )
    return values


def _label_set(data_dir: str) -> dict:
    where = join(data_dir, SPLIT_LABELS)
    try:
        with open_input(where, "rb") as f:
            found = json.load(f)
        if not isinstance(found, dict) or not isinstance(found["labels"], list):
            raise TypeError
        return found
    except (ValueError, KeyError, TypeError):
        raise SentituneError(f"{where} is not a label list; run `sentitune prepare` again") from None


def _report(data_dir: str) -> dict:
    where = join(data_dir, SPLIT_MARKER)
    try:
        with open_input(where, "rb") as f:
            found = json.load(f)
        if not isinstance(found, dict):
            raise TypeError
        return found
    except (ValueError, TypeError):
        raise SentituneError(f"{where} is not prepare's report; run `sentitune prepare` again") from None


def _entry(report: dict | None, *keys: str):
    found = report
    for key in keys:
        if not isinstance(found, dict):
            return None
        found = found.get(key)
    return found


def _split_files(data_dir: str, names: set[str], written: str | None) -> dict[str, str]:
    """The train/val/test files of a prepared folder listing `names`, by split (csv, parquet, jsonl or
    tsv); the format prepare wrote (`written`) wins over files of another format beside it."""
    extensions = SPLIT_EXTENSIONS
    if written in SPLIT_EXTENSIONS:
        extensions = (written, *[e for e in SPLIT_EXTENSIONS if e != written])
    found = {}
    for split, stem in SPLIT_FILES.items():
        path = next(
            (
                join(data_dir, f"{alias}.{ext}")
                for alias in SPLIT_ALIASES.get(split, (stem,))
                for ext in extensions
                if f"{alias}.{ext}" in names
            ),
            None,
        )
        if path:
            found[split] = path
    if "train" not in found:
        raise SentituneError(
            f"--data {data_dir} has no train.csv or train.parquet "
            f"(found: {', '.join(sorted(names)[:8])}); run `sentitune prepare` first"
        )
    return found
