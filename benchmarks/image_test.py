"""The CPU image built from the working tree and run as Vertex AI runs it. Prints one JSON object.

Starts a Docker engine if none is running (installing docker.io and debootstrap with apt where they are
missing; vfs storage, which works without a kernel overlay driver), builds a stand-in for
`python:3.11-slim` once with debootstrap (Docker Hub may be out of reach; it is cached as an image), builds
`Dockerfile.cpu` on it, then in containers on the host's network, every address 127.0.0.1:

- `sentitune prepare` on the embedded tweets, then the training entrypoint exactly as Vertex AI calls it
  (`python -m sentitune.launch ARGS` with AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR
  set) trains a few steps of the embedded MiniLM and leaves a complete run folder;
- two replicas as two containers, with the CLUSTER_SPEC / MASTER_ADDR / MASTER_PORT / RANK / WORLD_SIZE
  that Vertex AI gives a two-machine job, train together and end with one process's weights (a
  BERT-Tiny-sized random model with dropout off, fp32), in one run folder;
- SIGTERM (what Vertex AI sends before a Spot VM is reclaimed) leaves a checkpoint and exit 143; a second
  container with the same arguments resumes and ends bit-identical to an uninterrupted run;
- `sentitune serve`, as `cloud deploy` starts it, answers AIP_HEALTH_ROUTE and AIP_PREDICT_ROUTE on
  AIP_HTTP_PORT with the model in AIP_STORAGE_URI: the Predictor's labels and scores, and 4xx for bad
  requests;
- Google's own serving harness, the Vertex AI SDK's `LocalModel` built from the very container spec
  `cloud deploy` uploads, deploys the image to a `LocalEndpoint` (the run folder as its artifact, the
  AIP_* variables set as Vertex AI sets them): `run_health_check` answers 200, `predict` answers the SDK's
  own request body with and without `parameters` with the Predictor's labels, and a bad request a 4xx;
- `gcloud ai custom-jobs local-run --executor-image-uri IMAGE -- ARGS` starts the training image as
  Vertex AI does (its entrypoint, the arguments after --) and `sentitune train --dry-run` checks them.

Any failed check ends in one line on stderr and exit 1. Needs root (the engine), about 8 GB of disk and
the SDK's prediction extra's Docker client (`pip install docker`, installed here where it is missing).

usage: python benchmarks/image_test.py [--cached] [--work DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import http.server
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STANDIN = "sentitune-standin/python:3.11-slim"
IMAGE = "sentitune-cpu:image-test"
PREFIX = "sentitune-image-test-"  # container names, removed at the end
TORCH_WHEEL = "torch-2.13.0+cpu-*.whl"
WHEELS_PORT = 47801
# BERT-Tiny sizes, fp32, few steps: the replica and resume comparisons are about the image, not the model.
TINY_ARGS = ["--data", "/vol/data", "--model", "/vol/tiny", "--precision", "fp32", "--batch-size", "16"]
TINY_ARGS += ["--train-eval-examples", "0", "--log-every", "10"]


class Failed(Exception):
    """A check that did not hold: one line for the user."""


def log(message: str) -> None:
    print(f"image-test: {message}", file=sys.stderr, flush=True)


def run(*cmd, timeout: float = 1800, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()
        raise Failed(f"{' '.join(map(str, cmd[:3]))} … exited {done.returncode}: {' | '.join(output[-8:])}")
    return done


class Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        log(f"{name} …")
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 1)
        log(f"{name}: {self.seconds[name]} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The engine and the images.


def start_engine() -> str:
    """The running engine's version, starting `dockerd` (and installing it) where needed."""
    if not shutil.which("dockerd") or not shutil.which("debootstrap"):
        log("installing docker.io and debootstrap")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run("apt-get", "install", "-y", "docker.io", "debootstrap", env=env, timeout=900)
    if run("docker", "info", check=False, timeout=60).returncode != 0:
        log("starting dockerd (vfs storage)")
        with open(Path(tempfile.gettempdir()) / "sentitune-dockerd.log", "ab") as out:
            subprocess.Popen(
                ["dockerd", "--storage-driver=vfs"], stdout=out, stderr=out, start_new_session=True
            )
        deadline = time.monotonic() + 90
        while run("docker", "info", check=False, timeout=60).returncode != 0:
            if time.monotonic() > deadline:
                raise Failed("dockerd did not answer within 90 s; see /tmp/sentitune-dockerd.log")
            time.sleep(1)
    return run("docker", "version", "--format", "{{.Server.Version}}").stdout.strip()


