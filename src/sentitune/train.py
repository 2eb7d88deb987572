"""The training path, top to bottom: train (load data -> build model -> fit -> evaluate -> save), then
fit (the step loop) and validate; the helpers each of them calls sit below them.

The step loop does no per-example Python work and no host sync except at log and evaluation points:
batches come from pre-tokenised, length-bucketed ids; loss and accuracy accumulate on the device and
are read only when a progress line is printed. Everything the loop must remember across a restart is
in `LoopState`, which the checkpointer saves beside the tensors.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from sentitune import LABELS, distributed, tfidf
from sentitune.batching import TokenizedTexts, length_bucketed_batches, tokenize
from sentitune.builtin import MODEL_DESCRIPTION, resolve_model
from sentitune.checkpoint import Checkpointer, StopSignal
from sentitune.config import BaselineConfig, TrainConfig
from sentitune.dropout import use_fast_dropout
from sentitune.errors import Preempted, SentituneError, require_extra
from sentitune.events import EventLog, Progress, TuningReport, record_experiment_run
from sentitune.events import target_dir as events_dir
from sentitune.labels import soft_targets
from sentitune.layout import CHECKPOINTS, FINISHED_RUN, METRICS
from sentitune.metrics import (
    CALIBRATION_FOLDS,
    bootstrap_intervals,
    calibration_bins,
    classification_metrics,
    collapsed,
    cross_fitted_temperature,
    log_metrics,
    nll,
    scale_temperature,
)
from sentitune.model import (
    MeanPooled,
    count_parameters,
    encoder_layers,
    freeze,
    has_bert_style_head,
    keep_first_layers,
    load_classifier,
    pooled,
    scale_logits,
    trained_pooling,
)
from sentitune.normalize import CONFIG_KEY as NORMALIZE_KEY
from sentitune.normalize import normalization_of
from sentitune.optimizer import build_optimizer
from sentitune.runfolder import RunRecord, save_run, write_report
from sentitune.runtime import Precision, infer_probs, resolve_device, resolve_precision
from sentitune.splits import LabelledTexts, Prepared, read_prepared
from sentitune.splits import load_splits as read_splits
from sentitune.storage import StagedOutput, join, refuse_occupied

log = logging.getLogger("sentitune")


@dataclass
class TrainResult:
    run_dir: str | None
    metrics: dict
    history: list[dict] = field(default_factory=list)


def train(cfg: TrainConfig) -> TrainResult:
    """Fine-tune a classifier as `cfg` says and write the run folder (nothing when dry-running)."""
    started = time.perf_counter()
    run_dir = cfg.job_dir or os.environ.get("AIP_MODEL_DIR")
    if not run_dir and not cfg.dry_run:
        raise SentituneError("no run folder: pass --job-dir DIR (or run with --dry-run)")
    if cfg.baseline and not cfg.dry_run:  # a missing extra fails now, not after the training
        require_extra("sklearn", "baseline", "train --baseline")
    d = distributed.from_environment()
    if d.enabled and cfg.batch_size % d.world_size:
        raise SentituneError(
            f"--batch-size {cfg.batch_size} is the global batch and must divide by the {d.world_size} "
            f"processes (each takes batch / processes); use e.g. --batch-size "
            f"{max(1, cfg.batch_size // d.world_size) * d.world_size}"
        )
    out = None
    if cfg.dry_run and run_dir:  # what the run would refuse, a dry run refuses
        refuse_occupied(run_dir, FINISHED_RUN, "a finished run", cfg.overwrite, "train", "--job-dir")
    if not cfg.dry_run:  # refuse an occupied folder before spending minutes on training
        out = StagedOutput(
            run_dir,
            occupied_by=FINISHED_RUN,
            marker=METRICS,
            what="a finished run",
            overwrite=cfg.overwrite,
            option="--job-dir",
            lock=d.is_main,  # rank 0 writes the folder; the other ranks stage nothing
            command="train",
        )
    with out or contextlib.nullcontext():  # from here on, a failure leaves no lock or staging behind
        d, device_name = distributed.setup(cfg.device, cfg.dist_timeout)
        try:
            return _train(cfg, out, run_dir, started, d, device_name)
        finally:
            distributed.shutdown(d)


def _train(
    cfg: TrainConfig, out, run_dir, started: float, d: distributed.Dist, device_name: str
) -> TrainResult:
    device = resolve_device(device_name)
    precision = resolve_precision(cfg.precision, device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)

    prepared = read_prepared(cfg)  # the prepared folder, read once: its files, classes and report
    classes = prepared.classes
    # a model that cannot load fails before the splits are read
    classifier, model_info = build_model(cfg, classes)
    splits = load_splits(cfg, prepared)
    targets = soft_targets_of(cfg, splits["train"], prepared)
    t0 = time.perf_counter()
    classifier.normalization = normalization_of(cfg)
    if classifier.normalization.active and prepared.label_source == "vader":
        log.warning(
            "the labels are VADER's, and VADER reads mention names ('@united' counts as the positive "
            "word 'united') that --normalize %s turns into @user: --normalize none lets the model read "
            "what VADER read",
            classifier.normalization.scheme,
        )
    classifier.model.config.update({NORMALIZE_KEY: classifier.normalization.to_config()})
    tokens = {name: classifier.encode(s.texts, cfg.max_length) for name, s in splits.items()}
    tokenize_s = time.perf_counter() - t0
    unknown = unknown_before_and_after(classifier, splits, tokens, cfg.max_length)
    log.info(
        "device %s, precision %s, %d threads; tokenised %s in %.1fs",
        device,
        precision,
        torch.get_num_threads(),
        ", ".join(f"{n} {len(t)}" for n, t in tokens.items()),
        tokenize_s,
    )
    model = classifier.model.to(device)
    checkpointer = None
    if not cfg.dry_run:
        root = cfg.checkpoint_dir or os.environ.get("AIP_CHECKPOINT_DIR") or join(run_dir, CHECKPOINTS)
        checkpointer = Checkpointer(root, fingerprint(cfg, precision), dist=d)
    with StopSignal() as stop_signal:
        fitted = fit(
            model, tokens, splits, cfg, device, precision, started, checkpointer, stop_signal, d, targets
        )
    check_weights_finite(model, fitted.stats["steps"], cfg)
    metrics, scored = evaluate_splits(
        model, tokens, splits, cfg, device, precision, classifier.tokenizer.unk_token_id, d
    )
    if cfg.calibration == "temperature" and "val" in scored and not cfg.dry_run:
        metrics["calibration"] = calibrate(model, splits, scored, metrics, cfg.seed)
    if not cfg.dry_run:
        warn_if_collapsed(metrics)
    metrics["training"] = {**fitted.stats, "tokenize_s": round(tokenize_s, 2)}
    metrics["normalization"] = {**classifier.normalization.to_config(), "posts_with_unknown_tokens": unknown}
    if cfg.baseline and not cfg.dry_run and d.is_main:
        metrics["baseline"] = fit_baseline(cfg, run_dir, splits)
    log_metrics(metrics)
    if cfg.dry_run:
        log.info("dry run finished: nothing written")
        return TrainResult(None, metrics, fitted.history)
    if d.is_main:  # one run folder, written by rank 0
        if d.enabled:
            metrics["training"]["processes"] = d.world_size
        run = RunRecord(cfg, model_info, prepared, splits, metrics, fitted.history, fitted.train_log,
                        device, precision, scored)  # fmt: skip
        save_run(out, classifier, run)
        write_report(out, classifier, run)
        out.commit()
    else:
        out.discard()
    d.barrier()  # the folder is complete before any rank reports success
    if d.is_main:
        checkpointer.clear()
        record_experiment_run(asdict(cfg), metrics)
    log.info("run folder: %s", run_dir)
    return TrainResult(run_dir, metrics, fitted.history)


# ----------------------------------------------------------------------------- data and model


def load_splits(cfg: TrainConfig, prepared: Prepared) -> dict[str, LabelledTexts]:
    splits = read_splits(cfg, prepared, train_scores=cfg.soft_targets > 0)
    if cfg.dry_run:  # one step of each: a handful of examples is enough
        for name, s in splits.items():
            n = cfg.batch_size if name == "train" else cfg.eval_batch_size
            scores = s.scores[:n] if s.scores is not None else None
            weak = s.weak[:n] if s.weak is not None else None
            splits[name] = LabelledTexts(s.path, s.texts[:n], s.labels[:n], s.classes, scores, weak)
    return splits


def soft_targets_of(cfg: TrainConfig, train: LabelledTexts, prepared: Prepared) -> np.ndarray | None:
    """The training posts' target distributions (None: hard labels): read from --targets (written by
    `sentitune distill`), or from their scores and the prepared folder's class boundaries (--soft-targets)."""
    if cfg.targets:
        if cfg.soft_targets:
            raise SentituneError(f"--targets {cfg.targets} and --soft-targets both set the targets; drop one")
        return read_targets(cfg, train, prepared.classes)
    if not cfg.soft_targets:
        return None
    boundaries = prepared.score_boundaries
    if train.scores is None or boundaries is None:
        raise SentituneError(
            f"--soft-targets needs data prepared from scores (a score column, or --label-with vader): "
            f"{cfg.data or cfg.training_file} has no scores with their class boundaries; prepare it with "
            "`sentitune prepare` and pass --data (a folder prepared by an earlier version: prepare it again), "
            "or drop --soft-targets"
        )
    n_classes = len(prepared.classes)
    scored = np.isfinite(train.scores)  # posts people labelled beside VADER's have no score: their label
    targets = np.eye(n_classes, dtype=np.float32)[train.labels]
    targets[scored] = soft_targets(
        train.scores[scored], train.labels[scored], boundaries, cfg.soft_targets, n_classes
    )
    return targets


