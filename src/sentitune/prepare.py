"""`sentitune prepare`: read posts, label, clean and split them stratified by class, write the splits.

`prepare()` streams its inputs in chunks: pass 1 cleans and labels each chunk, spills it to a local
Parquet scratch file and keeps only three small arrays per row (text hash, normalised-text hash,
class id); duplicates and the stratified split are decided on those arrays; pass 2 streams the
scratch file into the split files. Memory grows by ~17 bytes a row, not with the text.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ftfy
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sentitune import __version__
from sentitune.builtin import DATASET_DESCRIPTION, default_dataset
from sentitune.config import PrepareConfig
from sentitune.errors import SentituneError
from sentitune.labels import (
    DistinctLabels,
    LabelRule,
    apply_label_rule,
    decide_label_rule,
    label_options_hint,
    missing_as_na,
    parse_labels,
    parse_thresholds,
    vader_scores,
)
from sentitune.labelstudio import (
    MODEL_RUN,
    ROUND_FIELDS,
    export_flavour,
    labelling_rounds,
    normalise_for_near_duplicates,
    read_export,
    text_hashes,
)
from sentitune.layout import (
    HUMAN_LABEL,
    LABEL_SOURCE_COLUMN,
    REPORT,
    SPLIT_EXTENSIONS,
    SPLIT_FILES,
    SPLIT_LABELS,
    SPLIT_MARKER,
    WEAK_LABEL,
)
from sentitune.report import ReportInput, render
from sentitune.storage import StagedOutput
from sentitune.tables import InputStats, pick_label_column, pick_text_column, read_chunks

log = logging.getLogger("sentitune")

SPLITS = tuple(SPLIT_FILES.values())  # the file stems, in order: train, eval, test
CONFLICTS = "conflicts.csv"  # posts read twice with different labels, when there are any
SELECTION_COLUMNS = {"text", "model_label", "label"}  # selected.csv of `sentitune select`

# ----------------------------------------------------------------------------- cleaning

_CR = re.compile(r"\r\n?")

_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def repair_encoding(texts: pd.Series) -> tuple[pd.Series, int, int]:
    """Posts as they were written: ftfy's encoding fixes re-decode a post that is mojibake as a whole
    (UTF-8 read as Windows-1252 or latin-1: 'donâ€™t') and read the control codes a latin-1 decode leaves
    for bytes 0x80-0x9F as the Windows-1252 characters they are ('don\\x92t'). Nothing else of ftfy is
    applied (quotes, HTML entities, character widths and Unicode normal form stay as written), nor its
    repair of fragments inside a post: on the embedded corpus, whose garbled bytes were lost before it
    was written, that step turned fragments into CJK and Armenian letters and restored no text. ASCII
    posts hold nothing to fix. Returns the texts, how many ftfy changed, and how many still look garbled
    to ftfy's own check."""
    rows = np.flatnonzero(texts.str.contains(_NON_ASCII).to_numpy(bool, na_value=False))
    if not len(rows):
        return texts, 0, 0
    before = texts.iloc[rows].tolist()
    after = [ftfy.fix_encoding(t, _WHOLE_POSTS) for t in before]
    changed = sum(a != b for a, b in zip(after, before, strict=True))
    if changed:
        texts = texts.copy()
        texts.iloc[rows] = after
    return texts, changed, sum(ftfy.is_bad(t) for t in after)


_WHOLE_POSTS = ftfy.TextFixerConfig(decode_inconsistent_utf8=False)


# ----------------------------------------------------------------------------- prepare


@dataclass
class PrepareResult:
    output_dir: str
    report: dict


@dataclass
class CleanRows:
    """Pass 1's result: per kept row, two text hashes and the class id (the texts are in the scratch
    file); and what the report needs about the inputs."""

    hash: np.ndarray  # of the text as written
    norm: np.ndarray  # of the text after case, whitespace, @user and link normalisation
    label: np.ndarray  # class ids, int8
    dropped: Counter  # reason -> rows
    stats: list[InputStats]
    rule: LabelRule
    columns: list[dict]  # per input: the text and label columns used
    repaired: int = 0  # posts whose encoding ftfy repaired
    garbled: int = 0  # posts that still look garbled after the repair
    human: np.ndarray | None = None  # per row: the label was read from the input (not VADER's)
    exports: list[dict] = field(default_factory=list)  # per Label Studio export: what it held
    conflicting_duplicates: int = 0  # duplicate texts whose label differs from the kept one's
    conflicts: dict = field(default_factory=dict)  # posts labelled differently by people: how many, policy
    weak_overridden: int = 0  # VADER's labels of posts that people labelled too
    rounds: list[dict] = field(default_factory=list)  # per run whose selection people labelled: how it did


