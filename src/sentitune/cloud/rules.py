"""The rules a cloud request must pass before anything is sent: one table shared by `cloud build`,
`submit`, `tune`, `deploy` and `batch-predict`, each rule with what it accepts, its source (a documentation
page or a field of the Vertex AI v1 REST reference, as the google-cloud-aiplatform SDK's proto docs carry
it) and the date that source was read. docs/vertex-ai.md lists the table as `markdown()` writes it.

Every rule reads the command's config and returns the problems it finds, each saying what to pass
instead. A rule names the rules whose failure makes it moot (`after`): it is skipped then, so no rule
meets a value another has already refused. `enforce` runs a command's rules stage by stage and raises
every problem of the first failing stage in one line; nothing is sent before all of them pass.

The training arguments after `--` are checked by `sentitune train`'s own parser and config validation
(`parse_train_args`, then `from_namespace(TrainConfig, ...)`, exactly as the `train` command builds its
config), plus what only the job knows: its GPU's compute capability against --precision, whether it
has a GPU at all, and the model's layer count.

usage: python -m sentitune.cloud.rules [DOC]   (print the table, or rewrite DOC's copy of it)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import ipaddress
import json
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sentitune.cloud import catalog
from sentitune.cloud.vertex import _PROJECT_ID, _REGION
from sentitune.config import TrainConfig, check_layers, from_namespace, parse_train_args, train_option
from sentitune.errors import SentituneError, raise_problems

INT32_MAX = 2**31 - 1  # proto int32 fields: accelerator_count, replica counts, trial counts, batch_size
INT64_MAX = 2**63 - 1  # proto int64: WorkerPoolSpec.replica_count
DISPLAY_NAME_MAX = 128
BUILD_TIMEOUT_MAX_S = 24 * 3600
BUILD_MACHINES = ("e2-highcpu-8", "e2-highcpu-32", "e2-medium", "n1-highcpu-8", "n1-highcpu-32")
COMMANDS = ("build", "submit", "tune", "deploy", "batch-predict")
TRAINING, SERVING = frozenset({"submit", "tune"}), frozenset({"deploy", "batch-predict"})
VERTEX = TRAINING | SERVING
STAGES = ("study", "job")
# Training options whose value is a path the job must be able to read or write.
PATH_FLAGS = (
    "--training-file",
    "--validation-file",
    "--testing-file",
    "--data",
    "--job-dir",
    "--checkpoint-dir",
    "--config",
)
MACHINE_FORM = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)+$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Every service account's email ends so: NAME@PROJECT.iam., PROJECT@appspot., service agents' @gcp-sa-*.iam.
SERVICE_ACCOUNT = re.compile(r"^[a-z0-9][a-z0-9._-]*@[a-z0-9-]+(\.[a-z0-9-]+)*\.gserviceaccount\.com$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]*[a-z0-9]$")
REPOSITORY = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
TENSORBOARD = re.compile(r"projects/([^/]+)/locations/([^/]+)/tensorboards/([^/]+)")
EXPERIMENT = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")
RESOURCE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}(@[A-Za-z0-9_-]+)?")
INSTANCE_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # what model_folder() takes for a hub id
# A Docker image reference (github.com/distribution/reference, grammar.go): [host[:port]/]path[:tag][@digest]
_DOMAIN = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
)
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)


@dataclass(frozen=True)
class Rule:
    """One thing Vertex AI (or Cloud Build, or `sentitune train` in the job) accepts or refuses."""

    name: str
    commands: frozenset[str]
    accepts: str  # what passes, in a sentence: the docs' table lists it
    source: str  # the documentation page or the proto field that says so
    read: str  # the date the source was read
    check: Callable[[object], list[str]]  # the command's config -> problems, each with its fix
    after: tuple[str, ...] = ()  # rules whose failure (or skip) makes this one moot
    stage: str = "job"


def problems(cfg, stage: str = "job") -> list[str]:
    """Every problem the rules of `cfg`'s command find in `stage`, in the table's order."""
    found, moot = [], set()
    for rule in RULES:
        if cfg.COMMAND not in rule.commands or rule.stage != stage:
            continue
        if moot.intersection(rule.after):
            moot.add(rule.name)
            continue
        got = rule.check(cfg)
        if got:
            moot.add(rule.name)
            found += got
    return found


def enforce(cfg) -> None:
    """Raise every problem of the first stage that has any, as one line."""
    for stage in STAGES:
        raise_problems(problems(cfg, stage), cfg.WHAT)


def rules_for(command: str) -> list[Rule]:
    return [r for r in RULES if command in r.commands]


# ----------------------------------------------------------------------------- the project and region


def project_problems(cfg) -> list[str]:
    if cfg.COMMAND == "build" and not cfg.default_image:
        return []  # an image named in full needs no project
    if not cfg.project:
        return ["no project: pass --project ID or set GOOGLE_CLOUD_PROJECT"]
    if not _PROJECT_ID.match(cfg.project):
        return [f"--project {cfg.project!r} is not a Google Cloud project ID (6-30 of a-z, 0-9, -)"]
    return []


def region_form_problems(cfg) -> list[str]:
    if cfg.COMMAND == "build" and not cfg.default_image:
        return []
    if not _REGION.match(str(cfg.region)):
        return [f"--region {cfg.region!r} is not a region name such as europe-west4 or us-central1"]
    return []


def catalog_problems(cfg) -> list[str]:
    try:
        cfg.catalog_table = catalog.load(cfg.catalog)
    except SentituneError as exc:
        return [str(exc)]
    return []


def region_listed_problems(cfg) -> list[str]:
    return catalog.region_problems(cfg.catalog_table, cfg.region, allow_unlisted=cfg.allow_unlisted)


def display_name_problems(cfg) -> list[str]:
    name = cfg.display_name or ""
    if len(name) > DISPLAY_NAME_MAX:
        return [
            f"--display-name is {len(name)} characters long; Vertex AI takes at most {DISPLAY_NAME_MAX}: "
            f"pass a shorter --display-name (it begins {name[:40]!r})"
        ]
    return []


# ----------------------------------------------------------------------------- machines and GPUs


def is_serving(cfg) -> bool:
    return cfg.COMMAND in SERVING


def machine_form_problems(cfg) -> list[str]:
    if not MACHINE_FORM.match(str(cfg.machine_type)):
        return [
            f"--machine-type {cfg.machine_type!r} is not a Vertex AI machine type such as n1-standard-4, "
            "g2-standard-8 or a2-highgpu-1g"
        ]
    return []


def machine_listed_problems(cfg) -> list[str]:
    return catalog.machine_listed_problems(
        cfg.catalog_table, cfg.machine_type, serving=is_serving(cfg), allow_unlisted=cfg.allow_unlisted
    )


def architecture_problems(cfg) -> list[str]:
    return catalog.architecture_problems(
        cfg.catalog_table,
        cfg.machine_type,
        default_image=cfg.default_image,
        allow_unlisted=cfg.allow_unlisted,
    )


def accelerator_count_problems(cfg) -> list[str]:
    if cfg.accelerator_type and not 1 <= cfg.accelerator_count <= INT32_MAX:
        return [f"--accelerator-count must be at least 1 with a GPU, got {cfg.accelerator_count}"]
    return []


def gpu_listed_problems(cfg) -> list[str]:
    if not cfg.accelerator_type:
        return []
    return catalog.gpu_known_problems(
        cfg.catalog_table, cfg.accelerator_type, allow_unlisted=cfg.allow_unlisted
    )


def gpu_machine_problems(cfg) -> list[str]:
    return catalog.gpu_machine_problems(
        cfg.catalog_table,
        cfg.machine_type,
        cfg.accelerator_type,
        cfg.accelerator_count,
        serving=is_serving(cfg),
        allow_unlisted=cfg.allow_unlisted,
    )


def gpu_region_problems(cfg) -> list[str]:
    if not cfg.accelerator_type:
        return []
    return catalog.gpu_region_problems(
        cfg.catalog_table,
        cfg.accelerator_type,
        cfg.region,
        serving=is_serving(cfg),
        allow_unlisted=cfg.allow_unlisted,
    )


def gpu_image_problems(cfg) -> list[str]:
    if not cfg.accelerator_type or not cfg.default_image:
        return []
    return catalog.gpu_image_problems(cfg.catalog_table, cfg.accelerator_type)


def serving_backend_problems(cfg) -> list[str]:
    if cfg.accelerator_type and cfg.backend != "torch":
        return [f"--backend {cfg.backend} runs on the CPU; with --accelerator-type pass --backend torch"]
    return []


# ----------------------------------------------------------------------------- fields of the requests


def service_account_problems(cfg) -> list[str]:
    account = cfg.service_account
    if account and not SERVICE_ACCOUNT.match(account):
        return [
            f"--service-account {account!r} is not a service account's email; pass e.g. "
            f"NAME@{cfg.project or 'PROJECT'}.iam.gserviceaccount.com"
        ]
    return []


def env_problems(cfg) -> list[str]:
    found = []
    for item in cfg.env:
        key = item.split("=", 1)[0]
        if "=" not in item or not key:
            found.append(f"--env {item!r} is not KEY=VALUE")
        elif not ENV_NAME.match(key):
            fixed = re.sub(r"\W", "_", key)
            fixed = fixed if ENV_NAME.match(fixed) else "_" + fixed
            found.append(
                f"--env {item!r}: {key!r} is not an environment variable name Vertex AI takes (a C identifier: "
                f"letters, digits and _, not starting with a digit); pass e.g. {fixed}={item.split('=', 1)[1]}"
            )
    return found


def bucket_problem(flag: str, path: str) -> str | None:
    """Cloud Storage's bucket naming rules, for gs://BUCKET/… and the job's /gcs/BUCKET/… mount."""
    text = str(path)
    rest = text[5:] if text.startswith(("gs://", "/gcs/")) else None
    if rest is None:
        return None
    bucket = rest.split("/", 1)[0]
    if not bucket:
        return f"{flag} {text} names no bucket; pass gs://BUCKET/…"
    parts = bucket.split(".")
    fits = len(bucket) <= (222 if len(parts) > 1 else 63) and all(len(p) <= 63 for p in parts)
    try:
        ipaddress.ip_address(bucket)
        address = True
    except ValueError:
        address = False
    if (
        len(bucket) < 3
        or not fits
        or not BUCKET.match(bucket)
        or address
        or bucket.startswith("goog")
        or "google" in bucket
    ):
        return (
            f"{flag} {text}: {bucket!r} cannot be a Cloud Storage bucket (3-63 of a-z, 0-9, -, _ and ., starting "
            "and ending with a letter or digit, no 'goog' prefix); check the bucket's name"
        )
    return None


def storage_paths(cfg) -> list[tuple[str, str]]:
    """(flag, path) of every Cloud Storage location the request or the job names."""
    found = []
    for name in ("base_output_dir", "output_uri_prefix", "run_dir"):
        value = getattr(cfg, name, None)
        if value:
            found.append(("RUN_DIR" if name == "run_dir" else "--" + name.replace("_", "-"), value))
    found += [("--input-uri", uri) for uri in getattr(cfg, "input_uri", [])]
    parsed = getattr(cfg, "train", None)
    if parsed is not None:
        for flag in (*PATH_FLAGS, "--model", "--tensorboard-dir"):
            value = getattr(parsed, flag[2:].replace("-", "_"), None)
            if value:
                found.append((f"-- {flag}", str(value)))
    return found


def bucket_problems(cfg) -> list[str]:
    return [p for flag, path in storage_paths(cfg) if (p := bucket_problem(flag, path))]


def image_problems(cfg) -> list[str]:
    if cfg.default_image:
        if not REPOSITORY.match(str(cfg.repository)):
            return [
                f"--repository {cfg.repository!r} is not an Artifact Registry repository ID (1-63 of a-z, 0-9 "
                "and -, starting with a letter)"
            ]
        return []
    image = str(cfg.image_uri)
    if len(image) > 255 or not IMAGE_REFERENCE.match(image):
        return [
            f"--image-uri {image!r} is not a container image reference (HOST/PATH[:TAG][@DIGEST], path in "
            "lower case, no spaces), e.g. europe-west4-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE:TAG"
        ]
    return []


def resource_problems(cfg) -> list[str]:
    """Resources named in full live in the request's location: Vertex AI refuses one from another region."""
    found = []
    for flag, kind, given in (
        ("--endpoint", "endpoints", getattr(cfg, "endpoint", None)),
        ("--registered-model", "models", getattr(cfg, "registered_model", None)),
    ):
        if not given:
            continue
        if "/" not in given:
            if not RESOURCE_ID.fullmatch(given):
                found.append(
                    f"{flag} {given!r} is not an ID or a resource name projects/P/locations/L/{kind}/ID"
                )
            continue
        named = re.fullmatch(rf"projects/([^/]+)/locations/([^/]+)/{kind}/({RESOURCE_ID.pattern})", given)
        if not named:
            found.append(f"{flag} {given!r} is not an ID or a resource name projects/P/locations/L/{kind}/ID")
        elif named.group(2) != cfg.region:
            found.append(
                f"{flag} {given} is in {named.group(2)} and the request goes to {cfg.region}: Vertex AI uses "
                f"{'an endpoint' if kind == 'endpoints' else 'a model'} only in its own region; pass --region "
                f"{named.group(2)}, or one in {cfg.region}"
            )
    return found


