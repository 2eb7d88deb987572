"""What Vertex AI accepts before it charges: the GPU types, the machines each attaches to and in which
counts, the regions that offer each for training and for serving, and the GPUs the default image's
PyTorch has kernels for. One dated table (catalog.json, its sources inside); `--catalog FILE` replaces
it, and a dry run prints its date, with a warning once it is more than six months old.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

from sentitune.errors import SentituneError

CATALOG_FILE = Path(__file__).with_name("catalog.json")
STALE_DAYS = 183
_N1 = re.compile(r"^n1-(standard|highmem|highcpu)-(\d+)$")


def load(path: str | None = None) -> dict:
    try:
        return json.loads(Path(path or CATALOG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise SentituneError(
            f"cannot read the machine catalog {path}: {exc}; pass a JSON file like {CATALOG_FILE.name}"
        ) from None


def describe(catalog: dict, path: str | None = None) -> dict:
    """The catalog's date and source for a dry run, with a warning when it is old."""
    found = {"catalog": path or f"sentitune's catalog of {catalog.get('date')}", "date": catalog.get("date")}
    try:
        age = (dt.date.today() - dt.date.fromisoformat(catalog["date"])).days
    except (KeyError, ValueError):
        age = None
    if age is None or age > STALE_DAYS:
        found["warning"] = (
            f"the catalog is {age} days old" if age is not None else "the catalog has no date"
        ) + "; Vertex AI's machines and regions change: check its locations page, or pass --catalog FILE"
    return found


def fixed_gpus(catalog: dict, machine_type: str) -> tuple[str, int] | None:
    """(GPU type, count) of a machine type that comes with its GPUs (a2, a3, a4, g2, g4), else None."""
    found = catalog.get("fixed_gpus", {}).get(machine_type)
    return (found[0], int(found[1])) if found else None


def gpu_problems(
    catalog: dict,
    machine_type: str,
    accelerator: str | None,
    count: int,
    region: str,
    *,
    serving: bool,
    default_image: bool,
) -> list[str]:
    """Everything Vertex AI would refuse about a machine, its GPUs and the region, as messages that say
    what to pass instead; nothing when it would be accepted."""
    gpus = catalog.get("gpus", {})
    fixed = fixed_gpus(catalog, machine_type)
    if fixed and accelerator is None:
        return [
            f"{machine_type} comes with {fixed[1]} x {fixed[0]}: pass --accelerator-type {fixed[0]} --accelerator-count {fixed[1]}"
        ]
    if accelerator is None:
        return []
    if accelerator not in gpus:
        return [f"--accelerator-type {accelerator!r} is unknown; choose one of {', '.join(gpus)} or none"]
    problems = []
    if fixed:
        if fixed[0] != accelerator:
            problems.append(
                f"{machine_type} comes with {fixed[0]}, not {accelerator}; pick a machine for {accelerator} ({_machines_for(catalog, accelerator)})"
            )
        elif fixed[1] != count:
            problems.append(
                f"{machine_type} comes with {fixed[1]} x {fixed[0]}: pass --accelerator-count {fixed[1]}, or another machine size"
            )
    else:
        problems += _n1_problems(catalog, machine_type, accelerator, count, serving)
    regions = catalog.get("serving_regions" if serving else "training_regions", {})
    if region in regions and accelerator not in regions[region]:
        elsewhere = sorted(r for r, offered in regions.items() if accelerator in offered)
        problems.append(
            f"{accelerator} is not offered for {'serving' if serving else 'training'} in {region} (per the catalog of "
            f"{catalog.get('date')}); regions that offer it: {', '.join(elsewhere) or 'none listed'}"
        )
    minimum = catalog.get("default_image", {}).get("min_compute_capability")
    capability = gpus[accelerator].get("compute_capability")
    if default_image and minimum and capability and _version(capability) < _version(minimum):
        problems.append(
            f"the default image's PyTorch ({catalog['default_image']['name']}) has no kernels for {accelerator} "
            f"(compute capability {capability}): choose a GPU of compute capability {minimum} or newer (T4, V100, "
            "L4, A100, H100), or build an image on a CUDA 12.6 base (see the Dockerfile) and pass --image-uri"
        )
    return problems


def _n1_problems(catalog: dict, machine_type: str, accelerator: str, count: int, serving: bool) -> list[str]:
    match = _N1.match(machine_type)
    if not match:
        return [
            f"{accelerator} attaches to {_machines_for(catalog, accelerator)} machines, not {machine_type}"
        ]
    vcpus = int(match.group(2))
    tiers = catalog.get("n1_serving" if serving else "n1_training", [])
    tier = next((t for t in tiers if vcpus <= t["vcpus_at_most"]), None)
    allowed = (tier or {}).get("counts", {}).get(accelerator)
    if not allowed:
        return [
            f"{accelerator} does not attach to {machine_type}; {_machines_for(catalog, accelerator)} machines take it"
        ]
    if count not in allowed:
        listed = ", ".join(map(str, allowed[:-1])) + (" or " if len(allowed) > 1 else "") + str(allowed[-1])
        return [
            f"{machine_type} takes {listed} x {accelerator}, not {count}: pass --accelerator-count {allowed[0]}"
        ]
    return []


def _machines_for(catalog: dict, accelerator: str) -> str:
    fixed = sorted(
        {m.rsplit("-", 1)[0] for m, (gpu, _) in catalog.get("fixed_gpus", {}).items() if gpu == accelerator}
    )
    if fixed:
        return " or ".join(f + "-*" for f in fixed)
    return "n1-*" if any(accelerator in t["counts"] for t in catalog.get("n1_training", [])) else "no known"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in str(text).split("."))
