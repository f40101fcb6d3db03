"""Seconds per training epoch of MDSRec variants against each other (and SASRec), in the same code and the same
run (issue 3 "Speed"; issue 39's cost rule: a new part must not make MDSRec slower per epoch than MDSRec with ICA).

    python benchmarks/speed_mdsrec.py --data DATA_DIR --k 16 --h 5
    python benchmarks/speed_mdsrec.py --data data/sports --config configs/experiments/sports/mdsrec.yaml \\
        --variant ica --variant ext_id model.ext_id_features=true --steps 60 --eval --json OUT.json

Without ``--config`` it times SASRec, MDSRec without ICA and MDSRec with ICA (hidden 300, 2 layers, 2 heads, batch
512 prefixes). With ``--config`` every ``--variant NAME [OVERRIDE ...]`` is that config plus its overrides (no
``--variant``: the config alone). Each case runs in its own subprocess: model construction (graphs, k-means) is
timed apart, then one training epoch (with ``--steps N``: the mean of N steps after one warm-up step, times the
epoch's number of batches), then with ``--eval`` one validation pass without and one with the per-channel
diagnostics (``eval.diagnostics``). ``--json`` writes a benchmark record. Time it on otherwise idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any


def child(
    data_dir: str, config: str | None, model: str | None, sets: list[str], steps: int, ev: bool, adam: str
) -> dict:
    import numpy as np
    import torch

    from mdsrec.config import resolve_config
    from mdsrec.data.processed import load_processed
    from mdsrec.data.protocol import build_train_rows, eval_batches, train_batches
    from mdsrec.evaluation.evaluator import diagnose, evaluate, item_train_counts
    from mdsrec.training.trainer import make_experiment, make_optimizer, optimizer_step, training_loss
    from runlib import wait_for_device

    cfg = resolve_config(config, ["train.progress=false", *sets], model=model)
    data = load_processed(data_dir)
    t0 = time.perf_counter()
    exp = make_experiment(cfg, data)
    build_s = time.perf_counter() - t0
    if adam == "trainer":
        opt: torch.optim.Optimizer = make_optimizer(exp.model, cfg.train.lr)
    else:  # torch's per-tensor loop, or its fused kernel
        impl = {"fused": True} if adam == "fused" else {"foreach": False}
        opt = torch.optim.Adam(exp.model.parameters(), lr=cfg.train.lr, **impl)
    rows = build_train_rows(exp.split, cfg.data.max_len, cfg.data.train_mode)
    batches = train_batches(rows, cfg.data, epoch_seed=1)
    timed = batches if steps <= 0 else batches[1 : steps + 1]
    exp.model.train()
    if steps > 0:  # one warm-up step, not timed
        optimizer_step(exp.model, opt, training_loss(exp.model, batches[0], "fp32", exp.device), 0.0)
    wait_for_device(exp.device)
    t1 = time.perf_counter()
    for b in timed:
        optimizer_step(exp.model, opt, training_loss(exp.model, b, "fp32", exp.device), 0.0)
    wait_for_device(exp.device)
    step_s = (time.perf_counter() - t1) / len(timed)
    out: dict[str, Any] = {
        "build_seconds": round(build_s, 2),
        "batches_per_epoch": len(batches),
        "steps_timed": len(timed),
        "step_seconds": round(step_s, 4),
        "epoch_seconds": round(step_s * len(batches), 1),
        "parameters": sum(p.numel() for p in exp.model.parameters()),
    }
    if ev:
        exp.model.eval()
        valid = eval_batches(exp.split, "valid", cfg.data)
        t2 = time.perf_counter()
        evaluate(exp.model, exp.split, "valid", cfg.data, cfg.eval, exp.device, valid)
        out["eval_seconds"] = round(time.perf_counter() - t2, 1)
        counts = np.asarray(item_train_counts(exp.split, exp.data.num_items))
        t3 = time.perf_counter()
        diagnose(exp.model, exp.split, "valid", cfg.data, cfg.eval, counts, exp.device, valid)
        out["eval_diagnostics_seconds"] = round(time.perf_counter() - t3, 1)
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--config", help="an experiment config; the variants are this config plus their overrides")
    p.add_argument(
        "--variant",
        nargs="+",
        action="append",
        metavar=("NAME", "OVERRIDE"),
        help="with --config: a case named NAME, the config plus the OVERRIDEs (repeatable)",
    )
    p.add_argument("--k", type=int, default=16, help="without --config: MDSRec's centres")
    p.add_argument("--h", type=int, default=5, help="without --config: MDSRec's neighbours")
    p.add_argument("--hidden", type=int, default=300, help="without --config: the hidden size")
    p.add_argument(
        "--steps", type=int, default=0, help="time N steps and scale to the epoch (0: a whole epoch)"
    )
    p.add_argument(
        "--eval", action="store_true", help="also time one validation pass, with and without channels"
    )
    p.add_argument(
        "--adam",
        nargs="+",
        choices=("trainer", "per-tensor", "fused"),
        default=["trainer"],
        help="the optimizer(s) each case is timed with: the trainer's, torch's per-tensor Adam, its fused kernel",
    )
    p.add_argument("--json", help="write a benchmark record here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()

    cases: dict[str, tuple[str | None, list[str]]]
    if args.config:
        cases = {v[0]: (None, v[1:]) for v in (args.variant or [["config"]])}
    else:
        if args.variant:
            p.error("--variant needs --config")
        common = [f"model.hidden_size={args.hidden}", "data.batch_size=512"]
        cases = {
            "sasrec": ("sasrec", common),
            "mdsrec w/o ICA": ("mdsrec", [*common, f"model.h={args.h}", "model.use_ica=false"]),
            f"mdsrec k={args.k}": ("mdsrec", [*common, f"model.h={args.h}", f"model.k={args.k}"]),
        }
    # every case once per optimizer: name -> (model, overrides, adam)
    timed = {
        (n if len(args.adam) == 1 else f"{n} ({a})"): (m, sets, a)
        for n, (m, sets) in cases.items()
        for a in args.adam
    }
    if args.child is not None:
        model, sets, adam = timed[args.child]
        print(json.dumps(child(args.data, args.config, model, sets, args.steps, args.eval, adam)))
        return 0

    load_before = os.getloadavg()
    res: dict[str, dict[str, Any]] = {}
    for name in timed:
        out = subprocess.run(
            [sys.executable, *sys.argv, "--child", name], check=True, capture_output=True, text=True
        )
        res[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(name, json.dumps(res[name]), flush=True)
    base = next(iter(res.values()))["epoch_seconds"]
    first = next(iter(res))
    rows = []
    for name, r in res.items():
        rows.append({"case": name, "overrides": " ".join(timed[name][1]), "adam": timed[name][2], **r})
        rows[-1][f"ratio_to_{first}"] = round(r["epoch_seconds"] / base, 3)
        print(
            f"{name:20s} epoch {r['epoch_seconds']:8.1f}s  ratio to {first} {r['epoch_seconds'] / base:5.2f}  "
            f"build {r['build_seconds']:6.1f}s  peak {r['peak_rss_mib']:.0f} MiB"
            + (
                f"  eval {r['eval_seconds']:.1f}s (with channels {r['eval_diagnostics_seconds']:.1f}s)"
                if "eval_seconds" in r
                else ""
            )
        )
    if args.json:
        import torch

        from mdsrec.studies.bench_records import write_benchmark_record

        figure = "seconds per training epoch" + (
            f" (mean of {args.steps} steps, scaled)" if args.steps else ""
        )
        write_benchmark_record(
            args.json, {"figure": figure, "threads": torch.get_num_threads(), "rows": rows}, load_before
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
