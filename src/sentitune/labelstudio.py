"""Label Studio's formats, both ways, and the keys a labelling round matches posts on.

Out (`sentitune select --format label-studio`): tasks in Label Studio's import format, each post in
`data.text` with the model's label as a pre-annotation (`predictions`: `model_version`, `score`, one
`choices` result from the `sentiment` control to the `text` object), and the labelling config that
names the run's labels. Beside the post, `data` carries where it came from (ROUND_FIELDS: the model's
label, the run's name and its own validation figures), which every export flavour keeps, so a
labelled round says how the model that chose it did (`labelling_rounds`).

In (`sentitune prepare`): the three exports of such a project. JSON: every task with its
`annotations` (each with `result`, `was_cancelled`, `created_at`, `updated_at`) and `predictions`.
JSON-MIN: one flat object per annotation that was not cancelled: the task's data fields, the control's
name -> the chosen label (a string; several choices as `{"choices": [...]}`), `annotator`,
`annotation_id`, `created_at`, `updated_at`, `lead_time`. CSV: JSON-MIN's fields as columns. A task's
label is a person's annotation, never the pre-annotation; cancelled (skipped) annotations are left out
and, where the export still holds them (JSON), counted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd

from sentitune.errors import SentituneError, short
from sentitune.storage import COMPRESSIONS, open_input
from sentitune.tables import pick_label_column, pick_text_column, read_chunks

CHOICES = "sentiment"  # the Choices control of the labelling config select writes
TEXT = "text"  # its Text object, and the data field holding the post
# The fields Label Studio adds to every JSON-MIN object and CSV row (besides the task's data and id).
EXPORT_FIELDS = frozenset({"annotator", "annotation_id", "created_at", "updated_at", "lead_time"})
# What select writes beside every post (selected.csv columns, tasks.json data fields), carried back by the
# labelled files: the model's label, the run that chose the post, and that run's own figures a learning
# curve needs: its validation macro-recall and how many of its training posts people labelled.
MODEL_LABEL = "model_label"
MODEL_RUN = "model_run"
MODEL_RECALL = "model_val_recall"
MODEL_PEOPLE = "model_human_train"
ROUND_FIELDS = (MODEL_LABEL, MODEL_RUN, MODEL_RECALL, MODEL_PEOPLE)


# ----------------------------------------------------------------------------- keys posts are matched on

_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
_MENTION = re.compile(r"@\w+")
_SPACE = re.compile(r"\s+")


def normalise_for_near_duplicates(texts: pd.Series) -> pd.Series:
    """Texts as near-duplicates are matched: lower case, links dropped, mentions as @user, spaces joined."""
    out = texts.str.lower().str.replace(_URL, "", regex=True).str.replace(_MENTION, "@user", regex=True)
    return out.str.replace(_SPACE, " ", regex=True).str.strip()


def text_hashes(texts: pd.Series) -> np.ndarray:
    # pandas' vectorised SipHash with its fixed key: deterministic across runs and machines.
    return pd.util.hash_pandas_object(texts, index=False).to_numpy(np.uint64)


# ----------------------------------------------------------------------------- out: tasks and config


def label_config(labels: Sequence[str]) -> str:
    """The labelling config of a project for `labels`: the post, and one choice among the labels."""
    choices = "\n".join(f"    <Choice value={quoteattr(str(label))}/>" for label in labels)
    return (
        "<View>\n"
        f'  <Text name="{TEXT}" value="${TEXT}"/>\n'
        f'  <Choices name="{CHOICES}" toName="{TEXT}" choice="single" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def tasks(
    texts: Sequence[str],
    labels: Sequence[str],
    probs: np.ndarray,
    model_version: str,
    carried: dict | None = None,
) -> list[dict]:
    """One import task per post, the model's label (the likeliest class) as its pre-annotation, scored by
    its probability (Label Studio sorts tasks by it); `data` holds the post, the model's label and
    `carried` (the run's name and figures, see ROUND_FIELDS; a None value is left out)."""
    extra = {k: v for k, v in (carried or {}).items() if v is not None}
    made = []
    for text, p in zip(texts, probs, strict=True):
        best = int(np.argmax(p))
        result = {
            "from_name": CHOICES,
            "to_name": TEXT,
            "type": "choices",
            "value": {"choices": [labels[best]]},
        }
        made.append(
            {
                "data": {TEXT: text, MODEL_LABEL: labels[best], **extra},
                "predictions": [
                    {"model_version": model_version, "score": round(float(p[best]), 6), "result": [result]}
                ],
            }
        )
    return made


# ----------------------------------------------------------------------------- in: exports


@dataclass
class Export:
    """The labelled posts of one export, in the order they were annotated (`text`, `label`, and the
    ROUND_FIELDS the tasks carry)."""

    path: str
    flavour: str  # JSON, JSON-MIN or CSV
    rows: pd.DataFrame  # text, label (+ ROUND_FIELDS): one row per annotation by a person, oldest first
    tasks: int  # tasks (JSON) or rows (JSON-MIN, CSV) read
    skipped: int  # tasks whose every annotation was cancelled (JSON only: the others leave them out)
    unlabelled: int  # tasks with no annotation (perhaps a pre-annotation) or an empty one
    text_key: str
    label_key: str


def _bare_name(path: str) -> str:
    name = str(path).lower()
    for suffix in COMPRESSIONS:
        name = name.removesuffix(suffix)
    return name


def export_flavour(path: str) -> str | None:
    """JSON, JSON-MIN or CSV for a Label Studio export, None for any other file."""
    name = _bare_name(path)
    if name.endswith(".json"):
        items = json_items(path)
        if items is None:
            return None
        if any("data" in t and ("annotations" in t or "predictions" in t) for t in items):
            return "JSON"
        return "JSON-MIN" if any(EXPORT_FIELDS & set(t) for t in items) else None
    if name.endswith((".csv", ".tsv")):
        try:
            head = next(read_chunks(path, 1), None)
        except SentituneError:
            return None  # the ordinary reader says what is wrong with it
        return "CSV" if head is not None and EXPORT_FIELDS <= set(map(str, head.columns)) else None
    return None


def json_items(path: str) -> list[dict] | None:
    """The objects of a JSON array file, or None when the file is not one (JSON lines, say)."""
    with open_input(path, "rb") as f:
        raw = f.read()
    if not raw.lstrip()[:1] == b"[":
        return None
    try:
        items = json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError as exc:
        raise SentituneError(f"cannot parse {path} as JSON: {short(exc)}") from None
    if not isinstance(items, list) or not all(isinstance(t, dict) for t in items):
        raise SentituneError(
            f"{path} is a JSON array of something else than objects; pass a Label Studio export"
        )
    return items


def task_texts(path: str, text_key: str | None = None) -> pd.Series | None:
    """Every post of a task file or a JSON / JSON-MIN export, whatever its state (labelled, skipped or
    not yet seen); None for a file that is none of them."""
    items = json_items(path) if _bare_name(path).endswith(".json") else None
    if items is None:
        return None
    records = [t["data"] if isinstance(t.get("data"), dict) else t for t in items]
    keys = sorted({str(k) for r in records for k in r} - EXPORT_FIELDS - {"id"})
    key = pick_text_column(pd.DataFrame(columns=keys), text_key, path)
    return pd.Series([r.get(key) for r in records], dtype="string")


def read_export(path: str, text_key: str | None = None, label_key: str | None = None) -> Export:
    """The posts and people's labels of a Label Studio export (see the module docstring)."""
    flavour = export_flavour(path)
    if flavour == "JSON":
        return _read_json(path, json_items(path) or [], text_key, label_key)
    if flavour == "JSON-MIN":
        frame = pd.DataFrame.from_records(json_items(path) or [])
    elif flavour == "CSV":
        frame = pd.concat(list(read_chunks(path, 100_000)), ignore_index=True)
    else:
        raise SentituneError(f"{path} is not a Label Studio export (JSON, JSON-MIN or CSV)")
    return _read_flat(path, flavour, frame, text_key, label_key)


def _read_json(path: str, items: list[dict], text_key: str | None, label_key: str | None) -> Export:
    data_keys = sorted({k for t in items for k in (t.get("data") or {})})
    key = pick_text_column(pd.DataFrame(columns=data_keys), text_key, f"{path} (task data)")
    texts, labels, when = [], [], []
    carried = [f for f in ROUND_FIELDS if any(f in (t.get("data") or {}) for t in items)]
    fields: dict[str, list] = {f: [] for f in carried}
    skipped = unlabelled = 0
    for task in items:
        kept = [a for a in task.get("annotations") or [] if not (a.get("was_cancelled") or a.get("skipped"))]
        if task.get("annotations") and not kept:
            skipped += 1
            continue
        # every annotation of the task, oldest first: a later one overrides an earlier one as prepare says
        kept.sort(key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))
        chosen = [(_choice(a.get("result") or [], label_key, path), a) for a in kept]
        chosen = [(c, a) for c, a in chosen if c is not None]
        if not chosen:
            unlabelled += 1
            continue
        for choice, annotation in chosen:
            texts.append((task.get("data") or {}).get(key))
            for f in carried:
                fields[f].append((task.get("data") or {}).get(f))
            labels.append(choice)
            when.append(str(annotation.get("updated_at") or annotation.get("created_at") or ""))
    rows = pd.DataFrame(
        {
            "text": pd.Series(texts, dtype="string"),
            "label": pd.Series(labels, dtype="string"),
            **{f: pd.Series(values, dtype=object) for f, values in fields.items()},
        }
    )
    rows = rows.iloc[np.argsort(np.asarray(when, dtype=str), kind="stable")].reset_index(drop=True)
    return Export(path, "JSON", rows, len(items), skipped, unlabelled, key, label_key or CHOICES)


