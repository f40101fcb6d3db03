"""UniSRec: "Towards Universal Sequence Representation Learning for Recommender Systems", Hou, Mu, Zhao, Li, Ding &
Wen, KDD 2022, arXiv 2206.05941.

Items are represented by their FROZEN text features through a mixture-of-experts adaptor: expert i is a parametric
whitening (x - b_i) W_i, and a softmax gate over x W_g (with learned Gaussian noise on the gate logits in training)
mixes the experts. In the fine-tuning setting the item-ID embedding is added (``use_id``; the paper's "transductive"
setting, off = "inductive"). The item rows plus learned position embeddings go through a causal SASRec-style
Transformer; the score of an item is the cosine between the L2-normalised sequence state and the L2-normalised item
representation, divided by a temperature, trained with cross-entropy over all items at every position.

Pre-train on one data set, fine-tune on another: ``init_from`` names a checkpoint (best.pt) of a UniSRec run on
another data set; its transferable parameters (MoE adaptor, position embeddings, input LayerNorm, Transformer; not
the item-ID embeddings, whose catalogue differs, nor the feature table) are loaded by the trainer when a new run
starts (``mdsrec.training.transfer``); a trained run is rebuilt from its own checkpoint, without the file.
``freeze_encoder`` then fixes the position embeddings and the Transformer, as the paper's fine-tuning does (only the
adaptor, the LayerNorm and the ID embeddings train); it requires ``init_from``.

Deviations:
- Pre-training is single-domain and uses only the sequence-item contrastive objective, in its full form: the
  cross-entropy over the whole catalogue at every prefix (the original pre-trains on several mixed source domains
  with in-batch negatives, plus a sequence-sequence contrastive loss over augmented sequences, weight lambda; that
  loss and the multi-domain mixing are not implemented).
- Text input: the original encodes one sentence "title + categories + brand" with BERT (CLS, 768-d). Here
  ``text_feature`` names one feature table (default the first modality) or a list of them, whose rows are
  concatenated ([N+1, sum of d]); where a data set stores title and category+brand as separate sentence embeddings
  (Scientific), the frozen config lists both, the nearest stand-in for the original's one sentence.
- Trained with all-prefix batching (every prefix of a training sequence in one causal pass) instead of one
  materialised row per prefix: the same objective.
- ``init_from`` refuses a checkpoint that lacks a transferable parameter or whose shapes differ (the original loads
  with strict=False, silently skipping mismatches).

Shape legend: B batch, L sequence length, D hidden, N items, E experts, d text feature size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdsrec.models.base import (
    DataInfo,
    EvalCache,
    NextItemModel,
    TransformerConfig,
    check_config,
    init_weights,
)
from mdsrec.models.layers import TransformerLayer, position_rows
from mdsrec.models.modal_features import select_feature

log = logging.getLogger(__name__)

# Parameter name prefixes that transfer between data sets (everything but item IDs and the feature table).
TRANSFERABLE = ("adaptor.", "pos_emb.", "ln.", "layers.")


@dataclass
class UniSRecConfig(TransformerConfig):
    name: str = "unisrec"
    n_exps: int = 8  # experts in the MoE adaptor
    adaptor_dropout: float = 0.2  # dropout on the text feature before whitening
    gate_noise: bool = True  # learned Gaussian noise on the gate logits in training
    temperature: float = 0.07
    text_feature: str | list[str] | None = None  # feature table(s) to use, concatenated; None: the first one
    use_id: bool = True  # add item-ID embeddings (fine-tune / "transductive"); False: text only ("inductive")
    init_from: str | None = None  # checkpoint of a UniSRec run whose transferable parameters are loaded
    freeze_encoder: bool = False  # fix position embeddings and Transformer (fine-tuning after init_from)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_config(self, ("n_exps",), ("adaptor_dropout",), ("temperature",))
        if isinstance(self.text_feature, list) and (
            not self.text_feature or len(set(self.text_feature)) != len(self.text_feature)
        ):
            raise ValueError(f"text_feature ({self.text_feature}) must be a non-empty list without repeats")
        if self.freeze_encoder and self.init_from is None:
            raise ValueError(
                "freeze_encoder (True) needs init_from (a pre-trained UniSRec checkpoint): a frozen encoder that "
                "was never trained stays at its random init"
            )


class UniSRecWhitening(nn.Module):
    """One expert: parametric whitening (dropout(x) - b) W, with b [d] and W [d, D] (no bias)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.bias = nn.Parameter(torch.zeros(in_dim))
        self.lin = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        # (dropout(x) - b) W written as dropout(x) W - b W: the same value, but where x needs no gradient (the
        # frozen feature table) the backward pass no longer multiplies every row's output gradient back through W
        # to reach b, only their [D] sum: one of the three [rows, d] x [d, D] products of a training step is saved
        return self.lin(self.drop(x)) - self.lin(self.bias)  # [..., D]


