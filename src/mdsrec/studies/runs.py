"""Run directories that a command trains into one after another (``mdsrec benchmark``, ``mdsrec sweep``): the one
place that decides whether a run is trained, resumed or reused.

A run directory is

* finished (metrics.json): reused, but only when it was made with the same config (both compared in full form,
  ``mdsrec.models.full_config``: a run saved with only the given model keys equals one saved with every key) and
  on the same data set (by fingerprint); otherwise an MdsrecError names the run and what differs;
* interrupted (last.pt, no metrics.json): resumed; the trainer checks the config and the checkpoint's fingerprint;
* new: trained.

A call that trains or resumes a run leaves its wall-clock seconds in RUN_DIR/benchmark.json (``rundir.WALL``), so a
later call that reuses the run can still report them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdsrec.atomic import write_json
from mdsrec.config import ExperimentConfig, build_config, config_differences
from mdsrec.data.processed import ProcessedDataset
from mdsrec.distributed import writes
from mdsrec.errors import ConfigError, MdsrecError
from mdsrec.models import full_config
from mdsrec.rundir import WALL, RunState, read_json, read_metrics, run_fingerprint, run_state
from mdsrec.training import trainer


@dataclass
class RunOutcome:
    metrics: dict[str, Any]  # the run's metrics.json
    state: RunState  # what the run directory held before this call
    wall_seconds: float | None  # of the call that finished the run; None when unknown (finished elsewhere)


def check_finished(
    run: Path, metrics: dict[str, Any], cfg: ExperimentConfig, data: ProcessedDataset, owner: str
) -> None:
    """MdsrecError unless the finished run was made with ``cfg`` (full forms compared) on ``data``."""
    try:
        saved = full_config(build_config(metrics.get("config") or {})).to_dict()
    except ConfigError as e:
        raise MdsrecError(
            f"{run} finished with a config this version cannot read ({e}): use another --out"
        ) from e
    diff = config_differences(saved, full_config(cfg).to_dict())
    if diff:
        raise MdsrecError(
            f"{run} finished with another config than this {owner}'s (changed --set, --seed or config file?), "
            f"in {', '.join(diff)}: use another --out"
        )
    trained_on = run_fingerprint(run, metrics)
    if trained_on != data.fingerprint:
        raise MdsrecError(
            f"{run} finished on another data set (fingerprint {str(trained_on)[:12]}) than this {owner}'s "
            f"{data.path or data.name} (fingerprint {data.fingerprint[:12]}): use another --out"
        )


def train_or_reuse(cfg: ExperimentConfig, data: ProcessedDataset, run: Path, *, owner: str) -> RunOutcome:
    """Reuse a finished run (checked by ``check_finished``), resume an interrupted one or train a new one.

    ``owner`` names the command in error messages ("benchmark", "sweep")."""
    state = run_state(run)
    if state == "finished":
        metrics = read_metrics(run)
        check_finished(run, metrics, cfg, data, owner)
        record = run / WALL
        wall = read_json(record).get("wall_seconds") if record.is_file() else None
        return RunOutcome(metrics, state, wall)
    resume = state == "interrupted"
    t0 = time.perf_counter()
    metrics = trainer.train(cfg, data, run, resume=resume)
    wall = round(time.perf_counter() - t0, 3)
    if writes():
        write_json(run / WALL, {"wall_seconds": wall, "resumed": resume})
    return RunOutcome(metrics, state, wall)