def _choice(result: list[dict], wanted: str | None, path: str) -> str | None:
    """The label a person chose in an annotation's result: its one `choices` item (of the control named
    `wanted`, where several controls answer)."""
    found = [
        r for r in result if r.get("type") == "choices" and (wanted is None or r.get("from_name") == wanted)
    ]
    if len(found) > 1 and wanted is None:
        names = sorted({str(r.get("from_name")) for r in found})
        raise SentituneError(
            f"{path}: annotations answer {len(names)} choice controls ({', '.join(names)}); pass --label-column "
            "with the one that holds the sentiment"
        )
    if not found:
        return None
    choices = (found[0].get("value") or {}).get("choices") or []
    if len(choices) > 1:
        raise SentituneError(
            f"{path}: an annotation chose {len(choices)} labels ({', '.join(map(str, choices))}); a post takes "
            'one: use choice="single" in the labelling config and annotate it again'
        )
    return str(choices[0]) if choices else None


def _read_flat(
    path: str, flavour: str, frame: pd.DataFrame, text_key: str | None, label_key: str | None
) -> Export:
    columns = [str(c) for c in frame.columns]
    data = [c for c in columns if c not in EXPORT_FIELDS | {"id", "agreement", "history"}]
    key = pick_text_column(frame[data].astype("string"), text_key, path)
    label = (
        pick_label_column([c for c in data if c != key and c not in ROUND_FIELDS], label_key, path)
        if label_key or CHOICES not in data
        else CHOICES
    )
    values = frame[label] if label in frame.columns else pd.Series([None] * len(frame))
    labels = [_flat_choice(v, path) for v in values]
    rows = pd.DataFrame({"text": frame[key].astype("string"), "label": pd.Series(labels, dtype="string")})
    for f in ROUND_FIELDS:
        if f in frame.columns and f not in (key, label):
            rows[f] = frame[f].to_numpy(object)
    order = frame["updated_at"].astype("string").fillna("") if "updated_at" in frame.columns else None
    if order is not None:
        rows = rows.iloc[np.argsort(order.to_numpy(str), kind="stable")].reset_index(drop=True)
    unlabelled = int(rows["label"].isna().sum())
    return Export(
        path,
        flavour,
        rows[rows["label"].notna()].reset_index(drop=True),
        len(frame),
        0,
        unlabelled,
        key,
        label,
    )


