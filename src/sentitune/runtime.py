"""Where and how a model runs: the device, the precision policy, autocast, and batched inference for
PyTorch models and onnxruntime sessions. Training, prediction, export and serving all use this module;
it imports none of them.

The precision policy lives in `choose_precision` alone, a pure function of what was asked and what the
device can do (`Capabilities`), so every command makes the same choice and says why:

    device                                   auto picks
    CUDA, compute capability >= 8.0          bf16 autocast (A100, L4, H100: native bf16)
    CUDA, compute capability <  8.0          fp16 autocast + gradient scaler (T4, V100, P100)
    CPU with AVX512-BF16 or AMX              bf16 autocast (~1.5x fp32 there)
    CPU without them (AVX2)                  fp32 (bf16 would be emulated: ~40x slower)
    Apple MPS                                fp32 (the others are not measured there)

`--precision` overrides auto; so does the environment variable SENTITUNE_PRECISION when the option
is left at auto (one switch for a whole container or test run). A request the device cannot honour
(bf16 on a GPU without native bf16) is an error, not a silent emulation.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sentitune.batching import TokenizedTexts, probabilities_by_passes
from sentitune.config import PRECISION_ENV, PRECISIONS
from sentitune.errors import SentituneError, require_extra
from sentitune.packed import PackedClassifier, packed_for_inference

NATIVE_BF16_CUDA = (8, 0)  # Ampere and newer


# ----------------------------------------------------------------------------- device


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str) -> torch.device:
    """The torch device for --device NAME ('auto': CUDA, else MPS, else CPU)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SentituneError("--device cuda: no CUDA GPU is visible; use --device cpu or auto")
    if name == "mps" and not _mps_available():
        raise SentituneError("--device mps: Apple's MPS backend is not available; use --device cpu or auto")
    return torch.device(name)


# ----------------------------------------------------------------------------- what the hardware can do

# /proc/cpuinfo flag -> the name shown to users, in the order shown.
CPU_FEATURES = {
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX512",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX512-BF16",
    "avx512_fp16": "AVX512-FP16",
    "amx_tile": "AMX",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
    "amx_fp16": "AMX-FP16",
}


def cpu_model() -> str:
    import platform

    for line in _cpuinfo_lines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_features() -> list[str]:
    """The instruction-set extensions of this CPU that matter for speed (from /proc/cpuinfo, else torch)."""
    for line in _cpuinfo_lines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [name for flag, name in CPU_FEATURES.items() if flag in have]
    checks = {  # no /proc/cpuinfo (macOS, Windows): what torch itself detects
        "AVX2": "_is_avx2_supported",
        "AVX512": "_is_avx512_supported",
        "AVX512-VNNI": "_is_vnni_supported",
        "AVX512-BF16": "_is_avx512_bf16_supported",
        "AMX": "_is_amx_tile_supported",
    }
    return [name for name, check in checks.items() if getattr(torch.cpu, check, lambda: False)()]


def _cpuinfo_lines() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX, as torch sees it (what its bf16 kernels will use): not where torch's kernels
    are held to AVX2 or less (ATEN_CPU_CAPABILITY=avx2), which emulate bf16 whatever the CPU has."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    if not any(getattr(torch.cpu, name, lambda: False)() for name in checks):
        return False
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


@dataclass(frozen=True)
class Capabilities:
    """What a device offers that the precision policy depends on."""

    device_type: str  # "cpu", "cuda" or "mps"
    name: str  # the CPU model or the GPU name
    cuda_capability: tuple[int, int] | None = None
    cpu_native_bf16: bool = False  # AVX512-BF16 or AMX

    @property
    def native_bf16(self) -> bool:
        if self.device_type == "cuda":
            return self.cuda_capability is not None and self.cuda_capability >= NATIVE_BF16_CUDA
        return self.device_type == "cpu" and self.cpu_native_bf16

    @property
    def described(self) -> str:
        if self.cuda_capability:
            major, minor = self.cuda_capability
            return f"{self.name}, compute capability {major}.{minor},"
        return self.name


def capabilities(device: torch.device) -> Capabilities:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        capability = tuple(torch.cuda.get_device_capability(index))
        return Capabilities("cuda", torch.cuda.get_device_name(index), capability)
    if device.type == "cpu":
        return Capabilities("cpu", cpu_model(), None, cpu_has_native_bf16())
    return Capabilities(device.type, device.type.upper())


