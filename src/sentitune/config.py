"""The dataclasses every command is built from, and the command line derived from their fields.

Each field carries its help text and its `--help` group in its metadata, so `--help`, the README and the
code agree. An option that several commands take is declared once, below ("shared options"), and every
command that takes it uses that declaration; `opt()` records where each was declared, and a test walks
the parser to hold that. `__post_init__` collects every problem into one message instead of stopping at
the first. Nothing here imports torch: building the parser stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from sentitune.errors import SentituneError, raise_problems, short
from sentitune.layout import RUN_CONFIG
from sentitune.normalize import SCHEMES as NORMALIZE_SCHEMES
from sentitune.storage import join, open_input

LABEL_SOURCES = ("auto", "score", "category", "vader")
FORMATS = ("csv", "parquet")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PRECISION_ENV = "SENTITUNE_PRECISION"  # what --precision auto means, when set (runtime.choose_precision)
BACKENDS = ("torch", "onnx", "onnx-int8")  # the run's PyTorch model or its `sentitune export`
CLASS_WEIGHTS = ("none", "auto")
CONFLICTS = ("later", "drop")  # prepare: which label a post labelled twice keeps
SELECT_FORMATS = ("csv", "label-studio")
SELECT_STRATEGIES = ("margin", "entropy", "random")
POOLINGS = ("auto", "cls", "mean")
EXPORT_FORMATS = ("onnx",)
QUANTIZE = ("int8",)
INFERENCE_BATCH = 64  # posts per forward pass when evaluating and predicting
# The columns looked for when --text-column / --label-column are not given, by name (any case; _, - and
# spaces ignored), then by the last word of the name (Review_Text, tweetText). The first group with a
# match decides; two matches in one group are refused as ambiguous. First the walkthrough's names
# (bodyText; Target in its split files, sentiment in its posts).
TEXT_COLUMNS = (("bodyText",), ("text", "tweet", "message", "content", "body", "post", "review", "comment"))
LABEL_COLUMNS = (("Target",), ("label", "labels"), ("sentiment", "polarity"), ("stars", "rating", "score"))
VERTEX_BODY_LIMIT = 1_500_000  # Vertex AI refuses prediction requests over 1.5 MB
# `train --preset`, from the quality grid (BENCHMARKS.md, "Model quality"); options given explicitly win
# over the preset's. "balanced" is the plain defaults.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"keep_layers": 3, "epochs": 1, "learning_rate": 1e-4},
    "balanced": {},
}

# --help groups, in the order they are shown
DATA, MODEL, TRAINING, EVALUATION, RUNTIME, OUTPUT, SERVER, JOB = (
    "data",
    "model",
    "training",
    "evaluation",
    "runtime",
    "output",
    "server",
    "job",
)


def opt(default, help: str, *, group: str | None = None, factory=None, **extra):
    """A dataclass field with its CLI help and --help group (`factory`: a function giving the default at
    construction, e.g. from the environment). `extra`: positional, metavar, flag, choices, action,
    nargs, required, cli (False: not on the command line)."""
    caller = sys._getframe(1)  # where the option is declared: one place per option (see the tests)
    meta = {
        "help": help,
        "group": group,
        "declared_at": f"{caller.f_code.co_filename}:{caller.f_lineno}",
        **extra,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def value_problems(cfg, what: str) -> list[str]:
    """Each option's value against its declared type, choices and range (`within`), whichever way it came
    in (a flag, `--config`, the environment, the Python API). A wrong type or choice is refused at once,
    as invalid `what` (no check after could compare it); range problems, NaN and infinity included (they
    pass every `<` and `>`), are returned for the caller's list."""
    hints = typing.get_type_hints(type(cfg))
    wrong_kind, problems = [], []
    for f in dataclasses.fields(cfg):
        value, flag = getattr(cfg, f.name), f"--{f.name.replace('_', '-')}"
        expected = hints.get(f.name, Any)
        if not _is_a(value, expected):
            wrong_kind.append(f"{flag} must be {_kind(expected)}, got {short(repr(value), 40)}")
            continue
        choices = f.metadata.get("choices")
        values = value if isinstance(value, list) else [value]
        wrong = [v for v in values if choices and v is not None and v not in choices]
        if wrong:
            wrong_kind.append(
                f"{flag} must be one of {', '.join(map(str, choices))}, got {short(repr(wrong[0]), 40)}"
            )
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{flag} must be a finite number, got {value}")
        elif (within := f.metadata.get("within")) and value is not None and not Interval(within).holds(value):
            problems.append(f"{flag} must be {Interval(within).said()}, got {value}")
    raise_problems(wrong_kind, what)
    return problems


@dataclass(frozen=True)
class Interval:
    """An option's range in interval notation, e.g. '[1, 1000]', '(0, 1]', '[0, inf)'."""

    text: str

    def parts(self) -> tuple[bool, float, float, bool]:
        low, high = (float(x) for x in self.text[1:-1].split(","))
        return self.text[0] == "[", low, high, self.text[-1] == "]"

    def holds(self, value: float) -> bool:
        closed_low, low, high, closed_high = self.parts()
        return (low <= value if closed_low else low < value) and (
            value <= high if closed_high else value < high
        )

    def said(self) -> str:
        closed_low, low, high, _ = self.parts()
        if math.isinf(high):
            return f"{'>=' if closed_low else '>'} {low:g}"
        return f"in {self.text}"


def _is_a(value, expected) -> bool:
    if expected is Any:
        return True
    options = typing.get_args(expected) if isinstance(expected, types.UnionType) else (expected,)
    for option in options:
        origin = typing.get_origin(option)
        if option is type(None) and value is None:
            return True
        if origin is list:
            inner = (typing.get_args(option) or (Any,))[0]
            if isinstance(value, list) and all(_is_a(v, inner) for v in value):
                return True
        elif option is bool:
            if isinstance(value, bool):
                return True
        elif option is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return True
        elif option is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return True
        elif option is str:
            if isinstance(value, str | os.PathLike):
                return True
        elif origin is None and isinstance(option, type) and isinstance(value, option):
            return True
    return False


