"""The bad-input corpus: every command given something wrong, with what must happen.

Each case is a command line plus the files it needs, built in a fresh folder; the expectation is an
exact one-line error (exit 2, nothing written) or, where the input is odd but valid, a result checked
for what it must hold. `test_bad_inputs.py` runs them all. To add a case, add a function below that
yields `Case`s: its name is the command it covers.

Placeholders in commands and messages: {tmp} (the case's folder), {run} (a finished tiny run copied
into {tmp}/run), {data} (a prepared folder), {model} (the tiny random BERT).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

POSTS = [
    f"{post}, day {i}" for i in range(20) for post in ("loved the update", "worst flight", "meeting at noon")
]
LABELLED = pd.DataFrame({"text": POSTS, "label": ["positive", "negative", "neutral"] * 20})


@dataclass
class Case:
    name: str
    argv: list[str]
    error: str | None = None  # the exact message after "error: " (None: the command must succeed)
    files: dict[str, Callable[[Path], None]] = field(default_factory=dict)  # relative path -> writer
    stdin: bytes | None = None
    check: Callable[[Path, str], None] | None = None  # (folder, stdout) -> asserts, for successes
    needs: tuple[str, ...] = ()  # fixtures: run, data, model
    written: tuple[str, ...] = ()  # what may exist in {tmp} afterwards besides the inputs
    env: dict[str, str] = field(default_factory=dict)  # environment variables set for the case


def text(content: str | bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return write


def frame(df: pd.DataFrame) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(path, index=False)

    return write


def folder() -> Callable[[Path], None]:
    return lambda path: path.mkdir(parents=True, exist_ok=True)


def label_set_cases(out: list[str]) -> Iterator[Case]:
    """--labels and --thresholds that name no label set, and data that does not fit the one named."""
    posts = {"posts.csv": frame(LABELLED)}
    scored = {"posts.csv": frame(pd.DataFrame({"text": POSTS, "score": [-0.7, 0.2, 0.9] * 20}))}
    for name, options, message in (
        ("one-label", ["--labels", "good"], "--labels 'good' names one class; a classifier needs two or more"),
        ("duplicate-labels", ["--labels", "neg,pos,Neg"], "--labels names neg twice; name each class once"),
        ("thresholds-not-increasing", ["--labels", "a,b,c", "--thresholds", "0.5,-0.5"],
         "--thresholds must increase, got 0.5,-0.5"),
        ("thresholds-for-other-classes", ["--labels", "negative,positive", "--thresholds", "-0.05,0.05"],
         "--thresholds gives 2 thresholds for 2 classes (negative, positive); give 1, increasing"),
        ("neutral-band-with-labels", ["--labels", "a,b,c", "--neutral-band", "0.1"],
         "--neutral-band is for the 3 default classes; with --labels give --thresholds"),
    ):  # fmt: skip
        yield Case(f"prepare-{name}", ["prepare", "{tmp}/posts.csv", *out, *options],
                   f"invalid prepare options: {message}", posts)  # fmt: skip
    yield Case(
        "prepare-label-outside-labels",
        ["prepare", "{tmp}/posts.csv", *out, "--labels", "negative,positive"],
        "{tmp}/posts.csv: label values 'neutral' are not the classes negative, positive; map them with "
        "`sentitune prepare --label-map VALUE=CLASS,...`",
        posts,
    )
    yield Case(
        "prepare-scores-without-thresholds",
        ["prepare", "{tmp}/posts.csv", *out, "--labels", "1,2,3,4,5", "--label-type", "score"],
        "scores map onto the 5 classes 1, 2, 3, 4, 5 only with --thresholds (4 increasing numbers, e.g. "
        "--thresholds -0.6,-0.2,0.2,0.6)",
        scored,
    )
    yield Case(
        "train-labels-other-than-the-folders",
        ["train", "--data", "{data}", "--labels", "bad,good", "--model", "{model}", "--job-dir", "{tmp}/job"],
        "--labels bad,good differs from the classes of {data} (negative,neutral,positive); drop --labels or "
        "prepare the data with them",
        needs=("data", "model"),
    )


def prepare_cases() -> Iterator[Case]:
    out = ["--output-dir", "{tmp}/out"]
    yield from label_set_cases(out)
    yield Case(
        "prepare-augment-a-label-column",
        ["prepare", "{tmp}/posts.csv", *out, "--augment", "1"],
        "invalid prepare options: --augment needs --label-with vader: new posts need a labeller that can "
        "score any text, which a label column is not",
        {"posts.csv": frame(LABELLED)},
    )
    yield Case(
        "prepare-augment-negative",
        ["prepare", "{tmp}/posts.csv", *out, "--label-with", "vader", "--augment", "-2"],
        "invalid prepare options: --augment must be in [0, 20], got -2",
        {"posts.csv": frame(LABELLED)},
    )
    yield Case(
        "prepare-input-is-a-folder",
        ["prepare", "{tmp}/posts", *out],
        "input {tmp}/posts is a folder; pass the files inside it",
        {"posts": folder()},
    )
    yield Case(
        "prepare-empty-file",
        ["prepare", "{tmp}/posts.csv", *out],
        "{tmp}/posts.csv is empty: no header and no rows",
        {"posts.csv": text("")},
    )
    yield Case(
        "prepare-header-only",
        ["prepare", "{tmp}/posts.csv", *out],
        "nothing left after cleaning (0 rows read, 0 empty, 0 without a label); check --text-column and "
        "--label-column",
        {"posts.csv": text("bodyText,sentiment\n")},
    )
    yield Case(
        "prepare-parquet-that-is-not",
        ["prepare", "{tmp}/posts.parquet", *out],
        "cannot parse {tmp}/posts.parquet as parquet: Parquet magic bytes not found in footer. Either the "
        "file is corrupted or this is not a parquet file.",
        {"posts.parquet": text("bodyText,sentiment\nhello,1\n")},
    )
    yield Case(
        "prepare-gzip-that-is-not",
        ["prepare", "{tmp}/posts.csv.gz", *out],
        "cannot read {tmp}/posts.csv.gz: it does not decompress as its extension says (Not a gzipped file "
        "(b'bo')); check the file or its extension",
        {"posts.csv.gz": text("bodyText,sentiment\nhello,1\n")},
    )
    yield Case(
        "prepare-jsonl-broken-line",
        ["prepare", "{tmp}/posts.jsonl", *out],
        "cannot parse {tmp}/posts.jsonl as jsonl: line 2: Expecting property name enclosed in double quotes",
        {"posts.jsonl": text('{"bodyText": "a", "sentiment": 1}\n{"bodyText": "b", \n')},
    )
    odd = [*POSTS[:-2], "bad \ud800 day", "caf\xe9 noir"]  # pandas' Arrow strings cannot hold the first
    odd_jsonl = "".join(
        json.dumps({"text": t, "label": label}) + "\n"
        for t, label in zip(odd, LABELLED["label"], strict=True)
    ).encode("ascii")
    odd_jsonl = odd_jsonl.replace(b"caf\\u00e9", b"caf\xe9")  # that line latin-1, not UTF-8
    yield Case(
        "prepare-jsonl-invalid-text",
        ["prepare", "{tmp}/posts.jsonl", *out],
        files={"posts.jsonl": text(odd_jsonl)},
        check=lambda folder, _: read_as_in_splits(folder / "out", ["bad \ufffd day", "caf\xe9 noir"]),
        written=("out",),
    )
    yield Case(
        "prepare-binary-garbage",
        ["prepare", "{tmp}/posts.csv", *out],
        "{tmp}/posts.csv is not a text file (it holds NUL bytes); pass a UTF-8 or UTF-16 (with its byte-order mark) CSV, TSV or JSONL file, or Parquet",
        {"posts.csv": text(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")},
    )
    yield Case(
        "prepare-output-dir-is-a-file",
        ["prepare", "{tmp}/posts.csv", "--output-dir", "{tmp}/out.txt"],
        "--output-dir {tmp}/out.txt is a file, not a folder; pass a folder",
        {"posts.csv": frame(LABELLED), "out.txt": text("keep me")},
    )
    for option, value in (
        ("--val-fraction", "nan"),
        ("--neutral-band", "nan"),
        ("--neutral-band", "inf"),
        ("--test-fraction", "-inf"),
    ):
        yield Case(
            f"prepare-{option[2:]}-{value}",
            ["prepare", "{tmp}/posts.csv", *out, f"{option}={value}"],
            f"invalid prepare options: {option} must be a finite number, got {float(value)}",
            {"posts.csv": frame(LABELLED)},
        )
    yield Case(
        "prepare-chunk-rows-0",
        ["prepare", "{tmp}/posts.csv", *out, "--chunk-rows", "0"],
        "invalid prepare options: --chunk-rows must be in [1, 10000000], got 0",
        {"posts.csv": frame(LABELLED)},
    )
    yield Case(
        "prepare-label-map-syntax",
        ["prepare", "{tmp}/posts.csv", *out, "--label-map", "good:positive"],
        "--label-map entry 'good:positive' is not VALUE=CLASS; e.g. 'bad=negative,good=positive'",
        {"posts.csv": frame(LABELLED)},
    )
    yield Case(
        "prepare-label-map-unknown-class",
        ["prepare", "{tmp}/posts.csv", *out, "--label-map", "good=great"],
        "--label-map maps 'good' to 'great', which is no class; use one of negative, neutral, positive",
        {"posts.csv": frame(LABELLED)},
    )
    yield Case(
        "prepare-label-column-missing",
        ["prepare", "{tmp}/posts.csv", *out, "--label-column", "stars"],
        "{tmp}/posts.csv has no column 'stars' (columns: text, label); pass --label-column NAME",
        {"posts.csv": frame(LABELLED)},
    )
    yield Case(
        "prepare-no-label-column",
        ["prepare", "{tmp}/posts.csv", *out],
        "{tmp}/posts.csv has no label column: none is named Target, label, labels, sentiment, polarity, stars, "
        "rating or score (columns: text, likes); pass --label-column NAME, or --label-with vader to label the "
        "text with VADER",
        {"posts.csv": frame(pd.DataFrame({"text": POSTS, "likes": 3}))},
    )
    yield Case(
        "prepare-two-text-columns",
        ["prepare", "{tmp}/posts.csv", *out],
        "{tmp}/posts.csv: 2 columns could hold the text (text, tweet); pass --text-column with the one to use, "
        "e.g. --text-column text",
        {"posts.csv": frame(LABELLED.assign(tweet=LABELLED["text"]))},
    )
    yield Case(
        "prepare-two-label-columns",
        ["prepare", "{tmp}/posts.csv", *out],
        "{tmp}/posts.csv: 2 columns could hold the label (Rating, stars); pass --label-column with the one to "
        "use, e.g. --label-column Rating",
        {"posts.csv": frame(pd.DataFrame({"Review_Text": POSTS, "Rating": 4, "stars": 5}))},
    )
    yield Case(
        "prepare-star-ratings",
        ["prepare", "{tmp}/reviews.csv", *out],
        "{tmp}/reviews.csv: numeric labels {1, 2, 3, 4, 5} look like ratings or ids, not class ids 0/1/2 or "
        "signed scores; add --label-map '1=negative,2=negative,3=neutral,4=positive,5=positive' to read them as "
        "negative, neutral and positive, or --labels 1,2,3,4,5 to keep them as 5 classes",
        {"reviews.csv": frame(pd.DataFrame({"review": POSTS, "stars": [1, 2, 3, 4, 5, 5] * 10}))},
    )
    yield Case(
        "prepare-labels-0-and-1",
        ["prepare", "{tmp}/posts.csv", *out],
        "{tmp}/posts.csv: labels 0 and 1 may be two classes or scores read by sign (0 neutral, 1 positive); add "
        "--labels negative,positive --label-map '0=negative,1=positive' to read them as negative and positive, or "
        "--labels 0,1 to keep them as 2 classes, or pass --label-type score to read them by sign",
        {"posts.csv": frame(pd.DataFrame({"text": POSTS, "label": [0, 1, 1] * 20}))},
    )
    yield Case(
        "prepare-label-words",
        ["prepare", "{tmp}/posts.csv", *out],
        "{tmp}/posts.csv: label value 'great', 'awful', 'mixed' maps to no class (known: neg, negative, neu, "
        "neutral, pos, positive); add --label-map 'awful=negative,mixed=neutral,great=positive' to read them as "
        "negative, neutral and positive (guessed from the words: check it), or --labels awful,mixed,great to "
        "keep them as 3 classes",
        {"posts.csv": frame(pd.DataFrame({"text": POSTS, "label": ["great", "awful", "mixed"] * 20}))},
    )
    yield Case(
        "prepare-negative-seed",
        ["prepare", "{tmp}/posts.csv", *out, "--seed", "-1"],
        "invalid prepare options: --seed must be in [0, 4294967295], got -1",
        {"posts.csv": frame(LABELLED)},
    )
    yield Case(
        "prepare-unknown-format",
        ["prepare", "{tmp}/posts.csv", *out, "--format", "xlsx"],
        "argument --format: invalid choice: 'xlsx' (choose from 'csv', 'parquet'); see `sentitune prepare --help`",
        {"posts.csv": frame(LABELLED)},
    )
    yield Case(
        "prepare-non-number",
        ["prepare", "{tmp}/posts.csv", *out, "--val-fraction", "tenth"],
        "argument --val-fraction: invalid float value: 'tenth'; see `sentitune prepare --help`",
        {"posts.csv": frame(LABELLED)},
    )
    long_name = "x" * 5000
    yield Case(
        "prepare-huge-column-name-is-quoted-short",
        ["prepare", "{tmp}/posts.csv", *out],
        "{tmp}/posts.csv has no text column: none is named bodyText, text, tweet, message, content, body, post, "
        "review or comment (columns: " + "x" * 197 + "...); pass --text-column " + "x" * 197 + "...",
        {"posts.csv": text(long_name + "\nhello\n")},
    )
    yield Case(
        "prepare-latin1-file",
        ["prepare", "{tmp}/posts.csv", *out],
        None,
        {
            "posts.csv": text(
                (
                    "bodyText,sentiment\n"
                    + "".join(f"café très bon {i},1\nmauvais café {i},-1\nun café {i},0\n" for i in range(20))
                ).encode("latin-1")
            )
        },
        check=lambda tmp, out: prepared_rows(tmp / "out") == 3,
        written=("out",),
    )


def prepared_rows(folder: Path) -> int:
    report = json.loads((folder / "prepare_report.json").read_text())
    return report["rows_kept"]


def train_cases() -> Iterator[Case]:
    base = ["train", "--data", "{data}", "--model", "{model}", "--job-dir", "{tmp}/job", "--max-steps", "2"]
    yield Case(
        "train-split-hashtags-without-normalizing",
        [*base, "--normalize", "none", "--split-hashtags"],
        "invalid train options: --split-hashtags is part of --normalize tweet; drop it or pass --normalize tweet",
        needs=("data", "model"),
    )
    yield Case(
        "train-unknown-normalization",
        [*base, "--normalize", "emoji"],
        "argument --normalize: invalid choice: 'emoji' (choose from 'tweet', 'none'); see `sentitune train --help`",
        needs=("data", "model"),
    )
    for option, value in (
        ("--learning-rate", "inf"),
        ("--learning-rate", "nan"),
        ("--weight-decay", "nan"),
        ("--max-grad-norm", "nan"),
        ("--warmup-ratio", "nan"),
        ("--label-smoothing", "inf"),
        ("--soft-targets", "nan"),
        ("--dist-timeout", "nan"),
    ):
        yield Case(
            f"train-{option[2:]}-{value}",
            [*base, option, value],
            f"invalid train options: {option} must be a finite number, got {float(value)}",
            needs=("data", "model"),
        )
    for option, value, message in (
        ("--batch-size", "0", "--batch-size must be in [1, 65536], got 0"),
        ("--max-length", "0", "--max-length must be in [1, 512], got 0"),
        ("--weight-decay", "-1", "--weight-decay must be >= 0, got -1.0"),
        ("--dist-timeout", "0", "--dist-timeout must be in (0, 86400], got 0.0"),
        ("--soft-targets", "-1", "--soft-targets must be >= 0, got -1.0"),
        (
            "--train-eval-examples",
            "-5",
            "--train-eval-examples must be in [0, 1000000000], got -5",
        ),
    ):
        yield Case(
            f"train-{option[2:]}-{value}",
            [*base, option, value],
            f"invalid train options: {message}",
            needs=("data", "model"),
        )
    yield Case(
        "train-soft-targets-without-scores",
        [
            "train",
            "--training-file",
            "{tmp}/posts.csv",
            "--model",
            "{model}",
            "--job-dir",
            "{tmp}/job",
            "--max-steps",
            "2",
            "--soft-targets",
            "0.1",
        ],  # fmt: skip
        "--soft-targets needs data prepared from scores (a score column, or --label-with vader): "
        "{tmp}/posts.csv has no scores with their class boundaries; prepare it with `sentitune prepare` and "
        "pass --data (a folder prepared by an earlier version: prepare it again), or drop --soft-targets",
        {"posts.csv": frame(LABELLED)},
        needs=("model",),
    )
    yield Case(
        "train-job-dir-is-a-file",
        ["train", "--data", "{data}", "--model", "{model}", "--job-dir", "{tmp}/job"],
        "--job-dir {tmp}/job is a file, not a folder; pass a folder",
        {"job": text("keep me")},
        needs=("data", "model"),
    )
    yield Case(
        "train-checkpoint-dir-is-a-file",
        [*base, "--checkpoint-dir", "{tmp}/ckpt"],
        "--checkpoint-dir {tmp}/ckpt is a file, not a folder; pass a folder",
        {"ckpt": text("keep me")},
        needs=("data", "model"),
    )
    yield Case(
        "train-data-not-prepared",
        [*base[:2], "{tmp}/empty", *base[3:]],
        "--data {tmp}/empty is not a folder or is empty; run `sentitune prepare` first",
        {"empty": folder()},
        needs=("model",),
    )
    yield Case(
        "train-freeze-too-many",
        [*base, "--freeze-layers", "9"],
        "--freeze-layers 9 exceeds the 2 layers trained; pass at most 2",
        needs=("data", "model"),
    )
    yield Case(
        "train-keep-too-many",
        [*base, "--keep-layers", "9"],
        "--keep-layers 9 exceeds the model's 2 layers; pass at most 2",
        needs=("data", "model"),
    )
    broken = "{tmp}/broken"
    copy_model = ("model",)
    yield Case(
        "train-model-weights-empty",
        ["train", "--data", "{data}", "--model", broken, "--job-dir", "{tmp}/job"],
        f"cannot load model {broken}: model.safetensors is empty or truncated (not a safetensors file); "
        "download or copy the model again",
        {"broken": model_copy(weights=b"")},
        needs=("data", *copy_model),
    )
    yield Case(
        "train-model-weights-corrupt",
        ["train", "--data", "{data}", "--model", broken, "--job-dir", "{tmp}/job"],
        f"cannot load model {broken}: model.safetensors is empty or truncated (not a safetensors file); "
        "download or copy the model again",
        {"broken": model_copy(weights=b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")},
        needs=("data", *copy_model),
    )
    yield Case(
        "train-model-config-not-json",
        ["train", "--data", "{data}", "--model", broken, "--job-dir", "{tmp}/job"],
        f"cannot load model {broken} as a local folder: its config.json is not valid JSON",
        {"broken": model_copy(config="{not json")},
        needs=("data", *copy_model),
    )
    yield Case(
        "train-model-unknown-type",
        ["train", "--data", "{data}", "--model", broken, "--job-dir", "{tmp}/job"],
        f"model {broken} is a 'bertish' model, not a BERT-family encoder; pass an encoder such as bert, "
        "roberta, distilbert or deberta",
        {"broken": model_copy(config_update={"model_type": "bertish"})},
        needs=("data", *copy_model),
    )
    yield Case(
        "train-model-pickle-only",
        ["train", "--data", "{data}", "--model", broken, "--job-dir", "{tmp}/job"],
        f"cannot load model {broken}: it has only pytorch_model.bin (a pickle); sentitune loads weights from "
        "safetensors only: convert it with transformers' save_pretrained(..., safe_serialization=True)",
        {"broken": model_copy(weights=None, pickle=True)},
        needs=("data", *copy_model),
    )
    yield Case(
        "train-labels-beyond-three-classes",
        ["train", "--training-file", "{tmp}/t.csv", "--model", "{model}", "--job-dir", "{tmp}/job"],
        "{tmp}/t.csv: numeric labels {0, 1, 2, 3, 4} look like ratings or ids, not class ids 0/1/2 or signed "
        "scores; prepare the file with `sentitune prepare {tmp}/t.csv --label-map "
        "'0=negative,1=negative,2=neutral,3=positive,4=positive'` to read them as negative, neutral and "
        "positive, or pass --labels 0,1,2,3,4 to keep them as 5 classes",
        {"t.csv": frame(pd.DataFrame({"text": POSTS[:50], "label": [0, 1, 2, 3, 4] * 10}))},
        needs=("model",),
    )
    yield Case(
        "train-diverges",
        [*base, "--learning-rate", "1e30", "--max-steps", "8", "--log-every", "1"],
        "training diverged by step 2: the loss is nan; lower --learning-rate (it is 1e+30) or keep "
        "--max-grad-norm on (it is 1); nothing was written",
        needs=("data", "model"),
    )
    yield Case(
        "train-epochs-word",
        [*base, "--epochs", "two"],
        "argument --epochs: invalid int value: 'two'; see `sentitune train --help`",
        needs=("data", "model"),
    )


def model_copy(
    weights: bytes | None = b"keep",
    config: str | None = None,
    config_update: dict | None = None,
    pickle: bool = False,
) -> Callable[[Path], None]:
    """The tiny model's folder with its weights or config.json replaced (`weights=None`: no safetensors)."""

    def write(path: Path) -> None:
        import shutil

        shutil.copytree(MODEL[0], path)
        if weights is None:
            (path / "model.safetensors").unlink()
        elif weights != b"keep":
            (path / "model.safetensors").write_bytes(weights)
        if pickle:
            (path / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
        if config is not None:
            (path / "config.json").write_text(config)
        if config_update:
            cfg = json.loads((path / "config.json").read_text())
            cfg.update(config_update)
            (path / "config.json").write_text(json.dumps(cfg))

    return write


MODEL: list[Path] = []  # set by the test module to the session's tiny model folder


def run_folder_cases() -> Iterator[Case]:
    """evaluate, predict, export and serve given a run folder that is not right."""
    for drop, message in (
        ("tokenizer.json", "{tmp}/run is missing tokenizer.json (the tokenizer); copy the whole run folder"),
        (
            "config.json",
            "{tmp}/run is not a finished run (no config.json and model.safetensors); pass the "
            "--job-dir of a `sentitune train` run, or a classifier's folder or hub id",
        ),
    ):
        for command in (
            ["predict", "{tmp}/run", "a post"],
            ["evaluate", "{tmp}/run", "--data", "{tmp}/l.csv"],
            ["export", "{tmp}/run"],
        ):
            yield Case(
                f"{command[0]}-run-without-{drop}",
                command,
                message,
                {"l.csv": frame(LABELLED), "run": run_edit(drop=drop)},
                needs=("run",),
                written=("run",),
            )
    yield Case(
        "predict-run-weights-truncated",
        ["predict", "{tmp}/run", "a post"],
        "cannot load model {tmp}/run: model.safetensors is empty or truncated (not a safetensors file); "
        "download or copy the model again",
        {"run": run_edit(truncate=True)},
        needs=("run",),
        written=("run",),
    )
    yield Case(
        "predict-run-unknown-normalization",
        ["predict", "{tmp}/run", "a post"],
        'config.json\'s sentitune_normalize is {"scheme": "emoji"}, not one of the schemes tweet, none; the '
        "folder was edited: restore it from the run",
        {"run": run_edit(config={"sentitune_normalize": {"scheme": "emoji"}})},
        needs=("run",),
        written=("run",),
    )
    yield Case(
        "predict-run-two-label-head",
        ["predict", "{tmp}/run", "a post"],
        "{tmp}/run has 2 labels (a, b) in config.json but its classifier has 3 outputs; the folder was "
        "edited or mixed with another run",
        {"run": run_edit(labels=2)},
        needs=("run",),
        written=("run",),
    )
    yield Case(
        "predict-http-run",
        ["predict", "http://127.0.0.1:9/run", "a post"],
        "http://127.0.0.1:9/run: a run folder cannot be read over http(s), which cannot list a folder; "
        "download it, or use a local folder or a storage URL (gs://, s3://)",
    )
    yield Case(
        "predict-nan-weights",
        ["predict", "{tmp}/run", "a post"],
        "{tmp}/run gives non-finite scores (NaN) for 1 of 1 posts: its weights hold NaN or infinity; "
        "retrain it",
        {"run": run_edit(nan=True)},
        needs=("run",),
        written=("run",),
    )
    yield Case(
        "export-nan-weights",
        ["export", "{tmp}/run", "--parity-data", "{tmp}/l.csv"],
        "{tmp}/run gives non-finite scores (NaN) for 60 of 60 posts: its weights hold NaN or infinity; "
        "retrain it",
        {"run": run_edit(nan=True), "l.csv": frame(LABELLED)},
        needs=("run",),
        written=("run",),
    )
    yield Case(
        "evaluate-output-dir-is-a-file",
        ["evaluate", "{run}", "--data", "{tmp}/l.csv", "--output-dir", "{tmp}/o"],
        "--output-dir {tmp}/o is a file, not a folder; pass a folder",
        {"l.csv": frame(LABELLED), "o": text("keep me")},
        needs=("run",),
        written=("run",),
    )
    yield Case(
        "evaluate-missing-data",
        ["evaluate", "{run}", "--data", "{tmp}/nope.csv"],
        "input not found: {tmp}/nope.csv; check the path or URL",
        needs=("run",),
        written=("run",),
    )
    yield Case(
        "evaluate-unmapped-labels",
        ["evaluate", "{run}", "--data", "{tmp}/l.csv"],
        "{tmp}/l.csv: label value 'great' maps to no class (known: neg, negative, neu, neutral, pos, "
        "positive); {run} was trained on those classes; evaluate it on data labelled with them",
        {"l.csv": frame(LABELLED.assign(label="great"))},
        needs=("run",),
        written=("run",),
    )
    yield Case(
        "evaluate-batch-size-0",
        ["evaluate", "{run}", "--data", "{tmp}/l.csv", "--batch-size", "0"],
        "invalid evaluate options: --batch-size must be in [1, 65536], got 0",
        {"l.csv": frame(LABELLED)},
        needs=("run",),
        written=("run",),
    )
    yield Case(
        "export-output-dir-is-a-file",
        ["export", "{run}", "--output-dir", "{tmp}/o"],
        "--output-dir {tmp}/o is a file, not a folder; pass a folder",
        {"o": text("keep me")},
        needs=("run",),
        written=("run",),
    )


def run_edit(
    drop: str | None = None,
    truncate: bool = False,
    labels: int | None = None,
    nan: bool = False,
    config: dict | None = None,
) -> Callable[[Path], None]:
    """The session's run copied, then broken as asked."""

    def write(path: Path) -> None:
        import shutil

        import torch
        from safetensors.torch import load_file, save_file

        shutil.copytree(RUN[0], path)
        if drop:
            (path / drop).unlink()
        if truncate:
            data = (path / "model.safetensors").read_bytes()
            (path / "model.safetensors").write_bytes(data[: len(data) // 2])
        if labels:
            cfg = json.loads((path / "config.json").read_text())
            cfg["id2label"] = {str(i): "ab"[i] for i in range(labels)}
            cfg["label2id"] = {"ab"[i]: i for i in range(labels)}
            (path / "config.json").write_text(json.dumps(cfg))
        if config:
            edited = {**json.loads((path / "config.json").read_text()), **config}
            (path / "config.json").write_text(json.dumps(edited))
        if nan:
            weights = load_file(str(path / "model.safetensors"))
            weights = {
                k: torch.full_like(v, math.nan) if k.startswith("classifier") else v
                for k, v in weights.items()
            }
            save_file(weights, str(path / "model.safetensors"))

    return write


RUN: list[Path] = []  # set by the test module to the session's trained run


def predict_cases() -> Iterator[Case]:
    # Text that is not UTF-8 is read by the one rule every reader follows (tables.as_text): a latin-1
    # argument or stdin line as latin-1, a lone surrogate as U+FFFD; a warning names it.
    yield Case(
        "predict-latin1-argument",
        ["predict", "{run}", "caf\udce9", "bad \ud800 day"],
        check=lambda folder, out: read_as(out, ["café", "bad \ufffd day"]),
        needs=("run",),
        written=("run",),
    )
    yield Case(
        "predict-latin1-stdin",
        ["predict", "{run}"],
        check=lambda folder, out: read_as(out, ["fine", "café"]),
        stdin=b"fine\ncaf\xe9\n",
        needs=("run",),
        written=("run",),
    )
    yield Case(
        "predict-blank-stdin",
        ["predict", "{run}"],
        "no texts on stdin (only empty lines); pass texts as arguments or pipe one per line",
        stdin=b"\n  \n\n",
        needs=("run",),
        written=("run",),
    )
    yield Case(
        "predict-unknown-output-format",
        ["predict", "{run}", "--input", "{tmp}/l.csv", "--output", "{tmp}/o.xlsx"],
        "--output {tmp}/o.xlsx: unknown format '.xlsx'; use .csv, .tsv, .jsonl or .parquet, or end the "
        "name with / for a folder",
        {"l.csv": frame(LABELLED)},
        needs=("run",),
        written=("run",),
    )
    yield Case(
        "predict-batch-size-negative",
        ["predict", "{run}", "--batch-size", "-1", "a post"],
        "--batch-size must be in [1, 65536], got -1",
        needs=("run",),
        written=("run",),
    )
    yield Case(
        "predict-input-and-texts",
        ["predict", "{run}", "a post", "--input", "{tmp}/l.csv"],
        "pass texts as arguments or --input FILE, not both",
        {"l.csv": frame(LABELLED)},
        needs=("run",),
        written=("run",),
    )
    yield Case(
        "predict-text-column-missing",
        ["predict", "{run}", "--input", "{tmp}/l.csv", "--text-column", "body"],
        "{tmp}/l.csv has no column 'body' (columns: text, label); pass --text-column text",
        {"l.csv": frame(LABELLED)},
        needs=("run",),
        written=("run",),
    )
    yield Case(
        "predict-label-column-taken",
        ["predict", "{run}", "--input", "{tmp}/l.csv", "--output", "{tmp}/o.csv"],
        "{tmp}/l.csv already has the column 'label', which predict would write; pass --prefix pred_ (the "
        "added columns become pred_label, pred_score_<class>) or rename it",
        {"l.csv": frame(LABELLED)},
        needs=("run",),
        written=("run",),
    )
    yield Case(
        "predict-score-columns-taken-stdout",
        ["predict", "{run}", "--input", "{tmp}/l.csv", "--prefix", "p_"],
        "{tmp}/l.csv already has the columns 'p_label', 'p_score_positive', which predict would write; "
        "pass --prefix pred_ (the added columns become pred_label, pred_score_<class>) or rename them",
        {"l.csv": frame(LABELLED.rename(columns={"label": "p_label"}).assign(p_score_positive=0.5))},
        needs=("run",),
        written=("run",),
    )
    yield Case(
        "predict-prefix-without-input",
        ["predict", "{run}", "--prefix", "pred_", "a post"],
        "--prefix names the columns added to --input files; texts print as JSON lines",
        needs=("run",),
        written=("run",),
    )
    yield Case(
        "predict-emoji-and-newlines",
        ["predict", "{run}", "so good 😍🔥", "line one\nline two"],
        None,
        needs=("run",),
        written=("run",),
        check=lambda tmp, out: predicted(out, 2),
    )


def read_as_in_splits(folder: Path, texts: list[str]) -> None:
    written = pd.concat([pd.read_csv(folder / f"{name}.csv") for name in ("train", "eval", "test")])
    assert set(texts) <= set(written["text"])
    report = json.loads((folder / "prepare_report.json").read_text())
    assert (report["rows_with_invalid_text"], report["rows_decoded_as_latin1"]) == (1, 1)


def read_as(stdout: str, texts: list[str]) -> None:
    predicted(stdout, len(texts))
    assert [json.loads(line)["text"] for line in stdout.splitlines()] == texts


def predicted(stdout: str, n: int) -> None:
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert len(rows) == n
    for row in rows:
        assert all(math.isfinite(v) for v in row["scores"].values())
        assert abs(sum(row["scores"].values()) - 1) < 1e-5


def serve_cases() -> Iterator[Case]:
    for option, value, message in (
        ("--port", "70000", "--port must be in [0, 65535], got 70000"),
        ("--max-wait-ms", "nan", "--max-wait-ms must be a finite number, got nan"),
        ("--max-batch", "0", "--max-batch must be in [1, 65536], got 0"),
    ):
        yield Case(
            f"serve-{option[2:]}-{value}",
            ["serve", "{run}", option, value],
            f"invalid server settings: {message}",
            needs=("run",),
            written=("run",),
        )
    yield Case(
        "serve-run-without-tokenizer",
        ["serve", "{tmp}/run", "--port", "0"],
        "cannot serve {tmp}/run: {tmp}/run is missing tokenizer.json (the tokenizer); copy the whole run "
        "folder",
        {"run": run_edit(drop="tokenizer.json")},
        needs=("run",),
        written=("run",),
    )


def baseline_cases() -> Iterator[Case]:
    base = ["baseline", "--data", "{data}", "--job-dir", "{tmp}/b"]
    yield Case(
        "baseline-split-hashtags-without-normalizing",
        [*base, "--normalize", "none", "--split-hashtags"],
        "invalid baseline options: --split-hashtags is part of --normalize tweet; drop it or pass --normalize tweet",
        needs=("data",),
    )
    yield Case(
        "baseline-c-nan",
        [*base, "--c", "nan"],
        "invalid baseline options: --c must be a finite number, got nan",
        needs=("data",),
    )
    yield Case(
        "baseline-min-df-too-large",
        [*base, "--min-df", "100000"],
        "--min-df 100000 is more than the 234 training posts: no n-gram can be kept; lower --min-df",
        needs=("data",),
    )
    yield Case(
        "baseline-job-dir-is-a-file",
        ["baseline", "--data", "{data}", "--job-dir", "{tmp}/b"],
        "--job-dir {tmp}/b is a file, not a folder; pass a folder",
        {"b": text("keep me")},
        needs=("data",),
    )


def storage_cases() -> Iterator[Case]:
    """Cloud Storage that cannot be reached: one line in seconds, not a minute of retries and tracebacks."""
    closed = {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    message = (
        "cannot reach Cloud Storage at 127.0.0.1:9 (Connection refused); check the network connection and "
        "STORAGE_EMULATOR_HOST"
    )
    yield Case("predict-gs-unreachable", ["predict", "gs://bucket/run", "a post"], message, env=closed)
    yield Case(
        "prepare-gs-unreachable",
        ["prepare", "gs://bucket/posts.csv", "--output-dir", "{tmp}/o"],
        message,
        env=closed,
    )
    yield Case(
        "train-gs-unreachable",
        ["train", "--data", "gs://bucket/data", "--model", "{model}", "--job-dir", "{tmp}/j"],
        message,
        env=closed,
        needs=("model",),
    )


def cli_cases() -> Iterator[Case]:
    yield Case(
        "unknown-command",
        ["trian", "--data", "x"],
        "argument COMMAND: invalid choice: 'trian' (choose from 'prepare', 'train', 'distill', 'evaluate', "
        "'predict', 'select', 'serve', 'export', 'baseline', 'env', 'cloud'); see `sentitune --help`",
    )
    yield Case(
        "unknown-option",
        ["prepare", "--output-dir", "{tmp}/o", "--seeed", "3"],
        "unrecognized arguments: --seeed; see `sentitune prepare --help`",
    )
    yield Case(
        "missing-required",
        ["evaluate", "{tmp}/run"],
        "the following arguments are required: --data; see `sentitune evaluate --help`",
    )
    yield Case(
        "cloud-tune-log-range-from-zero",
        [
            "cloud",
            "tune",
            "--project",
            "sentiment-lab-1",
            "--dry-run",
            "--learning-rate",
            "0:1e-4",
            "--",
            "--data",
            "gs://b/d",
        ],
        "invalid tune options: --learning-rate '0:1e-4': a log-scale range must start above 0, e.g. 1e-6:1e-4",
    )


# Generated: every numeric option of every command, through its flag, at each side just outside its
# declared range, not a number, and infinite; train's also through a replayed --config, with a value of
# the wrong type and one out of range. The messages are written out here from the range alone.
OPTION_BASES = {
    "prepare": (
        ["prepare", "{tmp}/posts.csv", "--output-dir", "{tmp}/out"],
        {"posts.csv": frame(LABELLED)},
        (),
    ),
    "train": (
        ["train", "--data", "{data}", "--model", "{model}", "--job-dir", "{tmp}/job"],
        {},
        ("data", "model"),
    ),
    "baseline": (["baseline", "--data", "{data}", "--job-dir", "{tmp}/job"], {}, ("data",)),
    "distill": (
        ["distill", "--teacher", "{run}", "--data", "{data}", "--student", "{model}", "--job-dir", "{tmp}/j"],
        {},
        ("run", "data", "model"),
    ),
    "evaluate": (["evaluate", "{run}", "--data", "{tmp}/l.csv"], {"l.csv": frame(LABELLED)}, ("run",)),
    "predict": (["predict", "{run}", "a post"], {}, ("run",)),
    "export": (["export", "{run}"], {}, ("run",)),
    "serve": (["serve", "{run}"], {}, ("run",)),
    "select": (
        ["select", "{run}", "--pool", "{tmp}/pool.csv", "--output-dir", "{tmp}/out"],
        {"pool.csv": frame(LABELLED[["text"]])},
        ("run",),
    ),
}
WHAT = {"serve": "invalid server settings: ", "predict": ""}  # predict's sentences stand alone


def outside(within: str, whole: bool) -> list:
    """Values just outside each end of a range in interval notation (none beyond an infinite end)."""
    low, high = (float(x) for x in within[1:-1].split(","))
    step = 1 if whole else 0.5
    found = [low - step if within[0] == "[" else low]
    if not math.isinf(high):
        found.append(high + step if within[-1] == "]" else high)
    return [int(v) for v in found] if whole else found


def said(within: str) -> str:
    high = float(within[1:-1].split(",")[1])
    if math.isinf(high):
        return (">= " if within[0] == "[" else "> ") + f"{float(within[1:-1].split(',')[0]):g}"
    return f"in {within}"


def option_cases() -> Iterator[Case]:
    import dataclasses
    import typing

    from sentitune.cli import COMMANDS

    for command in COMMANDS:
        if command.name not in OPTION_BASES:
            continue
        base, files, needs = OPTION_BASES[command.name]
        what = WHAT.get(command.name, f"invalid {command.name} options: ")
        hints = typing.get_type_hints(command.config)
        for f in dataclasses.fields(command.config):
            within = f.metadata.get("within")
            flag = "--" + f.name.replace("_", "-")
            if command.name == "train" and f.name not in command.config.NOT_REPLAYED:
                kind = hints[f.name]
                if f.metadata.get("choices"):  # through --config, where no parser stops it
                    choices = ", ".join(map(str, f.metadata["choices"]))
                    yield Case(
                        f"option-train-config-{f.name}-choice",
                        [*base, "--config", "{tmp}/run_config.json"],
                        f"invalid train options: {flag} must be one of {choices}, got 'nonsense'",
                        {"run_config.json": text(json.dumps({"train": {f.name: "nonsense"}}))},
                        needs=needs,
                    )
                elif kind is bool or kind == "bool":
                    yield Case(
                        f"option-train-config-{f.name}-type",
                        [*base, "--config", "{tmp}/run_config.json"],
                        f"invalid train options: {flag} must be true or false, got 'yes'",
                        {"run_config.json": text(json.dumps({"train": {f.name: "yes"}}))},
                        needs=needs,
                    )
            if not within or f.metadata.get("cli") is False:
                continue
            flag, whole = (
                "--" + f.name.replace("_", "-"),
                int in typing.get_args(hints[f.name]) or hints[f.name] is int,
            )
            for value in outside(within, whole):
                yield Case(
                    f"option-{command.name}-{f.name}-{value}",
                    [*base, flag, str(value)],
                    f"{what}{flag} must be {said(within)}, got {value}",
                    dict(files),
                    needs=needs,
                    written=("run",) if "run" in needs else (),
                )
            if not whole:
                for value in ("nan", "inf"):
                    yield Case(
                        f"option-{command.name}-{f.name}-{value}",
                        [*base, flag, value],
                        f"{what}{flag} must be a finite number, got {float(value)}",
                        dict(files),
                        needs=needs,
                        written=("run",) if "run" in needs else (),
                    )
            if command.name == "train":
                low = outside(within, whole)[0]
                for name, value, message in (
                    (
                        "type",
                        "3",
                        f"{flag} must be {'a whole number' if whole else 'a number'}{' (or unset)' if type(None) in typing.get_args(hints[f.name]) else ''}, got '3'",
                    ),
                    ("range", low, f"{flag} must be {said(within)}, got {low}"),
                ):
                    yield Case(
                        f"option-train-config-{f.name}-{name}",
                        [*base, "--config", "{tmp}/run_config.json"],
                        f"invalid train options: {message}",
                        {"run_config.json": text(json.dumps({"train": {f.name: value}}))},
                        needs=needs,
                    )


ALL = (
    prepare_cases,
    train_cases,
    run_folder_cases,
    predict_cases,
    serve_cases,
    baseline_cases,
    storage_cases,
    cli_cases,
    option_cases,
)


def cases() -> list[Case]:
    found = [case for make in ALL for case in make()]
    names = [c.name for c in found]
    assert len(names) == len(set(names)), "case names must be unique"
    return found
