"""Writing where it cannot be written: a full disk (a 64 KB tmpfs) and a read-only file system, for every
command that writes. One line, exit 2, nothing half-written. The file systems are real mounts, so these
tests need the right to mount (root in a container that allows it; they skip where that is refused)."""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import cli_error
from safetensors.numpy import save_file

from sentitune.storage import writing


@pytest.fixture
def mounts(tmp_path):
    full, readonly = tmp_path / "full", tmp_path / "readonly"
    full.mkdir()
    readonly.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not allowed here: {done.stderr.decode().strip()}")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(readonly)], check=True)
    with open(full / "filler", "wb") as f:  # 8 KB stay free: room for a lock file, not for an output
        f.write(b"x" * (shutil.disk_usage(full).free - 8192))
    yield full, readonly
    subprocess.run(["umount", str(full)], check=True)
    subprocess.run(["umount", str(readonly)], check=True)


def commands(prepared: Path, run: Path, model: Path, out: Path) -> dict[str, list]:
    return {
        "prepare": ["prepare", prepared / "train.csv", "--output-dir", out],
        "train": ["train", "--data", prepared, "--model", model, "--job-dir", out, "--max-steps", "1"],
        "predict": [
            "predict",
            run,
            "--input",
            prepared / "train.csv",
            "--output",
            out / "labelled.csv",
            "--prefix",
            "pred_",
        ],
        "evaluate": ["evaluate", run, "--data", prepared / "test.csv", "--output-dir", out],
        "export": ["export", run, "--output-dir", out],
        "baseline": ["baseline", "--data", prepared, "--job-dir", out],
    }


@pytest.mark.parametrize("command", ["prepare", "train", "predict", "evaluate", "export", "baseline"])
def test_a_full_disk_is_one_line_and_leaves_nothing(
    mounts, capsys, prepared, trained_run, tiny_model, command
):
    full, _ = mounts
    message = cli_error(capsys, *commands(prepared, trained_run, tiny_model, full / "out")[command])
    assert message.startswith("cannot write "), message
    assert message.endswith(
        ": No space left on device; free space or choose another output (nothing was left half-written)"
    ), message
    assert [p.name for p in full.iterdir()] == ["filler"], "no staging folder, partial file or lock is left"


@pytest.mark.parametrize("command", ["prepare", "train", "predict", "evaluate", "export", "baseline"])
def test_a_read_only_destination_is_one_line(mounts, capsys, prepared, trained_run, tiny_model, command):
    _, readonly = mounts
    out = readonly / "out"
    message = cli_error(capsys, *commands(prepared, trained_run, tiny_model, out)[command])
    target = out / "labelled.csv" if command == "predict" else out
    assert message == f"cannot write {target}: Read-only file system ({readonly}); choose another output"


def test_the_mount_fixture_really_fills_up(mounts):
    full, _ = mounts
    with pytest.raises(OSError, match="No space left"):
        (full / "big").write_bytes(b"x" * 20_000)
    (full / "big").unlink()
    assert shutil.disk_usage(full).free <= 8192


def test_a_safetensors_write_on_a_full_disk_is_the_oserror_it_is(mounts):
    """safetensors raises its own exception type for ENOSPC; every model writer goes through `writing`,
    which turns it into the OSError the CLI reports in one line (whichever file a command writes first)."""
    full, _ = mounts
    with pytest.raises(OSError) as raised, writing(full):
        save_file({"w": np.zeros(10_000, dtype=np.float64)}, str(full / "w.safetensors"))
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename == str(full)
