"""Parameter-free reference scorers: popularity (``pop``), item-to-item co-occurrence (``cooc``) and item-to-item
feature similarity (``featsim``). They are the floor every learned model must clear under the same protocol.

Not from one paper. ``cooc`` is item-to-item collaborative filtering in the spirit of "Item-based collaborative
filtering recommendation algorithms", Sarwar, Karypis, Konstan & Riedl, WWW 2001, and "Amazon.com recommendations:
item-to-item collaborative filtering", Linden, Smith & York, IEEE Internet Computing 2003 (no arXiv id); its default
graph is MDSRec's co-occurrence O (arXiv 2412.08103, Eq. 1-2), so it shows what O alone predicts. ``featsim`` is
content-based nearest neighbours on one modality's fixed features.

* ``pop``: score(i) = log(1 + count of i in the training parts). The cross-entropy of these scores is the negative
  log-likelihood of the add-one smoothed popularity distribution.
* ``cooc``: score(i) = W[last, i] + eps * pop(i), with ``last`` the last history item and W built from the training
  parts only. Undirected, unlimited window (defaults): W = ``graphs.cooccurrence`` (every pair of positions p < q of
  one sequence adds 1/(q - p), or 1 without ``distance_weighted``). ``window`` > 0 keeps pairs with q - p <= window;
  ``directed`` counts only i at p followed by j at q (W[i, j], a next-item transition count; window 1 is a
  first-order Markov chain). eps * pop(i) is below half the smallest gap between distinct W values, so popularity
  breaks ties exactly (and ranks everything when the last item has no co-occurrences). Scores are float64 so the
  tie-break survives; W is rounded to float32 first (so equal sums compare equal), as ``graphs.cooccurrence`` does.
* ``featsim``: score(i) = mean over the last ``last_n`` history items h of cos(x_i, x_h), x = the ``feature``
  table (default: the first). Items with an all-zero feature row score 0.

The history items themselves are not masked (they may score high; ``eval.exclude_history`` masks them). Every
position j of a training row is scored from items[:, : j + 1] only, so ``compute_loss`` (cross-entropy of the
scores at the trained positions, no gradient: there are no parameters) equals the materialised per-prefix loss.
Everything lives in buffers, so checkpoints round-trip; ``trainable = False`` tells the trainer to evaluate once.

Deviations: none from a paper (there is none to follow); the definitions above are this module's.

Shape legend: B batch, L sequence length, P scored positions, N items, d feature dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor

from mdsrec.data.graphs import cooccurrence
from mdsrec.data.protocol import Batch
from mdsrec.models.base import DataInfo, SequentialRecommender, mask_padding_column
from mdsrec.models.modal_features import select_feature


class ReferenceModel(SequentialRecommender):
    """A scorer without parameters: implement ``scores_at`` (scores after each selected position)."""

    trainable = False

    def scores_at(self, items: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
        """items [B, L], lengths [B], mask [B, L] bool -> scores [P, N+1] of the next item after every selected
        position (row-major order), position j seeing items[:, : j + 1] only."""
        raise NotImplementedError

    def compute_loss(self, batch: Batch) -> Tensor:
        assert batch.targets is not None, "training batch needs targets"
        mask = batch.targets > 0  # [B, L]
        logits = self.scores_at(batch.items, batch.lengths, mask)  # [P, N+1]
        logits[:, 0] = float("-inf")
        return F.cross_entropy(logits, batch.targets[mask])

    def prefix_scores(self, items: Tensor, lengths: Tensor) -> Tensor:
        every = torch.ones_like(items, dtype=torch.bool)  # [B, L]
        y = self.scores_at(items, lengths, every).view(items.size(0), items.size(1), -1)  # [B, L, N+1]
        y[..., 0] = float("-inf")
        return y

    def score_all(self, batch: Batch) -> Tensor:
        positions = torch.arange(batch.items.size(1), device=batch.items.device)  # [L]
        last = positions[None] == (batch.lengths - 1)[:, None]  # [B, L], one position per row
        return mask_padding_column(self.scores_at(batch.items, batch.lengths, last))  # [B, N+1]


def train_counts(info: DataInfo, who: str) -> np.ndarray:
    """Occurrences of every item in the training parts, int64 [N+1] (entry 0 is 0)."""
    if info.train_sequences is None:
        raise ValueError(f"{who} needs DataInfo.train_sequences (the training parts)")
    seqs = [np.asarray(s, dtype=np.int64) for s in info.train_sequences]
    flat = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)
    if flat.size and (flat.min() < 1 or flat.max() > info.num_items):
        raise ValueError(f"training item ids {flat.min()}..{flat.max()} outside 1..{info.num_items}")
    return np.bincount(flat, minlength=info.num_items + 1)


# ---------------------------------------------------------------------------------------------------------------
# pop
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class PopConfig:
    name: str = "pop"


class Pop(ReferenceModel):
    name = "pop"
    log_counts: Tensor  # [N+1] log(1 + training count)

    def __init__(self, cfg: PopConfig, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        counts = torch.from_numpy(train_counts(info, "pop").astype(np.float32))  # [N+1]
        self.register_buffer("log_counts", torch.log1p(counts))  # [N+1]

    def scores_at(self, items: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
        p = int(mask.sum())
        return self.log_counts.unsqueeze(0).repeat(p, 1)  # [P, N+1]


# ---------------------------------------------------------------------------------------------------------------
# cooc
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class CoocConfig:
    name: str = "cooc"
    distance_weighted: bool = True  # a pair at distance q - p adds 1/(q - p); False: adds 1
    window: int = 0  # only pairs with q - p <= window; 0 = the whole sequence
    directed: bool = False  # W[i, j] counts j AFTER i only (next-item transitions)

    def __post_init__(self) -> None:
        if self.window < 0:
            raise ValueError(f"window ({self.window}) must be >= 0 (0 = the whole sequence)")


def pair_counts(
    train_sequences: list[np.ndarray],
    num_items: int,
    distance_weighted: bool = True,
    window: int = 0,
    directed: bool = False,
) -> sp.csr_matrix:
    """Item pair weights W, float32 [N+1, N+1], zero diagonal, row/column 0 empty, from the training parts.

    Every pair of positions p < q of one sequence with q - p <= ``window`` (any distance when 0) holding items
    i != j adds 1/(q - p) (1 without ``distance_weighted``) to W[i, j], and also to W[j, i] unless ``directed``.
    Undirected with no window this is ``graphs.cooccurrence`` itself. Cost O(total length x window).
    """
    if not directed and window == 0:
        return cooccurrence(train_sequences, num_items, distance_weighted)
    seqs = [np.asarray(s, dtype=np.int64) for s in train_sequences]
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    flat = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)  # [I]
    if flat.size and (flat.min() < 1 or flat.max() > num_items):
        raise ValueError(f"training item ids {flat.min()}..{flat.max()} outside 1..{num_items}")
    seq_id = np.repeat(np.arange(len(seqs)), lengths)  # [I]
    max_d = int(lengths.max(initial=1)) - 1 if window == 0 else window
    rows, cols, vals = [], [], []
    for d in range(1, max_d + 1):
        same = seq_id[:-d] == seq_id[d:]  # [I - d] both positions in one sequence
        i, j = flat[:-d][same], flat[d:][same]
        keep = i != j
        i, j = i[keep], j[keep]
        w = np.full(len(i), 1.0 / d if distance_weighted else 1.0)
        rows.append(i)
        cols.append(j)
        vals.append(w)
        if not directed:
            rows.append(j)
            cols.append(i)
            vals.append(w)
    n1 = num_items + 1
    if not rows:
        return sp.csr_matrix((n1, n1), dtype=np.float32)
    # COO -> CSR sums duplicates (float64), rounded to float32 once, as graphs.cooccurrence does.
    total = sp.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n1, n1)
    )
    out = sp.csr_matrix(total.tocsr(), dtype=np.float32)
    out.sort_indices()
    return out


def csr_rows(indptr: Tensor, indices: Tensor, values: Tensor, rows: Tensor, width: int) -> Tensor:
    """Dense rows [P, width] of a CSR matrix (indptr [R+1], indices/values [nnz]) for row ids rows [P]."""
    start = indptr[rows]  # [P]
    count = indptr[rows + 1] - start  # [P]
    out = torch.zeros(len(rows), width, dtype=values.dtype, device=values.device)  # [P, width]
    total = int(count.sum())
    if total == 0:
        return out
    row_of = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), count)  # [T]
    first = torch.cumsum(count, 0) - count  # [P] where each row's entries start in the concatenation
    pos = torch.arange(total, device=rows.device) + torch.repeat_interleave(start - first, count)  # [T]
    out[row_of, indices[pos]] = values[pos]
    return out


class Cooc(ReferenceModel):
    name = "cooc"
    indptr: Tensor  # [N+2] CSR buffers of W
    indices: Tensor  # [nnz]
    values: Tensor  # [nnz] float64
    tie_break: Tensor  # [N+1] float64, eps * popularity share

    def __init__(self, cfg: CoocConfig, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_items = info.num_items
        counts = train_counts(info, "cooc")
        w = pair_counts(
            info.train_sequences or [], info.num_items, cfg.distance_weighted, cfg.window, cfg.directed
        )
        data = w.data.astype(np.float64)  # [nnz], float32 values
        distinct = np.unique(np.concatenate([[0.0], data]))
        eps = 0.5 * float(np.diff(distinct).min()) if len(distinct) > 1 else 1.0
        self.register_buffer("indptr", torch.from_numpy(w.indptr.astype(np.int64)))  # [N+2]
        self.register_buffer("indices", torch.from_numpy(w.indices.astype(np.int64)))  # [nnz]
        self.register_buffer("values", torch.from_numpy(data))  # [nnz] float64
        tie = eps * counts.astype(np.float64) / (counts.max(initial=0) + 1.0)  # [N+1], each < eps
        self.register_buffer("tie_break", torch.from_numpy(tie))  # [N+1] float64

    def scores_at(self, items: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
        last = items[mask]  # [P] the last item of every scored prefix
        w = csr_rows(self.indptr, self.indices, self.values, last, self.num_items + 1)  # [P, N+1]
        return w + self.tie_break  # [P, N+1] float64


# ---------------------------------------------------------------------------------------------------------------
# featsim
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class FeatSimConfig:
    name: str = "featsim"
    feature: str | None = None  # modality feature table; None = the first one
    last_n: int = 1  # mean similarity to the last n history items

    def __post_init__(self) -> None:
        if self.last_n < 1:
            raise ValueError(f"last_n ({self.last_n}) must be >= 1")


class FeatSim(ReferenceModel):
    name = "featsim"
    unit: Tensor  # [N+1, d] unit-norm feature rows (zero rows stay zero)

    def __init__(self, cfg: FeatSimConfig, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        _, table = select_feature(info, cfg.feature, "featsim")
        x = torch.from_numpy(table.copy())  # [N+1, d]
        x[0] = 0.0
        self.register_buffer(
            "unit", x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        )  # [N+1, d], zero rows stay 0

    def scores_at(self, items: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
        b, j = mask.nonzero(as_tuple=True)  # [P] row and position of every scored prefix
        ctx = torch.zeros(len(b), self.unit.size(1), device=items.device)  # [P, d]
        for k in range(self.cfg.last_n):  # newest first; the same order for every prefix layout
            jj = j - k
            ok = (jj >= 0).unsqueeze(1)  # [P, 1]
            ctx = ctx + self.unit[items[b, jj.clamp(min=0)]] * ok  # [P, d]
        ctx = ctx / (j + 1).clamp(max=self.cfg.last_n).unsqueeze(1)  # [P, d] mean over the available items
        return ctx @ self.unit.t()  # [P, N+1]
