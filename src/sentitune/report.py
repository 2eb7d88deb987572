"""report.html: one self-contained page per run, evaluation and prepared data set.

Inline CSS and SVG only (no script, no font or image from elsewhere), so it opens offline, from a
download of a `gs://` folder too. Every text from the data is escaped. Figures carry `data-figure`
and the headline numbers `data-metric`, so a test (or a person's tool) can find them.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sentitune.layout import HISTORY, HUMAN_LABEL, METRICS, RUN_CONFIG, WEAK_LABEL
from sentitune.metrics import calibration_bins

SHOWN_EXAMPLES = 20
EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf\U0001f000-\U0001f2ff]")
FEATURES = {
    "emoji": EMOJI,
    "hashtag": re.compile(r"#\w"),
    "mention": re.compile(r"@\w"),
    "link": re.compile(r"https?://|www\.", re.IGNORECASE),
}
LENGTHS = ((1, 5), (6, 10), (11, 20), (21, 10**9))  # words per post
COLOURS = ("#c0392b", "#7f8c8d", "#27ae60", "#2c6fbb", "#8e44ad", "#d68910")

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1080px;
padding:24px;color:#1d232a}
h1{font-size:1.6em;margin:.2em 0}h2{border-bottom:1px solid #d5dbe1;padding-bottom:4px;margin-top:2em}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #d5dbe1;padding:4px 8px;text-align:right}
th{background:#f2f5f8}td.text{text-align:left;max-width:560px;word-break:break-word}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #d5dbe1;border-radius:8px;padding:10px 16px}
.card b{display:block;font-size:1.5em}.muted{color:#5f6b76}.note{background:#fff6dc;padding:6px 10px}
figure{margin:8px 0;display:inline-block;vertical-align:top}figcaption{color:#5f6b76;font-size:.9em}
svg text{font:11px system-ui,sans-serif;fill:#1d232a}
"""


@dataclass
class ReportInput:
    """What a report shows; every part but the title and the metrics may be missing."""

    title: str
    metrics: dict | None  # classification_metrics of the scored split, with intervals_95
    split: str = "test"  # what the metrics were measured on
    labels: list[str] = field(default_factory=list)
    texts: list[str] | None = None
    gold: np.ndarray | None = None
    probs: np.ndarray | None = None
    history: list[dict] = field(default_factory=list)
    train_log: list[dict] = field(default_factory=list)
    best_step: int | None = None
    calibration: dict | None = None
    explanations: dict[int, dict] = field(default_factory=dict)  # row -> explain()'s words, for mistakes
    baseline: dict | None = None
    data: dict | None = None  # prepare_report.json
    this_run: dict | None = None  # the run's name, validation macro-recall and people-labelled training posts
    class_counts: dict | None = None  # split -> class -> count
    settings: dict | None = None
    notes: list[str] = field(default_factory=list)


def run_report(
    folder: str | Path,
    splits: dict | None = None,
    scored: dict[str, np.ndarray] | None = None,
    train_log: list[dict] | None = None,
    data: dict | None = None,
    explain: Callable[[list[str]], list[dict]] | None = None,
) -> str:
    """report.html of a run, rendered from what its folder holds (run_config.json, metrics.json,
    history.jsonl) and what a run folder does not keep, each shown where given: the splits' posts (`splits`,
    name -> LabelledTexts) with the class probabilities of val and test (`scored`), the training log,
    prepare's report of the data, and `explain` (bound to the run's model), which shades the words that
    drove the most confident mistakes. It shows the test split, the validation split when there is none."""
    splits, scored = splits or {}, scored or {}
    folder = Path(folder)
    run_config = json.loads((folder / RUN_CONFIG).read_text())
    metrics = json.loads((folder / METRICS).read_text())
    history = [json.loads(line) for line in (folder / HISTORY).read_text().splitlines()]
    split = "test" if "test" in metrics else "val"
    notes = [] if split == "test" else ["no test split: the results below are on the validation split"]
    notes += [f"Warning: {w}." for w in metrics.get("warnings", [])]
    shown = run_config["data"].get(split)
    job_dir = run_config["train"]["job_dir"]
    report = ReportInput(
        title=f"sentitune run: {job_dir or os.environ.get('AIP_MODEL_DIR', '')}",
        metrics=metrics.get(split),
        split=f"the {split} split ({shown['path']})" if shown else split,
        labels=list(run_config["labels"]),
        texts=list(splits[split].texts) if split in scored else None,
        gold=splits[split].labels if split in scored else None,
        probs=scored.get(split),
        history=history,
        train_log=train_log or [],
        best_step=metrics.get("training", {}).get("best_step"),
        calibration=metrics.get("calibration"),
        baseline=metrics.get("baseline"),
        data=data,
        this_run={
            "run": os.path.basename(str(job_dir or "").rstrip("/")) or "this run",
            "val_macro_recall": (metrics.get("val") or {}).get("macro_recall"),
            "people_labelled_training_posts": (run_config["data"].get("train") or {}).get("people_labelled"),
        },
        class_counts={name: d["class_counts"] for name, d in run_config["data"].items()},
        settings=run_config["train"],
        notes=notes,
    )
    if report.probs is not None and explain is not None:
        report.explanations = explain_mistakes(report, explain)
    return render(report)


