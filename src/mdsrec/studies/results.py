"""The results files of ``mdsrec benchmark`` (results.csv, results.md, results.png, search.csv), also used by
``mdsrec report``: tables of test metrics per model, mean ± sd over seeds, beside the paper's Table 2."""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass
from typing import Any

from mdsrec.data.processed import ProcessedDataset
from mdsrec.studies.paper import (
    COMPARISON_METRICS,
    COMPARISONS,
    PAPER_METRICS,
    display_name,
    paper_name,
    split_variant,
)

METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr@20")
CSV_COLUMNS = (
    "model",
    "seed",
    *METRICS,
    "seconds_per_epoch",
    "epochs",
    "best_epoch",
    # Training plus validation seconds of every epoch, summed over all calls (a resumed run counts in full; set-up
    # and the final test evaluation are not in it).
    "epoch_seconds_total",
    "wall_seconds",  # of the call that finished the run (for a resumed run, only its last part)
    "searched",  # the chosen value of --search, as key=value; empty without a search
)
PLOT_METRICS = ("ndcg@20", "recall@20")


@dataclass
class RunResult:
    model: str
    seed: int  # the training seed (train.seed)
    metrics: dict[str, Any]  # the run's metrics.json
    wall_seconds: float | None  # of the call that finished the run; None when unknown (finished elsewhere)
    searched: str = ""  # key=value chosen by --search for this model; "" without a search
    diverged: str = ""  # a searched value whose training loss became non-finite at once: why ("": it trained)


@dataclass
class SearchPoint:
    model: str
    setting: str  # key=value
    metrics: dict[str, Any]  # the seed-0 run's metrics.json
    valid_metric: str  # what the choice compares (train.valid_metric)
    diverged: str = ""  # why it has no metrics ("": it trained)
    chosen: bool = False


