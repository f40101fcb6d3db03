"""Ranking metrics with one target per user.

rank = 1 + number of OTHER rankable items whose score is >= the target's (``ranking.target_ranks``: ties count
against the target, so a model that scores every item the same gets rank N and metrics near zero).

Recall@K = [rank <= K]   (hit rate; one target)
NDCG@K   = [rank <= K] / log2(rank + 1)
MRR@K    = [rank <= K] / rank
"""

from __future__ import annotations

import torch
from torch import Tensor

METRICS = ("recall", "ndcg", "mrr")


def metrics_from_ranks(ranks: Tensor, ks: list[int]) -> dict[str, float]:
    """Mean Recall/NDCG/MRR@K over users; keys like 'recall@10'."""
    r = ranks.double()
    out: dict[str, float] = {}
    for k in ks:
        hit = (r <= k).double()
        out[f"recall@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float((hit / torch.log2(r + 1)).mean())
        out[f"mrr@{k}"] = float((hit / r).mean())
    return out
