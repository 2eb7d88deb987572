"""Where a training run reports its progress: the terminal or log (`Progress`), TensorBoard event files
(`EventLog`: Vertex AI's AIP_TENSORBOARD_LOG_DIR, or --tensorboard-dir), Vertex AI's hyperparameter
tuning service (`TuningReport`) and Vertex AI Experiments (`record_experiment_run`).

TensorBoard events are written by torch's SummaryWriter into a local folder and, for a URL (gs://…), copied there
with fsspec after every validation, checkpoint and at the end, so TensorBoard (or a Vertex AI
TensorBoard instance) shows the run while it trains. Needs the `tensorboard` package (in
`sentitune[cloud]`) only when a folder is asked for.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from sentitune.errors import require_extra
from sentitune.storage import is_url, url_to_fs

log = logging.getLogger("sentitune")

TRAIN_SCALARS = {"loss": "train/loss", "accuracy": "train/accuracy", "lr": "train/learning_rate"}
VAL_SCALARS = {
    "val_loss": "val/loss",
    "val_accuracy": "val/accuracy",
    "val_macro_f1": "val/macro_f1",
    "val_macro_recall": "val/macro_recall",
}


class EventLog:
    """Scalars per step; a no-op when `target` is None."""

    def __init__(self, target: str | None, resumed_step: int | None = None):
        self.target = target
        self.writer = None
        if not target:
            return
        require_extra("tensorboard", "cloud", "TensorBoard logs (--tensorboard-dir, AIP_TENSORBOARD_LOG_DIR)")
        from torch.utils.tensorboard import SummaryWriter

        self.remote = is_url(target)
        self.local = Path(tempfile.mkdtemp(prefix="sentitune-events-")) if self.remote else Path(target)
        # purge_step: a resumed run hides the events its previous life wrote after the checkpoint
        self.writer = SummaryWriter(str(self.local), purge_step=resumed_step, flush_secs=30)
        log.info(f"TensorBoard events: {target}")

    def train(self, record: dict) -> None:
        if self.writer is None:
            return
        for key, tag in TRAIN_SCALARS.items():
            self.writer.add_scalar(tag, record[key], record["step"])
        if record.get("train_s"):
            self.writer.add_scalar(
                "train/examples_per_s", record["examples_this_run"] / record["train_s"], record["step"]
            )

    def validation(self, row: dict) -> None:
        if self.writer is None:
            return
        for key, tag in VAL_SCALARS.items():
            self.writer.add_scalar(tag, row[key], row["step"])
        self.sync()

    def sync(self) -> None:
        """Flush, and copy the event files to a URL target."""
        if self.writer is None:
            return
        self.writer.flush()
        if self.remote:
            fs, inner = url_to_fs(self.target)
            for path in self.local.rglob("*"):
                if path.is_file():
                    fs.put_file(str(path), f"{inner.rstrip('/')}/{path.relative_to(self.local).as_posix()}")

    def close(self) -> None:
        if self.writer is None:
            return
        self.sync()
        self.writer.close()
        if self.remote:
            shutil.rmtree(self.local, ignore_errors=True)
        self.writer = None


class TuningReport:
    """Validation macro-F1 for a Vertex AI hyperparameter tuning trial, through cloudml-hypertune: JSON
    lines in $CLOUD_ML_HP_METRIC_FILE, else the library's default file, which Vertex AI reads.

    Vertex AI does not promise the CLOUD_ML_* variables, so every process that runs inside a Vertex AI
    job reports: in sentitune's images always (they set SENTITUNE_REPORT_TUNING), elsewhere when
    CLUSTER_SPEC or an AIP_* variable is set. The trial id comes from CLOUD_ML_TRIAL_ID or CLUSTER_SPEC's
    task.trial. Outside a job (a laptop) nothing is written."""

    METRIC = "val_macro_f1"
    JOB_VARIABLES = (
        "SENTITUNE_REPORT_TUNING",
        "CLOUD_ML_TRIAL_ID",
        "CLOUD_ML_HP_METRIC_FILE",
        "CLUSTER_SPEC",
        "AIP_MODEL_DIR",
        "AIP_TRAINING_DATA_URI",
    )

    def __init__(self, enabled: bool = True):
        self.hpt = None
        if not enabled or not any(os.environ.get(name) for name in self.JOB_VARIABLES):
            return
        self.hpt = require_extra("hypertune", "cloud", "reporting to a tuning job").HyperTune()
        trial = os.environ.get("CLOUD_ML_TRIAL_ID") or trial_from_cluster_spec(os.environ.get("CLUSTER_SPEC"))
        if trial:
            self.hpt.trial_id = trial
        log.info(f"tuning trial {trial or '?'}: reporting {self.METRIC} to {self.hpt.metric_path}")

    def report(self, value: float, step: int) -> None:
        if self.hpt is not None:
            self.hpt.report_hyperparameter_tuning_metric(
                hyperparameter_metric_tag=self.METRIC, metric_value=value, global_step=step
            )


def trial_from_cluster_spec(spec: str | None) -> str | None:
    """The trial id Vertex AI puts in CLUSTER_SPEC ({"task": {"trial": "3", ...}}), if any."""
    try:
        trial = json.loads(spec or "{}").get("task", {}).get("trial")
    except (ValueError, AttributeError):
        return None
    return str(trial) if trial not in (None, "") else None


EXPERIMENT_ENV = ("AIP_EXPERIMENT_NAME", "AIP_EXPERIMENT_RUN_NAME")  # set by Vertex AI for `--experiment`
ENDPOINT_ENV = "SENTITUNE_API_ENDPOINT"  # another Vertex AI API host (Private Service Connect)
RESOURCE = re.compile(r"projects/([^/]+)/locations/([^/]+)/metadataStores/[^/]+/contexts/([^/]+)$")


def experiment_params(settings: dict) -> dict:
    """A run's settings as Experiments stores parameters: numbers and strings (booleans as strings)."""
    return {
        k: (str(v).lower() if isinstance(v, bool) else v)
        for k, v in settings.items()
        if isinstance(v, (str, int, float))
    }


