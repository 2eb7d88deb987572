"""The model card (README.md) of a run folder: what the model is, what it was trained on, how good it
is, and its limits, under the YAML metadata a model hub or registry reads (huggingface_hub's ModelCard:
licence, base model, task, language, and a model-index with the validation and test results).

The card is made from what the run folder records (run_config.json and metrics.json) and what `prepare`
recorded about the data (splits.Prepared)."""

from __future__ import annotations

import os

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from sentitune import __version__
from sentitune.builtin import EMBEDDED_ENCODERS, EMBEDDED_PREFIX
from sentitune.layout import CONFUSION, CURVES, RUN_CONFIG
from sentitune.model import is_hub_id
from sentitune.normalize import APPLIED_BY, NOT_APPLIED_BY
from sentitune.splits import Prepared


def how_labelled(prepared: Prepared) -> str:
    """How the training labels were made, from prepare's report when the data came from prepare."""
    source = prepared.label_source
    if source == "category":
        mapping = prepared.report["labels"].get("mapping", {})
        return (
            "class labels given with the data ("
            + ", ".join(f"'{k}' -> {v}" for k, v in mapping.items())
            + ")"
        )
    if source:
        return f"{source} scores mapped to classes by {prepared.report['labels'].get('rule')}"
    return "the label column of the training file"


def labelling_rounds_text(prepared: Prepared) -> list[str]:
    """One line on the labelling rounds whose labels the data holds (prepare's `labelling_rounds`)."""
    rounds = [x for x in (prepared.report or {}).get("labelling_rounds") or [] if isinstance(x, dict)]
    if not rounds:
        return []
    shown = [
        f"{x.get('run')} ({x.get('labels_by_people')} labels"
        + (f", {x['agreement']:.0%} agreeing with its model" if isinstance(x.get("agreement"), float) else "")
        + ")"
        for x in rounds
    ]
    return [f"Labelling rounds (posts earlier runs chose, labelled by people): {', '.join(shown)}.", ""]


# metrics.json key -> (model-index metric type, its config, the name shown)
INDEXED_METRICS = {
    "accuracy": ("accuracy", None, "accuracy"),
    "macro_f1": ("f1", "macro", "macro-F1"),
    "macro_recall": ("recall", "macro", "macro-recall"),
}
SPLIT_NAMES = {"val": "validation", "test": "test"}


def base_model_of(source: str) -> tuple[str | None, str | None]:
    """(hub id, licence) of the model the run started from, where known: the embedded one, or a hub id."""
    if source.startswith(EMBEDDED_PREFIX):
        encoder = EMBEDDED_ENCODERS.get(source.removeprefix(EMBEDDED_PREFIX).lower())
        return (encoder.hub_id, encoder.licence) if encoder else (None, None)
    return (source, None) if is_hub_id(source) else (None, None)


def card_metadata(run_config: dict, metrics: dict) -> ModelCardData:
    """The card's YAML: what a hub lists the model under, and its results with their 95 % intervals."""
    cfg, model_info = run_config["train"], run_config["model"]
    base, licence = base_model_of(model_info["source"])
    data = str(cfg["data"] or cfg["training_file"] or "training data").rstrip("/")
    dataset = os.path.basename(data) if cfg["data"] else os.path.basename(os.path.dirname(data)) or data
    results = []
    for split in ("val", "test"):
        for key, (kind, config, shown) in INDEXED_METRICS.items():
            if split not in metrics or key not in metrics[split]:
                continue
            low, high = metrics[split].get("intervals_95", {}).get(key, [None, None])
            interval = f" (95 % interval {low:.4f}-{high:.4f})" if low is not None else ""
            results.append(
                EvalResult(
                    task_type="text-classification",
                    task_name="Sentiment analysis",
                    dataset_type="local",
                    dataset_name=dataset,
                    dataset_split=SPLIT_NAMES[split],
                    metric_type=kind,
                    metric_config=config,
                    metric_value=round(float(metrics[split][key]), 4),
                    metric_name=f"{SPLIT_NAMES[split]} {shown}{interval}",
                )
            )
    return ModelCardData(
        model_name=f"sentitune-{os.path.basename(str(cfg['job_dir'] or 'run').rstrip('/')) or 'run'}",
        base_model=base,
        license=licence,
        language="en",
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["sentitune", "sentiment-analysis", "text-classification", f"pooling-{model_info['pooling']}"],
        metrics=["accuracy", "f1", "recall"],
        eval_results=results or None,
    )


def model_card(run_config: dict, metrics: dict, prepared: Prepared) -> str:
    """README.md of a run folder from its run_config.json and metrics.json and the data it was trained on:
    the metadata as YAML front matter, then the card for people."""
    yaml = card_metadata(run_config, metrics).to_yaml()
    return str(ModelCard(f"---\n{yaml}\n---\n\n{card_text(run_config, metrics, prepared)}"))


def reading_text(found: dict | None, max_length: int, pooling: str) -> list[str]:
    """How the model reads a post, and which loaders read it so: the normalisation (and the posts that keep
    [UNK] tokens) and the cut at max_length."""
    if not found or found.get("scheme", "none") == "none":
        lines = ["Posts are read as written (`--normalize none`)."]
    else:
        how = (
            f"Normalization('{found['scheme']}'"
            + (", split_hashtags=True" if found.get("split_hashtags") else "")
            + ")"
        )
        lines = [
            f"Posts are normalised (`--normalize {found['scheme']}`"
            + (", `--split-hashtags`" if found.get("split_hashtags") else "")
            + "): emoji and emoticons become words, mentions `@user`, links `http`, HTML entities are unescaped "
            "and elongations cut. The rewrite is the first part of tokenizer.json's normalizer, so it is applied "
            f"to posts as written by sentitune and by {APPLIED_BY}. It is not applied by "
            + NOT_APPLIED_BY.replace(
                "sentitune.normalize.Normalization(...).apply", f"`sentitune.normalize.{how}.apply`"
            )
            + ".",
        ]
    counts = (found or {}).get("posts_with_unknown_tokens", {})
    if counts and found.get("scheme", "none") != "none":
        lines += [
            "",
            "| split | posts | with [UNK] tokens as written | after normalisation |",
            "|---|---|---|---|",
            *(f"| {n} | {c['posts']} | {c['as_written']} | {c['normalized']} |" for n, c in counts.items()),
        ]
    lines += ["", truncation_text(max_length, pooling)]
    return lines


