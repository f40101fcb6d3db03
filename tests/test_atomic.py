"""Exclusive outputs and what a dead writer leaves: every command that writes an output folder holds an OS lock
on it (a second writer fails at once with one line naming the folder), ``--overwrite`` replaces only an mdsrec
data set or run, and a writer that starts removes only its own kind's temporary names left by a dead process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from mdsrec.atomic import locked_output, output_lock, remove_stale, staged_directory
from mdsrec.cli import main
from mdsrec.data.prepare import prepare
from mdsrec.data.processed import load_processed
from mdsrec.data.synthetic import SyntheticConfig, write_synthetic
from mdsrec.errors import MdsrecError


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """Another process holding the lock of TMP/out (as any mdsrec writer of it would), until the test ends."""
    out = tmp_path / "out"
    script = textwrap.dedent(
        f"""
        import sys
        from mdsrec.atomic import locked_output
        with locked_output({str(out)!r}):
            print("held", flush=True)
            sys.stdin.readline()
        """
    )
    p = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    try:
        yield out, p.pid
    finally:
        assert p.stdin is not None
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(timeout=30)


def test_every_output_writer_fails_at_once_while_another_holds_the_output(
    holder: tuple[Path, int], tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, pid = holder
    records = tmp_path / "records"
    records.mkdir()
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\nsequences: {format: s3rec, path: seq.txt}\n")
    (tmp_path / "seq.txt").write_text("u1 1 2 3\n")
    commands = {
        "prepare": ["prepare", str(spec), "--out", str(out)],
        "synthetic": ["synthetic", "--out", str(out), "--users", "20", "--items", "10"],
        "quickstart": ["quickstart", "--out", str(out), "--epochs", "1"],
        "benchmark": ["benchmark", "--data", str(tiny_dir), "--models", "pop", "--seeds", "1", "--out", str(out)],
        "sweep": ["sweep", "--data", str(tiny_dir), "--model", "cooc", "--param", "model.window", "--values",
                  "2,3", "--out", str(out)],
        "records restore": ["records", "restore", str(records), str(out), "--data", str(tiny_dir)],
    }  # fmt: skip
    for name, argv in commands.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: "), (name, err)
        assert f"{out} is in use by another mdsrec process (pid {pid})" in err, (name, err)
        assert not out.exists(), f"{name} wrote into an output another process holds"
    assert (
        main(["benchmark", "--data", str(tiny_dir), "--models", "pop", "--out", str(out), "--dry-run"]) == 0
    )
    capsys.readouterr()  # a dry run writes nothing and takes no lock: it can read a running benchmark


def test_a_lock_file_left_by_a_killed_writer_does_not_block(tmp_path: Path) -> None:
    out = tmp_path / "data"
    lock = output_lock(out)
    assert lock == tmp_path / ".data.lock"
    lock.write_text(f"{dead_pid()}\n")  # a writer killed while it held the lock leaves the file, not the lock
    write_synthetic(out, SyntheticConfig(num_users=20, num_items=10, feature_dim=4))
    assert load_processed(out).num_users == 20
    assert sorted(os.listdir(tmp_path)) == ["data"]  # the lock file goes with the writer that held it last


def test_a_process_reenters_its_own_lock(tmp_path: Path) -> None:
    out = tmp_path / "x"
    with locked_output(out), locked_output(out), staged_directory(out) as tmp:  # prepare -> write_processed
        (tmp / "f").write_text("1")
    assert (out / "f").read_text() == "1" and sorted(os.listdir(tmp_path)) == ["x"]


def test_overwrite_replaces_only_an_mdsrec_data_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    argv = ["synthetic", "--out", str(mine), "--users", "20", "--items", "10", "--overwrite"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{mine} is not an mdsrec data set" in err
    assert os.listdir(mine) == ["thesis.tex"] and sorted(os.listdir(tmp_path)) == ["mine"]
    data = tmp_path / "data"
    assert main(["synthetic", "--out", str(data), "--users", "20", "--items", "10"]) == 0
    assert main(["synthetic", "--out", str(data), "--users", "30", "--items", "10", "--overwrite"]) == 0
    assert load_processed(data).num_users == 30


def test_quickstart_replaces_only_its_own_data_and_run_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "qs"
    (out / "runs" / "sasrec").mkdir(parents=True)
    (out / "runs" / "sasrec" / "notes.txt").write_text("mine")
    assert main(["quickstart", "--out", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a run directory" in err
    assert (out / "runs" / "sasrec" / "notes.txt").read_text() == "mine" and not (out / "data").exists()


def test_remove_stale_removes_only_dead_writers_own_temporary_names(tmp_path: Path) -> None:
    dead = dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            f".last.pt.tmp-{dead}": "dead trainer's checkpoint",
            f".last.pt.tmp-{sleeper.pid}": "a live writer's checkpoint",
            f".notes.txt.tmp-{dead}": "not a name of this writer",
            "last.pt": "the checkpoint",
            ".last.pt.bak": "the user's",
        }
        for name, text in names.items():
            (tmp_path / name).write_text(text)
        staging = tmp_path / f".data.tmp-{dead}-abc123"
        staging.mkdir()
        (staging / "seq_items.npy").write_bytes(b"x" * 100)
        removed = remove_stale(tmp_path, ["last.pt", "data"])
        assert sorted(p.name for p in removed) == sorted([f".last.pt.tmp-{dead}", staging.name])
        left = sorted(os.listdir(tmp_path))
        assert left == sorted(n for n in names if n != f".last.pt.tmp-{dead}")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_writer_killed_between_its_two_renames_gets_the_previous_output_back(tmp_path: Path) -> None:
    out = tmp_path / "data"
    write_synthetic(out, SyntheticConfig(num_users=20, num_items=10, feature_dim=4))
    before = load_processed(out).fingerprint
    # what a prepare --overwrite killed after moving the old data set aside, before renaming the new one in, leaves
    os.replace(out, tmp_path / f".data.old-{dead_pid()}")
    half = tmp_path / f".data.tmp-{dead_pid()}-zz"
    half.mkdir()
    with locked_output(out):  # the next writer of OUT
        pass
    assert sorted(os.listdir(tmp_path)) == ["data"] and load_processed(out).fingerprint == before


def test_lock_message_names_the_command_and_the_options_it_has(
    holder: tuple[Path, int], tiny_dir: Path
) -> None:
    from mdsrec.studies import records

    out, _ = holder
    with pytest.raises(
        MdsrecError, match=r"only one records restore may write it .* restore into another folder"
    ):
        records.restore(out.parent, out, [tiny_dir])
    with pytest.raises(
        MdsrecError, match=r"only one prepare may write it at a time; wait for it to end or choose "
    ):
        prepare("sports", out=out, source=out.parent)
