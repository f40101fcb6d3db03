"""CUDA check of every trainable model, and Sports-size epoch timings on one GPU, written as one JSON file.

    benchmarks/gpu_check.sh [OUT_DIR]        # the prepared wrapper: finds python, sets PYTHONPATH, runs this
    python benchmarks/gpu_check.py --out OUT_DIR [--device cuda] [--skip-sports]

Needs nothing outside the repository: the data sets are synthetic (mdsrec.data.synthetic, no pictures, so no image
encoder either) and built here; the models use the frozen Sports configs (configs/experiments/sports).

1. **CPU against CUDA** on a tiny set (300 users, 400 items): for each trainable model, the same untrained weights
   rank the validation users on the CPU and on the GPU; reported: how many users' target ranks differ, the largest
   rank difference, and the metrics on both. Exact ranks are expected except where two items' scores tie within the
   kernels' rounding (the GPU's matrix products sum in another order: scores differ by about 1e-6 relative).
2. **Training on the GPU**: each model trains 2 epochs on the tiny set in fp32 and in bf16 (autocast); reported:
   finite losses, the validation NDCG@20, seconds per epoch.
3. **Sports-size timings** (18,357 items, 35,598 users, Sports' mean history length; two 384-d feature tables):
   one epoch of SASRec and of MDSRec (frozen Sports configs, hidden 300) in fp32 and bf16: seconds for the epoch
   (training and validation), and the peak GPU memory (torch.cuda.max_memory_allocated).

Each part records an error message instead of stopping the script, so the JSON file is always written.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
TRAINABLE = [
    "sasrec",
    "gru4rec",
    "bert4rec",
    "gru4recf",
    "sasrecf",
    "fdsa",
    "unisrec",
    "mmmlp",
    "missrec",
    "mdsrec",
]
# the synthetic sets' tables are "topic" and "style": UniSRec's text table is one of them here
SYNTHETIC_SETS = {"unisrec": ["model.text_feature=topic"]}


def config(model: str, device: str, precision: str, epochs: int, extra: list[str] | None = None) -> Any:
    from mdsrec.config import resolve_config
    from mdsrec.training import trainer

    sets = [
        f"train.device={device}",
        f"train.precision={precision}",
        f"train.epochs={epochs}",
        "train.progress=false",
        *SYNTHETIC_SETS.get(model, []),
        *(extra or []),
    ]
    path = ROOT / "configs" / "experiments" / "sports" / f"{model}.yaml"
    return trainer.full_config(resolve_config(str(path), sets, model=model))


def cpu_vs_cuda(data: Any, model: str, device: str) -> dict[str, Any]:
    from mdsrec.evaluation.evaluator import rank_targets
    from mdsrec.evaluation.metrics import metrics_from_ranks
    from mdsrec.training import trainer

    cfg = config(model, "cpu", "fp32", 1)
    exp = trainer.make_experiment(cfg, data)
    exp.model.eval()
    _, cpu = rank_targets(exp.model, exp.split, "valid", cfg.data, cfg.eval, "cpu")
    _, gpu = rank_targets(exp.model.to(device), exp.split, "valid", cfg.data, cfg.eval, device)
    cpu, gpu = cpu.cpu(), gpu.cpu()
    ks = list(cfg.eval.ks)
    return {
        "users": int(cpu.numel()),
        "ranks_differing": int((cpu != gpu).sum()),
        "max_rank_difference": int((cpu - gpu).abs().max()) if cpu.numel() else 0,
        "metrics_cpu": metrics_from_ranks(cpu, ks),
        "metrics_device": metrics_from_ranks(gpu, ks),
    }


def train_on(data: Any, model: str, device: str, precision: str, epochs: int, run: Path) -> dict[str, Any]:
    from mdsrec.training import trainer

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    shutil.rmtree(run, ignore_errors=True)
    t = time.perf_counter()
    metrics = trainer.train(config(model, device, precision, epochs, ["train.patience=100"]), data, run)
    seconds = time.perf_counter() - t
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    epochs_done = [r for r in log if "train_loss" in r]
    return {
        "losses": [r["train_loss"] for r in epochs_done],
        "finite": bool(epochs_done) and all(math.isfinite(r["train_loss"]) for r in epochs_done),
        "train_seconds": [r.get("train_seconds") for r in epochs_done],
        "eval_seconds": [r.get("eval_seconds") for r in epochs_done],
        "valid_ndcg@20": metrics.get("valid", {}).get("ndcg@20"),
        "test_ndcg@20": metrics.get("test", {}).get("ndcg@20"),
        "seconds_with_final_evaluation": round(seconds, 2),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if torch.cuda.is_available()
        else None,
    }


def attempt(fn: Any, *args: Any) -> dict[str, Any]:
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - recorded in the JSON, the other checks go on
        return {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="folder for gpu_check.json (and the work files)")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run of the script itself")
    ap.add_argument("--models", default=",".join(TRAINABLE))
    ap.add_argument("--skip-sports", action="store_true", help="only the tiny checks")
    args = ap.parse_args()

    from mdsrec.data.processed import load_processed
    from mdsrec.data.synthetic import SyntheticConfig, sports_size, write_synthetic

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    t0 = time.perf_counter()
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "bf16_supported": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        "python": platform.python_version(),
        "commit": commit or None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tiny_cfg = SyntheticConfig(num_users=300, num_items=400, clusters_per_modality=8, images=False, seed=5)
    tiny = load_processed(write_synthetic(work / "tiny", tiny_cfg))
    models = [m for m in args.models.split(",") if m]
    result["cpu_vs_cuda"] = {m: attempt(cpu_vs_cuda, tiny, m, args.device) for m in models}
    print(json.dumps(result["cpu_vs_cuda"], default=str)[:2000], flush=True)
    result["train_tiny"] = {
        f"{m} {p}": attempt(train_on, tiny, m, args.device, p, 2, work / "runs" / f"{m}-{p}")
        for m in models
        for p in ("fp32", "bf16")
    }
    print(json.dumps(result["train_tiny"], default=str)[:2000], flush=True)
    if not args.skip_sports:
        t = time.perf_counter()
        sports_cfg = sports_size(images=False)
        sports = load_processed(write_synthetic(work / "sports", sports_cfg))
        result["sports_data_seconds"] = round(time.perf_counter() - t, 1)
        result["sports_epoch"] = {
            f"{m} {p}": attempt(train_on, sports, m, args.device, p, 1, work / "runs" / f"sports-{m}-{p}")
            for m in ("sasrec", "mdsrec")
            for p in ("fp32", "bf16")
        }
        print(json.dumps(result["sports_epoch"], default=str), flush=True)
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    out = args.out / "gpu_check.json"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.replace(out)
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out} in {result['total_seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
