"""Write files and directories so that a crash never leaves a half-written output, and one writer at a time.

Every output goes to a temporary name in the same directory and is renamed into place (rename is atomic on POSIX
within one file system). The temporary names carry the writer's pid:

    DIR/.NAME.tmp-<pid>             a file being written (``write_bytes``, ``torch_save``, ...)
    PARENT/.NAME.tmp-<pid>-<random> a directory being staged (``staged_directory``)
    PARENT/.NAME.old-<pid>          the directory it replaces, for the moment between two renames

so a later writer of the same output can tell what a dead writer left (``remove_stale``). Writers take an
exclusive ``flock`` (released by the kernel when the process dies, so a killed writer never leaves a lock behind):
``locked_directory`` on DIR/.lock inside a directory they own (a run directory), ``locked_output`` on
PARENT/.NAME.lock beside an output that is renamed into place or may not exist yet (a data set, a benchmark
folder). A lock file that stays behind holds no lock: only a live process holds one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from mdsrec.errors import MdsrecError

log = logging.getLogger(__name__)


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def _atomic_file(path: Path, before_replace: Callable[[Path], None] | None = None) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; on success flush, fsync and rename it onto ``path``.
    ``before_replace(tmp)`` runs on the complete temporary file just before the rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(tmp)
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


def torch_save(obj: Any, path: str | Path, before_replace: Callable[[Path], None] | None = None) -> None:
    """torch.save to a temporary file, then rename into place (``before_replace(tmp)`` just before the rename)."""
    import torch  # here, so that writers of data sets and results files start without loading torch

    with _atomic_file(Path(path), before_replace) as f:
        torch.save(obj, f)


def append_line(path: str | Path, line: str) -> None:
    """Append one line (a JSONL record); a line is written with one write call and flushed."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()


