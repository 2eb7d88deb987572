"""`sentitune predict`: prediction of texts from arguments or stdin, of files, and of whole folders of
files, through the scoring core's Predictor."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from sentitune.config import PredictConfig
from sentitune.errors import SentituneError
from sentitune.explain import explain
from sentitune.scoring import Predictor
from sentitune.storage import COMPRESSIONS, OutputLock, exists, expand, is_url, join, url_to_fs
from sentitune.tables import (
    as_text,
    decoded,
    file_format,
    output_format,
    pick_text_column,
    read_chunks,
)

log = logging.getLogger("sentitune")


def predict_files(
    predictor: Predictor,
    inputs: Sequence[str],
    output_dir: str,
    text_column: str | None,
    chunk_rows: int = 50_000,
    overwrite: bool = False,
    prefix: str = "",
) -> dict:
    """Label each input file into `output_dir` under the same name (compression suffix dropped).

    Each output appears only when complete (written under a temporary name, then renamed or
    uploaded in one piece), so after an interruption the same command skips the finished files and
    redoes only the rest; --overwrite redoes them all.
    """
    names: dict[str, str] = {}
    for path in inputs:
        name = output_name(path)
        if name in names:
            raise SentituneError(
                f"{names[name]} and {path} would both be written to {join(output_dir, name)}; "
                "label them in separate runs with different --output folders"
            )
        names[name] = path
    summary = {"files": len(inputs), "labelled": 0, "skipped": 0, "rows": 0}
    with OutputLock(output_dir):  # one batch job per folder at a time
        for number, (name, path) in enumerate(names.items(), 1):
            target = join(output_dir, name)
            if not overwrite and exists(target):
                log.info(
                    f"[{number}/{len(names)}] {posixpath.basename(path)}: done earlier, skipped ({target})"
                )
                summary["skipped"] += 1
                continue
            started = time.perf_counter()
            rows = predict_file(
                predictor, path, target, text_column, chunk_rows, overwrite=True, prefix=prefix
            )
            seconds = time.perf_counter() - started
            log.info(
                f"[{number}/{len(names)}] {path}: {rows} rows -> {target} "
                f"({seconds:.1f} s, {rows / max(seconds, 1e-9):.0f} rows/s)"
            )
            summary["labelled"] += 1
            summary["rows"] += rows
    return summary


def output_name(path: str) -> str:
    """The output file name of an input: its name without a compression suffix."""
    name = posixpath.basename(str(path).rstrip("/"))
    for suffix in COMPRESSIONS:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def predict_file(
    predictor: Predictor,
    input_path: str,
    output_path: str,
    text_column: str | None,
    chunk_rows: int = 50_000,
    overwrite: bool = False,
    prefix: str = "",
) -> int:
    """Predict every row of `input_path` into `output_path` (CSV, TSV, JSONL or Parquet by extension),
    keeping the input columns; chunked, written under a temporary name and renamed at the end."""
    remote = is_url(output_path)
    fs, inner = url_to_fs(output_path) if remote else (None, output_path)
    with OutputLock(output_path) as lock:  # then look: a writer that finished meanwhile is seen
        if (fs.exists(inner) if remote else os.path.exists(output_path)) and not overwrite:
            raise SentituneError(f"{output_path} exists; pass --overwrite to replace it")
        return _write_predictions(
            predictor, input_path, output_path, text_column, chunk_rows, fs, inner, prefix, lock
        )


def _write_predictions(
    predictor, input_path, output_path, text_column, chunk_rows, fs, inner, prefix, lock
) -> int:
    """predict_file's writing, under its lock: a temporary file beside the lock (named as the lock is, so
    the next writer can tell a killed writer's from a live one's), renamed at the end."""
    remote = fs is not None
    fmt = file_format(output_path)
    real = os.path.realpath(output_path)
    created = [] if remote else missing_folders(os.path.dirname(real))
    for path in reversed(created):
        os.mkdir(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{lock.key}.partial-" if not remote else "sentitune-partial-",
        suffix=f".{fmt}",
        dir=None if remote else lock.parent,
    )
    if not remote:  # mkstemp's 0600 would become the output's mode
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
    rows, column, writer = 0, None, None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            for df in read_chunks(input_path, chunk_rows):
                if column is None:
                    column = pick_text_column(df, text_column, input_path)
                out = predictor.predict_frame(df, column, prefix, source=input_path)
                if fmt == "parquet":
                    table = pa.Table.from_pandas(out, preserve_index=False)
                    writer = writer or pq.ParquetWriter(tmp, table.schema)
                    writer.write_table(table)
                elif fmt == "jsonl":
                    out.to_json(handle, orient="records", lines=True, force_ascii=False)
                else:  # CRLF rows: the csv module then quotes fields holding a bare CR (RFC 4180)
                    out.to_csv(
                        handle,
                        index=False,
                        header=rows == 0,
                        sep="\t" if fmt == "tsv" else ",",
                        lineterminator="\r\n",
                    )
                rows += len(out)
        if writer is not None:
            writer.close()
        if remote:
            fs.put_file(tmp, inner)
            os.remove(tmp)
        else:
            os.replace(tmp, real)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        for path in created:  # folders made for this output go with it
            with contextlib.suppress(OSError):
                os.rmdir(path)
        raise
    return rows


def missing_folders(folder: str) -> list[str]:
    """`folder` and its missing parents, deepest first."""
    missing = []
    while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def predict(cfg: PredictConfig, stdin: TextIO | None = None, stdout: TextIO | None = None) -> dict:
    """`sentitune predict`: texts (arguments, else stdin) as JSON lines on `stdout`; files as JSON lines on
    `stdout`, or into --output (a file, or a folder of one file per input). Returns what was done."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    if not cfg.input and not cfg.texts and stdin.isatty():
        raise SentituneError(
            "no texts: pass them as arguments, pipe one per line on stdin, or use --input FILE"
        )
    inputs = expand(cfg.input)
    to_folder = bool(cfg.output) and (
        len(inputs) > 1
        or inputs != cfg.input  # a wildcard: the number of matches must not change the output's meaning
        or cfg.output.endswith("/")
        or (not is_url(cfg.output) and os.path.isdir(cfg.output))
    )
    if cfg.output and not to_folder:
        output_format(cfg.output)  # an unknown format is refused before the model loads
    predictor = Predictor.for_run(cfg.run_dir, cfg)
    if to_folder:
        return {
            "to": "folder",
            **predict_files(
                predictor, inputs, cfg.output, cfg.text_column, overwrite=cfg.overwrite, prefix=cfg.prefix
            ),
        }
    if cfg.output:
        rows = predict_file(
            predictor, inputs[0], cfg.output, cfg.text_column, overwrite=cfg.overwrite, prefix=cfg.prefix
        )
        return {"to": "file", "files": 1, "labelled": 1, "skipped": 0, "rows": rows}
    rows = 0
    for path in inputs:
        column = None
        for df in read_chunks(path, 50_000):
            column = column or pick_text_column(df, cfg.text_column, path)
            stdout.write(
                predictor.predict_frame(df, column, cfg.prefix, source=path).to_json(
                    orient="records", lines=True, force_ascii=False
                )
            )
            rows += len(df)
    if inputs:
        return {"to": "stdout", "files": len(inputs), "labelled": len(inputs), "skipped": 0, "rows": rows}
    texts = read_as_text(cfg.texts, "text") if cfg.texts else stdin_texts(stdin)
    explanations = explain(predictor, texts) if cfg.explain else [None] * len(texts)
    for text, p, why in zip(texts, predictor.predict(texts), explanations, strict=True):
        row = {"text": text, "label": p.label, "scores": {k: round(v, 6) for k, v in p.scores.items()}}
        if why is not None:
            row["explanation"] = why
        stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {"to": "stdout", "files": 0, "labelled": 0, "skipped": 0, "rows": len(texts)}


def stdin_texts(stdin: TextIO) -> list[str]:
    """One text per non-empty line, each read as a file's line is (UTF-8, else latin-1, said)."""
    texts = []
    for number, line in enumerate(getattr(stdin, "buffer", stdin), 1):
        text, latin1 = decoded(line) if isinstance(line, bytes) else (line, False)
        if latin1:
            log.warning("stdin line %d is not valid UTF-8: read as latin-1; send UTF-8 text", number)
        text = text.rstrip("\r\n")
        if text.strip():
            texts.append(text)
    if not texts:
        raise SentituneError(
            "no texts on stdin (only empty lines); pass texts as arguments or pipe one per line"
        )
    return read_as_text(texts, "stdin text")


def read_as_text(texts: Sequence[str], what: str) -> list[str]:
    """`texts` as every reader reads text (tables.as_text), each one that was not UTF-8 named."""
    found = []
    for number, text in enumerate(texts, 1):
        fixed, how = as_text(text)
        if how:
            shown = "as latin-1" if how == "latin-1" else "with U+FFFD for each lone surrogate"
            log.warning("%s %d is not valid UTF-8: read %s; pass UTF-8 text", what, number, shown)
        found.append(fixed)
    return found
