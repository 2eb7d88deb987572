"""classification_metrics against scikit-learn on random labels and probabilities; temperature scaling
kept only where posts it was not fitted on show it helps."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from sentitune import LABELS
from sentitune.metrics import (
    CALIBRATION_MIN_POSTS,
    COLLAPSE_MIN_POSTS,
    classification_metrics,
    collapsed,
    cross_fitted_temperature,
    fit_temperature,
    scale_temperature,
)


def _random_case(seed: int, n: int, classes_present=(0, 1, 2)):
    rng = np.random.default_rng(seed)
    y = rng.choice(classes_present, size=n)
    probs = rng.dirichlet(np.ones(3) * 0.7, size=n)
    # make predictions better than chance so the scores are not all near one value
    probs[np.arange(n), y] += rng.uniform(0, 0.6, size=n)
    return y, probs / probs.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed,n", [(0, 50), (1, 333), (2, 1000)])
def test_agrees_with_scikit_learn(seed, n):
    y, probs = _random_case(seed, n)
    pred = probs.argmax(axis=1)
    m = classification_metrics(y, probs, LABELS)

    assert m["examples"] == n
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(sk.f1_score(y, pred, average="macro"))
    assert m["macro_recall"] == pytest.approx(sk.recall_score(y, pred, average="macro"))
    assert m["loss"] == pytest.approx(sk.log_loss(y, probs, labels=[0, 1, 2]), rel=1e-9)
    assert (
        m["confusion_matrix"]["rows_true_columns_predicted"]
        == sk.confusion_matrix(y, pred, labels=[0, 1, 2]).tolist()
    )
    assert m["confusion_matrix"]["labels"] == list(LABELS)
    p, r, f, s = sk.precision_recall_fscore_support(y, pred, labels=[0, 1, 2], zero_division=0)
    for i, name in enumerate(LABELS):
        c = m["per_class"][name]
        assert (c["precision"], c["recall"], c["f1"]) == pytest.approx((p[i], r[i], f[i]))
        assert c["support"] == s[i]


def test_macro_averages_cover_the_classes_present_in_y_true():
    y, probs = _random_case(5, 200, classes_present=(0, 1))
    probs[:10] = [0.1, 0.1, 0.8]  # some posts predicted as the absent class
    pred = probs.argmax(axis=1)
    m = classification_metrics(y, probs, LABELS)
    assert m["per_class"]["positive"]["support"] == 0
    assert m["macro_f1"] == pytest.approx(sk.f1_score(y, pred, labels=[0, 1], average="macro"))
    assert m["macro_recall"] == pytest.approx(sk.recall_score(y, pred, labels=[0, 1], average="macro"))
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))


def test_bootstrap_intervals_contain_the_estimate_and_narrow_with_more_examples():
    from sentitune.metrics import bootstrap_intervals

    rng = np.random.default_rng(3)

    def sample(n):
        y = rng.integers(0, 3, n)
        return y, np.where(rng.random(n) < 0.7, y, rng.integers(0, 3, n))

    y_small, p_small = sample(300)
    y_big, p_big = sample(30_000)
    small, big = bootstrap_intervals(y_small, p_small, 3), bootstrap_intervals(y_big, p_big, 3)
    accuracy = float((y_small == p_small).mean())
    assert small["accuracy"][0] <= accuracy <= small["accuracy"][1]
    for key in ("accuracy", "macro_f1", "macro_recall"):
        assert big[key][1] - big[key][0] < (small[key][1] - small[key][0]) / 5
    assert bootstrap_intervals(y_small, p_small, 3) == small  # seeded: the same intervals every time


# ----------------------------------------------------------------------------- calibration


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _scored_posts(n: int, ideal_temperature: float, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, the model's scores, the true class probabilities) of `n` posts scored by a 3-class model
    whose scores would be right at `ideal_temperature`: labels are drawn from softmax(logits / T)."""
    logits = rng.normal(0, 2.5, (n, 3)) + np.array([0.3, 0.0, -0.2])
    truth = _softmax(logits / ideal_temperature)
    labels = (rng.random(n)[:, None] > truth.cumsum(axis=1)).sum(axis=1)
    return labels, _softmax(logits), truth


def _fresh_cost(temperature: float, fresh) -> float:
    """How much `temperature` raises the expected NLL a post over unscaled scores, on fresh posts."""
    _, probs, truth = fresh

    def expected_nll(t: float) -> float:
        return float(-(truth * np.log(np.clip(scale_temperature(probs, t), 1e-12, 1))).sum(axis=1).mean())

    return expected_nll(temperature) - expected_nll(1.0)