def _kind(expected) -> str:
    names = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}
    options = typing.get_args(expected) if isinstance(expected, types.UnionType) else (expected,)
    shown = [
        "a list" if typing.get_origin(o) is list else names.get(o, getattr(o, "__name__", str(o)))
        for o in options
        if o is not type(None)
    ]
    return " or ".join(shown) + (" (or unset)" if type(None) in options else "")


# ----------------------------------------------------------------------------- shared options


def run_dir_argument(help: str = "run folder (local or URL) written by train", required: bool = True):
    return opt(None, help, positional=True, metavar="RUN_DIR", nargs=None if required else "?")


def text_column_option():
    return opt(
        None,
        f"column holding the post text (default: the one named {_named(TEXT_COLUMNS)}, or ending in one)",
        group=DATA,
    )


def label_column_option():
    return opt(
        None,
        f"column holding the label or score (default: the one named {_named(LABEL_COLUMNS)}, or ending in one)",
        group=DATA,
    )


def _named(groups: tuple[tuple[str, ...], ...]) -> str:
    return ", else ".join("/".join(group) for group in groups)


def json_option():
    return opt(False, "print one JSON object instead of text", group=OUTPUT)


def overwrite_option():
    return opt(
        False, "replace what an earlier run of the command wrote there (refused otherwise)", group=OUTPUT
    )


def device_option():
    return opt(
        "auto",
        "where the model runs: auto picks CUDA, else Apple MPS, else the CPU",
        choices=DEVICES,
        group=RUNTIME,
    )


def precision_option():
    return opt(
        "auto",
        "auto: bf16 on GPUs of compute capability 8.0+ and CPUs with AVX512-BF16 or AMX, fp16 with a gradient "
        f"scaler on older GPUs, else fp32; ${PRECISION_ENV} sets what auto means",
        choices=PRECISIONS,
        group=RUNTIME,
    )


def num_threads_option():
    return opt(
        None,
        "CPU threads for torch (default: torch's choice, one per physical core)",
        group=RUNTIME,
        within="[1, 1024]",
    )


def backend_option(default: str = "torch"):
    return opt(
        default,
        "run the PyTorch model, or its ONNX export from `sentitune export` (onnx, onnx-int8: CPU, needs "
        "onnxruntime)",
        choices=BACKENDS,
        group=RUNTIME,
    )


def inference_batch_option():
    return opt(INFERENCE_BATCH, "posts per forward pass", group=RUNTIME, within="[1, 65536]")


def normalize_option():
    return opt(
        "tweet",
        "rewrite posts before tokenising, the same way wherever the model is used later: tweet turns emoji "
        "and emoticons into words, mentions into @user, links into http, unescapes HTML and cuts "
        "elongations (soooo -> soo); none reads them as written",
        choices=NORMALIZE_SCHEMES,
        group=MODEL,
    )


def split_hashtags_option():
    return opt(
        False, "with --normalize tweet, also split hashtags into words (#NotHappy -> not happy)", group=MODEL
    )


def labels_option():
    return opt(
        None,
        "the classes, in order, e.g. negative,positive or 1,2,3,4,5 (default: a prepared folder's labels.json, "
        "else negative,neutral,positive)",
        group=DATA,
    )


def label_set_problems(cfg) -> list[str]:
    """--labels (and --thresholds, where the command has it) that cannot name a label set."""
    from sentitune.labels import parse_labels, parse_thresholds

    try:
        classes = parse_labels(cfg.labels)
        parse_thresholds(getattr(cfg, "thresholds", None), classes)
    except SentituneError as exc:
        return [str(exc)]
    return []


def check_layers(
    keep: int | None, frozen: int, head_only: bool, layers: int, what: str = "the model"
) -> list[str]:
    """--keep-layers and --freeze-layers against an encoder of `layers` layers: train keeps the first
    --keep-layers, then freezes --freeze-layers of those (the one rule for train and the cloud checks)."""
    if keep and keep > layers:
        return [f"--keep-layers {keep} exceeds {what}'s {layers} layers; pass at most {layers}"]
    kept = keep or layers
    if frozen > kept and not head_only:
        return [f"--freeze-layers {frozen} exceeds the {kept} layers trained; pass at most {kept}"]
    return []


def model_labels_option():
    return opt(
        None,
        "for a classifier from elsewhere: what its labels mean, e.g. 'LABEL_0=negative,LABEL_1=neutral,"
        "LABEL_2=positive' (default: read from its names: negative/neutral/positive in any order or "
        "spelling, LABEL_0..LABEL_2 in that order, ratings 1-5 as 1-2 negative, 3 neutral, 4-5 positive)",
        group=MODEL,
    )


def normalize_problems(cfg) -> list[str]:
    if cfg.split_hashtags and cfg.normalize == "none":
        return ["--split-hashtags is part of --normalize tweet; drop it or pass --normalize tweet"]
    return []


def train_eval_examples_option():
    return opt(
        2000,
        "training examples re-evaluated at the end for the train metrics (0 = skip)",
        group=EVALUATION,
        within="[0, 1000000000]",
    )


