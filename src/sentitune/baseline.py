"""`sentitune baseline`: TF-IDF word and character n-grams + logistic regression, the classic yardstick.

It reads the same data as `sentitune train`, fits in well under a minute on 2 CPU cores and writes the
same metrics, so every transformer run can say how much it adds over a linear model. The model itself
(fit, evaluation, saving without pickle, `load_baseline`) is tfidf.py's.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass

from sentitune.config import BaselineConfig
from sentitune.errors import SentituneError, require_extra
from sentitune.layout import CONFUSION, METRICS
from sentitune.metrics import plot_confusion_matrix
from sentitune.splits import LabelledTexts
from sentitune.splits import load_splits as read_splits
from sentitune.storage import StagedOutput
from sentitune.tfidf import MODEL_JSON, MODEL_WEIGHTS, PURPOSE, evaluate_splits, fit

log = logging.getLogger("sentitune")


@dataclass
class BaselineResult:
    run_dir: str
    metrics: dict


def baseline(cfg: BaselineConfig) -> BaselineResult:
    """Fit TF-IDF + logistic regression on the training split, evaluate val/test, write `cfg.job_dir`.

    metrics.json has train's layout: `val`, `test`, `train` (a seeded sample) and a `training` block
    with `fit_s` (vectorise + solve), `wall_s` and `cpu_s` (the whole command) and the settings."""
    started, started_cpu = time.perf_counter(), time.process_time()
    sklearn = require_extra("sklearn", "baseline", PURPOSE)
    out = StagedOutput(  # refuse an occupied folder before reading anything
        cfg.job_dir,
        occupied_by=[METRICS, MODEL_JSON, MODEL_WEIGHTS],
        marker=METRICS,
        what="a finished run",
        overwrite=cfg.overwrite,
        option="--job-dir",
        command="baseline",
    )
    with out:
        splits = load_splits(cfg)
        model, stats = fit(cfg, splits["train"])
        metrics = evaluate_splits(model, splits, cfg)
        metrics["training"] = {
            "model": "tf-idf word 1-2 + char_wb 2-5 grams, logistic regression",
            "examples": len(splits["train"]),
            **stats,
            "settings": asdict(cfg),
            "sklearn": sklearn.__version__,
        }
        model.save(out)
        shown = "test" if "test" in metrics else "val" if "val" in metrics else None
        if shown:
            plot_confusion_matrix(metrics[shown], out.path(CONFUSION), f"baseline, {shown} split")
        metrics["training"]["wall_s"] = round(time.perf_counter() - started, 2)
        metrics["training"]["cpu_s"] = round(time.process_time() - started_cpu, 2)
        out.path(METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
        out.commit()
    log.info("baseline run folder: %s (%.1fs)", cfg.job_dir, metrics["training"]["wall_s"])
    return BaselineResult(cfg.job_dir, metrics)


# ----------------------------------------------------------------------------- data and model


def load_splits(cfg: BaselineConfig) -> dict[str, LabelledTexts]:
    """train/val/test as `sentitune train` reads them; every class must have training posts."""
    splits = read_splits(cfg)
    classes = splits["train"].classes
    missing = [classes[i] for i in range(len(classes)) if not (splits["train"].labels == i).any()]
    if missing:
        raise SentituneError(
            f"{splits['train'].path} has no training posts of class {', '.join(missing)}; "
            "the baseline needs examples of every class"
        )
    return splits
