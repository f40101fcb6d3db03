"""Load test of `mdsrec serve` on loopback: throughput and p50/p99 latency at several concurrency levels, for this
checkout's server and, on the same run in the same call, the server of an older source tree (e.g. the standard-library
server of commit d6c1947 in a git worktree). The load client is in this script (asyncio, raw HTTP/1.1, keep-alive
where the server allows it, a new connection per request where it does not).

    git worktree add --detach ../serving_old d6c1947     # the old server, never modified
    python benchmarks/serve_load.py --out /tmp/serve_load --old-src ../serving_old/src [--models sasrec,mdsrec]
        [--levels 1,8,32,64] [--requests 2000] [--seconds 20] [--compare-src DIR] [--rounds N] [--prepare-only]
        [--json OUT]

What it serves: a synthetic data set of Sports' size (18,357 items, 35,598 users, histories of 5 + a geometric
number of items, mean about 8.3, as Sports' 8.32; two 384-d feature tables), and one run per model built with the
frozen Sports config (configs/experiments/sports/<model>.yaml: hidden 300, max_len 50) without training (the model
as a new run builds it, graphs and k-means included, saved as best.pt at epoch 0): serving cost does not depend on
what the weights learned. Data and runs are made once under --out and reused.

Each request is a POST of one session (a user's item keys, oldest first; top 10), the same sequence of sessions for
both servers. Per level: at most --requests requests and --seconds seconds after a warm-up of 50 requests;
reported: requests/s, p50, p99 (ms), connection errors (refused, reset, closed before a full answer) and answers
by status class. Each server is started and stopped by this script (SIGINT; each one waits until it answers).
Run it with the cores otherwise idle; the figures are for this machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdsrec.studies.bench_records import write_benchmark_record

ROOT = Path(__file__).resolve().parent.parent


def make_data(out: Path) -> Path:
    from mdsrec.data.synthetic import sports_size, write_synthetic

    if not (out / "manifest.json").is_file():
        write_synthetic(out, sports_size())
    return out


def make_run(data_dir: Path, model: str, out: Path) -> Path:
    """A run of ``model`` with the frozen Sports config, built and saved at epoch 0 (see benchmarks/load_time.py)."""
    if (out / "best.pt").is_file():
        return out
    from mdsrec.config import resolve_config
    from mdsrec.data.processed import load_processed
    from mdsrec.training import trainer
    from mdsrec.training.checkpoint import save_checkpoint

    data = load_processed(data_dir)
    cfg = trainer.full_config(
        resolve_config(str(ROOT / f"configs/experiments/sports/{model}.yaml"), [], model=model)
    )
    exp = trainer.make_experiment(cfg, data)
    trainer._start_run(out, cfg, data)
    save_checkpoint(out / "best.pt", trainer._model_state(cfg, data, exp.model, 0))
    return out


def batch_equivalence(run: Path, keys: list[list[str]]) -> dict[str, Any]:
    """Rank sessions together (one forward pass, padded) and one at a time: how many lists differ and by how much
    the scores do (what micro-batching may change)."""
    from mdsrec.serving import Recommender
    from mdsrec.serving.recommender import Options

    rec = Recommender.from_run(run)
    requests = [rec.session_request(str(i), k) for i, k in enumerate(keys)]
    options = [Options(top=10)] * len(requests)
    together = rec.rank(requests, options)
    alone = [rec.rank([r], [o])[0] for r, o in zip(requests, options, strict=True)]
    differ, worst_abs, worst_rel = 0, 0.0, 0.0
    for a, b in zip(together, alone, strict=True):
        differ += [i["id"] for i in a["items"]] != [i["id"] for i in b["items"]]
        for x, y in zip(a["items"], b["items"], strict=True):
            worst_abs = max(worst_abs, abs(x["score"] - y["score"]))
            worst_rel = max(worst_rel, abs(x["score"] - y["score"]) / max(abs(y["score"]), 1e-12))
    return {
        "lists": len(requests),
        "lists_differing": differ,
        "max_abs_diff": worst_abs,
        "max_rel_diff": worst_rel,
    }


# -- servers --------------------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    kind: str  # "new" (POST /v1/recommend, /health/ready) or "old" (POST /recommend, /health)
    proc: subprocess.Popen[str]
    host: str
    port: int
    log: Path

    def body(self, keys: list[str]) -> bytes:
        if self.kind == "new":
            return json.dumps({"requests": [{"history": keys, "top": 10}]}).encode()
        return json.dumps({"history": keys, "top": 10}).encode()

    @property
    def path(self) -> str:
        return "/v1/recommend" if self.kind == "new" else "/recommend"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def start_server(
    name: str,
    kind: str,
    src: Path,
    run: Path,
    log: Path,
    threads: int | None = None,
    args: list[str] | None = None,
) -> Server:
    env = {**os.environ, "PYTHONPATH": str(src.resolve()), "PYTHONUNBUFFERED": "1"}
    if threads is not None:  # torch's intra-op threads (the old server has no flag for it)
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "mdsrec", "serve", "--run", str(run), "--port", "0", *(args or [])]
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=src.parent)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"on http://([^\s:]+):(\d+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"{name} did not start: {line!r}; see {log}")
    server = Server(name, kind, proc, match.group(1), int(match.group(2)), log)
    health = "/health/ready" if kind == "new" else "/health"
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(f"http://{server.host}:{server.port}{health}", timeout=10) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            server.stop()
            raise SystemExit(f"{name} never became ready; see {log}")
        time.sleep(0.1)
    return server


# -- the load client ------------------------------------------------------------------------------------------


@dataclass
class Level:
    concurrency: int
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests
    statuses: dict[str, int] = field(default_factory=dict)  # "2xx", "4xx", "5xx"
    connection_errors: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0  # CPU seconds the server process used during the level
    client_cpu: float = 0.0  # CPU seconds this script (the load client) used during the level

    def row(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        q = (lambda p: 1000 * lat[min(len(lat) - 1, int(p * len(lat)))]) if lat else (lambda p: float("nan"))
        return {
            "concurrency": self.concurrency,
            "requests": len(lat) + self.connection_errors,
            "requests_per_s": round(len(lat) / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(q(0.50), 1),
            "p99_ms": round(q(0.99), 1),
            "mean_ms": round(1000 * statistics.fmean(lat), 1) if lat else float("nan"),
            "server_cpu_ms_per_request": round(1000 * self.server_cpu / max(len(lat), 1), 2),
            "client_cpu_ms_per_request": round(1000 * self.client_cpu / max(len(lat), 1), 2),
            "connection_errors": self.connection_errors,
            "status_5xx": self.statuses.get("5xx", 0),
            "status_4xx": self.statuses.get("4xx", 0),
        }


async def _exchange(
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None, server: Server, body: bytes
) -> tuple[int, bool, tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """One request on ``conn`` (or a new connection): (status, keep the connection, the connection)."""
    if conn is None:
        conn = await asyncio.open_connection(server.host, server.port)
    reader, writer = conn
    head = (
        f"POST {server.path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body)
    await writer.drain()
    lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")  # the whole header block in one read
    version, status = lines[0].split(b" ", 2)[:2]
    length, close = None, version == b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value.strip().lower() == b"close"
    if length is None:
        raise ConnectionError("an answer without Content-Length")
    await reader.readexactly(length)
    return int(status), not close, conn


CONNECTION_FAILURES = (
    OSError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    ConnectionError,
    ValueError,
)


async def closed_loop(
    server: Server,
    bodies: list[bytes],
    concurrency: int,
    limit: int,
    seconds: float,
    answered: Callable[[int, float, int], None],
    failed: Callable[[int, float], bool],
) -> None:
    """``concurrency`` clients, each sending its next request as soon as the last is answered, keeping its
    connection while the server allows: requests 0, 1, ... up to ``limit`` (body ``i % len(bodies)``) or for
    ``seconds``. ``answered(i, sent, status)`` is told of each answer, ``failed(i, sent)`` of each connection
    failure (the connection is dropped; True stops that client). ``sent`` is ``time.perf_counter()`` at sending."""
    next_index = 0
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal next_index
        conn = None
        while next_index < limit and time.perf_counter() < stop_at:
            i = next_index
            next_index += 1
            sent = time.perf_counter()
            try:
                status, keep, conn = await _exchange(conn, server, bodies[i % len(bodies)])
            except CONNECTION_FAILURES:
                if conn is not None:
                    conn[1].close()
                conn = None
                if failed(i, sent):
                    return
                continue
            answered(i, sent, status)
            if not keep:
                conn[1].close()
                conn = None
        if conn is not None:
            conn[1].close()

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def _load(server: Server, bodies: list[bytes], level: Level, limit: int, seconds: float) -> None:
    def answered(i: int, sent: float, status: int) -> None:
        level.latencies.append(time.perf_counter() - sent)
        cls = f"{status // 100}xx"
        level.statuses[cls] = level.statuses.get(cls, 0) + 1

    def failed(i: int, sent: float) -> bool:
        level.connection_errors += 1
        return False

    t0 = time.perf_counter()
    await closed_loop(server, bodies, level.concurrency, limit, seconds, answered, failed)
    level.seconds = time.perf_counter() - t0


CLIENT_LOOP = "asyncio"  # the load client's event loop: "asyncio" or "uvloop" (--client-loop)


def run_async(coro: Any) -> Any:
    """Run the load client's coroutine on the chosen event loop (uvloop's costs the client less CPU, which on a
    small machine shares the cores with the server)."""
    if CLIENT_LOOP == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_level(server: Server, bodies: list[bytes], concurrency: int, limit: int, seconds: float) -> Level:
    level = Level(concurrency)
    cpu0, client0 = cpu_seconds(server.proc.pid), time.process_time()
    run_async(_load(server, bodies, level, limit, seconds))
    level.server_cpu = cpu_seconds(server.proc.pid) - cpu0
    level.client_cpu = time.process_time() - client0
    return level


def sessions(data_dir: Path, count: int, seed: int = 0) -> list[list[str]]:
    """Item keys of ``count`` users' sequences drawn at random (Sports-like lengths), oldest first."""
    from mdsrec.data.processed import load_processed

    data = load_processed(data_dir)
    rng = random.Random(seed)
    users = [rng.randrange(data.num_users) for _ in range(count)]
    return [[data.item_keys[i - 1] for i in data.sequences[u]] for u in users]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="folder for the data set, the runs and the logs")
    ap.add_argument("--old-src", type=Path, help="src/ folder of the old server's source tree")
    ap.add_argument(
        "--old-threads",
        type=int,
        help="also run the old server with this many torch threads (OMP_NUM_THREADS), as a third server",
    )
    ap.add_argument(
        "--new-args", default="", help="more flags for this checkout's mdsrec serve, e.g. '--threads 2'"
    )
    ap.add_argument(
        "--compare-src",
        type=Path,
        help="another source tree with the same (FastAPI) server, e.g. this checkout before a change, served as "
        "'compare'",
    )
    ap.add_argument(
        "--compare-args",
        default="",
        help="flags for the 'compare' server's mdsrec serve (with no --compare-src: this checkout's server again "
        "with these flags, e.g. '--threads 2')",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every server and level this many times, the servers taking turns round by round; the "
        "summary gives each one's median (default: %(default)s)",
    )
    ap.add_argument("--models", default="sasrec,mdsrec")
    ap.add_argument("--levels", default="1,8,32,64")
    ap.add_argument(
        "--requests", type=int, default=2000, help="most requests per level (default: %(default)s)"
    )
    ap.add_argument(
        "--seconds", type=float, default=20.0, help="most seconds per level (default: %(default)s)"
    )
    ap.add_argument("--prepare-only", action="store_true", help="make the data set and the runs, then stop")
    ap.add_argument(
        "--client-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the load client's event loop (default: %(default)s; uvloop comes with the serve extra)",
    )
    ap.add_argument("--json", type=Path, help="write the figures as JSON")
    args = ap.parse_args()
    global CLIENT_LOOP
    CLIENT_LOOP = args.client_loop

    load_before = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = make_data(args.out / "data")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    runs = {m: make_run(data_dir, m, args.out / "runs" / m) for m in models}
    if args.prepare_only:
        print(f"data {data_dir}, runs {', '.join(str(r) for r in runs.values())}")
        return 0
    levels = [int(c) for c in args.levels.split(",")]
    bodies_keys = sessions(data_dir, 4000)
    equivalence = {}
    for model, run in runs.items():  # not timed
        equivalence[model] = batch_equivalence(run, bodies_keys[:64])
        print(f"{model}: 64 sessions ranked together vs one at a time: {equivalence[model]}", flush=True)
    new_args = args.new_args.split()
    # (label, kind, source tree, torch threads for an old server, mdsrec serve flags)
    servers: list[tuple[str, str, Path, int | None, list[str] | None]] = [
        ("new", "new", ROOT / "src", None, new_args)
    ]
    if args.compare_src or args.compare_args:
        label = f"compare {args.compare_args}".strip()
        servers.append((label, "new", args.compare_src or ROOT / "src", None, args.compare_args.split()))
    if args.old_src:
        servers.append(("old", "old", args.old_src, None, None))
        if args.old_threads:
            servers.append(
                (f"old, {args.old_threads} thread(s)", "old", args.old_src, args.old_threads, None)
            )
    results: list[dict[str, Any]] = []
    stopped: dict[str, int] = {}
    for round_no, (model, run) in ((r, mr) for r in range(args.rounds) for mr in runs.items()):
        for label, kind, src, threads, flags in servers:
            name = f"{label} {model}"
            log = args.out / f"{label.replace(' ', '').replace(',', '-')}-{model}.log"
            server = start_server(name, kind, src, run, log, threads, flags)
            try:
                bodies = [server.body(k) for k in bodies_keys]
                run_level(server, bodies, 8, 50, 60)  # warm-up, not counted
                for c in levels:
                    row = {
                        "model": model,
                        "server": label,
                        **({"round": round_no + 1} if args.rounds > 1 else {}),
                        **run_level(server, bodies, c, args.requests, args.seconds).row(),
                    }
                    results.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                code = server.stop()
                stopped[name + (f" round {round_no + 1}" if args.rounds > 1 else "")] = code
                print(f"{name}: stopped (SIGINT), exit status {code}", flush=True)

    print(
        "\n| model | server | concurrency | requests | requests/s | p50 ms | p99 ms | server CPU ms/request "
        "| connection errors | 5xx |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['model']} | {r['server']} | {r['concurrency']} | {r['requests']} | {r['requests_per_s']} | "
            f"{r['p50_ms']} | {r['p99_ms']} | {r['server_cpu_ms_per_request']} | {r['connection_errors']} | "
            f"{r['status_5xx']} |"
        )
    summary = []
    if args.rounds > 1:
        keys = sorted({(r["model"], r["server"], r["concurrency"]) for r in results}, key=str)
        for model, label, c in keys:
            mine = [r for r in results if (r["model"], r["server"], r["concurrency"]) == (model, label, c)]
            summary.append(
                {
                    "model": model,
                    "server": label,
                    "concurrency": c,
                    "rounds": len(mine),
                    "median_requests_per_s": statistics.median(r["requests_per_s"] for r in mine),
                    "median_p99_ms": statistics.median(r["p99_ms"] for r in mine),
                    "connection_errors": sum(r["connection_errors"] for r in mine),
                    "status_5xx": sum(r["status_5xx"] for r in mine),
                }
            )
            print(json.dumps(summary[-1]), flush=True)
    if args.json:
        figures = {
            **({"summary": summary} if summary else {}),
            "rows": results,
            "batched_vs_alone": equivalence,
            "client_loop": args.client_loop,
            "exit_status_after_sigint": stopped,
        }
        write_benchmark_record(args.json, figures, load_before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
