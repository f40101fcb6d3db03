"""Memory and time on a catalogue of a million items: SASRec and MDSRec (hidden 64) on synthetic data.

    python benchmarks/big_catalogue.py [--items 1000000] [--json benchmarks/records/benchmarks/big_catalogue.json]

Cases, each in its own subprocess so that its peak RSS (getrusage ru_maxrss) is its own:

* ``data`` (when the work folder does not hold it yet): draws the synthetic data and saves it there, so that every
  case loads it (sequences; the feature table only for MDSRec) without the generator's temporaries.
* ``graphs``: builds MDSRec (one 384-d feature table; the frozen Sports config's H = 20, k = 32, mu values) on the
  synthetic catalogue: co-occurrence, the top-H neighbour graph (approximate above 200,000 items: faiss HNSW), the
  k-means membership; seconds of the whole build, peak RSS. Its derived state is saved for the MDSRec cases.
* ``train-sasrec`` / ``train-mdsrec``: training steps (forward, backward, Adam) on batches of 512 trained prefixes
  (the Sports configs' ``data.batch_size``); seconds per step (median of the steps after the first) and peak RSS.
  The cross-entropy runs over item chunks (``mdsrec.models.catalogue``: above 262,144 items).
* ``eval-sasrec`` / ``eval-mdsrec``: full-ranking evaluation (``mdsrec.evaluation.evaluate``, chunked ranks) of
  10,000 users; seconds and peak RSS. The MDSRec cases rebuild the model from the saved derived state (as loading
  a run does) with the feature table resident.
* ``recall``: the neighbour index's recall against the exact top-H, on a 200,000-item sample of the features: the
  index over all 200,000, the exact top-H (block matrix products) for 10,000 of them drawn at random, recall =
  |approximate & exact| / H averaged over those queries, for several ``efSearch`` values (the default is 64).

Synthetic data (benchmarks/graph_build.py's generator): features a 64-component Gaussian mixture in 384 dimensions,
histories of 3 + Geometric(0.12) items (at most 300) drawn with Zipf-like popularity (exponent 0.7). Run it with
the cores otherwise idle; targets (issue 38): training step and evaluation each under 8 GiB, graph build under 10
minutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from graph_build import synthetic  # noqa: E402
from mdsrec.config import ExperimentConfig, resolve_config  # noqa: E402
from mdsrec.studies.bench_records import write_benchmark_record  # noqa: E402

LIMIT_MIB = 8 * 1024
GRAPH_LIMIT_S = 600.0
HIDDEN = 64
ROOT = Path(__file__).resolve().parent.parent


def frozen(name: str) -> ExperimentConfig:
    """The frozen Sports config of ``name`` (configs/experiments/sports), at hidden size ``HIDDEN``."""
    path = ROOT / f"configs/experiments/sports/{name}.yaml"
    return resolve_config(str(path), [f"model.hidden_size={HIDDEN}"], model=name)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def data_paths(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    stem = f"{args.items}_{args.interactions}_{args.dim}_{args.seed}"
    return work / f"sequences_{stem}.npz", work / f"features_{stem}.npy"


def case_data(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Draws the synthetic data once and saves it, so that each case loads it without the generator's
    temporaries in its peak RSS."""
    import numpy as np

    seq_path, feat_path = data_paths(args, work)
    sequences, features = synthetic(args.items, args.dim, args.interactions, args.seed)
    lengths = np.array([len(s) for s in sequences])
    np.savez(seq_path, items=np.concatenate(sequences), lengths=lengths)
    np.save(feat_path, features["synthetic"])
    return {"users": len(sequences), "interactions": int(lengths.sum())}


def load_data(args: argparse.Namespace, work: Path, with_features: bool) -> tuple[list[Any], Any]:
    import numpy as np

    seq_path, feat_path = data_paths(args, work)
    saved = np.load(seq_path)
    offsets = np.concatenate([[0], np.cumsum(saved["lengths"])])
    items = saved["items"]
    sequences = [items[offsets[u] : offsets[u + 1]] for u in range(len(offsets) - 1)]
    return sequences, np.load(feat_path) if with_features else None


