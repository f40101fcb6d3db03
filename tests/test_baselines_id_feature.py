"""Model-specific invariants of BERT4Rec (cloze training, [MASK] scoring) and of the feature-fused baselines
GRU4RecF, SASRecF and FDSA (their modality features reach the scores; they refuse a data set without features)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mdsrec.config import DataConfig
from mdsrec.data.protocol import Batch, build_train_rows, eval_batches, train_batches
from mdsrec.errors import ConfigError
from mdsrec.models import DataInfo, build_model
from mdsrec.models.bert4rec import BERT4Rec, append_item
from mdsrec.models.fdsa import FDSA
from mdsrec.models.modal_features import ModalityProjections
from tests.conftest import make_model

FEATURE_MODELS = ["gru4recf", "sasrecf", "fdsa"]


make = make_model


# --------------------------------------------------------------------------------------------------------------
# BERT4Rec
# --------------------------------------------------------------------------------------------------------------


def test_append_item_by_hand() -> None:
    items = torch.tensor([[1, 2, 0], [3, 4, 5], [6, 0, 0]])
    lengths = torch.tensor([2, 3, 1])
    new = torch.tensor([9, 9, 0])  # 0: nothing appended
    out, out_len = append_item(items, lengths, new, max_len=4)
    assert out.tolist() == [[1, 2, 9, 0], [3, 4, 5, 9], [6, 0, 0, 0]] and out_len.tolist() == [3, 4, 1]
    out, out_len = append_item(items, lengths, new, max_len=3)  # a full window drops its oldest item
    assert out.tolist() == [[1, 2, 9], [4, 5, 9], [6, 0, 0]] and out_len.tolist() == [3, 3, 1]
    with pytest.raises(ValueError, match="exceeds max_len"):
        append_item(items, lengths, new, max_len=2)


@pytest.mark.parametrize("mode", ["all_prefix", "materialized"])
def test_bert4rec_cloze_sequences_are_windows_of_the_training_part(mode: str, tiny_data) -> None:
    max_len = 6
    model, split = make("bert4rec", tiny_data, max_len=max_len)
    assert isinstance(model, BERT4Rec)
    rows = build_train_rows(split, max_len, mode)
    (batch,) = train_batches(
        rows, DataConfig(max_len=max_len, batch_size=10**6, train_mode=mode), epoch_seed=0
    )
    seq, lengths = model.training_sequences(batch)
    assert seq.size(1) <= max_len + 1  # the row's items (<= max_len) plus its last target, as at evaluation
    assert batch.users is not None
    covered: dict[int, set[int]] = {}
    for r in range(seq.size(0)):
        u, n = int(batch.users[r]), int(lengths[r])
        t = split.train_part(u).tolist()
        window = seq[r, :n].tolist()
        assert (seq[r, n:] == 0).all()
        assert window[-1] == int(
            batch.targets[r, int(batch.lengths[r]) - 1]
        )  # ends with the row's last target
        assert window[:-1] == batch.items[r, : int(batch.lengths[r])].tolist()[-(n - 1) :]
        ends = [
            p for p in range(len(t)) if t[max(0, p - n + 1) : p + 1] == window
        ]  # a contiguous window of t
        assert ends and (n == max_len + 1 or ends[0] == n - 1)  # full, or starting at the first item
        covered.setdefault(u, set()).update(range(ends[0] - n + 1, ends[0] + 1))
    for (
        u,
        positions,
    ) in covered.items():  # every item of the training part, the first too, can be a cloze target
        assert set(range(len(split.train_part(u)))) <= positions


def test_bert4rec_scores_the_appended_mask_position(tiny_data) -> None:
    model, split = make("bert4rec", tiny_data)
    assert isinstance(model, BERT4Rec)
    model.eval()
    b = eval_batches(split, "test", DataConfig(max_len=20, eval_batch_size=16))[0]
    with torch.no_grad():
        seq = torch.cat([b.items, torch.zeros(b.items.size(0), 1, dtype=torch.long)], 1)
        seq[torch.arange(seq.size(0)), b.lengths] = model.mask_id
        states = model.encode(seq, b.lengths + 1)
        expected = model.scores(states[torch.arange(seq.size(0)), b.lengths])
        torch.testing.assert_close(model.score_all(b), expected)


def test_bert4rec_full_window_keeps_every_item(tiny_data) -> None:
    model, _ = make("bert4rec", tiny_data, max_len=8)
    assert isinstance(model, BERT4Rec)
    assert model.pos_emb.num_embeddings == 9  # max_len history positions plus the [MASK]
    model.eval()
    items = torch.randint(1, tiny_data.num_items + 1, (4, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model.score_all(Batch(items, torch.full((4,), 8)))  # [MASK] appended after all 8 items
        seq = torch.cat([items, torch.full((4, 1), model.mask_id)], 1)  # [4, 9]
        expected = model.scores(model.encode(seq, torch.full((4,), 9))[:, 8])
        torch.testing.assert_close(full, expected)
        shorter = model.score_all(Batch(items[:, 1:], torch.full((4,), 7)))
        assert not torch.allclose(full, shorter)
        changed = items.clone()
        changed[:, 0] = (changed[:, 0] % tiny_data.num_items) + 1  # the oldest item still matters
        assert not torch.allclose(model.score_all(Batch(changed, torch.full((4,), 8))), full)


def test_bert4rec_is_bidirectional(tiny_data) -> None:
    model, _ = make("bert4rec", tiny_data)
    model.eval()
    items = torch.randint(1, tiny_data.num_items + 1, (4, 6), generator=torch.Generator().manual_seed(3))
    lengths = torch.full((4,), 6)
    changed = items.clone()
    changed[:, 4] = (changed[:, 4] % tiny_data.num_items) + 1
    with torch.no_grad():  # an earlier position sees a later item (a causal model would not)
        assert not torch.allclose(model.encode(items, lengths)[:, 0], model.encode(changed, lengths)[:, 0])
        oldest = items.clone()
        oldest[:, 0] = (oldest[:, 0] % tiny_data.num_items) + 1
        assert not torch.allclose(
            model.score_all(Batch(items, lengths)), model.score_all(Batch(oldest, lengths))
        )


def test_bert4rec_columns_are_items_and_mask_is_never_scored(tiny_data) -> None:
    model, _ = make("bert4rec", tiny_data)
    assert isinstance(model, BERT4Rec)
    model.eval()
    n = tiny_data.num_items
    assert model.mask_id == n + 1 and model.item_emb.num_embeddings == n + 2
    items = torch.randint(
        1, n - 1, (5, 7), generator=torch.Generator().manual_seed(4)
    )  # item n never in them
    b = Batch(items, torch.tensor([7, 6, 3, 1, 5]))
    gen = torch.Generator().manual_seed(5)
    # A random shift: a constant one would move no score, since the head's LayerNorm output sums to zero.
    shift = torch.randn(model.cfg.hidden_size, generator=gen)  # [D]
    h = torch.randn(5, model.cfg.hidden_size, generator=gen)  # [5, D] a fixed hidden state
    with torch.no_grad():
        before = model.score_all(b)
        assert before.shape == (5, n + 1) and torch.isneginf(before[:, 0]).all()
        model.item_emb.weight[n] += shift  # the last real item: only its own column moves
        after = model.score_all(b)
        assert not torch.allclose(after[:, n], before[:, n])
        torch.testing.assert_close(after[:, :n], before[:, :n])
        fixed = model.scores(h)  # [5, N+1]
        model.item_emb.weight[n + 1] += shift  # [MASK]
        torch.testing.assert_close(model.scores(h), fixed)  # not a column: scoring h does not see it
        assert not torch.allclose(model.score_all(b)[:, 1:], after[:, 1:])  # but it is the scored input


def test_bert4rec_encoder_sees_mask_at_masked_positions_only(tiny_data, monkeypatch) -> None:
    """No leakage: the encoder gets [MASK] at every masked position and the original items everywhere else, and the
    loss targets are the original items of the masked positions."""
    model, split = make("bert4rec", tiny_data, mask_prob=0.3)
    assert isinstance(model, BERT4Rec)
    batch = train_batches(build_train_rows(split, 20), DataConfig(batch_size=64), epoch_seed=0)[0]
    seen: dict[str, torch.Tensor] = {}
    encode, factors = model.encode, model.factors

    def spy_encode(items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        seen["items"], seen["lengths"] = items.clone(), lengths.clone()
        return encode(items, lengths)

    def spy_factors(h: torch.Tensor):
        f = factors(h)
        seen["scores"] = f.scores().detach()
        seen["scores"][:, 0] = float("-inf")
        return f

    monkeypatch.setattr(model, "encode", spy_encode)
    monkeypatch.setattr(model, "factors", spy_factors)
    torch.manual_seed(11)
    loss = model.compute_loss(batch)
    torch.manual_seed(11)  # the same draw again, outside the model
    seq, lengths = model.training_sequences(batch)  # [B, L'] the original cloze sequences
    masked = model.cloze_mask(lengths, seq.size(1))  # [B, L']
    fed = seen["items"]
    torch.testing.assert_close(seen["lengths"], lengths)
    assert fed.shape == seq.shape and masked.any(dim=1).all() and not masked.all()
    assert (fed[masked] == model.mask_id).all()  # every masked item is hidden
    torch.testing.assert_close(fed[~masked], seq[~masked])  # everything else is the original (or padding)
    assert not (fed[~masked] == model.mask_id).any()
    torch.testing.assert_close(
        loss, F.cross_entropy(seen["scores"], seq[masked], reduction="sum") / seq.size(0)
    )


def test_bert4rec_loss_weighs_every_masked_position_the_same_whatever_the_batch(tiny_data) -> None:
    """Every masked position weighs 1/B: the loss of two batches joined is the row-weighted mean of their losses,
    and padding a batch wider changes nothing (so length-bucketed batches train the RecBole objective)."""
    model, split = make("bert4rec", tiny_data, max_len=20, mask_prob=1.0, mask_last_ratio=0.0)
    model.eval()  # no dropout; with mask_prob 1 every position is masked, so the loss is deterministic
    rows = build_train_rows(split, 20, "materialized")
    cfg = DataConfig(max_len=20, batch_size=16, train_mode="materialized", materialized_padding="batch")
    batches = train_batches(rows, cfg, epoch_seed=0)
    a = min(batches, key=lambda x: x.items.size(1))  # the narrowest and the widest batch
    b = max(batches, key=lambda x: x.items.size(1))
    assert a.items.size(1) < b.items.size(1)
    wide = Batch(
        F.pad(a.items, (0, b.items.size(1) - a.items.size(1))),
        a.lengths,
        F.pad(a.targets, (0, b.items.size(1) - a.items.size(1))),
    )
    joined = Batch(
        torch.cat([wide.items, b.items]),
        torch.cat([a.lengths, b.lengths]),
        torch.cat([wide.targets, b.targets]),
    )
    with torch.no_grad():
        la, lb, lw, lj = (model.compute_loss(x).item() for x in (a, b, wide, joined))
    na, nb = a.items.size(0), b.items.size(0)
    assert lw == pytest.approx(la, rel=1e-5)
    assert lj == pytest.approx((la * na + lb * nb) / (na + nb), rel=1e-5)
    assert la != pytest.approx(lb, rel=1e-3)  # the batches differ, so the check above can fail


def test_bert4rec_mask_rate_padding_and_at_least_one(tiny_data) -> None:
    model, _ = make("bert4rec", tiny_data, max_len=50, mask_prob=0.2, mask_last_ratio=0.0)
    assert isinstance(model, BERT4Rec)
    torch.manual_seed(0)
    masked = model.cloze_mask(torch.full((4000,), 50), 50)
    assert abs(masked.float().mean().item() - 0.2) < 0.005
    lengths = torch.randint(1, 51, (4000,))
    masked = model.cloze_mask(lengths, 50)
    assert not (masked & (torch.arange(50) >= lengths[:, None])).any()  # padding is never masked
    rate = masked.sum() / lengths.sum()
    assert 0.19 < rate.item() < 0.23  # a little above 0.2: short rows always get one
    sparse, _ = make("bert4rec", tiny_data, max_len=50, mask_prob=0.01, mask_last_ratio=0.0)
    assert isinstance(sparse, BERT4Rec)
    short = torch.randint(1, 6, (2000,))
    assert (sparse.cloze_mask(short, 5).sum(dim=1) >= 1).all()


def test_bert4rec_default_masks_only_the_last_item_in_half_the_rows(tiny_data) -> None:
    model, _ = make("bert4rec", tiny_data, max_len=50, mask_prob=0.2)  # default mask_last_ratio 0.5 (RecBole)
    assert isinstance(model, BERT4Rec)
    torch.manual_seed(0)
    lengths = torch.full((4000,), 50)
    masked = model.cloze_mask(lengths, 50)
    last_only = (masked.sum(dim=1) == 1) & masked[:, 49]
    assert 0.47 < last_only.float().mean().item() < 0.53


def test_bert4rec_mask_last_ratio_one_masks_only_the_last_item(tiny_data) -> None:
    model, _ = make("bert4rec", tiny_data, mask_last_ratio=1.0)
    assert isinstance(model, BERT4Rec)
    lengths = torch.randint(1, 11, (300,))
    masked = model.cloze_mask(lengths, 10)
    assert (masked.sum(dim=1) == 1).all()
    assert masked[torch.arange(300), lengths - 1].all()


def test_bert4rec_loss_is_seeded_by_torch(tiny_data) -> None:
    model, split = make("bert4rec", tiny_data)
    batch = train_batches(build_train_rows(split, 20), DataConfig(batch_size=64), epoch_seed=0)[0]
    model.eval()  # masking is the only randomness left
    torch.manual_seed(5)
    a = model.compute_loss(batch)
    torch.manual_seed(5)
    assert model.compute_loss(batch).item() == a.item()
    assert model.compute_loss(batch).item() != a.item()  # a new draw masks other items


# --------------------------------------------------------------------------------------------------------------
# GRU4RecF, SASRecF, FDSA
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FEATURE_MODELS)
def test_feature_rows_of_history_items_change_the_scores(name: str, tiny_data) -> None:
    model, split = make(name, tiny_data)
    model.eval()
    b = eval_batches(split, "test", DataConfig(max_len=20, eval_batch_size=16))[0]
    feats = model.features
    assert isinstance(feats, ModalityProjections) and len(feats) == len(tiny_data.features) == 2
    item = int(b.items[0, 0])
    holds = (b.items == item).any(dim=1)  # rows whose history contains the item
    with torch.no_grad():
        before = model.score_all(b)
        for m in range(len(feats)):
            feats.table(m)[item] += 1.0
            after = model.score_all(b)
            assert not torch.allclose(after[holds], before[holds])
            torch.testing.assert_close(after[~holds], before[~holds])  # other histories do not see the row
            before = after


@pytest.mark.parametrize("name", FEATURE_MODELS)
def test_feature_tables_are_fixed_buffers_in_the_checkpoint(name: str, tiny_data) -> None:
    model, _ = make(name, tiny_data)
    state = model.state_dict()
    for i, table in enumerate(tiny_data.features.values()):
        np.testing.assert_array_equal(state[f"features.features_{i}"].numpy(), table)
    assert not any(n.startswith("features.features_") for n, _ in model.named_parameters())


def test_sparse_table_projection_equals_the_dense_one_and_follows_table_changes() -> None:
    rng = np.random.default_rng(0)
    multi_hot = (rng.random((31, 200)) < 0.02).astype(np.float32)  # [N+1, d]: ~2% set, as attribute tables
    multi_hot[0] = 0.0
    dense = rng.normal(size=(31, 8)).astype(np.float32)
    torch.manual_seed(0)
    proj = ModalityProjections({"attrs": multi_hot, "text": dense}, 30, 6, "test")
    assert proj.sparse_table(0) is not None and proj.sparse_table(1) is None  # only the mostly-zero table
    for i, table in enumerate((multi_hot, dense)):
        lin = proj.proj[i]
        out = proj.project_table(i)  # [N+1, D]
        ref = torch.from_numpy(table) @ lin.weight.t() + lin.bias
        torch.testing.assert_close(out, ref)
        up = torch.randn_like(out)
        (g_w, g_b) = torch.autograd.grad((out * up).sum(), [lin.weight, lin.bias])
        (r_w, r_b) = torch.autograd.grad((ref * up).sum(), [lin.weight, lin.bias])
        torch.testing.assert_close(g_w, r_w)
        torch.testing.assert_close(g_b, r_b)
    # a checkpoint with another table (in-place copy into the buffer): the sparse copy must not go stale
    other = np.zeros_like(multi_hot)
    other[1:, 3] = 1.0
    state = {**proj.state_dict(), "features_0": torch.from_numpy(other)}
    proj.load_state_dict(state)
    with torch.no_grad():
        expected = torch.from_numpy(other) @ proj.proj[0].weight.t() + proj.proj[0].bias
        torch.testing.assert_close(proj.project_table(0), expected)


@pytest.mark.parametrize("name", FEATURE_MODELS)
def test_feature_models_refuse_a_data_set_without_features(name: str) -> None:
    info = DataInfo(10, 5, {}, [np.array([1, 2, 3])])
    cls = {"gru4recf": "GRU4RecF", "sasrecf": "SASRecF", "fdsa": "FDSA"}[name]
    with pytest.raises(ConfigError, match=f"{cls} needs at least one modality feature table"):
        build_model({"name": name}, info)
    bad = DataInfo(10, 5, {"text": np.zeros((7, 4), dtype=np.float32)}, [np.array([1, 2, 3])])
    with pytest.raises(ConfigError, match=r"feature table 'text' has shape \(7, 4\), expected \(11, d\)"):
        build_model({"name": name}, bad)


def test_fdsa_feature_attention_weights_sum_to_one(tiny_data) -> None:
    model, split = make("fdsa", tiny_data)
    assert isinstance(model, FDSA)
    b = eval_batches(split, "test", DataConfig(max_len=20, eval_batch_size=16))[0]
    w = model.feature_weights(b.items)
    assert w.shape == (*b.items.shape, 2) and (w >= 0).all()
    torch.testing.assert_close(w.sum(dim=-1), torch.ones(b.items.shape))


@pytest.mark.parametrize(
    ("name", "key", "value", "message"),
    [
        ("bert4rec", "mask_prob", 0.0, r"mask_prob \(0.0\) must lie in \(0, 1\]"),
        ("bert4rec", "mask_last_ratio", 1.5, r"mask_last_ratio \(1.5\) must lie in \[0, 1\]"),
        ("bert4rec", "hidden_size", 30, r"hidden_size \(30\) must be divisible by num_heads \(4\)"),
        ("sasrecf", "dropout", 1.0, r"dropout \(1.0\) must lie in \[0, 1\)"),
        ("fdsa", "num_layers", 0, r"num_layers \(0\) must be >= 1"),
        ("gru4recf", "embedding_size", 0, r"embedding_size \(0\) must be >= 1"),
        ("sasrec", "hidden_size", 30, r"hidden_size \(30\) must be divisible by num_heads \(4\)"),
        ("sasrec", "attn_dropout", -0.1, r"attn_dropout \(-0.1\) must lie in \[0, 1\)"),
        ("sasrec", "activation", "tanh", r"activation \('tanh'\) must be 'gelu' or 'relu'"),
        ("sasrec", "init_std", 0.0, r"init_std \(0.0\) must be > 0"),
        ("gru4rec", "num_layers", 0, r"num_layers \(0\) must be >= 1"),
        ("gru4rec", "dropout", 1.0, r"dropout \(1.0\) must lie in \[0, 1\)"),
        ("mmmlp", "token_expansion", 0, r"token_expansion \(0\) must be >= 1"),
        ("unisrec", "temperature", 0.0, r"temperature \(0.0\) must be > 0"),
        ("missrec", "attn_dropout", 1.0, r"attn_dropout \(1.0\) must lie in"),
    ],
)
def test_bad_config_values_are_named(name: str, key: str, value: object, message: str, tiny_data) -> None:
    extra = {"num_heads": 4} if key == "hidden_size" else {}
    with pytest.raises(ConfigError, match=message):
        make(name, tiny_data, **{**extra, key: value})