def read_targets(cfg: TrainConfig, train: LabelledTexts, classes: tuple[str, ...]) -> np.ndarray:
    """--targets: a safetensors file (a float32 `targets` tensor, one row per training post; in its metadata
    the SHA-256 of the training file it belongs to and the classes of its columns, as JSON), checked
    against that file row for row. Its imports are local: only a distilled run needs them."""
    import hashlib
    import json

    from safetensors import SafetensorError, safe_open

    from sentitune.errors import short
    from sentitune.storage import is_url, local_copy, open_input

    where = f"--targets {cfg.targets}"
    digest = hashlib.sha256()
    with open_input(train.path, "rb", compression=None) as f:
        while block := f.read(1 << 20):
            digest.update(block)
    try:
        path = local_copy(cfg.targets) if is_url(cfg.targets) else cfg.targets
        with safe_open(path, "np") as f:
            meta = f.metadata() or {}
            found = f.get_tensor("targets")
        recorded, written_for = tuple(json.loads(meta["classes"])), meta["training_sha256"]
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise SentituneError(
            f"{where} is not a targets file (safetensors with a 'targets' tensor and its training file's "
            f"SHA-256): {short(exc)}; write it with `sentitune distill`"
        ) from None
    if written_for != digest.hexdigest():
        raise SentituneError(
            f"{where} was written for another training file than {train.path} (its SHA-256 differs); "
            "pass the training file it was written with, or write the targets again"
        )
    if recorded != tuple(classes):
        raise SentituneError(
            f"{where} gives targets over {','.join(recorded)}; the data's classes are {','.join(classes)}"
        )
    if cfg.dry_run:  # the dry run trains on the first rows
        found = found[: len(train)]
    sound = found.ndim == 2 and np.isfinite(found).all() and (found >= 0).all()
    sound = sound and np.allclose(found.sum(-1), 1, atol=1e-3)
    if found.shape != (len(train), len(classes)) or not sound:
        raise SentituneError(
            f"{where} holds {found.shape[0]} rows of {found.shape[-1]} targets for {len(train)} training "
            f"posts and {len(classes)} classes, each row a distribution (non-negative, summing to 1); "
            "write it again"
        )
    return found.astype(np.float32)


