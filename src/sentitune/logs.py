"""How sentitune logs: plain lines on a terminal; off a terminal (a cloud job, a pipe, a file) one JSON
object per line with the fields Cloud Logging reads (`severity`, `message`), so a Vertex AI job's INFO
lines are not all shown as errors. SENTITUNE_LOG_FORMAT=text|json chooses explicitly."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the fields Cloud Logging reads (`severity`, `message`)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "severity": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "json_fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_format(env=os.environ, stream=sys.stderr) -> str:
    """'json' or 'text': SENTITUNE_LOG_FORMAT when set to one of them, else text on a terminal only."""
    chosen = env.get("SENTITUNE_LOG_FORMAT", "").strip().lower()
    if chosen in FORMATS:
        return chosen
    return "text" if stream.isatty() else "json"


def configure(level: int, fmt: str) -> None:
    """The root logger's one stderr handler, in `fmt`, unless logging was set up already (an embedding
    application's, or a test runner's capture)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        formatter = (
            JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
        )
        handler.setFormatter(formatter)
        root.addHandler(handler)
        root.setLevel(level)
    logging.getLogger("sentitune").setLevel(level)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    if fmt == "json":
        logging.captureWarnings(True)  # Python's warnings as log entries too, not bare stderr lines


def use_json_logs() -> None:
    """Every log line on stderr as JSON, uvicorn's and Python warnings included (the server, always)."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
        root.setLevel(logging.INFO)
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
    logging.captureWarnings(True)
