"""Fixtures: real posts, a tiny random BERT with the real vocabulary, one prepared folder and one short
training run per session, a Cloud Storage emulator and a Vertex AI REST stand-in on localhost; and the
hooks that mark tests by tier. The helpers the tests share are in helpers.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pandas as pd
import pytest
from helpers import (
    BUCKET,
    PER_CLASS,
    TWEETS,
    FakeVertex,
    clean,
    free_port,
    require_shared,
    train_tiny,
    walkthrough_frame,
)

from sentitune.builtin import build_random_bert, default_dataset

# gcsfs reads this when it is imported: without it, every first access probes the bucket over gRPC,
# which the emulator does not speak, and waits 60 s (../shared/NOTES.md).
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
EMULATOR = Path(sys.executable).with_name("gcp-storage-emulator")


# ----------------------------------------------------------------------------- precision

# Modules whose tests run models at the default precision (auto). `make test-other-precision` (CI runs
# it after `make test`) runs them again with SENTITUNE_PRECISION set to the precision auto does not pick
# on the machine, so an AVX2 machine also exercises bf16 and an AMX machine fp32.
PRECISION_SENSITIVE = {
    "test_distributed",
    "test_evaluate",
    "test_export",
    "test_foreign_models",
    "test_gcs",
    "test_pooling",
    "test_predict",
    "test_resume",
    "test_runtime",
    "test_serve",
    "test_train",
}


# Modules whose tests run in-process on tiny inputs, with no server, subprocess or real training of more
# than a few steps: `make test-fast` runs these (about 30 s on 2 cores).
FAST = {
    "test_architecture",
    "test_baseline",
    "test_batching",
    "test_cloud",
    "test_errors",
    "test_metrics",
    "test_prepare",
    "test_runtime",
}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if item.module.__name__ in PRECISION_SENSITIVE:
            item.add_marker(pytest.mark.precision)
        if item.module.__name__ in FAST:
            item.add_marker(pytest.mark.fast)


def pytest_report_header() -> str:
    import torch

    from sentitune.runtime import resolve_precision

    return f"sentitune precision auto on this machine: {resolve_precision('auto', torch.device('cpu'))}"


# ----------------------------------------------------------------------------- real posts


def _sample(df: pd.DataFrame, label_column: str, per_class: int, seed: int) -> pd.DataFrame:
    df = df.dropna(subset=["text"])
    df = df.assign(text=clean(df["text"])).drop_duplicates("text")
    df = df[df["text"].str.len() > 0]
    parts = [g.sample(per_class, random_state=seed) for _, g in df.groupby(label_column, sort=True)]
    return pd.concat(parts).sample(frac=1, random_state=seed).reset_index(drop=True)


@pytest.fixture(scope="session")
def corpus() -> pd.DataFrame:
    """~300 posts of the embedded crowd-labelled corpus: text, sentiment (class name), confidence."""
    df = pd.read_csv(default_dataset(), encoding="latin-1")
    return _sample(df, "sentiment", PER_CLASS, seed=1)


@pytest.fixture(scope="session")
def tweets() -> pd.DataFrame:
    """~300 SemEval tweets from the shared benchmark data: text, label (class name)."""
    require_shared(TWEETS)
    return _sample(pd.read_csv(TWEETS, nrows=5000), "label", PER_CLASS, seed=2)


# ----------------------------------------------------------------------------- model and run


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A randomly initialised 2 x 32 BERT with the embedded model's real uncased vocabulary."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    build_random_bert(folder, layers=2, hidden=32, heads=2)
    return folder


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, corpus) -> Path:
    """`prepare` of the walkthrough-schema posts (read-only: copy before changing it)."""
    from sentitune.config import PrepareConfig
    from sentitune.prepare import prepare

    root = tmp_path_factory.mktemp("prepared")
    walkthrough_frame(corpus).to_csv(root / "posts.csv", index=False)
    prepare(PrepareConfig(inputs=[str(root / "posts.csv")], output_dir=str(root / "splits")))
    return root / "splits"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_model, prepared) -> Path:
    """One short training run of the tiny model on `prepared` (read-only: copy before changing it)."""
    return train_tiny(tmp_path_factory.mktemp("runs") / "run", tiny_model, prepared)


@pytest.fixture
def run_copy(tmp_path, trained_run) -> Path:
    """A private copy of the session's run folder."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


# ----------------------------------------------------------------------------- Cloud Storage and Vertex AI


@pytest.fixture(scope="module")
def gcs_env():
    """A GCS emulator on 127.0.0.1 with one bucket, and the environment that points gcsfs at it."""
    pytest.importorskip("gcsfs", reason="gs:// needs gcsfs: pip install 'sentitune[cloud]'")
    if not EMULATOR.exists() and not shutil.which("gcp-storage-emulator"):
        pytest.skip("gcp-storage-emulator is not installed (pip install gcp-storage-emulator)")
    port = free_port()
    server = subprocess.Popen(
        [
            str(EMULATOR if EMULATOR.exists() else "gcp-storage-emulator"),
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
            "--default-bucket",
            BUCKET,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("the GCS emulator did not start")
            time.sleep(0.1)
    env = {
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "FSSPEC_GS_TOKEN": "anon",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    fsspec.config.conf["gs"] = {"token": "anon"}  # FSSPEC_GS_TOKEN is read at import, which happened already
    yield env
    fsspec.config.conf.pop("gs", None)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def gs(gcs_env):
    return fsspec.filesystem("gs", token="anon", skip_instance_cache=True)


@pytest.fixture
def gs_run(gcs_env, gs, trained_run, tmp_path):
    """The session's run, with an ONNX export folder, uploaded to gs://."""
    local = tmp_path / "run"
    shutil.copytree(trained_run, local)
    (local / "onnx").mkdir()
    (local / "onnx" / "export_report.json").write_text("{}")
    gs.put(str(local), f"{BUCKET}/runs/", recursive=True)
    return f"gs://{BUCKET}/runs/run"


@pytest.fixture
def walkthrough_data(gcs_env, gs, prepared):
    """The prepared splits on gs:// where the walkthrough's job arguments (WALKTHROUGH_ARGS) point."""
    for name, source in (("train", "train"), ("val", "eval"), ("test", "test")):
        gs.put_file(str(prepared / f"{source}.csv"), f"{BUCKET}/data/{name}.csv")


@pytest.fixture
def vertex():
    """A Vertex AI REST stand-in on localhost that records each request (pass --api-endpoint vertex.url)."""
    fake = FakeVertex()
    yield fake
    fake.close()
