"""Logs as Cloud Logging reads them off a terminal (one JSON object per line with its severity), plain
lines on a terminal, SENTITUNE_LOG_FORMAT to choose."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from sentitune.logs import log_format


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "env, stream, expected",
    [
        ({}, Terminal(), "text"),
        ({}, io.StringIO(), "json"),
        ({"SENTITUNE_LOG_FORMAT": "json"}, Terminal(), "json"),
        ({"SENTITUNE_LOG_FORMAT": "TEXT"}, io.StringIO(), "text"),
        ({"SENTITUNE_LOG_FORMAT": "xml"}, io.StringIO(), "json"),
    ],
)
def test_the_format_follows_the_terminal_unless_chosen(env, stream, expected):
    assert log_format(env, stream) == expected


def run_prepare(tmp_path, prepared, **env) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "sentitune", "prepare", str(prepared / "train.csv"), "--output-dir"]
    return subprocess.run(
        [*command, str(tmp_path / f"out-{len(env)}")],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_a_command_off_a_terminal_logs_json_lines_with_their_severity(tmp_path, prepared):
    done = run_prepare(tmp_path, prepared)
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stderr.splitlines()]  # every line is one JSON object
    assert entries and {e["severity"] for e in entries} == {"INFO"}
    assert all(e["logger"].startswith("sentitune") and e["time"].endswith("+00:00") for e in entries)
    assert any(e["message"].startswith("labels: {") for e in entries)  # the label rule prepare chose


def test_text_logs_when_asked(tmp_path, prepared):
    """(That a failed command's error stays one plain line off a terminal, where logs are JSON, is
    test_errors.py's test_console_script_reports_a_bad_input_in_one_line.)"""
    done = run_prepare(tmp_path, prepared, SENTITUNE_LOG_FORMAT="text")
    assert done.returncode == 0 and done.stderr
    assert not any(line.startswith("{") for line in done.stderr.splitlines())