@dataclass
class DataFiles:
    """Labelled data as `train` and `baseline` read it: a prepared folder, or the walkthrough's files."""

    training_file: str | None = opt(
        None,
        "labelled training file (text in bodyText or text; label in Target, label, sentiment...)",
        group=DATA,
    )
    validation_file: str | None = opt(None, "labelled validation file, evaluated during training", group=DATA)
    testing_file: str | None = opt(None, "labelled test file, evaluated once at the end", group=DATA)
    data: str | None = opt(
        None, "a folder written by `sentitune prepare`, in place of the three files", group=DATA
    )
    text_column: str | None = text_column_option()
    label_column: str | None = label_column_option()
    labels: str | None = labels_option()

    def data_problems(self) -> list[str]:
        files = [self.training_file, self.validation_file, self.testing_file]
        if self.data and any(files):
            return ["pass either --data DIR or --training-file/--validation-file/--testing-file"]
        if not self.data and not self.training_file:
            return ["no training data: pass --data DIR (from `sentitune prepare`) or --training-file FILE"]
        return label_set_problems(self)


# ----------------------------------------------------------------------------- prepare and train


@dataclass
class PrepareConfig:
    """How `sentitune prepare` reads, labels, cleans and splits posts."""

    inputs: list[str] = opt(
        [], "CSV / TSV / JSONL / Parquet files or URLs; default: the embedded tweet corpus", positional=True
    )
    output_dir: str = opt(
        "",
        "folder or URL for train/eval/test, labels.json and prepare_report.json",
        required=True,
        group=OUTPUT,
    )
    text_column: str | None = text_column_option()
    label_column: str | None = label_column_option()
    label_source: str = opt(
        "auto",
        "how labels are read: auto, score (number -> class by sign), "
        "category (names or ids), vader (score the text with VADER)",
        choices=LABEL_SOURCES,
        flag="--label-type",
        group=DATA,
    )
    label_with: str | None = opt(
        None, "label unlabelled text: 'vader' scores it with VADER", choices=("vader",), group=DATA
    )
    neutral_band: float = opt(
        0.0,
        "with scores: |score| <= B is neutral (0 = the walkthrough's sign rule)",
        group=DATA,
        within="[0, inf)",
    )
    label_map: str | None = opt(
        None, "explicit label mapping, e.g. 'bad=negative,meh=neutral,good=positive'", group=DATA
    )
    labels: str | None = labels_option()
    thresholds: str | None = opt(
        None,
        "with scores and --labels: N-1 increasing thresholds; a score above one moves up a class "
        "(e.g. --labels negative,neutral,positive --thresholds -0.05,0.05)",
        group=DATA,
    )
    val_fraction: float = opt(
        0.1, "fraction of each class in the validation split (eval file)", group=OUTPUT, within="[0, 1)"
    )
    test_fraction: float = opt(0.1, "fraction of each class in the test split", group=OUTPUT, within="[0, 1)")
    seed: int = opt(
        42,
        "random seed of the split; same inputs and seed give byte-identical files",
        group=OUTPUT,
        within="[0, 4294967295]",
    )
    format: str = opt("csv", "split file format", choices=FORMATS, group=OUTPUT)
    drop_near_duplicates: bool = opt(
        False,
        "also drop near-duplicates (same text after case, whitespace, @user and link normalisation); "
        "they are always reported",
        group=DATA,
    )
    chunk_rows: int = opt(
        100_000, "rows read per chunk: bounds memory on large inputs", group=DATA, within="[1, 10000000]"
    )
    augment: int = opt(
        0,
        "with --label-with vader: add N new training posts per training post, each made by deleting "
        "words from one or joining it to the end of another and labelled by VADER (more text to learn "
        "the labeller from; validation and test stay real posts)",
        group=DATA,
        within="[0, 20]",
    )
    conflicts: str = opt(
        "later",
        "a post read twice with different labels (inputs in the order given, Label Studio annotations by "
        "time): later keeps the later label, drop drops the post; either way they are listed in "
        "conflicts.csv",
        choices=CONFLICTS,
        group=DATA,
    )
    overwrite: bool = overwrite_option()

    def __post_init__(self) -> None:
        if self.label_with == "vader":
            self.label_source = "vader"
        problems = value_problems(self, "prepare options")
        out_of_range = {p.split()[0] for p in problems}  # joint rules below only for options within range
        problems += label_set_problems(self)
        if self.neutral_band and (self.labels is not None or self.thresholds is not None):
            problems.append("--neutral-band is for the 3 default classes; with --labels give --thresholds")
        if not self.output_dir:
            problems.append("--output-dir is required")
        if (
            not {"--val-fraction", "--test-fraction"} & out_of_range
            and self.val_fraction + self.test_fraction >= 1
        ):
            problems.append(
                f"--val-fraction + --test-fraction must leave rows for training, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        if self.label_map and self.label_source not in ("auto", "category"):
            problems.append("--label-map applies to categorical labels; drop --label-type score/vader")
        if self.augment and "--augment" not in out_of_range and self.label_source != "vader":
            problems.append(
                "--augment needs --label-with vader: new posts need a labeller that can score any text, "
                "which a label column is not"
            )
        raise_problems(problems, "prepare options")


@dataclass
class TrainConfig(DataFiles):
    """How `sentitune train` fine-tunes a model; --training-file, --validation-file, --testing-file,
    --job-dir, --epochs, --batch-size, --learning-rate and --dry-run are the walkthrough's own flags."""

    job_dir: str | None = opt(
        None,
        "run folder or URL written at the end (model, metrics, plots); Vertex AI's AIP_MODEL_DIR when unset",
        group=OUTPUT,
    )
    epochs: int = opt(2, "passes over the training data", group=TRAINING, within="[1, 1000]")
    batch_size: int = opt(32, "examples per optimiser step", group=TRAINING, within="[1, 65536]")
    learning_rate: float = opt(5e-5, "peak learning rate of AdamW", group=TRAINING, within="(0, inf)")
    dry_run: bool = opt(
        False, "one training and one validation step, nothing written but the log", group=TRAINING
    )
    config: str | None = opt(
        None,
        "replay a run: its folder or run_config.json (local or URL); options given here override its settings",
        group=TRAINING,
    )
    preset: str | None = opt(
        None,
        "fast (the first 3 layers, 1 epoch, learning rate 1e-4) or balanced (the defaults: 6 layers, 2 epochs); "
        "options given explicitly override the preset's",
        choices=tuple(TRAIN_PRESETS),
        group=TRAINING,
    )
    model: str | None = opt(
        None,
        "Hugging Face hub id or local folder of a BERT-family encoder; default: the embedded all-MiniLM-L6-v2",
        group=MODEL,
    )
    max_length: int = opt(
        100, "tokens per post at most (longer posts are truncated)", group=MODEL, within="[1, 512]"
    )
    keep_layers: int | None = opt(
        None,
        "use only the first N encoder layers: smaller and faster",
        group=MODEL,
        within="[1, 128]",
    )
    freeze_layers: int = opt(
        0, "freeze the embeddings and the first N encoder layers", group=MODEL, within="[0, 128]"
    )
    pooling: str = opt(
        "auto",
        "what the head reads: the pooled [CLS] token (a standard transformers folder), the mean of the "
        "post's token states (BERT-style heads), or auto: mean for sentence-transformers encoders "
        "trained with mean pooling (the embedded MiniLM), else cls",
        choices=POOLINGS,
        group=MODEL,
    )
    normalize: str = normalize_option()
    split_hashtags: bool = split_hashtags_option()
    train_head_only: bool = opt(
        False,
        "freeze the whole encoder and train only the classifier (transfer learning instead of fine-tuning)",
        group=MODEL,
    )
    weight_decay: float = opt(
        0.01,
        "AdamW weight decay (not applied to biases and LayerNorm)",
        group=TRAINING,
        within="[0, inf)",
    )
    warmup_ratio: float = opt(
        0.06, "fraction of the steps with linear learning-rate warm-up", group=TRAINING, within="[0, 1)"
    )
    label_smoothing: float = opt(
        0.0,
        "spread this much of each target over the other classes (0 = none)",
        group=TRAINING,
        within="[0, 1)",
    )
    soft_targets: float = opt(
        0.0,
        "train on targets made from the posts' scores, not only their classes (data prepared from a score "
        "column or with --label-with vader): a post this far (in score units) inside its class's nearest "
        "boundary gives 0.5/e of its target to the class across it, half at the boundary (0 = hard labels)",
        group=TRAINING,
        within="[0, inf)",
    )
    weak_label_weight: float = opt(
        0.5,
        "weight of a VADER-labelled training post against a post people labelled (1), where the prepared "
        "training split mixes both (its label_source column); 1 weighs them alike",
        group=TRAINING,
        within="[0, 1]",
    )
    targets: str | None = opt(
        None,
        "train on these target distributions instead of the labels alone: a safetensors file with one row "
        "per training post, as `sentitune distill` writes it, recording the SHA-256 of the training file it "
        "belongs to",
        group=TRAINING,
    )
    layer_lr_decay: float = opt(
        1.0,
        "layer-wise learning-rate decay: each layer below the head learns at this times the one above",
        group=TRAINING,
        within="(0, 1]",
    )
    max_grad_norm: float = opt(
        1.0, "clip gradients to this norm (0 = no clipping)", group=TRAINING, within="[0, inf)"
    )
    seed: int = opt(
        42, "seed of the initialisation, dropout and data order", group=TRAINING, within="[0, 4294967295]"
    )
    max_steps: int | None = opt(
        None,
        "stop after this many optimiser steps (overrides --epochs and --min-steps)",
        group=TRAINING,
        within="[1, 1000000000]",
    )
    min_steps: int = opt(
        250,
        "train at least this many optimiser steps: with few training posts, as many more epochs as that "
        "takes (logged); 0: exactly --epochs",
        group=TRAINING,
        within="[0, 1000000000]",
    )
    class_weights: str = opt(
        "none", "'auto' weights the loss by inverse class frequency", choices=CLASS_WEIGHTS, group=TRAINING
    )
    eval_every: int = opt(
        0, "validate every N steps (0 = after each epoch)", group=EVALUATION, within="[0, 1000000000]"
    )
    early_stopping_patience: int = opt(
        0,
        "stop after N validations without a better macro-F1 (0 = never); the best model is kept either way",
        group=EVALUATION,
        within="[0, 1000000]",
    )
    eval_batch_size: int = opt(
        INFERENCE_BATCH, "examples per batch when evaluating", group=EVALUATION, within="[1, 65536]"
    )
    train_eval_examples: int = train_eval_examples_option()
    baseline: bool = opt(
        False,
        "also fit the TF-IDF + logistic regression baseline on the same splits and report it beside the model "
        "(pip install 'sentitune[baseline]')",
        group=EVALUATION,
    )
    calibration: str = opt(
        "temperature",
        "temperature: one temperature fitted on the validation split, kept only if it lowers the NLL of "
        "validation posts it was not fitted on (5-fold cross-fitting; not tried below 100 posts or 5 of a "
        "class); built into the saved head, labels unchanged; none: the scores as trained",
        choices=("temperature", "none"),
        group=EVALUATION,
    )
    dropout_masks: str = opt(
        "fast",
        "fast: on the CPU, draw dropout masks from 16-bit slices of 64-bit random integers (less than half "
        "the cost of torch's; the same Bernoulli masks to 1/65536 in p); torch: torch's own dropout",
        choices=("fast", "torch"),
        group=RUNTIME,
    )
    device: str = device_option()
    precision: str = precision_option()
    num_threads: int | None = num_threads_option()
    dist_timeout: float = opt(
        600.0,
        "under torchrun: seconds a process waits to join the others and for each exchange",
        group=RUNTIME,
        within="(0, 86400]",
    )
    log_every: int = opt(50, "log a progress line every N steps", group=OUTPUT, within="[1, 1000000000]")
    tensorboard_dir: str | None = opt(
        None,
        "write TensorBoard events here (local or gs://); default: Vertex AI's AIP_TENSORBOARD_LOG_DIR, else none",
        group=OUTPUT,
    )
    checkpoint_dir: str | None = opt(
        None,
        "where checkpoints go (local or URL); default: Vertex AI's AIP_CHECKPOINT_DIR, else JOB_DIR/checkpoints",
        group=OUTPUT,
    )
    checkpoint_every: int = opt(
        0,
        "checkpoint every N steps (0: only on SIGTERM); a rerun of the same command resumes from the latest "
        "checkpoint",
        group=OUTPUT,
        within="[0, 1000000000]",
    )
    overwrite: bool = overwrite_option()

    PRESETS: typing.ClassVar[dict[str, dict[str, Any]]] = TRAIN_PRESETS
    # Where a run wrote, not how it trained: a replay writes afresh where it is told.
    NOT_REPLAYED: typing.ClassVar[set[str]] = {
        "job_dir", "checkpoint_dir", "tensorboard_dir", "overwrite", "dry_run", "config",
    }  # fmt: skip

    @classmethod
    def replayed(cls, values: dict) -> dict:
        """The options given (`values`, with --config) over the train settings recorded in that run's
        run_config.json; a --preset given now applies between the two."""
        path = str(values["config"])
        if not path.endswith(".json"):
            path = join(path, RUN_CONFIG)
        try:
            with open_input(path, "rb") as f:
                document = json.load(f)
        except (OSError, SentituneError) as exc:
            raise SentituneError(
                f"--config {path}: cannot read it ({short(exc)}); pass a run folder or its run_config.json"
            ) from None
        except ValueError:
            raise SentituneError(
                f"--config {path} is not JSON; pass the run_config.json of a `sentitune train` run"
            ) from None
        settings = document.get("train") if isinstance(document, dict) else None
        if not isinstance(settings, dict):
            raise SentituneError(
                f"--config {path} has no train settings; pass the run_config.json of a `sentitune train` run"
            )
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise SentituneError(
                f"--config {path} holds train settings this sentitune does not know ({', '.join(unknown[:5])}); it was "
                f"written by sentitune {document.get('sentitune_version', '?')}: delete them from a copy or use that version"
            )
        given = {k: v for k, v in values.items() if v is not False}  # a flag not given is False, not a choice
        preset = cls.PRESETS[given["preset"]] if given.get("preset") else {}
        recorded = {k: v for k, v in settings.items() if k not in cls.NOT_REPLAYED}
        recorded.setdefault("normalize", "none")  # a run from before normalisation read posts as written
        return {**recorded, **preset, **given}

    def __post_init__(self) -> None:
        problems = value_problems(self, "train options") + self.data_problems()
        problems += normalize_problems(self)
        raise_problems(problems, "train options")


@dataclass
class BaselineConfig(DataFiles):
    """How `sentitune baseline` reads the data and fits TF-IDF + logistic regression."""

    job_dir: str = opt(
        "", "folder or URL for metrics.json, confusion_matrix.png and the model", required=True, group=OUTPUT
    )
    c: float = opt(
        0.5,
        "inverse L2 regularisation strength C of the logistic regression (larger fits slower)",
        group=TRAINING,
        within="(0, 1000000]",
    )
    class_weights: str = opt(
        "auto",
        "'auto' weights classes by inverse frequency (helps macro-recall)",
        choices=CLASS_WEIGHTS,
        group=TRAINING,
    )
    min_df: int = opt(
        2, "keep n-grams seen in at least this many training posts", group=TRAINING, within="[1, 1000000]"
    )
    normalize: str = normalize_option()
    split_hashtags: bool = split_hashtags_option()
    max_iter: int = opt(
        100, "passes of the SAG solver over the data at most", group=TRAINING, within="[1, 100000]"
    )
    train_eval_examples: int = train_eval_examples_option()
    overwrite: bool = overwrite_option()

    def __post_init__(self) -> None:
        problems = value_problems(self, "baseline options") + self.data_problems()
        if not self.job_dir:
            problems.append("--job-dir is required")
        problems += normalize_problems(self)
        raise_problems(problems, "baseline options")


@dataclass
class DistillConfig(TrainConfig):
    """`sentitune distill`: train's options for the student (--student in place of --model), plus its
    teachers and how their probabilities and the gold labels make the targets."""

    model: str | None = opt(
        None,
        "the student: a hub id, a local folder or embedded:NAME (default: the embedded all-MiniLM-L6-v2)",
        flag="--student",
        group=MODEL,
    )
    teacher: list[str] = opt(
        [],
        "a teacher: a run folder (or its ONNX export, with --teacher-backend) or a classifier's folder or hub "
        "id (with --model-labels); repeat it for an ensemble, whose probabilities are averaged",
        action="append",
        metavar="RUN",
        group=MODEL,
    )
    teacher_backend: str = opt(
        "torch",
        "run each teacher's PyTorch model, or its ONNX export from `sentitune export` (onnx, onnx-int8)",
        choices=BACKENDS,
        group=RUNTIME,
    )
    model_labels: str | None = model_labels_option()
    unlabelled: list[str] = opt(
        [],
        "posts without labels the student also learns from, with the teachers' probabilities as targets: "
        "CSV/TSV/JSONL/Parquet files or URLs (wildcards work)",
        nargs="+",
        metavar="FILE",
        group=DATA,
    )
    alpha: float = opt(
        0.5,
        "a labelled post's target: alpha x the teachers' probabilities + (1 - alpha) x its gold label "
        "(unlabelled posts: the teachers' alone)",
        group=TRAINING,
        within="[0, 1]",
    )
    temperature: float = opt(
        1.0,
        "soften the teachers' probabilities before they become targets: p^(1/T), renormalised (1: as the "
        "teachers give them, calibrated; higher: flatter)",
        group=TRAINING,
        within="(0, inf)",
    )
    cache_dir: str | None = opt(
        None,
        "where the teachers' probabilities are kept for the next call (default: $SENTITUNE_CACHE/"
        "teacher-scores, else ~/.cache/sentitune/teacher-scores)",
        group=OUTPUT,
    )

    def __post_init__(self) -> None:
        problems = value_problems(self, "distill options") + normalize_problems(self)
        out_of_range = {p.split()[0] for p in problems}  # joint rules below only for options within range
        if not self.teacher:
            problems.append(
                "pass --teacher RUN (a run folder, or a classifier's folder with --model-labels); repeat it "
                "for an ensemble"
            )
        if self.data or self.training_file:
            problems += self.data_problems()
        elif not self.unlabelled:
            problems.append(
                "no posts to distil on: pass --data DIR (from `sentitune prepare`) and/or --unlabelled FILE"
            )
        else:
            problems += label_set_problems(self)
        if self.soft_targets and "--soft-targets" not in out_of_range:
            problems.append("--soft-targets makes targets from scores, distill from its teachers: drop it")
        if self.targets:
            problems.append("distill writes the targets file itself: drop --targets")
        if self.config:
            problems.append("--config replays a train run; pass distill's options directly")
        raise_problems(problems, "distill options")


# ----------------------------------------------------------------------------- using a run


@dataclass(kw_only=True)  # keyword-only: a command's own fields keep their positional order
class InferenceOptions:
    """How a run is run to score posts (evaluate, predict)."""

    batch_size: int = inference_batch_option()
    device: str = device_option()
    precision: str = precision_option()
    backend: str = backend_option()
    model_labels: str | None = model_labels_option()


@dataclass
class EvaluateConfig(InferenceOptions):
    """Which run `sentitune evaluate` scores, on which labelled file, and where the results go."""

    run_dir: str = run_dir_argument(
        "run folder (local or URL) written by train, or a sequence classifier's folder or hub id"
    )
    data: str = opt(None, "labelled CSV/TSV/JSONL/Parquet file or URL", required=True, group=DATA)
    text_column: str | None = text_column_option()
    label_column: str | None = label_column_option()
    output_dir: str | None = opt(
        None,
        "where metrics.json and confusion_matrix.png go (default: RUN_DIR/evaluation-<file name>); with "
        "several models, a folder per model in it",
        group=OUTPUT,
    )
    overwrite: bool = overwrite_option()
    compare: list[str] = opt(
        [],
        "more runs or classifiers to score on the same file, printed side by side in one table",
        positional=True,
        metavar="MORE",
    )

    def __post_init__(self) -> None:
        problems = value_problems(self, "evaluate options")
        if not self.run_dir:
            problems.append("pass RUN_DIR, the --job-dir of a `sentitune train` run")
        if not self.data:
            problems.append("--data FILE is required")
        raise_problems(problems, "evaluate options")


@dataclass
class PredictConfig(InferenceOptions):
    """What `sentitune predict` labels (texts, stdin or files) and where the labels go."""

    run_dir: str = run_dir_argument()
    texts: list[str] = opt(
        [], "texts to label (default: read stdin, one per line)", positional=True, metavar="TEXT"
    )
    input: list[str] = opt(
        [],
        "CSV/TSV/JSONL/Parquet files or URLs to label; wildcards work, also on gs:// (quote them: "
        "--input 'gs://bucket/posts/*.csv')",
        nargs="+",
        metavar="FILE",
        group=DATA,
    )
    text_column: str | None = text_column_option()
    output: str | None = opt(
        None,
        "output file or URL (.csv, .tsv, .jsonl, .parquet), or a folder (ending in /) that gets one file per "
        "input under the input's name; finished files there are skipped, so rerunning an interrupted batch "
        "resumes it. Default: JSON lines on stdout",
        group=OUTPUT,
    )
    overwrite: bool = overwrite_option()
    prefix: str = opt(
        "",
        "put this before the names of the columns added to a file's rows (label, score_<class>), e.g. "
        "pred_ for a file that already has a label column",
        group=OUTPUT,
    )
    explain: bool = opt(
        False,
        "add each text's words and their attributions to its label (occlusion: what removing each word does "
        "to the label's probability; texts from arguments or stdin)",
        group=OUTPUT,
    )

    def __post_init__(self) -> None:
        problems = value_problems(self, "predict options")
        if self.input and self.texts:
            problems.append("pass texts as arguments or --input FILE, not both")
        if self.explain and self.input:
            problems.append("--explain works on texts from arguments or stdin, not on --input files")
        if self.prefix and not self.input:
            problems.append("--prefix names the columns added to --input files; texts print as JSON lines")
        if self.output and not self.input:
            problems.append("--output needs --input FILE; texts from arguments or stdin print to stdout")
        if problems:  # each is a whole sentence on its own
            raise SentituneError("; ".join(problems))


@dataclass
class SelectConfig:
    """Which posts `sentitune select` picks for people to label, and where they go."""

    run_dir: str = run_dir_argument()
    pool: list[str] = opt(
        [],
        "unlabelled posts to choose from: CSV/TSV/JSONL/Parquet files or URLs (wildcards work)",
        nargs="+",
        metavar="FILE",
        required=True,
        group=DATA,
    )
    n: int = opt(200, "how many posts to select", group=DATA, within="[1, 1000000]")
    labelled: list[str] = opt(
        [],
        "posts already labelled or sent for labelling (any table with a text column, Label Studio exports "
        "or tasks): never selected again, nor their near-duplicates",
        nargs="+",
        metavar="FILE",
        group=DATA,
    )
    text_column: str | None = text_column_option()
    strategy: str = opt(
        "margin",
        "margin: smallest gap between the two likeliest classes first; entropy: most spread scores first; "
        "both keep the picks diverse (clusters of the model's post embeddings) and spread over the predicted "
        "classes; random: a plain random sample, to compare against",
        choices=SELECT_STRATEGIES,
        group=DATA,
    )
    class_shares: str = opt(
        "pool",
        "how the picks are shared among the predicted classes: pool (in proportion to how often the run "
        "predicts each class in the pool, at least one each), or equal (a rare class gets as many as the "
        "others)",
        choices=("equal", "pool"),
        group=DATA,
    )
    seed: int = opt(
        42, "seed of the clustering and of --strategy random", group=DATA, within="[0, 4294967295]"
    )
    output_dir: str = opt(
        "",
        "folder for selected.csv (text, the model's label and scores, an empty label column to fill), or with "
        "--format label-studio tasks.json (the model's label as a pre-annotation) and label_config.xml",
        required=True,
        group=OUTPUT,
    )
    format: str = opt("csv", "what to write", choices=SELECT_FORMATS, group=OUTPUT)
    overwrite: bool = overwrite_option()
    batch_size: int = inference_batch_option()
    device: str = device_option()
    precision: str = precision_option()

    def __post_init__(self) -> None:
        problems = value_problems(self, "select options")
        if not self.run_dir:
            problems.append("pass RUN_DIR, the --job-dir of a `sentitune train` run")
        if not self.pool:
            problems.append("--pool FILE is required: the unlabelled posts to choose from")
        if not self.output_dir:
            problems.append("--output-dir is required")
        raise_problems(problems, "select options")


@dataclass
class ServeSettings:
    """Where the server listens, its routes, how it batches and what it accepts."""

    host: str = opt(
        "0.0.0.0", "address to listen on (0.0.0.0: every interface, as Vertex AI needs)", group=SERVER
    )
    port: int = opt(
        8080, "port to listen on; Vertex AI passes it as AIP_HTTP_PORT", group=SERVER, within="[0, 65535]"
    )
    health_route: str = opt(
        "/health", "GET route answering 200 once the model is loaded (AIP_HEALTH_ROUTE)", cli=False
    )
    predict_route: str = opt("/predict", "POST route answering predictions (AIP_PREDICT_ROUTE)", cli=False)
    max_batch: int = opt(
        256,
        "most posts of queued requests the model takes at once (a larger request is taken alone)",
        group=SERVER,
        within="[1, 65536]",
    )
    max_batch_tokens: int = opt(
        0,
        "most tokens in one forward pass, counting padding (posts x the longest), or the posts' own where "
        "the model runs packed (BERT or RoBERTa on a CPU): the posts taken are sorted by length and cut into "
        "passes within this budget (a longer post runs alone); 0: auto, 512 packed, 1024 padded",
        group=SERVER,
        within="[0, 1048576]",
    )
    model_batch: int = opt(
        64,
        "most posts in one forward pass (also within --max-batch-tokens)",
        group=SERVER,
        within="[1, 65536]",
    )
    model_workers: int = opt(
        0,
        "model threads running forward passes side by side (0: auto, two for PyTorch on a CPU with two "
        "threads or more, each with half of them, else one)",
        group=SERVER,
        within="[0, 64]",
    )
    max_wait_ms: float = opt(
        0.0,
        "how long a request that finds the model idle waits for others to join its batch",
        group=SERVER,
        within="[0, 10000]",
    )
    max_instances: int = opt(
        1000, "most instances in one request (more: 413)", group=SERVER, within="[1, 1000000]"
    )
    max_text_chars: int = opt(
        10_000,
        "longest text in characters (longer: 413); shorter texts are cut to the run's max length",
        group=SERVER,
        within="[1, 10000000]",
    )
    max_body_bytes: int = opt(
        VERTEX_BODY_LIMIT,
        "largest request body in bytes (larger: 413)",
        group=SERVER,
        within="[1, 2147483647]",
    )
    header_timeout_s: float = opt(
        10.0,
        "seconds a connection has to send a request's line and headers (then it is closed)",
        group=SERVER,
        within="(0, 3600]",
    )
    body_timeout_s: float = opt(
        30.0, "seconds a request has to send its body (longer: 408)", group=SERVER, within="(0, 3600]"
    )
    no_ui: bool = opt(False, "serve no demo page at / (the API routes only)", group=SERVER)

    def __post_init__(self) -> None:
        problems = value_problems(self, "server settings")
        for name in ("health_route", "predict_route"):
            if not str(getattr(self, name)).startswith("/"):
                problems.append(f"{name} must start with '/', got {getattr(self, name)!r}")
        if self.health_route == self.predict_route:
            problems.append(f"the health and predict routes must differ, both are {self.health_route!r}")
        raise_problems(problems, "server settings")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **given: Any):
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
        if "run_dir" in {f.name for f in dataclasses.fields(cls)} and not values.get("run_dir"):
            if env.get("AIP_STORAGE_URI"):
                values["run_dir"] = env["AIP_STORAGE_URI"]
        return cls(**values)


