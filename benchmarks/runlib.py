"""Shared by the benchmark scripts: train a run directory once, resuming or reusing it the way `mdsrec benchmark`
does (``mdsrec.studies.runs.train_or_reuse``: a finished run is reused only when its config and data set match)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from mdsrec.config import ExperimentConfig, resolve_config
from mdsrec.data.processed import ProcessedDataset, load_processed
from mdsrec.errors import MdsrecError
from mdsrec.rundir import ACTIONS, run_state
from mdsrec.studies.runs import check_finished, train_or_reuse

_DATA: dict[str, ProcessedDataset] = {}


def wait_for_device(device: torch.device) -> None:
    """Block until the work queued on ``device`` is done; call it before reading a clock. GPU kernels run
    asynchronously, so without it a CUDA timing measures kernel launches, not the work. No-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _setup(
    data: str, config: Path | None, model: str | None, sets: list[str]
) -> tuple[ExperimentConfig, ProcessedDataset]:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if data not in _DATA:
        _DATA[data] = load_processed(data)
    return resolve_config(config, ["train.progress=false", *sets], model=model), _DATA[data]


def finished_run(
    run: Path, data: str, config: Path | None, model: str | None, sets: list[str]
) -> dict[str, Any]:
    """metrics.json of a run that finished with this config on this data; MdsrecError otherwise."""
    cfg, dataset = _setup(data, config, model, sets)
    if run_state(run) != "finished":
        raise MdsrecError(f"{run} is not a finished run (no metrics.json)")
    metrics: dict[str, Any] = json.loads((run / "metrics.json").read_text())
    check_finished(run, metrics, cfg, dataset, Path(sys.argv[0]).name)
    return metrics


def ensure_run(
    run: Path, data: str, config: Path | None, model: str | None, sets: list[str]
) -> dict[str, Any]:
    """Train into ``run`` with ``config`` (a YAML file, or None for the defaults), ``model`` and ``--set`` style
    ``sets``; resume it when interrupted; reuse it when finished with the same config on the same data (else an
    MdsrecError says what differs). Returns its metrics.json."""
    cfg, dataset = _setup(data, config, model, sets)
    print(f"{ACTIONS[run_state(run)]}: {run}", flush=True)
    return train_or_reuse(cfg, dataset, run, owner=Path(sys.argv[0]).name).metrics
