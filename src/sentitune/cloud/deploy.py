"""`sentitune cloud deploy`: a run folder on Cloud Storage -> Vertex AI Model Registry -> an endpoint.

Three requests, in order: UploadModel (the run folder as the model artifact, served by the sentitune
image's `sentitune serve`, which reads the copy Vertex AI passes in AIP_STORAGE_URI), CreateEndpoint
(unless --endpoint names one) and DeployModel (machine type, replica counts, all traffic).
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass

from sentitune.cloud import catalog
from sentitune.cloud.config import DeployConfig
from sentitune.cloud.vertex import aiplatform_types, call, client, to_json
from sentitune.errors import SentituneError
from sentitune.layout import EXPORT_DIR, EXPORT_REPORT, WEIGHTS
from sentitune.storage import exists, join

log = logging.getLogger("sentitune")

SERVING_PORT = 8080
LRO_TIMEOUT_S = 3600  # deploying provisions machines: minutes, sometimes tens of minutes


@dataclass
class DeployRequests:
    upload: object
    create_endpoint: object | None
    deploy: object  # its `endpoint` and `deployed_model.model` are filled in once the others answer


MODEL_PLACEHOLDER = "<the model UploadModel returns>"
ENDPOINT_PLACEHOLDER = "<the endpoint CreateEndpoint returns>"


def upload_request(cfg):
    """UploadModel of the run in `cfg.run_dir`, served by the sentitune image's `sentitune serve` (`cfg`: a
    DeployConfig or BatchPredictConfig)."""
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
    return upload


def build_requests(cfg: DeployConfig) -> DeployRequests:
    types = aiplatform_types()
    upload = upload_request(cfg)
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
            machine_spec=machine_spec(cfg, types),
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


def machine_spec(cfg: DeployConfig, types):
    spec = types.MachineSpec(machine_type=cfg.machine_type)
    if cfg.accelerator_type:
        spec.accelerator_type = types.AcceleratorType[cfg.accelerator_type]
        spec.accelerator_count = cfg.accelerator_count
    return spec


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
        *(
            [
                f"--accelerator=type={cfg.accelerator_type.lower().replace('_', '-')},count={cfg.accelerator_count}"
            ]
            if cfg.accelerator_type
            else []
        ),
        f"--min-replica-count={cfg.min_replicas}",
        f"--max-replica-count={cfg.max_replicas}",
        "--traffic-split=0=100",
    ]
    if cfg.service_account:
        deploy.append(f"--service-account={q(cfg.service_account)}")
    commands.append(" ".join(deploy))
    return commands


def run(cfg: DeployConfig) -> dict:
    """`sentitune cloud deploy`: the requests with --dry-run, else the deployed model and endpoint."""
    return dry_run(cfg) if cfg.dry_run else deploy(cfg)


def dry_run(cfg: DeployConfig) -> dict:
    requests = build_requests(cfg)
    return {
        "upload_model": to_json(requests.upload),
        "create_endpoint": to_json(requests.create_endpoint) if requests.create_endpoint else None,
        "deploy_model": to_json(requests.deploy),
        "gcloud": gcloud_commands(cfg),
        "checked_against": catalog.describe(catalog.load(cfg.catalog), cfg.catalog),
    }


def deploy(cfg: DeployConfig) -> dict:
    """Upload, create the endpoint if needed, deploy; returns the resource names."""
    if not exists(join(cfg.run_dir, WEIGHTS)):
        raise SentituneError(f"{cfg.run_dir} is not a finished run (no {WEIGHTS})")
    if cfg.backend != "torch" and not exists(join(cfg.run_dir, EXPORT_DIR, EXPORT_REPORT)):
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