@dataclass
class ServeConfig(ServeSettings):
    """`sentitune serve`: the server settings, the run to serve and how it runs. Built with `from_env`,
    so the Vertex AI variables fill what the command line leaves out."""

    run_dir: str | None = run_dir_argument(
        "run folder (local or URL) written by train (default: $AIP_STORAGE_URI)", required=False
    )
    device: str = device_option()
    precision: str = precision_option()
    num_threads: int | None = num_threads_option()
    backend: str = opt(
        "auto",
        "run the PyTorch model, or its ONNX export from `sentitune export` (onnx, onnx-int8: CPU, needs "
        "onnxruntime); auto: the faster one measured for this machine's kind, the run's int8 export on a CPU "
        "without native bf16 (AVX2) when the run has one, else PyTorch",
        choices=("auto", *BACKENDS),
        group=RUNTIME,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.run_dir:
            raise SentituneError(
                "no model to serve: pass RUN_DIR (a folder written by `sentitune train`) or set AIP_STORAGE_URI"
            )

    @property
    def settings(self) -> ServeSettings:
        return ServeSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ServeSettings)})


@dataclass
class ExportConfig:
    """What `sentitune export` writes and how the result is checked."""

    run_dir: str = run_dir_argument()
    format: str = opt("onnx", "export format", choices=EXPORT_FORMATS, group=OUTPUT)
    quantize: str | None = opt(
        None,
        "also write a dynamically quantised copy for CPUs (model_int8.onnx)",
        choices=QUANTIZE,
        group=OUTPUT,
    )
    output_dir: str | None = opt(None, "where to write the export (default: RUN_DIR/onnx)", group=OUTPUT)
    parity_data: str | None = opt(
        None, "labelled file the export is checked on (default: the run's validation file)", group=DATA
    )
    parity_examples: int = opt(
        2000, "posts of the parity file compared, from its start", group=DATA, within="[1, 10000000]"
    )
    text_column: str | None = text_column_option()
    label_column: str | None = label_column_option()
    overwrite: bool = overwrite_option()

    def __post_init__(self) -> None:
        problems = value_problems(self, "export options")
        if not self.run_dir:
            problems.append("pass RUN_DIR, the --job-dir of a `sentitune train` run")
        raise_problems(problems, "export options")