# ----------------------------------------------------------------------------- the precision policy


@dataclass(frozen=True)
class Precision:
    """The numeric format a model runs in, and why it was chosen."""

    name: str  # "fp32", "bf16" or "fp16"
    reason: str
    cast_weights: bool = False  # the weights are in `dtype` already: no autocast

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype; None for fp32 (no autocast)."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range."""
        return self.name == "fp16"

    def autocast(self, device: torch.device):
        if self.dtype is None or self.cast_weights:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def __str__(self) -> str:
        return f"{self.name} ({self.reason}{'; weights cast once' if self.cast_weights else ''})"


FP32 = Precision("fp32", "full precision, as the weights are stored")


def inference_weights(
    model: torch.nn.Module, precision: Precision, device: torch.device
) -> tuple[torch.nn.Module, Precision]:
    """The model a forward-only caller runs, and the precision to run it under. bf16 on a CPU runs on a
    copy of the weights cast to bf16 once, without autocast, which would cast every weight again on
    every call (benchmarks/bf16_weights.py: 1.36x autocast on the demo run, Xeon AMX, labels as fp32's
    on 99.95 % of posts); `model` itself stays fp32 for what needs fp32 (explanations' gradients).
    Elsewhere the model as it is, under `precision`'s autocast."""
    if precision.name != "bf16" or device.type != "cpu":
        return model, precision
    cast = copy.deepcopy(model).to(torch.bfloat16).eval()
    return cast, Precision("bf16", precision.reason, cast_weights=True)


# PyTorch inference on a CPU runs a TorchScript trace of the model, frozen (weights folded in as
# constants): the same operations without Python between them. A forward pass then holds no GIL and pays
# no interpreter cost per operation, which matters most where something else runs beside it: a server
# reading requests, or two model threads (benchmarks/serve_load.py; docs/benchmarks/serving.md). A trace
# records one path through the model's Python, so it is kept only when it gives the eager model's
# probabilities on inputs of other shapes, with and without padding (`TRACE_TOLERANCE`); else the eager
# model runs and `reason` says why. SENTITUNE_TRACE=0 turns it off. A BERT classifier runs packed instead
# (sentitune/packed.py: its dense layers over the posts' own tokens, no padding), checked the same way;
# SENTITUNE_PACK=0 keeps the padded trace.
TRACE_ENV = "SENTITUNE_TRACE"
PACK_ENV = "SENTITUNE_PACK"
OFF = ("0", "false", "no", "off")
TRACE_TOLERANCE = 2e-3  # largest difference in any class probability, trace against eager


class TracedClassifier(torch.nn.Module):
    """A frozen trace of a classifier, called like it (`input_ids=`, `attention_mask=`; `.logits`)."""

    def __init__(self, graph: torch.jit.ScriptModule):
        super().__init__()
        self.graph = graph

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return _Logits(self.graph(input_ids, attention_mask))


@dataclass
class _Logits:
    logits: torch.Tensor


