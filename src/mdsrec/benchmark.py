"""Benchmark several models over several training seeds on one processed data set, one run after another.

For every model and seed index s in 0..S-1 (parameter-free models: s = 0 only) the run is trained into
``OUT/runs/<model>/seed<s>`` with the frozen config ``CONFIGS/<dataset>/<model>.yaml`` when there is one (else the
defaults), the ``--set`` overrides on top, and ``train.seed`` = the config's seed + s. A finished run (metrics.json)
is skipped, an interrupted one (last.pt, no metrics.json) resumed; both must have been made with the same config
and on the same data set (``mdsrec.runs``). Then::

    OUT/results.csv   one row per run: test metrics, seconds per epoch, epochs, best epoch, wall seconds
    OUT/results.md    mean ± std over seeds per model, beside the MDSRec paper's Table 2 for its data sets
    OUT/results.png   NDCG@20 and Recall@20 means with std error bars (paper values as markers)

``--search section.key=v1,v2,...`` (e.g. ``train.lr=1e-4,1e-3,1e-2``, the paper's learning-rate search) first trains
seed index 0 of every trainable model once per value into ``OUT/runs/<model>/<key>=<v>/seed0``, keeps the value with
the best validation ``train.valid_metric`` (the first listed on a tie), and trains the other seeds with it into
``OUT/runs/<model>/<key>=<v>/seed<s>``; the results files then report the chosen value per model, and
``OUT/search.csv`` holds every value's validation and test metrics. Test metrics never take part in the choice.

Every run is written atomically by the trainer and every results file by ``mdsrec.atomic``, so an interrupted
benchmark is continued by running the same command again. ``--set MODEL:section.key=value`` applies an override to
one model only (e.g. ``sasrec:model.num_heads=4``); a plain ``section.key=value`` applies to every model.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import statistics
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mdsrec.atomic import write_bytes, write_json, write_text
from mdsrec.config import OPERATIONAL_KEYS, ExperimentConfig, resolve_config
from mdsrec.data.processed import ProcessedDataset
from mdsrec.errors import ConfigError, MdsrecError, TrainingDiverged
from mdsrec.models import REGISTRY, check_experiment, full_config
from mdsrec.runs import ACTIONS, check_finished, run_state, train_or_reuse

log = logging.getLogger(__name__)

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
# The frozen configs of the reported numbers, CONFIGS/<dataset>/<model>.yaml, shipped inside the package (the
# repository's configs/experiments links here), so a benchmark finds them from any working directory.
DEFAULT_CONFIGS = Path(__file__).resolve().parent / "configs" / "experiments"
# In a searched run directory: the training loss became non-finite before the first evaluation (config and data
# kept for the reuse check, so a rerun does not train it again).
DIVERGED = "diverged.json"
# What a dry run says about a run in each state.
DRY_ACTIONS: dict[str, str] = {
    "finished": "finished, would be reused",
    "interrupted": "would resume",
    "new": "would train",
}


@dataclass
class RunResult:
    model: str
    seed: int  # the training seed (train.seed)
    metrics: dict[str, Any]  # the run's metrics.json
    wall_seconds: float | None  # of the call that finished the run; None when unknown (finished elsewhere)
    searched: str = ""  # key=value chosen by --search for this model; "" without a search
    diverged: str = ""  # a searched value whose training loss became non-finite at once: why ("": it trained)


@dataclass
class BenchmarkOutcome:
    results: list[RunResult]  # every finished run (in a dry run: those finished so far)
    left_out: list[str]  # "Model: why" for each model without a result (every searched value diverged)


@dataclass
class SearchPoint:
    model: str
    setting: str  # key=value
    metrics: dict[str, Any]  # the seed-0 run's metrics.json
    valid_metric: str  # what the choice compares (train.valid_metric)
    diverged: str = ""  # why it has no metrics ("": it trained)
    chosen: bool = False


def parse_search(text: str) -> tuple[str, list[str]]:
    """``section.key=v1,v2,...`` -> (``section.key``, raw values); ConfigError when malformed."""
    key, sep, rest = text.partition("=")
    values = [v.strip() for v in rest.split(",") if v.strip()]
    if not sep or not key.strip() or len(values) < 2:
        raise ConfigError(f"--search {text!r} must be section.key=v1,v2[,...] with at least two values")
    key = key.strip()
    if key == "train.seed":
        raise ConfigError("--search train.seed: seeds are --seeds, not a search")
    if key == "train.valid_metric" or key.startswith("eval.") or key in OPERATIONAL_KEYS:
        raise ConfigError(
            f"--search {key}: the search compares runs on one validation metric; {key} changes that metric or "
            "nothing that is learned"
        )
    return key, values


def split_overrides(sets: list[str], models: list[str]) -> dict[str, list[str]]:
    """``section.key=value`` for every model, ``MODEL:section.key=value`` for one; order is kept."""
    out: dict[str, list[str]] = {m: [] for m in models}
    for text in sets:
        key = text.split("=", 1)[0]
        if ":" in key:
            model, rest = text.split(":", 1)
            if model not in out:
                raise ConfigError(
                    f"override {text!r} names model {model!r}, which is not in --models {models}"
                )
            out[model].append(rest)
        else:
            for m in models:
                out[m].append(text)
    return out


def run_config(model: str, dataset: str, configs_dir: Path | None, sets: list[str]) -> ExperimentConfig:
    """The frozen config CONFIGS/<dataset>/<model>.yaml if it exists (else the defaults), ``sets`` on top."""
    if configs_dir is not None and not Path(configs_dir).is_dir():
        raise ConfigError(
            f"frozen configs folder {configs_dir} not found (it should hold <dataset>/<model>.yaml); "
            "pass an existing --configs folder"
        )
    frozen = Path(configs_dir) / dataset / f"{model}.yaml" if configs_dir is not None else None
    if frozen is not None and frozen.is_file():
        log.info("%s: frozen config %s", model, frozen)
        cfg = resolve_config(frozen, sets, model=model)
    else:
        if frozen is not None:
            log.warning(
                "%s: no frozen config %s: training with the model's default hyper-parameters", model, frozen
            )
        cfg = resolve_config(None, sets, model=model)
    check_experiment(cfg)  # the model section too, so a bad override fails before anything trains
    return cfg


def plan_runs(
    models: list[str],
    dataset: str,
    configs_dir: Path | None,
    per_model: dict[str, list[str]],
    param: str,
    raw_values: list[str],
) -> dict[str, list[tuple[str, ExperimentConfig]]]:
    """Every model's seed-0 plan: (setting label, config) per searched value, or one ("", config) without a search
    (and for parameter-free models). Every config is resolved here, before anything trains: a bad override or
    value fails at once, not after hours."""
    from mdsrec.sweep import sweep_configs, value_label

    plans: dict[str, list[tuple[str, ExperimentConfig]]] = {}
    for m in models:
        base = run_config(m, dataset, configs_dir, per_model[m])
        if not param or not REGISTRY[m][0].trainable:
            plans[m] = [("", base)]
            continue
        if any(o.split("=", 1)[0].strip() == param for o in per_model[m]):
            raise ConfigError(f"{param} is both searched (--search) and set (--set) for {m}")
        frozen = configs_dir / dataset / f"{m}.yaml" if configs_dir is not None else None
        pairs = sweep_configs(
            m, param, raw_values, frozen if frozen and frozen.is_file() else None, per_model[m]
        )
        plans[m] = [(f"{param}={value_label(v)}", c) for v, c in pairs]
    return plans


@dataclass
class _Runner:
    """Trains, resumes or reuses the runs of one benchmark in order, numbering them [done/total] in the log."""

    out: Path
    data: ProcessedDataset
    dry_run: bool
    total: int
    done: int = 0
    counts: dict[str, int] = field(
        default_factory=lambda: {"finished": 0, "interrupted": 0, "new": 0, "diverged": 0}
    )

    def run(self, m: str, s: int, setting: str, cfg: ExperimentConfig, searching: bool) -> RunResult | None:
        """One run; in a dry run None unless it is finished (and reusable). In a search a run whose loss became
        non-finite before its first evaluation is marked (DIVERGED) and left out."""
        self.done += 1
        run = self.out / "runs" / m / setting / f"seed{s}" if setting else self.out / "runs" / m / f"seed{s}"
        state = run_state(run)
        if searching and state != "finished" and (run / DIVERGED).is_file():
            return self._diverged_before(m, run, setting, cfg)
        self.counts[state] += 1
        verb = DRY_ACTIONS[state] if self.dry_run else ACTIONS[state]
        log.info("[%d/%d] %s seed %d: %s %s", self.done, self.total, m, cfg.train.seed, verb, run)
        if self.dry_run:
            if state != "finished":
                return None
            metrics = json.loads((run / "metrics.json").read_text())
            check_finished(run, metrics, cfg, self.data, "benchmark")
            return RunResult(m, cfg.train.seed, metrics, None, setting)
        try:
            outcome = train_or_reuse(cfg, self.data, run, owner="benchmark")
        except TrainingDiverged as e:
            if not searching:
                raise MdsrecError(
                    f"{run}: {e}. This run cannot be trained with this config; change it (e.g. a lower train.lr) "
                    "or leave the model out"
                ) from e
            log.warning("%s %s diverged (%s): left out of the search", m, setting, e)
            marker = {
                "error": str(e),
                "config": full_config(cfg).to_dict(),
                "data": {"fingerprint": self.data.fingerprint},
            }
            write_json(run / DIVERGED, marker)
            return RunResult(m, cfg.train.seed, {}, None, setting, str(e))
        return RunResult(m, cfg.train.seed, outcome.metrics, outcome.wall_seconds, setting)

    def _diverged_before(self, m: str, run: Path, setting: str, cfg: ExperimentConfig) -> RunResult:
        marker = json.loads((run / DIVERGED).read_text())
        try:  # the same config and data, else an error
            check_finished(run, marker, cfg, self.data, "benchmark")
        except MdsrecError as e:
            raise MdsrecError(
                f"{run / DIVERGED} marks a run that diverged with another config or data ({e}); delete {run} "
                "to train it with this one"
            ) from e
        self.counts["diverged"] += 1
        log.info(
            "[%d/%d] %s seed %d: diverged before, not retried %s",
            self.done,
            self.total,
            m,
            cfg.train.seed,
            run,
        )
        return RunResult(m, cfg.train.seed, {}, None, setting, str(marker["error"]))


def choose(
    m: str, candidates: list[tuple[RunResult, ExperimentConfig]]
) -> tuple[list[SearchPoint], tuple[RunResult, ExperimentConfig] | None]:
    """A finished search's points and its choice: the best validation value among those that trained, the first
    listed on a tie (None when every value diverged). Test metrics never take part."""
    found = [SearchPoint(m, r.searched, r.metrics, c.train.valid_metric, r.diverged) for r, c in candidates]
    ok = [i for i, p in enumerate(found) if not p.diverged]
    if not ok:
        return found, None
    best = max(ok, key=lambda i: (found[i].metrics["valid"][found[i].valid_metric], -i))
    found[best].chosen = True
    log.info("%s: %s chosen on validation %s", m, found[best].setting, found[best].valid_metric)
    return found, candidates[best]


def benchmark(
    data: ProcessedDataset,
    models: list[str],
    seeds: int,
    out: str | Path,
    configs_dir: str | Path | None = DEFAULT_CONFIGS,
    sets: list[str] | None = None,
    dataset: str | None = None,
    search: str | None = None,
    dry_run: bool = False,
) -> BenchmarkOutcome:
    """Train (or skip, or resume) every (model, seed) run, then write OUT/results.{csv,md,png} (and
    OUT/search.csv with ``search``, ``section.key=v1,v2,...``).

    ``dry_run``: train nothing and write nothing; log what each run would do (finished runs are checked against
    their config and data as for reuse) and return the finished runs' results (and the models already left out)."""
    out = Path(out)
    if seeds < 1:
        raise ConfigError(f"seeds ({seeds}) must be >= 1")
    if not models or len(set(models)) != len(models):
        raise ConfigError(f"models ({models}) must be a non-empty list without repeats")
    unknown = [m for m in models if m not in REGISTRY]
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown} (known: {', '.join(sorted(REGISTRY))})")
    param, raw_values = parse_search(search) if search is not None else ("", [])
    dataset = dataset or data.name
    cdir = Path(configs_dir) if configs_dir is not None else None
    plans = plan_runs(models, dataset, cdir, split_overrides(sets or [], models), param, raw_values)
    total = sum(len(p) + (seeds - 1 if REGISTRY[m][0].trainable else 0) for m, p in plans.items())
    runner = _Runner(out, data, dry_run, total)

    results: list[RunResult] = []
    points: list[SearchPoint] = []
    left_out: list[str] = []  # models without a result: why
    for m in models:
        searching = len(plans[m]) > 1
        candidates = [(runner.run(m, 0, setting, cfg, searching), cfg) for setting, cfg in plans[m]]
        later = range(1, seeds if REGISTRY[m][0].trainable else 1)
        first: RunResult | None
        if searching:
            done_search = [(r, c) for r, c in candidates if r is not None]
            if len(done_search) < len(candidates):  # dry run before the search has finished
                runner.done += len(later)
                if later:
                    log.info("%s: seeds %d-%d with the value the search chooses", m, later[0], later[-1])
                continue
            found, chosen = choose(m, done_search)
            points += found
            if chosen is None:
                why = (
                    f"every value of {param} diverged before its first evaluation: search lower values (delete "
                    f"{out / 'runs' / m} to retry these)"
                )
                log.error("%s left out: %s", m, why)
                left_out.append(f"{display_name(m)}: {why}")
                runner.done += len(later)
                continue
            first, cfg = chosen
        else:
            first, cfg = candidates[0]
        if first is not None:
            results.append(first)
        for s in later:
            c = copy.deepcopy(cfg)
            c.train.seed += s  # base seed (config or --set) + s
            r = runner.run(m, s, plans[m][0][0] if first is None else first.searched, c, False)
            if r is not None:
                results.append(r)

    if dry_run:
        counts = runner.counts
        log.info(
            "dry run: %d of %d runs finished (would be reused), %d diverged in a search (not retried), %d would "
            "resume, %d would train, %d wait for a search; nothing trained or written",
            counts["finished"],
            total,
            counts["diverged"],
            counts["interrupted"],
            counts["new"],
            total - sum(counts.values()),
        )
        return BenchmarkOutcome(results, left_out)
    if not results:
        raise MdsrecError("no model has a result: " + "; ".join(left_out))
    table2 = load_table2()
    write_text(out / "results.csv", results_csv(results))
    write_text(
        out / "results.md", results_markdown(results, dataset, data, table2, param, raw_values, left_out)
    )
    write_bytes(out / "results.png", results_png(results, dataset, table2))
    if points:
        write_text(out / "search.csv", search_csv(points))
    elif (
        out / "search.csv"
    ).is_file():  # from an earlier call with --search: it would not describe these results
        (out / "search.csv").unlink()
    return BenchmarkOutcome(results, left_out)


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


# ---------------------------------------------------------------------------------------------------------------
# The paper's Table 2
# ---------------------------------------------------------------------------------------------------------------


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
    """The model's name in printed tables, plots and messages."""
    return DISPLAY_NAMES.get(model) or paper_name(model)


# ---------------------------------------------------------------------------------------------------------------
# Results files
# ---------------------------------------------------------------------------------------------------------------


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


def comparisons_markdown(
    results: list[RunResult], dataset: str, table2: dict[tuple[str, str, str], float]
) -> str:
    """For each of the paper's pairwise claims whose two models are in ``results``: both means, the relative
    difference, the paper's own difference on this data set, and whether the claim holds here: "level (within seed
    spread)" when every difference is at most the sum of the two standard deviations, else "yes" / "no" on both
    metrics or "mixed". Empty when no pair is present."""
    groups = _grouped(results)
    rows = []
    for a, b in COMPARISONS:
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