def people_labelled(examples: int, weak: np.ndarray | None, data: dict | None) -> int | None:
    """How many of a split's `examples` posts people labelled: the posts not marked as VADER's (`weak`,
    where the split marks each post's source), else none or all of them as prepare's report (`data`) says
    the labels came from (all of them for files given without a prepared folder); None where that cannot be
    told."""
    if weak is not None:
        return examples - int(weak.sum())
    sources = (data or {}).get("label_sources") or {}
    vader_only = not sources and ((data or {}).get("labels") or {}).get("source") == "vader"  # older reports
    if sources.get(HUMAN_LABEL) == 0 or vader_only:
        return 0
    if sources.get(HUMAN_LABEL) and sources.get(WEAK_LABEL):  # mixed, but the posts were not read
        return None
    return examples


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def number(value, spec: str = ".3g") -> str:
    """A whole number with thousands separators (19,795, never 1.98e+04), any other in `spec`."""
    if isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer()):
        return f"{int(value):,}"
    return format(value, spec)


# ----------------------------------------------------------------------------- figures


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    name: str,
    y_label: str,
    mark_x=None,
    x_label: str = "step",
    values: bool = False,
) -> str:
    """Lines of (x, y) points on shared axes; `mark_x` draws a dashed vertical line (the kept step);
    `values`: every point drawn with its value (a line of one point always is)."""
    w, h, left, bottom, top, right = 460, 240, 48, 30, 12, 110
    points = [p for pts in series.values() for p in pts]
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    # one step (a single validation) sits in the middle, not on an edge
    x0, x1 = (min(xs), max(xs)) if max(xs) > min(xs) else (min(xs) - 1, min(xs) + 1)
    y0, y1 = (min(ys), max(ys)) if max(ys) > min(ys) else (min(ys) - 0.5, min(ys) + 0.5)

    def sx(x):
        return left + (x - x0) / (x1 - x0) * (w - left - right)

    def sy(y):
        return h - bottom - (y - y0) / (y1 - y0) * (h - bottom - top)

    parts = [f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="#889"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="#889"/>',
             f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{number(y1, ".4g")}</text>',
             f'<text x="{left - 4}" y="{h - bottom}" text-anchor="end">{number(y0, ".4g")}</text>',
             f'<text x="{left}" y="{h - 12}">{number(x0)}</text>',
             f'<text x="{w - right}" y="{h - 12}" text-anchor="end">{number(x1)} ({esc(x_label)})</text>',
             f'<text x="4" y="{top + 4}" transform="rotate(-90 10,{h / 2})">{esc(y_label)}</text>']  # fmt: skip
    if mark_x is not None:
        parts.append(
            f'<line x1="{sx(mark_x):.1f}" y1="{top}" x2="{sx(mark_x):.1f}" y2="{h - bottom}" '
            'stroke="#555" stroke-dasharray="4 3"/>'
        )
    for i, (label, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        for x, y in pts if values or len(pts) == 1 else ():  # one measurement: no line can be drawn
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{colour}"><title>{esc(label)} at '
                         f'{esc(x_label)} {number(x)}: {y:.4f}</title></circle>'
                         f'<text x="{sx(x) + 7:.1f}" y="{sy(y) + (4 if i % 2 == 0 else 14):.1f}" style="fill:{colour}" '
                         f'data-value="{y:.4f}">{y:.4f}</text>')  # fmt: skip
        parts.append(
            f'<text x="{w - right + 8}" y="{top + 14 * (i + 1)}" style="fill:{colour}">{esc(label)}</text>'
        )
    return svg(name, w, h, parts)


