"""UniSRec, MMMLP and MISSRec: model-specific invariants (tiny, CPU). The shared ones (shapes, padding, causality of
NextItemModels, all-prefix == materialised, checkpoints) are in test_models.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mdsrec.config import DataConfig, ExperimentConfig
from mdsrec.data.protocol import Batch, Split, build_train_rows, train_batches
from mdsrec.errors import ConfigError
from mdsrec.models import DataInfo, build_model
from mdsrec.models.missrec import MISSRec
from mdsrec.models.mmmlp import MMMLP, MMMLPCausalTokenMixer
from mdsrec.models.unisrec import TRANSFERABLE, UniSRec, UniSRecConfig, UniSRecWhitening
from mdsrec.training.checkpoint import save_checkpoint
from tests.conftest import TINY_MODEL


def info_of(data, max_len: int = 10, features: dict[str, np.ndarray] | None = None) -> DataInfo:
    split = Split(data.sequences)
    train = [split.train_part(u) for u in range(split.num_users)]
    return DataInfo(data.num_items, max_len, data.features if features is None else features, train)


def make(name: str, info: DataInfo, **over):
    torch.manual_seed(0)
    return build_model({"name": name, **TINY_MODEL[name], **over}, info)


def random_items(n_items: int, b: int = 4, n: int = 9, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, n_items + 1, (b, n), generator=g)


def a_train_batch(data, max_len: int = 10) -> Batch:
    rows = build_train_rows(Split(data.sequences), max_len)
    return train_batches(rows, DataConfig(max_len=max_len, batch_size=64), epoch_seed=0)[0]


# --------------------------------------------------------------------------------------------------------------
# UniSRec
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_unisrec_scores_are_cosines_over_temperature(tiny_data, temperature: float) -> None:
    model = make("unisrec", info_of(tiny_data), temperature=temperature).eval()
    items = random_items(tiny_data.num_items)
    scores = model.score_all(Batch(items, torch.full((4,), 9)))[:, 1:]  # [B, N]
    assert scores.abs().max() <= 1.0 / temperature + 1e-4
    h = model.encode(items, torch.full((4,), 9))
    torch.testing.assert_close(h.norm(dim=-1), torch.ones(4, 9))  # normalised states
    table = model.item_table()[1:]  # row 0 (padding) is zero
    torch.testing.assert_close(table.norm(dim=-1) * temperature, torch.ones(table.size(0)))


def test_unisrec_moe_gates_sum_to_one_and_noise_only_in_training(tiny_data) -> None:
    model = make("unisrec", info_of(tiny_data), adaptor_dropout=0.0)
    assert isinstance(model, UniSRec)
    x = model.features[1:]  # [N, d]
    with torch.no_grad():
        model.adaptor.w_gate.normal_(0, 1.0)
    model.train()
    g1, g2 = model.adaptor.gates(x), model.adaptor.gates(x)
    torch.testing.assert_close(g1.sum(dim=-1), torch.ones(x.size(0)))
    assert (g1 >= 0).all() and not torch.allclose(g1, g2)  # noisy gating in training
    model.eval()
    e1, e2 = model.adaptor.gates(x), model.adaptor.gates(x)
    torch.testing.assert_close(e1, e2)
    assert (e1.max(dim=-1).values - e1.min(dim=-1).values).max() > 0.05  # the gate depends on x
    quiet = make("unisrec", info_of(tiny_data), gate_noise=False, adaptor_dropout=0.0).train()
    assert isinstance(quiet, UniSRec)
    torch.testing.assert_close(quiet.adaptor.gates(x), quiet.adaptor.gates(x))
    torch.testing.assert_close(
        quiet.adaptor.gates(x), torch.full((x.size(0), 3), 1 / 3)
    )  # zero init: uniform


def test_unisrec_whitening_is_x_minus_b_times_w_in_value_and_gradient() -> None:
    torch.manual_seed(0)
    expert = UniSRecWhitening(6, 4, dropout=0.0)
    with torch.no_grad():
        expert.bias.normal_()
    x = torch.randn(5, 6)  # a frozen feature table: no gradient
    out = expert(x)  # [5, 4]
    ref_w, ref_b = (
        expert.lin.weight.detach().clone().requires_grad_(),
        expert.bias.detach().clone().requires_grad_(),
    )
    ref = (x - ref_b) @ ref_w.T  # the paper's (x - b) W
    torch.testing.assert_close(out, ref)
    up = torch.randn(5, 4)
    (out * up).sum().backward()
    (ref * up).sum().backward()
    assert expert.bias.grad is not None and expert.lin.weight.grad is not None
    torch.testing.assert_close(expert.bias.grad, ref_b.grad)
    torch.testing.assert_close(expert.lin.weight.grad, ref_w.grad)
    assert expert.bias.grad.abs().sum() > 0


def test_unisrec_without_ids_scores_items_by_text_only(tiny_data) -> None:
    feats = {k: v.copy() for k, v in tiny_data.features.items()}
    first = next(iter(feats))
    feats[first][7] = feats[first][3]  # items 3 and 7 share their text
    items = random_items(tiny_data.num_items)
    inductive = make("unisrec", info_of(tiny_data, features=feats), use_id=False).eval()
    assert inductive.item_emb is None
    s = inductive.score_all(Batch(items, torch.full((4,), 9)))
    torch.testing.assert_close(s[:, 3], s[:, 7])
    transductive = make("unisrec", info_of(tiny_data, features=feats), use_id=True).eval()
    s = transductive.score_all(Batch(items, torch.full((4,), 9)))
    assert not torch.allclose(s[:, 3], s[:, 7])  # the ID embeddings tell them apart


def test_unisrec_text_feature_picks_the_table(tiny_data) -> None:
    names = list(tiny_data.features)
    model = make("unisrec", info_of(tiny_data), text_feature=names[1])
    assert isinstance(model, UniSRec) and model.feature_name == names[1]
    assert np.array_equal(model.features.numpy(), tiny_data.features[names[1]])
    with pytest.raises(ConfigError, match=r"text_feature \('nope'\)"):
        make("unisrec", info_of(tiny_data), text_feature="nope")
    both = make(
        "unisrec", info_of(tiny_data), text_feature=[names[1], names[0]]
    )  # concatenated, in this order
    assert isinstance(both, UniSRec) and both.feature_name == f"{names[1]}+{names[0]}"
    expected = np.concatenate([tiny_data.features[names[1]], tiny_data.features[names[0]]], axis=1)
    assert np.array_equal(both.features.numpy(), expected)
    assert both.adaptor.experts[0].lin.in_features == expected.shape[1]
    with pytest.raises(ConfigError, match="non-empty list without repeats"):
        make("unisrec", info_of(tiny_data), text_feature=[names[0], names[0]])


def other_catalogue(data, n_items: int = 37, seed: int = 5) -> DataInfo:
    """A different data set: another catalogue size, the same feature size (as two domains with one text encoder)."""
    rng = np.random.default_rng(seed)
    feats = {}
    for name, table in data.features.items():
        t = np.zeros((n_items + 1, table.shape[1]), dtype=np.float32)
        t[1:] = rng.normal(size=(n_items, table.shape[1]))
        feats[name] = t
    seqs = [rng.integers(1, n_items + 1, size=6) for _ in range(20)]
    return DataInfo(n_items, 10, feats, seqs)


def pretrained_checkpoint(data, path: Path, **over) -> UniSRec:
    """A UniSRec 'pre-trained' on the tiny data (weights moved away from their init) saved as a run's best.pt."""
    source = make("unisrec", info_of(data), **over)
    assert isinstance(source, UniSRec)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    cfg = ExperimentConfig(model={"name": "unisrec", **TINY_MODEL["unisrec"], **over})
    save_checkpoint(path, {"config": cfg.to_dict(), "model_state": source.state_dict()})
    return source


