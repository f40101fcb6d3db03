"""Fixed modality feature tables as model inputs, shared by the feature models (GRU4RecF, SASRecF, FDSA, MMMLP,
MISSRec; UniSRec and the featsim reference pick one table with ``select_feature``).

Each modality's raw table [N+1, d_m] is a buffer (so a weights-only checkpoint carries it and round-trips), and
enters the model through its own learned projection of the FULL vector, nn.Linear(d_m, D). Tables are looked up
first and projected second, so the cost is O(B L d_m D), not O(N d_m D), per call; ``project_table`` projects the
whole catalogue (for models that score against projected features). A mostly-zero table (multi-hot attributes:
Sports has 5.8 of 2,277 set per item) is projected there as a sparse matrix product, the same value at a fraction of
the cost; its sparse copy is rebuilt whenever the table changes (a checkpoint load, a move to another device).

Shape legend: B batch, L sequence length, D output size, M modalities, N items.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from mdsrec.models.base import DataInfo


def check_feature_table(name: str, table: np.ndarray, num_items: int) -> None:
    """A feature table must be [N+1, d] with d >= 1 (row 0 is the padding item)."""
    if table.ndim != 2 or table.shape[0] != num_items + 1 or table.shape[1] < 1:
        raise ValueError(
            f"feature table {name!r} has shape {table.shape}, expected ({num_items + 1}, d) with d >= 1"
        )


def select_feature(
    info: DataInfo, name: str | None, who: str, field: str = "feature"
) -> tuple[str, np.ndarray]:
    """The one feature table a model reads: ``name`` (its config field ``field``), or the first one when None
    -> (name, float32 table [N+1, d])."""
    if not info.features:
        raise ValueError(
            f"{who} needs a modality feature table; the data set has none "
            "(prepare it with modalities, or use an ID-only model)"
        )
    key = name if name is not None else next(iter(info.features))
    if key not in info.features:
        raise ValueError(f"{field} ({key!r}) is not a feature table of the data set: {list(info.features)}")
    table = np.asarray(info.features[key], dtype=np.float32)
    check_feature_table(key, table, info.num_items)
    return key, table


# A table with at most this fraction of non-zero entries is projected as a sparse matrix in ``project_table``.
SPARSE_DENSITY = 0.05


class ModalityProjections(nn.Module):
    """One fixed table and one learned nn.Linear(d_m, D) per modality, in ``features`` order."""

    def __init__(self, features: dict[str, np.ndarray], num_items: int, out_dim: int, model: str) -> None:
        super().__init__()
        if not features:
            raise ValueError(
                f"{model} needs at least one modality feature table; the data set has none "
                "(prepare it with modalities, or use an ID-only model)"
            )
        self.names = list(features)
        self.proj = nn.ModuleList()
        for i, (name, table) in enumerate(features.items()):
            check_feature_table(name, table, num_items)
            self.register_buffer(
                f"features_{i}", torch.from_numpy(np.asarray(table, dtype=np.float32).copy())
            )
            self.proj.append(nn.Linear(table.shape[1], out_dim))
        # modality -> (the table's identity: storage, version, device; its sparse copy or None when dense)
        self._sparse: dict[int, tuple[tuple[int, int, str], Tensor | None]] = {}

    def __len__(self) -> int:
        return len(self.names)

    def table(self, i: int) -> Tensor:
        """Raw table of modality i [N+1, d_m]."""
        t = getattr(self, f"features_{i}")
        assert isinstance(t, Tensor)
        return t

    def sparse_table(self, i: int) -> Tensor | None:
        """Modality i's table as a sparse COO matrix if at most SPARSE_DENSITY of it is non-zero, else None. Cached
        until the buffer is replaced or written in place (its version counter moves)."""
        t = self.table(i)
        key = (t.data_ptr(), t._version, str(t.device))
        hit = self._sparse.get(i)
        if hit is None or hit[0] != key:
            dense = bool((t != 0).float().mean() > SPARSE_DENSITY)
            hit = (key, None if dense else t.to_sparse().coalesce())
            self._sparse[i] = hit
        return hit[1]

    def project_table(self, i: int) -> Tensor:
        """Modality i's projection of the whole catalogue [N+1, D] (row 0: the projection's bias)."""
        sparse, lin = self.sparse_table(i), self.proj[i]
        assert isinstance(lin, nn.Linear)
        if (
            sparse is None
            or sparse.dtype != lin.weight.dtype
            or torch.is_autocast_enabled(sparse.device.type)
        ):
            return lin(self.table(i))  # [N+1, d_m] -> [N+1, D]
        # [N+1, d_m] (sparse) x [d_m, D] -> [N+1, D]
        return torch.sparse.mm(sparse, lin.weight.t()) + lin.bias

    def forward(self, items: Tensor) -> list[Tensor]:
        """items [B, L] -> M tensors [B, L, D]: each modality's projected features of every item."""
        out = []
        for i, proj in enumerate(self.proj):
            out.append(proj(self.table(i)[items]))  # [B, L, d_m] -> [B, L, D]
        return out
