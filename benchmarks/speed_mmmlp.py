"""MMMLP's training cost with the causal token mixer (the benchmark's) against the authors' unmasked one.

    python benchmarks/speed_mmmlp.py --data DATA_DIR [--config configs/experiments/scientific/mmmlp.yaml] [--batches 8]

Times ``--batches`` training steps (forward, backward, Adam) spread over an epoch, after one warm-up step, for
  causal: ``token_mixing: causal``, all-prefix rows (one causal pass per training sequence);
  full:   ``token_mixing: full``, materialised rows (one row per prefix, each padded to max_len inside the model,
          as the original trains it),
and extrapolates seconds per epoch = mean step time x batches per epoch. Also prints the trained positions the
model computes per epoch. Run it on an idle machine: it measures wall time.
"""

from __future__ import annotations

import argparse
import time


def measure(data_dir: str, config: str, sets: list[str], batches: int) -> dict[str, float]:

    from mdsrec.config import resolve_config
    from mdsrec.data.processed import load_processed
    from mdsrec.data.protocol import build_train_rows, train_batches
    from mdsrec.training.trainer import make_experiment, make_optimizer, optimizer_step, training_loss
    from runlib import wait_for_device

    cfg = resolve_config(config, ["train.progress=false", *sets], model="mmmlp")
    exp = make_experiment(cfg, load_processed(data_dir))
    opt = make_optimizer(exp.model, cfg.train.lr)
    epoch = train_batches(build_train_rows(exp.split, cfg.data.max_len, cfg.data.train_mode), cfg.data, 1)
    full = cfg.model.get("token_mixing") == "full"
    positions = sum((cfg.data.max_len if full else b.items.size(1)) * b.items.size(0) for b in epoch)
    exp.model.train()
    # one warm-up step, then batches spread evenly over the epoch (the causal rows' widths vary with length)
    stride = max(1, len(epoch) // batches)
    steps = epoch[::stride][:batches]
    optimizer_step(exp.model, opt, training_loss(exp.model, epoch[0], "fp32", exp.device), 0.0)
    wait_for_device(exp.device)
    t0 = time.perf_counter()
    for b in steps:
        optimizer_step(exp.model, opt, training_loss(exp.model, b, "fp32", exp.device), 0.0)
    wait_for_device(exp.device)
    step = (time.perf_counter() - t0) / len(steps)
    return {"batches": len(epoch), "positions": positions, "step_s": step, "epoch_s": step * len(epoch)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--config", default="configs/experiments/scientific/mmmlp.yaml")
    p.add_argument("--batches", type=int, default=8)
    args = p.parse_args()
    variants = {
        "causal (all-prefix)": ["model.token_mixing=causal", "data.train_mode=all_prefix"],
        "full (materialized)": ["model.token_mixing=full", "data.train_mode=materialized"],
    }
    print("| token mixing | batches/epoch | positions/epoch | s/step | est. s/epoch |\n|---|---|---|---|---|")
    for name, sets in variants.items():
        r = measure(args.data, args.config, sets, args.batches)
        print(
            f"| {name} | {r['batches']:.0f} | {r['positions']:,.0f} | {r['step_s']:.2f} | {r['epoch_s']:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
