"""Invariants every registered model must satisfy (tiny configs, CPU)."""

import numpy as np
import pytest
import torch

from mdsrec.atomic import torch_save
from mdsrec.config import DataConfig
from mdsrec.data.protocol import Batch, build_train_rows, eval_batches, train_batches
from mdsrec.errors import ConfigError
from mdsrec.models import REGISTRY, DataInfo, build_model
from mdsrec.training.checkpoint import load_checkpoint, load_model_state
from mdsrec.training.trainer import training_loss
from tests.conftest import TINY_MODEL, make_model

MODELS = sorted(REGISTRY)


make = make_model


@pytest.mark.parametrize(
    "name", ["bert4rec", "fdsa", "mdsrec", "missrec", "mmmlp", "sasrec", "sasrecf", "unisrec"]
)
def test_a_sequence_longer_than_the_position_table_is_refused(name: str, tiny_data) -> None:
    model, split = make(name, tiny_data, max_len=4)
    b = eval_batches(split, "test", DataConfig(max_len=20, eval_batch_size=64))[0]
    assert b.items.size(1) > 5  # wider than max_len + 1 (BERT4Rec's [MASK] slot)
    model.eval()
    with pytest.raises(ValueError, match=r"sequence length \d+ exceeds max_len"):
        model.score_all(b)


def test_every_model_has_a_tiny_config() -> None:
    assert set(TINY_MODEL) == set(REGISTRY)


@pytest.mark.parametrize("name", MODELS)
def test_shapes_finite_loss_and_gradients(name: str, tiny_data) -> None:
    model, split = make(name, tiny_data)
    batch = train_batches(build_train_rows(split, 20), DataConfig(batch_size=64), epoch_seed=0)[0]
    loss = model.compute_loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    if model.trainable:
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
    model.eval()
    eb = eval_batches(split, "test", DataConfig(max_len=20, eval_batch_size=16))[0]
    scores = model.score_all(eb)
    assert scores.shape == (16, tiny_data.num_items + 1)
    assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    assert (scores.argmax(dim=1) != 0).all()  # the padding item is never recommended


BF16_CASES = [(n, {}) for n in MODELS if REGISTRY[n][0].trainable] + [("mdsrec", {"use_mrgc": False})]


@pytest.mark.parametrize(("name", "extra"), BF16_CASES)
def test_bf16_autocast_loss_is_close_fp32_and_its_gradients_finite(name: str, extra: dict, tiny_data) -> None:
    model, split = make(name, tiny_data, **extra)
    batch = train_batches(build_train_rows(split, 20), DataConfig(batch_size=64), epoch_seed=0)[0]
    cpu = torch.device("cpu")
    torch.manual_seed(
        1
    )  # training mode (dropout, noise) under bf16 first: deferred set-up runs under autocast
    train_loss = training_loss(model, batch, "bf16", cpu)
    train_loss.backward()
    assert train_loss.dtype == torch.float32 and torch.isfinite(train_loss)
    model.zero_grad()
    model.eval()  # no dropout: the two losses differ by bf16 rounding only
    torch.manual_seed(1)  # the same cloze masks (BERT4Rec) in both passes
    with torch.no_grad():
        fp32 = training_loss(model, batch, "fp32", cpu)
    torch.manual_seed(1)
    bf16 = training_loss(model, batch, "bf16", cpu)
    assert bf16.dtype == torch.float32 and bf16.ndim == 0
    assert bf16.item() != fp32.item()  # autocast did run the products in bf16
    assert abs(bf16.item() - fp32.item()) < 0.02 * abs(fp32.item())
    bf16.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", MODELS)
def test_padding_invariance(name: str, tiny_data) -> None:
    model, split = make(name, tiny_data)
    model.eval()
    b = eval_batches(split, "valid", DataConfig(max_len=20, eval_batch_size=32))[0]
    extra = 20 - b.items.size(1)  # pad up to max_len (the widest batch a model is ever given)
    assert extra > 0
    wider = Batch(torch.cat([b.items, torch.zeros(b.items.size(0), extra, dtype=torch.long)], 1), b.lengths)
    torch.testing.assert_close(model.score_all(b), model.score_all(wider))


