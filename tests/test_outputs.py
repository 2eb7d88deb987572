"""Every writing command through the one output mechanism: the lock is on the real destination whatever
its spelling, a lock appears whole, a killed writer's leftovers go with the next writer in that folder,
every output folder records its command and no other command writes into it, several outputs of one
command land together or not at all, and a prediction file has an ordinary file's mode."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
from helpers import cli, cli_error, snapshot, walkthrough_frame

from sentitune.storage import COMMAND_RECORD, LOCK_UNREADABLE_GRACE_S, OutputLock


@pytest.fixture()
def workspace(tmp_path, corpus, prepared, trained_run) -> dict:
    """Inputs for every writer, and each writer's finished output in tmp/out-COMMAND."""
    walkthrough_frame(corpus).head(300).to_csv(tmp_path / "posts.csv", index=False)
    (tmp_path / "texts.csv").write_text("text\nwhat a great day\nthe worst service\n")
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (tmp_path / "sub").mkdir()
    return {"tmp": tmp_path, "prepared": prepared, "run": run}


def command_for(name: str, w: dict, dest: str) -> list:
    """The command line of writer `name` writing to `dest` (with --overwrite: only the lock may stop it)."""
    tmp, run, prepared = w["tmp"], w["run"], w["prepared"]
    return {
        "prepare": ["prepare", tmp / "posts.csv", "--output-dir", dest],
        "train": ["train", "--data", prepared, "--model", run, "--job-dir", dest, "--max-steps", "1"],
        "evaluate": ["evaluate", run, "--data", prepared / "test.csv", "--output-dir", dest],
        "predict": ["predict", run, "--input", tmp / "texts.csv", "--output", dest],
        "export": ["export", run, "--output-dir", dest],
        "baseline": ["baseline", "--data", prepared, "--job-dir", dest],
        "select": ["select", run, "--pool", tmp / "texts.csv", "--n", "1", "--output-dir", dest],
        "distill": ["distill", "--teacher", run, "--data", prepared, "--job-dir", dest, "--max-steps", "1"]
        + ["--student", run, "--cache-dir", tmp / "cache"],
    }[name] + ["--overwrite"]


WRITERS = ["prepare", "train", "evaluate", "predict", "export", "baseline", "select", "distill"]


def spellings(tmp: Path, name: str) -> dict[str, str]:
    """Three other spellings of tmp/NAME: through a symlinked folder, through `..`, relative to the cwd."""
    link = tmp / "link"
    if not link.exists():
        link.symlink_to(tmp, target_is_directory=True)
    return {"symlink": str(link / name), "dotdot": str(tmp / "sub" / ".." / name), "relative": name}


@pytest.mark.parametrize("writer", WRITERS)
def test_a_writer_is_refused_through_every_alias_of_a_locked_output(writer, workspace, capsys, monkeypatch):
    if writer == "export":
        pytest.importorskip("onnx")
    tmp = workspace["tmp"]
    name = "out.csv" if writer == "predict" else f"out-{writer}"
    real = tmp / name
    if writer == "predict":
        real.write_text("text,label\nkept,positive\n")  # a finished output, to be kept intact
    else:
        real.mkdir()
        (real / "kept.txt").write_text("a finished output")
    before = snapshot(tmp) if writer != "predict" else real.read_bytes()
    monkeypatch.chdir(tmp)
    first = OutputLock(str(real))  # the first writer, alive, writing through the plain spelling
    first.acquire()
    try:
        for how, dest in spellings(tmp, name).items():
            message = cli_error(capsys, *command_for(writer, workspace, dest))
            assert f"{dest} is being written by another sentitune (pid {os.getpid()} on " in message, (
                how,
                message,
            )
        after = snapshot(tmp) if writer != "predict" else real.read_bytes()
        if writer != "predict":
            before = {k: v for k, v in before.items() if not k.startswith("link")}
            after = {k: v for k, v in after.items() if not k.startswith("link") and not k.endswith(".lock")}
        assert after == before
    finally:
        first.release()
    code, _, err = cli(capsys, *command_for(writer, workspace, spellings(tmp, name)["symlink"]))
    assert code == 0, err  # the lock gone, the same alias writes the real destination
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".")) == []


