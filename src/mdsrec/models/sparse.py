"""Fixed sparse matrices (item graphs, cluster memberships) kept as dense index/value buffers, which survive
``weights_only`` checkpoint loading as plain tensors, and their product with a dense table.

Shape legend: nnz nonzeros, R columns, D hidden, U selected rows.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor


def coo_parts(a: sp.spmatrix | sp.sparray | Tensor) -> tuple[Tensor, Tensor]:
    """A scipy or torch sparse matrix -> (indices int64 [2, nnz], values float32 [nnz]), row-major order."""
    if isinstance(a, Tensor):
        a = a.coalesce()  # row-major
        return a.indices().clone(), a.values().to(torch.float32).clone()
    c = sp.coo_matrix(sp.csr_matrix(a))  # CSR with sorted indices: row-major, no duplicates
    idx = np.stack([c.row, c.col]).astype(np.int64)
    return torch.from_numpy(idx), torch.from_numpy(c.data.astype(np.float32))


def spmm(indices: Tensor, values: Tensor, rows: int, dense: Tensor, select: Tensor | None = None) -> Tensor:
    """Sparse [rows, R] (row-major index/value buffers) @ dense [R, D] -> [rows, D], or only the rows ``select``
    [U] -> [U, D]; differentiable in ``dense``. A weighted ``embedding_bag`` (one bag per row): multi-threaded and
    several times faster than torch's COO product on CPU, and with ``select`` only the nonzeros of the wanted rows
    are touched. The buffers are checked once when built or loaded (``check_coo``), not on every call."""
    counts = torch.bincount(indices[0], minlength=rows)  # [rows] nonzeros per row
    starts = counts.cumsum(0) - counts  # [rows] first nonzero of each row
    if select is None:
        cols, w, offsets = indices[1], values, starts
    else:
        c, st = counts[select], starts[select]  # [U]
        offsets = c.cumsum(0) - c  # [U] bag starts in the gathered list
        pos = torch.repeat_interleave(st - offsets, c) + torch.arange(int(c.sum()), device=dense.device)
        cols, w = indices[1, pos], values[pos]  # the selected rows' nonzeros, row by row
    # fp32 products: under bf16 autocast a dense table from a Linear arrives in bf16, the weights are fp32
    return F.embedding_bag(cols, dense.float(), offsets, mode="sum", per_sample_weights=w.float())


def check_coo(name: str, indices: Tensor, shape: tuple[int, int]) -> None:
    """Index buffers must be in range and strictly row-major (coalesced): a corrupt checkpoint is refused here
    instead of reaching the unchecked sparse product."""
    if indices.dim() != 2 or indices.size(0) != 2:
        raise ValueError(f"{name} has shape {tuple(indices.shape)}, expected (2, nnz)")
    if indices.numel() == 0:
        return
    lo, hi = indices.min(dim=1).values, indices.max(dim=1).values
    if bool((lo < 0).any()) or int(hi[0]) >= shape[0] or int(hi[1]) >= shape[1]:
        raise ValueError(f"{name} holds indices outside a {shape[0]} x {shape[1]} matrix")
    flat = indices[0] * shape[1] + indices[1]  # [nnz]
    if bool((flat[1:] <= flat[:-1]).any()):
        raise ValueError(f"{name} is not sorted row-major without duplicates")
