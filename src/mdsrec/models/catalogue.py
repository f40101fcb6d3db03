"""Scoring against the whole catalogue in bounded memory: the full cross-entropy of training and the full ranking of
evaluation, computed over chunks of items when the catalogue is large.

Most models score an item as a dot product of a query vector with the item's row of a table (``Factors``), so the
scores of B queries against N+1 items are one [B, N+1] matrix. For catalogues up to ``Chunking.above_items`` items
that matrix is built whole, as always. Above it, it is never built: the cross-entropy's log-sum-exp runs over item
chunks of ``block_elements // B`` items (an autograd function that recomputes each chunk's scores in the backward
pass instead of keeping them), and a target's rank is counted chunk by chunk (``ranking.chunked_target_ranks``), so
peak memory grows with B x chunk, not B x N. Both give the same loss, gradients and ranks as the whole matrix, to
float tolerance (the sums run in another order; tests compare them).

Shape legend: T rows (trained positions or users), D query width, N items (row 0 of a table is padding).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Chunking:
    """When and how finely whole-catalogue scores are split into item chunks."""

    above_items: int = 262_144  # catalogues with more items than this are scored in chunks
    block_elements: int = 1 << 25  # scores held at once (rows x chunk): 2^25 float32 = 128 MiB
    # The model's catalogue size N, for deciding before a forward pass (the evaluator); 0 = not known, and then
    # only the training loss, which sees the item table, chunks.
    num_items: int = 0

    def __post_init__(self) -> None:
        if self.above_items < 0 or self.block_elements < 1:
            raise ValueError(
                f"Chunking: above_items ({self.above_items}) must be >= 0 and block_elements "
                f"({self.block_elements}) >= 1"
            )

    def chunk(self, rows: int, num_items: int | None = None) -> int | None:
        """Items per chunk for ``rows`` queries against a catalogue of ``num_items`` items (default: the model's,
        ``self.num_items``); None: the whole matrix at once (the catalogue is not above the threshold)."""
        num_items = self.num_items if num_items is None else num_items
        if num_items <= self.above_items:
            return None
        return max(1, min(num_items + 1, self.block_elements // max(rows, 1)))


class Factors(NamedTuple):
    """Scores as a product: query [..., D] @ table[N+1, D].T, divided by ``divisor`` (a temperature) when it is not
    1, plus a per-item ``bias`` [N+1] when given. ``scores()`` is that, computed exactly as the models always did."""

    query: Tensor
    table: Tensor
    divisor: float = 1.0
    bias: Tensor | None = None

    def scores(self) -> Tensor:
        """[..., N+1], column 0 not masked."""
        y = self.query @ self.table.t()
        y = y / self.divisor if self.divisor != 1.0 else y
        return y + self.bias if self.bias is not None else y

    def folded(self) -> Factors:
        """The same scores without a bias: a column of ones on the query, the bias as the table's last column."""
        if self.bias is None:
            return self
        ones = torch.ones(*self.query.shape[:-1], 1, dtype=self.query.dtype, device=self.query.device)
        return Factors(
            torch.cat([self.scaled_query(), ones], dim=-1),
            torch.cat([self.table, self.bias[:, None]], dim=-1),
        )

    def scaled_query(self) -> Tensor:
        """The query with the divisor folded in, [..., D]."""
        return self.query / self.divisor if self.divisor != 1.0 else self.query

    def as_factors(self) -> Factors:
        return self


def weighted_sum(first: Tensor, rest: Iterable[tuple[float | Tensor, Tensor]]) -> Tensor:
    """first + sum_i w_i * t_i over ``rest`` = (w_i, t_i), added in that order."""
    y = first
    for w, t in rest:
        y = y + w * t
    return y


