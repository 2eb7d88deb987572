"""Paths and URLs through fsspec, and output folders that appear whole or not at all.

Every input and output of sentitune is a local path or an fsspec URL (gs://, s3://, https://,
memory://). Outputs are written to a local staging folder first and moved into place at the end,
the file that marks the folder as complete last, so a failed command leaves nothing half-written.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import fsspec

from sentitune.errors import SentituneError

COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")  # suffixes fsspec decompresses on reading
# fsspec protocol -> (package, extra) for the "pip install" hint when a backend is missing.
_BACKENDS = {"gs": ("gcsfs", "cloud"), "gcs": ("gcsfs", "cloud"), "s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3")}


def is_url(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def url_to_fs(path: str):
    """The fsspec filesystem and the path inside it, with a clear message when a backend is missing."""
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


class StagedOutput:
    """A destination folder filled through a local staging folder and committed at the end.

    `occupied_by` names the files whose presence means the folder already holds our output (a
    previous run, earlier splits); then we refuse unless `overwrite`. Other files in the folder are
    never touched. `commit()` moves staged files into place with `marker` last, so a reader that
    sees the marker sees a complete folder.
    """

    def __init__(self, dest: str, *, occupied_by: Iterable[str], marker: str, what: str, overwrite: bool):
        self.dest = str(dest)
        self.marker = marker
        self._remote = is_url(self.dest)
        taken = sorted(listdir_names(self.dest) & set(occupied_by)) if exists(self.dest) else []
        if taken and not overwrite:
            raise SentituneError(
                f"{self.dest} already holds {what} ({', '.join(taken[:4])}); "
                "pass --overwrite to replace it or choose another folder"
            )
        if self._remote:
            self.root = Path(tempfile.mkdtemp(prefix="sentitune-staging-"))
        else:
            parent = Path(self.dest).resolve().parent
            while not parent.exists():  # missing parents are created at commit, not before
                parent = parent.parent
            # Same filesystem as the destination, so the final move is a rename.
            self.root = Path(tempfile.mkdtemp(prefix=f".{Path(self.dest).name}.staging-", dir=parent))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.root, 0o777 & ~umask)  # mkdtemp's 0700 would become the output's mode
            self._file_mode = 0o666 & ~umask

    def path(self, name: str) -> Path:
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def commit(self) -> str:
        files = sorted(p for p in self.root.rglob("*") if p.is_file())
        files.sort(key=lambda p: p.name == self.marker)  # marker last, order otherwise stable
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
        return self.dest

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()