def bar_chart(bars: list[tuple[str, float]], name: str, y_label: str, colours=None) -> str:
    w, h, left, bottom, top = max(240, 56 * len(bars) + 60), 220, 48, 40, 14
    peak = max((v for _, v in bars), default=0) or 1
    step = (w - left - 10) / max(len(bars), 1)
    parts = [f'<line x1="{left}" y1="{h - bottom}" x2="{w - 6}" y2="{h - bottom}" stroke="#889"/>',
             f'<text x="4" y="{top}">{esc(y_label)}</text>']  # fmt: skip
    for i, (label, value) in enumerate(bars):
        bh = value / peak * (h - bottom - top - 10)
        x = left + i * step + step * 0.15
        colour = (colours or COLOURS)[i % len(colours or COLOURS)]
        parts.append(
            f'<rect x="{x:.1f}" y="{h - bottom - bh:.1f}" width="{step * 0.7:.1f}" height="{max(bh, 0.5):.1f}" '
            f'fill="{colour}"><title>{esc(label)}: {number(value, "g")}</title></rect>'
        )
        parts.append(
            f'<text x="{x + step * 0.35:.1f}" y="{h - bottom - bh - 3:.1f}" text-anchor="middle">{number(value)}</text>'
        )
        parts.append(
            f'<text x="{x + step * 0.35:.1f}" y="{h - bottom + 14}" text-anchor="middle">{esc(label)}</text>'
        )
    return svg(name, w, h, parts)


def reliability_diagram(bins: list[dict], name: str) -> str:
    """Accuracy against confidence per bin, beside the diagonal of perfect calibration."""
    size, pad = 240, 36
    inner = size - 2 * pad

    def sx(v):
        return pad + v * inner

    def sy(v):
        return size - pad - v * inner

    parts = [f'<rect x="{pad}" y="{pad}" width="{inner}" height="{inner}" fill="none" stroke="#889"/>',
             f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(1)}" y2="{sy(1)}" stroke="#aaa" stroke-dasharray="4 3"/>',
             f'<text x="{pad}" y="{size - 8}">confidence →</text>',
             f'<text x="4" y="{pad - 8}">accuracy</text>']  # fmt: skip
    for b in bins:
        if not b["count"]:
            continue
        width = (b["high"] - b["low"]) * inner
        parts.append(
            f'<rect x="{sx(b["low"]):.1f}" y="{sy(b["accuracy"]):.1f}" width="{width:.1f}" '
            f'height="{b["accuracy"] * inner:.1f}" fill="#2c6fbb" fill-opacity="0.7" stroke="#fff">'
            f"<title>{b['low']:.1f}-{b['high']:.1f}: {b['count']} posts, accuracy {b['accuracy']:.3f}, "
            f"confidence {b['confidence']:.3f}</title></rect>"
        )
    return svg(name, size, size, parts)


def svg(name: str, w: int, h: int, parts: list[str]) -> str:
    return (
        f'<svg data-figure="{esc(name)}" role="img" aria-label="{esc(name)}" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
    )


def figure(chart: str, caption: str) -> str:
    return f"<figure>{chart}<figcaption>{esc(caption)}</figcaption></figure>" if chart else ""


# ----------------------------------------------------------------------------- sections


def headline(r: ReportInput) -> str:
    m = r.metrics
    cards = []
    for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("macro_recall", "macro-recall")):
        low, high = (m.get("intervals_95") or {}).get(key, (None, None))
        interval = f"95 % interval {low:.4f}–{high:.4f}" if low is not None else "no interval"
        cards.append(
            f'<div class="card">{label}<b data-metric="{key}">{m[key]:.4f}</b>'
            f'<span class="muted">{interval}</span></div>'
        )
    cards.append(f'<div class="card">loss<b data-metric="loss">{m["loss"]:.4f}</b>'
                 f'<span class="muted">{number(m["examples"])} posts</span></div>')  # fmt: skip
    rows = "".join(
        f"<tr><th>{esc(name)}</th><td>{c['precision']:.3f}</td><td>{c['recall']:.3f}</td>"
        f"<td>{c['f1']:.3f}</td><td>{number(c['support'])}</td></tr>"
        for name, c in m["per_class"].items()
    )
    per_class = f"<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{rows}</table>"
    return (
        f"<h2>Results on {esc(r.split)}</h2><div class='cards'>{''.join(cards)}</div>{per_class}"
        + confusion_table(m["confusion_matrix"])
    )


def confusion_table(cm: dict) -> str:
    labels, counts = cm["labels"], np.asarray(cm["rows_true_columns_predicted"], dtype=float)
    rows_sum = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    share = counts / rows_sum
    head = "".join(f"<th>{esc(x)}</th>" for x in labels)
    body = ""
    for i, name in enumerate(labels):
        cells = "".join(
            f'<td style="background:rgba(44,111,187,{share[i, j] * 0.8:.2f})">{number(int(counts[i, j]))}'
            f'<br><span class="muted">{share[i, j]:.1%}</span></td>'
            for j in range(len(labels))
        )
        body += f"<tr><th>{esc(name)}</th>{cells}</tr>"
    return (
        "<h3>Confusion matrix</h3><p class='muted'>rows: true class, columns: predicted; counts and share of "
        f"the row</p><table data-figure='confusion'><tr><th></th>{head}</tr>{body}</table>"
    )


def curves(r: ReportInput) -> str:
    if not r.history and not r.train_log:
        return ""
    loss = {
        "train loss": [(x["step"], x["loss"]) for x in r.train_log if "loss" in x],
        "val loss": [(x["step"], x["val_loss"]) for x in r.history],
    }
    quality = {
        "val accuracy": [(x["step"], x["val_accuracy"]) for x in r.history],
        "val macro-F1": [(x["step"], x["val_macro_f1"]) for x in r.history],
    }
    kept = f"the model kept is the one of step {number(r.best_step)}" if r.best_step else ""
    once = (
        f"one validation, at step {number(r.history[0]['step'])} (--eval-every N validates more often and draws "
        "the curve)"
        if len(r.history) == 1
        else ""
    )
    validation = figure(
        line_chart(quality, "validation", "score", r.best_step),
        "; ".join(part for part in ("validation", once, kept) if part),
    )
    return (
        "<h2>Training</h2>"
        + figure(
            line_chart({k: v for k, v in loss.items() if v}, "loss", "loss", r.best_step), f"loss; {kept}"
        )
        + validation
    )


def calibration(r: ReportInput) -> str:
    if r.probs is None or r.gold is None or not len(r.gold):
        return ""
    bins, ece = calibration_bins(r.gold, r.probs)
    confidence = r.probs.max(axis=1)
    right = r.probs.argmax(axis=1) == r.gold
    edges = np.linspace(1 / len(r.labels), 1, 9)
    hist_right = np.histogram(confidence[right], edges)[0]
    hist_wrong = np.histogram(confidence[~right], edges)[0]
    bars = []
    for i in range(len(edges) - 1):
        bars += [(f"{edges[i]:.2f}✓", float(hist_right[i])), (f"{edges[i]:.2f}✗", float(hist_wrong[i]))]
    text = f"<p>Expected calibration error (10 bins): <b data-metric='ece'>{ece:.4f}</b></p>"
    if r.calibration:
        text += calibration_decision(r.calibration)
    return (
        "<h2>Calibration</h2>"
        + text
        + figure(reliability_diagram(bins, "reliability"), "reliability: accuracy per confidence bin")
        + figure(
            bar_chart(bars, "confidence", "posts", colours=("#27ae60", "#c0392b")),
            "confidence of right (✓) and wrong (✗) predictions",
        )
    )


def calibration_decision(c: dict) -> str:
    """Whether temperature scaling was kept, and why: the check on validation posts it was not fitted on,
    or the floor below which it is not tried (metrics.cross_fitted_temperature)."""
    val = c["val"]
    if c.get("decision", "kept") == "kept":  # run folders written before the check was made kept it always
        held_out = c.get("held_out")
        checked = (
            f" because {esc(c['reason'])}; ECE of the same held-out posts {held_out['ece_before']:.4f} → "
            f"{held_out['ece_after']:.4f}"
            if held_out
            else f"; validation ECE {val['ece_before']:.4f} → {val['ece_after']:.4f}"
        )
        return (
            f"<p data-calibration='kept'>Temperature scaling kept: temperature {c['temperature']:.3f}, fitted on the "
            f"validation split{checked}. The scores above are scaled.</p>"
        )
    return (
        f"<p data-calibration='refused'>No temperature scaling: {esc(c['reason'])}. The scores above are as "
        "trained.</p>"
    )


def confident_mistakes(gold: np.ndarray, probs: np.ndarray, n: int = SHOWN_EXAMPLES) -> np.ndarray:
    """The rows of the `n` wrong predictions with the highest confidence, most confident first."""
    wrong = np.flatnonzero(probs.argmax(axis=1) != gold)
    return wrong[np.argsort(-probs.max(axis=1)[wrong], kind="stable")][:n]


def explain_mistakes(r: ReportInput, explain: Callable[[list[str]], list[dict]]) -> dict[int, dict]:
    """`explain` (sentitune.explain's, bound to a model) of the most confident mistakes, by row: what
    the report shades in their text."""
    rows = [int(i) for i in confident_mistakes(r.gold, r.probs)]
    return dict(zip(rows, explain([r.texts[i] for i in rows]), strict=True))


def highlighted(text: str, explanation: dict | None) -> str:
    """The post, escaped, its words shaded by their attribution to the predicted label (green: towards
    it, red: away), each with its value as a tooltip."""
    if not explanation:
        return esc(text)
    peak = max((abs(w["attribution"]) for w in explanation["words"]), default=0) or 1
    out, at = [], 0
    for w in explanation["words"]:
        out.append(esc(text[at : w["start"]]))
        strength = 0.6 * abs(w["attribution"]) / peak
        colour = (
            f"rgba(39,174,96,{strength:.2f})" if w["attribution"] >= 0 else f"rgba(192,57,43,{strength:.2f})"
        )
        out.append(
            f'<span class="word" style="background:{colour}" title="{w["attribution"]:.4f}">'
            f"{esc(text[w['start'] : w['end']])}</span>"
        )
        at = w["end"]
    out.append(esc(text[at:]))
    return "".join(out)


def example_table(rows: list[int], r: ReportInput) -> str:
    head = "".join(f"<th>{esc(x)}</th>" for x in r.labels)
    body = ""
    for i in rows:
        scores = "".join(f"<td>{p:.3f}</td>" for p in r.probs[i])
        body += (
            f"<tr><td class='text'>{highlighted(r.texts[i], r.explanations.get(int(i)))}</td>"
            f"<td>{esc(r.labels[r.gold[i]])}</td>"
            f"<td>{esc(r.labels[int(r.probs[i].argmax())])}</td>{scores}</tr>"
        )
    return f"<table><tr><th>post</th><th>gold</th><th>predicted</th>{head}</tr>{body}</table>"


def errors(r: ReportInput) -> str:
    if r.probs is None or r.texts is None or not len(r.gold):
        return ""
    predicted = r.probs.argmax(axis=1)
    confidence = r.probs.max(axis=1)
    mistakes = confident_mistakes(r.gold, r.probs)
    uncertain = np.argsort(confidence, kind="stable")[:SHOWN_EXAMPLES]
    words = np.array([len(t.split()) for t in r.texts])
    slices = []
    for low, high in LENGTHS:
        rows = (words >= low) & (words <= high)
        slices.append((f"{low}-{high} words" if high < 10**9 else f"over {low - 1} words", rows))
    for name, pattern in FEATURES.items():
        has = np.array([bool(pattern.search(t)) for t in r.texts])
        slices += [(f"with {name}", has), (f"without {name}", ~has)]
    table = "".join(
        f"<tr><th>{esc(name)}</th><td>{number(int(rows.sum()))}</td>"
        f"<td>{(predicted[rows] != r.gold[rows]).mean():.1%}</td></tr>"
        if rows.any()
        else f"<tr><th>{esc(name)}</th><td>0</td><td>–</td></tr>"
        for name, rows in slices
    )
    return (
        "<h2>Errors</h2><h3>Where</h3><table data-figure='error-slices'><tr><th>posts</th><th>count</th>"
        f"<th>error rate</th></tr>{table}</table>"
        f"<h3>The {len(mistakes)} most confident mistakes</h3>"
        + (
            "<p class='muted'>The words that drove each label are shaded: green towards it, red away from it "
            f"({esc(next(iter(r.explanations.values())).get('method', 'occlusion'))}).</p>"
            if r.explanations
            else ""
        )
        + f"{example_table(mistakes, r)}"
        f"<h3>The {len(uncertain)} least certain posts</h3>{example_table(uncertain, r)}"
    )


