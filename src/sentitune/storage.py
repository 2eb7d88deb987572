"""Paths and URLs through fsspec, and output folders that appear whole or not at all.

Every input and output of sentitune is a local path or an fsspec URL (gs://, s3://, https://,
memory://). Outputs are written to a local staging folder first and moved into place at the end,
the file that marks the folder as complete last, so a failed command leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import posixpath
import re
import shutil
import socket
import tempfile
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

import fsspec

from sentitune.errors import SentituneError

COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")  # suffixes fsspec decompresses on reading
# A full disk, a read-only or forbidden destination: the user's environment, told in one line (the CLI).
WRITE_FAILURES = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_OS_ERROR = re.compile(r"os error (\d+)")


@contextlib.contextmanager
def writing(path):
    """Writers that report a full disk in their own exception type (safetensors) report it as the
    OSError it is, so it becomes the one-line error every other writer's does."""
    try:
        yield
    except OSError:
        raise
    except Exception as exc:
        found = _OS_ERROR.search(str(exc))
        if found and int(found.group(1)) in WRITE_FAILURES:
            raise OSError(int(found.group(1)), os.strerror(int(found.group(1))), str(path)) from exc
        raise


# Storage libraries log their retries with tracebacks; their failures reach the user as one line of ours.
logging.getLogger("gcsfs").setLevel(logging.CRITICAL)
# fsspec protocol -> (package, extra) for the "pip install" hint when a backend is missing.
_BACKENDS = {"gs": ("gcsfs", "cloud"), "gcs": ("gcsfs", "cloud"), "s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3")}