def prepare(cfg: PrepareConfig) -> PrepareResult:
    """Read, label, clean and split `cfg.inputs` into `cfg.output_dir` (see the module docstring)."""
    inputs = list(cfg.inputs)
    if not inputs:
        inputs = [default_dataset()]
        log.info("no input given: using the embedded dataset, %s", DATASET_DESCRIPTION)
    every_split_file = [f"{stem}.{ext}" for stem in SPLITS for ext in SPLIT_EXTENSIONS]
    out = StagedOutput(
        cfg.output_dir,
        occupied_by=[*(f"{s}.{cfg.format}" for s in SPLITS), SPLIT_MARKER, SPLIT_LABELS],
        marker=SPLIT_MARKER,
        what="prepared splits",
        overwrite=cfg.overwrite,
        option="--output-dir",
        command="prepare",
        replaces=[
            *every_split_file,
            SPLIT_MARKER,
            SPLIT_LABELS,
            REPORT,
            CONFLICTS,
        ],  # --overwrite: the whole set, any format
    )
    with out:
        scratch = out.scratch() / "clean.parquet"
        rows = _clean_inputs(cfg, inputs, scratch)
        keep, near = _deduplicate(rows, cfg.drop_near_duplicates, cfg.conflicts)
        if rows.conflicts["posts"]:
            _write_conflicts(scratch, rows, out.path(CONFLICTS), inputs)
        classes = rows.rule.classes
        split_of = _stratified_split(rows.label, keep, cfg, classes)
        boundaries = rows.rule.boundaries()
        mixed = bool(rows.human[keep].any() and not rows.human[keep].all())
        counts = _write_splits(
            scratch, rows, split_of, cfg, out, near, classes, boundaries is not None, mixed
        )
        augmented = _augment_training_split(cfg, out, rows) if cfg.augment else None
        if augmented:
            counts["train"].update(augmented["class_counts"])
        report = _report(cfg, inputs, rows, keep, near, counts)
        if augmented:
            report["augmented"] = augmented
        label_set = {"labels": list(classes)} | ({"score_boundaries": list(boundaries)} if boundaries else {})
        out.path(SPLIT_LABELS).write_text(json.dumps(label_set, indent=2) + "\n")
        out.path(REPORT).write_text(
            render(ReportInput(title="prepared data: " + ", ".join(os.path.basename(str(i)) for i in inputs), metrics=None, labels=list(classes),
                               data=report, class_counts=report["class_counts"]))
        )  # fmt: skip
        out.path(SPLIT_MARKER).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        out.commit()
    return PrepareResult(cfg.output_dir, report)