def experiment_metrics(metrics: dict) -> dict:
    """The final metrics of the kept model, one number each: val_* and test_*, and the training speed."""
    found = {
        f"{split}_{name}": metrics[split][name]
        for split in ("val", "test")
        if split in metrics
        for name in ("accuracy", "macro_f1", "macro_recall", "loss")
    }
    training = metrics.get("training", {})
    for name in ("examples_per_s", "steps", "wall_s"):
        if isinstance(training.get(name), (int, float)):
            found[f"training_{name}"] = training[name]
    return found


def record_experiment_run(settings: dict, metrics: dict) -> bool:
    """In a job submitted with `--experiment`, record the run's settings and final metrics in the
    Experiment run Vertex AI made for it (AIP_EXPERIMENT_NAME, AIP_EXPERIMENT_RUN_NAME); elsewhere do
    nothing. The model is already saved: a failure here is a warning, not a failed run."""
    experiment, run = (os.environ.get(name) for name in EXPERIMENT_ENV)
    if not experiment or not run:
        return False
    try:
        found = RESOURCE.search(run)
        if not found:
            raise ValueError(f"AIP_EXPERIMENT_RUN_NAME {run!r} is not a metadata context name")
        project, location, run_id = found.groups()
        experiment_id = experiment.rstrip("/").rsplit("/", 1)[-1]
        run_name = run_id.removeprefix(f"{experiment_id}-")
        aiplatform = require_extra("google.cloud.aiplatform", "cloud", "recording to Vertex AI Experiments")
        endpoint = os.environ.get(ENDPOINT_ENV)
        credentials = None
        if endpoint and endpoint.startswith("http://"):  # a local stand-in: no token in clear text
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()
        # No project or location here: with them, init would look up the experiment in the environment
        # before it has credentials. The run below names both.
        aiplatform.init(api_endpoint=endpoint, api_transport="rest", credentials=credentials)
        recorded = aiplatform.ExperimentRun(
            run_name, experiment=experiment_id, project=project, location=location, credentials=credentials
        )
        recorded.log_params(experiment_params(settings))
        recorded.log_metrics(experiment_metrics(metrics))
    except Exception as exc:  # noqa: BLE001  (any failure of the SDK or the service: the run is saved)
        log.warning(f"could not record the run in Vertex AI Experiments ({type(exc).__name__}: {exc})")
        return False
    log.info(f"recorded settings and metrics in experiment {experiment_id}, run {run_name}")
    return True


def target_dir(configured: str | None) -> str | None:
    return configured or os.environ.get("AIP_TENSORBOARD_LOG_DIR") or None


class Progress:
    """A progress bar on a terminal; a plain line every `log_every` steps otherwise (cloud logs)."""

    def __init__(self, total_steps: int, log_every: int, show: bool = True):
        self.bar = None
        if show and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True, file=sys.stderr)
        self.done = 0

    def update(self, record: dict, batch: int, batches: int, epochs: int) -> None:
        rate = record["examples_this_run"] / max(record["train_s"], 1e-9)
        if self.bar is not None:
            self.bar.update(record["step"] - self.done)
            self.bar.set_postfix(
                loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}", ex_s=f"{rate:.0f}"
            )
        else:
            log.info(
                "epoch %d/%d batch %d/%d step %d: loss %.4f accuracy %.4f lr %.2e %.0f examples/s %.1fs",
                record["epoch"],
                epochs,
                batch,
                batches,
                record["step"],
                record["loss"],
                record["accuracy"],
                record["lr"],
                rate,
                record["elapsed_s"],
            )
        self.done = record["step"]

    def note(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            log.info(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
