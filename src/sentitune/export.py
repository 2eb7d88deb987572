"""`sentitune export`: a run's classifier as ONNX (optionally int8), checked against PyTorch.

The exported graph takes `input_ids` and `attention_mask` (int64, dynamic batch and sequence axes)
and returns `logits`. Beside it, tokenizer.json is the run's tokenizer as the run folder saves it (the
normalisation in its normalizer, truncation at the run's max_length; also for a run saved before they
travelled with the model), so a runtime that tokenises with the tokenizers library scores posts as
written exactly as sentitune does. Every export
is followed by a parity check on real posts: the ONNX model must give the same labels and nearly the
same probabilities as the PyTorch model it came from, or nothing is written.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from sentitune.config import ExportConfig
from sentitune.errors import SentituneError, require_extra
from sentitune.layout import EXPORT_DIR, EXPORT_REPORT, ONNX_FILES, TOKENIZER, WEIGHTS
from sentitune.metrics import classification_metrics
from sentitune.runfolder import load_run, read_run_config, reading_tokenizer, trained_max_length
from sentitune.runtime import (
    LogitsOnly,
    infer_probs,
    onnx_probs,
    onnx_session,
    require_finite,
    require_onnxruntime,
)
from sentitune.splits import read_labelled
from sentitune.storage import WRITE_FAILURES, StagedOutput, exists, join, sha256_of, writing

log = logging.getLogger("sentitune")

# fp32 ONNX must reproduce PyTorch: every label, probabilities to 1e-4 (float rounding only).
FP32_MAX_PROB_DIFF = 1e-4
# int8 rounds the weights: a few posts near a class boundary may flip, the quality may not move.
INT8_MIN_AGREEMENT = 0.95
INT8_MAX_MACRO_F1_DROP = 0.01  # 1 point of macro-F1 on the labelled parity sample


def export_onnx(cfg: ExportConfig) -> dict:
    """Export, quantize if asked, check parity, then write the ONNX folder; returns the report."""
    ort = require_onnxruntime()
    output_dir = cfg.output_dir or join(cfg.run_dir, EXPORT_DIR)
    out = StagedOutput(
        output_dir,
        occupied_by=[EXPORT_REPORT, *ONNX_FILES.values()],
        marker=EXPORT_REPORT,
        what="an ONNX export",
        overwrite=cfg.overwrite,
        option="--output-dir",
        command="export",
        replaces=[
            EXPORT_REPORT,
            TOKENIZER,
            *ONNX_FILES.values(),
        ],  # an earlier int8 model must not outlive it
    )
    with out:
        classifier = load_run(cfg.run_dir)
        sample = parity_sample(cfg, classifier.labels)
        # The reference first: a model that scores NaN fails here, before a minute of exporting.
        max_length = trained_max_length(cfg.run_dir)
        tokens = classifier.encode(sample.texts, max_length)
        reference = require_finite(
            infer_probs(classifier.model, tokens, 64, torch.device("cpu")), cfg.run_dir
        )
        started = time.perf_counter()
        fp32_path = out.path(ONNX_FILES["fp32"])
        export_graph(classifier, fp32_path)
        report = {
            "run_dir": cfg.run_dir,
            "format": "onnx",
            "inputs": ["input_ids", "attention_mask"],
            "outputs": ["logits"],
            # the graph reads tokens: tokenizer.json beside it rewrites and cuts posts as the run reads them
            "normalize": classifier.normalization.to_config(),
            "max_length": max_length,
            "tokenizer": TOKENIZER,
            "export_s": round(time.perf_counter() - started, 2),
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "models": {},
            # what the export belongs to: the run's weights, and each file as written (checked on load)
            "weights_sha256": sha256_of(os.path.join(classifier.local_dir, WEIGHTS)),
        }
        variants = {"fp32": fp32_path}
        if cfg.quantize == "int8":
            variants["int8"] = out.path(ONNX_FILES["int8"])
            quantize_int8(fp32_path, variants["int8"])

        for name, path in variants.items():
            session = onnx_session(str(path))
            probs = require_finite(onnx_probs(session, tokens, 64), f"the {name} export of {cfg.run_dir}")
            parity = compare(reference, probs, sample.labels, classifier.labels)
            parity["file"] = ONNX_FILES[name]
            parity["bytes"] = os.path.getsize(path)
            parity["sha256"] = sha256_of(str(path))
            report["models"][name] = parity
            log.info(
                f"{name}: {ONNX_FILES[name]} {parity['bytes'] / 2**20:.1f} MiB; on {parity['examples']} "
                f"posts labels agree {parity['label_agreement']:.2%}, max |Δp| {parity['max_prob_diff']:.1e}"
                + (
                    f", macro-F1 {parity['macro_f1']:.4f} vs PyTorch {parity['reference_macro_f1']:.4f}"
                    if "macro_f1" in parity
                    else ""
                )
            )
        report["parity_data"] = sample.path
        failures = parity_failures(report["models"])
        if failures:
            raise SentituneError(
                "the ONNX model does not match the PyTorch model: "
                + "; ".join(failures)
                + "; nothing written"
            )
        reading = reading_tokenizer(classifier.tokenizer, classifier.normalization, max_length)
        out.path(TOKENIZER).write_text(json.dumps(reading, ensure_ascii=False), encoding="utf-8")
        out.path(EXPORT_REPORT).write_text(json.dumps(report, indent=2) + "\n")
        out.commit()
    report["output_dir"] = output_dir
    return report


def export_graph(classifier, path) -> None:
    for module in ("onnx", "onnxscript"):
        require_extra(module, "export", "ONNX export")
    # Two posts of different lengths, so the traced graph sees padding.
    example = classifier.tokenizer(
        ["an example post", "a longer example post with a few more words in it"],
        padding=True,
        return_tensors="pt",
    )
    wrapper = LogitsOnly(classifier.model.to("cpu")).eval()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with writing(path):  # a full disk in the writer's own exception type is still the OSError it is
            torch.onnx.export(
                wrapper,
                (example["input_ids"], example["attention_mask"]),
                str(path),
                input_names=["input_ids", "attention_mask"],
                output_names=["logits"],
                dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except OSError as exc:
        if exc.errno in WRITE_FAILURES:
            raise  # a full or read-only disk: the CLI's one line about writing
        raise SentituneError(f"ONNX export of {classifier.source} failed: OSError: {exc}") from exc
    except Exception as exc:
        raise SentituneError(
            f"ONNX export of {classifier.source} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from exc
    finally:
        onnx_logger.setLevel(level)


def quantize_int8(source, dest) -> None:
    """Dynamic int8 quantisation: int8 weights, activations quantised per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # onnxruntime logs one INFO line per unquantised tensor on the root logger
    try:
        # Per-channel: one scale per output column follows the weights more closely than one per tensor.
        quantize_dynamic(str(source), str(dest), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)


