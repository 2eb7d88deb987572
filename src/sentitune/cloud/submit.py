"""`sentitune cloud submit`: one Vertex AI custom job running `sentitune train` in the sentitune image.

The request is built first (so --dry-run prints exactly what would be sent), the cost is estimated from
the price table, then the CustomJob is created through the SDK. `cloud status`, `cloud logs` and
`cloud cancel` follow a job by ID or resource name.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shlex
import shutil
import subprocess

from sentitune.cloud import catalog, prices
from sentitune.cloud.config import FollowConfig, SubmitConfig, parse_duration
from sentitune.cloud.deploy import LRO_TIMEOUT_S
from sentitune.cloud.vertex import aiplatform_types, call, client, console_url, to_json
from sentitune.config import train_option
from sentitune.errors import SentituneError
from sentitune.layout import METRICS
from sentitune.storage import exists, join, open_input

log = logging.getLogger("sentitune")


COST_ENV = "SENTITUNE_COST_ESTIMATE"  # the estimate, passed to the job; train records it in run_config.json


def build_request(cfg: SubmitConfig, estimate: dict):
    """The CreateCustomJob request; the job's container also gets the cost estimate (COST_ENV)."""
    types = aiplatform_types()
    job = types.CustomJob(
        display_name=cfg.display_name,
        job_spec=job_spec(cfg, cost_env(estimate)),
        labels={"created-by": "sentitune"},
    )
    return types.CreateCustomJobRequest(parent=cfg.parent, custom_job=job)


def cost_env(estimate: dict) -> list[str]:
    return [f"{COST_ENV}={json.dumps(estimate, separators=(',', ':'))}"]


def job_spec(cfg: SubmitConfig, extra_env: list[str] = ()):
    """The CustomJobSpec: worker pools running the image with the training arguments, output, scheduling."""
    types = aiplatform_types()
    machine = types.MachineSpec(machine_type=cfg.machine_type)
    if cfg.accelerator_type:
        machine.accelerator_type = types.AcceleratorType[cfg.accelerator_type]
        machine.accelerator_count = cfg.accelerator_count
    env = [types.EnvVar(name=k, value=v) for k, v in (e.split("=", 1) for e in [*cfg.env, *extra_env])]

    def pool(replicas: int):
        return types.WorkerPoolSpec(
            machine_spec=machine,
            replica_count=replicas,
            container_spec=types.ContainerSpec(image_uri=cfg.image_uri, args=list(cfg.train_args), env=env),
        )

    # Vertex AI's layout: pool 0 is the primary (exactly one replica), pool 1 the other workers.
    pools = [pool(1)] + ([pool(cfg.replica_count - 1)] if cfg.replica_count > 1 else [])
    spec = types.CustomJobSpec(worker_pool_specs=pools)
    if cfg.base_output_dir:
        spec.base_output_directory = types.GcsDestination(output_uri_prefix=cfg.base_output_dir)
    if cfg.service_account:
        spec.service_account = cfg.service_account
    if cfg.tensorboard:
        spec.tensorboard = cfg.tensorboard_name()
    if cfg.experiment:
        spec.experiment = cfg.experiment_name()  # Vertex AI adds a run to it and names both to the job
    scheduling = {}
    if cfg.timeout:
        scheduling["timeout"] = {"seconds": parse_duration(cfg.timeout)}
    if cfg.restart_on_worker_restart:
        scheduling["restart_job_on_worker_restart"] = True
    if cfg.spot:
        scheduling["strategy"] = types.Scheduling.Strategy.SPOT
    if scheduling:
        spec.scheduling = types.Scheduling(**scheduling)
    return spec


