"""`sentitune predict`: the Predictor (a run loaded once, texts predicted in length-sorted batches),
and prediction of texts from arguments or stdin, of files, and of whole folders of files."""

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
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from sentitune import LABELS
from sentitune.config import BACKENDS, INFERENCE_BATCH, InferenceOptions, PredictConfig
from sentitune.errors import SentituneError
from sentitune.explain import explain
from sentitune.labels import model_label_matrix
from sentitune.runfolder import EXPORT_DIR, load_run, onnx_path, trained_max_length
from sentitune.runtime import (
    Precision,
    infer_probs,
    inference_weights,
    onnx_probs,
    onnx_session,
    require_finite,
    require_onnxruntime,
    resolve_device,
    resolve_precision,
)
from sentitune.storage import COMPRESSIONS, OutputLock, exists, expand, is_url, join, url_to_fs
from sentitune.tables import file_format, output_format, pick_text_column, read_chunks

log = logging.getLogger("sentitune")


@dataclass
class Prediction:
    label: str
    scores: dict[str, float]


class Predictor:
    """A trained run loaded once; `predict(texts)` returns labels and per-class probabilities.

    `backend` runs the run's PyTorch model, or its ONNX export (`sentitune export`): `onnx` is
    RUN_DIR/onnx/model.onnx, `onnx-int8` RUN_DIR/onnx/model_int8.onnx (CPU only).
    """

    def __init__(
        self,
        run_dir: str,
        device: str = "auto",
        batch_size: int = INFERENCE_BATCH,
        precision: str = "auto",
        max_length: int | None = None,
        backend: str = "torch",
        model_labels: str | None = None,
    ):
        if backend not in BACKENDS:
            raise SentituneError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.classifier = load_run(run_dir, with_model=backend == "torch")
        # A classifier from elsewhere: its probabilities summed onto our classes (None: ours already).
        self.to_ours = (
            None
            if self.classifier.is_run
            else model_label_matrix(self.classifier.labels, model_labels, run_dir)
        )
        self.labels = LABELS if self.to_ours is not None else self.classifier.labels
        if self.to_ours is not None:
            read_as = [LABELS[int(row.argmax())] for row in self.to_ours]
            log.info(
                "%s: its labels read as %s",
                run_dir,
                ", ".join(f"{n} = {c}" for n, c in zip(self.classifier.labels, read_as, strict=True)),
            )
            for name in set(LABELS) - set(read_as):
                log.warning("%s has no label for %s: it never predicts it", run_dir, name)
        self.backend = backend
        self.batch_size = batch_size
        local = self.classifier.local_dir  # the run read once, also for its settings and ONNX files
        self.max_length = max_length or trained_max_length(local)
        self.session = None
        if backend == "torch":
            self.device = resolve_device(device)
            self.precision = resolve_precision(precision, self.device)
            self.model = self.classifier.model.to(self.device)  # as trained: explanations read it
            self.runner, self.precision = inference_weights(self.model, self.precision, self.device)
        else:
            if device not in ("auto", "cpu"):
                raise SentituneError(f"--backend {backend} runs on the CPU; drop --device {device}")
            exported = Precision(
                "int8" if backend == "onnx-int8" else "fp32", f"the {backend} export as written"
            )
            self.device, self.precision, self.model = torch.device("cpu"), exported, None
            self.runner = None
            self.session = load_onnx(local, backend, shown_as=run_dir)

    @classmethod
    def for_run(cls, run_dir: str, options: InferenceOptions) -> Predictor:
        """The run's Predictor as a command's inference options say."""
        return cls(
            run_dir,
            device=options.device,
            precision=options.precision,
            batch_size=options.batch_size,
            backend=options.backend,
            model_labels=options.model_labels,
        )

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.classifier.encode([str(t) for t in texts], self.max_length)
        if len(tokens) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        if self.session is not None:
            probs = onnx_probs(self.session, tokens, self.batch_size)
        else:
            probs = infer_probs(self.runner, tokens, self.batch_size, self.device, self.precision)
        probs = require_finite(probs, self.classifier.source)
        return probs if self.to_ours is None else probs @ self.to_ours

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        probs = self.probabilities(texts)
        return [
            Prediction(
                self.labels[int(p.argmax())], {n: float(v) for n, v in zip(self.labels, p, strict=True)}
            )
            for p in probs
        ]

    def predict_frame(
        self, df: pd.DataFrame, text_column: str, prefix: str = "", source: str = "the input"
    ) -> pd.DataFrame:
        """`df` with a `<prefix>label` column and one `<prefix>score_<class>` column per class appended.
        A column of `df` with one of those names is refused, not replaced: the rows are the user's."""
        added = [f"{prefix}label", *(f"{prefix}score_{name}" for name in self.labels)]
        taken = [name for name in added if name in df.columns]
        if taken:
            raise SentituneError(
                f"{source} already has the column{'s' if len(taken) > 1 else ''} "
                f"{', '.join(repr(t) for t in taken)}, which predict would write; pass --prefix pred_ (the "
                f"added columns become pred_label, pred_score_<class>) or rename "
                f"{'them' if len(taken) > 1 else 'it'}"
            )
        texts = df[text_column].fillna("").astype(str).tolist()
        probs = self.probabilities(texts)
        out = df.copy()
        out[added[0]] = [self.labels[i] for i in probs.argmax(axis=1)] if len(probs) else []
        for i, column in enumerate(added[1:]):
            out[column] = np.round(probs[:, i], 6) if len(probs) else []
        return out


