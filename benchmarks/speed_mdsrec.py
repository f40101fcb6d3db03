"""MDSRec's seconds per training epoch against SASRec's, in the same code and the same run (issue 3, "Speed").

    python benchmarks/speed_mdsrec.py --data DATA_DIR --k 16 --h 5

Times one all-prefix training epoch each for: SASRec, MDSRec without ICA, MDSRec with ICA (hidden 300, 2 layers,
2 heads, batch 512 prefixes), each in its own subprocess, and prints the ratios to SASRec and the peak RSS. Model
construction (graphs, k-means) is timed separately.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(data_dir: str, model: str, sets: list[str]) -> dict[str, float]:
    import torch

    from mdsrec.config import resolve_config
    from mdsrec.data.processed import load_processed
    from mdsrec.data.protocol import build_train_rows, train_batches
    from mdsrec.training.trainer import make_experiment, optimizer_step, training_loss
    from runlib import wait_for_device

    cfg = resolve_config(None, sets, model=model)
    data = load_processed(data_dir)
    t0 = time.perf_counter()
    exp = make_experiment(cfg, data)
    build_s = time.perf_counter() - t0
    opt = torch.optim.Adam(exp.model.parameters(), lr=1e-3)
    rows = build_train_rows(exp.split, cfg.data.max_len, cfg.data.train_mode)
    batches = train_batches(rows, cfg.data, epoch_seed=1)
    exp.model.train()
    wait_for_device(exp.device)
    t1 = time.perf_counter()
    for b in batches:
        optimizer_step(exp.model, opt, training_loss(exp.model, b, "fp32", exp.device), 0.0)
    wait_for_device(exp.device)
    return {
        "build_seconds": build_s,
        "epoch_seconds": time.perf_counter() - t1,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--h", type=int, default=5)
    p.add_argument("--hidden", type=int, default=300)
    p.add_argument("--child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    common = [f"model.hidden_size={args.hidden}", "data.batch_size=512", "train.progress=false"]
    variants = {
        "sasrec": ("sasrec", common),
        "mdsrec w/o ICA": ("mdsrec", [*common, f"model.h={args.h}", "model.use_ica=false"]),
        f"mdsrec k={args.k}": ("mdsrec", [*common, f"model.h={args.h}", f"model.k={args.k}"]),
    }
    if args.child:
        model, variant = args.child
        print(json.dumps(child(args.data, model, variants[variant][1])))
        return 0
    res = {}
    for name, (model, _) in variants.items():
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--data",
                args.data,
                "--k",
                str(args.k),
                "--h",
                str(args.h),
                "--hidden",
                str(args.hidden),
                "--child",
                model,
                name,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        res[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(name, json.dumps(res[name]), flush=True)
    base = res["sasrec"]["epoch_seconds"]
    for name, r in res.items():
        print(
            f"{name:16s} epoch {r['epoch_seconds']:8.1f}s  ratio to SASRec {r['epoch_seconds'] / base:5.2f}  "
            f"build {r['build_seconds']:5.1f}s  peak {r['peak_rss_mib']:.0f} MiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
