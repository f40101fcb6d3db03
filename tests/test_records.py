"""`mdsrec records`: finished runs' small files saved apart and restored so that benchmark reuses them, only onto
the same data set and never over a run that has results."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace

import pytest

import mdsrec.training.trainer as trainer_mod
from mdsrec.cli import main
from mdsrec.data.synthetic import write_synthetic
from mdsrec.errors import MdsrecError
from mdsrec.studies import records
from mdsrec.studies.benchmark import benchmark
from tests.conftest import TINY

SETS = ["train.progress=false", "train.epochs=1", "sasrec:model.hidden_size=16", "data.batch_size=64"]


def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("a restored run was trained again")

    monkeypatch.setattr(trainer_mod, "train", fail)


@pytest.mark.slow
def test_saved_records_restore_into_runs_that_benchmark_reuses(
    tiny_dir, tiny_data, tmp_path, monkeypatch, capsys
) -> None:
    out = tmp_path / "bench"
    first = benchmark(tiny_data, ["pop", "sasrec"], 1, out, None, SETS)
    # a step that reuses another's run through a symbolic link (as reproduce_table2.sh does) is recorded too
    (out / "runs" / "linked").mkdir()
    os.symlink(out / "runs" / "sasrec" / "seed0", out / "runs" / "linked" / "seed0")
    (out / "runs" / "interrupted" / "seed0").mkdir(parents=True)
    (out / "runs" / "interrupted" / "seed0" / "last.pt").write_bytes(b"not a result")

    rec = tmp_path / "records"
    assert main(["records", "save", str(tmp_path), str(rec)]) == 0
    saved = sorted(p.relative_to(rec).as_posix() for p in rec.rglob("*") if p.is_file())
    assert saved == [
        f"bench/runs/{m}/seed0/{f}"
        for m in ("linked", "pop", "sasrec")
        for f in ("log.jsonl", "metrics.json")
    ]
    again = records.save(tmp_path, rec)  # DEST inside SRC: the records are not taken for runs
    assert again.copied == [] and len(again.unchanged) == 3  # nothing rewritten when nothing changed

    shutil.rmtree(out)  # the machine is gone
    assert main(["records", "restore", str(rec), str(tmp_path), "--data", str(tiny_dir.parent)]) == 0
    run = out / "runs" / "sasrec" / "seed0"
    assert not (run / "best.pt").exists()
    assert "no checkpoints" in json.loads((run / "restored.json").read_text())["note"]
    for cmd in ("evaluate", "recommend --user 1"):  # nothing to load: said so, not "best.pt not found"
        assert main([*cmd.split(), "--run", str(run), "--data", str(tiny_dir)]) == 2
        assert "restored from records" in capsys.readouterr().err
    _no_training(monkeypatch)
    second = benchmark(tiny_data, ["pop", "sasrec"], 1, out, None, SETS)
    assert [r.metrics["test"] for r in second.results] == [r.metrics["test"] for r in first.results]
    assert (out / "results.csv").is_file()


def test_restore_skips_other_data_and_never_overwrites(tiny_dir, tiny_data, tmp_path, capsys) -> None:
    out = tmp_path / "bench"
    benchmark(tiny_data, ["pop"], 1, out, None, ["train.progress=false"])
    rec = tmp_path / "records"
    records.save(out, rec)
    other = write_synthetic(tmp_path / "other" / "tiny", replace(TINY, seed=TINY.seed + 1))

    fresh = tmp_path / "fresh"
    report = records.restore(rec, fresh, [other])  # trained on tiny, not on other
    assert report.copied == [] and not fresh.exists()
    assert "trained on data fingerprint" in report.skipped[0]
    # the same data set name prepared with other bytes: the record's per-file hashes name the files that differ
    differ = "features/style.npy, features/topic.npy, seq_items.npy, seq_offsets.npy"
    assert report.skipped[0].endswith(f"is data set 'synthetic' prepared again; files that differ: {differ}")
    saved = rec / "runs" / "pop" / "seed0" / "metrics.json"
    kept = saved.read_text()
    old_record = json.loads(kept)
    del old_record["data"]["files"]  # a record from before per-file hashes were kept
    saved.write_text(json.dumps(old_record))
    assert "prepared again with different bytes" in records.restore(rec, fresh, [other]).skipped[0]
    saved.write_text(kept)

    metrics = out / "runs" / "pop" / "seed0" / "metrics.json"
    assert records.restore(rec, out, [tiny_dir]).unchanged == ["runs/pop/seed0"]
    edited = json.loads(metrics.read_text())
    edited["test"]["ndcg@20"] = -1.0
    metrics.write_text(json.dumps(edited))
    report = records.restore(rec, out, [tiny_dir])
    assert report.copied == [] and "differs from the record; kept" in report.skipped[0]
    assert json.loads(metrics.read_text())["test"]["ndcg@20"] == -1.0

    assert main(["records", "restore", str(rec), str(fresh), "--data", str(tmp_path / "nowhere")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    with pytest.raises(MdsrecError, match="not a directory"):
        records.save(tmp_path / "nowhere", rec)
