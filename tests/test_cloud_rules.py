"""The rules table of the cloud commands (sentitune.cloud.rules), held request by request: for every rule a
request it refuses (exit 2, one `error:` line saying what to pass instead, nothing sent to the Vertex AI
REST stand-in) and a near-identical one it accepts (the dry run prints the requests). A new rule is one
row in CASES; a rule without a row fails `test_every_rule_has_a_refused_and_an_accepted_case`."""

from __future__ import annotations

import itertools
import json
import random
import re
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
from helpers import PARENT, PROJECT, WALKTHROUGH_ARGS, as_sent, cli, cli_error

from sentitune.cloud import rules
from sentitune.cloud.catalog import CATALOG_FILE
from sentitune.cloud.config import BatchPredictConfig, BuildConfig, DeployConfig, SubmitConfig, TuneConfig
from sentitune.config import TrainConfig, _base_type, from_namespace, parse_train_args
from sentitune.errors import SentituneError

pytest.importorskip("google.cloud.aiplatform_v1")

REPO = Path(__file__).resolve().parents[1]
B = "gs://sentitune-test"
RUN = f"{B}/runs/r1"
WALKTHROUGH = WALKTHROUGH_ARGS[1:]  # n1-standard-4 + 1 T4, 10 epochs, batch 128, the files on gs://
DATA = ["--data", f"{B}/data"]
SA = ["--service-account", f"trainer@{PROJECT}.iam.gserviceaccount.com"]
H100_8 = [
    "--region",
    "us-central1",
    "--machine-type",
    "a3-highgpu-8g",
    "--accelerator-type",
    "NVIDIA_H100_80GB",
]
ARM = ["--region", "us-central1", "--machine-type", "a4x-highgpu-4g", "--accelerator-type", "NVIDIA_GB200"]
LONG = "x" * (rules.DISPLAY_NAME_MAX + 1)


def submit(*options: str, train: list[str] = WALKTHROUGH, out: bool = True) -> list[str]:
    base = ["cloud", "submit", "--project", PROJECT, "--region", "europe-west4", "--display-name", "nightly"]
    return [*base, *(["--base-output-dir", f"{B}/jobs/n"] if out else []), *options, "--", *train]


def tune(*options: str, train: list[str] = DATA) -> list[str]:
    return ["cloud", "tune", "--project", PROJECT, "--base-output-dir", f"{B}/tune", *options, "--", *train]


def deploy(*options: str, run: str | None = RUN) -> list[str]:
    return ["cloud", "deploy", *([run] if run else []), "--project", PROJECT, *options]


def batch(
    *options: str, run: str | None = RUN, inputs=(f"{B}/posts/a.jsonl",), out: str = f"{B}/out"
) -> list[str]:
    where = ["--input-uri", *inputs, "--output-uri-prefix", out]
    return ["cloud", "batch-predict", *([run] if run else []), "--project", PROJECT, *where, *options]


def build(*options: str) -> list[str]:
    return ["cloud", "build", "--project", PROJECT, "--source", str(REPO), *options]


def train_says(*args: str) -> str:
    """What `sentitune train` itself says of ARGS (its parser, then its config validation), so the table
    holds the cloud's words and train's, whatever train's wording is."""
    parsed, _ = parse_train_args(["--data", "d", *args])
    try:
        from_namespace(TrainConfig, parsed)
    except SentituneError as exc:
        return str(exc).removeprefix("invalid train options: ")
    return f"train accepts {' '.join(args)}"  # the case then fails: its refusal is not train's


@dataclass(frozen=True)
class Case:
    rule: str
    refused: list[str]
    accepted: list[str]
    says: str  # in the refusal: what was wrong and what to pass instead


