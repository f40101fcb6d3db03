"""Benchmark records: the JSON files that the benchmark scripts write with ``--json`` (speed, serving, memory,
image throughput), read by ``mdsrec report`` beside the run records and rendered as tables in results.md.

A benchmark record is a JSON object with the conditions of its measurement (``command``, ``commit``, ``date``; the
scripts also write the machine's cores and load average) and its figures in any of three shapes: ``rows`` (a list of
flat objects: one table row each), an object of scalars (one two-column table), or a list of flat objects under
another key (one table). Under a RECORDS path every ``*.json`` file outside a ``runs/`` folder is one; a file that
is not an object, or lacks ``command``, ``commit`` or ``date``, is an error naming the file and the field.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdsrec.atomic import write_json
from mdsrec.errors import MdsrecError

REQUIRED = ("command", "commit", "date")
CONDITIONS = (
    "command",
    "commit",
    "date",
    "cpu",
    "cores",
    "threads",
    "load_average_before",
    "load_average_after",
)


@dataclass
class BenchRecord:
    path: Path
    name: str  # the file name without .json
    data: dict[str, Any]


def write_benchmark_record(
    path: str | Path, figures: dict[str, Any], load_before: tuple[float, float, float] | None = None
) -> None:
    """Write ``figures`` as a benchmark record at PATH (atomically), with the conditions of the measurement: the
    command line, the commit, the CPU, the cores, the load average before (``load_before``, taken when the script
    started) and now, the date."""
    from mdsrec.training.trainer import git_commit

    write_json(
        path,
        {
            **figures,
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "commit": git_commit(),
            "cpu": platform.processor() or None,
            "cores": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


def load_benchmarks(paths: Iterable[str | Path]) -> list[BenchRecord]:
    """Every benchmark record under each RECORDS path (``*.json`` outside ``runs/`` folders), sorted by name."""
    out: list[BenchRecord] = []
    for root in map(Path, paths):
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if d != "runs")
            for name in sorted(f for f in filenames if f.endswith(".json")):
                path = Path(dirpath) / name
                try:
                    data = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise MdsrecError(f"{path}: not readable JSON ({e})") from e
                if not isinstance(data, dict):
                    raise MdsrecError(
                        f"{path}: a benchmark record is a JSON object, not {type(data).__name__}"
                    )
                for field in REQUIRED:
                    if field not in data:
                        raise MdsrecError(f"{path}: benchmark record without the field {field!r}")
                out.append(BenchRecord(path, path.stem, data))
    out.sort(key=lambda r: (r.name, str(r.path)))
    return out


def _cell(value: Any, column: str = "") -> str:
    if column == "sha256" and isinstance(value, str):
        return f"`{value[:12]}`"
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        return ", ".join(_cell(float(v)) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k} {_cell(v)}" for k, v in value.items())
    return str(value).replace("|", "\\|")


def _table(rows: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c), c) for c in columns) + " |" for row in rows]
    return lines


def _pairs(obj: dict[str, Any]) -> list[str]:
    return ["| field | value |", "|---|---|", *(f"| {k} | {_cell(v)} |" for k, v in obj.items())]


def benchmark_markdown(record: BenchRecord) -> str:
    """One record as a section: its figures as tables, then the conditions it was measured under."""
    d = record.data
    lines = [f"### {record.name}", ""]
    if isinstance(d.get("figure"), str):
        lines += [d["figure"] + ".", ""]
    scalars = {
        k: v
        for k, v in d.items()
        if k not in CONDITIONS and k != "figure" and not isinstance(v, (dict, list))
    }
    for key, value in d.items():
        if key in CONDITIONS or key == "figure" or key in scalars:
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines += ([f"`{key}`:", ""] if key != "rows" else []) + _table(value) + [""]
        elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            lines += [f"`{key}`:", "", *_table([{"": k, **v} for k, v in value.items()]), ""]
        elif isinstance(value, dict):
            lines += [f"`{key}`:", "", *_pairs(value), ""]
        else:
            lines += [f"`{key}`: {_cell(value)}", ""]
    if scalars:
        lines += [*_pairs(scalars), ""]
    conditions = [f"{k} {_cell(d[k])}" for k in CONDITIONS if k != "command" and d.get(k) is not None]
    lines += [f"Measured with `{d['command']}`; " + ", ".join(conditions) + ".", ""]
    return "\n".join(lines)


def benchmarks_markdown(records: list[BenchRecord]) -> str:
    """results.md's benchmark section ('' without benchmark records)."""
    if not records:
        return ""
    intro = (
        "## Benchmarks\n\nFigures of the benchmark scripts that are not training runs (load time, serving, image "
        "throughput), from the JSON records they write with `--json`; each with the command and the conditions it "
        "was measured under.\n"
    )
    return "\n".join([intro, *(benchmark_markdown(r) for r in records)])
