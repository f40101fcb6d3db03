"""Mean and standard deviation over training seeds for several models on one data set.

    python benchmarks/seeds.py --data DATA_DIR --models sasrec,mdsrec --seeds 3 --runs runs/seeds \
        --set data.batch_size=256 train.lr=0.002 --model-set mdsrec:model.k=16 mdsrec:model.h=10

Runs `mdsrec train` once per (model, seed) with train.seed=SEED (resuming or skipping finished runs), one at a time,
and prints a markdown table of the test metrics (mean +- std over seeds) with seconds per epoch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from runlib import ensure_run

METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--models", required=True)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--runs", required=True)
    p.add_argument("--set", nargs="*", default=[], help="overrides for every run")
    p.add_argument("--model-set", nargs="*", default=[], help="MODEL:key=value overrides for one model")
    p.add_argument("--out", help="also write the table to this file")
    args = p.parse_args()
    lines = [
        "| model | seeds | " + " | ".join(METRICS) + " | s/epoch | epochs |",
        "|---|---|" + "---|" * (len(METRICS) + 2),
    ]
    for model in args.models.split(","):
        extra = [s.split(":", 1)[1] for s in args.model_set if s.split(":", 1)[0] == model]
        results = []
        for seed in range(args.seeds):
            run = Path(args.runs) / model / f"seed{seed}"
            sets = ["train.progress=false", f"train.seed={seed}", *args.set, *extra]
            results.append(ensure_run(run, args.data, ["--model", model], sets))
        cells = []
        for k in METRICS:
            vals = [r["test"][k] for r in results]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.4f} ± {sd:.4f}")
        spe = statistics.mean(r["seconds_per_epoch"] for r in results)
        eps = "/".join(str(r["epochs"]) for r in results)
        lines.append(f"| {model} | {len(results)} | " + " | ".join(cells) + f" | {spe:.2f} | {eps} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