@dataclass
class EnvConfig:
    """`sentitune env`: how to print the report."""

    json: bool = json_option()


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
    """One option per dataclass field (`--field-name`, its type, choices and help) in the field's --help
    group; each action remembers where its option was declared (`declared_at`)."""
    hints = typing.get_type_hints(cls)
    groups: dict[str | None, Any] = {None: parser}
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        if f.name in skip or meta.get("cli") is False:
            continue
        if meta.get("group") not in groups:
            groups[meta["group"]] = parser.add_argument_group(meta["group"])
        target = groups[meta.get("group")]
        help_text = meta.get("help", "")
        kind = _base_type(hints[f.name])
        if meta.get("positional"):
            many = typing.get_origin(hints[f.name]) is list or hints[f.name] is list
            nargs = "*" if many else meta.get("nargs")
            metavar = meta.get("metavar", f.name.rstrip("s").upper())
            action = target.add_argument(
                f.name, nargs=nargs, metavar=metavar, help=help_text, default=argparse.SUPPRESS
            )
        elif kind is bool:
            action = target.add_argument(
                meta.get("flag", "--" + f.name.replace("_", "-")),
                dest=f.name,
                action="store_true",
                help=help_text,
            )
        else:
            default = f.default if f.default is not dataclasses.MISSING else None
            kwargs = dict(dest=f.name, type=kind, help=help_text, default=argparse.SUPPRESS)
            for key in ("choices", "action", "nargs", "metavar"):
                if meta.get(key):
                    kwargs[key] = meta[key]
            if meta.get("required"):
                kwargs["required"] = True
            elif default not in (None, "", []):
                kwargs["help"] = f"{help_text} (default: {default})"
            if meta.get("within"):
                kwargs["help"] = f"{kwargs['help']} (range: {meta['within']})"
            action = target.add_argument(meta.get("flag", "--" + f.name.replace("_", "-")), **kwargs)
        action.declared_at = meta["declared_at"]