def _clean_inputs(cfg: PrepareConfig, inputs: list[str], scratch: Path) -> CleanRows:
    """Pass 1: clean every chunk and spill (text, raw label) to Parquet, keeping per-row hashes. The
    label rule is then decided from the distinct raw labels of all inputs (never from one chunk),
    and the raw labels are mapped to class ids from the scratch file's label column."""
    hashes, norm_hashes = [], []
    dropped = Counter()
    repaired = garbled = 0
    stats, columns_used = [], []
    distinct = DistinctLabels()
    human, exports = [], []
    carried = []  # (first row, the ROUND_FIELDS) of labelled posts a selection carries
    writer = None
    try:
        for index, path in enumerate(inputs):
            st = InputStats(path)
            stats.append(st)
            text_col = label_col = None
            chunks = read_chunks(path, cfg.chunk_rows, st)
            if export_flavour(path):
                export = read_export(path, cfg.text_column, cfg.label_column)
                exports.append(_export_stats(export))
                st.rows = export.tasks
                chunks, text_col, label_col = [export.rows], "text", "label"
                columns_used.append({"path": path, "text": export.text_key, "label": export.label_key})
            for df in chunks:
                if text_col is None:
                    cols = [str(c) for c in df.columns]
                    text_col = pick_text_column(df, cfg.text_column, path)
                    if cfg.label_source != "vader":
                        label_col = pick_label_column(cols, cfg.label_column, path)
                    elif SELECTION_COLUMNS <= set(cols):  # a selection people labelled: theirs beside VADER's
                        label_col = "label"
                    columns_used.append({"path": path, "text": text_col, "label": label_col})
                    _log_columns(cfg, path, text_col, label_col)
                # A bare CR inside a field is a line break to CSV readers; unify line breaks as LF.
                texts = df[text_col].str.replace(_CR, "\n", regex=True).str.strip()
                empty = (texts.isna() | (texts == "")).to_numpy()
                dropped["empty_text"] += int(empty.sum())
                texts, fixed, still = repair_encoding(texts[~empty].reset_index(drop=True))
                repaired, garbled = repaired + fixed, garbled + still
                if label_col is None:
                    raw = vader_scores(texts)
                else:
                    raw = missing_as_na(df[label_col][~empty]).reset_index(drop=True)
                missing = raw.isna().to_numpy()
                dropped["missing_label"] += int(missing.sum())
                texts, raw = texts[~missing].reset_index(drop=True), raw[~missing].reset_index(drop=True)
                read_by_people = label_col is not None
                # a labelled selection: the run that chose each post, its figures and the model's label
                if read_by_people and MODEL_RUN in df.columns:
                    part = df[[f for f in ROUND_FIELDS if f in df.columns]][~empty].reset_index(drop=True)
                    carried.append((sum(map(len, hashes)), part[~missing].reset_index(drop=True)))
                human.append(np.full(len(texts), read_by_people))
                if not (
                    read_by_people and cfg.label_source == "vader"
                ):  # people's names beside VADER's scores
                    distinct.update(raw)
                hashes.append(text_hashes(texts))
                norm_hashes.append(text_hashes(normalise_for_near_duplicates(texts)))
                table = pa.table(
                    {
                        "text": pa.array(texts.astype(object), pa.string()),
                        "raw_label": pa.array(raw.astype(object), pa.string()),
                        "input": pa.array(np.full(len(texts), index, np.int32)),
                        "human": pa.array(np.full(len(texts), read_by_people)),
                    }
                )
                if writer is None:
                    writer = pq.ParquetWriter(scratch, table.schema)
                writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    total = sum(len(h) for h in hashes)
    if total == 0:
        raise SentituneError(
            f"nothing left after cleaning ({sum(s.rows for s in stats)} rows read, "
            f"{dropped['empty_text']} empty, {dropped['missing_label']} without a label); "
            "check --text-column and --label-column"
        )
    source = "score" if cfg.label_source == "vader" else cfg.label_source
    where = inputs[0] if len(inputs) == 1 else f"the label columns of {len(inputs)} inputs"
    classes = parse_labels(cfg.labels)
    rule = decide_label_rule(
        distinct.sample(),
        source,
        cfg.neutral_band,
        cfg.label_map,
        where=where,
        classes=classes,
        thresholds=parse_thresholds(cfg.thresholds, classes),
        in_prepare=True,
    )
    if cfg.label_source == "vader":
        rule.source = "vader"
    labels = []
    for batch in pq.ParquetFile(scratch).iter_batches(
        batch_size=cfg.chunk_rows, columns=["raw_label", "input", "human"]
    ):
        raw = batch.column("raw_label").to_pandas().astype("string")
        origin = batch.column("input").to_numpy()
        named = batch.column("human").to_numpy(zero_copy_only=False) & (rule.source == "vader")
        ids = np.zeros(len(raw), np.int8)
        if (~named).any():
            ids[~named] = apply_label_rule(
                rule, raw[~named].reset_index(drop=True), lambda bad, o=origin[~named]: inputs[o[bad][0]]
            )
        if named.any():  # people's labels beside VADER's scores: class names
            ids[named] = class_ids(raw[named], rule.classes, inputs[origin[named][0]])
        labels.append(ids)
    log.info("labels: %s", json.dumps(rule.describe(), ensure_ascii=False))
    labels = np.concatenate(labels)
    unseen = [c for i, c in enumerate(rule.classes) if not (labels == i).any()]
    if unseen and rule.source == "category":
        log.warning(
            "%s: no post is labelled %s, a class the model would never see; %s",
            where,
            " or ".join(unseen),
            label_options_hint(distinct.sample(), True, where),
        )
    return CleanRows(
        np.concatenate(hashes),
        np.concatenate(norm_hashes),
        labels,
        dropped,
        stats,
        rule,
        columns_used,
        repaired,
        garbled,
        np.concatenate(human),
        exports,
        rounds=_labelling_rounds(carried, labels, rule.classes),
    )


