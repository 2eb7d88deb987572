"""Shared fixtures: real posts, a tiny random BERT with the real vocabulary, one prepared folder and
one short training run per session, and helpers that drive the command line in-process."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sentitune import LABELS
from sentitune.builtin import build_random_bert, default_dataset
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


def require_shared(*paths: Path) -> None:
    """Tests on ../shared data skip where it is missing, except in CI (CI=true), where they fail."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        message = f"shared tweet data not found: {', '.join(missing)}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + " (CI must run every test)")
        pytest.skip(message)


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
    """All rows of a prepared folder with a `split` column, as strings (a `score` column as floats)."""
    parts = []
    for split in ("train", "eval", "test"):
        path = Path(folder) / f"{split}.{fmt}"
        df = (
            pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path, dtype=str, keep_default_na=False)
        )
        if "score" in df.columns:
            df["score"] = df["score"].astype(float)
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


RUN_ARGS = dict(max_steps=6, batch_size=16, train_eval_examples=50, log_every=2)


def train_tiny(run_dir: Path, tiny_model: Path, data: Path, **settings) -> Path:
    """A short run of the tiny model on the prepared splits in `data`: RUN_ARGS with `settings` over them."""
    from sentitune.config import TrainConfig
    from sentitune.train import train

    train(
        TrainConfig(data=str(data), job_dir=str(run_dir), model=str(tiny_model), **{**RUN_ARGS, **settings})
    )
    return run_dir


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_model, prepared) -> Path:
    """One short training run of the tiny model on `prepared` (read-only: copy before changing it)."""
    return train_tiny(tmp_path_factory.mktemp("runs") / "run", tiny_model, prepared)


@pytest.fixture
def run_copy(tmp_path, trained_run) -> Path:
    """A private copy of the session's run folder."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def label_ids(names) -> np.ndarray:
    return np.array([LABELS.index(n) for n in names])