CASES = [
    # cloud tune's study
    Case("tune-trial-counts", tune("--max-trials", "0"), tune("--max-trials", "1", "--parallel-trials", "1"),
         "--max-trials and --parallel-trials must be at least 1"),
    Case("tune-search-space", tune("--learning-rate", "0:1e-4"), tune("--learning-rate", "1e-6:1e-4"),
         "a log-scale range must start above 0, e.g. 1e-6:1e-4"),
    Case("tune-search-space", tune("--epochs", "1:99999999999999999999"), tune("--epochs", "1:9"),
         "Vertex AI takes whole numbers below 2^63"),
    Case("tune-grid", tune("--algorithm", "grid", "--warmup-ratio", "none"),
         tune("--algorithm", "grid", "--learning-rate", "2e-5,5e-5", "--warmup-ratio", "none"),
         "list the values (e.g. --learning-rate 2e-5,5e-5,1e-4), pass 'none', or use --algorithm random"),
    Case("tune-job-dir", tune(train=[*DATA, "--job-dir", f"{B}/run"]), tune(train=DATA),
         "drop it and pass --base-output-dir gs://…"),
    Case("tune-something",
         tune(*itertools.chain(*((f"--{n}", "none") for n in ("learning-rate", "batch-size", "epochs",
                                                               "keep-layers", "warmup-ratio")))),
         tune(*itertools.chain(*((f"--{n}", "none") for n in ("learning-rate", "batch-size", "keep-layers",
                                                               "warmup-ratio")))),
         "nothing to tune: give at least one of"),
    Case("tune-values", tune("--keep-layers", "3,4,12"), tune("--keep-layers", "3,4,6"),
         "trials can draw --keep-layers 12, which `sentitune train` refuses (--keep-layers 12 exceeds the "
         "embedded model's 6 layers; pass at most 6); narrow --keep-layers"),
    Case("tune-values", tune("--warmup-ratio", "0:1"), tune("--warmup-ratio", "0:0.5"),
         f"trials can draw --warmup-ratio 1.0, which `sentitune train` refuses ({train_says('--warmup-ratio', '1.0')})"),
    Case("tune-values", tune("--epochs", "0:3"), tune("--epochs", "1:3"),
         f"trials can draw --epochs 0, which `sentitune train` refuses ({train_says('--epochs', '0')})"),
    # the target
    Case("catalog-file", submit("--catalog", str(REPO / "README.md")), submit("--catalog", str(CATALOG_FILE)),
         "cannot read the machine catalog"),
    Case("project-id", deploy("--project", "My_Project"), deploy("--project", "my-project-1"),
         "is not a Google Cloud project ID (6-30 of a-z, 0-9, -)"),
    Case("project-id", build("--project", "My_Project"), build("--project", "my-project-1"),
         "is not a Google Cloud project ID"),
    Case("region-form", submit("--region", "Europe"), submit("--region", "europe-west4"),
         "is not a region name such as europe-west4"),
    Case("region-listed", submit("--region", "europe-west99", "--accelerator-type", "none"),
         submit("--region", "europe-west12", "--accelerator-type", "none"),
         "--region europe-west99 is not a Vertex AI region in the catalog"),
    Case("region-listed", deploy("--region", "europe-west99"), deploy("--region", "europe-west99", "--allow-unlisted"),
         "pass --catalog FILE listing it, or --allow-unlisted"),
    Case("run-dir", deploy(run="./runs/r1"), deploy(run=RUN),
         "Vertex AI reads models from Cloud Storage: copy it with `gcloud storage cp -r ./runs/r1"),
    Case("run-dir", batch("--registered-model", "12"), batch("--registered-model", "12", run=None),
         "pass RUN_DIR or --registered-model, not both"),
    Case("batch-inputs", batch(inputs=(f"{B}/posts/a.parquet",)), batch(inputs=(f"{B}/posts/a.csv",)),
         "is not JSONL or CSV by its name; rename it or pass --instances-format"),
    Case("batch-output", batch(out="out/"), batch(out=f"{B}/out/"), "is not on Cloud Storage; pass gs://…"),
    Case("display-name", submit("--display-name", LONG), submit("--display-name", LONG[1:]),
         "--display-name is 129 characters long; Vertex AI takes at most 128: pass a shorter --display-name"),
    Case("display-name", tune("--display-name", LONG), tune("--display-name", LONG[1:]), "at most 128"),
    Case("display-name", deploy("--display-name", LONG), deploy("--display-name", LONG[1:]), "at most 128"),
    Case("display-name", batch("--display-name", LONG), batch("--display-name", LONG[1:]), "at most 128"),
    Case("display-name", deploy(run=f"{B}/runs/{LONG[:120]}"), deploy(run=f"{B}/runs/{LONG[:118]}"),
         "--display-name is 130 characters long"),  # the default: sentitune-RUN
    # the machine and its GPUs
    Case("machine-form", submit("--machine-type", "N1 standard 4"), submit("--machine-type", "n1-standard-4"),
         "is not a Vertex AI machine type such as n1-standard-4"),
    Case("machine-listed", submit("--machine-type", "n1-standard-2"), submit("--machine-type", "n1-standard-4"),
         "its n1-standard-* machines for training are n1-standard-4, n1-standard-8"),
    Case("machine-listed", submit("--machine-type", "e2-micro", "--accelerator-type", "none"),
         submit("--machine-type", "e2-standard-4", "--accelerator-type", "none"), "--allow-unlisted"),
    Case("machine-listed", deploy("--machine-type", "n1-standard-1"), deploy("--machine-type", "n1-standard-2"),
         "its n1-standard-* machines for serving are n1-standard-2"),
    Case("machine-listed", batch("--machine-type", "e2-micro"), batch("--machine-type", "e2-standard-2"),
         "--machine-type 'e2-micro' is not in the catalog's serving machine types"),
    Case("machine-architecture", submit(*ARM, "--accelerator-count", "4"),
         submit("--region", "us-central1", "--machine-type", "a4-highgpu-8g", "--accelerator-type", "NVIDIA_B200",
                "--accelerator-count", "8"),
         "a4x-highgpu-4g is an Arm (arm64) machine and sentitune's images are built for amd64 only"),
    Case("machine-architecture", submit(*ARM, "--accelerator-count", "4", "--image-uri", "us-docker.pkg.dev/p/r/arm:1"),
         submit(*ARM, "--accelerator-count", "4", "--image-uri", "us-docker.pkg.dev/p/r/arm:1", "--allow-unlisted"),
         "if the image is built for linux/arm64, pass --allow-unlisted"),
    Case("accelerator-count", submit("--accelerator-count", "0"), submit("--accelerator-count", "1"),
         "--accelerator-count must be at least 1 with a GPU, got 0"),
    Case("gpu-listed", submit("--accelerator-type", "NVIDIA_TESLA_K80"), submit("--accelerator-type", "NVIDIA_TESLA_T4"),
         "--accelerator-type 'NVIDIA_TESLA_K80' is unknown"),
    Case("gpu-listed", deploy("--accelerator-type", "nvidia_l4"), deploy("--accelerator-type", "None"),
         "--accelerator-type 'nvidia_l4' is unknown"),  # 'none', in any case: CPU serving
    Case("gpu-machine", submit("--accelerator-count", "3"), submit("--accelerator-count", "2"),
         "n1-standard-4 takes 1, 2 or 4 x NVIDIA_TESLA_T4, not 3: pass --accelerator-count 1"),
    Case("gpu-machine", submit(*H100_8, "--accelerator-count", "2"), submit(*H100_8, "--accelerator-count", "8"),
         "a3-highgpu-8g comes with 8 x NVIDIA_H100_80GB: pass --accelerator-count 8"),
    Case("gpu-machine", deploy(*H100_8, "--accelerator-count", "9", "--backend", "torch"),
         deploy(*H100_8, "--accelerator-count", "2", "--backend", "torch"),
         "a3-highgpu-8g serves with 1 to 8 x NVIDIA_H100_80GB per replica, not 9"),
    Case("gpu-region", submit("--region", "asia-south1", "--accelerator-type", "NVIDIA_TESLA_V100"),
         submit("--region", "asia-east1", "--accelerator-type", "NVIDIA_TESLA_V100"),
         "NVIDIA_TESLA_V100 is not offered for training in asia-south1"),
    Case("gpu-region", deploy("--region", "us-west2", "--machine-type", "g2-standard-4", "--accelerator-type",
                              "NVIDIA_L4", "--backend", "torch"),
         deploy("--region", "us-west1", "--machine-type", "g2-standard-4", "--accelerator-type", "NVIDIA_L4",
                "--backend", "torch"),
         "NVIDIA_L4 is not offered for serving in us-west2"),
    Case("gpu-image", submit("--accelerator-type", "NVIDIA_TESLA_P100"),
         submit("--accelerator-type", "NVIDIA_TESLA_P100", "--image-uri", "europe-docker.pkg.dev/p/r/cu126:1"),
         "build an image on a CUDA 12.6 base (see the Dockerfile) and pass --image-uri"),
    Case("serving-backend", deploy("--machine-type", "g2-standard-8", "--accelerator-type", "NVIDIA_L4"),
         deploy("--machine-type", "g2-standard-8", "--accelerator-type", "NVIDIA_L4", "--backend", "torch"),
         "with --accelerator-type pass --backend torch"),
    Case("deploy-replicas", deploy("--min-replicas", "0"), deploy("--min-replicas", "1"),
         "--min-replicas must be at least 1, got 0"),
    Case("deploy-replicas", deploy("--max-replicas", "0"), deploy("--max-replicas", "1"),
         "--max-replicas 0 is below --min-replicas 1"),
    Case("batch-replicas", batch("--starting-replica-count", "0"), batch("--starting-replica-count", "1"),
         "--starting-replica-count must be at least 1, got 0"),
    Case("batch-request-size", batch("--instances-per-request", "0"), batch("--instances-per-request", "1"),
         "--instances-per-request must be at least 1, got 0"),
    Case("batch-posts", batch("--posts", "0"), batch("--posts", "1"), "--posts must be at least 1, got 0"),
    Case("same-region", batch("--registered-model", "projects/p/locations/us-central1/models/5", run=None),
         batch("--registered-model", "projects/p/locations/europe-west4/models/5", run=None),
         "is in us-central1 and the request goes to europe-west4: Vertex AI uses a model only in its own region; "
         "pass --region us-central1"),
    Case("same-region", deploy("--endpoint", "projects/p/locations/us-east1/endpoints/9"),
         deploy("--endpoint", "projects/p/locations/europe-west4/endpoints/9"), "pass --region us-east1"),
    # the job's fields
    Case("tensorboard", submit("--tensorboard", "tb/77", *SA), submit("--tensorboard", "77", *SA),
         "is not a TensorBoard ID or a resource name"),
    Case("experiment", submit("--experiment", "Tweets_2026", *SA), submit("--experiment", "tweets-2026", *SA),
         "is not an experiment name"),
    Case("service-account", submit("--service-account", "trainer"), submit(*SA),
         "--service-account 'trainer' is not a service account's email; pass e.g. "
         "NAME@sentiment-lab-1.iam.gserviceaccount.com"),
    Case("service-account", deploy("--service-account", "trainer"), deploy(*SA), "is not a service account"),
    Case("service-account", batch("--service-account", "me@gmail.com"),
         batch("--service-account", f"{PROJECT}@appspot.gserviceaccount.com"), "is not a service account"),
    Case("replica-count", submit("--replica-count", "0"), submit("--replica-count", "2"),
         "--replica-count must be at least 1, got 0"),
    Case("base-output-dir", submit("--base-output-dir", "/tmp/out"), submit("--base-output-dir", f"{B}/out"),
         "--base-output-dir must be a gs:// folder"),
    Case("env", submit("--env", "MY-VAR=1"), submit("--env", "MY_VAR=1"),
         "'MY-VAR' is not an environment variable name Vertex AI takes (a C identifier"),
    Case("env", submit("--env", "MYVAR"), submit("--env", "MYVAR="), "--env 'MYVAR' is not KEY=VALUE"),
    Case("bucket-name", submit(train=["--data", "gs://My_Bucket/data"]), submit(train=["--data", "gs://my_bucket/data"]),
         "'My_Bucket' cannot be a Cloud Storage bucket"),
    Case("bucket-name", submit("--base-output-dir", "gs://"), submit("--base-output-dir", "gs://abc"),
         "--base-output-dir gs:// names no bucket; pass gs://BUCKET/…"),
    Case("bucket-name", batch(out="gs://ab/out"), batch(out="gs://abc/out"), "'ab' cannot be a Cloud Storage bucket"),
    Case("image-uri", submit("--image-uri", "europe-docker.pkg.dev/p/r/my image:1"),
         submit("--image-uri", "europe-docker.pkg.dev/p/r/my-image:1"), "is not a container image reference"),
    Case("image-uri", submit("--image-uri", ""), submit(), "--image-uri '' is not a container image reference"),
    Case("image-uri", deploy("--repository", "My Repo"), deploy("--repository", "my-repo"),
         "is not an Artifact Registry repository ID"),
    Case("image-uri", build("--image-uri", "Reg.example/T/Img:1"), build("--image-uri", "reg.example/t/img:1"),
         "is not a container image reference"),
    # the training arguments
    Case("train-parse", submit(train=[*WALKTHROUGH, "--epoks", "3"]), submit(train=[*WALKTHROUGH, "--epochs", "3"]),
         "unknown training arguments after --: --epoks 3"),
    Case("train-parse", submit(train=[*WALKTHROUGH, "--epochs", "three"]), submit(train=[*WALKTHROUGH, "--epochs", "3"]),
         "the training arguments after -- do not parse (argument --epochs: invalid int value: 'three')"),
    Case("train-paths", submit(train=["--training-file", "data/train.csv"]),
         submit(train=["--training-file", f"{B}/data/train.csv"]), "pass gs://… or /gcs/BUCKET/…"),
    Case("train-data", submit(train=["--epochs", "3"]), submit(train=["--epochs", "3", *DATA]),
         "no training data: pass -- --training-file gs://… (or --data gs://…)"),
    Case("train-output", submit(out=False), submit(out=False, train=[*WALKTHROUGH, "--job-dir", f"{B}/run"]),
         "nowhere to save the model: pass --base-output-dir gs://…"),
    Case("train-options", submit(train=[*WALKTHROUGH, "--epochs", "0"]), submit(train=[*WALKTHROUGH, "--epochs", "1"]),
         f"the training arguments after -- fail `sentitune train`'s own checks: {train_says('--epochs', '0')}"),
    Case("train-options", submit(train=[*WALKTHROUGH, "--max-length", "1024"]),
         submit(train=[*WALKTHROUGH, "--max-length", "512"]), train_says("--max-length", "1024")),
    Case("train-model", submit(train=[*WALKTHROUGH, "--model", "./my-model"]),
         submit(train=[*WALKTHROUGH, "--model", f"{B}/models/my-model"]),
         "copy the folder to gs://BUCKET/… and pass that"),
    Case("train-layers", submit(train=[*WALKTHROUGH, "--keep-layers", "12"]),
         submit(train=[*WALKTHROUGH, "--keep-layers", "6"]),
         "-- --keep-layers 12 exceeds the embedded model's 6 layers; pass at most 6"),
    Case("train-layers", submit(train=[*WALKTHROUGH, "--keep-layers", "3", "--freeze-layers", "4"]),
         submit(train=[*WALKTHROUGH, "--keep-layers", "3", "--freeze-layers", "3"]),
         "-- --freeze-layers 4 exceeds the 3 layers trained; pass at most 3"),
    Case("train-precision", submit(train=[*WALKTHROUGH, "--precision", "bf16"]),
         submit(train=[*WALKTHROUGH, "--precision", "fp16"]),
         "-- --precision bf16: NVIDIA_TESLA_T4, compute capability 7.5, has no native bf16 (it needs compute "
         "capability 8.0 or newer); use --precision fp16 (with a gradient scaler) or auto"),
    Case("train-precision", submit("--env", "SENTITUNE_PRECISION=bf16"),
         submit("--env", "SENTITUNE_PRECISION=bf16", "--machine-type", "g2-standard-8", "--accelerator-type",
                "NVIDIA_L4"),
         "SENTITUNE_PRECISION=bf16: NVIDIA_TESLA_T4, compute capability 7.5, has no native bf16"),
    Case("train-device", submit("--accelerator-type", "none", train=[*WALKTHROUGH, "--device", "cuda"]),
         submit(train=[*WALKTHROUGH, "--device", "cuda"]),
         "-- --device cuda: the job has no GPU (--accelerator-type none)"),
    Case("batch-divides", submit("--replica-count", "3"), submit("--replica-count", "2"),
         "-- --batch-size 128 does not divide by the job's 3 training processes"),
    Case("timeout", submit("--timeout", "soon"), submit("--timeout", "2h30m"),
         "--timeout 'soon' is not a duration; use e.g. 90m, 2h or 7200 (seconds)"),
    # Cloud Build
    Case("build-timeout", build("--build-timeout", "25h"), build("--build-timeout", "2h30m"),
         "over Cloud Build's limit of 24 hours; pass 24h or less"),
    Case("build-timeout", build("--build-timeout", "an hour"), build("--build-timeout", "PT1H"),
         "--build-timeout 'an hour' is not a duration"),
    Case("build-machine", build("--build-machine-type", "e2-standard-4"), build("--build-machine-type", "e2-highcpu-32"),
         "choose one of e2-highcpu-8, e2-highcpu-32, e2-medium, n1-highcpu-8, n1-highcpu-32"),
    Case("build-source", build("--source", str(REPO / "docs")), build("--source", str(REPO)),
         "not found: run from a sentitune source checkout or pass --source DIR"),
]  # fmt: skip