def _labelling_rounds(carried: list, labels: np.ndarray, classes: tuple[str, ...]) -> list[dict]:
    """labelstudio.labelling_rounds of the labelled posts that carry the run that chose them."""
    if not carried:
        return []
    frame = pd.concat([part for _, part in carried], ignore_index=True)
    rows = np.concatenate([np.arange(first, first + len(part)) for first, part in carried]).astype(int)
    return labelling_rounds(frame, np.asarray(classes)[labels[rows]], classes)


def class_ids(raw: pd.Series, classes: tuple[str, ...], where: str) -> np.ndarray:
    """People's labels (class names, any case) as class ids; a name that is no class is refused."""
    known = {c.lower(): i for i, c in enumerate(classes)}
    names = raw.astype(str).str.strip().str.lower()
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise SentituneError(
            f"{where}: unknown label {unknown[0]!r} (the labels are {', '.join(classes)}); relabel those posts "
            "or name the classes with --labels"
        )
    return names.map(known).to_numpy(np.int8)


def _export_stats(export) -> dict:
    """What a Label Studio export held, logged and kept for the report."""
    stats = {
        "path": export.path,
        "format": export.flavour,
        "tasks": export.tasks,
        "labelled": len(export.rows),
        "skipped": export.skipped,
        "without_a_label": export.unlabelled,
    }
    log.info(
        "%s: Label Studio %s export, %d %s: %d labels by people, %d skipped or cancelled, %d without a "
        "person's label (a pre-annotation is not one)",
        export.path,
        export.flavour,
        export.tasks,
        "tasks" if export.flavour == "JSON" else "rows",
        len(export.rows),
        export.skipped,
        export.unlabelled,
    )
    return stats


def _log_columns(cfg: PrepareConfig, path: str, text_col: str, label_col: str | None) -> None:
    """Say which columns are read, and how to choose others where they were found by name."""
    label = f"label column '{label_col}'" if label_col else "labels from VADER"
    found = [flag for flag, given in (("--text-column", cfg.text_column), ("--label-column", cfg.label_column))
             if not given and (flag == "--text-column" or label_col)]  # fmt: skip
    log.info(
        "%s: text column '%s', %s%s",
        path,
        text_col,
        label,
        f" (found by name; choose others with {' / '.join(found)})" if found else "",
    )


