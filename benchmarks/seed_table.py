"""The README's "Seed spread on Sports" rows and comparisons, computed from run folders and recorded rows, not by hand.

    python benchmarks/seed_table.py RUNS_DIR [--rows CSV ...] [--against sasrec,sasrecf] [--claims DATASET]

RUNS_DIR is a benchmark folder (``RUNS_DIR/runs/<model>/seed<i>/metrics.json``, as `mdsrec benchmark` and
`mdsrec records restore` lay it out). ``--rows`` adds finished runs known only as results rows (the
`results.csv` columns: model, seed, metrics, seconds_per_epoch, epochs, best_epoch, and optionally
diverged_at_epoch), for seeds whose run folders are
gone; a (model, seed) present in both is taken from the run folder, and the script says so. Prints, per model: the
table row (mean ± sample standard deviation over the seeds, mean s/epoch, epochs (best) in seed order), the spread as a
percentage of the mean, each seed's N@20 and R@20, and against each ``--against`` model the difference of the means and
whether every seed of one is above every seed of the other, metric by metric (what the README's "holds against both
spreads" means). ``--claims DATASET`` then prints the paper's pairwise claims over the seeds, as the table
`mdsrec benchmark` writes into results.md (the library's ``comparisons_markdown``: means, difference, the paper's
difference on DATASET, and whether the claim holds here), for the same merged runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from mdsrec.studies.paper import PAPER_METRICS, display_name, load_table2
from mdsrec.studies.results import METRICS, RunResult, comparisons_markdown, epochs_cell, mean_std

SHORT = {**PAPER_METRICS, "mrr@20": "MRR@20"}  # metric -> table header, for every one of METRICS


@dataclass
class SeedRun:
    model: str
    seed: int
    test: dict[str, float]
    seconds_per_epoch: float
    epochs: int
    best_epoch: int
    source: str  # the metrics.json or the CSV it came from
    diverged_at_epoch: int | None = None  # training stopped there on a non-finite loss


def from_folders(runs_dir: Path) -> list[SeedRun]:
    out = []
    for path in sorted(runs_dir.glob("runs/*/seed*/metrics.json")):
        m = json.loads(path.read_text())
        seed = m.get("config", {}).get("train", {}).get("seed")
        if not isinstance(seed, int):
            sys.exit(f"{path}: config.train.seed missing or not an integer")
        test = {k: float(m["test"][k]) for k in METRICS}
        out.append(
            SeedRun(
                path.parent.parent.name,
                seed,
                test,
                float(m["seconds_per_epoch"]),
                int(m["epochs"]),
                int(m["best_epoch"]),
                str(path),
                m.get("diverged_at_epoch") or None,
            )
        )
    return out


def from_csv(path: Path) -> list[SeedRun]:
    out = []
    with path.open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                out.append(
                    SeedRun(
                        row["model"],
                        int(row["seed"]),
                        {k: float(row[k]) for k in METRICS},
                        float(row["seconds_per_epoch"]),
                        int(row["epochs"]),
                        int(row["best_epoch"]),
                        f"{path}:{line}",
                        int(row["diverged_at_epoch"]) if row.get("diverged_at_epoch") else None,
                    )
                )
            except (KeyError, ValueError) as e:
                sys.exit(
                    f"{path}, line {line}: expected the results.csv columns model, seed, "
                    f"{', '.join(METRICS)}, seconds_per_epoch, epochs, best_epoch ({e!r})"
                )
    return out


def merge(folder_runs: list[SeedRun], rows: list[SeedRun]) -> dict[str, list[SeedRun]]:
    by_key = {(r.model, r.seed): r for r in rows}
    for r in folder_runs:
        if (r.model, r.seed) in by_key:
            print(
                f"note: {r.model} seed {r.seed} taken from {r.source}, not {by_key[(r.model, r.seed)].source}"
            )
        by_key[(r.model, r.seed)] = r
    grouped: dict[str, list[SeedRun]] = {}
    for key in sorted(by_key):
        grouped.setdefault(key[0], []).append(by_key[key])
    return grouped


def table_row(model: str, runs: list[SeedRun]) -> str:
    cells = [display_name(model), str(len(runs))]
    for k in METRICS:
        mean, sd = mean_std([r.test[k] for r in runs])
        cells.append(f"{mean:.4f}" if sd is None else f"{mean:.4f} ± {sd:.4f}")
    cells.append(f"{statistics.mean(r.seconds_per_epoch for r in runs):.0f}")
    cells.append(
        ", ".join(
            epochs_cell(
                {"epochs": r.epochs, "best_epoch": r.best_epoch, "diverged_at_epoch": r.diverged_at_epoch}
            )
            for r in runs
        )
    )
    return "| " + " | ".join(cells) + " |"


def spread(runs: list[SeedRun]) -> str:
    if len(runs) < 2:
        return "one seed, no spread"
    parts = []
    for k in METRICS:
        mean, sd = mean_std([r.test[k] for r in runs])
        parts.append(f"{SHORT[k]} {100 * (sd or 0.0) / mean:.1f}%")
    return "sd as % of mean: " + ", ".join(parts)


def compare(a: list[SeedRun], b: list[SeedRun]) -> str:
    parts = []
    for k in METRICS:
        va, vb = [r.test[k] for r in a], [r.test[k] for r in b]
        diff = 100 * (statistics.mean(va) / statistics.mean(vb) - 1)
        if min(va) > max(vb):
            rel = "every seed above"
        elif max(va) < min(vb):
            rel = "every seed below"
        else:
            rel = "overlap"
        parts.append(
            f"{SHORT[k]} {diff:+.1f}% ({rel}; {min(va):.4f}-{max(va):.4f} vs {min(vb):.4f}-{max(vb):.4f})"
        )
    return "; ".join(parts)


def check_dataset(dataset: str) -> dict[tuple[str, str, str], float]:
    """The paper's Table 2; exit with the known names when ``dataset`` is not one of its data sets."""
    table2 = load_table2()
    known = sorted({d for d, _, _ in table2})
    if dataset.lower() not in known:
        sys.exit(f"--claims {dataset}: not a data set of the paper's Table 2 (known: {', '.join(known)})")
    return table2