def _with_preset(cls, values: dict) -> dict:
    """`values` (the options given) over the chosen preset's, for dataclasses with PRESETS."""
    preset = values.get("preset")
    if not isinstance(preset, str) or preset not in cls.PRESETS:
        return values  # none, or one the dataclass's own check refuses
    return {**cls.PRESETS[preset], **values}


def from_namespace(cls, ns: argparse.Namespace, build=None, **overrides):
    """Build the dataclass from parsed options (`build`: another constructor, e.g. `from_env`); options
    not given take the chosen preset's value (for dataclasses with PRESETS), else the dataclass default."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(ns).items() if k in names}
    values.update(overrides)
    if values.get("config") and hasattr(cls, "replayed"):
        values = cls.replayed(values)
    return (build or cls)(**_with_preset(cls, values))


def train_parser() -> argparse.ArgumentParser:
    """`sentitune train`'s options alone (for checking training arguments passed to a cloud job)."""
    parser = argparse.ArgumentParser(prog="sentitune train", add_help=False)
    add_arguments(parser, TrainConfig)
    return parser


def parse_train_args(args: list[str]) -> tuple[argparse.Namespace | None, list[str]]:
    """(namespace, unknown options) of `sentitune train ARGS`; the namespace is None when they do not
    parse. Vertex AI's tuning service appends --learning_rate=… style options, which train accepts."""
    try:
        return train_parser().parse_known_args([hyphenate(a) for a in args])
    except SystemExit:
        return None, []


def hyphenate(arg: str) -> str:
    """--learning_rate=0.01 -> --learning-rate=0.01; anything else unchanged."""
    if not arg.startswith("--") or "_" not in arg.split("=", 1)[0]:
        return arg
    name, sep, value = arg.partition("=")
    return name.replace("_", "-") + sep + value


def train_option(ns: argparse.Namespace, name: str):
    """The value `sentitune train` would use for option `name` given parsed arguments: the one given,
    else the preset's, else the default."""
    values = _with_preset(TrainConfig, vars(ns))
    if name in values:
        return values[name]
    return next(f.default for f in dataclasses.fields(TrainConfig) if f.name == name)
