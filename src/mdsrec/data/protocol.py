"""The evaluation protocol (leave-one-out) and batching.

Per user (chronological): the last item is the test target, the second-to-last the validation target, the rest is
training. Histories are cut to the last ``max_len`` items. Training uses every prefix of the training part: the
prefix ``t[:p]`` predicts ``t[p]`` for p = 1..T-1.

Two ways to build training batches, the same objective:

* ``all_prefix`` (default): one right-padded row per sequence; a causal model scores every position in one pass and
  position p-1 is trained to predict ``t[p]``. A training part longer than max_len+1 gives a first window covering
  p <= max_len and one extra row per later p (its last max_len items, only its last position trained), so every
  prefix sees exactly its last max_len items, as in the materialised form.
* ``materialized``: one row per prefix, only the last position trained (how RecBole trains); padded to max_len in
  random order (``materialized_padding: max_len``, RecBole's way: the speed benchmark's reference) or bucketed by
  length and padded per batch like all_prefix (``batch``: the same rows, for BERT4Rec's per-prefix cloze rows).

Batches are padded to their own longest row; rows are sorted by length inside shuffled pools so little padding is
computed. Shape legend: B batch, L sequence length, N items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mdsrec.config import DataConfig


@dataclass
class Batch:
    """What every model sees. Items are right-padded with 0."""

    items: Tensor  # [B, L] long
    lengths: Tensor  # [B] long, >= 1
    targets: Tensor | None = None  # [B, L] long; targets[b, j] is the item after position j, 0 = not trained
    target: Tensor | None = None  # [B] long; next item for evaluation
    users: Tensor | None = None  # [B] long user indices

    def to(self, device: torch.device | str) -> Batch:
        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(
            self.items.to(device), self.lengths.to(device), mv(self.targets), mv(self.target), mv(self.users)
        )


EVAL_STAGES = ("valid", "test")
# "next": the whole sequence, nothing held out (what serving ranks from); valid/test: as the evaluator.
STAGES = ("test", "valid", "next")


def held_out(sequence: np.ndarray, stage: str) -> tuple[np.ndarray, int | None]:
    """Leave-one-out: the history before ``stage``'s held-out item and that item; ``test`` holds out the last item,
    ``valid`` the second-to-last, ``next`` nothing (the whole sequence, target None)."""
    if stage == "test":
        return sequence[:-1], int(sequence[-1])
    if stage == "valid":
        return sequence[:-2], int(sequence[-2])
    if stage == "next":
        return sequence, None
    raise ValueError(f"stage ({stage!r}) must be one of {', '.join(STAGES)}")


@dataclass
class Split:
    """Leave-one-out split. ``train[u]`` is the training part; eval inputs are derived from the full sequence."""

    sequences: list[np.ndarray]

    def __post_init__(self) -> None:
        short = [u for u, s in enumerate(self.sequences) if len(s) < 3]
        if short:
            raise ValueError(
                f"{len(short)} users have fewer than 3 interactions (first: user index {short[0]}); "
                "`mdsrec prepare` drops them"
            )

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    def train_part(self, u: int) -> np.ndarray:
        return self.sequences[u][:-2]

    def eval_input(self, u: int, stage: str) -> tuple[np.ndarray, int]:
        """History and target for ``stage`` 'valid' (second-to-last) or 'test' (last)."""
        if stage not in EVAL_STAGES:
            raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
        history, target = held_out(self.sequences[u], stage)
        assert target is not None
        return history, target


@dataclass
class TrainRows:
    """Training rows: inputs [R] arrays and target arrays of the same length (0 = position not trained)."""

    inputs: list[np.ndarray]
    targets: list[np.ndarray]
    users: np.ndarray

    @property
    def num_targets(self) -> np.ndarray:
        return np.array([int((t > 0).sum()) for t in self.targets], dtype=np.int64)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.inputs], dtype=np.int64)


def build_train_rows(split: Split, max_len: int, mode: str = "all_prefix") -> TrainRows:
    inputs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    users: list[int] = []
    for u in range(split.num_users):
        t = split.train_part(u)
        n = len(t)
        if n < 2:
            continue  # a single training item has no prefix with a next item
        if mode == "all_prefix":
            w = min(n - 1, max_len)
            inputs.append(t[:w])
            targets.append(t[1 : w + 1])
            users.append(u)
            first_extra = w + 1
        elif mode == "materialized":
            first_extra = 1
        else:
            raise ValueError(f"mode must be 'all_prefix' or 'materialized', got {mode!r}")
        for p in range(first_extra, n):
            x = t[max(0, p - max_len) : p]
            y = np.zeros(len(x), dtype=t.dtype)
            y[-1] = t[p]
            inputs.append(x)
            targets.append(y)
            users.append(u)
    return TrainRows(inputs, targets, np.asarray(users, dtype=np.int64))


def _pad(rows: list[np.ndarray], width: int) -> Tensor:
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


def plan_batches(
    lengths: np.ndarray, units: np.ndarray, batch_size: int, bucket_batches: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffle rows, sort by length inside pools of ~bucket_batches batches, cut batches of ~batch_size units."""
    order = rng.permutation(len(lengths))
    pool_units = batch_size * bucket_batches
    batches: list[np.ndarray] = []
    start = 0
    cum = np.cumsum(units[order])
    while start < len(order):
        base = cum[start - 1] if start > 0 else 0
        end = int(np.searchsorted(cum, base + pool_units, side="left")) + 1
        pool = order[start:end]
        pool = pool[np.argsort(lengths[pool], kind="stable")]
        acc, cut = 0, 0
        for i, r in enumerate(pool):
            acc += int(units[r])
            if acc >= batch_size:
                batches.append(pool[cut : i + 1])
                cut, acc = i + 1, 0
        if cut < len(pool):
            batches.append(pool[cut:])
        start = end
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def train_batches(rows: TrainRows, cfg: DataConfig, epoch_seed: int) -> list[Batch]:
    """All training batches of one epoch; the order depends only on ``epoch_seed``."""
    rng = np.random.default_rng(epoch_seed)
    lengths = rows.lengths
    units = rows.num_targets if cfg.batch_unit == "prefixes" else np.ones(len(lengths), dtype=np.int64)
    fixed = cfg.train_mode == "materialized" and cfg.materialized_padding == "max_len"
    out = []
    for idx in plan_batches(lengths, units, cfg.batch_size, 1 if fixed else cfg.bucket_batches, rng):
        if fixed:  # the RecBole way: every row padded to max_len, no length sorting
            width = cfg.max_len
        else:
            width = int(lengths[idx].max())
        out.append(
            Batch(
                items=_pad([rows.inputs[i] for i in idx], width),
                lengths=torch.from_numpy(lengths[idx].copy()),
                targets=_pad([rows.targets[i] for i in idx], width),
                users=torch.from_numpy(rows.users[idx].copy()),
            )
        )
    return out


def eval_batches(split: Split, stage: str, cfg: DataConfig, padded: bool = False) -> list[Batch]:
    """Evaluation batches over all users, sorted by history length (order does not change the metrics)."""
    hist = []
    tgt = np.empty(split.num_users, dtype=np.int64)
    for u in range(split.num_users):
        h, t = split.eval_input(u, stage)
        hist.append(h[-cfg.max_len :])
        tgt[u] = t
    lengths = np.array([len(h) for h in hist], dtype=np.int64)
    order = np.arange(split.num_users) if padded else np.argsort(lengths, kind="stable")
    out = []
    for s in range(0, len(order), cfg.eval_batch_size):
        idx = order[s : s + cfg.eval_batch_size]
        width = cfg.max_len if padded else int(lengths[idx].max())
        out.append(
            Batch(
                items=_pad([hist[i] for i in idx], width),
                lengths=torch.from_numpy(lengths[idx].copy()),
                target=torch.from_numpy(tgt[idx].copy()),
                users=torch.from_numpy(idx.astype(np.int64)),
            )
        )
    return out
