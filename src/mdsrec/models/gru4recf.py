"""GRU4RecF: GRU4Rec ("Session-based Recommendations with Recurrent Neural Networks", Hidasi et al., ICLR 2016,
arXiv 1511.06939) with item features, in the parallel architecture of "Parallel Recurrent Neural Network
Architectures for Feature-rich Session-based Recommendations" (Hidasi, Quadrana, Karatzoglou & Tikk, RecSys 2016),
as RecBole's GRU4RecF implements it.

Two GRUs run side by side: one over the (dropped-out) item ID embeddings, one over the concatenation of every
modality's projected feature vector (nn.Linear(d_m, E) of the full vector, so its input is M * E wide). Their
outputs are concatenated per position and mapped to the embedding size by a linear layer (RecBole's "concatenate
the outputs of two RNNs", the best of the paper's parallel variants); items are scored by dot product against the
ID embedding table, trained with cross-entropy over all items at every position.

Deviations:
- Cross-entropy over all items instead of the papers' session-parallel mini-batches with TOP1/BPR ranking losses
  (as RecBole and the MDSRec paper's baselines do); embedding layer and tied output embeddings (RecBole).
- Fusion is the concatenation of the two GRUs' OUTPUTS (RecBole), not of their inputs into one GRU.
- A modality's dense vector enters through a learned nn.Linear(d_m, E) with bias (RecBole's float-sequence field
  embedding is the same map up to a scale, no bias); dropout only on the ID embeddings (RecBole).
- Initialisation as gru4rec.py: Xavier-normal embeddings and linear maps, Xavier-uniform GRU weights, no GRU biases.
  RecBole's GRU4RecF leaves both GRUs at PyTorch's default init (uniform(+-1/sqrt(H))); its embeddings and linear
  maps are Xavier-normal as here.

Shape legend: B batch, L sequence length, E embedding size, H GRU hidden size, M modalities, N items.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mdsrec.models.base import DataInfo, GRUConfig, NextItemModel
from mdsrec.models.modal_features import ModalityProjections


@dataclass
class GRU4RecFConfig(GRUConfig):
    name: str = "gru4recf"


class GRU4RecF(NextItemModel):
    name = "gru4recf"

    def __init__(self, cfg: GRU4RecFConfig, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        e, h = cfg.embedding_size, cfg.hidden_size
        self.features = ModalityProjections(info.features, info.num_items, e, "GRU4RecF")
        self.item_emb = nn.Embedding(info.num_items + 1, e, padding_idx=0)
        self.drop = nn.Dropout(cfg.dropout)
        self.item_gru = nn.GRU(e, h, cfg.num_layers, batch_first=True, bias=False)
        self.feature_gru = nn.GRU(e * len(self.features), h, cfg.num_layers, batch_first=True, bias=False)
        self.proj = nn.Linear(2 * h, e)
        for module in self.modules():
            if isinstance(module, nn.Embedding | nn.Linear):
                nn.init.xavier_normal_(module.weight)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.GRU):
                for name, w in module.named_parameters():
                    if "weight" in name:
                        nn.init.xavier_uniform_(w)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, items: Tensor, lengths: Tensor) -> Tensor:
        item_out, _ = self.item_gru(self.drop(self.item_emb(items)))  # [B, L, H]
        feature_out, _ = self.feature_gru(torch.cat(self.features(items), dim=-1))  # [B, L, M E] -> [B, L, H]
        # both GRUs run left to right, so padding after a position never reaches it
        return self.proj(torch.cat([item_out, feature_out], dim=-1))  # [B, L, 2H] -> [B, L, E]

    def item_table(self) -> Tensor:
        return self.item_emb.weight  # [N+1, E]
