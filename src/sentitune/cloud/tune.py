"""`sentitune cloud tune`: a Vertex AI HyperparameterTuningJob over the training settings that matter.

Each trial is the custom job `cloud submit` would create, with Vertex AI appending the trial's values
as `--learning_rate=…`, `--batch_size=…`, `--epochs=…`, `--keep_layers=…`, `--warmup_ratio=…` (train
accepts the underscore spellings). `sentitune train` reports the validation macro-F1 after every
validation through the cloudml-hypertune protocol, and the study keeps the trial that maximises it:
the walkthrough's "launch several jobs at once and keep the best model".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sentitune.cloud import prices
from sentitune.cloud.submit import SubmitConfig, cost_estimate, job_spec, preflight
from sentitune.cloud.vertex import aiplatform_types, call, client, to_json
from sentitune.config import _check, opt
from sentitune.errors import SentituneError

log = logging.getLogger("sentitune")

METRIC = "val_macro_f1"
ALGORITHMS = ("bayesian", "grid", "random")
# The tuned settings (TuneConfig fields, also train's options) and how Vertex AI searches each: a range of
# reals on a log or linear scale, a range of integers, or a list of values.
SEARCHED = {
    "learning_rate": "log",
    "batch_size": "values",
    "epochs": "integers",
    "keep_layers": "values",
    "warmup_ratio": "linear",
}


def _range(text: str, what: str, kind=float) -> tuple:
    try:
        low, high = (kind(x) for x in str(text).split(":"))
    except ValueError as exc:
        raise SentituneError(
            f"{what} {text!r} is not LOW:HIGH, e.g. {'1e-5:2e-4' if kind is float else '1:4'}"
        ) from exc
    if not low < high:
        raise SentituneError(f"{what} {text!r}: LOW must be below HIGH")
    return low, high


def _values(text: str, what: str) -> list[str]:
    """Whole numbers as strings: categorical values reach the trial exactly as written (16, not 16.0)."""
    try:
        values = sorted({int(x) for x in str(text).split(",")})
    except ValueError as exc:
        raise SentituneError(
            f"{what} {text!r} is not a comma-separated list of whole numbers, e.g. 16,32,64"
        ) from exc
    if any(v < 1 for v in values):
        raise SentituneError(f"{what} {text!r}: every value must be at least 1")
    return [str(v) for v in values]


@dataclass
class TuneConfig(SubmitConfig):
    """A hyperparameter study whose trials are `cloud submit` jobs."""

    max_trials: int = opt(8, "trials in all")
    parallel_trials: int = opt(2, "trials running at the same time")
    algorithm: str = opt("bayesian", "how Vertex AI picks the next trial", choices=ALGORITHMS)
    learning_rate: str | None = opt(
        "1e-5:2e-4", "learning-rate range LOW:HIGH (log scale); 'none': not tuned"
    )
    batch_size: str | None = opt("16,32,64", "batch sizes to try; 'none': not tuned")
    epochs: str | None = opt("1:4", "epoch range LOW:HIGH; 'none': not tuned")
    keep_layers: str | None = opt("3,4,6", "encoder layers to keep; 'none': not tuned")
    warmup_ratio: str | None = opt("0:0.2", "warm-up fraction range LOW:HIGH; 'none': not tuned")

    def __post_init__(self) -> None:
        for name in SEARCHED:
            if str(getattr(self, name)).lower() == "none":
                setattr(self, name, None)
        problems = []
        if self.max_trials < 1 or self.parallel_trials < 1:
            problems.append("--max-trials and --parallel-trials must be at least 1")
        elif self.parallel_trials > self.max_trials:
            problems.append(
                f"--parallel-trials {self.parallel_trials} exceeds --max-trials {self.max_trials}"
            )
        try:
            self.parameters()
        except SentituneError as exc:
            problems.append(str(exc))
        if not any(getattr(self, name) for name in SEARCHED):
            problems.append(
                "nothing to tune: give at least one of --learning-rate, --batch-size, --epochs, "
                "--keep-layers, --warmup-ratio"
            )
        _check(problems, "tune options")
        super().__post_init__()
        if self.display_name.startswith("sentitune-train-"):
            self.display_name = "sentitune-tune-" + self.display_name.removeprefix("sentitune-train-")

    def parameters(self) -> list:
        spec = aiplatform_types().StudySpec.ParameterSpec
        found = []
        for name, kind in SEARCHED.items():
            text, flag = getattr(self, name), "--" + name.replace("_", "-")
            if not text:
                continue
            if kind == "values":
                values = spec.CategoricalValueSpec(values=_values(text, flag))
                found.append(spec(parameter_id=name, categorical_value_spec=values))
            elif kind == "integers":
                low, high = _range(text, flag, int)
                values = spec.IntegerValueSpec(min_value=low, max_value=high)
                found.append(spec(parameter_id=name, integer_value_spec=values))
            else:
                low, high = _range(text, flag)
                scale = spec.ScaleType.UNIT_LOG_SCALE if kind == "log" else spec.ScaleType.UNIT_LINEAR_SCALE
                values = spec.DoubleValueSpec(min_value=low, max_value=high)
                found.append(spec(parameter_id=name, double_value_spec=values, scale_type=scale))
        return found


def build_request(cfg: TuneConfig):
    types = aiplatform_types()
    algorithm = {
        "bayesian": types.StudySpec.Algorithm.ALGORITHM_UNSPECIFIED,  # Vertex AI's default: Bayesian optimisation
        "grid": types.StudySpec.Algorithm.GRID_SEARCH,
        "random": types.StudySpec.Algorithm.RANDOM_SEARCH,
    }[cfg.algorithm]
    study = types.StudySpec(
        metrics=[
            types.StudySpec.MetricSpec(metric_id=METRIC, goal=types.StudySpec.MetricSpec.GoalType.MAXIMIZE)
        ],
        parameters=cfg.parameters(),
        algorithm=algorithm,
    )
    job = types.HyperparameterTuningJob(
        display_name=cfg.display_name,
        study_spec=study,
        max_trial_count=cfg.max_trials,
        parallel_trial_count=cfg.parallel_trials,
        trial_job_spec=job_spec(cfg),
        labels={"created-by": "sentitune"},
    )
    return types.CreateHyperparameterTuningJobRequest(parent=cfg.parent, hyperparameter_tuning_job=job)


def study_cost(cfg: TuneConfig) -> dict:
    """Hourly cost with the parallel trials running, and the study's when one trial's length is known."""
    one = cost_estimate(cfg)
    study = dict(one, trials=cfg.max_trials, parallel_trials=cfg.parallel_trials)
    if one.get("usd_per_hour") is not None:
        study["usd_per_hour"] = round(one["usd_per_hour"] * cfg.parallel_trials, 4)
    if "estimated_usd" in one:  # trials differ in epochs and size: the untuned run's length as a guide
        study["estimated_usd"] = round(one["estimated_usd"] * cfg.max_trials, 2)
        study["estimated_hours"] = round(one["estimated_hours"] * cfg.max_trials / cfg.parallel_trials, 3)
    return study


def plan(cfg: TuneConfig) -> dict:
    return {"hyperparameter_tuning_job": to_json(build_request(cfg)), "cost": study_cost(cfg)}


def tune(cfg: TuneConfig) -> dict:
    preflight(cfg)
    estimate = study_cost(cfg)
    log.info(prices.describe(estimate))
    request = build_request(cfg)
    jobs = client("job", cfg.region, cfg.api_endpoint)
    job = call("CreateHyperparameterTuningJob", jobs.create_hyperparameter_tuning_job, request=request)
    return {"name": job.name, "state": job.state.name, "cost": estimate}