class LogitsOnly(torch.nn.Module):
    """A classifier with positional inputs and a plain tensor output, as the tracer and the ONNX exporter
    want it."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def traced_for_inference(
    model: torch.nn.Module, checks: list[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.nn.Module | None, str]:
    """`model` (eval mode, on the CPU) traced on `checks[0]` and frozen, if it gives the eager model's
    probabilities on every one of `checks` (input ids, attention mask) within TRACE_TOLERANCE; else None.
    With the reason either way."""
    if os.environ.get(TRACE_ENV, "1").strip().lower() in OFF:
        return None, f"eager: {TRACE_ENV}={os.environ[TRACE_ENV]}"
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            # The tracer warns of every Python branch it records; the checks below are what decides.
            warnings.simplefilter("ignore")
            graph = torch.jit.freeze(torch.jit.trace(LogitsOnly(model).eval(), checks[0], check_trace=False))
            worst = 0.0
            for ids, mask in checks:
                eager = torch.softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
                traced = torch.softmax(graph(ids, mask).float(), -1)
                if traced.shape != eager.shape:
                    return None, f"eager: the trace gave shape {tuple(traced.shape)} for {tuple(eager.shape)}"
                differs = float((traced - eager).abs().max())
                if not differs <= TRACE_TOLERANCE:  # NaN included: such a model's scores are refused later
                    return None, f"eager: the trace differed from the model by {differs:.2g} in a probability"
                worst = max(worst, differs)
    except Exception as exc:  # a model the tracer cannot follow runs as it is
        return None, f"eager: the model could not be traced ({type(exc).__name__}: {str(exc)[:120]})"
    return TracedClassifier(graph), f"TorchScript trace, frozen (largest difference from eager {worst:.1g})"


def check_posts(encode: Callable[[list[str]], TokenizedTexts], max_length: int) -> list[TokenizedTexts]:
    """Posts a traced or packed model is checked on: rows of different lengths (padding; one holds the pad
    token's text, which RoBERTa's positions skip), one row, rows of one length (none), a row at
    `max_length`, and rows of all three kinds."""
    short = encode(["ok"])
    mixed = encode(
        [
            "fine",
            "a somewhat longer post, with more words in it than the others",
            "good day",
            "a [PAD] <pad> b",
        ]
    )
    longest = encode(["word " * (2 * max_length)])
    same = TokenizedTexts.concat([short, short, short, short])
    return [mixed, short, same, longest, TokenizedTexts.concat([mixed, longest, same, short, mixed])]


def trace_checks(encode: Callable[[list[str]], TokenizedTexts], max_length: int):
    """Inputs a trace is checked on (`check_posts`), shaped as inference pads them."""
    checks = []
    for tokens, multiple in zip(check_posts(encode, max_length), (SHAPE_MULTIPLE, 1, 1, 1, 1), strict=True):
        ids, mask = tokens.batch(np.arange(len(tokens)), multiple=multiple)
        checks.append((ids, mask))
    return checks


def cpu_scorer(
    runner: torch.nn.Module, encode: Callable[[list[str]], TokenizedTexts], max_length: int, device, precision
) -> tuple[torch.nn.Module, str]:
    """What scores posts on a CPU, and why: the model packed (`packed.packed_for_inference`) where it
    gives the eager model's probabilities, else its padded trace where that does, else the eager model.
    SENTITUNE_TRACE=0 keeps the eager model; SENTITUNE_PACK=0 the padded trace."""
    if os.environ.get(TRACE_ENV, "1").strip().lower() in OFF:
        return runner, f"eager: {TRACE_ENV}={os.environ[TRACE_ENV]}"
    unpacked = f"padded: {PACK_ENV}={os.environ.get(PACK_ENV)}"
    if os.environ.get(PACK_ENV, "1").strip().lower() not in OFF:
        checks = check_posts(encode, max_length)
        packed, unpacked = packed_for_inference(
            runner,
            checks,
            lambda tokens: infer_probs(runner, tokens, len(tokens), device, precision),
            TRACE_TOLERANCE,
        )
        if packed is not None:
            return packed, unpacked
    traced, reason = traced_for_inference(runner, trace_checks(encode, max_length))
    return traced or runner, f"{reason}; {unpacked}"


def choose_precision(requested: str, caps: Capabilities, environ: dict[str, str] | None = None) -> Precision:
    """The precision for `requested` (--precision) on a device with `caps`; see the module docstring."""
    env = os.environ if environ is None else environ
    source = f"--precision {requested}"
    if requested == "auto" and env.get(PRECISION_ENV, "auto") != "auto":
        requested, source = env[PRECISION_ENV], f"{PRECISION_ENV}={env[PRECISION_ENV]}"
    if requested not in PRECISIONS:
        raise SentituneError(f"{source}: unknown precision; choose one of {', '.join(PRECISIONS)}")
    where = caps.described
    if requested == "auto":
        if caps.device_type == "cuda":
            if caps.native_bf16:
                return Precision("bf16", f"{where} has native bf16")
            return Precision("fp16", f"{where} has no native bf16: fp16 with a gradient scaler")
        if caps.device_type == "cpu":
            if caps.native_bf16:
                return Precision("bf16", "this CPU computes bf16 natively, with AVX512-BF16 or AMX")
            return Precision(
                "fp32", "this CPU has neither AVX512-BF16 nor AMX: bf16 would be emulated, far slower"
            )
        return Precision("fp32", f"mixed precision is not measured on {caps.device_type.upper()}")
    if requested == "bf16" and caps.device_type == "cuda" and not caps.native_bf16:
        raise SentituneError(
            f"{source}: {where} has no native bf16 (it needs compute capability 8.0 or newer); "
            "use --precision fp16 (with a gradient scaler) or auto"
        )
    reason = f"set by {source}"
    if requested == "bf16" and caps.device_type == "cpu" and not caps.native_bf16:
        reason += "; this CPU emulates bf16, far slower than fp32"
    if requested == "fp16":
        reason += "; with a gradient scaler when training"
    return Precision(requested, reason)


def resolve_precision(requested: str, device: torch.device) -> Precision:
    return choose_precision(requested, capabilities(device))


# ----------------------------------------------------------------------------- batched inference


@torch.inference_mode()
def infer_probs(
    model: torch.nn.Module,
    tokens: TokenizedTexts,
    batch_size: int,
    device: torch.device,
    precision: Precision = FP32,
) -> np.ndarray:
    """Class probabilities for every text, in the input order."""
    if isinstance(model, PackedClassifier):
        return model.probabilities(tokens, batch_size)

    def logits_of(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with precision.autocast(device):
            return model(
                input_ids=ids.to(device, non_blocking=True), attention_mask=mask.to(device, non_blocking=True)
            ).logits

    was_training = model.training
    model.eval()
    try:
        return batched_probs(tokens, batch_size, logits_of, few_shapes=True)
    finally:
        model.train(was_training)


# PyTorch inference pads each forward pass to a multiple of SHAPE_MULTIPLE tokens and of ROW_MULTIPLE
# rows (repeating a real row, whose answer is dropped), so the kernels see few distinct shapes: oneDNN
# keeps compiled kernels and packed weights per input shape, and a server that met every (rows, tokens)
# pair would grow its memory with each new one (measured: +260 MiB in 1,600 calls of 1-64 tweets).
# onnxruntime's memory stays flat without it, and its dynamic int8 quantisation would take the padded
# positions into each batch's activation range, so ONNX batches are not padded.
SHAPE_MULTIPLE = 8
ROW_MULTIPLE = 4


def bucketed_rows(rows: np.ndarray, batch_size: int) -> np.ndarray:
    """`rows` padded with copies of its first row to a multiple of ROW_MULTIPLE (at most `batch_size`)."""
    target = min(-(-len(rows) // ROW_MULTIPLE) * ROW_MULTIPLE, max(batch_size, len(rows)))
    return rows if target == len(rows) else np.concatenate([rows, np.repeat(rows[:1], target - len(rows))])


def batched_probs(
    tokens: TokenizedTexts, batch_size: int, logits_of: Callable, few_shapes: bool = False
) -> np.ndarray:
    """Softmax of `logits_of(input_ids, attention_mask)` over length-sorted batches, in the input order;
    `logits_of` returns a tensor or an array (the PyTorch model, an onnxruntime session). `few_shapes`:
    pad each batch as SHAPE_MULTIPLE and ROW_MULTIPLE say."""

    def logits_of_rows(rows: np.ndarray):
        if few_shapes:
            return logits_of(*tokens.batch(bucketed_rows(rows, batch_size), multiple=SHAPE_MULTIPLE))
        return logits_of(*tokens.batch(rows))

    return probabilities_by_passes(tokens, batch_size, logits_of_rows)


def require_finite(probs: np.ndarray, source: str) -> np.ndarray:
    """Scores with NaN or infinity are garbage, never an answer: a model whose weights hold them."""
    bad = ~np.isfinite(probs).all(axis=1) if probs.size else np.zeros(0, bool)
    if bad.any():
        raise SentituneError(
            f"{source} gives non-finite scores (NaN) for {int(bad.sum())} of {len(probs)} posts: its weights "
            "hold NaN or infinity; retrain it"
        )
    return probs


# ----------------------------------------------------------------------------- ONNX


def require_onnxruntime():
    return require_extra("onnxruntime", "export", "running ONNX models")


def onnx_provider() -> tuple[str, str]:
    """The onnxruntime execution provider sentitune runs ONNX models with, and why."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "none", "onnxruntime is not installed (pip install 'sentitune[export]')"
    available = ort.get_available_providers()
    # The int8 and fp32 exports are CPU graphs; onnxruntime's CPU provider uses VNNI / AMX-INT8 for the
    # int8 matmuls where the CPU has them.
    return "CPUExecutionProvider", f"available: {', '.join(available)}"


def onnx_session(path: str, threads: int | None = None):
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=[onnx_provider()[0]])


def onnx_probs(session, tokens: TokenizedTexts, batch_size: int) -> np.ndarray:
    """Class probabilities for every text, in the input order (as `infer_probs`)."""

    def logits_of(ids, mask):
        return session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]

    return batched_probs(tokens, batch_size, logits_of)