def transferred(info: DataInfo, **over):
    """A new UniSRec run's model as the trainer starts it: built, then its init_from checkpoint applied."""
    from mdsrec.training.transfer import load_transferable

    model = make("unisrec", info, **over)
    load_transferable(model, over["init_from"])
    return model


def test_unisrec_init_from_loads_transferable_weights_across_catalogues(tiny_data, tmp_path) -> None:
    source = pretrained_checkpoint(tiny_data, tmp_path / "best.pt")
    info = other_catalogue(tiny_data)
    fresh = make("unisrec", info)
    assert torch.equal(  # building alone reads no checkpoint: the transfer is the trainer's step
        make("unisrec", info, init_from=str(tmp_path / "best.pt")).state_dict()["pos_emb.weight"],
        fresh.state_dict()["pos_emb.weight"],
    )
    target = transferred(info, init_from=str(tmp_path / "best.pt"))
    src, tgt, new = source.state_dict(), target.state_dict(), fresh.state_dict()
    transferable = [k for k in tgt if k.startswith(TRANSFERABLE)]
    assert any(k.startswith("adaptor.experts.") for k in transferable)
    assert any(k.startswith("layers.") for k in transferable) and "pos_emb.weight" in transferable
    for k in transferable:
        assert torch.equal(tgt[k], src[k]), k
    assert tgt["item_emb.weight"].shape == (38, 16) != src["item_emb.weight"].shape
    assert torch.equal(tgt["item_emb.weight"], new["item_emb.weight"])  # IDs start fresh
    assert torch.equal(tgt["features"], torch.from_numpy(info.features[next(iter(info.features))]))
    # the fine-tuned model scores with the transferred adaptor: its item table differs from a fresh model's
    assert not torch.allclose(target.eval().item_table(), fresh.eval().item_table())


