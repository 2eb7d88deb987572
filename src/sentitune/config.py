"""The dataclasses every command is built from; the command line is derived from their fields.

Each field carries its help text in `metadata["help"]`, so `--help`, the README and the code agree.
`__post_init__` collects every problem into one message instead of stopping at the first.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from sentitune.errors import SentituneError

LABEL_SOURCES = ("auto", "score", "category", "vader")
FORMATS = ("csv", "parquet")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PRECISION_ENV = "SENTITUNE_PRECISION"  # what --precision auto means, when set (runtime.choose_precision)
PRECISION_HELP = (
    "auto: bf16 on GPUs of compute capability 8.0+ and CPUs with AVX512-BF16 or AMX, fp16 with a gradient "
    f"scaler on older GPUs, else fp32; ${PRECISION_ENV} sets what auto means"
)
BACKENDS = ("torch", "onnx", "onnx-int8")  # the run's PyTorch model or its `sentitune export`
CLASS_WEIGHTS = ("none", "auto")
POOLINGS = ("auto", "cls", "mean")
# `train --preset`, from the quality grid (BENCHMARKS.md, "Model quality"); options given explicitly win
# over the preset's. "balanced" is the plain defaults.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"keep_layers": 3, "epochs": 1, "learning_rate": 1e-4},
    "balanced": {},
}


def opt(default, help: str, **extra):
    """A dataclass field with its CLI help."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


def data_source_problems(cfg) -> list[str]:
    """What is wrong with the data flags shared by train and baseline (--data or the three files)."""
    files = [cfg.training_file, cfg.validation_file, cfg.testing_file]
    if cfg.data and any(files):
        return ["pass either --data DIR or --training-file/--validation-file/--testing-file"]
    if not cfg.data and not cfg.training_file:
        return ["no training data: pass --data DIR (from `sentitune prepare`) or --training-file FILE"]
    return []


def _check(problems: list[str], what: str) -> None:
    if problems:
        raise SentituneError(f"invalid {what}: " + "; ".join(problems))


