"""Serving (`mdsrec recommend`, serving.Recommender): lists agree with the evaluator's ranks, history and candidate
filtering, batching does not change results, item keys resolve (unknown ones are named), session files are checked
line by line, outputs are written atomically (tiny, CPU). The HTTP service: test_serving_http.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mdsrec.cli import main
from mdsrec.config import resolve_config
from mdsrec.errors import MdsrecError
from mdsrec.evaluation.evaluator import rank_targets
from mdsrec.evaluation.ranking import NOT_RANKABLE, top_k
from mdsrec.models import REGISTRY
from mdsrec.serving import Recommender
from mdsrec.serving.requests import read_sessions
from mdsrec.training.trainer import make_experiment, train
from tests.conftest import TINY_MODEL

SETS = [f"model.{k}={v}" for k, v in TINY_MODEL["sasrec"].items()] + [
    "train.epochs=2",
    "train.progress=false",
    "data.batch_size=64",
    "train.lr=0.01",
    "data.eval_batch_size=32",  # several batches over the 80 users
]


@pytest.fixture(scope="module")
def run_dir(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("serving") / "run"
    train(resolve_config(None, SETS, model="sasrec"), tiny_data, out)
    return out


@pytest.fixture(scope="module")
def rec(run_dir) -> Recommender:
    return Recommender.from_run(run_dir)


@pytest.fixture(scope="module", params=sorted(REGISTRY))
def any_rec(request, tiny_data) -> Recommender:
    """Every registered model, untrained (serving must not depend on what the weights learned)."""
    name = request.param
    sets = [f"model.{k}={v}" for k, v in TINY_MODEL[name].items()] + SETS[len(TINY_MODEL["sasrec"]) :]
    return Recommender(make_experiment(resolve_config(None, sets, model=name), tiny_data))


@pytest.mark.parametrize("exclude", [False, True])
def test_full_lists_reproduce_the_evaluators_test_ranks(any_rec: Recommender, exclude: bool) -> None:
    """With every item listed, 1 + the listed items (other than the held-out one) scoring at least as high is the
    evaluator's rank of the held-out test item, for every user and every model (pop and cooc have ties, cooc
    float64 scores; BERT4Rec appends a mask token)."""
    rec = any_rec
    n = rec.data.num_items
    requests = [rec.user_request(str(u), by_index=True, stage="test") for u in range(rec.data.num_users)]
    lists = rec.recommend(requests, top=n, exclude_history=exclude)
    eval_cfg = dataclasses.replace(rec.exp.cfg.eval, exclude_history=exclude)
    users, ranks = rank_targets(rec.model, rec.exp.split, "test", rec.exp.cfg.data, eval_cfg)
    expected = dict(zip(users.tolist(), ranks.tolist(), strict=True))
    repeated = 0
    for u, result in enumerate(lists):
        target = int(rec.data.sequences[u][-1])
        repeated += target in rec.data.sequences[u][:-1]
        scores = {i["id"]: i["score"] for i in result["items"]}
        assert target in scores  # a repeated held-out item stays rankable, as in the evaluator
        assert 1 + sum(s >= scores[target] for i, s in scores.items() if i != target) == expected[u]
        listed = [(-i["score"], i["id"]) for i in result["items"]]
        assert listed == sorted(listed)  # descending scores, equal scores by ascending id
        if exclude:
            assert len(scores) == n - len(set(rec.data.sequences[u][:-1].tolist()) - {target})
    if rec.model.name == "cooc":  # its popularity tie-break exists only in float64
        assert rec.scores(requests[:2]).dtype == torch.float64
    if rec.model.name == "pop":
        assert len(set(next(iter(lists))["items"][i]["score"] for i in range(n // 2))) < n // 2  # ties exist


def test_history_excluded_padding_never_and_top_respected(rec: Recommender) -> None:
    req = rec.user_request("0", by_index=True)  # next: the whole sequence
    assert np.array_equal(req.history, rec.data.sequences[0])
    kept = rec.recommend([req], top=5, exclude_history=True)[0]["items"]
    assert len(kept) == 5
    assert not {i["id"] for i in kept} & set(req.history.tolist())
    every = rec.recommend([req], top=rec.data.num_items + 5, exclude_history=False)[0]["items"]
    assert len(every) == rec.data.num_items  # all items, the padding item never
    assert 0 not in {i["id"] for i in every}
    assert [i["rank"] for i in every] == list(range(1, rec.data.num_items + 1))
    left = rec.recommend([req], top=rec.data.num_items, exclude_history=True)[0]["items"]
    assert len(left) == rec.data.num_items - len(set(req.history.tolist()))


def test_batching_does_not_change_the_lists(rec: Recommender) -> None:
    requests = [rec.user_request(str(u), by_index=True) for u in range(40)]
    together = rec.recommend(requests, top=7)
    alone = [rec.recommend([r], top=7)[0] for r in requests]
    for a, b in zip(together, alone, strict=True):
        assert [i["id"] for i in a["items"]] == [i["id"] for i in b["items"]]
        np.testing.assert_allclose(
            [i["score"] for i in a["items"]], [i["score"] for i in b["items"]], rtol=1e-5
        )


def test_a_session_of_keys_equals_the_same_user_history(rec: Recommender) -> None:
    seq = rec.data.sequences[3]
    keys = [rec.data.item_keys[i - 1] for i in seq]
    by_user = rec.recommend([rec.user_request("3", by_index=True)], top=10)[0]
    by_keys = rec.recommend([rec.session_request("s", keys)], top=10)[0]
    assert [i["id"] for i in by_user["items"]] == [i["id"] for i in by_keys["items"]]
    tokens = [rec.data.item_tokens[i - 1] for i in seq]
    by_tokens = rec.recommend([rec.session_request("s", tokens, item_field="token")], top=10)[0]
    assert [i["id"] for i in by_tokens["items"]] == [i["id"] for i in by_keys["items"]]


def test_only_the_window_counts_but_the_whole_history_is_excluded(rec: Recommender) -> None:
    max_len = rec.max_len
    window = np.tile(np.arange(2, 10, dtype=np.int64), max_len)[-max_len:]
    early = 30  # only before the window
    keys = [rec.data.item_keys[i - 1] for i in [early, *window.tolist()]]
    long_req = rec.session_request("long", keys)
    short_req = rec.session_request("short", keys[1:])
    assert torch.equal(rec.scores([long_req]), rec.scores([short_req]))
    n = rec.data.num_items
    excluded = {i["id"] for i in rec.recommend([long_req], top=n, exclude_history=True)[0]["items"]}
    assert early not in excluded and not excluded & set(window.tolist())
    kept = {i["id"] for i in rec.recommend([long_req], top=n, exclude_history=False)[0]["items"]}
    assert early in kept and len(kept) == n


def test_unknown_items_are_named_or_skipped(rec: Recommender) -> None:
    key = rec.data.item_keys[0]
    with pytest.raises(MdsrecError, match="'NOPE'.*--skip-unknown"):
        rec.session_request("s", [key, "NOPE"])
    req = rec.session_request("s", [key, "NOPE"], skip_unknown=True)
    assert req.history.tolist() == [1] and req.dropped == ["NOPE"]
    assert rec.recommend([req], top=3)[0]["unknown_items"] == ["NOPE"]
    with pytest.raises(MdsrecError, match="no known items"):
        rec.session_request("s", ["NOPE"], skip_unknown=True)
    with pytest.raises(MdsrecError, match="empty history"):
        rec.session_request("s", [])
    with pytest.raises(MdsrecError, match="top"):
        rec.recommend([req], top=0)


def test_candidates_restrict_the_list(rec: Recommender) -> None:
    allowed = [rec.data.item_keys[i] for i in (4, 9, 19)]
    blocked = rec.candidate_mask(allowed)
    out = rec.recommend(
        [rec.user_request("1", by_index=True)], top=10, exclude_history=False, blocked=blocked
    )
    assert sorted(i["key"] for i in out[0]["items"]) == sorted(allowed)
    with pytest.raises(MdsrecError, match="candidates"):
        rec.candidate_mask(["NOPE"])


def test_session_file_errors_name_the_line(rec: Recommender, tmp_path: Path) -> None:
    k = rec.data.item_keys
    good = tmp_path / "good.jsonl"
    good.write_text(
        json.dumps({"id": "a", "history": [k[0], k[1]]}) + "\n\n" + json.dumps({"history": [k[2]]}) + "\n"
    )
    reqs = read_sessions(rec, good)
    assert [r.id for r in reqs] == ["a", "line3"] and reqs[0].history.tolist() == [1, 2]
    for text, pattern in [
        ("{not json\n", r"bad\.jsonl:1: not valid JSON"),
        (json.dumps({"id": "a", "history": k[0]}) + "\n", r"bad\.jsonl:1: expected an object"),
        (
            json.dumps({"id": "a", "history": [k[0]]}) + "\n" + json.dumps({"id": "a", "history": [k[1]]}),
            r"bad\.jsonl:2: session id 'a' already used on line 1",
        ),
        (
            json.dumps({"history": [k[0], "ZZZ"]}) + "\n",
            r"bad\.jsonl:1: 1 item\(s\) not in the catalogue.*'ZZZ'",
        ),
        ("\n", r"holds no sessions"),
    ]:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text)
        with pytest.raises(MdsrecError, match=pattern):
            read_sessions(rec, bad)


def test_cli_recommend_outputs(run_dir: Path, rec: Recommender, tmp_path: Path, capsys) -> None:
    out = tmp_path / "all.jsonl"
    assert main(["recommend", "--run", str(run_dir), "--all-users", "--top", "4", "--out", str(out)]) == 0
    lines = [json.loads(s) for s in out.read_text().splitlines()]
    assert len(lines) == rec.data.num_users
    assert [r["id"] for r in lines] == rec.data.user_tokens
    assert all(len(r["items"]) == 4 for r in lines)
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically, nothing left behind

    capsys.readouterr()
    keys = ",".join(rec.data.item_keys[i - 1] for i in rec.data.sequences[5])
    assert main(["recommend", "--run", str(run_dir), "--history", keys, "--top", "3", "--format", "csv"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == "id,rank,item_id,key,token,score" and len(rows) == 4
    expected = rec.recommend([rec.user_request("5", by_index=True)], top=3)[0]["items"]
    assert [r.split(",")[3] for r in rows[1:]] == [i["key"] for i in expected]

    users = tmp_path / "users.txt"
    users.write_text(f"{rec.data.user_tokens[1]}\n# a comment\n{rec.data.user_tokens[4]}\n")
    assert main(["recommend", "--run", str(run_dir), "--users-file", str(users), "--top", "2"]) == 0
    assert [json.loads(r)["id"] for r in capsys.readouterr().out.splitlines()] == [
        rec.data.user_tokens[1],
        rec.data.user_tokens[4],
    ]
    users.write_text(f"{rec.data.user_tokens[1]}\n{rec.data.user_tokens[1]}\n")
    assert main(["recommend", "--run", str(run_dir), "--users-file", str(users)]) == 2
    assert "users.txt, line 2: user" in capsys.readouterr().err
    assert main(["recommend", "--run", str(run_dir), "--history", keys, "--index"]) == 2
    assert "--index applies" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["recommend", "--run", str(run_dir), "--all-users", "--top", "0"])
    assert main(["recommend", "--run", str(run_dir), "--history", "NOPE"]) == 2
    assert "not in the catalogue" in capsys.readouterr().err
    assert main(["recommend", "--run", str(run_dir)]) == 2
    assert "exactly one of" in capsys.readouterr().err
    assert main(["recommend", "--run", str(run_dir), "--user", "no-such-user"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["recommend", "--run", str(tmp_path / "missing"), "--all-users"]) == 2
    assert "not found" in capsys.readouterr().err


def test_cold_start_sessions_get_the_most_popular_items(
    rec: Recommender, run_dir: Path, tmp_path: Path, capsys
) -> None:
    with pytest.raises(MdsrecError, match="cold_start 'popular'"):
        rec.session_request("new", ["NOPE"], skip_unknown=True)
    with pytest.raises(MdsrecError, match="cold_start"):
        rec.session_request("new", [], cold_start="maybe")
    cold = rec.session_request("new", ["NOPE"], skip_unknown=True, cold_start="popular")
    assert cold.fallback and len(cold.history) == 0
    counts = np.bincount(np.concatenate(rec.data.sequences), minlength=rec.data.num_items + 1)
    warm = rec.user_request("3", by_index=True)
    mixed = rec.recommend([warm, cold], top=5)
    got = mixed[1]
    assert got["fallback"] == "popular" and got["unknown_items"] == ["NOPE"]
    ids = [i["id"] for i in got["items"]]
    order = sorted(range(1, rec.data.num_items + 1), key=lambda i: (-counts[i], i))
    assert ids == order[:5]  # most interactions first, ties by id
    assert "fallback" not in mixed[0]
    assert [i["id"] for i in mixed[0]["items"]] == [i["id"] for i in rec.recommend([warm], top=5)[0]["items"]]

    sessions = tmp_path / "s.jsonl"
    sessions.write_text(json.dumps({"id": "a", "history": []}) + "\n")
    with pytest.raises(MdsrecError, match=r"s\.jsonl:1: session 'a' has an empty history"):
        read_sessions(rec, sessions)
    assert read_sessions(rec, sessions, cold_start="popular")[0].fallback
    capsys.readouterr()
    argv = [
        "recommend",
        "--run",
        str(run_dir),
        "--sessions",
        str(sessions),
        "--top",
        "3",
        "--cold-start",
        "popular",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fallback"] == "popular" and [i["id"] for i in out["items"]] == order[:3]


def test_mixed_cold_and_warm_batches_score_like_separate_ones(rec: Recommender) -> None:
    warm = rec.user_request("2", by_index=True)
    cold = rec.session_request("c", [], cold_start="popular")
    both = rec.recommend([warm, cold], top=6)
    for got, alone in zip(
        both, [rec.recommend([warm], top=6)[0], rec.recommend([cold], top=6)[0]], strict=True
    ):
        assert [(i["id"], i["score"]) for i in got["items"]] == [
            (i["id"], i["score"]) for i in alone["items"]
        ]


def test_session_files_encoding_and_ids(rec: Recommender, tmp_path: Path) -> None:
    k = rec.data.item_keys[0]
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": 7, "history": [k]}).encode() + b"\n")
    assert [r.id for r in read_sessions(rec, bom)] == ["7"]  # a byte-order mark is dropped, an int id kept
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"id": "\xe9", "history": []}\n')
    with pytest.raises(MdsrecError, match=r"latin\.jsonl, line 1: not UTF-8"):
        read_sessions(rec, latin)
    bad_id = tmp_path / "id.jsonl"
    bad_id.write_text(json.dumps({"id": None, "history": [k]}) + "\n")
    with pytest.raises(MdsrecError, match=r"id\.jsonl:1: \"id\" \(None\) must be a string"):
        read_sessions(rec, bad_id)


def test_top_k_equals_the_first_k_of_a_stable_sort_of_whole_rows() -> None:
    """ranking.top_k sorts only the candidates at least as good as the k-th best: the same items in the same order
    as sorting whole rows, with ties (many, in integer scores) by ascending id and unrankable (-inf) items last."""
    gen = torch.Generator().manual_seed(0)
    for trial in range(120):
        b, n = int(torch.randint(1, 6, (), generator=gen)), int(torch.randint(2, 300, (), generator=gen))
        if trial % 3 == 0:
            scores = torch.randn(b, n, generator=gen)
        else:  # heavy ties, float64 or float32, some rows mostly unrankable
            scores = torch.randint(0, 3, (b, n), generator=gen).to(
                torch.float64 if trial % 2 else torch.float32
            )
            scores[torch.rand(b, n, generator=gen) < 0.2 * (trial % 5)] = NOT_RANKABLE
        scores[:, 0] = NOT_RANKABLE
        for k in (1, 3, 10, n // 5 + 1, n, n + 2):
            order, rankable = top_k(scores, k)
            assert torch.equal(order, torch.sort(-scores, dim=-1, stable=True).indices[:, :k]), (trial, k)
            assert torch.equal(rankable, (scores > NOT_RANKABLE).sum(dim=-1))
            one, count = top_k(scores[0], k)  # one row [N+1], as explain passes it
            assert torch.equal(one, order[0]) and int(count) == int(rankable[0])


def test_recommend_ranks_fewer_requests_per_call_on_a_large_catalogue(rec: Recommender) -> None:
    from mdsrec.serving.recommender import MAX_SCORES_PER_CALL, requests_per_call

    assert rec.batch_size == rec.exp.cfg.data.eval_batch_size  # a small catalogue: the configured batch
    assert requests_per_call(1024, 18_357) == 1024
    assert requests_per_call(1024, 1_000_000) == MAX_SCORES_PER_CALL // 1_000_001 == 134
    assert requests_per_call(1024, 10**9) == 1  # never zero
