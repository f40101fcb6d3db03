"""Sensitivity of one config parameter: one run per value (the MDSRec paper's Figures 3-4 for H and k).

For every value v of ``--param section.key`` the run is trained into ``OUT/runs/<param>=<v>`` with the base config
(``--config`` file or the defaults, ``--set`` overrides, ``--seed``) and ``param = v`` on top. Values are read as
YAML and checked against the field's own type (``model.h=5.0`` is refused: h is an integer). As in
``mdsrec benchmark`` a finished run (metrics.json) is skipped and an interrupted one (last.pt only) resumed, so the
same command continues an interrupted sweep; both must have been made with the same config and on the same data set
(``mdsrec.studies.runs``). Then::

    OUT/sweep.csv   one row per value: the value, every test and validation metric, seconds per epoch, epochs,
                    best epoch
    OUT/sweep.md    the same as a markdown table
    OUT/sweep.png   test Recall@20 and NDCG@20 against the value (one panel each)

Every results file is written atomically (``mdsrec.atomic``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mdsrec.atomic import locked_output, remove_stale, write_bytes, write_text
from mdsrec.config import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    TrainConfig,
    parse_override,
    resolve_config,
)
from mdsrec.data.processed import ProcessedDataset
from mdsrec.distributed import writes
from mdsrec.errors import ConfigError
from mdsrec.models import REGISTRY, check_experiment
from mdsrec.rundir import ACTIONS, run_state
from mdsrec.studies.runs import train_or_reuse

log = logging.getLogger(__name__)

SECTIONS: dict[str, type] = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig}
SCALARS = (bool, int, float, str)
PLOT_METRICS = ("recall@20", "ndcg@20")


@dataclass
class SweepPoint:
    value: Any  # the parameter's value, of the field's type
    run_dir: Path
    metrics: dict[str, Any]  # the run's metrics.json
    skipped: bool  # finished before this call


def param_type(param: str, model: str) -> Any:
    """The annotation of ``param`` (``section.key``) in the model's or the section's config dataclass; ConfigError
    for an unknown or non-scalar parameter."""
    parts = param.split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--param {param!r} must be section.key, e.g. model.h")
    section, key = parts
    if section == "model":
        if model not in REGISTRY:
            raise ConfigError(f"unknown model {model!r} (known: {', '.join(sorted(REGISTRY))})")
        cls = REGISTRY[model][1]
    elif section in SECTIONS:
        cls = SECTIONS[section]
    else:
        raise ConfigError(f"--param {param!r}: unknown section {section!r} (known: model, data, train, eval)")
    names = [f.name for f in fields(cls)]
    if key not in names or (section == "model" and key == "name"):
        known = ", ".join(n for n in names if not (section == "model" and n == "name"))
        raise ConfigError(f"--param {param!r}: {cls.__name__} has no field {key!r} (known: {known})")
    tp = typing.get_type_hints(cls)[key]
    arms = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    if not all(a in SCALARS for a in arms):
        raise ConfigError(f"--param {param!r} is of type {tp}: a sweep takes a number, a bool or a string")
    return tp


def value_label(value: Any) -> str:
    """The value as written in directory names, the CSV and the plot: YAML spelling for bools and null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def sweep_configs(
    model: str | None,
    param: str,
    values: list[str],
    config_file: str | Path | None = None,
    sets: list[str] | None = None,
    seed: int | None = None,
) -> list[tuple[Any, ExperimentConfig]]:
    """One resolved config per value, in the given order; every value is checked before anything trains."""
    sets = list(sets or [])
    if seed is not None:
        sets.append(f"train.seed={seed}")
    base = resolve_config(config_file, sets, model=model)
    param_type(param, base.model_name)
    section, key = param.split(".")
    if not values:
        raise ConfigError(f"--values for {param} is empty")
    out: list[tuple[Any, ExperimentConfig]] = []
    labels: dict[str, str] = {}
    for raw in values:
        parse_override(f"{param}={raw}")  # the value must be valid YAML
        try:
            cfg = resolve_config(config_file, [*sets, f"{param}={raw}"], model=model)
            parsed = check_experiment(cfg)  # validates the model section, field types included
        except ConfigError as e:
            raise ConfigError(f"--values: {raw!r} is not a valid {param}: {e}") from e
        value = getattr(parsed, key) if section == "model" else getattr(getattr(cfg, section), key)
        if section == "model":
            cfg.model[key] = value  # the coerced value (e.g. 16 -> 16.0 for a float), as the trainer saves it
        label = value_label(value)
        if "/" in label or label.startswith(".") or not label.strip():
            raise ConfigError(f"--values: {raw!r} cannot name a run directory ({param}={label})")
        if label in labels:
            raise ConfigError(f"--values: {raw!r} repeats {labels[label]!r} ({param}={label})")
        labels[label] = raw
        out.append((value, cfg))
    return out


RESULT_FILES = ("sweep.csv", "sweep.md", "sweep.png")