def build_model(cfg: TrainConfig, classes: tuple[str, ...] = LABELS):
    source = resolve_model(cfg.model)
    if cfg.model is None:
        log.info("model: the embedded %s", MODEL_DESCRIPTION)
    classifier = load_classifier(source, classes)
    model = classifier.model
    if cfg.keep_layers:
        keep_first_layers(model, cfg.keep_layers)
    freeze(model, cfg.freeze_layers, cfg.train_head_only)
    if isinstance(model, MeanPooled):  # a mean-pooled run, trained on
        if cfg.pooling == "cls":
            raise SentituneError(
                f"{source} was trained with --pooling mean; continue it with --pooling mean or auto"
            )
        pooling = "mean"
    else:
        pooling = cfg.pooling
        if pooling == "auto":
            pooling = trained_pooling(source) if has_bert_style_head(model) else "cls"
        model = classifier.model = pooled(model, pooling)
    total, trainable = count_parameters(model)
    info = {
        "source": cfg.model or "embedded:all-MiniLM-L6-v2",
        "path": source,
        "type": model.config.model_type,
        "layers": len(encoder_layers(model)),
        "hidden_size": model.config.hidden_size,
        "pooling": pooling,
        "parameters": total,
        "trainable_parameters": trainable,
    }
    log.info(
        "model: %s, %d layers x %d, %s pooling, %.1f M parameters (%.1f M trainable)",
        *(info["source"], info["layers"], info["hidden_size"], pooling, total / 1e6, trainable / 1e6),
    )
    return classifier, info


# Settings that do not change the computed weights; a checkpoint stays valid when they change.
NOT_IN_FINGERPRINT = {
    "baseline",
    "job_dir",
    "dry_run",
    "overwrite",
    "checkpoint_dir",
    "checkpoint_every",
    "log_every",
    "device",
    "num_threads",
    "eval_batch_size",
    "train_eval_examples",
    "tensorboard_dir",
    "dist_timeout",
}


def fingerprint(cfg: TrainConfig, precision: Precision) -> dict:
    """What a checkpoint must have been made with to be resumed. The precision is the one used, not
    the option: `auto` means bf16 on one machine and fp32 on another."""
    found = {k: v for k, v in asdict(cfg).items() if k not in NOT_IN_FINGERPRINT}
    return {**found, "precision": precision.name}


# ----------------------------------------------------------------------------- fit


