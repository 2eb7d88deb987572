"""Predictor: load a run once, predict texts in length-sorted batches; and batch prediction of files."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from sentitune.batching import tokenize
from sentitune.config import BACKENDS
from sentitune.errors import SentituneError
from sentitune.model import load_run, trained_max_length
from sentitune.runtime import (
    Precision,
    infer_probs,
    onnx_probs,
    onnx_session,
    require_onnxruntime,
    resolve_device,
    resolve_precision,
)
from sentitune.storage import exists

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
        batch_size: int = 64,
        precision: str = "auto",
        max_length: int | None = None,
        backend: str = "torch",
    ):
        if backend not in BACKENDS:
            raise SentituneError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.classifier = load_run(run_dir, with_model=backend == "torch")
        self.labels = self.classifier.labels
        self.backend = backend
        self.batch_size = batch_size
        local = self.classifier.local_dir  # the run read once, also for its settings and ONNX files
        self.max_length = max_length or trained_max_length(local)
        self.session = None
        if backend == "torch":
            self.device = resolve_device(device)
            self.precision = resolve_precision(precision, self.device)
            self.model = self.classifier.model.to(self.device)
        else:
            if device not in ("auto", "cpu"):
                raise SentituneError(f"--backend {backend} runs on the CPU; drop --device {device}")
            exported = Precision(
                "int8" if backend == "onnx-int8" else "fp32", f"the {backend} export as written"
            )
            self.device, self.precision, self.model = torch.device("cpu"), exported, None
            self.session = load_onnx(local, backend, shown_as=run_dir)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        tokens = tokenize(self.classifier.tokenizer, [str(t) for t in texts], self.max_length)
        if len(tokens) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        if self.session is not None:
            return onnx_probs(self.session, tokens, self.batch_size)
        return infer_probs(self.model, tokens, self.batch_size, self.device, self.precision)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        probs = self.probabilities(texts)
        return [
            Prediction(
                self.labels[int(p.argmax())], {n: float(v) for n, v in zip(self.labels, p, strict=True)}
            )
            for p in probs
        ]

    def predict_frame(self, df: pd.DataFrame, text_column: str) -> pd.DataFrame:
        """`df` with a `label` column and one `score_<class>` column per class appended."""
        texts = df[text_column].fillna("").astype(str).tolist()
        probs = self.probabilities(texts)
        out = df.copy()
        out["label"] = [self.labels[i] for i in probs.argmax(axis=1)] if len(probs) else []
        for i, name in enumerate(self.labels):
            out[f"score_{name}"] = np.round(probs[:, i], 6) if len(probs) else []
        return out


def load_onnx(local_dir: str, backend: str, shown_as: str):
    """The onnxruntime session of the run's export in `local_dir` (the run `shown_as` in messages)."""
    import os

    from sentitune.export import EXPORT_DIR, MODEL_FILES
    from sentitune.storage import join

    require_onnxruntime()
    name = MODEL_FILES["int8" if backend == "onnx-int8" else "fp32"]
    path = os.path.join(local_dir, EXPORT_DIR, name)
    if not os.path.exists(path):
        quantize = " --quantize int8" if backend == "onnx-int8" else ""
        raise SentituneError(
            f"{join(shown_as, EXPORT_DIR, name)} not found; run `sentitune export {shown_as}{quantize}` "
            "first, or use --backend torch"
        )
    return onnx_session(path)


def predict_files(
    predictor: Predictor,
    inputs: Sequence[str],
    output_dir: str,
    text_column: str | None,
    chunk_rows: int = 50_000,
    overwrite: bool = False,
) -> dict:
    """Label each input file into `output_dir` under the same name (compression suffix dropped).

    Each output appears only when complete (written under a temporary name, then renamed or
    uploaded in one piece), so after an interruption the same command skips the finished files and
    redoes only the rest; --overwrite redoes them all.
    """
    import posixpath
    import time

    from sentitune.storage import join

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
    for number, (name, path) in enumerate(names.items(), 1):
        target = join(output_dir, name)
        if not overwrite and exists(target):
            log.info(f"[{number}/{len(names)}] {posixpath.basename(path)}: done earlier, skipped ({target})")
            summary["skipped"] += 1
            continue
        started = time.perf_counter()
        rows = predict_file(predictor, path, target, text_column, chunk_rows, overwrite=True)
        seconds = time.perf_counter() - started
        log.info(
            f"[{number}/{len(names)}] {path}: {rows} rows -> {target} "
            f"({seconds:.1f} s, {rows / max(seconds, 1e-9):.0f} rows/s)"
        )
        summary["labelled"] += 1
        summary["rows"] += rows
    return summary


def output_name(path: str) -> str:
    import posixpath

    name = posixpath.basename(str(path).rstrip("/"))
    for suffix in (".gz", ".bz2", ".xz", ".zst", ".zip"):
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
) -> int:
    """Predict every row of `input_path` into `output_path` (CSV, TSV, JSONL or Parquet by extension),
    keeping the input columns; chunked, written under a temporary name and renamed at the end."""
    import os
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from sentitune.data import file_format, pick_text_column, read_chunks
    from sentitune.storage import is_url, url_to_fs

    remote = is_url(output_path)
    fs, inner = url_to_fs(output_path) if remote else (None, output_path)
    if (fs.exists(inner) if remote else os.path.exists(output_path)) and not overwrite:
        raise SentituneError(f"{output_path} exists; pass --overwrite to replace it")
    fmt = file_format(output_path)
    folder = os.path.dirname(os.path.abspath(output_path))
    created = [] if remote else missing_folders(folder)
    for path in reversed(created):
        os.mkdir(path)
    fd, tmp = tempfile.mkstemp(
        prefix=".sentitune-predict-",
        suffix=f".{fmt}",
        dir=None if remote else os.path.dirname(os.path.abspath(output_path)),
    )
    rows, column, writer = 0, None, None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            for df in read_chunks(input_path, chunk_rows):
                if column is None:
                    column = pick_text_column(
                        [str(c) for c in df.columns],
                        text_column or "bodyText",
                        input_path,
                        explicit=bool(text_column),
                    )
                out = predictor.predict_frame(df, column)
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
    import os

    missing = []
    while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing
