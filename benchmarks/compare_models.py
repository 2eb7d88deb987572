"""A sentitune run beside a classifier from elsewhere, in one `sentitune evaluate` table.

The other model is what a careful user gets without sentitune: the same embedded MiniLM, cut to the
same first 3 layers as the demo (`--preset fast`), fine-tuned by the Hugging Face Trainer for one epoch on
the same training split with the same batch size, learning rate, warm-up and weight decay (bf16 where the
CPU has it, length-grouped batches), saved as a plain Hugging Face folder whose labels are LABEL_0..2.
`sentitune evaluate RUN THAT_FOLDER --data test.csv` reads those labels onto negative/neutral/positive
and prints the comparison; the JSON holds the table's figures and both models' training times.

  python benchmarks/compare_models.py --run demo/run --data demo/data     (after `make demo`)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from speedlib import bench_main, log, run_child

from sentitune.labels import LABELS
from sentitune.runtime import cpu_has_native_bf16


def train_with_trainer(data: Path, out: Path, settings: dict) -> dict:
    """Fine-tune the embedded model with the Trainer as the demo's run was fine-tuned; save it to `out`."""
    import pandas as pd
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from sentitune.builtin import default_model

    folder = default_model()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    frame = pd.read_csv(data / "train.csv")
    encoded = tokenizer(list(frame["text"]), truncation=True, max_length=settings["max_length"])
    labels = [LABELS.index(x) for x in frame["label"]]
    train = [
        {"input_ids": ids, "attention_mask": mask, "labels": label}
        for ids, mask, label in zip(encoded["input_ids"], encoded["attention_mask"], labels, strict=True)
    ]
    config = AutoConfig.from_pretrained(
        folder, num_labels=len(LABELS), num_hidden_layers=settings["keep_layers"]
    )
    torch.manual_seed(settings["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(folder, config=config)
    args = dict(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"],
        num_train_epochs=settings["epochs"],
        warmup_steps=settings["warmup_ratio"],  # a float below 1 is a ratio of the steps
        weight_decay=settings["weight_decay"],
        train_sampling_strategy="group_by_length",
        save_strategy="no",
        report_to="none",
        logging_steps=10**9,
        seed=settings["seed"],
        disable_tqdm=True,
    )
    if cpu_has_native_bf16():
        args.update(bf16=True, use_cpu=True)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**args),
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    model.save_pretrained(out, safe_serialization=True)  # labels stay LABEL_0..2, as many hub models
    tokenizer.save_pretrained(out)
    return {"train_wall_s": round(wall, 1), "bf16": bool(args.get("bf16")), "examples": len(train)}


def run(args) -> dict:
    run_dir, data = Path(args.run), Path(args.data)
    settings = json.loads((run_dir / "run_config.json").read_text())["train"]
    metrics = json.loads((run_dir / "metrics.json").read_text())["training"]
    work = Path(tempfile.mkdtemp(prefix="compare-"))
    other = work / "trainer-minilm"
    log(f"fine-tuning the embedded model with the Hugging Face Trainer into {other}")
    trainer = train_with_trainer(data, other, {**settings, "keep_layers": settings["keep_layers"] or 6})
    cmp_dir = work / "comparison"
    cmd = [sys.executable, "-m", "sentitune", "evaluate", str(run_dir), str(other),
           "--data", str(data / "test.csv"), "--output-dir", str(cmp_dir)]  # fmt: skip
    result = run_child(cmd, timeout=3600)
    if result.returncode:
        raise SystemExit(f"evaluate failed ({result.returncode}): {result.stderr[-2000:]}")
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]
    rows = {}
    for name, folder in (("sentitune", run_dir.name), ("hf_trainer", other.name)):
        m = json.loads((cmp_dir / folder / "metrics.json").read_text())
        rows[name] = {
            key: m[key] for key in ("examples", "accuracy", "macro_f1", "macro_recall", "examples_per_s")
        }
        rows[name]["intervals_95"] = m["intervals_95"]
    rows["sentitune"]["train_wall_s"] = metrics["wall_s"]
    rows["hf_trainer"]["train_wall_s"] = trainer["train_wall_s"]
    return {
        "benchmark": "compare_models",
        "run": str(run_dir),
        "other": "the embedded MiniLM (same layers) fine-tuned by the HF Trainer, same data and settings",
        "trainer_bf16": trainer["bf16"],
        "models": rows,
        "table": table,
    }


def add_arguments(ap) -> None:
    ap.add_argument("--run", default="demo/run", help="a finished sentitune run (default: the demo's)")
    ap.add_argument("--data", default="demo/data", help="its prepared splits (train.csv, test.csv)")


if __name__ == "__main__":
    raise SystemExit(bench_main(__doc__, add_arguments, run))
