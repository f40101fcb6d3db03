"""The one contract every model implements, and what a model may know about the data.

* ``compute_loss(batch) -> scalar``: the training loss of a training batch (``batch.targets`` set).
* ``score_all(batch) -> [B, N+1]``: scores of every item as the next item after each history; column 0 (padding)
  is -inf so it is never ranked.

The trainer and the evaluator use nothing else. Most sequential models only need ``encode`` (hidden state at every
position, causal) and ``item_table`` (output item embeddings); ``NextItemModel`` turns those into cross-entropy over
all items at every trained position and into full scores at the last position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdsrec.data.protocol import Batch


@dataclass
class DataInfo:
    """What a model may know about the data set: catalogue size and the fixed modality feature tables."""

    num_items: int  # N; item ids are 1..N, 0 is padding
    max_len: int
    features: dict[str, np.ndarray] = field(default_factory=dict)  # name -> float32 [N+1, d_m], row 0 zeros
    train_sequences: list[np.ndarray] | None = None  # training parts only (for behaviour graphs, popularity)


class SequentialRecommender(nn.Module):
    """Base class of every model: implement ``compute_loss`` and ``score_all``."""

    name: ClassVar[str]
    # True when the objective is the next item after each trained prefix, so all-prefix batching equals the
    # materialised one (False for cloze / random-masking objectives such as BERT4Rec's).
    prefix_objective: ClassVar[bool] = True
    # False for parameter-free references (popularity, item-to-item): the trainer evaluates them without training.
    trainable: ClassVar[bool] = True

    def compute_loss(self, batch: Batch) -> Tensor:
        raise NotImplementedError

    def score_all(self, batch: Batch) -> Tensor:
        raise NotImplementedError


def mask_padding_column(scores: Tensor) -> Tensor:
    """Column 0 is the padding item: never rankable."""
    scores[:, 0] = float("-inf")
    return scores


def gather_last(states: Tensor, lengths: Tensor) -> Tensor:
    """states [B, L, D], lengths [B] -> state at the last real position [B, D] (right padding)."""
    idx = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, states.size(-1))
    return states.gather(1, idx).squeeze(1)


class NextItemModel(SequentialRecommender):
    """A causal encoder plus dot-product scoring against an item table, trained with full cross-entropy."""

    def encode(self, items: Tensor, lengths: Tensor) -> Tensor:
        """items [B, L] -> hidden states [B, L, D]; position j depends only on items[:, : j + 1]."""
        raise NotImplementedError

    def item_table(self) -> Tensor:
        """Output item embeddings [N+1, D] (row 0 padding)."""
        raise NotImplementedError

    def compute_loss(self, batch: Batch) -> Tensor:
        assert batch.targets is not None, "training batch needs targets"
        states = self.encode(batch.items, batch.lengths)  # [B, L, D]
        mask = batch.targets > 0  # [B, L]
        h = states[mask]  # [P, D] trained positions only
        logits = h @ self.item_table().t()  # [P, N+1]
        logits[:, 0] = float("-inf")
        return F.cross_entropy(logits, batch.targets[mask])

    def score_all(self, batch: Batch) -> Tensor:
        states = self.encode(batch.items, batch.lengths)  # [B, L, D]
        h = gather_last(states, batch.lengths)  # [B, D]
        return mask_padding_column(h @ self.item_table().t())  # [B, N+1]


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Normal(0, std) for linear and embedding weights, zero biases, unit LayerNorm (BERT/RecBole style)."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def check_divisible(hidden: int, heads: int) -> None:
    if heads <= 0 or hidden % heads:
        raise ValueError(f"hidden_size ({hidden}) must be divisible by num_heads ({heads})")


__all__ = [
    "DataInfo",
    "SequentialRecommender",
    "NextItemModel",
    "gather_last",
    "mask_padding_column",
    "init_weights",
    "check_divisible",
    "torch",
]
