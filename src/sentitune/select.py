"""`sentitune select`: the posts whose labels would teach a run the most, for people to label.

The pool is read, cleaned as prepare cleans posts, and cut to one post per near-duplicate group (same text
after case, link, mention and space normalisation), leaving out every post already labelled (--labelled).
The run scores what is left with its calibrated probabilities. The picks are spread over the predicted
classes (in proportion to how often the run predicts each in the pool, at least one each; with
--class-shares equal, an equal share each, what a class cannot fill going to the others); within a class the
CANDIDATES_PER_PICK x share most uncertain posts (margin: smallest gap between the two likeliest classes;
entropy: the most spread scores) are clustered on the run's own post embeddings (what its classifier
reads), and each cluster gives its most uncertain post, so the picks are not variations of one post.
`random` is a plain seeded sample, the baseline the others are measured against
(benchmarks/active_learning.py).

Every selected post carries where it came from (labelstudio.ROUND_FIELDS, as CSV columns or task data
fields): the model's label, the run's name, its validation macro-recall and how many of its training
posts people labelled, so the labelled files say, round by round, how the model that chose them did.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from sentitune import __version__
from sentitune.batching import sorted_batches
from sentitune.config import SelectConfig
from sentitune.errors import SentituneError
from sentitune.labelstudio import (
    MODEL_LABEL,
    MODEL_PEOPLE,
    MODEL_RECALL,
    MODEL_RUN,
    label_config,
    normalise_for_near_duplicates,
    task_texts,
    tasks,
    text_hashes,
)
from sentitune.layout import METRICS, RUN_CONFIG
from sentitune.model import output_layer
from sentitune.scoring import Predictor
from sentitune.storage import StagedOutput, exists, expand, join, open_input
from sentitune.tables import pick_text_column, read_chunks

log = logging.getLogger("sentitune")

SELECTED = "selected.csv"
TASKS = "tasks.json"
LABEL_CONFIG = "label_config.xml"
SUMMARY = "selection.json"  # written last: its presence means the folder is complete
CANDIDATES_PER_PICK = 5  # a class's k picks come from its 5k most uncertain posts, clustered into k
KMEANS_ITERATIONS = 25
_CR = re.compile(r"\r\n?")


@dataclass
class SelectResult:
    output_dir: str
    summary: dict


def select(cfg: SelectConfig) -> SelectResult:
    """Pick `cfg.n` posts of `cfg.pool` for people to label and write them to `cfg.output_dir`."""
    pool, counts = read_pool(expand(cfg.pool), cfg.text_column)
    seen = labelled_keys(expand(cfg.labelled), cfg.text_column)
    already = np.isin(pool["key"].to_numpy(), seen)
    counts["already_labelled"] = int(already.sum())
    pool = pool[~already].reset_index(drop=True)
    if pool.empty:
        raise SentituneError(
            f"no posts left to select: the pool holds {counts['posts_read']} posts, "
            f"{counts['already_labelled']} of them already labelled; pass a --pool with unlabelled posts"
        )
    if len(pool) < cfg.n:
        log.warning(
            "the pool holds %d new posts, fewer than --n %d: all of them are selected", len(pool), cfg.n
        )
    names = [SELECTED] if cfg.format == "csv" else [TASKS, LABEL_CONFIG]
    with StagedOutput(
        cfg.output_dir,
        occupied_by=[SELECTED, TASKS, LABEL_CONFIG, SUMMARY],
        marker=SUMMARY,
        what="selected posts",
        overwrite=cfg.overwrite,
        option="--output-dir",
        command="select",
        replaces=[SELECTED, TASKS, LABEL_CONFIG, SUMMARY],
    ) as out:
        predictor = Predictor(
            cfg.run_dir, device=cfg.device, batch_size=cfg.batch_size, precision=cfg.precision
        )
        texts = pool["text"].tolist()
        probs = predictor.probabilities(texts)
        chosen = choose(
            predictor, texts, probs, min(cfg.n, len(pool)), cfg.strategy, cfg.seed, cfg.class_shares
        )
        labels = list(predictor.labels)
        picked = [texts[i] for i in chosen]
        carried = run_figures(str(cfg.run_dir))
        if cfg.format == "csv":
            frame = pd.DataFrame(
                {"text": picked, MODEL_LABEL: [labels[i] for i in probs[chosen].argmax(axis=1)]}
            )
            for j, name in enumerate(labels):
                frame[f"score_{name}"] = np.round(probs[chosen, j], 6)
            for key, value in carried.items():
                frame[key] = "" if value is None else value
            frame["label"] = ""
            frame.to_csv(out.path(SELECTED), index=False, lineterminator="\n")
        else:
            version = f"sentitune {__version__}: {carried[MODEL_RUN]}"
            made = tasks(picked, labels, probs[chosen], version, carried)
            out.path(TASKS).write_text(
                json.dumps(made, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
            out.path(LABEL_CONFIG).write_text(label_config(labels), encoding="utf-8")
        predicted = probs[chosen].argmax(axis=1)
        summary = {
            "sentitune_version": __version__,
            "run": str(cfg.run_dir),
            "strategy": cfg.strategy,
            "class_shares": cfg.class_shares,
            "seed": cfg.seed,
            **counts,
            "posts_left": len(pool),
            "selected": len(chosen),
            "selected_by_predicted_class": {
                name: int((predicted == j).sum()) for j, name in enumerate(labels)
            },
            "files": names,
            "carried": carried,
        }
        out.path(SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
        out.commit()
    return SelectResult(cfg.output_dir, summary)


# ----------------------------------------------------------------------------- the run's own figures


def run_figures(run_dir: str) -> dict:
    """What every selected post carries about the run that chose it: its name (the folder's), its
    validation macro-recall (metrics.json) and how many of its training posts people labelled
    (run_config.json). A figure the folder does not give (a hub model, a run saved by an older version) is
    None, with a warning."""
    name = os.path.basename(str(run_dir).rstrip("/")) or str(run_dir)
    metrics, run_config = _json_in(run_dir, METRICS), _json_in(run_dir, RUN_CONFIG)
    recall = ((metrics or {}).get("val") or {}).get("macro_recall")
    people = (((run_config or {}).get("data") or {}).get("train") or {}).get("people_labelled")
    found = {
        MODEL_RUN: name,
        MODEL_RECALL: round(float(recall), 6) if isinstance(recall, (int, float)) else None,
        MODEL_PEOPLE: people if isinstance(people, int) else None,
    }
    missing = [key for key, value in found.items() if value is None]
    if missing and metrics is not None:
        log.warning("%s does not record %s: left empty in the selection", run_dir, " or ".join(missing))
    for warning in (metrics or {}).get("warnings") or []:  # e.g. a model that learnt only the class balance
        log.warning(
            "%s ended its training with a warning, so its picks may teach little: %s", run_dir, warning
        )
    return found


def _json_in(folder: str, name: str) -> dict | None:
    path = join(folder, name)
    try:
        if not exists(path):
            return None
        with open_input(path, "rb") as f:
            found = json.load(f)
    except (SentituneError, ValueError):
        return None
    return found if isinstance(found, dict) else None


# ----------------------------------------------------------------------------- the pool


def read_pool(paths: list[str], text_column: str | None) -> tuple[pd.DataFrame, dict]:
    """The pool's posts (`text`, near-duplicate `key`), one per near-duplicate group, in reading order."""
    parts, read, empty = [], 0, 0
    for path in paths:
        column = None
        for df in read_chunks(path, 100_000):
            column = column or pick_text_column(df, text_column, path)
            texts = clean(df[column])
            read += len(texts)
            empty += int((texts == "").sum())
            parts.append(texts[texts != ""])
    texts = pd.concat(parts, ignore_index=True) if parts else pd.Series([], dtype="string")
    if texts.empty:
        raise SentituneError(
            f"no posts to select from: {', '.join(paths)} hold{'s' if len(paths) == 1 else ''} {read} rows, "
            f"{empty} of them empty; pass files of posts with --pool"
        )
    keys = text_hashes(normalise_for_near_duplicates(texts.astype(str)))
    exact = text_hashes(texts.astype(str))
    first = np.unique(keys, return_index=True)[1]
    first.sort()
    counts = {
        "posts_read": read,
        "empty": empty,
        "duplicates": int(len(texts) - len(np.unique(exact))),
        "near_duplicates": int(len(np.unique(exact)) - len(first)),
    }
    pool = pd.DataFrame({"text": texts.iloc[first].astype(str).to_numpy(), "key": keys[first]})
    return pool, counts


def clean(texts: pd.Series) -> pd.Series:
    """Posts as prepare reads them: line breaks as LF, surrounding space stripped, missing as empty."""
    return texts.astype("string").str.replace(_CR, "\n", regex=True).str.strip().fillna("")


def labelled_keys(paths: list[str], text_column: str | None) -> np.ndarray:
    """The near-duplicate keys of every post in `paths`: tables with a text column, Label Studio exports,
    or the tasks select wrote (labelled or not: they are with people already)."""
    keys = []
    for path in paths:
        texts = task_texts(path, text_column)
        if texts is None:  # a table (Label Studio's CSV export is one too)
            column, chunks = None, []
            for df in read_chunks(path, 100_000):
                column = column or pick_text_column(df, text_column, path)
                chunks.append(df[column])
            texts = pd.concat(chunks, ignore_index=True) if chunks else pd.Series([], dtype="string")
        texts = clean(texts)
        keys.append(text_hashes(normalise_for_near_duplicates(texts[texts != ""].astype(str))))
    return np.concatenate(keys) if keys else np.zeros(0, np.uint64)


# ----------------------------------------------------------------------------- choosing


def uncertainty(probs: np.ndarray, strategy: str) -> np.ndarray:
    """Higher is more uncertain: 1 - (top - second) for margin, the entropy for entropy."""
    if strategy == "entropy":
        return -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(axis=1)
    top2 = np.sort(probs, axis=1)[:, -2:]
    return 1 - (top2[:, 1] - top2[:, 0])


def choose(
    predictor: Predictor,
    texts: list[str],
    probs: np.ndarray,
    n: int,
    strategy: str,
    seed: int,
    class_shares: str = "pool",
) -> np.ndarray:
    """Row numbers of the `n` posts to label, most uncertain first (random: in sampled order)."""
    rng = np.random.default_rng(seed)
    if strategy == "random":
        return rng.choice(len(texts), size=n, replace=False)
    score = uncertainty(probs, strategy)
    predicted = probs.argmax(axis=1)
    available = np.bincount(predicted, minlength=probs.shape[1])
    quotas = class_quotas(available, n) if class_shares == "equal" else pool_quotas(available, n)
    candidates = {}
    for c, quota in enumerate(quotas):
        if quota:
            mine = np.flatnonzero(predicted == c)
            candidates[c] = mine[np.argsort(-score[mine], kind="stable")[: CANDIDATES_PER_PICK * quota]]
    wanted = np.concatenate(list(candidates.values()))
    features = dict(zip(wanted.tolist(), embeddings(predictor, [texts[i] for i in wanted]), strict=True))
    chosen = []
    for c, rows in candidates.items():
        if len(rows) <= quotas[c]:
            chosen.extend(rows.tolist())
            continue
        groups = kmeans(np.stack([features[i] for i in rows.tolist()]), quotas[c], rng)
        for g in range(quotas[c]):
            members = rows[groups == g]
            if len(members):
                chosen.append(int(members[np.argmax(score[members])]))
    if len(chosen) < n:  # empty clusters: the most uncertain candidates not yet chosen fill in
        rest = np.setdiff1d(wanted, chosen)
        chosen.extend(rest[np.argsort(-score[rest], kind="stable")][: n - len(chosen)].tolist())
    chosen = np.asarray(chosen)
    return chosen[np.argsort(-score[chosen], kind="stable")]


def pool_quotas(available: np.ndarray, n: int) -> list[int]:
    """`n` shared in proportion to `available` (largest remainders), at least one for a class that has any."""
    exact = available / max(available.sum(), 1) * n
    quotas = np.minimum(np.floor(exact).astype(int), available)
    quotas[(quotas == 0) & (available > 0) & (n >= (available > 0).sum())] = 1
    for c in np.argsort(-(exact - np.floor(exact)), kind="stable"):
        if quotas.sum() >= n:
            break
        if quotas[c] < available[c]:
            quotas[c] += 1
    while quotas.sum() > n:  # the ones given to empty-handed classes, taken back from the largest
        quotas[int(np.argmax(quotas))] -= 1
    return quotas.tolist()


def class_quotas(available: np.ndarray, n: int) -> list[int]:
    """An equal share of `n` per class, capped by what each class has; the rest to the classes with more."""
    quotas = np.zeros(len(available), int)
    left = n
    while left > 0:
        open_ = np.flatnonzero(quotas < available)
        if not len(open_):
            break
        share = max(left // len(open_), 1)
        for c in open_:
            take = min(share, available[c] - quotas[c], left)
            quotas[c] += take
            left -= take
            if left == 0:
                break
    return quotas.tolist()


@torch.inference_mode()
def embeddings(predictor: Predictor, texts: list[str]) -> np.ndarray:
    """What the run's classifier layer reads for each post (its pooled, L2-normalised embedding)."""
    tokens = predictor.classifier.encode(texts, predictor.max_length)
    layer = output_layer(predictor.runner, len(predictor.classifier.labels))
    seen: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    out = np.zeros((len(texts), layer.in_features), np.float32)
    was_training = predictor.runner.training
    predictor.runner.eval()
    try:
        for rows in sorted_batches(tokens.lengths, predictor.batch_size):
            ids, mask = tokens.batch(rows)
            with predictor.precision.autocast(predictor.device):
                predictor.runner(input_ids=ids.to(predictor.device), attention_mask=mask.to(predictor.device))
            out[rows] = seen.pop().float().cpu().numpy()
    finally:
        hook.remove()
        predictor.runner.train(was_training)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Cluster ids of `points` by k-means (k-means++ seeding, Lloyd's iterations), seeded by `rng`."""
    centres = [points[rng.integers(len(points))]]
    distance = ((points - centres[0]) ** 2).sum(axis=1)  # to the nearest centre so far
    for _ in range(1, k):
        total = distance.sum()
        pick = rng.choice(len(points), p=distance / total) if total > 0 else rng.integers(len(points))
        centres.append(points[pick])
        distance = np.minimum(distance, ((points - points[pick]) ** 2).sum(axis=1))
    centres = np.stack(centres)
    groups = np.full(len(points), -1)
    for _ in range(KMEANS_ITERATIONS):
        distance = (centres**2).sum(axis=1)[None, :] - 2 * points @ centres.T  # + |p|^2, the same per row
        new = distance.argmin(axis=1)
        if (new == groups).all():
            break
        groups = new
        for g in range(k):
            if (groups == g).any():
                centres[g] = points[groups == g].mean(axis=0)
    return groups
