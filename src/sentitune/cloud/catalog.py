"""What Vertex AI accepts before it charges: its regions, the machine types it offers for training and for
serving, the GPU types, the machines each attaches to and in which counts, the regions that offer each
for training and for serving, the machines' CPU architectures, and the GPUs the default image's PyTorch
has kernels for. One dated table (catalog.json, its sources inside); `--catalog FILE` replaces it, and a
dry run prints its date, with a warning once it is more than six months old.

The table is default-deny: a region, machine, GPU or architecture it does not list is refused, with the
way out for what Google added since the table's date (`--catalog FILE`, or `--allow-unlisted`).
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
        found = json.loads(Path(path or CATALOG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise SentituneError(
            f"cannot read the machine catalog {path}: {exc}; pass a JSON file like {CATALOG_FILE.name}"
        ) from None
    if not isinstance(found, dict):
        raise SentituneError(f"the machine catalog {path} is not a JSON object like {CATALOG_FILE.name}")
    return found


def describe(catalog: dict, path: str | None = None) -> dict:
    """The catalog's date and source for a dry run, with a warning when it is old."""
    found = {"catalog": path or f"sentitune's catalog of {catalog.get('date')}", "date": catalog.get("date")}
    try:
        age = (dt.date.today() - dt.date.fromisoformat(catalog["date"])).days
    except (KeyError, TypeError, ValueError):
        age = None
    if age is None or age > STALE_DAYS:
        found["warning"] = (
            f"the catalog is {age} days old" if age is not None else "the catalog has no date"
        ) + "; Vertex AI's machines and regions change: check its locations page, or pass --catalog FILE"
    return found


def unlisted(catalog: dict) -> str:
    """The way out of a refusal that only says the catalog does not list something."""
    return f"for one Google added after {catalog.get('date')}, pass --catalog FILE listing it, or --allow-unlisted"


def fixed_gpus(catalog: dict, machine_type: str) -> tuple[str, int] | None:
    """(GPU type, count) of a machine type that comes with its GPUs (a2, a3, a4, g2, g4), else None."""
    found = catalog.get("fixed_gpus", {}).get(machine_type)
    return (found[0], int(found[1])) if found else None


def purpose(serving: bool) -> str:
    return "serving" if serving else "training"


def region_problems(catalog: dict, region: str, *, allow_unlisted: bool) -> list[str]:
    listed = catalog.get("regions", [])
    if region in listed or allow_unlisted:
        return []
    return [
        f"--region {region} is not a Vertex AI region in the catalog; choose one of {_some(listed)}; {unlisted(catalog)}"
    ]


def machine_listed_problems(catalog: dict, machine: str, *, serving: bool, allow_unlisted: bool) -> list[str]:
    """Vertex AI keeps separate lists of the machine types it trains on and serves on."""
    listed = catalog.get(f"{purpose(serving)}_machines", [])
    if machine in listed or allow_unlisted:
        return []
    kind = machine.rsplit("-", 1)[0] + "-" if machine.count("-") >= 2 else machine.split("-")[0] + "-"
    near = [m for m in listed if m.startswith(kind)]
    typical = (
        "n1-standard-4",
        "n1-standard-2",
        "e2-standard-4",
        "e2-standard-2",
        "g2-standard-8",
        "a2-highgpu-1g",
    )
    offer = (
        f"its {kind}* machines for {purpose(serving)} are {_some(near)}"
        if near
        else f"choose one such as {', '.join(m for m in typical if m in listed)}"
    )
    return [
        f"--machine-type {machine!r} is not in the catalog's {purpose(serving)} machine types; {offer}; "
        f"{unlisted(catalog)}"
    ]


def architecture_problems(
    catalog: dict, machine: str, *, default_image: bool, allow_unlisted: bool
) -> list[str]:
    """Arm machines (A4X: NVIDIA Grace) run arm64 images only."""
    if machine not in catalog.get("arm64_machines", []):
        return []
    images = catalog.get("default_image", {}).get("architectures", ["amd64"])
    if default_image and "arm64" not in images:
        return [
            f"{machine} is an Arm (arm64) machine and sentitune's images are built for {', '.join(images)} "
            "only: pick an x86 machine (e.g. a4-highgpu-8g for B200), or build an arm64 image and pass "
            "--image-uri with --allow-unlisted"
        ]
    if not default_image and not allow_unlisted:
        return [
            f"{machine} is an Arm (arm64) machine and the catalog cannot know --image-uri's architecture: "
            "if the image is built for linux/arm64, pass --allow-unlisted; else pick an x86 machine"
        ]
    return []


