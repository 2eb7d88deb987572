"""Paths and URLs through fsspec, and output folders that appear whole or not at all.

Every input and output of sentitune is a local path or an fsspec URL (gs://, s3://, https://,
memory://). Outputs are written to a local staging folder first and moved into place at the end,
the file that marks the folder as complete last, so a failed command leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
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


def sha256_of(path: str) -> str:
    """The SHA-256 of a local file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


LOCK_UNREADABLE_GRACE_S = 60  # an unreadable lock younger than this may be one being created (NFS, FUSE)
# What a writer leaves beside its destination while it works: `.KEY.staging-*`, `.KEY.scratch-*`,
# `.KEY.partial-*` (a prediction file) and `.KEY.lock-tmp-PID` (a lock being created), KEY naming the
# destination as its lock `.KEY.lock` does.
_LEFTOVER = re.compile(r"^\.(?P<key>.+)\.(?:staging|scratch|partial)-[^/]*$|^\.(?P<tmpkey>.+)\.lock-tmp-\d+$")
COMMAND_RECORD = ".sentitune-output.json"  # in every output folder: which command wrote it


def real_destination(dest: str) -> tuple[Path, Path, str]:
    """The destination a local path names, whatever its spelling (symlinks, `..`, relative), the nearest
    folder of it that exists, and the key its lock and leftovers are named by in that folder."""
    real = Path(os.path.realpath(dest))
    parent = real.parent
    while not parent.exists():
        parent = parent.parent
    return real, parent, str(real.relative_to(parent)).replace(os.sep, "%")


