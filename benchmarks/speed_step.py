"""Seconds per fp32 training step, per model, on a real data set: the before/after figure of a speed change.

    python benchmarks/speed_step.py --data DATA_DIR --configs configs/experiments/sports \
        [--models unisrec,missrec] [--batches 8] [--set KEY=VALUE ...]

Times ``--batches`` training steps of each model's frozen config (the trainer's own forward, backward and Adam step,
spread over an epoch, after one warm-up step; the same measurement as speed_precision.py, fp32 only) and extrapolates
seconds per epoch = mean step time x batches per epoch. To compare two versions of the code, run it once from each
checkout, or point ``PYTHONPATH`` at the other version's ``src`` (it takes precedence over the installed package):

    git worktree add /tmp/before <rev> && PYTHONPATH=/tmp/before/src python benchmarks/speed_step.py ...

Run it on an idle machine: it measures wall time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from speed_precision import measure


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument(
        "--configs", required=True, type=Path, help="folder of frozen configs, one <model>.yaml each"
    )
    p.add_argument("--models", default="unisrec,missrec")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. train.device=cuda"
    )
    args = p.parse_args()
    import mdsrec

    print(f"mdsrec from {Path(mdsrec.__file__).parent}")
    print("| model | batches/epoch | fp32 s/step | est. fp32 s/epoch |")
    print("|---|---|---|---|")
    for model in args.models.split(","):
        config = args.configs / f"{model}.yaml"
        if not config.is_file():
            p.error(f"no frozen config {config}")
        r = measure(args.data, config, "fp32", args.batches, args.set)
        print(f"| {model} | {r['batches']:.0f} | {r['step_s']:.3f} | {r['epoch_s']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