def sweep(
    data: ProcessedDataset,
    model: str | None,
    param: str,
    values: list[str],
    out: str | Path,
    config_file: str | Path | None = None,
    sets: list[str] | None = None,
    seed: int | None = None,
) -> list[SweepPoint]:
    """Train (or skip, or resume) one run per value, then write OUT/sweep.{csv,md,png}; holds OUT's lock
    (``locked_output``: a second sweep, benchmark or records restore into OUT fails at once)."""
    out = Path(out)
    plan = sweep_configs(model, param, values, config_file, sets, seed)
    # under torchrun process 0 alone locks OUT and writes the results files
    with locked_output(out, "sweep") if writes() else contextlib.nullcontext():
        if writes():
            remove_stale(out, RESULT_FILES)  # temporary names a killed sweep left
        points = []
        for i, (value, cfg) in enumerate(plan, 1):
            run = out / "runs" / f"{param}={value_label(value)}"
            log.info(
                "[%d/%d] %s=%s: %s %s", i, len(plan), param, value_label(value), ACTIONS[run_state(run)], run
            )
            outcome = train_or_reuse(cfg, data, run, owner="sweep")
            points.append(SweepPoint(value, run, outcome.metrics, outcome.state == "finished"))
        if not writes():
            return points
        write_text(out / "sweep.csv", sweep_csv(points))
        write_text(out / "sweep.md", sweep_markdown(points, param, data))
        write_bytes(out / "sweep.png", sweep_png(points, param, data.name))
    return points


# ---------------------------------------------------------------------------------------------------------------
# Results files
# ---------------------------------------------------------------------------------------------------------------


def _metric_keys(points: list[SweepPoint], stage: str) -> list[str]:
    keys: list[str] = []
    for p in points:
        keys += [k for k in p.metrics[stage] if k not in keys]
    return keys


def sweep_csv(points: list[SweepPoint]) -> str:
    test_keys, valid_keys = _metric_keys(points, "test"), _metric_keys(points, "valid")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["value", *(f"test_{k}" for k in test_keys), *(f"valid_{k}" for k in valid_keys)]
        + ["seconds_per_epoch", "epochs", "best_epoch"]
    )
    for p in points:
        m = p.metrics
        w.writerow(
            [value_label(p.value)]
            + [f"{m['test'][k]:.6f}" if k in m["test"] else "" for k in test_keys]
            + [f"{m['valid'][k]:.6f}" if k in m["valid"] else "" for k in valid_keys]
            + [m["seconds_per_epoch"], m["epochs"], m["best_epoch"]]
        )
    return buf.getvalue()


def _label(key: str) -> str:
    return key.replace("recall", "R").replace("ndcg", "N").replace("mrr", "MRR")


def sweep_markdown(points: list[SweepPoint], param: str, data: ProcessedDataset) -> str:
    test_keys = _metric_keys(points, "test")
    valid_metric = points[0].metrics["config"]["train"]["valid_metric"] if points else "ndcg@20"
    head = [param, *(f"test {_label(k)}" for k in test_keys), f"valid {_label(valid_metric)}"]
    head += ["s/epoch", "epochs (best)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = max(points, key=lambda p: p.metrics["valid"].get(valid_metric, float("-inf"))) if points else None
    for p in points:
        m = p.metrics
        cells = [value_label(p.value) + (" (best valid)" if p is best and len(points) > 1 else "")]
        cells += [f"{m['test'][k]:.4f}" if k in m["test"] else "-" for k in test_keys]
        cells.append(f"{m['valid'][valid_metric]:.4f}" if valid_metric in m["valid"] else "-")
        cells += [f"{float(m['seconds_per_epoch']):.2f}", f"{m['epochs']} ({m['best_epoch']})"]
        lines.append("| " + " | ".join(cells) + " |")
    model = points[0].metrics["config"]["model"]["name"] if points else "?"
    notes = [
        f"# Sweep of {param}: {model} on {data.name}",
        "",
        f"Data: `{data.path}` (fingerprint {data.fingerprint[:12]}). One run per value, everything else fixed; test "
        "metrics of the best validation epoch (full ranking, leave-one-out). Runs: `runs/<param>=<value>`.",
    ]
    return "\n".join(notes) + "\n\n" + "\n".join(lines) + "\n"


def sweep_png(points: list[SweepPoint], param: str, dataset: str) -> bytes:
    """Test Recall@20 and NDCG@20 (or the largest cut-off the runs have) against the value, one panel each, evenly
    spaced values as in the paper's Figures 3-4; PNG bytes."""
    # The Agg canvas directly, as benchmark.py: no pyplot, no global backend switch, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = _metric_keys(points, "test")
    wanted = [k for k in PLOT_METRICS if k in keys]
    if not wanted:  # eval.ks without 20: the largest cut-off
        ks = sorted({int(k.split("@")[1]) for k in keys})
        wanted = [f"recall@{ks[-1]}", f"ndcg@{ks[-1]}"] if ks else []
    fig = Figure(figsize=(3.2 * max(len(wanted), 1) + 0.6, 3.2), dpi=120)
    FigureCanvasAgg(fig)
    xs = list(range(len(points)))
    labels = [value_label(p.value) for p in points]
    for j, key in enumerate(wanted):
        ax = fig.add_subplot(1, len(wanted), j + 1)
        ys = [p.metrics["test"].get(key, float("nan")) for p in points]
        ax.plot(xs, ys, marker="o", color=("tab:blue", "tab:orange")[j % 2])
        ax.set_xticks(xs, labels)
        ax.set_xlabel(param)
        ax.set_title(key.replace("ndcg", "NDCG").replace("recall", "Recall"))
        ax.grid(alpha=0.3)
    fig.suptitle(f"{dataset}: test metrics against {param}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