@pytest.mark.parametrize("name", [n for n in MODELS if hasattr(REGISTRY[n][0], "encode_last")])
def test_the_last_state_equals_the_encoder_read_at_the_last_position(name: str, tiny_data) -> None:
    """encode_last (what score_all reads; SASRec computes its last layer at that position only) equals encode read
    at each row's last real position, with rows of mixed lengths, and gives the same top-10 lists."""
    from mdsrec.models.base import gather_last

    model, split = make(name, tiny_data)
    model.eval()
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([1, 20, 7, 13, 2, 20])
    items = torch.randint(1, tiny_data.num_items + 1, (6, 20), generator=g)
    items[torch.arange(20)[None, :] >= lengths[:, None]] = 0  # right padding
    with torch.no_grad():
        last = model.encode_last(items, lengths)
        read = gather_last(model.encode(items, lengths), lengths)
        torch.testing.assert_close(last, read, rtol=1e-5, atol=1e-6)
        table = model.item_table()
        assert torch.equal((last @ table.t()).topk(10).indices, (read @ table.t()).topk(10).indices)


# Models whose encoder sees the whole sequence: no scores after every prefix (the cloze model).
NON_CAUSAL = {"bert4rec"}


@pytest.mark.parametrize("name", MODELS)
def test_causality_and_one_pass_equals_every_prefix(name: str, tiny_data) -> None:
    model, _ = make(name, tiny_data)
    model.eval()
    g = torch.Generator().manual_seed(1)
    items = torch.randint(1, tiny_data.num_items + 1, (4, 9), generator=g)
    lengths = torch.full((4,), 9)
    if name in NON_CAUSAL:
        with pytest.raises(NotImplementedError, match="not causal"):
            model.prefix_scores(items, lengths)
        return
    with torch.no_grad():
        full = model.prefix_scores(items, lengths)  # [4, 9, N+1]
        changed = items.clone()
        changed[:, 6:] = torch.randint(1, tiny_data.num_items + 1, (4, 3), generator=g)
        later = model.prefix_scores(changed, lengths)
    assert full.shape == (4, 9, tiny_data.num_items + 1) and bool(torch.isneginf(full[..., 0]).all())
    torch.testing.assert_close(later[:, :6], full[:, :6])  # later items never leak back
    for p in range(1, 10):
        prefix = model.score_all(Batch(items[:, :p], torch.full((4,), p)))
        torch.testing.assert_close(prefix[:, 1:], full[:, p - 1, 1:].to(prefix.dtype), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in MODELS if REGISTRY[n][0].prefix_objective])
def test_all_prefix_loss_equals_materialized_loss(name: str, tiny_data) -> None:
    model, split = make(name, tiny_data, max_len=6)
    model.eval()  # no dropout: the two batchings must give the same objective

    def mean_loss(mode: str) -> float:
        rows = build_train_rows(split, 6, mode)
        cfg = DataConfig(max_len=6, batch_size=10_000, train_mode=mode)
        (batch,) = train_batches(rows, cfg, epoch_seed=0)
        return model.compute_loss(batch).item()

    assert mean_loss("all_prefix") == pytest.approx(mean_loss("materialized"), rel=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_round_trip_gives_identical_scores(name: str, tiny_data, tmp_path) -> None:
    model, split = make(name, tiny_data)
    model.eval()
    b = eval_batches(split, "test", DataConfig(max_len=20))[0]
    torch_save({"checkpoint_version": 1, "model_state": model.state_dict()}, tmp_path / "m.pt")
    other, _ = make(name, tiny_data)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    load_model_state(other, load_checkpoint(tmp_path / "m.pt")["model_state"], tmp_path / "m.pt")
    other.eval()
    assert torch.equal(model.score_all(b), other.score_all(b))


def test_bad_hidden_heads_named() -> None:
    info = DataInfo(10, 5, {}, [np.array([1, 2])])
    with pytest.raises(ConfigError, match=r"hidden_size \(30\) must be divisible by num_heads \(4\)"):
        build_model({"name": "sasrec", "hidden_size": 30, "num_heads": 4}, info)