def test_unisrec_freeze_encoder_trains_only_adaptor_and_ids(tiny_data, tmp_path) -> None:
    pretrained_checkpoint(tiny_data, tmp_path / "best.pt")
    model = transferred(info_of(tiny_data), init_from=str(tmp_path / "best.pt"), freeze_encoder=True)
    model.compute_loss(a_train_batch(tiny_data)).backward()
    for name, p in model.named_parameters():
        frozen = name.startswith(("layers.", "pos_emb."))
        assert p.requires_grad != frozen, name
        assert (p.grad is None) == frozen, name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adaptor.parameters())


def test_unisrec_freeze_encoder_needs_init_from(tiny_data) -> None:
    with pytest.raises(ValueError, match=r"freeze_encoder \(True\) needs init_from"):
        UniSRecConfig(freeze_encoder=True)
    with pytest.raises(ConfigError, match="needs init_from"):
        make("unisrec", info_of(tiny_data), freeze_encoder=True)


def test_unisrec_init_from_refuses_mismatches(tiny_data, tmp_path) -> None:
    pretrained_checkpoint(tiny_data, tmp_path / "wide.pt", hidden_size=32)
    with pytest.raises(ConfigError, match=r"shape .*hidden_size"):
        transferred(info_of(tiny_data), init_from=str(tmp_path / "wide.pt"))
    sasrec = build_model({"name": "sasrec", **TINY_MODEL["sasrec"]}, info_of(tiny_data))
    cfg = ExperimentConfig(model={"name": "sasrec"})
    save_checkpoint(tmp_path / "sasrec.pt", {"config": cfg.to_dict(), "model_state": sasrec.state_dict()})
    with pytest.raises(ConfigError, match="checkpoint of model 'sasrec'"):
        transferred(info_of(tiny_data), init_from=str(tmp_path / "sasrec.pt"))


def test_a_fine_tuned_unisrec_run_loads_without_its_pre_training_checkpoint(tiny_data, tmp_path) -> None:
    from mdsrec.training.trainer import load_run, train

    pretrained_checkpoint(tiny_data, tmp_path / "pre.pt")
    model = {"name": "unisrec", **TINY_MODEL["unisrec"], "init_from": str(tmp_path / "pre.pt")}
    cfg = ExperimentConfig(model=model)
    cfg.train.epochs, cfg.train.progress, cfg.data.max_len = 1, False, 10
    train(cfg, tiny_data, tmp_path / "run")
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model_state"]
    (
        tmp_path / "pre.pt"
    ).unlink()  # the pre-training run is gone: its parameters live in the run's own checkpoint
    exp = load_run(tmp_path / "run", tiny_data)
    for k, v in exp.model.state_dict().items():
        assert torch.equal(v, best[k]), k