def test_a_temperature_is_not_fitted_on_a_split_too_small_to_check_it():
    rng = np.random.default_rng(0)
    labels, probs, _ = _scored_posts(CALIBRATION_MIN_POSTS - 1, 2.0, rng)
    decision = cross_fitted_temperature(labels, probs, LABELS)
    assert not decision["kept"] and decision["temperature"] == 1.0 and "held_out" not in decision
    counts = ", ".join(f"{name} {(labels == i).sum()}" for i, name in enumerate(LABELS))
    assert decision["reason"] == (
        f"the validation split has 99 posts ({counts}), too few to check a temperature on posts it was not "
        "fitted on: that needs 100 posts and 5 of every class"
    )
    labels, probs, _ = _scored_posts(300, 2.0, rng)
    rare = np.flatnonzero(labels == 2)[4:]  # 4 posts of one class: a fold would miss it
    keep = np.setdiff1d(np.arange(300), rare)
    assert not cross_fitted_temperature(labels[keep], probs[keep], LABELS)["kept"]
    absent = labels != 2  # a class the split lacks altogether does not stop the check
    assert cross_fitted_temperature(labels[absent], probs[absent], LABELS)["kept"]


def test_a_model_that_needs_no_temperature_rarely_gets_one_and_never_a_costly_one():
    rng, fresh = np.random.default_rng(1), _scored_posts(50_000, 1.0, np.random.default_rng(99))
    decisions = [
        cross_fitted_temperature(*_scored_posts(200, 1.0, rng)[:2], LABELS, seed=i) for i in range(30)
    ]
    kept = [d for d in decisions if d["kept"]]
    assert len(kept) <= 3  # the simulation behind the margin: 0-3 % of splits
    assert all(_fresh_cost(d["temperature"], fresh) < 0.03 for d in kept)
    refused = next(d for d in decisions if not d["kept"])
    assert refused["temperature"] == 1.0 and refused["reason"].startswith(
        "a temperature did not lower the NLL of posts it was not fitted on by more than its standard error: "
        "held-out NLL "
    )
    # the rule it replaces, one temperature fitted on the split and always kept, costs more and more often
    always = [_fresh_cost(fit_temperature(*_scored_posts(25, 1.0, rng)[:2]), fresh) for _ in range(30)]
    assert sum(c > 0.01 for c in always) >= 8


def test_an_over_confident_model_gets_the_temperature_that_helps_fresh_posts():
    rng, fresh = np.random.default_rng(2), _scored_posts(50_000, 2.0, np.random.default_rng(98))
    decisions = [
        cross_fitted_temperature(*_scored_posts(200, 2.0, rng)[:2], LABELS, seed=i) for i in range(20)
    ]
    assert all(d["kept"] for d in decisions)
    for d in decisions:
        held_out = d["held_out"]
        assert held_out["nll_after"] < held_out["nll_before"] - held_out["standard_error"]
        assert d["temperature"] == d["fitted_temperature"] > 1.3
        assert _fresh_cost(d["temperature"], fresh) < -0.05
        assert d["reason"].startswith("held-out NLL ")


def _predicting(y: np.ndarray, predicted: np.ndarray) -> dict:
    probs = np.full((len(y), 3), 0.1)
    probs[np.arange(len(y)), predicted] = 0.8
    return classification_metrics(y, probs, LABELS)


def test_a_model_giving_nearly_every_post_one_class_is_called_collapsed_and_only_then():
    y = np.array([0] * 30 + [1] * 50 + [2] * 20)
    found = collapsed(_predicting(y, np.full(100, 1)), "test posts")
    assert found == (
        "gives neutral to 100 of the 100 test posts, 50 of which are neutral "
        "(macro-recall 0.333, what one class for all gives)"
    )
    two_off = np.full(100, 1)
    two_off[:2] = 0  # 98 of 100: still collapsed; 97 of 100: not
    assert collapsed(_predicting(y, two_off)).startswith("gives neutral to 98 of the 100 posts")
    two_off[:3] = 0
    assert collapsed(_predicting(y, two_off)) is None
    assert collapsed(_predicting(y, y)) is None
    # posts that are nearly all one class: one class for all is right, not a collapse
    mostly = np.array([1] * 99 + [0])
    assert collapsed(_predicting(mostly, np.full(100, 1))) is None
    # too few posts to say
    few = y[: COLLAPSE_MIN_POSTS - 1]
    assert collapsed(_predicting(few, np.full(len(few), 1))) is None