def load_onnx(local_dir: str, backend: str, shown_as: str):
    """The onnxruntime session of the run's export in `local_dir` (the run `shown_as` in messages)."""
    require_onnxruntime()
    path = onnx_path(local_dir, backend)
    if not os.path.exists(path):
        quantize = " --quantize int8" if backend == "onnx-int8" else ""
        raise SentituneError(
            f"{join(shown_as, EXPORT_DIR, os.path.basename(path))} not found; run "
            f"`sentitune export {shown_as}{quantize}` first, or use --backend torch"
        )
    return onnx_session(path)


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
    if (fs.exists(inner) if remote else os.path.exists(output_path)) and not overwrite:
        raise SentituneError(f"{output_path} exists; pass --overwrite to replace it")
    with OutputLock(output_path):
        return _write_predictions(
            predictor, input_path, output_path, text_column, chunk_rows, fs, inner, prefix
        )


def _write_predictions(predictor, input_path, output_path, text_column, chunk_rows, fs, inner, prefix) -> int:
    """predict_file's writing, under its lock: a temporary name beside the output, renamed at the end."""
    remote = fs is not None
    fmt = file_format(output_path)
    folder = os.path.dirname(os.path.abspath(output_path))
    name = os.path.basename(output_path)
    created = [] if remote else missing_folders(folder)
    for path in reversed(created):
        os.mkdir(path)
    if not remote:  # a killed earlier run's partial file
        for leftover in Path(folder).glob(f".{name}.partial-*"):
            leftover.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.partial-", suffix=f".{fmt}", dir=None if remote else folder)
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
            os.replace(tmp, output_path)
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
    texts = cfg.texts or stdin_texts(stdin)
    check_utf8(texts, "text")
    explanations = explain(predictor, texts) if cfg.explain else [None] * len(texts)
    for text, p, why in zip(texts, predictor.predict(texts), explanations, strict=True):
        row = {"text": text, "label": p.label, "scores": {k: round(v, 6) for k, v in p.scores.items()}}
        if why is not None:
            row["explanation"] = why
        stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {"to": "stdout", "files": 0, "labelled": 0, "skipped": 0, "rows": len(texts)}


def stdin_texts(stdin: TextIO) -> list[str]:
    """One text per non-empty line, read as bytes and decoded here so a non-UTF-8 line is named, not a
    traceback."""
    texts = []
    for number, line in enumerate(getattr(stdin, "buffer", stdin), 1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SentituneError(
                    f"stdin line {number} is not valid UTF-8 (byte 0x{line[exc.start]:02x} at position "
                    f"{exc.start}); send UTF-8 text"
                ) from None
        line = line.rstrip("\r\n")
        if line.strip():
            texts.append(line)
    if not texts:
        raise SentituneError(
            "no texts on stdin (only empty lines); pass texts as arguments or pipe one per line"
        )
    return texts


def check_utf8(texts: Sequence[str], what: str) -> None:
    """Text that cannot be UTF-8 (an argument in another encoding arrives as lone surrogates) is named
    with its position; the tokenizer would otherwise fail with a TypeError."""
    for number, text in enumerate(texts, 1):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            code = ord(text[exc.start])
            found = (
                f"byte 0x{code - 0xDC00:02x}"
                if 0xDC80 <= code <= 0xDCFF
                else f"a lone surrogate U+{code:04X}"
            )
            raise SentituneError(
                f"{what} {number} is not valid UTF-8 ({found} at position {exc.start}); pass UTF-8 text"
            ) from None
