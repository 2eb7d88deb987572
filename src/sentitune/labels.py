"""How raw label values become classes: negative / neutral / positive (ids 0 / 1 / 2) by default, or
any label set given with --labels (binary, 1-5 stars, a user's own names; ids in the order given).

A label column holds scores (a number per post: the class is its sign, or neutral within a band; for
any label set, the thresholds it passes), categories (class names in any of several spellings, ids
0/1/2 or -1/0/1, or a user's own names mapped with --label-map), or nothing: VADER then scores the text.
The rule is decided once from the distinct values of the whole input, never from one chunk, and
applied to every row.
"""

from __future__ import annotations

import math
import re
import shlex
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sentitune import LABELS
from sentitune.errors import SentituneError, short

LABEL_SYNONYMS = {"negative": 0, "neg": 0, "neutral": 1, "neu": 1, "positive": 2, "pos": 2}
MISSING_LABELS = ("nan", "na", "n/a", "null", "none")


def parse_labels(spec: str | None, flag: str = "--labels") -> tuple[str, ...]:
    """The class names of a --labels option, in order (none given: negative, neutral, positive)."""
    if spec is None:
        return LABELS
    names = tuple(s.strip() for s in str(spec).split(","))
    if any(not n for n in names):
        raise SentituneError(f"{flag} '{short(spec, 80)}' has an empty name; e.g. {flag} negative,positive")
    if len(names) < 2:
        raise SentituneError(f"{flag} '{short(spec, 80)}' names one class; a classifier needs two or more")
    seen = Counter(n.lower() for n in names)
    twice = [n for n in seen if seen[n] > 1]
    if twice:
        raise SentituneError(f"{flag} names {', '.join(twice)} twice; name each class once")
    return names


