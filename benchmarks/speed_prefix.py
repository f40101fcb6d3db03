"""Speed: all-prefix training in one causal pass vs materialising every prefix (the RecBole way).

Times one SASRec training epoch and one full validation evaluation in each mode, each in its own subprocess (so
peak memory is per mode), in the same run on the same machine, and prints the ratios and the peak RSS.

* all_prefix: one row per sequence, batches padded to their own longest row (rows length-sorted in pools),
  ~batch_size trained prefixes per batch; evaluation batches sorted by history length.
* materialized: one row per prefix, every row padded to max_len, batch_size rows per batch; evaluation rows padded
  to max_len in user order.

    python benchmarks/speed_prefix.py --data DATA_DIR            # paper setting: d=300, 2 layers, 2 heads, batch 512
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def child(data_dir: str, mode: str, sets: list[str]) -> dict[str, float]:

    from mdsrec.config import resolve_config
    from mdsrec.data.processed import load_processed
    from mdsrec.data.protocol import build_train_rows, eval_batches, train_batches
    from mdsrec.evaluation.evaluator import evaluate
    from mdsrec.training.trainer import make_experiment, make_optimizer

    cfg = resolve_config(None, [f"data.train_mode={mode}", *sets], model="sasrec")
    exp = make_experiment(cfg, load_processed(data_dir))
    opt = make_optimizer(exp.model, cfg.train.lr)
    rows = build_train_rows(exp.split, cfg.data.max_len, mode)
    t0 = time.perf_counter()
    batches = train_batches(rows, cfg.data, epoch_seed=1)
    tokens = sum(b.items.numel() for b in batches)
    exp.model.train()
    for b in batches:
        loss = exp.model.compute_loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    padded = mode == "materialized"
    eb = eval_batches(exp.split, "valid", cfg.data, padded=padded)
    m = evaluate(exp.model, exp.split, "valid", cfg.data, cfg.eval, batches=eb)
    eval_s = time.perf_counter() - t1
    return {
        "train_seconds": train_s,
        "eval_seconds": eval_s,
        "train_batches": len(batches),
        "train_rows": len(rows.inputs),
        "train_tokens": tokens,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "valid_ndcg@20_after_1_epoch": m["ndcg@20"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument(
        "--set",
        nargs="*",
        default=[
            "model.hidden_size=300",
            "model.num_layers=2",
            "model.num_heads=2",
            "data.batch_size=512",
            "data.max_len=50",
            "train.progress=false",
        ],
    )
    p.add_argument("--child", choices=("all_prefix", "materialized"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.data, args.child, args.set)))
        return 0
    res = {}
    for mode in ("all_prefix", "materialized"):
        out = subprocess.run(
            [sys.executable, __file__, "--data", args.data, "--child", mode, "--set", *args.set],
            check=True,
            capture_output=True,
            text=True,
        )
        res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        print(mode, json.dumps(res[mode]), flush=True)
    a, m = res["all_prefix"], res["materialized"]
    print(
        f"training-epoch ratio (all_prefix / materialized): {a['train_seconds'] / m['train_seconds']:.3f}"
        f"  ({a['train_seconds']:.1f}s vs {m['train_seconds']:.1f}s; target <= 0.1)"
    )
    print(
        f"evaluation ratio (bucketed / padded to max_len):   {a['eval_seconds'] / m['eval_seconds']:.3f}"
        f"  ({a['eval_seconds']:.2f}s vs {m['eval_seconds']:.2f}s; target <= 0.3)"
    )
    print(f"peak RSS: all_prefix {a['peak_rss_mib']:.0f} MiB, materialized {m['peak_rss_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