class UniSRecMoEAdaptor(nn.Module):
    """Mixture of E whitening experts, gated by softmax(x W_g + noise) (noise std softplus(x W_n) + 0.01, training
    only). Gate weights start at zero (uniform gates), as in the paper's code."""

    def __init__(self, in_dim: int, out_dim: int, n_exps: int, dropout: float, noise: bool) -> None:
        super().__init__()
        self.experts = nn.ModuleList(UniSRecWhitening(in_dim, out_dim, dropout) for _ in range(n_exps))
        self.w_gate = nn.Parameter(torch.zeros(in_dim, n_exps))
        self.w_noise = nn.Parameter(torch.zeros(in_dim, n_exps))
        self.noise = noise

    def gates(self, x: Tensor) -> Tensor:
        """x [..., d] -> gate weights [..., E], each row summing to 1."""
        logits = x @ self.w_gate  # [..., E]
        if self.noise and self.training:
            std = F.softplus(x @ self.w_noise) + 1e-2  # [..., E]
            logits = logits + torch.randn_like(logits) * std
        return logits.softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        g = self.gates(x)  # [..., E]
        out = torch.stack([e(x) for e in self.experts], dim=-2)  # [..., E, D]
        return (g.unsqueeze(-1) * out).sum(dim=-2)  # [..., D]


class UniSRec(NextItemModel):
    name = "unisrec"
    features: Tensor  # [N+1, d] frozen text features

    def __init__(self, cfg: UniSRecConfig, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        self._table_cache: EvalCache[Tensor] = EvalCache()  # item_table() in evaluation
        names = cfg.text_feature if isinstance(cfg.text_feature, list) else [cfg.text_feature]
        picked = [select_feature(info, n, "UniSRec", field="text_feature") for n in names]
        self.feature_name = "+".join(key for key, _ in picked)
        table = np.concatenate([t for _, t in picked], axis=1)  # [N+1, d]
        d = cfg.hidden_size
        self.register_buffer("features", torch.from_numpy(table.copy()))  # [N+1, d]
        self.adaptor = UniSRecMoEAdaptor(table.shape[1], d, cfg.n_exps, cfg.adaptor_dropout, cfg.gate_noise)
        self.item_emb = nn.Embedding(info.num_items + 1, d, padding_idx=0) if cfg.use_id else None
        self.pos_emb = nn.Embedding(info.max_len, d)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(d, cfg.num_heads, cfg.inner_size, cfg.dropout, cfg.attn_dropout, cfg.activation)
            for _ in range(cfg.num_layers)
        )
        self.apply(lambda m: init_weights(m, cfg.init_std))
        if self.item_emb is not None:
            with torch.no_grad():
                self.item_emb.weight[0].zero_()
        if cfg.freeze_encoder:
            for p in [*self.pos_emb.parameters(), *self.layers.parameters()]:
                p.requires_grad_(False)

    def item_rows(self, items: Tensor) -> Tensor:
        """items [...] -> adapted text (+ ID) representation [..., D], not normalised."""
        x = self.adaptor(self.features[items])  # [..., D]
        if self.item_emb is not None:
            x = x + self.item_emb(items)
        return x

    def encode(self, items: Tensor, lengths: Tensor) -> Tensor:
        """items [B, L] -> L2-normalised states [B, L, D] (causal)."""
        pos = position_rows(self.pos_emb, items.size(1), items.device)  # [1, L, D]
        x = self.drop(self.ln(self.item_rows(items) + pos))  # [B, L, D]
        for layer in self.layers:
            x = layer(x, causal=True)  # right padding + causal mask: real positions never see padding
        return F.normalize(x, dim=-1)

    def item_table(self) -> Tensor:
        """L2-normalised item representations divided by the temperature [N+1, D]: h @ table^T = cos / tau. Kept
        between calls in evaluation (eval mode, no grad) until a weight changes: the MoE adaptor over the whole
        catalogue is the costly part of scoring."""
        return self._table_cache.get(self, self.compute_item_table)

    def compute_item_table(self) -> Tensor:
        ids = torch.arange(self.features.size(0), device=self.features.device)  # [N+1]
        return F.normalize(self.item_rows(ids), dim=-1) / self.cfg.temperature  # [N+1, D]