CATALOG_RULES = {"region-listed", "machine-listed", "gpu-listed", "gpu-region"}


def case_id(case: Case) -> str:
    return f"{case.rule}:{case.refused[1]}:{CASES.index(case)}"


def test_every_rule_has_a_refused_and_an_accepted_case():
    covered = {case.rule for case in CASES}
    assert covered == {rule.name for rule in rules.RULES}, "a rule without a case, or a case without a rule"
    for rule in rules.RULES:  # every command a rule serves is held by some case of that rule
        commands = {case.refused[1] for case in CASES if case.rule == rule.name}
        assert commands & rule.commands, rule.name


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_a_rule_refuses_one_request_and_accepts_its_near_twin(case, vertex, capsys):
    refused = list(case.refused)
    if refused[1] != "build":  # the real run, pointed at the stand-in: refused before anything is sent
        refused.insert(2, f"--api-endpoint={vertex.url}")
    else:
        refused.append("--dry-run")
    message = cli_error(capsys, *refused)
    assert case.says in message, message
    assert message.startswith(f"invalid {refused[1]} options: ")
    assert vertex.requests == []
    if case.rule in CATALOG_RULES:
        assert "--catalog FILE" in message and "--allow-unlisted" in message, message

    code, out, err = cli(capsys, *case.accepted[:2], "--dry-run", *case.accepted[2:])
    assert code == 0, err
    assert json.loads(out)


