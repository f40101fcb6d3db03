"""Write files and directories so that a crash never leaves a half-written output.

Every output goes to a temporary name in the same directory and is renamed into place (rename is atomic on POSIX
within one file system).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

from mdsrec.errors import MdsrecError


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; on success flush, fsync and rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    with _atomic_file(Path(path)) as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file, then rename into place."""
    with _atomic_file(Path(path)) as f:
        torch.save(obj, f)


def append_line(path: str | Path, line: str) -> None:
    """Append one line (a JSONL record); a line is written with one write call and flushed."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()


@contextlib.contextmanager
def staged_directory(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; on success rename it to ``final``.

    On any exception the temporary directory is removed and ``final`` is left untouched.
    """
    final = Path(final).resolve()
    if final.exists() and not overwrite:
        raise MdsrecError(f"{final} already exists (pass --overwrite to replace it)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


LOCK_FILE = ".lock"


@contextlib.contextmanager
def locked_directory(directory: str | Path, what: str = "run") -> Iterator[Path]:
    """Hold an exclusive lock on DIRECTORY (created if needed) for the duration of the block: a second process
    that asks for it while it is held gets an MdsrecError naming the directory and the holder's pid, instead of
    writing into the same files. The lock is ``flock`` on DIRECTORY/.lock, so it ends with the process that holds
    it (a killed run leaves no stale lock); the file itself stays, holding the last holder's pid."""
    import fcntl

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise MdsrecError(
                f"{directory} is in use by another mdsrec process (pid {holder}): one {what} writes into one "
                "directory at a time; wait for it to end or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield directory
    finally:
        os.close(fd)  # releases the flock