def build(name: str, args: argparse.Namespace, work: Path) -> tuple[Any, Any, float]:
    """(model, split, seconds to build the model) for ``name`` on the synthetic catalogue; MDSRec from the saved
    derived state when there is one."""
    import torch

    from mdsrec.data.protocol import Split
    from mdsrec.models import DataInfo, build_model
    from mdsrec.models.catalogue import Chunking

    state_path = work / f"mdsrec_derived_{args.items}.pt"
    sequences, features = load_data(args, work, name == "mdsrec")
    split = Split(sequences)
    saved = torch.load(state_path) if name == "mdsrec" and state_path.exists() else None
    cfg = frozen(name)
    info = DataInfo(
        args.items,
        cfg.data.max_len,
        {"text": features} if name == "mdsrec" else {},
        [split.train_part(u) for u in range(split.num_users)],
        saved,
    )
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_model(cfg.model, info)
    seconds = time.perf_counter() - start
    model.chunking = Chunking(num_items=args.items)
    return model, split, seconds


def case_graphs(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import re

    import torch

    state_path = work / f"mdsrec_derived_{args.items}.pt"
    state_path.unlink(missing_ok=True)
    model, split, total = build("mdsrec", args, work)
    derived = {k: v for k, v in model.state_dict().items() if re.search(r"_(idx|val)(_\d+)?$", k)}
    assert any(k.startswith("graph_idx") for k in derived), sorted(derived)
    torch.save(derived, state_path)
    return {
        "model_build_seconds": round(total, 1),
        "users": split.num_users,
        "interactions": int(sum(len(s) for s in split.sequences)),
        "graph_nonzeros": sum(int(v.shape[-1]) for k, v in derived.items() if k.startswith("graph_idx")),
        "derived_state_mib": round(sum(v.numel() * v.element_size() for v in derived.values()) / 2**20),
        "peak_rss_mib": round(peak_mib()),
    }


def case_train(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    from mdsrec.data.protocol import build_train_rows, train_batches

    model, split, _ = build(name, args, work)
    model.train()
    rows = build_train_rows(split, frozen(name).data.max_len)
    batches = train_batches(rows, frozen(name).data, 0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = peak_mib()
    times = []
    for batch in batches[: args.steps]:
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model.compute_loss(batch)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
        print(f"  {name} step {len(times)}: {times[-1]:.2f} s, loss {float(loss.detach()):.3f}", flush=True)
    later = sorted(times[1:]) or times
    return {
        "seconds_per_step": round(later[len(later) // 2], 2),
        "first_step_seconds": round(times[0], 2),
        "steps": len(times),
        "trained_prefixes_per_step": int(sum(int((b.targets > 0).sum()) for b in batches[: args.steps]))
        // len(times),
        "peak_rss_mib_before_steps": round(before),
        "peak_rss_mib": round(peak_mib()),
    }


def case_eval(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from mdsrec.data.protocol import Split
    from mdsrec.evaluation.evaluator import evaluate

    model, split, _ = build(name, args, work)
    users = Split(split.sequences[: args.eval_users])
    before = peak_mib()
    t = time.perf_counter()
    cfg = frozen(name)
    metrics = evaluate(model, users, "test", cfg.data, cfg.eval)
    return {
        "users": users.num_users,
        "seconds": round(time.perf_counter() - t, 1),
        "ndcg@20_untrained": metrics["ndcg@20"],
        "peak_rss_mib_before": round(before),
        "peak_rss_mib": round(peak_mib()),
    }


def case_recall(args: argparse.Namespace) -> dict[str, Any]:
    import faiss
    import numpy as np
    import torch

    _, features = synthetic(args.recall_items, args.dim, 1000, args.seed + 1)
    x = torch.from_numpy(features["synthetic"][1:])
    xn = (x / x.norm(dim=1, keepdim=True)).numpy()
    n, h = len(xn), int(frozen("mdsrec").model["h"])
    queries = np.random.default_rng(args.seed).choice(n, size=min(args.recall_queries, n), replace=False)
    t = time.perf_counter()
    exact = []
    xt = torch.from_numpy(xn)
    for lo in range(0, len(queries), 1000):
        q = torch.from_numpy(queries[lo : lo + 1000])
        s = xt[q] @ xt.t()  # [Q, N]
        s[torch.arange(len(q)), q] = float("-inf")
        exact.append(s.topk(h, dim=1).indices.numpy())
    exact_ids = np.concatenate(exact)
    exact_s = time.perf_counter() - t
    t = time.perf_counter()
    index = faiss.IndexHNSWFlat(xn.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # as mdsrec.data.graphs builds it
    index.add(np.ascontiguousarray(xn))
    faiss.omp_set_num_threads(threads)
    build_s = time.perf_counter() - t
    rows = []
    for ef in args.ef_search:
        index.hnsw.efSearch = ef
        t = time.perf_counter()
        found = index.search(np.ascontiguousarray(xn[queries]), h + 1)[1]
        search_s = time.perf_counter() - t
        hits = [len(set(found[i]) - {queries[i]} & set(exact_ids[i])) for i in range(len(queries))]
        rows.append(
            {
                "ef_search": ef,
                "recall": round(float(np.mean(hits)) / h, 4),
                "seconds_per_1000_queries": round(1000 * search_s / len(queries), 3),
            }
        )
        print(f"  efSearch {ef}: recall@{h} {rows[-1]['recall']:.4f}", flush=True)
    return {
        "items": n,
        "queries": len(queries),
        "h": h,
        "index_build_seconds": round(build_s, 1),
        "exact_seconds_for_the_queries": round(exact_s, 1),
        "by_ef_search": rows,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--interactions", type=int, default=2_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--steps", type=int, default=4, help="training steps per model (the first is not timed)")
    p.add_argument("--eval-users", type=int, default=10_000)
    p.add_argument("--recall-items", type=int, default=200_000)
    p.add_argument("--recall-queries", type=int, default=10_000)
    p.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cases",
        nargs="+",
        default=["graphs", "train-sasrec", "eval-sasrec", "train-mdsrec", "eval-mdsrec", "recall"],
    )
    p.add_argument("--work", help="folder for the saved MDSRec graphs (default: a temporary one)")
    p.add_argument("--json", help="write the figures as a benchmark record here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="big_catalogue_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.child:
        logging.basicConfig(
            level=logging.INFO, format="  %(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
        )
        if args.child == "data":
            out = case_data(args, work)
        elif args.child == "graphs":
            out = case_graphs(args, work)
        elif args.child.startswith("train-"):
            out = case_train(args.child.split("-", 1)[1], args, work)
        elif args.child.startswith("eval-"):
            out = case_eval(args.child.split("-", 1)[1], args, work)
        else:
            out = case_recall(args)
        print(json.dumps(out), flush=True)
        return 0
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    seq_path, feat_path = data_paths(args, work)
    cases = args.cases if seq_path.exists() and feat_path.exists() else ["data", *args.cases]
    for case in cases:
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--work", str(work), "--child", case],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        lines = proc.stdout.rstrip("\n").splitlines()
        print("\n".join(lines[:-1]), flush=True)
        results[case] = {**json.loads(lines[-1]), "case_wall_seconds": round(time.perf_counter() - t, 1)}
        print(f"{case}: {json.dumps(results[case])}", flush=True)
    results.pop("data", None)
    verdicts = {}
    for case in ("train-sasrec", "eval-sasrec", "train-mdsrec", "eval-mdsrec"):
        if case in results:
            verdicts[f"{case} peak < 8 GiB"] = results[case]["peak_rss_mib"] < LIMIT_MIB
    if "graphs" in results:
        verdicts["mdsrec build < 10 min"] = results["graphs"]["model_build_seconds"] < GRAPH_LIMIT_S
    for k, v in verdicts.items():
        print(f"target {k}: {'met' if v else 'MISSED'}")
    if args.json:
        import torch

        recall = results.pop("recall", None)
        figures: dict[str, Any] = {
            "figure": f"Peak memory and time of SASRec and MDSRec (hidden {HIDDEN}) on a synthetic catalogue of "
            f"{args.items:,} items: MDSRec's build (graphs, k-means), training steps, evaluation of "
            f"{args.eval_users:,} users; the neighbour index's recall on a {args.recall_items:,}-item sample",
            "items": args.items,
            "hidden_size": HIDDEN,
            "feature_dim": args.dim,
            "torch_threads": torch.get_num_threads(),
            "cases": results,
            "targets_met": verdicts,
        }
        if recall is not None:
            figures["recall_by_ef_search"] = recall.pop("by_ef_search")
            figures["recall_sample"] = recall
        write_benchmark_record(args.json, figures, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
