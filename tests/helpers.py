"""Helpers the tests share: real posts and files, the command line in-process, short training runs,
a server on a free loopback port, and the Cloud Storage and Vertex AI names the cloud tests use.
Fixtures live in conftest.py; test modules import what they need from here."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest

from sentitune import LABELS
from sentitune.cli import main

# The shared benchmark data sits beside the checkout (../shared), also in CI.
TWEETS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweets" / "train.csv"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SPLIT_FILES = (
    ".sentitune-output.json",
    "train.csv",
    "eval.csv",
    "test.csv",
    "labels.json",
    "prepare_report.json",
    "report.html",
)
PER_CLASS = 100  # rows per class in the sample frames: ~300 posts, enough to stratify 80/10/10
HOSTILE = ["<script>window.pwned = 1</script> great", '<img src=x onerror="window.pwned = 2"> awful']


# ----------------------------------------------------------------------------- real posts


def require_shared(*paths: Path) -> None:
    """Tests on ../shared data skip where it is missing, except in CI (CI=true), where they fail."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        message = f"shared tweet data not found: {', '.join(missing)}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + " (CI must run every test)")
        pytest.skip(message)


def clean(texts: pd.Series) -> pd.Series:
    """Texts as prepare writes them: line breaks as LF, surrounding whitespace stripped."""
    return texts.str.replace(r"\r\n?", "\n", regex=True).str.strip()


def walkthrough_frame(corpus: pd.DataFrame, missing: str = "", seed: int = 0) -> pd.DataFrame:
    """The walkthrough's schema: `bodyText` and a float `sentiment` score in [-1, 1].

    Scores are the crowd confidence signed by the class; some neutral posts get exactly 0 and some a
    small score (so a neutral band matters); 6 rows have no score: `missing` ('' or e.g. 'NaN')."""
    rng = np.random.default_rng(seed)
    sign = corpus["sentiment"].map({"negative": -1.0, "neutral": 0.0, "positive": 1.0}).to_numpy()
    conf = corpus["confidence"].fillna(0.5).to_numpy()
    score = np.round(sign * conf, 4)
    neutral = np.flatnonzero(sign == 0)
    small = neutral[: len(neutral) // 2]
    score[small] = rng.choice([-0.08, -0.05, 0.05, 0.08], size=len(small))
    cells = pd.Series(score.astype(object))
    cells[rng.choice(len(cells), size=6, replace=False)] = missing
    return pd.DataFrame({"bodyText": corpus["text"].to_numpy(), "sentiment": cells})


def scores_of(frame: pd.DataFrame) -> pd.Series:
    """text -> float score of a walkthrough frame (NaN where missing)."""
    return pd.Series(
        pd.to_numeric(frame["sentiment"], errors="coerce").to_numpy(), index=clean(frame["bodyText"])
    )


# ----------------------------------------------------------------------------- files


def read_splits(folder: Path, fmt: str = "csv") -> pd.DataFrame:
    """All rows of a prepared folder with a `split` column, as strings (a `score` column as floats, empty
    where people labelled the post)."""
    parts = []
    for split in ("train", "eval", "test"):
        path = Path(folder) / f"{split}.{fmt}"
        df = (
            pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path, dtype=str, keep_default_na=False)
        )
        if "score" in df.columns:
            df["score"] = pd.to_numeric(df["score"]).astype(float)
        parts.append(df.assign(split=split))
    return pd.concat(parts, ignore_index=True)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes); compare two to see what changed."""
    folder = Path(folder)
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def entries(folder: Path) -> set[str]:
    """Names directly in `folder`, hidden staging folders included."""
    return {p.name for p in Path(folder).iterdir()}


# ----------------------------------------------------------------------------- command line


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run `sentitune ARGS` in-process; (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_error(capsys, *args) -> str:
    """Run a command that must fail on the user's input: exit 2, one `error: ...` line, no traceback.
    Returns the message after `error: `."""
    code, _, err = cli(capsys, *args)
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], (
        f"expected one trailing 'error: ...' line, got:\n{err}"
    )
    return errors[0].removeprefix("error: ")


# ----------------------------------------------------------------------------- training runs

RUN_ARGS = dict(max_steps=6, batch_size=16, train_eval_examples=50, log_every=2)


def train_tiny(run_dir: Path, tiny_model: Path, data: Path, **settings) -> Path:
    """A short run of the tiny model on the prepared splits in `data`: RUN_ARGS with `settings` over them."""
    from sentitune.config import TrainConfig
    from sentitune.train import train

    train(
        TrainConfig(data=str(data), job_dir=str(run_dir), model=str(tiny_model), **{**RUN_ARGS, **settings})
    )
    return run_dir


def one_class_run(run: Path, name: str = "neutral") -> Path:
    """`run` with its classifier's bias raised for `name` until every post gets that class: what a run
    that learnt only the class balance scores like."""
    from safetensors.numpy import load_file, save_file

    path = run / "model.safetensors"
    weights = load_file(path)
    (bias,) = [k for k in weights if k.endswith("classifier.bias")]
    weights[bias] = weights[bias].copy()
    weights[bias][LABELS.index(name)] += 1e6
    save_file(weights, path, metadata={"format": "pt"})
    return run


def label_ids(names) -> np.ndarray:
    return np.array([LABELS.index(n) for n in names])


# ~240 training posts at batch 4: 60 batches an epoch, so step 15, 30 and 45 are mid-epoch.
CHECKPOINTED_FLAGS = [
    "--batch-size",
    "4",
    "--max-steps",
    "90",
    "--eval-every",
    "20",
    "--train-eval-examples",
    "0",
    "--checkpoint-every",
    "15",
    "--log-every",
    "1000",
]


def checkpointed_train_command(prepared: Path, model: Path, job: Path, checkpoints: Path | str) -> list[str]:
    """`sentitune train` in a fresh interpreter, checkpointing mid-epoch into `checkpoints`."""
    return [
        sys.executable,
        "-m",
        "sentitune.cli",
        "train",
        "--data",
        str(prepared),
        "--model",
        str(model),
        "--job-dir",
        str(job),
        "--checkpoint-dir",
        str(checkpoints),
        *CHECKPOINTED_FLAGS,
    ]


def assert_same_weights(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """The TensorBoard scalars under `folder`: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


