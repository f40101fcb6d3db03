"""Time loading a trained run (what `evaluate`, `recommend`, `serve` and `explain` pay before their first answer),
for this checkout and, optionally, for another source tree (e.g. a git worktree of an earlier commit), on the same
checkpoint, each load in a fresh process.

    python benchmarks/load_time.py DATA_DIR --model mdsrec --config configs/experiments/sports/mdsrec.yaml \\
        --out /tmp/load_run [--set model.use_ica=true ...] [--before-src ../before/src] [--repeats 3] [--json OUT]

The run is created without training (its model as a new run builds it: graphs and k-means included, written as
best.pt at epoch 0), since loading does not depend on how long the run trained. Each timed child process imports
mdsrec from the given source tree, reads the processed data and rebuilds the model from best.pt (``load_run``);
the figure is the median wall time of that call over the repeats (imports and data reading not counted).
Run it with the cores otherwise idle.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mdsrec.studies.bench_records import write_benchmark_record

CHILD = """
import sys, time
from mdsrec.data.processed import load_processed
from mdsrec.training.trainer import load_run
data = load_processed(sys.argv[1])
t0 = time.perf_counter()
load_run(sys.argv[2], data)
print(time.perf_counter() - t0)
"""


def make_run(data_dir: str, model: str, config: str | None, sets: list[str], out: Path) -> float:
    """A run directory holding best.pt of a freshly built model; returns the seconds the build took."""
    from mdsrec.config import resolve_config
    from mdsrec.data.processed import load_processed
    from mdsrec.training import trainer
    from mdsrec.training.checkpoint import save_checkpoint

    data = load_processed(data_dir)
    cfg = trainer.full_config(resolve_config(config, sets, model=model))
    t0 = time.perf_counter()
    exp = trainer.make_experiment(cfg, data)
    built = time.perf_counter() - t0
    trainer._start_run(out, cfg, data)
    save_checkpoint(out / "best.pt", trainer._model_state(cfg, data, exp.model, 0))
    return built


def time_load(src: str, data_dir: str, run: Path, repeats: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    out = []
    for _ in range(repeats):
        child = subprocess.run(
            [sys.executable, "-c", CHILD, data_dir, str(run)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        out.append(float(child.stdout.strip().splitlines()[-1]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--model", default="mdsrec")
    ap.add_argument("--config")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--before-src", help="another source tree (its src/ folder) to time on the same run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write the figures as a small JSON record")
    args = ap.parse_args()
    load_before = os.getloadavg()

    if not (args.out / "best.pt").is_file():
        built = make_run(args.data, args.model, args.config, args.set, args.out)
        print(f"built the model of a new run in {built:.2f} s (graphs and k-means included)")
    if args.repeats < 1:  # only build the run (e.g. while the cores are busy), time it later
        return 0
    here = str(Path(__file__).resolve().parent.parent / "src")
    rows = {"this checkout": time_load(here, args.data, args.out, args.repeats)}
    if args.before_src:
        rows[f"before ({args.before_src})"] = time_load(args.before_src, args.data, args.out, args.repeats)
    for name, times in rows.items():
        print(f"{name}: load_run median {statistics.median(times):.3f} s over {len(times)} ({times})")
    if args.json:
        figures = {
            "figure": "load_run seconds (median)",
            "values": {k: statistics.median(v) for k, v in rows.items()},
            "samples": rows,
        }
        write_benchmark_record(args.json, figures, load_before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