@dataclass
class ParitySample:
    path: str
    texts: list[str]
    labels: np.ndarray | None


def parity_sample(cfg: ExportConfig, classes: tuple[str, ...]) -> ParitySample:
    """The first `parity_examples` posts of --parity-data, else of the run's validation file."""
    path = cfg.parity_data
    if path is None:
        try:
            data = read_run_config(cfg.run_dir).get("data", {})
        except SentituneError:
            data = {}
        path = next((data[n]["path"] for n in ("val", "test", "train") if n in data), None)
        if path is None or not exists(path):
            raise SentituneError(
                f"no posts to check the export on: the run's data ({path or 'not recorded'}) is not "
                "readable here; pass --parity-data FILE (a labelled CSV/JSONL/Parquet file)"
            )
    split = read_labelled(path, cfg.text_column, cfg.label_column, classes=classes)
    n = min(cfg.parity_examples, len(split))
    if n == 0:
        raise SentituneError(
            f"{path} holds no labelled posts to check the export on; pass --parity-data FILE"
        )
    return ParitySample(path, list(split.texts[:n]), np.asarray(split.labels[:n]))


def compare(reference: np.ndarray, probs: np.ndarray, labels, names) -> dict:
    agree = reference.argmax(axis=1) == probs.argmax(axis=1)
    diff = np.abs(reference - probs)
    result = {
        "examples": len(reference),
        "label_agreement": round(float(agree.mean()), 6),
        "labels_changed": int((~agree).sum()),
        "max_prob_diff": float(diff.max()),
        "mean_prob_diff": float(diff.mean()),
    }
    if labels is not None:
        result["macro_f1"] = round(classification_metrics(labels, probs, names)["macro_f1"], 6)
        result["reference_macro_f1"] = round(classification_metrics(labels, reference, names)["macro_f1"], 6)
        result["accuracy"] = round(float((probs.argmax(axis=1) == labels).mean()), 6)
        result["reference_accuracy"] = round(float((reference.argmax(axis=1) == labels).mean()), 6)
    return result


def parity_failures(models: dict) -> list[str]:
    problems = []
    fp32 = models["fp32"]
    if fp32["labels_changed"] or fp32["max_prob_diff"] > FP32_MAX_PROB_DIFF:
        problems.append(
            f"fp32 changed {fp32['labels_changed']} labels, max |Δp| {fp32['max_prob_diff']:.1e} "
            f"(allowed: 0 and {FP32_MAX_PROB_DIFF:.0e})"
        )
    int8 = models.get("int8")
    if int8 and int8["label_agreement"] < INT8_MIN_AGREEMENT:
        problems.append(
            f"int8 labels agree on {int8['label_agreement']:.2%} of posts (allowed: ≥ {INT8_MIN_AGREEMENT:.0%})"
        )
    if int8 and "macro_f1" in int8 and int8["reference_macro_f1"] - int8["macro_f1"] > INT8_MAX_MACRO_F1_DROP:
        problems.append(
            f"int8 macro-F1 {int8['macro_f1']:.4f} vs PyTorch {int8['reference_macro_f1']:.4f} "
            f"(allowed drop: {INT8_MAX_MACRO_F1_DROP:.2f})"
        )
    return problems