def _process_start(pid: int) -> str | None:
    """When a process started (Linux: clock ticks since boot), to tell a live owner from a new process
    that reuses a dead owner's PID; None where /proc cannot say."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class OutputLock:
    """One writer at a time for an output: a lock file beside the real destination (symlinks and `..`
    resolved, so every spelling of one folder meets the same lock), holding the owner's PID, host,
    process start and start time. It appears whole: written under a temporary name, then linked into
    place, which fails if a lock exists. A lock whose owner is gone (same host, no such process, or a new
    process with its PID) is stale and is taken over; a live owner's is refused with a one-line error. On
    object stores (gs://, s3://) the lock object is checked, then written: not atomic, but it stops the
    common case of two jobs started with one output."""

    def __init__(self, dest: str):
        self.dest = str(dest)
        self._remote = is_url(self.dest)
        if self._remote:  # beside the output, as locally
            self.fs, inner = url_to_fs(self.dest)
            parent, name = posixpath.split(inner.rstrip("/"))
            self.path = posixpath.join(parent, f".{name}.lock")
        else:  # beside the output, in the nearest folder that exists: no folder is made just for the lock
            _, self.parent, self.key = real_destination(self.dest)
            self.path = str(self.parent / f".{self.key}.lock")
        self.held = False

    def acquire(self) -> None:
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "process_start": _process_start(os.getpid()),
        }
        for _ in range(3):
            if self._create(json.dumps(owner)):
                self.held = True
                if not self._remote:
                    remove_leftovers(self.parent, own_key=self.key)
                return
            found = self._read()
            if found is None:
                continue  # released between our try and our read: try again
            if not self._stale(found):
                if not found:
                    raise SentituneError(
                        f"{self.dest} is locked by {self._shown()}, which cannot be read; remove it if no "
                        "sentitune is writing there"
                    )
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
        tmp = f"{self.parent}/.{self.key}.lock-tmp-{os.getpid()}"
        try:
            with open(tmp, "w") as f:
                f.write(content)
            os.chmod(tmp, 0o644)
            try:
                os.link(tmp, self.path)  # atomic, and the lock is whole the moment it exists
            except FileExistsError:
                return False
            except OSError:  # a filesystem without hard links: create exclusively, then fill
                return self._create_exclusive(content)
            return True
        except OSError as exc:  # a read-only or forbidden place: the output cannot be written either
            raise SentituneError(
                f"cannot write {self.dest}: {exc.strerror} ({self.parent}); choose another output"
            ) from None
        finally:
            with contextlib.suppress(OSError):
                os.remove(tmp)

    def _create_exclusive(self, content: str) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(content)
        return True

    def _read(self) -> dict | None:
        """The owner; None when the lock is gone, {} when it cannot be read."""
        try:
            raw = self.fs.cat_file(self.path) if self._remote else Path(self.path).read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            owner = json.loads(raw)
        except ValueError:
            return {}
        return owner if isinstance(owner, dict) else {}

    def _stale(self, owner: dict) -> bool:
        if not owner:  # unreadable: being created by a writer without hard links, or left corrupt
            try:
                age = time.time() - (
                    self.fs.modified(self.path).timestamp() if self._remote else os.path.getmtime(self.path)
                )
            except (OSError, NotImplementedError, AttributeError):
                return False
            return age > LOCK_UNREADABLE_GRACE_S
        return owner_is_gone(owner)

    def _remove(self) -> None:
        try:
            self.fs.rm(self.path) if self._remote else os.remove(self.path)
        except (FileNotFoundError, OSError):
            pass

    def _shown(self) -> str:
        return self.fs.unstrip_protocol(self.path) if self._remote else self.path


def owner_is_gone(owner: dict) -> bool:
    """Whether the process a lock names has ended: only decidable on this host."""
    if owner.get("host") != socket.gethostname():
        return False  # another machine's process: we cannot tell whether it lives
    try:
        pid = int(owner.get("pid", 0))
        if pid <= 0:
            return False
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError, TypeError):
        return False  # alive (another user's), or not a PID we can judge
    recorded, now = owner.get("process_start"), _process_start(pid)
    return recorded is not None and now is not None and recorded != now  # the PID was reused


def remove_leftovers(folder: Path, own_key: str | None = None) -> None:
    """Remove what killed writers left in `folder` (staging, scratch, partial files, half-made locks):
    anything whose destination has no live lock, and whatever is named after `own_key`, whose lock the
    caller holds. Says what it removed."""
    removed, size = [], 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        found = _LEFTOVER.match(entry.name)
        if not found:
            continue
        key = found.group("key") or found.group("tmpkey")
        if found.group("tmpkey") is not None:
            pid = int(entry.name.rsplit("-", 1)[1])
            if pid == os.getpid() or not owner_is_gone({"pid": pid, "host": socket.gethostname()}):
                continue
        elif key != own_key and not _lock_is_dead(folder / f".{key}.lock"):
            continue
        size += _size_of(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(entry.path)
        removed.append(entry.name)
    if removed:
        logging.getLogger("sentitune").warning(
            "removed %d leftover(s) of killed writers in %s (%.1f MB): %s",
            len(removed),
            folder,
            size / 1e6,
            ", ".join(sorted(removed)[:5]) + (" ..." if len(removed) > 5 else ""),
        )


def _lock_is_dead(lock: Path) -> bool:
    """No lock, or one whose owner is gone (a stale lock itself is taken over by the next writer)."""
    try:
        owner = json.loads(lock.read_bytes())
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False  # unreadable: perhaps being created; leave its files alone
    return isinstance(owner, dict) and owner_is_gone(owner)


def _size_of(path: str) -> int:
    if not os.path.isdir(path) or os.path.islink(path):
        with contextlib.suppress(OSError):
            return os.lstat(path).st_size
        return 0
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


class StagedOutput:
    """A destination folder filled through a local staging folder and committed at the end.

    The destination is locked first (`OutputLock`, on its real path), then examined: `occupied_by` names
    the files whose presence means the folder already holds our output (a previous run, earlier splits);
    then we refuse unless `overwrite`, and with it the files named in `replaces` that the new output does
    not bring are removed at commit (no stale CSVs beside new Parquet files). A folder another command
    wrote (its `COMMAND_RECORD`, or for older folders the file only that command writes) is refused
    whatever `overwrite` says. Other files in the folder are never touched. `commit()` moves staged files
    into place with `marker` last, so a reader that sees the marker sees a complete folder.
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
        command: str | None = None,
    ):
        self.dest = str(dest)
        self.marker = marker
        self.command = command
        self._remote = is_url(self.dest)
        self.replaces = set(replaces) if overwrite else set()
        if not self._remote:
            self.real, self._parent, self._key = real_destination(self.dest)
        self.lock = OutputLock(self.dest) if lock else None
        if self.lock:
            self.lock.acquire()  # before looking: a writer that finishes meanwhile is seen, not replaced
        try:
            refuse_occupied(self.dest, occupied_by, what, overwrite, command, option)
        except BaseException:
            if self.lock:
                self.lock.release()
            raise
        self._scratch: list[Path] = []
        if self._remote:
            self.root = Path(tempfile.mkdtemp(prefix="sentitune-staging-"))
        else:
            # Same filesystem as the destination, so the final move is a rename.
            self.root = Path(tempfile.mkdtemp(prefix=f".{self._key}.staging-", dir=self._parent))
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
            folder = Path(tempfile.mkdtemp(prefix=f".{self._key}.scratch-", dir=self._parent))
        self._scratch.append(folder)
        return folder

    def path(self, name: str) -> Path:
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def commit(self) -> str:
        if self.command:
            self.path(COMMAND_RECORD).write_text(
                json.dumps({"command": self.command}) + "\n"
            )  # no time: reruns stay byte-identical
        files = sorted(p for p in self.root.rglob("*") if p.is_file())
        files.sort(key=lambda p: p.name == self.marker)  # marker last, order otherwise stable
        stale = self.replaces - {p.relative_to(self.root).as_posix() for p in files}
        if stale and exists(self.dest):
            fs, inner = url_to_fs(self.dest)
            for name in sorted(stale):  # before the marker lands: a reader never sees old beside new
                target = posixpath.join(inner, name) if self._remote else os.path.join(self.real, name)
                if fs.exists(target):
                    fs.rm(target)
        if self._remote:
            fs, inner = url_to_fs(self.dest)
            for p in files:
                fs.put_file(str(p), posixpath.join(inner, p.relative_to(self.root).as_posix()))
            shutil.rmtree(self.root, ignore_errors=True)
        elif not self.real.exists():
            for p in files:  # some writers (safetensors) create files as 0600
                os.chmod(p, self._file_mode)
            self.real.parent.mkdir(parents=True, exist_ok=True)
            os.rename(self.root, self.real)
        else:
            for p in files:
                os.chmod(p, self._file_mode)
                target = self.real / p.relative_to(self.root)
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