@dataclass
class PrepareConfig:
    """How `sentitune prepare` reads, labels, cleans and splits posts."""

    inputs: list[str] = opt(
        [], "CSV / TSV / JSONL / Parquet files or URLs; default: the embedded tweet corpus", positional=True
    )
    output_dir: str = opt(
        "", "folder or URL for train/eval/test, labels.json and prepare_report.json", required=True
    )
    text_column: str = opt("bodyText", "column holding the post text (falls back to a single 'text' column)")
    label_column: str | None = opt(
        None,
        "column holding the label or score; default: the first of sentiment, label, labels, Target, score",
    )
    label_source: str = opt(
        "auto",
        "how labels are read: auto, score (number -> class by sign), "
        "category (names or ids), vader (score the text with VADER)",
        choices=LABEL_SOURCES,
        flag="--label-type",
    )
    label_with: str | None = opt(
        None, "label unlabelled text: 'vader' scores it with VADER", choices=("vader",)
    )
    neutral_band: float = opt(0.0, "with scores: |score| <= B is neutral (0 = the walkthrough's sign rule)")
    label_map: str | None = opt(None, "explicit label mapping, e.g. 'bad=negative,meh=neutral,good=positive'")
    val_fraction: float = opt(0.1, "fraction of each class in the validation split (eval file)")
    test_fraction: float = opt(0.1, "fraction of each class in the test split")
    seed: int = opt(42, "random seed of the split; same inputs and seed give byte-identical files")
    format: str = opt("csv", "split file format", choices=FORMATS)
    drop_near_duplicates: bool = opt(
        False,
        "also drop near-duplicates (same text after case, whitespace, "
        "@user and link normalisation); they are always reported",
    )
    chunk_rows: int = opt(100_000, "rows read per chunk: bounds memory on large inputs")
    overwrite: bool = opt(False, "replace splits already in --output-dir")

    def __post_init__(self) -> None:
        if self.label_with == "vader":
            self.label_source = "vader"
        problems = []
        if not self.output_dir:
            problems.append("--output-dir is required")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                problems.append(f"--{name.replace('_', '-')} must be in [0, 1), got {value}")
        if self.val_fraction + self.test_fraction >= 1:
            problems.append(
                f"--val-fraction + --test-fraction must leave rows for training, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        if self.neutral_band < 0:
            problems.append(f"--neutral-band must be >= 0, got {self.neutral_band}")
        if self.chunk_rows < 1:
            problems.append("--chunk-rows must be positive")
        if self.label_map and self.label_source not in ("auto", "category"):
            problems.append("--label-map applies to categorical labels; drop --label-type score/vader")
        _check(problems, "prepare options")


@dataclass
class TrainConfig:
    """How `sentitune train` fine-tunes a model; the first eight flags are the walkthrough's own."""

    training_file: str | None = opt(
        None, "labelled training file (text in bodyText/text, label in Target/label/sentiment)"
    )
    validation_file: str | None = opt(None, "labelled validation file, evaluated during training")
    testing_file: str | None = opt(None, "labelled test file, evaluated once at the end")
    job_dir: str | None = opt(
        None,
        "run folder or URL written at the end (model, metrics, plots); Vertex AI's AIP_MODEL_DIR when unset",
    )
    epochs: int = opt(2, "passes over the training data")
    batch_size: int = opt(32, "examples per optimiser step")
    learning_rate: float = opt(5e-5, "peak learning rate of AdamW")
    dry_run: bool = opt(False, "one training and one validation step, nothing written but the log")
    data: str | None = opt(None, "a folder written by `sentitune prepare`, in place of the three files")
    preset: str | None = opt(
        None,
        "fast (the first 3 layers, 1 epoch, learning rate 1e-4: about 7 minutes on 2 CPU cores for "
        "47k tweets) or balanced (the defaults: 6 layers, 2 epochs); options given explicitly "
        "override the preset's",
        choices=tuple(TRAIN_PRESETS),
    )
    model: str | None = opt(
        None,
        "Hugging Face hub id or local folder of a BERT-family encoder; "
        "default: the embedded all-MiniLM-L6-v2",
    )
    text_column: str | None = opt(None, "text column of the input files; default: bodyText, else text")
    label_column: str | None = opt(
        None, "label column of the input files; default: Target, label, sentiment, labels, score"
    )
    max_length: int = opt(100, "tokens per post at most (longer posts are truncated)")
    keep_layers: int | None = opt(None, "use only the first N encoder layers: smaller and faster")
    freeze_layers: int = opt(0, "freeze the embeddings and the first N encoder layers")
    pooling: str = opt(
        "auto",
        "what the head reads: the pooled [CLS] token (a standard transformers folder), the mean of the "
        "post's token states (BERT-style heads), or auto: mean for sentence-transformers encoders "
        "trained with mean pooling (the embedded MiniLM), else cls",
        choices=POOLINGS,
    )
    train_head_only: bool = opt(
        False,
        "freeze the whole encoder and train only the classifier (transfer learning instead of fine-tuning)",
    )
    weight_decay: float = opt(0.01, "AdamW weight decay (not applied to biases and LayerNorm)")
    warmup_ratio: float = opt(0.06, "fraction of the steps with linear learning-rate warm-up")
    label_smoothing: float = opt(0.0, "spread this much of each target over the other classes (0 = none)")
    layer_lr_decay: float = opt(
        1.0, "layer-wise learning-rate decay: each layer below the head learns at this times the one above"
    )
    max_grad_norm: float = opt(1.0, "clip gradients to this norm (0 = no clipping)")
    seed: int = opt(42, "seed of the initialisation, dropout and data order")
    max_steps: int | None = opt(None, "stop after this many optimiser steps (overrides --epochs)")
    eval_every: int = opt(0, "validate every N steps (0 = after each epoch)")
    early_stopping_patience: int = opt(
        0, "stop after N validations without a better macro-F1 (0 = never); the best model is kept either way"
    )
    class_weights: str = opt(
        "none", "'auto' weights the loss by inverse class frequency", choices=CLASS_WEIGHTS
    )
    device: str = opt("auto", "where to train", choices=DEVICES)
    num_threads: int | None = opt(None, "CPU threads for torch (default: torch's choice)")
    precision: str = opt("auto", PRECISION_HELP, choices=PRECISIONS)
    eval_batch_size: int = opt(64, "examples per batch when evaluating (64 is fastest on CPUs)")
    log_every: int = opt(50, "log a progress line every N steps")
    train_eval_examples: int = opt(
        2000, "training examples re-evaluated at the end for the train metrics (0 = skip)"
    )
    tensorboard_dir: str | None = opt(
        None,
        "write TensorBoard events here (local or gs://); default: Vertex AI's AIP_TENSORBOARD_LOG_DIR, else none",
    )
    checkpoint_dir: str | None = opt(
        None,
        "where checkpoints go (local or URL); default: Vertex AI's "
        "AIP_CHECKPOINT_DIR, else JOB_DIR/checkpoints",
    )
    checkpoint_every: int = opt(
        0,
        "checkpoint every N steps (0: only on SIGTERM); a rerun of the same "
        "command resumes from the latest checkpoint",
    )
    baseline: bool = opt(
        False,
        "also fit the TF-IDF + logistic regression baseline on the same splits and "
        "report it beside the model (pip install 'sentitune[baseline]')",
    )
    dist_timeout: float = opt(
        600.0, "under torchrun: seconds a process waits to join the others and for each exchange"
    )
    overwrite: bool = opt(False, "replace a run already in --job-dir")

    PRESETS: typing.ClassVar[dict[str, dict[str, Any]]] = TRAIN_PRESETS

    def __post_init__(self) -> None:
        problems = data_source_problems(self)
        for name in ("epochs", "batch_size", "max_length", "eval_batch_size", "log_every"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            problems.append(f"--learning-rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 < self.layer_lr_decay <= 1:
            problems.append(f"--layer-lr-decay must be in (0, 1], got {self.layer_lr_decay}")
        for name in ("max_steps", "keep_layers", "num_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if (
            self.freeze_layers < 0
            or self.eval_every < 0
            or self.early_stopping_patience < 0
            or self.checkpoint_every < 0
        ):
            problems.append(
                "--freeze-layers, --eval-every, --early-stopping-patience and --checkpoint-every must be >= 0"
            )
        if self.max_length > 512:
            problems.append(f"--max-length {self.max_length} exceeds BERT's 512 positions")
        _check(problems, "train options")


VERTEX_BODY_LIMIT = 1_500_000  # Vertex AI refuses prediction requests over 1.5 MB


@dataclass
class ServeSettings:
    """Where the server listens, its routes, how it batches and what it accepts."""

    host: str = opt("0.0.0.0", "address to listen on (0.0.0.0: every interface, as Vertex AI needs)")
    port: int = opt(8080, "port to listen on; Vertex AI passes it as AIP_HTTP_PORT")
    health_route: str = opt("/health", "GET route answering 200 once the model is loaded (AIP_HEALTH_ROUTE)")
    predict_route: str = opt("/predict", "POST route answering predictions (AIP_PREDICT_ROUTE)")
    max_batch: int = opt(64, "most instances of concurrent requests merged into one batch")
    model_batch: int = opt(
        16,
        "posts per forward pass: a batch is sorted by length and run in passes of this many, so short "
        "posts are not padded to the longest (benchmarks/onnx_speed.py: 16 was fastest, int8 252 vs 189 tweets/s at 64)",
    )
    max_wait_ms: float = opt(5.0, "how long the first request of a batch waits for others to join it")
    max_instances: int = opt(1000, "most instances in one request (more: 413)")
    max_text_chars: int = opt(
        10_000, "longest text in characters (longer: 413); shorter texts are cut to the run's max length"
    )
    max_body_bytes: int = opt(VERTEX_BODY_LIMIT, "largest request body in bytes (larger: 413)")

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"port must be in 0..65535, got {self.port}")
        for name in ("health_route", "predict_route"):
            if not str(getattr(self, name)).startswith("/"):
                problems.append(f"{name} must start with '/', got {getattr(self, name)!r}")
        if self.health_route == self.predict_route:
            problems.append(f"the health and predict routes must differ, both are {self.health_route!r}")
        for name in ("max_batch", "model_batch", "max_instances", "max_text_chars", "max_body_bytes"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            problems.append(f"--max-wait-ms must be at least 0, got {self.max_wait_ms}")
        if problems:
            raise SentituneError("invalid server settings: " + "; ".join(problems))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **given: Any) -> ServeSettings:
        """Settings from the Vertex AI variables, overridden by the `given` values that are not None."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        if "port" not in values and env.get("AIP_HTTP_PORT"):
            try:
                values["port"] = int(env["AIP_HTTP_PORT"])
            except ValueError:
                raise SentituneError(
                    f"AIP_HTTP_PORT must be a port number, got {env['AIP_HTTP_PORT']!r}"
                ) from None
        for name, variable in (("health_route", "AIP_HEALTH_ROUTE"), ("predict_route", "AIP_PREDICT_ROUTE")):
            if name not in values and env.get(variable):
                values[name] = env[variable]
        return cls(**values)


# ----------------------------------------------------------------------------- CLI derivation


def _base_type(annotation) -> type:
    hint = typing.get_origin(annotation)
    if hint in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    if hint is list:
        return str
    return annotation


def add_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One option per dataclass field: `--field-name`, its type, choices and help."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        meta = dict(f.metadata)
        help_text = meta.get("help", "")
        kind = _base_type(hints[f.name])
        if meta.get("positional"):
            many = typing.get_origin(hints[f.name]) is list or hints[f.name] is list
            metavar = meta.get("metavar", f.name.rstrip("s").upper())
            parser.add_argument(f.name, nargs="*" if many else None, metavar=metavar, help=help_text)
            continue
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action="store_true", help=help_text)
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        kwargs = dict(dest=f.name, type=kind, help=help_text, default=argparse.SUPPRESS)
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if meta.get("action"):
            kwargs["action"] = meta["action"]
        if meta.get("required"):
            kwargs["required"] = True
        elif default not in (None, "", []):
            kwargs["help"] = f"{help_text} (default: {default})"
        parser.add_argument(flag, **kwargs)


def _with_preset(cls, values: dict) -> dict:
    """`values` (the options given) over the chosen preset's, for dataclasses with PRESETS."""
    return {**cls.PRESETS[values["preset"]], **values} if values.get("preset") else values


def train_option(ns: argparse.Namespace, name: str):
    """The value `sentitune train` would use for option `name` given parsed arguments: the one given,
    else the preset's, else the default."""
    values = _with_preset(TrainConfig, vars(ns))
    if name in values:
        return values[name]
    return next(f.default for f in dataclasses.fields(TrainConfig) if f.name == name)


def from_namespace(cls, ns: argparse.Namespace, **overrides):
    """Build the dataclass from parsed options; options not given take the chosen preset's value (for
    dataclasses with PRESETS), else the dataclass default."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(ns).items() if k in names}
    values.update(overrides)
    return cls(**_with_preset(cls, values))
