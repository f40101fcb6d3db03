"""FDSA: "Feature-level Deeper Self-Attention Network for Sequential Recommendation", Zhang, Zhao, Liu, Sheng, Xu,
Wang, Liu & Zhou, IJCAI 2019 (no arXiv version).

Two self-attention streams over the same history. Item level: ID embeddings plus position embeddings, LayerNorm,
dropout and a stack of causal Transformer layers. Feature level: each modality's feature vector is projected to D
(nn.Linear(d_m, D) of the full vector), the M projections of an item are combined by a vanilla attention over the
modalities (a_m = softmax_m(w2 ReLU(W1 f_m + b1) + b2), f = sum_m a_m f_m), then position embeddings, LayerNorm,
dropout and its own causal Transformer. The two last-layer outputs are concatenated per position and mapped by
Linear(2D, D), LayerNorm and dropout; items are scored by dot product against the ID embedding table, trained with
cross-entropy over all items at every position.

Deviations:
- Cross-entropy over all items at every trained position instead of the paper's loss over sampled negatives
  (RecBole's CE, as the MDSRec paper's baselines).
- The feature attention is RecBole's two-layer scorer (Linear(D, D), ReLU, Linear(D, 1)); the paper scores each
  feature with one linear map. Features are the data set's modality vectors (the paper: category, brand and text
  embeddings of each item).
- One position embedding table shared by both streams, and Post-LN Transformer layers with GELU and LayerNorm eps
  1e-12 (RecBole); separate LayerNorms for the two stream inputs and the output (RecBole shares one).
- Right padding with positions counted from the oldest item in the window (RecBole's layout), as in sasrec.py.

Shape legend: B batch, L sequence length, D hidden, M modalities, N items.
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
from mdsrec.models.modal_features import ModalityProjections


@dataclass
class FDSAConfig(TransformerConfig):
    name: str = "fdsa"
    # num_layers: per stream


class FDSAFeatureAttention(nn.Module):
    """Vanilla attention over the modalities of each position: [B, L, M, D] -> [B, L, D] and weights [B, L, M]."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        weights = self.score(feats).squeeze(-1).softmax(dim=-1)  # [B, L, M]
        return (weights[..., None] * feats).sum(dim=-2), weights  # [B, L, D], [B, L, M]


class FDSA(NextItemModel):
    name = "fdsa"

    def __init__(self, cfg: FDSAConfig, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.features = ModalityProjections(info.features, info.num_items, d, "FDSA")
        self.item_emb = nn.Embedding(info.num_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(info.max_len, d)
        self.feature_attn = FDSAFeatureAttention(d)
        self.item_ln = nn.LayerNorm(d, eps=1e-12)
        self.feature_ln = nn.LayerNorm(d, eps=1e-12)
        self.out_ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)

        def stack() -> nn.ModuleList:
            return nn.ModuleList(
                TransformerLayer(
                    d, cfg.num_heads, cfg.inner_size, cfg.dropout, cfg.attn_dropout, cfg.activation
                )
                for _ in range(cfg.num_layers)
            )

        self.item_layers = stack()
        self.feature_layers = stack()
        self.concat = nn.Linear(2 * d, d)
        self.apply(lambda m: init_weights(m, cfg.init_std))
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def feature_weights(self, items: Tensor) -> Tensor:
        """items [B, L] -> attention weights over the modalities [B, L, M] (each row sums to 1)."""
        return self.feature_attn(torch.stack(self.features(items), dim=-2))[1]

    def encode(self, items: Tensor, lengths: Tensor) -> Tensor:
        pos = position_rows(self.pos_emb, items.size(1), items.device)  # [1, L, D]
        x = self.drop(self.item_ln(self.item_emb(items) + pos))  # [B, L, D] item-level stream
        f, _ = self.feature_attn(torch.stack(self.features(items), dim=-2))  # [B, L, M, D] -> [B, L, D]
        y = self.drop(self.feature_ln(f + pos))  # [B, L, D] feature-level stream
        for layer in self.item_layers:
            x = layer(x, causal=True)  # right padding + causal mask: real positions never see padding
        for layer in self.feature_layers:
            y = layer(y, causal=True)
        return self.drop(self.out_ln(self.concat(torch.cat([x, y], dim=-1))))  # [B, L, 2D] -> [B, L, D]

    def item_table(self) -> Tensor:
        return self.item_emb.weight  # [N+1, D]
