"""The one evaluator: full ranking over all items for the validation or test target of every user."""

from __future__ import annotations

import torch

from mdsrec.config import DataConfig, EvalConfig
from mdsrec.data.protocol import Batch, Split, eval_batches
from mdsrec.evaluation.metrics import metrics_from_ranks, target_ranks
from mdsrec.models.base import SequentialRecommender


def exclude_history(scores: torch.Tensor, batch: Batch, history: torch.Tensor | None = None) -> torch.Tensor:
    """Set the items of each user's history to -inf, except the target itself (a repeated target stays rankable).

    ``history`` [B, H] (0-padded) is the user's whole history; by default the batch's (possibly truncated) input.
    """
    assert batch.target is not None
    t_score = scores.gather(1, batch.target.view(-1, 1))
    scores = scores.scatter(1, batch.items if history is None else history, float("-inf"))
    scores = scores.scatter(1, batch.target.view(-1, 1), t_score)
    scores[:, 0] = float("-inf")
    return scores


@torch.no_grad()
def rank_targets(
    model: SequentialRecommender,
    split: Split,
    stage: str,
    data_cfg: DataConfig,
    eval_cfg: EvalConfig,
    device: torch.device | str = "cpu",
    batches: list[Batch] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(users [U], ranks [U]) in batch order: every user's rank of its ``stage`` target under full ranking, history
    items excluded (the whole history, not the model's window) when ``eval_cfg.exclude_history``."""
    was_training = model.training
    model.eval()
    users, ranks = [], []
    for batch in batches if batches is not None else eval_batches(split, stage, data_cfg):
        batch = batch.to(device)
        scores = model.score_all(batch)  # [B, N+1]
        assert batch.users is not None
        if eval_cfg.exclude_history:
            full = [split.eval_input(int(u), stage)[0] for u in batch.users]  # whole history, not the window
            hist = torch.zeros(len(full), max(len(h) for h in full), dtype=torch.long)
            for i, h in enumerate(full):
                hist[i, : len(h)] = torch.from_numpy(h)
            scores = exclude_history(scores, batch, hist.to(scores.device))
        assert batch.target is not None
        users.append(batch.users.cpu())
        ranks.append(target_ranks(scores, batch.target).cpu())
    model.train(was_training)
    return torch.cat(users), torch.cat(ranks)


def evaluate(
    model: SequentialRecommender,
    split: Split,
    stage: str,
    data_cfg: DataConfig,
    eval_cfg: EvalConfig,
    device: torch.device | str = "cpu",
    batches: list[Batch] | None = None,
) -> dict[str, float]:
    """Metrics of ``model`` on ``stage`` ('valid' or 'test'). ``batches`` may be passed to reuse them."""
    _, ranks = rank_targets(model, split, stage, data_cfg, eval_cfg, device, batches)
    return metrics_from_ranks(ranks, list(eval_cfg.ks))
