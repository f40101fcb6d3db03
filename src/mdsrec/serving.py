"""Next-item recommendations from a trained run: the library side of ``mdsrec recommend`` and ``mdsrec serve``.

A :class:`Recommender` holds one run's best model in evaluation mode (no dropout, no Gumbel noise) and ranks the
whole catalogue for a batch of histories in one ``score_all`` call per batch, as the evaluator does:

* a known user's history is their whole sequence in the processed data (validation and test items included: this
  is serving, nothing is held out), or, with ``stage="test"``/``"valid"``, the history the evaluator would see
  (and, as in the evaluator, the held-out item stays rankable when it also occurs in that history);
* an ad-hoc session is a list of item keys (items.tsv ``key``, e.g. the ASIN) or tokens (``item_field="token"``),
  oldest first. An unknown item is an error that names it, unless ``skip_unknown`` drops it. A session left
  without a known item is an error (no model ranks without a history) unless ``cold_start="popular"``: it then
  gets the items most interacted with in the whole data set (its result says ``"fallback": "popular"``).

Like the evaluator, the model sees the last ``data.max_len`` items. Items of the history (the whole given history,
not only the window) are left out of the ranking when ``exclude_history`` (default: the run's
``eval.exclude_history``); ``candidates`` restricts the ranking to a set of items (e.g. what is in stock). The
padding item is never ranked. Scores keep the model's precision (float64 for ``cooc``, whose popularity tie-break
needs it). Equal scores are listed lower item id first; the evaluator counts a tie against the held-out item, so its
rank is 1 + the number of other listed items scoring at least as high. NaN scores are refused.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import torch
from torch import Tensor

from mdsrec.data.processed import ProcessedDataset, load_processed
from mdsrec.data.protocol import Batch
from mdsrec.errors import MdsrecError
from mdsrec.explain import resolve_user, user_history
from mdsrec.records import check_not_restored
from mdsrec.training.trainer import Experiment, load_run

log = logging.getLogger(__name__)

ITEM_FIELDS = ("key", "token")
COLD_START = ("error", "popular")
USER_STAGES = ("next", "test", "valid")


@dataclass
class Request:
    """One history to rank. ``id`` names it in the output (the user token, or the session's id)."""

    id: str
    history: np.ndarray  # int64 item ids 1..N, oldest first (the whole history; the model sees the window)
    user: int | None = None  # internal user index when the history is a known user's
    keep: int | None = None  # held-out item (stage test/valid): rankable even when it occurs in the history
    dropped: list[str] = field(default_factory=list)  # unknown items skipped (skip_unknown)
    fallback: bool = False  # no known item (cold start): ranked by popularity, not by the model


def run_data_path(run: Path, data: str | None) -> str:
    """``data`` if given, otherwise the processed data directory recorded in RUN_DIR/run.json (an error for a run
    restored from records, which has no checkpoints)."""
    check_not_restored(run)
    if data:
        return data
    info = run / "run.json"
    if not info.is_file():
        raise MdsrecError(f"{info} not found: pass --data")
    return str(json.loads(info.read_text())["data_path"])


class Recommender:
    """Ranks the catalogue for histories with one run's model (see the module docstring)."""

    def __init__(self, exp: Experiment, run: str | Path | None = None) -> None:
        self.exp = exp
        self.run = None if run is None else Path(run)
        self.data: ProcessedDataset = exp.data
        self.model = exp.model
        self.model.eval()
        self.max_len = exp.cfg.data.max_len
        self.batch_size = exp.cfg.data.eval_batch_size
        self.run_excludes_history = bool(exp.cfg.eval.exclude_history)
        self._lock = threading.Lock()  # one forward pass at a time (the HTTP server is threaded)
        self._index: dict[str, dict[str, int]] = {}
        self._users: dict[str, int] | None = None  # token -> index for tokens that occur once
        self._popularity: Tensor | None = None

    @classmethod
    def from_run(
        cls, run: str | Path, data: str | None = None, device: str = "cpu", which: str = "best"
    ) -> Recommender:
        """Load RUN_DIR/{which}.pt for its processed data (``data`` or the path in RUN_DIR/run.json)."""
        run = Path(run)
        if not run.is_dir():
            raise MdsrecError(f"run directory {run} not found")
        dataset = load_processed(run_data_path(run, data))
        return cls(load_run(run, dataset, which=which, device=device), run)

    # -- items and users ----------------------------------------------------------------------------------------

    def _item_index(self, item_field: str) -> dict[str, int]:
        if item_field not in ITEM_FIELDS:
            raise MdsrecError(f"item field ({item_field!r}) must be one of {', '.join(ITEM_FIELDS)}")
        if item_field not in self._index:
            names = self.data.item_keys if item_field == "key" else self.data.item_tokens
            index: dict[str, int] = {}
            for i, name in enumerate(names, 1):
                index.setdefault(name, i)  # a repeated key: its first item (prepare keeps keys unique)
            self._index[item_field] = index
        return self._index[item_field]

    def item_ids(
        self,
        names: Sequence[str],
        item_field: str = "key",
        skip_unknown: bool = False,
        where: str = "history",
    ) -> tuple[np.ndarray, list[str]]:
        """Item ids of ``names`` (keys or tokens) and the names skipped as unknown (only with ``skip_unknown``)."""
        index = self._item_index(item_field)
        ids, unknown = [], []
        for name in names:
            if not isinstance(name, str):
                raise MdsrecError(
                    f"{where}: item {name!r} is not a string (items are {item_field}s of items.tsv)"
                )
            i = index.get(name)
            if i is None:
                unknown.append(name)
            else:
                ids.append(i)
        if unknown and not skip_unknown:
            shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise MdsrecError(
                f"{where}: {len(unknown)} item(s) not in the catalogue ({item_field} of {self._items_file()}): "
                f"{shown} (pass --skip-unknown to drop them)"
            )
        return np.asarray(ids, dtype=np.int64), unknown

    def _items_file(self) -> str:
        return str(Path(self.data.path) / "items.tsv") if self.data.path is not None else "items.tsv"

    def user_request(self, user: str, by_index: bool = False, stage: str = "next") -> Request:
        """The history of a user of the processed data: whole sequence (``next``) or before a held-out item."""
        if stage not in USER_STAGES:
            raise MdsrecError(f"stage ({stage!r}) must be one of {', '.join(USER_STAGES)}")
        if self._users is None:
            counts: dict[str, int] = {}
            for t in self.data.user_tokens:
                counts[t] = counts.get(t, 0) + 1
            self._users = {t: i for i, t in enumerate(self.data.user_tokens) if counts[t] == 1}
        index = self._users.get(user) if not by_index else None
        if index is None:  # an index, an ambiguous or unknown token: explain's rules and errors
            index, _ = resolve_user(self.data, user, by_index)
        history, target = user_history(self.data, index, stage)
        return Request(self.data.user_tokens[index], history.astype(np.int64), user=index, keep=target)

    def session_request(
        self,
        session: str,
        items: Sequence[str],
        item_field: str = "key",
        skip_unknown: bool = False,
        cold_start: str = "error",
    ) -> Request:
        """An ad-hoc history of item keys/tokens, oldest first. ``cold_start``: what a session without a known
        item gets, "error" or "popular" (the most interacted-with items)."""
        where = f"session {session!r}"
        _check_cold_start(cold_start)
        ids, dropped = self.item_ids(items, item_field, skip_unknown, where)
        return _session(session, ids, dropped, cold_start, where)

    def popularity(self) -> Tensor:
        """[N+1] float64 log(1 + interactions of each item in the whole data set); the cold-start ranking."""
        if self._popularity is None:
            counts = np.bincount(
                np.concatenate(self.data.sequences).astype(np.int64), minlength=self.data.num_items + 1
            )
            self._popularity = torch.from_numpy(np.log1p(counts.astype(np.float64)))
        return self._popularity

    def candidate_mask(
        self, names: Sequence[str], item_field: str = "key", skip_unknown: bool = False
    ) -> Tensor:
        """[N+1] bool, True where an item may NOT be recommended: everything outside ``names``."""
        ids, _ = self.item_ids(names, item_field, skip_unknown, where="candidates")
        if len(ids) == 0:
            raise MdsrecError("candidates: the list is empty; nothing could be recommended")
        mask = torch.ones(self.data.num_items + 1, dtype=torch.bool)
        mask[torch.from_numpy(ids)] = False
        mask[0] = True
        return mask

    # -- ranking ------------------------------------------------------------------------------------------------

    def recommend(
        self,
        requests: Sequence[Request],
        top: int = 10,
        exclude_history: bool | None = None,
        blocked: Tensor | None = None,
    ) -> list[dict[str, Any]]:
        """The top-``top`` items of each request: [{id, user?, items: [{rank, id, key, token, score}], ...}].

        ``exclude_history`` None follows the run's ``eval.exclude_history``; ``blocked`` [N+1] bool marks items
        that may not be recommended (see :meth:`candidate_mask`)."""
        return list(self.iter_recommend(requests, top, exclude_history, blocked))

    def iter_recommend(
        self,
        requests: Iterable[Request],
        top: int = 10,
        exclude_history: bool | None = None,
        blocked: Tensor | None = None,
    ) -> Iterator[dict[str, Any]]:
        """As :meth:`recommend`, lazily, one ``score_all`` per ``data.eval_batch_size`` requests."""
        if top < 1:
            raise MdsrecError(f"top ({top}) must be >= 1")
        exclude = self.run_excludes_history if exclude_history is None else exclude_history
        chunk: list[Request] = []
        for request in requests:
            chunk.append(request)
            if len(chunk) == self.batch_size:
                yield from self._rank(chunk, top, exclude, blocked)
                chunk = []
        if chunk:
            yield from self._rank(chunk, top, exclude, blocked)

    def scores(self, requests: Sequence[Request]) -> Tensor:
        """Raw ``score_all`` of the requests' windows, [B, N+1] on the CPU (nothing masked; float32, or float64
        when the model scores in float64)."""
        windows = [r.history[-self.max_len :] for r in requests]
        for r, w in zip(requests, windows, strict=True):
            if len(w) == 0:
                raise MdsrecError(f"{r.id!r} has an empty history: nothing to rank from")
        width = max(len(w) for w in windows)
        items = torch.zeros(len(windows), width, dtype=torch.long)  # [B, L] right-padded
        for b, w in enumerate(windows):
            items[b, : len(w)] = torch.from_numpy(w)
        lengths = torch.tensor([len(w) for w in windows], dtype=torch.long)  # [B]
        with self._lock, torch.no_grad():
            self.model.eval()
            y = self.model.score_all(Batch(items, lengths).to(self.exp.device))  # [B, N+1]
        y = y.detach().cpu()
        return y if y.dtype == torch.float64 else y.float()

    def _rank(
        self, requests: list[Request], top: int, exclude: bool, blocked: Tensor | None
    ) -> Iterator[dict[str, Any]]:
        cold = [b for b, r in enumerate(requests) if r.fallback]
        warm = [b for b, r in enumerate(requests) if not r.fallback]
        if not cold:
            y = self.scores(requests)  # [B, N+1] the model's precision
        else:  # float64, so that a request's scores do not depend on what else is in its batch
            y = torch.empty(len(requests), self.data.num_items + 1, dtype=torch.float64)  # [B, N+1]
            if warm:
                y[warm] = self.scores([requests[b] for b in warm]).double()  # exact widening
            y[cold] = self.popularity()
        if torch.isnan(y).any():
            bad = requests[int(torch.isnan(y).any(dim=1).nonzero()[0])]
            raise MdsrecError(
                f"model {self.model.name} produced NaN scores for {bad.id!r}: the run is broken"
            )
        y[:, 0] = float("-inf")  # the padding item is never recommended
        if blocked is not None:
            y[:, blocked] = float("-inf")
        if exclude:
            for b, r in enumerate(requests):
                keep = None if r.keep is None else y[b, r.keep].clone()
                y[b, torch.from_numpy(r.history)] = float("-inf")
                if keep is not None and (blocked is None or not bool(blocked[r.keep])):
                    y[b, r.keep] = keep  # a repeated held-out item stays rankable, as in the evaluator
        finite = (y > float("-inf")).sum(dim=1)  # [B] rankable items per request
        # Stable sort of the negated scores: equal scores keep ascending ids, as in explain.
        order = torch.sort(-y, dim=1, stable=True).indices[:, :top]  # [B, top]
        for b, r in enumerate(requests):
            n = min(top, int(finite[b]))
            items = [
                {
                    "rank": k + 1,
                    "id": int(i),
                    "key": self.data.item_keys[int(i) - 1],
                    "token": self.data.item_tokens[int(i) - 1],
                    "score": float(y[b, i]),
                }
                for k, i in enumerate(order[b, :n])
            ]
            out: dict[str, Any] = {"id": r.id, "history_length": len(r.history), "items": items}
            if r.fallback:
                out["fallback"] = "popular"
            if r.user is not None:
                out["user_index"] = r.user
            if r.dropped:
                out["unknown_items"] = r.dropped
            yield out


# ---------------------------------------------------------------------------------------------------------------
# Reading requests from files
# ---------------------------------------------------------------------------------------------------------------


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


def _check_cold_start(cold_start: str) -> None:
    if cold_start not in COLD_START:
        raise MdsrecError(f"cold_start ({cold_start!r}) must be one of {', '.join(COLD_START)}")


def _session(sid: str, ids: np.ndarray, dropped: list[str], cold_start: str, where: str) -> Request:
    """The request of a session whose known items are ``ids``; without any: the popularity fallback or an error."""
    if len(ids) == 0 and cold_start != "popular":
        what = "no known items" if dropped else "an empty history"
        raise MdsrecError(
            f"{where} has {what}: a model needs at least one item of the catalogue to rank "
            "(cold_start 'popular' recommends the most interacted-with items instead)"
        )
    return Request(sid, ids, dropped=dropped, fallback=len(ids) == 0)


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
    _check_cold_start(cold_start)
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
        requests.append(_session(sid, ids, dropped, cold_start, f"{where}: session {sid!r}"))
    if not requests:
        raise MdsrecError(f"sessions file {path} holds no sessions")
    return requests


# ---------------------------------------------------------------------------------------------------------------
# HTTP serving (standard library only)
# ---------------------------------------------------------------------------------------------------------------


MAX_BODY = 1 << 20  # bytes of a POST body


def make_server(
    rec: Recommender,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_top: int = 1000,
    timeout: float = 30.0,
    cold_start: str = "error",
) -> ThreadingHTTPServer:
    """A JSON HTTP server over ``rec`` (``serve_forever()`` to run it; port 0 picks a free one):

    * ``GET /health`` -> {status, model, data, items, users};
    * ``GET /recommend?user=TOKEN[&top=10][&exclude_history=0|1][&stage=next]`` -> one result;
    * ``POST /recommend`` (a history without a known item: see ``cold_start``) with ``{"history": [KEY, ...],
      "top": 10, "item_field": "key", "skip_unknown": false,
      "exclude_history": null, "id": "..."}`` or ``{"user": TOKEN, ...}`` -> one result.

    Bad requests get status 400 (404 for an unknown path, 411/413 for a missing or too large body) and
    ``{"error": message}``; an unexpected failure is logged and answered with 500. A connection idle for
    ``timeout`` seconds is closed."""

    _check_cold_start(cold_start)

    class Handler(BaseHTTPRequestHandler):
        server_version = "mdsrec"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
            log.info("%s %s", self.address_string(), format % args)

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _answer(self, params: dict[str, Any]) -> None:
            try:
                top = _top(params.get("top", 10), max_top)
                ex = params.get("exclude_history")
                exclude = None if ex is None else _flag(ex, "exclude_history")
                if params.get("user") is not None and params.get("history") is not None:
                    raise MdsrecError("pass a user or a history, not both")
                if params.get("user") is not None:
                    request = rec.user_request(str(params["user"]), stage=str(params.get("stage", "next")))
                elif params.get("history") is not None:
                    if params.get("stage") is not None:
                        raise MdsrecError("stage applies to a user of the data set, not to a history")
                    if not isinstance(params["history"], list):
                        raise MdsrecError("history must be a list of item keys")
                    request = rec.session_request(
                        str(params.get("id", "session")),
                        params["history"],
                        str(params.get("item_field", "key")),
                        _flag(params.get("skip_unknown", False), "skip_unknown"),
                        cold_start,
                    )
                else:
                    raise MdsrecError('pass a user (?user=TOKEN) or a history (POST {"history": [...]})')
                self._send(200, rec.recommend([request], top, exclude)[0])
            except MdsrecError as e:
                self._send(400, {"error": str(e)})
            except Exception:  # answer instead of dropping the connection; the log has the traceback
                log.exception("request %r failed", params)
                self._send(500, {"error": "internal error (see the server's log)"})

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            url = urlparse(self.path)
            if url.path == "/health":
                self._send(
                    200,
                    {
                        "status": "ok",
                        "model": rec.model.name,
                        "data": rec.data.name,
                        "items": rec.data.num_items,
                        "users": rec.data.num_users,
                        "run": None if rec.run is None else str(rec.run),
                    },
                )
            elif url.path == "/recommend":
                self._answer({k: v[-1] for k, v in parse_qs(url.query).items()})
            else:
                self._send(404, {"error": f"unknown path {url.path}; known: /health, /recommend"})

        def do_POST(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            if url.path != "/recommend":
                self._send(404, {"error": f"unknown path {url.path}; POST goes to /recommend"})
                return
            text = self.headers.get("Content-Length")
            if text is None or not text.strip().isdecimal():
                self._send(411, {"error": "POST /recommend needs a Content-Length header (a byte count)"})
                return
            length = int(text)
            if length > MAX_BODY:
                self._send(413, {"error": f"request body of {length} bytes is over the limit of {MAX_BODY}"})
                return
            try:
                body = json.loads(self.rfile.read(length).decode("utf-8") or "{}")
            except UnicodeDecodeError:
                self._send(400, {"error": "request body is not UTF-8"})
                return
            except json.JSONDecodeError as e:
                self._send(400, {"error": f"request body is not valid JSON ({e.msg})"})
                return
            if not isinstance(body, dict):
                self._send(400, {"error": "request body must be a JSON object"})
                return
            self._answer(body)

    Handler.timeout = timeout
    return ThreadingHTTPServer((host, port), Handler)


def _top(value: Any, max_top: int) -> int:
    """``top`` of a request: an int (not a bool) or a decimal string, in 1..max_top."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MdsrecError(f"top ({value!r}) must be an integer in 1..{max_top}")
    if isinstance(value, str):
        if not value.strip().lstrip("-").isdecimal():
            raise MdsrecError(f"top ({value!r}) must be an integer in 1..{max_top}")
        value = int(value)
    if not 1 <= value <= max_top:
        raise MdsrecError(f"top ({value}) must be an integer in 1..{max_top}")
    return value


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise MdsrecError(f"{name} ({value!r}) must be true/false (or 1/0)")