def _first_occurrences(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(is first occurrence, index of the first occurrence of each row's value)."""
    _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    is_first = np.zeros(len(values), bool)
    is_first[first] = True
    return is_first, first[inverse]


def _deduplicate(rows: CleanRows, drop_near: bool, conflicts: str = "later") -> tuple[np.ndarray, dict]:
    """One row per text. A text read once keeps its row. Read several times, it keeps its first row when
    every label agrees; a label by people (read from an input) overrides VADER's; people who disagree make
    a conflict, where the later label wins (inputs in the order given, rows and annotations in their
    order), or with `conflicts` 'drop' the post goes."""
    first, group = _first_occurrences(rows.hash)
    order = np.arange(len(group))
    has_human = np.zeros(len(group), bool)
    has_human[group[rows.human]] = True
    counted = rows.human | ~has_human[group]  # the rows whose labels decide: people's, where there are any
    last = np.full(len(group), -1)
    np.maximum.at(last, group[counted], order[counted])
    low, high = np.full(len(group), 127), np.full(len(group), -1)
    np.minimum.at(low, group[counted], rows.label[counted])
    np.maximum.at(high, group[counted], rows.label[counted])
    repeated = np.bincount(group, minlength=len(group)) > 1
    conflict = repeated & (low != high) & (high >= 0)  # per group (indexed by its first row)
    overridden = repeated & has_human & ~rows.human[order]  # a weak first row of a group people labelled
    chosen = np.where(conflict | overridden, last, order)  # per group: the row it keeps
    keep = np.zeros(len(group), bool)
    keep[chosen[first]] = True
    gone = conflict[group] if conflicts == "drop" else np.zeros(len(group), bool)
    keep &= ~gone
    rows.conflicts = {
        "posts": int(conflict.sum()),
        "rows": int(conflict[group].sum()),
        "policy": conflicts,
        "file": CONFLICTS if conflict.any() else None,
    }
    rows.weak_overridden = int(
        (~rows.human & has_human[group] & (rows.label != rows.label[last[group]])).sum()
    )
    kept_label = rows.label[chosen[group]]
    rows.conflicting_duplicates = int(((rows.label != kept_label) & ~keep & ~gone).sum())
    rows.dropped["duplicate_text"] += int((~keep & ~gone).sum())
    if gone.any():
        rows.dropped["conflicting_labels"] += int(gone.sum())
    if conflict.any():
        log.warning(
            "%d posts were labelled differently by people (%d labels); %s; they are listed in %s",
            rows.conflicts["posts"],
            rows.conflicts["rows"],
            "the later label wins" if conflicts == "later" else "they are dropped (--conflicts drop)",
            CONFLICTS,
        )
    kept = np.flatnonzero(keep)
    near_first, near_first_of = _first_occurrences(rows.norm[kept])
    near_rows = kept[~near_first]
    examples = [(int(kept[near_first_of[i]]), int(kept[i])) for i in np.flatnonzero(~near_first)[:5]]
    if drop_near:
        keep[near_rows] = False
        rows.dropped["near_duplicate"] += len(near_rows)
    return keep, {"rows": len(near_rows), "dropped": drop_near, "example_rows": examples}


def _write_conflicts(scratch: Path, rows: CleanRows, path: Path, inputs: list[str]) -> None:
    """conflicts.csv: each post people labelled differently, its labels in order, and what was kept."""
    _, group = _first_occurrences(rows.hash)
    counted = rows.human | ~np.isin(group, group[rows.human])
    labels_of: dict[int, list[str]] = {}
    for g, i in zip(group[counted], np.flatnonzero(counted), strict=True):
        labels_of.setdefault(int(g), []).append(int(i))
    wanted = {g: i for g, i in labels_of.items() if len({int(rows.label[j]) for j in i}) > 1}
    text_of, input_of = {}, {}
    offset = 0
    for batch in pq.ParquetFile(scratch).iter_batches(columns=["text", "input"]):
        texts, origin = batch.column("text").to_pylist(), batch.column("input").to_numpy()
        for g in wanted:
            if offset <= g < offset + len(texts):
                text_of[g] = texts[g - offset]
        for j in (j for i in wanted.values() for j in i if offset <= j < offset + len(texts)):
            input_of[j] = inputs[origin[j - offset]]
        offset += len(texts)
    classes = np.asarray(rows.rule.classes)
    pd.DataFrame(
        {
            "text": [text_of[g] for g in wanted],
            "labels": [" > ".join(classes[rows.label[i]]) for i in wanted.values()],
            "kept": [
                classes[rows.label[i[-1]]] if rows.conflicts["policy"] == "later" else ""
                for i in wanted.values()
            ],
            "inputs": [" > ".join(input_of[j] for j in i) for i in wanted.values()],
        }
    ).to_csv(path, index=False, lineterminator="\n")


def _stratified_split(labels: np.ndarray, keep: np.ndarray, cfg: PrepareConfig, classes) -> np.ndarray:
    """Split id per row (0 train, 1 eval, 2 test, -1 dropped), stratified by class, seeded."""
    rng = np.random.default_rng(cfg.seed)
    split_of = np.full(len(labels), -1, np.int8)
    fractions = (1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction)
    problems = []
    for cls in range(len(classes)):
        rows = rng.permutation(np.flatnonzero(keep & (labels == cls)))
        n = len(rows)
        if n == 0:
            continue
        n_eval, n_test = round(n * cfg.val_fraction), round(n * cfg.test_fraction)
        sizes = (n - n_eval - n_test, n_eval, n_test)
        if any(size == 0 and f > 0 for size, f in zip(sizes, fractions, strict=True)):
            need = int(np.ceil(0.5 / min(f for f in fractions if f > 0)))
            problems.append(
                f"class '{classes[cls]}' has {n} rows, too few to stratify "
                f"{fractions[0]:g}/{fractions[1]:g}/{fractions[2]:g} (needs about {need})"
            )
            continue
        split_of[rows[sizes[0] : sizes[0] + n_eval]] = 1
        split_of[rows[sizes[0] + n_eval :]] = 2
        split_of[rows[: sizes[0]]] = 0
    if problems:
        raise SentituneError("; ".join(problems) + "; add rows, or lower --val-fraction/--test-fraction")
    return split_of


WORD_EDGES = (5, 10, 20, 40)  # posts by number of words: up to 5, 6-10, 11-20, 21-40, more
WORD_BINS = ("1-5", "6-10", "11-20", "21-40", "41+")


def _write_splits(
    scratch: Path,
    rows: CleanRows,
    split_of: np.ndarray,
    cfg: PrepareConfig,
    out: StagedOutput,
    near: dict,
    classes: tuple[str, ...],
    with_scores: bool,
    mixed: bool = False,
) -> dict:
    """Pass 2: stream the scratch file into one file per split, in input order; labels read from
    scores (a score column, VADER) keep the score beside the class (`--soft-targets` trains on it;
    people's labels beside VADER's have none). Where people's labels and VADER's are mixed (`mixed`), a
    label_source column says which each row's is (human or vader), so training can weigh them."""
    labels = rows.label
    counts = {s: Counter() for s in SPLITS}
    counts["words"] = Counter()  # posts by number of words, over every split
    wanted = {i for pair in near["example_rows"] for i in pair}
    example_text = {}
    writers, handles = {}, {}
    offset = 0
    columns = ["text", "raw_label"] if with_scores else ["text"]
    schema = [("text", pa.string()), ("label", pa.string())] + (
        [("score", pa.float64())] if with_scores else []
    )
    if mixed:
        schema.append((LABEL_SOURCE_COLUMN, pa.string()))
    try:
        for batch in pq.ParquetFile(scratch).iter_batches(batch_size=cfg.chunk_rows, columns=columns):
            df = batch.to_pandas()
            df["label"] = np.asarray(classes)[labels[offset : offset + len(df)]]
            by_people = rows.human[offset : offset + len(df)]
            if with_scores:
                raw = np.array(df.pop("raw_label"), dtype=object)
                if rows.rule.source == "vader":
                    raw[by_people] = None  # a person's label beside VADER's scores has no score
                df["score"] = pd.to_numeric(pd.Series(raw, index=df.index)).astype(np.float64)
            if mixed:
                df[LABEL_SOURCE_COLUMN] = np.where(by_people, HUMAN_LABEL, WEAK_LABEL)
            where = split_of[offset : offset + len(df)]
            for i in wanted:
                if offset <= i < offset + len(df):
                    example_text[i] = df["text"].iat[i - offset]
            offset += len(df)
            words = df["text"].str.split().str.len().to_numpy()
            counts["words"].update(np.asarray(WORD_BINS)[np.digitize(words, WORD_EDGES, right=True)].tolist())
            for sid, name in enumerate(SPLITS):
                part = df[where == sid]
                if part.empty:
                    continue
                counts[name].update(part["label"].tolist())
                _append(part, name, cfg.format, schema, out, writers, handles)
    finally:
        for h in handles.values():
            h.close()
        for w in writers.values():
            w.close()
    for name in SPLITS:  # a split with no rows still gets its (empty) file
        if name not in handles and name not in writers:
            _append(
                pd.DataFrame({c: pd.Series([], dtype=str if t == pa.string() else float) for c, t in schema}),
                name,
                cfg.format,
                schema,
                out,
                writers,
                handles,
            )
            (handles.get(name) or writers.get(name)).close()
    near["examples"] = [[example_text.get(a), example_text.get(b)] for a, b in near.pop("example_rows")]
    return counts


# Synthetic posts for --augment: half delete words (each with this chance), half join two posts.
DELETE_WORD = 0.15


def synthetic_posts(texts: list[str], per_post: int, seed: int) -> list[str]:
    """`per_post` rounds over `texts`: each post either loses each word with chance DELETE_WORD (posts of
    4+ words; kept when 3+ words remain and some went) or keeps its first words and takes the last words
    of a random other post (never all of either)."""
    rng = random.Random(seed)
    words = [t.split() for t in texts]
    made = []
    for _ in range(per_post):
        for index, post in enumerate(words):
            if len(post) >= 4 and rng.random() < 0.5:
                kept = [w for w in post if rng.random() >= DELETE_WORD]
                if 3 <= len(kept) < len(post):
                    made.append(" ".join(kept))
                continue
            if len(words) < 2:
                continue
            pick = rng.randrange(len(words) - 1)
            other = words[pick + (pick >= index)]  # any post but this one
            if len(post) >= 2 and len(other) >= 2:
                head = post[: rng.randint(1, len(post) - 1)]
                made.append(" ".join(head + other[rng.randint(1, len(other) - 1) :]))
    return made


def _augment_training_split(cfg: PrepareConfig, out: StagedOutput, rows: CleanRows) -> dict:
    """Add `cfg.augment` synthetic posts per training post to the training split, labelled by VADER as
    the real ones were. A synthetic post that repeats any post read (any split, after near-duplicate
    normalisation) or another synthetic one is dropped, so no test post is trained on."""
    path = out.path(f"{SPLIT_FILES['train']}.{cfg.format}")
    if cfg.format == "parquet":
        train = pd.read_parquet(path)
    else:
        train = pd.read_csv(path, dtype={"text": str, "label": str}, keep_default_na=False)
    made = pd.Series(synthetic_posts(train["text"].tolist(), cfg.augment, cfg.seed), dtype=object)
    norm = text_hashes(normalise_for_near_duplicates(made.astype(str)))
    fresh = _first_occurrences(norm)[0] & ~np.isin(norm, rows.norm)
    made = made[fresh].reset_index(drop=True)
    raw = vader_scores(made).astype("string")
    ids = apply_label_rule(rows.rule, raw, "synthetic posts")
    extra = pd.DataFrame(
        {
            "text": made,
            "label": np.asarray(rows.rule.classes)[ids],
            "score": pd.to_numeric(raw).astype(np.float64),
        }
    )
    train = pd.concat([train, extra[train.columns]], ignore_index=True)
    if cfg.format == "parquet":
        train.to_parquet(path, index=False)
    else:
        train.to_csv(path, index=False, lineterminator="\n")
    log.info("augment: %d synthetic training posts labelled by VADER", len(extra))
    return {
        "per_post": cfg.augment,
        "posts": len(extra),
        "dropped_as_duplicates": int((~fresh).sum()),
        "delete_word": DELETE_WORD,
        "class_counts": {c: int((extra["label"] == c).sum()) for c in rows.rule.classes},
    }


def _append(
    part: pd.DataFrame, name: str, fmt: str, schema: list, out: StagedOutput, writers: dict, handles: dict
) -> None:
    if fmt == "parquet":
        table = pa.Table.from_pandas(part, preserve_index=False, schema=pa.schema(schema))
        if name not in writers:
            writers[name] = pq.ParquetWriter(out.path(f"{name}.parquet"), table.schema)
        writers[name].write_table(table)
        return
    first = name not in handles
    if first:
        handles[name] = open(out.path(f"{name}.csv"), "w", encoding="utf-8", newline="")
    part.to_csv(handles[name], header=first, index=False, lineterminator="\n")


def _report(
    cfg: PrepareConfig, inputs: list[str], rows: CleanRows, keep: np.ndarray, near: dict, counts: dict
) -> dict:
    rule: LabelRule | None = rows.rule
    return {
        "sentitune_version": __version__,
        "inputs": [asdict(s) for s in rows.stats],
        "columns": rows.columns,
        "rows_read": sum(s.rows for s in rows.stats),
        "rows_decoded_as_latin1": sum(s.latin1_lines for s in rows.stats),
        "rows_with_invalid_text": sum(s.invalid_text_rows for s in rows.stats),
        "text_repair": {
            "by": f"ftfy {ftfy.__version__} (encoding fixes of whole posts)",
            "rows_repaired": rows.repaired,
            "rows_still_garbled": rows.garbled,
        },
        "rows_dropped": dict(rows.dropped),
        "duplicates_with_other_label": rows.conflicting_duplicates,
        "conflicts": rows.conflicts,
        "label_sources": {
            HUMAN_LABEL: int(rows.human[keep].sum()),
            WEAK_LABEL: int((~rows.human[keep]).sum()),
            "weak_labels_overridden_by_people": rows.weak_overridden,
        },
        **({"label_studio": rows.exports} if rows.exports else {}),
        **({"labelling_rounds": rows.rounds} if rows.rounds else {}),
        "rows_kept": int(keep.sum()),
        "labels": rule.describe() if rule else None,
        "near_duplicates": near,
        "split": {
            "seed": cfg.seed,
            "fractions": {
                "train": round(1 - cfg.val_fraction - cfg.test_fraction, 6),
                "eval": cfg.val_fraction,
                "test": cfg.test_fraction,
            },
            "format": cfg.format,
        },
        "class_counts": {s: {label: counts[s].get(label, 0) for label in rule.classes} for s in SPLITS},
        "post_words_histogram": {b: counts["words"].get(b, 0) for b in WORD_BINS},
    }
