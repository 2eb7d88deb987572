"""The precision policy (one decision table for every device), `sentitune env`, and the bf16 path run for
real on any CPU (emulated where the CPU has no native bf16: slow, but fine at the tiny model's size)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli, cli_error, train_tiny

from sentitune import LABELS
from sentitune.errors import SentituneError
from sentitune.runtime import Capabilities, capabilities, choose_precision, cpu_features
from sentitune.scoring import Predictor

CPU_AVX2 = Capabilities("cpu", "AMD EPYC", cpu_native_bf16=False)
CPU_AMX = Capabilities("cpu", "Intel Xeon", cpu_native_bf16=True)
MPS = Capabilities("mps", "MPS")


def gpu(name: str, major: int, minor: int) -> Capabilities:
    return Capabilities("cuda", name, (major, minor))


H100, A100, L4 = gpu("NVIDIA H100", 9, 0), gpu("NVIDIA A100", 8, 0), gpu("NVIDIA L4", 8, 9)
T4, V100, P100 = gpu("Tesla T4", 7, 5), gpu("Tesla V100", 7, 0), gpu("Tesla P100", 6, 0)


@pytest.mark.parametrize(
    "caps, requested, name, scaler",
    [
        (H100, "auto", "bf16", False),
        (A100, "auto", "bf16", False),
        (L4, "auto", "bf16", False),
        (T4, "auto", "fp16", True),
        (V100, "auto", "fp16", True),
        (P100, "auto", "fp16", True),
        (CPU_AMX, "auto", "bf16", False),
        (CPU_AVX2, "auto", "fp32", False),
        (MPS, "auto", "fp32", False),
        (T4, "fp32", "fp32", False),
        (H100, "fp16", "fp16", True),
        (CPU_AVX2, "bf16", "bf16", False),
        (CPU_AMX, "fp32", "fp32", False),
        (CPU_AVX2, "fp16", "fp16", True),
    ],
)
def test_the_decision_table(caps, requested, name, scaler):
    chosen = choose_precision(requested, caps, environ={})
    assert (chosen.name, chosen.needs_grad_scaler) == (name, scaler)
    assert chosen.dtype == {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
    if requested != "auto":
        assert chosen.reason.startswith(f"set by --precision {requested}")


def test_the_reasons_name_the_device():
    assert str(choose_precision("auto", T4, environ={})) == (
        "fp16 (Tesla T4, compute capability 7.5, has no native bf16: fp16 with a gradient scaler)"
    )
    assert str(choose_precision("auto", CPU_AVX2, environ={})) == (
        "fp32 (this CPU has neither AVX512-BF16 nor AMX: bf16 would be emulated, far slower)"
    )
    assert "emulates bf16" in choose_precision("bf16", CPU_AVX2, environ={}).reason
    assert "emulates" not in choose_precision("bf16", CPU_AMX, environ={}).reason


def test_bf16_on_a_gpu_without_it_is_refused():
    with pytest.raises(SentituneError) as caught:
        choose_precision("bf16", T4, environ={})
    assert str(caught.value) == (
        "--precision bf16: Tesla T4, compute capability 7.5, has no native bf16 (it needs compute "
        "capability 8.0 or newer); use --precision fp16 (with a gradient scaler) or auto"
    )


def test_the_environment_variable_sets_what_auto_means_and_the_option_wins():
    env = {"SENTITUNE_PRECISION": "fp32"}
    assert str(choose_precision("auto", H100, environ=env)) == "fp32 (set by SENTITUNE_PRECISION=fp32)"
    assert choose_precision("bf16", CPU_AMX, environ=env).name == "bf16"
    assert choose_precision("auto", CPU_AMX, environ={"SENTITUNE_PRECISION": "auto"}).name == "bf16"
    with pytest.raises(SentituneError, match="^SENTITUNE_PRECISION=bf16: Tesla T4"):
        choose_precision("auto", T4, environ={"SENTITUNE_PRECISION": "bf16"})


def test_an_unknown_precision_in_the_environment_stops_a_command(
    capsys, monkeypatch, tmp_path, prepared, tiny_model
):
    monkeypatch.setenv("SENTITUNE_PRECISION", "fp64")
    message = cli_error(
        capsys, "train", "--data", prepared, "--model", tiny_model, "--job-dir", tmp_path / "run"
    )
    assert message == "SENTITUNE_PRECISION=fp64: unknown precision; choose one of auto, fp32, bf16, fp16"
    assert not (tmp_path / "run").exists()


def cpuinfo_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads Linux's /proc/cpuinfo")
def test_this_cpu_is_read_as_the_kernel_reports_it():
    flags = cpuinfo_flags()
    caps = capabilities(torch.device("cpu"))
    assert caps.native_bf16 == bool({"avx512_bf16", "amx_tile"} & flags)
    features = cpu_features()
    assert ("AVX2" in features) == ("avx2" in flags)
    assert ("AMX" in features) == ("amx_tile" in flags)
    assert ("AVX512-BF16" in features) == ("avx512_bf16" in flags)


def test_env_reports_what_the_commands_pick_here(capsys, monkeypatch):
    monkeypatch.delenv("SENTITUNE_PRECISION", raising=False)
    code, out, err = cli(capsys, "env", "--json")
    assert code == 0, err
    found = json.loads(out)
    assert found["packages"]["torch"] == torch.__version__
    assert found["cpu"]["native_bf16"] == capabilities(torch.device("cpu")).native_bf16
    assert found["cpu"]["cores"] >= 1 and found["cpu"]["features"] == cpu_features()
    choice = found["choices"]["torch"]
    assert choice["commands"] == ["train", "evaluate", "predict", "serve"]
    expected = choose_precision("auto", capabilities(torch.device(choice["device"])), environ={})
    assert (choice["precision"], choice["precision_reason"]) == (expected.name, expected.reason)
    assert choice["threads"] == torch.get_num_threads()
    assert found["choices"]["onnx"]["execution_provider"] == "CPUExecutionProvider"
    assert found["extras"]["serve"] is True  # the dev install has every extra the tests use

    monkeypatch.setenv("SENTITUNE_PRECISION", "fp16")
    code, out, _ = cli(capsys, "env")
    assert code == 0
    assert "  precision: fp16 (set by SENTITUNE_PRECISION=fp16; with a gradient scaler when training)" in out
    assert f"CPU: {found['cpu']['model']}" in out


def test_env_json_in_a_fresh_process_is_one_object():
    done = subprocess.run(
        [sys.executable, "-m", "sentitune", "env", "--json"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) == {
        "sentitune",
        "python",
        "platform",
        "packages",
        "extras",
        "cpu",
        "gpus",
        "choices",
    }


def test_torch_kernels_held_to_avx2_mean_no_native_bf16_and_auto_picks_fp32():
    # ATEN_CPU_CAPABILITY=avx2 emulates bf16 in torch's kernels whatever the CPU has (an AMX Xeon too)
    env = {k: v for k, v in os.environ.items() if k != "SENTITUNE_PRECISION"} | {
        "ATEN_CPU_CAPABILITY": "avx2"
    }
    done = subprocess.run(
        [sys.executable, "-m", "sentitune", "env", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["cpu"]["torch_kernels"] == "AVX2"
    assert found["cpu"]["native_bf16"] is False
    if found["choices"]["torch"]["device"] == "cpu":
        assert found["choices"]["torch"]["precision"] == "fp32"


# ----------------------------------------------------------------------------- the bf16 path, on any CPU


@pytest.fixture(scope="module")
def texts(corpus) -> list[str]:
    return corpus["text"].tolist()[:60]


@pytest.fixture(scope="module")
def uncalibrated_run(tmp_path_factory, tiny_model, prepared):
    """A short run without temperature scaling: its scores as trained (calibration would flatten this
    near-random model's scores towards uniform), at a learning rate that moves it off uniform in 6 steps."""
    run = train_tiny(
        tmp_path_factory.mktemp("uncalibrated") / "run", tiny_model, prepared, calibration="none",
        learning_rate=1e-3,
    )  # fmt: skip
    return run


def test_bf16_inference_gives_the_fp32_labels_and_nearly_its_probabilities(uncalibrated_run, texts):
    fp32 = Predictor(str(uncalibrated_run), device="cpu", precision="fp32").probabilities(texts)
    bf16 = Predictor(str(uncalibrated_run), device="cpu", precision="bf16")
    assert bf16.precision.name == "bf16"
    probs = bf16.probabilities(texts)
    np.testing.assert_allclose(probs, fp32, atol=1e-2)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    # A label may flip only where fp32 itself is within bf16's rounding (~4e-5 here) of a tie; the
    # tiny model, 6 steps from random, puts its top two classes ~6e-3 apart.
    top_two = np.sort(fp32, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 2e-4
    assert clear.mean() > 0.5
    assert (probs.argmax(axis=1) == fp32.argmax(axis=1))[clear].all()


def test_bf16_from_the_command_line_matches_the_bf16_predictor(capsys, trained_run, texts):
    code, out, err = cli(capsys, "predict", trained_run, "--precision", "bf16", *texts[:10])
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    expected = Predictor(str(trained_run), precision="bf16").predict(texts[:10])
    for row, want in zip(rows, expected, strict=True):
        assert row["label"] in LABELS
        # The same text may share its batch with other texts here than there (padding width): bf16
        # rounds those differently, by ~1e-5 to 1e-4.
        assert row["scores"] == pytest.approx(want.scores, abs=1e-3)


def test_bf16_training_records_its_precision_and_learns(tmp_path, capsys, caplog, prepared, tiny_model):
    caplog.set_level(logging.INFO, logger="sentitune")
    code, _, err = cli(
        capsys,
        *("train", "--data", prepared, "--model", tiny_model, "--job-dir", tmp_path / "run"),
        *("--precision", "bf16", "--max-steps", "6", "--batch-size", "16", "--train-eval-examples", "0"),
    )
    assert code == 0, err
    assert "precision bf16 (set by --precision bf16" in caplog.text
    environment = json.loads((tmp_path / "run" / "run_config.json").read_text())["environment"]
    assert environment["precision"] == "bf16"
    assert environment["precision_reason"].startswith("set by --precision bf16")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert np.isfinite(metrics["val"]["loss"]) and metrics["training"]["steps"] == 6