# ----------------------------------------------------------------------------- training jobs and studies


def replica_count_problems(cfg) -> list[str]:
    if not 1 <= cfg.replica_count <= INT64_MAX:
        return [f"--replica-count must be at least 1, got {cfg.replica_count}"]
    return []


def base_output_dir_problems(cfg) -> list[str]:
    if cfg.base_output_dir and not str(cfg.base_output_dir).startswith("gs://"):
        return [f"--base-output-dir must be a gs:// folder, got {cfg.base_output_dir}"]
    return []


def tensorboard_problems(cfg) -> list[str]:
    """Vertex AI streams a job's TensorBoard logs as its service account from under its output folder,
    to an instance in the job's region."""
    if not cfg.tensorboard:
        return []
    found = TENSORBOARD.fullmatch(cfg.tensorboard_name() or "")
    if not found:
        return [
            f"--tensorboard {cfg.tensorboard!r} is not a TensorBoard ID or a resource name "
            "projects/PROJECT/locations/REGION/tensorboards/ID"
        ]
    problems = []
    if found.group(2) != cfg.region:
        problems.append(
            f"--tensorboard {cfg.tensorboard} is in {found.group(2)} and the job runs in {cfg.region}: "
            f"use an instance in {cfg.region}, or --region {found.group(2)}"
        )
    if not cfg.service_account:
        problems.append("--tensorboard needs --service-account: Vertex AI uploads the logs as that account")
    if not cfg.base_output_dir:
        problems.append("--tensorboard needs --base-output-dir: the job writes its logs under it first")
    return problems


