"""Ranking the catalogue: which items may be ranked, how ties are broken, the rank of a held-out item and the top-K.
The evaluator, ``recommend``/``serve`` and ``explain`` all rank through these functions.

* Not rankable (score -inf): the padding item 0; with history exclusion, every item of the user's whole history
  (not only the model's window) except the held-out item itself (a repeated target stays rankable); and items a
  request blocks (``candidates``). A blocked held-out item stays blocked.
* The rank of an item is 1 + the number of OTHER rankable items scoring at least as high: ties count against it,
  so a model that scores every item the same gets rank N and metrics near zero.
* A top-K list is sorted by score, equal scores in ascending item id (a stable sort of the negated scores), and
  holds only rankable items.
* NaN scores are refused: NaN compares false, so every rank and list would be wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

NOT_RANKABLE = float("-inf")


def pad_histories(histories: Sequence[np.ndarray], device: torch.device | str = "cpu") -> Tensor:
    """[B, H] long, each row a history right-padded with the padding item 0 (H = the longest, at least 1)."""
    width = max([len(h) for h in histories] + [1])
    out = torch.zeros(len(histories), width, dtype=torch.long)
    for b, h in enumerate(histories):
        out[b, : len(h)] = torch.from_numpy(np.asarray(h, dtype=np.int64))
    return out.to(device)


def exclusion_mask(
    num_items: int,
    history: Tensor | None = None,
    keep: Tensor | None = None,
    blocked: Tensor | None = None,
    columns: tuple[int, int] | None = None,
) -> Tensor:
    """[B, N+1] bool, True where an item may not be ranked (see the module docstring).

    ``history`` [B, H] long (0-padded): the items to exclude per row (None: no history exclusion); ``keep`` [B]
    long: each row's held-out item, rankable even inside its history (0: none); ``blocked`` [N+1] bool: items no
    row may rank, or [B, N+1]: each row's own. B is ``history``'s rows, else ``keep``'s, else 1. ``columns``
    (start, stop): only the items start..stop-1, [B, stop - start] (a chunk of the catalogue)."""
    rows = history.shape[0] if history is not None else keep.shape[0] if keep is not None else 1
    device = (
        history.device if history is not None else keep.device if keep is not None else torch.device("cpu")
    )
    start, stop = columns if columns is not None else (0, num_items + 1)
    mask = torch.zeros(rows, stop - start, dtype=torch.bool, device=device)  # [B, C]
    if history is not None:
        r, c = ((history >= start) & (history < stop)).nonzero(as_tuple=True)
        mask[r, history[r, c] - start] = True
        if keep is not None:
            (k,) = ((keep >= start) & (keep < stop)).nonzero(as_tuple=True)
            mask[k, keep[k] - start] = False
    if start == 0:
        mask[:, 0] = True
    if blocked is not None:
        mask |= blocked[..., start:stop].to(device)  # [C] broadcast over the rows, or [B, C]
    return mask


def masked(scores: Tensor, mask: Tensor) -> Tensor:
    """``scores`` [B, N+1] with -inf where ``mask`` [B, N+1] (or [N+1]) is True."""
    return scores.masked_fill(mask, NOT_RANKABLE)


def nan_rows(scores: Tensor) -> Tensor:
    """[R] indices of the rows of ``scores`` [B, N+1] holding a NaN (empty when none)."""
    return torch.isnan(scores).any(dim=-1).nonzero().view(-1)


def target_ranks(scores: Tensor, target: Tensor) -> Tensor:
    """scores [B, N+1] (not rankable = -inf), target [B] -> rank [B] (1 = best), ties counted against the target."""
    if torch.isnan(scores).any():
        raise FloatingPointError("model produced NaN scores")
    t = scores.gather(1, target.view(-1, 1))  # [B, 1]
    if torch.isneginf(t).any():
        bad = int(target[torch.isneginf(t.view(-1))][0])
        raise ValueError(f"target item {bad} has score -inf (is it the padding id 0, or masked?)")
    return (scores >= t).sum(dim=1)  # counts the target itself once: 1 + others >= target


def chunked_target_ranks(
    query: Tensor,
    table: Tensor,
    target: Tensor,
    chunk: int,
    history: Tensor | None = None,
    divisor: float = 1.0,
) -> Tensor:
    """``target_ranks`` of the scores query [B, D] @ table [N+1, D].T (/ ``divisor``), counted over item chunks of
    ``chunk`` items, so no [B, N+1] matrix is held; ``history`` [B, H] (0-padded) as ``exclusion_mask``'s, the
    target kept rankable. Memory O(B x chunk).

    The rank is 1 + the number of OTHER rankable items scoring at least the target's score, all scores from
    matrix products over chunks of the table: equal to ``target_ranks`` of the whole matrix, ties included, as
    long as the matrix product rounds a score the same way whatever the chunk (the tests check this on CPU)."""
    if chunk < 1:
        raise ValueError(f"chunk ({chunk}) must be >= 1")

    def scored(y: Tensor) -> Tensor:
        return y / divisor if divisor != 1.0 else y

    # The target's score as a matrix product over its own chunk, as the other items' scores are computed (a row
    # product can round differently, and then an item tied with the target would count differently).
    t = torch.empty(query.size(0), dtype=query.dtype, device=query.device)  # [B]
    for start in range(0, table.size(0), chunk):
        own = ((target >= start) & (target < start + chunk)).nonzero().view(-1)  # [R] rows with targets here
        if len(own):
            y = scored(query[own] @ table[start : start + chunk].t())  # [R, C]
            t[own] = y.gather(1, (target[own] - start)[:, None]).view(-1)
    if torch.isnan(t).any():
        raise FloatingPointError("model produced NaN scores")
    if bool((target == 0).any()) or torch.isneginf(t).any():
        bad = int(target[(target == 0) | torch.isneginf(t)][0])
        raise ValueError(f"target item {bad} has score -inf (is it the padding id 0, or masked?)")
    rows = torch.arange(query.size(0), device=query.device)  # [B]
    counts = torch.zeros(query.size(0), dtype=torch.long, device=query.device)  # [B]
    for start in range(0, table.size(0), chunk):
        stop = min(start + chunk, table.size(0))
        y = scored(query @ table[start:stop].t())  # [B, C]
        if torch.isnan(y).any():
            raise FloatingPointError("model produced NaN scores")
        y = masked(y, exclusion_mask(table.size(0) - 1, history, None, None, (start, stop)))
        own = (target >= start) & (target < stop)  # [B] rows whose target lies in this chunk
        y[rows[own], target[own] - start] = NOT_RANKABLE  # the target is the 1 below, never counted here
        counts += (y >= t[:, None]).sum(dim=1)
    return counts + 1


def top_k(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(items [B, min(k, N+1)], rankable [B]) for scores [B, N+1] (or [N+1] -> [k], []): each row's best items, equal scores in ascending id, and how many
    of its items are rankable (score above -inf); a row's list is its first min(k, rankable) items.

    The same as the first k of a stable sort of the negated scores, without sorting whole rows: ``torch.topk``
    finds each row's k-th best score, and only the items scoring at least that much (all of them in a row with
    fewer than k rankable items) are sorted, by score and then id."""
    if scores.dim() == 1:  # one row [N+1] -> ([k], [])
        order, rankable = top_k(scores[None], k)
        return order[0], rankable[0]
    rankable = (scores > NOT_RANKABLE).sum(dim=-1)  # [B]
    n = scores.shape[-1]
    k = min(k, n)
    if k == 0 or 4 * k >= n:  # a long list: sorting whole rows costs about the same
        return torch.sort(-scores, dim=-1, stable=True).indices[..., :k], rankable  # [B, k]
    kth = torch.topk(scores, k, dim=-1, sorted=False).values.min(dim=-1, keepdim=True).values  # [B, 1]
    rows, cols = (scores >= kth).nonzero(as_tuple=True)  # [C] candidates in (row, id) order; >= k per row
    by_score = torch.sort(-scores[rows, cols], stable=True).indices  # [C] ties stay in (row, id) order
    rows, cols = rows[by_score], cols[by_score]
    by_row = torch.sort(rows, stable=True).indices  # [C] rows together, each in (score, id) order
    rows, cols = rows[by_row], cols[by_row]
    counts = torch.bincount(rows, minlength=scores.shape[0])  # [B] candidates per row
    starts = torch.cumsum(counts, 0) - counts  # [B]
    place = torch.arange(len(rows), device=scores.device) - starts[rows]  # [C] position within its row
    keep = place < k
    order = torch.empty(scores.shape[0], k, dtype=torch.long, device=scores.device)  # [B, k]
    order[rows[keep], place[keep]] = cols[keep]
    return order, rankable