def test_a_half_written_lock_is_respected_while_young_and_taken_over_when_old(workspace, capsys):
    tmp = workspace["tmp"]
    out = tmp / "splits"
    lock = tmp / ".splits.lock"
    lock.write_text('{"pid": 12')  # a writer that has not finished writing its lock
    message = cli_error(capsys, "prepare", tmp / "posts.csv", "--output-dir", out)
    assert message == (
        f"{out} is locked by {lock}, which cannot be read; remove it if no sentitune is writing there"
    )
    assert not out.exists() and lock.read_text() == '{"pid": 12'
    old = time.time() - LOCK_UNREADABLE_GRACE_S - 5
    os.utime(lock, (old, old))
    code, _, err = cli(capsys, "prepare", tmp / "posts.csv", "--output-dir", out)
    assert code == 0, err
    assert (out / "train.csv").is_file() and not lock.exists()


def dead_owner() -> dict:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return {"pid": gone.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00+0000"}


def test_leftovers_of_killed_writers_of_other_outputs_go_and_a_live_writers_stay(workspace, capsys, caplog):
    tmp = workspace["tmp"]
    (tmp / ".old-run.lock").write_text(json.dumps(dead_owner()))  # killed while writing tmp/old-run
    staged = tmp / ".old-run.staging-abc123"
    staged.mkdir()
    (staged / "model.safetensors").write_bytes(b"\0" * 2_000_000)
    (tmp / ".gone.scratch-x1").mkdir()  # no lock at all: its writer is long gone
    (tmp / ".preds.csv.partial-q9").write_text("text,label\n")
    (tmp / f".x.lock-tmp-{dead_owner()['pid']}").write_text("{")
    live = OutputLock(str(tmp / "busy"))
    live.acquire()
    (tmp / ".busy.staging-live").mkdir()
    try:
        code, _, err = cli(capsys, "prepare", tmp / "posts.csv", "--output-dir", tmp / "splits")
        assert code == 0, err
        assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".")) == [
            ".busy.lock",
            ".busy.staging-live",
            ".old-run.lock",  # a stale lock is taken over by the next writer of old-run, not removed here
        ]
        warning = next(r.getMessage() for r in caplog.records if "leftover" in r.getMessage())
        assert warning.startswith(f"removed 4 leftover(s) of killed writers in {tmp} (2.0 MB): ")
    finally:
        live.release()


def test_a_prediction_file_has_an_ordinary_files_mode(workspace, capsys):
    tmp, run = workspace["tmp"], workspace["run"]
    umask = os.umask(0o022)
    try:
        code, _, err = cli(capsys, "predict", run, "--input", tmp / "texts.csv", "--output", tmp / "p.csv")
    finally:
        os.umask(umask)
    assert code == 0, err
    assert stat.S_IMODE((tmp / "p.csv").stat().st_mode) == 0o644


def test_every_output_folder_records_its_command_and_no_other_command_writes_into_it(workspace, capsys):
    tmp, prepared, run = workspace["tmp"], workspace["prepared"], workspace["run"]
    splits = tmp / "splits"
    assert cli(capsys, "prepare", tmp / "posts.csv", "--output-dir", splits)[0] == 0
    assert json.loads((splits / COMMAND_RECORD).read_text())["command"] == "prepare"
    before = snapshot(splits)
    for args in (
        ["train", "--data", splits, "--model", run, "--job-dir", splits, "--overwrite"],
        ["train", "--data", splits, "--model", run, "--job-dir", splits, "--dry-run"],
        ["baseline", "--data", splits, "--job-dir", splits, "--overwrite"],
        ["evaluate", run, "--data", prepared / "test.csv", "--output-dir", splits, "--overwrite"],
    ):
        message = cli_error(capsys, *args)
        assert message == (
            f"{splits} holds the output of `sentitune prepare`; `sentitune {args[0]}` does not write into "
            "another command's folder: choose another folder"
        )
    assert snapshot(splits) == before
    # a folder written before the record existed is known by the file only its command writes
    message = cli_error(capsys, "prepare", tmp / "posts.csv", "--output-dir", run, "--overwrite")
    assert message.startswith(f"{run} holds the output of `sentitune train`; `sentitune prepare` does not")