# --------------------------------------------------------------------------------------------------------------
# MMMLP
# --------------------------------------------------------------------------------------------------------------


def test_mmmlp_token_mixer_short_window_equals_padded_window() -> None:
    torch.manual_seed(0)
    mixer = MMMLPCausalTokenMixer(hidden=6, max_len=10, expansion=3, dropout=0.0).eval()
    x = torch.randn(2, 4, 6)
    garbage = torch.randn(2, 6, 6) * 10  # anything after the window
    torch.testing.assert_close(mixer(x), mixer(torch.cat([x, garbage], dim=1))[:, :4])


def test_mmmlp_token_mixer_mixes_earlier_positions_only() -> None:
    torch.manual_seed(0)
    mixer = MMMLPCausalTokenMixer(hidden=6, max_len=8, expansion=2, dropout=0.0).eval()
    x = torch.randn(1, 8, 6)
    base = mixer(x)
    for j in range(8):
        y = x.clone()
        y[:, j] += torch.randn(6)  # not a constant shift: the pre-LayerNorm would remove it
        diff = (mixer(y) - base).abs().sum(dim=-1)[0]  # [L]
        assert (diff[:j] == 0).all()  # never earlier positions
        assert (diff[j:] > 0).all()  # but itself and every later one
    loss = mixer(x).sum()
    loss.backward()
    assert mixer.w1.grad is not None and mixer.w2.grad is not None
    assert (mixer.w1.grad * (1 - mixer.mask1)).abs().sum() == 0  # masked weights never learn
    assert (mixer.w2.grad * (1 - mixer.mask2)).abs().sum() == 0


def test_mmmlp_token_mixer_starts_at_pytorch_default_init(tiny_data) -> None:
    torch.manual_seed(0)
    mixer = MMMLPCausalTokenMixer(hidden=4, max_len=50, expansion=4, dropout=0.0)
    for p, fan_in in ((mixer.w1, 50), (mixer.b1, 50), (mixer.w2, 200), (mixer.b2, 200)):
        bound = fan_in**-0.5  # uniform(+-1/sqrt(fan_in)), as an untouched Conv1d
        assert p.abs().max() <= bound and p.abs().max() > 0.9 * bound
        assert abs(p.std().item() - bound / 3**0.5) < 0.15 * bound
    model = make("mmmlp", info_of(tiny_data))  # init_weights must not overwrite them (max_len 10: bound 0.32)
    assert isinstance(model, MMMLP)
    w1 = model.streams[0].blocks[0][0].w1
    assert 0.3 < w1.abs().max() <= 10**-0.5


def test_mmmlp_every_modality_stream_reaches_the_scores(tiny_data) -> None:
    model = make("mmmlp", info_of(tiny_data)).eval()
    assert isinstance(model, MMMLP) and len(model.streams) == 1 + len(tiny_data.features)
    b = Batch(random_items(tiny_data.num_items), torch.full((4,), 9))
    base = model.score_all(b)
    for i in range(len(tiny_data.features)):
        buf = model.features.table(i)
        saved = buf.clone()
        buf.mul_(-1.0)
        assert not torch.allclose(model.score_all(b), base)
        buf.copy_(saved)
    torch.testing.assert_close(model.score_all(b), base)


def test_mmmlp_full_token_mixing_is_the_unmasked_mixer_over_the_max_len_window(tiny_data) -> None:
    info = info_of(tiny_data)
    model = make("mmmlp", info, token_mixing="full").eval()
    assert isinstance(model, MMMLP) and model.full_mixing and MMMLP.needs_materialized(model.cfg)
    mixer = model.streams[0].blocks[0][0]
    assert bool((mixer.mask1 == 1).all()) and bool((mixer.mask2 == 1).all())  # nothing masked
    items = random_items(tiny_data.num_items, n=6)
    lengths = torch.tensor([6, 5, 3, 1])
    items[torch.arange(6)[None, :] >= lengths[:, None]] = 0  # right padding
    scores = model.score_all(Batch(items, lengths))
    padded = torch.nn.functional.pad(items, (0, info.max_len - 6))  # the window as the original feeds it
    torch.testing.assert_close(model.score_all(Batch(padded, lengths)), scores)
    # the last real position reads every position of the window: a change after it (a real item where the original
    # has padding) changes it, which the causal mixer never allows
    later = items.clone()
    later[1, 5] = 1
    assert not torch.allclose(model.encode(later, lengths)[1, 4], model.encode(items, lengths)[1, 4])
    causal = make("mmmlp", info).eval()
    torch.testing.assert_close(causal.encode(later, lengths)[1, :5], causal.encode(items, lengths)[1, :5])


