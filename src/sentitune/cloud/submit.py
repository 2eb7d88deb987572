"""`sentitune cloud submit`: one Vertex AI custom job running `sentitune train` in the sentitune image.

The request is built first (so --dry-run prints exactly what would be sent), the cost is estimated from
the price table, then the CustomJob is created through the SDK. `cloud status`, `cloud logs` and
`cloud cancel` follow a job by ID or resource name.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field

from sentitune.cloud import prices
from sentitune.cloud.vertex import (
    DEFAULT_REGION,
    DEFAULT_REPOSITORY,
    aiplatform_types,
    api_endpoint_option,
    call,
    client,
    default_project,
    image_uri,
    project_option,
    target_problems,
    to_json,
)
from sentitune.config import _check, opt, train_option
from sentitune.errors import SentituneError

log = logging.getLogger("sentitune")

# Which machine family each GPU attaches to (Vertex AI refuses other pairs after the job is queued).
GPU_MACHINES = {
    "NVIDIA_TESLA_T4": ("n1-",),
    "NVIDIA_TESLA_P4": ("n1-",),
    "NVIDIA_TESLA_P100": ("n1-",),
    "NVIDIA_TESLA_V100": ("n1-",),
    "NVIDIA_TESLA_A100": ("a2-highgpu-", "a2-megagpu-"),
    "NVIDIA_A100_80GB": ("a2-ultragpu-",),
    "NVIDIA_L4": ("g2-",),
    "NVIDIA_H100_80GB": ("a3-highgpu-",),
    "NVIDIA_H100_MEGA_80GB": ("a3-megagpu-",),
    "NVIDIA_H200_141GB": ("a3-ultragpu-",),
}
MACHINE_TYPE = re.compile(r"^(n1|n2|n2d|e2|c2|c2d|c3|m1|a2|a3|g2)-[a-z]+(-[0-9]+[a-z]*)?$")
_DURATION = re.compile(r"^(\d+)([smhd]?)$")
PATH_FLAGS = (
    "--training-file",
    "--validation-file",
    "--testing-file",
    "--data",
    "--job-dir",
    "--checkpoint-dir",
)


def parse_duration(text: str) -> int:
    """'90m', '2h', '3600s', '3600' -> seconds."""
    match = _DURATION.match(str(text).strip())
    if not match:
        raise SentituneError(f"--timeout {text!r} is not a duration; use e.g. 90m, 2h or 7200 (seconds)")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


@dataclass
class SubmitConfig:
    """A Vertex AI custom job that runs `sentitune train` with the arguments after `--`."""

    project: str | None = project_option()
    region: str = opt(DEFAULT_REGION, "Vertex AI region")
    display_name: str | None = opt(None, "job name (default: sentitune-train-<UTC time>)")
    machine_type: str = opt("n1-standard-4", "machine of each replica")
    accelerator_type: str | None = opt(
        "NVIDIA_TESLA_T4", "GPU type, e.g. NVIDIA_TESLA_T4, NVIDIA_L4 ('none': CPU only)"
    )
    accelerator_count: int = opt(1, "GPUs per replica")
    replica_count: int = opt(1, "machines (more than 1: the primary + workers, see distributed training)")
    image_uri: str | None = opt(None, "training image (default: the one `sentitune cloud build` pushes)")
    repository: str = opt(DEFAULT_REPOSITORY, "Artifact Registry repository of the default image")
    service_account: str | None = opt(None, "service account the job runs as")
    base_output_dir: str | None = opt(
        None,
        "gs:// folder of the job's outputs: Vertex AI sets AIP_MODEL_DIR, AIP_CHECKPOINT_DIR, ... under it",
    )
    env: list[str] = opt([], "KEY=VALUE environment variable of the container (repeatable)", action="append")
    timeout: str | None = opt(
        None, "stop the job after this long, e.g. 90m or 2h (default: Vertex AI's 7 days)"
    )
    spot: bool = opt(
        False, "run on Spot VMs (much cheaper, may be preempted: training resumes from checkpoints)"
    )
    restart_on_worker_restart: bool = opt(
        False, "restart the job when a worker restarts (otherwise a restarted worker rejoins alone)"
    )
    prices: str | None = opt(None, "JSON price table to estimate with instead of the built-in one")
    throughput_from: str | None = opt(
        None, "a finished run folder whose training examples/s (same machine kind) estimates the job's length"
    )
    api_endpoint: str | None = api_endpoint_option()
    dry_run: bool = opt(
        False, "print the CustomJob request (JSON), the gcloud command and the cost; send nothing"
    )
    train_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.project = self.project or default_project()
        if self.accelerator_type and self.accelerator_type.lower() == "none":
            self.accelerator_type = None
        problems = target_problems(self.project, self.region)
        if not MACHINE_TYPE.match(self.machine_type):
            problems.append(
                f"--machine-type {self.machine_type!r} is not a Vertex AI machine type such as n1-standard-4, "
                "g2-standard-8 or a2-highgpu-1g"
            )
        if self.accelerator_type:
            known = [k for k in GPU_MACHINES]
            if self.accelerator_type not in known:
                problems.append(
                    f"--accelerator-type {self.accelerator_type!r} is unknown; choose one of {', '.join(known)} or none"
                )
            elif not self.machine_type.startswith(GPU_MACHINES[self.accelerator_type]):
                problems.append(
                    f"{self.accelerator_type} attaches to {' or '.join(p + '*' for p in GPU_MACHINES[self.accelerator_type])} "
                    f"machines, not {self.machine_type}"
                )
            offered = region_offers(self.region, self.accelerator_type, self.prices)
            if offered is False:
                problems.append(
                    f"{self.accelerator_type} is not offered in {self.region} (per {prices.load_table(self.prices)[1]}); "
                    "choose another --region or --accelerator-type"
                )
            if self.accelerator_count < 1:
                problems.append(
                    f"--accelerator-count must be at least 1 with a GPU, got {self.accelerator_count}"
                )
        if self.replica_count < 1:
            problems.append(f"--replica-count must be at least 1, got {self.replica_count}")
        if self.base_output_dir and not self.base_output_dir.startswith("gs://"):
            problems.append(f"--base-output-dir must be a gs:// folder, got {self.base_output_dir}")
        for item in self.env:
            if "=" not in item or not item.split("=", 1)[0]:
                problems.append(f"--env {item!r} is not KEY=VALUE")
        # The training arguments parsed once, as `sentitune train` will: checked here, read by the estimate
        # and the checks before sending.
        self.train, unknown = parse_train_args(self.train_args)
        problems += train_args_problems(self.train, unknown, bool(self.base_output_dir))
        if self.timeout is not None:
            try:
                parse_duration(self.timeout)
            except SentituneError as exc:
                problems.append(str(exc))
        _check(problems, "submit options")
        self.display_name = self.display_name or time.strftime("sentitune-train-%Y%m%d-%H%M%S", time.gmtime())
        variant = "gpu" if self.accelerator_type else "cpu"
        self.image_uri = self.image_uri or image_uri(self.project, self.region, self.repository, variant)

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"


def region_offers(region: str, accelerator: str, prices_file: str | None) -> bool | None:
    """False when the price table lists the region and the GPU elsewhere but not there; None: unknown."""
    try:
        table = prices.load_table(prices_file)[0]
    except SentituneError:
        return None  # reported when the estimate is made
    if region not in table or not any(accelerator in r.get("accelerators", {}) for r in table.values()):
        return None
    return accelerator in table[region].get("accelerators", {})


def parse_train_args(args: list[str]):
    """(namespace, unknown options) of `sentitune train ARGS`; the namespace is None when they do not parse."""
    from sentitune.cli import build_parser

    try:
        return build_parser().parse_known_args(["train", *args])
    except SystemExit:
        return None, []


def train_args_problems(parsed, unknown: list[str], has_output_dir: bool) -> list[str]:
    """What in the training arguments would fail in the cloud: unknown flags, local paths, no output."""
    if parsed is None:
        return ["the training arguments after -- do not parse; check them with `sentitune train --help`"]
    problems = []
    if unknown:
        problems.append(
            f"unknown training arguments after --: {' '.join(unknown)} (see `sentitune train --help`)"
        )
    for flag in PATH_FLAGS:
        value = getattr(parsed, flag[2:].replace("-", "_"), None)
        if value and not str(value).startswith(("gs://", "/gcs/")):
            problems.append(
                f"{flag} {value} is not on Cloud Storage; the job cannot read local files: pass gs://… or /gcs/BUCKET/…"
            )
    if not (
        getattr(parsed, "training_file", None)
        or getattr(parsed, "data", None)
        or getattr(parsed, "dry_run", False)
    ):
        problems.append(
            "no training data: pass -- --training-file gs://… (or --data gs://…) after the job options"
        )
    if not has_output_dir and not getattr(parsed, "job_dir", None):
        problems.append("nowhere to save the model: pass --base-output-dir gs://… (or -- --job-dir gs://…)")
    return problems


def build_request(cfg: SubmitConfig):
    types = aiplatform_types()
    job = types.CustomJob(
        display_name=cfg.display_name, job_spec=job_spec(cfg), labels={"created-by": "sentitune"}
    )
    return types.CreateCustomJobRequest(parent=cfg.parent, custom_job=job)


def job_spec(cfg: SubmitConfig):
    """The CustomJobSpec: worker pools running the image with the training arguments, output, scheduling."""
    types = aiplatform_types()
    machine = types.MachineSpec(machine_type=cfg.machine_type)
    if cfg.accelerator_type:
        machine.accelerator_type = types.AcceleratorType[cfg.accelerator_type]
        machine.accelerator_count = cfg.accelerator_count
    env = [types.EnvVar(name=k, value=v) for k, v in (e.split("=", 1) for e in cfg.env)]

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
        from sentitune.storage import exists, join, open_input

        path = join(cfg.throughput_from, "metrics.json")
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
    request = build_request(cfg)
    return {"custom_job": to_json(request), "gcloud": gcloud_command(cfg), "cost": cost_estimate(cfg)}


def preflight(cfg: SubmitConfig) -> None:
    """What would fail in the cloud after the machines start, checked before anything is sent: inputs on
    Cloud Storage that do not exist, and an output folder that already holds a finished run."""
    from sentitune.storage import exists, join

    parsed, problems = cfg.train, []
    for flag in ("--training-file", "--validation-file", "--testing-file", "--data"):
        value = getattr(parsed, flag[2:].replace("-", "_"), None)
        if value and str(value).startswith("gs://") and not exists(value):
            problems.append(f"{flag} {value} does not exist (check the bucket and object names)")
    job_dir = getattr(parsed, "job_dir", None)
    model_dir = job_dir or (join(cfg.base_output_dir, "model") if cfg.base_output_dir else None)
    if model_dir and not getattr(parsed, "overwrite", False) and exists(join(model_dir, "metrics.json")):
        problems.append(
            f"{model_dir} already holds a finished run; pass -- --overwrite or another output folder"
        )
    if problems:
        raise SentituneError("; ".join(problems) + "; nothing was submitted")


def submit(cfg: SubmitConfig) -> dict:
    """Create the job; returns its resource name and the cost estimate (also passed to the job)."""
    preflight(cfg)
    estimate = cost_estimate(cfg)
    cfg.env = [*cfg.env, "SENTITUNE_COST_ESTIMATE=" + json.dumps(estimate, separators=(",", ":"))]
    request = build_request(cfg)
    log.info(prices.describe(estimate))
    jobs = client("job", cfg.region, cfg.api_endpoint)
    job = call("CreateCustomJob", jobs.create_custom_job, request=request)
    return {"name": job.name, "state": job.state.name, "cost": estimate}


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


def status(job: str, project: str | None, region: str, endpoint: str | None = None) -> dict:
    name = job_name(job, project, region)
    found = call("GetCustomJob", client("job", region_of(name, region), endpoint).get_custom_job, name=name)
    result = {"name": found.name, "display_name": found.display_name, "state": found.state.name}
    for key in ("create_time", "start_time", "end_time"):
        value = getattr(found, key, None)
        if value:
            result[key] = value.isoformat() if hasattr(value, "isoformat") else str(value)
    if found.error and found.error.message:
        result["error"] = found.error.message
    return result


def cancel(job: str, project: str | None, region: str, endpoint: str | None = None) -> str:
    name = job_name(job, project, region)
    call("CancelCustomJob", client("job", region_of(name, region), endpoint).cancel_custom_job, name=name)
    return name


def stream_logs(job: str, project: str | None, region: str) -> int:
    """Follow the job's log with gcloud (Cloud Logging's own client for it)."""
    name = job_name(job, project, region)
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