def experiment_problems(cfg) -> list[str]:
    if not cfg.experiment:
        return []
    problems = []
    if not EXPERIMENT.fullmatch(cfg.experiment):
        problems.append(
            f"--experiment {cfg.experiment!r} is not an experiment name (1-128 of a-z, 0-9 and -, "
            "starting with a letter or digit)"
        )
    if not cfg.service_account:
        problems.append("--experiment needs --service-account: the job records its run as that account")
    return problems


def timeout_problems(cfg) -> list[str]:
    if cfg.timeout is None:
        return []
    try:
        parse_duration(cfg.timeout)
    except SentituneError as exc:
        return [str(exc)]
    return []


def train_parse_problems(cfg) -> list[str]:
    if cfg.train is None:
        return [
            f"the training arguments after -- do not parse ({cfg.train_unknown[0] if cfg.train_unknown else '?'}); "
            "check them with `sentitune train --help`"
        ]
    if cfg.train_unknown:
        return [
            f"unknown training arguments after --: {' '.join(cfg.train_unknown)} (see `sentitune train --help`)"
        ]
    return []


def train_path_problems(cfg) -> list[str]:
    found = []
    for flag in PATH_FLAGS:
        value = getattr(cfg.train, flag[2:].replace("-", "_"), None)
        if value and not str(value).startswith(("gs://", "/gcs/")):
            found.append(
                f"{flag} {value} is not on Cloud Storage; the job cannot read local files: pass gs://… or /gcs/BUCKET/…"
            )
    return found


def train_data_problems(cfg) -> list[str]:
    parsed = cfg.train
    if not (
        getattr(parsed, "training_file", None)
        or getattr(parsed, "data", None)
        or getattr(parsed, "config", None)  # a replayed run's data, as recorded
    ):
        return ["no training data: pass -- --training-file gs://… (or --data gs://…) after the job options"]
    return []


def train_output_problems(cfg) -> list[str]:
    if not cfg.base_output_dir and not getattr(cfg.train, "job_dir", None):
        return ["nowhere to save the model: pass --base-output-dir gs://… (or -- --job-dir gs://…)"]
    return []


def train_options_problems(cfg) -> list[str]:
    """`sentitune train`'s own validation of the arguments the job runs with (`cloud tune`: with its tuned
    settings at train's defaults; `tune-values` checks each value a trial can draw)."""
    settings, problem = train_config(trial_args(cfg))
    cfg.train_config = settings
    if problem:
        return [f"the training arguments after -- fail `sentitune train`'s own checks: {problem}"]
    return []


def model_reachable_problems(cfg) -> list[str]:
    model = getattr(cfg.train, "model", None)
    if not model or not cfg.default_image or str(model).startswith(("gs://", "/gcs/")):
        return []
    if HUB_ID.match(str(model)) and not os.path.exists(model):
        return []  # a Hugging Face hub id: the job downloads it
    return [
        f"-- --model {model}: the job cannot read a local folder, and sentitune's image holds only the "
        "embedded model; copy the folder to gs://BUCKET/… and pass that (or a hub id, or an image holding it "
        "with --image-uri)"
    ]


def model_layer_problems(cfg) -> list[str]:
    return [f"-- {problem}" for problem in layer_problems(cfg.train_config)]


def precision_problems(cfg) -> list[str]:
    return job_precision_problems(cfg, cfg.train_config)


