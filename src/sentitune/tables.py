"""Read posts from CSV, TSV, JSONL or Parquet at any path or fsspec URL, in chunks, and pick columns.

Every cell is read as a string (or NA), so ids and labels are never reinterpreted as numbers. CSV lines
that are not valid UTF-8 are decoded as latin-1 and counted, so mixed-encoding files read without loss.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import lzma
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sentitune.config import LABEL_COLUMNS, TEXT_COLUMNS
from sentitune.errors import SentituneError, short
from sentitune.storage import COMPRESSIONS, open_input

# Text as every reader reads it (files, arguments, stdin): UTF-8, a line that is not UTF-8 as latin-1
# (every byte is valid there), and a lone surrogate (a JSON escape such as \ud800, which no encoding can
# hold) as U+FFFD; each counted and warned about, never dropped. The HTTP server alone refuses such text
# (422): a request is a client's to fix.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def decoded(line: bytes) -> tuple[str, bool]:
    """A line of bytes as text: UTF-8, else latin-1 (then True)."""
    try:
        return line.decode("utf-8"), False
    except UnicodeDecodeError:
        return line.decode("latin-1"), True


def as_text(text: str) -> tuple[str, str | None]:
    """A string as text, and what was done to it (None, 'latin-1' or 'replaced'): bytes smuggled in as
    surrogate escapes (an argument from a terminal in another encoding) are decoded as a file's line is;
    any other lone surrogate becomes U+FFFD."""
    if not LONE_SURROGATE.search(text):
        return text, None
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return LONE_SURROGATE.sub(REPLACEMENT, text), "replaced"
    line, latin1 = decoded(raw)
    return line, "latin-1" if latin1 else None


class _Reencoded(io.RawIOBase):
    """A byte stream as UTF-8 bytes, re-encoded a piece at a time by `_next` (b"" at the end)."""

    _pending = b""

    def readable(self) -> bool:
        return True

    def _next(self) -> bytes:
        raise NotImplementedError

    def readinto(self, buffer) -> int:
        while not self._pending:
            self._pending = self._next()
            if not self._pending:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class _Utf8OrLatin1(_Reencoded):
    """Re-encode a byte stream line by line as UTF-8: lines that are not valid UTF-8 are decoded as
    latin-1 (every byte is valid there) and counted, so mixed-encoding files read without loss."""

    def __init__(self, raw):
        self._raw = io.BufferedReader(raw) if not hasattr(raw, "readline") else raw
        self.latin1_lines = 0
        self._first = True

    def _next(self) -> bytes:
        line = self._raw.readline()
        if self._first:
            line = line.removeprefix(b"\xef\xbb\xbf")
            self._first = False
        if not line:
            return b""
        text, latin1 = decoded(line)
        self.latin1_lines += latin1
        return text.encode("utf-8") if latin1 else line


UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
SEPARATORS = ",;\t|"  # what a CSV's header line may put between column names; a comma where none shows


class _Utf16AsUtf8(_Reencoded):
    """A UTF-16 byte stream that starts with its byte-order mark (Excel's "Unicode text", Windows tools) as
    UTF-8 bytes."""

    def __init__(self, raw):
        self._text = io.TextIOWrapper(raw, encoding="utf-16", newline="")

    def _next(self) -> bytes:
        return self._text.read(1 << 16).encode("utf-8")


def csv_separator(head: bytes) -> str:
    """The separator a CSV's header line uses: of `SEPARATORS`, the one it holds most often outside quotes
    (a comma on a tie or where it holds none: a one-column file), as spreadsheets in locales whose decimal
    mark is a comma write ';'."""
    line = decoded(head.split(b"\n", 1)[0])[0].removeprefix("\ufeff")
    counts, quoted = dict.fromkeys(SEPARATORS, 0), False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(SEPARATORS, key=lambda c: (counts[c], c == ","))
    return best if counts[best] else ","


@functools.cache
def _say_separator(path: str, sep: str) -> None:
    """Said once per file, however often a command reads it."""
    logging.getLogger("sentitune").info("%s: columns separated by %r", path, sep)


def _jsonl_frames(text, chunk_rows: int, path: str, stats: InputStats) -> Iterator[pd.DataFrame]:
    """A JSON-lines stream as DataFrames of `chunk_rows` objects, a lone surrogate escape in a value read
    as U+FFFD and counted in `stats` (pandas' own reader drops it without a word)."""
    rows = []
    for number, line in enumerate(text, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise SentituneError(f"cannot parse {path} as jsonl: line {number}: {exc.msg}") from None
        if not isinstance(row, dict):
            raise SentituneError(
                f'cannot parse {path} as jsonl: line {number} is not an object; write one {{"column": value}} '
                "object per line"
            )
        bad = [k for k, v in row.items() if isinstance(v, str) and LONE_SURROGATE.search(v)]
        for key in bad:
            row[key] = LONE_SURROGATE.sub(REPLACEMENT, row[key])
        stats.invalid_text_rows += bool(bad)
        rows.append(row)
        if len(rows) == chunk_rows:
            yield pd.DataFrame.from_records(rows)
            rows = []
    if rows:
        yield pd.DataFrame.from_records(rows)


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
    invalid_text_rows: int = 0  # rows with a lone surrogate, read as U+FFFD


def read_chunks(path: str, chunk_rows: int, stats: InputStats | None = None) -> Iterator[pd.DataFrame]:
    """Yield the file as DataFrames of at most `chunk_rows` rows, every cell as a string or NA."""
    fmt = file_format(path)
    stats = stats or InputStats(path)
    handle = open_input(path, "rb", compression=None if fmt == "parquet" else "infer")
    try:
        sep = "\t" if fmt == "tsv" else ","
        if fmt != "parquet":
            handle = io.BufferedReader(handle) if not hasattr(handle, "peek") else handle
            if handle.peek(2)[:2] in UTF16_BOMS:
                handle = io.BufferedReader(_Utf16AsUtf8(handle))
            head = handle.peek(4096)[:4096]
            check_text(head, path)
            if fmt == "csv":
                sep = csv_separator(head)
                if sep != ",":
                    _say_separator(path, sep)
        if fmt == "parquet":
            parquet = pq.ParquetFile(handle)
            for batch in parquet.iter_batches(batch_size=chunk_rows):
                df = batch.to_pandas().astype("string")
                stats.rows += len(df)
                yield df
            return
        decoder = _Utf8OrLatin1(handle)
        text = io.TextIOWrapper(io.BufferedReader(decoder), encoding="utf-8", newline="")
        if fmt == "jsonl":
            reader = _jsonl_frames(text, chunk_rows, path, stats)
        else:
            reader = pd.read_csv(
                text,
                sep=sep,
                dtype="string",
                chunksize=chunk_rows,
                keep_default_na=False,
                na_values=[""],
            )
        with contextlib.closing(reader) if fmt == "jsonl" else reader:
            for df in reader:
                df = df.astype("string")
                stats.rows += len(df)
                stats.latin1_lines = decoder.latin1_lines
                yield df
        if stats.invalid_text_rows:
            logging.getLogger("sentitune").warning(
                "%s: %d row(s) hold text that is not valid Unicode (a lone surrogate such as \\ud800); each "
                "such character is read as U+FFFD",
                path,
                stats.invalid_text_rows,
            )
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
    """Refuse an empty file, and a binary one (a NUL byte in its first 4 KB; UTF-16 text without its
    byte-order mark has them too)."""
    if not head:
        raise SentituneError(f"{path} is empty: no header and no rows")
    if b"\x00" in head:
        raise SentituneError(
            f"{path} is not a text file (it holds NUL bytes); pass a UTF-8 or UTF-16 (with its byte-order "
            "mark) CSV, TSV or JSONL file, or Parquet"
        )


def pick_text_column(df: pd.DataFrame, wanted: str | None, path: str) -> str:
    """`wanted` (--text-column), else the column named as a text is (TEXT_COLUMNS, see `named_column`).
    The error for no such column suggests the one that looks most like text: the longest values on average."""
    columns = [str(c) for c in df.columns]
    found = named_column(columns, wanted, TEXT_COLUMNS, path, "--text-column", "the text")
    if found:
        return found
    lengths = {c: df[c].head(1000).astype("string").str.len().mean() for c in columns}
    likely = max(columns, key=lambda c: lengths[c] if pd.notna(lengths[c]) else -1, default=None)
    fix = f"pass --text-column {short(likely) if likely else 'NAME'}"
    if wanted:
        raise SentituneError(
            f"{path} has no column '{short(wanted)}' (columns: {short(', '.join(columns))}); {fix}"
        )
    raise SentituneError(
        f"{path} has no text column: none is named {_names(TEXT_COLUMNS)} (columns: {short(', '.join(columns))}); "
        f"{fix}"
    )


def pick_label_column(columns: list[str], wanted: str | None, path: str) -> str:
    """`wanted` (--label-column), else the column named as a label is (LABEL_COLUMNS, see `named_column`)."""
    found = named_column(columns, wanted, LABEL_COLUMNS, path, "--label-column", "the label")
    if found:
        return found
    if wanted:
        raise SentituneError(
            f"{path} has no column '{short(wanted)}' (columns: {short(', '.join(columns))}); pass --label-column NAME"
        )
    raise SentituneError(
        f"{path} has no label column: none is named {_names(LABEL_COLUMNS)} (columns: "
        f"{short(', '.join(columns))}); pass --label-column NAME, or --label-with vader to label the text with VADER"
    )


def column_key(name: str) -> str:
    """A column name as matched: lower case, without _, - and spaces (Body_Text is bodyText)."""
    return _SEPARATORS.sub("", str(name)).lower()


def last_word(name: str) -> str:
    """The last word of a column name, lower case: words split at _, -, spaces and a lower-to-upper change
    (Review_Text, reviewText and 'review text' end in 'text'; context does not)."""
    words = _WORDS.findall(str(name))
    return words[-1].lower() if words else ""


_SEPARATORS = re.compile(r"[\s_-]+")
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def named_column(
    columns: list[str],
    wanted: str | None,
    groups: tuple[tuple[str, ...], ...],
    path: str,
    flag: str,
    what: str,
) -> str | None:
    """The column `wanted` names (exactly, else in another case or spelling: review_text for Review Text);
    without `wanted`, the column named as one of `groups` is, group by group (column_key), else the one
    whose last word is (last_word: Review_Text, tweetText); None when nothing matches. Two columns that
    match alike are refused as ambiguous, naming both and the option that chooses."""
    if wanted:
        if wanted in columns:
            return wanted
        groups, spellings = ((wanted,),), (column_key,)
    else:
        spellings = (column_key, last_word)
    for spelling in spellings:
        for group in groups:
            keys = {column_key(name) for name in group}
            matches = [c for c in columns if spelling(c) in keys]
            if len(matches) == 1:
                return matches[0]
            if matches:
                shown = ", ".join(short(m, 40) for m in matches)
                raise SentituneError(
                    f"{path}: {len(matches)} columns could hold {what} ({shown}); pass {flag} with the one to "
                    f"use, e.g. {flag} {short(matches[0], 40)}"
                )
    return None


def _names(groups: tuple[tuple[str, ...], ...]) -> str:
    names = [name for group in groups for name in group]
    return ", ".join(names[:-1]) + " or " + names[-1]
