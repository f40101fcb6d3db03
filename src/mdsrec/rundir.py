"""The run directory: every file a run writes, the state it is in, and where its data set is.

One run of ``mdsrec train`` (or one step of ``benchmark``/``sweep``) owns one directory::

    RUN_DIR/config.yaml     CONFIG      the resolved config (every model field)
    RUN_DIR/run.json        RUN_INFO    data path, name and fingerprint, mdsrec version, commit, start time
    RUN_DIR/last.pt         LAST        the full state after the last finished epoch (resume)
    RUN_DIR/best.pt         BEST        the model of the best validation epoch
    RUN_DIR/best.pt.sha256.json         a checkpoint's sha256 and size, written after it (``checkpoint_record``)
    RUN_DIR/log.jsonl       LOG         one line per epoch
    RUN_DIR/metrics.json    METRICS     valid/test metrics of the best epoch, config, data, provenance
    RUN_DIR/.lock           LOCK        held (flock) while a process trains into the directory
    RUN_DIR/benchmark.json  WALL        wall seconds of the benchmark/sweep call that finished the run
    RUN_DIR/diverged.json   DIVERGED    a searched value whose loss became non-finite before any evaluation
    RUN_DIR/restored.json   RESTORED    restored from records: metrics and log only, no checkpoints

The trainer writes every file above through temporary names (``.NAME.tmp-<pid>``, ``mdsrec.atomic``); a train
that starts in the directory removes those of its own files (``TRAINER_FILES``) that a dead trainer left.

A run is *finished* (metrics.json), *interrupted* (last.pt without metrics.json) or *new*. This module only names
and reads; the trainer writes the checkpoints and results, ``studies.records`` the restored marker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from mdsrec.errors import MdsrecError

CONFIG = "config.yaml"
RUN_INFO = "run.json"
LAST = "last.pt"
BEST = "best.pt"
LOG = "log.jsonl"
METRICS = "metrics.json"
LOCK = ".lock"
# Wall seconds of the call that finished the run; the file name predates mdsrec sweep.
WALL = "benchmark.json"
DIVERGED = "diverged.json"
RESTORED = "restored.json"
CHECKPOINTS = {"best": BEST, "last": LAST}
CHECKPOINT_RECORD_SUFFIX = ".sha256.json"

# The files that make a record of a run, the first that exists deciding what the run is: finished or diverged.
RESULT_FILES = (METRICS, DIVERGED)
RECORD_FILES = (*RESULT_FILES, LOG)

RunState = Literal["finished", "interrupted", "new"]
# What a call does with a run in each state, as the commands log it; and what a dry run says it would do.
ACTIONS: dict[str, str] = {
    "finished": "finished already, skipped",
    "interrupted": "resuming",
    "new": "training",
}
DRY_ACTIONS: dict[str, str] = {
    "finished": "finished, would be reused",
    "interrupted": "would resume",
    "new": "would train",
}


def run_state(run: Path) -> RunState:
    """finished (metrics.json), interrupted (last.pt without metrics.json) or new."""
    if (run / METRICS).is_file():
        return "finished"
    if (run / LAST).is_file():
        return "interrupted"
    return "new"


def checkpoint_path(run: str | Path, which: str) -> Path:
    """RUN_DIR/best.pt or RUN_DIR/last.pt."""
    if which not in CHECKPOINTS:
        raise MdsrecError(f"checkpoint ({which!r}) must be one of {', '.join(CHECKPOINTS)}")
    return Path(run) / CHECKPOINTS[which]


def checkpoint_record(checkpoint: str | Path) -> Path:
    """CHECKPOINT.sha256.json, beside any checkpoint (a run's or ``init_from``'s): the sha256 the checkpoint had
    when mdsrec wrote it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + CHECKPOINT_RECORD_SUFFIX)


# The files ``mdsrec train`` writes (under the run lock); only their temporary names are its to clean up.
TRAINER_FILES = (
    CONFIG,
    RUN_INFO,
    LAST,
    BEST,
    LAST + CHECKPOINT_RECORD_SUFFIX,
    BEST + CHECKPOINT_RECORD_SUFFIX,
    LOG,
    METRICS,
)


def is_run_directory(path: str | Path) -> bool:
    """Whether PATH is a run directory (holds a config, run.json, result or restored marker)."""
    path = Path(path)
    return path.is_dir() and any(
        (path / n).is_file() for n in (CONFIG, RUN_INFO, METRICS, DIVERGED, RESTORED)
    )


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object written by a run; an MdsrecError naming the file when it is not one."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MdsrecError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(obj, dict):
        raise MdsrecError(f"{path}: expected a JSON object")
    return obj


def read_metrics(run: Path) -> dict[str, Any]:
    """RUN_DIR/metrics.json."""
    return read_json(run / METRICS)


def run_fingerprint(run: Path, metrics: dict[str, Any]) -> str | None:
    """The data fingerprint a finished run was trained on: metrics.json's, else run.json's, else None."""
    fp = metrics.get("data", {}).get("fingerprint")
    if fp is None and (run / RUN_INFO).is_file():
        fp = read_json(run / RUN_INFO).get("data_fingerprint")
    return None if fp is None else str(fp)


def check_not_restored(run: str | Path) -> None:
    """MdsrecError when RUN was restored from records, so has no checkpoints to evaluate, explain or serve."""
    marker = Path(run) / RESTORED
    if marker.is_file():
        raise MdsrecError(
            f"{run} was restored from records ({marker}): it holds the run's metrics and epoch log but no "
            "checkpoints; train it again into another directory to evaluate, explain or serve it"
        )


def run_data_path(run: Path, data: str | None) -> str:
    """``data`` if given, otherwise the processed data directory recorded in RUN_DIR/run.json (an error for a run
    restored from records, which has no checkpoints)."""
    check_not_restored(run)
    if data:
        return data
    info = run / RUN_INFO
    if not info.is_file():
        raise MdsrecError(f"{info} not found: pass --data")
    return str(read_json(info)["data_path"])
