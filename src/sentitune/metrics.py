"""Classification metrics from a confusion matrix, and the run's two plots."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    return np.bincount(
        n_classes * np.asarray(y_true) + np.asarray(y_pred), minlength=n_classes * n_classes
    ).reshape(n_classes, n_classes)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str]) -> dict:
    """Loss, accuracy, macro-F1, macro-recall, per-class precision/recall/F1/support, confusion matrix.

    Macro averages are over the classes present in `y_true` (a class with no examples has no recall).
    """
    y_true = np.asarray(y_true)
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, len(labels))
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0
    picked = np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, 1.0)
    return {
        "examples": int(len(y_true)),
        "loss": float(-np.log(picked).mean()) if len(y_true) else float("nan"),
        "accuracy": float(tp.sum() / max(len(y_true), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(labels)
        },
        "confusion_matrix": {"labels": list(labels), "rows_true_columns_predicted": cm.tolist()},
    }


# A model that gives one class to this share of a split's posts, or more, while their true classes vary,
# has learnt the class balance, not the posts: its scores cannot be trusted (the posts of the split
# would have to be 98 % one class for that to be right). Fewer than COLLAPSE_MIN_POSTS say too little.
COLLAPSE_SHARE = 0.98
COLLAPSE_MIN_POSTS = 20


def collapsed(metrics: dict, posts: str = "posts") -> str | None:
    """What a split's classification_metrics show of a model that gives (nearly) every post one class, as a
    phrase ("gives neutral to 120 of the 120 validation posts ..."; `posts` names them); None where it
    does not."""
    cm = np.asarray(metrics["confusion_matrix"]["rows_true_columns_predicted"])
    n = int(cm.sum())
    if n < COLLAPSE_MIN_POSTS:
        return None
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    top = int(predicted.argmax())
    if predicted[top] < COLLAPSE_SHARE * n or support.max() >= COLLAPSE_SHARE * n:
        return None
    name = metrics["confusion_matrix"]["labels"][top]
    return (
        f"gives {name} to {int(predicted[top])} of the {n} {posts}, {int(support[top])} of which are {name} "
        f"(macro-recall {metrics['macro_recall']:.3f}, what one class for all gives)"
    )


def bootstrap_intervals(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    n_classes: int,
    rounds: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of accuracy, macro-F1 and macro-recall over the examples."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    rng = np.random.default_rng(seed)
    n = len(y_true)
    scores = {"accuracy": [], "macro_f1": [], "macro_recall": []}
    for _ in range(rounds):
        pick = rng.integers(0, n, n)
        cm = confusion_matrix(y_true[pick], y_pred[pick], n_classes)
        support, predicted, tp = cm.sum(axis=1), cm.sum(axis=0), np.diag(cm)
        present = support > 0
        recall = tp[present] / support[present]
        precision = np.where(predicted[present] > 0, tp[present] / np.maximum(predicted[present], 1), 0.0)
        f1 = np.where(
            precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0
        )
        scores["accuracy"].append(tp.sum() / n)
        scores["macro_f1"].append(f1.mean())
        scores["macro_recall"].append(recall.mean())
    tail = (1 - level) / 2 * 100
    return {
        k: [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))] for k, v in scores.items()
    }


def calibration_bins(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> tuple[list[dict], float]:
    """Confidence bins of equal width (the top score of each post) with their accuracy, and the expected
    calibration error: the posts' share-weighted gap between accuracy and confidence over the bins."""
    y_true = np.asarray(y_true)
    confidence = probs.max(axis=1)
    right = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        rows = which == b
        count = int(rows.sum())
        acc = float(right[rows].mean()) if count else 0.0
        conf = float(confidence[rows].mean()) if count else 0.0
        bins.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": count, "accuracy": acc,
                     "confidence": conf})  # fmt: skip
        ece += count / max(len(y_true), 1) * abs(acc - conf)
    return bins, float(ece)


def nll(y_true: np.ndarray, probs: np.ndarray) -> float:
    picked = np.clip(probs[np.arange(len(y_true)), np.asarray(y_true)], 1e-12, 1.0)
    return float(-np.log(picked).mean())


def scale_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) from the probabilities softmax(logits): log p differs from the logits by a
    constant per row, which softmax ignores."""
    z = np.log(np.clip(probs, 1e-30, 1.0)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(y_true: np.ndarray, probs: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of `probs` (temperature scaling, one
    scalar): golden-section search over log T in [1/20, 20], where the NLL is unimodal in practice."""
    lo, hi = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2

    def loss(log_t: float) -> float:
        return nll(y_true, scale_temperature(probs, float(np.exp(log_t))))

    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return float(np.exp((lo + hi) / 2))


# Temperature scaling is kept only where the validation split shows, on posts the temperature was not
# fitted on, that it helps. The folds, the floor and the margin come from a simulation (3-class models
# whose ideal temperature is 0.8, 1, 1.3 or 2; 100 validation splits per size; each temperature's effect
# measured on 200,000 fresh posts; test_metrics.py repeats its core): with a margin of one standard error,
# a model that needed no temperature got one in 0-3 % of splits, and a kept temperature raised the fresh
# NLL by more than 0.01 a post in at most 4 % of splits of 100 posts or more (none from 500 posts); an
# over-confident model (ideal temperature 2) got one in 91 % of 100-post splits and every 200-post one.
# Below 100 posts a kept temperature cost up to 0.11 (50 posts) and 2.3 (25 posts) a post, and fitting
# one on 25 posts and always keeping it, as before, cost more than 0.01 in half the splits of a model
# that needed none.
CALIBRATION_FOLDS = 5
CALIBRATION_MIN_POSTS = 100
CALIBRATION_MIN_PER_CLASS = CALIBRATION_FOLDS  # every held-out fold holds every class the split has


