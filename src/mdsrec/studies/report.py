"""Results pages from run records: Table 2 beside the paper, the paper's claims, other studies, epoch curves, speed.

    mdsrec report RECORDS [RECORDS ...] --out DIR

RECORDS is a records folder as ``mdsrec records save`` writes it (``<root>/<study>/runs/<run>/metrics.json`` and
``log.jsonl``), one study folder of it (``<study>/runs/...``) or a benchmark output folder; a run is every folder
inside a ``runs`` folder that holds ``metrics.json``. The study is the folder that holds ``runs`` (its path under
RECORDS; a RECORDS path that is itself a study folder gives its own name). A run whose folder is named
``seed<i>`` (``runs/<model>/seed<i>``, or ``runs/<model>/<key>=<value>/seed<i>`` after a search) is one seed of a
seed table; any other run (``runs/<screen>``) belongs to its study's table of single runs.

Schemas of metrics.json (a file may name its schema in a top-level ``"schema"`` field; without one it is
``current`` when it holds a ``provenance`` object and ``legacy`` otherwise):

``legacy``
    ``valid`` and ``test`` (objects with every metric of ``mdsrec.studies.results.METRICS``), ``best_epoch``, ``epochs``,
    ``seconds_per_epoch`` (mean training seconds per epoch), ``config`` (``model.name``, ``train.seed``, and
    ``train.lr`` where it was set), ``data`` (``fingerprint``, ``name``, ``path``); optionally ``eval_seconds``
    (mean validation seconds per epoch), ``diverged_at_epoch``, ``exclude_history`` and ``data.files`` (each data
    file's sha256). It does not say which command, code commit, library versions, CPU model or thread count made
    the run, nor when it finished; the report says so.
``current``
    ``legacy`` plus ``provenance``, an object whose fields are each optional: ``command``, ``git_commit``,
    ``versions`` (library -> version), ``cpu``, ``gpu``, ``threads``, ``finished`` (date and time),
    ``total_seconds``.

A required field that is missing or of the wrong type, an unknown schema name, or a ``provenance`` that is not an
object is an `MdsrecError` naming the file and the field. ``log.jsonl`` (one JSON object per epoch: ``epoch``,
``train_loss``, ``valid_ndcg@20``, ...) is optional; a line that is not a JSON object is an error naming the file
and the line.

`write_report` writes ``DIR/results.md`` (per data set: each seed study's Table 2 beside the paper's, its seeds,
the paper's pairwise claims, then the other studies' runs; last, where the records come from),
``DIR/headline.md`` (the short table: test R@20 and N@20 per model) and ``DIR/report.html`` (one self-contained
page: bar charts with standard-deviation error bars, every run's training loss and validation NDCG@20 per epoch,
a speed table, and the tables of results.md). The Markdown files depend on the records only (sorted, no dates of
their own), so the same records give the same bytes.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import statistics
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdsrec.atomic import staged_directory, write_text
from mdsrec.errors import MdsrecError
from mdsrec.evaluation.evaluator import POPULARITY_BUCKETS
from mdsrec.rundir import LOG
from mdsrec.rundir import METRICS as METRICS_FILE
from mdsrec.studies.bench_records import BenchRecord, benchmarks_markdown
from mdsrec.studies.paper import (
    PAPER_METRICS,
    PAPER_NAMES,
    TABLE2_MISPRINTS,
    display_name,
    load_table2,
    paper_name,
    split_variant,
)
from mdsrec.studies.results import (
    METRICS,
    RunResult,
    comparisons_markdown,
    epochs_cell,
    mean_std,
    mean_std_cell,
    results_png,
)

SCHEMAS = ("legacy", "current")
# Dotted paths every metrics.json must hold (the test and valid metrics are checked key by key as well).
REQUIRED_FIELDS = (
    "valid",
    "test",
    "config.model.name",
    "config.train.seed",
    "data.fingerprint",
    "epochs",
    "best_epoch",
    "seconds_per_epoch",
)
# What a legacy record lacks, as the report names it.
PROVENANCE_FIELDS = {
    "command": "command",
    "git_commit": "git commit",
    "versions": "library versions",
    "cpu": "CPU model",
    "threads": "thread count",
    "finished": "finish date",
}
REFERENCES = ("pop", "cooc", "featsim")  # parameter-free reference models: first in every table
# Table 2's model order (the paper's columns), references before it, other models after it by name.
MODEL_ORDER = (*REFERENCES, *PAPER_NAMES)
SHORT = {**PAPER_METRICS, "mrr@20": "MRR@20"}  # metric key -> column header, for every one of METRICS
REPORT_FILES = ("results.md", "headline.md", "report.html")
_SEED_DIR = re.compile(r"seed\d+")


@dataclass
class Record:
    """One finished run read from its metrics.json (and log.jsonl)."""

    path: Path  # the run folder
    study: str  # the study it belongs to (the folder holding ``runs``, relative to the RECORDS path)
    name: str  # the run's path under ``runs`` ("sasrec/seed0", "base")
    schema: str  # one of SCHEMAS
    metrics: dict[str, Any]  # metrics.json as read
    log: list[dict[str, Any]] | None  # log.jsonl's epoch lines; None when the run has no log.jsonl

    @property
    def model(self) -> str:
        """The row the run belongs to: its config's variant (``mdsrec_plus``), else its model's name."""
        config = self.metrics["config"]
        return str(config.get("variant") or config["model"]["name"])

    @property
    def seed(self) -> int:
        return int(self.metrics["config"]["train"]["seed"])

    @property
    def lr(self) -> float | None:
        lr = self.metrics["config"].get("train", {}).get("lr")
        return float(lr) if isinstance(lr, int | float) and not isinstance(lr, bool) else None

    @property
    def dataset(self) -> str:
        name = self.metrics["data"].get("name")
        return str(name) if name else "unnamed"

    @property
    def fingerprint(self) -> str:
        return str(self.metrics["data"]["fingerprint"])

    @property
    def is_seed_run(self) -> bool:
        """A run of a seed table (its folder is ``seed<i>``), not a single run of a screen or sweep."""
        return _SEED_DIR.fullmatch(self.name.rsplit("/", 1)[-1]) is not None

    @property
    def provenance(self) -> dict[str, Any]:
        p = self.metrics.get("provenance")
        return p if isinstance(p, dict) else {}

    @property
    def lacks(self) -> list[str]:
        """The fields of PROVENANCE_FIELDS this record does not carry (all of them for a legacy record)."""
        p = self.provenance
        return [k for k in PROVENANCE_FIELDS if p.get(k) in (None, "", {})]


# ---------------------------------------------------------------------------------------------------------------
# Reading records
# ---------------------------------------------------------------------------------------------------------------


def _field(obj: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted path, or KeyError naming the first missing part."""
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _schema(path: Path, m: Any) -> str:
    if not isinstance(m, dict):
        raise MdsrecError(f"{path}: unknown schema (expected a JSON object, found {type(m).__name__})")
    named = m.get("schema")
    if named is not None:
        if named not in SCHEMAS:
            raise MdsrecError(f"{path}: field schema: unknown schema {named!r} (known: {', '.join(SCHEMAS)})")
        return str(named)
    if "provenance" in m:
        if not isinstance(m["provenance"], dict):
            raise MdsrecError(
                f"{path}: field provenance: unknown schema (provenance must be a JSON object, found "
                f"{type(m['provenance']).__name__})"
            )
        return "current"
    return "legacy"


