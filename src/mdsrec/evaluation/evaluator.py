"""The one evaluator: full ranking over all items for the validation or test target of every user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mdsrec.config import DataConfig, EvalConfig
from mdsrec.data.protocol import Batch, Split, eval_batches
from mdsrec.distributed import SINGLE, Group, gather_in_order, shard
from mdsrec.evaluation.metrics import metrics_from_ranks
from mdsrec.evaluation.ranking import (
    chunked_target_ranks,
    exclusion_mask,
    masked,
    pad_histories,
    target_ranks,
)
from mdsrec.models.base import SequentialRecommender


def exclude_history(scores: torch.Tensor, batch: Batch, history: torch.Tensor | None = None) -> torch.Tensor:
    """Set the items of each user's history to -inf, except the target itself (a repeated target stays rankable),
    and the padding item (``ranking.exclusion_mask``).

    ``history`` [B, H] (0-padded) is the user's whole history; by default the batch's (possibly truncated) input.
    """
    assert batch.target is not None
    hist = batch.items if history is None else history
    return masked(scores, exclusion_mask(scores.shape[1] - 1, hist, batch.target))


# Training occurrences of a target item (its count over every user's training part): bucket label -> [low, high].
POPULARITY_BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("0", 0, 0),
    ("1-3", 1, 3),
    ("4-7", 4, 7),
    ("8-15", 8, 15),
    ("16-31", 16, 31),
    ("32+", 32, float("inf")),
)


def item_train_counts(split: Split, num_items: int) -> np.ndarray:
    """How often each item occurs in the training parts [N+1] (index 0, the padding id, is 0)."""
    parts = [split.train_part(u) for u in range(split.num_users)]
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return np.bincount(flat.astype(np.int64), minlength=num_items + 1)[: num_items + 1]


@torch.no_grad()
def channel_ranks(
    model: SequentialRecommender,
    split: Split,
    stage: str,
    data_cfg: DataConfig,
    eval_cfg: EvalConfig,
    device: torch.device | str = "cpu",
    batches: list[Batch] | None = None,
    channels: bool = False,
    group: Group = SINGLE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(users [U], targets [U], ranks [U], channel name -> ranks [U]) in batch order: every user's rank of its
    ``stage`` target under full ranking, history items excluded (the whole history, not the model's window) when
    ``eval_cfg.exclude_history``. ``ranks`` are those of ``score_all``; with ``channels`` the model's
    ``channel_scores_all`` is ranked too, channel by channel ('fused' is ``ranks`` and is not repeated)."""
    was_training = model.training
    model.eval()
    every = batches if batches is not None else eval_batches(split, stage, data_cfg)
    done: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]] = []
    for batch in shard(every, group):  # under torchrun each process ranks its share of the batches
        batch = batch.to(device)
        assert batch.users is not None and batch.target is not None
        hist: torch.Tensor | None = None
        if eval_cfg.exclude_history:
            full = [split.eval_input(int(u), stage)[0] for u in batch.users]  # whole history, not the window
            hist = pad_histories(full, batch.target.device)
        chunk = model.chunking.chunk(batch.items.size(0))
        factors = model.score_factors(batch, channels) if chunk is not None else None
        ranked = {}
        if chunk is not None and factors is not None:  # a large catalogue: counted chunk by chunk
            for name, f in factors.items():
                g = f.as_factors().folded()  # queries [B, D] against [N+1, D]
                ranked[name] = chunked_target_ranks(
                    g.query, g.table, batch.target, chunk, hist, g.divisor
                ).cpu()
        else:
            named = model.channel_scores_all(batch) if channels else {"fused": model.score_all(batch)}
            for name, scores in named.items():  # scores [B, N+1]
                if hist is not None:
                    scores = exclude_history(scores, batch, hist)
                ranked[name] = target_ranks(scores, batch.target).cpu()
        fused = ranked.pop("fused")
        done.append((batch.users.cpu(), batch.target.cpu(), fused, ranked))
    model.train(was_training)
    done = gather_in_order(done, len(every), group)  # every batch's ranks, in batch order, on every process
    users = [d[0] for d in done]
    targets = [d[1] for d in done]
    ranks = [d[2] for d in done]
    channel_out = {k: torch.cat([d[3][k] for d in done]) for k in (done[0][3] if done else {})}
    return torch.cat(users), torch.cat(targets), torch.cat(ranks), channel_out


def rank_targets(
    model: SequentialRecommender,
    split: Split,
    stage: str,
    data_cfg: DataConfig,
    eval_cfg: EvalConfig,
    device: torch.device | str = "cpu",
    batches: list[Batch] | None = None,
    group: Group = SINGLE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(users [U], ranks [U]) in batch order: every user's rank of its ``stage`` target under full ranking, history
    items excluded (the whole history, not the model's window) when ``eval_cfg.exclude_history``."""
    users, _, ranks, _ = channel_ranks(model, split, stage, data_cfg, eval_cfg, device, batches, False, group)
    return users, ranks


def evaluate(
    model: SequentialRecommender,
    split: Split,
    stage: str,
    data_cfg: DataConfig,
    eval_cfg: EvalConfig,
    device: torch.device | str = "cpu",
    batches: list[Batch] | None = None,
    group: Group = SINGLE,
) -> dict[str, float]:
    """Metrics of ``model`` on ``stage`` ('valid' or 'test'). ``batches`` may be passed to reuse them; under
    torchrun (``group``) the processes share the batches and every process gets the metrics of all users."""
    _, ranks = rank_targets(model, split, stage, data_cfg, eval_cfg, device, batches, group)
    return metrics_from_ranks(ranks, list(eval_cfg.ks))


@dataclass
class Diagnosis:
    """The metrics of ``evaluate`` plus where the ranking comes from."""

    metrics: dict[str, float]  # of the ranked (fused) scores: equal to evaluate()'s
    channels: dict[
        str, dict[str, float]
    ]  # channel name -> its metrics alone (MDSRec: 'id' and each modality)
    popularity: dict[str, dict[str, Any]]  # bucket label -> {"users": n, metric: value} of the fused ranks

    def to_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "popularity": self.popularity}


def diagnose(
    model: SequentialRecommender,
    split: Split,
    stage: str,
    data_cfg: DataConfig,
    eval_cfg: EvalConfig,
    counts: np.ndarray,
    device: torch.device | str = "cpu",
    batches: list[Batch] | None = None,
    group: Group = SINGLE,
) -> Diagnosis:
    """``evaluate`` plus every channel's metrics alone and the fused metrics by the target's training occurrences
    (``counts`` [N+1], ``item_train_counts``; buckets ``POPULARITY_BUCKETS``). One forward pass per batch serves
    all channels."""
    _, targets, ranks, channels = channel_ranks(
        model, split, stage, data_cfg, eval_cfg, device, batches, True, group
    )
    ks = list(eval_cfg.ks)
    occ = torch.from_numpy(np.asarray(counts, dtype=np.int64))[targets]  # [U]
    popularity: dict[str, dict[str, Any]] = {}
    for label, low, high in POPULARITY_BUCKETS:
        inside = (occ >= low) & (occ.double() <= high)
        n = int(inside.sum())
        popularity[label] = {"users": n, **(metrics_from_ranks(ranks[inside], ks) if n else {})}
    return Diagnosis(
        metrics_from_ranks(ranks, ks),
        {name: metrics_from_ranks(r, ks) for name, r in channels.items()},
        popularity,
    )