def gcloud_command(cfg: SubmitConfig) -> str:
    """The equivalent `gcloud ai custom-jobs create`: the walkthrough's flags when they can say it all,
    else `--config` with the request's jobSpec (gcloud has no flags for the output folder or scheduling)."""
    words = [
        "gcloud ai custom-jobs create",
        f"--project={cfg.project}",
        f"--region={cfg.region}",
        f"--display-name={shlex.quote(cfg.display_name)}",
        "--labels=created-by=sentitune",
    ]
    if cfg.base_output_dir or cfg.spot or cfg.timeout or cfg.restart_on_worker_restart or cfg.env:
        return " ".join([*words, "--config=custom_job_spec.json"]) + (
            "   # custom_job_spec.json: customJob.jobSpec of the request above"
        )

    def pool_flag(replicas: int) -> str:
        parts = [f"machine-type={cfg.machine_type}"]
        if cfg.accelerator_type:
            parts += [
                f"accelerator-type={cfg.accelerator_type}",
                f"accelerator-count={cfg.accelerator_count}",
            ]
        parts += [f"replica-count={replicas}", f"container-image-uri={cfg.image_uri}"]
        return "--worker-pool-spec=" + ",".join(parts)

    words.append(pool_flag(1))
    if cfg.replica_count > 1:
        words.append(pool_flag(cfg.replica_count - 1))
    if cfg.service_account:
        words.append(f"--service-account={cfg.service_account}")
    if cfg.train_args:
        words.append("--args=" + shlex.quote(",".join(cfg.train_args)))
    return " ".join(words)


def cost_estimate(cfg: SubmitConfig) -> dict:
    """The hourly cost, and the run's when --throughput-from gives a measured speed."""
    speed = examples = None
    if cfg.throughput_from:
        path = join(cfg.throughput_from, METRICS)
        if not exists(path):
            raise SentituneError(
                f"--throughput-from {cfg.throughput_from}: no metrics.json (a finished run folder?)"
            )
        with open_input(path) as f:
            training = json.load(f).get("training", {})
        speed = training.get("examples_per_s")
        if training.get("epochs_run"):  # assumes the job's data is as large as that run's
            examples = round(training["examples"] / training["epochs_run"])
    return prices.estimate(
        cfg.region,
        cfg.machine_type,
        cfg.accelerator_type,
        cfg.accelerator_count,
        cfg.replica_count,
        cfg.spot,
        examples_per_epoch=examples,
        epochs=train_option(cfg.train, "epochs") if cfg.train is not None else None,
        examples_per_s=speed,
        prices_file=cfg.prices,
    )


def plan(cfg: SubmitConfig) -> dict:
    """Exactly what `submit` sends, and the gcloud equivalent."""
    estimate = cost_estimate(cfg)
    request = build_request(cfg, estimate)
    return {
        "custom_job": to_json(request),
        "gcloud": gcloud_command(cfg),
        "cost": estimate,
        "checked_against": catalog.describe(catalog.load(cfg.catalog), cfg.catalog),
    }


def preflight(cfg: SubmitConfig) -> None:
    """What would fail in the cloud after the machines start, checked before anything is sent: inputs on
    Cloud Storage that do not exist, and an output folder that already holds a finished run."""
    parsed, problems = cfg.train, []
    for flag in ("--training-file", "--validation-file", "--testing-file", "--data"):
        value = getattr(parsed, flag[2:].replace("-", "_"), None)
        if value and str(value).startswith("gs://") and not exists(value):
            problems.append(f"{flag} {value} does not exist (check the bucket and object names)")
    job_dir = getattr(parsed, "job_dir", None)
    model_dir = job_dir or (join(cfg.base_output_dir, "model") if cfg.base_output_dir else None)
    if model_dir and not getattr(parsed, "overwrite", False) and exists(join(model_dir, METRICS)):
        problems.append(
            f"{model_dir} already holds a finished run; pass -- --overwrite or another output folder"
        )
    if problems:
        raise SentituneError("; ".join(problems) + "; nothing was submitted")


def run(cfg: SubmitConfig) -> dict:
    """`sentitune cloud submit`: the plan with --dry-run, else the submitted job."""
    return plan(cfg) if cfg.dry_run else submit(cfg)


def submit(cfg: SubmitConfig) -> dict:
    """Create the job; returns its resource name and the cost estimate (also passed to the job)."""
    preflight(cfg)
    estimate = cost_estimate(cfg)
    request = build_request(cfg, estimate)
    log.info(prices.describe(estimate))
    if cfg.experiment:
        ensure_experiment(cfg)
    jobs = client("job", cfg.region, cfg.api_endpoint)
    job = call("CreateCustomJob", jobs.create_custom_job, request=request)
    return {"name": job.name, "state": job.state.name, "cost": estimate}