def device_problems(cfg) -> list[str]:
    device = cfg.train_config.device
    if device == "cuda" and not cfg.accelerator_type:
        return [
            "-- --device cuda: the job has no GPU (--accelerator-type none); pass --accelerator-type (e.g. "
            "NVIDIA_TESLA_T4) or -- --device auto"
        ]
    if device == "mps":
        return ["-- --device mps: Vertex AI machines have no Apple GPU; pass -- --device auto (or cuda, cpu)"]
    return []


def batch_divides_problems(cfg) -> list[str]:
    """Every rank takes batch / processes of each global batch: a batch that does not divide stops every
    rank as soon as the machines are up, after they are paid for."""
    tuned = dict((name, values) for name, _, values in getattr(cfg, "space", []))
    if "batch_size" in tuned:
        sizes, flag = [int(v) for v in tuned["batch_size"]], "--batch-size"
    else:
        sizes, flag = [int(train_option(cfg.train, "batch_size"))], "-- --batch-size"
    n = cfg.processes
    bad = [b for b in sizes if b % n]
    if not bad or n == 1:
        return []
    fits = sorted({max(n, b // n * n) for b in bad} | {-(-b // n) * n for b in bad})
    per_replica = cfg.accelerator_count if cfg.accelerator_type else 1
    return [
        f"{flag} {', '.join(map(str, bad))} does not divide by the job's {n} training processes "
        f"({cfg.replica_count} replicas x {per_replica} per replica), so every process would refuse to start; "
        f"use a multiple of {n}, e.g. {', '.join(map(str, fits[:6]))}"
    ]


def trial_counts_problems(cfg) -> list[str]:
    if not (1 <= cfg.max_trials <= INT32_MAX and 1 <= cfg.parallel_trials <= INT32_MAX):
        return ["--max-trials and --parallel-trials must be at least 1 (and below 2^31)"]
    if cfg.parallel_trials > cfg.max_trials:
        return [f"--parallel-trials {cfg.parallel_trials} exceeds --max-trials {cfg.max_trials}"]
    return []


def search_space_problems(cfg) -> list[str]:
    try:
        cfg.space = cfg.search_space()
    except SentituneError as exc:
        cfg.space = []
        return [str(exc)]
    return []


def grid_problems(cfg) -> list[str]:
    reals = [name for name, kind, _ in cfg.space if kind in ("log", "linear")]  # DOUBLE parameters
    if cfg.algorithm == "grid" and reals:
        flags = " and ".join("--" + n.replace("_", "-") for n in reals)
        return [
            f"--algorithm grid takes whole-number ranges and listed values only, and {flags} "
            f"{'is a range' if len(reals) == 1 else 'are ranges'} of reals; list the values "
            "(e.g. --learning-rate 2e-5,5e-5,1e-4), pass 'none', or use --algorithm random"
        ]
    return []


def tune_job_dir_problems(cfg) -> list[str]:
    if cfg.train is not None and getattr(cfg.train, "job_dir", None):
        return [
            f"-- --job-dir {cfg.train.job_dir}: every trial would write that one folder; drop it and pass "
            "--base-output-dir gs://… (each trial then writes <base>/<trial id>/model)"
        ]
    return []


def something_to_tune_problems(cfg) -> list[str]:
    if not cfg.space:
        return [
            "nothing to tune: give at least one of --learning-rate, --batch-size, --epochs, "
            "--keep-layers, --warmup-ratio"
        ]
    return []


def tune_values_problems(cfg) -> list[str]:
    """Each value a trial can draw (both ends of a range, every listed value), with the other tuned
    settings at train's defaults, passes train's validation and the job's own checks."""
    found = []
    for name, _, values in cfg.space:
        for value in values:
            settings, problem = train_config(trial_args(cfg, {name: value}))
            problem = problem or "; ".join(layer_problems(settings))
            if problem:
                flag = "--" + name.replace("_", "-")
                found.append(
                    f"trials can draw {flag} {value}, which `sentitune train` refuses ({problem}); narrow {flag}"
                )
    return found


# ----------------------------------------------------------------------------- deploy and batch prediction


def run_dir_problems(cfg) -> list[str]:
    """Vertex AI reads a model from Cloud Storage only."""
    if cfg.COMMAND == "batch-predict" and getattr(cfg, "registered_model", None):
        return ["pass RUN_DIR or --registered-model, not both"] if cfg.run_dir else []
    run_dir = cfg.run_dir
    if not run_dir:
        return ["pass RUN_DIR, a run folder on gs://"]
    if not str(run_dir).startswith("gs://"):
        where = "a local folder" if "://" not in str(run_dir) else str(run_dir).split("://")[0] + "://"
        return [
            f"RUN_DIR is {where}; Vertex AI reads models from Cloud Storage: copy it with "
            f"`gcloud storage cp -r {run_dir} gs://BUCKET/runs/` or train with --job-dir gs://…"
        ]
    return []


def deploy_replica_problems(cfg) -> list[str]:
    if not 1 <= cfg.min_replicas <= INT32_MAX:
        return [f"--min-replicas must be at least 1, got {cfg.min_replicas}"]
    if cfg.max_replicas < cfg.min_replicas:
        return [f"--max-replicas {cfg.max_replicas} is below --min-replicas {cfg.min_replicas}"]
    if cfg.max_replicas > INT32_MAX:
        return [f"--max-replicas {cfg.max_replicas} is more than Vertex AI takes (at most {INT32_MAX})"]
    return []


def batch_input_problems(cfg) -> list[str]:
    if not cfg.input_uri:
        return ["--input-uri is required: the JSONL or CSV files on gs:// to score"]
    found, formats = [], set()
    for uri in cfg.input_uri:
        if not str(uri).startswith("gs://"):
            found.append(f"--input-uri {uri} is not on Cloud Storage; the job reads gs://… only")
            continue
        suffix = instance_suffix(uri)
        if suffix in INSTANCE_FORMATS:
            formats.add(INSTANCE_FORMATS[suffix])
        elif not cfg.instances_format:
            found.append(
                f"--input-uri {uri} is not JSONL or CSV by its name; rename it or pass --instances-format"
            )
    if len(formats) > 1 and not cfg.instances_format:
        found.append("the inputs mix JSONL and CSV; one job reads one format: send them as two jobs")
    return found


def instance_suffix(uri: str) -> str:
    """'.jsonl' of gs://b/posts.jsonl.gz: the suffix that says an input's format."""
    name = str(uri).rsplit("/", 1)[-1].lower().removesuffix(".gz")
    return "." + name.rsplit(".", 1)[-1] if "." in name else ""


def batch_output_problems(cfg) -> list[str]:
    if not cfg.output_uri_prefix:
        return ["--output-uri-prefix is required: a gs:// folder for the predictions"]
    if not str(cfg.output_uri_prefix).startswith("gs://"):
        return [f"--output-uri-prefix {cfg.output_uri_prefix} is not on Cloud Storage; pass gs://…"]
    return []


def batch_replica_problems(cfg) -> list[str]:
    if not 1 <= cfg.starting_replica_count <= INT32_MAX:
        return [f"--starting-replica-count must be at least 1, got {cfg.starting_replica_count}"]
    if cfg.max_replica_count < cfg.starting_replica_count:
        return [
            f"--max-replica-count {cfg.max_replica_count} is below --starting-replica-count "
            f"{cfg.starting_replica_count}"
        ]
    if cfg.max_replica_count > INT32_MAX:
        return [
            f"--max-replica-count {cfg.max_replica_count} is more than Vertex AI takes (at most {INT32_MAX})"
        ]
    return []


def batch_request_problems(cfg) -> list[str]:
    if not 1 <= cfg.instances_per_request <= INT32_MAX:
        return [f"--instances-per-request must be at least 1, got {cfg.instances_per_request}"]
    return []


def posts_problems(cfg) -> list[str]:
    if cfg.posts is not None and cfg.posts < 1:
        return [f"--posts must be at least 1, got {cfg.posts}"]
    return []


# ----------------------------------------------------------------------------- cloud build


def build_timeout_problems(cfg) -> list[str]:
    try:
        seconds = parse_duration(cfg.build_timeout, "--build-timeout")
    except SentituneError:
        return [f"--build-timeout {cfg.build_timeout!r} is not a duration such as 3600s, 60m or 2h30m"]
    if seconds > BUILD_TIMEOUT_MAX_S:
        return [
            f"--build-timeout {cfg.build_timeout} is over Cloud Build's limit of 24 hours; pass 24h or less"
        ]
    return []


def build_machine_problems(cfg) -> list[str]:
    if cfg.build_machine_type not in BUILD_MACHINES:
        return [
            f"--build-machine-type {cfg.build_machine_type!r} is not a Cloud Build machine; choose one of "
            f"{', '.join(BUILD_MACHINES)}"
        ]
    return []


def build_source_problems(cfg) -> list[str]:
    dockerfile = Path(cfg.source) / cfg.dockerfile
    if not dockerfile.is_file() or not (Path(cfg.source) / "src" / "sentitune").is_dir():
        return [f"{dockerfile} not found: run from a sentitune source checkout or pass --source DIR"]
    return []


# ----------------------------------------------------------------------------- helpers of the rules


def parse_duration(text: str, flag: str = "--timeout") -> int:
    """Seconds in a duration as gcloud reads one: '7200' (seconds), '90m', '2h30m', '1d', 'PT2H30M'."""
    s = str(text).strip().upper()
    try:
        if s.isdigit():
            seconds = float(s)
        elif s.startswith("P"):
            date, _, time_ = s[1:].partition("T")
            seconds = _units(date, {"W": 604800, "D": 86400}) + _units(time_, {"H": 3600, "M": 60, "S": 1})
        else:
            seconds = _units(s, {"W": 604800, "D": 86400, "H": 3600, "M": 60, "S": 1}, required=True)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 1 <= seconds < 2**63):
        raise SentituneError(f"{flag} {text!r} is not a duration; use e.g. 90m, 2h or 7200 (seconds)")
    return round(seconds)


def _units(text: str, units: dict[str, int], required: bool = False) -> float:
    total, position = 0.0, 0
    for part in re.finditer(r"(\d+(?:\.\d*)?)([A-Z])", text):
        if part.start() != position or part.group(2) not in units:
            raise ValueError(text)
        total += float(part.group(1)) * units[part.group(2)]
        position = part.end()
    if position != len(text) or (required and not text):
        raise ValueError(text)
    return total


def trial_args(cfg, drawn: dict | None = None) -> list[str]:
    """The arguments a job's container gets. `cloud tune` appends each tuned setting as Vertex AI does
    (`--learning_rate=…`): here the value `drawn` gives, else one train takes whatever the others are (its
    default; the layers a trial keeps stay as the arguments say), so each check sees one value at fault."""
    args = list(cfg.train_args)
    for name, _, _ in getattr(cfg, "space", []):
        value = (drawn or {}).get(name, train_option(argparse.Namespace(), name))
        if value is not None:
            args.append(f"--{name}={value}")
    return args


def train_config(args: list[str]) -> tuple[TrainConfig | None, str | None]:
    """The TrainConfig `sentitune train ARGS` would build, or why it refuses them: its own parser, then
    `from_namespace`, the function the command line builds every command's config with."""
    parsed, unknown = quiet_parse(args)
    if parsed is None:
        return None, "they do not parse"
    if getattr(parsed, "config", None) and str(parsed.config).startswith("/gcs/"):
        parsed.config = "gs://" + str(parsed.config)[5:]  # the job's mount of the bucket, read here directly
    try:
        return from_namespace(TrainConfig, parsed), None
    except SentituneError as exc:
        return None, str(exc).removeprefix("invalid train options: ")


def quiet_parse(args: list[str]):
    """parse_train_args, with argparse's own complaint kept for the message instead of printed."""
    with contextlib.redirect_stderr(io.StringIO()) as said:
        parsed, unknown = parse_train_args(args)
    if parsed is None:
        lines = said.getvalue().strip().splitlines()
        return None, [lines[-1].split("error: ", 1)[-1] if lines else "?"]
    return parsed, unknown


def model_layers(model: str | None) -> tuple[int, str] | None:
    """(encoder layers, what the model is) where it can be read here: the embedded default or a local
    folder. None for a hub id or a Cloud Storage folder."""
    if model is None:
        from sentitune.builtin import default_model

        try:
            folder, what = default_model(), "the embedded model"
        except SentituneError:
            return None
    elif os.path.isdir(str(model)):
        folder, what = str(model), f"the model {model}"
    else:
        return None
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    layers = config.get("num_hidden_layers", config.get("n_layers"))
    return (int(layers), what) if isinstance(layers, int) else None


def layer_problems(settings: TrainConfig | None) -> list[str]:
    """train keeps the first --keep-layers layers, then freezes --freeze-layers of those."""
    known = model_layers(settings.model) if settings is not None else None
    if known is None:
        return []
    layers, what = known
    return check_layers(settings.keep_layers, settings.freeze_layers, settings.train_head_only, layers, what)


def job_precision_problems(cfg, settings: TrainConfig) -> list[str]:
    """train's precision policy (runtime.choose_precision) on the job's GPU, with the job's environment."""
    environ = dict(item.split("=", 1) for item in cfg.env if "=" in item)
    requested = settings.precision
    if not cfg.accelerator_type or (requested == "auto" and "SENTITUNE_PRECISION" not in environ):
        return []
    capability = catalog.compute_capability(cfg.catalog_table, cfg.accelerator_type)
    if not capability:
        return []
    from sentitune.runtime import Capabilities, choose_precision  # torch: only for a GPU job that names one

    major, minor = (int(p) for p in capability.split(".")[:2])
    try:
        choose_precision(requested, Capabilities("cuda", cfg.accelerator_type, (major, minor)), environ)
    except SentituneError as exc:
        return [f"-- {exc}"]
    return []


# ----------------------------------------------------------------------------- the table

_CATALOG_PAGES = "catalog.json (its sources: the Vertex AI locations and configure-compute pages)"
_MACHINE_SPEC = "google.cloud.aiplatform.v1.MachineSpec"

RULES: tuple[Rule, ...] = (
    # `cloud tune`'s own options come first: a study that cannot be described is refused on its own.
    Rule("tune-trial-counts", frozenset({"tune"}),
         "--max-trials and --parallel-trials are whole numbers from 1 to 2^31-1, parallel at most max",
         "HyperparameterTuningJob.max_trial_count, .parallel_trial_count (required, int32)", "2026-12-07",
         trial_counts_problems, stage="study"),
    Rule("tune-search-space", frozenset({"tune"}),
         "ranges are LOW:HIGH with LOW below HIGH, lists are numbers; a log-scale range starts above 0",
         "StudySpec.ParameterSpec.ScaleType.UNIT_LOG_SCALE: 'the entire feasible space must be strictly "
         "positive'; DoubleValueSpec, IntegerValueSpec (int64)", "2026-12-07",
         search_space_problems, stage="study"),
    Rule("tune-grid", frozenset({"tune"}),
         "--algorithm grid searches listed values and whole-number ranges only",
         "StudySpec.Algorithm.GRID_SEARCH: 'all parameters must be INTEGER, CATEGORICAL, or DISCRETE'",
         "2026-12-07", grid_problems, after=("tune-search-space",), stage="study"),
    Rule("tune-job-dir", frozenset({"tune"}),
         "no -- --job-dir: each trial writes BASE_OUTPUT_DIR/TRIAL_ID/model",
         "HyperparameterTuningJob.trial_job_spec; CustomJobSpec.base_output_directory (per-trial "
         "AIP_MODEL_DIR)", "2026-12-07", tune_job_dir_problems, stage="study"),
    Rule("tune-something", frozenset({"tune"}),
         "at least one setting is tuned",
         "StudySpec.parameters (required)", "2026-12-07",
         something_to_tune_problems, after=("tune-search-space",), stage="study"),
    # The target.
    Rule("catalog-file", VERTEX, "--catalog FILE is a JSON catalog like sentitune/cloud/catalog.json",
         "sentitune", "2026-12-07", catalog_problems),
    Rule("project-id", VERTEX | {"build"}, "a project ID: 6-30 of a-z, 0-9 and -, starting with a letter",
         "https://cloud.google.com/resource-manager/docs/creating-managing-projects#before_you_begin",
         "2026-12-07", project_problems),
    Rule("region-form", VERTEX | {"build"}, "a region name such as europe-west4",
         "https://cloud.google.com/vertex-ai/docs/general/locations", "2026-12-07", region_form_problems),
    Rule("region-listed", VERTEX, "a region where Vertex AI runs (default-deny: --catalog / --allow-unlisted)",
         f"https://cloud.google.com/vertex-ai/docs/general/locations#available-regions; {_CATALOG_PAGES}",
         "2026-12-07", region_listed_problems, after=("catalog-file", "region-form")),
    Rule("run-dir", SERVING, "RUN_DIR is a run folder on gs:// (batch-predict: or --registered-model, not both)",
         "Model.artifact_uri: 'the path to the directory containing the Model artifact' (Cloud Storage)",
         "2026-12-07", run_dir_problems),
    Rule("batch-inputs", frozenset({"batch-predict"}),
         "--input-uri: files on gs://, all JSONL or all CSV (by name, or --instances-format)",
         "BatchPredictionJob.InputConfig.gcs_source, .instances_format", "2026-12-07", batch_input_problems),
    Rule("batch-output", frozenset({"batch-predict"}), "--output-uri-prefix is a gs:// folder",
         "BatchPredictionJob.OutputConfig.gcs_destination", "2026-12-07", batch_output_problems),
    Rule("display-name", VERTEX, f"display names of at most {DISPLAY_NAME_MAX} characters (the default too)",
         "CustomJob, HyperparameterTuningJob, Model, Endpoint .display_name: 'can be up to 128 characters "
         "long'; BatchPredictionJob.display_name", "2026-12-07", display_name_problems),
    # The machine and its GPUs.
    Rule("machine-form", VERTEX, "--machine-type has a machine type's form (family-type-size)",
         f"{_MACHINE_SPEC}.machine_type", "2026-12-07", machine_form_problems),
    Rule("machine-listed", VERTEX,
         "a machine type Vertex AI offers for training (submit, tune) or for prediction (deploy, "
         "batch-predict): two lists (default-deny: --catalog / --allow-unlisted)",
         f"{_MACHINE_SPEC}.machine_type links both lists: training/configure-compute#machine-types, "
         f"predictions/configure-compute#machine-types; {_CATALOG_PAGES}", "2026-12-07",
         machine_listed_problems, after=("catalog-file", "machine-form")),
    Rule("machine-architecture", VERTEX,
         "Arm machines (a4x-*) only with an arm64 image; sentitune's images are amd64",
         f"https://cloud.google.com/compute/docs/accelerator-optimized-machines (A4X: NVIDIA Grace); {_CATALOG_PAGES}",
         "2026-12-07", architecture_problems, after=("catalog-file", "machine-form", "machine-listed")),
    Rule("accelerator-count", VERTEX, "with a GPU, --accelerator-count from 1 to 2^31-1",
         f"{_MACHINE_SPEC}.accelerator_count (int32)", "2026-12-07", accelerator_count_problems),
    Rule("gpu-listed", VERTEX, "a GPU type the catalog knows (default-deny: --catalog / --allow-unlisted)",
         f"google.cloud.aiplatform.v1.AcceleratorType; {_CATALOG_PAGES}", "2026-12-07",
         gpu_listed_problems, after=("catalog-file",)),
    Rule("gpu-machine", VERTEX,
         "the GPU attaches to the machine in that count: fixed-GPU machines (a2, a3, a4, g2, g4) with their "
         "own; n1 machines T4, P4, P100, V100 by size. Serving may take 1 to N of such a machine's N GPUs "
         "(N/2 or fewer: replicas co-scheduled); training takes them whole",
         f"training/configure-compute#gpu-compatibility-table; predictions/configure-compute#gpus; "
         f"{_MACHINE_SPEC}.accelerator_count ('for accelerator optimized machine types … from 1 to N'); "
         f"{_CATALOG_PAGES}", "2026-12-07",
         gpu_machine_problems,
         after=("catalog-file", "machine-form", "machine-listed", "accelerator-count", "gpu-listed")),
    Rule("gpu-region", VERTEX,
         "the region offers the GPU for training (submit, tune) or serving (deploy, batch-predict)",
         f"https://cloud.google.com/vertex-ai/docs/general/locations#accelerators; {_CATALOG_PAGES}",
         "2026-12-07", gpu_region_problems, after=("catalog-file", "region-form", "region-listed", "gpu-listed")),
    Rule("gpu-image", VERTEX,
         "the default image's PyTorch (CUDA 12.8) has kernels for the GPU: compute capability 7.0 or newer",
         "PyTorch 2.8 CUDA 12.8 wheels' TORCH_CUDA_ARCH_LIST; https://developer.nvidia.com/cuda-gpus",
         "2026-12-07", gpu_image_problems, after=("catalog-file", "gpu-listed")),
    Rule("serving-backend", SERVING, "a GPU serves the PyTorch model: --backend torch",
         "sentitune serve: the ONNX backends run on the CPU", "2026-12-07", serving_backend_problems),
    Rule("deploy-replicas", frozenset({"deploy"}),
         "--min-replicas at least 1, --max-replicas at least --min-replicas, both int32",
         "DedicatedResources.min_replica_count: 'must be greater than or equal to 1'; .max_replica_count",
         "2026-12-07", deploy_replica_problems),
    Rule("batch-replicas", frozenset({"batch-predict"}),
         "--starting-replica-count at least 1, --max-replica-count at least that, both int32",
         "BatchDedicatedResources.starting_replica_count, .max_replica_count", "2026-12-07",
         batch_replica_problems),
    Rule("batch-request-size", frozenset({"batch-predict"}), "--instances-per-request from 1 to 2^31-1",
         "ManualBatchTuningParameters.batch_size (int32)", "2026-12-07", batch_request_problems),
    Rule("batch-posts", frozenset({"batch-predict"}), "--posts, when given, at least 1", "sentitune (the estimate)",
         "2026-12-07", posts_problems),
    Rule("same-region", SERVING,
         "--endpoint and --registered-model: an ID, or a resource name in the request's region",
         "BatchPredictionJob.model: 'must share the same ancestor Location'; DeployModelRequest.endpoint",
         "2026-12-07", resource_problems, after=("region-form",)),
    # The job's fields.
    Rule("tensorboard", TRAINING,
         "--tensorboard: an ID or resource name in the job's region, with --service-account and "
         "--base-output-dir", "CustomJobSpec.tensorboard; https://cloud.google.com/vertex-ai/docs/experiments/"
         "tensorboard-training", "2026-12-07", tensorboard_problems, after=("region-form",)),
    Rule("experiment", TRAINING, "--experiment: 1-128 of a-z, 0-9 and -, with --service-account",
         "CustomJobSpec.experiment; MetadataService.CreateContext context_id", "2026-12-07", experiment_problems),
    Rule("service-account", VERTEX, "--service-account is a service account's email (…gserviceaccount.com)",
         "CustomJobSpec.service_account, DeployedModel.service_account, BatchPredictionJob.service_account; "
         "https://cloud.google.com/iam/docs/service-account-overview", "2026-12-07", service_account_problems),
    Rule("replica-count", TRAINING, "--replica-count from 1 to 2^63-1",
         "WorkerPoolSpec.replica_count (int64); pool 0 holds the primary's one replica", "2026-12-07",
         replica_count_problems),
    Rule("base-output-dir", TRAINING, "--base-output-dir is a gs:// folder",
         "CustomJobSpec.base_output_directory (GcsDestination)", "2026-12-07", base_output_dir_problems),
    Rule("env", TRAINING, "--env KEY=VALUE with KEY a C identifier (MY_VAR, not MY-VAR)",
         "google.cloud.aiplatform.v1.EnvVar.name: 'Must be a valid C identifier'", "2026-12-07", env_problems),
    Rule("bucket-name", VERTEX,
         "every gs:// (or /gcs/) location names a possible bucket: 3-63 of a-z, 0-9, -, _ and ., starting and "
         "ending with a letter or digit", "https://cloud.google.com/storage/docs/buckets#naming", "2026-12-07",
         bucket_problems),
    Rule("image-uri", VERTEX | {"build"},
         "--image-uri is a container image reference (no spaces, path in lower case); --repository an "
         "Artifact Registry repository ID", "ContainerSpec.image_uri, ModelContainerSpec.image_uri; "
         "github.com/distribution/reference grammar; https://cloud.google.com/artifact-registry/docs/"
         "repositories/create-repos", "2026-12-07", image_problems),
    # The training arguments after --, as `sentitune train` in the job reads them.
    Rule("train-parse", TRAINING, "the training arguments parse as `sentitune train`'s, none unknown",
         "sentitune train (config.parse_train_args)", "2026-12-07", train_parse_problems),
    Rule("train-paths", TRAINING, "training paths are on gs:// or /gcs/ (the job cannot read local files)",
         "https://cloud.google.com/vertex-ai/docs/training/cloud-storage-file-system", "2026-12-07",
         train_path_problems, after=("train-parse",)),
    Rule("train-data", TRAINING, "the training arguments name data (--training-file, --data or --config)",
         "sentitune train", "2026-12-07", train_data_problems, after=("train-parse",)),
    Rule("train-output", TRAINING, "the model has somewhere to go: --base-output-dir or -- --job-dir",
         "CustomJobSpec.base_output_directory (AIP_MODEL_DIR)", "2026-12-07", train_output_problems,
         after=("train-parse",)),
    Rule("train-options", TRAINING,
         "`sentitune train`'s own validation passes (TrainConfig, built as the train command builds it)",
         "sentitune train (config.TrainConfig.__post_init__ via config.from_namespace)", "2026-12-07",
         train_options_problems, after=("train-parse", "train-paths", "train-data", "tune-search-space")),
    Rule("train-model", TRAINING,
         "with sentitune's image, -- --model is a hub id or on gs:// or /gcs/ (the image holds only the "
         "embedded model)", "sentitune's Dockerfile", "2026-12-07", model_reachable_problems,
         after=("train-parse", "image-uri")),
    Rule("train-layers", TRAINING,
         "--keep-layers and --freeze-layers within the model's layers (the embedded model, or a local folder)",
         "sentitune train (model.keep_first_layers, model.freeze)", "2026-12-07", model_layer_problems,
         after=("train-options",)),
    Rule("train-precision", TRAINING,
         "--precision (or --env SENTITUNE_PRECISION) the job's GPU computes: bf16 needs compute capability 8.0",
         "sentitune train (runtime.choose_precision); https://developer.nvidia.com/cuda-gpus", "2026-12-07",
         precision_problems, after=("train-options", "catalog-file", "gpu-listed", "env")),
    Rule("train-device", TRAINING, "-- --device cuda only on a job with a GPU; never mps",
         "sentitune train (runtime.resolve_device)", "2026-12-07", device_problems, after=("train-options",)),
    Rule("batch-divides", TRAINING,
         "every batch size that can run divides by the job's processes (replicas x GPUs per replica)",
         "sentitune train under torchrun (each process takes batch / processes)", "2026-12-07",
         batch_divides_problems,
         after=("replica-count", "accelerator-count", "gpu-machine", "train-parse", "tune-search-space")),
    Rule("tune-values", frozenset({"tune"}),
         "every value a trial can draw (both ends of each range, each listed value) passes train's validation",
         "HyperparameterTuningJob: Vertex AI appends --NAME=VALUE to each trial's arguments", "2026-12-07",
         tune_values_problems, after=("train-options",)),
    Rule("timeout", TRAINING, "--timeout is a duration gcloud reads (7200, 90m, 2h30m, 1d, PT2H)",
         "Scheduling.timeout (Duration); gcloud's duration syntax (gcloud topic datetimes)", "2026-12-07",
         timeout_problems),
    # Cloud Build.
    Rule("build-timeout", frozenset({"build"}), "--build-timeout is a duration of at most 24 hours",
         "https://cloud.google.com/build/docs/build-config-file-schema#timeout_2 (Build.timeout, at most 24 h)",
         "2026-12-07", build_timeout_problems),
    Rule("build-machine", frozenset({"build"}), f"--build-machine-type is one of {', '.join(BUILD_MACHINES)}",
         "Cloud Build v1 BuildOptions.MachineType (gcloud builds submit --machine-type)", "2026-12-07",
         build_machine_problems),
    Rule("build-source", frozenset({"build"}), "--source holds the Dockerfile and src/sentitune",
         "sentitune", "2026-12-07", build_source_problems),
)  # fmt: skip


# ----------------------------------------------------------------------------- the docs' copy

DOC_BEGIN = "<!-- rules: generated by `python -m sentitune.cloud.rules docs/vertex-ai.md`; do not edit -->"
DOC_END = "<!-- rules: end -->"


def markdown() -> str:
    """The table as docs/vertex-ai.md carries it."""
    lines = [
        "| rule | commands | accepted | source | read |",
        "| --- | --- | --- | --- | --- |",
    ]
    for rule in RULES:
        commands = ", ".join(c for c in COMMANDS if c in rule.commands)
        cells = [f"`{rule.name}`", commands, rule.accepts, rule.source, rule.read]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def doc_section(text: str) -> str | None:
    """The table between the markers in a document, or None."""
    if DOC_BEGIN not in text or DOC_END not in text:
        return None
    return text.split(DOC_BEGIN, 1)[1].split(DOC_END, 1)[0].strip("\n")


def main(argv: list[str]) -> int:
    if not argv:
        print(markdown())
        return 0
    path = Path(argv[0])
    text = path.read_text()
    if doc_section(text) is None:
        print(f"{path} has no {DOC_BEGIN!r} … {DOC_END!r} section", file=sys.stderr)
        return 2
    head, rest = text.split(DOC_BEGIN, 1)
    path.write_text(f"{head}{DOC_BEGIN}\n{markdown()}\n{DOC_END}{rest.split(DOC_END, 1)[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
