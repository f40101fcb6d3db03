"""SASRec: "Self-Attentive Sequential Recommendation", Kang & McAuley, ICDM 2018, arXiv 1808.09781.

Item embeddings plus learned position embeddings, a stack of causal post-LN Transformer layers, and dot-product
scores against the (tied) item embedding table, trained with cross-entropy over all items at every position.

Deviations:
- Cross-entropy over all items instead of the paper's binary loss with one sampled negative (as RecBole and the
  MDSRec paper's baselines do).
- Right padding with positions counted from the oldest item in the window (RecBole's layout); the original pads on
  the left so the newest item always has the last position.
- GELU and LayerNorm eps 1e-12 in the feed-forward layers (RecBole defaults; the original uses ReLU).

Shape legend: B batch, L sequence length, D hidden, N items.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mdsrec.models.base import (
    DataInfo,
    NextItemModel,
    TransformerConfig,
    init_weights,
)
from mdsrec.models.layers import TransformerLayer, position_rows


@dataclass
class SASRecConfig(TransformerConfig):
    name: str = "sasrec"


class SASRec(NextItemModel):
    name = "sasrec"

    def __init__(self, cfg: SASRecConfig, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.item_emb = nn.Embedding(info.num_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(info.max_len, d)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(d, cfg.num_heads, cfg.inner_size, cfg.dropout, cfg.attn_dropout, cfg.activation)
            for _ in range(cfg.num_layers)
        )
        self.apply(lambda m: init_weights(m, cfg.init_std))
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, items: Tensor, lengths: Tensor) -> Tensor:
        x = self._embed(items)  # [B, L, D]
        for layer in self.layers:
            x = layer(x, causal=True)  # right padding + causal mask: real positions never see padding
        return x

    def encode_last(self, items: Tensor, lengths: Tensor) -> Tensor:
        """As ``encode`` read at the last real position, with the last layer computed at that position only."""
        x = self._embed(items)  # [B, L, D]
        for layer in self.layers[:-1]:
            x = layer(x, causal=True)
        last = self.layers[-1]
        assert isinstance(last, TransformerLayer)
        return last.forward_last(x, lengths)  # [B, D]

    def _embed(self, items: Tensor) -> Tensor:
        pos = position_rows(self.pos_emb, items.size(1), items.device)  # [1, L, D]
        return self.drop(self.ln(self.item_emb(items) + pos))  # [B, L, D]

    def item_table(self) -> Tensor:
        return self.item_emb.weight  # [N+1, D]
