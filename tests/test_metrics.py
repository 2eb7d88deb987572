"""classification_metrics against scikit-learn on random labels and probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from sentitune import LABELS
from sentitune.metrics import classification_metrics


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
