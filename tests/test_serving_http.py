"""The HTTP service (`mdsrec serve`, serving.http, serving.batching): every route and error through FastAPI's
TestClient, lists equal to `mdsrec recommend`'s for every registered model, micro-batching that does not change a
list, limits that name the field, 500s with a logged request id, and the real server (uvicorn in a child process):
startup refusal, escaped logs, graceful SIGTERM/SIGINT with requests in flight (tiny, CPU)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mdsrec.cli import main
from mdsrec.errors import MdsrecError
from mdsrec.models import REGISTRY
from mdsrec.serving import Recommender
from mdsrec.serving.batching import MicroBatcher
from mdsrec.serving.http import ServeSettings, create_app, printable
from mdsrec.serving.recommender import Options, Request
from tests.conftest import make_untrained_run

# Batched and one-at-a-time scores agree to this (float32 matrix products of different shapes may round
# differently, by a few units in the last place).
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def run_dir(tiny_data, tmp_path_factory) -> Path:
    return make_untrained_run("sasrec", tiny_data, tmp_path_factory.mktemp("http") / "sasrec")


@pytest.fixture(scope="module")
def rec(run_dir: Path) -> Recommender:
    return Recommender.from_run(run_dir)


def wait_ready(client: TestClient, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while client.get("/health/ready").status_code != 200:
        assert time.monotonic() < deadline, client.get("/health/ready").json()
        time.sleep(0.01)


@pytest.fixture(scope="module")
def client(rec: Recommender) -> Iterator[TestClient]:
    with TestClient(create_app(rec, ServeSettings(cold_start="error"))) as c:
        wait_ready(c)
        yield c


def keys_of(rec: Recommender, user: int) -> list[str]:
    return [rec.data.item_keys[i - 1] for i in rec.data.sequences[user]]


def ids(result: dict[str, Any]) -> list[int]:
    return [i["id"] for i in result["items"]]


def near(a: float, b: float) -> bool:
    return abs(a - b) <= ATOL + RTOL * abs(b)


def assert_same_list(got: dict[str, Any], expected: dict[str, Any]) -> int:
    """The same list: same items in the same order, scores within RTOL/ATOL, except that items whose scores tie
    within that tolerance (an exact tie, e.g. featsim's items with equal features, rounded differently) may
    trade places, also across the end of the list. Returns how many places differ (0: identical)."""
    g = [(i["id"], i["score"]) for i in got["items"]]
    e = [(i["id"], i["score"]) for i in expected["items"]]
    assert len(g) == len(e)
    np.testing.assert_allclose([s for _, s in g], [s for _, s in e], rtol=RTOL, atol=ATOL)  # rank by rank
    gd, ed = dict(g), dict(e)
    for i in gd.keys() & ed.keys():
        assert near(gd[i], ed[i]), (i, gd[i], ed[i])
    for i in gd.keys() ^ ed.keys():  # only in one list: tied with the last listed item
        assert near(gd.get(i, ed.get(i, 0.0)), e[-1][1]), (i, g, e)
    differ = sum(a != b for (a, _), (b, _) in zip(g, e, strict=True))
    if differ:  # every swap is between near-tied items
        for (a, sa), (b, sb) in zip(g, e, strict=True):
            assert a == b or near(sa, sb) and near(ed.get(a, sb), sb), (g, e)
    assert {k: v for k, v in got.items() if k != "items"} == {
        k: v for k, v in expected.items() if k != "items"
    }
    return differ


# -- routes ---------------------------------------------------------------------------------------------------


def test_live_at_once_ready_only_after_the_warm_up(rec: Recommender) -> None:
    app = create_app(rec)
    plain = TestClient(app)  # no lifespan: nothing warmed up
    assert plain.get("/health/live").json() == {"status": "live"}
    r = plain.get("/health/ready")
    assert r.status_code == 503 and r.json()["status"] == "starting"
    with TestClient(app) as c:
        wait_ready(c)
        assert c.get("/health/ready").json() == {"status": "ready"}
        assert re.search(r"^mdsrec_ready 1\.0$", c.get("/metrics").text, re.M)


def test_a_failed_warm_up_keeps_the_service_unready_with_the_reason(rec: Recommender, monkeypatch) -> None:
    def broken(batch):
        raise RuntimeError("model exploded")

    monkeypatch.setattr(rec.model, "score_all", broken)
    with TestClient(create_app(rec)) as c:
        deadline = time.monotonic() + 30
        while (body := c.get("/health/ready").json())["status"] == "starting":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert body == {"status": "failed", "reason": "warm-up forward pass failed: model exploded"}
        assert c.get("/health/ready").status_code == 503
        assert c.get("/health/live").status_code == 200


def test_model_metadata(client: TestClient, rec: Recommender, run_dir: Path) -> None:
    info = client.get("/v1/model").json()
    assert info["model"] == "sasrec" and info["run"] == run_dir.name
    assert info["data"] == {
        "name": rec.data.name,
        "fingerprint": rec.data.fingerprint,
        "items": rec.data.num_items,
        "users": rec.data.num_users,
    }
    assert info["config"]["model"]["name"] == "sasrec" and info["config"]["model"]["hidden_size"] == 16
    run_json = json.loads((run_dir / "run.json").read_text())
    assert info["commit"] == run_json["git_commit"]
    assert info["loaded_at"].startswith(rec.loaded_at.strftime("%Y-%m-%dT%H:%M"))
    assert info["limits"] == {
        "max_top": 1000,
        "max_history": 1000,
        "max_requests": 256,
        "max_body_bytes": 1 << 20,
    }


def test_post_ranks_users_and_sessions_like_the_library_errors_in_place(
    client: TestClient, rec: Recommender
) -> None:
    token = rec.data.user_tokens[3]
    keys = keys_of(rec, 5)
    tokens = [rec.data.item_tokens[i - 1] for i in rec.data.sequences[5]]
    stock = [rec.data.item_keys[i] for i in (1, 7, 8, 20, 33)]
    body = {
        "requests": [
            {"user": token, "top": 4},
            {"history": keys, "top": 6, "id": "s1", "exclude_history": True},
            {"user": "no-such-user"},
            {"history": [keys[0], "NOPE"], "id": "bad"},
            {"history": [keys[0], "NOPE"], "skip_unknown": True, "top": 3},
            {"history": tokens, "item_field": "token", "top": 5},
            {"user": token, "stage": "test", "top": 5, "id": "t"},
            {"user": token, "candidates": stock, "top": 10, "exclude_history": False},
            {"history": [], "cold_start": "popular", "top": 3},
            {"history": []},
        ]
    }
    r = client.post("/v1/recommend", json=body)
    assert r.status_code == 200 and r.headers["x-request-id"]
    got = r.json()["results"]
    assert len(got) == len(body["requests"])

    def one(request: Request, top: int, exclude: bool | None = None, blocked=None) -> dict[str, Any]:
        return rec.recommend([request], top, exclude, blocked)[0]

    assert_same_list(got[0], one(rec.user_request(token), 4))
    assert_same_list(got[1], one(rec.session_request("s1", keys), 6, True))
    assert got[2]["id"] == "no-such-user" and "not found" in got[2]["error"]
    assert got[3]["id"] == "bad" and "'NOPE'" in got[3]["error"] and "items" not in got[3]
    assert (
        '"skip_unknown": true' in got[3]["error"] and "--" not in got[3]["error"]
    )  # the API's field, no flag
    assert_same_list(got[4], one(rec.session_request("4", [keys[0], "NOPE"], skip_unknown=True), 3))
    assert got[4]["unknown_items"] == ["NOPE"]
    assert_same_list(got[5], one(rec.session_request("5", tokens, item_field="token"), 5))
    test_list = one(rec.user_request(token, stage="test"), 5)
    assert_same_list(got[6], {**test_list, "id": "t"})
    assert_same_list(got[7], one(rec.user_request(token), 10, False, rec.candidate_mask(stock)))
    assert sorted(i["key"] for i in got[7]["items"]) == sorted(stock)
    assert got[8]["fallback"] == "popular" and len(got[8]["items"]) == 3
    assert "cold_start 'popular'" in got[9]["error"] and got[9]["id"] == "9"  # the service default: error


def test_get_recommend_one_user(client: TestClient, rec: Recommender) -> None:
    token = rec.data.user_tokens[2]
    r = client.get(f"/v1/recommend?user={token}&top=5&exclude_history=true&stage=valid")
    assert r.status_code == 200
    assert_same_list(r.json(), rec.recommend([rec.user_request(token, stage="valid")], 5, True)[0])
    r = client.get("/v1/recommend?user=no-such-user")
    assert r.status_code == 404 and "not found" in r.json()["error"] and r.json()["request_id"]
    for query, field in [
        ("", "user (query)"),
        (f"user={token}&top=0", "top (query)"),
        (f"user={token}&top=1001", "top (query)"),
        (f"user={token}&top=" + "9" * 5000, "top (query)"),
        (f"user={token}&stage=later", "stage (query)"),
        (f"user={token}&exclude_history=maybe", "exclude_history (query)"),
    ]:
        r = client.get(f"/v1/recommend?{query}")
        assert r.status_code == 422 and r.json()["error"].startswith(field), (query, r.json())
    r = client.get("/v1/recommend?user=" + "9" * 5000)  # a 5,000-digit user is an unknown user, not a 500
    assert r.status_code == 404


def test_metrics_count_requests_latency_batches_and_queue(client: TestClient, rec: Recommender) -> None:
    client.get(f"/v1/recommend?user={rec.data.user_tokens[0]}")
    client.post("/v1/recommend", json={"requests": [{"user": t} for t in rec.data.user_tokens[:5]]})
    client.get("/nowhere")
    text = client.get("/metrics").text
    assert re.search(
        r'mdsrec_http_requests_total\{method="GET",route="/v1/recommend",status="200"\} [1-9]', text
    )
    assert re.search(
        r'mdsrec_http_requests_total\{method="POST",route="/v1/recommend",status="200"\} [1-9]', text
    )
    assert re.search(r'mdsrec_http_requests_total\{method="GET",route="unmatched",status="404"\} [1-9]', text)
    assert re.search(r'mdsrec_http_request_duration_seconds_bucket\{le="0.25",route="/v1/recommend"\}', text)
    assert re.search(r"^mdsrec_batch_rows_count [1-9]", text, re.M)
    assert re.search(r"^mdsrec_batch_rows_sum ([6-9]|\d\d)", text, re.M)  # the five users and more
    assert re.search(r"^mdsrec_queue_depth 0\.0$", text, re.M)


def test_openapi_and_docs_describe_the_api(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) == {"/health/live", "/health/ready", "/v1/model", "/v1/recommend", "/metrics"}
    assert set(schema["paths"]["/v1/recommend"]) == {"get", "post"}
    session = schema["components"]["schemas"]["SessionQuery"]
    assert session["properties"]["history"]["maxItems"] == 1000 and session["additionalProperties"] is False
    assert client.get("/docs").status_code == 200


# -- errors and limits ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(rec: Recommender) -> Iterator[TestClient]:
    settings = ServeSettings(max_top=5, max_history=4, max_requests=3, max_body_bytes=2000)
    with TestClient(create_app(rec, settings)) as c:
        wait_ready(c)
        yield c


def test_every_limit_is_a_4xx_naming_the_field(small: TestClient, rec: Recommender) -> None:
    keys = keys_of(rec, 1)[:4]
    ok = small.post("/v1/recommend", json={"requests": [{"history": keys, "top": 5}] * 3})
    assert ok.status_code == 200 and all(len(r["items"]) == 5 for r in ok.json()["results"])
    for body, field in [
        (
            {"requests": [{"history": keys, "top": 6}]},
            "requests[0].top: Input should be less than or equal to 5",
        ),
        (
            {"requests": [{"user": "u1"}, {"history": [*keys, keys[0]]}]},
            "requests[1].history: List should have at",
        ),
        ({"requests": [{"user": "u1"}] * 4}, "requests: List should have at most 3 items"),
        ({"requests": []}, "requests: List should have at least 1 item"),
    ]:
        r = small.post("/v1/recommend", json=body)
        assert r.status_code == 422 and r.json()["error"].startswith(field), r.json()
    big = json.dumps({"requests": [{"history": ["x" * 1000, "y" * 1000]}]}).encode()
    r = small.post("/v1/recommend", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"] and r.json()["request_id"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"requests": [{"history": ["'
        for _ in range(10):
            yield b"x" * 500
        yield b'"]}]}'

    r = small.post("/v1/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"]
    assert small.get("/v1/recommend?user=u1&top=6").json()["error"].startswith("top (query)")


def test_malformed_bodies_are_4xx(client: TestClient) -> None:
    post = lambda content: client.post(  # noqa: E731
        "/v1/recommend", content=content, headers={"content-type": "application/json"}
    )
    for content, status, words in [
        (b"{oops", 422, "body: not valid JSON"),
        (b'{"requests": [{"user": "\xe9"}]}', 400, "body: not readable JSON"),  # not UTF-8
        (b'{"requests": [{"user": "u1", "top": ' + b"9" * 5000 + b"}]}", 400, "body: not readable JSON"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "body: not readable JSON"),
        (b"[1, 2]", 422, "body: Input should be a valid dictionary"),
        (b'{"requests": [{"user": 5}]}', 422, "requests[0].user: Input should be a valid string"),
        (b'{"requests": [{"user": "u1", "top": true}]}', 422, "requests[0].top"),
        (b'{"requests": [{"user": "u1", "history": []}]}', 422, "requests[0].history: Extra inputs"),
        (b'{"requests": [{"history": "abc"}]}', 422, "requests[0].history: Input should be a valid list"),
        (b'{"requests": ["u1"]}', 422, "requests[0]: Unable to extract tag"),
        (b'{"requests": [{"user": "u1"}], "extra": 1}', 422, "extra: Extra inputs are not permitted"),
        (b"", 422, "body: Field required"),
    ]:
        r = post(content)
        assert r.status_code == status and r.json()["error"].startswith(words), (content[:40], r.json())
    r = client.post(
        "/v1/recommend", content=b'{"requests": [{"user": "u1"}]}', headers={"content-type": "text/csv"}
    )
    assert r.status_code == 422


def test_wrong_methods_are_405_and_head_answers_like_get(client: TestClient) -> None:
    routes = {
        "/health/live": "GET, HEAD",
        "/health/ready": "GET, HEAD",
        "/v1/model": "GET, HEAD",
        "/metrics": "GET, HEAD",
        "/v1/recommend": "GET, HEAD, POST",
    }
    for path, allowed in routes.items():
        for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"):
            r = client.request(method, path)
            assert r.status_code == 405 and r.headers["allow"] == allowed, (method, path)
            assert method in r.json()["error"] and path in r.json()["error"]
        if "POST" not in allowed:
            assert client.post(path, json={}).status_code == 405
        head, get = client.head(path + "?user=u1"), client.get(path + "?user=u1")
        assert head.status_code == get.status_code and head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]
    assert client.get("/v1/nowhere").status_code == 404 and "unknown path" in client.get("/x").json()["error"]


def test_an_unexpected_failure_is_a_500_with_a_request_id_in_the_log(
    rec: Recommender, monkeypatch, caplog
) -> None:
    app = create_app(rec)
    with TestClient(app, raise_server_exceptions=False) as c:
        wait_ready(c)

        def broken(requests, options):
            raise RuntimeError("boom")

        monkeypatch.setattr(app.state.service.batcher, "_rank", broken)
        with caplog.at_level("INFO"):
            for r in [
                c.get(f"/v1/recommend?user={rec.data.user_tokens[0]}"),
                c.post("/v1/recommend", json={"requests": [{"user": rec.data.user_tokens[0]}]}),
            ]:
                assert r.status_code == 500
                rid = r.json()["request_id"]
                assert rid == r.headers["x-request-id"] and "log" in r.json()["error"]
                failed = [x for x in caplog.records if rid in x.getMessage() and x.levelname == "ERROR"]
                assert failed and failed[0].exc_info is not None  # the traceback is logged under the id
                assert any(rid in x.getMessage() and " 500 " in x.getMessage() for x in caplog.records)
        monkeypatch.undo()
        assert c.get(f"/v1/recommend?user={rec.data.user_tokens[0]}").status_code == 200  # and it carries on


def test_log_lines_escape_control_bytes() -> None:
    assert printable("/v1/\x1b[31mred\x00\r\nX\u009b") == "/v1/\\x1b[31mred\\x00\\r\\nX\\x9b"
    assert len(printable("a" * 5000)) == 1003


# -- batching -------------------------------------------------------------------------------------------------


def test_the_batcher_gathers_concurrent_rows_in_bounded_batches() -> None:
    calls: list[int] = []

    def rank(requests, options):
        calls.append(len(requests))
        time.sleep(0.01)
        return [{"id": r.id, "top": o.top} for r, o in zip(requests, options, strict=True)]

    async def scenario() -> list[list[Any]]:
        batcher = MicroBatcher(rank, max_batch=8, max_wait=0.05)
        await batcher.start()
        one = [Request("x", np.ones(1, dtype=np.int64))]
        jobs = [batcher.rank(one * (1 + i % 3), [Options(top=i)] * (1 + i % 3)) for i in range(20)]
        out = await asyncio.gather(*jobs)
        await batcher.stop()
        return out

    out = asyncio.run(scenario())
    assert [[r["top"] for r in o] for o in out] == [
        [i] * (1 + i % 3) for i in range(20)
    ]  # each its own, in order
    assert sum(calls) == sum(1 + i % 3 for i in range(20)) and max(calls) <= 8 and len(calls) <= 6


def test_a_failing_row_fails_alone() -> None:
    def rank(requests, options):
        if any(r.id == "bad" for r in requests):
            raise ValueError("bad row")
        return [{"id": r.id} for r in requests]

    async def scenario() -> list[Any]:
        batcher = MicroBatcher(rank, max_batch=8, max_wait=0.02)
        await batcher.start()
        rows = [Request(name, np.ones(1, dtype=np.int64)) for name in ("a", "bad", "c")]
        out = await batcher.rank(rows, [Options()] * 3)
        await batcher.stop()
        return out

    a, bad, c = asyncio.run(scenario())
    assert a == {"id": "a"} and c == {"id": "c"} and isinstance(bad, ValueError)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_padding_in_a_batch_does_not_change_a_list(name: str, tiny_data, tmp_path: Path) -> None:
    """Every model: histories of different lengths (so the short ones are padded) and options ranked in one call
    give each request the list it gets alone: same items, same order, scores within RTOL/ATOL."""
    rec = Recommender.from_run(make_untrained_run(name, tiny_data, tmp_path / name))
    requests = [rec.user_request(str(u), by_index=True) for u in range(12)]
    requests += [
        rec.session_request("short", keys_of(rec, 0)[:1]),
        rec.session_request("c", [], cold_start="popular"),
    ]
    options = [Options(top=3 + b % 5, exclude_history=bool(b % 2)) for b in range(len(requests))]
    options[5] = Options(top=4, blocked=rec.candidate_mask([rec.data.item_keys[i] for i in range(0, 40, 3)]))
    together = rec.rank(requests, options)
    differ = sum(
        assert_same_list(got, rec.rank([r], [o])[0])
        for r, o, got in zip(requests, options, together, strict=True)
    )
    if name != "featsim":  # the one model with exact ties here (items with equal features)
        assert differ == 0
    lengths = {min(len(r.history), rec.max_len) for r in requests}
    assert len(lengths) > 3  # padding really happened


def test_served_lists_equal_mdsrec_recommend_for_every_model(tiny_data, tmp_path: Path, capsys) -> None:
    """For every registered model: users and a session sent in one POST (batched together) get the lists
    `mdsrec recommend` writes for them."""
    for name in sorted(REGISTRY):
        run = make_untrained_run(name, tiny_data, tmp_path / name)
        rec = Recommender.from_run(run)
        users = rec.data.user_tokens[:6]
        keys = keys_of(rec, 7)[-5:]
        capsys.readouterr()
        assert main(["recommend", "--run", str(run), "--user", *users, "--top", "7"]) == 0
        assert main(["recommend", "--run", str(run), "--history", ",".join(keys), "--top", "7"]) == 0
        cli = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        with TestClient(create_app(rec)) as c:
            body = {
                "requests": [
                    *({"user": u, "top": 7} for u in users),
                    {"history": keys, "top": 7, "id": "session"},
                ]
            }
            served = c.post("/v1/recommend", json=body).json()["results"]
            one = c.get(f"/v1/recommend?user={users[2]}&top=7").json()
        assert len(served) == len(cli) == 7
        differ = sum(assert_same_list(got, expected) for got, expected in zip(served, cli, strict=True))
        differ += assert_same_list(one, cli[2])
        if name != "featsim":  # the one model with exact ties here (items with equal features)
            assert differ == 0, name


# -- the real server ------------------------------------------------------------------------------------------


class Server:
    """`mdsrec serve` in a child process on a free port; its log in ``self.log``."""

    def __init__(self, run: Path, *args: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "mdsrec", "serve", "--run", str(run), "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        match = re.search(r"on (http://\S+) ", line)
        assert match, line + (self.proc.stderr.read() if self.proc.stderr else "")
        self.url = match.group(1)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 60
        while get(self.url + "/health/ready")[0] != 200:
            assert time.monotonic() < deadline and self.proc.poll() is None
            time.sleep(0.05)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
        return code

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def post(url: str, body: dict[str, Any]) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_real_server_escapes_its_log_and_finishes_requests_in_flight_on_a_signal(
    run_dir: Path, rec: Recommender, sig: int
) -> None:
    server = Server(run_dir, "--batch-wait-ms", "300")  # requests stay in flight for a while
    for line in [
        b"GET /v1/\x1b[31mred?user=\x1b[2J HTTP/1.1",
        b"GET /v1/recommend?user=%1b[2J HTTP/1.1",
        b"POST /v1/recommend HTTP/1.1\r\nContent-Length: 999999999",  # refused before it is sent
    ]:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
            conn.sendall(line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert conn.recv(65536).startswith(b"HTTP/1.1 4")  # an answer, not a dropped connection
    results: list[tuple[int, bytes]] = []
    body = {"requests": [{"user": t} for t in rec.data.user_tokens[:3]]}
    threads = [
        threading.Thread(target=lambda: results.append(post(server.url + "/v1/recommend", body)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    time.sleep(0.15)  # the requests have arrived and wait for their batch
    code = server.stop(sig)
    for t in threads:
        t.join(timeout=60)
    log = "".join(server.lines)
    assert code == 0, log
    assert len(results) == 8 and all(status == 200 for status, _ in results), results
    assert all(len(json.loads(b)["results"]) == 3 for _, b in results)
    with pytest.raises(OSError):  # not accepting any more
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    assert "\x1b" not in log and "\x9b" not in log  # control bytes never reach the log raw
    assert 'POST /v1/recommend" 200' in log and "Invalid HTTP request" in log
    assert '"GET /v1/recommend?user=%1b[2J" 404' in log  # logged as it came, percent-escaped
    assert '"POST /v1/recommend" 413' in log


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="thread counts read from Linux /proc")
def test_idle_connections_are_capped_and_cost_no_threads(run_dir: Path) -> None:
    """300 idle connections: the server's thread count does not grow with them (asyncio, not a thread per
    connection), a request beyond --max-connections is answered 503 (never dropped), and once they close the
    server answers 200 again."""
    server = Server(run_dir, "--max-connections", "50")
    try:
        before = _threads(server.proc.pid)
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(300)]
        time.sleep(0.5)
        assert _threads(server.proc.pid) <= before + 2, (before, _threads(server.proc.pid))
        status, body = get(server.url + "/health/live")
        assert status == 503, (status, body)
        for conn in idle:
            conn.close()
        deadline = time.monotonic() + 30
        while (status := get(server.url + "/health/live")[0]) != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status == 200
    finally:
        assert server.stop(signal.SIGTERM) == 0, "".join(server.lines)


def test_startup_refuses_a_run_whose_checkpoint_cannot_be_loaded(
    run_dir: Path, tmp_path: Path, capsys
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("config.yaml", "run.json"):
        (bad / f).write_bytes((run_dir / f).read_bytes())
    (bad / "best.pt").write_bytes((run_dir / "best.pt").read_bytes()[:300])  # cut short
    capsys.readouterr()
    assert main(["serve", "--run", str(bad), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot serve {bad}: checkpoint") and err.count("\n") == 1, err
    flipped = (
        tmp_path / "flipped"
    )  # a whole run, 16 bytes of its best.pt changed after its sha256 was recorded
    flipped.mkdir()
    for f in run_dir.iterdir():
        if f.is_file():
            (flipped / f.name).write_bytes(f.read_bytes())
    data = bytearray((flipped / "best.pt").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 16] = bytes(16)
    (flipped / "best.pt").write_bytes(bytes(data))
    assert main(["serve", "--run", str(flipped), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot serve {flipped}: checkpoint") and err.count("\n") == 1, err
    assert main(["serve", "--run", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["serve", "--run", str(run_dir), "--batch-wait-ms", "-1"]) == 2
    assert "batch_wait_ms (-1.0) must be >= 0" in capsys.readouterr().err
    with pytest.raises(MdsrecError, match="cold_start"):
        create_app(Recommender.from_run(run_dir), ServeSettings(cold_start="sometimes"))


def test_serve_without_the_extra_says_how_to_install_it(run_dir: Path, monkeypatch, capsys) -> None:
    monkeypatch.delitem(sys.modules, "mdsrec.serving.http")
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if not installed
    assert main(["serve", "--run", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'mdsrec[serve]'" in err and "fastapi" in err and err.count("\n") == 1