def parse_thresholds(spec: str | None, classes: tuple[str, ...]) -> tuple[float, ...] | None:
    """The increasing score thresholds of --thresholds, one fewer than the classes."""
    if spec is None:
        return None
    try:
        values = tuple(float(s) for s in str(spec).split(","))
    except ValueError:
        raise SentituneError(
            f"--thresholds '{short(spec, 80)}' is not numbers separated by commas; e.g. --thresholds -0.05,0.05"
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise SentituneError(f"--thresholds '{short(spec, 80)}' must be finite numbers")
    if len(values) != len(classes) - 1:
        raise SentituneError(
            f"--thresholds gives {len(values)} thresholds for {len(classes)} classes ({', '.join(classes)}); "
            f"give {len(classes) - 1}, increasing"
        )
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise SentituneError(f"--thresholds must increase, got {spec}")
    return values


@dataclass
class LabelRule:
    """How raw label values become class ids (0 .. N-1, in the order of `classes`)."""

    source: str  # score | category | vader
    neutral_band: float = 0.0
    mapping: dict[str, int] = field(default_factory=dict)  # category: lower-cased value -> id
    seen: Counter = field(default_factory=Counter)  # raw value -> rows, for the printed mapping
    classes: tuple[str, ...] = LABELS
    thresholds: tuple[float, ...] | None = None  # scores: a score above a threshold moves up a class
    hint: str | None = None  # how to fix a value that fits no class, where --label-map is not the way

    def describe(self) -> dict:
        if self.source in ("score", "vader"):
            b, t = self.neutral_band, self.thresholds
            if t:
                parts = [f"score <= {t[0]}: {self.classes[0]}"]
                parts += [
                    f"{a} < score <= {z}: {c}" for a, z, c in zip(t, t[1:], self.classes[1:], strict=False)
                ]
                rule = ", ".join([*parts, f"score > {t[-1]}: {self.classes[-1]}"])
            elif b == 0:
                rule = "sign(score) + 1"
            else:
                rule = f"score < -{b}: negative, |score| <= {b}: neutral, score > {b}: positive"
            return {"source": self.source, "rule": rule}
        used = {raw: self.classes[self.mapping[raw.strip().lower()]] for raw in sorted(self.seen)}
        return {"source": "category", "mapping": used}

    def boundaries(self) -> tuple[float, ...] | None:
        """The scores where one class ends and the next begins (N-1 of them), None for categories.
        The sign rule's are (-band, band): with no band, neutral is the single score 0."""
        if self.source not in ("score", "vader"):
            return None
        return self.thresholds or (0.0 - self.neutral_band, self.neutral_band)  # 0.0 -: never -0.0


def parse_label_map(
    spec: str, flag: str = "--label-map", classes: tuple[str, ...] = LABELS
) -> dict[str, int]:
    mapping = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise SentituneError(
                f"{flag} entry '{part}' is not VALUE=CLASS; e.g. 'bad=negative,good=positive'"
            )
        raw, target = (s.strip() for s in part.split("=", 1))
        target_id = class_ids(classes).get(target.lower())
        if target_id is None and target in {str(i) for i in range(len(classes))}:
            target_id = int(target)
        if target_id is None:
            raise SentituneError(
                f"{flag} maps '{raw}' to '{target}', which is no class; use one of {', '.join(classes)}"
            )
        mapping[raw.lower()] = target_id
    return mapping


def class_ids(classes: tuple[str, ...]) -> dict[str, int]:
    """Lower-cased class name -> id; the default classes also by their short spellings (neg, pos...)."""
    ids = {c.lower(): i for i, c in enumerate(classes)}
    return {**LABEL_SYNONYMS, **ids} if tuple(classes) == LABELS else ids


GENERIC_LABEL = re.compile(r"label_([0-2])")  # transformers' names when a model was saved without any
STAR_LABEL = re.compile(r"([1-5])(?: ?stars?)?")  # ratings: 1 star ... 5 stars, or 1 ... 5
STARS_TO_CLASS = {1: 0, 2: 0, 3: 1, 4: 2, 5: 2}


def model_label_matrix(names: tuple[str, ...], spec: str | None, source: str) -> np.ndarray | None:
    """How the labels of a classifier from elsewhere add up to negative/neutral/positive: a 0/1 matrix
    (its labels x our 3 classes) its probabilities are multiplied by, so classes that share a meaning add
    up (1 and 2 stars are negative). None for our labels in our order, whatever `spec` says. Read from --model-labels (`spec`),
    else from the names: the three classes in any order and spelling, LABEL_0..LABEL_2 (the order
    negative, neutral, positive, as the common Twitter models use), or ratings 1-5."""
    names = tuple(str(n) for n in names)
    if names == LABELS:  # a sentitune run (--model-labels is for the others beside it)
        return None
    keys = [n.strip().lower() for n in names]
    if spec:
        given = parse_label_map(spec, flag="--model-labels")
        targets = [given.get(k) for k in keys]
        if None in targets:
            missing = ", ".join(short(n, 40) for n, t in zip(names, targets, strict=True) if t is None)
            raise SentituneError(
                f"--model-labels does not map {missing}; map every label of {short(source)}: "
                f"{', '.join(short(n, 40) for n in names)}"
            )
    elif all(k in LABEL_SYNONYMS for k in keys):
        targets = [LABEL_SYNONYMS[k] for k in keys]
    elif sorted(k for k in keys if GENERIC_LABEL.fullmatch(k)) == ["label_0", "label_1", "label_2"]:
        targets = [int(GENERIC_LABEL.fullmatch(k).group(1)) for k in keys]
    elif all(STAR_LABEL.fullmatch(k) for k in keys) and sorted(int(k[0]) for k in keys) == [1, 2, 3, 4, 5]:
        targets = [STARS_TO_CLASS[int(STAR_LABEL.fullmatch(k).group(1))] for k in keys]
    else:
        raise SentituneError(
            f"the labels of {short(source)} ({', '.join(short(n, 40) for n in names)}) do not map onto "
            f"{', '.join(LABELS)}; say how with --model-labels 'NAME=negative,NAME=neutral,NAME=positive'"
        )
    if len(set(targets)) < 2:
        raise SentituneError(
            f"the labels of {short(source)} all mean {LABELS[targets[0]]}; a classifier needs two classes or more"
        )
    matrix = np.zeros((len(names), len(LABELS)), np.float32)
    matrix[np.arange(len(names)), targets] = 1.0
    return matrix


def decide_label_rule(
    values: pd.Series,
    source: str,
    neutral_band: float,
    label_map: str | None,
    integers_are_ids: bool = False,
    where: str = "the label column",
    classes: tuple[str, ...] = LABELS,
    thresholds: tuple[float, ...] | None = None,
    hint: str | None = None,
    in_prepare: bool = False,
) -> LabelRule:
    """Decide from the distinct label values whether they are scores or categories.

    Integers 0/1/2 are class ids when a 2 occurs, or always with `integers_are_ids` (split files,
    whose integer labels are the walkthrough's `Target` ids even when a split lacks a class). Whole
    numbers from 0 up past 2 (star ratings 1-5, ids 0-4) are neither, and are refused: read by sign
    they would all be positive; so are 0 and 1 alone (two classes, or neutral and positive by sign?).
    The refusals carry options that read the values when copied (`in_prepare`: as prepare's options,
    else as a prepare command). With a label set of its own (`classes`), values are its names (or ids
    0..N-1), else scores read through `thresholds`."""
    if label_map:
        return LabelRule("category", mapping=parse_label_map(label_map, classes=classes), classes=classes)
    if classes != LABELS or thresholds is not None:
        return _own_label_set_rule(values, source, classes, thresholds, integers_are_ids, where, hint)
    if source in ("score", "vader"):
        return LabelRule(source, neutral_band)
    numbers = pd.to_numeric(values.dropna(), errors="coerce")
    if len(numbers) and numbers.notna().all():
        integral = bool((numbers == numbers.round()).all())
        distinct = set(numbers.astype(float).unique())
        if integral and distinct <= {0.0, 1.0, 2.0} and (2.0 in distinct or integers_are_ids):
            return LabelRule("category", mapping={"0": 0, "1": 1, "2": 2, "0.0": 0, "1.0": 1, "2.0": 2})
        if source == "auto" and min(distinct) >= 0 and max(distinct) > 2:
            shown = ", ".join(f"{v:g}" for v in sorted(distinct)[:8]) + (", ..." if len(distinct) > 8 else "")
            raise SentituneError(
                f"{where}: numeric labels {{{shown}}} look like ratings or ids, not class ids 0/1/2 or signed "
                f"scores; {hint or label_options_hint(values, in_prepare, where)}"
            )
        if source == "auto" and not integers_are_ids and integral and distinct == {0.0, 1.0}:
            raise SentituneError(
                f"{where}: labels 0 and 1 may be two classes or scores read by sign (0 neutral, 1 positive); "
                f"{hint or label_options_hint(values, in_prepare, where)}, or pass --label-type score to read them "
                "by sign"
            )
        if source == "category":
            if integral and distinct <= {-1.0, 0.0, 1.0}:
                return LabelRule("category", mapping={"-1": 0, "0": 1, "1": 2, "-1.0": 0, "0.0": 1, "1.0": 2})
            raise SentituneError(
                f"numeric labels {sorted(distinct)[:6]} are not class ids 0/1/2 or -1/0/1; "
                "use --label-type score or --label-map"
            )
        return LabelRule("score", neutral_band)  # -1/0/1 read as scores is the same mapping
    if source == "score":
        raise SentituneError("--label-type score needs numbers in the label column")
    unknown = {str(v).strip().lower() for v in values.dropna()} - set(LABEL_SYNONYMS)
    return LabelRule(
        "category",
        mapping=dict(LABEL_SYNONYMS),
        hint=hint or (label_options_hint(values, in_prepare, where) if unknown else None),
    )


# Label options suggested for values no rule reads: at most this many distinct values (1-10 ratings and
# 0-10 scales fit), each free of the characters --label-map and --labels split on or a shell quote.
SUGGESTED_VALUES = 11
_UNSUGGESTABLE = re.compile(r"[,=']")
_RATING = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*(?:stars?)?\s*", re.IGNORECASE)


def suggested_label_map(values: pd.Series) -> dict[str, str] | None:
    """A guess at negative/neutral/positive for each distinct label value, or None for fewer than two, too
    many, or ones no option can name. Numbers (ratings, '4 stars') by rank: the middle one neutral (the
    middle two from 6 values up; none for 2 or 4), those below negative, above positive. Words as the class
    they spell (neg, Positive), else by VADER's score of the word (|score| <= 0.05 neutral)."""
    distinct = sorted({str(v).strip() for v in values.dropna()} - {""})
    if not 2 <= len(distinct) <= SUGGESTED_VALUES or any(_UNSUGGESTABLE.search(v) for v in distinct):
        return None
    if all(_RATING.fullmatch(v) for v in distinct):
        ranked = sorted(distinct, key=lambda v: float(_RATING.fullmatch(v).group(1)))
        n = len(ranked)
        middle = {n // 2} if n % 2 else ({n // 2 - 1, n // 2} if n >= 6 else set())
        below = min(middle) if middle else n // 2
        return {
            v: "neutral" if i in middle else "negative" if i < below else "positive"
            for i, v in enumerate(ranked)
        }
    guess = {}
    for v in distinct:
        known = LABEL_SYNONYMS.get(v.lower())
        if known is None:
            compound = _vader().polarity_scores(v)["compound"]
            known = 0 if compound < -0.05 else 2 if compound > 0.05 else 1
        guess[v] = LABELS[known]
    return dict(sorted(guess.items(), key=lambda kv: (LABELS.index(kv[1]), kv[0].lower())))


def label_options_hint(values: pd.Series, in_prepare: bool, where: str = "FILE") -> str:
    """How to read these label values, as options that work when copied (see suggested_label_map):
    prepare's own options (`in_prepare`), else a prepare command for `where` and this command's --labels."""
    guess = suggested_label_map(values)
    if guess is None:
        return (
            "map them with --label-map VALUE=CLASS,... or pass --label-column with the column that holds the labels"
            if in_prepare
            else "map them with `sentitune prepare --label-map VALUE=CLASS,...`"
        )
    binary = "neutral" not in guess.values()
    mapping = ("--labels negative,positive " if binary else "") + (
        "--label-map '" + ",".join(f"{v}={c}" for v, c in guess.items()) + "'"
    )
    onto = "negative and positive" if binary else "negative, neutral and positive"
    words = [v for v in guess if not _RATING.fullmatch(v) and v.lower() not in LABEL_SYNONYMS]
    guessed = " (guessed from the words: check it)" if words else ""
    own = f"--labels {shlex.quote(','.join(guess))}"
    if in_prepare:
        return f"add {mapping} to read them as {onto}{guessed}, or {own} to keep them as {len(guess)} classes"
    return (
        f"prepare the file with `sentitune prepare {shlex.quote(where)} {mapping}` to read them as {onto}{guessed}, "
        f"or pass {own} to keep them as {len(guess)} classes"
    )


def _own_label_set_rule(values, source, classes, thresholds, integers_are_ids, where, hint) -> LabelRule:
    names = class_ids(classes)
    keys = {str(v).strip().lower() for v in values.dropna()}
    if source != "score" and source != "vader" and keys <= set(names):
        return LabelRule("category", mapping=names, classes=classes, hint=hint)
    numbers = pd.to_numeric(values.dropna(), errors="coerce")
    numeric = len(numbers) > 0 and bool(numbers.notna().all())
    if source in ("score", "vader") or (numeric and thresholds is not None and source == "auto"):
        if thresholds is None:
            raise SentituneError(
                f"scores map onto the {len(classes)} classes {', '.join(classes)} only with --thresholds "
                f"({len(classes) - 1} increasing numbers, e.g. --thresholds "
                f"{','.join(str(round(-1 + 2 * (i + 1) / len(classes), 2)) for i in range(len(classes) - 1))})"
            )
        return LabelRule(source if source != "auto" else "score", classes=classes, thresholds=thresholds)
    ids = {str(i): i for i in range(len(classes))} | {f"{i}.0": i for i in range(len(classes))}
    if numeric and integers_are_ids and keys <= set(ids):
        return LabelRule("category", mapping=ids, classes=classes)
    unknown = sorted(keys - set(names))[:5]
    hint = hint or "map them with `sentitune prepare --label-map VALUE=CLASS,...`" + (
        ", or pass --thresholds to read them as scores" if numeric else ""
    )
    raise SentituneError(
        f"{where}: label values {', '.join(repr(short(v, 40)) for v in unknown)} are not the classes "
        f"{', '.join(classes)}; {hint}"
    )


def score_to_class(scores: np.ndarray, neutral_band: float, thresholds=None) -> np.ndarray:
    if thresholds:  # the number of thresholds the score is above
        return np.searchsorted(np.asarray(thresholds, np.float64), scores, side="left").astype(np.int8)
    cls = np.where(scores < 0, 0, 2).astype(np.int8)
    cls[np.abs(scores) <= neutral_band] = 1
    return cls


def soft_targets(
    scores: np.ndarray, labels: np.ndarray, boundaries: tuple[float, ...], width: float, n_classes: int
) -> np.ndarray:
    """Target distributions (rows x classes) that keep how sure the scorer was, not only its class: a
    post at distance d from the nearer boundary of its class gives 0.5 * exp(-d / width) of its target
    to the class across that boundary (half at the boundary itself, nearly none a few widths inside).
    A class that is one point (the sign rule's neutral, score exactly 0) keeps its whole target.
    `width` 0: one-hot targets."""
    rows = np.arange(len(labels))
    targets = np.zeros((len(labels), n_classes), np.float32)
    targets[rows, labels] = 1.0
    if width == 0 or len(labels) == 0:
        return targets
    edges = np.concatenate([[-np.inf], np.asarray(boundaries, np.float64), [np.inf]])
    low, high = edges[labels], edges[labels + 1]
    to_low, to_high = np.maximum(scores - low, 0.0), np.maximum(high - scores, 0.0)
    nearer_low = to_low <= to_high
    share = 0.5 * np.exp(-np.minimum(to_low, to_high) / width)
    share[low == high] = 0.0
    neighbour = np.where(nearer_low, labels - 1, labels + 1)
    targets[rows, labels] -= share
    targets[rows, np.clip(neighbour, 0, n_classes - 1)] += share
    return targets


def apply_label_rule(
    rule: LabelRule, values: pd.Series, where: str | Callable[[np.ndarray], str]
) -> np.ndarray:
    """Class ids as int8, -1 where the label is missing; values that fit no class are an error.

    `where` names the input in messages: a path, or a function of the offending rows' mask."""

    def name(bad: pd.Series) -> str:
        return where if isinstance(where, str) else where(bad.to_numpy())

    if rule.source in ("score", "vader"):
        numbers = pd.to_numeric(values, errors="coerce")
        bad = values.notna() & numbers.isna()
        if bad.any():
            examples = ", ".join(repr(short(v, 60)) for v in values[bad].unique()[:3])
            raise SentituneError(
                f"{name(bad)}: label values {examples} are not numbers; pass --label-type category "
                "or --label-map if the column holds class names"
            )
        out = score_to_class(numbers.fillna(0).to_numpy(np.float64), rule.neutral_band, rule.thresholds)
        out[numbers.isna().to_numpy()] = -1
        return out
    keys = values.str.strip().str.lower()
    ids = keys.map(rule.mapping)
    unknown = values.notna() & ids.isna()
    if unknown.any():
        examples = ", ".join(repr(short(v, 60)) for v in values[unknown].unique()[:5])
        raise SentituneError(
            f"{name(unknown)}: label value {examples} maps to no class (known: "
            f"{', '.join(sorted(rule.mapping))}); {rule.hint or 'pass --label-map VALUE=CLASS,...'}"
        )
    rule.seen.update(values.value_counts().to_dict())  # counted in pandas: this runs on every chunk
    return ids.fillna(-1).to_numpy(np.int8)


def missing_as_na(values: pd.Series) -> pd.Series:
    """Labels spelled as missing ('NaN', 'null', ...) become NA, as empty cells already are."""
    return values.mask(values.str.strip().str.lower().isin(MISSING_LABELS))


class DistinctLabels:
    """The distinct raw label values seen, up to a cap: enough to tell scores from categories."""

    CAP = 10_000

    def __init__(self) -> None:
        self.values: set[str] = set()

    def update(self, raw: pd.Series) -> None:
        if len(self.values) < self.CAP:
            self.values.update(raw.dropna().unique().tolist())

    def sample(self) -> pd.Series:
        return pd.Series(sorted(self.values), dtype="string")


def vader_scores(texts: pd.Series) -> pd.Series:
    """VADER's compound score of each text, as strings (the scratch file's raw-label type)."""
    analyzer = _vader()
    return pd.Series([repr(analyzer.polarity_scores(t)["compound"]) for t in texts], dtype="string")


_VADER = None


def _vader():
    global _VADER
    if _VADER is None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        _VADER = SentimentIntensityAnalyzer()
    return _VADER
