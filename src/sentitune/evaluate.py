"""`sentitune evaluate`: a run's metrics and confusion matrix on any labelled file."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from sentitune.config import EvaluateConfig
from sentitune.errors import SentituneError
from sentitune.explain import explain
from sentitune.layout import CONFUSION, METRICS, REPORT
from sentitune.metrics import (
    bootstrap_intervals,
    classification_metrics,
    collapsed,
    plot_confusion_matrix,
)
from sentitune.model import is_hub_id
from sentitune.report import ReportInput, explain_mistakes, render
from sentitune.scoring import Predictor
from sentitune.splits import read_labelled
from sentitune.storage import StagedOutput, join

log = logging.getLogger("sentitune")

PREDICTIONS = "predictions.csv"


@dataclass
class EvaluateResult:
    metrics: dict
    output_dir: str
    model: str = ""
    compared: list[EvaluateResult] = field(default_factory=list)  # every model, when several were given


def evaluate(cfg: EvaluateConfig) -> EvaluateResult:
    """Evaluate the run in `cfg.run_dir` (and each of `cfg.compare`) on the labelled file `cfg.data`; write
    metrics.json and confusion_matrix.png to `cfg.output_dir` (default: RUN_DIR/evaluation-<file
    name>[-<backend>]); with several models, each into a folder of its own name under --output-dir."""
    if not cfg.compare:
        return evaluate_one(cfg)
    models = [cfg.run_dir, *cfg.compare]
    if len(set(models)) < len(models):
        raise SentituneError("a model is named twice; name each model to compare once")
    folders = [None] * len(models)
    if cfg.output_dir:
        names = [os.path.basename(str(m).rstrip("/")) for m in models]
        if len(set(names)) < len(names):  # two runs/ folders of one name: the whole path names each
            names = [
                re.sub(r"[^\w.-]+", "-", str(m).rstrip("/").split("://")[-1]).strip("-.") for m in models
            ]
        folders = [join(cfg.output_dir, name) for name in names]
    configs = [
        dataclasses.replace(cfg, run_dir=model, compare=[], output_dir=folder)
        for model, folder in zip(models, folders, strict=True)
    ]
    with contextlib.ExitStack() as stack:  # every output staged, and committed only once all succeeded
        staged = [stack.enter_context(staged_output(c)) for c in configs]
        results = [evaluate_into(c, out) for c, out in zip(configs, staged, strict=True)]
        for number, out in enumerate(staged):
            try:
                out.commit()
            except OSError as exc:  # rare (a full disk between commits): say which evaluations exist
                written = ", ".join(o.dest for o in staged[:number]) or "none"
                raise SentituneError(
                    f"cannot write {out.dest}: {exc.strerror}; written before it: {written}; the others were "
                    "not written. Free space and run again with --overwrite"
                ) from None
    first = results[0]
    return EvaluateResult(first.metrics, first.output_dir, first.model, compared=results)


def evaluate_one(cfg: EvaluateConfig) -> EvaluateResult:
    with staged_output(cfg) as out:
        result = evaluate_into(cfg, out)
        out.commit()
    return result


def staged_output(cfg: EvaluateConfig) -> StagedOutput:
    """The evaluation's output folder (default: RUN_DIR/evaluation-<file name>[-<backend>]), locked and
    checked; nothing is in it until `commit()`."""
    if is_hub_id(cfg.run_dir) and not cfg.output_dir:
        raise SentituneError(
            f"{cfg.run_dir} is a hub model, with no folder here for its results: pass --output-dir"
        )
    stem = os.path.basename(str(cfg.data).rstrip("/")).split(".")[0] or "data"
    suffix = "" if cfg.backend == "torch" else f"-{cfg.backend}"
    return StagedOutput(
        cfg.output_dir or join(cfg.run_dir, f"evaluation-{stem}{suffix}"),
        occupied_by=[METRICS],
        marker=METRICS,
        what="an evaluation",
        overwrite=cfg.overwrite,
        option="--output-dir",
        command="evaluate",
    )


def evaluate_into(cfg: EvaluateConfig, out: StagedOutput) -> EvaluateResult:
    """Evaluate `cfg.run_dir` on `cfg.data` into the staged `out` (the caller commits it)."""
    predictor = Predictor.for_run(cfg.run_dir, cfg)
    split = read_labelled(
        cfg.data,
        cfg.text_column,
        cfg.label_column,
        classes=predictor.labels,
        hint=f"{cfg.run_dir} was trained on those classes; evaluate it on data labelled with them",
    )
    start = time.perf_counter()
    probabilities = predictor.probabilities(split.texts)
    seconds = time.perf_counter() - start
    metrics = classification_metrics(split.labels, probabilities, predictor.labels)
    degenerate = collapsed(metrics, f"posts of {cfg.data}")
    if degenerate:
        message = f"{cfg.run_dir} {degenerate}: it scores the class balance, not the posts"
        log.warning(message)
        metrics["warnings"] = [message]
    metrics["intervals_95"] = bootstrap_intervals(
        split.labels, probabilities.argmax(axis=1), len(predictor.labels)
    )
    metrics["data"] = str(cfg.data)
    metrics["model"] = str(cfg.run_dir)
    metrics["backend"] = cfg.backend
    metrics["inference_precision"] = predictor.precision.name
    metrics["examples_per_s"] = round(len(split) / max(seconds, 1e-9), 1)
    plot_confusion_matrix(metrics, out.path(CONFUSION), os.path.basename(str(cfg.data)))
    write_predictions(out.path(PREDICTIONS), split.texts, split.labels, probabilities, predictor.labels)
    report = ReportInput(
        title=f"evaluation of {cfg.run_dir} on {os.path.basename(str(cfg.data))}",
        metrics=metrics,
        split=str(cfg.data),
        labels=list(predictor.labels),
        texts=list(split.texts),
        gold=split.labels,
        probs=probabilities,
        notes=[f"Warning: {w}." for w in metrics.get("warnings", [])],
        class_counts={"data": dict(zip(predictor.labels, np.bincount(split.labels, minlength=len(predictor.labels)).tolist(), strict=True))},
        settings={"model": str(cfg.run_dir), "data": str(cfg.data), "backend": cfg.backend,
                  "inference precision": predictor.precision.name, "examples/s": metrics["examples_per_s"]},
    )  # fmt: skip
    if predictor.model is not None:  # the PyTorch backend can say which words drove the mistakes
        report.explanations = explain_mistakes(report, partial(explain, predictor))
    out.path(REPORT).write_text(render(report))
    out.path(METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
    return EvaluateResult(metrics, out.dest, str(cfg.run_dir))


def write_predictions(path, texts, gold, probs: np.ndarray, labels) -> None:
    """Every post with its gold and predicted label, each class's score, and whether it was right."""
    predicted = probs.argmax(axis=1)
    frame = pd.DataFrame(
        {"text": list(texts), "gold": np.asarray(labels)[gold], "predicted": np.asarray(labels)[predicted]}
    )
    for i, name in enumerate(labels):
        frame[f"score_{name}"] = probs[:, i].round(6)
    frame["correct"] = predicted == np.asarray(gold)
    frame.to_csv(path, index=False)
