import numpy as np
import pytest

from mdsrec.config import DataConfig
from mdsrec.data.protocol import Split, build_train_rows, eval_batches, plan_batches, train_batches
from mdsrec.errors import ConfigError

SEQS = [np.array(s, dtype=np.int64) for s in ([1, 2, 3], [4, 5, 6, 7, 8], list(range(1, 12)), [9, 3, 9, 2])]


def prefix_pairs(rows) -> list[tuple[tuple[int, ...], int]]:
    """Every (history window, target) pair a set of training rows trains."""
    out = []
    for x, y in zip(rows.inputs, rows.targets, strict=True):
        for j in np.flatnonzero(y):
            out.append((tuple(x[: j + 1].tolist()), int(y[j])))
    return sorted(out)


def test_leave_one_out() -> None:
    split = Split(SEQS)
    assert split.train_part(1).tolist() == [4, 5, 6]
    h, t = split.eval_input(1, "valid")
    assert h.tolist() == [4, 5, 6] and t == 7
    h, t = split.eval_input(1, "test")
    assert h.tolist() == [4, 5, 6, 7] and t == 8


def test_short_users_refused() -> None:
    with pytest.raises(ValueError, match="fewer than 3"):
        Split([np.array([1, 2])])


@pytest.mark.parametrize("max_len", [3, 50])
def test_all_prefix_rows_train_exactly_the_materialised_prefixes(max_len: int) -> None:
    split = Split(SEQS)
    a = build_train_rows(split, max_len, "all_prefix")
    m = build_train_rows(split, max_len, "materialized")
    assert prefix_pairs(a) == prefix_pairs(m)
    # every materialised history is the last max_len items before its target
    t = split.train_part(2)  # 1..9
    expected = [(tuple(t[max(0, p - max_len) : p].tolist()), int(t[p])) for p in range(1, len(t))]
    assert set(expected) <= set(prefix_pairs(m))
    assert all(len(h) <= max_len for h, _ in prefix_pairs(a))
    if max_len == 50:
        assert len(a.inputs) == 3  # one row per user with >= 2 training items; user 0 has a single one


def test_plan_batches_covers_rows_once_and_fills_batches() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 20, size=300)
    units = lengths.copy()
    batches = plan_batches(lengths, units, batch_size=64, bucket_batches=4, rng=rng)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(300))
    sizes = [int(units[b].sum()) for b in batches]
    assert max(sizes) < 64 + 20
    short = sum(s < 64 for s in sizes)  # only the last batch of each pool may fall short
    assert short <= int(np.ceil(units.sum() / (64 * 4))) + 1


def test_train_batches_deterministic_and_padded_to_own_longest() -> None:
    split = Split(SEQS)
    rows = build_train_rows(split, 50, "all_prefix")
    cfg = DataConfig(batch_size=4, bucket_batches=2)
    b1 = train_batches(rows, cfg, epoch_seed=7)
    b2 = train_batches(rows, cfg, epoch_seed=7)
    assert all((x.items == y.items).all() for x, y in zip(b1, b2, strict=True))
    for b in b1:
        assert b.items.size(1) == int(b.lengths.max())
        assert b.targets is not None and ((b.targets > 0) <= (b.items > 0)).all()
    fixed = train_batches(rows, DataConfig(batch_size=4, train_mode="materialized", max_len=50), 7)
    assert all(b.items.size(1) == 50 for b in fixed)


def test_eval_batches_truncate_to_max_len() -> None:
    split = Split(SEQS)
    (b,) = eval_batches(split, "test", DataConfig(max_len=3))
    assert b.target is not None and b.users is not None
    u = int((b.users == 2).nonzero())
    assert b.items[u].tolist() == [8, 9, 10] and int(b.target[u]) == 11
    assert int(b.lengths.max()) == 3


def batch_pairs(batches) -> list[tuple[tuple[int, ...], int]]:
    """Every (history window, target) pair a list of training batches trains."""
    out = []
    for b in batches:
        for x, y, n in zip(b.items, b.targets, b.lengths, strict=True):
            for j in np.flatnonzero(y.numpy()):
                out.append((tuple(x[: j + 1].tolist()), int(y[j])))
            assert (x[int(n) :] == 0).all()
    return sorted(out)


def test_materialized_batch_padding_trains_the_same_rows_with_less_padding() -> None:
    split = Split([*SEQS, np.arange(1, 30, dtype=np.int64), np.array([5, 6, 7, 8], dtype=np.int64)])
    rows = build_train_rows(split, 50, "materialized")
    padded = train_batches(rows, DataConfig(batch_size=4, train_mode="materialized"), 7)
    bucketed = train_batches(
        rows,
        DataConfig(batch_size=4, train_mode="materialized", materialized_padding="batch", bucket_batches=2),
        7,
    )
    assert batch_pairs(bucketed) == batch_pairs(padded) == prefix_pairs(rows)
    assert all(b.items.size(1) == 50 for b in padded)
    assert all(b.items.size(1) == int(b.lengths.max()) for b in bucketed)
    assert sum(b.items.numel() for b in bucketed) < 0.4 * sum(b.items.numel() for b in padded)
    with pytest.raises(ConfigError, match="materialized_padding"):
        DataConfig(materialized_padding="none")
