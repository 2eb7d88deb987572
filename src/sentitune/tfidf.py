"""The TF-IDF baseline model: word and character n-grams + logistic regression, fitted, evaluated, saved
without pickle (the two vocabularies and the vectorizer settings as JSON, the idf vectors and the logistic
regression's weights as safetensors) and rebuilt by `load_baseline(dir)` into an identical predictor.
`sentitune baseline` writes it as a run; `train --baseline` fits it beside the model.

scikit-learn is the optional extra `baseline` (`pip install 'sentitune[baseline]'`).
"""

from __future__ import annotations

import json
import logging
import time
import warnings

import numpy as np

from sentitune import __version__
from sentitune.config import BaselineConfig
from sentitune.errors import SentituneError, require_extra
from sentitune.metrics import classification_metrics, log_metrics
from sentitune.normalize import Normalization, normalization_of
from sentitune.splits import LabelledTexts
from sentitune.storage import join, open_input, writing

log = logging.getLogger("sentitune")

MODEL_JSON = "baseline.json"  # settings, labels and the two vocabularies
MODEL_WEIGHTS = "baseline.safetensors"  # idf vectors, coef, intercept (float64, no pickle)
FORMAT = "sentitune-baseline/1"
SAMPLE_SEED = 42  # the same seeded train sample as `sentitune train`
PURPOSE = "sentitune baseline"


def build_pipeline(cfg: BaselineConfig):
    """The unfitted pipeline: a union of the word and character TF-IDF features, then the classifier."""
    require_extra("sklearn", "baseline", PURPOSE)
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline

    vectorizers = [
        ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=cfg.min_df)),
        (
            "char",
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=cfg.min_df),
        ),
    ]
    # SAG converges in ~30 passes at C=0.5 (8 s on 2 cores); L-BFGS needed ~100 iterations, 60 s.
    classifier = LogisticRegression(
        C=cfg.c,
        class_weight="balanced" if cfg.class_weights == "auto" else None,
        solver="sag",
        tol=1e-4,
        max_iter=cfg.max_iter,
        random_state=0,
    )
    return Pipeline([("features", FeatureUnion(vectorizers)), ("classifier", classifier)])


def fit(cfg: BaselineConfig, train_split: LabelledTexts) -> tuple[BaselineModel, dict]:
    """Fit the pipeline on the training split; the stats go into metrics.json's `training` block."""
    from sklearn.exceptions import ConvergenceWarning

    if cfg.min_df > len(train_split):
        raise SentituneError(
            f"--min-df {cfg.min_df} is more than the {len(train_split)} training posts: no n-gram can be kept; "
            "lower --min-df"
        )
    t0 = time.perf_counter()
    normalization = normalization_of(cfg)
    pipeline = build_pipeline(cfg)
    with warnings.catch_warnings():  # not converging is reported in metrics.json and the log
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipeline.fit(normalization.apply_all(train_split.texts), train_split.labels)
    fit_s = time.perf_counter() - t0
    iterations = int(np.max(pipeline[-1].n_iter_))
    if iterations >= cfg.max_iter:
        log.warning("the solver stopped at --max-iter %d before converging; raise it", cfg.max_iter)
    model = BaselineModel(pipeline, normalization, train_split.classes)
    features = model.feature_counts()
    log.info(
        "fitted on %d posts in %.1fs: %s features, %d solver passes",
        len(train_split),
        fit_s,
        " + ".join(f"{n} {k}" for k, n in features.items()),
        iterations,
    )
    stats = {
        "features": features,
        "iterations": iterations,
        "converged": iterations < cfg.max_iter,
        "fit_s": round(fit_s, 2),
    }
    return model, stats


def evaluate_splits(model: BaselineModel, splits: dict, cfg: BaselineConfig) -> dict:
    """val and test metrics, and the train metrics on the same seeded sample as `sentitune train`."""
    metrics = {}
    for name in ("val", "test"):
        if name in splits:
            metrics[name] = classification_metrics(
                splits[name].labels, model.probabilities(splits[name].texts), model.labels
            )
    if cfg.train_eval_examples:
        train_split = splits["train"]
        n = len(train_split)
        rows = np.sort(np.random.default_rng(SAMPLE_SEED).permutation(n)[: cfg.train_eval_examples])
        probs = model.probabilities([train_split.texts[i] for i in rows])
        metrics["train"] = classification_metrics(train_split.labels[rows], probs, model.labels)
        metrics["train"]["note"] = f"a seeded sample of {len(rows)} of the {n} training examples"
    log_metrics(metrics)
    return metrics


