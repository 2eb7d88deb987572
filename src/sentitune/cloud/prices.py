"""A dated table of Vertex AI custom-training prices, and the cost estimate printed before a job.

Approximate list prices in USD per hour, compiled 2026-11-27 (PRICES_DATE); Vertex AI training bills
the machine and each GPU by the second. The walkthrough's europe-west4 bill (n1-standard-4 $0.24/h + T4
$0.40/h = $0.64/h) is the table's anchor; Spot figures assume Google's usual Spot discount and move
daily. Prices change: check https://cloud.google.com/vertex-ai/pricing, and pass `--prices FILE.json`
(the layout of TABLE) to estimate with your own figures. Batch prediction bills each replica's node
hours at these machine and GPU rates too (its list prices are within a few percent of training's).
"""

from __future__ import annotations

import json
import math

from sentitune.errors import SentituneError

PRICES_DATE = "2026-11-27"
SOURCE = "https://cloud.google.com/vertex-ai/pricing"

# region -> {"machines" | "accelerators": {name: {"on_demand": $/h, "spot": $/h}}}
_GPUS = {
    "NVIDIA_TESLA_T4": {"on_demand": 0.4025, "spot": 0.1610},
    "NVIDIA_TESLA_V100": {"on_demand": 2.8520, "spot": 1.1408},
    "NVIDIA_TESLA_P100": {"on_demand": 1.6790, "spot": 0.6716},
    "NVIDIA_L4": {"on_demand": 0.0, "spot": 0.0},  # billed in the g2 machine price
    "NVIDIA_TESLA_A100": {"on_demand": 0.0, "spot": 0.0},  # billed in the a2 machine price
}
_US = {
    "machines": {
        "n1-standard-2": {"on_demand": 0.1093, "spot": 0.0231},
        "n1-standard-4": {"on_demand": 0.2185, "spot": 0.0462},
        "n1-standard-8": {"on_demand": 0.4370, "spot": 0.0924},
        "n1-standard-16": {"on_demand": 0.8740, "spot": 0.1848},
        "n1-highmem-8": {"on_demand": 0.5442, "spot": 0.1150},
        "e2-standard-4": {"on_demand": 0.1541, "spot": 0.0463},
        "g2-standard-8": {"on_demand": 1.0347, "spot": 0.3104},  # includes its one L4
        "a2-highgpu-1g": {"on_demand": 4.2245, "spot": 1.2674},  # includes its one A100 40GB
    },
    "accelerators": _GPUS,
}
_EUROPE_WEST4 = {
    "machines": {
        "n1-standard-2": {"on_demand": 0.1203, "spot": 0.0254},
        "n1-standard-4": {"on_demand": 0.2405, "spot": 0.0508},
        "n1-standard-8": {"on_demand": 0.4810, "spot": 0.1016},
        "n1-standard-16": {"on_demand": 0.9620, "spot": 0.2032},
        "n1-highmem-8": {"on_demand": 0.5990, "spot": 0.1265},
        "e2-standard-4": {"on_demand": 0.1697, "spot": 0.0509},
        "g2-standard-8": {"on_demand": 1.1381, "spot": 0.3414},
        "a2-highgpu-1g": {"on_demand": 4.6469, "spot": 1.3941},
    },
    "accelerators": _GPUS,  # the same list prices in both
}
TABLE = {"us-central1": _US, "us-east1": _US, "us-west1": _US, "europe-west4": _EUROPE_WEST4}


def load_table(path: str | None) -> tuple[dict, str]:
    if not path:
        return TABLE, f"sentitune's table of {PRICES_DATE}"
    try:
        with open(path) as f:
            return json.load(f), path
    except (OSError, ValueError) as exc:
        raise SentituneError(f"cannot read prices from {path}: {exc}") from exc


def hourly_cost(
    region: str,
    machine_type: str,
    accelerator_type: str | None,
    accelerator_count: int,
    replicas: int,
    spot: bool,
    table: dict,
) -> float | None:
    """$/hour of the whole job, or None when the table has no price for one of its parts."""
    kind = "spot" if spot else "on_demand"
    prices = table.get(region, {})
    machine = prices.get("machines", {}).get(machine_type, {}).get(kind)
    if machine is None:
        return None
    total = machine
    if accelerator_type and accelerator_count:
        gpu = prices.get("accelerators", {}).get(accelerator_type, {}).get(kind)
        if gpu is None:
            return None
        total += gpu * accelerator_count
    return total * replicas


def estimate(
    region: str,
    machine_type: str,
    accelerator_type: str | None,
    accelerator_count: int,
    replicas: int,
    spot: bool,
    *,
    examples_per_epoch: int | None = None,
    epochs: int | None = None,
    examples_per_s: float | None = None,
    prices_file: str | None = None,
) -> dict:
    """Hourly cost, and the cost of the run when its length can be estimated from a measured speed."""
    table, source = load_table(prices_file)
    hourly = hourly_cost(region, machine_type, accelerator_type, accelerator_count, replicas, spot, table)
    result = {
        "region": region,
        "machine_type": machine_type,
        "accelerator": f"{accelerator_count} x {accelerator_type}" if accelerator_type else None,
        "replicas": replicas,
        "pricing": "spot" if spot else "on-demand",
        "prices": source,
        "usd_per_hour": None if hourly is None else round(hourly, 4),
    }
    if hourly is None:
        result["note"] = (
            f"no price for {machine_type}"
            + (f" + {accelerator_type}" if accelerator_type else "")
            + f" in {region} in {source}; pass --prices FILE.json"
        )
        return result
    if examples_per_epoch and epochs and examples_per_s:
        hours = examples_per_epoch * epochs / examples_per_s / 3600
        result["estimated_hours"] = round(hours, 3)
        result["estimated_usd"] = round(math.ceil(hours * hourly * 100) / 100, 2)
        result["assumes"] = (
            f"{examples_per_s:.0f} training examples/s, {epochs} epochs of {examples_per_epoch}"
        )
    return result


def batch_estimate(est: dict, posts: int, posts_per_s: float, max_replicas: int, measured_in: str) -> dict:
    """A batch prediction job's node hours and cost, from the posts per second one replica scores."""
    node_hours = posts / posts_per_s / 3600
    est = {**est, "posts": posts, "node_hours": round(node_hours, 3)}
    est["hours_at_max_replicas"] = round(node_hours / max_replicas, 3)
    if est["usd_per_hour"] is not None:
        est["estimated_usd"] = round(math.ceil(node_hours * est["usd_per_hour"] * 100) / 100, 2)
    est["assumes"] = (
        f"{posts_per_s:.0f} posts/s per replica as measured in {measured_in}, {posts} posts; "
        "replica start-up (minutes each) not included"
    )
    return est


def describe(est: dict, per_replica: bool = False) -> str:
    """The estimate in one line: a training job's (hourly, its run), or with `per_replica` a batch
    prediction job's (hourly per replica, its node hours)."""
    if est["usd_per_hour"] is None:
        return f"cost: unknown ({est['note']})"
    per = "per replica" if per_replica else est["pricing"]
    line = f"cost: ${est['usd_per_hour']:.2f}/hour {per} ({est['prices']})"
    if "node_hours" in est:
        line += (
            f"; this job ≈ {est['node_hours']:.2f} node hours ≈ ${est['estimated_usd']:.2f}, "
            f"≥ {est['hours_at_max_replicas'] * 60:.0f} min at its most replicas ({est['assumes']})"
        )
    elif "estimated_usd" in est:
        line += f"; this run ≈ {est['estimated_hours'] * 60:.0f} min ≈ ${est['estimated_usd']:.2f} ({est['assumes']})"
    return line