def test_several_evaluations_land_together_or_not_at_all(workspace, capsys):
    tmp, prepared, run = workspace["tmp"], workspace["prepared"], workspace["run"]
    broken = tmp / "broken"
    shutil.copytree(run, broken)
    (broken / "model.safetensors").write_bytes(b"not a model")
    out = tmp / "compared"
    message = cli_error(capsys, "evaluate", run, broken, "--data", prepared / "test.csv", "--output-dir", out)
    assert "broken" in message
    assert not out.exists()
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".")) == []
    (broken / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes())
    code, _, err = cli(capsys, "evaluate", run, broken, "--data", prepared / "test.csv", "--output-dir", out)
    assert code == 0, err
    for name in ("run", "broken"):
        assert json.loads((out / name / COMMAND_RECORD).read_text())["command"] == "evaluate"
        assert (out / name / "metrics.json").is_file()


# ----------------------------------------------------------------------------- artifacts of the run


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory, trained_run) -> Path:
    pytest.importorskip("onnx")
    from sentitune.config import ExportConfig
    from sentitune.export import export_onnx

    run = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(trained_run, run)
    export_onnx(ExportConfig(run_dir=str(run), parity_examples=50))
    return run


def other_weights(run: Path) -> None:
    """Make `run` another run: the same architecture, other weights."""
    from safetensors.torch import load_file, save_file

    weights = load_file(run / "model.safetensors")
    save_file(
        {k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}, run / "model.safetensors"
    )


def test_an_onnx_file_that_is_not_the_one_exported_is_refused_by_every_reader(exported_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    graph = run / "onnx" / "model.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])  # a copy cut short
    again = f"export it again: `sentitune export {run} --overwrite`"
    truncated = f"{run}/onnx/model.onnx is not the file exported (truncated or replaced: its SHA-256 differs); {again}"
    assert cli_error(capsys, "predict", run, "--backend", "onnx", "a post") == truncated
    (tmp_path / "l.csv").write_text("text,label\ngreat,positive\nawful,negative\nthe table,neutral\n")
    assert cli_error(capsys, "evaluate", run, "--data", tmp_path / "l.csv", "--backend", "onnx") == truncated
    assert not (run / "evaluation-l-onnx").exists()


def test_another_runs_export_is_refused_before_the_server_answers(exported_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    other_weights(run)  # the export beside it now belongs to another run
    message = cli_error(capsys, "serve", run, "--backend", "onnx", "--port", "0")
    assert message == (
        f"cannot serve {run}: {run}/onnx/model.onnx was exported from other weights than {run}'s; export it again: "
        f"`sentitune export {run} --overwrite`"
    )
    report = json.loads((run / "onnx" / "export_report.json").read_text())
    del report["weights_sha256"]  # an export that cannot say what it belongs to
    (run / "onnx" / "export_report.json").write_text(json.dumps(report))
    message = cli_error(capsys, "predict", run, "--backend", "onnx", "a post")
    assert message.startswith(
        f"{run}/onnx/model.onnx cannot be checked: onnx/export_report.json does not record"
    )
    code, _, err = cli(capsys, "export", run, "--overwrite", "--parity-examples", "20")
    assert code == 0, err
    code, out, err = cli(capsys, "predict", run, "--backend", "onnx", "a post")
    assert code == 0 and json.loads(out.splitlines()[0])["label"] in {"negative", "neutral", "positive"}, err
