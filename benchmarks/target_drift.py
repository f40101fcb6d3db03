"""How much colder the test targets are than the validation targets under leave-one-out, on a processed data set.

Every model's test metrics on Sports are well below its validation metrics (MISSRec: validation NDCG@20 0.0449, test
0.0371), more than on Scientific. One candidate cause that needs no model: the last item of a history (the test
target) is the newest interaction, so it tends to be an item the training part has seen less often than the
second-to-last one (the validation target). This script measures that from the data alone:

- how often each stage's target item occurs in the training parts (every user's sequence without its last two
  items, the items every model is trained to predict): mean and median count, and the share never seen there;
- the Recall@20 of training popularity (the `pop` reference) on each stage, i.e. how much of the drop a model that
  only knows popularity would show.

    python benchmarks/target_drift.py DATA_DIR [DATA_DIR ...]

Writes one markdown table to stdout (one row per data set and stage). Pure numpy, a few seconds per data set.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from mdsrec.data.processed import load_processed
from mdsrec.data.protocol import Split
from mdsrec.models.base import DataInfo
from mdsrec.models.references import train_counts


def drift(data_dir: str) -> list[tuple[str, str, float, float, float, float]]:
    """(data set, stage, mean count, median count, share unseen, pop Recall@20) for 'valid' and 'test'."""
    data = load_processed(data_dir)
    split = Split(data.sequences)
    parts = [split.train_part(u) for u in range(split.num_users)]
    # [N+1] occurrences in the training parts, counted as the pop reference counts them
    counts = train_counts(DataInfo(data.num_items, max_len=1, train_sequences=parts), "target_drift")
    counts[0] = -1  # padding is never recommended
    top20 = np.argsort(-counts, kind="stable")[:20]  # popularity ranking, ties by item id
    rows = []
    for stage in ("valid", "test"):
        targets = np.array([split.eval_input(u, stage)[1] for u in range(split.num_users)])  # [U]
        c = counts[targets]
        rows.append(
            (
                data.name,
                stage,
                float(c.mean()),
                float(np.median(c)),
                float((c == 0).mean()),
                float(np.isin(targets, top20).mean()),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="+", help="processed data set folders (mdsrec prepare ... --out DIR)")
    args = p.parse_args(argv)
    print("| data set | stage | target's training count, mean | median | never in training | pop Recall@20 |")
    print("|---|---|---|---|---|---|")
    for d in args.data:
        for name, stage, mean, median, unseen, pop in drift(d):
            print(f"| {name} | {stage} | {mean:.1f} | {median:.0f} | {100 * unseen:.2f}% | {pop:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