def check_metrics(path: Path, m: Any) -> str:
    """The schema of a parsed metrics.json (one of SCHEMAS); MdsrecError naming ``path`` and the field when a
    required field is missing or of the wrong type."""
    schema = _schema(path, m)
    for dotted in REQUIRED_FIELDS:
        try:
            value = _field(m, dotted)
        except KeyError:
            raise MdsrecError(f"{path}: missing required field {dotted} ({schema} schema)") from None
        if dotted in ("valid", "test"):
            if not isinstance(value, dict):
                raise MdsrecError(f"{path}: field {dotted} must be an object of metrics")
            for k in METRICS:
                if k not in value:
                    raise MdsrecError(f"{path}: missing required field {dotted}.{k} ({schema} schema)")
                if not _is_number(value[k]):
                    raise MdsrecError(f"{path}: field {dotted}.{k} must be a number, found {value[k]!r}")
        elif dotted in ("config.train.seed", "epochs", "best_epoch"):
            if not _is_int(value):
                raise MdsrecError(f"{path}: field {dotted} must be an integer, found {value!r}")
        elif dotted == "seconds_per_epoch":
            if not _is_number(value):
                raise MdsrecError(f"{path}: field {dotted} must be a number, found {value!r}")
        elif not isinstance(value, str) or not value:
            raise MdsrecError(f"{path}: field {dotted} must be a non-empty string, found {value!r}")
    return schema


def _read_log(path: Path) -> list[dict[str, Any]]:
    lines = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise MdsrecError(f"{path}, line {n}: not JSON ({e})") from e
        if not isinstance(obj, dict):
            raise MdsrecError(f"{path}, line {n}: expected a JSON object per epoch")
        lines.append(obj)
    return lines


def _study_and_name(root: Path, run: Path) -> tuple[str, str]:
    """(study, run name) of a run folder found under the RECORDS path ``root``."""
    rel = run.relative_to(root).parts
    if "runs" in rel:
        i = len(rel) - 1 - rel[::-1].index("runs")  # the innermost ``runs``
        study = "/".join(rel[:i]) if i else (root.resolve().name or str(root))
        return study, "/".join(rel[i + 1 :]) or run.name
    parts = run.resolve().parts  # RECORDS is inside a study's ``runs`` (one run folder, or one model's)
    if "runs" in parts:
        i = len(parts) - 1 - parts[::-1].index("runs")
        return parts[i - 1], "/".join(parts[i + 1 :])
    return root.resolve().name, run.name


def _run_folders(root: Path) -> Iterator[Path]:
    """Every folder under ``root`` inside a ``runs`` folder (or ``root`` itself inside one) with metrics.json."""
    inside_runs = "runs" in root.resolve().parts
    for dirpath, _, filenames in os.walk(root, followlinks=True):
        run = Path(dirpath)
        if METRICS_FILE in filenames and (inside_runs or "runs" in run.relative_to(root).parts):
            yield run


