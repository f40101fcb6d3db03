"""Shared by the benchmark scripts: run `mdsrec train` once per run directory, resuming or skipping it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def ensure_run(run: Path, data: str, model_args: list[str], sets: list[str]) -> dict[str, Any]:
    """Train into ``run`` unless it finished already (resume an interrupted one); return its metrics.json."""
    if not (run / "metrics.json").is_file():
        cmd = [
            sys.executable,
            "-m",
            "mdsrec",
            "train",
            "--data",
            data,
            *model_args,
            "--out",
            str(run),
            "--set",
            *sets,
        ]
        if (run / "last.pt").is_file():
            cmd.append("--resume")
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return dict(json.loads((run / "metrics.json").read_text()))
