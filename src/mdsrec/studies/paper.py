"""The MDSRec paper's Table 2 (arXiv 2412.08103) as data: its model and metric names, the one misprint, and the
pairwise claims the paper reads from it. The table itself ships as package data (``resources/table2.tsv``)."""

from __future__ import annotations

from importlib import resources

from mdsrec.models import REGISTRY

# Our metric keys -> Table 2's row labels (Table 2 has no MRR).
PAPER_METRICS = {"recall@10": "R@10", "ndcg@10": "N@10", "recall@20": "R@20", "ndcg@20": "N@20"}
# Registry names -> Table 2's column names.
PAPER_NAMES = {
    "bert4rec": "BERT4Rec",
    "gru4rec": "GRU4Rec",
    "sasrec": "SASRec",
    "gru4recf": "GRU4RecF",
    "sasrecf": "SASRecF",
    "fdsa": "FDSA",
    "unisrec": "UniSRec",
    "mmmlp": "MMMLP",
    "missrec": "MissRec",
    "mdsrec": "MDSRec",
}
# (dataset, metric, model) -> (as printed, as read): a misprint in the published table.
TABLE2_MISPRINTS = {("Scientific", "R@20", "GRU4Rec"): (0.9590, 0.0959)}


def load_table2() -> dict[tuple[str, str, str], float]:
    """Table 2 of the MDSRec paper (package data): (dataset lower-case, our metric key, paper model name) -> value.

    The one misprint (Scientific GRU4Rec R@20 printed 0.9590) is read as 0.0959.
    """
    text = resources.files("mdsrec").joinpath("resources/table2.tsv").read_text(encoding="utf-8")
    lines = [line.split("\t") for line in text.splitlines() if line.strip() and not line.startswith("#")]
    head, rows = lines[0], lines[1:]
    ours = {v: k for k, v in PAPER_METRICS.items()}
    out: dict[tuple[str, str, str], float] = {}
    for row in rows:
        dataset, metric = row[0], row[1]
        for name, cell in zip(head[2:], row[2:], strict=True):
            value = float(cell)
            printed, read = TABLE2_MISPRINTS.get((dataset, metric, name), (None, None))
            if printed is not None and value == printed and read is not None:
                value = read
            out[(dataset.lower(), ours[metric], name)] = value
    return out


def paper_name(model: str) -> str:
    """The model's column name in the paper's Table 2 (the key into `load_table2`)."""
    return PAPER_NAMES.get(model, model)


# Where the name printed in our tables differs from the Table 2 column: Table 2 writes "MissRec", the model's own
# paper (and this README) "MISSRec".
DISPLAY_NAMES = {"missrec": "MISSRec"}


def display_name(model: str) -> str:
    """The model's name in printed tables, plots and messages; a variant (``mdsrec_plus``) reads as its model's
    name and its suffix ("MDSRec plus")."""
    split = split_variant(model)
    if split is not None:
        return f"{display_name(split[0])} {split[1].replace('_', ' ')}"
    return DISPLAY_NAMES.get(model) or paper_name(model)


def split_variant(name: str) -> tuple[str, str] | None:
    """(model, suffix) when ``name`` is a named variant of a registered model (its name, "_", a suffix; the
    longest such model), else None."""
    bases = [m for m in REGISTRY if name.startswith(f"{m}_") and len(name) > len(m) + 1]
    if not bases:
        return None
    base = max(bases, key=len)
    return base, name[len(base) + 1 :]


# The paper's reading of its Table 2 (modality-based models above ID-based ones; MDSRec above all): (model, against).
COMPARISONS = (
    ("sasrecf", "sasrec"),
    ("gru4recf", "gru4rec"),
    ("unisrec", "sasrec"),
    ("unisrec", "gru4rec"),
    ("missrec", "sasrec"),
    ("missrec", "gru4rec"),
    ("mdsrec", "sasrec"),
    ("mdsrec", "unisrec"),
    ("mdsrec", "missrec"),
)
COMPARISON_METRICS = ("ndcg@20", "recall@20")
