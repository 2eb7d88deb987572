"""The training path: load data -> build model -> fit -> evaluate -> save, top to bottom.

The step loop does no per-example Python work and no host sync except at log and evaluation
points: batches come from pre-tokenised, length-bucketed ids; loss and accuracy accumulate on the
device and are read only when a progress line is printed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from sentitune import LABELS, __version__, distributed
from sentitune.batching import TokenizedTexts, length_bucketed_batches, tokenize
from sentitune.checkpoint import Checkpointer
from sentitune.config import TrainConfig
from sentitune.data import LabelledTexts
from sentitune.data import load_splits as read_splits
from sentitune.errors import Preempted, SentituneError, require_extra
from sentitune.events import EventLog, TuningReport
from sentitune.events import target_dir as events_dir
from sentitune.metrics import (
    bootstrap_intervals,
    classification_metrics,
    log_metrics,
    plot_confusion_matrix,
    plot_training_curves,
)
from sentitune.model import (
    RUN_CONFIG,
    MeanPooled,
    count_parameters,
    encoder_layers,
    freeze,
    has_bert_style_head,
    keep_first_layers,
    load_classifier,
    pooled,
    trained_pooling,
)
from sentitune.runtime import Precision, infer_probs, resolve_device, resolve_precision
from sentitune.storage import StagedOutput, join

log = logging.getLogger("sentitune")
RUN_MARKER = "metrics.json"


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
    out = None
    if not cfg.dry_run:  # refuse an occupied folder before spending minutes on training
        out = StagedOutput(
            run_dir,
            occupied_by=[RUN_MARKER, RUN_CONFIG, "model.safetensors"],
            marker=RUN_MARKER,
            what="a finished run",
            overwrite=cfg.overwrite,
        )
    d = distributed.from_environment()
    if d.enabled and cfg.batch_size % d.world_size:
        raise SentituneError(
            f"--batch-size {cfg.batch_size} is the global batch and must divide by the {d.world_size} "
            f"processes (each takes batch / processes); use e.g. --batch-size "
            f"{max(1, cfg.batch_size // d.world_size) * d.world_size}"
        )
    d, device_name = distributed.setup(cfg.device, cfg.dist_timeout)
    try:
        return _train(cfg, out, run_dir, started, d, device_name)
    finally:
        distributed.shutdown(d)


def _train(
    cfg: TrainConfig, out, run_dir, started: float, d: distributed.Dist, device_name: str
) -> TrainResult:
    with out or contextlib.nullcontext():
        device = resolve_device(device_name)
        precision = resolve_precision(cfg.precision, device)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(cfg.seed)

        splits = load_splits(cfg)
        classifier, model_info = build_model(cfg)
        t0 = time.perf_counter()
        tokens = {name: tokenize(classifier.tokenizer, s.texts, cfg.max_length) for name, s in splits.items()}
        tokenize_s = time.perf_counter() - t0
        log.info(
            "device %s, precision %s, %d threads; tokenised %s in %.1fs",
            device,
            precision,
            torch.get_num_threads(),
            ", ".join(f"{n} {len(t)}" for n, t in tokens.items()),
            tokenize_s,
        )

        model = classifier.model.to(device)
        checkpointer = (
            None
            if cfg.dry_run
            else Checkpointer(_checkpoint_root(cfg, run_dir), _fingerprint(cfg, precision), dist=d)
        )
        with StopSignal() as stop_signal:
            fitted = fit(model, tokens, splits, cfg, device, precision, started, checkpointer, stop_signal, d)
        metrics = evaluate_splits(
            model, tokens, splits, cfg, device, precision, classifier.tokenizer.unk_token_id, d
        )
        metrics["training"] = {**fitted.stats, "tokenize_s": round(tokenize_s, 2)}
        if cfg.baseline and not cfg.dry_run and d.is_main:
            metrics["baseline"] = fit_baseline(cfg, run_dir, splits)
        log_metrics(metrics)
        if cfg.dry_run:
            log.info("dry run finished: nothing written")
            return TrainResult(None, metrics, fitted.history)
        if d.is_main:  # one run folder, written by rank 0
            if d.enabled:
                metrics["training"]["processes"] = d.world_size
            save_run(out, classifier, cfg, model_info, splits, metrics, fitted, device, precision)
            out.commit()
        else:
            out.discard()
        d.barrier()  # the folder is complete before any rank reports success
        if d.is_main:
            checkpointer.clear()
        log.info("run folder: %s", run_dir)
        return TrainResult(run_dir, metrics, fitted.history)


# ----------------------------------------------------------------------------- data and model


def load_splits(cfg: TrainConfig) -> dict[str, LabelledTexts]:
    splits = read_splits(cfg)
    if cfg.dry_run:  # one step of each: a handful of examples is enough
        for name in splits:
            n = cfg.batch_size if name == "train" else cfg.eval_batch_size
            splits[name] = LabelledTexts(splits[name].path, splits[name].texts[:n], splits[name].labels[:n])
    return splits


def build_model(cfg: TrainConfig):
    from sentitune.builtin import MODEL_DESCRIPTION, default_model

    source = cfg.model
    if source is None:
        source = default_model()
        log.info("model: the embedded %s", MODEL_DESCRIPTION)
    classifier = load_classifier(source)
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
        info["source"],
        info["layers"],
        info["hidden_size"],
        pooling,
        total / 1e6,
        trainable / 1e6,
    )
    return classifier, info


# ----------------------------------------------------------------------------- fit


class StopSignal:
    """Turns SIGTERM (what Vertex AI sends before a Spot VM goes) into a flag the loop checks after
    each step, so it can save a checkpoint and stop cleanly instead of dying mid-step."""

    def __init__(self) -> None:
        self.received = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        self.received = True
        log.warning("SIGTERM received: stopping after this step with a checkpoint")

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


# Settings that do not change the computed weights; a checkpoint stays valid when they change.
_NOT_IN_FINGERPRINT = {
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


def _fingerprint(cfg: TrainConfig, precision: Precision) -> dict:
    # The precision actually used, not the option: `auto` means bf16 on one machine and fp32 on another.
    found = {k: v for k, v in asdict(cfg).items() if k not in _NOT_IN_FINGERPRINT}
    return {**found, "precision": precision.name}


def _checkpoint_root(cfg: TrainConfig, run_dir: str) -> str:
    return cfg.checkpoint_dir or os.environ.get("AIP_CHECKPOINT_DIR") or join(run_dir, "checkpoints")


@dataclass
class FitResult:
    history: list[dict]
    train_log: list[dict]
    stats: dict
    best_step: int | None


def _optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW without decay on biases and LayerNorms; with --layer-lr-decay D, layer i of L learns at
    lr * D ** (L + 1 - i) (embeddings i = 0, the head L + 1)."""
    layers = len(encoder_layers(model))
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = cfg.layer_lr_decay ** (layers + 1 - _depth(name, layers))
        no_decay = p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name
        groups.setdefault((scale, 0.0 if no_decay else cfg.weight_decay), []).append(p)
    params = [
        {"params": ps, "weight_decay": wd, "lr": cfg.learning_rate * scale}
        for (scale, wd), ps in groups.items()
    ]
    try:
        return torch.optim.AdamW(params, lr=cfg.learning_rate, fused=device.type in ("cpu", "cuda"))
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=cfg.learning_rate, foreach=True)


