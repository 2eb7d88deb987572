"""`sentitune distill`: a student trained on its teachers' probabilities, through train's own code.

distill -> read the posts (the labelled training split, unlabelled files) -> score them once with each
teacher (cached) -> targets -> write the distillation set into the run folder -> train() -> record.

- Teachers are run folders (PyTorch, or their ONNX export), or classifiers from elsewhere whose labels
  `--model-labels` maps; each must predict the student's classes. Their probabilities (calibrated, as
  predict gives them) are cached under the SHA-256 of the file that runs (weights or ONNX), the
  labels' mapping, the cut length and the texts, so a second call, another alpha or temperature, or a
  CPU after a GPU scored them, reads them back.
- Targets: each teacher's probabilities softened by the temperature (p^(1/T), renormalised: the logits
  divided by T) and averaged; a labelled post's target is alpha x that + (1 - alpha) x its gold label,
  an unlabelled post's is that alone. The student is trained at temperature 1 on these targets with
  train's cross-entropy, so there is no T^2 factor: the temperature shapes the targets, not the loss.
- The distillation set (train.csv: the labelled posts and the unlabelled ones under the teachers'
  label, and targets.safetensors, which records train.csv's SHA-256) is written into the run folder, in
  `distillation-<hash>/`, and train() reads it with `--targets`; the result is an ordinary run folder
  whose run_config.json and README.md name the teachers, alpha and temperature.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sentitune import LABELS
from sentitune.builtin import cache_home, resolve_model
from sentitune.config import DistillConfig, TrainConfig
from sentitune.errors import SentituneError
from sentitune.labels import model_label_matrix
from sentitune.layout import CARD, FINISHED_RUN, RUN_CONFIG, WEIGHTS
from sentitune.metrics import classification_metrics, collapsed
from sentitune.runfolder import load_run, onnx_path, trained_max_length
from sentitune.scoring import Predictor
from sentitune.splits import load_splits, read_prepared
from sentitune.storage import (
    OutputLock,
    StagedOutput,
    exists,
    expand,
    is_url,
    join,
    listdir_names,
    open_input,
    refuse_occupied,
    sha256_of,
    url_to_fs,
)
from sentitune.tables import pick_text_column, read_chunks
from sentitune.train import TrainResult, train

log = logging.getLogger("sentitune")

SET_PREFIX = "distillation-"  # the run folder's distillation set: distillation-<first 12 of its hash>/
SET_FILE = "train.csv"
TARGETS_FILE = "targets.safetensors"  # what train's --targets reads (train.soft_targets_of)
SET_RECORD = "distillation.json"  # written last into the set's folder
SCORES_DIR = "teacher-scores"


@dataclass
class Teacher:
    """A teacher as scored: where it is, what it predicts, the file that runs, its cached probabilities."""

    source: str
    backend: str
    labels: tuple[str, ...]  # the columns of `probs`
    weights_sha256: str
    probs: np.ndarray | None = None
    cached: bool = False
    cache_file: str = ""

    def record(self) -> dict:
        return {
            "source": self.source,
            "backend": self.backend,
            "weights_sha256": self.weights_sha256,
            "labels": list(self.labels),
            "scores_from_cache": self.cached,
        }


@dataclass
class DistillResult:
    run_dir: str | None
    metrics: dict
    history: list[dict] = field(default_factory=list)
    distillation: dict = field(default_factory=dict)


def distill(cfg: DistillConfig) -> DistillResult:
    """Score the posts with the teachers (or read their scores back), write the distillation set into the
    run folder and train the student on it as `train` would; the run records its teachers."""
    run_dir = cfg.job_dir or os.environ.get("AIP_MODEL_DIR")
    if not run_dir and not cfg.dry_run:
        raise SentituneError("no run folder: pass --job-dir DIR (or run with --dry-run)")
    if run_dir:  # what train would refuse, refused before the teachers spend minutes
        with OutputLock(run_dir):
            refuse_occupied(run_dir, FINISHED_RUN, "a finished run", cfg.overwrite, "train", "--job-dir")
    resolve_model(cfg.model)  # a missing embedded student is refused before the teachers score
    student = cfg.model
    prepared = read_prepared(cfg)
    classes = prepared.classes
    splits = load_splits(cfg, prepared) if prepared.files else {}
    labelled = splits.get("train")
    unlabelled = read_unlabelled(cfg, [t for s in splits.values() for t in s.texts])
    n_labelled = len(labelled) if labelled else 0
    if not n_labelled and not unlabelled:
        raise SentituneError("no posts to distil on: the training split and --unlabelled files hold none")
    val = splits.get("val")
    texts = [*(labelled.texts if labelled else []), *unlabelled, *(val.texts if val else [])]
    cache = Path(cfg.cache_dir) if cfg.cache_dir else cache_home() / SCORES_DIR
    teachers = [score_teacher(source, cfg, texts, classes, cache) for source in cfg.teacher]
    n_train = n_labelled + len(unlabelled)
    targets, label_ids = targets_of(teachers, classes, cfg, labelled, n_train)
    record = {
        "teachers": [t.record() for t in teachers],
        "alpha": cfg.alpha,
        "temperature": cfg.temperature,
        "temperature_applies_to": "the teachers' probabilities (p^(1/T), renormalised); the student's loss "
        "is cross-entropy at temperature 1, with no T^2 factor",
        "posts": {"labelled": n_labelled, "unlabelled": len(unlabelled)},
        "unlabelled_files": list(cfg.unlabelled),
        "teacher_scores": teacher_scores(teachers, classes, labelled, val, n_train),
    }
    frame = pd.DataFrame(
        {
            cfg.text_column or "text": [*(labelled.texts if labelled else []), *unlabelled],
            cfg.label_column or "label": [classes[int(i)] for i in label_ids],
        }
    )
    set_bytes = frame.to_csv(index=False).encode("utf-8")
    targets_bytes = targets_file(targets.astype(np.float32), set_bytes, classes, record)
    set_name = SET_PREFIX + hashlib.sha256(set_bytes + targets_bytes).hexdigest()[:12]
    base = run_dir if run_dir and not cfg.dry_run else tempfile.mkdtemp(prefix="sentitune-distill-")
    set_dir = join(base, set_name)
    record["set"] = set_name
    fresh = not exists(base)
    made = write_set(set_dir, set_bytes, targets_bytes, record)
    tcfg = train_config(cfg, set_dir, splits, classes, student)
    try:
        trained: TrainResult = train(tcfg)
    except BaseException:
        if made:  # the set of a run that was not written goes with it, and the folder made for it
            remove(set_dir)
            if fresh and not is_url(base) and not os.listdir(base):
                os.rmdir(base)
        raise
    finally:
        if cfg.dry_run or not run_dir:
            shutil.rmtree(base, ignore_errors=True)
    if trained.run_dir:
        record_in_run(trained.run_dir, record, set_name)
    return DistillResult(trained.run_dir, trained.metrics, trained.history, record)


# ----------------------------------------------------------------------------- posts and teachers


def read_unlabelled(cfg: DistillConfig, known: list[str]) -> list[str]:
    """The --unlabelled posts, stripped, without empty ones, repeats, and posts of the labelled splits
    (a validation or test post learnt from a teacher would leak into the scores)."""
    if not cfg.unlabelled:
        return []
    labelled, seen, found = set(known), set(), []
    dropped = {"empty": 0, "repeated": 0, "in_the_labelled_splits": 0}
    for path in expand(cfg.unlabelled):
        column = None
        for df in read_chunks(path, 100_000):
            column = column or pick_text_column(df, cfg.text_column, path)
            for text in df[column].fillna("").astype(str).str.strip():
                if not text:
                    dropped["empty"] += 1
                elif text in labelled:
                    dropped["in_the_labelled_splits"] += 1
                elif text in seen:
                    dropped["repeated"] += 1
                else:
                    seen.add(text)
                    found.append(text)
    log.info(
        "unlabelled: %d posts from %d files (left out: %s)",
        len(found),
        len(cfg.unlabelled),
        ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in dropped.items()),
    )
    return found


def score_teacher(source: str, cfg: DistillConfig, texts: list[str], classes: tuple[str, ...], cache: Path):
    """A teacher's probabilities of `texts`, read from the cache when scored before, else scored in one
    batched pass and cached. A teacher of other classes than the student's is refused first."""
    classifier = load_run(source, with_model=False)  # the tokenizer and labels only: cheap
    labels = classifier.labels
    if not classifier.is_run and model_label_matrix(labels, cfg.model_labels, source) is not None:
        labels = LABELS  # its probabilities are read onto negative/neutral/positive, as predict reads them
    if set(labels) != set(classes) or len(labels) != len(classes):
        raise SentituneError(
            f"teacher {source} predicts {','.join(labels)}, the student's data has {','.join(classes)}: "
            f"distil from teachers of the student's classes, or prepare the data with --labels {','.join(labels)}"
        )
    local = classifier.local_dir or source
    runs = (
        os.path.join(local, WEIGHTS)
        if cfg.teacher_backend == "torch"
        else onnx_path(local, cfg.teacher_backend)
    )
    weights = sha256_of(runs) if os.path.exists(runs) else "missing"
    texts_sha = hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode("utf-8")).hexdigest()
    key = hashlib.sha256(
        json.dumps(
            [weights, cfg.teacher_backend, cfg.model_labels, trained_max_length(local), texts_sha]
        ).encode()
    ).hexdigest()
    teacher = Teacher(
        source, cfg.teacher_backend, tuple(labels), weights, cache_file=str(cache / f"{key}.safetensors")
    )
    teacher.probs = read_cached(teacher, len(texts))
    if teacher.probs is not None:
        teacher.cached = True
        log.info(
            "teacher %s: %d posts' probabilities read from the cache (%s)",
            source,
            len(texts),
            teacher.cache_file,
        )
        return teacher
    predictor = Predictor(
        source,
        device=cfg.device,
        batch_size=cfg.eval_batch_size,
        precision=cfg.precision,
        backend=cfg.teacher_backend,
        model_labels=cfg.model_labels,
    )
    t0 = time.perf_counter()
    teacher.probs = predictor.probabilities(texts).astype(np.float32)
    took = time.perf_counter() - t0
    log.info(
        "teacher %s: scored %d posts in %.1fs (%.0f posts/s); cached in %s",
        source,
        len(texts),
        took,
        len(texts) / max(took, 1e-9),
        teacher.cache_file,
    )
    write_cached(teacher, texts_sha)
    return teacher


