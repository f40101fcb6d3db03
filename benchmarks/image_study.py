"""Do the synthetic pictures carry the planted style signal? MDSRec with the image and topic modalities against
MDSRec with the topic modality alone, on the quick start's data, over seeds.

Half of the synthetic users follow a "style" interest, which only the pictures show (the topic table is independent
of it); a model without the pictures can learn those clusters only from co-occurrence. So if the pictures, through
EfficientNet-Lite0 features, carry the style clusters, MDSRec with them beats MDSRec without them on the test set.

    python benchmarks/image_study.py --out /tmp/image_study                       # seeds 0 1 2
    python benchmarks/image_study.py --out /tmp/image_study --records benchmarks/records/image_study

Steps: the quick start's raw files (mdsrec.data.synthetic, default config) into OUT/raw; two prepared sets from
them, OUT/data/synthetic (image + topic: the quick start's set) and OUT/data/synthetic-topic (the same spec without
the image modality); MDSRec with the quick start's settings (mdsrec.cli.QUICKSTART_MODELS, at most 30 epochs,
patience 5) per set and seed into OUT/runs/<set>/seed<s> (a finished run is skipped, so the script resumes); a
table of test NDCG@20 and Recall@20 (mean +- sample sd) in OUT/summary.md, with the verdict "outside the spread"
when every image run beats every topic-only run. With --records the finished runs' metrics and epoch logs are
saved there (`mdsrec records save`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

VARIANTS = {"synthetic": ("image", "topic"), "synthetic-topic": ("topic",)}
METRICS = ("ndcg@20", "recall@20")


def prepare_sets(out: Path) -> dict[str, Path]:
    from mdsrec.data.prepare import prepare
    from mdsrec.data.synthetic import write_synthetic_raw

    raw = out / "raw"
    if not (raw / "synthetic.yaml").is_file():
        write_synthetic_raw(raw)
    full = yaml.safe_load((raw / "synthetic.yaml").read_text())
    sets = {}
    for name, modalities in VARIANTS.items():
        spec = {
            **full,
            "name": name,
            "modalities": [m for m in full["modalities"] if m["name"] in modalities],
        }
        spec_path = raw / f"{name}.yaml"
        spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
        data = out / "data" / name
        if not (data / "manifest.json").is_file():
            print(prepare(spec_path, data, progress=True), flush=True)
        sets[name] = data
    return sets


def train_runs(
    out: Path, sets: dict[str, Path], seeds: list[int], epochs: int
) -> dict[str, list[dict[str, float]]]:
    from mdsrec.cli import QUICKSTART_MODELS

    common = [f"train.epochs={epochs}", "train.patience=5", "data.batch_size=256", "train.lr=0.002"]
    results: dict[str, list[dict[str, float]]] = {}
    for name, data in sets.items():
        results[name] = []
        for seed in seeds:
            run = out / "runs" / name / f"seed{seed}"
            if not (run / "metrics.json").is_file():
                sets_ = [*common, *QUICKSTART_MODELS["mdsrec"], f"train.seed={seed}", "train.progress=false"]
                resume = ["--resume"] if (run / "last.pt").is_file() else []
                print(f"== training MDSRec on {name}, seed {seed} -> {run}", flush=True)
                subprocess.run(
                    [sys.executable, "-m", "mdsrec", "train", "--data", str(data), "--model", "mdsrec"]
                    + ["--out", str(run), "--set", *sets_, *resume],
                    check=True,
                )
            metrics = json.loads((run / "metrics.json").read_text())
            results[name].append({m: float(metrics["test"][m]) for m in METRICS} | {"seed": seed})
    return results


def summary(results: dict[str, list[dict[str, float]]]) -> str:
    lines = [
        "| MDSRec modalities | seeds | test N@20 | test R@20 | per seed N@20 |",
        "|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        cells = []
        for m in METRICS:
            values = [r[m] for r in runs]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} ± {sd:.4f}")
        per_seed = ", ".join(f"{r['ndcg@20']:.4f}" for r in runs)
        lines.append(f"| {' + '.join(VARIANTS[name])} | {len(runs)} | {cells[0]} | {cells[1]} | {per_seed} |")
    with_images, without = results["synthetic"], results["synthetic-topic"]
    for m in METRICS:
        low, high = min(r[m] for r in with_images), max(r[m] for r in without)
        verdict = "outside the spread" if low > high else "NOT outside the spread"
        lines.append(f"\n{m}: worst run with images {low:.4f}, best run without {high:.4f}: {verdict}")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument(
        "--epochs", type=int, default=30, help="at most (the quick start's 30; fewer for a smoke run)"
    )
    p.add_argument("--records", type=Path, help="save the finished runs' records here (mdsrec records save)")
    args = p.parse_args()
    sets = prepare_sets(args.out)
    results = train_runs(args.out, sets, args.seeds, args.epochs)
    text = summary(results)
    (args.out / "summary.md").write_text(text)
    print(text)
    if args.records:
        subprocess.run(
            [sys.executable, "-m", "mdsrec", "records", "save", str(args.out), str(args.records)], check=True
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
