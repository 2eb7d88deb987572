"""`sentitune cloud batch-predict`: a run folder on Cloud Storage scores files of posts on Cloud Storage as a
Vertex AI BatchPredictionJob, fanned out over as many replicas of the serving container as it needs.

Two requests: UploadModel (as `cloud deploy` sends it: the run served by the sentitune image's `sentitune
serve`; skipped with --registered-model) and CreateBatchPredictionJob. Vertex AI reads the inputs (JSONL:
one post per line, a JSON string or {"text": ...}; CSV: a header, then the post in the only column), posts
them to the container's predict route in requests of --instances-per-request, and writes the predictions
under --output-uri-prefix, in a folder of its own per job.
"""

from __future__ import annotations

import json
import logging

from sentitune.cloud import catalog, prices
from sentitune.cloud.config import BatchPredictConfig
from sentitune.cloud.deploy import LRO_TIMEOUT_S, MODEL_PLACEHOLDER, machine_spec, upload_request
from sentitune.cloud.vertex import aiplatform_types, call, client, to_json
from sentitune.errors import SentituneError
from sentitune.layout import METRICS, WEIGHTS
from sentitune.storage import exists, expand, join, listdir_names, open_input

log = logging.getLogger("sentitune")

PREDICTIONS_PREFIX = "prediction-"  # the folder Vertex AI writes each job's predictions into


def job_request(cfg: BatchPredictConfig, model: str):
    types = aiplatform_types()
    job = types.BatchPredictionJob(
        display_name=cfg.display_name,
        model=model,
        input_config=types.BatchPredictionJob.InputConfig(
            instances_format=cfg.instances_format, gcs_source=types.GcsSource(uris=list(cfg.input_uri))
        ),
        output_config=types.BatchPredictionJob.OutputConfig(
            predictions_format=cfg.predictions_format,
            gcs_destination=types.GcsDestination(output_uri_prefix=cfg.output_uri_prefix),
        ),
        dedicated_resources=types.BatchDedicatedResources(
            machine_spec=machine_spec(cfg, types),
            starting_replica_count=cfg.starting_replica_count,
            max_replica_count=cfg.max_replica_count,
        ),
        manual_batch_tuning_parameters=types.ManualBatchTuningParameters(
            batch_size=cfg.instances_per_request
        ),
        labels={"created-by": "sentitune"},
    )
    if cfg.service_account:
        job.service_account = cfg.service_account
    return types.CreateBatchPredictionJobRequest(parent=cfg.parent, batch_prediction_job=job)


def measured_speed(folder: str) -> float:
    """Posts per second from the metrics.json of `sentitune evaluate`."""
    path = join(folder, METRICS)
    if not exists(path):
        raise SentituneError(f"--throughput-from {folder}: no metrics.json (an output folder of evaluate?)")
    with open_input(path) as f:
        speed = json.load(f).get("examples_per_s")
    if not isinstance(speed, (int, float)) or not speed > 0:
        raise SentituneError(
            f"--throughput-from {folder}: its metrics.json has no examples_per_s; pass the output folder "
            "of `sentitune evaluate`, not a run folder"
        )
    return float(speed)


def count_posts(cfg: BatchPredictConfig) -> int:
    """The posts in the inputs: their lines, less each CSV's header."""
    files = expand(cfg.input_uri)
    posts = 0
    for path in files:
        if not exists(path):
            raise SentituneError(f"--input-uri {path} does not exist; pass --posts N or fix the name")
        with open_input(path) as f:
            lines = sum(1 for line in f if line.strip())
        posts += max(0, lines - 1) if cfg.instances_format == "csv" else lines
    return posts


def cost_estimate(cfg: BatchPredictConfig) -> dict:
    """The hourly cost of a replica, and the job's with --throughput-from (posts counted unless --posts)."""
    est = prices.estimate(
        cfg.region,
        cfg.machine_type,
        cfg.accelerator_type,
        cfg.accelerator_count,
        1,
        False,
        prices_file=cfg.prices,
    )
    if not cfg.throughput_from:
        return est
    speed = measured_speed(cfg.throughput_from)
    posts = cfg.posts or count_posts(cfg)
    return prices.batch_estimate(est, posts, speed, cfg.max_replica_count, cfg.throughput_from)


def run(cfg: BatchPredictConfig) -> dict:
    """The requests with --dry-run, else the created job."""
    upload = None if cfg.registered_model else upload_request(cfg)
    create = job_request(cfg, cfg.registered_model_name() or MODEL_PLACEHOLDER)
    cost = cost_estimate(cfg)
    log.info(prices.describe(cost, per_replica=True))
    if cfg.dry_run:
        return {
            "dry_run": True,
            "upload_model": to_json(upload) if upload else None,
            "create_batch_prediction_job": to_json(create),
            "cost": cost,
            "checked_against": catalog.describe(catalog.load(cfg.catalog), cfg.catalog),
        }
    check_storage(cfg)
    model = cfg.registered_model_name()
    if upload is not None:
        models = client("model", cfg.region, cfg.api_endpoint)
        log.info(f"uploading {cfg.run_dir} to the Model Registry as {cfg.display_name}")
        operation = call("UploadModel", models.upload_model, request=upload)
        model = call("UploadModel", operation.result, timeout=LRO_TIMEOUT_S).model
        log.info(f"model: {model}")
    create.batch_prediction_job.model = model
    jobs = client("job", cfg.region, cfg.api_endpoint)
    job = call("CreateBatchPredictionJob", jobs.create_batch_prediction_job, request=create)
    return {"dry_run": False, "name": job.name, "state": job.state.name, "model": model, "cost": cost}


def check_storage(cfg: BatchPredictConfig) -> None:
    """What only Cloud Storage can say, before anything is sent: the run is finished, every input exists,
    and the output prefix holds no earlier predictions (unless --overwrite)."""
    if not cfg.registered_model and not exists(join(cfg.run_dir, WEIGHTS)):
        raise SentituneError(f"{cfg.run_dir} is not a finished run (no {WEIGHTS}); nothing was sent")
    missing = [uri for uri in cfg.input_uri if "*" not in uri and not exists(uri)]
    if missing:
        raise SentituneError(f"--input-uri {missing[0]} does not exist; nothing was sent")
    earlier = sorted(n for n in listdir_names(cfg.output_uri_prefix) if n.startswith(PREDICTIONS_PREFIX))
    if earlier and not cfg.overwrite:
        raise SentituneError(
            f"{cfg.output_uri_prefix} already holds predictions ({', '.join(earlier[:3])}); pass --overwrite to "
            "write another job's beside them, or choose another --output-uri-prefix; nothing was sent"
        )
