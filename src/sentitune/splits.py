"""The labelled splits that training, evaluation and export read: a folder written by `prepare`, or
the walkthrough's three files, or any labelled file.

On disk the validation split is `eval.*` (the walkthrough's name); in code and in metrics it is `val`.
SPLIT_FILES is the one place that maps one to the other.
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
from sentitune.storage import exists, join, listdir_names, open_input
from sentitune.tables import pick_label_column, pick_text_column, read_chunks

log = logging.getLogger("sentitune")

SPLIT_FILES = {"train": "train", "val": "eval", "test": "test"}  # split in code -> file stem on disk
SPLIT_MARKER = "prepare_report.json"  # written last by prepare: the folder is complete
SPLIT_LABELS = "labels.json"
SPLIT_ALIASES = {"val": ("eval", "val", "validation")}  # stems accepted when reading a folder
SPLIT_EXTENSIONS = ("csv", "parquet", "jsonl", "tsv")
SCORE_COLUMN = "score"  # beside `label` when prepare read the labels from scores


@dataclass
class LabelledTexts:
    """One split in memory: the texts and their class ids."""

    path: str
    texts: list[str]
    labels: np.ndarray  # int64 class ids
    classes: tuple[str, ...] = LABELS  # the names of the ids, in order
    scores: np.ndarray | None = None  # float64, the score each label was read from (when asked for and kept)

    def __len__(self) -> int:
        return len(self.texts)


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
    if kept is not None and not np.isfinite(kept).all():
        bad = int((~np.isfinite(kept)).sum())
        raise SentituneError(
            f"{path}: the {SCORE_COLUMN} column is not all numbers ({bad} row{' is' if bad == 1 else 's are'} "
            "not); run `sentitune prepare` again"
        )
    return LabelledTexts(path, texts, labels.astype(np.int64), tuple(classes), kept)


def load_splits(
    cfg, classes: tuple[str, ...] | None = None, train_scores: bool = False
) -> dict[str, LabelledTexts]:
    """The train/val/test splits named by a config with `data` (a prepared folder) or
    `training_file` / `validation_file` / `testing_file`, plus `text_column`, `label_column` and `labels`
    (`classes`: the label set, when the caller has read it already; `train_scores`: the training split's
    scores too)."""
    classes = classes or data_classes(cfg)
    if cfg.data:
        paths = find_split_files(cfg.data)
    else:
        paths = {"train": cfg.training_file, "val": cfg.validation_file, "test": cfg.testing_file}
    splits = {}
    for name, path in paths.items():
        if path:
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


def data_classes(cfg) -> tuple[str, ...]:
    """The label set of a config's data: --labels, else the prepared folder's labels.json, else the
    default classes; --labels that disagree with the folder's are refused."""
    given = parse_labels(cfg.labels) if cfg.labels is not None else None
    recorded = None
    if cfg.data and exists(join(cfg.data, SPLIT_LABELS)):
        recorded = tuple(str(n) for n in _label_set(cfg.data)["labels"])
    if given and recorded and given != recorded:
        raise SentituneError(
            f"--labels {','.join(given)} differs from the classes of {cfg.data} ({','.join(recorded)}); "
            "drop --labels or prepare the data with them"
        )
    return given or recorded or LABELS


def score_boundaries(data_dir: str | None) -> tuple[float, ...] | None:
    """The score boundaries between classes a prepared folder's labels were read through (None when its
    labels were not scores, or it was prepared before they were recorded)."""
    if not data_dir or not exists(join(data_dir, SPLIT_LABELS)):
        return None
    label_set = _label_set(data_dir)
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


def find_split_files(data_dir: str) -> dict[str, str | None]:
    """The train/val/test files of a prepared folder, by split (csv, parquet, jsonl or tsv)."""
    names = listdir_names(data_dir)
    if not names:
        raise SentituneError(f"--data {data_dir} is not a folder or is empty; run `sentitune prepare` first")
    extensions = SPLIT_EXTENSIONS
    if SPLIT_MARKER in names:  # the format prepare wrote wins over files of another format beside it
        written = prepared_format(data_dir)
        extensions = (written, *[e for e in SPLIT_EXTENSIONS if e != written]) if written else extensions
    found = {}
    for split, stem in SPLIT_FILES.items():
        found[split] = next(
            (
                join(data_dir, f"{alias}.{ext}")
                for alias in SPLIT_ALIASES.get(split, (stem,))
                for ext in extensions
                if f"{alias}.{ext}" in names
            ),
            None,
        )
    if found["train"] is None:
        raise SentituneError(
            f"--data {data_dir} has no train.csv or train.parquet "
            f"(found: {', '.join(sorted(names)[:8])}); run `sentitune prepare` first"
        )
    return found


def prepared_format(data_dir: str) -> str | None:
    """The split format a prepared folder's report records (csv, parquet), or None when unreadable."""
    return _prepare_report_entry(data_dir, "split", "format")


def prepared_label_source(data_dir: str | None) -> str | None:
    """Where a prepared folder's labels came from (score, category, vader), or None when not recorded."""
    return _prepare_report_entry(data_dir, "labels", "source") if data_dir else None


def _prepare_report_entry(data_dir: str, *keys: str):
    try:
        with open_input(join(data_dir, SPLIT_MARKER), "rb") as f:
            found = json.load(f)
        for key in keys:
            found = found[key]
        return found
    except (SentituneError, ValueError, KeyError, TypeError):
        return None
