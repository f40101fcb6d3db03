"""Soak test of `mdsrec serve` on loopback: many requests that mix valid sessions, invalid bodies and cold-start
sessions at a fixed concurrency, then a shutdown signal under load. Reports the server's RSS growth from after the
warm-up to the end, the answers by status class, connection errors, and, per signal, whether every request sent
before the signal was answered and the exit status. Bounded in count and time; loopback only; it starts and stops
the server itself (the data set and run are serve_load.py's, made once under --out and reused).

    python benchmarks/serve_soak.py --out /tmp/serve_load [--model sasrec] [--requests 20000] [--concurrency 16]
        [--json OUT]

Request mix, in a fixed shuffled order: 70% valid sessions (a user's item keys, top 10), 10% cold-start sessions
(unknown item keys with ``cold_start: popular``: a list of popular items), 5% unknown keys without cold start (200
with the error in place), and 15% invalid bodies (not JSON, wrong types, over ``top``'s limit, over the history
limit, an unknown field, a 5,000-digit number, deep nesting; each a 4xx). Pass: zero 5xx, zero connection errors,
RSS growth under 10%, and for SIGTERM and SIGINT each an exit status 0 with every request sent before the signal
answered. Run it with the cores otherwise idle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from mdsrec.studies.bench_records import write_benchmark_record
from serve_load import ROOT, Server, closed_loop, make_data, make_run, sessions, start_server


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def bodies(keys: list[list[str]], count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``count`` (kind, body) pairs in the mix of the module docstring, shuffled reproducibly."""
    rng = random.Random(seed)
    invalid = [
        b"{oops",
        b'{"requests": [{"history": "abc"}]}',
        b'{"requests": [{"history": ["a"], "top": 100000}]}',
        json.dumps({"requests": [{"history": ["x"] * 5000}]}).encode(),
        b'{"requests": [{"history": ["a"]}], "extra": 1}',
        b'{"requests": [{"user": "u1", "top": ' + b"9" * 5000 + b"}]}",
        b"[" * 10_000 + b"]" * 10_000,
        b'{"requests": []}',
    ]
    out: list[tuple[str, bytes]] = []
    for n in range(count):
        r = rng.random()
        session = keys[n % len(keys)]
        if r < 0.70:
            out.append(("valid", json.dumps({"requests": [{"history": session, "top": 10}]}).encode()))
        elif r < 0.80:
            unknown = [f"not-an-item-{rng.randrange(10**6)}" for _ in range(3)]
            body = {"requests": [{"history": unknown, "cold_start": "popular", "top": 10}]}
            out.append(("cold_start", json.dumps(body).encode()))
        elif r < 0.85:
            body = {"requests": [{"history": ["not-an-item"], "cold_start": "error"}]}
            out.append(("unknown", json.dumps(body).encode()))
        else:
            out.append(("invalid", invalid[rng.randrange(len(invalid))]))
    return out


async def load(
    server: Server, work: list[tuple[str, bytes]], concurrency: int, seconds: float
) -> tuple[dict[str, int], int, list[tuple[float, str]]]:
    """Send ``work`` with ``concurrency`` closed-loop clients (serve_load.closed_loop): (answers per "kind
    status-class", connection errors, [(send time, what happened)] per request)."""
    counts: dict[str, int] = {}
    errors = 0
    events: list[tuple[float, str]] = []

    def answered(i: int, sent: float, status: int) -> None:
        key = f"{work[i][0]} {status // 100}xx"
        counts[key] = counts.get(key, 0) + 1
        events.append((sent, f"{status // 100}xx"))

    def failed(i: int, sent: float) -> bool:
        nonlocal errors
        errors += 1
        events.append((sent, "connection error"))
        return server.proc.poll() is not None  # the server is gone: this client stops

    bodies = [body for _, body in work]
    await closed_loop(server, bodies, concurrency, len(work), seconds, answered, failed)
    return counts, errors, events


