"""Read posts from any fsspec URL, map labels to classes, clean, split and write the splits.

`prepare()` streams its inputs in chunks: pass 1 cleans and labels each chunk, spills it to a local
Parquet scratch file and keeps only three small arrays per row (text hash, normalised-text hash,
class id); duplicates and the stratified split are decided on those arrays; pass 2 streams the
scratch file into the split files. Memory grows by ~17 bytes a row, not with the text.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sentitune import LABELS, __version__
from sentitune.config import PrepareConfig
from sentitune.errors import SentituneError
from sentitune.storage import StagedOutput, open_input

log = logging.getLogger("sentitune")

SPLITS = ("train", "eval", "test")  # the walkthrough's file names
TEXT_FALLBACK = "text"
LABEL_CANDIDATES = ("sentiment", "label", "labels", "Target", "target", "score", "polarity")
TRAIN_LABEL_CANDIDATES = ("Target", "label", "sentiment", "labels", "target", "score")
LABEL_SYNONYMS = {"negative": 0, "neg": 0, "neutral": 1, "neu": 1, "positive": 2, "pos": 2}
SPLIT_MARKER = "prepare_report.json"

# ----------------------------------------------------------------------------- reading


class _Utf8OrLatin1(io.RawIOBase):
    """Re-encode a byte stream line by line as UTF-8: lines that are not valid UTF-8 are decoded as
    latin-1 (every byte is valid there) and counted, so mixed-encoding files read without loss."""

    def __init__(self, raw):
        self._raw = io.BufferedReader(raw) if not hasattr(raw, "readline") else raw
        self._pending = b""
        self.latin1_lines = 0
        self._first = True

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            line = self._raw.readline()
            if not line:
                return 0
            if self._first:
                line = line.removeprefix(b"\xef\xbb\xbf")
                self._first = False
            try:
                line.decode("utf-8")
                self._pending = line
            except UnicodeDecodeError:
                self.latin1_lines += 1
                self._pending = line.decode("latin-1").encode("utf-8")
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def file_format(path: str) -> str:
    name = str(path).lower()
    for suffix in (".gz", ".bz2", ".xz", ".zst", ".zip"):
        name = name.removesuffix(suffix)
    if name.endswith((".tsv", ".tab")):
        return "tsv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return "csv"


@dataclass
class InputStats:
    path: str
    rows: int = 0
    latin1_lines: int = 0


def read_chunks(path: str, chunk_rows: int, stats: InputStats | None = None) -> Iterator[pd.DataFrame]:
    """Yield the file as DataFrames of at most `chunk_rows` rows, every cell as a string or NA."""
    fmt = file_format(path)
    stats = stats or InputStats(path)
    handle = open_input(path, "rb", compression=None if fmt == "parquet" else "infer")
    try:
        if fmt == "parquet":
            parquet = pq.ParquetFile(handle)
            for batch in parquet.iter_batches(batch_size=chunk_rows):
                df = batch.to_pandas().astype("string")
                stats.rows += len(df)
                yield df
            return
        if fmt == "jsonl":
            text = io.TextIOWrapper(handle, encoding="utf-8", errors="strict")
            reader = pd.read_json(text, lines=True, chunksize=chunk_rows, dtype=False)
        else:
            decoder = _Utf8OrLatin1(handle)
            text = io.TextIOWrapper(io.BufferedReader(decoder), encoding="utf-8", newline="")
            reader = pd.read_csv(
                text,
                sep="\t" if fmt == "tsv" else ",",
                dtype="string",
                chunksize=chunk_rows,
                keep_default_na=False,
                na_values=[""],
            )
        with reader:
            for df in reader:
                df = df.astype("string")
                stats.rows += len(df)
                if fmt != "jsonl":
                    stats.latin1_lines = decoder.latin1_lines
                yield df
    except SentituneError:
        raise
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, pa.ArrowException) as exc:
        raise SentituneError(f"cannot parse {path} as {fmt}: {str(exc).splitlines()[0]}") from exc
    finally:
        handle.close()


def pick_text_column(columns: list[str], wanted: str | None, path: str, explicit: bool) -> str:
    if wanted and wanted in columns:
        return wanted
    texts = [c for c in columns if c.lower() == TEXT_FALLBACK]
    if not explicit and len(texts) == 1:
        return texts[0]
    shown = ", ".join(columns)
    hint = f"pass --text-column {texts[0] if texts else columns[0] if columns else 'NAME'}"
    raise SentituneError(f"{path} has no column '{wanted}' (columns: {shown}); {hint}")


def pick_label_column(columns: list[str], wanted: str | None, path: str, candidates=LABEL_CANDIDATES) -> str:
    if wanted:
        if wanted in columns:
            return wanted
        raise SentituneError(
            f"{path} has no column '{wanted}' (columns: {', '.join(columns)}); pass --label-column NAME"
        )
    for name in candidates:
        if name in columns:
            return name
    raise SentituneError(
        f"{path} has no label column (columns: {', '.join(columns)}); pass "
        "--label-column NAME, or --label-with vader to label the text with VADER"
    )


# ----------------------------------------------------------------------------- labels


@dataclass
class LabelRule:
    """How raw label values become class ids 0/1/2 (negative/neutral/positive)."""

    source: str  # score | category | vader
    neutral_band: float = 0.0
    mapping: dict[str, int] = field(default_factory=dict)  # category: lower-cased value -> id
    seen: Counter = field(default_factory=Counter)  # raw value -> rows, for the printed mapping

    def describe(self) -> dict:
        if self.source in ("score", "vader"):
            b = self.neutral_band
            rule = (
                "sign(score) + 1"
                if b == 0
                else f"score < -{b}: negative, |score| <= {b}: neutral, score > {b}: positive"
            )
            return {"source": self.source, "rule": rule}
        used = {raw: LABELS[self.mapping[raw.strip().lower()]] for raw in sorted(self.seen)}
        return {"source": "category", "mapping": used}


def parse_label_map(spec: str) -> dict[str, int]:
    mapping = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise SentituneError(
                f"--label-map entry '{part}' is not VALUE=CLASS; e.g. 'bad=negative,good=positive'"
            )
        raw, target = (s.strip() for s in part.split("=", 1))
        target_id = LABEL_SYNONYMS.get(target.lower())
        if target_id is None and target in ("0", "1", "2"):
            target_id = int(target)
        if target_id is None:
            raise SentituneError(
                f"--label-map maps '{raw}' to '{target}', which is no class; use one of {', '.join(LABELS)}"
            )
        mapping[raw.lower()] = target_id
    return mapping


def decide_label_rule(
    values: pd.Series, source: str, neutral_band: float, label_map: str | None, integers_are_ids: bool = False
) -> LabelRule:
    """Decide from the distinct label values whether they are scores or categories.

    Integers 0/1/2 are class ids when a 2 occurs, or always with `integers_are_ids` (split files,
    whose integer labels are the walkthrough's `Target` ids even when a split lacks a class)."""
    if label_map:
        return LabelRule("category", mapping=parse_label_map(label_map))
    if source in ("score", "vader"):
        return LabelRule(source, neutral_band)
    numbers = pd.to_numeric(values.dropna(), errors="coerce")
    if len(numbers) and numbers.notna().all():
        integral = bool((numbers == numbers.round()).all())
        distinct = set(numbers.astype(float).unique())
        if integral and distinct <= {0.0, 1.0, 2.0} and (2.0 in distinct or integers_are_ids):
            return LabelRule("category", mapping={"0": 0, "1": 1, "2": 2, "0.0": 0, "1.0": 1, "2.0": 2})
        if source == "category":
            if integral and distinct <= {-1.0, 0.0, 1.0}:
                return LabelRule("category", mapping={"-1": 0, "0": 1, "1": 2, "-1.0": 0, "0.0": 1, "1.0": 2})
            raise SentituneError(
                f"numeric labels {sorted(distinct)[:6]} are not class ids 0/1/2 or -1/0/1; "
                "use --label-type score or --label-map"
            )
        return LabelRule("score", neutral_band)  # -1/0/1 read as scores is the same mapping
    if source == "score":
        raise SentituneError("--label-type score needs numbers in the label column")
    return LabelRule("category", mapping=dict(LABEL_SYNONYMS))


def score_to_class(scores: np.ndarray, neutral_band: float) -> np.ndarray:
    cls = np.where(scores < 0, 0, 2).astype(np.int8)
    cls[np.abs(scores) <= neutral_band] = 1
    return cls


def apply_label_rule(
    rule: LabelRule, values: pd.Series, where: str | Callable[[np.ndarray], str]
) -> np.ndarray:
    """Class ids as int8, -1 where the label is missing; values that fit no class are an error.

    `where` names the input in messages: a path, or a function of the offending rows' mask."""

    def name(bad: pd.Series) -> str:
        return where if isinstance(where, str) else where(bad.to_numpy())

    if rule.source in ("score", "vader"):
        numbers = pd.to_numeric(values, errors="coerce")
        bad = values.notna() & numbers.isna()
        if bad.any():
            examples = ", ".join(repr(v) for v in values[bad].unique()[:3])
            raise SentituneError(
                f"{name(bad)}: label values {examples} are not numbers; pass --label-type category "
                "or --label-map if the column holds class names"
            )
        out = score_to_class(numbers.fillna(0).to_numpy(np.float64), rule.neutral_band)
        out[numbers.isna().to_numpy()] = -1
        return out
    keys = values.str.strip().str.lower()
    ids = keys.map(rule.mapping)
    unknown = values.notna() & ids.isna()
    if unknown.any():
        examples = ", ".join(repr(v) for v in values[unknown].unique()[:5])
        raise SentituneError(
            f"{name(unknown)}: label value {examples} maps to no class (known: "
            f"{', '.join(sorted(rule.mapping))}); pass --label-map VALUE=CLASS,..."
        )
    rule.seen.update(values.value_counts().to_dict())  # counted in pandas: this runs on every chunk
    return ids.fillna(-1).to_numpy(np.int8)


MISSING_LABELS = ("nan", "na", "n/a", "null", "none")


def missing_as_na(values: pd.Series) -> pd.Series:
    """Labels spelled as missing ('NaN', 'null', ...) become NA, as empty cells already are."""
    return values.mask(values.str.strip().str.lower().isin(MISSING_LABELS))


class DistinctLabels:
    """The distinct raw label values seen, up to a cap: enough to tell scores from categories."""

    CAP = 10_000

    def __init__(self) -> None:
        self.values: set[str] = set()

    def update(self, raw: pd.Series) -> None:
        if len(self.values) < self.CAP:
            self.values.update(raw.dropna().unique().tolist())

    def sample(self) -> pd.Series:
        return pd.Series(sorted(self.values), dtype="string")


def vader_scores(texts: pd.Series) -> pd.Series:
    """VADER's compound score of each text, as strings (the scratch file's raw-label type)."""
    analyzer = _vader()
    return pd.Series([repr(analyzer.polarity_scores(t)["compound"]) for t in texts], dtype="string")


_VADER = None


def _vader():
    global _VADER
    if _VADER is None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        _VADER = SentimentIntensityAnalyzer()
    return _VADER


# ----------------------------------------------------------------------------- cleaning

_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
_MENTION = re.compile(r"@\w+")
_SPACE = re.compile(r"\s+")
_CR = re.compile(r"\r\n?")


def normalise_for_near_duplicates(texts: pd.Series) -> pd.Series:
    out = texts.str.lower().str.replace(_URL, "", regex=True).str.replace(_MENTION, "@user", regex=True)
    return out.str.replace(_SPACE, " ", regex=True).str.strip()


def text_hashes(texts: pd.Series) -> np.ndarray:
    # pandas' vectorised SipHash with its fixed key: deterministic across runs and machines.
    return pd.util.hash_pandas_object(texts, index=False).to_numpy(np.uint64)


# ----------------------------------------------------------------------------- prepare


@dataclass
class PrepareResult:
    output_dir: str
    report: dict


def prepare(cfg: PrepareConfig) -> PrepareResult:
    """Read, label, clean and split `cfg.inputs` into `cfg.output_dir` (see the module docstring)."""
    inputs = list(cfg.inputs)
    explicit_text = cfg.text_column != "bodyText"
    if not inputs:
        from sentitune.builtin import DATASET_DESCRIPTION, default_dataset

        inputs = [default_dataset()]
        log.info("no input given: using the embedded dataset, %s", DATASET_DESCRIPTION)
    out = StagedOutput(
        cfg.output_dir,
        occupied_by=[*(f"{s}.{cfg.format}" for s in SPLITS), SPLIT_MARKER, "labels.json"],
        marker=SPLIT_MARKER,
        what="prepared splits",
        overwrite=cfg.overwrite,
    )
    with out, tempfile.TemporaryDirectory(prefix="sentitune-prepare-") as scratch_dir:
        scratch = Path(scratch_dir) / "clean.parquet"
        rows = _clean_inputs(cfg, inputs, explicit_text, scratch)
        keep, near = _deduplicate(rows, cfg.drop_near_duplicates)
        split_of = _stratified_split(rows["label"], keep, cfg)
        counts = _write_splits(scratch, rows["label"], split_of, cfg, out, near)
        report = _report(cfg, inputs, rows, keep, near, counts)
        out.path("labels.json").write_text(json.dumps({"labels": list(LABELS)}, indent=2) + "\n")
        out.path(SPLIT_MARKER).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        out.commit()
    return PrepareResult(cfg.output_dir, report)


def _clean_inputs(cfg: PrepareConfig, inputs: list[str], explicit_text: bool, scratch: Path) -> dict:
    """Pass 1: clean every chunk and spill (text, raw label) to Parquet, keeping per-row hashes. The
    label rule is then decided from the distinct raw labels of all inputs (never from one chunk),
    and the raw labels are mapped to class ids from the scratch file's label column."""
    hashes, norm_hashes = [], []
    dropped = Counter()
    stats, columns_used = [], []
    distinct = DistinctLabels()
    writer = None
    try:
        for index, path in enumerate(inputs):
            st = InputStats(path)
            stats.append(st)
            text_col = label_col = None
            for df in read_chunks(path, cfg.chunk_rows, st):
                if text_col is None:
                    cols = [str(c) for c in df.columns]
                    text_col = pick_text_column(cols, cfg.text_column, path, explicit_text)
                    if cfg.label_source != "vader":
                        label_col = pick_label_column(cols, cfg.label_column, path)
                    columns_used.append({"path": path, "text": text_col, "label": label_col})
                # A bare CR inside a field is a line break to CSV readers; unify line breaks as LF.
                texts = df[text_col].str.replace(_CR, "\n", regex=True).str.strip()
                empty = (texts.isna() | (texts == "")).to_numpy()
                dropped["empty_text"] += int(empty.sum())
                texts = texts[~empty].reset_index(drop=True)
                if label_col is None:
                    raw = vader_scores(texts)
                else:
                    raw = missing_as_na(df[label_col][~empty]).reset_index(drop=True)
                missing = raw.isna().to_numpy()
                dropped["missing_label"] += int(missing.sum())
                texts, raw = texts[~missing].reset_index(drop=True), raw[~missing].reset_index(drop=True)
                distinct.update(raw)
                hashes.append(text_hashes(texts))
                norm_hashes.append(text_hashes(normalise_for_near_duplicates(texts)))
                table = pa.table(
                    {
                        "text": pa.array(texts.astype(object), pa.string()),
                        "raw_label": pa.array(raw.astype(object), pa.string()),
                        "input": pa.array(np.full(len(texts), index, np.int32)),
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
    rule = decide_label_rule(distinct.sample(), source, cfg.neutral_band, cfg.label_map)
    if cfg.label_source == "vader":
        rule.source = "vader"
    labels = []
    for batch in pq.ParquetFile(scratch).iter_batches(
        batch_size=cfg.chunk_rows, columns=["raw_label", "input"]
    ):
        raw = batch.column("raw_label").to_pandas().astype("string")
        origin = batch.column("input").to_numpy()
        labels.append(apply_label_rule(rule, raw, lambda bad, origin=origin: inputs[origin[bad][0]]))
    log.info("labels: %s", json.dumps(rule.describe(), ensure_ascii=False))
    return {
        "hash": np.concatenate(hashes),
        "norm": np.concatenate(norm_hashes),
        "label": np.concatenate(labels),
        "dropped": dropped,
        "stats": stats,
        "rule": rule,
        "columns": columns_used,
    }


def _first_occurrences(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(is first occurrence, index of the first occurrence of each row's value)."""
    _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    is_first = np.zeros(len(values), bool)
    is_first[first] = True
    return is_first, first[inverse]


def _deduplicate(rows: dict, drop_near: bool) -> tuple[np.ndarray, dict]:
    keep, first_of = _first_occurrences(rows["hash"])
    rows["conflicting_duplicates"] = int(((rows["label"] != rows["label"][first_of]) & ~keep).sum())
    rows["dropped"]["duplicate_text"] += int((~keep).sum())
    kept = np.flatnonzero(keep)
    near_first, near_first_of = _first_occurrences(rows["norm"][kept])
    near_rows = kept[~near_first]
    examples = [(int(kept[near_first_of[i]]), int(kept[i])) for i in np.flatnonzero(~near_first)[:5]]
    if drop_near:
        keep[near_rows] = False
        rows["dropped"]["near_duplicate"] += len(near_rows)
    return keep, {"rows": len(near_rows), "dropped": drop_near, "example_rows": examples}


def _stratified_split(labels: np.ndarray, keep: np.ndarray, cfg: PrepareConfig) -> np.ndarray:
    """Split id per row (0 train, 1 eval, 2 test, -1 dropped), stratified by class, seeded."""
    rng = np.random.default_rng(cfg.seed)
    split_of = np.full(len(labels), -1, np.int8)
    fractions = (1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction)
    problems = []
    for cls in range(len(LABELS)):
        rows = rng.permutation(np.flatnonzero(keep & (labels == cls)))
        n = len(rows)
        if n == 0:
            continue
        n_eval, n_test = round(n * cfg.val_fraction), round(n * cfg.test_fraction)
        sizes = (n - n_eval - n_test, n_eval, n_test)
        if any(size == 0 and f > 0 for size, f in zip(sizes, fractions, strict=True)):
            need = int(np.ceil(0.5 / min(f for f in fractions if f > 0)))
            problems.append(
                f"class '{LABELS[cls]}' has {n} rows, too few to stratify "
                f"{fractions[0]:g}/{fractions[1]:g}/{fractions[2]:g} (needs about {need})"
            )
            continue
        split_of[rows[sizes[0] : sizes[0] + n_eval]] = 1
        split_of[rows[sizes[0] + n_eval :]] = 2
        split_of[rows[: sizes[0]]] = 0
    if problems:
        raise SentituneError("; ".join(problems) + "; add rows, or lower --val-fraction/--test-fraction")
    return split_of


def _write_splits(
    scratch: Path, labels: np.ndarray, split_of: np.ndarray, cfg: PrepareConfig, out: StagedOutput, near: dict
) -> dict:
    """Pass 2: stream the scratch file into one file per split, in input order."""
    counts = {s: Counter() for s in SPLITS}
    wanted = {i for pair in near["example_rows"] for i in pair}
    example_text = {}
    writers, handles = {}, {}
    offset = 0
    try:
        for batch in pq.ParquetFile(scratch).iter_batches(batch_size=cfg.chunk_rows, columns=["text"]):
            df = batch.to_pandas()
            df["label"] = np.asarray(LABELS)[labels[offset : offset + len(df)]]
            where = split_of[offset : offset + len(df)]
            for i in wanted:
                if offset <= i < offset + len(df):
                    example_text[i] = df["text"].iat[i - offset]
            offset += len(df)
            for sid, name in enumerate(SPLITS):
                part = df[where == sid]
                if part.empty:
                    continue
                counts[name].update(part["label"].tolist())
                _append(part, name, cfg.format, out, writers, handles)
    finally:
        for h in handles.values():
            h.close()
        for w in writers.values():
            w.close()
    for name in SPLITS:  # a split with no rows still gets its (empty) file
        if name not in handles and name not in writers:
            _append(
                pd.DataFrame({"text": pd.Series([], dtype=str), "label": pd.Series([], dtype=str)}),
                name,
                cfg.format,
                out,
                writers,
                handles,
            )
            (handles.get(name) or writers.get(name)).close()
    near["examples"] = [[example_text.get(a), example_text.get(b)] for a, b in near.pop("example_rows")]
    return counts


def _append(part: pd.DataFrame, name: str, fmt: str, out: StagedOutput, writers: dict, handles: dict) -> None:
    if fmt == "parquet":
        table = pa.Table.from_pandas(
            part, preserve_index=False, schema=pa.schema([("text", pa.string()), ("label", pa.string())])
        )
        if name not in writers:
            writers[name] = pq.ParquetWriter(out.path(f"{name}.parquet"), table.schema)
        writers[name].write_table(table)
        return
    first = name not in handles
    if first:
        handles[name] = open(out.path(f"{name}.csv"), "w", encoding="utf-8", newline="")
    part.to_csv(handles[name], header=first, index=False, lineterminator="\n")


def _report(
    cfg: PrepareConfig, inputs: list[str], rows: dict, keep: np.ndarray, near: dict, counts: dict
) -> dict:
    rule: LabelRule | None = rows["rule"]
    return {
        "sentitune_version": __version__,
        "inputs": [asdict(s) for s in rows["stats"]],
        "columns": rows["columns"],
        "rows_read": sum(s.rows for s in rows["stats"]),
        "rows_decoded_as_latin1": sum(s.latin1_lines for s in rows["stats"]),
        "rows_dropped": dict(rows["dropped"]),
        "duplicates_with_other_label": rows["conflicting_duplicates"],
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
        "class_counts": {s: {label: counts[s].get(label, 0) for label in LABELS} for s in SPLITS},
    }


# ----------------------------------------------------------------------------- reading labelled splits


@dataclass
class LabelledTexts:
    """One split in memory: the texts and their class ids."""

    path: str
    texts: list[str]
    labels: np.ndarray  # int64 class ids

    def __len__(self) -> int:
        return len(self.texts)


def read_labelled(
    path: str, text_column: str | None = None, label_column: str | None = None, chunk_rows: int = 100_000
) -> LabelledTexts:
    """Read a labelled file: ours (text, label names), the walkthrough's (bodyText, Target ids), or any
    file whose label column holds names, ids or scores. Rows without text or label are skipped."""
    texts: list[str] = []
    raw_labels: list[pd.Series] = []
    distinct = DistinctLabels()
    text_col = label_col = None
    skipped = 0
    for df in read_chunks(path, chunk_rows):
        if text_col is None:
            cols = [str(c) for c in df.columns]
            text_col = pick_text_column(cols, text_column or "bodyText", path, explicit=bool(text_column))
            label_col = pick_label_column(cols, label_column, path, TRAIN_LABEL_CANDIDATES)
        t = df[text_col].str.strip()
        raw = missing_as_na(df[label_col])
        ok = (t.notna() & (t != "") & raw.notna()).to_numpy(bool, na_value=False)
        skipped += int((~ok).sum())
        texts.extend(t[ok].tolist())
        raw_labels.append(raw[ok])
        distinct.update(raw[ok])
    if skipped:
        log.warning("%s: skipped %d rows without text or label", path, skipped)
    if not texts:
        raise SentituneError(
            f"{path} has no labelled rows (columns used: text '{text_col}', label '{label_col}')"
        )
    rule = decide_label_rule(distinct.sample(), "auto", 0.0, None, integers_are_ids=True)
    labels = apply_label_rule(rule, pd.concat(raw_labels, ignore_index=True), path)
    return LabelledTexts(path, texts, labels.astype(np.int64))


def load_splits(cfg) -> dict[str, LabelledTexts]:
    """The train/val/test splits named by a config with `data` (a prepared folder) or
    `training_file` / `validation_file` / `testing_file`, plus `text_column` and `label_column`."""
    if cfg.data:
        files = find_split_files(cfg.data)
        paths = {"train": files["train"], "val": files["eval"], "test": files["test"]}
    else:
        paths = {"train": cfg.training_file, "val": cfg.validation_file, "test": cfg.testing_file}
    splits = {}
    for name, path in paths.items():
        if path:
            splits[name] = read_labelled(path, cfg.text_column, cfg.label_column)
            counts = np.bincount(splits[name].labels, minlength=len(LABELS))
            log.info(
                "%s: %s, %d examples (%s)",
                name,
                path,
                len(splits[name]),
                ", ".join(f"{label} {c}" for label, c in zip(LABELS, counts, strict=True)),
            )
    return splits


def find_split_files(data_dir: str) -> dict[str, str | None]:
    """The train/eval/test files of a prepared folder (csv or parquet; 'val' accepted for 'eval')."""
    from sentitune.storage import join, listdir_names

    names = listdir_names(data_dir)
    if not names:
        raise SentituneError(f"--data {data_dir} is not a folder or is empty; run `sentitune prepare` first")
    found = {}
    for split, aliases in (
        ("train", ("train",)),
        ("eval", ("eval", "val", "validation")),
        ("test", ("test",)),
    ):
        found[split] = next(
            (
                join(data_dir, f"{a}.{ext}")
                for a in aliases
                for ext in ("csv", "parquet", "jsonl", "tsv")
                if f"{a}.{ext}" in names
            ),
            None,
        )
    if found["train"] is None:
        raise SentituneError(
            f"--data {data_dir} has no train.csv or train.parquet "
            f"(found: {', '.join(sorted(names)[:8])}); run `sentitune prepare` first"
        )
    return found


def write_table(df: pd.DataFrame, path: os.PathLike | str) -> None:
    """CSV or JSONL by the file's extension (used for prediction outputs)."""
    fmt = file_format(str(path))
    if fmt == "jsonl":
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    elif fmt == "parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False, sep="\t" if fmt == "tsv" else ",", lineterminator="\n")
