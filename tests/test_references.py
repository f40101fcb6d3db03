"""Parameter-free references (pop, cooc, featsim): hand-computed rankings, no leakage from validation/test items,
and the trainer's no-training path (same run files, `mdsrec evaluate --run` reproduces the metrics)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mdsrec.training.trainer as trainer_mod
from mdsrec.cli import main
from mdsrec.config import DataConfig, resolve_config
from mdsrec.data.graphs import cooccurrence
from mdsrec.data.processed import ProcessedDataset
from mdsrec.data.protocol import Batch, Split, build_train_rows, train_batches
from mdsrec.errors import ConfigError, MdsrecError
from mdsrec.models import DataInfo, build_model
from mdsrec.models.references import csr_rows, pair_counts
from mdsrec.training.checkpoint import load_checkpoint


def seqs(*rows: list[int]) -> list[np.ndarray]:
    return [np.array(r, dtype=np.int64) for r in rows]


def info(train: list[np.ndarray], n: int, features: dict[str, np.ndarray] | None = None) -> DataInfo:
    return DataInfo(num_items=n, max_len=10, features=features or {}, train_sequences=train)


def history(*items: int) -> Batch:
    return Batch(torch.tensor([list(items)]), torch.tensor([len(items)]))


def order(scores: torch.Tensor) -> list[int]:
    """Item ids by descending score (stable: equal scores by id), padding excluded."""
    return [int(i) for i in torch.argsort(-scores[0, 1:], stable=True) + 1]


def test_pop_ranks_by_training_frequency() -> None:
    model = build_model({"name": "pop"}, info(seqs([3, 1, 3], [3, 2, 1], [4, 3]), 5))
    s = model.score_all(history(5, 2))
    assert order(s)[:3] == [3, 1, 2]  # counts 4, 2, 1
    assert s[0, 4] == s[0, 2] and s[0, 5] < s[0, 2]  # 4 and 2 once each; 5 never in training
    assert torch.isneginf(s[0, 0])
    assert torch.equal(s, model.score_all(history(1)))  # the history does not matter


def test_pop_loss_is_the_smoothed_unigram_nll() -> None:
    train = seqs([3, 1, 3], [3, 2, 1])
    model = build_model({"name": "pop"}, info(train, 4))
    batch = Batch(torch.tensor([[3, 1]]), torch.tensor([2]), targets=torch.tensor([[1, 3]]))
    p = np.array([3.0, 2.0, 4.0, 1.0])  # 1 + counts of items 1..4: 2, 1, 3, 0
    expected = -(np.log(p[0] / p.sum()) + np.log(p[2] / p.sum())) / 2
    assert model.compute_loss(batch).item() == pytest.approx(expected, rel=1e-6)


def test_cooc_hand_computed_and_popularity_tie_break() -> None:
    # last item 1. Weights: 2 -> 1 (seq 1), 3 -> 1/2 (seq 1) + 1 (seq 2) = 1.5, 5 -> 1 (seq 2), 4 -> 1/2 (seq 2).
    # 2 and 5 tie at 1.0; 2 is more popular (3 times vs once) and wins. 6 never meets 1: popularity only.
    train = seqs([1, 2, 3], [3, 1, 5, 4], [2, 6], [2, 6])
    model = build_model({"name": "cooc"}, info(train, 7))
    s = model.score_all(history(6, 1))[0]
    assert s.dtype == torch.float64
    assert order(s[None]) == [
        3,
        2,
        5,
        4,
        1,
        6,
        7,
    ]  # 1 itself (not masked) and 6: popularity 2 each; 7: never seen
    assert float(s[3]) == pytest.approx(1.5, abs=0.1) and float(s[4]) == pytest.approx(0.5, abs=0.1)
    assert 1.0 <= float(s[5]) < float(s[2]) < 1.1  # the tie-break stays below the gap to the next weight
    # without distance weighting every pair counts 1: 3 -> 2, then 2, 5, 4 tie at 1 (popularity: 2 first)
    flat = build_model({"name": "cooc", "distance_weighted": False}, info(train, 7))
    assert order(flat.score_all(history(1)))[:4] == [3, 2, 4, 5]  # 4 and 5 once each: lower id first (stable)


def test_cooc_directed_and_window() -> None:
    train = seqs([1, 2, 3, 4])
    directed = build_model({"name": "cooc", "directed": True, "window": 1}, info(train, 5))
    s = directed.score_all(history(2))[0]
    assert order(s[None])[0] == 3  # the only item that ever followed 2 directly
    assert s[1] < 0.5 and s[4] < 0.5  # 1 came before 2; 4 is two steps after: outside the window
    undirected = build_model({"name": "cooc", "window": 1}, info(train, 5))
    s = undirected.score_all(history(2))[0]
    assert s[1] > 0.5 and s[3] > 0.5 and s[4] < 0.5


@pytest.mark.parametrize("weighted", [True, False])
def test_pair_counts_with_a_large_window_equals_graphs_cooccurrence(weighted: bool) -> None:
    rng = np.random.default_rng(0)
    train = [rng.integers(1, 9, size=int(rng.integers(2, 9))) for _ in range(30)]
    ref = cooccurrence(train, 8, weighted).toarray()
    windowed = pair_counts(train, 8, weighted, window=100).toarray()
    np.testing.assert_allclose(windowed, ref, rtol=1e-6)
    directed = pair_counts(train, 8, weighted, directed=True).toarray()
    np.testing.assert_allclose(directed + directed.T, ref, rtol=1e-6)


def test_csr_rows_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    train = [rng.integers(1, 12, size=6) for _ in range(10)]
    w = cooccurrence(train, 11)
    rows = torch.tensor([3, 0, 7, 3, 11])
    dense = csr_rows(
        torch.from_numpy(w.indptr.astype(np.int64)),
        torch.from_numpy(w.indices.astype(np.int64)),
        torch.from_numpy(w.data),
        rows,
        12,
    )
    np.testing.assert_array_equal(dense.numpy(), w.toarray()[rows.numpy()])


def test_cooc_has_no_leakage_from_validation_and_test_items() -> None:
    # user 0: train [1, 2, 3], valid 4, test 5. The pairs (3, 4), (4, 5) and items 4, 5 exist only in valid/test.
    sequences = seqs([1, 2, 3, 4, 5], [2, 1, 3, 6, 6])
    data = ProcessedDataset(
        name="hand",
        sequences=sequences,
        user_tokens=["u0", "u1"],
        item_tokens=[f"i{i}" for i in range(1, 7)],
        item_keys=[f"i{i}" for i in range(1, 7)],
        features={},
        manifest={"fingerprint": "0" * 64},
    )
    cfg = resolve_config(None, ["train.progress=false"], model="cooc")
    model = trainer_mod.make_experiment(cfg, data).model  # the trainer's own DataInfo (training parts)
    s = model.score_all(history(1, 2, 3))[0]
    assert float(s[4]) == 0.0 and float(s[5]) == 0.0 and float(s[6]) == 0.0  # no pair, no training count
    assert float(s[1]) > 0 and float(s[2]) > 0


def test_featsim_ranks_identical_features_first() -> None:
    rng = np.random.default_rng(2)
    table = np.zeros((7, 4), dtype=np.float32)
    table[1:] = rng.normal(size=(6, 4))
    table[5] = 3.0 * table[2]  # same direction as item 2: cosine 1
    table[6] = 0.0  # an item without features
    model = build_model({"name": "featsim"}, info(seqs([1, 2]), 6, {"style": table, "other": -table}))
    s = model.score_all(history(1, 2))[0]
    assert order(s[None])[:2] in ([2, 5], [5, 2])  # the item itself and its copy, cosine 1
    assert float(s[5]) == pytest.approx(1.0, abs=1e-6) and float(s[6]) == 0.0
    other = build_model(
        {"name": "featsim", "feature": "other"}, info(seqs([1, 2]), 6, {"style": table, "other": -table})
    )
    torch.testing.assert_close(other.score_all(history(1, 2)), s[None])  # cosine of -x with -y is the same


def test_featsim_last_n_is_the_mean_cosine_of_the_last_items() -> None:
    rng = np.random.default_rng(3)
    table = np.zeros((6, 5), dtype=np.float32)
    table[1:] = rng.normal(size=(5, 5))
    model = build_model({"name": "featsim", "last_n": 2}, info(seqs([1, 2]), 5, {"x": table}))
    unit = table[1:] / np.linalg.norm(table[1:], axis=1, keepdims=True)
    s = model.score_all(history(4, 1, 3))[0, 1:].numpy()
    np.testing.assert_allclose(s, (unit @ unit[0] + unit @ unit[2]) / 2, rtol=1e-5, atol=1e-6)
    short = model.score_all(history(3))[0, 1:].numpy()  # one item only: its own cosine
    np.testing.assert_allclose(short, unit @ unit[2], rtol=1e-5, atol=1e-6)


def test_featsim_config_errors() -> None:
    with pytest.raises(ConfigError, match="needs a modality feature table"):
        build_model({"name": "featsim"}, info(seqs([1, 2]), 3))
    with pytest.raises(ConfigError, match=r"feature \('nope'\)"):
        build_model(
            {"name": "featsim", "feature": "nope"}, info(seqs([1, 2]), 3, {"x": np.zeros((4, 2), "f4")})
        )
    with pytest.raises(ConfigError, match=r"last_n \(0\)"):
        build_model({"name": "featsim", "last_n": 0}, info(seqs([1, 2]), 3, {"x": np.zeros((4, 2), "f4")}))
    with pytest.raises(ConfigError, match=r"window \(-1\)"):
        build_model({"name": "cooc", "window": -1}, info(seqs([1, 2]), 3))


@pytest.mark.parametrize("name", ["pop", "cooc", "featsim"])
def test_references_have_no_parameters_and_a_finite_loss(name: str, tiny_data) -> None:
    split = Split(tiny_data.sequences)
    inf = DataInfo(
        tiny_data.num_items, 20, tiny_data.features, [split.train_part(u) for u in range(split.num_users)]
    )
    model = build_model({"name": name}, inf)
    assert not model.trainable and not list(model.parameters()) and model.state_dict()
    batch = train_batches(build_train_rows(split, 20), DataConfig(batch_size=64), epoch_seed=0)[0]
    loss = model.compute_loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and not loss.requires_grad


@pytest.mark.parametrize("name", ["pop", "cooc", "featsim"])
def test_train_writes_a_run_without_epochs_and_evaluate_reproduces_it(
    name: str, tiny_dir, tiny_data, tmp_path, capsys
) -> None:
    run = tmp_path / "run"
    cfg = resolve_config(None, ["train.progress=false"], model=name)
    metrics = trainer_mod.train(cfg, tiny_data, run)
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["test"] == metrics["test"] and on_disk["valid"] == metrics["valid"]
    assert on_disk["epochs"] == 0 and on_disk["best_epoch"] == 0 and on_disk["seconds_per_epoch"] == 0
    assert 0.0 < on_disk["test"]["recall@20"] <= 1.0
    for f in ("config.yaml", "run.json", "best.pt", "last.pt", "log.jsonl"):
        assert (run / f).is_file()
    assert load_checkpoint(run / "last.pt")["epoch"] == 0 and (run / "log.jsonl").read_text() == ""
    assert not list(run.glob(".*tmp*"))
    assert main(["evaluate", "--run", str(run)]) == 0
    assert "test metrics match" in capsys.readouterr().out
    with pytest.raises(MdsrecError, match="already holds a run"):
        trainer_mod.train(cfg, tiny_data, run)
    # interrupted after the checkpoints, before metrics.json: resume evaluates from best.pt
    (run / "metrics.json").unlink()
    (run / "best.pt").unlink()  # even a lost best.pt is rebuilt from last.pt
    again = trainer_mod.train(None, tiny_data, run, resume=True)
    assert again["test"] == metrics["test"] and again["epochs"] == 0


def test_cooc_beats_pop_on_the_synthetic_data(tiny_data, tmp_path) -> None:
    """The synthetic users stay inside one cluster: the last item's neighbours must beat global popularity."""
    res = {}
    for name in ("pop", "cooc", "featsim"):
        cfg = resolve_config(None, ["train.progress=false"], model=name)
        res[name] = trainer_mod.train(cfg, tiny_data, tmp_path / name)["test"]["ndcg@20"]
    assert res["cooc"] > res["pop"]
