"""Requests read from files (``mdsrec recommend --users-file/--sessions/--candidates``) and results written as
JSON lines or CSV."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import Tensor

from mdsrec.data.formats import CONTROL_CHARACTERS
from mdsrec.errors import MdsrecError
from mdsrec.serving.recommender import Recommender, Request, check_cold_start, session_request_from_ids


def read_lines(path: str | Path, what: str) -> list[str]:
    """Non-empty stripped lines of a text file (``#`` comments skipped); a clear error when it is missing."""
    return [line for _, line in numbered_lines(path, what)]


def numbered_lines(path: str | Path, what: str) -> list[tuple[int, str]]:
    """(1-based line number, stripped line) of each non-empty line of a text file, ``#`` comments skipped."""
    path = Path(path)
    if not path.is_file():
        raise MdsrecError(f"{what} file {path} not found")
    lines = []
    for n, raw in enumerate(_read_text(path, what).split("\n"), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            lines.append((n, line))
    return lines


def _read_text(path: Path, what: str) -> str:
    """A UTF-8 text file (a byte-order mark is dropped); a clear error naming the line when it is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise MdsrecError(
            f"{what} file {path}, line {line}: not UTF-8 text (byte {e.start + 1}); save it as UTF-8"
        ) from None


def read_users(
    rec: Recommender, path: str | Path, by_index: bool = False, stage: str = "next"
) -> list[Request]:
    """The requests of a ``--users-file``: one user token (with ``by_index``: row of users.tsv) per line. A user
    that is not in the data set, or repeats an earlier line, is an error naming the file and line."""
    entries = numbered_lines(path, "users")
    if not entries:
        raise MdsrecError(f"users file {path} holds no users")
    seen: dict[str, int] = {}
    requests = []
    for n, user in entries:
        if user in seen:
            raise MdsrecError(
                f"users file {path}, line {n}: user {user!r} repeats line {seen[user]} (one list per user)"
            )
        seen[user] = n
        try:
            requests.append(rec.user_request(user, by_index, stage))
        except MdsrecError as e:
            raise MdsrecError(f"users file {path}, line {n}: {e}") from None
    return requests


def read_candidates(
    rec: Recommender, path: str | Path, item_field: str = "key", skip_unknown: bool = False
) -> Tensor:
    """The blocked-items mask ([N+1] bool, ``Recommender.candidate_mask``) of a ``--candidates`` file: one item
    per line, named by ``item_field``. An item not in the catalogue is an error naming the file and its line
    (unless ``skip_unknown``); a file without items is an error."""
    entries = numbered_lines(path, "candidates")
    names = [name for _, name in entries]
    _, unknown = rec.item_ids(names, item_field, skip_unknown=True, where=f"candidates file {path}")
    if unknown and not skip_unknown:
        first = set(unknown)
        n, name = next((n, name) for n, name in entries if name in first)
        raise MdsrecError(
            f"candidates file {path}, line {n}: item {name!r} is not in the catalogue ({item_field} of items.tsv; "
            f"{len(unknown)} unknown in all; pass --skip-unknown to drop them)"
        )
    if len(unknown) == len(names):
        raise MdsrecError(
            f"candidates file {path} names no item of the catalogue; nothing could be recommended"
        )
    return rec.candidate_mask(names, item_field, skip_unknown=True)


def read_sessions(
    rec: Recommender,
    path: str | Path,
    item_field: str = "key",
    skip_unknown: bool = False,
    cold_start: str = "error",
) -> list[Request]:
    """Sessions from a JSON-lines file: one ``{"id": "...", "history": ["KEY", ...]}`` per line, oldest first.

    Errors name the file and line: bad JSON, a missing or non-list ``history``, unknown items (without
    ``skip_unknown``), a repeated id, a session without a known item (unless ``cold_start="popular"``)."""
    check_cold_start(cold_start)
    path = Path(path)
    if not path.is_file():
        raise MdsrecError(f"sessions file {path} not found")
    requests: list[Request] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(_read_text(path, "sessions").split("\n"), 1):
        if not raw.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise MdsrecError(
                f'{where}: not valid JSON ({e.msg}); expected {{"id": ..., "history": [...]}}'
            ) from None
        except (RecursionError, ValueError):  # nested too deeply, or an integer beyond Python's digit limit
            raise MdsrecError(
                f'{where}: not valid JSON (nested too deeply or a number too long); expected {{"id": ..., '
                '"history": [...]}'
            ) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("history"), list):
            raise MdsrecError(
                f'{where}: expected an object with a list field "history" of item {item_field}s'
            )
        raw_id = obj.get("id", f"line{n}")
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
            raise MdsrecError(f'{where}: "id" ({raw_id!r}) must be a string or an integer')
        sid = str(raw_id)
        if CONTROL_CHARACTERS.search(sid):
            raise MdsrecError(f'{where}: "id" {sid!r} contains a control character; expected printable text')
        if sid in seen:
            raise MdsrecError(f"{where}: session id {sid!r} already used on line {seen[sid]}")
        seen[sid] = n
        ids, dropped = rec.item_ids(obj["history"], item_field, skip_unknown, where)
        requests.append(session_request_from_ids(sid, ids, dropped, cold_start, f"{where}: session {sid!r}"))
    if not requests:
        raise MdsrecError(f"sessions file {path} holds no sessions")
    return requests


CSV_HEADER = "id,rank,item_id,key,token,score"


def _csv(value: str) -> str:
    """A CSV field, quoted when it holds a comma, quote or line break."""
    if any(c in value for c in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


def format_results(results: Iterable[dict[str, Any]], fmt: str) -> str:
    """Recommendation lists as text: ``jsonl`` (one result object a line) or ``csv`` (one row per listed item)."""
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in results)
    if fmt != "csv":
        raise MdsrecError(f"format ({fmt!r}) must be jsonl or csv")
    lines = [CSV_HEADER]
    for r in results:
        lines += [
            ",".join(
                [
                    _csv(r["id"]),
                    str(i["rank"]),
                    str(i["id"]),
                    _csv(i["key"]),
                    _csv(i["token"]),
                    repr(i["score"]),
                ]
            )
            for i in r["items"]
        ]
    return "\n".join(lines) + "\n"
