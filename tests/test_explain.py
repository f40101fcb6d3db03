"""`mdsrec explain`: the paper's case study (Figure 5) per user: top-N per channel, relation-graph neighbours that
really are graph neighbours and in the history, centres from the membership buffer, fused = score_all, ablations,
other models, user lookup, JSON round trip (tiny, CPU)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from mdsrec.cli import main
from mdsrec.config import resolve_config
from mdsrec.data.protocol import Split, eval_batches
from mdsrec.data.users import resolve_user
from mdsrec.errors import MdsrecError
from mdsrec.evaluation.evaluator import rank_targets
from mdsrec.evaluation.ranking import target_ranks
from mdsrec.explain import explain, render_text
from mdsrec.models.mdsrec import MDSRec
from mdsrec.training.trainer import load_run, make_experiment, train
from tests.conftest import TINY_MODEL

TOP = 6
# A larger H than the shared tiny config, so that recommended items have neighbours in short histories.
MODEL = {**TINY_MODEL["mdsrec"], "h": 8}
SETS = [f"model.{k}={v}" for k, v in MODEL.items()] + [
    "train.epochs=1",
    "train.progress=false",
    "data.batch_size=64",
    "train.lr=0.01",
]


def tiny_cfg(model: str = "mdsrec", extra: list[str] | None = None):
    sets = SETS if model == "mdsrec" else [s for s in SETS if not s.startswith("model.")]
    return resolve_config(None, sets + (extra or []), model=model)


@pytest.fixture(scope="module")
def run_dir(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("explain") / "run"
    train(tiny_cfg(), tiny_data, out)
    return out


@pytest.fixture(scope="module")
def exp(run_dir, tiny_data):
    return load_run(run_dir, tiny_data)


def graph_rows(model: MDSRec, m: int) -> dict[int, set[int]]:
    idx = getattr(model, f"graph_idx_{m}")
    rows: dict[int, set[int]] = {}
    for r, c in idx.t().tolist():
        rows.setdefault(r, set()).add(c)
    return rows


def test_top_n_per_channel_and_fused_equals_score_all(exp, tiny_data) -> None:
    split = Split(tiny_data.sequences)
    users = [0, 7, 33]
    batches = eval_batches(split, "test", exp.cfg.data)
    for u in users:
        report = explain(exp, tiny_data.user_tokens[u], top=TOP)
        assert report["user"] == {"index": u, "token": f"u{u}", "resolved_by": "token"}
        names = [c["name"] for c in report["channels"]]
        assert names == ["fused", "id"] + [f"modality:{m}" for m in tiny_data.features]
        for ch in report["channels"]:
            assert [i["rank"] for i in ch["items"]] == list(range(1, TOP + 1))
            scores = [i["score"] for i in ch["items"]]
            assert scores == sorted(scores, reverse=True)
        # the fused channel is what the run is evaluated on: score_all of the user's row of the test batches
        for batch in batches:
            assert batch.users is not None and batch.target is not None
            rows = (batch.users == u).nonzero()
            if len(rows):
                row = int(rows[0, 0])
                with torch.no_grad():
                    s = exp.model.score_all(batch)[row : row + 1]  # [1, N+1]
                fused = report["channels"][0]
                assert fused["items"][0]["id"] == int(s.argmax())
                assert fused["items"][0]["score"] == pytest.approx(float(s.max()), rel=1e-5, abs=1e-5)
                assert fused["target_rank"] == int(target_ranks(s, batch.target[row : row + 1]))
                assert report["target"]["id"] == int(batch.target[row])
        window = [int(i) for i in tiny_data.sequences[u][:-1]][-exp.cfg.data.max_len :]
        assert [h["id"] for h in report["history"]] == window


def test_neighbours_are_graph_neighbours_in_history_and_centres_are_the_buffers(exp, tiny_data) -> None:
    model = exp.model
    assert isinstance(model, MDSRec)
    found = 0
    for u in range(0, 40, 3):
        report = explain(exp, str(u), by_index=True, top=15)
        history = {h["id"] for h in report["history"]}
        for m, name in enumerate(model.modalities):
            rows = graph_rows(model, m)
            member = getattr(model, f"member_idx_{m}")  # [2, N] (centre, item)
            ch = next(c for c in report["channels"] if c["name"] == f"modality:{name}")
            for item in ch["items"]:
                r = item["id"]
                got = [n["id"] for n in item["history_neighbours"]]
                assert set(got) <= rows[r] and set(got) <= history and r not in got
                # every neighbour in the history is reported, once
                assert sorted(got) == sorted((rows[r] & history) - {r})
                found += len(got)
                centre = int(member[0, member[1] == r][0])
                assert item["centre"] == centre
                assert 0.0 < item["centre_gamma"] <= 1.0
            summary = report["modalities"][m]
            gammas = [c["gamma"] for c in summary["top_centres"]]
            assert gammas == sorted(gammas, reverse=True) and sum(gammas) <= 1.0 + 1e-6
            assert summary["target_neighbours"] is not None
            target = report["target"]["id"]
            assert {n["id"] for n in summary["target_neighbours"]} == rows[target] - {target}
    assert found > 0  # the check above ran on real neighbours


def test_gamma_is_the_noise_free_softmax(exp, tiny_data) -> None:
    model = exp.model
    model.train()  # explain itself must switch off dropout and Gumbel noise
    report = explain(exp, "u4", top=3)
    assert not model.training
    hist = torch.tensor([[h["id"] for h in report["history"]]])
    with torch.no_grad():
        a = model.represent(hist, torch.tensor([hist.size(1)]), torch.tensor([[hist.size(1) - 1]]))
        b = model.represent(hist, torch.tensor([hist.size(1)]), torch.tensor([[hist.size(1) - 1]]))
    for m, summary in enumerate(report["modalities"]):
        torch.testing.assert_close(a.gamma[m], b.gamma[m])  # eval mode: no Gumbel noise
        for c in summary["top_centres"]:
            assert c["gamma"] == pytest.approx(float(a.gamma[m][0, 0, c["centre"]]), rel=1e-5)
    assert not model.training


def test_user_lookup(exp, tiny_data) -> None:
    assert resolve_user(tiny_data, "u12") == (12, "token")
    assert resolve_user(tiny_data, "12", by_index=True) == (12, "index")
    assert resolve_user(tiny_data, "12") == (12, "index")  # no token looks like a number: unambiguous
    with pytest.raises(MdsrecError, match=r"'nobody' not found in .*users\.tsv"):
        explain(exp, "nobody")
    with pytest.raises(MdsrecError, match=r"user index 999 is outside .*users\.tsv"):
        explain(exp, "999", by_index=True)
    numeric = dataclasses.replace(tiny_data, user_tokens=[str(i + 1) for i in range(80)])
    assert resolve_user(numeric, "5") == (4, "token")
    with pytest.raises(MdsrecError, match="'0' not found"):  # a number not among numeric tokens: ambiguous
        resolve_user(numeric, "0")
    with pytest.raises(
        MdsrecError, match="'²' not found"
    ):  # a digit to str.isdigit, but not a number to int()
        resolve_user(tiny_data, "²")
    assert resolve_user(tiny_data, " 12 ") == (12, "index")


def test_stages(exp, tiny_data) -> None:
    seq = [int(i) for i in tiny_data.sequences[3]]
    max_len = exp.cfg.data.max_len
    nxt = explain(exp, "u3", stage="next", top=2)
    assert nxt["target"] is None and all(c["target_rank"] is None for c in nxt["channels"])
    assert [h["id"] for h in nxt["history"]] == seq[-max_len:]
    valid = explain(exp, "u3", stage="valid", top=2)
    assert valid["target"]["id"] == seq[-2] and [h["id"] for h in valid["history"]] == seq[:-2][-max_len:]
    assert "whole sequence" in render_text(nxt)
    with pytest.raises(MdsrecError, match="stage"):
        explain(exp, "u3", stage="train")


def test_short_window_with_history_excluded_ranks_as_the_evaluator(tiny_data) -> None:
    """data.max_len 4 (most histories are longer than the window) and eval.exclude_history: the fused target_rank
    of every user equals the evaluator's rank in both stages, which excludes the WHOLE history, not the window;
    in_history flags that whole history."""
    exp = make_experiment(tiny_cfg(extra=["data.max_len=4", "eval.exclude_history=true"]), tiny_data)
    split = Split(tiny_data.sequences)
    longer = 0
    for stage in ("valid", "test"):
        users, ranks = rank_targets(exp.model, split, stage, exp.cfg.data, exp.cfg.eval)
        assert sorted(users.tolist()) == list(range(split.num_users))
        for u, rank in zip(users.tolist(), ranks.tolist(), strict=True):
            report = explain(exp, str(u), by_index=True, stage=stage, top=TOP)
            assert report["channels"][0]["name"] == "fused"
            assert report["channels"][0]["target_rank"] == rank, (stage, u)
            history, target = split.eval_input(u, stage)
            assert [h["id"] for h in report["history"]] == [int(i) for i in history[-4:]]
            excluded = {int(i) for i in history} - {target}
            assert report["rankable"] == tiny_data.num_items - len(excluded)
            longer += len(history) > 4 and bool(excluded - {int(i) for i in history[-4:]})
            for ch in report["channels"]:
                for item in ch["items"]:
                    assert item["in_history"] == (item["id"] in history)
                    assert not item["in_history"] or item["id"] == target  # excluded unless the held-out item
    assert longer > 0  # the whole history really was larger than the window

    # Without exclusion history items are ranked; in_history still means the whole history, not the window.
    shown = make_experiment(tiny_cfg(extra=["data.max_len=4"]), tiny_data)
    outside = 0
    for u in range(0, split.num_users, 8):
        history = {int(i) for i in split.eval_input(u, "test")[0]}
        report = explain(shown, str(u), by_index=True, top=tiny_data.num_items)
        window = {h["id"] for h in report["history"]}
        for item in report["channels"][0]["items"]:
            assert item["in_history"] == (item["id"] in history)
            outside += item["in_history"] and item["id"] not in window
    assert outside > 0


@pytest.mark.parametrize("model", ["mdsrec", "sasrec"])
def test_nan_scores_are_refused(tiny_data, model: str) -> None:
    extra = [] if model == "mdsrec" else [f"model.{k}={v}" for k, v in TINY_MODEL[model].items()]
    broken = make_experiment(tiny_cfg(model, extra), tiny_data)
    with torch.no_grad():
        broken.model.item_emb.weight[3] = float("nan")
    with pytest.raises(MdsrecError, match="NaN scores"):
        explain(broken, "u5", top=3)


@pytest.mark.parametrize(
    "flag, note, key",
    [("use_mrgc", "w/o MRGC", "history_neighbours"), ("use_ica", "w/o ICA", "centre")],
)
def test_ablations_say_what_is_missing(tiny_data, flag, note, key) -> None:
    ablated = make_experiment(tiny_cfg(extra=[f"model.{flag}=false"]), tiny_data)
    report = explain(ablated, "u2", top=4)
    assert any(note in n for n in report["notes"])
    modal = [c for c in report["channels"] if c["name"].startswith("modality:")]
    assert modal and all(i[key] is None for c in modal for i in c["items"])
    other = "centre" if key == "history_neighbours" else "history_neighbours"
    assert all(i[other] is not None for c in modal for i in c["items"])  # the other part is still shown
    assert note in render_text(report)


def test_other_models_get_score_all_only(tiny_data) -> None:
    sas = make_experiment(
        tiny_cfg("sasrec", [f"model.{k}={v}" for k, v in TINY_MODEL["sasrec"].items()]), tiny_data
    )
    report = explain(sas, "u1", top=5)
    assert [c["name"] for c in report["channels"]] == ["score_all"]
    assert len(report["channels"][0]["items"]) == 5
    assert any("MDSRec-only" in n for n in report["notes"])
    seq = torch.from_numpy(np.asarray(tiny_data.sequences[1][:-1], dtype=np.int64))[None]
    from mdsrec.data.protocol import Batch

    with torch.no_grad():
        s = sas.model.eval().score_all(Batch(seq, torch.tensor([seq.size(1)])))
    assert report["channels"][0]["items"][0]["id"] == int(s.argmax())


def test_cli_text_and_json_round_trip(run_dir, exp, tmp_path, capsys) -> None:
    out = tmp_path / "explain.json"
    assert main(["explain", "--run", str(run_dir), "--user", "u9", "--top", "3", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "'u9'" in printed and "Eq. 22" in printed and "graph neighbours in history" in printed
    saved = json.loads(out.read_text())
    direct = explain(exp, "u9", top=3, run=run_dir)
    assert saved == json.loads(json.dumps(direct)) == direct
    assert main(["explain", "--run", str(run_dir), "--user", "ghost"]) == 2
    assert "'ghost' not found" in capsys.readouterr().err
