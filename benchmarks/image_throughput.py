"""Speed and memory of `mdsrec prepare`'s image path: N synthetic pictures, found, decoded and encoded.

The pictures are the synthetic data's (mdsrec.data.synthetic.render_item_image, clusters drawn at random), rendered
once into OUT/pictures-<side>px (PNG; JPEG from 128 px up, like product photos) with a sequences file that lists
every picture's item, so that every picture is an item of the prepared set. Each case (precision x threads) runs
`prepare` in its own subprocess, so the peak RSS (getrusage ru_maxrss) belongs to that case alone; the encoder
streams, so the peak should grow with N only by the output table (N x 1280 x 4 bytes), not by the decoded images.

    python benchmarks/image_throughput.py --images 20000 --out /tmp/imgbench                     # 64 px, the quick start's
    python benchmarks/image_throughput.py --images 1000 --side 320 --image-size 224 --out /tmp/imgbench   # photo-like
    python benchmarks/image_throughput.py --images 500 --precision float64 float32 --threads 1 2 --out /tmp/imgbench

Prints per case: images, seconds in prepare (all of it: finding, header checks, decoding, encoding, writing),
images per second, peak RSS, torch threads, and the sha256 of the image feature file (equal across thread counts
for float64 when the grid works; float32 may differ).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mdsrec.studies.bench_records import write_benchmark_record


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def render(root: Path, n: int, side: int, clusters: int, seed: int) -> Path:
    """The pictures and a spec naming them; reused when already there."""
    import numpy as np
    import yaml

    from mdsrec.data.synthetic import render_item_image

    folder = root / f"pictures-{side}px-{n}"
    spec = folder / "spec.yaml"
    if spec.is_file():
        return folder
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ext = "jpg" if side >= 128 else "png"
    t = time.perf_counter()
    for i in range(1, n + 1):
        img = render_item_image(int(rng.integers(clusters)), clusters, rng, side)
        img.save(folder / "images" / f"{i}.{ext}", **({"quality": 90} if ext == "jpg" else {}))
    # one user per 3 items, so every item occurs and every user has the 3 interactions prepare needs
    lines = [
        f"u{u} " + " ".join(str(i) for i in range(3 * u + 1, min(3 * u + 4, n + 1))) for u in range(n // 3)
    ]
    lines[-1] += "".join(f" {i}" for i in range(3 * (n // 3) + 1, n + 1))
    (folder / "seq.txt").write_text("\n".join(lines) + "\n")
    modality = {"name": "image", "source": "image", "path": "images", "format": "folder"}
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "pictures",
                "sequences": {"format": "s3rec", "path": "seq.txt"},
                "modalities": [modality],
            }
        )
    )
    size = sum(p.stat().st_size for p in (folder / "images").iterdir()) / 2**20
    print(
        f"rendered {n} pictures of {side} px ({size:.0f} MiB of {ext.upper()}) in {time.perf_counter() - t:.0f} s"
    )
    return folder


def child(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import yaml

    from mdsrec.data.prepare import prepare

    if args.child_threads > 0:
        torch.set_num_threads(args.child_threads)
    folder = Path(args.child_folder)
    spec = yaml.safe_load((folder / "spec.yaml").read_text())
    spec["modalities"][0].update(
        precision=args.child_precision, image_size=args.image_size, batch_size=args.batch_size
    )
    case = f"{args.child_precision}-{args.image_size}px-{torch.get_num_threads()}t"
    spec_path = folder / f"spec-{case}.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    out = Path(args.out) / "prepared" / f"{folder.name}-{case}"
    t = time.perf_counter()
    prepare(spec_path, out, overwrite=True, progress=False)
    seconds = time.perf_counter() - t
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "case": case,
        "images": manifest["modalities"]["image"]["images"],
        "seconds": seconds,
        "peak_rss_mib": peak_mib(),
        "threads": torch.get_num_threads(),
        "sha256": hashlib.sha256((out / "features" / "image.npy").read_bytes()).hexdigest(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="working folder (pictures and prepared sets)")
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--side", type=int, default=64, help="pixels of the rendered pictures")
    p.add_argument("--image-size", type=int, default=64, help="the encoder's input side (spec image_size)")
    p.add_argument(
        "--batch-size", type=int, default=16, help="the spec's batch_size (default: the spec default)"
    )
    p.add_argument("--precision", nargs="+", default=["float32"], choices=("float64", "float32"))
    p.add_argument("--threads", nargs="+", type=int, default=[0], help="torch threads per case (0: default)")
    p.add_argument("--clusters", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the figures and the conditions as JSON")
    p.add_argument("--child-folder", help=argparse.SUPPRESS)
    p.add_argument("--child-precision", help=argparse.SUPPRESS)
    p.add_argument("--child-threads", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_folder:
        print(json.dumps(child(args)), flush=True)
        return 0
    load_before = os.getloadavg()
    folder = render(Path(args.out), args.images, args.side, args.clusters, args.seed)
    rows = []
    print(f"{'case':24s} {'images':>7s} {'seconds':>8s} {'img/s':>7s} {'peak MiB':>9s}  sha256 of image.npy")
    for precision in args.precision:
        for threads in args.threads:
            run = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    *sys.argv[1:],
                    "--child-folder",
                    str(folder),
                    "--child-precision",
                    precision,
                    "--child-threads",
                    str(threads),
                ],
                check=True,
                stdout=subprocess.PIPE,
                text=True,
            )
            r = json.loads(run.stdout.strip().splitlines()[-1])
            rows.append(r | {"precision": precision, "images_per_s": r["images"] / r["seconds"]})
            print(
                f"{r['case']:24s} {r['images']:7d} {r['seconds']:8.1f} {r['images'] / r['seconds']:7.1f} "
                f"{r['peak_rss_mib']:9.0f}  {r['sha256'][:16]}",
                flush=True,
            )
    if args.json:
        figures = {
            "figure": "mdsrec prepare, image path: images per second and peak RSS per case",
            "rows": rows,
            "pictures": {"count": args.images, "side_px": args.side, "batch_size": args.batch_size},
        }
        write_benchmark_record(args.json, figures, load_before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
