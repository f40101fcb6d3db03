"""GRU4Rec: "Session-based Recommendations with Recurrent Neural Networks", Hidasi et al., ICLR 2016,
arXiv 1511.06939.

Item embeddings, dropout, a GRU, a linear map to the embedding size, and dot-product scores against the item
embedding table, trained with cross-entropy over all items at every position (RecBole's GRU4Rec layout).

Deviations:
- Cross-entropy over all items instead of the paper's session-parallel mini-batches with TOP1/BPR ranking losses
  (as RecBole and the MDSRec paper's baselines do).
- Embedding layer and tied output embeddings (RecBole); the original feeds one-hot inputs.

Shape legend: B batch, L sequence length, D hidden, N items.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mdsrec.models.base import DataInfo, GRUConfig, NextItemModel


@dataclass
class GRU4RecConfig(GRUConfig):
    name: str = "gru4rec"


class GRU4Rec(NextItemModel):
    name = "gru4rec"

    def __init__(self, cfg: GRU4RecConfig, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(info.num_items + 1, cfg.embedding_size, padding_idx=0)
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.embedding_size, cfg.hidden_size, cfg.num_layers, batch_first=True, bias=False)
        self.proj = nn.Linear(cfg.hidden_size, cfg.embedding_size)
        nn.init.xavier_normal_(self.item_emb.weight)
        for name, w in self.gru.named_parameters():
            if "weight" in name:
                nn.init.xavier_uniform_(w)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, items: Tensor, lengths: Tensor) -> Tensor:
        x = self.drop(self.item_emb(items))  # [B, L, E]
        out, _ = self.gru(x)  # [B, L, H]; left to right, so padding after a position never reaches it
        return self.proj(out)  # [B, L, E]

    def item_table(self) -> Tensor:
        return self.item_emb.weight  # [N+1, E]