def _flat_choice(value, path: str) -> str | None:
    """A JSON-MIN or CSV cell of the choices control: the label, or JSON of several choices."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value == "":
        return None
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, dict | list):
        items = value if isinstance(value, list) else [value]
        choices = [c for item in items if isinstance(item, dict) for c in item.get("choices", [])]
        if len(choices) != 1:
            raise SentituneError(
                f"{path}: an annotation chose {len(choices)} labels ({short(json.dumps(value), 80)}); a post takes "
                'one: use choice="single" in the labelling config and annotate it again'
            )
        return str(choices[0])
    return str(value)


# ----------------------------------------------------------------------------- labelling rounds


def _carried_text(value) -> str | None:
    """A carried cell as text: None for a missing or empty one."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _carried_number(value) -> float | None:
    text = _carried_text(value)
    try:
        number = float(text) if text is not None else None
    except ValueError:
        return None
    return number if number is not None and np.isfinite(number) else None


def labelling_rounds(carried: pd.DataFrame, people: Sequence[str], classes: Sequence[str]) -> list[dict]:
    """One entry per run that chose labelled posts (`carried[MODEL_RUN]`), in order of first appearance:
    the labels people gave its posts, how often they agreed with the model's label (all, and per class:
    posts people put in the class, posts the model did, both), and the run's validation macro-recall and
    people-labelled training posts as its posts carry them (the first value, where they differ, and say
    so). `carried`: the ROUND_FIELDS of every post people labelled; `people`: their class names, row by
    row. Rows without a run name count for none."""
    if MODEL_RUN not in carried.columns or not len(carried):
        return []
    runs = [_carried_text(v) for v in carried[MODEL_RUN]]
    people_keys = [str(p).strip().lower() for p in people]
    model = (
        [_carried_text(v) for v in carried[MODEL_LABEL]]
        if MODEL_LABEL in carried.columns
        else [None] * len(runs)
    )
    model_keys = [m.lower() if m else None for m in model]
    figures = {
        MODEL_RECALL: ("val_macro_recall", float),
        MODEL_PEOPLE: ("people_labelled_training_posts", int),
    }
    rounds: dict[str, dict] = {}
    seen: dict[str, dict[str, list]] = {}
    for i, run in enumerate(runs):
        if run is None:
            continue
        entry = rounds.setdefault(run, {"run": run, "labels_by_people": 0, "compared": 0, "agreed": 0,
                                        "per_class": {c: {"people": 0, "model": 0, "agreed": 0} for c in classes}})  # fmt: skip
        entry["labels_by_people"] += 1
        if model_keys[i] is not None:
            entry["compared"] += 1
            entry["agreed"] += int(model_keys[i] == people_keys[i])
            for c in classes:
                key = str(c).lower()
                counts = entry["per_class"][c]
                counts["people"] += int(people_keys[i] == key)
                counts["model"] += int(model_keys[i] == key)
                counts["agreed"] += int(people_keys[i] == key == model_keys[i])
        for field, _ in figures.items():
            if field in carried.columns:
                value = _carried_number(carried[field].iat[i])
                values = seen.setdefault(run, {}).setdefault(field, [])
                if value is not None and value not in values:
                    values.append(value)
    out = []
    for run, entry in rounds.items():
        made = {
            "run": run,
            "labels_by_people": entry["labels_by_people"],
            "compared_with_the_model": entry["compared"],
            "agreed": entry["agreed"],
            "agreement": round(entry["agreed"] / entry["compared"], 4) if entry["compared"] else None,
            **({"per_class": entry["per_class"]} if entry["compared"] else {}),
        }
        differing = {}
        for field, (name, kind) in figures.items():
            values = seen.get(run, {}).get(field, [])
            made[name] = kind(values[0]) if values else None
            if len(values) > 1:
                differing[field] = [kind(v) for v in values]
        if differing:
            made["inconsistent"] = differing
            made["note"] = (
                f"the posts of {run} carry different {' and '.join(differing)} values; the first one read is kept"
            )
        out.append(made)
    return out