# ----------------------------------------------------------------------------- servers

STARTUP_TIMEOUT_S = 120  # a fresh interpreter imports torch and transformers on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(app):
    """`app` on a free loopback port, served by uvicorn in a background thread."""
    from sentitune.serve import open_socket, uvicorn_server

    sock = open_socket("127.0.0.1", 0)
    uvicorn = uvicorn_server(app)
    thread = threading.Thread(target=uvicorn.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uvicorn.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{sock.getsockname()[1]}", app=app)
    finally:
        uvicorn.should_exit = True
        thread.join(15)
        sock.close()


def sentitune_serve(*args, env: dict[str, str] | None = None, stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sentitune.cli", "serve", *map(str, args)],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )


# ----------------------------------------------------------------------------- Cloud Storage and Vertex AI

BUCKET = "sentitune-test"  # the storage emulator's bucket (the gcs_env fixture)
PROJECT, REGION = "sentiment-lab-1", "europe-west4"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
WALKTHROUGH_ARGS = [
    "--",
    f"--training-file=gs://{BUCKET}/data/train.csv",
    f"--validation-file=gs://{BUCKET}/data/val.csv",
    f"--testing-file=gs://{BUCKET}/data/test.csv",
    "--epochs=10",
    "--batch-size=128",
    "--learning-rate=0.0001",
]


def submit_args(*extra: str) -> list[str]:
    return ["cloud", "submit", "--project", PROJECT, "--region", REGION, "--display-name", "nightly", *extra]


def as_sent(custom_job: dict) -> dict:
    """A CustomJob as JSON with enum names (the REST client sends enums as numbers)."""
    from google.cloud.aiplatform_v1 import types

    job = types.CustomJob.from_json(json.dumps(custom_job), ignore_unknown_fields=True)
    return json.loads(
        types.CustomJob.to_json(job, use_integers_for_enums=False, including_default_value_fields=False)
    )


V1 = "type.googleapis.com/google.cloud.aiplatform.v1"
# The walkthrough's machine: n1-standard-4 with one T4, as the REST API writes it.
T4_MACHINE = {"machineType": "n1-standard-4", "acceleratorType": "NVIDIA_TESLA_T4", "acceleratorCount": 1}


class FakeVertex:
    """Answers the REST calls of deploy with finished long-running operations and records each request."""

    def __init__(self, fail: dict[str, tuple[int, str]] | None = None):
        self.requests: list[dict] = []
        self.fail = fail or {}
        self.contexts: dict[
            str, dict
        ] = {}  # Vertex AI metadata contexts (Experiments and their runs) by name
        self.metadata_store = True  # False: the project has no default metadata store yet
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?")[0]
                fake.requests.append({"path": path, "method": "GET"})
                if path[4:] in fake.contexts:
                    return self.answer(200, fake.contexts[path[4:]])
                if path == f"/v1/{PARENT}/customJobs/444":
                    return self.answer(
                        200,
                        {
                            "name": path[4:],
                            "displayName": "nightly",
                            "state": "JOB_STATE_FAILED",
                            "createTime": "2026-11-27T10:00:00Z",
                            "startTime": "2026-11-27T10:02:00Z",
                            "endTime": "2026-11-27T11:32:30Z",
                            "jobSpec": {
                                "workerPoolSpecs": [{"machineSpec": T4_MACHINE, "replicaCount": "1"}],
                                "scheduling": {"strategy": "SPOT"},
                            },
                            "error": {
                                "code": 3,
                                "message": "The replica workerpool0-0 exited with a non-zero status of 2.",
                            },
                        },
                    )
                self.answer(404, {"error": {"code": 404, "message": f"CustomJob {path[4:]} not found"}})

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
                elif path == f"/v1/{PARENT}/customJobs":
                    return self.answer(
                        200, {**body, "name": f"{PARENT}/customJobs/444", "state": "JOB_STATE_PENDING"}
                    )
                elif path == f"/v1/{PARENT}/metadataStores":
                    fake.metadata_store = True
                    result = {"@type": f"{V1}.MetadataStore", "name": f"{PARENT}/metadataStores/default"}
                elif path == f"/v1/{PARENT}/metadataStores/default/contexts" and not fake.metadata_store:
                    return self.answer(404, {"error": {"code": 404, "message": "MetadataStore not found"}})
                elif path == f"/v1/{PARENT}/metadataStores/default/contexts":
                    context_id = parse_qs(urlsplit(self.path).query)["contextId"][0]
                    fake.contexts[f"{path[4:]}/{context_id}"] = {**body, "name": f"{path[4:]}/{context_id}"}
                    return self.answer(200, fake.contexts[f"{path[4:]}/{context_id}"])
                elif path == f"/v1/{PARENT}/customJobs/444:cancel":
                    return self.answer(200, {})
                elif path == f"/v1/{PARENT}/batchPredictionJobs":
                    return self.answer(
                        200,
                        {**body, "name": f"{PARENT}/batchPredictionJobs/666", "state": "JOB_STATE_PENDING"},
                    )
                elif path == f"/v1/{PARENT}/hyperparameterTuningJobs":
                    return self.answer(
                        200,
                        {
                            **body,
                            "name": f"{PARENT}/hyperparameterTuningJobs/555",
                            "state": "JOB_STATE_PENDING",
                        },
                    )
                else:
                    return self.answer(404, {"error": {"code": 404, "message": f"no route {path}"}})
                self.answer(
                    200,
                    {"name": f"{PARENT}/operations/{len(fake.requests)}", "done": True, "response": result},
                )

            def do_PATCH(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                path = self.path.split("?")[0]
                fake.requests.append({"path": path, "method": "PATCH", "body": body})
                if path[4:] not in fake.contexts:
                    return self.answer(404, {"error": {"code": 404, "message": f"{path[4:]} not found"}})
                fake.contexts[path[4:]].update(body)
                self.answer(200, fake.contexts[path[4:]])

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
