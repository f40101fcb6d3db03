"""The built-in default data: a deterministic synthetic multimodal sequence generator with planted structure.

Items carry two modality feature tables ("style" and "topic"). Each modality groups the items into clusters, and
the two groupings are independent: items that look alike in one modality are unrelated in the other. Every user
follows one interest that lives in ONE modality: a cluster of that modality. Each next item is drawn from the
interest cluster (with probability ``focus``, popularity-skewed inside the cluster) or from the whole catalogue.

With many items and few interactions per item, ID embeddings alone learn the clusters slowly from co-occurrence,
while a model that reads each modality separately sees the cluster of the last items directly: that is the gap
that modality-aware models should exploit. Everything depends only on the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdsrec.data.processed import ModalityInfo, write_processed


@dataclass
class SyntheticConfig:
    num_users: int = 3000
    # 6,000 items for 3,000 users: sparse like the real sets (each item seen ~5 times in training), so ID
    # embeddings alone learn the planted clusters slowly (at 2,000 items SASRec gets within 7% of MDSRec).
    num_items: int = 6000
    clusters_per_modality: int = 40
    feature_dim: int = 32
    feature_noise: float = 0.6  # std of item noise around its cluster centre (centres have unit norm)
    min_length: int = 5
    mean_extra_length: float = 5.0  # lengths are min_length + Geometric
    max_length: int = 60
    focus: float = 0.85  # probability that the next item comes from the interest cluster
    interest_switch: float = 0.05  # probability per step of moving to another cluster of the same modality
    seed: int = 0


def generate(cfg: SyntheticConfig) -> tuple[list[list[int]], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Return (sequences of item ids 1..N, feature tables [N+1, d] with zero row 0, cluster labels per modality)."""
    rng = np.random.default_rng(cfg.seed)
    n, c, d = cfg.num_items, cfg.clusters_per_modality, cfg.feature_dim
    labels: dict[str, np.ndarray] = {}
    features: dict[str, np.ndarray] = {}
    for m in ("style", "topic"):
        lab = rng.integers(0, c, size=n)  # independent clustering per modality
        centres = rng.normal(size=(c, d))
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        table = np.zeros((n + 1, d), dtype=np.float32)
        table[1:] = centres[lab] + cfg.feature_noise * rng.normal(size=(n, d)) / np.sqrt(d)
        labels[m] = lab
        features[m] = table
    popularity = rng.zipf(1.6, size=n).clip(max=50).astype(np.float64)
    members = {m: [np.flatnonzero(labels[m] == k) for k in range(c)] for m in labels}
    global_p = popularity / popularity.sum()
    sequences: list[list[int]] = []
    modalities = list(labels)
    for _ in range(cfg.num_users):
        m = modalities[int(rng.integers(0, len(modalities)))]
        k = int(rng.integers(0, c))
        length = min(
            cfg.min_length + int(rng.geometric(1.0 / (1.0 + cfg.mean_extra_length))) - 1, cfg.max_length
        )
        seq: list[int] = []
        while len(seq) < length:
            if rng.random() < cfg.interest_switch:
                k = int(rng.integers(0, c))
            pool = members[m][k]
            if rng.random() < cfg.focus and len(pool):
                w = popularity[pool] / popularity[pool].sum()
                item = int(rng.choice(pool, p=w))
            else:
                item = int(rng.choice(n, p=global_p))
            if seq and item + 1 == seq[-1]:
                continue  # no immediate repeats
            seq.append(item + 1)
        sequences.append(seq)
    return sequences, features, labels


def write_synthetic(out_dir: str | Path, cfg: SyntheticConfig | None = None, overwrite: bool = False) -> Path:
    """Generate and write a processed data set directory (same layout as `mdsrec prepare`)."""
    cfg = cfg or SyntheticConfig()
    sequences, features, _ = generate(cfg)
    n = cfg.num_items
    return write_processed(
        out_dir,
        name="synthetic",
        user_tokens=[f"u{i}" for i in range(len(sequences))],
        sequences=sequences,
        item_tokens=[str(i) for i in range(1, n + 1)],
        item_keys=[f"item{i}" for i in range(1, n + 1)],
        features=features,
        modalities=[
            ModalityInfo(m, cfg.feature_dim, "synthetic", {"clusters": cfg.clusters_per_modality})
            for m in features
        ],
        settings={"generator": "mdsrec.data.synthetic", **cfg.__dict__},
        extra_counts={"dropped_short_users": 0},
        overwrite=overwrite,
    )