def search_csv(points: list[SearchPoint]) -> str:
    """One row per (model, searched value): the value, whether it was chosen, validation and test metrics."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = [
        "model",
        "setting",
        "chosen",
        "valid_metric",
        *(f"valid_{k}" for k in METRICS),
        *(f"test_{k}" for k in METRICS),
        "seconds_per_epoch",
        "epochs",
        "best_epoch",
        "epoch_seconds_total",  # training plus validation seconds of every epoch, as in results.csv
        "diverged_at_epoch",  # training stopped there (loss non-finite); the best epoch before it counts
        "diverged",  # no metrics: the loss became non-finite before the first evaluation (why)
    ]
    w.writerow(header)
    for p in points:
        m = p.metrics
        if p.diverged:
            lead = [p.model, p.setting, False, p.valid_metric]
            # every column between the lead and the last ("diverged") stays empty
            w.writerow(lead + [""] * (len(header) - len(lead) - 1) + [p.diverged])
            continue
        w.writerow(
            [p.model, p.setting, p.chosen, p.valid_metric]
            + [f"{m['valid'][k]:.6f}" for k in METRICS]
            + [f"{m['test'][k]:.6f}" for k in METRICS]
            + [
                m["seconds_per_epoch"],
                m["epochs"],
                m["best_epoch"],
                _epoch_seconds_total(m),
                m.get("diverged_at_epoch") or "",
                "",
            ]
        )
    return buf.getvalue()


def _grouped(results: list[RunResult]) -> dict[str, list[RunResult]]:
    out: dict[str, list[RunResult]] = {}
    for r in results:
        out.setdefault(r.model, []).append(r)
    return out


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def mean_std_cell(values: list[float]) -> str:
    """A table cell: "mean ± sd" to 4 decimals, the mean alone for one value."""
    mean, sd = mean_std(values)
    return f"{mean:.4f}" if sd is None else f"{mean:.4f} ± {sd:.4f}"


def _epoch_seconds_total(m: dict[str, Any]) -> float | str:
    """Training plus validation seconds over every epoch of a run, from metrics.json's per-epoch means (one history
    record per epoch, kept across resumes, so mean x epochs is the sum up to rounding); "" when metrics.json lacks
    the validation mean."""
    if "eval_seconds" not in m:
        return ""
    return round((m["seconds_per_epoch"] + m["eval_seconds"]) * m["epochs"], 1)


def results_csv(results: list[RunResult]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in results:
        m = r.metrics
        w.writerow(
            [r.model, r.seed]
            + [f"{m['test'][k]:.6f}" for k in METRICS]
            + [
                m["seconds_per_epoch"],
                m["epochs"],
                m["best_epoch"],
                _epoch_seconds_total(m),
                "" if r.wall_seconds is None else r.wall_seconds,
                r.searched,
            ]
        )
    return buf.getvalue()


def epochs_cell(m: dict[str, Any]) -> str:
    """'epochs (best)', with the epoch where training stopped on a non-finite loss."""
    d = m.get("diverged_at_epoch")
    return f"{m['epochs']} ({m['best_epoch']}" + (f"; loss non-finite in epoch {d}" if d else "") + ")"


def results_markdown(
    results: list[RunResult],
    dataset: str,
    data: ProcessedDataset,
    table2: dict[tuple[str, str, str], float],
    param: str = "",
    values: list[str] | None = None,
    left_out: list[str] | None = None,
) -> str:
    in_paper = any(k[0] == dataset.lower() for k in table2)
    head = ["model", "seeds", "R@10", "N@10", "R@20", "N@20", "MRR@20", "s/epoch", "epochs (best)"]
    if param:
        head.insert(2, f"{param} (chosen)")
    if in_paper:
        head += ["paper R@10", "N@10", "R@20", "N@20"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, runs in _grouped(results).items():
        cells = [display_name(model), str(len(runs))]
        if param:
            cells.append(runs[0].searched.split("=", 1)[1] if runs[0].searched else "-")
        for k in METRICS:
            cells.append(mean_std_cell([r.metrics["test"][k] for r in runs]))
        spe, _ = mean_std([float(r.metrics["seconds_per_epoch"]) for r in runs])
        cells.append(f"{spe:.2f}")
        cells.append(", ".join(epochs_cell(r.metrics) for r in runs))
        if in_paper:
            for k in PAPER_METRICS:
                v = table2.get((dataset.lower(), k, paper_name(model)))
                cells.append("-" if v is None else f"{v:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    counts = data.manifest.get("counts", {})
    size = ", ".join(f"{counts[k]:,} {k}" for k in ("users", "items", "interactions") if k in counts)
    excl = {bool(r.metrics.get("exclude_history")) for r in results}
    notes = [
        f"# Benchmark: {dataset}" + (f" ({size})" if size else ""),
        "",
        f"Data: `{data.path}` (fingerprint {data.fingerprint[:12]}). Test metrics of the best validation epoch, full "
        "ranking over all items, leave-one-out, history items "
        + ("excluded" if excl == {True} else "not excluded" if excl == {False} else "excluded in some runs")
        + "; mean ± sample standard deviation over training seeds (one value: one seed; parameter-free models run "
        "once). s/epoch is the mean training time per epoch (0 for parameter-free models).",
    ]
    if left_out:
        notes.append("Left out (no result): " + "; ".join(left_out) + ".")
    if param:
        notes.append(
            f"{param} searched over {', '.join(values or [])}: for each model the value with the best validation "
            "metric of its first seed (search.csv has every value); parameter-free models are not searched."
        )
    if in_paper:
        notes.append(
            '"paper" is Table 2 of the MDSRec paper (arXiv 2412.08103) for this data set'
            + (
                "; its Scientific GRU4Rec R@20, printed 0.9590, is read as 0.0959."
                if dataset.lower() == "scientific"
                else "."
            )
        )
    text = "\n".join(notes) + "\n\n" + "\n".join(lines) + "\n"
    claims = comparisons_markdown(results, dataset, table2)
    return text + ("\n" + claims if claims else "")


def _variant_of(name: str) -> str | None:
    """The registered model ``name`` is a named variant of (``mdsrec_plus`` -> mdsrec), else None."""
    split = split_variant(name)
    return split[0] if split is not None else None


def comparisons_markdown(
    results: list[RunResult], dataset: str, table2: dict[tuple[str, str, str], float]
) -> str:
    """For each of the paper's pairwise claims whose two models are in ``results``: both means, the relative
    difference, the paper's own difference on this data set, and whether the claim holds here: "level (within seed
    spread)" when every difference is at most the sum of the two standard deviations, else "yes" / "no" on both
    metrics or "mixed". A named variant (``mdsrec_plus``) is held to its model's claims and compared with its
    model. Empty when no pair is present."""
    groups = _grouped(results)
    pairs: list[tuple[str, str]] = []
    for a, b in COMPARISONS:
        pairs += [(a, b), *((v, b) for v in groups if _variant_of(v) == a)]
    pairs += [(v, base) for v in groups if (base := _variant_of(v)) is not None]
    rows = []
    for a, b in pairs:
        if a not in groups or b not in groups:
            continue
        cells = [f"{display_name(a)} > {display_name(b)}"]
        signs, spread = [], []
        for k in COMPARISON_METRICS:
            (ma, sa), (mb, sb) = (mean_std([r.metrics["test"][k] for r in groups[x]]) for x in (a, b))
            cells.append(f"{ma:.4f} vs {mb:.4f} ({100 * (ma / mb - 1):+.1f}%)" if mb else f"{ma:.4f} vs 0")
            signs.append(ma > mb)
            if sa is not None and sb is not None:
                spread.append(abs(ma - mb) <= sa + sb)
        pa, pb = (table2.get((dataset.lower(), COMPARISON_METRICS[0], paper_name(x))) for x in (a, b))
        base = _variant_of(a)
        if (
            base is not None and base != b
        ):  # a variant held to its model's claim: the paper's difference of that
            pa = table2.get((dataset.lower(), COMPARISON_METRICS[0], paper_name(base)))
        cells.append(f"{100 * (pa / pb - 1):+.1f}%" if pa is not None and pb else "-")
        if spread and all(
            spread
        ):  # no difference is larger than the noise between seeds: nothing established
            verdict = "level (within seed spread)"
        else:
            verdict = "yes" if all(signs) else "no" if not any(signs) else "mixed"
        cells.append(verdict)
        rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        return ""
    head = "| claim | N@20 ours | R@20 ours | paper N@20 | holds here |\n|---|---|---|---|---|"
    return (
        "### The paper's comparisons\n\nModality-based models above ID-based ones and MDSRec above all, as the paper "
        "reads its Table 2: test means here, relative difference, and the paper's difference in NDCG@20 on this data "
        'set. "level (within seed spread)": every difference is at most the sum of the two models\' standard '
        "deviations, so neither is shown to be above the other.\n\n" + head + "\n" + "\n".join(rows) + "\n"
    )


def results_png(results: list[RunResult], dataset: str, table2: dict[tuple[str, str, str], float]) -> bytes:
    """Grouped bars (one group per model) of the mean NDCG@20 and Recall@20 with std error bars, as PNG bytes."""
    # The Agg canvas directly: no pyplot, no global backend switch, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = _grouped(results)
    names = list(groups)
    width = 0.38
    fig = Figure(figsize=(max(4.0, 1.3 * len(names) + 1.5), 3.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for j, key in enumerate(PLOT_METRICS):
        stats = [mean_std([r.metrics["test"][key] for r in groups[m]]) for m in names]
        xs = [i + (j - 0.5) * width for i in range(len(names))]
        color = ("tab:blue", "tab:orange")[j]
        label = key.replace("ndcg", "NDCG").replace("recall", "Recall")
        ax.bar(xs, [mean for mean, _ in stats], width, label=label, color=color)
        spread = [(x, mean, sd) for x, (mean, sd) in zip(xs, stats, strict=True) if sd is not None]
        if spread:  # one run has no spread: no error bar rather than a zero-length one
            ax.errorbar(
                [x for x, _, _ in spread],
                [mean for _, mean, _ in spread],
                yerr=[sd for _, _, sd in spread],
                fmt="none",
                ecolor="black",
                capsize=3,
            )
        paper = [
            (x, table2.get((dataset.lower(), key, paper_name(m)))) for x, m in zip(xs, names, strict=True)
        ]
        pts = [(x, v) for x, v in paper if v is not None]
        if pts:
            ax.scatter(
                [x for x, _ in pts],
                [v for _, v in pts],
                marker="_",
                s=300,
                color="black",
                zorder=3,
                label="paper (Table 2)" if j == 0 else None,
            )
    ax.set_xticks(range(len(names)), [display_name(m) for m in names])
    ax.set_ylabel("test metric")
    ax.set_title(f"{dataset}: mean ± std over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