def read_cached(teacher: Teacher, n: int) -> np.ndarray | None:
    from safetensors import SafetensorError, safe_open

    if not os.path.exists(teacher.cache_file):
        return None
    try:
        with safe_open(teacher.cache_file, "np") as f:
            probs = f.get_tensor("probs")
            labels = tuple(json.loads((f.metadata() or {})["labels"]))
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        log.warning("%s cannot be read (%s); scoring again", teacher.cache_file, exc)
        return None
    if probs.shape != (n, len(teacher.labels)) or labels != teacher.labels or not np.isfinite(probs).all():
        log.warning("%s does not hold these posts' probabilities; scoring again", teacher.cache_file)
        return None
    return probs


def write_cached(teacher: Teacher, texts_sha: str) -> None:
    """The teacher's probabilities into the cache, whole or not at all (a temporary file, renamed)."""
    from safetensors.numpy import save

    meta = {
        "source": teacher.source,
        "labels": json.dumps(list(teacher.labels)),
        "weights_sha256": teacher.weights_sha256,
        "texts_sha256": texts_sha,
    }
    folder = Path(teacher.cache_file).parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".scores-", dir=folder)
    with os.fdopen(fd, "wb") as f:
        f.write(save({"probs": np.ascontiguousarray(teacher.probs)}, metadata=meta))
    os.replace(tmp, teacher.cache_file)


