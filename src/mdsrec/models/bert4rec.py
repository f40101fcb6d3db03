"""BERT4Rec: "BERT4Rec: Sequential Recommendation with Bidirectional Encoder Representations from Transformer",
Sun, Liu, Wu, Pei, Lin, Ou & Jiang, CIKM 2019, arXiv 1904.06690.

A bidirectional Transformer over item plus position embeddings, trained with the cloze task: random items of a
training sequence are replaced by a [MASK] token (id N+1, so the embedding table has N+2 rows) and predicted from
both sides. The output head is BERT's: h -> LayerNorm(GELU(W h + b)), scored against the tied item embeddings plus
a per-item output bias. At evaluation a [MASK] token is appended after the history (at most max_len items) and the
items are ranked at that position; the [MASK] row is never a scored column. The position table has max_len + 1
rows (RecBole's layout), so a full history keeps all its max_len items beside the [MASK].

Training rows come from the shared batching (data/protocol.py): a row is a window of at most max_len items of a
user's training part and ``targets`` holds the item after each position, so the row's items plus the target of its
last position (at most max_len + 1 items, the same width as at evaluation) is a window of the training sequence:
the cloze sequence. Every item of it is masked with probability ``mask_prob``, at least one per row (a uniformly
drawn position when the draw masks none); with probability ``mask_last_ratio`` a row instead masks only its last
item (the evaluation situation).

Deviations:
- Cross-entropy over all items at the masked positions, as in the paper (no sampled softmax); padding column -inf.
- Masked items are always replaced by [MASK] (the authors' code, mask_prob=1.0; BERT's 80/10/10 is not used), and
  each item is masked independently (RecBole) instead of exactly round(mask_prob * length) items (authors' code).
- No dupe factor: the masks are redrawn every time a row is seen (every epoch).
- Which cloze sequences are trained depends on ``data.train_mode``, and neither choice is the authors'. The frozen
  experiment configs use ``materialized`` (RecBole's training data, every prefix an example, with one difference:
  RecBole masks the history t[:p] of each (history, next item) example, here the cloze sequence also holds the next
  item, t[:p+1]): every prefix t[:p+1]
  (p = 1..T-1, its last max_len + 1 items) of a training part of length T is its own cloze sequence, so a user
  gives T - 1 sequences per epoch, an early item is masked and predicted up to min(T, max_len + 1) times as often
  as the last one, and a user's share of the masked positions grows roughly with T^2 / 2 (at most T (max_len + 1))
  instead of T. With the default ``all_prefix`` a user gives one sequence (its first max_len + 1 items) plus one
  per later position (a sliding window with stride 1; one sequence when T <= max_len + 1). The authors' code
  builds one sequence per user (several windows only for users longer than max_len) and repeats it with fresh
  masks (dupe factor 10).
- ``mask_last_ratio`` plays the role of the authors' extra "mask the last item" instances (the paper also produces
  samples that mask only the last item) and of RecBole's ``ft_ratio``; the default 0.5 is RecBole's value, drawn per
  row here (RecBole draws it per batch). 0 gives the pure cloze objective.
- Right padding with a key-padding mask (RecBole's layout): positions count from the oldest item of the window.
- The loss is the cross-entropy summed over each row's masked positions and averaged over the rows of the batch
  (RecBole and the authors average over the batch's masked positions). Over randomly composed batches the two
  weight every masked position the same (up to a constant factor, which Adam ignores); with length-bucketed
  batches (``data.materialized_padding: batch``, or all_prefix) a per-batch mean over positions would weigh a
  position of a batch of short rows several times more than one of a batch of long rows (~5x on Scientific).

Shape legend: B batch, L sequence length, D hidden, N items, P masked positions in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdsrec.data.protocol import Batch
from mdsrec.models.base import (
    DataInfo,
    SequentialRecommender,
    TransformerConfig,
    gather_last,
    init_weights,
)
from mdsrec.models.catalogue import Factors, Scores, catalogue_cross_entropy
from mdsrec.models.layers import TransformerLayer, position_rows


@dataclass
class BERT4RecConfig(TransformerConfig):
    name: str = "bert4rec"
    dropout: float = 0.2
    attn_dropout: float = 0.2
    mask_prob: float = 0.2  # probability that an item of a training sequence is masked
    mask_last_ratio: float = (
        0.5  # probability that a training row masks only its last item (RecBole's ft_ratio)
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.mask_prob <= 1.0:
            raise ValueError(f"mask_prob ({self.mask_prob}) must lie in (0, 1]")
        if not 0.0 <= self.mask_last_ratio <= 1.0:
            raise ValueError(f"mask_last_ratio ({self.mask_last_ratio}) must lie in [0, 1]")


def append_item(items: Tensor, lengths: Tensor, new: Tensor, max_len: int) -> tuple[Tensor, Tensor]:
    """Append ``new[b]`` after the last real item of each right-padded row (nothing where new[b] == 0) and keep the
    last ``max_len`` items: items [B, L], lengths [B], new [B] -> items [B, min(L + 1, max_len)], lengths [B]."""
    b, n = items.shape
    if n > max_len:
        raise ValueError(f"sequence length {n} exceeds max_len {max_len}")
    full = torch.cat([items, items.new_zeros(b, 1)], dim=1)  # [B, L+1]
    full.scatter_(1, lengths[:, None], new[:, None])  # position lengths[b] is padding before this
    out_len = lengths + (new > 0).long()  # [B]
    if n + 1 <= max_len:
        return full, out_len
    over = out_len > max_len  # [B] only possible when L == max_len: drop the oldest item of those rows
    out = torch.where(over[:, None], full[:, 1:], full[:, :max_len])  # [B, max_len]
    return out, out_len.clamp(max=max_len)


class BERT4Rec(SequentialRecommender):
    name = "bert4rec"
    prefix_objective = False  # cloze: the loss is not the next item after each prefix

    def __init__(self, cfg: BERT4RecConfig, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.num_items = info.num_items
        self.mask_id = info.num_items + 1
        self.max_len = info.max_len
        self.item_emb = nn.Embedding(info.num_items + 2, d, padding_idx=0)  # rows 1..N items, N+1 [MASK]
        self.pos_emb = nn.Embedding(info.max_len + 1, d)  # max_len history items plus the appended [MASK]
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(d, cfg.num_heads, cfg.inner_size, cfg.dropout, cfg.attn_dropout, cfg.activation)
            for _ in range(cfg.num_layers)
        )
        self.head = nn.Linear(d, d)  # BERT's masked-LM transform
        self.head_ln = nn.LayerNorm(d, eps=1e-12)
        self.act = F.gelu if cfg.activation == "gelu" else F.relu
        self.out_bias = nn.Parameter(torch.zeros(info.num_items + 1))  # [N+1]
        self.apply(lambda m: init_weights(m, cfg.init_std))
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, items: Tensor, lengths: Tensor) -> Tensor:
        """items [B, L] (may hold [MASK]) -> hidden states [B, L, D]; every real position sees every real position,
        padding is never attended."""
        pos = torch.arange(items.size(1), device=items.device)  # [L]
        padding = pos[None] >= lengths[:, None]  # [B, L]
        x = self.item_emb(items) + position_rows(self.pos_emb, items.size(1), items.device)  # [B, L, D]
        x = self.drop(self.ln(x))
        for layer in self.layers:
            x = layer(x, causal=False, key_padding=padding)
        return x

    def factors(self, h: Tensor) -> Factors:
        """h [..., D] -> the item scores as a product: the masked-LM transform of h against the item rows (the
        [MASK] row is not a column), plus the output bias."""
        q = self.head_ln(self.act(self.head(h)))  # [..., D]
        return Factors(q, self.item_emb.weight[: self.num_items + 1], bias=self.out_bias)

    def scores(self, h: Tensor) -> Tensor:
        """h [..., D] -> [..., N+1] item scores; column 0 is -inf."""
        y = self.factors(h).scores()  # [..., N+1]
        y[..., 0] = float("-inf")
        return y

    def training_sequences(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """The window of the training sequence behind each row: its items plus the target of its last position,
        last max_len + 1 items kept -> items [B, L'], lengths [B] (L' <= max_len + 1, as at evaluation)."""
        assert batch.targets is not None, "training batch needs targets"
        last = batch.targets.gather(1, (batch.lengths - 1)[:, None]).squeeze(1)  # [B]
        return append_item(batch.items, batch.lengths, last, self.max_len + 1)

    def cloze_mask(self, lengths: Tensor, width: int) -> Tensor:
        """lengths [B] -> [B, width] True at the positions to mask (never padding, at least one per row)."""
        b = lengths.size(0)
        dev = lengths.device
        pos = torch.arange(width, device=dev)  # [W]
        masked = (torch.rand(b, width, device=dev) < self.cfg.mask_prob) & (pos < lengths[:, None])  # [B, W]
        pick = torch.minimum(
            (torch.rand(b, device=dev) * lengths).long(), lengths - 1
        )  # [B] uniform position
        masked |= ~masked.any(dim=1, keepdim=True) & (pos == pick[:, None])
        last_only = torch.rand(b, device=dev) < self.cfg.mask_last_ratio  # [B]
        return torch.where(last_only[:, None], pos == (lengths - 1)[:, None], masked)

    def compute_loss(self, batch: Batch) -> Tensor:
        seq, lengths = self.training_sequences(batch)  # [B, L'], [B]
        masked = self.cloze_mask(lengths, seq.size(1))  # [B, L']
        states = self.encode(seq.masked_fill(masked, self.mask_id), lengths)  # [B, L', D]
        # Summed over each row's masked positions, averaged over the B rows: every masked position weighs 1/B
        # whatever the batch's composition (see the module docstring).
        ce = catalogue_cross_entropy(
            self.factors(states[masked]), seq[masked], self.chunking, reduction="sum"
        )  # over the P positions
        return ce / seq.size(0)

    def mask_state(self, batch: Batch) -> Tensor:
        """[B, D]: the state at a [MASK] appended after each history (all of a full max_len history kept)."""
        mask = torch.full_like(batch.lengths, self.mask_id)  # [B]
        seq, lengths = append_item(batch.items, batch.lengths, mask, self.max_len + 1)  # [B, L+1]
        return gather_last(self.encode(seq, lengths), lengths)

    def score_all(self, batch: Batch) -> Tensor:
        return self.scores(self.mask_state(batch))  # [B, N+1]

    def score_factors(self, batch: Batch, channels: bool = False) -> dict[str, Scores] | None:
        return {"fused": self.factors(self.mask_state(batch))}
