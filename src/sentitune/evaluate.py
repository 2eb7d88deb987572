"""`sentitune evaluate`: a run's metrics and confusion matrix on any labelled file."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from sentitune.data import read_labelled
from sentitune.metrics import classification_metrics, plot_confusion_matrix
from sentitune.predict import Predictor
from sentitune.storage import StagedOutput, join

log = logging.getLogger("sentitune")


@dataclass
class EvaluateResult:
    metrics: dict
    output_dir: str


def evaluate(
    run_dir: str,
    data: str,
    output_dir: str | None = None,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "torch",
    overwrite: bool = False,
) -> EvaluateResult:
    """Evaluate the run in `run_dir` on the labelled file `data`; write metrics.json and
    confusion_matrix.png to `output_dir` (default: RUN_DIR/evaluation-<file name>[-<backend>])."""
    stem = os.path.basename(str(data).rstrip("/")).split(".")[0] or "data"
    suffix = "" if backend == "torch" else f"-{backend}"
    output_dir = output_dir or join(run_dir, f"evaluation-{stem}{suffix}")
    out = StagedOutput(
        output_dir,
        occupied_by=["metrics.json"],
        marker="metrics.json",
        what="an evaluation",
        overwrite=overwrite,
    )
    with out:
        predictor = Predictor(
            run_dir, device=device, precision=precision, batch_size=batch_size, backend=backend
        )
        split = read_labelled(data, text_column, label_column)
        metrics = classification_metrics(split.labels, predictor.probabilities(split.texts), predictor.labels)
        metrics["data"] = str(data)
        metrics["backend"] = backend
        metrics["inference_precision"] = predictor.precision.name
        plot_confusion_matrix(metrics, out.path("confusion_matrix.png"), os.path.basename(str(data)))
        out.path("metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        out.commit()
    return EvaluateResult(metrics, output_dir)