def cross_fitted_temperature(
    y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], seed: int = 0
) -> dict:
    """Whether temperature scaling helps posts it was not fitted on, and the temperature to keep if so.

    The validation split is cut into CALIBRATION_FOLDS folds stratified by class; for each fold a
    temperature is fitted on the others and scored on it, so every post gets a held-out NLL with and
    without scaling. The temperature (then fitted on the whole split) is kept only when the mean held-out
    NLL drops by more than one standard error of the per-post differences: a drop that noise does not
    explain. A split below CALIBRATION_MIN_POSTS posts, or with fewer than CALIBRATION_MIN_PER_CLASS of a
    class it has, is refused without fitting. Returns `kept`, `reason` (one sentence), `temperature` (1.0 when refused)
    and, when checked, `fitted_temperature` and `held_out`."""
    y_true = np.asarray(y_true)
    floor = {"posts": CALIBRATION_MIN_POSTS, "per_class": CALIBRATION_MIN_PER_CLASS}
    n_classes = len(classes)
    counts = np.bincount(y_true, minlength=n_classes)
    if len(y_true) < CALIBRATION_MIN_POSTS or counts[counts > 0].min() < CALIBRATION_MIN_PER_CLASS:
        return {
            "kept": False,
            "reason": f"the validation split has {len(y_true):,} posts "
            f"({', '.join(f'{name} {c:,}' for name, c in zip(classes, counts, strict=True))}), too few to check a temperature on posts it was not fitted on: that needs "
            f"{CALIBRATION_MIN_POSTS} posts and {CALIBRATION_MIN_PER_CLASS} of every class",
            "temperature": 1.0,
            "floor": floor,
        }
    fold = np.empty(len(y_true), np.int64)
    rng = np.random.default_rng(seed)
    for cls in range(n_classes):
        rows = rng.permutation(np.flatnonzero(y_true == cls))
        fold[rows] = np.arange(len(rows)) % CALIBRATION_FOLDS
    held_out = np.empty_like(probs)
    temperatures = []
    for k in range(CALIBRATION_FOLDS):
        out = fold == k
        temperatures.append(fit_temperature(y_true[~out], probs[~out]))
        held_out[out] = scale_temperature(probs[out], temperatures[-1])
    before, after = _nll_per_post(y_true, probs), _nll_per_post(y_true, held_out)
    drop = before - after
    mean, error = float(drop.mean()), float(drop.std(ddof=1) / np.sqrt(len(drop)))
    kept = mean > error
    fitted = fit_temperature(y_true, probs)
    check = {
        "folds": CALIBRATION_FOLDS,
        "fold_temperatures": [round(t, 5) for t in temperatures],
        "nll_before": float(before.mean()),
        "nll_after": float(after.mean()),
        "nll_drop": mean,
        "standard_error": error,
        "ece_before": calibration_bins(y_true, probs)[1],
        "ece_after": calibration_bins(y_true, held_out)[1],
    }
    measured = (
        f"held-out NLL {check['nll_before']:.4f} -> {check['nll_after']:.4f} over {CALIBRATION_FOLDS} folds "
        f"(drop {mean:.4f}, standard error {error:.4f})"
    )
    return {
        "kept": kept,
        "reason": measured
        if kept
        else f"a temperature did not lower the NLL of posts it was not fitted on by more than its standard "
        f"error: {measured}",
        "temperature": round(fitted, 5) if kept else 1.0,
        "fitted_temperature": round(fitted, 5),
        "floor": floor,
        "held_out": check,
    }


def _nll_per_post(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, 1.0))


def log_metrics(metrics: dict) -> None:
    """One log line per split present in `metrics` (train, val, test)."""
    log = logging.getLogger("sentitune")
    for name in ("train", "val", "test"):
        if name in metrics:
            m = metrics[name]
            log.info(
                "%s: accuracy %.4f, macro-F1 %.4f, macro-recall %.4f, loss %.4f (%d examples)",
                name,
                m["accuracy"],
                m["macro_f1"],
                m["macro_recall"],
                m["loss"],
                m["examples"],
            )


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in containers
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(metrics: dict, path: Path, title: str) -> None:
    plt = _pyplot()
    labels = metrics["confusion_matrix"]["labels"]
    cm = np.asarray(metrics["confusion_matrix"]["rows_true_columns_predicted"])
    fig, ax = plt.subplots(figsize=(4.6, 4))
    ax.imshow(cm, cmap="Blues")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\naccuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training_curves(train_log: list[dict], history: list[dict], path: Path) -> None:
    """Training loss/accuracy per log interval and validation loss/accuracy per evaluation."""
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.6))
    if train_log:
        x = [r["examples_seen"] for r in train_log]
        ax_loss.plot(x, [r["loss"] for r in train_log], label="train", color="tab:blue")
        ax_acc.plot(x, [r["accuracy"] for r in train_log], label="train", color="tab:blue")
    if history:
        x = [r["examples_seen"] for r in history]
        ax_loss.plot(x, [r["val_loss"] for r in history], "o-", label="validation", color="tab:orange")
        ax_acc.plot(x, [r["val_accuracy"] for r in history], "o-", label="validation", color="tab:orange")
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("training examples seen")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
