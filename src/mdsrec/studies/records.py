"""Small records of finished benchmark runs, to keep them when the machine that trained them is gone.

A run directory holds checkpoints (``best.pt``, ``last.pt``: megabytes) and the few kilobytes that say what the run
was and what it measured: ``metrics.json`` (config, data fingerprint, validation and test metrics, seconds per epoch)
and ``log.jsonl`` (one line per epoch). ``save`` copies the small files of every finished run (and the
``diverged.json`` marker of a searched value that diverged) under SRC into DEST, keeping the relative paths;
DEST is small enough to commit. ``restore`` copies them back into a benchmark output folder, so that
``mdsrec benchmark`` reuses those runs (after its usual config and data check) instead of training them again.

A restored run has no checkpoints: its metrics and epoch log count in results files, but ``evaluate``,
``recommend`` and ``serve`` need it trained again. ``restored.json`` in the run directory says so. A record is
restored only when its data fingerprint is one of the given processed data sets' (a set prepared differently is
another data set), and never over a run directory that already has results.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mdsrec.atomic import locked_output, remove_stale, write_bytes, write_json
from mdsrec.data.processed import MANIFEST, read_manifest
from mdsrec.errors import MdsrecError
from mdsrec.rundir import LOG, RECORD_FILES, RESTORED, RESULT_FILES, read_json


@dataclass
class RecordsReport:
    copied: list[str] = field(default_factory=list)  # run paths (relative) written
    unchanged: list[str] = field(default_factory=list)  # already there with the same content
    skipped: list[str] = field(default_factory=list)  # "path: why"


def _result_file(run: Path) -> Path | None:
    for name in RESULT_FILES:
        if (run / name).is_file():
            return run / name
    return None


def _runs(root: Path) -> list[Path]:
    """Every run directory under ROOT (one inside a ``runs`` folder) with a result file, sorted; symbolic links
    (a step reusing another's run) are followed, so a linked run is recorded under each path that reaches it."""
    if not root.is_dir():
        raise MdsrecError(f"{root}: not a directory")
    found = []
    for dirpath, _, filenames in os.walk(root, followlinks=True):
        run = Path(dirpath)
        if "runs" in run.relative_to(root).parts and any(name in filenames for name in RESULT_FILES):
            found.append(run)
    return sorted(found)


def save(src: str | Path, dest: str | Path) -> RecordsReport:
    """Copy the small files of every finished (or diverged) run under SRC into DEST/<same relative path>, holding
    DEST's lock (``locked_output``)."""
    with locked_output(dest, "records save", "wait for it to end or save into another folder"):
        return _save(Path(src), Path(dest))


def _save(src: Path, dest: Path) -> RecordsReport:
    report = RecordsReport()
    inside = dest.resolve()
    for run in _runs(src):
        if run.resolve().is_relative_to(inside):
            continue  # DEST inside SRC: its own records are not runs
        rel = run.relative_to(src)
        changed = False
        for name in RECORD_FILES:
            if not (run / name).is_file():
                continue
            data = (run / name).read_bytes()
            target = dest / rel / name
            if target.is_file() and target.read_bytes() == data:
                continue
            write_bytes(target, data)
            changed = True
        (report.copied if changed else report.unchanged).append(str(rel))
    return report


def data_manifests(paths: list[str | Path]) -> dict[str, tuple[Path, dict[str, Any]]]:
    """fingerprint -> (processed data directory, its manifest), for each PATH that is one (holds manifest.json) or
    holds some."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for p in map(Path, paths):
        dirs = [p] if (p / MANIFEST).is_file() else sorted(d for d in p.glob("*") if (d / MANIFEST).is_file())
        if not dirs:
            raise MdsrecError(f"{p}: neither a processed data directory nor a folder of them (no {MANIFEST})")
        for d in dirs:
            manifest = read_manifest(d)
            found[str(manifest["fingerprint"])] = (d, manifest)
    return found


def _other_data(saved: dict[str, Any], given_data: dict[str, tuple[Path, dict[str, Any]]]) -> str:
    """Why a record's data is none of the given sets: its fingerprint against theirs, and where a given set has the
    record's data set name, the files that differ (records since per-file hashes were kept) or what usually does."""
    fp = str(saved.get("fingerprint", ""))
    given = ", ".join(f"{k[:12]} ({d})" for k, (d, _) in given_data.items())
    why = f"trained on data fingerprint {fp[:12] or '(none)'}, none of the given data's: {given}"
    name = saved.get("name")
    for d, manifest in given_data.values():
        if name is None or manifest.get("name") != name:
            continue
        files = saved.get("files")
        if isinstance(files, dict) and files:
            ours = manifest.get("files", {})
            differ = sorted(f for f in set(files) | set(ours) if files.get(f) != ours.get(f))
            why += f". {d} is data set {name!r} prepared again; files that differ: {', '.join(differ)}"
        else:
            why += (
                f". {d} is data set {name!r} prepared again with different bytes (text encoded in float32, the "
                "default before 2026-12-02, differs in the last bits from one CPU or library version to another; "
                "see the manifests' precision and encoded_with)"
            )
        break
    return why


def restore(records: str | Path, out: str | Path, data: list[str | Path]) -> RecordsReport:
    """Copy each record under RECORDS into OUT/<same relative path> when its data fingerprint is one of DATA's and
    the run directory there has no result yet; a copied run gets ``restored.json`` (no checkpoints). Holds OUT's
    lock (``locked_output``), the one a benchmark or sweep into OUT holds."""
    given_data = data_manifests(data)  # each manifest read once, not once per skipped record
    with locked_output(out, "records restore", "wait for it to end or restore into another folder"):
        return _restore(Path(records), Path(out), given_data)


def _restore(records: Path, out: Path, given_data: dict[str, tuple[Path, dict[str, Any]]]) -> RecordsReport:
    report = RecordsReport()
    for rec in _runs(records):
        rel = rec.relative_to(records)
        result = _result_file(rec)
        assert result is not None
        saved = read_json(result)
        fp = str(saved.get("data", {}).get("fingerprint", ""))
        if fp not in given_data:
            report.skipped.append(f"{rel}: {_other_data(saved.get('data', {}), given_data)}")
            continue
        target = out / rel
        there = _result_file(target)
        if there is not None:
            if there.name == result.name and there.read_bytes() == result.read_bytes():
                report.unchanged.append(str(rel))
            else:
                report.skipped.append(f"{rel}: {there} exists and differs from the record; kept")
            continue
        remove_stale(target, (LOG, RESTORED, *RESULT_FILES))  # what a killed restore left
        if (rec / LOG).is_file():
            write_bytes(target / LOG, (rec / LOG).read_bytes())
        write_json(
            target / RESTORED,
            {
                "from": str(rec.resolve()),
                "data": str(given_data[fp][0]),
                "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "note": "metrics and epoch log only, no checkpoints: train the run again to evaluate or serve it",
            },
        )
        # the result last, so an interrupted restore never leaves a result without its log and marker
        write_bytes(target / result.name, result.read_bytes())
        report.copied.append(str(rel))
    return report