def test_the_walkthroughs_job_and_a_multi_node_job_are_accepted(capsys):
    code, out, err = cli(capsys, *submit("--dry-run"))
    assert code == 0, err
    pool = json.loads(out)["custom_job"]["customJob"]["jobSpec"]["workerPoolSpecs"][0]
    assert pool["machineSpec"] == {
        "machineType": "n1-standard-4",
        "acceleratorType": "NVIDIA_TESLA_T4",
        "acceleratorCount": 1,
    }
    assert pool["containerSpec"]["args"] == WALKTHROUGH and "--epochs=10" in WALKTHROUGH
    multi = [
        "--replica-count",
        "2",
        "--accelerator-count",
        "2",
        "--machine-type",
        "n1-standard-8",
        "--dry-run",
    ]
    code, out, err = cli(capsys, *submit(*multi, train=[*DATA, "--batch-size", "128"]))
    assert code == 0, err
    pools = json.loads(out)["custom_job"]["customJob"]["jobSpec"]["workerPoolSpecs"]
    assert [p["replicaCount"] for p in pools] == ["1", "1"]


def test_what_the_rules_newly_accept_is_sent_exactly(gs_run, walkthrough_data, vertex, capsys):
    """Past the rules, the request reaches the REST stand-in as the options say: part of an
    accelerator-optimized machine's GPUs for serving, and a machine Google added since the catalog's date
    with --allow-unlisted, a C-identifier env var and a gcloud duration."""
    from google.cloud.aiplatform_v1 import types

    h100s = [
        "--machine-type",
        "a3-highgpu-8g",
        "--accelerator-type",
        "NVIDIA_H100_80GB",
        "--accelerator-count",
        "2",
    ]
    code, _, err = cli(capsys, *deploy(*h100s, "--backend", "torch", "--region", "europe-west4",
                                       "--api-endpoint", vertex.url, run=gs_run))  # fmt: skip
    assert code == 0, err
    upload, _, deployed = vertex.requests
    assert upload["body"]["model"]["containerSpec"]["args"] == ["serve", "--backend", "torch"]
    assert deployed["path"] == f"/v1/{PARENT}/endpoints/222:deployModel"
    h100 = types.AcceleratorType.NVIDIA_H100_80GB.value  # the REST client sends enums as numbers
    assert deployed["body"]["deployedModel"]["dedicatedResources"] == {
        "machineSpec": {"machineType": "a3-highgpu-8g", "acceleratorType": h100, "acceleratorCount": 2},
        "minReplicaCount": 1,
        "maxReplicaCount": 1,
    }

    vertex.requests.clear()
    options = ["--machine-type", "n4-standard-8", "--accelerator-type", "none", "--allow-unlisted",
               "--env", "MY_VAR=a=b", "--timeout", "2h30m", "--api-endpoint", vertex.url]  # fmt: skip
    code, _, err = cli(capsys, *submit(*options, train=WALKTHROUGH))
    assert code == 0, err
    (sent,) = vertex.requests
    spec = as_sent(sent["body"])["jobSpec"]
    (pool,) = spec["workerPoolSpecs"]
    assert pool["machineSpec"] == {"machineType": "n4-standard-8"}
    assert pool["containerSpec"]["env"][0] == {"name": "MY_VAR", "value": "a=b"}
    assert spec["scheduling"] == {"timeout": "9000s"}
    assert spec["baseOutputDirectory"] == {"outputUriPrefix": f"{B}/jobs/n"}


