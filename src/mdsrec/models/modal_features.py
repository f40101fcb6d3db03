"""Fixed modality feature tables as model inputs, shared by the feature-fused baselines (GRU4RecF, SASRecF, FDSA).

Each modality's raw table [N+1, d_m] is a buffer (so a weights-only checkpoint carries it and round-trips), and
enters the model through its own learned projection of the FULL vector, nn.Linear(d_m, D). Tables are looked up
first and projected second, so the cost is O(B L d_m D), not O(N d_m D), per call.

Shape legend: B batch, L sequence length, D output size, M modalities, N items.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


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
            if table.ndim != 2 or table.shape[0] != num_items + 1 or table.shape[1] < 1:
                raise ValueError(
                    f"feature table {name!r} has shape {table.shape}, expected ({num_items + 1}, d) with d >= 1"
                )
            self.register_buffer(
                f"features_{i}", torch.from_numpy(np.asarray(table, dtype=np.float32).copy())
            )
            self.proj.append(nn.Linear(table.shape[1], out_dim))

    def __len__(self) -> int:
        return len(self.names)

    def table(self, i: int) -> Tensor:
        """Raw table of modality i [N+1, d_m]."""
        t = getattr(self, f"features_{i}")
        assert isinstance(t, Tensor)
        return t

    def forward(self, items: Tensor) -> list[Tensor]:
        """items [B, L] -> M tensors [B, L, D]: each modality's projected features of every item."""
        out = []
        for i, proj in enumerate(self.proj):
            out.append(proj(self.table(i)[items]))  # [B, L, d_m] -> [B, L, D]
        return out