@contextlib.contextmanager
def staged_directory(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; on success rename it to ``final``.

    On any exception the temporary directory is removed and ``final`` is left untouched. The whole block holds
    ``locked_output(final)``. A process killed between the two renames that replace an existing ``final`` leaves
    it at PARENT/.NAME.old-<pid>; the next writer of ``final`` puts it back (``remove_stale``).
    """
    final = Path(final).resolve()
    with locked_output(final, "writer"):
        if final.exists() and not overwrite:
            raise MdsrecError(f"{final} already exists (pass --overwrite to replace it)")
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
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


# ---------------------------------------------------------------------------------------------------------------
# Locks
# ---------------------------------------------------------------------------------------------------------------

LOCK_FILE = ".lock"
# Lock files this process holds (resolved path -> depth): a writer that already holds an output's lock (prepare,
# holding it from its first step) enters the same lock again (its staged_directory) instead of refusing itself.
_HELD: dict[str, int] = {}


def output_lock(output: str | Path) -> Path:
    """The lock file of an output that is renamed into place or may not exist yet: PARENT/.NAME.lock beside it."""
    output = Path(output)
    return output.parent / f".{output.name}.lock"


def _open_locked(lock: Path, target: Path, what: str, hint: str) -> int:
    """An fd of ``lock`` holding its exclusive flock. The file may be unlinked by the holder that releases it
    (``remove``), so after taking the flock the path must still name the same file, else try again."""
    import fcntl

    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise MdsrecError(
                f"{target} is in use by another mdsrec process (pid {holder}): only one {what} may write it at "
                f"a time; {hint}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # locked a file its last holder had just removed: take the one at the path now


@contextlib.contextmanager
def _flock(lock: Path, target: Path, what: str, hint: str, remove: bool) -> Iterator[bool]:
    """Hold an exclusive flock on ``lock`` (created, with its missing parent folders, if needed); yields True when
    this call took it, False when this process already held it. A lock held by another process is an MdsrecError
    naming ``target`` and the holder's pid. With ``remove`` the lock file, and the folders made for it while
    empty, are removed on release (a killed holder leaves the file, which holds no lock)."""
    made = [d for d in (lock.parent, *lock.parent.parents) if not d.exists()]
    lock.parent.mkdir(parents=True, exist_ok=True)
    key = str(lock.parent.resolve() / lock.name)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield False
        finally:
            _HELD[key] -= 1
        return
    try:
        fd = _open_locked(lock, target, what, hint)
    except BaseException:
        _remove_empty(made)
        raise
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[key] = 1
        try:
            yield True
        finally:
            del _HELD[key]
            if remove:
                lock.unlink(missing_ok=True)  # while still held: see _open_locked
    finally:
        os.close(fd)  # releases the flock
    if remove:
        _remove_empty(made)


def _remove_empty(folders: list[Path]) -> None:
    for d in folders:  # innermost first
        try:
            d.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def locked_directory(
    directory: str | Path, what: str = "run", hint: str = "wait for it to end or choose another --out"
) -> Iterator[Path]:
    """Hold an exclusive lock on DIRECTORY (created if needed) for the duration of the block: a second process
    that asks for it while it is held gets an MdsrecError naming the directory and the holder's pid, instead of
    writing into the same files. The lock is ``flock`` on DIRECTORY/.lock, so it ends with the process that holds
    it (a killed run leaves no stale lock); the file itself stays, holding the last holder's pid."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _flock(directory / LOCK_FILE, directory, what, hint, remove=False):
        yield directory


@contextlib.contextmanager
def locked_output(
    output: str | Path, what: str = "writer", hint: str = "wait for it to end or choose another --out"
) -> Iterator[Path]:
    """Hold an exclusive lock on OUTPUT (a directory or file that may not exist yet) for the block: ``flock`` on
    PARENT/.NAME.lock beside it, so the lock exists before the output does and survives the rename that puts the
    output in place; the file is removed when the block ends (a killed writer leaves it, holding no lock). A second
    process gets an MdsrecError naming OUTPUT at once. Taking the lock first removes what a dead writer of OUTPUT
    left beside it (``remove_stale``)."""
    output = Path(output)
    with _flock(output_lock(output), output, what, hint, remove=True) as taken:
        if taken:
            remove_stale(output.parent, [output.name])
        yield output


# ---------------------------------------------------------------------------------------------------------------
# What a dead writer left
# ---------------------------------------------------------------------------------------------------------------

# .NAME.tmp-<pid>, .NAME.tmp-<pid>-<random>, .NAME.old-<pid>; or .NAME.tmp-<8 random characters>, a staging
# directory of a version before pids were part of the names
_STALE = re.compile(
    r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?:(?P<pid>[0-9]+)(?:-[a-z0-9_]+)?|(?P<legacy>[a-z0-9_]{8}))"
)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (this process counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OverflowError:
        return False
    return True


def stale_entries(directory: str | Path, names: Iterable[str]) -> list[Path]:
    """The temporary files and directories in DIRECTORY that a writer of one of ``names`` left and whose pid is not
    alive (or that carry no pid: staging directories written before pids were part of their names)."""
    directory = Path(directory)
    wanted = set(names)
    if not directory.is_dir():
        return []
    found = []
    for entry in sorted(directory.iterdir()):
        hit = _STALE.fullmatch(entry.name)
        if hit is None or hit["name"] not in wanted:
            continue
        if hit["pid"] is not None and pid_alive(int(hit["pid"])):
            continue
        if hit["legacy"] is not None and (hit["kind"] != "tmp" or not entry.is_dir()):
            continue
        found.append(entry)
    return found


def remove_stale(directory: str | Path, names: Iterable[str]) -> list[Path]:
    """Remove what a dead writer of ``names`` left in DIRECTORY: its temporary files and staging directories
    (``.NAME.tmp-<pid>...``). A directory it had moved aside (``.NAME.old-<pid>``) while replacing NAME is put back
    when NAME is missing (the writer died between the two renames: the previous output was complete), else
    removed. Call it only while holding the lock that every writer of these names takes. Returns what was
    removed or put back."""
    directory = Path(directory)
    done = []
    for entry in stale_entries(directory, names):
        hit = _STALE.fullmatch(entry.name)
        assert hit is not None
        final = directory / hit["name"]
        if hit["kind"] == "old" and entry.is_dir() and not final.exists():
            os.replace(entry, final)
            log.warning(
                "%s: put back from %s (a writer replacing it was stopped between two renames)", final, entry
            )
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            log.info("removed %s, left by a writer of %s that has ended", entry, final)
        else:
            entry.unlink(missing_ok=True)
            log.info("removed %s, left by a writer of %s that has ended", entry, final)
        done.append(entry)
    return done
