"""Shared building blocks: a causal Transformer encoder layer written out, so that later models (MDSRec's
interest-centralized attention) can reuse its Q/K/V projections layer by layer.

Shape legend: B batch, L sequence length, D hidden, h heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdsrec.models.base import check_divisible, gather_last


def position_rows(pos_emb: nn.Embedding, length: int, device: torch.device) -> Tensor:
    """[1, L, D] rows of positions 0..L-1 of a learned position table; ValueError when the sequence is longer than
    the table (data.max_len, or max_len + 1 for a model that appends a token)."""
    if length > pos_emb.num_embeddings:
        raise ValueError(
            f"sequence length {length} exceeds max_len: the position table has {pos_emb.num_embeddings} rows"
        )
    return pos_emb(torch.arange(length, device=device))[None]


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, attn_dropout: float) -> None:
        super().__init__()
        check_divisible(hidden, heads)
        self.heads = heads
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.attn_dropout = attn_dropout

    def split_heads(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # [B, h, n, D/h]

    def forward(self, x: Tensor, causal: bool = True, key_padding: Tensor | None = None) -> Tensor:
        """x [B, L, D]; key_padding [B, L] True where the key is padding (only needed when not causal)."""
        n = x.size(1)
        mask = None
        if key_padding is not None:
            mask = ~key_padding[:, None, :].expand(-1, n, -1)  # [B, L, L] True = attend
            if causal:
                mask = mask & torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        return self._attend(x, x, mask, is_causal=causal and mask is None)

    def attend(self, x: Tensor, memory: Tensor, mask: Tensor) -> Tensor:
        """Attention with any mask, also across sequences: x [B, Lq, D] queries, memory [B, Lk, D] keys and values,
        mask [B or 1, Lq, Lk] True = may attend (every row needs at least one True) -> [B, Lq, D]."""
        return self._attend(x, memory, mask, is_causal=False)

    def _attend(self, x: Tensor, memory: Tensor, mask: Tensor | None, is_causal: bool) -> Tensor:
        b, n, d = x.shape
        out = F.scaled_dot_product_attention(
            self.split_heads(self.q(x)),
            self.split_heads(self.k(memory)),
            self.split_heads(self.v(memory)),
            attn_mask=None if mask is None else mask[:, None],
            dropout_p=self.attn_dropout if self.training else 0.0,
            is_causal=is_causal,
        )  # [B, h, Lq, D/h]
        return self.out(out.transpose(1, 2).reshape(b, n, d))


class TransformerLayer(nn.Module):
    """Post-LN Transformer layer as in SASRec/BERT4Rec (RecBole): x = LN(x + Drop(Attn(x))); x = LN(x + Drop(FFN(x)))
    with FFN(x) = W2 act(W1 x)."""

    def __init__(
        self, hidden: int, heads: int, inner: int, dropout: float, attn_dropout: float, act: str = "gelu"
    ) -> None:
        super().__init__()
        self.attn = MultiHeadSelfAttention(hidden, heads, attn_dropout)
        self.ln1 = nn.LayerNorm(hidden, eps=1e-12)
        self.ff1 = nn.Linear(hidden, inner)
        self.ff2 = nn.Linear(inner, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=1e-12)
        self.drop = nn.Dropout(dropout)
        if act not in ("gelu", "relu"):
            raise ValueError(f"activation ({act!r}) must be 'gelu' or 'relu'")
        self.act = F.gelu if act == "gelu" else F.relu

    def forward(self, x: Tensor, causal: bool = True, key_padding: Tensor | None = None) -> Tensor:
        x = self.ln1(x + self.drop(self.attn(x, causal=causal, key_padding=key_padding)))
        return self._ffn(x)

    def _ffn(self, x: Tensor) -> Tensor:
        return self.ln2(x + self.drop(self.ff2(self.act(self.ff1(x)))))  # no dropout inside the FFN (RecBole)

    def forward_last(self, x: Tensor, lengths: Tensor) -> Tensor:
        """The causal layer's output at each row's last real position only: x [B, L, D], lengths [B] -> [B, D].
        The same function as ``forward(x)`` read at ``lengths - 1`` (float rounding apart): the query is that
        position's row, the keys every position up to it; 1/L of the layer's work when only the last state is
        read (scoring the next item)."""
        last = (lengths - 1).clamp(min=0)  # [B]
        q = gather_last(x, lengths)[:, None]  # [B, 1, D]
        visible = torch.arange(x.size(1), device=x.device)[None, None, :] <= last[:, None, None]  # [B, 1, L]
        h = self.ln1(q + self.drop(self.attn.attend(q, x, visible)))  # [B, 1, D]
        return self._ffn(h)[:, 0]  # [B, D]


class CausalEncoder(nn.Module):
    """Position embeddings, LayerNorm, dropout and ``num_layers`` causal post-LN Transformer layers (SASRec layout)."""

    def __init__(
        self, d: int, heads: int, inner: int, layers: int, dropout: float, attn_dropout: float, max_len: int
    ) -> None:
        super().__init__()
        self.pos_emb = nn.Embedding(max_len, d)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(d, heads, inner, dropout, attn_dropout) for _ in range(layers)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """x [B, L, D] item rows -> num_layers + 1 states [B, L, D]: states[l] is layer l's input, states[-1] the
        output. Position j depends only on x[:, : j + 1] (right padding never reaches a real position)."""
        s = self.drop(self.ln(x + position_rows(self.pos_emb, x.size(1), x.device)))  # [B, L, D]
        states = [s]
        for layer in self.layers:
            s = layer(s, causal=True)
            states.append(s)
        return states
