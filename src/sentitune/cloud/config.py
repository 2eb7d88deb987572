"""The dataclasses of the cloud commands (build, submit, tune, deploy, status / logs / cancel), with
the options they share declared once. Like `sentitune.config`, nothing here imports the Google Cloud
SDK: the parser builds without it, and every check here runs before anything is sent.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from sentitune.cloud import catalog
from sentitune.cloud.vertex import (
    DEFAULT_REGION,
    DEFAULT_REPOSITORY,
    default_project,
    image_uri,
    target_problems,
)
from sentitune.config import (
    BACKENDS,
    DATA,
    JOB,
    OUTPUT,
    RUNTIME,
    json_option,
    opt,
    overwrite_option,
    parse_train_args,
    train_option,
)
from sentitune.errors import SentituneError, raise_problems
from sentitune.storage import is_url

MACHINE_TYPE = re.compile(r"^(n1|n2|n2d|e2|c2|c2d|c3|m1|a2|a3|a4|a4x|g2|g4)-[a-z]+(-[0-9]+[a-z]*)?$")
_DURATION = re.compile(r"^(\d+)([smhd]?)$")
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
DOCKERFILES = {"gpu": "Dockerfile", "cpu": "Dockerfile.cpu"}
BUILDERS = ("cloud-build", "docker")
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


# ----------------------------------------------------------------------------- shared options


def project_option():
    return opt(
        None, "Google Cloud project ID (default: $GOOGLE_CLOUD_PROJECT)", group=JOB, factory=default_project
    )


def region_option():
    return opt(DEFAULT_REGION, "Google Cloud region of the jobs, models, endpoints and images", group=JOB)


def repository_option():
    return opt(DEFAULT_REPOSITORY, "Artifact Registry repository of the images", group=JOB)


def image_option():
    return opt(
        None,
        "image tag (default: the one `sentitune cloud build` pushes for the project, region and repository: "
        "the GPU image for GPU jobs, the CPU image for CPU jobs and serving)",
        group=JOB,
    )


def display_name_option():
    return opt(
        None,
        "name shown in the console (default: from the command and the time, or the run folder)",
        group=JOB,
    )


def service_account_option():
    return opt(None, "service account the job or the server runs as", group=JOB)


def api_endpoint_option():
    return opt(None, "Vertex AI API host (default: REGION-aiplatform.googleapis.com)", group=JOB)


def catalog_option():
    return opt(
        None,
        "JSON machine catalog (GPU types, machines, counts, regions) to check against instead of the built-in one",
        group=JOB,
    )


def prices_option():
    return opt(None, "JSON price table to estimate with instead of the built-in one", group=JOB)


def throughput_option(measured: str):
    """--throughput-from: where a cost estimate finds its measured speed (`measured` says which)."""
    return opt(None, measured, group=JOB)


def gs_run_argument():
    return opt(None, "run folder on gs:// written by train", positional=True, metavar="RUN_DIR")


def gs_run_problems(run_dir: str | None) -> list[str]:
    """Vertex AI reads a model from Cloud Storage only."""
    if not run_dir:
        return ["pass RUN_DIR, a run folder on gs://"]
    if not str(run_dir).startswith("gs://"):
        where = "a local folder" if not is_url(run_dir) else run_dir.split("://")[0] + "://"
        return [
            f"RUN_DIR is {where}; Vertex AI reads models from Cloud Storage: copy it with "
            f"`gcloud storage cp -r {run_dir} gs://BUCKET/runs/` or train with --job-dir gs://…"
        ]
    return []


def dry_run_option():
    return opt(
        False,
        "print what would be sent or run (requests as JSON, commands, the cost); do nothing",
        group=OUTPUT,
    )


def parse_duration(text: str) -> int:
    """'90m', '2h', '3600s', '3600' -> seconds."""
    match = _DURATION.match(str(text).strip())
    if not match:
        raise SentituneError(f"--timeout {text!r} is not a duration; use e.g. 90m, 2h or 7200 (seconds)")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


# ----------------------------------------------------------------------------- build


@dataclass
class BuildConfig:
    """Which image to build, where from, and where to push it."""

    project: str | None = project_option()
    region: str = region_option()
    repository: str = repository_option()
    variant: str = opt(
        "gpu",
        "gpu: CUDA PyTorch image; cpu: slim image for CPU jobs and serving",
        choices=tuple(DOCKERFILES),
        group=JOB,
    )
    image_uri: str | None = image_option()
    builder: str = opt(
        "cloud-build", "build remotely with Cloud Build, or locally with docker", choices=BUILDERS, group=JOB
    )
    source: str = opt(
        ".", "folder holding the Dockerfiles, pyproject.toml and src/ (a sentitune checkout)", group=JOB
    )
    build_timeout: str = opt(
        "3600s",
        "Cloud Build's time limit for build and push, e.g. 3600s or 60m (a CUDA image takes several minutes)",
        group=JOB,
    )
    build_machine_type: str = opt(
        "e2-highcpu-8", "Cloud Build's machine (e2-highcpu-8, e2-highcpu-32, ...)", group=JOB
    )
    dry_run: bool = dry_run_option()

    def __post_init__(self) -> None:
        problems = [] if self.image_uri else target_problems(self.project, self.region)
        if not re.match(r"^\d+[smh]?$", self.build_timeout):
            problems.append(f"--build-timeout {self.build_timeout!r} is not a duration such as 3600s or 60m")
        dockerfile = Path(self.source) / DOCKERFILES[self.variant]
        if not dockerfile.is_file() or not (Path(self.source) / "src" / "sentitune").is_dir():
            problems.append(
                f"{dockerfile} not found: run from a sentitune source checkout or pass --source DIR"
            )
        raise_problems(problems, "build options")
        self.image_uri = self.image_uri or image_uri(self.project, self.region, self.repository, self.variant)


# ----------------------------------------------------------------------------- submit and tune


class VertexTarget:
    """What the configs of commands that send Vertex AI requests share (from their project, region,
    repository, image_uri and accelerator_type fields): the parent resource, resource names given as an
    ID or in full, and the default image for the machine."""

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    def resource_name(self, kind: str, given: str | None) -> str | None:
        """`given` as a resource name: an ID is one of `kind` (endpoints, models, ...) under the parent."""
        if not given:
            return None
        return given if "/" in given else f"{self.parent}/{kind}/{given}"

    def default_image_uri(self) -> str:
        """The `cloud build` tag of the image for this machine: the CUDA image when it has a GPU."""
        return image_uri(
            self.project, self.region, self.repository, "gpu" if self.accelerator_type else "cpu"
        )


@dataclass
class SubmitConfig(VertexTarget):
    """A Vertex AI custom job that runs `sentitune train` with the arguments after `--`."""

    WHAT: ClassVar[str] = "submit options"

    project: str | None = project_option()
    region: str = region_option()
    display_name: str | None = display_name_option()
    machine_type: str = opt("n1-standard-4", "machine of each training replica", group=JOB)
    accelerator_type: str | None = opt(
        "NVIDIA_TESLA_T4", "GPU type, e.g. NVIDIA_TESLA_T4, NVIDIA_L4 ('none': CPU only)", group=JOB
    )
    accelerator_count: int = opt(1, "GPUs per replica", group=JOB)
    replica_count: int = opt(
        1, "machines (more than 1: the primary + workers, see distributed training)", group=JOB
    )
    image_uri: str | None = image_option()
    repository: str = repository_option()
    service_account: str | None = service_account_option()
    base_output_dir: str | None = opt(
        None,
        "gs:// folder of the job's outputs: Vertex AI sets AIP_MODEL_DIR, AIP_CHECKPOINT_DIR, ... under it",
        group=OUTPUT,
    )
    env: list[str] = opt(
        [], "KEY=VALUE environment variable of the container (repeatable)", action="append", group=JOB
    )
    timeout: str | None = opt(
        None, "stop the job after this long, e.g. 90m or 2h (default: Vertex AI's 7 days)", group=JOB
    )
    spot: bool = opt(
        False,
        "run on Spot VMs (much cheaper, may be preempted: training resumes from checkpoints)",
        group=JOB,
    )
    restart_on_worker_restart: bool = opt(
        False,
        "restart the job when a worker restarts (otherwise a restarted worker rejoins alone)",
        group=JOB,
    )
    tensorboard: str | None = opt(
        None,
        "a Vertex AI TensorBoard instance (ID or resource name, in the job's region) that the job's training "
        "curves stream to; needs --service-account and --base-output-dir",
        group=JOB,
    )
    experiment: str | None = opt(
        None,
        "a Vertex AI Experiment (created if new) in which the job records its settings and final metrics "
        "as a run; needs --service-account",
        group=JOB,
    )
    prices: str | None = prices_option()
    catalog: str | None = catalog_option()
    throughput_from: str | None = throughput_option(
        "a finished run folder whose training examples/s (same machine kind) estimates the job's length"
    )
    api_endpoint: str | None = api_endpoint_option()
    dry_run: bool = dry_run_option()
    train_args: list[str] = field(default_factory=list)  # after `--`: passed to `sentitune train` unchanged

    def __post_init__(self) -> None:
        if self.accelerator_type and self.accelerator_type.lower() == "none":
            self.accelerator_type = None
        default_image = not self.image_uri
        machine = machine_problems(self, serving=False, default_image=default_image)
        problems = target_problems(self.project, self.region) + machine + self.tensorboard_problems()
        problems += self.experiment_problems()
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
        if self.train is not None and not machine:  # processes are known once the machine is right
            problems += self.job_batch_problems()
        if self.timeout is not None:
            try:
                parse_duration(self.timeout)
            except SentituneError as exc:
                problems.append(str(exc))
        raise_problems(problems, self.WHAT)
        self.display_name = self.display_name or time.strftime("sentitune-train-%Y%m%d-%H%M%S", time.gmtime())
        self.image_uri = self.image_uri or self.default_image_uri()

    def tensorboard_name(self) -> str | None:
        return self.resource_name("tensorboards", self.tensorboard)

    def tensorboard_problems(self) -> list[str]:
        """Vertex AI streams a job's TensorBoard logs as its service account from under its output folder,
        to an instance in the job's region."""
        if not self.tensorboard:
            return []
        found = TENSORBOARD.fullmatch(self.tensorboard_name() or "")
        if not found:
            return [
                f"--tensorboard {self.tensorboard!r} is not a TensorBoard ID or a resource name "
                "projects/PROJECT/locations/REGION/tensorboards/ID"
            ]
        problems = []
        if found.group(2) != self.region:
            problems.append(
                f"--tensorboard {self.tensorboard} is in {found.group(2)} and the job runs in {self.region}: "
                f"use an instance in {self.region}, or --region {found.group(2)}"
            )
        if not self.service_account:
            problems.append(
                "--tensorboard needs --service-account: Vertex AI uploads the logs as that account"
            )
        if not self.base_output_dir:
            problems.append("--tensorboard needs --base-output-dir: the job writes its logs under it first")
        return problems

    def experiment_problems(self) -> list[str]:
        if not self.experiment:
            return []
        problems = []
        if not EXPERIMENT.fullmatch(self.experiment):
            problems.append(
                f"--experiment {self.experiment!r} is not an experiment name (1-128 of a-z, 0-9 and -, "
                "starting with a letter or digit)"
            )
        if not self.service_account:
            problems.append("--experiment needs --service-account: the job records its run as that account")
        return problems

    def experiment_name(self) -> str | None:
        """The Experiment's resource name: a context in the region's default metadata store."""
        if not self.experiment:
            return None
        return f"{self.parent}/metadataStores/default/contexts/{self.experiment}"

    @property
    def processes(self) -> int:
        """Training processes of the job: one per GPU on each replica (one per CPU-only replica), as the
        image's entrypoint (sentitune.launch) starts them."""
        return self.replica_count * (self.accelerator_count if self.accelerator_type else 1)

    def job_batch_problems(self) -> list[str]:
        return self.batch_problems([train_option(self.train, "batch_size")])

    def batch_problems(self, batch_sizes: list[int], flag: str = "-- --batch-size") -> list[str]:
        """Every rank takes batch / processes of each global batch: a batch that does not divide stops
        every rank as soon as the machines are up, after they are paid for."""
        bad = [b for b in batch_sizes if b % self.processes]
        if not bad or self.processes == 1:
            return []
        n = self.processes
        fits = sorted({max(n, b // n * n) for b in bad} | {-(-b // n) * n for b in bad})
        return [
            f"{flag} {', '.join(map(str, bad))} does not divide by the job's {n} training processes "
            f"({self.replica_count} replicas x {self.accelerator_count if self.accelerator_type else 1} "
            f"per replica), so every process would refuse to start; use a multiple of {n}, e.g. "
            f"{', '.join(map(str, fits))}"
        ]


def machine_problems(cfg, *, serving: bool, default_image: bool) -> list[str]:
    """The machine type's form, then what the catalog says Vertex AI accepts of a job's or an endpoint's
    machine (`cfg`: its machine_type, accelerator_type, accelerator_count, region, catalog): GPU, count,
    region and the default image's CUDA architectures."""
    if not MACHINE_TYPE.match(cfg.machine_type):
        return [
            f"--machine-type {cfg.machine_type!r} is not a Vertex AI machine type such as n1-standard-4, "
            "g2-standard-8 or a2-highgpu-1g"
        ]
    if cfg.accelerator_type and cfg.accelerator_count < 1:
        return [f"--accelerator-count must be at least 1 with a GPU, got {cfg.accelerator_count}"]
    return catalog.gpu_problems(
        catalog.load(cfg.catalog),
        cfg.machine_type,
        cfg.accelerator_type,
        cfg.accelerator_count,
        cfg.region,
        serving=serving,
        default_image=default_image,
    )


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
        or getattr(parsed, "config", None)  # a replayed run's data, as recorded
        or getattr(parsed, "dry_run", False)
    ):
        problems.append(
            "no training data: pass -- --training-file gs://… (or --data gs://…) after the job options"
        )
    if not has_output_dir and not getattr(parsed, "job_dir", None):
        problems.append("nowhere to save the model: pass --base-output-dir gs://… (or -- --job-dir gs://…)")
    return problems


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


def _listed(text: str, what: str, kind=int, positive: bool = True) -> list:
    """Listed values, sorted, each once. Whole numbers (at least 1) come back as strings, so categorical
    values reach the trial exactly as written (16, not 16.0); reals (above 0 when `positive`) as floats."""
    whole = kind is int
    try:
        values = sorted({kind(x) for x in str(text).split(",")})
    except ValueError as exc:
        raise SentituneError(
            f"{what} {text!r} is not a comma-separated list of {'whole numbers' if whole else 'numbers'}, "
            f"e.g. {'16,32,64' if whole else '2e-5,5e-5'}"
        ) from exc
    if (positive or whole) and values[0] <= 0:
        raise SentituneError(f"{what} {text!r}: every value must be {'at least 1' if whole else 'above 0'}")
    return [str(v) for v in values] if whole else values


@dataclass
class TuneConfig(SubmitConfig):
    """A hyperparameter study whose trials are `cloud submit` jobs."""

    WHAT: ClassVar[str] = "tune options"

    max_trials: int = opt(8, "trials in all", group=RUNTIME)
    parallel_trials: int = opt(2, "trials running at the same time", group=RUNTIME)
    algorithm: str = opt("bayesian", "how Vertex AI picks the next trial", choices=ALGORITHMS, group=RUNTIME)
    # The search space: same names as train's options, other meanings (ranges and lists to try).
    learning_rate: str | None = opt(
        "1e-5:2e-4", "learning-rate range LOW:HIGH (log scale); 'none': not tuned", group=RUNTIME
    )
    batch_size: str | None = opt("16,32,64", "batch sizes to try; 'none': not tuned", group=RUNTIME)
    epochs: str | None = opt("1:4", "epoch range LOW:HIGH; 'none': not tuned", group=RUNTIME)
    keep_layers: str | None = opt("3,4,6", "encoder layers to keep; 'none': not tuned", group=RUNTIME)
    warmup_ratio: str | None = opt(
        "0:0.2", "warm-up fraction range LOW:HIGH; 'none': not tuned", group=RUNTIME
    )

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
            space = self.search_space()
        except SentituneError as exc:
            problems.append(str(exc))
            space = []
        reals = [name for name, kind, _ in space if kind in ("log", "linear")]  # DOUBLE parameters
        if self.algorithm == "grid" and reals:
            flags = " and ".join("--" + n.replace("_", "-") for n in reals)
            problems.append(
                f"--algorithm grid takes whole-number ranges and listed values only, and {flags} "
                f"{'is a range' if len(reals) == 1 else 'are ranges'} of reals; list the values "
                "(e.g. --learning-rate 2e-5,5e-5,1e-4), pass 'none', or use --algorithm random"
            )
        parsed = parse_train_args(self.train_args)[0]
        if parsed is not None and getattr(parsed, "job_dir", None):
            problems.append(
                f"-- --job-dir {parsed.job_dir}: every trial would write that one folder; drop it and pass "
                "--base-output-dir gs://… (each trial then writes <base>/<trial id>/model)"
            )
        if not any(getattr(self, name) for name in SEARCHED):
            problems.append(
                "nothing to tune: give at least one of --learning-rate, --batch-size, --epochs, "
                "--keep-layers, --warmup-ratio"
            )
        raise_problems(problems, self.WHAT)
        super().__post_init__()
        if self.display_name.startswith("sentitune-train-"):
            self.display_name = "sentitune-tune-" + self.display_name.removeprefix("sentitune-train-")

    def job_batch_problems(self) -> list[str]:
        """The tuned batch sizes replace the one after `--` in every trial."""
        tuned = next((values for name, _, values in self.search_space() if name == "batch_size"), None)
        if tuned is None:
            return super().job_batch_problems()
        return self.batch_problems([int(v) for v in tuned], "--batch-size")

    def search_space(self) -> list[tuple[str, str, object]]:
        """(parameter, kind, values or (low, high)) of every tuned setting."""
        found = []
        for name, kind in SEARCHED.items():
            text, flag = getattr(self, name), "--" + name.replace("_", "-")
            if not text:
                continue
            if kind == "values":
                found.append((name, kind, _listed(text, flag)))
                continue
            if "," in str(text) and kind != "integers":  # listed reals: a discrete parameter
                found.append((name, "discrete", _listed(text, flag, float, positive=kind == "log")))
                continue
            if "," in str(text):
                found.append((name, "values", _listed(text, flag)))
                continue
            low, high = _range(text, flag, int if kind == "integers" else float)
            if kind == "log" and low <= 0:
                raise SentituneError(f"{flag} '{text}': a log-scale range must start above 0, e.g. 1e-6:1e-4")
            found.append((name, kind, (low, high)))
        return found


# ----------------------------------------------------------------------------- deploy and follow


@dataclass
class ServingOptions(VertexTarget):
    """What serves a run on Vertex AI (`cloud deploy`, `cloud batch-predict`): the server's backend and
    each replica's machine, checked against the catalog."""

    backend: str = opt(
        "onnx-int8", "model the server runs (onnx*: export the run first)", choices=BACKENDS, group=RUNTIME
    )
    machine_type: str = opt("n1-standard-2", "machine of each serving replica", group=JOB)
    accelerator_type: str | None = opt(
        None,
        "GPU of each serving replica, e.g. NVIDIA_TESLA_T4 or NVIDIA_L4 (default: none, CPU serving)",
        group=JOB,
    )
    accelerator_count: int = opt(1, "GPUs per serving replica", group=JOB)
    catalog: str | None = catalog_option()

    def serving_problems(self, default_image: bool) -> list[str]:
        problems = machine_problems(self, serving=True, default_image=default_image)
        if self.accelerator_type and self.backend != "torch":
            problems.append(
                f"--backend {self.backend} runs on the CPU; with --accelerator-type pass --backend torch"
            )
        return problems


@dataclass
class DeployConfig(ServingOptions):
    """Where and how a trained run is served on Vertex AI."""

    run_dir: str = gs_run_argument()
    project: str | None = project_option()
    region: str = region_option()
    display_name: str | None = display_name_option()
    image_uri: str | None = image_option()
    repository: str = repository_option()
    min_replicas: int = opt(1, "replicas always running", group=JOB)
    max_replicas: int = opt(1, "replicas under load at most (autoscaling between min and max)", group=JOB)
    endpoint: str | None = opt(
        None, "deploy to this existing endpoint (ID or resource name) instead of a new one", group=JOB
    )
    service_account: str | None = service_account_option()
    api_endpoint: str | None = api_endpoint_option()
    dry_run: bool = dry_run_option()

    def __post_init__(self) -> None:
        problems = target_problems(self.project, self.region)
        problems += gs_run_problems(self.run_dir)
        if self.min_replicas < 1:
            problems.append(f"--min-replicas must be at least 1, got {self.min_replicas}")
        if self.max_replicas < self.min_replicas:
            problems.append(f"--max-replicas {self.max_replicas} is below --min-replicas {self.min_replicas}")
        problems += self.serving_problems(default_image=not self.image_uri)
        raise_problems(problems, "deploy options")
        run_name = str(self.run_dir).rstrip("/").rsplit("/", 1)[-1]
        self.display_name = self.display_name or f"sentitune-{run_name}"
        self.image_uri = self.image_uri or self.default_image_uri()  # GPU serving runs the CUDA image

    def endpoint_name(self) -> str | None:
        return self.resource_name("endpoints", self.endpoint)


TENSORBOARD = re.compile(r"projects/([^/]+)/locations/([^/]+)/tensorboards/([^/]+)")
EXPERIMENT = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")
INSTANCE_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}


@dataclass
class BatchPredictConfig(ServingOptions):
    """Which run scores which files on Cloud Storage as a Vertex AI batch prediction job, on what."""

    run_dir: str | None = opt(
        None,
        "run folder on gs:// written by train (uploaded to the Model Registry first)",
        positional=True,
        metavar="RUN_DIR",
        nargs="?",
    )
    registered_model: str | None = opt(
        None,
        "a model already in the Model Registry (ID or resource name) instead of uploading RUN_DIR",
        group=JOB,
    )
    input_uri: list[str] = opt(
        [],
        "files on gs:// to score (wildcards allowed): JSONL, one post per line as a JSON string or "
        '{"text": …}; or CSV, a header then the post in the only column',
        nargs="+",
        group=DATA,
    )
    instances_format: str | None = opt(
        None, "jsonl or csv (default: from the input files' names)", choices=("jsonl", "csv"), group=DATA
    )
    output_uri_prefix: str | None = opt(
        None, "gs:// folder under which Vertex AI writes each job's predictions", group=OUTPUT
    )
    predictions_format: str = opt(
        "jsonl", "format of the predictions written", choices=("jsonl",), group=OUTPUT
    )
    starting_replica_count: int = opt(1, "replicas the job starts with", group=JOB)
    max_replica_count: int = opt(10, "replicas the job may scale to", group=JOB)
    instances_per_request: int = opt(64, "posts per request to each replica's server", group=JOB)
    throughput_from: str | None = throughput_option(
        "output folder of `sentitune evaluate` run on the replicas' machine kind: its posts/s estimates the "
        "job's node hours and cost"
    )
    posts: int | None = opt(
        None, "posts in the inputs, for the estimate (default: counted by reading them)", group=JOB
    )
    prices: str | None = prices_option()
    project: str | None = project_option()
    region: str = region_option()
    display_name: str | None = display_name_option()
    image_uri: str | None = image_option()
    repository: str = repository_option()
    service_account: str | None = service_account_option()
    api_endpoint: str | None = api_endpoint_option()
    overwrite: bool = overwrite_option()
    dry_run: bool = dry_run_option()

    def __post_init__(self) -> None:
        problems = target_problems(self.project, self.region)
        if self.registered_model and self.run_dir:
            problems.append("pass RUN_DIR or --registered-model, not both")
        elif not self.registered_model:
            problems += gs_run_problems(self.run_dir)
        if not self.input_uri:
            problems.append("--input-uri is required: the JSONL or CSV files on gs:// to score")
        formats = set()
        for uri in self.input_uri:
            if not str(uri).startswith("gs://"):
                problems.append(f"--input-uri {uri} is not on Cloud Storage; the job reads gs://… only")
                continue
            name = str(uri).rsplit("/", 1)[-1].lower().removesuffix(".gz")
            suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
            if suffix in INSTANCE_FORMATS:
                formats.add(INSTANCE_FORMATS[suffix])
            elif not self.instances_format:
                problems.append(
                    f"--input-uri {uri} is not JSONL or CSV by its name; rename it or pass --instances-format"
                )
        if len(formats) > 1 and not self.instances_format:
            problems.append("the inputs mix JSONL and CSV; one job reads one format: send them as two jobs")
        self.instances_format = self.instances_format or (formats.pop() if len(formats) == 1 else None)
        if not self.output_uri_prefix:
            problems.append("--output-uri-prefix is required: a gs:// folder for the predictions")
        elif not str(self.output_uri_prefix).startswith("gs://"):
            problems.append(
                f"--output-uri-prefix {self.output_uri_prefix} is not on Cloud Storage; pass gs://…"
            )
        if self.starting_replica_count < 1:
            problems.append(f"--starting-replica-count must be at least 1, got {self.starting_replica_count}")
        if self.max_replica_count < self.starting_replica_count:
            problems.append(
                f"--max-replica-count {self.max_replica_count} is below --starting-replica-count "
                f"{self.starting_replica_count}"
            )
        if self.instances_per_request < 1:
            problems.append(f"--instances-per-request must be at least 1, got {self.instances_per_request}")
        if self.posts is not None and self.posts < 1:
            problems.append(f"--posts must be at least 1, got {self.posts}")
        problems += self.serving_problems(default_image=not self.image_uri)
        raise_problems(problems, "batch-predict options")
        name = str(self.run_dir or self.registered_model).rstrip("/").rsplit("/", 1)[-1]
        self.display_name = self.display_name or f"sentitune-batch-{name}"
        self.image_uri = self.image_uri or self.default_image_uri()

    def registered_model_name(self) -> str | None:
        return self.resource_name("models", self.registered_model)


@dataclass
class FollowConfig:
    """`cloud status`, `cloud logs` and `cloud cancel`: which job."""

    job: str = opt(
        None, "job ID (with --project/--region) or full resource name", positional=True, metavar="JOB"
    )
    project: str | None = project_option()
    region: str = region_option()
    api_endpoint: str | None = api_endpoint_option()
    json: bool = json_option()