def ensure_experiment(cfg: SubmitConfig) -> None:
    """The job's Experiment must exist before the job names it: fetched, else created as the SDK creates
    one (a system.Experiment context in the region's default metadata store)."""
    from google.api_core.exceptions import NotFound

    types = aiplatform_types()
    metadata = client("metadata", cfg.region, cfg.api_endpoint)
    name = cfg.experiment_name()
    store = name.rsplit("/contexts/", 1)[0]

    def get():
        try:
            return metadata.get_context(name=name)
        except NotFound:
            return None

    def create():
        context = types.Context(
            display_name=cfg.experiment,
            schema_title="system.Experiment",
            schema_version="0.0.1",
            metadata={"experiment_deleted": False},
        )
        try:
            return metadata.create_context(parent=store, context=context, context_id=cfg.experiment)
        except NotFound:  # a project that never used Vertex AI metadata has no default store yet
            operation = metadata.create_metadata_store(
                parent=store.rsplit("/metadataStores/", 1)[0], metadata_store_id="default"
            )
            operation.result(timeout=LRO_TIMEOUT_S)
            return metadata.create_context(parent=store, context=context, context_id=cfg.experiment)

    if call("GetContext", get) is not None:
        log.info(f"experiment {cfg.experiment}: the job adds a run to it")
        return
    call("CreateContext", create)
    log.info(f"experiment {cfg.experiment}: created; the job adds a run to it")


# ----------------------------------------------------------------------------- follow a job


def job_name(job: str, project: str | None, region: str) -> str:
    if job.startswith("projects/"):
        return job
    if not project:
        raise SentituneError(
            "no project: pass --project ID or set GOOGLE_CLOUD_PROJECT (or the job's full resource name)"
        )
    return f"projects/{project}/locations/{region}/customJobs/{job}"


def region_of(name: str, default: str) -> str:
    parts = name.split("/")
    return parts[3] if len(parts) > 3 and parts[2] == "locations" else default


def status(cfg: FollowConfig) -> dict:
    """`sentitune cloud status`: the job as Vertex AI returns it (`resource`) and what a person wants of it
    (`summary`): state, times, how long it ran, its machines and what they cost so far."""
    name = job_name(cfg.job, cfg.project, cfg.region)
    region = region_of(name, cfg.region)
    found = call("GetCustomJob", client("job", region, cfg.api_endpoint).get_custom_job, name=name)
    summary = {"name": found.name, "display_name": found.display_name, "state": found.state.name}
    times = {}
    for key in ("create_time", "start_time", "end_time"):
        value = getattr(found, key, None)
        if value:
            times[key] = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
            summary[key] = times[key].isoformat()
    if "start_time" in times:
        end = times.get("end_time") or dt.datetime.now(dt.UTC)
        summary["ran_s"] = round((end - times["start_time"]).total_seconds())
    pools = [p for p in found.job_spec.worker_pool_specs if p.replica_count]
    if pools:
        machine = pools[0].machine_spec
        gpu = machine.accelerator_type.name if machine.accelerator_count else None
        spot = found.job_spec.scheduling.strategy.name == "SPOT"
        cost = prices.estimate(
            region, machine.machine_type, gpu, machine.accelerator_count,
            sum(p.replica_count for p in pools), spot,
        )  # fmt: skip
        summary["machine"] = cost
        if cost["usd_per_hour"] is not None and "ran_s" in summary:
            summary["usd_so_far"] = round(cost["usd_per_hour"] * summary["ran_s"] / 3600, 2)
    if found.error and found.error.message:
        summary["error"] = found.error.message
    summary["console"] = console_url(found.name)
    return {"summary": summary, "resource": to_json(found)}


def cancel(cfg: FollowConfig) -> str:
    """`sentitune cloud cancel`: ask Vertex AI to cancel the job; returns its resource name."""
    name = job_name(cfg.job, cfg.project, cfg.region)
    call(
        "CancelCustomJob",
        client("job", region_of(name, cfg.region), cfg.api_endpoint).cancel_custom_job,
        name=name,
    )
    return name


def stream_logs(cfg: FollowConfig) -> int:
    """`sentitune cloud logs`: follow the job's log with gcloud (Cloud Logging's own client for it)."""
    region = cfg.region
    name = job_name(cfg.job, cfg.project, region)
    if shutil.which("gcloud") is None:
        raise SentituneError("gcloud not found: install the Google Cloud CLI to stream a job's logs")
    job_id, job_region = name.rsplit("/", 1)[1], region_of(name, region)
    command = [
        "gcloud",
        "ai",
        "custom-jobs",
        "stream-logs",
        job_id,
        f"--region={job_region}",
        f"--project={name.split('/')[1]}",
    ]
    log.info("$ " + shlex.join(command))
    return subprocess.run(command).returncode
