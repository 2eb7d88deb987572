"""The bad-input corpus (bad_inputs.py) through the real command line: every case ends in exactly its one
`error: ...` line with exit 2 and nothing written, or in a checked result. No traceback, no exit 0 with
garbage."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import pytest
from bad_inputs import MODEL, RUN, Case, cases

from sentitune.cli import main

CASES = cases()


@pytest.fixture(scope="module", autouse=True)
def fixtures_for_the_corpus(tiny_model, trained_run):
    MODEL[:] = [tiny_model]
    RUN[:] = [trained_run]


def fill(value: str, tmp: Path, places: dict[str, str]) -> str:
    return value.replace("{tmp}", str(tmp)).format_map({**places, "tmp": str(tmp)}) if "{" in value else value


def test_the_corpus_is_large_and_covers_every_command():
    assert len(CASES) >= 60
    commands = {c.argv[0] for c in CASES}
    assert {"prepare", "train", "evaluate", "predict", "export", "serve", "baseline", "cloud"} <= commands


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path, monkeypatch, capsys, request):
    places = {}
    if "run" in case.needs and "run" not in case.files:  # else the case writes its own (broken) copy
        places["run"] = str(shutil.copytree(request.getfixturevalue("trained_run"), tmp_path / "run"))
    if "data" in case.needs:
        places["data"] = str(request.getfixturevalue("prepared"))
    if "model" in case.needs:
        places["model"] = str(request.getfixturevalue("tiny_model"))
    for name, write in case.files.items():
        write(tmp_path / name)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    before = {p.name for p in tmp_path.iterdir()}
    if case.stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(case.stdin), encoding="utf-8"))

    def placed(text: str) -> str:
        text = text.replace("{tmp}", str(tmp_path)).replace("{run}", places.get("run", ""))
        return text.replace("{data}", places.get("data", "")).replace("{model}", places.get("model", ""))

    argv = [placed(a) for a in case.argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    if case.error is None:
        assert code == 0, err
        case.check(tmp_path, out)
        return
    expected = placed(case.error)
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}, stderr:\n{err}"
    assert lines and lines[-1] == f"error: {expected}", f"stderr:\n{err}"
    assert [line for line in lines if line.startswith("error: ")] == [lines[-1]], err
    assert not [line for line in lines if line.startswith("usage:")], "one line, not argparse's usage block"
    assert out == "", "nothing on stdout"
    after = {p.name for p in tmp_path.iterdir()}
    assert after - before <= set(case.written), f"left behind: {sorted(after - before)}"