def soak(server: Server, work: list[tuple[str, bytes]], concurrency: int, seconds: float) -> dict[str, Any]:
    asyncio.run(load(server, work[:200], concurrency, 120))  # warm-up, not counted
    rss_start = rss_mib(server.proc.pid)
    t0 = time.perf_counter()
    counts, errors, _ = asyncio.run(load(server, work, concurrency, seconds))
    elapsed = time.perf_counter() - t0
    rss_end = rss_mib(server.proc.pid)
    answered = sum(counts.values())
    return {
        "requests": answered + errors,
        "seconds": round(elapsed, 1),
        "requests_per_s": round(answered / elapsed, 1),
        "answers": dict(sorted(counts.items())),
        "status_5xx": sum(v for k, v in counts.items() if k.endswith("5xx")),
        "connection_errors": errors,
        "rss_after_warm_up_mib": round(rss_start, 1),
        "rss_at_end_mib": round(rss_end, 1),
        "rss_growth": round(rss_end / rss_start - 1, 4),
    }


def signal_under_load(
    server: Server, work: list[tuple[str, bytes]], concurrency: int, sig: int, after: float
) -> dict[str, Any]:
    """Load the server and send ``sig`` ``after`` seconds in: every request sent before the signal must be answered
    (2xx/4xx), and the server must exit 0. Requests sent after it may be refused (it stops accepting)."""

    async def run() -> tuple[dict[str, int], int, list[tuple[float, str]], float]:
        task = asyncio.create_task(load(server, work, concurrency, 120))
        await asyncio.sleep(after)
        at = time.perf_counter()
        server.proc.send_signal(sig)
        counts, errors, events = await task
        return counts, errors, events, at

    counts, errors, events, at = asyncio.run(run())
    try:
        code = server.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        code = None
    before = [what for sent, what in events if sent < at]
    lost = [what for what in before if what not in ("2xx", "4xx")]
    return {
        "signal": signal.Signals(sig).name,
        "sent_before_signal": len(before),
        "sent_before_signal_unanswered": len(lost),
        "answers_after_signal": sum(1 for sent, w in events if sent >= at and w in ("2xx", "4xx")),
        "refused_after_signal": sum(1 for sent, w in events if sent >= at and w == "connection error"),
        "exit_status": code,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="serve_load.py's folder (data set and runs)")
    ap.add_argument("--model", default="sasrec")
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=600.0, help="at most this long for the soak itself")
    ap.add_argument("--json", type=Path, help="write the figures as JSON")
    args = ap.parse_args()

    load_before = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = make_data(args.out / "data")
    run = make_run(data_dir, args.model, args.out / "runs" / args.model)
    work = bodies(sessions(data_dir, 4000), args.requests)
    print(f"{len(work)} requests: {dict(sorted(_kinds(work).items()))}", flush=True)

    server = start_server("soak", "new", ROOT / "src", run, args.out / f"soak-{args.model}.log")
    try:
        result = soak(server, work, args.concurrency, args.seconds)
    finally:
        server.stop()
    print(json.dumps(result), flush=True)
    signals = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        server = start_server(
            f"soak-{sig.name}", "new", ROOT / "src", run, args.out / f"soak-{args.model}-{sig.name}.log"
        )
        try:
            signals.append(signal_under_load(server, work, args.concurrency, sig, after=3.0))
        finally:
            server.stop()
        print(json.dumps(signals[-1]), flush=True)
    ok = (
        result["status_5xx"] == 0
        and result["connection_errors"] == 0
        and result["rss_growth"] < 0.10
        and all(s["exit_status"] == 0 and s["sent_before_signal_unanswered"] == 0 for s in signals)
    )
    print("PASS" if ok else "FAIL", flush=True)
    if args.json:
        figures = {
            "model": args.model,
            "concurrency": args.concurrency,
            "soak": result,
            "signals": signals,
            "pass": ok,
        }
        write_benchmark_record(args.json, figures, load_before)
    return 0 if ok else 1


def _kinds(work: list[tuple[str, bytes]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for kind, _ in work:
        out[kind] = out.get(kind, 0) + 1
    return out


if __name__ == "__main__":
    raise SystemExit(main())