def is_url(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def url_to_fs(path: str):
    """The fsspec filesystem and the path inside it, with a clear message when a backend is missing."""
    protocol = str(path).split("://", 1)[0] if "://" in str(path) else "file"
    if protocol in ("gs", "gcs"):
        reach_cloud_storage(os.environ.get("STORAGE_EMULATOR_HOST") or "https://storage.googleapis.com")
    try:
        return fsspec.core.url_to_fs(str(path))
    except (ImportError, ValueError) as exc:
        protocol = str(path).split("://", 1)[0]
        package, extra = _BACKENDS.get(protocol, (None, None))
        if package:
            raise SentituneError(
                f"cannot open {path}: the {protocol}:// backend needs '{package}'; "
                f"run: pip install 'sentitune[{extra}]'"
            ) from exc
        raise SentituneError(f"cannot open {path}: {exc}") from exc


PROBE_TIMEOUT_S = 5


@functools.cache  # once per endpoint and process; a failure is not cached
def reach_cloud_storage(url: str) -> None:
    """One TCP connection to Cloud Storage (or STORAGE_EMULATOR_HOST) before the first gs:// request:
    without network gcsfs retries for about a minute before it gives up; this fails in seconds."""
    endpoint = urllib.parse.urlsplit(url)
    host = endpoint.hostname or "storage.googleapis.com"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise SentituneError(
            f"cannot reach Cloud Storage at {host}:{port} ({exc.strerror or type(exc).__name__}); check the "
            "network connection"
            + (" and STORAGE_EMULATOR_HOST" if "STORAGE_EMULATOR_HOST" in os.environ else "")
        ) from None


def join(base: str, *parts: str) -> str:
    base = str(base)
    if is_url(base):
        return posixpath.join(base.rstrip("/"), *parts)
    return os.path.join(base, *parts)


def expand(patterns: Iterable[str]) -> list[str]:
    """Paths or URLs with their wildcards (*, ?, [..]) expanded, in order; a pattern matching nothing is
    an error, so a typo never becomes an empty run."""
    found: list[str] = []
    for pattern in patterns:
        pattern = str(pattern)
        if not any(c in pattern for c in "*?["):
            found.append(pattern)
            continue
        fs, inner = url_to_fs(pattern)
        listing = fs.glob(inner, detail=True)  # the listing says what is a folder: no request per match
        matches = sorted(p for p, info in listing.items() if info.get("type") != "directory")
        if not matches:
            raise SentituneError(f"no files match {pattern}")
        found += [fs.unstrip_protocol(p) if is_url(pattern) else p for p in matches]
    return list(dict.fromkeys(found))


def exists(path: str) -> bool:
    fs, inner = url_to_fs(path)
    try:
        return fs.exists(inner)
    except Exception as exc:  # a storage service that refuses us: say so instead of "missing"
        raise SentituneError(f"cannot reach {path}: {type(exc).__name__}: {exc}") from exc


def listdir_names(path: str) -> set[str]:
    fs, inner = url_to_fs(path)
    if not fs.isdir(inner):
        return set()
    return {posixpath.basename(p.rstrip("/")) for p in fs.ls(inner, detail=False)}


def open_input(path: str, mode: str = "rb", compression: str | None = "infer"):
    """Open an existing file for reading, or raise a one-line error naming it."""
    fs, inner = url_to_fs(path)
    try:
        if not fs.exists(inner):
            raise SentituneError(f"input not found: {path}; check the path or URL")
        if fs.isdir(inner):
            raise SentituneError(f"input {path} is a folder; pass the files inside it")
        return fsspec.open(str(path), mode, compression=compression).open()
    except SentituneError:
        raise
    except Exception as exc:
        raise SentituneError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc


def local_copy(path: str, cache_dir: str | None = None) -> str:
    """A local path for `path`: itself when local, else a downloaded copy of the file or folder."""
    if not is_url(path):
        return str(path)
    fs, inner = url_to_fs(path)
    target = Path(cache_dir or tempfile.mkdtemp(prefix="sentitune-"))
    if fs.isdir(inner):
        fs.get(inner.rstrip("/") + "/", str(target), recursive=True)
        return str(target)
    dest = target / posixpath.basename(inner)
    fs.get(inner, str(dest))
    return str(dest)


class OutputLock:
    """One writer at a time for an output: a lock file created atomically beside it, holding the owner's
    PID, host and start time. A lock whose owner is gone (same host, no such process) is stale and is
    taken over; a live owner's is refused with a one-line error. On object stores (gs://, s3://) the lock
    object is checked, then written: not atomic, but it stops the common case of two jobs started with
    one output."""

    def __init__(self, dest: str):
        self.dest = str(dest)
        self._remote = is_url(self.dest)
        if self._remote:  # beside the output, as locally
            self.fs, inner = url_to_fs(self.dest)
            parent, name = posixpath.split(inner.rstrip("/"))
            self.path = posixpath.join(parent, f".{name}.lock")
        else:  # beside the output, in the nearest folder that exists: no folder is made just for the lock
            target = Path(self.dest).absolute()
            parent = target.parent
            while not parent.exists():
                parent = parent.parent
            self.path = str(parent / ("." + str(target.relative_to(parent)).replace(os.sep, "%") + ".lock"))
        self.held = False

    def acquire(self) -> None:
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        for _ in range(3):
            if self._create(json.dumps(owner)):
                self.held = True
                return
            found = self._read()
            if found is not None and not self._stale(found):
                raise SentituneError(
                    f"{self.dest} is being written by another sentitune (pid {found.get('pid')} on "
                    f"{found.get('host')}, since {found.get('started')}); wait for it to finish, or remove "
                    f"{self._shown()} if that process is gone"
                )
            self._remove()  # stale: its owner died without cleaning up
        raise SentituneError(
            f"cannot lock {self.dest}: {self._shown()} keeps reappearing; remove it and retry"
        )

    def release(self) -> None:
        if self.held:
            self._remove()
            self.held = False

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _create(self, content: str) -> bool:
        if self._remote:
            if self.fs.exists(self.path):
                return False
            self.fs.pipe_file(self.path, content.encode())
            return True
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:  # a read-only or forbidden place: the output cannot be written either
            raise SentituneError(
                f"cannot write {self.dest}: {exc.strerror} ({os.path.dirname(self.path)}); choose another output"
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(content)
        return True

    def _read(self) -> dict | None:
        try:
            raw = self.fs.cat_file(self.path) if self._remote else Path(self.path).read_bytes()
            return json.loads(raw)
        except (OSError, ValueError):
            return None  # vanished or half-written: treated as stale

    def _stale(self, owner: dict) -> bool:
        if owner.get("host") != socket.gethostname():
            return False  # another machine's process: we cannot tell whether it lives
        try:
            os.kill(int(owner.get("pid", 0)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, OverflowError):
            return False  # alive (another user's), or not a PID we can judge
        return False

    def _remove(self) -> None:
        try:
            self.fs.rm(self.path) if self._remote else os.remove(self.path)
        except (FileNotFoundError, OSError):
            pass

    def _shown(self) -> str:
        return self.fs.unstrip_protocol(self.path) if self._remote else self.path


class StagedOutput:
    """A destination folder filled through a local staging folder and committed at the end.

    `occupied_by` names the files whose presence means the folder already holds our output (a
    previous run, earlier splits); then we refuse unless `overwrite`, and with it the files named in
    `replaces` that the new output does not bring are removed at commit (no stale CSVs beside new
    Parquet files). Other files in the folder are never touched. `commit()` moves staged files into
    place with `marker` last, so a reader that sees the marker sees a complete folder. While the output
    is being written it is locked (`OutputLock`), and the staging and scratch folders a killed earlier
    writer left beside it are removed.
    """

    def __init__(
        self,
        dest: str,
        *,
        occupied_by: Iterable[str],
        marker: str,
        what: str,
        overwrite: bool,
        option: str = "the output folder",
        replaces: Iterable[str] = (),
        lock: bool = True,
    ):
        self.dest = str(dest)
        self.marker = marker
        self._remote = is_url(self.dest)
        self.replaces = set(replaces) if overwrite else set()
        if not self._remote and os.path.exists(self.dest) and not os.path.isdir(self.dest):
            raise SentituneError(f"{option} {self.dest} is a file, not a folder; pass a folder")
        taken = sorted(listdir_names(self.dest) & set(occupied_by)) if exists(self.dest) else []
        if taken and not overwrite:
            raise SentituneError(
                f"{self.dest} already holds {what} ({', '.join(taken[:4])}); "
                "pass --overwrite to replace it or choose another folder"
            )
        self.lock = OutputLock(self.dest) if lock else None
        if self.lock:
            self.lock.acquire()
        self._scratch: list[Path] = []
        if self._remote:
            self.root = Path(tempfile.mkdtemp(prefix="sentitune-staging-"))
        else:
            parent = Path(self.dest).resolve().parent
            while not parent.exists():  # missing parents are created at commit, not before
                parent = parent.parent
            self._parent, self._name = parent, Path(self.dest).name
            if self.lock:  # we are the only writer: what is staged beside it is a dead writer's
                for leftover in parent.glob(f".{self._name}.staging-*"):
                    shutil.rmtree(leftover, ignore_errors=True)
                for leftover in parent.glob(f".{self._name}.scratch-*"):
                    shutil.rmtree(leftover, ignore_errors=True)
            # Same filesystem as the destination, so the final move is a rename.
            self.root = Path(tempfile.mkdtemp(prefix=f".{self._name}.staging-", dir=parent))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.root, 0o777 & ~umask)  # mkdtemp's 0700 would become the output's mode
            self._file_mode = 0o666 & ~umask

    def scratch(self) -> Path:
        """A scratch folder for the writer's own temporary files, removed with the staging folder (and by
        the next writer, if this one is killed)."""
        if self._remote:
            folder = Path(tempfile.mkdtemp(prefix="sentitune-scratch-"))
        else:
            folder = Path(tempfile.mkdtemp(prefix=f".{self._name}.scratch-", dir=self._parent))
        self._scratch.append(folder)
        return folder

    def path(self, name: str) -> Path:
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def commit(self) -> str:
        files = sorted(p for p in self.root.rglob("*") if p.is_file())
        files.sort(key=lambda p: p.name == self.marker)  # marker last, order otherwise stable
        stale = self.replaces - {p.relative_to(self.root).as_posix() for p in files}
        if stale and exists(self.dest):
            fs, inner = url_to_fs(self.dest)
            for name in sorted(stale):  # before the marker lands: a reader never sees old beside new
                target = posixpath.join(inner, name) if self._remote else os.path.join(self.dest, name)
                if fs.exists(target):
                    fs.rm(target)
        if self._remote:
            fs, inner = url_to_fs(self.dest)
            for p in files:
                fs.put_file(str(p), posixpath.join(inner, p.relative_to(self.root).as_posix()))
            shutil.rmtree(self.root, ignore_errors=True)
        elif not os.path.exists(self.dest):
            for p in files:  # some writers (safetensors) create files as 0600
                os.chmod(p, self._file_mode)
            Path(self.dest).parent.mkdir(parents=True, exist_ok=True)
            os.rename(self.root, self.dest)
        else:
            for p in files:
                os.chmod(p, self._file_mode)
                target = Path(self.dest) / p.relative_to(self.root)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(p, target)
            shutil.rmtree(self.root, ignore_errors=True)
        self._finish()
        return self.dest

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self._finish()

    def _finish(self) -> None:
        for folder in self._scratch:
            shutil.rmtree(folder, ignore_errors=True)
        if self.lock:
            self.lock.release()

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.discard()  # after a commit there is nothing left to discard; the lock goes either way