def data_section(r: ReportInput) -> str:
    """The class balance and what prepare_report.json says about the data: columns, label rule, rows
    dropped and why, duplicates with another label, encodings read and repaired, near-duplicates."""
    parts = []
    if r.class_counts:
        labels = list(r.labels) or sorted({c for counts in r.class_counts.values() for c in counts})
        head = "".join(f"<th>{esc(x)}</th>" for x in labels)
        rows = "".join(
            f"<tr><th>{esc(split)}</th>"
            + "".join(f"<td>{number(counts.get(x, 0))}</td>" for x in labels)
            + f"<td>{number(sum(counts.values()))}</td></tr>"
            for split, counts in r.class_counts.items()
        )
        parts.append(f"<h3>Class balance</h3><table><tr><th>split</th>{head}<th>all</th></tr>{rows}</table>")
    d = r.data or {}
    if d.get("columns"):
        used = "".join(
            f"<tr><td class='text'>{esc(c['path'])}</td><td>{esc(c['text'])}</td>"
            f"<td>{esc(c['label']) if c.get('label') else 'labelled by VADER'}</td></tr>"
            for c in d["columns"]
        )
        parts.append(
            f"<h3>Inputs</h3><table><tr><th>file</th><th>text column</th><th>label column</th></tr>{used}</table>"
        )
    if d.get("labels"):
        rule = d["labels"]
        shown = rule.get("rule") or ", ".join(f"{k} → {v}" for k, v in (rule.get("mapping") or {}).items())
        parts.append(f"<p>Labels ({esc(rule.get('source', ''))}): {esc(shown)}</p>")
    if "rows_dropped" in d:
        facts = [(f"dropped: {k.replace('_', ' ')}", v) for k, v in d["rows_dropped"].items()]
        facts.append(
            (
                "duplicates whose label differs from the first copy's (dropped)",
                d.get("duplicates_with_other_label"),
            )
        )
        facts.append(("lines that were not UTF-8, read as latin-1", d.get("rows_decoded_as_latin1")))
        repair = d.get("text_repair") or {}
        if repair:
            facts.append(
                (
                    f"posts whose encoding was repaired ({repair.get('by', 'ftfy')})",
                    repair.get("rows_repaired"),
                )
            )
            facts.append(
                (
                    "posts that still look garbled (bytes lost before the file was written)",
                    repair.get("rows_still_garbled"),
                )
            )
        table = "".join(f"<tr><th>{esc(k)}</th><td>{number(v)}</td></tr>" for k, v in facts if v is not None)
        parts.append(
            f"<h3>Rows</h3><p>{number(d.get('rows_read', 0))} read, {number(d.get('rows_kept', 0))} kept.</p>"
            f"<table data-figure='rows'><tr><th></th><th>rows</th></tr>{table}</table>"
        )  # fmt: skip
    near = d.get("near_duplicates") or {}
    if near.get("rows"):
        pairs = "".join(f"<tr><td class='text'>{esc(a)}</td><td class='text'>{esc(b)}</td></tr>"
                        for a, b in near.get("examples", []))  # fmt: skip
        parts.append(
            f"<h3>Near-duplicates</h3><p>{number(near['rows'])} rows are near-duplicates of another "
            f"({'dropped' if near.get('dropped') else 'kept'}).</p><table>{pairs}</table>"
        )
    histogram = d.get("post_words_histogram")
    if histogram:
        bars = [(label, float(count)) for label, count in histogram.items()]
        parts.append(figure(bar_chart(bars, "post-length", "posts"), "posts by number of words"))
    return "<h2>Data</h2>" + "".join(parts) if parts else ""


