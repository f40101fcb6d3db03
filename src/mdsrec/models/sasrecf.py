"""SASRecF: SASRec ("Self-Attentive Sequential Recommendation", Kang & McAuley, ICDM 2018, arXiv 1808.09781) with
item features fused into its input, as RecBole's SASRecF (no paper of its own; the MDSRec paper's baseline).

Per position, the item's ID embedding and each modality's projected feature vector (nn.Linear(d_m, D) of the full
vector) are concatenated and mapped back to D by a linear layer ([e_id; f_1; ...; f_M] -> D, RecBole's concat
fusion); position embeddings, LayerNorm and dropout follow, then SASRec's causal post-LN Transformer. Items are
scored by dot product against the ID embedding table only, trained with cross-entropy over all items at every
position.

Deviations:
- Cross-entropy over all items at every trained position (as SASRec here; RecBole's CE loss).
- A modality's dense vector enters through a learned nn.Linear(d_m, D) with bias; RecBole's float-sequence field
  embedding (value-weighted sum of per-dimension embeddings, mean-pooled) is the same map up to a scale, no bias.
- Right padding with positions counted from the oldest item in the window (RecBole's layout), GELU and LayerNorm
  eps 1e-12 (RecBole defaults), as in sasrec.py.

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
class SASRecFConfig(TransformerConfig):
    name: str = "sasrecf"


class SASRecF(NextItemModel):
    name = "sasrecf"

    def __init__(self, cfg: SASRecFConfig, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.features = ModalityProjections(info.features, info.num_items, d, "SASRecF")
        self.item_emb = nn.Embedding(info.num_items + 1, d, padding_idx=0)
        self.fuse = nn.Linear(d * (1 + len(self.features)), d)  # [e_id; f_1; ...; f_M] -> D
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
        pos = position_rows(self.pos_emb, items.size(1), items.device)  # [1, L, D]
        x = self.fuse(
            torch.cat([self.item_emb(items), *self.features(items)], dim=-1)
        )  # [B, L, (1+M) D] -> D
        x = self.drop(self.ln(x + pos))  # [B, L, D]
        for layer in self.layers:
            x = layer(x, causal=True)  # right padding + causal mask: real positions never see padding
        return x

    def item_table(self) -> Tensor:
        return self.item_emb.weight  # [N+1, D]
