"""`mdsrec sweep`: one run per value of a parameter (the paper's Figures 3-4), sweep.csv/.md/.png, finished runs
skipped, interrupted runs resumed, values typed by the config, bad parameters and values refused (tiny, CPU)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest
import yaml

from mdsrec.cli import main
from mdsrec.data.processed import load_processed
from mdsrec.data.synthetic import write_synthetic
from mdsrec.errors import ConfigError, MdsrecError
from mdsrec.studies.sweep import sweep, sweep_configs
from tests.conftest import TINY, TINY_MODEL

SETS = [f"model.{k}={v}" for k, v in TINY_MODEL["mdsrec"].items()] + [
    "train.epochs=1",
    "train.progress=false",
    "data.batch_size=64",
]


@pytest.mark.slow
def test_sweep_cli_runs_writes_skips_and_resumes(tiny_dir, tiny_data, tmp_path, train_calls, capsys) -> None:
    out = tmp_path / "sweep"
    argv = ["sweep", "--data", str(tiny_dir), "--model", "mdsrec", "--param", "model.h", "--values", "0,2"]
    argv += ["--out", str(out), "--seed", "7", "--set", *SETS]
    assert main(argv) == 0
    assert train_calls == [("runs/model.h=0", False), ("runs/model.h=2", False)]
    assert "sweep.png" in capsys.readouterr().out
    for h in (0, 2):
        metrics = json.loads((out / "runs" / f"model.h={h}" / "metrics.json").read_text())
        assert metrics["config"]["model"]["h"] == h and metrics["config"]["train"]["seed"] == 7

    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [r["value"] for r in rows] == ["0", "2"]
    assert list(rows[0])[:2] == ["value", "test_recall@10"]
    assert {
        "test_ndcg@20",
        "valid_ndcg@20",
        "valid_mrr@20",
        "seconds_per_epoch",
        "epochs",
        "best_epoch",
    } <= set(rows[0])
    for r, h in zip(rows, (0, 2), strict=True):
        metrics = json.loads((out / "runs" / f"model.h={h}" / "metrics.json").read_text())
        assert float(r["test_recall@20"]) == pytest.approx(metrics["test"]["recall@20"], abs=1e-6)
        assert r["epochs"] == "1"
    png = (out / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    md = (out / "sweep.md").read_text()
    assert "| model.h |" in md and md.count("\n| ") == 3  # header + 2 rows

    # the same command again: nothing trains; a run left without metrics.json is resumed from last.pt
    train_calls.clear()
    assert main(argv) == 0
    assert train_calls == []
    (out / "runs" / "model.h=2" / "metrics.json").unlink()
    assert main(argv) == 0
    assert train_calls == [("runs/model.h=2", True)]
    # another base config must not reuse the finished runs
    assert main([*argv[: -len(SETS)], *SETS, "train.lr=0.01"]) == 2
    assert "another config" in capsys.readouterr().err


def test_finished_run_on_other_data_is_not_reused(tiny_data, tmp_path, train_calls) -> None:
    out = tmp_path / "s"
    args = ("cooc", "model.window", ["2", "3"], out)
    sets = ["train.progress=false"]
    sweep(tiny_data, *args, sets=sets)
    other = load_processed(write_synthetic(tmp_path / "other", replace(TINY, seed=TINY.seed + 1)))
    assert other.fingerprint != tiny_data.fingerprint and other.name == tiny_data.name
    train_calls.clear()
    with pytest.raises(
        MdsrecError, match=r"runs/model.window=2 finished on another data set.*use another --out"
    ):
        sweep(other, *args, sets=sets)
    assert train_calls == []
    sweep(tiny_data, *args, sets=sets)  # the same data: reused
    assert train_calls == []


def test_finished_run_saved_with_only_the_given_keys_is_reused(tiny_data, tmp_path, train_calls) -> None:
    """A run finished before configs were saved in full (model section: the given keys only) equals the same
    config saved in full; a real difference is named, key by key."""
    out = tmp_path / "s"
    args = ("cooc", "model.window", ["2"], out)
    sweep(tiny_data, *args, sets=["train.progress=false"])
    run = out / "runs" / "model.window=2"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["config"]["model"] == {
        "name": "cooc",
        "distance_weighted": True,
        "window": 2,
        "directed": False,
    }
    metrics["config"]["model"] = {"name": "cooc", "window": 2}  # as an older version saved it
    (run / "metrics.json").write_text(json.dumps(metrics))
    train_calls.clear()
    sweep(tiny_data, *args, sets=["train.progress=false"])
    assert train_calls == []
    with pytest.raises(
        MdsrecError, match=r"model.directed \(False in the run, True given\).*use another --out"
    ):
        sweep(tiny_data, *args, sets=["train.progress=false", "model.directed=true"])
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["directed"] is False


def test_values_take_the_config_type(tiny_data) -> None:
    assert [v for v, _ in sweep_configs("mdsrec", "model.k", ["4", "8"], sets=SETS)] == [4, 8]
    lr = sweep_configs("mdsrec", "train.lr", ["1e-3", "0.01"], sets=SETS)
    assert [v for v, _ in lr] == [0.001, 0.01] and lr[0][1].train.lr == 0.001
    mu = sweep_configs("mdsrec", "model.mu_id", ["16", "0"], sets=SETS)
    assert [v for v, _ in mu] == [16.0, 0.0] and isinstance(mu[0][1].model["mu_id"], float)
    flags = sweep_configs("mdsrec", "model.use_ica", ["true", "false"], sets=SETS)
    assert [v for v, _ in flags] == [True, False]
    # h = 0 with include_self is valid: each item's graph is the item itself
    assert sweep_configs("mdsrec", "model.h", ["0"], sets=SETS)[0][0] == 0


@pytest.mark.parametrize(
    "param, values, match",
    [
        ("model.hh", ["1"], "'hh'"),
        ("model", ["1"], "section.key"),
        ("optim.lr", ["1"], "unknown section 'optim'"),
        ("model.name", ["sasrec"], "'name'"),
        ("model.rho", ["0.5"], "model.rho"),
        ("model.h", ["2.5"], "'2.5' is not a valid model.h"),
        ("model.h", ["-1"], "'-1' is not a valid model.h"),
        ("model.k", ["four"], "'four' is not a valid model.k"),
        ("model.h", ["2", "2"], "repeats"),
        ("model.h", [], "empty"),
    ],
)
def test_bad_param_or_value_is_a_config_error(param, values, match) -> None:
    with pytest.raises(ConfigError, match=match):
        sweep_configs("mdsrec", param, values, sets=SETS)


def test_bad_param_fails_before_training(tiny_data, tmp_path, train_calls) -> None:
    with pytest.raises(ConfigError, match="'hh'"):
        sweep(tiny_data, "mdsrec", "model.hh", ["1", "2"], tmp_path / "x", sets=SETS)
    with pytest.raises(ConfigError, match="'x' is not a valid model.h"):
        sweep(tiny_data, "mdsrec", "model.h", ["1", "x"], tmp_path / "x", sets=SETS)
    assert train_calls == [] and not (tmp_path / "x").exists()


def test_cli_needs_a_model(tiny_dir, tmp_path, capsys) -> None:
    argv = [
        "sweep",
        "--data",
        str(tiny_dir),
        "--param",
        "model.h",
        "--values",
        "1",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert "--model" in capsys.readouterr().err
