"""MMMLP: "MMMLP: Multi-modal Multilayer Perceptron for Sequential Recommendations", Liang, Zhao, Li, Zhang, Wang,
Liu & Liu, WWW 2023, doi 10.1145/3543507.3583378 (no arXiv version found; details checked against the authors' code,
Applied-Machine-Learning-Lab/MMMLP).

A purely MLP-based model. Feature Mixer Layer: every stream (the item-ID embeddings, and each modality's projected
features) is its own sequence of tokens, mixed by a stack of MLP-Mixer layers: a token-mixing MLP across the
sequence positions and a channel-mixing MLP across the hidden units, each pre-LayerNorm with a residual connection.
Fusion Mixer Layer: the streams' outputs are concatenated per position, LayerNorm-ed and mapped back to D by a
linear layer (concat + Linear, as the authors' code does). Prediction Layer: LayerNorm, then dot-product scores
against the item-ID embedding table, cross-entropy over all items at every position.

Deviations:
- Causal token mixing by default (``token_mixing: causal``). The original token MLP (L -> 4L -> L over a fixed
  right-padded window) mixes every position with every other one, and only the last real position is read out, so in
  one-row-per-prefix training the only "future" it sees is padding. All-prefix training reads every position, so
  here the token MLP is masked like MADE: hidden unit h belongs to position h // 4, it reads inputs at positions
  <= h // 4, and output j reads hidden units of positions <= j. Position j therefore depends on positions <= j only,
  and padding after the last real item never changes a real position. This is not only the loss of padding's
  constant contribution: output j reads 4 (j + 1) hidden units instead of all 4 L, so for a short history (5-8 items
  on the Amazon sets) the last position's token MLP has 20-32 of the original's 200 hidden units, and each of them
  sees only the positions up to its owner. It likely handicaps the model on short histories.
  ``token_mixing: full`` is the original's unmasked mixer over the window padded to max_len (padding positions enter
  as the original's: zero vectors in every stream); it needs ``data.train_mode: materialized`` (one trained target per
  row, the last; the trainer refuses all-prefix rows) and costs every row max_len positions in every layer, about
  40x the all-prefix positions on Scientific, which made it unaffordable for the CPU benchmark here.
- A window shorter than max_len uses the leading block of the causal token-mixing weights (exactly the result of
  padding the window to max_len, since later positions cannot reach earlier ones); the full mixer pads to max_len.
- Each stream has its own weights per layer (the authors' code reuses one mixer block for every layer) and the
  output LayerNorm is its own (the code reuses the ID stream's input LayerNorm). Every stream stacks its layers;
  the authors' text and image loops re-apply the token mixer to the stream's input on each pass, so there those
  two streams are in effect one layer deep (read as a slip, not followed).
- Modality features enter through a learned linear projection of the fixed feature table (the original feeds
  precomputed image/text vectors of the hidden size); any number of modalities, not exactly text + image.
- Cross-entropy over all items (one of the original's two loss options; the other is BPR).
- Initialisation: the token mixer's W1 [eL, L], b1, W2 [L, eL], b2 are drawn as the authors' token-mixing Conv1d
  is left at PyTorch's default init, uniform(+-1/sqrt(fan_in)) with fan_in = L for W1, b1 and eL for W2, b2 (the
  fan-in of the unmasked layer; the causal mask zeroes part of it). Everything else is N(0, init_std) for linear
  weights and embeddings, zero biases, unit LayerNorms (init_weights).

Shape legend: B batch, L sequence length (window n <= max_len), D hidden, N items, M modalities, e expansion.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdsrec.data.protocol import Batch
from mdsrec.models.base import DataInfo, NextItemModel, check_config, init_weights
from mdsrec.models.modal_features import ModalityProjections


@dataclass
class MMMLPConfig:
    name: str = "mmmlp"
    hidden_size: int = 64
    num_layers: int = 2  # mixer layers per stream
    token_expansion: int = 4  # hidden units per position in the token-mixing MLP
    channel_expansion: int = 4  # channel MLP: D -> expansion * D -> D
    dropout: float = 0.2
    init_std: float = 0.02
    token_mixing: str = (
        "causal"  # "causal" (MADE-masked, any training rows) | "full" (the original; materialized)
    )

    def __post_init__(self) -> None:
        check_config(
            self,
            ("hidden_size", "num_layers", "token_expansion", "channel_expansion"),
            ("dropout",),
            ("init_std",),
        )
        if self.token_mixing not in ("causal", "full"):
            raise ValueError(f"token_mixing ({self.token_mixing!r}) must be 'causal' or 'full'")


def _default_uniform(*shape: int, fan_in: int) -> nn.Parameter:
    """uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default init of a Conv1d/Linear weight and bias."""
    bound = fan_in**-0.5
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


class MMMLPCausalTokenMixer(nn.Module):
    """Pre-LN residual token-mixing MLP over positions, by default masked so that output j reads positions <= j only:
    x + W2 drop(GELU(W1 LN(x) + b1)) + b2 along the sequence axis, W1 [eL, L], W2 [L, eL] (MADE-style masks).
    Weights and biases start at PyTorch's default (unmasked) Conv1d/Linear init, as the authors' token mixer.
    ``causal=False``: the masks are all ones (the authors' unmasked mixer; the caller pads to max_len)."""

    mask1: Tensor
    mask2: Tensor

    def __init__(
        self, hidden: int, max_len: int, expansion: int, dropout: float, causal: bool = True
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.expansion = expansion
        inner = expansion * max_len
        self.w1 = _default_uniform(inner, max_len, fan_in=max_len)  # [eL, L]
        self.b1 = _default_uniform(inner, fan_in=max_len)  # [eL]
        self.w2 = _default_uniform(max_len, inner, fan_in=inner)  # [L, eL]
        self.b2 = _default_uniform(max_len, fan_in=inner)  # [L]
        pos = torch.arange(max_len)
        owner = torch.arange(inner) // expansion  # [eL] position each hidden unit belongs to
        mask1 = (pos[None, :] <= owner[:, None]) | (not causal)  # [eL, L]
        mask2 = (owner[None, :] <= pos[:, None]) | (not causal)  # [L, eL]
        self.register_buffer("mask1", mask1.float(), persistent=False)
        self.register_buffer("mask2", mask2.float(), persistent=False)
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
    """One stream's Feature Mixer: input LayerNorm, then num_layers x (token mixing, causal or full; channel
    mixing)."""

    def __init__(self, cfg: MMMLPConfig, max_len: int) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.norm = nn.LayerNorm(d, eps=1e-12)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                MMMLPCausalTokenMixer(
                    d, max_len, cfg.token_expansion, cfg.dropout, causal=cfg.token_mixing == "causal"
                ),
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
        d = cfg.hidden_size
        self.max_len = info.max_len
        self.full_mixing = self.needs_materialized(cfg)
        self.features = ModalityProjections(info.features, info.num_items, d, "MMMLP")
        m = len(self.features)
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
        n = items.size(1)
        if n > self.max_len:
            raise ValueError(f"sequence length {n} exceeds max_len {self.max_len}")
        if self.full_mixing:  # the unmasked mixer reads the whole window: pad it as the original does
            items = F.pad(items, (0, self.max_len - n))  # [B, max_len]
        real = (items > 0).unsqueeze(-1).to(self.item_emb.weight.dtype)  # [B, L, 1]
        # padding is a zero vector in every stream, as the original's zero feature rows (not the projection's bias)
        inputs = [self.item_emb(items), *(f * real for f in self.features(items))]  # (1 + M) x [B, L, D]
        outs = [stream(x) for stream, x in zip(self.streams, inputs, strict=True)]  # (1 + M) x [B, L, D]
        fused = self.fuse(self.fuse_norm(torch.cat(outs, dim=-1)))  # [B, L, (1 + M) D] -> [B, L, D]
        return self.out_norm(fused)[:, :n]  # [B, n, D]

    @staticmethod
    def needs_materialized(cfg: MMMLPConfig) -> bool:
        return cfg.token_mixing == "full"  # the unmasked mixer: all-prefix rows would see later items

    @staticmethod
    def needs_materialized_because(cfg: MMMLPConfig) -> str:
        return f"model.token_mixing={cfg.token_mixing}; model.token_mixing=causal is causal"

    def compute_loss(self, batch: Batch) -> Tensor:
        assert batch.targets is not None, "training batch needs targets"
        if self.full_mixing:  # one target per row, at its last real position
            last = torch.zeros_like(batch.targets, dtype=torch.bool)
            last[torch.arange(last.size(0)), (batch.lengths - 1).clamp(min=0)] = True
            if bool(((batch.targets > 0) & ~last).any()):
                raise ValueError(
                    "MMMLP with token_mixing 'full' trains one target per row, at its last position "
                    "(data.train_mode: materialized); this batch has targets at earlier positions, which would "
                    "see later items"
                )
        return super().compute_loss(batch)

    def item_table(self) -> Tensor:
        return self.item_emb.weight  # [N+1, D]