def claims(grouped: dict[str, list[SeedRun]], dataset: str) -> str:
    """The paper's claims table over these runs, by the library's own rule (so it reads as results.md does)."""
    table2 = check_dataset(dataset)
    results = [RunResult(r.model, r.seed, {"test": r.test}, None) for runs in grouped.values() for r in runs]
    return comparisons_markdown(results, dataset, table2)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs_dir", type=Path)
    p.add_argument(
        "--rows", type=Path, action="append", default=[], help="results.csv-style rows (repeatable)"
    )
    p.add_argument("--against", default="sasrec,sasrecf", help="models to compare every other model with")
    p.add_argument(
        "--order",
        default="gru4rec,gru4recf,sasrec,sasrecf,mmmlp,bert4rec,fdsa,mdsrec,missrec,unisrec",
        help="model order of the output (the README's); models not listed follow by name",
    )
    p.add_argument(
        "--claims",
        metavar="DATASET",
        help="also print the paper's pairwise claims over the seeds, with the paper's differences on DATASET",
    )
    args = p.parse_args(argv)
    if not args.runs_dir.is_dir():
        sys.exit(f"{args.runs_dir}: not a folder")
    if args.claims:
        check_dataset(args.claims)  # before any output, so a typo does not follow a full table
    rows = [r for path in args.rows for r in from_csv(path)]
    grouped = merge(from_folders(args.runs_dir), rows)
    if not grouped:
        sys.exit(f"{args.runs_dir}: no runs/<model>/seed<i>/metrics.json and no --rows")
    order = [m for m in args.order.split(",") if m]
    grouped = dict(
        sorted(grouped.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0]))
    )
    against = [m for m in args.against.split(",") if m]
    head = ["model", "seeds", *(SHORT[k] for k in METRICS), "s/epoch", "epochs (best)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for model, runs in grouped.items():
        print(table_row(model, runs))
    for model, runs in grouped.items():
        print(f"\n{display_name(model)}: seeds {', '.join(str(r.seed) for r in runs)}; {spread(runs)}")
        print(
            "  per seed N@20 "
            + ", ".join(f"{r.test['ndcg@20']:.4f}" for r in runs)
            + "; R@20 "
            + ", ".join(f"{r.test['recall@20']:.4f}" for r in runs)
        )
        for other in against:
            if other != model and other in grouped:
                print(f"  vs {display_name(other)}: {compare(runs, grouped[other])}")
    if args.claims:
        print("\n" + (claims(grouped, args.claims) or "no pair of the paper's claims among these models"))


if __name__ == "__main__":
    main()
