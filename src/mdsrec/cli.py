"""The command-line interface (thin: parses flags, configures logging, calls the library).

mdsrec quickstart [--out DIR]
mdsrec prepare RECIPE_OR_SPEC [--source DIR] --out DIR
mdsrec synthetic --out DIR
mdsrec train --data DATA_DIR --model NAME --out RUN_DIR [--config FILE] [--set key=value ...] [--resume]
mdsrec evaluate --run RUN_DIR [--data DATA_DIR]
mdsrec benchmark --data DATA_DIR --models M1,M2 --seeds N --out DIR [--configs DIR] [--set key=value ...]
                 [--search train.lr=1e-4,1e-3,1e-2] [--dry-run]
mdsrec explain --run RUN_DIR --user USER [--index] [--stage test|valid|next] [--top N] [--json OUT]
mdsrec recommend --run RUN_DIR (--user U ... | --users-file F | --all-users | --history K1,K2 | --sessions F)
                 [--index] [--top N] [--stage next|test|valid] [--[no-]exclude-history] [--candidates F]
                 [--item-field key|token] [--skip-unknown] [--cold-start error|popular] [--format jsonl|csv]
                 [--out FILE] [--data DATA_DIR] [--device D]
mdsrec serve --run RUN_DIR [--host H] [--port P] [--cold-start error|popular] [--batch-size N] [--batch-wait-ms MS]
             [--max-top N] [--max-history N] [--max-requests N] [--max-body-bytes N] [--max-connections N]
             [--data DATA_DIR] [--device D]
mdsrec sweep --data DATA_DIR --model NAME --param model.h --values 0,5,10,20 --out DIR [--config FILE]
             [--set key=value ...] [--seed S]
mdsrec records save SRC DEST
mdsrec records restore RECORDS OUT --data DATA_DIR [DATA_DIR ...]
mdsrec report RECORDS [RECORDS ...] --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mdsrec.data.spec import TEXT_PRECISIONS
from mdsrec.errors import MdsrecError

log = logging.getLogger("mdsrec")


def _table(rows: list[tuple[str, dict[str, Any]]], extra: tuple[str, ...] = ()) -> str:
    from mdsrec.studies.results import METRICS

    head = ["model", *METRICS, *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in rows:
        cells = [name] + [f"{m['test'][c]:.4f}" if c in m["test"] else "-" for c in METRICS]
        cells += [str(m.get(e, "")) for e in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> int:
    from mdsrec.config import resolve_config
    from mdsrec.data.processed import load_processed
    from mdsrec.training.trainer import train

    given = args.config or args.set or args.model
    if args.resume and not given:
        cfg = None  # continue with the run's saved config
    else:
        if not args.model and not args.config:
            raise MdsrecError("pass --model NAME (or a --config file with model.name)")
        cfg = resolve_config(args.config, args.set or [], model=args.model)
    data = load_processed(args.data)
    t0 = time.perf_counter()
    metrics = train(cfg, data, args.out, resume=args.resume)
    print(_table([(metrics["config"]["model"]["name"], metrics)], ("best_epoch", "seconds_per_epoch")))
    print(f"wrote {Path(args.out) / 'metrics.json'} ({time.perf_counter() - t0:.0f}s)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mdsrec.evaluation.evaluator import evaluate
    from mdsrec.rundir import METRICS
    from mdsrec.training.trainer import open_run

    run = Path(args.run)
    exp = open_run(run, args.data, device=args.device)
    test = evaluate(exp.model, exp.split, args.stage, exp.cfg.data, exp.cfg.eval, exp.device)
    print(json.dumps({args.stage: test}, indent=2))
    saved = run / METRICS
    if saved.is_file():
        ref = json.loads(saved.read_text())[args.stage]
        diff = max(abs(ref[k] - test[k]) for k in test)
        status = "match" if diff <= 1e-6 else f"DIFFER (max abs difference {diff:.2e})"
        print(f"{args.stage} metrics {status} with {saved}")
        return 0 if diff <= 1e-6 else 1
    return 0


def cmd_synthetic(args: argparse.Namespace) -> int:
    from mdsrec.atomic import locked_output
    from mdsrec.data.processed import check_output
    from mdsrec.data.synthetic import SyntheticConfig, write_synthetic

    cfg = SyntheticConfig(seed=args.seed, num_users=args.users, num_items=args.items)
    with locked_output(args.out, "synthetic"):  # a second writer fails at once, not after generating
        check_output(args.out, args.overwrite)
        out = write_synthetic(args.out, cfg, overwrite=args.overwrite)
    manifest = json.loads((out / "manifest.json").read_text())
    print(f"wrote {out}: {manifest['counts']}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from mdsrec.data.prepare import prepare

    report = prepare(
        args.spec,
        out=args.out,
        source=args.source,
        overwrite=args.overwrite,
        text_model=args.text_model,
        device=args.device,
        progress=not args.no_progress,
        text_precision=args.text_precision,
    )
    print(report)
    return 0


QUICKSTART_MODELS = {
    "sasrec": ["model.hidden_size=64", "model.dropout=0.2", "model.attn_dropout=0.2"],
    "gru4rec": ["model.embedding_size=64", "model.hidden_size=128", "model.dropout=0.2"],
    "mdsrec": ["model.hidden_size=64", "model.dropout=0.2", "model.attn_dropout=0.2"],
}


def cmd_quickstart(args: argparse.Namespace) -> int:
    from mdsrec.atomic import locked_output

    with locked_output(args.out, "quickstart"):  # a second quickstart into OUT fails at once
        return _quickstart(Path(args.out), args.epochs)


def _check_quickstart_out(out: Path) -> None:
    """OUT/data may only be a synthetic data set and OUT/runs/<model> only run directories: quickstart replaces
    them, and nothing else."""
    from mdsrec.data.processed import is_data_set
    from mdsrec.rundir import is_run_directory

    data_dir = out / "data"
    if data_dir.exists() and not is_data_set(data_dir):
        raise MdsrecError(f"{data_dir} exists and is not a quickstart data set: choose another --out")
    if data_dir.exists() and json.loads((data_dir / "manifest.json").read_text()).get("name") != "synthetic":
        raise MdsrecError(f"{data_dir} holds another data set: choose another --out")
    for name in QUICKSTART_MODELS:
        run_dir = out / "runs" / name
        if run_dir.exists() and not (is_run_directory(run_dir) or _empty_dir(run_dir)):
            raise MdsrecError(f"{run_dir} exists and is not a run directory: choose another --out")


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _quickstart(out: Path, epochs: int) -> int:
    from mdsrec.config import resolve_config
    from mdsrec.data.processed import load_processed
    from mdsrec.data.synthetic import write_synthetic
    from mdsrec.training.trainer import train

    _check_quickstart_out(out)
    data_dir = out / "data"
    print(
        f"[1/2] generating the built-in synthetic data set (raw files and pictures: {out / 'raw'}) into {data_dir}"
    )
    write_synthetic(data_dir, overwrite=True, raw_dir=out / "raw", progress=True)
    data = load_processed(data_dir)
    print(f"      {data.manifest['counts']}")
    rows = []
    common = [f"train.epochs={epochs}", "train.patience=5", "data.batch_size=256", "train.lr=0.002"]
    for i, (name, sets) in enumerate(QUICKSTART_MODELS.items(), 1):
        run_dir = out / "runs" / name
        if run_dir.exists():
            shutil.rmtree(run_dir)  # quickstart owns OUT/runs/<model> (a run directory: checked above)
        print(f"[2/2] training {name} ({i}/{len(QUICKSTART_MODELS)}) -> {run_dir}")
        cfg = resolve_config(None, common + sets, model=name)
        rows.append((name, train(cfg, data, run_dir)))
    print("\nTest metrics on the synthetic data (full ranking, leave-one-out):\n")
    print(_table(rows, ("best_epoch", "seconds_per_epoch")))
    print(f"\nmetrics.json files are under {out / 'runs'}")
    mdsrec_run = out / "runs" / "mdsrec"
    print(
        "next: top-10 lists for the first users, and why MDSRec recommends them:\n"
        f"  mdsrec recommend --run {mdsrec_run} --user u0 u1 u2\n"
        f"  mdsrec explain --run {mdsrec_run} --user u0 --stage next"
    )
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from mdsrec.data.processed import load_processed
    from mdsrec.studies.benchmark import DEFAULT_CONFIGS, benchmark

    data = load_processed(args.data)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    configs = Path(args.configs) if args.configs else DEFAULT_CONFIGS
    if args.configs and not configs.is_dir():
        raise MdsrecError(f"--configs {configs}: not a directory")
    t0 = time.perf_counter()
    if args.dry_run:  # benchmark logs the plan and its summary; the finished runs' table goes to stdout
        so_far = benchmark(
            data, models, args.seeds, args.out, configs, args.set or [], args.dataset, args.search, True
        )
        if so_far.results:
            from mdsrec.studies.benchmark import parse_search
            from mdsrec.studies.paper import load_table2
            from mdsrec.studies.results import results_markdown

            param, values = parse_search(args.search) if args.search else ("", [])
            table = results_markdown(
                so_far.results, args.dataset or data.name, data, load_table2(), param, values, so_far.left_out
            )
            print(f"Finished runs so far (a partial table; nothing written):\n\n{table}")
        elif so_far.left_out:
            print("No finished run yet. Left out (no result): " + "; ".join(so_far.left_out))
        return 0
    benchmark(data, models, args.seeds, args.out, configs, args.set or [], args.dataset, args.search)
    out = Path(args.out)
    print((out / "results.md").read_text(encoding="utf-8"))
    written = ", ".join(str(out / f"results.{ext}") for ext in ("csv", "md", "png"))
    print(f"wrote {written} ({time.perf_counter() - t0:.0f}s)")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from mdsrec.atomic import write_json
    from mdsrec.explain import explain, render_text
    from mdsrec.training.trainer import open_run

    run = Path(args.run)
    exp = open_run(run, args.data, device=args.device)
    report = explain(exp, args.user, by_index=args.index, stage=args.stage, top=args.top, run=run)
    print(render_text(report), end="")
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from mdsrec.atomic import write_text
    from mdsrec.serving import Recommender, Request
    from mdsrec.serving.requests import format_results, read_candidates, read_sessions, read_users

    sources = [args.user, args.users_file, args.all_users or None, args.history, args.sessions]
    if sum(s is not None for s in sources) != 1:
        raise MdsrecError("pass exactly one of --user, --users-file, --all-users, --history, --sessions")
    sessions = args.history is not None or args.sessions is not None
    if args.stage != "next" and sessions:
        raise MdsrecError("--stage applies to users of the data set, not to --history/--sessions")
    if args.index and (sessions or args.all_users):
        raise MdsrecError("--index applies to --user/--users-file")
    rec = Recommender.from_run(args.run, args.data, device=args.device)
    requests: list[Request]
    if args.history is not None:
        items = [k.strip() for k in args.history.split(",") if k.strip()]
        requests = [
            rec.session_request("session", items, args.item_field, args.skip_unknown, args.cold_start)
        ]
    elif args.sessions is not None:
        requests = read_sessions(rec, args.sessions, args.item_field, args.skip_unknown, args.cold_start)
    else:
        if args.all_users:
            requests = [rec.user_request(str(i), True, args.stage) for i in range(rec.data.num_users)]
        elif args.users_file is not None:
            requests = read_users(rec, args.users_file, args.index, args.stage)
        else:
            seen: dict[str, int] = {}
            for n, u in enumerate(args.user, 1):
                if u in seen:
                    raise MdsrecError(
                        f"--user entry {n}: user {u!r} repeats entry {seen[u]} (one list per user)"
                    )
                seen[u] = n
            requests = [rec.user_request(u, args.index, args.stage) for u in args.user]
    blocked = None
    if args.candidates is not None:
        blocked = read_candidates(rec, args.candidates, args.item_field, args.skip_unknown)

    from tqdm.auto import tqdm

    results: Iterable[dict[str, Any]] = rec.iter_recommend(requests, args.top, args.exclude_history, blocked)
    results = tqdm(results, total=len(requests), desc="recommend", unit="user", disable=len(requests) < 1000)
    text = format_results(results, args.format)
    if args.out:
        write_text(args.out, text)
        print(f"wrote {len(requests)} recommendation list(s) to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from mdsrec.serving.http import ServeSettings, serve
    except ImportError as e:
        raise MdsrecError(
            f"mdsrec serve needs the serve extra ({e.name} is missing): pip install 'mdsrec[serve]'"
        ) from None
    from mdsrec.serving import Recommender

    settings = ServeSettings(
        host=args.host,
        port=args.port,
        cold_start=args.cold_start,
        batch_size=args.batch_size,
        batch_wait_ms=args.batch_wait_ms,
        threads=args.threads,
        max_top=args.max_top,
        max_history=args.max_history,
        max_requests=args.max_requests,
        max_body_bytes=args.max_body_bytes,
        max_connections=args.max_connections,
        keep_alive_s=args.keep_alive,
        graceful_timeout_s=args.graceful_timeout,
        access_log=args.access_log,
    )
    settings.check()
    try:
        rec = Recommender.from_run(args.run, args.data, device=args.device)
    except Exception as e:  # noqa: BLE001 - a run that cannot be served is refused in one line, not a traceback
        lines = str(e).strip().splitlines() or [type(e).__name__]
        more = " (...)" if len(lines) > 1 else ""
        what = "" if isinstance(e, MdsrecError) else f"{type(e).__name__}: "
        raise MdsrecError(f"cannot serve {args.run}: {what}{lines[0]}{more}") from None

    def listening(url: str) -> None:
        print(
            f"serving {rec.model.name} ({args.run}) on {url} (API: {url}/docs; ready: {url}/health/ready)",
            flush=True,
        )

    serve(rec, settings, listening)
    print("stopped", file=sys.stderr)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from mdsrec.data.processed import load_processed
    from mdsrec.studies.sweep import sweep

    if not args.model and not args.config:
        raise MdsrecError("pass --model NAME (or a --config file with model.name)")
    data = load_processed(args.data)
    values = [v.strip() for v in args.values.split(",") if v.strip()]
    t0 = time.perf_counter()
    sweep(data, args.model, args.param, values, args.out, args.config, args.set or [], args.seed)
    out = Path(args.out)
    print((out / "sweep.md").read_text(encoding="utf-8"))
    written = ", ".join(str(out / f"sweep.{ext}") for ext in ("csv", "md", "png"))
    print(f"wrote {written} ({time.perf_counter() - t0:.0f}s)")
    return 0


def cmd_records(args: argparse.Namespace) -> int:
    from mdsrec.studies import records

    if args.action == "save":
        report = records.save(args.src, args.dest)
        print(
            f"records of {args.src} in {args.dest}: {len(report.copied)} written, {len(report.unchanged)} unchanged"
        )
    else:
        report = records.restore(args.records, args.out, args.data)
        for why in report.skipped[:5]:
            print(f"skipped {why}")
        if len(report.skipped) > 5:
            print(f"... and {len(report.skipped) - 5} more skipped")
        print(
            f"restored into {args.out}: {len(report.copied)} runs (metrics and epoch log, no checkpoints), "
            f"{len(report.unchanged)} already there, {len(report.skipped)} skipped"
        )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mdsrec.studies.bench_records import load_benchmarks
    from mdsrec.studies.report import load_records, update_readme, write_report

    t0 = time.perf_counter()
    records = load_records(args.records)
    benchmarks = load_benchmarks(args.records)
    written = write_report(records, args.out, benchmarks)
    if args.readme:
        changed = update_readme(args.readme, records)
        print(f"{args.readme}: headline tables {'updated' if changed else 'already up to date'}")
    n = len({r.study for r in records})
    studies = f"{n} stud{'ies' if n != 1 else 'y'}"
    print(
        f"read {len(records)} run records ({studies}) and {len(benchmarks)} benchmark records from "
        f"{', '.join(args.records)}; wrote "
        f"{', '.join(str(p) for p in written)} ({time.perf_counter() - t0:.1f}s)"
    )
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mdsrec", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser(
        "quickstart", help="generate the built-in synthetic data, train SASRec, GRU4Rec and MDSRec"
    )
    q.add_argument("--out", default="mdsrec-quickstart", help="output directory (default: %(default)s)")
    q.add_argument("--epochs", type=int, default=30, help="maximum epochs per model (default: %(default)s)")
    q.set_defaults(func=cmd_quickstart)

    pr = sub.add_parser("prepare", help="build a processed data set from a recipe name or a spec file")
    pr.add_argument("spec", help="built-in recipe (scientific, sports, toys) or a spec .yaml file")
    pr.add_argument("--source", help="directory holding the raw files (default: the spec file's directory)")
    pr.add_argument("--out", required=True, help="processed data directory to write")
    pr.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing mdsrec data set at --out (an empty folder too; never any other folder)",
    )
    pr.add_argument(
        "--text-model", help="local sentence-transformers model directory (default: bundled MiniLM)"
    )
    pr.add_argument("--device", default="cpu", help="device for the text encoder (default: %(default)s)")
    pr.add_argument(
        "--text-precision",
        choices=TEXT_PRECISIONS,
        help="precision text is encoded in (default: each modality's `precision`, float64): float64, stored on a "
        "2^-20 grid, gives the same bytes, hence the same data fingerprint, on other CPUs and library versions; "
        "float32 is ~2x faster and machine-dependent",
    )
    pr.add_argument("--no-progress", action="store_true", help="no progress bars")
    pr.set_defaults(func=cmd_prepare)

    sy = sub.add_parser("synthetic", help="write the built-in synthetic data set")
    sy.add_argument("--out", required=True)
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--users", type=int, default=3000)
    sy.add_argument("--items", type=int, default=6000)
    sy.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing mdsrec data set at --out (an empty folder too; never any other folder)",
    )
    sy.set_defaults(func=cmd_synthetic)

    t = sub.add_parser("train", help="train one model; writes RUN_DIR/metrics.json")
    t.add_argument("--data", required=True, help="processed data directory")
    t.add_argument("--model", help="model name (or model.name in --config)")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--config", help="YAML config file (sections model, data, train, eval)")
    t.add_argument(
        "--set", nargs="*", action="extend", metavar="KEY=VALUE", help="overrides, e.g. train.lr=0.001"
    )
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="recompute a run's metrics from its best checkpoint")
    e.add_argument("--run", required=True, help="run directory")
    e.add_argument("--data", help="processed data directory (default: the one recorded in RUN_DIR/run.json)")
    e.add_argument("--stage", default="test", choices=("valid", "test"))
    e.add_argument("--device", default="cpu", help="device to evaluate on (default: %(default)s)")
    e.set_defaults(func=cmd_evaluate)

    b = sub.add_parser("benchmark", help="train several models over seeds; results.csv/.md/.png (resumable)")
    b.add_argument("--data", required=True, help="processed data directory")
    b.add_argument(
        "--models",
        required=True,
        help="comma-separated model names, e.g. sasrec,gru4rec,pop, or named variants: a frozen config "
        "CONFIGS/<dataset>/<variant>.yaml that says 'variant: <variant>' (e.g. mdsrec_plus)",
    )
    b.add_argument("--seeds", type=int, default=3, help="training seeds per model (default: %(default)s)")
    b.add_argument("--out", required=True, help="output directory (runs/ and results files)")
    b.add_argument(
        "--configs",
        help="frozen configs, DIR/<dataset>/<model>.yaml (default: the ones shipped with mdsrec)",
    )
    b.add_argument(
        "--set",
        nargs="*",
        action="extend",
        metavar="KEY=VALUE",
        help="overrides for every model, or MODEL:KEY=VALUE for one",
    )
    b.add_argument("--dataset", help="data set name for configs and Table 2 (default: the manifest's name)")
    b.add_argument(
        "--search",
        metavar="KEY=V1,V2,...",
        help="search one parameter per model on validation (first seed), e.g. train.lr=1e-4,1e-3,1e-2",
    )
    b.add_argument(
        "--dry-run",
        action="store_true",
        help="say what each run would do (and check finished ones); train nothing",
    )
    b.set_defaults(func=cmd_benchmark)

    x = sub.add_parser("explain", help="why a run recommends what it does to one user (MDSRec: per channel)")
    x.add_argument("--run", required=True, help="run directory")
    x.add_argument("--user", required=True, help="the user's token in DATA_DIR/users.tsv (with --index: row)")
    x.add_argument("--index", action="store_true", help="--user is the internal 0-based row of users.tsv")
    x.add_argument("--data", help="processed data directory (default: the one recorded in RUN_DIR/run.json)")
    x.add_argument(
        "--stage",
        default="test",
        choices=("test", "valid", "next"),
        help="history before the held-out test/valid item (its rank is shown), or the whole sequence (next); "
        "default: %(default)s",
    )
    x.add_argument("--top", type=int, default=10, help="items per channel (default: %(default)s)")
    x.add_argument("--json", help="also write the report as JSON to this file")
    x.add_argument("--device", default="cpu", help="device to run the model on (default: %(default)s)")
    x.set_defaults(func=cmd_explain)

    r = sub.add_parser(
        "recommend", help="top-N next items for users or ad-hoc sessions from a run (JSONL/CSV)"
    )
    r.add_argument("--run", required=True, help="run directory (its best.pt is used)")
    r.add_argument("--data", help="processed data directory (default: the one recorded in RUN_DIR/run.json)")
    r.add_argument("--user", nargs="+", help="user token(s) of DATA_DIR/users.tsv (with --index: rows)")
    r.add_argument("--users-file", help="file with one user token per line")
    r.add_argument("--all-users", action="store_true", help="every user of the data set")
    r.add_argument("--index", action="store_true", help="--user/--users-file hold 0-based rows of users.tsv")
    r.add_argument("--history", help="one ad-hoc session: comma-separated item keys, oldest first")
    r.add_argument("--sessions", help='JSON-lines file, one {"id": ..., "history": [KEY, ...]} per line')
    r.add_argument(
        "--item-field",
        default="key",
        choices=("key", "token"),
        help="how --history/--sessions/--candidates name items: items.tsv key (e.g. ASIN) or token "
        "(default: %(default)s)",
    )
    r.add_argument(
        "--cold-start",
        default="error",
        choices=("error", "popular"),
        help="a session without a known item: an error, or the most interacted-with items (default: %(default)s)",
    )
    r.add_argument(
        "--skip-unknown", action="store_true", help="drop history/candidate items not in the catalogue"
    )
    r.add_argument(
        "--stage",
        default="next",
        choices=("next", "test", "valid"),
        help="users: whole sequence (next), or the history before the held-out test/valid item "
        "(default: %(default)s)",
    )
    r.add_argument("--top", type=_positive_int, default=10, help="items per list (default: %(default)s)")
    r.add_argument(
        "--exclude-history",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="leave items of the history out of the list (default: the run's eval.exclude_history)",
    )
    r.add_argument(
        "--candidates", help="file of items (one per line, named as --item-field says): recommend only these"
    )
    r.add_argument(
        "--format", default="jsonl", choices=("jsonl", "csv"), help="output format (default: jsonl)"
    )
    r.add_argument("--out", help="output file, written atomically (default: standard output)")
    r.add_argument("--device", default="cpu", help="device to run the model on (default: %(default)s)")
    r.set_defaults(func=cmd_recommend)

    v = sub.add_parser(
        "serve",
        help="an HTTP service of a run's recommendations (FastAPI + uvicorn, micro-batched; extra: serve)",
    )
    v.add_argument("--run", required=True, help="run directory (its best.pt is used)")
    v.add_argument("--data", help="processed data directory (default: the one recorded in RUN_DIR/run.json)")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    v.add_argument("--port", type=int, default=8000, help="port (0: any free one; default: %(default)s)")
    v.add_argument("--device", default="cpu", help="device to run the model on (default: %(default)s)")
    v.add_argument(
        "--cold-start",
        default="error",
        choices=("error", "popular"),
        help="a session without a known item: an error, or the most interacted-with items; a request's "
        "cold_start overrides it (default: %(default)s)",
    )
    v.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        help="most requests ranked together by one forward pass (default: %(default)s)",
    )
    v.add_argument(
        "--batch-wait-ms",
        type=float,
        default=2.0,
        help="longest wait for a batch to fill after its first request, in ms (default: %(default)s)",
    )
    v.add_argument(
        "--threads",
        type=_positive_int,
        default=2,
        help="torch threads of the model (the event loop answering HTTP shares the cores; default: %(default)s)",
    )
    v.add_argument("--max-top", type=_positive_int, default=1000, help="largest top (default: %(default)s)")
    v.add_argument(
        "--max-history",
        type=_positive_int,
        default=1000,
        help="most items in a session (default: %(default)s)",
    )
    v.add_argument(
        "--max-requests",
        type=_positive_int,
        default=256,
        help="most requests (users or sessions) in one POST /v1/recommend (default: %(default)s)",
    )
    v.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=1 << 20,
        help="largest request body (default: %(default)s)",
    )
    v.add_argument(
        "--max-connections",
        type=_positive_int,
        default=1000,
        help="most open connections; requests beyond them are answered 503 (default: %(default)s)",
    )
    v.add_argument(
        "--keep-alive",
        type=float,
        default=5.0,
        help="seconds an idle keep-alive connection stays open (default: %(default)s)",
    )
    v.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        help="on SIGTERM/SIGINT, longest wait in seconds for the requests in flight (default: %(default)s)",
    )
    v.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log one line per request, with its request id (default: on)",
    )
    v.set_defaults(func=cmd_serve)

    w = sub.add_parser("sweep", help="one run per value of a parameter; sweep.csv/.md/.png (resumable)")
    w.add_argument("--data", required=True, help="processed data directory")
    w.add_argument("--model", help="model name (or model.name in --config)")
    w.add_argument("--param", required=True, help="the parameter, section.key, e.g. model.h or model.k")
    w.add_argument("--values", required=True, help="comma-separated values, e.g. 0,5,10,20")
    w.add_argument("--out", required=True, help="output directory (runs/ and sweep files)")
    w.add_argument("--config", help="YAML config file for every run")
    w.add_argument("--set", nargs="*", action="extend", metavar="KEY=VALUE", help="overrides for every run")
    w.add_argument("--seed", type=int, help="train.seed for every run (default: the config's)")
    w.set_defaults(func=cmd_sweep)

    rc = sub.add_parser(
        "records", help="keep finished runs' metrics and epoch logs (no checkpoints) apart, and restore them"
    )
    rs = rc.add_subparsers(dest="action", required=True)
    r1 = rs.add_parser("save", help="copy metrics.json/log.jsonl of every finished run under SRC into DEST")
    r1.add_argument("src", help="a benchmark or sweep output folder, or a folder of them")
    r1.add_argument("dest", help="records folder (small enough to commit)")
    r2 = rs.add_parser(
        "restore",
        help="copy records back into OUT so that benchmark reuses those runs instead of training them",
    )
    r2.add_argument("records", help="records folder written by `mdsrec records save`")
    r2.add_argument("out", help="the folder SRC was when saved")
    r2.add_argument(
        "--data",
        nargs="+",
        required=True,
        help="processed data directories (or folders of them); only records trained on one of them are restored",
    )
    rc.set_defaults(func=cmd_records)

    rp = sub.add_parser(
        "report", help="results.md, headline.md and report.html from run records (Table 2, claims, curves)"
    )
    rp.add_argument(
        "records",
        nargs="+",
        help="records folders (`mdsrec records save`), study folders or benchmark folders",
    )
    rp.add_argument("--out", required=True, help="output folder (new, or one a report wrote before)")
    rp.add_argument(
        "--readme", help="also write the headline tables into this file's <!-- report:headline --> block"
    )
    rp.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args))
    except MdsrecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {INTERRUPTED.get(args.command, 'nothing to continue')}", file=sys.stderr)
        return 130


# What a user can do after Ctrl-C, per command (only train has --resume; benchmark and sweep resume by running
# again; prepare writes --out only when it has finished).
INTERRUPTED = {
    "train": "continue the run with the same command and --resume",
    "benchmark": "run the same command again: finished runs are reused and the interrupted one resumes",
    "sweep": "run the same command again: finished runs are reused and the interrupted one resumes",
    "quickstart": "run it again to start over",
    "prepare": "--out was not written (it is written only when prepare finishes); run the same command again",
}


if __name__ == "__main__":
    sys.exit(main())