def test_tune_checks_every_value_a_trial_can_draw_with_trains_own_validation(capsys):
    """The ends of each range and each listed value, appended as Vertex AI appends them."""
    message = cli_error(
        capsys, *tune("--keep-layers", "2,7", "--epochs", "0:2", "--learning-rate", "1e-5:1e-3", "--dry-run")
    )
    assert message.startswith("invalid tune options: trials can draw --epochs 0, which")
    assert (
        "trials can draw --keep-layers 7, which `sentitune train` refuses (--keep-layers 7 exceeds" in message
    )
    assert "--learning-rate" not in message  # both ends of this range pass train
    code, out, err = cli(
        capsys, *tune("--keep-layers", "2,6", "--epochs", "1:2", "--learning-rate", "1e-5:1e-3", "--dry-run")
    )
    assert code == 0, err
    trial = json.loads(out)["hyperparameter_tuning_job"]["hyperparameterTuningJob"]["trialJobSpec"]
    assert (
        trial["workerPoolSpecs"][0]["containerSpec"]["args"] == DATA
    )  # the tuned values are Vertex AI's to add
    # the tuned values replace what the arguments say: an invalid fixed value that every trial overrides is fine
    code, _, err = cli(capsys, *tune("--epochs", "1:2", "--dry-run", train=[*DATA, "--epochs", "0"]))
    assert code == 0, err
    message = cli_error(capsys, *tune("--epochs", "none", "--dry-run", train=[*DATA, "--epochs", "0"]))
    assert train_says("--epochs", "0") in message


