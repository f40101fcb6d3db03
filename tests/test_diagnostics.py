"""Per-channel and per-popularity diagnostics: they describe the ranking without changing it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mdsrec.config import resolve_config
from mdsrec.data.protocol import Split, eval_batches
from mdsrec.evaluation.evaluator import POPULARITY_BUCKETS, diagnose, evaluate, item_train_counts
from mdsrec.training import trainer as trainer_mod
from tests.conftest import TINY_MODEL

SETS = ["data.max_len=12", "data.batch_size=32", "train.progress=false", "train.lr=0.01"]


def _cfg(model: str, epochs: int = 1):
    sets = SETS + [f"train.epochs={epochs}"] + [f"model.{k}={v}" for k, v in TINY_MODEL[model].items()]
    return resolve_config(None, sets, model=model)


@pytest.mark.parametrize("model", ["mdsrec", "missrec", "sasrec"])
def test_diagnosis_metrics_equal_evaluate_and_buckets_add_up(tiny_data, model) -> None:
    exp = trainer_mod.make_experiment(_cfg(model), tiny_data)
    counts = item_train_counts(exp.split, tiny_data.num_items)
    for stage in ("valid", "test"):
        plain = evaluate(exp.model, exp.split, stage, exp.cfg.data, exp.cfg.eval)
        d = diagnose(exp.model, exp.split, stage, exp.cfg.data, exp.cfg.eval, counts)
        assert d.metrics == plain  # the same ranks, exactly
        assert [b[0] for b in POPULARITY_BUCKETS] == list(d.popularity)
        users = [int(v["users"]) for v in d.popularity.values()]
        assert sum(users) == exp.split.num_users
        for k in ("recall@10", "ndcg@20"):  # bucket metrics are a partition of the overall mean
            total = sum(v["users"] * v[k] for v in d.popularity.values() if v["users"])
            assert total / exp.split.num_users == pytest.approx(plain[k], abs=1e-12)
    expected = {
        "mdsrec": {"id", *tiny_data.features},
        "missrec": {"id", *tiny_data.features},
        "sasrec": set(),
    }
    assert set(d.channels) == expected[model]


def test_mdsrec_channels_are_the_parts_of_the_fused_score(tiny_data) -> None:
    exp = trainer_mod.make_experiment(_cfg("mdsrec"), tiny_data)
    model = exp.model.eval()
    batch = eval_batches(exp.split, "test", exp.cfg.data)[0]
    with torch.no_grad():
        ch = model.channel_scores_all(batch)
        fused = model.score_all(batch)
    assert torch.equal(ch["fused"], fused)
    rho = model.rho
    names = list(tiny_data.features)
    rebuilt = ch["id"][:, 1:] + sum(r * ch[n][:, 1:] for r, n in zip(rho, names, strict=True))
    assert torch.allclose(rebuilt, fused[:, 1:], atol=1e-5)
    assert all(bool(torch.isneginf(s[:, 0]).all()) for s in ch.values())


def test_item_train_counts_count_only_training_parts() -> None:
    split = Split([np.array([1, 2, 3, 4]), np.array([2, 2, 5])])  # training parts [1, 2] and [2]
    assert item_train_counts(split, 5).tolist() == [0, 1, 2, 0, 0, 0]


def test_a_run_logs_diagnostics_and_provenance(tiny_data, tmp_path) -> None:
    run = tmp_path / "run"
    trainer_mod.train(_cfg("mdsrec", epochs=2), tiny_data, run)
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert all(set(r["valid_channels"]) == {"id", *tiny_data.features} for r in log)
    assert all(list(r["valid_popularity"]) == [b[0] for b in POPULARITY_BUCKETS] for r in log)
    m = json.loads((run / "metrics.json").read_text())
    assert set(m["diagnostics"]) == {"valid", "test"}
    assert set(m["diagnostics"]["test"]["channels"]) == {"id", *tiny_data.features}
    p = m["provenance"]
    assert p["threads"] >= 1 and p["versions"]["torch"] == torch.__version__ and p["total_seconds"] > 0
    assert p["finished"] and "command" in p


def test_diagnostics_off_leaves_the_log_as_before(tiny_data, tmp_path) -> None:
    cfg = _cfg("sasrec")
    cfg.eval.diagnostics = False
    run = tmp_path / "run"
    trainer_mod.train(cfg, tiny_data, run)
    (line,) = (run / "log.jsonl").read_text().splitlines()
    assert "valid_channels" not in json.loads(line)
    assert "diagnostics" not in json.loads((run / "metrics.json").read_text())
