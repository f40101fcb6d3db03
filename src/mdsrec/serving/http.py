"""The HTTP service of ``mdsrec serve`` over a :class:`~mdsrec.serving.recommender.Recommender`."""

from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from mdsrec.errors import MdsrecError
from mdsrec.serving.recommender import Recommender, check_cold_start

log = logging.getLogger(__name__)

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

    check_cold_start(cold_start)

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