def test_the_refusal_is_trains_own(capsys):
    """Not a copy of train's checks: the cloud refusal carries the very message `sentitune train` gives."""
    code, _, err = cli(capsys, "train", "--data", "d", "--warmup-ratio", "1.5", "--dry-run")
    local = err.strip().splitlines()[-1].removeprefix("error: invalid train options: ")
    message = cli_error(capsys, *submit("--dry-run", train=[*WALKTHROUGH, "--warmup-ratio", "1.5"]))
    assert code == 2 and local in message


def test_allow_unlisted_accepts_what_google_added_since_and_keeps_the_stated_rules(capsys):
    unlisted = ["--region", "europe-west99", "--machine-type", "n4-standard-8", "--accelerator-type", "none"]
    message = cli_error(capsys, *submit(*unlisted, "--dry-run"))
    assert message.count("--allow-unlisted") == 2  # the region, the machine
    code, out, err = cli(capsys, *submit(*unlisted, "--allow-unlisted", "--dry-run"))
    assert code == 0, err
    spec = json.loads(out)["custom_job"]["customJob"]["jobSpec"]["workerPoolSpecs"][0]["machineSpec"]
    assert spec == {"machineType": "n4-standard-8"}
    message = cli_error(capsys, *submit("--accelerator-count", "3", "--allow-unlisted", "--dry-run"))
    assert "n1-standard-4 takes 1, 2 or 4 x NVIDIA_TESLA_T4, not 3" in message  # a listed fact still holds


