"""The dataclasses of the cloud commands (build, submit, tune, deploy, status / logs / cancel), with
the options they share declared once. Like `sentitune.config`, nothing here imports the Google Cloud
SDK: the parser builds without it, and every check here runs before anything is sent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

from sentitune.cloud import rules
from sentitune.cloud.rules import parse_duration  # noqa: F401  (submit reads the timeout through it)
from sentitune.cloud.vertex import (
    DEFAULT_REGION,
    DEFAULT_REPOSITORY,
    default_project,
    image_uri,
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
)
from sentitune.errors import SentituneError

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


def allow_unlisted_option():
    return opt(
        False,
        "accept a region, machine type, GPU or architecture the catalog does not list (one Google added "
        "after the catalog's date); the rules the catalog does state still apply",
        group=JOB,
    )


def prices_option():
    return opt(None, "JSON price table to estimate with instead of the built-in one", group=JOB)


def throughput_option(measured: str):
    """--throughput-from: where a cost estimate finds its measured speed (`measured` says which)."""
    return opt(None, measured, group=JOB)


def gs_run_argument():
    return opt(None, "run folder on gs:// written by train", positional=True, metavar="RUN_DIR")


def dry_run_option():
    return opt(
        False,
        "print what would be sent or run (requests as JSON, commands, the cost); do nothing",
        group=OUTPUT,
    )


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
        "Cloud Build's time limit for build and push, e.g. 3600s, 60m or 2h30m, at most 24h (a CUDA image "
        "takes several minutes)",
        group=JOB,
    )
    build_machine_type: str = opt(
        "e2-highcpu-8",
        f"Cloud Build's machine: {', '.join(rules.BUILD_MACHINES)}",
        group=JOB,
    )
    dry_run: bool = dry_run_option()

    COMMAND: ClassVar[str] = "build"
    WHAT: ClassVar[str] = "build options"

    def __post_init__(self) -> None:
        self.default_image = self.image_uri is None  # an empty --image-uri is refused, not defaulted
        self.dockerfile = DOCKERFILES[self.variant]
        if self.default_image:
            self.image_uri = image_uri(self.project, self.region, self.repository, self.variant)
        rules.enforce(self)


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

    def read_no_gpu(self) -> None:
        """--accelerator-type none (any case) is a machine without a GPU."""
        if self.accelerator_type and self.accelerator_type.lower() == "none":
            self.accelerator_type = None

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
        None,
        "stop the job after this long, e.g. 90m, 2h30m or 7200 (default: Vertex AI's 7 days)",
        group=JOB,
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
    allow_unlisted: bool = allow_unlisted_option()
    throughput_from: str | None = throughput_option(
        "a finished run folder whose training examples/s (same machine kind) estimates the job's length"
    )
    api_endpoint: str | None = api_endpoint_option()
    dry_run: bool = dry_run_option()
    train_args: list[str] = field(default_factory=list)  # after `--`: passed to `sentitune train` unchanged

    COMMAND: ClassVar[str] = "submit"

    def __post_init__(self) -> None:
        self.resolve()
        rules.enforce(self)

    def resolve(self) -> None:
        """What the rules read besides the options: 'none' as no GPU, whether the image is the default
        one, the training arguments parsed once as `sentitune train` will parse them (read by the rules,
        the estimate and the checks before sending), and the defaults that depend on other options."""
        self.read_no_gpu()
        self.default_image = self.image_uri is None  # an empty --image-uri is refused, not defaulted
        self.train, self.train_unknown = rules.quiet_parse(self.train_args)
        self.display_name = self.display_name or time.strftime("sentitune-train-%Y%m%d-%H%M%S", time.gmtime())
        if self.default_image:
            self.image_uri = self.default_image_uri()

    def tensorboard_name(self) -> str | None:
        return self.resource_name("tensorboards", self.tensorboard)

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

    COMMAND: ClassVar[str] = "tune"
    SEARCHED: ClassVar[dict[str, str]] = SEARCHED

    def resolve(self) -> None:
        for name in SEARCHED:
            if str(getattr(self, name)).lower() == "none":
                setattr(self, name, None)
        given_name = self.display_name
        super().resolve()
        if not given_name:
            self.display_name = "sentitune-tune-" + self.display_name.removeprefix("sentitune-train-")

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
            if kind == "integers" and not -rules.INT64_MAX <= low < high <= rules.INT64_MAX:
                raise SentituneError(f"{flag} '{text}': Vertex AI takes whole numbers below 2^63")
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
    allow_unlisted: bool = allow_unlisted_option()

    def __post_init__(self) -> None:
        self.read_no_gpu()
        self.default_image = self.image_uri is None  # an empty --image-uri is refused, not defaulted
        name = str(getattr(self, "run_dir", None) or getattr(self, "registered_model", None) or "")
        self.display_name = self.display_name or self.DEFAULT_NAME + name.rstrip("/").rsplit("/", 1)[-1]
        if self.default_image:
            self.image_uri = self.default_image_uri()  # GPU serving runs the CUDA image
        rules.enforce(self)


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

    COMMAND: ClassVar[str] = "deploy"
    WHAT: ClassVar[str] = "deploy options"
    DEFAULT_NAME: ClassVar[str] = "sentitune-"

    def endpoint_name(self) -> str | None:
        return self.resource_name("endpoints", self.endpoint)


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

    COMMAND: ClassVar[str] = "batch-predict"
    WHAT: ClassVar[str] = "batch-predict options"
    DEFAULT_NAME: ClassVar[str] = "sentitune-batch-"

    def __post_init__(self) -> None:
        super().__post_init__()
        formats = {rules.INSTANCE_FORMATS.get(rules.instance_suffix(uri)) for uri in self.input_uri} - {None}
        self.instances_format = self.instances_format or (formats.pop() if len(formats) == 1 else None)

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
