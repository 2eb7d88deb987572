"""`sentitune env`: this machine as sentitune sees it, for bug reports and benchmark tables.

Versions, the CPU and its instruction sets, GPUs, the installed extras, and what each command would
pick here (device, precision, threads, ONNX execution provider) with the reason, taken from the same
functions the commands call, so the report cannot disagree with what a run does.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import sys

from sentitune import __version__
from sentitune.config import EnvConfig
from sentitune.errors import SentituneError
from sentitune.runtime import (
    capabilities,
    cpu_features,
    cpu_model,
    onnx_provider,
    resolve_device,
    resolve_precision,
)

# extra -> the modules it installs (see pyproject.toml)
EXTRAS = {
    "serve": ("fastapi", "uvicorn"),
    "export": ("onnx", "onnxscript", "onnxruntime"),
    "cloud": ("gcsfs", "google.cloud.aiplatform", "tensorboard", "hypertune"),
    "baseline": ("sklearn",),
    "bench": ("accelerate", "locust"),
}
PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "pandas",
    "onnxruntime",
    "fastapi",
    "gcsfs",
    "google-cloud-aiplatform",
    "scikit-learn",
)
TORCH_COMMANDS = ("train", "evaluate", "predict", "serve")
ONNX_COMMANDS = ("evaluate --backend onnx", "predict --backend onnx", "serve --backend onnx (or onnx-int8)")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def _threads() -> tuple[int, str]:
    import torch

    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(variable):
            return torch.get_num_threads(), f"{variable}={os.environ[variable]}"
    return torch.get_num_threads(), "torch's default, one per physical core; --num-threads overrides"


def report() -> dict:
    import torch

    gpus = []
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(i)
        caps = capabilities(torch.device("cuda", i))
        gpus.append(
            {
                "name": props.name,
                "compute_capability": ".".join(map(str, caps.cuda_capability)),
                "memory_gib": round(props.total_memory / 2**30, 1),
                "native_bf16": caps.native_bf16,
            }
        )
    device = resolve_device("auto")
    if device.type == "cuda":
        device_reason = f"a CUDA GPU is visible ({gpus[0]['name']})"
    elif device.type == "mps":
        device_reason = "Apple's MPS backend is available"
    else:
        device_reason = "no CUDA GPU or Apple MPS is visible"
    try:
        precision = resolve_precision("auto", device)
        chosen = {"precision": precision.name, "precision_reason": precision.reason}
    except SentituneError as exc:  # an invalid SENTITUNE_PRECISION is itself worth reporting
        chosen = {"precision": None, "precision_reason": str(exc)}
    threads, threads_reason = _threads()
    provider, provider_reason = onnx_provider()
    return {
        "sentitune": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "extras": {extra: all(_installed(m) for m in modules) for extra, modules in EXTRAS.items()},
        "cpu": {
            "model": cpu_model(),
            "architecture": platform.machine(),
            "cores": os.cpu_count(),
            "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "features": cpu_features(),
            "native_bf16": capabilities(torch.device("cpu")).native_bf16,
            "torch_kernels": torch.backends.cpu.get_cpu_capability(),
        },
        "gpus": gpus,
        "choices": {
            "torch": {
                "commands": list(TORCH_COMMANDS),
                "device": str(device),
                "device_reason": f"--device auto: {device_reason}",
                **chosen,
                "threads": threads,
                "threads_reason": threads_reason,
            },
            "onnx": {
                "commands": list(ONNX_COMMANDS),
                "device": "cpu",
                "execution_provider": provider,
                "execution_provider_reason": provider_reason,
                "threads": threads,
                "threads_reason": threads_reason,
            },
        },
    }


def format_report(found: dict) -> str:
    """The report as aligned text."""
    cpu = found["cpu"]
    lines = [
        f"sentitune {found['sentitune']}, Python {found['python']} on {found['platform']}",
        "packages: " + ", ".join(f"{k} {v}" for k, v in found["packages"].items() if v),
        "not installed: " + (", ".join(k for k, v in found["packages"].items() if not v) or "-"),
        "extras: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in found["extras"].items()),
        f"CPU: {cpu['model']} ({cpu['architecture']}), {cpu['cores']} cores"
        + (f" ({cpu['cores_available']} available)" if cpu["cores_available"] != cpu["cores"] else ""),
        f"  instruction sets: {', '.join(cpu['features']) or 'none detected'}; torch kernels: "
        f"{cpu['torch_kernels']}; native bf16: {'yes' if cpu['native_bf16'] else 'no'}",
    ]
    if found["gpus"]:
        for i, gpu in enumerate(found["gpus"]):
            lines.append(
                f"GPU {i}: {gpu['name']}, compute capability {gpu['compute_capability']}, "
                f"{gpu['memory_gib']} GiB, native bf16: {'yes' if gpu['native_bf16'] else 'no'}"
            )
    else:
        lines.append("GPU: none visible to torch")
    for choice in found["choices"].values():
        lines.append(f"{', '.join(choice['commands'])}:")
        for key in ("device", "precision", "execution_provider", "threads"):
            if key in choice:
                reason = choice.get(f"{key}_reason")
                lines.append(f"  {key}: {choice[key]}" + (f" ({reason})" if reason else ""))
    return "\n".join(lines)


def env(cfg: EnvConfig) -> dict:
    """`sentitune env`: print the report (text, or JSON with --json) and return it."""
    found = report()
    sys.stdout.write((json.dumps(found, indent=2) if cfg.json else format_report(found)) + "\n")
    return found