def test_durations_read_as_gcloud_reads_them():
    for text, seconds in [("7200", 7200), ("90m", 5400), ("2h30m", 9000), ("1d", 86400), ("PT2H30M", 9000),
                          ("P1DT1H", 90000), ("1.5h", 5400), ("3600s", 3600)]:  # fmt: skip
        assert rules.parse_duration(text) == seconds, text
    for text in ("soon", "2x", "h2", "P1M", "0", "-5m", ""):
        with pytest.raises(rules.SentituneError):
            rules.parse_duration(text)


# ----------------------------------------------------------------------------- counts, generated

COUNTS = (0, -1, 2**70, 1)
TRAIN_COUNTS = ("--epochs", "--batch-size", "--max-length", "--keep-layers", "--freeze-layers", "--max-steps")
COMMANDS = {
    "submit": (SubmitConfig, submit),
    "tune": (TuneConfig, tune),
    "deploy": (DeployConfig, deploy),
    "batch-predict": (BatchPredictConfig, batch),
    "build": (BuildConfig, build),
}


def count_options(config) -> list[str]:
    import typing

    hints = typing.get_type_hints(config)
    return ["--" + f.name.replace("_", "-") for f in fields(config) if _base_type(hints[f.name]) is int]


def count_requests(command: str) -> list[list[str]]:
    """Each numeric option at each count alone, all of them at each count, and a seeded sample of mixes;
    `submit` and `tune` with train's own counts after -- too."""
    config, request = COMMANDS[command]
    options = count_options(config)
    train = TRAIN_COUNTS if command in ("submit", "tune") else ()
    names = [*options, *train]
    mixes = [{name: value} for name in names for value in COUNTS]
    mixes += [dict.fromkeys(names, value) for value in COUNTS]
    pick = random.Random(command)
    mixes += [{name: pick.choice(COUNTS) for name in names} for _ in range(40)]
    found = []
    for mix in mixes:
        given = [x for name, value in mix.items() if name in options for x in (name, str(value))]
        after = [x for name, value in mix.items() if name in train for x in (name, str(value))]
        argv = request(*given)
        if after:
            argv = [*argv, *after]
        found.append(argv)
    return found


@pytest.mark.parametrize("command", list(COMMANDS))
def test_no_count_ends_in_a_traceback(command, capsys):
    assert count_options(COMMANDS[command][0]) or command == "build"
    for argv in count_requests(command):
        code, out, err = cli(capsys, *argv[:2], "--dry-run", *argv[2:])
        if code == 0:
            assert json.loads(out), argv
            continue
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: invalid "), (argv, err)


def test_train_counts_are_trains_own_fields():
    names = {f.name for f in fields(TrainConfig)}
    assert {o[2:].replace("-", "_") for o in TRAIN_COUNTS} <= names


# ----------------------------------------------------------------------------- the docs' copy of the table


def test_the_docs_list_the_rules_as_the_table_has_them():
    text = (REPO / "docs" / "vertex-ai.md").read_text()
    assert rules.doc_section(text) == rules.markdown(), (
        "docs/vertex-ai.md is out of step with sentitune/cloud/rules.py: run "
        "`python -m sentitune.cloud.rules docs/vertex-ai.md`"
    )
    for rule in rules.RULES:
        assert rule.source and re.fullmatch(r"\d{4}-\d\d-\d\d", rule.read), rule.name