_LAYER = re.compile(r"\.layers?\.(\d+)\.")


def _depth(name: str, layers: int) -> int:
    """0 for the embeddings, i + 1 for encoder layer i, layers + 1 for the pooler and the head."""
    match = _LAYER.search(name)
    if match:
        return int(match.group(1)) + 1
    return 0 if "embeddings" in name else layers + 1


def _class_weights(labels: np.ndarray, mode: str) -> torch.Tensor | None:
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=len(LABELS)).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (len(LABELS) * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


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
) -> FitResult:
    """Train `model` in place; `started` (perf_counter) is when the command began, for time to first step."""
    from transformers import get_linear_schedule_with_warmup

    train_tokens, train_labels = tokens["train"], splits["train"].labels
    steps_per_epoch = math.ceil(len(train_tokens) / cfg.batch_size)
    total_steps = 1 if cfg.dry_run else (cfg.max_steps or cfg.epochs * steps_per_epoch)
    epochs = math.ceil(total_steps / steps_per_epoch)
    optimizer = _optimizer(model, cfg, device)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    scaler = torch.amp.GradScaler(device.type) if precision.needs_grad_scaler else None
    weights = _class_weights(train_labels, cfg.class_weights)
    # Per-example weights; the loss is their weighted sum over the global batch's total weight, so the
    # gradient averaged over ranks is the single-process gradient of the global batch.
    example_weight = (weights.numpy() if weights is not None else np.ones(len(LABELS), np.float32))[
        train_labels
    ]
    weight_on_device = weights.to(device) if weights is not None else None
    trainable = [p for p in model.parameters() if p.requires_grad]
    has_val = "val" in splits
    core = model
    if d.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            core, device_ids=[device.index] if device.type == "cuda" else None
        )

    progress = Progress(total_steps, cfg.log_every, show=d.is_main)
    history, train_log = [], []
    best_score, best_state, best_step, bad_evals = -1.0, None, None, 0
    run_loss = torch.zeros((), device=device)
    run_correct = torch.zeros((), dtype=torch.long, device=device)
    run_n, step, seen, stop = 0, 0, 0, False
    start = time.perf_counter()
    started = started or start
    validation_s = 0.0  # kept apart, so examples/s measures training alone
    first_step_s = None
    start_epoch, skip_batches = 0, 0
    resumed = checkpointer.resume(core, optimizer, scheduler, device, scaler) if checkpointer else None
    if resumed:
        step, start_epoch, skip_batches, loop = (
            resumed.step,
            resumed.epoch,
            resumed.batches_done,
            resumed.loop,
        )
        seen, history, train_log = loop["seen"], loop["history"], loop["train_log"]
        best_score, best_step, bad_evals = loop["best_score"], loop["best_step"], loop["bad_evals"]
        best_state = resumed.best_state
        if d.is_main:  # the saved running sums are all ranks' together
            run_n = loop["run_n"]
            run_loss.fill_(loop["run_loss"])
            run_correct.fill_(loop["run_correct"])
    seen_before = seen  # rates count only the examples trained by this process
    events = EventLog(
        None if cfg.dry_run or not d.is_main else events_dir(cfg.tensorboard_dir),
        resumed.step if resumed else None,
    )
    tuning = TuningReport(enabled=d.is_main and not cfg.dry_run)
    model.train()
    for epoch in range(start_epoch, epochs):
        # The batch order is a function of (seed, epoch): a resumed run skips the batches it did.
        batches = length_bucketed_batches(
            train_tokens.lengths, cfg.batch_size, np.random.default_rng([cfg.seed, epoch])
        )
        for i, batch_rows in enumerate(batches, 1):
            if epoch == start_epoch and i <= skip_batches:
                continue
            if len(batch_rows) < d.world_size:  # a last batch too small to give every rank a row
                continue
            rows = d.shard(batch_rows)
            ids, mask = train_tokens.batch(rows)
            y = _to(torch.from_numpy(train_labels[rows]), device)
            with precision.autocast(device):
                logits = model(input_ids=_to(ids, device), attention_mask=_to(mask, device)).logits
            per_example = torch.nn.functional.cross_entropy(
                logits.float(), y, reduction="none", label_smoothing=cfg.label_smoothing
            )
            weighted = per_example * weight_on_device[y] if weight_on_device is not None else per_example
            loss = weighted.sum() * (d.world_size / float(example_weight[batch_rows].sum()))
            if scaler is None:
                loss.backward()
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
                optimizer.step()
            else:  # fp16: scaled loss; a step whose gradients overflowed is skipped and the scale lowered
                scaler.scale(loss).backward()
                if cfg.max_grad_norm > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            run_loss += per_example.detach().sum()
            run_correct += (logits.detach().argmax(-1) == y).sum()
            run_n += len(rows)
            step += 1
            seen += len(batch_rows)
            if first_step_s is None:
                first_step_s = time.perf_counter() - started
            last_of_epoch = i == len(batches)
            validate_now = has_val and (
                step == total_steps
                or (cfg.eval_every and step % cfg.eval_every == 0)
                or (not cfg.eval_every and last_of_epoch)
            )
            # A validation row carries the training loss since the last log line, so log first.
            if step % cfg.log_every == 0 or step == total_steps or last_of_epoch or validate_now:
                loss_sum, correct, n = d.sum(run_loss.item(), run_correct.item(), run_n)
                record = {
                    "step": step,
                    "epoch": epoch + 1,
                    "examples_seen": seen,
                    "loss": loss_sum / n,
                    "accuracy": correct / n,
                    "lr": scheduler.get_last_lr()[0],
                    "elapsed_s": time.perf_counter() - start,
                    "train_s": time.perf_counter() - start - validation_s,
                    "examples_this_run": seen - seen_before,
                }
                train_log.append(record)
                events.train(record)
                progress.update(record, i, len(batches), epochs)
                run_loss.zero_()
                run_correct.zero_()
                run_n = 0
            if validate_now:
                t_val = time.perf_counter()
                val = _validate(core, tokens["val"], splits["val"].labels, cfg, device, precision, d)
                validation_s += time.perf_counter() - t_val
                row = {
                    "step": step,
                    "epoch": epoch + 1,
                    "examples_seen": seen,
                    "train_loss": train_log[-1]["loss"],
                    "train_accuracy": train_log[-1]["accuracy"],
                    "val_loss": val["loss"],
                    "val_accuracy": val["accuracy"],
                    "val_macro_f1": val["macro_f1"],
                    "val_macro_recall": val["macro_recall"],
                    "lr": scheduler.get_last_lr()[0],
                    "elapsed_s": round(time.perf_counter() - start, 2),
                }
                history.append(row)
                events.validation(row)
                tuning.report(val["macro_f1"], step)
                progress.note(
                    f"validation at step {step}: loss {val['loss']:.4f}, accuracy {val['accuracy']:.4f}, "
                    f"macro-F1 {val['macro_f1']:.4f}, macro-recall {val['macro_recall']:.4f}"
                )
                if val["macro_f1"] > best_score + 1e-9:
                    best_score, best_step, bad_evals = val["macro_f1"], step, 0
                    if not cfg.dry_run:
                        best_state = {
                            k: v.detach().to("cpu", copy=True) for k, v in core.state_dict().items()
                        }
                else:
                    bad_evals += 1
                    if cfg.early_stopping_patience and bad_evals >= cfg.early_stopping_patience:
                        progress.note(f"early stopping: no better macro-F1 in {bad_evals} validations")
                        stop = True
            due = cfg.checkpoint_every and step % cfg.checkpoint_every == 0
            asked_to_stop = d.any(stop_signal is not None and stop_signal.received)
            if checkpointer and step < total_steps and not stop and (due or asked_to_stop):
                loss_sum, correct, n = d.sum(run_loss.item(), run_correct.item(), run_n)
                loop = {
                    "seen": seen,
                    "history": history,
                    "train_log": train_log,
                    "best_score": best_score,
                    "best_step": best_step,
                    "bad_evals": bad_evals,
                    "run_n": int(n),
                    "run_loss": loss_sum,
                    "run_correct": int(correct),
                }
                where = checkpointer.save(
                    core,
                    optimizer,
                    scheduler,
                    best_state,
                    scaler=scaler,
                    step=step,
                    epoch=epoch,
                    batches_done=i,
                    loop=loop,
                )
                events.sync()
                d.barrier()  # no rank stops before the checkpoint is complete
                if asked_to_stop:
                    raise Preempted(
                        f"stopped by SIGTERM at step {step}; checkpoint saved in {where}; "
                        "run the same command again to resume"
                    )
            if step >= total_steps or stop:
                break
        if step >= total_steps or stop:
            break
    wall = time.perf_counter() - start
    progress.close()
    events.close()
    if best_state is not None and best_step != step:
        log.info("restoring the best model (step %d, validation macro-F1 %.4f)", best_step, best_score)
        core.load_state_dict(best_state)
    if history:  # the model kept is the best one: the trial's final measurement
        tuning.report(best_score, step)
    stats = {
        "steps": step,
        "epochs_run": round(seen / len(train_tokens), 3),
        "examples": seen,
        "wall_s": round(wall, 2),
        "validation_s": round(validation_s, 2),
        "examples_per_s": round((seen - seen_before) / (wall - validation_s), 1),
        "resumed_from_step": resumed.step if resumed else None,
        "time_to_first_step_s": round(first_step_s or 0.0, 3),
        "stopped_early": stop,
        "best_step": best_step,
    }
    log.info(
        "trained %d steps (%d examples) in %.1fs (%.1fs of it validating): %.0f examples/s",
        step,
        seen,
        wall,
        validation_s,
        (seen - seen_before) / (wall - validation_s),
    )
    return FitResult(history, train_log, stats, best_step)


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host-to-device copy; from pinned memory and asynchronous on CUDA."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t if device.type == "cpu" else t.to(device)


