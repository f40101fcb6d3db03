"""Speed and memory of building MDSRec's item graphs (mdsrec.data.graphs), stage by stage.

Stages: co-occurrence O from the training parts (Eq. 1-2), its symmetric normalisation, and per modality the
behaviour injection E-bar = mu * O E + E (Eq. 3), top-H cosine neighbours on E-bar (Eq. 4-5), the row-normalised
neighbour graph (Eq. 6), k-means on the raw features (Eq. 10) and the membership matrix (Eq. 11). Each case runs in
its own subprocess, so the peak RSS (getrusage ru_maxrss, the process's peak so far) printed after every stage
belongs to that case alone.

    python benchmarks/graph_build.py --data DATA_DIR --h 20 --k 32          # Sports target: build < 30 s
    python benchmarks/graph_build.py --synthetic-items 200000 --dim 384     # target: < 10 min and < 4 GiB

The synthetic case draws a Gaussian-mixture feature table [N+1, dim] and popularity-skewed random sequences
(--synthetic-interactions in all, lengths 3 + Geometric(0.12) capped at 300), then builds from their training parts.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

SPORTS_TARGET_S = 30.0
LARGE_ITEMS = 200_000
LARGE_TARGET_S = 600.0
LARGE_TARGET_MIB = 4096.0


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic(num_items: int, dim: int, interactions: int, seed: int) -> tuple[list[Any], dict[str, Any]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, dim)).astype(np.float32)
    feats = np.zeros((num_items + 1, dim), dtype=np.float32)
    feats[1:] = centres[rng.integers(0, 64, size=num_items)]
    feats[1:] += 0.5 * rng.standard_normal((num_items, dim), dtype=np.float32)
    popularity = rng.permutation(np.arange(1, num_items + 1) ** -0.7)
    popularity /= popularity.sum()
    lengths: list[int] = []
    total = 0
    while total < interactions:
        n = min(300, 3 + int(rng.geometric(0.12)))
        lengths.append(n)
        total += n
    items = rng.choice(num_items, size=total, p=popularity) + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    seqs = [items[offsets[u] : offsets[u + 1]].astype(np.int64) for u in range(len(lengths))]
    return seqs, {"synthetic": feats}


def child(args: argparse.Namespace, case: str) -> dict[str, Any]:
    import numpy as np
    import torch

    from mdsrec.data.graphs import (
        cooccurrence,
        kmeans,
        membership_matrix,
        neighbour_adjacency,
        normalize_adjacency,
        topk_cosine_neighbours,
    )
    from mdsrec.data.protocol import Split

    stages: dict[str, float] = {}
    t = time.perf_counter()

    def stage(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        stages[name] = now - t
        print(f"  {case:9s} {name:28s} {now - t:8.2f} s   peak {peak_mib():8.0f} MiB", flush=True)
        t = time.perf_counter()

    if case == "data":
        from mdsrec.data.processed import load_processed

        ds = load_processed(args.data, verify=False)
        sequences, features, num_items = ds.sequences, ds.features, ds.num_items
        if args.modalities:
            features = {m: features[m] for m in args.modalities}
    else:
        num_items = args.synthetic_items
        sequences, features = synthetic(num_items, args.dim, args.synthetic_interactions, args.seed)
    split = Split(sequences)
    train = [split.train_part(u) for u in range(split.num_users)]
    stage("load" if case == "data" else "generate")
    setup = stages.popitem()[1]

    o = cooccurrence(train, num_items)
    stage("cooccurrence")
    o_norm = normalize_adjacency(o, "symmetric")
    stage("normalise (symmetric)")
    for name, e in features.items():
        e_bar = (args.mu * (o_norm @ e) + e).astype(np.float32)  # Eq. 3 on the fixed features
        stage(f"{name}: inject")
        nb = topk_cosine_neighbours(e_bar, args.h, block_size=args.block_size)
        stage(f"{name}: top-{args.h}")
        neighbour_adjacency(nb, num_items, "row")
        stage(f"{name}: neighbour graph")
        labels, _ = kmeans(e, args.k, seed=args.seed)
        stage(f"{name}: k-means k={args.k}")
        membership_matrix(labels, args.k)
        stage(f"{name}: membership")
    return {
        "case": case,
        "items": num_items,
        "users": len(sequences),
        "interactions": int(sum(len(s) for s in sequences)),
        "cooccurrence_nnz": int(o.nnz),
        "modalities": {name: list(e.shape) for name, e in features.items()},
        "setup_seconds": setup,
        "build_seconds": sum(stages.values()),
        "peak_rss_mib": peak_mib(),
        "torch_threads": torch.get_num_threads(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="processed data directory (mdsrec prepare output)")
    p.add_argument(
        "--modalities", nargs="*", help="feature tables to use (default: all in the data directory)"
    )
    p.add_argument("--synthetic-items", type=int, default=0, help="N for the synthetic case (0: skip it)")
    p.add_argument("--synthetic-interactions", type=int, default=300_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--h", type=int, default=10)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--mu", type=float, default=0.2)
    p.add_argument("--block-size", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", choices=("data", "synthetic"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args, args.child)), flush=True)
        return 0
    cases = (["data"] if args.data else []) + (["synthetic"] if args.synthetic_items else [])
    if not cases:
        p.error("give --data DATA_DIR and/or --synthetic-items N")
    for case in cases:
        out = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--child", case],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        lines = out.stdout.rstrip("\n").splitlines()
        print("\n".join(lines[:-1]), flush=True)
        res = json.loads(lines[-1])
        print(
            f"{case}: {res['items']} items, {res['users']} users, {res['interactions']} interactions, "
            f"O nnz {res['cooccurrence_nnz']}, modalities {res['modalities']}, {res['torch_threads']} threads"
        )
        build, peak = res["build_seconds"], res["peak_rss_mib"]
        print(
            f"{case}: build {build:.1f} s (excluding {res['setup_seconds']:.1f} s setup), peak {peak:.0f} MiB"
        )
        if case == "data":
            verdict = "met" if build < SPORTS_TARGET_S else "MISSED"
            print(
                f"  target on Sports: build < {SPORTS_TARGET_S:.0f} s: {verdict} (meaningful on Sports only)"
            )
        elif res["items"] >= LARGE_ITEMS:
            ok = build < LARGE_TARGET_S and peak < LARGE_TARGET_MIB
            print(
                f"  target at {LARGE_ITEMS:,} items: build < {LARGE_TARGET_S:.0f} s and peak < "
                f"{LARGE_TARGET_MIB:.0f} MiB: {'met' if ok else 'MISSED'}"
            )
        else:
            print(f"  (targets apply at {LARGE_ITEMS:,} items; this run has {res['items']:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