def refuse_occupied(
    dest: str,
    occupied_by: Iterable[str],
    what: str,
    overwrite: bool,
    command: str | None = None,
    option: str = "the output folder",
) -> None:
    """The checks a writer of `dest` makes before writing (StagedOutput makes them under its lock; a dry
    run makes them alone): a folder, not a file; not another command's output (`written_by`); not already
    holding our output (`occupied_by`) unless `overwrite`."""
    if not is_url(dest) and os.path.exists(dest) and not os.path.isdir(dest):
        raise SentituneError(f"{option} {dest} is a file, not a folder; pass a folder")
    present = listdir_names(dest) if exists(dest) else set()
    if command and present:
        other = written_by(dest, present)
        if other and other != command:
            raise SentituneError(
                f"{dest} holds the output of `sentitune {other}`; `sentitune {command}` does not write "
                "into another command's folder: choose another folder"
            )
    taken = sorted(present & set(occupied_by))
    if taken and not overwrite:
        raise SentituneError(
            f"{dest} already holds {what} ({', '.join(taken[:4])}); pass --overwrite to replace it or "
            "choose another folder"
        )


# For folders written before COMMAND_RECORD: the file only one command writes names that command.
_LEGACY_MARKS = (
    ("run_config.json", "train"),  # first: a run trained with --baseline also holds baseline.json
    ("prepare_report.json", "prepare"),
    ("export_report.json", "export"),
    ("baseline.json", "baseline"),
    ("predictions.csv", "evaluate"),
)


def written_by(folder: str, names: set[str] | None = None) -> str | None:
    """The command whose output `folder` holds, or None for a folder of none of ours."""
    names = listdir_names(folder) if names is None else names
    if COMMAND_RECORD in names:
        try:
            with open_input(join(folder, COMMAND_RECORD)) as f:
                command = json.loads(f.read()).get("command")
            if isinstance(command, str):
                return command
        except (SentituneError, ValueError, AttributeError):
            pass
    for mark, command in _LEGACY_MARKS:
        if mark in names:
            return command
    return None