@dataclass
class LoopState:
    """Where the loop is: everything a checkpoint holds, beside the tensors, to continue as if the run
    had never stopped. The running sums cover the steps since the last progress line, all ranks'."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0  # batches of `epoch` already trained
    seen: int = 0  # training examples so far, all ranks
    history: list[dict] = field(default_factory=list)  # one row per validation
    train_log: list[dict] = field(default_factory=list)  # one row per progress line
    best_score: float = -1.0  # validation macro-F1 of the best model so far
    best_step: int | None = None
    bad_evals: int = 0  # validations in a row without a better macro-F1
    run_n: int = 0
    run_loss: float = 0.0
    run_correct: int = 0


@dataclass
class FitResult:
    history: list[dict]
    train_log: list[dict]
    stats: dict
    best_step: int | None


@dataclass
class Trainee:
    """The model being trained and what updates it."""

    core: torch.nn.Module  # the model itself
    model: torch.nn.Module  # what a step runs: `core`, or DistributedDataParallel around it
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None  # fp16 only
    best_state: dict[str, torch.Tensor] | None = None  # the best validation's weights, on the host

    def checkpoint(self, checkpointer: Checkpointer, state: LoopState) -> str:
        return checkpointer.save(
            self.core, self.optimizer, self.scheduler, self.best_state, state, self.scaler
        )


def fit(
    model: torch.nn.Module,
    tokens: dict[str, TokenizedTexts],
    splits: dict[str, LabelledTexts],
    cfg: TrainConfig,
    device: torch.device,
    precision: Precision,
    started: float | None = None,
    checkpointer: Checkpointer | None = None,
    stop_signal: StopSignal | None = None,
    d: distributed.Dist = distributed.SINGLE,
    targets: np.ndarray | None = None,
) -> FitResult:
    """Train `model` in place; `started` (perf_counter) is when the command began, for time to first step;
    `targets`: per training post, a target distribution over the classes (--soft-targets)."""
    train_tokens, train_labels = tokens["train"], splits["train"].labels
    steps_per_epoch = math.ceil(len(train_tokens) / cfg.batch_size)
    planned, validate_every = (1, 1) if cfg.dry_run or cfg.max_steps else planned_epochs(cfg, steps_per_epoch)
    total_steps = 1 if cfg.dry_run else (cfg.max_steps or planned * steps_per_epoch)
    epochs = math.ceil(total_steps / steps_per_epoch)
    t = build_trainee(model, cfg, device, precision, total_steps, d)
    loss_of = BatchLoss(
        train_labels, cfg, device, d.world_size, len(class_names(model)), targets, splits["train"].weak
    )
    state = LoopState()
    resumed = (
        checkpointer.resume(t.core, t.optimizer, t.scheduler, device, t.scaler) if checkpointer else None
    )
    if resumed:
        state, t.best_state = LoopState(**resumed.loop), resumed.best_state
    sums = RunningSums(device, state if d.is_main else LoopState())  # the saved sums are all ranks'
    clock = Clock(started, seen_before=state.seen)
    events = EventLog(
        None if cfg.dry_run or not d.is_main else events_dir(cfg.tensorboard_dir), state.step or None
    )
    tuning = TuningReport(enabled=d.is_main and not cfg.dry_run)
    progress = Progress(total_steps, cfg.log_every, show=d.is_main)
    stop = False
    t.model.train()
    for epoch in range(state.epoch, epochs):
        # The batch order is a function of (seed, epoch): a resumed run skips the batches it did.
        batches = length_bucketed_batches(
            train_tokens.lengths, cfg.batch_size, np.random.default_rng([cfg.seed, epoch])
        )
        done = state.batches_done if epoch == state.epoch else 0
        for i, batch_rows in enumerate(batches[done:], done + 1):
            if len(batch_rows) < d.world_size:  # a last batch too small to give every rank a row
                continue
            rows = d.shard(batch_rows)
            logits, y, loss, per_example = train_step(
                t.model, train_tokens, train_labels, rows, batch_rows, loss_of, precision, device
            )
            step_optimizer(t, loss, cfg.max_grad_norm)
            sums.add(per_example, logits, y)
            state.step, state.epoch, state.batches_done, state.seen = (
                state.step + 1,
                epoch,
                i,
                state.seen + len(batch_rows),
            )
            clock.first_step()
            last_of_epoch = i == len(batches)
            validate_now = "val" in splits and (
                state.step == total_steps
                or (cfg.eval_every and state.step % cfg.eval_every == 0)
                or (not cfg.eval_every and last_of_epoch and (epoch + 1) % validate_every == 0)
            )
            # A validation row carries the training loss since the last log line, so log first.
            if state.step % cfg.log_every == 0 or state.step == total_steps or last_of_epoch or validate_now:
                record = progress_record(state, sums.take(d), t.scheduler, clock)
                check_finite(record["loss"], state.step, cfg)
                state.train_log.append(record)
                events.train(record)
                progress.update(record, i, len(batches), epochs)
            if validate_now:
                with clock.validating():
                    val = validate(t.core, tokens["val"], splits["val"].labels, cfg, device, precision, d)
                check_finite(val["loss"], state.step, cfg, "validation loss")
                stop = track_validation(state, val, t, clock, cfg)
                events.validation(state.history[-1])
                tuning.report(val["macro_f1"], state.step)
                progress.note(validation_line(state, val))
                if stop:
                    progress.note(f"early stopping: no better macro-F1 in {state.bad_evals} validations")
            if state.step >= total_steps or stop:
                break
            checkpoint_if_due(checkpointer, stop_signal, state, sums, t, cfg, events, d)
        if state.step >= total_steps or stop:
            break
    progress.close()
    events.close()
    if t.best_state is not None and state.best_step != state.step:
        log.info(
            "restoring the best model (step %d, validation macro-F1 %.4f)", state.best_step, state.best_score
        )
        t.core.load_state_dict(t.best_state)
    if state.history:  # the model kept is the best one: the trial's final measurement
        tuning.report(state.best_score, state.step)
    stats = clock.stats(state, len(train_tokens), resumed.loop["step"] if resumed else None, stop)
    log.info(
        "trained %d steps (%d examples) in %.1fs (%.1fs of it validating): %.0f examples/s",
        *(state.step, state.seen, stats["wall_s"], stats["validation_s"], stats["examples_per_s"]),
    )
    return FitResult(state.history, state.train_log, stats, state.best_step)


def validate(
    model, tokens: TokenizedTexts, labels: np.ndarray, cfg, device, precision, d=distributed.SINGLE
) -> dict:
    """Loss, accuracy, macro-F1 and the rest on a labelled split (every rank gets the whole result)."""
    return classification_metrics(
        labels, probabilities(model, tokens, cfg, device, precision, d), class_names(model)
    )


# ----------------------------------------------------------------------------- the steps of fit


def planned_epochs(cfg: TrainConfig, steps_per_epoch: int) -> tuple[int, int]:
    """The epochs to train, and every how many of them to validate (with --eval-every 0): --epochs and
    each, or, where the training posts are too few for --min-steps optimiser steps, as many more epochs as
    that takes, validated about --epochs times as --epochs alone would have been (a model fine-tuned on a
    few hundred posts for a few dozen steps has not left the class prior yet)."""
    needed = math.ceil(cfg.min_steps / steps_per_epoch)
    if needed <= cfg.epochs:
        return cfg.epochs, 1
    every = needed // cfg.epochs
    log.warning(
        "%d optimiser steps an epoch: training %d epochs (%d steps) instead of %d, to reach --min-steps %d, "
        "validating every %d (pass --min-steps 0 for exactly --epochs)",
        steps_per_epoch,
        needed,
        needed * steps_per_epoch,
        cfg.epochs,
        cfg.min_steps,
        every,
    )
    return needed, every


def build_trainee(model, cfg: TrainConfig, device, precision: Precision, total_steps: int, d) -> Trainee:
    """The optimiser, the warm-up + linear-decay schedule, fp16's gradient scaler, DDP across ranks, and
    on the CPU dropout with cheaper masks (sentitune.dropout)."""
    if cfg.dropout_masks == "fast" and device.type == "cpu":
        use_fast_dropout(model)
    optimizer = build_optimizer(model, cfg, device)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    scaler = torch.amp.GradScaler(device.type) if precision.needs_grad_scaler else None
    wrapped = model
    if d.enabled:
        ids = [device.index] if device.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return Trainee(model, wrapped, optimizer, scheduler, scaler)


class BatchLoss:
    """Cross-entropy with the run's class weights and label smoothing, against the class ids or, with
    --soft-targets, against each post's target distribution (the class weights still follow its class).

    The step's loss is the weighted sum over this rank's rows divided by the global batch's total
    weight (times the ranks, which DDP's gradient averaging divides back out), so the gradient
    averaged over ranks is the single-process gradient of the global batch."""

    def __init__(
        self,
        train_labels: np.ndarray,
        cfg: TrainConfig,
        device: torch.device,
        world_size: int = 1,
        n_classes: int = len(LABELS),
        targets: np.ndarray | None = None,
        weak: np.ndarray | None = None,
    ):
        self.weights = class_weights(train_labels, cfg.class_weights, n_classes)
        weight_of_class = self.weights.numpy() if self.weights is not None else np.ones(n_classes, np.float32)
        self.example_weight = weight_of_class[train_labels]
        self.on_device = self.weights.to(device) if self.weights is not None else None
        self.row_weight = None  # --weak-label-weight: per training row, when people's and VADER's labels mix
        if weak is not None and weak.any() and not weak.all() and cfg.weak_label_weight != 1:
            log.info(
                "training posts: %d labelled by people, %d by VADER, which weigh %g each (--weak-label-weight)",
                int((~weak).sum()), int(weak.sum()), cfg.weak_label_weight,
            )  # fmt: skip
            row_weight = np.where(weak, np.float32(cfg.weak_label_weight), np.float32(1))
            self.example_weight = self.example_weight * row_weight
            self.row_weight = torch.from_numpy(row_weight)
        self.label_smoothing = cfg.label_smoothing
        self.world_size = world_size
        self.targets = torch.from_numpy(targets) if targets is not None else None

    def __call__(
        self, logits: torch.Tensor, y: torch.Tensor, batch_rows: np.ndarray, rows: np.ndarray | None = None
    ):
        """(the step's loss, the unweighted per-example losses for the logs); `rows`: this rank's rows of
        the batch (all of `batch_rows` in one process)."""
        target = y
        if self.targets is not None:
            target = self.targets[batch_rows if rows is None else rows].to(logits.device, non_blocking=True)
        per_example = torch.nn.functional.cross_entropy(
            logits.float(), target, reduction="none", label_smoothing=self.label_smoothing
        )
        weighted = per_example * self.on_device[y] if self.on_device is not None else per_example
        if self.row_weight is not None:
            weighted = weighted * self.row_weight[batch_rows if rows is None else rows].to(logits.device)
        loss = weighted.sum() * (self.world_size / float(self.example_weight[batch_rows].sum()))
        return loss, per_example


def class_weights(labels: np.ndarray, mode: str, n_classes: int) -> torch.Tensor | None:
    """'auto': inverse class frequency, normalised so a balanced set gets 1 everywhere; 'none': None."""
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def train_step(model, train_tokens, train_labels, rows, batch_rows, loss_of: BatchLoss, precision, device):
    """Forward pass and loss of one batch: (logits, labels on the device, loss, per-example losses)."""
    ids, mask = train_tokens.batch(rows)
    y = _to(torch.from_numpy(train_labels[rows]), device)
    with precision.autocast(device):
        logits = model(input_ids=_to(ids, device), attention_mask=_to(mask, device)).logits
    loss, per_example = loss_of(logits, y, batch_rows, rows)
    return logits, y, loss, per_example


def step_optimizer(t: Trainee, loss: torch.Tensor, max_grad_norm: float) -> None:
    """Backward, clip, step; with fp16's gradient scaler a step whose gradients overflowed is skipped
    and the scale lowered."""
    trainable = [p for p in t.core.parameters() if p.requires_grad]
    if t.scaler is None:
        loss.backward()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
        t.optimizer.step()
    else:
        t.scaler.scale(loss).backward()
        if max_grad_norm > 0:
            t.scaler.unscale_(t.optimizer)
            torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
        t.scaler.step(t.optimizer)
        t.scaler.update()
    t.scheduler.step()
    t.optimizer.zero_grad(set_to_none=True)


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host-to-device copy; from pinned memory and asynchronous on CUDA."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t if device.type == "cpu" else t.to(device)


class RunningSums:
    """Training loss, correct predictions and examples since the last progress line, summed on the
    device so the step loop never waits for a number to reach the host."""

    def __init__(self, device: torch.device, start: LoopState):
        self.loss = torch.full((), float(start.run_loss), device=device)
        self.correct = torch.full((), int(start.run_correct), dtype=torch.long, device=device)
        self.n = start.run_n

    def add(self, per_example: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss += per_example.detach().sum()
        self.correct += (logits.detach().argmax(-1) == y).sum()
        self.n += len(y)

    def peek(self, d: distributed.Dist) -> tuple[float, int, int]:
        """(loss sum, correct, examples) of all ranks together."""
        loss, correct, n = d.sum(self.loss.item(), self.correct.item(), self.n)
        return loss, int(correct), int(n)

    def take(self, d: distributed.Dist) -> tuple[float, int, int]:
        """As `peek`, then start again from zero."""
        found = self.peek(d)
        self.loss.zero_()
        self.correct.zero_()
        self.n = 0
        return found


class Clock:
    """Wall time of the loop, with the time spent validating kept apart so examples/s measures training."""

    def __init__(self, started: float | None, seen_before: int = 0):
        self.start = time.perf_counter()
        self.started = started or self.start  # when the command began
        self.validation_s = 0.0
        self.first_step_s: float | None = None
        self.seen_before = seen_before  # examples trained before a resume: not this process's work

    def first_step(self) -> None:
        if self.first_step_s is None:
            self.first_step_s = time.perf_counter() - self.started

    @contextlib.contextmanager
    def validating(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.validation_s += time.perf_counter() - t0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def training(self) -> float:
        return self.elapsed() - self.validation_s

    def stats(
        self, state: LoopState, train_examples: int, resumed_from: int | None, stopped_early: bool
    ) -> dict:
        wall = self.elapsed()
        return {
            "steps": state.step,
            "epochs_run": round(state.seen / train_examples, 3),
            "examples": state.seen,
            "wall_s": round(wall, 2),
            "validation_s": round(self.validation_s, 2),
            "examples_per_s": round((state.seen - self.seen_before) / (wall - self.validation_s), 1),
            "resumed_from_step": resumed_from,
            "time_to_first_step_s": round(self.first_step_s or 0.0, 3),
            "stopped_early": stopped_early,
            "best_step": state.best_step,
        }


def progress_record(state: LoopState, sums: tuple[float, int, int], scheduler, clock: Clock) -> dict:
    loss_sum, correct, n = sums
    return {
        "step": state.step,
        "epoch": state.epoch + 1,
        "examples_seen": state.seen,
        "loss": loss_sum / n,
        "accuracy": correct / n,
        "lr": scheduler.get_last_lr()[0],
        "elapsed_s": clock.elapsed(),
        "train_s": clock.training(),
        "examples_this_run": state.seen - clock.seen_before,
    }


def track_validation(state: LoopState, val: dict, t: Trainee, clock: Clock, cfg: TrainConfig) -> bool:
    """Record a validation, keep the best model's weights (on the host); True: stop early."""
    state.history.append(
        {
            "step": state.step,
            "epoch": state.epoch + 1,
            "examples_seen": state.seen,
            "train_loss": state.train_log[-1]["loss"],
            "train_accuracy": state.train_log[-1]["accuracy"],
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "val_macro_f1": val["macro_f1"],
            "val_macro_recall": val["macro_recall"],
            "lr": t.scheduler.get_last_lr()[0],
            "elapsed_s": round(clock.elapsed(), 2),
        }
    )
    if val["macro_f1"] > state.best_score + 1e-9:
        state.best_score, state.best_step, state.bad_evals = val["macro_f1"], state.step, 0
        if not cfg.dry_run:
            t.best_state = {k: v.detach().to("cpu", copy=True) for k, v in t.core.state_dict().items()}
        return False
    state.bad_evals += 1
    return bool(cfg.early_stopping_patience and state.bad_evals >= cfg.early_stopping_patience)


def check_finite(loss: float, step: int, cfg: TrainConfig, what: str = "loss") -> None:
    """A NaN or infinite loss means the weights are lost: stop with what to change, write nothing."""
    if not math.isfinite(loss):
        raise SentituneError(
            f"training diverged by step {step}: the {what} is {loss}; lower --learning-rate (it is "
            f"{cfg.learning_rate:g}) or keep --max-grad-norm on (it is {cfg.max_grad_norm:g}); nothing was written"
        )


def check_weights_finite(model: torch.nn.Module, step: int, cfg: TrainConfig) -> None:
    """The last check before saving: no NaN or infinity in any weight."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise SentituneError(
            f"training diverged by step {step}: {len(bad)} weight tensors hold NaN or infinity (e.g. {bad[0]}); "
            f"lower --learning-rate (it is {cfg.learning_rate:g}); nothing was written"
        )


def validation_line(state: LoopState, val: dict) -> str:
    return (
        f"validation at step {state.step}: loss {val['loss']:.4f}, accuracy {val['accuracy']:.4f}, "
        f"macro-F1 {val['macro_f1']:.4f}, macro-recall {val['macro_recall']:.4f}"
    )


def checkpoint_if_due(
    checkpointer, stop_signal, state: LoopState, sums: RunningSums, t: Trainee, cfg, events, d
) -> None:
    """Checkpoint every --checkpoint-every steps, and on SIGTERM, then stop (exit 143)."""
    due = cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0
    asked_to_stop = d.any(stop_signal is not None and stop_signal.received)  # every rank must ask
    if checkpointer is None or not (due or asked_to_stop):
        return
    state.run_loss, state.run_correct, state.run_n = sums.peek(d)
    where = t.checkpoint(checkpointer, state)
    events.sync()
    d.barrier()  # no rank stops before the checkpoint is complete
    if asked_to_stop:
        raise Preempted(
            f"stopped by SIGTERM at step {state.step}; checkpoint saved in {where}; "
            "run the same command again to resume"
        )


# ----------------------------------------------------------------------------- evaluate


def probabilities(model, tokens: TokenizedTexts, cfg, device, precision, d: distributed.Dist) -> np.ndarray:
    """Class probabilities of every text; with several ranks each scores a shard and all get the whole."""
    if not d.enabled:
        return infer_probs(model, tokens, cfg.eval_batch_size, device, precision)
    rows = d.shard(np.arange(len(tokens)))
    part = infer_probs(model, tokens.subset(rows), cfg.eval_batch_size, device, precision)
    return d.gather_rows(rows, part.reshape(len(rows), len(class_names(model))), len(tokens))


def class_names(model) -> tuple[str, ...]:
    """The model's classes in the order of its outputs (what it was built with)."""
    config = model.config
    return tuple(config.id2label[i] for i in range(config.num_labels))


def posts_with_unknown(tokens: TokenizedTexts, unk_id: int) -> int:
    unk = tokens.ids == unk_id
    return int(np.add.reduceat(unk, tokens.offsets[:-1]).astype(bool).sum()) if len(unk) else 0


def unknown_before_and_after(classifier, splits, tokens, max_length: int) -> dict:
    """Per split, the posts with [UNK] tokens as written and as normalised (what the model reads)."""
    unk_id = classifier.tokenizer.unk_token_id
    found = {}
    for name, split in splits.items():
        after = posts_with_unknown(tokens[name], unk_id)
        raw = (
            tokenize(classifier.tokenizer, split.texts, max_length)
            if classifier.normalization.active
            else None
        )
        found[name] = {
            "posts": len(split),
            "as_written": posts_with_unknown(raw, unk_id) if raw is not None else after,
            "normalized": after,
        }
    return found


def evaluate_splits(
    model, tokens, splits, cfg: TrainConfig, device, precision, unk_id: int = -1, d=distributed.SINGLE
) -> dict:
    """The final metrics of the model kept: val and test (with 95 % intervals), and a sample of train; and
    the class probabilities of val and test."""
    metrics, scored = {}, {}
    for name in ("val", "test"):
        if name in splits:
            labels = splits[name].labels
            probs = scored[name] = probabilities(model, tokens[name], cfg, device, precision, d)
            metrics[name] = classification_metrics(labels, probs, class_names(model))
            if not cfg.dry_run:
                metrics[name]["intervals_95"] = bootstrap_intervals(
                    labels, probs.argmax(axis=1), len(class_names(model))
                )
            metrics[name]["posts_with_unknown_tokens"] = posts_with_unknown(tokens[name], unk_id)
    if cfg.train_eval_examples and not cfg.dry_run:
        n = len(tokens["train"])
        rows = np.sort(np.random.default_rng(cfg.seed).permutation(n)[: cfg.train_eval_examples])
        sample = tokens["train"].subset(rows)
        metrics["train"] = validate(model, sample, splits["train"].labels[rows], cfg, device, precision, d)
        metrics["train"]["note"] = f"a seeded sample of {len(rows)} of the {n} training examples"
    return metrics, scored


def warn_if_collapsed(metrics: dict) -> None:
    """A loud warning, kept in metrics.json and the model card, where the final model gives nearly every
    validation or test post one class (metrics.collapsed)."""
    for name, shown in (("val", "validation"), ("test", "test")):
        found = collapsed(metrics[name], f"{shown} posts") if name in metrics else None
        if found:
            message = (
                f"the model {found}: it learnt the class balance, not the posts; train longer (--epochs, "
                "--min-steps, --max-steps) or with a lower --learning-rate"
            )
            log.warning(message)
            metrics.setdefault("warnings", []).append(message)


def calibrate(model, splits: dict, scored: dict, metrics: dict, seed: int) -> dict:
    """Temperature scaling where it helps: a temperature is checked on validation posts it was not fitted
    on (cross_fitted_temperature) and, only if it lowers their NLL, the one fitted on the whole
    validation split is divided into the model's output layer (labels unchanged); `scored` and the
    val/test metrics then become the calibrated ones. The result records the decision and why, and ECE
    and NLL before and after on val and test (the same when refused)."""
    decision = cross_fitted_temperature(splits["val"].labels, scored["val"], class_names(model), seed=seed)
    temperature = decision["temperature"]
    result = {
        "method": f"temperature scaling, checked by {CALIBRATION_FOLDS}-fold cross-fitting on the validation split",
        "decision": "kept" if decision["kept"] else "refused",
        **{k: v for k, v in decision.items() if k != "kept"},
    }
    if decision["kept"]:
        scale_logits(model, len(class_names(model)), temperature)
    for name, before in list(scored.items()):
        labels = splits[name].labels
        after = scored[name] = scale_temperature(before, temperature) if decision["kept"] else before
        result[name] = {
            "ece_before": calibration_bins(labels, before)[1],
            "ece_after": calibration_bins(labels, after)[1],
            "nll_before": nll(labels, before),
            "nll_after": nll(labels, after),
        }
        if decision["kept"]:
            kept = {
                k: metrics[name][k]
                for k in ("intervals_95", "posts_with_unknown_tokens")
                if k in metrics[name]
            }
            metrics[name] = {**classification_metrics(labels, after, class_names(model)), **kept}
    if decision["kept"]:
        log.info(
            "calibration: temperature %.3f kept: %s; ECE of the same held-out posts %.4f -> %.4f",
            temperature,
            decision["reason"],
            decision["held_out"]["ece_before"],
            decision["held_out"]["ece_after"],
        )
    else:
        log.info("calibration: none, the scores stay as trained: %s", decision["reason"])
    return result


def fit_baseline(cfg: TrainConfig, run_dir: str, splits: dict) -> dict:
    """The TF-IDF + logistic regression baseline on the splits in memory, for the report beside the model."""
    bcfg = BaselineConfig(
        data=cfg.data,
        training_file=cfg.training_file,
        validation_file=cfg.validation_file,
        testing_file=cfg.testing_file,
        job_dir=run_dir,
        train_eval_examples=0,
        normalize=cfg.normalize,
        split_hashtags=cfg.split_hashtags,
    )
    model, stats = tfidf.fit(bcfg, splits["train"])
    found = tfidf.evaluate_splits(model, splits, bcfg)
    keys = ("examples", "loss", "accuracy", "macro_f1", "macro_recall")
    return {
        "model": "TF-IDF word 1-2 + char 2-5 grams, logistic regression (sentitune baseline defaults)",
        **{name: {k: found[name][k] for k in keys} for name in ("val", "test") if name in found},
        "training": stats,
    }