def truncation_text(max_length: int, pooling: str) -> str:
    """Where a post is cut, and what a transformers user must do for it (config.json says the same)."""
    where = (
        f"Posts are cut at {max_length} tokens, as in training: tokenizer.json truncates there, "
        f"tokenizer_config.json's model_max_length is {max_length}, and the folder's tokenizer loaded with "
        "`trust_remote_code=True` (pipeline(), AutoTokenizer) cuts there unless told otherwise. "
    )
    if pooling == "mean":
        return where + (
            "modeling_sentitune.py also cuts a longer input the same way, so the model scores a long post as "
            "sentitune does whichever tokenizer call made its input."
        )
    return where + (
        "Loaded without it, transformers truncates only when asked: pass `truncation=True` (to pipeline() or "
        f"the tokenizer); without it a post over {max_length} tokens scores otherwise and one over the model's "
        "positions fails."
    )


def card_text(run_config: dict, metrics: dict, prepared: Prepared) -> str:
    """README.md of a run folder: what the model is, what it was trained on, how good it is, its limits."""
    cfg, model_info = run_config["train"], run_config["model"]
    env, training = run_config["environment"], metrics.get("training", {})
    classes = run_config["labels"]
    lines = [
        f"# Sentiment classifier: {model_info['source']}, fine-tuned with sentitune {__version__}",
        "",
        f'Classes: {", ".join(classes)}. Load it with `sentitune predict RUN_DIR "text"`, `sentitune serve RUN_DIR`, '
        + (
            'or `pipeline("text-classification", model=RUN_DIR, trust_remote_code=True)`: its head reads the '
            "mean of the token states (`--pooling mean`), which modeling_sentitune.py in this folder implements."
            if model_info["pooling"] == "mean"
            else 'or `pipeline("text-classification", model=RUN_DIR, trust_remote_code=True)` (its tokenizer '
            "cuts posts where the run did; without the folder's code pass `truncation=True`)."
        )
        + " Give them posts as written: the folder's tokenizer rewrites them as the model was trained to read them.",
        "",
        "## Data",
        "",
        f"Labels: {how_labelled(prepared)}.",
        "",
        *labelling_rounds_text(prepared),
        "| split | file | posts | " + " | ".join(classes) + " |",
        "|---|---|---|" + "---|" * len(classes),
    ]
    for name, split in run_config["data"].items():
        shares = " | ".join(
            f"{c} ({c / max(split['examples'], 1):.0%})" for c in split["class_counts"].values()
        )
        lines.append(f"| {name} | `{split['path']}` | {split['examples']} | {shares} |")
    lines += ["", *reading_text(metrics.get("normalization"), cfg["max_length"], model_info["pooling"])]
    lines += ["", "## Model and training"]
    lines += [
        "",
        f"{model_info['type']} encoder, {model_info['layers']} layers x {model_info['hidden_size']}, "
        f"{model_info['parameters'] / 1e6:.1f} M parameters ({model_info['trainable_parameters'] / 1e6:.1f} M "
        f"trained); at most {cfg['max_length']} tokens per post. {training.get('steps')} steps of batch "
        f"{cfg['batch_size']} ({training.get('epochs_run')} epochs), AdamW at learning rate "
        f"{cfg['learning_rate']}, seed {cfg['seed']}; {training.get('wall_s')} s on {env['device']} "
        f"({env['precision']}, "
        f"{env['threads']} threads), {training.get('examples_per_s')} examples/s. "
        f"Best validation macro-F1 at step {training.get('best_step')}. "
        + (
            f"Targets made from the posts' scores, not only their classes (`--soft-targets {cfg['soft_targets']}`). "
            if cfg["soft_targets"]
            else ""
        )
        + f"Full settings: `{RUN_CONFIG}`.",
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
            "| | " + " | ".join(classes) + " |",
            "|---|" + "---|" * len(classes),
        ]
        lines += [f"| {classes[i]} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(cm)]
        lines += ["", f"![confusion matrix]({CONFUSION}) ![training curves]({CURVES})"]
    unknown = metrics.get("test", metrics.get("val", {})).get("posts_with_unknown_tokens")
    examples = metrics.get("test", metrics.get("val", {})).get("examples")
    lines += [
        "",
        "## Known limits",
        "",
        *(f"- **Warning**: {w}." for w in metrics.get("warnings", [])),
        "- Trained on short English social-media posts: other languages, domains and long texts are outside "
        f"what it has seen; posts over {cfg['max_length']} tokens are cut.",
        "- Sarcasm, irony and negation spread over a sentence are often read at face value.",
        "- Emoji and characters missing from the uncased WordPiece vocabulary become [UNK]"
        + (f" ({unknown} of {examples} evaluated posts hold at least one)" if unknown is not None else "")
        + ", so their sentiment is lost.",
        "- The labels carry the biases of their source (annotators, or a lexicon such as VADER); the scores "
        "are not calibrated probabilities outside this data.",
        "",
    ]
    return "\n".join(lines)