def in_order(teacher: Teacher, classes: tuple[str, ...]) -> np.ndarray:
    """The teacher's probabilities with its columns in the student's class order."""
    return teacher.probs[:, [teacher.labels.index(c) for c in classes]]


def targets_of(
    teachers, classes, cfg: DistillConfig, labelled, n_train: int
) -> tuple[np.ndarray, np.ndarray]:
    """(targets, label ids) of the training rows, the labelled posts first: the teachers' softened
    probabilities averaged, mixed with a labelled post's gold label by alpha; an unlabelled post's label is
    the teachers' likeliest class."""
    ensemble = np.mean([soften(in_order(t, classes), cfg.temperature) for t in teachers], axis=0)
    targets = ensemble[:n_train].copy()
    n_labelled = len(labelled) if labelled else 0
    if n_labelled:
        gold = np.eye(len(classes), dtype=np.float32)[labelled.labels]
        targets[:n_labelled] = cfg.alpha * targets[:n_labelled] + (1 - cfg.alpha) * gold
    ids = ensemble[n_labelled:n_train].argmax(1)
    return targets, np.concatenate([labelled.labels, ids]) if n_labelled else ids


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """p^(1/T), renormalised: the softmax of the logits divided by T (a zero stays zero)."""
    if temperature == 1:
        return probs.astype(np.float32)
    with np.errstate(divide="ignore"):
        logits = np.log(probs.astype(np.float64)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def teacher_scores(teachers, classes, labelled, val, n_train: int) -> dict:
    """How the teachers and their average (as the student sees it, at temperature 1) score the labelled
    training posts and the validation split: what the student can be compared with."""
    found = {}
    parts = {"train": (0, labelled), "val": (n_train, val)}
    for split, (start, data) in parts.items():
        if data is None or not len(data):
            continue
        rows = slice(start, start + len(data))
        each = [in_order(t, classes)[rows] for t in teachers]
        entry = {}
        for name, probs in [
            *((t.source, p) for t, p in zip(teachers, each, strict=True)),
            ("ensemble", np.mean(each, 0)),
        ]:
            m = classification_metrics(data.labels, probs, classes)
            entry[name] = {k: round(float(m[k]), 4) for k in ("accuracy", "macro_f1", "macro_recall")}
            degenerate = collapsed(m, "validation posts") if split == "val" else None
            if degenerate and name != "ensemble":
                log.warning(
                    "teacher %s %s: its scores teach the student the class balance, not the posts; distil "
                    "from a teacher trained longer",
                    name,
                    degenerate,
                )
                entry[name]["warning"] = degenerate
        found[split] = entry
    return found


# ----------------------------------------------------------------------------- the set and the run


def targets_file(targets: np.ndarray, set_bytes: bytes, classes: tuple[str, ...], record: dict) -> bytes:
    from safetensors.numpy import save

    meta = {
        "training_sha256": hashlib.sha256(set_bytes).hexdigest(),
        "classes": json.dumps(list(classes)),
        "alpha": str(record["alpha"]),
        "temperature": str(record["temperature"]),
        "teachers": json.dumps([t["source"] for t in record["teachers"]]),
    }
    return save({"targets": np.ascontiguousarray(targets)}, metadata=meta)


def write_set(set_dir: str, set_bytes: bytes, targets_bytes: bytes, record: dict) -> bool:
    """The distillation set into its folder (named by its content); False when an earlier run of the same
    inputs left it there already."""
    if exists(join(set_dir, SET_RECORD)):
        return False
    if not is_url(set_dir):
        os.makedirs(os.path.dirname(set_dir), exist_ok=True)
    out = StagedOutput(
        set_dir,
        occupied_by=(),
        marker=SET_RECORD,
        what="a distillation set",
        overwrite=True,
        option="--job-dir",
    )
    with out:
        out.path(SET_FILE).write_bytes(set_bytes)
        out.path(TARGETS_FILE).write_bytes(targets_bytes)
        out.path(SET_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        out.commit()
    return True


def train_config(cfg: DistillConfig, set_dir: str, splits: dict, classes, student) -> TrainConfig:
    """train's options for the student: distill's own, reading the distillation set with its targets and
    the validation and test splits where the data has them."""
    own = {f.name for f in dataclasses.fields(DistillConfig)} - {
        f.name for f in dataclasses.fields(TrainConfig)
    }
    given = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in own}
    return TrainConfig(
        **{
            **given,
            "data": None,
            "training_file": join(set_dir, SET_FILE),
            "validation_file": splits["val"].path if "val" in splits else None,
            "testing_file": splits["test"].path if "test" in splits else None,
            "labels": ",".join(classes),
            "targets": join(set_dir, TARGETS_FILE),
            "model": student,
        }
    )


def record_in_run(run_dir: str, record: dict, set_name: str) -> None:
    """run_config.json gets the distillation record and README.md a section naming the teachers; sets of
    earlier runs in the folder (replaced with --overwrite) go."""
    with OutputLock(run_dir):
        with open_input(join(run_dir, RUN_CONFIG), "rb") as f:
            run_config = json.load(f)
        run_config["distillation"] = record
        with open_input(join(run_dir, CARD), "rb") as f:
            card = f.read().decode("utf-8")
        marker = "\n## Results\n"
        section = card_section(record) + "\n"
        card = card.replace(marker, f"\n{section}{marker}", 1) if marker in card else card + "\n" + section
        replace_text(join(run_dir, RUN_CONFIG), json.dumps(run_config, indent=2) + "\n")
        replace_text(join(run_dir, CARD), card)
        for name in listdir_names(run_dir):
            if name.startswith(SET_PREFIX) and name != set_name:
                remove(join(run_dir, name))


def card_section(record: dict) -> str:
    posts = record["posts"]
    val = record["teacher_scores"].get("val", {})
    lines = [
        "## Distillation",
        "",
        f"Trained by `sentitune distill` on its teachers' probabilities: {posts['labelled']} labelled posts "
        f"(target: {record['alpha']} x the teachers' + {1 - record['alpha']:g} x the gold label) and "
        f"{posts['unlabelled']} unlabelled posts (target: the teachers' alone). The teachers' probabilities "
        f"were softened at temperature {record['temperature']} and averaged; the student learnt them with "
        f"cross-entropy at temperature 1. The set: `{record['set']}/` in this folder.",
        "",
        "| teacher | backend | weights SHA-256 | validation macro-recall |",
        "|---|---|---|---|",
    ]
    for t in record["teachers"]:
        score = val.get(t["source"], {}).get("macro_recall")
        shown = f"{score:.3f}" if score is not None else "-"
        lines.append(f"| `{t['source']}` | {t['backend']} | `{t['weights_sha256'][:16]}…` | {shown} |")
    if "ensemble" in val and len(record["teachers"]) > 1:
        lines.append(f"| their average | | | {val['ensemble']['macro_recall']:.3f} |")
    return "\n".join(lines) + "\n"


def replace_text(path: str, text: str) -> None:
    """A file of the run folder replaced whole: a temporary file renamed over it (on object stores, one
    upload)."""
    if is_url(path):
        fs, inner = url_to_fs(path)
        fs.pipe(inner, text.encode("utf-8"))
        return
    fd, tmp = tempfile.mkstemp(prefix=".distill-", dir=os.path.dirname(path))
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, os.stat(path).st_mode & 0o777)
    os.replace(tmp, path)


def remove(folder: str) -> None:
    fs, inner = url_to_fs(folder)
    if fs.exists(inner):
        fs.rm(inner, recursive=True)
