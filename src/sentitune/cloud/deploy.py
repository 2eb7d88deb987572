"""`sentitune cloud deploy`: a run folder on Cloud Storage -> Vertex AI Model Registry -> an endpoint.

Three requests, in order: UploadModel (the run folder as the model artifact, served by the sentitune
image's `sentitune serve`, which reads the copy Vertex AI passes in AIP_STORAGE_URI), CreateEndpoint
(unless --endpoint names one) and DeployModel (machine type, replica counts, all traffic).
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass

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
from sentitune.config import BACKENDS, _check, opt
from sentitune.errors import SentituneError
from sentitune.storage import exists, is_url, join

log = logging.getLogger("sentitune")

SERVING_PORT = 8080
LRO_TIMEOUT_S = 3600  # deploying provisions machines: minutes, sometimes tens of minutes


@dataclass
class DeployConfig:
    """Where and how a trained run is served on Vertex AI."""

    run_dir: str = opt(None, "run folder on gs:// written by train", positional=True, metavar="RUN_DIR")
    project: str | None = project_option()
    region: str = opt(DEFAULT_REGION, "Vertex AI region")
    display_name: str | None = opt(
        None, "name of the model and endpoint (default: sentitune-<run folder name>)"
    )
    image_uri: str | None = opt(
        None, "serving image (default: the image `sentitune cloud build --variant cpu` pushes)"
    )
    repository: str = opt(DEFAULT_REPOSITORY, "Artifact Registry repository of the default image")
    backend: str = opt("onnx-int8", "model the server runs (onnx*: export the run first)", choices=BACKENDS)
    machine_type: str = opt("n1-standard-2", "machine of each serving replica")
    min_replicas: int = opt(1, "replicas always running")
    max_replicas: int = opt(1, "replicas under load at most (autoscaling between min and max)")
    endpoint: str | None = opt(
        None, "deploy to this existing endpoint (ID or resource name) instead of a new one"
    )
    service_account: str | None = opt(None, "service account the serving container runs as")
    api_endpoint: str | None = api_endpoint_option()
    dry_run: bool = opt(False, "print the requests (JSON) and the equivalent gcloud commands; send nothing")

    def __post_init__(self) -> None:
        self.project = self.project or default_project()
        problems = target_problems(self.project, self.region)
        if not self.run_dir:
            problems.append("pass RUN_DIR, a run folder on gs://")
        elif not str(self.run_dir).startswith("gs://"):
            where = "a local folder" if not is_url(self.run_dir) else self.run_dir.split("://")[0] + "://"
            problems.append(
                f"RUN_DIR is {where}; Vertex AI reads models from Cloud Storage: copy it with "
                f"`gcloud storage cp -r {self.run_dir} gs://BUCKET/runs/` or train with --job-dir gs://…"
            )
        if self.min_replicas < 1:
            problems.append(f"--min-replicas must be at least 1, got {self.min_replicas}")
        if self.max_replicas < self.min_replicas:
            problems.append(f"--max-replicas {self.max_replicas} is below --min-replicas {self.min_replicas}")
        _check(problems, "deploy options")
        run_name = str(self.run_dir).rstrip("/").rsplit("/", 1)[-1]
        self.display_name = self.display_name or f"sentitune-{run_name}"
        self.image_uri = self.image_uri or image_uri(self.project, self.region, self.repository, "cpu")

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    def endpoint_name(self) -> str | None:
        if not self.endpoint:
            return None
        return self.endpoint if "/" in self.endpoint else f"{self.parent}/endpoints/{self.endpoint}"


@dataclass
class DeployRequests:
    upload: object
    create_endpoint: object | None
    deploy: object  # its `endpoint` and `deployed_model.model` are filled in once the others answer


MODEL_PLACEHOLDER = "<the model UploadModel returns>"
ENDPOINT_PLACEHOLDER = "<the endpoint CreateEndpoint returns>"


def build_requests(cfg: DeployConfig) -> DeployRequests:
    types = aiplatform_types()
    model = types.Model(
        display_name=cfg.display_name,
        artifact_uri=cfg.run_dir.rstrip("/"),
        labels={"created-by": "sentitune"},
        container_spec=types.ModelContainerSpec(
            image_uri=cfg.image_uri,
            command=["sentitune"],
            args=["serve", "--backend", cfg.backend],
            ports=[types.Port(container_port=SERVING_PORT)],
            predict_route="/predict",
            health_route="/health",
        ),
    )
    upload = types.UploadModelRequest(parent=cfg.parent, model=model)
    if cfg.service_account:
        upload.service_account = cfg.service_account
    create = None
    if not cfg.endpoint:
        create = types.CreateEndpointRequest(
            parent=cfg.parent,
            endpoint=types.Endpoint(display_name=cfg.display_name, labels={"created-by": "sentitune"}),
        )
    deployed = types.DeployedModel(
        model=MODEL_PLACEHOLDER,
        display_name=cfg.display_name,
        dedicated_resources=types.DedicatedResources(
            machine_spec=types.MachineSpec(machine_type=cfg.machine_type),
            min_replica_count=cfg.min_replicas,
            max_replica_count=cfg.max_replicas,
        ),
    )
    if cfg.service_account:
        deployed.service_account = cfg.service_account
    deploy = types.DeployModelRequest(
        endpoint=cfg.endpoint_name() or ENDPOINT_PLACEHOLDER,
        deployed_model=deployed,
        traffic_split={"0": 100},  # "0": the model this request deploys
    )
    return DeployRequests(upload, create, deploy)


def gcloud_commands(cfg: DeployConfig) -> list[str]:
    """The same three steps as gcloud command lines."""
    q = shlex.quote
    upload = [
        "gcloud ai models upload",
        f"--project={q(cfg.project)}",
        f"--region={cfg.region}",
        f"--display-name={q(cfg.display_name)}",
        f"--artifact-uri={q(cfg.run_dir.rstrip('/'))}",
        f"--container-image-uri={q(cfg.image_uri)}",
        "--container-command=sentitune",
        f"--container-args=serve,--backend,{cfg.backend}",
        f"--container-ports={SERVING_PORT}",
        "--container-predict-route=/predict",
        "--container-health-route=/health",
    ]
    commands = [" ".join(upload)]
    endpoint = cfg.endpoint or "ENDPOINT_ID"
    if not cfg.endpoint:
        commands.append(
            f"gcloud ai endpoints create --project={q(cfg.project)} --region={cfg.region} "
            f"--display-name={q(cfg.display_name)}"
        )
    deploy = [
        f"gcloud ai endpoints deploy-model {q(endpoint)}",
        f"--project={q(cfg.project)}",
        f"--region={cfg.region}",
        "--model=MODEL_ID",
        f"--display-name={q(cfg.display_name)}",
        f"--machine-type={cfg.machine_type}",
        f"--min-replica-count={cfg.min_replicas}",
        f"--max-replica-count={cfg.max_replicas}",
        "--traffic-split=0=100",
    ]
    if cfg.service_account:
        deploy.append(f"--service-account={q(cfg.service_account)}")
    commands.append(" ".join(deploy))
    return commands


def dry_run(cfg: DeployConfig) -> dict:
    requests = build_requests(cfg)
    return {
        "upload_model": to_json(requests.upload),
        "create_endpoint": to_json(requests.create_endpoint) if requests.create_endpoint else None,
        "deploy_model": to_json(requests.deploy),
        "gcloud": gcloud_commands(cfg),
    }


def deploy(cfg: DeployConfig) -> dict:
    """Upload, create the endpoint if needed, deploy; returns the resource names."""
    if not exists(join(cfg.run_dir, "model.safetensors")):
        raise SentituneError(f"{cfg.run_dir} is not a finished run (no model.safetensors)")
    if cfg.backend != "torch" and not exists(join(cfg.run_dir, "onnx", "export_report.json")):
        quantize = " --quantize int8" if cfg.backend == "onnx-int8" else ""
        raise SentituneError(
            f"--backend {cfg.backend} needs an ONNX export in {cfg.run_dir}: run "
            f"`sentitune export {cfg.run_dir}{quantize}` first, or pass --backend torch"
        )
    requests = build_requests(cfg)
    models = client("model", cfg.region, cfg.api_endpoint)
    endpoints = client("endpoint", cfg.region, cfg.api_endpoint)

    log.info(f"uploading {cfg.run_dir} to the Model Registry as {cfg.display_name}")
    operation = call("UploadModel", models.upload_model, request=requests.upload)
    model_name = call("UploadModel", operation.result, timeout=LRO_TIMEOUT_S).model
    log.info(f"model: {model_name}")

    endpoint_name = cfg.endpoint_name()
    if requests.create_endpoint is not None:
        operation = call("CreateEndpoint", endpoints.create_endpoint, request=requests.create_endpoint)
        endpoint_name = call("CreateEndpoint", operation.result, timeout=LRO_TIMEOUT_S).name
        log.info(f"endpoint: {endpoint_name}")

    requests.deploy.endpoint = endpoint_name
    requests.deploy.deployed_model.model = model_name
    log.info(f"deploying to {endpoint_name} on {cfg.min_replicas}-{cfg.max_replicas} x {cfg.machine_type}")
    operation = call("DeployModel", endpoints.deploy_model, request=requests.deploy)
    deployed = call("DeployModel", operation.result, timeout=LRO_TIMEOUT_S).deployed_model
    return {"model": model_name, "endpoint": endpoint_name, "deployed_model_id": deployed.id}
