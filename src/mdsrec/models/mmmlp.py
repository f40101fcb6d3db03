"""MMMLP: "MMMLP: Multi-modal Multilayer Perceptron for Sequential Recommendations", Liang, Zhao, Li, Zhang, Wang,
Liu & Liu, WWW 2023, arXiv 2303.00418.

A purely MLP-based model. Feature Mixer Layer: every stream (the item-ID embeddings, and each modality's projected
features) is its own sequence of tokens, mixed by a stack of MLP-Mixer layers: a token-mixing MLP across the
sequence positions and a channel-mixing MLP across the hidden units, each pre-LayerNorm with a residual connection.
Fusion Mixer Layer: the streams' outputs are concatenated per position, LayerNorm-ed and mapped back to D by a
linear layer (concat + Linear, as the authors' code does). Prediction Layer: LayerNorm, then dot-product scores
against the item-ID embedding table, cross-entropy over all items at every position.

Deviations:
- Causal token mixing. The original token MLP (L -> 4L -> L over a fixed right-padded window) mixes every position
  with every other one, and only the last real position is read out, so in one-row-per-prefix training the only
  "future" it sees is padding. All-prefix training reads every position, so here the token MLP is masked like MADE:
  hidden unit h belongs to position h // 4, it reads inputs at positions <= h // 4, and output j reads hidden units
  of positions <= j. Position j therefore depends on positions <= j only, and padding after the last real item never
  changes a real position. What is lost is the padding positions' (constant) contribution to the last position.
- A window shorter than max_len uses the leading block of the token-mixing weights (exactly the result of padding
  the window to max_len, since later positions cannot reach earlier ones).
- Each stream has its own weights per layer (the authors' code reuses one mixer block for every layer) and the
  output LayerNorm is its own (the code reuses the ID stream's input LayerNorm).
- Modality features enter through a learned linear projection of the fixed feature table (the original feeds
  precomputed image/text vectors of the hidden size); any number of modalities, not exactly text + image.
- Cross-entropy over all items (one of the original's two loss options; the other is BPR).

Shape legend: B batch, L sequence length (window n <= max_len), D hidden, N items, M modalities, e expansion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdsrec.models.base import DataInfo, NextItemModel, init_weights


@dataclass
class MMMLPConfig:
    name: str = "mmmlp"
    hidden_size: int = 64
    num_layers: int = 2  # mixer layers per stream
    token_expansion: int = 4  # hidden units per position in the token-mixing MLP
    channel_expansion: int = 4  # channel MLP: D -> expansion * D -> D
    dropout: float = 0.2
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "token_expansion", "channel_expansion"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} ({getattr(self, name)}) must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout ({self.dropout}) must lie in [0, 1)")
        if self.init_std <= 0:
            raise ValueError(f"init_std ({self.init_std}) must be > 0")


class MMMLPCausalTokenMixer(nn.Module):
    """Pre-LN residual token-mixing MLP over positions, masked so that output j reads positions <= j only:
    x + W2 drop(GELU(W1 LN(x) + b1)) + b2 along the sequence axis, W1 [eL, L], W2 [L, eL] (MADE-style masks)."""

    mask1: Tensor
    mask2: Tensor

    def __init__(self, hidden: int, max_len: int, expansion: int, dropout: float, std: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.expansion = expansion
        inner = expansion * max_len
        self.w1 = nn.Parameter(torch.randn(inner, max_len) * std)
        self.b1 = nn.Parameter(torch.zeros(inner))
        self.w2 = nn.Parameter(torch.randn(max_len, inner) * std)
        self.b2 = nn.Parameter(torch.zeros(max_len))
        pos = torch.arange(max_len)
        owner = torch.arange(inner) // expansion  # [eL] position each hidden unit belongs to
        self.register_buffer("mask1", (pos[None, :] <= owner[:, None]).float(), persistent=False)  # [eL, L]
        self.register_buffer("mask2", (owner[None, :] <= pos[:, None]).float(), persistent=False)  # [L, eL]
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        n = x.size(1)
        h = n * self.expansion  # hidden units of the first n positions
        w1 = (self.w1 * self.mask1)[:h, :n]  # [e n, n]
        w2 = (self.w2 * self.mask2)[:n, :h]  # [n, e n]
        y = torch.einsum("hn,bnd->bhd", w1, self.norm(x)) + self.b1[:h, None]  # [B, e n, D]
        y = self.drop(F.gelu(y))
        y = torch.einsum("nh,bhd->bnd", w2, y) + self.b2[:n, None]  # [B, n, D]
        return x + self.drop(y)


class MMMLPChannelMixer(nn.Module):
    """Pre-LN residual channel MLP: x + drop(W2 drop(GELU(W1 LN(x))))."""

    def __init__(self, hidden: int, expansion: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.ff1 = nn.Linear(hidden, expansion * hidden)
        self.ff2 = nn.Linear(expansion * hidden, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop(self.ff2(self.drop(F.gelu(self.ff1(self.norm(x))))))  # [B, n, D]


class MMMLPStream(nn.Module):
    """One stream's Feature Mixer: input LayerNorm, then num_layers x (causal token mixing, channel mixing)."""

    def __init__(self, cfg: MMMLPConfig, max_len: int) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.norm = nn.LayerNorm(d, eps=1e-12)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                MMMLPCausalTokenMixer(d, max_len, cfg.token_expansion, cfg.dropout, cfg.init_std),
                MMMLPChannelMixer(d, cfg.channel_expansion, cfg.dropout),
            )
            for _ in range(cfg.num_layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)  # [B, n, D]
        for block in self.blocks:
            x = block(x)
        return x


