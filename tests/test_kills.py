"""Writers killed with SIGKILL at several points (in a subprocess): prepare leaves nothing or a complete data set,
never a half-written one; train leaves its last finished epoch; and the next run of the same command removes what
the killed one left (its own temporary names only) and finishes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mdsrec.data.prepare import prepare
from mdsrec.data.processed import load_processed
from mdsrec.errors import ConfigError
from mdsrec.training import trainer as trainer_mod
from tests.test_prepare import s3rec_spec, write_s3rec_source, write_spec
from tests.test_training import SETS, tiny_cfg

# Runs one mdsrec command in a subprocess that SIGKILLs itself at POINT.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    point, argv = sys.argv[1], sys.argv[2:]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "reading":  # while the input files are read, before anything is staged
        from mdsrec.data import formats
        formats.read_item_attributes = die
    elif point == "staging":  # inside the staging directory, after its first file
        real_save, calls = np.save, []
        def save(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                die()
            return real_save(*args, **kwargs)
        np.save = save
    elif point == "rename":  # the staged data set is complete; killed before it is renamed into place (with
        real_replace = os.replace  # --overwrite: after the old data set was moved aside)
        def replace(src, dst):
            if ".tmp-" in os.fspath(src) and os.path.isdir(src):
                die()
            return real_replace(src, dst)
        os.replace = replace
    elif point.startswith("checkpoint"):  # the n-th checkpoint write, half-way through its temporary file
        import torch
        real, calls, n = torch.save, [], int(point[len("checkpoint"):])
        def save(obj, f, *args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                f.write(b"half a checkpoint")
                f.flush()
                die()
            return real(obj, f, *args, **kwargs)
        torch.save = save
    from mdsrec.cli import main
    sys.exit(main(argv))
    """
)


def killed(point: str, argv: list[str]) -> None:
    """Run ``mdsrec ARGV`` in a subprocess killed at POINT; it must have died by SIGKILL."""
    p = subprocess.run(
        [sys.executable, "-c", KILLER, point, *argv], capture_output=True, text=True, timeout=600
    )
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])


@pytest.mark.parametrize("point", ["reading", "staging", "rename"])
def test_prepare_killed_leaves_nothing_and_the_next_prepare_cleans_up(tmp_path: Path, point: str) -> None:
    spec = write_spec(write_s3rec_source(tmp_path / "raw"), s3rec_spec())
    out = tmp_path / "proc" / "out"
    killed(point, ["prepare", str(spec), "--out", str(out), "--no-progress"])
    assert not out.exists()  # nothing at --out: no half-written data set
    left = sorted(os.listdir(out.parent)) if out.parent.exists() else []
    assert all(name.startswith(".out.") for name in left), left  # only its lock file or staging
    prepare(spec, out=out, progress=False)  # the same command again
    assert os.listdir(out.parent) == ["out"] and load_processed(out).num_items == 4


def test_prepare_overwrite_killed_between_its_renames_keeps_the_previous_data_set(tmp_path: Path) -> None:
    root = write_s3rec_source(tmp_path / "raw")
    spec = write_spec(root, s3rec_spec())
    out = tmp_path / "proc" / "out"
    prepare(spec, out=out, progress=False)
    before = load_processed(out).fingerprint
    (root / "seq.txt").write_text(
        "u1 10 2 3 1 2\nu2 2 3 10\nu4 3 1 2 10 2\n"
    )  # new data: another fingerprint
    killed("rename", ["prepare", str(spec), "--out", str(out), "--overwrite", "--no-progress"])
    assert not out.exists()  # the old data set moved aside, the new one staged: neither is at --out
    with pytest.raises(ConfigError, match="already exists"):  # the next writer put the previous one back
        prepare(spec, out=out, progress=False)
    assert os.listdir(out.parent) == ["out"] and load_processed(out).fingerprint == before
    prepare(spec, out=out, overwrite=True, progress=False)
    assert os.listdir(out.parent) == ["out"] and load_processed(out).fingerprint != before


def test_train_killed_while_writing_a_checkpoint_resumes_and_removes_the_temporary_file(
    tiny_dir: Path, tiny_data, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    argv = ["train", "--data", str(tiny_dir), "--model", "sasrec", "--out", str(run), "--set", *SETS]
    argv += ["train.epochs=2", *[f"model.{k}={v}" for k, v in tiny_cfg(2).model.items() if k != "name"]]
    killed("checkpoint3", argv)  # epoch 1 wrote last.pt and best.pt; killed writing epoch 2's last.pt
    stale = [p.name for p in run.iterdir() if p.name.startswith(".last.pt.tmp-")]
    assert len(stale) == 1 and (run / stale[0]).read_bytes() == b"half a checkpoint"
    metrics = trainer_mod.train(None, tiny_data, run, resume=True)
    assert metrics["epochs"] == 2
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]  # the dead trainer's file is gone
