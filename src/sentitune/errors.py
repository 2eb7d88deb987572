"""The one exception type a user's mistake becomes; the CLI turns it into `error: ...` and exit 2."""


class SentituneError(Exception):
    """A problem with the user's input or environment, stated with what was found and how to fix it."""


def short(value, limit: int = 200) -> str:
    """User data quoted in a message: at most `limit` characters (a 50 MB line must not become the error)."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def raise_problems(problems: list[str], what: str) -> None:
    """Report every problem found at once (`invalid train options: a; b`), or nothing when there are none."""
    if problems:
        raise SentituneError(f"invalid {what}: " + "; ".join(problems))


def require_extra(module: str, extra: str, purpose: str):
    """Import an optional dependency or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SentituneError(
            f"{purpose} needs the Python package '{module}', which is not installed; "
            f"run: pip install 'sentitune[{extra}]'"
        ) from exc


class Preempted(SentituneError):
    """Training stopped on SIGTERM after saving a checkpoint; the same command resumes it."""

    exit_code = 143  # 128 + SIGTERM, what a process killed by the signal would report