def image_exists(name: str) -> bool:
    return run("docker", "image", "inspect", name, check=False).returncode == 0


def image_mb(name: str) -> float:
    return round(int(run("docker", "image", "inspect", "--format", "{{.Size}}", name).stdout) / 1e6, 1)


def build_standin(work: Path) -> None:
    """Debian bookworm's Python 3.11 (python:3.11-slim's minor version) as an image named like it."""
    root = work / "standin-root"
    run("debootstrap", "--variant=minbase", "--include=python3,python3-pip,python3-venv,ca-certificates",
        "bookworm", root, timeout=1200)  # fmt: skip
    # This machine's CA bundle: the package index is reached through it.
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/certs/ca-certificates.crt")
    (root / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)  # the image's pip is its own
    for name, target in (("python", "/usr/bin/python3"), ("pip", "/usr/bin/pip3")):
        (root / "usr/local/bin" / name).symlink_to(target)
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    done = subprocess.run(
        ["docker", "import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]', "-", STANDIN],
        stdin=tar.stdout,
        capture_output=True,
        text=True,
    )
    tar.wait()
    if done.returncode != 0 or tar.returncode != 0:
        raise Failed(f"docker import of the stand-in base failed: {done.stderr.strip()}")
    shutil.rmtree(root)


def torch_wheels() -> Path | None:
    """A folder holding the CPU torch wheel (SENTITUNE_TORCH_WHEELS, else pip's find-links), or None:
    then the build takes torch from PyTorch's index, as a user's does."""
    candidates = [os.environ.get("SENTITUNE_TORCH_WHEELS", "")]
    found = run(sys.executable, "-m", "pip", "config", "get", "global.find-links", check=False)
    candidates += found.stdout.split()
    for folder in filter(None, candidates):
        if list(Path(folder).glob(TORCH_WHEEL)):
            return Path(folder)
    return None


@contextlib.contextmanager
def serving(folder: Path):
    """The folder over HTTP on 127.0.0.1 (pip's --find-links in the build): no extra layer in the image."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    try:  # one port, so the URL (a build argument) and with it the build cache stay the same between runs
        server = http.server.ThreadingHTTPServer(("127.0.0.1", WHEELS_PORT), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def build_image(cached: bool) -> str:
    """Builds Dockerfile.cpu from the working tree; returns where torch came from."""
    wheels = torch_wheels()
    with serving(wheels) if wheels else contextlib.nullcontext(None) as links:
        args = ["docker", "build", "--network", "host", "--file", REPO / "Dockerfile.cpu", "--tag", IMAGE]
        args += ["--build-arg", f"BASE_IMAGE={STANDIN}"] + ([] if cached else ["--no-cache"])
        if links:
            args += ["--build-arg", f"TORCH_FIND_LINKS={links}"]
        # The classic builder: BuildKit needs the buildx plugin, which a distribution's engine may lack.
        run(*args, REPO, env={**os.environ, "DOCKER_BUILDKIT": "0"}, timeout=3600)
    return str(wheels) if wheels else "https://download.pytorch.org/whl/cpu"


# Containers.


def container(name: str, *args, env: dict | None = None, entrypoint: str | None = None, detach=False):
    """`docker run` of the image on the host network with the work folder at /vol."""
    cmd = ["docker", "run", "--name", PREFIX + name, "--network", "host", "-v", f"{WORK}:/vol"]
    cmd += ["--detach"] if detach else []
    for key, value in (env or {}).items():
        cmd += ["--env", f"{key}={value}"]
    if entrypoint:
        cmd += ["--entrypoint", entrypoint]
    done = run(*cmd, IMAGE, *args, check=False, timeout=1800)
    if not detach:
        run("docker", "rm", PREFIX + name, check=False)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            raise Failed(f"container {name} exited {done.returncode}: {' | '.join(lines[-6:])}")
    return done


def wait(name: str, timeout: float = 900) -> tuple[int, str]:
    """A detached container's exit code and log, the container removed."""
    code = int(run("docker", "wait", PREFIX + name, timeout=timeout).stdout.strip())
    logs = run("docker", "logs", PREFIX + name, check=False)
    run("docker", "rm", PREFIX + name, check=False)
    return code, logs.stdout + logs.stderr


def remove_containers() -> None:
    names = run("docker", "ps", "-aq", "--filter", f"name={PREFIX}", check=False).stdout.split()
    if names:
        run("docker", "rm", "-f", *names, check=False)


def vertex_env(folder: str) -> dict:
    """The variables Vertex AI sets in a custom job whose base output directory is /vol/FOLDER."""
    return {
        "AIP_MODEL_DIR": f"/vol/{folder}/model",
        "AIP_CHECKPOINT_DIR": f"/vol/{folder}/checkpoints",
        "AIP_TENSORBOARD_LOG_DIR": f"/vol/{folder}/logs",
    }


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def max_difference(a: dict, b: dict) -> float:
    if a.keys() != b.keys():
        raise Failed(f"the runs' weights have different tensors: {sorted(a.keys() ^ b.keys())[:4]}")
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


# The checks.

RUN_FOLDER = ["config.json", "model.safetensors", "tokenizer.json", "run_config.json", "metrics.json"]


def check_vertex_training(timer: Timer) -> dict:
    with timer("prepare (embedded tweets)"):
        container("prepare", "prepare", "--output-dir", "/vol/data", entrypoint="sentitune")
    with timer("train as Vertex AI calls it (MiniLM, 4 steps)"):
        done = container(
            "train", "--data", "/vol/data", "--preset", "fast", "--max-steps", "4", "--eval-every", "4",
            "--train-eval-examples", "0", env=vertex_env("vertex"),
        )  # fmt: skip
    model = WORK / "vertex/model"
    # The embedded MiniLM trains mean-pooled: the folder carries the code plain transformers needs for that.
    missing = [name for name in [*RUN_FOLDER, "modeling_sentitune.py"] if not (model / name).exists()]
    if missing:
        raise Failed(f"the run folder in AIP_MODEL_DIR lacks {', '.join(missing)}")
    if not list((WORK / "vertex/logs").rglob("events.out.tfevents.*")):
        raise Failed("no TensorBoard events in AIP_TENSORBOARD_LOG_DIR")
    if "sentitune.launch: " not in done.stderr:
        raise Failed("the entrypoint did not go through sentitune.launch")
    metrics = json.loads((model / "metrics.json").read_text())
    return {
        "run_folder": sorted(p.name for p in model.iterdir()),
        "test_examples": metrics["test"]["examples"],
    }


def tiny_model() -> None:
    """BERT-Tiny's shape with random weights and the real vocabulary, dropout off (ranks would draw other
    masks than one process does)."""
    from transformers.utils import logging as hf_logging

    from sentitune.builtin import build_random_bert

    hf_logging.disable_progress_bar()
    folder = WORK / "tiny"
    build_random_bert(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (folder / "config.json").write_text(json.dumps(config))


def check_two_replicas(timer: Timer) -> dict:
    steps = ["--max-steps", "8", "--eval-every", "4"]
    with timer("one replica (BERT-Tiny size, 8 steps)"):
        container("one", *TINY_ARGS, *steps, env=vertex_env("one"))
    with timer("two replicas as two containers (8 steps)"):
        port, workers = free_port(), [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
        for rank in (0, 1):
            spec = {
                "cluster": {"workerpool0": workers[:1], "workerpool1": workers[1:]},
                "task": {"type": f"workerpool{rank}", "index": 0},
            }
            env = {
                **vertex_env("two"),
                "CLUSTER_SPEC": json.dumps(spec),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "RANK": str(rank),
                "WORLD_SIZE": "2",
                "GLOO_SOCKET_IFNAME": "lo",  # the loopback, never another address
                "OMP_NUM_THREADS": "1",  # two containers on two cores
            }
            container(f"replica{rank}", *TINY_ARGS, *steps, env=env, detach=True)
        results = [wait(f"replica{rank}") for rank in (0, 1)]
    for rank, (code, output) in enumerate(results):
        if code != 0:
            raise Failed(f"replica {rank} exited {code}: {' | '.join(output.strip().splitlines()[-6:])}")
    if "distributed: 2 processes (gloo)" not in results[0][1]:
        raise Failed("the two replicas did not train as one job of 2 processes")
    one, two = WORK / "one/model", WORK / "two/model"
    difference = max_difference(weights(one), weights(two))
    if difference > 2e-5:
        raise Failed(f"two replicas end {difference:.2e} away from one process's weights (allowed 2e-5)")
    m1, m2 = (json.loads((f / "metrics.json").read_text()) for f in (one, two))
    if m1["val"]["confusion_matrix"] != m2["val"]["confusion_matrix"]:
        raise Failed("two replicas' validation confusion matrix differs from one process's")
    folders = sorted(p.name for p in (WORK / "two").iterdir())
    if folders != ["logs", "model"]:
        raise Failed(f"two replicas left {folders} in their output, not one run folder and its logs")
    return {"max_weight_difference": difference, "processes": m2["training"]["processes"]}


def check_sigterm_and_resume(timer: Timer) -> dict:
    steps = ["--max-steps", "1500", "--eval-every", "1500", "--log-every", "20"]
    with timer("uninterrupted (1500 steps)"):
        container("whole", *TINY_ARGS, *steps, env=vertex_env("whole"))
    with timer("SIGTERM mid-run"):
        container("stopped", *TINY_ARGS, *steps, env=vertex_env("spot"), detach=True)
        deadline = time.monotonic() + 300
        while " step 100: " not in run("docker", "logs", PREFIX + "stopped", check=False).stderr:
            if time.monotonic() > deadline:
                raise Failed("training did not reach step 100 within 300 s")
            time.sleep(0.2)
        run("docker", "kill", "--signal", "TERM", PREFIX + "stopped")
        code, output = wait("stopped")
    if code != 143:
        raise Failed(f"SIGTERM ended training with exit {code}, not 143: {output.strip().splitlines()[-1:]}")
    checkpoints = sorted(p.name for p in (WORK / "spot/checkpoints").iterdir())
    if not checkpoints or (WORK / "spot/model/model.safetensors").exists():
        raise Failed(f"SIGTERM left checkpoints {checkpoints} and a model: expected a checkpoint only")
    with timer("resumed in a new container"):
        done = container("resumed", *TINY_ARGS, *steps, env=vertex_env("spot"))
    resumed = [line for line in done.stderr.splitlines() if "resuming from /vol/spot/checkpoints/" in line]
    if not resumed:
        raise Failed("the second container did not resume from the checkpoint")
    difference = max_difference(weights(WORK / "whole/model"), weights(WORK / "spot/model"))
    if difference != 0:
        raise Failed(
            f"the resumed run ends {difference:.2e} away from the uninterrupted one, not bit-identical"
        )
    return {"checkpoints": checkpoints, "resumed": resumed[0].strip()}


def request(url: str, body: bytes | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def check_serving(timer: Timer) -> dict:
    port = free_port()
    health, predict = "/v1/endpoints/1/deployedModels/2", "/v1/endpoints/1/deployedModels/2:predict"
    env = {
        "AIP_HTTP_PORT": str(port),
        "AIP_HEALTH_ROUTE": health,
        "AIP_PREDICT_ROUTE": predict,
        "AIP_STORAGE_URI": "/vol/vertex/model",
    }
    base = f"http://127.0.0.1:{port}"
    with timer("serve: healthy"):  # the command and arguments `cloud deploy` gives the container
        container("serve", "serve", "--backend", "torch", env=env, entrypoint="sentitune", detach=True)
        deadline = time.monotonic() + 180
        while True:
            try:
                if request(base + health)[0] == 200:
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                logs = run("docker", "logs", PREFIX + "serve", check=False).stderr.strip().splitlines()
                raise Failed(f"the server was not healthy within 180 s: {' | '.join(logs[-4:])}")
            time.sleep(0.5)
    texts = ["I love this so much", "worst service ever, never again", "the meeting is at 3pm"]
    with timer("serve: predict"):
        status, answer = request(base + predict, json.dumps({"instances": texts}).encode())
    if status != 200 or len(answer.get("predictions", [])) != len(texts):
        raise Failed(f"predict answered {status} {str(answer)[:200]}")
    from sentitune.scoring import Predictor

    expected = Predictor(str(WORK / "vertex/model")).predict(texts)
    for got, want in zip(answer["predictions"], expected, strict=True):
        apart = max(abs(got["scores"][name] - score) for name, score in want.scores.items())
        if got["label"] != want.label or apart > 1e-3:
            raise Failed(f"the container predicted {got}, the Predictor {want.label} {want.scores}")
    refusals = {}
    for name, body in (
        ("not JSON", b"{"),
        ("no instances", b'{"texts": []}'),
        ("a number", b'{"instances": [7]}'),
    ):
        refusals[name] = request(base + predict, body)[0]
    if not all(400 <= code < 500 for code in refusals.values()):
        raise Failed(f"bad requests were not refused with 4xx: {refusals}")
    run("docker", "kill", "--signal", "TERM", PREFIX + "serve")
    code, _ = wait("serve", timeout=60)
    return {"predictions": answer["predictions"], "bad_requests": refusals, "exit_after_sigterm": code}


def docker_client() -> None:
    """The Docker SDK that google-cloud-aiplatform[prediction] uses to start a LocalEndpoint's container."""
    if importlib.util.find_spec("docker") is None:
        log("installing the Docker SDK (google-cloud-aiplatform's prediction extra)")
        run(sys.executable, "-m", "pip", "install", "--quiet", "docker", timeout=600)
        importlib.invalidate_caches()


def check_local_model(timer: Timer) -> dict:
    """The image deployed by the Vertex AI SDK's LocalModel, from the container spec `cloud deploy` uploads."""
    from google.cloud.aiplatform.prediction import LocalModel

    from sentitune.cloud.config import DeployConfig
    from sentitune.cloud.deploy import upload_request
    from sentitune.scoring import Predictor

    deploy = DeployConfig(run_dir="gs://sentitune-image-test/vertex/model", project="sentitune-image-test",
                          image_uri=IMAGE, backend="torch")  # fmt: skip
    spec = upload_request(deploy).model.container_spec
    local = LocalModel(serving_container_spec=spec)
    texts = ["I love this so much", "worst service ever, never again", "the meeting is at 3pm"]
    expected = [p.label for p in Predictor(str(WORK / "vertex/model")).predict(texts)]
    found: dict = {"container_spec": {"command": list(spec.command), "args": list(spec.args)}}
    with timer("LocalModel: deployed and healthy"):
        endpoint = local.deploy_to_local_endpoint(
            artifact_uri=str(WORK / "vertex/model"), host_port=str(free_port()), container_ready_timeout=300
        )
        endpoint.serve()
    try:
        found["health"] = endpoint.run_health_check().status_code
        if found["health"] != 200:
            raise Failed(f"LocalEndpoint.run_health_check answered {found['health']}")
        headers = {"Content-Type": "application/json"}
        for name, body in (
            ("predict", {"instances": texts}),
            ("predict_with_parameters", {"instances": texts, "parameters": {"explain": False}}),
        ):
            with timer(f"LocalModel: {name}"):
                answer = endpoint.predict(request=json.dumps(body), headers=headers)
            labels = [p.get("label") for p in answer.json().get("predictions", [])] if answer.ok else None
            if answer.status_code != 200 or labels != expected:
                raise Failed(
                    f"LocalEndpoint.predict ({name}) answered {answer.status_code} {answer.text[:200]}"
                )
            found[name] = {"status": answer.status_code, "labels": labels}
        bad = endpoint.predict(request=json.dumps({"instances": [7]}), headers=headers)
        if not 400 <= bad.status_code < 500:
            raise Failed(f"LocalEndpoint.predict of a bad request answered {bad.status_code}, not 4xx")
        found["bad_request"] = bad.status_code
        found["labels_as_the_predictor"] = True
    finally:
        endpoint.stop()
    return found


def check_gcloud_local_run(timer: Timer) -> dict:
    """`gcloud ai custom-jobs local-run` with the built image and no package to build: the image's own
    entrypoint with the arguments after --, as a Vertex AI custom job runs it. The container has no data
    (local-run mounts none), so the check is that train itself answers: --epochs 0 is refused with train's
    own message. Where gcloud cannot start it (offline, no configuration), the JSON says why."""
    if shutil.which("gcloud") is None:
        return {"ran": False, "why": "gcloud is not installed"}
    args, refusal = ["--data", "/vol/none", "--epochs", "0"], "invalid train options: --epochs must be"
    with timer("gcloud ai custom-jobs local-run (train refuses --epochs 0)"):
        done = run("gcloud", "ai", "custom-jobs", "local-run", f"--executor-image-uri={IMAGE}", "--", *args,
                   check=False, timeout=600)  # fmt: skip
    said = (done.stdout + done.stderr).strip().splitlines()
    reached_train = any(refusal in line for line in said)
    found = {"ran": reached_train, "exit": done.returncode, "args": args, "last_lines": said[-3:]}
    if not reached_train:
        found["why"] = "gcloud did not start the image; its last lines say why"
    elif done.returncode == 0:
        raise Failed("train refused --epochs 0 in the local-run container, yet the run exited 0")
    return found


WORK = Path()


def main() -> None:
    global WORK
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cached", action="store_true", help="reuse the build cache (build time not comparable)"
    )
    parser.add_argument(
        "--work", help="folder for the containers' volume (default: a temporary one, removed)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from speedlib import machine_info

    timer = Timer()
    result: dict = {"benchmark": "image_test", "machine": machine_info()}
    with contextlib.ExitStack() as stack:
        WORK = Path(args.work or stack.enter_context(tempfile.TemporaryDirectory(prefix="sentitune-image-")))
        WORK.mkdir(parents=True, exist_ok=True)
        try:
            with timer("engine"):
                result["docker_server"] = start_engine()
            remove_containers()
            result["standin_cached"] = image_exists(STANDIN)
            if not result["standin_cached"]:
                with timer("stand-in base (debootstrap)"):
                    build_standin(WORK)
            with timer("build Dockerfile.cpu"):
                result["torch_from"] = build_image(args.cached)
            result["build_cache"] = args.cached
            result["base_mb"], result["image_mb"] = image_mb(STANDIN), image_mb(IMAGE)
            result["image_adds_mb"] = round(result["image_mb"] - result["base_mb"], 1)
            tiny_model()
            result["vertex_training"] = check_vertex_training(timer)
            result["two_replicas"] = check_two_replicas(timer)
            result["sigterm"] = check_sigterm_and_resume(timer)
            result["serving"] = check_serving(timer)
            docker_client()
            result["local_model"] = check_local_model(timer)
            result["gcloud_local_run"] = check_gcloud_local_run(timer)
        except Failed as exc:
            log(f"FAILED: {exc}")
            sys.exit(1)
        finally:
            remove_containers()
    result["seconds"] = timer.seconds
    result["total_s"] = round(sum(timer.seconds.values()), 1)
    result["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
