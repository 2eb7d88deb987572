"""`sentitune cloud tune`: a Vertex AI HyperparameterTuningJob over the training settings that matter.

Each trial is the custom job `cloud submit` would create, with Vertex AI appending the trial's values
as `--learning_rate=…`, `--batch_size=…`, `--epochs=…`, `--keep_layers=…`, `--warmup_ratio=…` (train
accepts the underscore spellings). `sentitune train` reports the validation macro-F1 after every
validation through the cloudml-hypertune protocol, and the study keeps the trial that maximises it:
the walkthrough's "launch several jobs at once and keep the best model".
"""

from __future__ import annotations

import logging

from sentitune.cloud import catalog, prices
from sentitune.cloud.config import TuneConfig
from sentitune.cloud.submit import cost_env, cost_estimate, job_spec, preflight
from sentitune.cloud.vertex import aiplatform_types, call, client, to_json

log = logging.getLogger("sentitune")

METRIC = "val_macro_f1"


def parameters(cfg: TuneConfig) -> list:
    """The study's parameter specs, from the search space the config checked."""
    spec = aiplatform_types().StudySpec.ParameterSpec
    found = []
    for name, kind, values in cfg.search_space():
        if kind == "values":
            found.append(
                spec(parameter_id=name, categorical_value_spec=spec.CategoricalValueSpec(values=values))
            )
        elif kind == "discrete":
            found.append(spec(parameter_id=name, discrete_value_spec=spec.DiscreteValueSpec(values=values)))
        elif kind == "integers":
            low, high = values
            found.append(
                spec(
                    parameter_id=name, integer_value_spec=spec.IntegerValueSpec(min_value=low, max_value=high)
                )
            )
        else:
            low, high = values
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
        parameters=parameters(cfg),
        algorithm=algorithm,
    )
    job = types.HyperparameterTuningJob(
        display_name=cfg.display_name,
        study_spec=study,
        max_trial_count=cfg.max_trials,
        parallel_trial_count=cfg.parallel_trials,
        trial_job_spec=job_spec(cfg, cost_env(cost_estimate(cfg))),  # each trial: one submit job
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
    return {
        "hyperparameter_tuning_job": to_json(build_request(cfg)),
        "cost": study_cost(cfg),
        "checked_against": catalog.describe(catalog.load(cfg.catalog), cfg.catalog),
    }


def run(cfg: TuneConfig) -> dict:
    """`sentitune cloud tune`: the plan with --dry-run, else the submitted study."""
    return plan(cfg) if cfg.dry_run else tune(cfg)


def tune(cfg: TuneConfig) -> dict:
    preflight(cfg)
    estimate = study_cost(cfg)
    log.info(prices.describe(estimate))
    request = build_request(cfg)
    jobs = client("job", cfg.region, cfg.api_endpoint)
    job = call("CreateHyperparameterTuningJob", jobs.create_hyperparameter_tuning_job, request=request)
    return {"name": job.name, "state": job.state.name, "cost": estimate}
