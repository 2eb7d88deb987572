"""The scoring core every reader of a model shares (predict, evaluate, serve, the reports): a run loaded
once as a `Predictor`, texts scored in length-sorted batches by its PyTorch model or its checked ONNX
export."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from sentitune import LABELS
from sentitune.batching import TokenizedTexts
from sentitune.config import BACKENDS, INFERENCE_BATCH, InferenceOptions
from sentitune.errors import SentituneError
from sentitune.labels import model_label_matrix
from sentitune.layout import EXPORT_DIR, EXPORT_REPORT, WEIGHTS
from sentitune.runfolder import load_run, onnx_path, trained_max_length
from sentitune.runtime import (
    Precision,
    cpu_scorer,
    infer_probs,
    inference_weights,
    onnx_probs,
    onnx_session,
    require_finite,
    require_onnxruntime,
    resolve_device,
    resolve_precision,
)
from sentitune.storage import join, sha256_of

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
            # What probabilities_of runs: on a CPU the runner packed or traced, where that gives the runner's
            # probabilities (runtime.cpu_scorer); `runner` stays the eager module.
            self.scorer, self.scorer_reason = self.runner, f"eager: on {self.device.type}"
            if self.device.type == "cpu":
                self.scorer, self.scorer_reason = cpu_scorer(
                    self.runner,
                    lambda t: self.classifier.encode(t, self.max_length),
                    self.max_length,
                    self.device,
                    self.precision,
                )
        else:
            if device not in ("auto", "cpu"):
                raise SentituneError(f"--backend {backend} runs on the CPU; drop --device {device}")
            exported = Precision(
                "int8" if backend == "onnx-int8" else "fp32", f"the {backend} export as written"
            )
            self.device, self.precision, self.model = torch.device("cpu"), exported, None
            self.runner = self.scorer = None
            self.scorer_reason = f"onnxruntime ({backend})"
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
        return self.probabilities_of(self.tokens_of(texts))

    def tokens_of(self, texts: Sequence[str]) -> TokenizedTexts:
        """`texts` tokenised as the model reads them (normalised, cut at max_length)."""
        return self.classifier.encode([str(t) for t in texts], self.max_length)

    def probabilities_of(self, tokens: TokenizedTexts) -> np.ndarray:
        """Class probabilities of tokenised texts, in passes of `batch_size` sorted by length."""
        if len(tokens) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        if self.session is not None:
            probs = onnx_probs(self.session, tokens, self.batch_size)
        else:
            probs = infer_probs(self.scorer, tokens, self.batch_size, self.device, self.precision)
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
    check_export(local_dir, path, shown_as)
    return onnx_session(path)


def check_export(local_dir: str, path: str, shown_as: str) -> None:
    """The ONNX file at `path` is the one `sentitune export` wrote for this run: its SHA-256 and the run's
    weights' are those export_report.json recorded (a truncated or replaced file, or another run's export
    copied in, is refused before it is loaded)."""
    name = os.path.basename(path)
    shown = join(shown_as, EXPORT_DIR, name)
    again = f"export it again: `sentitune export {shown_as} --overwrite`"
    try:
        with open(os.path.join(local_dir, EXPORT_DIR, EXPORT_REPORT), encoding="utf-8") as f:
            report = json.load(f)
        recorded = next(m for m in report["models"].values() if m.get("file") == name)
        weights, file_hash = report["weights_sha256"], recorded["sha256"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, StopIteration):
        raise SentituneError(
            f"{shown} cannot be checked: {EXPORT_DIR}/{EXPORT_REPORT} does not record its SHA-256 and the run's "
            f"weights'; {again}"
        ) from None
    if sha256_of(os.path.join(local_dir, WEIGHTS)) != weights:
        raise SentituneError(f"{shown} was exported from other weights than {shown_as}'s; {again}")
    if sha256_of(path) != file_hash:
        raise SentituneError(
            f"{shown} is not the file exported (truncated or replaced: its SHA-256 differs); {again}"
        )
