"""benchmarks/seed_table.py: the README's seed-spread rows come from run folders and recorded rows, not by hand."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from mdsrec.studies.results import METRICS

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "seed_table.py"
_spec = importlib.util.spec_from_file_location("seed_table", _PATH)
assert _spec is not None and _spec.loader is not None
seed_table = importlib.util.module_from_spec(_spec)
sys.modules["seed_table"] = seed_table  # dataclasses look their module up there
_spec.loader.exec_module(seed_table)


def _folder_run(root: Path, model: str, i: int, seed: int, value: float) -> None:
    d = root / "runs" / model / f"seed{i}"
    d.mkdir(parents=True)
    m = {
        "test": {k: value for k in METRICS},
        "seconds_per_epoch": 10.0,
        "epochs": 5,
        "best_epoch": 2,
        "config": {"train": {"seed": seed}},
    }
    (d / "metrics.json").write_text(json.dumps(m))


def _csv(path: Path, rows: list[tuple[str, int, float]]) -> Path:
    head = "model,seed," + ",".join(METRICS) + ",seconds_per_epoch,epochs,best_epoch\n"
    body = "".join(f"{m},{s}," + ",".join([str(v)] * 5) + ",20,7,3\n" for m, s, v in rows)
    path.write_text(head + body)
    return path


def test_folder_wins_over_csv_and_rows_are_mean_sd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _folder_run(tmp_path, "sasrec", 0, 42, 0.02)
    _folder_run(tmp_path, "sasrec", 1, 43, 0.04)
    rows = seed_table.from_csv(_csv(tmp_path / "r.csv", [("sasrec", 42, 0.9), ("fdsa", 42, 0.05)]))
    grouped = seed_table.merge(seed_table.from_folders(tmp_path), rows)
    assert "taken from" in capsys.readouterr().out
    sasrec_ndcg = [r.test["ndcg@20"] for r in grouped["sasrec"]]
    assert sasrec_ndcg == [0.02, 0.04]  # the folder's seed 42, not the CSV's
    row = seed_table.table_row("sasrec", grouped["sasrec"])
    assert "| 2 | 0.0300 ± 0.0141 |" in row and row.endswith("| 10 | 5 (2), 5 (2) |")
    assert "every seed above" in seed_table.compare(grouped["fdsa"], grouped["sasrec"])
    _folder_run(tmp_path, "gru4rec", 0, 42, 0.03)
    both = seed_table.merge(seed_table.from_folders(tmp_path), rows)
    assert "overlap" in seed_table.compare(both["gru4rec"], both["sasrec"])


def test_bad_csv_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("model,seed,recall@10\nsasrec,x,0.1\n")
    with pytest.raises(SystemExit, match="bad.csv, line 2"):
        seed_table.from_csv(bad)


def test_row_names_missrec_as_its_paper_and_keeps_divergence_note(tmp_path: Path) -> None:
    _folder_run(tmp_path, "missrec", 0, 42, 0.02)
    m = json.loads((tmp_path / "runs/missrec/seed0/metrics.json").read_text())
    m["diverged_at_epoch"] = 6
    (tmp_path / "runs/missrec/seed0/metrics.json").write_text(json.dumps(m))
    _folder_run(tmp_path, "missrec", 1, 43, 0.04)
    grouped = seed_table.merge(seed_table.from_folders(tmp_path), [])
    row = seed_table.table_row("missrec", grouped["missrec"])
    assert row.startswith("| MISSRec | 2 |")
    assert row.endswith("| 5 (2; loss non-finite in epoch 6), 5 (2) |")


def test_claims_table_reads_the_merged_runs_by_the_library_rule(tmp_path: Path) -> None:
    _folder_run(tmp_path, "sasrec", 0, 42, 0.020)
    _folder_run(tmp_path, "sasrec", 1, 43, 0.022)
    rows = seed_table.from_csv(_csv(tmp_path / "r.csv", [("sasrecf", 42, 0.030), ("sasrecf", 43, 0.032)]))
    grouped = seed_table.merge(seed_table.from_folders(tmp_path), rows)
    text = seed_table.claims(grouped, "sports")
    line = next(x for x in text.splitlines() if x.startswith("| SASRecF > SASRec |"))
    assert "0.0310 vs 0.0210 (+47.6%)" in line and line.endswith("| +13.3% | yes |")  # paper: Sports N@20
    assert "| MDSRec >" not in text  # a claim is printed only when both of its models ran
    close = seed_table.merge([], seed_table.from_csv(_csv(tmp_path / "c.csv", [("sasrecf", 42, 0.0215)])))
    both = {"sasrec": grouped["sasrec"], "sasrecf": close["sasrecf"]}
    one_seed = seed_table.claims(both, "sports").splitlines()[-1]
    assert one_seed.endswith("| yes |")  # one seed of SASRecF: no spread to weigh, the sign decides
    near = seed_table.from_csv(_csv(tmp_path / "n.csv", [("sasrecf", 42, 0.021), ("sasrecf", 43, 0.022)]))
    level = {"sasrec": grouped["sasrec"], "sasrecf": near}
    assert seed_table.claims(level, "sports").splitlines()[-1].endswith("| level (within seed spread) |")
    assert seed_table.claims({"sasrec": grouped["sasrec"]}, "sports") == ""
    with pytest.raises(SystemExit, match="--claims sport: not a data set of the paper's Table 2 .*sports"):
        seed_table.claims(grouped, "sport")


def test_claims_typo_exits_before_any_table_is_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _folder_run(tmp_path, "sasrec", 0, 42, 0.020)
    with pytest.raises(SystemExit, match="--claims sport: not a data set"):
        seed_table.main([str(tmp_path), "--claims", "sport"])
    assert capsys.readouterr().out == ""
    seed_table.main([str(tmp_path), "--claims", "sports"])
    assert capsys.readouterr().out.startswith("| model | seeds |")