def _validate(
    model, tokens, labels, cfg, device, precision, d: distributed.Dist = distributed.SINGLE
) -> dict:
    return classification_metrics(labels, _probs(model, tokens, cfg, device, precision, d), LABELS)


def _probs(model, tokens: TokenizedTexts, cfg, device, precision, d: distributed.Dist) -> np.ndarray:
    """Class probabilities of every text; with several ranks each scores a shard and all get the whole."""
    if not d.enabled:
        return infer_probs(model, tokens, cfg.eval_batch_size, device, precision)
    rows = d.shard(np.arange(len(tokens)))
    part = infer_probs(model, TokenizedTexts(*_subset(tokens, rows)), cfg.eval_batch_size, device, precision)
    return d.gather_rows(rows, part.reshape(len(rows), len(LABELS)), len(tokens))


class Progress:
    """A progress bar on a terminal; a plain line every `log_every` steps otherwise (cloud logs)."""

    def __init__(self, total_steps: int, log_every: int, show: bool = True):
        self.bar = None
        if show and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True, file=sys.stderr)
        self.done = 0

    def update(self, record: dict, batch: int, batches: int, epochs: int) -> None:
        rate = record["examples_this_run"] / max(record["train_s"], 1e-9)
        if self.bar is not None:
            self.bar.update(record["step"] - self.done)
            self.bar.set_postfix(
                loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}", ex_s=f"{rate:.0f}"
            )
        else:
            log.info(
                "epoch %d/%d batch %d/%d step %d: loss %.4f accuracy %.4f lr %.2e %.0f examples/s %.1fs",
                record["epoch"],
                epochs,
                batch,
                batches,
                record["step"],
                record["loss"],
                record["accuracy"],
                record["lr"],
                rate,
                record["elapsed_s"],
            )
        self.done = record["step"]

    def note(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            log.info(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- evaluate and save


def evaluate_splits(
    model,
    tokens,
    splits,
    cfg: TrainConfig,
    device,
    precision,
    unk_id: int = -1,
    d: distributed.Dist = distributed.SINGLE,
) -> dict:
    metrics = {}
    for name in ("val", "test"):
        if name in splits:
            labels = splits[name].labels
            probs = _probs(model, tokens[name], cfg, device, precision, d)
            metrics[name] = classification_metrics(labels, probs, LABELS)
            if not cfg.dry_run:
                metrics[name]["intervals_95"] = bootstrap_intervals(labels, probs.argmax(axis=1), len(LABELS))
            unk = tokens[name].ids == unk_id
            metrics[name]["posts_with_unknown_tokens"] = int(
                np.add.reduceat(unk, tokens[name].offsets[:-1]).astype(bool).sum() if len(unk) else 0
            )
    if cfg.train_eval_examples and not cfg.dry_run:
        n = len(tokens["train"])
        rows = np.random.default_rng(cfg.seed).permutation(n)[: cfg.train_eval_examples]
        rows.sort()
        sample = TokenizedTexts(*_subset(tokens["train"], rows))
        metrics["train"] = _validate(model, sample, splits["train"].labels[rows], cfg, device, precision, d)
        metrics["train"]["note"] = f"a seeded sample of {len(rows)} of the {n} training examples"
    return metrics


def fit_baseline(cfg: TrainConfig, run_dir: str, splits: dict) -> dict:
    """The TF-IDF + logistic regression baseline on the splits in memory, for the report beside the model."""
    from sentitune import baseline

    bcfg = baseline.BaselineConfig(
        data=cfg.data,
        training_file=cfg.training_file,
        validation_file=cfg.validation_file,
        testing_file=cfg.testing_file,
        job_dir=run_dir,
        train_eval_examples=0,
    )
    model, stats = baseline.fit(bcfg, splits["train"])
    found = baseline.evaluate_splits(model, splits, bcfg)
    keys = ("examples", "loss", "accuracy", "macro_f1", "macro_recall")
    return {
        "model": "TF-IDF word 1-2 + char 2-5 grams, logistic regression (sentitune baseline defaults)",
        **{name: {k: found[name][k] for k in keys} for name in ("val", "test") if name in found},
        "training": stats,
    }


def _subset(tokens: TokenizedTexts, rows: np.ndarray):
    lengths = tokens.lengths[rows]
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = (
        np.concatenate([tokens.ids[tokens.offsets[r] : tokens.offsets[r + 1]] for r in rows])
        if len(rows)
        else tokens.ids[:0]
    )
    return ids, offsets, tokens.pad_id


def save_run(
    out: StagedOutput,
    classifier,
    cfg: TrainConfig,
    model_info: dict,
    splits: dict,
    metrics: dict,
    fitted: FitResult,
    device,
    precision: Precision,
) -> None:
    import transformers

    model = classifier.model.to("cpu")
    model.save_pretrained(out.root, safe_serialization=True)
    classifier.tokenizer.save_pretrained(out.root)
    run_config = {
        "sentitune_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "train": asdict(cfg),
        "model": model_info,
        "labels": list(LABELS),
        "data": {
            name: {
                "path": s.path,
                "examples": len(s),
                "class_counts": dict(
                    zip(LABELS, np.bincount(s.labels, minlength=len(LABELS)).tolist(), strict=True)
                ),
            }
            for name, s in splits.items()
        },
        "environment": {
            "device": str(device),
            "precision": precision.name,
            "precision_reason": precision.reason,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": sys.version.split()[0],
        },
    }
    if os.environ.get("SENTITUNE_COST_ESTIMATE"):  # set by `sentitune cloud submit`
        try:
            run_config["cost_estimate"] = json.loads(os.environ["SENTITUNE_COST_ESTIMATE"])
        except ValueError:
            log.warning("SENTITUNE_COST_ESTIMATE is not JSON; not recorded")
    out.path(RUN_CONFIG).write_text(json.dumps(run_config, indent=2) + "\n")
    out.path("labels.json").write_text(json.dumps({"labels": list(LABELS)}, indent=2) + "\n")
    with open(out.path("history.jsonl"), "w") as f:
        for row in fitted.history:
            f.write(json.dumps(row) + "\n")
    plot_training_curves(fitted.train_log, fitted.history, out.path("training_curves.png"))
    if "test" in metrics:
        plot_confusion_matrix(metrics["test"], out.path("confusion_matrix.png"), "test split")
    out.path("README.md").write_text(model_card(cfg, model_info, splits, metrics, run_config))
    out.path(RUN_MARKER).write_text(json.dumps(metrics, indent=2) + "\n")


def _label_source(cfg: TrainConfig) -> str:
    """How the training labels were made, from prepare's report when the data came from prepare."""
    from sentitune.storage import open_input

    if cfg.data:
        try:
            with open_input(join(cfg.data, "prepare_report.json"), "rb") as f:
                report = json.load(f)
            labels = report.get("labels") or {}
            if labels.get("source") == "category":
                return (
                    "class labels given with the data ("
                    + ", ".join(f"'{k}' -> {v}" for k, v in labels.get("mapping", {}).items())
                    + ")"
                )
            if labels:
                return f"{labels['source']} scores mapped to classes by {labels.get('rule')}"
        except (SentituneError, ValueError, KeyError):
            pass
    return "the label column of the training file"


def model_card(cfg: TrainConfig, model_info: dict, splits: dict, metrics: dict, run_config: dict) -> str:
    """README.md of a run folder: what the model is, what it was trained on, how good it is, its limits."""
    env, training = run_config["environment"], metrics.get("training", {})
    lines = [
        f"# Sentiment classifier: {model_info['source']}, fine-tuned with sentitune {__version__}",
        "",
        f'Classes: {", ".join(LABELS)}. Load it with `sentitune predict RUN_DIR "text"`, `sentitune serve RUN_DIR`, '
        + (
            "or `sentitune.model.load_run(RUN_DIR)`: its head reads the mean of the token states "
            "(`--pooling mean`), which `AutoModelForSequenceClassification` alone would not apply."
            if model_info["pooling"] == "mean"
            else "or `AutoModelForSequenceClassification.from_pretrained(RUN_DIR)`."
        ),
        "",
        "## Data",
        "",
        f"Labels: {_label_source(cfg)}.",
        "",
        "| split | file | posts | " + " | ".join(LABELS) + " |",
        "|---|---|---|" + "---|" * len(LABELS),
    ]
    for name, split in splits.items():
        counts = np.bincount(split.labels, minlength=len(LABELS))
        shares = " | ".join(f"{c} ({c / max(len(split), 1):.0%})" for c in counts)
        lines.append(f"| {name} | `{split.path}` | {len(split)} | {shares} |")
    lines += [
        "",
        "## Model and training",
        "",
        f"{model_info['type']} encoder, {model_info['layers']} layers x {model_info['hidden_size']}, "
        f"{model_info['parameters'] / 1e6:.1f} M parameters ({model_info['trainable_parameters'] / 1e6:.1f} M "
        f"trained); at most {cfg.max_length} tokens per post. {training.get('steps')} steps of batch "
        f"{cfg.batch_size} ({training.get('epochs_run')} epochs), AdamW at learning rate {cfg.learning_rate}, "
        f"seed {cfg.seed}; {training.get('wall_s')} s on {env['device']} ({env['precision']}, "
        f"{env['threads']} threads), {training.get('examples_per_s')} examples/s. "
        f"Best validation macro-F1 at step {training.get('best_step')}. Full settings: `run_config.json`.",
        "",
        "## Results",
        "",
        "95 % intervals: percentile bootstrap over the examples (1,000 resamples).",
        "",
        "| split | posts | accuracy | macro-F1 | macro-recall |",
        "|---|---|---|---|---|",
    ]
    for name in ("val", "test"):
        if name in metrics:
            m, ci = metrics[name], metrics[name].get("intervals_95", {})

            def cell(key, m=m, ci=ci):
                low, high = ci.get(key, [None, None])
                return f"{m[key]:.3f}" + (f" ({low:.3f}–{high:.3f})" if low is not None else "")

            lines.append(
                f"| {name} | {m['examples']} | {cell('accuracy')} | {cell('macro_f1')} | "
                f"{cell('macro_recall')} |"
            )
    for name in ("val", "test"):
        if name in metrics.get("baseline", {}):
            b = metrics["baseline"][name]
            lines.append(
                f"| {name}: TF-IDF + logistic regression baseline | {b['examples']} | {b['accuracy']:.3f} | "
                f"{b['macro_f1']:.3f} | {b['macro_recall']:.3f} |"
            )
    if "test" in metrics:
        cm = metrics["test"]["confusion_matrix"]["rows_true_columns_predicted"]
        lines += [
            "",
            "Test confusion matrix (rows: true class, columns: predicted):",
            "",
            "| | " + " | ".join(LABELS) + " |",
            "|---|" + "---|" * len(LABELS),
        ]
        lines += [f"| {LABELS[i]} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(cm)]
        lines += ["", "![confusion matrix](confusion_matrix.png) ![training curves](training_curves.png)"]
    unknown = metrics.get("test", metrics.get("val", {})).get("posts_with_unknown_tokens")
    examples = metrics.get("test", metrics.get("val", {})).get("examples")
    lines += [
        "",
        "## Known limits",
        "",
        "- Trained on short English social-media posts: other languages, domains and long texts are outside "
        f"what it has seen; posts over {cfg.max_length} tokens are cut.",
        "- Sarcasm, irony and negation spread over a sentence are often read at face value.",
        "- Emoji and characters missing from the uncased WordPiece vocabulary become [UNK]"
        + (f" ({unknown} of {examples} evaluated posts hold at least one)" if unknown is not None else "")
        + ", so their sentiment is lost.",
        "- The labels carry the biases of their source (annotators, or a lexicon such as VADER); the scores "
        "are not calibrated probabilities outside this data.",
        "",
    ]
    return "\n".join(lines)
