"""Training on several processes (torchrun, gloo, CPU): 2 processes with global batch B give the same per-epoch
training loss and the same validation and test metrics as 1 process with batch B; a killed and resumed 2-process
run ends where an uninterrupted one ends; two "nodes" on loopback train like one.

Tolerances: the loss is compared to rtol 1e-5 (the processes sum their slices' weighted losses in another order
than one process sums its batch, so the last float bits differ); the metrics exactly up to 1e-6 (the same float
noise in the weights could in principle swap two items of nearly equal score; on these tiny runs it does not).
Randomness: dropout is off in these runs (each process draws its own dropout masks, so with dropout a 2-process
run is a different sample of the same objective); MDSRec runs without ICA (its Gumbel noise is drawn per process)
and MISSRec without its diversity term (normalised by the batch's largest interest count, not a per-position mean).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mdsrec.config import resolve_config
from mdsrec.training.trainer import train
from tests.conftest import TINY_MODEL

pytestmark = pytest.mark.slow

OVERRIDES = {
    "sasrec": [],
    "mdsrec": ["model.use_ica=false"],
    "missrec": ["model.gamma=0"],
}


def sets(name: str, epochs: int = 2) -> list[str]:
    tiny = {**TINY_MODEL[name], "dropout": 0.0, "attn_dropout": 0.0}
    return [f"model.{k}={v}" for k, v in tiny.items()] + [
        f"train.epochs={epochs}",
        "train.patience=50",
        "train.progress=false",
        "train.num_threads=1",
        "train.lr=0.003",
        "data.batch_size=64",
        "data.max_len=20",
        *OVERRIDES[name],
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(args: list[str], run: Path, name: str, data: Path, extra: list[str] = (), **popen):
    cmd = [sys.executable, "-m", "torch.distributed.run", *args, "-m", "mdsrec", "train", "--data", str(data)]
    cmd += ["--model", name, "--out", str(run), "--set", *sets(name), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent / "src")}
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )


def finished(proc: subprocess.Popen, timeout: float = 600) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]


def processes_of(run: Path) -> list[int]:
    """Pids of the processes whose command line names ``run``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(run).encode() in cmdline:
                found.append(int(entry.name))
    return found


def epochs(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def assert_same_run(one: Path, two: Path) -> None:
    a, b = epochs(one), epochs(two)
    assert len(a) == len(b) >= 2
    for x, y in zip(a, b, strict=True):
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-5)
        for k, v in x.items():
            if k.startswith("valid_") and isinstance(v, float):
                assert y[k] == pytest.approx(v, abs=1e-6), k
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (one, two))
    for stage in ("valid", "test"):
        for k, v in ma[stage].items():
            assert mb[stage][k] == pytest.approx(v, abs=1e-6), (stage, k)
    assert ma["provenance"]["world_size"] == 1 and ma["provenance"]["backend"] is None
    assert mb["provenance"]["world_size"] == 2 and mb["provenance"]["backend"] == "gloo"
    assert json.loads((two / "run.json").read_text())["world_size"] == 2


@pytest.mark.parametrize("name", ["sasrec", "mdsrec", "missrec"])
def test_two_processes_train_like_one(name: str, tiny_dir: Path, tiny_data, tmp_path: Path) -> None:
    train(resolve_config(None, sets(name), model=name), tiny_data, tmp_path / "one")
    finished(torchrun(["--standalone", "--nproc-per-node", "2"], tmp_path / "two", name, tiny_dir))
    assert_same_run(tmp_path / "one", tmp_path / "two")
    # the time spent communicating is logged per epoch under torchrun, and only there
    assert all(e["comm_seconds"] > 0 for e in epochs(tmp_path / "two"))
    assert all("comm_seconds" not in e for e in epochs(tmp_path / "one"))


def test_two_nodes_on_loopback_train_like_one(tiny_dir: Path, tiny_data, tmp_path: Path) -> None:
    train(resolve_config(None, sets("sasrec"), model="sasrec"), tiny_data, tmp_path / "one")
    port = free_port()
    rdzv = [
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
    ]
    nodes = [torchrun([*rdzv, "--node-rank", str(r)], tmp_path / "two", "sasrec", tiny_dir) for r in range(2)]
    for p in nodes:
        finished(p)
    assert_same_run(tmp_path / "one", tmp_path / "two")


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_result(tiny_dir: Path, tmp_path: Path) -> None:
    long = ["train.epochs=5"]
    finished(torchrun(["--standalone", "--nproc-per-node", "2"], tmp_path / "full", "sasrec", tiny_dir, long))
    run = tmp_path / "cut"
    proc = torchrun(["--standalone", "--nproc-per-node", "2"], run, "sasrec", tiny_dir, long)
    deadline = time.time() + 600
    while time.time() < deadline and not (run / "log.jsonl").is_file():
        time.sleep(0.2)
    for pid in processes_of(
        run
    ):  # the launcher and both workers (torchrun starts them in their own sessions)
        os.kill(pid, signal.SIGKILL)
    proc.communicate()
    assert not (run / "metrics.json").exists()
    # resumed on ONE process: the state is global, so a different number of processes continues it
    finished(
        torchrun(["--standalone", "--nproc-per-node", "1"], run, "sasrec", tiny_dir, [*long, "--resume"])
    )
    a, b = epochs(tmp_path / "full"), epochs(run)
    assert [r["train_loss"] for r in b] == pytest.approx([r["train_loss"] for r in a], rel=1e-5)
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (tmp_path / "full", run))
    assert mb["test"] == pytest.approx(ma["test"], abs=1e-6)
