"""Requests read from files (``mdsrec recommend --users-file/--sessions/--candidates``) and results written as
JSON lines or CSV."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mdsrec.errors import MdsrecError
from mdsrec.serving.recommender import Recommender, Request, check_cold_start, session_request_from_ids


def read_lines(path: str | Path, what: str) -> list[str]:
    """Non-empty stripped lines of a text file (``#`` comments skipped); a clear error when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise MdsrecError(f"{what} file {path} not found")
    lines = []
    for raw in _read_text(path, what).splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _read_text(path: Path, what: str) -> str:
    """A UTF-8 text file (a byte-order mark is dropped); a clear error when it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise MdsrecError(
            f"{what} file {path} is not UTF-8 text (byte {e.start}): save it as UTF-8"
        ) from None


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
    for n, raw in enumerate(_read_text(path, "sessions").splitlines(), 1):
        if not raw.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise MdsrecError(
                f'{where}: not valid JSON ({e.msg}); expected {{"id": ..., "history": [...]}}'
            ) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("history"), list):
            raise MdsrecError(
                f'{where}: expected an object with a list field "history" of item {item_field}s'
            )
        raw_id = obj.get("id", f"line{n}")
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
            raise MdsrecError(f'{where}: "id" ({raw_id!r}) must be a string or an integer')
        sid = str(raw_id)
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
