"""MDSRec's Table 3 ablations on one data set: the full model and each variant, one seed, the same settings for all.

    python benchmarks/ablations.py --data DATA_DIR --dataset scientific --lr 1e-3 --runs runs/ablations \
        --out runs/ablations/scientific.md [--full-run runs/bench/scientific_table2/runs/mdsrec/train.lr=0.001/seed0]

Every run is `mdsrec train --config configs/experiments/DATASET/mdsrec.yaml --set train.lr=LR <switch>` (resumed
when interrupted, reused when finished with the same config on the same data), one at a time, into
RUNS/DATASET_ablations/runs/<variant> (the full model is ``base``), so that `mdsrec records save RUNS
benchmarks/records` keeps them as the study DATASET_ablations and `mdsrec report` sets each variant against
``base``. ``--full-run`` reuses a finished run of the full model trained with the same config and lr instead of
training it again (its config is checked; it is linked in as ``base``). Writes a markdown table of test metrics with
each variant's change in Recall@20 and NDCG@20 relative to the full model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runlib import ensure_run, finished_run

VARIANTS = {
    "MDSRec": [],
    "w/o DIS": ["model.use_distance=false"],
    "w/o CRE": ["model.use_cre=false"],
    "w/o MRGC": ["model.use_mrgc=false"],
    "w/o ICA": ["model.use_ica=false"],
}
METRICS = [("recall@10", "R@10"), ("ndcg@10", "N@10"), ("recall@20", "R@20"), ("ndcg@20", "N@20")]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--dataset", default="scientific", help="which frozen config: configs/experiments/DATASET")
    p.add_argument("--lr", default="1e-3")
    p.add_argument("--runs", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--full-run", help="a finished run of the full model with the same config and lr")
    args = p.parse_args()
    cfg = Path(__file__).resolve().parent.parent / "configs" / "experiments" / args.dataset / "mdsrec.yaml"
    results = {}
    study = Path(args.runs) / f"{args.dataset}_ablations" / "runs"
    for name, switch in VARIANTS.items():
        slug = "base" if name == "MDSRec" else name.replace("w/o ", "wo_").replace(" ", "_").lower()
        run = study / slug
        if name == "MDSRec" and args.full_run:  # reused only when made with this config and lr on this data
            full = Path(args.full_run).resolve()
            results[name] = finished_run(full, args.data, cfg, None, [f"train.lr={args.lr}"])
            if not run.exists():
                study.mkdir(parents=True, exist_ok=True)
                run.symlink_to(full, target_is_directory=True)
            continue
        results[name] = ensure_run(run, args.data, cfg, None, [f"train.lr={args.lr}", *switch])
    base = results["MDSRec"]["test"]
    lines = [
        "| variant | "
        + " | ".join(n for _, n in METRICS)
        + " | R@20 vs full | N@20 vs full | epochs (best) | s/epoch |",
        "|---|" + "---|" * (len(METRICS) + 4),
    ]
    for name, m in results.items():
        t = m["test"]
        rel = [f"{100 * (t[k] / base[k] - 1):+.1f}%" for k in ("recall@20", "ndcg@20")]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{t[k]:.4f}" for k, _ in METRICS)
            + f" | {rel[0]} | {rel[1]} | {m['epochs']} ({m['best_epoch']}) | {m['seconds_per_epoch']:.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
