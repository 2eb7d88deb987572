"""`sentitune evaluate`: a run's metrics and confusion matrix on any labelled file."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from sentitune.config import EvaluateConfig
from sentitune.metrics import classification_metrics, plot_confusion_matrix
from sentitune.predict import Predictor
from sentitune.runfolder import CONFUSION, METRICS
from sentitune.splits import read_labelled
from sentitune.storage import StagedOutput, join

log = logging.getLogger("sentitune")


@dataclass
class EvaluateResult:
    metrics: dict
    output_dir: str


def evaluate(cfg: EvaluateConfig) -> EvaluateResult:
    """Evaluate the run in `cfg.run_dir` on the labelled file `cfg.data`; write metrics.json and
    confusion_matrix.png to `cfg.output_dir` (default: RUN_DIR/evaluation-<file name>[-<backend>])."""
    stem = os.path.basename(str(cfg.data).rstrip("/")).split(".")[0] or "data"
    suffix = "" if cfg.backend == "torch" else f"-{cfg.backend}"
    output_dir = cfg.output_dir or join(cfg.run_dir, f"evaluation-{stem}{suffix}")
    out = StagedOutput(
        output_dir,
        occupied_by=[METRICS],
        marker=METRICS,
        what="an evaluation",
        overwrite=cfg.overwrite,
        option="--output-dir",
    )
    with out:
        predictor = Predictor.for_run(cfg.run_dir, cfg)
        split = read_labelled(cfg.data, cfg.text_column, cfg.label_column)
        metrics = classification_metrics(split.labels, predictor.probabilities(split.texts), predictor.labels)
        metrics["data"] = str(cfg.data)
        metrics["backend"] = cfg.backend
        metrics["inference_precision"] = predictor.precision.name
        plot_confusion_matrix(metrics, out.path(CONFUSION), os.path.basename(str(cfg.data)))
        out.path(METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
        out.commit()
    return EvaluateResult(metrics, output_dir)
