"""Read posts from CSV, TSV, JSONL or Parquet at any path or fsspec URL, in chunks, and pick columns.

Every cell is read as a string (or NA), so ids and labels are never reinterpreted as numbers. CSV lines
that are not valid UTF-8 are decoded as latin-1 and counted, so mixed-encoding files read without loss.
"""

from __future__ import annotations

import io
import lzma
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sentitune.config import DEFAULT_TEXT_COLUMN, LABEL_COLUMNS
from sentitune.errors import SentituneError, short
from sentitune.storage import COMPRESSIONS, open_input

TEXT_FALLBACK = "text"  # used when the file has no DEFAULT_TEXT_COLUMN and one column of this name


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
    for suffix in COMPRESSIONS:
        name = name.removesuffix(suffix)
    if name.endswith((".tsv", ".tab")):
        return "tsv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return "csv"


OUTPUT_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def output_format(path: str, option: str = "--output") -> str:
    """The format of an output file from its extension; an unknown one is refused, not written as CSV."""
    name = str(path).lower()
    for suffix, fmt in OUTPUT_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    ext = "." + name.rsplit(".", 1)[1] if "." in name.rsplit("/", 1)[-1] else "(none)"
    raise SentituneError(
        f"{option} {path}: unknown format '{short(ext, 20)}'; use .csv, .tsv, .jsonl or .parquet, or end the "
        "name with / for a folder"
    )


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
        if fmt != "parquet":
            handle = io.BufferedReader(handle) if not hasattr(handle, "peek") else handle
            check_text(handle.peek(4096)[:4096], path)
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
        raise SentituneError(f"cannot parse {path} as {fmt}: {short(str(exc).splitlines()[0])}") from exc
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:  # a .gz (.bz2, .xz) that is not one
        raise SentituneError(
            f"cannot read {path}: it does not decompress as its extension says ({short(exc)}); "
            "check the file or its extension"
        ) from exc
    finally:
        handle.close()


def check_text(head: bytes, path: str) -> None:
    """Refuse an empty file, and a binary one (a NUL byte in its first 4 KB; UTF-16 text has them too)."""
    if not head:
        raise SentituneError(f"{path} is empty: no header and no rows")
    if b"\x00" in head:
        raise SentituneError(
            f"{path} is not a text file (it holds NUL bytes); pass a UTF-8 CSV, TSV or JSONL file, or Parquet"
        )


def pick_text_column(df: pd.DataFrame, wanted: str | None, path: str) -> str:
    """`wanted` (--text-column), else the walkthrough's bodyText, else a single 'text' column. The error
    for a missing column suggests the one that looks most like text: the longest values on average."""
    columns = [str(c) for c in df.columns]
    explicit = bool(wanted)
    wanted = wanted or DEFAULT_TEXT_COLUMN
    if wanted in columns:
        return wanted
    texts = [c for c in columns if c.lower() == TEXT_FALLBACK]
    if not explicit and len(texts) == 1:
        return texts[0]
    lengths = {c: df[c].head(1000).astype("string").str.len().mean() for c in columns}
    likely = (
        texts[0]
        if texts
        else max(columns, key=lambda c: lengths[c] if pd.notna(lengths[c]) else -1, default=None)
    )
    raise SentituneError(
        f"{path} has no column '{short(wanted)}' (columns: {short(', '.join(columns))}); "
        f"pass --text-column {short(likely) if likely else 'NAME'}"
    )


def pick_label_column(columns: list[str], wanted: str | None, path: str) -> str:
    """`wanted` (--label-column), else the first of LABEL_COLUMNS the file has."""
    if wanted:
        if wanted in columns:
            return wanted
        raise SentituneError(
            f"{path} has no column '{short(wanted)}' (columns: {short(', '.join(columns))}); pass --label-column NAME"
        )
    for name in LABEL_COLUMNS:
        if name in columns:
            return name
    raise SentituneError(
        f"{path} has no label column (columns: {short(', '.join(columns))}); pass "
        "--label-column NAME, or --label-with vader to label the text with VADER"
    )