def load_records(paths: Iterable[str | Path]) -> list[Record]:
    """Every run record under each RECORDS path, sorted by (study, run name); a run reached twice (overlapping
    paths, links) is read once. MdsrecError when a path is not a folder, holds no run record, or a record is of
    an unknown schema or lacks a required field (the message names the file and the field)."""
    out: list[Record] = []
    seen: set[Path] = set()
    for root in map(Path, paths):
        if not root.is_dir():
            raise MdsrecError(f"{root}: not a folder of run records")
        found = 0
        for run in _run_folders(root):
            found += 1
            key = (run / METRICS_FILE).resolve()
            if key in seen:
                continue
            seen.add(key)
            mpath = run / METRICS_FILE
            try:
                m = json.loads(mpath.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise MdsrecError(f"{mpath}: not readable JSON ({e})") from e
            schema = check_metrics(mpath, m)
            log = _read_log(run / LOG) if (run / LOG).is_file() else None
            study, name = _study_and_name(root, run)
            out.append(Record(run, study, name, schema, m, log))
        if not found:
            raise MdsrecError(f"{root}: no run record (a folder inside runs/ holding metrics.json)")
    out.sort(key=lambda r: (r.study, r.name, str(r.path)))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Grouping
# ---------------------------------------------------------------------------------------------------------------


def model_key(model: str) -> tuple[int, str]:
    """Sort key of a model name: references, then Table 2's order (a variant right after its model), then the
    others by name."""
    if model in MODEL_ORDER:
        return MODEL_ORDER.index(model), ""
    split = split_variant(model)
    if split is not None and split[0] in MODEL_ORDER:
        return MODEL_ORDER.index(split[0]), model
    return len(MODEL_ORDER), model


@dataclass
class SeedRow:
    model: str
    lr: float | None
    runs: list[Record]  # sorted by training seed


@dataclass
class SeedTable:
    """The seed runs of one study on one data set: one row per (model, learning rate)."""

    dataset: str
    study: str
    rows: list[SeedRow]

    @property
    def records(self) -> list[Record]:
        return [r for row in self.rows for r in row.runs]


def seed_tables(records: list[Record]) -> dict[str, list[SeedTable]]:
    """Data set -> its seed tables (one per study, by study name), rows in model order."""
    groups: dict[tuple[str, str], dict[tuple[str, float | None], list[Record]]] = {}
    for r in records:
        if r.is_seed_run:
            groups.setdefault((r.dataset, r.study), {}).setdefault((r.model, r.lr), []).append(r)
    out: dict[str, list[SeedTable]] = {}
    for (dataset, study), rows in sorted(groups.items()):
        keys = sorted(rows, key=lambda k: (model_key(k[0]), -1.0 if k[1] is None else k[1]))
        table_rows = [SeedRow(m, lr, sorted(rows[(m, lr)], key=lambda r: (r.seed, r.name))) for m, lr in keys]
        out.setdefault(dataset, []).append(SeedTable(dataset, study, table_rows))
    return out


def single_runs(records: list[Record]) -> dict[str, dict[str, list[Record]]]:
    """Data set -> study -> its runs that are not seeds of a seed table, by run name."""
    out: dict[str, dict[str, list[Record]]] = {}
    for r in records:
        if not r.is_seed_run:
            out.setdefault(r.dataset, {}).setdefault(r.study, []).append(r)
    return {
        d: {s: sorted(v, key=lambda r: r.name) for s, v in sorted(by.items())}
        for d, by in sorted(out.items())
    }


def claim_rows(table: SeedTable) -> tuple[list[SeedRow], list[str]]:
    """One row per model for the paper's claims and the bar chart: the row with the most seeds where a model has
    several learning rates (the lowest rate on a tie); and a note per model that had a choice."""
    by_model: dict[str, list[SeedRow]] = {}
    for row in table.rows:
        by_model.setdefault(row.model, []).append(row)
    chosen, notes = [], []
    for model, rows in by_model.items():
        best = max(rows, key=lambda row: (len(row.runs), -(row.lr or 0.0)))
        chosen.append(best)
        if len(rows) > 1:
            notes.append(f"{display_name(model)}: lr {lr_text(best.lr)} (its row with the most seeds)")
    return chosen, notes


def _run_results(rows: list[SeedRow]) -> list[RunResult]:
    return [RunResult(row.model, r.seed, r.metrics, None) for row in rows for r in row.runs]


# ---------------------------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------------------------


def lr_text(lr: float | None) -> str:
    """A learning rate as the tables write it: 1e-3, 5e-4, 1.5e-3; "-" when the record has none."""
    if lr is None:
        return "-"
    if lr == 0:
        return "0"
    mantissa, exponent = f"{lr:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _head(cells: list[str]) -> list[str]:
    return [_row(cells), "|" + "---|" * len(cells)]


def _title(dataset: str) -> str:
    return dataset[:1].upper() + dataset[1:]


def _in_paper(dataset: str, table2: dict[tuple[str, str, str], float]) -> bool:
    return any(k[0] == dataset.lower() for k in table2)


def _schema_summary(records: list[Record]) -> str:
    legacy = sum(r.schema == "legacy" for r in records)
    if legacy == len(records):
        return "legacy schema: no provenance"
    if legacy == 0:
        return "current schema"
    return f"{legacy} of them legacy schema, no provenance"


def _source_line(study: str, records: list[Record]) -> str:
    n = len(records)
    return f"Records: study `{study}`, {n} run{'s' if n != 1 else ''} ({_schema_summary(records)})."


def fingerprint_note(records: list[Record]) -> str:
    """A line saying that ``records`` were trained on more than one data fingerprint ("" when they were not)."""
    by: dict[str, list[Record]] = {}
    for r in records:
        by.setdefault(r.fingerprint, []).append(r)
    if len(by) < 2:
        return ""
    parts = []
    for fp, rs in sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        models = sorted({r.model for r in rs}, key=model_key)
        n = len(rs)
        parts.append(
            f"{fp[:12]} ({n} run{'s' if n != 1 else ''}: {', '.join(display_name(m) for m in models)})"
        )
    return (
        f"**Mixed data:** this table mixes {len(by)} data fingerprints of `{records[0].dataset}`: "
        + "; ".join(parts)
        + ". Runs on different fingerprints were trained on differently prepared data."
    )


def _notes(lines: list[str], *notes: str) -> None:
    for note in notes:
        if note:
            lines += ["", note]


def seed_table_markdown(table: SeedTable, table2: dict[tuple[str, str, str], float]) -> str:
    """Table 2 of one study beside the paper's rows, the seeds of every row and the paper's pairwise claims."""
    in_paper = _in_paper(table.dataset, table2)
    head = ["model", "seeds", "lr", *(SHORT[k] for k in METRICS), "s/epoch", "epochs (best)"]
    if in_paper:
        head += ["paper R@10", "N@10", "R@20", "N@20"]
    lines = [f"### Table 2: `{table.study}`", "", *_head(head)]
    for row in table.rows:
        ms = [r.metrics for r in row.runs]
        cells = [display_name(row.model), str(len(row.runs)), lr_text(row.lr)]
        cells += [mean_std_cell([float(m["test"][k]) for m in ms]) for k in METRICS]
        cells.append(_seconds(statistics.mean(float(m["seconds_per_epoch"]) for m in ms)))
        cells.append(", ".join(epochs_cell(m) for m in ms))
        if in_paper:
            for k in PAPER_METRICS:
                v = table2.get((table.dataset.lower(), k, paper_name(row.model)))
                cells.append("-" if v is None else f"{v:.4f}")
        lines.append(_row(cells))
    _notes(lines, _source_line(table.study, table.records), fingerprint_note(table.records))

    lines += [
        "",
        "Seeds (training seed order):",
        "",
        *_head(["model", "lr", "seeds", "N@20", "R@20", "sd as % of mean"]),
    ]
    for row in table.rows:
        ms = [r.metrics for r in row.runs]
        if len(ms) > 1:
            spread = []
            for k in METRICS:
                mean, sd = mean_std([float(m["test"][k]) for m in ms])
                spread.append(f"{SHORT[k]} {100 * (sd or 0.0) / mean:.1f}%" if mean else f"{SHORT[k]} -")
            spread_cell = ", ".join(spread)
        else:
            spread_cell = "one seed, no spread"
        cells = [
            display_name(row.model),
            lr_text(row.lr),
            ", ".join(str(r.seed) for r in row.runs),
            ", ".join(f"{m['test']['ndcg@20']:.4f}" for m in ms),
            ", ".join(f"{m['test']['recall@20']:.4f}" for m in ms),
            spread_cell,
        ]
        lines.append(_row(cells))

    rows, choice = claim_rows(table)
    claims = comparisons_markdown(_run_results(rows), table.dataset, table2)
    if claims:
        claims = claims.replace(
            "### The paper's comparisons", f"#### The paper's comparisons: `{table.study}`", 1
        )
        lines += ["", claims.rstrip("\n")]
        if choice:
            lines += [
                "",
                "A model with several learning rates enters the comparisons with one: "
                + "; ".join(choice)
                + ".",
            ]
    return "\n".join(lines) + "\n"


# A screen (a run of a study named ``*_screens`` with a run named ``base``) is promoted when its last epoch's
# validation N@20 is at least this much above the base run's and its validation R@20 is not below it
# (benchmarks/mdsrec_screens.sh).
PROMOTION_GAIN = 0.03


def _last_valid(r: Record) -> tuple[float, float] | None:
    """(N@20, R@20) of validation after the run's last epoch (log.jsonl), else None."""
    lines = [x for x in r.log or [] if "valid_ndcg@20" in x and "valid_recall@20" in x]
    return (float(lines[-1]["valid_ndcg@20"]), float(lines[-1]["valid_recall@20"])) if lines else None


def single_runs_markdown(study: str, runs: list[Record]) -> str:
    """One row per run of a study that is not a seed table (screens, ablations, sweeps): validation at the best and
    at the last epoch, test at the best. In a study with a run named ``base`` every other run is set against it:
    in screens (a study named ``*_screens``) at the last epoch's validation, with the promotion rule's verdict;
    elsewhere (ablations: ``base`` is the full model) by its test metrics."""
    base = next((r for r in runs if r.name == "base"), None)
    screens = study.endswith("screens")
    base_last = _last_valid(base) if base is not None and screens else None
    base_test = base.metrics["test"] if base is not None and not screens else None
    head = [
        "run",
        "model",
        "seed",
        "lr",
        "epochs (best)",
        "valid N@20",
        "valid R@20",
        "test N@20",
        "test R@20",
    ]
    head += ["last valid N@20", "last valid R@20"] + (["vs base", "promoted"] if base_last else [])
    head += ["test vs base"] if base_test else []
    lines = [f"### Runs: `{study}`", "", *_head(head)]
    for r in runs:
        m = r.metrics
        last = _last_valid(r)
        cells = [
            f"`{r.name}`",
            display_name(r.model),
            str(r.seed),
            lr_text(r.lr),
            epochs_cell(m),
            f"{m['valid']['ndcg@20']:.4f}",
            f"{m['valid']['recall@20']:.4f}",
            f"{m['test']['ndcg@20']:.4f}",
            f"{m['test']['recall@20']:.4f}",
            *((f"{last[0]:.4f}", f"{last[1]:.4f}") if last else ("-", "-")),
        ]
        if base_last:
            if r is base or last is None:
                cells += ["-", "-"]
            else:
                gain = (last[0] / base_last[0] - 1, last[1] / base_last[1] - 1)
                promoted = gain[0] >= PROMOTION_GAIN and last[1] >= base_last[1]
                cells += [
                    f"N@20 {100 * gain[0]:+.1f}%, R@20 {100 * gain[1]:+.1f}%",
                    "yes" if promoted else "no",
                ]
        if base_test:
            t = m["test"]
            cells.append(
                "-"
                if r is base
                else ", ".join(
                    f"{SHORT[k]} {100 * (t[k] / base_test[k] - 1):+.1f}%" if base_test[k] else f"{SHORT[k]} -"
                    for k in ("recall@20", "ndcg@20")
                )
            )
        lines.append(_row(cells))
    rule = (
        f"A run is promoted when its last epoch's validation N@20 is at least {100 * PROMOTION_GAIN:.0f}% above "
        "`base`'s and its validation R@20 is not below `base`'s."
        if base_last
        else ""
    )
    _notes(lines, rule, _source_line(study, runs), fingerprint_note(runs))
    return "\n".join(lines) + "\n"


def _diagnosis(r: Record) -> dict[str, Any] | None:
    """The test-stage diagnostics of a record (metrics.json ``diagnostics.test``, eval.diagnostics), else None."""
    d = r.metrics.get("diagnostics")
    test = d.get("test") if isinstance(d, dict) else None
    return test if isinstance(test, dict) else None


def diagnostics_markdown(dataset: str, records: list[Record]) -> str:
    """Where the ranking of each run with diagnostics comes from: test N@20 / R@20 of the fused score and of each
    channel alone, then test R@20 by the target's training occurrences (users per bucket in the header)."""
    runs = sorted((r for r in records if _diagnosis(r) is not None), key=lambda r: (r.study, r.name))
    if not runs:
        return ""
    channels = sorted(
        {c for r in runs for c in (_diagnosis(r) or {}).get("channels", {})}, key=lambda c: (c != "id", c)
    )
    lines = [
        f"### Diagnostics: {_title(dataset)}",
        "",
        "Test NDCG@20 / Recall@20 of the ranked (fused) scores and of each channel's scores alone:",
        "",
        *_head(["run", "fused", *channels]),
    ]
    for r in runs:
        ch = (_diagnosis(r) or {}).get("channels", {})
        cells = [
            f"`{r.study}/{r.name}`",
            f"{r.metrics['test']['ndcg@20']:.4f} / {r.metrics['test']['recall@20']:.4f}",
        ]
        for c in channels:
            m = ch.get(c)
            cells.append(
                f"{m['ndcg@20']:.4f} / {m['recall@20']:.4f}"
                if isinstance(m, dict) and "ndcg@20" in m
                else "-"
            )
        lines.append(_row(cells))
    buckets = [label for label, _, _ in POPULARITY_BUCKETS]
    first = (_diagnosis(runs[0]) or {}).get("popularity", {})
    head = [f"{b} ({int(first[b]['users'])} users)" if b in first else b for b in buckets]
    lines += ["", "Test Recall@20 by the target item's training occurrences:", "", *_head(["run", *head])]
    for r in runs:
        pop = (_diagnosis(r) or {}).get("popularity", {})
        cells = [f"`{r.study}/{r.name}`"]
        for b in buckets:
            m = pop.get(b)
            cells.append(f"{m['recall@20']:.4f}" if isinstance(m, dict) and "recall@20" in m else "-")
        lines.append(_row(cells))
    return "\n".join(lines) + "\n"


def _protocol(records: list[Record]) -> str:
    excl = {bool(r.metrics.get("exclude_history")) for r in records}
    how = "excluded" if excl == {True} else "not excluded" if excl == {False} else "excluded in some runs"
    return (
        "Test metrics of the best validation epoch, full ranking over all items, leave-one-out, history items "
        f"{how}; mean ± sample standard deviation over training seeds (one value: one seed). s/epoch is the mean "
        "training time per epoch over the seeds (0 for parameter-free models), on whatever machine each run had."
    )


def _paper_note(dataset: str) -> str:
    note = '"paper" is Table 2 of the MDSRec paper (arXiv 2412.08103) for this data set'
    misprints = [
        f"its {d} {model} {metric}, printed {printed:.4f}, is read as {read:.4f}"
        for (d, metric, model), (printed, read) in sorted(TABLE2_MISPRINTS.items())
        if d.lower() == dataset.lower()
    ]
    return note + ("; " + "; ".join(misprints) if misprints else "") + "."


def _records_section(records: list[Record]) -> str:
    lines = [
        "## Records",
        "",
        *_head(
            [
                "study",
                "data set",
                "runs",
                "legacy",
                "current",
                "data fingerprints",
                "no data.files",
                "no eval_seconds",
            ]
        ),
    ]
    by_study: dict[str, list[Record]] = {}
    for r in records:
        by_study.setdefault(r.study, []).append(r)
    for study, rs in sorted(by_study.items()):
        datasets = sorted({r.dataset for r in rs})
        fps = sorted({r.fingerprint[:12] for r in rs})
        cells = [
            f"`{study}`",
            ", ".join(datasets),
            str(len(rs)),
            str(sum(r.schema == "legacy" for r in rs)),
            str(sum(r.schema == "current" for r in rs)),
            ", ".join(fps),
            str(sum(not isinstance(r.metrics["data"].get("files"), dict) for r in rs)),
            str(sum("eval_seconds" not in r.metrics for r in rs)),
        ]
        lines.append(_row(cells))
    names = list(PROVENANCE_FIELDS.values())
    lacks = ", ".join(names[:-1]) + " or " + names[-1]
    lines += [
        "",
        f'A legacy record (metrics.json without `provenance`) does not say its {lacks}. "no data.files": records '
        "without each data file's hash, so a fingerprint difference cannot be traced to a file; \"no "
        'eval_seconds": records without the validation time per epoch.',
    ]
    current = [r for r in records if r.schema == "current"]
    if current:
        lines += [
            "",
            *_head(
                ["study", "run", "command", "git commit", "versions", "CPU", "threads", "finished", "lacks"]
            ),
        ]
        for r in current:
            p = r.provenance
            versions = p.get("versions")
            vtext = ", ".join(f"{k} {v}" for k, v in versions.items()) if isinstance(versions, dict) else "-"
            cells = [
                f"`{r.study}`",
                f"`{r.name}`",
                f"`{p['command']}`" if p.get("command") else "-",
                str(p.get("git_commit") or "-")[:12],
                vtext or "-",
                str(p.get("cpu") or "-"),
                str(p.get("threads") if p.get("threads") is not None else "-"),
                str(p.get("finished") or "-")[:10],
                ", ".join(PROVENANCE_FIELDS[k] for k in r.lacks) or "-",
            ]
            lines.append(_row(c.replace("|", "/") for c in cells))
    return "\n".join(lines) + "\n"


def render_results(records: list[Record], benchmarks: Sequence[BenchRecord] = ()) -> str:
    """results.md: per data set its seed tables beside the paper, the paper's claims and its other runs; the
    benchmark records' figures; then where the records come from."""
    table2 = load_table2()
    tables = seed_tables(records)
    singles = single_runs(records)
    parts = [
        "# Results\n\n`mdsrec report` writes this page from run records (metrics.json and log.jsonl of finished "
        "runs), study by study: a study is a records folder holding `runs/`. Rows, seeds and claims are computed "
        "from the records alone.\n"
    ]
    for dataset in sorted(set(tables) | set(singles)):
        in_data = [r for r in records if r.dataset == dataset]
        intro = [f"## {_title(dataset)}", "", _protocol(in_data)]
        if dataset in tables and _in_paper(dataset, table2):
            intro[-1] += " " + _paper_note(dataset)
        parts.append("\n".join(intro) + "\n")
        parts += [seed_table_markdown(t, table2) for t in tables.get(dataset, [])]
        parts += [single_runs_markdown(s, rs) for s, rs in singles.get(dataset, {}).items()]
        diagnostics = diagnostics_markdown(dataset, in_data)
        if diagnostics:
            parts.append(diagnostics)
    if benchmarks:
        parts.append(benchmarks_markdown(list(benchmarks)))
    parts.append(_records_section(records))
    return "\n".join(parts)


def render_headline(records: list[Record]) -> str:
    """headline.md: per data set of the paper and seed study, test R@20 and N@20 (mean ± sd over seeds) beside the
    paper's N@20."""
    table2 = load_table2()
    parts = [
        "# Headline results\n\nTest Recall@20 and NDCG@20 of the best validation epoch (full ranking, "
        'leave-one-out), mean ± sample standard deviation over training seeds; "paper N@20" is the MDSRec '
        "paper's Table 2. `mdsrec report` writes these tables from run records; results.md has the full tables.\n"
    ]
    # the paper's data sets only (others, e.g. synthetic studies, are in results.md)
    tables = {d: ts for d, ts in seed_tables(records).items() if _in_paper(d, table2)}
    if not tables:
        parts.append("No seed-table records of the paper's data sets.\n")
    for dataset, ts in tables.items():
        for t in ts:
            lines = [
                f"## {_title(dataset)} (`{t.study}`)",
                "",
                *_head(["model", "seeds", "lr", "R@20", "N@20", "paper N@20"]),
            ]
            for row in t.rows:
                ms = [r.metrics for r in row.runs]
                v = table2.get((dataset.lower(), "ndcg@20", paper_name(row.model)))
                cells = [
                    display_name(row.model),
                    str(len(ms)),
                    lr_text(row.lr),
                    mean_std_cell([float(m["test"]["recall@20"]) for m in ms]),
                    mean_std_cell([float(m["test"]["ndcg@20"]) for m in ms]),
                    "-" if v is None else f"{v:.4f}",
                ]
                lines.append(_row(cells))
            _notes(lines, _source_line(t.study, t.records), fingerprint_note(t.records))
            parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


README_BEGIN = "<!-- report:headline -->"
README_END = "<!-- /report:headline -->"


def readme_block(records: list[Record]) -> str:
    """The README's headline tables: headline.md without its title paragraph, data set headings one level down."""
    body = render_headline(records).split("\n", 1)[1].lstrip("\n")  # drop "# Headline results"
    return (
        "\n".join("#" + line if line.startswith("## ") else line for line in body.splitlines()).strip() + "\n"
    )


def update_readme(path: str | Path, records: list[Record]) -> bool:
    """Replace what stands between README_BEGIN and README_END in PATH by ``readme_block`` (written atomically);
    True when the file changed. An MdsrecError when the markers are missing or out of order."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise MdsrecError(
            f"{path}: no {README_BEGIN} ... {README_END} block to write the headline tables into"
        )
    new = text[: start + len(README_BEGIN)] + "\n" + readme_block(records) + text[end:]
    if new == text:
        return False
    write_text(path, new)
    return True


# ---------------------------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------------------------

_STYLE = """
body { font-family: sans-serif; max-width: 1200px; margin: 1em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; }
th { background: #f0f0f0; }
code { background: #f6f6f6; padding: 0 0.2em; }
figure { margin: 1em 0; }
figcaption { font-size: 0.85em; color: #555; }
img, svg { max-width: 100%; height: auto; }
"""


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]*)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def markdown_html(text: str, demote: int = 0) -> str:
    """The Markdown this module writes (headings, pipe tables, paragraphs, `code`, **bold**) as HTML."""
    out: list[str] = []
    para: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if para:
            out.append("<p>" + _inline(" ".join(para)) + "</p>")
            para.clear()
        if table:
            out.append("<table>")
            for i, cells in enumerate(table):
                tag = "th" if i == 0 else "td"
                out.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
            out.append("</table>")
            table.clear()

    for line in text.splitlines():
        s = line.strip()
        if not s:
            flush()
        elif s.startswith("#"):
            flush()
            level = min(6, len(s) - len(s.lstrip("#")) + demote)
            out.append(f"<h{level}>{_inline(s.lstrip('#').strip())}</h{level}>")
        elif s.startswith("|"):
            if para:
                flush()
            cells = [c.strip() for c in s.strip("|").split("|")]
            if all(set(c) <= {"-", ":"} and c for c in cells):
                continue  # the header separator
            table.append(cells)
        else:
            if table:
                flush()
            para.append(s)
    flush()
    return "\n".join(out)


def _svg(fig: Any) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "mdsrec-report"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]  # no XML prolog or DOCTYPE inside HTML
    # nor namespace declarations: an HTML parser knows svg and xlink:href, and the page names no address at all
    return re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", text, count=2)


def _curves_svg(title: str, runs: list[Record]) -> str:
    """Training loss and validation NDCG@20 per epoch of every run (one line each), as inline SVG."""
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "mdsrec-report"}):
        fig = Figure(figsize=(11.0, 3.8))
        FigureCanvasSVG(fig)
        loss_ax, ndcg_ax = fig.subplots(1, 2)
        models = sorted({r.model for r in runs}, key=model_key)
        colors = matplotlib.colormaps["tab20" if len(models) > 10 else "tab10"]
        styles = ("-", "--", ":", "-.")
        seen: dict[str, int] = {}
        for r in runs:
            log = r.log or []
            k = seen.get(r.model, 0)
            seen[r.model] = k + 1
            color = colors(models.index(r.model) % colors.N)
            label = f"{display_name(r.model)} {r.seed}" if r.is_seed_run else r.name
            for ax, key in ((loss_ax, "train_loss"), (ndcg_ax, "valid_ndcg@20")):
                pts = [
                    (e["epoch"], e[key]) for e in log if _is_number(e.get(key)) and _is_number(e.get("epoch"))
                ]
                if pts:
                    ax.plot(
                        [p[0] for p in pts],
                        [p[1] for p in pts],
                        styles[k % len(styles)],
                        color=color,
                        linewidth=1.2,
                        label=label if ax is ndcg_ax else None,
                    )
        loss_ax.set_title("training loss")
        ndcg_ax.set_title("validation NDCG@20")
        for ax in (loss_ax, ndcg_ax):
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        if ndcg_ax.get_legend_handles_labels()[0]:
            ndcg_ax.legend(
                fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5), ncol=1 + len(runs) // 16
            )
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        return _svg(fig)


def speed_markdown(records: list[Record]) -> str:
    """Seconds per epoch per model and study: mean, range, validation seconds and the CPUs that ran it."""
    lines = [
        "## Speed",
        "",
        "Mean training seconds per epoch of each run, over the runs of a model in a study (min-max), the mean "
        "processor seconds of training per epoch (all threads of the process: a pause of the run or another "
        'process on the cores does not count; "-": the records do not say) and the mean validation seconds per '
        'epoch; the machine is the record\'s CPU ("-": a legacy record does not say).',
        "",
        *_head(
            [
                "data set",
                "study",
                "model",
                "runs",
                "s/epoch",
                "min-max",
                "CPU s/epoch",
                "valid s/epoch",
                "epochs",
                "CPU",
            ]
        ),
    ]
    groups: dict[tuple[str, str, str], list[Record]] = {}
    for r in records:
        groups.setdefault((r.dataset, r.study, r.model), []).append(r)
    for (dataset, study, model), rs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], model_key(kv[0][2]))
    ):
        spe = [float(r.metrics["seconds_per_epoch"]) for r in rs]
        ev = [float(r.metrics["eval_seconds"]) for r in rs if _is_number(r.metrics.get("eval_seconds"))]
        cpu = [
            float(r.metrics["cpu_seconds_per_epoch"])
            for r in rs
            if _is_number(r.metrics.get("cpu_seconds_per_epoch"))
        ]
        cpus = sorted({str(r.provenance["cpu"]) for r in rs if r.provenance.get("cpu")})
        cells = [
            dataset,
            f"`{study}`",
            display_name(model),
            str(len(rs)),
            _seconds(statistics.mean(spe)),
            f"{_seconds(min(spe))}-{_seconds(max(spe))}",
            _seconds(statistics.mean(cpu)) if cpu else "-",
            _seconds(statistics.mean(ev)) if ev else "-",
            str(sum(int(r.metrics["epochs"]) for r in rs)),
            "; ".join(cpus) or "-",
        ]
        lines.append(_row(cells))
    return "\n".join(lines) + "\n"


def render_html(records: list[Record], results_md: str | None = None) -> str:
    """report.html: bar charts of every seed table (mean with sd error bars, the paper's values as markers), the
    epoch curves of every run, a speed table and results.md's tables; no external resources."""
    table2 = load_table2()
    body = ["<h1>MDSRec results report</h1>"]
    for dataset, ts in seed_tables(records).items():
        for t in ts:
            rows, _ = claim_rows(t)
            png = results_png(_run_results(rows), dataset, table2)
            uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            body += [
                f"<h2>{html.escape(_title(dataset))}: <code>{html.escape(t.study)}</code></h2>",
                f'<figure><img alt="test NDCG@20 and Recall@20 of {html.escape(t.study)}" src="{uri}">'
                f"<figcaption>Test NDCG@20 and Recall@20, mean over seeds with sample standard deviation error "
                f"bars; black marks: the paper's Table 2.</figcaption></figure>",
            ]
            body.append(_figure(f"{_title(dataset)}, {t.study}: every seed", t.records))
    for dataset, studies in single_runs(records).items():
        for study, runs in studies.items():
            body.append(f"<h2>{html.escape(_title(dataset))}: <code>{html.escape(study)}</code></h2>")
            body.append(_figure(f"{_title(dataset)}, {study}: every run", runs))
    body.append(markdown_html(speed_markdown(records), demote=0))
    body.append(markdown_html(results_md if results_md is not None else render_results(records), demote=1))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>MDSRec results report</title>\n'
        f"<style>{_STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _figure(title: str, runs: list[Record]) -> str:
    logged = [r for r in runs if r.log]
    missing = [r.name for r in runs if not r.log]
    note = f" No epoch log: {', '.join(missing)}." if missing else ""
    if not logged:
        return f"<p>No epoch log (log.jsonl) in these runs.{html.escape(note)}</p>"
    return (
        f"<figure>{_curves_svg(title, logged)}<figcaption>Training loss and validation NDCG@20 per epoch, one line "
        f"per run (log.jsonl).{html.escape(note)}</figcaption></figure>"
    )


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------


def write_report(
    records: list[Record], out_dir: str | Path, benchmarks: Sequence[BenchRecord] = ()
) -> list[Path]:
    """Write results.md, headline.md and report.html into OUT_DIR, all or none: every file is rendered first,
    then written into a temporary folder beside OUT_DIR that replaces it. OUT_DIR must be absent or hold only
    these files (a report written before), so that no other file is ever replaced. Returns the written paths."""
    out = Path(out_dir)
    if not records:
        raise MdsrecError("no records to report")
    if out.exists():
        if not out.is_dir():
            raise MdsrecError(f"{out}: exists and is not a folder")
        other = sorted(p.name for p in out.iterdir() if p.name not in REPORT_FILES)
        if other:
            raise MdsrecError(
                f"{out}: holds files a report does not write ({', '.join(other[:5])}); choose an empty or new "
                "folder (the report replaces the whole folder)"
            )
    results = render_results(records, benchmarks)
    texts = {
        "results.md": results,
        "headline.md": render_headline(records),
        "report.html": render_html(records, results),
    }
    with staged_directory(out, overwrite=True) as tmp:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # as a folder made by mkdir, not the private temporary one
        for name, text in texts.items():
            write_text(tmp / name, text)
    return [out / name for name in REPORT_FILES]
