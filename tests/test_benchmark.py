"""`mdsrec benchmark`: one run per (model, seed), results.csv/.md/.png, finished runs skipped, interrupted runs
resumed, frozen configs and per-model overrides, the paper's Table 2 beside ours."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

import mdsrec.training.trainer as trainer_mod
from mdsrec.cli import main
from mdsrec.data.processed import load_processed
from mdsrec.data.synthetic import write_synthetic
from mdsrec.errors import ConfigError, MdsrecError, TrainingDiverged
from mdsrec.studies.benchmark import benchmark, split_overrides
from mdsrec.studies.paper import load_table2
from tests.conftest import TINY

TINY_SETS = [
    "train.progress=false",
    "train.epochs=2",
    "train.patience=50",
    "data.batch_size=64",
    "train.lr=0.01",
    "model.hidden_size=16",
    "model.dropout=0.1",
    "sasrec:model.inner_size=32",
    "sasrec:model.attn_dropout=0.1",
    "gru4rec:model.embedding_size=16",
]


def frozen_configs(tmp_path: Path, name: str, text: str) -> Path:
    """A frozen configs folder holding synthetic/NAME.yaml with ``text``."""
    configs = tmp_path / "configs"
    (configs / "synthetic").mkdir(parents=True)
    (configs / "synthetic" / f"{name}.yaml").write_text(text)
    return configs


def bench_argv(data: Path, models: str, seeds: int, out: Path, configs: Path, *extra: str) -> list[str]:
    """`mdsrec benchmark` arguments: the required ones, then ``extra`` (``--set ...``, ``--search ...``)."""
    return [
        "benchmark",
        "--data",
        str(data),
        "--models",
        models,
        "--seeds",
        str(seeds),
        "--out",
        str(out),
        "--configs",
        str(configs),
        *extra,
    ]


def test_benchmark_cli_writes_results_skips_and_resumes(
    tiny_dir, tiny_data, tmp_path, train_calls, capsys
) -> None:
    out = tmp_path / "bench"
    argv = bench_argv(tiny_dir, "sasrec,gru4rec", 2, out, tmp_path / "no-configs-here", "--set", *TINY_SETS)
    (tmp_path / "no-configs-here").mkdir()
    assert main(argv) == 0
    assert sorted(train_calls) == [
        ("gru4rec/seed0", False),
        ("gru4rec/seed1", False),
        ("sasrec/seed0", False),
        ("sasrec/seed1", False),
    ]
    printed = capsys.readouterr().out
    assert "results.png" in printed and "±" in printed

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4
    assert [(r["model"], r["seed"]) for r in rows] == [
        ("sasrec", "42"),
        ("sasrec", "43"),
        ("gru4rec", "42"),
        ("gru4rec", "43"),
    ]
    assert list(rows[0]) == [
        "model",
        "seed",
        "recall@10",
        "ndcg@10",
        "recall@20",
        "ndcg@20",
        "mrr@20",
        "seconds_per_epoch",
        "epochs",
        "best_epoch",
        "epoch_seconds_total",
        "wall_seconds",
        "searched",
    ]
    assert all(r["searched"] == "" for r in rows)  # no --search
    for r in rows:
        m = json.loads(
            (out / "runs" / r["model"] / f"seed{int(r['seed']) - 42}" / "metrics.json").read_text()
        )
        assert float(r["ndcg@20"]) == pytest.approx(m["test"]["ndcg@20"], abs=1e-6)
        assert r["epochs"] == "2" and float(r["wall_seconds"]) > 0
        assert m["config"]["train"]["seed"] == int(r["seed"])
    seed0 = json.loads((out / "runs/sasrec/seed0/metrics.json").read_text())["test"]
    seed1 = json.loads((out / "runs/sasrec/seed1/metrics.json").read_text())["test"]
    assert seed0 != seed1  # different seeds really trained differently

    table = (out / "results.md").read_text().split("\n\n")[-1]
    assert "| SASRec | 2 | " in table and "| GRU4Rec | 2 | " in table and table.count("±") == 10
    assert "paper" not in table  # the synthetic data set is not one of the paper's
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000

    # Rerun: every run is finished, nothing trains, finished files untouched.
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/metrics.json")}
    train_calls.clear()
    assert main(argv) == 0
    assert train_calls == []
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/metrics.json")} == mtimes
    assert len(list(csv.DictReader((out / "results.csv").open()))) == 4

    # A run directory with last.pt but no metrics.json (interrupted) is resumed, to the same result.
    run = out / "runs" / "gru4rec" / "seed1"
    before = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").unlink()
    assert main(argv) == 0
    assert train_calls == [("gru4rec/seed1", True)]
    assert json.loads((run / "metrics.json").read_text())["test"] == before["test"]
    # Its epoch seconds still cover both epochs, trained by the earlier call; wall seconds only this call's.
    log_lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    total = sum(x["train_seconds"] + x["eval_seconds"] for x in log_lines)
    row = next(
        r
        for r in csv.DictReader((out / "results.csv").open())
        if r["model"] == "gru4rec" and r["seed"] == "43"
    )
    assert len(log_lines) == 2 and float(row["epoch_seconds_total"]) == pytest.approx(total, abs=0.1)
    assert float(row["wall_seconds"]) > 0

    # A finished run made under another config is not silently reused.
    with pytest.raises(MdsrecError, match="another config"):
        benchmark(
            tiny_data,
            ["gru4rec"],
            1,
            out,
            None,
            [s for s in TINY_SETS if not s.startswith("sasrec:")] + ["train.lr=0.5"],
        )
    assert not list(out.glob(".*tmp*")) and not list(out.glob("runs/*/*/.*tmp*"))


def test_finished_run_on_other_data_is_not_reused(tiny_data, tmp_path) -> None:
    sets = ["train.progress=false"]
    out = tmp_path / "b"
    benchmark(tiny_data, ["pop"], 1, out, None, sets)
    other = load_processed(write_synthetic(tmp_path / "other", replace(TINY, seed=TINY.seed + 1)))
    assert other.fingerprint != tiny_data.fingerprint and other.name == tiny_data.name
    with pytest.raises(MdsrecError, match=r"runs/pop/seed0 finished on another data set.*use another --out"):
        benchmark(other, ["pop"], 1, out, None, sets)
    benchmark(tiny_data, ["pop"], 1, out, None, sets)  # the same data: reused


def test_operational_keys_do_not_block_reuse(tiny_data, tmp_path, train_calls) -> None:
    """A progress bar, a thread count or an eval batch size does not change what a run learned: the run is reused."""
    out = tmp_path / "b"
    benchmark(tiny_data, ["pop"], 1, out, None, ["train.progress=false"])
    train_calls.clear()
    sets = ["train.progress=true", "train.num_threads=1", "data.eval_batch_size=7"]
    benchmark(tiny_data, ["pop"], 1, out, None, sets)
    assert train_calls == []
    with pytest.raises(MdsrecError, match=r"train\.seed \(42 in the run, 43 given\)"):
        benchmark(tiny_data, ["pop"], 1, out, None, [*sets, "train.seed=43"])


def test_reference_models_run_once_and_frozen_configs_apply(tiny_data, tmp_path, train_calls) -> None:
    configs = frozen_configs(
        tmp_path,
        "cooc",
        "model: {name: cooc, window: 2, directed: true}\ntrain: {seed: 7, progress: false}\n",
    )
    results = benchmark(
        tiny_data, ["pop", "cooc"], 3, tmp_path / "b", configs, ["train.progress=false"]
    ).results
    assert [(r.model, r.seed) for r in results] == [("pop", 42), ("cooc", 7)]  # one seed each
    assert sorted(train_calls) == [("cooc/seed0", False), ("pop/seed0", False)]
    assert results[1].metrics["config"]["model"]["window"] == 2
    assert all(r.metrics["epochs"] == 0 and r.metrics["seconds_per_epoch"] == 0 for r in results)
    md = (tmp_path / "b" / "results.md").read_text()
    assert "| pop | 1 | " in md and "±" not in md.split("\n\n")[-1]  # one run: no spread to show


def test_table2_is_package_data_and_shown_for_the_papers_data_sets(tiny_data, tmp_path) -> None:
    t = load_table2()
    assert t[("scientific", "ndcg@20", "MDSRec")] == 0.0873
    assert t[("sports", "recall@10", "SASRec")] == 0.0423
    assert t[("scientific", "recall@20", "GRU4Rec")] == 0.0959  # the published 0.9590 is a misprint
    assert len(t) == 5 * 4 * 10
    benchmark(tiny_data, ["pop"], 1, tmp_path / "b", None, ["train.progress=false"], dataset="sports")
    md = (tmp_path / "b" / "results.md").read_text()
    assert "paper R@10" in md and "| pop | 1 | " in md  # our reference beside an empty paper row
    assert md.splitlines()[-1].endswith("| - | - | - | - |")


def test_override_scoping_and_errors(tiny_data, tmp_path) -> None:
    got = split_overrides(
        ["train.lr=0.1", "sasrec:model.num_heads=4", "train.device=cuda:0"], ["sasrec", "pop"]
    )
    assert got == {
        "sasrec": ["train.lr=0.1", "model.num_heads=4", "train.device=cuda:0"],
        "pop": ["train.lr=0.1", "train.device=cuda:0"],
    }
    with pytest.raises(ConfigError, match="not in --models"):
        split_overrides(["gru4rec:model.dropout=0.1"], ["sasrec"])
    with pytest.raises(ConfigError, match="unknown model"):
        benchmark(tiny_data, ["nope"], 1, tmp_path / "b")
    with pytest.raises(ConfigError, match="unknown key"):  # a bad override fails before anything trains
        benchmark(tiny_data, ["pop"], 1, tmp_path / "b", None, ["model.hidden_size=16"])
    assert not (tmp_path / "b").exists()


def test_search_chooses_on_validation_and_trains_the_other_seeds_with_it(
    tiny_data, tmp_path, train_calls, capsys
) -> None:
    out = tmp_path / "b"
    sets = [s for s in TINY_SETS if not s.startswith(("gru4rec:", "train.lr=", "model."))]
    sets += ["sasrec:model.hidden_size=16", "sasrec:model.dropout=0.1"]
    search = ["--search", "train.lr=0.01,0.0001"]
    argv = bench_argv(tiny_data.path, "sasrec,pop", 2, out, tmp_path / "none", *search, "--set", *sets)
    tmp_path.joinpath("none").mkdir()
    assert main([*argv, "--dry-run"]) == 0  # says what it would do, trains and writes nothing
    assert train_calls == [] and not out.exists()
    assert main(argv) == 0

    valid = {
        lr: json.loads((out / f"runs/sasrec/train.lr={lr}/seed0/metrics.json").read_text())["valid"][
            "ndcg@20"
        ]
        for lr in ("0.01", "0.0001")
    }
    assert valid["0.01"] != valid["0.0001"]
    chosen = max(valid, key=lambda lr: valid[lr])
    other = "0.0001" if chosen == "0.01" else "0.01"
    assert (out / f"runs/sasrec/train.lr={chosen}/seed1/metrics.json").is_file()  # seed 1 with the chosen lr
    assert not (out / f"runs/sasrec/train.lr={other}/seed1").exists()
    seed1 = json.loads((out / f"runs/sasrec/train.lr={chosen}/seed1/metrics.json").read_text())["config"][
        "train"
    ]
    assert seed1["lr"] == float(chosen) and seed1["seed"] == 43
    assert (out / "runs/pop/seed0/metrics.json").is_file()  # parameter-free: not searched
    assert sorted(train_calls) == sorted(
        [
            ("train.lr=0.01/seed0", False),
            ("train.lr=0.0001/seed0", False),
            (f"train.lr={chosen}/seed1", False),
            ("pop/seed0", False),
        ]
    )

    rows = list(csv.DictReader((out / "search.csv").open()))
    assert [(r["model"], r["setting"], r["chosen"]) for r in rows] == [
        ("sasrec", "train.lr=0.01", str(chosen == "0.01")),
        ("sasrec", "train.lr=0.0001", str(chosen == "0.0001")),
    ]
    assert {r["setting"]: float(r["valid_ndcg@20"]) for r in rows} == pytest.approx(
        {f"train.lr={k}": v for k, v in valid.items()}, abs=1e-6
    )
    for r in rows:  # every epoch's training plus validation seconds, as logged by the run itself
        logged = [json.loads(x) for x in (out / f"runs/sasrec/{r['setting']}/seed0/log.jsonl").open()]
        total = sum(e["train_seconds"] + e["eval_seconds"] for e in logged)
        assert float(r["epoch_seconds_total"]) == pytest.approx(total, abs=0.1)
    results = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["model"], r["seed"], r["searched"]) for r in results] == [
        ("sasrec", "42", f"train.lr={chosen}"),
        ("sasrec", "43", f"train.lr={chosen}"),
        ("pop", "42", ""),
    ]
    md = (out / "results.md").read_text()
    assert "train.lr (chosen)" in md and f"| SASRec | 2 | {chosen} |" in md and "| pop | 1 | - |" in md

    train_calls.clear()  # rerun: everything reused, the same choice
    assert main(argv) == 0
    assert train_calls == []
    assert list(csv.DictReader((out / "results.csv").open())) == results

    # A dry run over the finished benchmark finds every run, checks it, trains nothing and writes nothing.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    args = ([s for s in sets if ":" not in s], dict(search="train.lr=0.01,0.0001", dry_run=True))
    found = benchmark(
        tiny_data, ["sasrec"], 2, out, None, args[0] + [s for s in sets if ":" in s], **args[1]
    ).results
    assert [(r.searched, r.seed) for r in found] == [(f"train.lr={chosen}", 42), (f"train.lr={chosen}", 43)]
    assert train_calls == [] and {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    with pytest.raises(MdsrecError, match="another config"):  # a finished run that would not be reused
        benchmark(
            tiny_data,
            ["sasrec"],
            2,
            out,
            None,
            [*sets, "train.patience=7"],
            search="train.lr=0.01,0.0001",
            dry_run=True,
        )

    # A dry run over the partly finished benchmark prints the table of what is finished, and writes nothing.
    shutil.rmtree(out / f"runs/sasrec/train.lr={chosen}/seed1")
    (out / "results.md").unlink()
    capsys.readouterr()
    assert main([*argv, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert (
        "partial table" in printed
        and f"| SASRec | 1 | {chosen} |" in printed
        and "| pop | 1 | - |" in printed
    )
    assert not (out / "results.md").exists() and not (out / f"runs/sasrec/train.lr={chosen}/seed1").exists()


@pytest.mark.parametrize(
    ("search", "extra", "match"),
    [
        ("train.lr=0.01", [], "at least two values"),
        ("train.lr", [], "at least two values"),
        ("train.seed=1,2", [], "seeds are --seeds"),
        ("train.lr=0.01,abc", [], "not a valid train.lr"),
        ("model.nope=1,2", [], "has no field 'nope'"),
        ("train.lr=0.01,0.1", ["sasrec:train.lr=0.5"], "both searched"),
    ],
)
def test_search_errors_come_before_any_training(tiny_data, tmp_path, search, extra, match) -> None:
    out = tmp_path / "b"
    with pytest.raises(ConfigError, match=match):
        benchmark(tiny_data, ["sasrec"], 1, out, None, ["train.progress=false", *extra], search=search)
    assert not out.exists()


def test_a_searched_value_that_diverges_at_once_is_left_out(
    tiny_data, tmp_path, monkeypatch, train_calls, capsys
) -> None:
    """lr >= 0.5 'diverges' in epoch 1 (the trainer's TrainingDiverged): the search marks it, chooses among the
    others, and a rerun does not train it again; a model whose every value diverges is left out, the queue goes on;
    a later seed that diverges is an error naming the run; any other FloatingPointError is not a divergence."""
    real = trainer_mod.train

    def diverging(cfg, data, run_dir, resume=False):
        if cfg.train.lr >= 0.5 or cfg.train.seed == 99:
            run_dir.mkdir(parents=True, exist_ok=True)
            raise TrainingDiverged("epoch 1: training loss became nan before any epoch was evaluated")
        return real(cfg, data, run_dir, resume=resume)

    monkeypatch.setattr(trainer_mod, "train", diverging)
    out = tmp_path / "b"
    sets = ["train.progress=false", "train.epochs=1", "model.hidden_size=16", "data.batch_size=64"]
    results = benchmark(tiny_data, ["sasrec"], 2, out, None, sets, search="train.lr=0.5,0.01").results
    assert [(r.searched, r.seed) for r in results] == [("train.lr=0.01", 42), ("train.lr=0.01", 43)]
    marker = json.loads((out / "runs/sasrec/train.lr=0.5/seed0/diverged.json").read_text())
    assert "nan" in marker["error"] and marker["config"]["train"]["lr"] == 0.5
    rows = {r["setting"]: r for r in csv.DictReader((out / "search.csv").open())}
    assert rows["train.lr=0.5"]["chosen"] == "False" and "nan" in rows["train.lr=0.5"]["diverged"]
    assert rows["train.lr=0.5"]["valid_ndcg@20"] == "" and rows["train.lr=0.01"]["chosen"] == "True"

    train_calls.clear()
    monkeypatch.setattr(trainer_mod, "train", lambda *a, **k: train_calls.append(("called", False)))
    benchmark(tiny_data, ["sasrec"], 2, out, None, sets, search="train.lr=0.5,0.01")
    assert train_calls == []  # the diverged value is not retried, the others are reused
    with pytest.raises(
        MdsrecError, match=r"diverged.json marks a run that diverged with another config.*delete"
    ):
        benchmark(
            tiny_data, ["sasrec"], 2, out, None, [*sets, "train.patience=3"], search="train.lr=0.5,0.01"
        )

    monkeypatch.setattr(trainer_mod, "train", diverging)
    c = tmp_path / "c"  # every value of sasrec diverges: sasrec is left out, pop still runs and is reported
    outcome = benchmark(
        tiny_data, ["sasrec", "pop"], 1, c, None, ["train.progress=false"], search="train.lr=0.5,0.7"
    )
    assert [r.model for r in outcome.results] == ["pop"]
    assert len(outcome.left_out) == 1 and outcome.left_out[0].startswith("SASRec: every value of train.lr")
    dry = benchmark(  # a dry run over it reports the left-out model too (the CLI's partial table prints it)
        tiny_data,
        ["sasrec", "pop"],
        1,
        c,
        None,
        ["train.progress=false"],
        search="train.lr=0.5,0.7",
        dry_run=True,
    )
    assert [r.model for r in dry.results] == ["pop"] and dry.left_out == outcome.left_out
    capsys.readouterr()  # the CLI's dry run prints the partial table with the left-out model named
    (tmp_path / "none").mkdir()  # no frozen configs, as benchmark(..., None, ...) above
    extra = ["--search", "train.lr=0.5,0.7", "--set", "train.progress=false", "--dry-run"]
    assert main(bench_argv(tiny_data.path, "sasrec,pop", 1, c, tmp_path / "none", *extra)) == 0
    printed = capsys.readouterr().out
    assert "partial table" in printed and "Left out (no result): SASRec: every value of train.lr" in printed
    # no finished run at all: still named
    assert main(bench_argv(tiny_data.path, "sasrec", 1, c, tmp_path / "none", *extra)) == 0
    assert "No finished run yet. Left out (no result): SASRec" in capsys.readouterr().out
    md = (c / "results.md").read_text()
    assert "Left out (no result): SASRec: every value of train.lr diverged" in md and "| pop | 1 |" in md
    assert [r["diverged"] != "" for r in csv.DictReader((c / "search.csv").open())] == [True, True]
    header, *rows = list(csv.reader((c / "search.csv").open()))
    assert [len(r) for r in rows] == [len(header)] * 2  # a diverged row is as wide as the header
    with pytest.raises(MdsrecError, match="no model has a result"):
        benchmark(tiny_data, ["sasrec"], 1, tmp_path / "d", None, sets, search="train.lr=0.5,0.7")

    with pytest.raises(MdsrecError, match=r"runs/sasrec/train.lr=0.01/seed1: epoch 1.*cannot be trained"):
        benchmark(
            tiny_data,
            ["sasrec"],
            2,
            tmp_path / "e",
            None,
            [*sets, "train.seed=98"],
            search="train.lr=0.5,0.01",
        )

    def nan_scores(cfg, data, run_dir, resume=False):
        raise FloatingPointError("model produced NaN scores")  # not a divergence of training: not marked

    monkeypatch.setattr(trainer_mod, "train", nan_scores)
    with pytest.raises(FloatingPointError, match="NaN scores"):
        benchmark(tiny_data, ["sasrec"], 1, tmp_path / "f", None, sets, search="train.lr=0.5,0.01")
    assert not list((tmp_path / "f").rglob("diverged.json"))


def test_the_search_compares_validation_never_test_and_keeps_the_first_on_a_tie(
    tiny_data, tmp_path, monkeypatch
) -> None:
    """Stubbed runs: lr 0.1 and 0.3 tie on validation, lr 0.2 is best on test only -> 0.1 is chosen."""
    from mdsrec.models import full_config

    scores = {0.1: (0.3, 0.1), 0.2: (0.2, 0.9), 0.3: (0.3, 0.5)}  # lr -> (valid ndcg@20, test ndcg@20)

    def fake(cfg, data, run_dir, resume=False):
        v, t = scores[cfg.train.lr]
        stage = {k: 0.0 for k in ("recall@10", "ndcg@10", "recall@20", "mrr@20")}
        m = {
            "valid": {**stage, "ndcg@20": v},
            "test": {**stage, "ndcg@20": t},
            "epochs": 1,
            "best_epoch": 1,
            "seconds_per_epoch": 0.1,
            "config": full_config(cfg).to_dict(),
            "data": {"fingerprint": data.fingerprint},
        }
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps(m))
        return m

    monkeypatch.setattr(trainer_mod, "train", fake)
    out = tmp_path / "b"
    benchmark(tiny_data, ["sasrec"], 2, out, None, ["train.progress=false"], search="train.lr=0.1,0.2,0.3")
    chosen = [r["setting"] for r in csv.DictReader((out / "search.csv").open()) if r["chosen"] == "True"]
    assert chosen == ["train.lr=0.1"]
    assert (out / "runs/sasrec/train.lr=0.1/seed1/metrics.json").is_file()
    assert not (out / "runs/sasrec/train.lr=0.2/seed1").exists()


def test_a_model_config_that_cannot_train_on_the_batches_fails_before_anything_trains(
    tiny_data, tmp_path, train_calls
) -> None:
    sets = ["train.progress=false", "mmmlp:model.token_mixing=full"]  # full mixing needs materialized rows
    with pytest.raises(ConfigError, match=r"model mmmlp: .*not causal.*set data.train_mode=materialized"):
        benchmark(tiny_data, ["sasrec", "mmmlp"], 1, tmp_path / "b", None, sets)
    with pytest.raises(
        ConfigError, match=r"not causal"
    ):  # also with a search (every searched config is checked)
        benchmark(tiny_data, ["sasrec", "mmmlp"], 1, tmp_path / "b", None, sets, search="train.lr=0.1,0.01")
    assert train_calls == [] and not (tmp_path / "b").exists()


def test_dry_run_without_a_search_lists_every_seed(tiny_data, tmp_path, caplog) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="mdsrec.studies.benchmark")
    benchmark(tiny_data, ["sasrec", "pop"], 3, tmp_path / "b", None, ["train.progress=false"], dry_run=True)
    assert "sasrec seed 44: would train" in caplog.text
    assert "4 would train, 0 wait for a search" in caplog.text and "0 of 4 runs finished" in caplog.text
    assert not (tmp_path / "b").exists()


def test_comparisons_say_whether_the_papers_claims_hold() -> None:
    from mdsrec.studies.results import RunResult, comparisons_markdown

    def runs(model: str, ndcg: list[float], recall: list[float]) -> list[RunResult]:
        return [
            RunResult(model, 42 + i, {"test": {"ndcg@20": n, "recall@20": r}}, None)
            for i, (n, r) in enumerate(zip(ndcg, recall, strict=True))
        ]

    results = (
        runs("sasrec", [0.050, 0.052], [0.10, 0.11])
        + runs("sasrecf", [0.060, 0.062], [0.12, 0.13])  # above on both, clearly
        + runs("gru4rec", [0.050, 0.052], [0.10, 0.11])
        + runs("gru4recf", [0.049, 0.051], [0.12, 0.13])  # N@20 below (within spread), R@20 above
        + runs("unisrec", [0.040], [0.08])  # below SASRec and GRU4Rec on both; one seed: no spread
    )
    md = comparisons_markdown(results, "scientific", load_table2())
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if " > " in line}
    assert set(rows) == {"SASRecF > SASRec", "GRU4RecF > GRU4Rec", "UniSRec > SASRec", "UniSRec > GRU4Rec"}
    assert (
        rows["SASRecF > SASRec"].endswith("| yes |")
        and "0.0610 vs 0.0510 (+19.6%)" in rows["SASRecF > SASRec"]
    )
    assert "| +26.0% |" in rows["SASRecF > SASRec"]  # the paper: 0.0683 vs 0.0542 on Scientific
    assert rows["GRU4RecF > GRU4Rec"].endswith("| mixed |")
    assert rows["UniSRec > SASRec"].endswith("| no |")
    same = runs("sasrec", [0.050, 0.060], [0.10, 0.12]) + runs("sasrecf", [0.051, 0.061], [0.101, 0.121])
    assert (
        comparisons_markdown(same, "sports", load_table2())
        .rstrip()
        .endswith("| level (within seed spread) |")
    )
    assert comparisons_markdown(runs("pop", [0.1], [0.2]), "scientific", load_table2()) == ""


def test_frozen_configs_ship_with_the_package_and_a_missing_folder_is_an_error(tmp_path, monkeypatch) -> None:
    from mdsrec.studies.benchmark import DEFAULT_CONFIGS, run_config

    monkeypatch.chdir(tmp_path)  # found from any working directory
    assert DEFAULT_CONFIGS.is_absolute() and (DEFAULT_CONFIGS / "sports" / "mdsrec.yaml").is_file()
    cfg = run_config("mdsrec", "sports", DEFAULT_CONFIGS, [])
    assert cfg.model["hidden_size"] == 300 and cfg.model["h"] == 20
    with pytest.raises(ConfigError, match="frozen configs folder"):
        run_config("mdsrec", "sports", tmp_path / "nowhere", [])


def test_a_named_variant_trains_from_its_frozen_config_beside_its_model(
    tiny_data, tmp_path, train_calls
) -> None:
    """``--models cooc,cooc_wide``: cooc_wide is not a registered model but a frozen config that says
    ``variant: cooc_wide``; its runs go to runs/cooc_wide and its results row carries its own name."""
    configs = frozen_configs(
        tmp_path,
        "cooc_wide",
        "variant: cooc_wide\nmodel: {name: cooc, window: 3}\ntrain: {progress: false}\n",
    )
    results = benchmark(tiny_data, ["cooc", "cooc_wide"], 1, tmp_path / "b", configs).results
    assert [r.model for r in results] == ["cooc", "cooc_wide"]
    assert sorted(train_calls) == [("cooc/seed0", False), ("cooc_wide/seed0", False)]
    saved = json.loads((tmp_path / "b" / "runs" / "cooc_wide" / "seed0" / "metrics.json").read_text())
    assert saved["config"]["variant"] == "cooc_wide" and saved["config"]["model"]["window"] == 3
    assert results[0].metrics["config"]["variant"] is None
    md = (tmp_path / "b" / "results.md").read_text()
    assert "| cooc wide | 1 | " in md


def test_a_named_variant_takes_part_in_a_learning_rate_search(tiny_data, tmp_path, train_calls) -> None:
    configs = frozen_configs(
        tmp_path,
        "sasrec_small",
        "variant: sasrec_small\nmodel: {name: sasrec, hidden_size: 8, inner_size: 16}\n",
    )
    out = benchmark(
        tiny_data, ["sasrec_small"], 1, tmp_path / "b", configs, TINY_SETS[:4], search="train.lr=0.01,0.001"
    )
    assert sorted(train_calls) == [("train.lr=0.001/seed0", False), ("train.lr=0.01/seed0", False)]
    assert (tmp_path / "b" / "runs" / "sasrec_small" / "train.lr=0.01" / "seed0" / "metrics.json").is_file()
    (chosen,) = out.results
    assert chosen.model == "sasrec_small" and chosen.metrics["config"]["variant"] == "sasrec_small"
    assert chosen.metrics["config"]["model"]["hidden_size"] == 8


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("model: {name: cooc}\n", "must say 'variant: cooc_wide'"),
        ("variant: cooc_other\nmodel: {name: cooc}\n", "must say 'variant: cooc_wide'"),
        ("variant: pop_wide\nmodel: {name: cooc}\n", r"variant \('pop_wide'\) must be the model's name"),
    ],
)
def test_a_variant_config_must_name_itself_after_its_model(
    tiny_data, tmp_path, text: str, match: str
) -> None:
    configs = frozen_configs(tmp_path, "cooc_wide", text)
    with pytest.raises(ConfigError, match=match):
        benchmark(tiny_data, ["cooc_wide"], 1, tmp_path / "b", configs)
    with pytest.raises(ConfigError, match="nor a variant with a frozen config"):
        benchmark(tiny_data, ["cooc_narrow"], 1, tmp_path / "b", configs)
    assert not (tmp_path / "b").exists()
