"""One training epoch as 1 process with 2 torch threads against 2 processes (torchrun, gloo) with 1 thread each, the
same global batch, on one machine: seconds of training and of validation, and the communication share of training
(DDP's gradient allreduces and the per-step loss sum, as the trainer logs them in ``comm_seconds``).

    python benchmarks/ddp_scaling.py data/sports --out /tmp/ddp_scaling [--config configs/experiments/sports/sasrec.yaml]
        [--json benchmarks/records/benchmarks/ddp_scaling_sports_sasrec.json]

Each case trains a new run for 1 epoch (``train.epochs=1``) with the frozen config, so its figures are the trainer's
own epoch log: ``train_seconds``, ``eval_seconds`` (validation) and, under torchrun, ``comm_seconds`` (each gradient
bucket's allreduce from the bucket being ready to its end, summed: it overlaps the backward pass, so the share is an
upper bound of the time communication adds). Run it with the cores otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mdsrec.studies.bench_records import write_benchmark_record

ROOT = Path(__file__).resolve().parent.parent


def run_case(
    name: str, launcher: list[str], threads: int, data: Path, config: Path, run: Path
) -> dict[str, Any]:
    shutil.rmtree(run, ignore_errors=True)
    cmd = [
        *launcher,
        "-m",
        "mdsrec",
        "train",
        "--data",
        str(data),
        "--config",
        str(config),
        "--out",
        str(run),
    ]
    cmd += ["--set", "train.epochs=1", f"train.num_threads={threads}", "train.progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT / "src")}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    epoch = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    metrics = json.loads((run / "metrics.json").read_text())
    comm = epoch.get("comm_seconds")
    return {
        "case": name,
        "train_seconds": epoch["train_seconds"],
        "eval_seconds": epoch["eval_seconds"],
        "comm_seconds": comm,
        "comm_share_of_training": None if comm is None else round(comm / epoch["train_seconds"], 4),
        "train_loss": round(epoch["train_loss"], 4),
        "valid_ndcg@20": round(epoch["valid_ndcg@20"], 4),
        "test_ndcg@20": round(metrics["test"]["ndcg@20"], 4),
        "wall_seconds_in_all": round(wall, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="a processed data set (mdsrec prepare)")
    ap.add_argument("--config", type=Path, default=ROOT / "configs/experiments/sports/sasrec.yaml")
    ap.add_argument("--out", type=Path, required=True, help="folder for the two runs")
    ap.add_argument("--json", type=Path, help="write the figures and conditions as JSON")
    args = ap.parse_args()
    load_before = os.getloadavg()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    rows = [
        run_case("1 process x 2 threads", [sys.executable], 2, args.data, args.config, args.out / "one"),
        run_case("2 processes x 1 thread (gloo)", torchrun, 1, args.data, args.config, args.out / "two"),
    ]
    for r in rows:
        print(json.dumps(r), flush=True)
    if args.json:
        figures = {
            "figure": f"one training epoch of {args.config.stem} on {args.data.name}, same global batch",
            "rows": rows,
            "speedup_of_training": round(rows[0]["train_seconds"] / rows[1]["train_seconds"], 3),
        }
        write_benchmark_record(args.json, figures, load_before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