def test_mmmlp_full_token_mixing_trains_only_materialized_rows(tiny_data, tmp_path) -> None:
    from mdsrec.config import resolve_config
    from mdsrec.training.trainer import train

    over = [f"model.{k}={v}" for k, v in TINY_MODEL["mmmlp"].items()]
    sets = ["model.token_mixing=full", "train.epochs=1", "train.progress=false", "data.max_len=10", *over]
    cfg = resolve_config(None, sets, model="mmmlp")
    with pytest.raises(
        ConfigError, match=r"not causal \(model.token_mixing=full.*'all_prefix'.*=materialized"
    ):
        train(cfg, tiny_data, tmp_path / "a")
    model = make("mmmlp", info_of(tiny_data), token_mixing="full")
    with pytest.raises(ValueError, match="one target per row"):  # the model's own guard, without the trainer
        model.compute_loss(a_train_batch(tiny_data))
    cfg = resolve_config(None, [*sets, "data.train_mode=materialized"], model="mmmlp")
    metrics = train(cfg, tiny_data, tmp_path / "b")
    assert np.isfinite(metrics["test"]["ndcg@20"]) and metrics["epochs"] == 1


def test_mmmlp_refuses_a_token_mixing_it_does_not_know(tiny_data) -> None:
    with pytest.raises(ConfigError, match=r"token_mixing \('bidirectional'\) must be 'causal' or 'full'"):
        make("mmmlp", info_of(tiny_data), token_mixing="bidirectional")


def test_mmmlp_refuses_data_without_features(tiny_data) -> None:
    with pytest.raises(ConfigError, match="MMMLP needs at least one modality"):
        make("mmmlp", info_of(tiny_data, features={}))


# --------------------------------------------------------------------------------------------------------------
# MISSRec
# --------------------------------------------------------------------------------------------------------------


def test_missrec_causality_and_one_pass_equals_every_prefix(tiny_data) -> None:
    model = make("missrec", info_of(tiny_data)).eval()
    assert isinstance(model, MISSRec)
    items = random_items(tiny_data.num_items)
    lengths = torch.full((4,), 9)
    h, reg, n = model.represent(items, lengths)  # [B, 9, D], [B, 9], [B, 9]
    changed = items.clone()
    changed[:, 6:] = random_items(tiny_data.num_items, n=3, seed=7)
    h2, reg2, n2 = model.represent(changed, lengths)
    torch.testing.assert_close(h2[:, :6], h[:, :6])  # later items never leak back
    torch.testing.assert_close(reg2[:, :6], reg[:, :6])
    torch.testing.assert_close(n2[:, :6], n[:, :6])
    assert not torch.allclose(h2[:, 6:], h[:, 6:])
    for p in range(1, 10):
        alone = model.score_all(Batch(items[:, :p], torch.full((4,), p)))
        later_changed = model.score_all(Batch(changed[:, :p], torch.full((4,), p)))
        one_pass = model.scores(h[:, p - 1])
        torch.testing.assert_close(alone[:, 1:], one_pass[:, 1:], rtol=1e-4, atol=1e-5)
        if p <= 6:
            torch.testing.assert_close(later_changed, alone)


def test_missrec_interest_table_is_the_centroid_of_adapted_tokens(tiny_data) -> None:
    model = make("missrec", info_of(tiny_data)).eval()
    assert isinstance(model, MISSRec)
    k = model.cfg.k
    table = model.interest_table()  # [M k, D]
    ids = model.interest_ids  # [N+1, M]
    assert table.shape == (len(tiny_data.features) * k, 16)
    for i in range(len(model.tokens)):
        tokens = model.tokens.project_table(i)  # [N+1, D]
        labels = ids[1:, i]
        assert labels.min() == i * k and labels.max() == i * k + k - 1  # global ids, every cluster used
        for c in range(i * k, (i + 1) * k):
            torch.testing.assert_close(tokens[1:][labels == c].mean(dim=0), table[c], rtol=1e-4, atol=1e-5)
    assert not model.interest_table().requires_grad  # detached like the original's buffer