class FactorSum(NamedTuple):
    """Scores that are a weighted sum of products: first.scores() + sum_i w_i * rest_i.scores() (MDSRec's Eq. 22).
    ``scores()`` adds the matrices in that order; ``as_factors()`` is one product with the queries (weighted) and
    tables side by side, for the chunked paths."""

    first: Factors
    rest: tuple[tuple[float | Tensor, Factors], ...] = ()

    def scores(self) -> Tensor:
        return weighted_sum(self.first.scores(), [(w, f.scores()) for w, f in self.rest])

    def as_factors(self) -> Factors:
        parts = [self.first.folded()] + [f.folded() for _, f in self.rest]
        weights = [1.0] + [w for w, _ in self.rest]
        query = torch.cat([w * f.scaled_query() for w, f in zip(weights, parts, strict=True)], dim=-1)
        return Factors(query, torch.cat([f.table for f in parts], dim=-1))


Scores = Factors | FactorSum


class _ChunkedLogSumExp(torch.autograd.Function):
    """log sum_{i=1..N} exp(h . table[i]) per row, over item chunks; the padding row 0 is left out. The backward
    pass recomputes each chunk's scores, so neither pass holds more than [T, chunk] of them."""

    @staticmethod
    def forward(ctx: Any, h: Tensor, table: Tensor, chunk: int) -> Tensor:  # h [T, D], table [N+1, D] -> [T]
        peak = torch.full((h.size(0),), float("-inf"), device=h.device)  # [T] running maximum
        total = torch.zeros(h.size(0), device=h.device)  # [T] sum of exp(score - peak)
        for start in range(1, table.size(0), chunk):
            y = h @ table[start : start + chunk].t()  # [T, C]
            new_peak = torch.maximum(peak, y.max(dim=1).values)
            total = total * torch.exp(peak - new_peak) + y.sub_(new_peak[:, None]).exp_().sum(dim=1)
            peak = new_peak
        lse = peak + torch.log(total)  # [T]
        ctx.save_for_backward(h, table, lse)
        ctx.chunk = chunk
        return lse

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # grad [T]
        h, table, lse = ctx.saved_tensors
        grad_h = torch.zeros_like(h) if ctx.needs_input_grad[0] else None
        grad_table = torch.zeros_like(table) if ctx.needs_input_grad[1] else None
        for start in range(1, table.size(0), ctx.chunk):
            rows = table[start : start + ctx.chunk]  # [C, D]
            p = (h @ rows.t()).sub_(lse[:, None]).exp_().mul_(grad[:, None])  # [T, C] softmax x upstream grad
            if grad_h is not None:
                grad_h += p @ rows
            if grad_table is not None:
                grad_table[start : start + ctx.chunk] = p.t() @ h
        return grad_h, grad_table, None


def catalogue_cross_entropy(
    scores: Scores, target: Tensor, chunking: Chunking, reduction: str = "mean"
) -> Tensor:
    """Cross-entropy of ``target`` [T] over every item 1..N (padding excluded) for ``scores`` ([T, D] queries): ``F.cross_entropy`` of the whole [T, N+1] matrix up to ``chunking.above_items`` items, else the same
    value over item chunks in fp32 (autocast off there: the chunks' sums must agree with each other)."""
    first = scores.first if isinstance(scores, FactorSum) else scores
    chunk = chunking.chunk(first.query.size(0), first.table.size(0) - 1)
    if chunk is None:
        y = scores.scores()  # [T, N+1]
        y[:, 0] = float("-inf")
        return F.cross_entropy(y, target, reduction=reduction)
    factors = scores.as_factors().folded()
    with torch.autocast(factors.query.device.type, enabled=False):
        h = factors.scaled_query().float()  # [T, D]
        table = factors.table.float()  # [N+1, D]
        lse = _ChunkedLogSumExp.apply(h, table, chunk)  # [T]
        loss = lse - (h * table[target]).sum(dim=-1)  # [T]
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction ({reduction!r}) must be 'mean', 'sum' or 'none'")


__all__ = ["Chunking", "Factors", "FactorSum", "Scores", "catalogue_cross_entropy", "weighted_sum"]