def rounds_section(r: ReportInput) -> str:
    """Labelling rounds, from prepare's report of people's labels of earlier selections
    (`labelling_rounds`): the validation macro-recall of each round's model against the training posts
    people had labelled for it, this run last, and per round the labels people gave and how often they
    agreed with the model's label."""
    rounds = [x for x in (r.data or {}).get("labelling_rounds") or [] if isinstance(x, dict)]
    if not rounds:
        return ""
    key_x, key_y = "people_labelled_training_posts", "val_macro_recall"
    models = [*rounds, r.this_run or {}]
    points = [(float(m[key_x]), float(m[key_y])) for m in models
              if isinstance(m.get(key_x), (int, float)) and isinstance(m.get(key_y), (int, float))]  # fmt: skip
    this = r.this_run or {}
    chart = figure(
        line_chart({"macro-recall": points}, "labelling-rounds", "val macro-recall",
                   x_label="posts labelled by people", values=True),
        "validation macro-recall of each round's model by the training posts people had labelled, "
        f"{this.get('run', 'this run')} (this run) last",
    )  # fmt: skip

    def share(x) -> str:
        if x.get("agreement") is None:
            return "<span class='muted'>no model label</span>"
        return (
            f"<span data-agreement='{x['agreement']:.4f}'>{x['agreement']:.1%}</span> "
            f"<span class='muted'>({number(x.get('agreed', 0))} of {number(x.get('compared_with_the_model', 0))})</span>"
        )

    def figure_cell(value, spec: str) -> str:
        return esc(number(value, spec)) if isinstance(value, (int, float)) else "<span class='muted'>–</span>"

    rows = "".join(
        f"<tr><td>{i}</td><td class='text'>{esc(x.get('run'))}</td><td>{number(x.get('labels_by_people', 0))}</td>"
        f"<td>{share(x)}</td><td>{figure_cell(x.get(key_y), '.4f')}</td><td>{figure_cell(x.get(key_x), 'g')}</td>"
        f"</tr>" + (f"<tr><td></td><td class='text note' colspan='5'>{esc(x['note'])}</td></tr>" if x.get("note") else "")
        for i, x in enumerate(rounds, 1)
    )  # fmt: skip
    table = (
        "<table data-figure='labelling-rounds-table'><tr><th>round</th><th>run</th><th>labels people gave</th>"
        "<th>agreement with people</th><th>its val macro-recall</th><th>its training posts labelled by people</th>"
        f"</tr>{rows}</table>"
    )
    return (
        "<h2>Labelling rounds</h2><p class='muted'>People labelled posts that earlier runs chose (<code>sentitune "
        "select</code>); the labelled files carry each post's run, the model's label and that run's figures.</p>"
        + chart
        + table
    )


def baseline_section(r: ReportInput) -> str:
    if not r.baseline or r.metrics is None:
        return ""
    b = r.baseline.get(r.split) or r.baseline.get("test") or {}
    if not b:
        return ""
    rows = "".join(
        f"<tr><th>{label}</th><td>{r.metrics[key]:.4f}</td><td>{b[key]:.4f}</td></tr>"
        for key, label in (
            ("accuracy", "accuracy"),
            ("macro_f1", "macro-F1"),
            ("macro_recall", "macro-recall"),
        )
        if key in b
    )
    return (
        f"<h2>Baseline</h2><table><tr><th></th><th>this model</th><th>TF-IDF baseline</th></tr>{rows}</table>"
    )


def settings_section(r: ReportInput) -> str:
    if not r.settings:
        return ""
    rows = "".join(
        f"<tr><th>{esc(k)}</th><td class='text'>{setting(v)}</td></tr>" for k, v in r.settings.items()
    )
    return f"<h2>Settings</h2><table>{rows}</table>"


def setting(value) -> str:
    """A setting as a person reads it: an unset option says so (its default applies), not None."""
    if value is None:
        return "<span class='muted'>not set (default)</span>"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return esc(", ".join(str(v) for v in value)) if value else "<span class='muted'>none</span>"
    if isinstance(value, (int, float)):
        return esc(number(value, "g"))
    return esc(value)


def render(r: ReportInput) -> str:
    notes = "".join(f"<p class='note'>{esc(n)}</p>" for n in r.notes)
    body = (
        (headline(r) if r.metrics else "")
        + curves(r)
        + calibration(r)
        + errors(r)
        + baseline_section(r)
        + rounds_section(r)
        + data_section(r)
        + settings_section(r)
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">'
        f"<title>{esc(r.title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{esc(r.title)}</h1>{notes}{body}</body></html>\n"
    )