def test_missrec_repeated_interests_do_not_add_memory(tiny_data) -> None:
    """An item repeated later adds no new interest tokens: the pooled interest states of the prefix (their count and
    the norm of their sum) are unchanged by appending a repeat, and change when a new cluster appears."""
    model = make("missrec", info_of(tiny_data)).eval()
    assert isinstance(model, MISSRec)
    ids = model.interest_ids
    a = 1
    new = next(j for j in range(2, tiny_data.num_items + 1) if bool((ids[j] != ids[a]).all()))
    items = torch.tensor([[a, a, new]])
    _, reg, n = model.represent(items, torch.tensor([3]))
    torch.testing.assert_close(reg[0, 1], reg[0, 0])
    assert not torch.allclose(reg[0, 2], reg[0, 1])
    m = len(tiny_data.features)  # one interest token per modality per new item
    assert n[0].tolist() == [m, m, 2 * m]


def test_missrec_scores_bounded_and_loss_has_the_regulariser(tiny_data) -> None:
    model = make("missrec", info_of(tiny_data), gamma=0.0).eval()
    b = Batch(random_items(tiny_data.num_items), torch.full((4,), 9))
    assert model.score_all(b)[:, 1:].abs().max() <= 1 / 0.07 + 1e-3
    batch = a_train_batch(tiny_data)
    plain = model.compute_loss(batch)
    heavy = make("missrec", info_of(tiny_data), gamma=1.0).eval()
    assert isinstance(heavy, MISSRec)
    _, sq, n = heavy.represent(batch.items, batch.lengths)
    assert batch.targets is not None
    t = batch.targets > 0
    # the original's scale: sum over the trained prefixes of ||(n_j / N) sum_j||^2 / D, N = max_j n_j
    expected = plain + sum((n[t][j] / n[t].max()) ** 2 * sq[t][j] for j in range(int(t.sum())))
    torch.testing.assert_close(heavy.compute_loss(batch), expected)
    assert int(t.sum()) > 1 and (expected - plain).item() > sq[t].mean().item() / 4  # a sum, not a mean


def test_missrec_dynamic_fusion_weight_learns(tiny_data) -> None:
    model = make("missrec", info_of(tiny_data))
    assert isinstance(model, MISSRec) and model.fusion_factor is not None
    model.compute_loss(a_train_batch(tiny_data)).backward()
    assert model.fusion_factor.grad is not None and model.fusion_factor.grad.abs() > 0
    static = make("missrec", info_of(tiny_data), dynamic_fusion=False, use_id=False)
    assert isinstance(static, MISSRec) and static.fusion_factor is None and static.item_emb is None


def test_missrec_k_means_runs_when_a_run_is_built_and_never_for_a_loaded_model(
    tiny_data, monkeypatch, tmp_path
) -> None:
    import dataclasses

    import mdsrec.models.missrec as missrec_mod
    from mdsrec.atomic import torch_save
    from mdsrec.training.checkpoint import load_checkpoint, load_model_state

    calls: list[int] = []
    real = missrec_mod.kmeans

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(missrec_mod, "kmeans", counting)
    trained = make("missrec", info_of(tiny_data)).eval()
    m = len(tiny_data.features)
    assert (
        isinstance(trained, MISSRec) and calls == [trained.cfg.k] * m
    )  # one k-means per modality, when built
    batch = Batch(random_items(tiny_data.num_items), torch.full((4,), 9))
    scores = trained.score_all(batch)
    trained.state_dict()
    assert len(calls) == m  # the forward pass and saving cluster nothing more
    again = make("missrec", info_of(tiny_data)).eval()
    assert torch.equal(again.interest_ids, trained.interest_ids)  # the seeded k-means: the same clusters
    torch_save({"checkpoint_version": 1, "model_state": trained.state_dict()}, tmp_path / "m.pt")
    state = load_checkpoint(tmp_path / "m.pt")["model_state"]
    calls.clear()
    loaded = make("missrec", dataclasses.replace(info_of(tiny_data), saved_state=state)).eval()
    assert (
        isinstance(loaded, MISSRec) and calls == []
    )  # rebuilt to load a checkpoint: the clusters come with it
    load_model_state(loaded, state, tmp_path / "m.pt")
    torch.testing.assert_close(loaded.score_all(batch), scores)
    assert calls == []


