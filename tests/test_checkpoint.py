"""Verified checkpoints: every checkpoint's sha256 is recorded beside it when it is written and checked when it is
read, a checkpoint of another model or config than its run's config.yaml is refused, and so are NaN weights; no
command ranks with a damaged or foreign checkpoint, and each says so in one line."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from mdsrec.cli import main
from mdsrec.errors import MdsrecError
from mdsrec.rundir import checkpoint_record
from mdsrec.training import checkpoint as ck
from mdsrec.training import trainer as trainer_mod
from tests.test_training import tiny_cfg

COMMANDS = {
    "evaluate": ["evaluate"],
    "recommend": ["recommend", "--user", "u0"],
    "explain": ["explain", "--user", "u0"],
}


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished SASRec run and a finished GRU4Rec run on the same data (one epoch each)."""
    root = tmp_path_factory.mktemp("runs")
    for model in ("sasrec", "gru4rec"):
        trainer_mod.train(tiny_cfg(1, model), tiny_data, root / model)
    return {m: root / m for m in ("sasrec", "gru4rec")}


@pytest.fixture
def run(runs: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of the SASRec run to damage."""
    return Path(shutil.copytree(runs["sasrec"], tmp_path / "run"))


def one_error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI; it must exit 2 with exactly one line on stderr, ``error: ...``, and print no results."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if " INFO " not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


def test_each_checkpoint_has_a_record_of_its_sha256(runs: dict[str, Path]) -> None:
    from mdsrec.atomic import sha256_file

    for name in ("best.pt", "last.pt"):
        path = runs["sasrec"] / name
        entry = json.loads(checkpoint_record(path).read_text())
        assert entry["file"] == name and entry["sha256"] == sha256_file(path)
        assert entry["bytes"] == path.stat().st_size


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("flipped", [16, 64])
def test_flipped_bytes_in_best_pt_are_one_clean_error(run: Path, command: str, flipped: int, capsys) -> None:
    path = run / "best.pt"
    raw = bytearray(path.read_bytes())
    start = len(raw) // 2  # inside the tensor data: without the record, torch would load it
    for i in range(start, start + flipped):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    line = one_error_line([*COMMANDS[command][:1], "--run", str(run), *COMMANDS[command][1:]], capsys)
    assert f"checkpoint {path} is damaged or was replaced" in line and "best.pt.sha256.json" in line


@pytest.mark.parametrize("command", list(COMMANDS))
def test_another_runs_checkpoint_is_refused(runs: dict[str, Path], run: Path, command: str, capsys) -> None:
    shutil.copy(runs["gru4rec"] / "best.pt", run / "best.pt")  # the file alone: its bytes are not this run's
    argv = [*COMMANDS[command][:1], "--run", str(run), *COMMANDS[command][1:]]
    assert "is damaged or was replaced" in one_error_line(argv, capsys)
    shutil.copy(
        checkpoint_record(runs["gru4rec"] / "best.pt"), checkpoint_record(run / "best.pt")
    )  # and its record
    line = one_error_line(argv, capsys)
    assert (
        f"checkpoint {run / 'best.pt'} holds a gru4rec model, but the run's config.yaml says sasrec" in line
    )


def test_a_checkpoint_of_another_config_is_refused(run: Path, tiny_data) -> None:
    state = ck.load_checkpoint(run / "best.pt")
    state["config"]["train"]["seed"] += 1  # the same model, trained with another seed: another run
    ck.save_checkpoint(run / "best.pt", state)
    with pytest.raises(
        MdsrecError, match=r"written with another config than the run's config.yaml \(differs in train.seed\)"
    ):
        trainer_mod.load_run(run, tiny_data)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load(run: Path, bad: float, capsys) -> None:
    state = ck.load_checkpoint(run / "best.pt")
    name = next(k for k, v in state["model_state"].items() if v.is_floating_point())
    state["model_state"][name].view(-1)[3] = bad
    ck.save_checkpoint(run / "best.pt", state)  # recorded: the bytes are what was written
    line = one_error_line(["recommend", "--run", str(run), "--user", "u0"], capsys)
    assert f"parameter {name} holds 1 NaN or infinite value(s)" in line


def test_a_checkpoint_without_a_record_is_read_with_a_warning(run: Path, tiny_data, caplog) -> None:
    checkpoint_record(run / "best.pt").unlink()  # as written before records existed
    with caplog.at_level(logging.WARNING, logger="mdsrec.training.checkpoint"):
        exp = trainer_mod.load_run(run, tiny_data)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "has no best.pt.sha256.json" in warnings[0] and "\n" not in warnings[0]
    assert exp.model.name == "sasrec"


def test_a_kill_between_the_record_and_the_rename_leaves_a_pair_that_verifies(run: Path, monkeypatch) -> None:
    path = run / "best.pt"
    before = ck.load_checkpoint(path)
    changed = {**before, "epoch": 99}
    real = ck.torch_save

    def killed_before_rename(obj, p, before_replace=None):
        def record_then_die(tmp: Path) -> None:
            assert before_replace is not None
            before_replace(tmp)  # the record of the new checkpoint is written ...
            raise KeyboardInterrupt  # ... and the process dies before the rename

        real(obj, p, record_then_die)

    monkeypatch.setattr(ck, "torch_save", killed_before_rename)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(path, changed)
    monkeypatch.setattr(ck, "torch_save", real)
    assert ck.load_checkpoint(path)["epoch"] == before["epoch"]  # the previous checkpoint, still accepted
    ck.save_checkpoint(path, changed)
    assert ck.load_checkpoint(path)["epoch"] == 99


def test_resume_rebuilds_a_damaged_best_pt_from_last_pt(tiny_data, tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer_mod.train(tiny_cfg(1), tiny_data, run)
    (run / "metrics.json").unlink()  # interrupted during the final evaluation, best.pt damaged
    raw = bytearray((run / "best.pt").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (run / "best.pt").write_bytes(bytes(raw))
    metrics = trainer_mod.train(None, tiny_data, run, resume=True)
    assert metrics["best_epoch"] == 1 and ck.load_checkpoint(run / "best.pt")["epoch"] == 1


def test_a_crafted_model_state_is_refused(run: Path) -> None:
    state = ck.load_checkpoint(run / "best.pt")
    state["model_state"]["item_embedding.weight"] = [1, 2, 3]  # not a tensor
    ck.save_checkpoint(run / "best.pt", state)
    with pytest.raises(MdsrecError, match=r"model_state\['item_embedding.weight'\] is not a tensor"):
        ck.load_checkpoint(run / "best.pt")
