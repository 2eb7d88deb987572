#!/usr/bin/env python3
"""Render the JSON of `benchmarks/run.py` (and optionally `memory.py`) as the Markdown tables of
BENCHMARKS.md, so every figure there is printed by a script.

usage: report.py SPEED.json [--memory MEMORY.json]
"""

from __future__ import annotations

import argparse
import json

NAMES = {
    "seed": "walkthrough pipeline",
    "trainer": "HF Trainer",
    "sentitune": "sentitune train",
    "pipeline": "transformers pipeline",
}
EVAL_NAMES = {
    "sentitune": "sentitune Predictor",
    "trainer": "HF Trainer.evaluate()",
    "trainer-full-bf16": "HF Trainer.evaluate(), bf16_full_eval",
    "pipeline": "transformers pipeline",
}


def fmt(value, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def training_tables(train: dict) -> list[str]:
    out = []

    def seed_note(m: dict) -> str:
        n = m.get("seed_samples")
        return f"; the walkthrough's, steady from its first steps, {n:,}" if n else ""

    for m in train["models"].values():
        c = m["contenders"]
        out += [
            f"**{m['model']['description']}**, batch {m['batch_size']}, {m['samples']:,} training examples "
            f"({m['steps']} steps{seed_note(m)}), rounds: {m['rounds']}, medians:",
            "",
            "| | precision | train examples/s | ms per step | eval examples/s | peak RSS MiB | fraction of its precision's matmul ceiling |",
            "|---|---|---|---|---|---|---|",
        ]
        ceiling = m.get("ceiling", {})
        for name in ("seed", "trainer", "sentitune"):
            if name not in c or "error" in c[name]:
                out.append(f"| {NAMES[name]} | failed: {c.get(name, {}).get('error', 'not run')} | | | | | |")
                continue
            bf16 = str(c[name].get("precision") or "").startswith("bf16")
            achieved = ceiling.get("achieved", {}).get(name) or {}
            frac = achieved.get(f"fraction_of_{'bf16' if bf16 else 'fp32'}_ceiling")
            out.append(
                f"| {NAMES[name]} | {c[name].get('precision') or '–'} | {fmt(c[name].get('train_examples_per_s'))} | "
                f"{fmt(c[name].get('ms_per_step'), 2)} | "
                f"{fmt(c[name].get('eval_examples_per_s'))} | {fmt(c[name].get('peak_rss_mib'))} | "
                f"{fmt(frac * 100 if frac is not None else None)} % |"
            )
        r = m.get("ratios", {})
        out += [
            "",
            f"Ratios: sentitune / walkthrough **{fmt(r.get('sentitune/seed', {}).get('train_examples_per_s'), 2)}×**, "
            f"sentitune / Trainer **{fmt(r.get('sentitune/trainer', {}).get('train_examples_per_s'), 2)}×** "
            f"(training examples/s). sentitune's time to first step (data read, model load, tokenisation): "
            f"{fmt(c.get('sentitune', {}).get('time_to_first_step_s'), 1)} s.",
            "",
        ]
        if ceiling:
            fp32, bf16 = ceiling.get("fp32", {}), ceiling.get("bf16", {})
            out += [
                f"Ceiling: {fmt(ceiling['flops_per_token']['total'] / 1e6, 2)} MFLOP per trained token at "
                f"{fmt(ceiling['mean_tokens_per_post'], 1)} tokens per post; matmul {fmt(fp32.get('ceiling_gflops'), 1)} "
                f"GFLOP/s fp32, {fmt(bf16.get('ceiling_gflops'), 1)} GFLOP/s bf16 on these shapes.",
                "",
            ]
    return out


def eval_tables(ev: dict) -> list[str]:
    out = []
    for size, m in ev["models"].items():
        c = m["contenders"]
        out += [
            f"**{size}**: inference on the {fmt(m.get('examples'))} validation tweets, batch {m.get('batch_size')}, medians:",
            "",
            "| | precision | examples/s |",
            "|---|---|---|",
        ]
        for name, v in c.items():
            out.append(
                f"| {EVAL_NAMES.get(name, name)} | {v.get('precision', '–')} | {fmt(v.get('examples_per_s'))} |"
            )
        ratios = m.get("ratios", {})
        out += ["", "Ratios: " + ", ".join(f"{k} **{fmt(v, 2)}×**" for k, v in ratios.items()), ""]
    return out


def memory_table(mem: dict) -> list[str]:
    out = ["| command | rows | wall s | peak RSS MiB | target MiB |", "|---|---|---|---|---|"]
    for name in ("prepare", "train"):
        if name in mem:
            r = mem[name]
            extra = f" ({r['steps']} steps)" if "steps" in r else ""
            out.append(
                f"| sentitune {name}{extra} | {fmt(r['rows'])} | {fmt(r['wall_s'], 1)} | "
                f"{fmt(r['peak_rss_mib'])} | {fmt(mem['target_peak_rss_mib'])} |"
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("speed")
    ap.add_argument("--memory")
    args = ap.parse_args()
    with open(args.speed) as f:
        speed = json.load(f)
    m = speed["machine"]
    limits = m.get("isa_limits")
    lines = [
        f"Machine: {m['cpu_model']}, {m['cores']} cores ({', '.join(m['cpu_features'])}; "
        + (f"held to AVX2: {' '.join(f'{k}={v}' for k, v in limits.items())}; " if limits else "")
        + "native bf16: "
        f"{m['native_bf16']}; --precision auto: {m['precision_auto']}), {m['memory_gib']} GiB, "
        f"torch {m['torch']}, transformers {m['transformers']}; "
        f"{m['date'][:10]}, sentitune {m['sentitune']} ({m.get('sentitune_commit', '?')}), "
        f"mode {speed['mode']}, {speed['wall_s']} s, load average {m['load_average']} → "
        f"{speed.get('load_average_end')}.",
        "",
    ]
    if "train" in speed:
        lines += ["### Training", "", *training_tables(speed["train"])]
    if "eval" in speed:
        lines += ["### Inference", "", *eval_tables(speed["eval"])]
    if args.memory:
        with open(args.memory) as f:
            lines += ["### Memory", "", *memory_table(json.load(f)), ""]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
