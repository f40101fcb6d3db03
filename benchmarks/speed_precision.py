"""Training speed with ``train.precision: bf16`` (torch.autocast) against fp32, per model, on a real data set.

    python benchmarks/speed_precision.py --data DATA_DIR --configs configs/experiments/sports \
        [--models sasrec,unisrec,missrec] [--batches 8] [--set train.device=cuda ...]

For each model (its frozen config under ``--configs``) times ``--batches`` training steps -- the trainer's own
``training_loss`` + ``optimizer_step`` (forward, backward, Adam) -- spread over an epoch after one warm-up step, once in
fp32 and once in bf16, and extrapolates seconds per epoch = mean step time x batches per epoch. bf16 pays off where
the CPU has AMX or AVX512-BF16 (``lscpu | grep -o 'amx_bf16\\|avx512_bf16'``) and on recent GPUs. Run it on an idle
machine: it measures wall time. Accuracy is a separate question: compare finished runs (``mdsrec benchmark`` with
``--set train.precision=bf16`` into another --out).

``--fp32-only`` times fp32 alone: the before/after figure of a speed change. Run it once from each version of the
code, or point ``PYTHONPATH`` at the other version's ``src`` (it takes precedence over the installed package):

    git worktree add /tmp/before <rev>
    PYTHONPATH=/tmp/before/src python benchmarks/speed_precision.py --fp32-only --data ... --configs ...
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def measure(data_dir: str, config: Path, precision: str, batches: int, sets: list[str]) -> dict[str, float]:

    from mdsrec.config import resolve_config
    from mdsrec.data.processed import load_processed
    from mdsrec.data.protocol import Batch, build_train_rows, train_batches
    from mdsrec.training.trainer import make_experiment, make_optimizer, optimizer_step, training_loss
    from runlib import wait_for_device

    cfg = resolve_config(config, ["train.progress=false", *sets, f"train.precision={precision}"])
    exp = make_experiment(cfg, load_processed(data_dir))
    opt = make_optimizer(exp.model, cfg.train.lr)
    epoch = train_batches(build_train_rows(exp.split, cfg.data.max_len, cfg.data.train_mode), cfg.data, 1)
    exp.model.train()
    # batches spread evenly over the epoch: all-prefix batches vary in width with the sequences' lengths
    steps = epoch[:: max(1, len(epoch) // batches)][:batches]

    def run(b: Batch) -> None:  # one trainer step; on a GPU, wait for it to finish before the clock is read
        optimizer_step(
            exp.model, opt, training_loss(exp.model, b, precision, exp.device), cfg.train.grad_clip
        )
        wait_for_device(exp.device)

    run(epoch[0])  # warm-up
    t0 = time.perf_counter()
    for b in steps:
        run(b)
    step = (time.perf_counter() - t0) / len(steps)
    return {"batches": len(epoch), "step_s": step, "epoch_s": step * len(epoch)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument(
        "--configs", required=True, type=Path, help="folder of frozen configs, one <model>.yaml each"
    )
    p.add_argument("--models", default="sasrec,unisrec,missrec")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. train.device=cuda"
    )
    p.add_argument(
        "--fp32-only", action="store_true", help="time fp32 steps only (before/after a code change)"
    )
    args = p.parse_args()
    import mdsrec

    print(f"mdsrec from {Path(mdsrec.__file__).parent}")
    if args.fp32_only:
        print("| model | batches/epoch | fp32 s/step | est. fp32 s/epoch |\n|---|---|---|---|")
    else:
        print(
            "| model | batches/epoch | fp32 s/step | bf16 s/step | speed-up | est. fp32 s/epoch | est. bf16 s/epoch |"
        )
        print("|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        config = args.configs / f"{model}.yaml"
        if not config.is_file():
            p.error(f"no frozen config {config}")
        fp32 = measure(args.data, config, "fp32", args.batches, args.set)
        if args.fp32_only:
            print(
                f"| {model} | {fp32['batches']:.0f} | {fp32['step_s']:.3f} | {fp32['epoch_s']:.0f} |",
                flush=True,
            )
            continue
        bf16 = measure(args.data, config, "bf16", args.batches, args.set)
        print(
            f"| {model} | {fp32['batches']:.0f} | {fp32['step_s']:.3f} | {bf16['step_s']:.3f} | "
            f"{fp32['step_s'] / bf16['step_s']:.2f}x | {fp32['epoch_s']:.0f} | {bf16['epoch_s']:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