def test_missrec_refuses_too_many_clusters(tiny_data) -> None:
    with pytest.raises(ConfigError, match=r"k \(500\) must not exceed"):
        make("missrec", info_of(tiny_data), k=500)
    with pytest.raises(ConfigError, match=r"interest_ratio \(1.5\) must lie in \[0, 1\]"):
        make("missrec", info_of(tiny_data), interest_ratio=1.5)


def test_missrec_interest_ratio_sets_clusters_per_modality_from_the_catalogue(tiny_data) -> None:
    n = tiny_data.num_items
    feats = dict(tiny_data.features)
    name = next(iter(feats))
    few = feats[name].copy()
    few[1:] = few[1 + np.arange(n) % 5]  # only 5 distinct vectors: no more than 5 clusters for it
    feats[name] = few
    model = make(
        "missrec", info_of(tiny_data, features=feats), interest_ratio=0.5, k=3
    )  # the ratio wins over k
    assert isinstance(model, MISSRec)
    assert model.clusters == [5] + [-(-n // 2)] * (len(feats) - 1)
    ids, start = model.interest_ids[1:], 0  # [N, M]
    for i, k in enumerate(
        model.clusters
    ):  # modality i owns the global ids [start, start + k), every one used
        assert set(ids[:, i].tolist()) == set(range(start, start + k))
        start += k
    assert model.interest_table().size(0) == start
    torch.testing.assert_close(  # the capped modality: one cluster per distinct vector, its centre that vector
        model.centres_0[model.interest_ids[1:, 0]], torch.from_numpy(few[1:])
    )
    batch = a_train_batch(tiny_data)  # forward, loss and scores with unequal cluster counts
    loss = model.compute_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    scores = model.eval().score_all(Batch(random_items(n), torch.full((4,), 9)))
    assert scores.shape == (4, n + 1) and torch.isfinite(scores[:, 1:]).all()
    assert make("missrec", info_of(tiny_data), k=3).clusters == [3] * len(feats)  # ratio 0: k as given


# --------------------------------------------------------------------------------------------------------------
# UniSRec and MISSRec: the whole-catalogue item table is cached in evaluation
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "compute"), [("unisrec", "compute_item_table"), ("missrec", "compute_item_tables")]
)
def test_item_table_is_built_once_per_weights_in_evaluation(
    name: str, compute: str, tiny_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make(name, info_of(tiny_data)).eval()
    calls = []
    real = getattr(model, compute)

    def counting():
        calls.append(1)
        return real()

    monkeypatch.setattr(model, compute, counting)
    b = Batch(random_items(tiny_data.num_items), torch.full((4,), 9))
    with torch.no_grad():
        first = model.score_all(b)
        second = model.score_all(b)
    assert len(calls) == 1  # built once for both batches
    torch.testing.assert_close(first, second)
    with torch.no_grad():  # an in-place weight edit (an optimiser step, a test) invalidates it
        weight = next(p for n, p in model.named_parameters() if n.endswith(("lin.weight", "proj.0.weight")))
        weight.add_(torch.randn_like(weight))
        edited = model.score_all(b)
    assert len(calls) == 2 and not torch.allclose(edited, first)
    torch.testing.assert_close(edited, model.score_all(b))  # grad enabled: recomputed, the same values
    assert len(calls) == 3
    model.train()
    with torch.no_grad():  # training mode: never cached (the adaptor's dropout and gate noise)
        model.compute_loss(a_train_batch(tiny_data))
        model.compute_loss(a_train_batch(tiny_data))
    assert len(calls) == 5