def gpu_known_problems(catalog: dict, accelerator: str, *, allow_unlisted: bool) -> list[str]:
    gpus = catalog.get("gpus", {})
    if accelerator in gpus or allow_unlisted:
        return []
    return [
        f"--accelerator-type {accelerator!r} is unknown; choose one of {', '.join(gpus)} or none; {unlisted(catalog)}"
    ]


def gpu_machine_problems(
    catalog: dict, machine: str, accelerator: str | None, count: int, *, serving: bool, allow_unlisted: bool
) -> list[str]:
    """The GPU attaches to the machine in that count. Training takes a fixed-GPU machine's GPUs whole;
    serving may take 1 to all N of an accelerator-optimized machine's N GPUs per replica (MachineSpec.
    accelerator_count: with N/2 or fewer, Vertex AI co-schedules replicas on one machine)."""
    fixed = fixed_gpus(catalog, machine)
    if fixed and accelerator is None:
        return [
            f"{machine} comes with {fixed[1]} x {fixed[0]}: pass --accelerator-type {fixed[0]} --accelerator-count {fixed[1]}"
        ]
    if accelerator is None:
        return []
    if fixed:
        gpu, n = fixed
        if gpu != accelerator:
            return [
                f"{machine} comes with {gpu}, not {accelerator}; pick a machine for {accelerator} ({_machines_for(catalog, accelerator)})"
            ]
        if serving and n > 1 and not 1 <= count <= n:
            return [
                f"{machine} serves with 1 to {n} x {gpu} per replica, not {count}: pass --accelerator-count 1 to {n}"
            ]
        if (not serving or n == 1) and count != n:
            return [
                f"{machine} comes with {n} x {gpu}: pass --accelerator-count {n}, or another machine size"
            ]
        return []
    match = _N1.match(machine)
    if not match:
        if allow_unlisted and machine not in catalog.get(f"{purpose(serving)}_machines", []):
            return []  # a machine the catalog does not know: nothing it can say about its GPUs
        return [f"{accelerator} attaches to {_machines_for(catalog, accelerator)} machines, not {machine}"]
    vcpus = int(match.group(2))
    tiers = catalog.get("n1_serving" if serving else "n1_training", [])
    tier = next((t for t in tiers if vcpus <= t["vcpus_at_most"]), None)
    allowed = (tier or {}).get("counts", {}).get(accelerator)
    if not allowed:
        if allow_unlisted and accelerator not in catalog.get("gpus", {}):
            return []
        return [
            f"{accelerator} does not attach to {machine}; {_machines_for(catalog, accelerator)} machines take it"
        ]
    if count not in allowed:
        listed = ", ".join(map(str, allowed[:-1])) + (" or " if len(allowed) > 1 else "") + str(allowed[-1])
        return [
            f"{machine} takes {listed} x {accelerator}, not {count}: pass --accelerator-count {allowed[0]}"
        ]
    return []


def gpu_region_problems(
    catalog: dict, accelerator: str, region: str, *, serving: bool, allow_unlisted: bool
) -> list[str]:
    regions = catalog.get(f"{purpose(serving)}_regions", {})
    if accelerator in regions.get(region, []) or allow_unlisted:
        return []
    elsewhere = sorted(r for r, offered in regions.items() if accelerator in offered)
    return [
        f"{accelerator} is not offered for {purpose(serving)} in {region} (per the catalog of "
        f"{catalog.get('date')}); regions that offer it: {', '.join(elsewhere) or 'none listed'}; "
        f"{unlisted(catalog)}"
    ]


def gpu_image_problems(catalog: dict, accelerator: str) -> list[str]:
    """The default image's PyTorch has kernels for compute capability `min_compute_capability` and newer."""
    minimum = catalog.get("default_image", {}).get("min_compute_capability")
    capability = compute_capability(catalog, accelerator)
    if minimum and capability and _version(capability) < _version(minimum):
        return [
            f"the default image's PyTorch ({catalog['default_image']['name']}) has no kernels for {accelerator} "
            f"(compute capability {capability}): choose a GPU of compute capability {minimum} or newer (T4, V100, "
            "L4, A100, H100), or build an image on a CUDA 12.6 base (see the Dockerfile) and pass --image-uri"
        ]
    return []


def compute_capability(catalog: dict, accelerator: str) -> str | None:
    return catalog.get("gpus", {}).get(accelerator, {}).get("compute_capability")


def _machines_for(catalog: dict, accelerator: str) -> str:
    fixed = sorted(
        {m.rsplit("-", 1)[0] for m, (gpu, _) in catalog.get("fixed_gpus", {}).items() if gpu == accelerator}
    )
    if fixed:
        return " or ".join(f + "-*" for f in fixed)
    return "n1-*" if any(accelerator in t["counts"] for t in catalog.get("n1_training", [])) else "no known"


def _some(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (", …" if len(names) > limit else "") if names else "none listed"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in str(text).split("."))