class BaselineModel:
    """A fitted TF-IDF + logistic regression pipeline; probabilities are ordered as `labels`."""

    def __init__(self, pipeline, normalization: Normalization, labels):
        self.pipeline = pipeline
        self.normalization = normalization  # applied to every text, as in training
        classes = pipeline[-1].classes_.tolist()
        if classes != list(range(len(labels))):
            raise SentituneError(f"the baseline's classes are {classes}, expected {list(range(len(labels)))}")
        self.labels = list(labels)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """(n, 3) class probabilities."""
        return self.pipeline.predict_proba(self.normalization.apply_all(texts))

    def predict(self, texts: list[str]) -> list[str]:
        return [self.labels[i] for i in self.probabilities(texts).argmax(axis=1)]

    def feature_counts(self) -> dict[str, int]:
        return {name: len(v.vocabulary_) for name, v in self.pipeline[0].transformer_list}

    def save(self, out) -> None:
        """baseline.json (settings, labels, vocabularies) and baseline.safetensors (arrays)."""
        from safetensors.numpy import save_file

        tensors, vectorizers = {}, {}
        for name, v in self.pipeline[0].transformer_list:
            vectorizers[name] = {
                "params": _json_params(v),
                "vocabulary": v.get_feature_names_out().tolist(),  # term of feature i at index i
            }
            tensors[f"{name}.idf"] = np.ascontiguousarray(v.idf_, dtype=np.float64)
        lr = self.pipeline[-1]
        tensors["classifier.coef"] = np.ascontiguousarray(lr.coef_, dtype=np.float64)
        tensors["classifier.intercept"] = np.ascontiguousarray(lr.intercept_, dtype=np.float64)
        document = {
            "format": FORMAT,
            "sentitune_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "labels": self.labels,
            "normalize": self.normalization.to_config(),
            "classifier": _json_params(lr),
            "vectorizers": vectorizers,
        }
        with writing(out.root):  # safetensors reports a full disk in its own exception type
            save_file(tensors, str(out.path(MODEL_WEIGHTS)), metadata={"format": FORMAT})
        out.path(MODEL_JSON).write_text(json.dumps(document, ensure_ascii=False) + "\n")


def load_baseline(run_dir: str) -> BaselineModel:
    """Rebuild the predictor saved by `sentitune baseline` in `run_dir` (local or URL); no pickle."""
    require_extra("sklearn", "baseline", PURPOSE)
    from safetensors.numpy import load as load_tensors
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline

    with open_input(join(run_dir, MODEL_JSON)) as f:
        document = json.loads(f.read().decode("utf-8"))
    if document.get("format") != FORMAT:
        raise SentituneError(
            f"{join(run_dir, MODEL_JSON)} is not a sentitune baseline (format {document.get('format')!r}, "
            f"expected {FORMAT!r})"
        )
    with open_input(join(run_dir, MODEL_WEIGHTS)) as f:
        tensors = load_tensors(f.read())

    vectorizers = []
    for name, saved in document["vectorizers"].items():
        params = _known_params(TfidfVectorizer, saved["params"])
        params["ngram_range"] = tuple(params["ngram_range"])
        v = TfidfVectorizer(**params, vocabulary={t: i for i, t in enumerate(saved["vocabulary"])})
        v.idf_ = tensors[f"{name}.idf"]
        vectorizers.append((name, v))
    lr = LogisticRegression(**_known_params(LogisticRegression, document["classifier"]))
    lr.coef_ = tensors["classifier.coef"]
    lr.intercept_ = tensors["classifier.intercept"]
    lr.classes_ = np.arange(len(document["labels"]))
    lr.n_features_in_ = lr.coef_.shape[1]
    pipeline = Pipeline([("features", FeatureUnion(vectorizers)), ("classifier", lr)])
    return BaselineModel(pipeline, Normalization.from_config(document.get("normalize")), document["labels"])


def _known_params(cls, saved: dict) -> dict:
    """The saved settings that this scikit-learn's `cls` accepts, without deprecation placeholders
    ('deprecated', 'warn'), so a folder written by another version still loads."""
    accepted = cls().get_params(deep=False)
    return {k: v for k, v in saved.items() if k in accepted and v not in ("deprecated", "warn")}


def _json_params(estimator) -> dict:
    """The estimator's constructor settings that JSON can hold (callables, dtypes and the fitted
    vocabulary are left out: they are defaults or stored separately)."""
    params = {}
    for key, value in estimator.get_params(deep=False).items():
        if key == "vocabulary" or key == "dtype":
            continue
        if isinstance(value, tuple):
            value = list(value)
        if value is None or isinstance(value, str | int | float | bool | list):
            params[key] = value
    return params