class MMMLP(NextItemModel):
    name = "mmmlp"

    def __init__(self, cfg: MMMLPConfig, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        if not info.features:
            raise ValueError("MMMLP needs at least one modality feature table; the data set has none")
        d = cfg.hidden_size
        self.max_len = info.max_len
        self.modalities = list(info.features)
        self.proj = nn.ModuleList()
        for i, (name, table) in enumerate(info.features.items()):
            if table.ndim != 2 or table.shape[0] != info.num_items + 1:
                raise ValueError(
                    f"feature table {name!r} has shape {table.shape}, expected ({info.num_items + 1}, d)"
                )
            self.register_buffer(
                f"features_{i}", torch.from_numpy(np.asarray(table, dtype=np.float32).copy())
            )
            self.proj.append(nn.Linear(table.shape[1], d))
        m = len(self.modalities)
        self.item_emb = nn.Embedding(info.num_items + 1, d, padding_idx=0)
        self.streams = nn.ModuleList(
            MMMLPStream(cfg, info.max_len) for _ in range(1 + m)
        )  # ID, then modalities
        self.fuse_norm = nn.LayerNorm((1 + m) * d, eps=1e-12)
        self.fuse = nn.Linear((1 + m) * d, d)
        self.out_norm = nn.LayerNorm(d, eps=1e-12)
        self.apply(lambda mod: init_weights(mod, cfg.init_std))
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, items: Tensor, lengths: Tensor) -> Tensor:
        if items.size(1) > self.max_len:
            raise ValueError(f"sequence length {items.size(1)} exceeds max_len {self.max_len}")
        inputs = [self.item_emb(items)]  # [B, L, D]
        for i, proj in enumerate(self.proj):
            inputs.append(proj(getattr(self, f"features_{i}")[items]))  # [B, L, d_m] -> [B, L, D]
        outs = [stream(x) for stream, x in zip(self.streams, inputs, strict=True)]  # (1 + M) x [B, L, D]
        fused = self.fuse(self.fuse_norm(torch.cat(outs, dim=-1)))  # [B, L, (1 + M) D] -> [B, L, D]
        return self.out_norm(fused)

    def item_table(self) -> Tensor:
        return self.item_emb.weight  # [N+1, D]
