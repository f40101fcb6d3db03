"""Shared tiny fixtures: a small synthetic processed data set and a tiny config for every registered model."""

from __future__ import annotations

from pathlib import Path

import pytest

from mdsrec.data.processed import ProcessedDataset, load_processed
from mdsrec.data.synthetic import SyntheticConfig, write_synthetic

# images=False: the style table is written directly, no image encoder (test_images.py covers the image path)
TINY = SyntheticConfig(
    num_users=80, num_items=60, clusters_per_modality=4, feature_dim=8, seed=3, images=False
)

# Per-model overrides that make every registered model tiny.
TINY_MODEL = {
    "sasrec": {"hidden_size": 16, "inner_size": 32, "num_heads": 2, "dropout": 0.1, "attn_dropout": 0.1},
    "gru4rec": {"embedding_size": 16, "hidden_size": 24, "dropout": 0.1},
    "bert4rec": {"hidden_size": 16, "inner_size": 32, "num_heads": 2, "dropout": 0.1, "attn_dropout": 0.1},
    "gru4recf": {"embedding_size": 16, "hidden_size": 24, "dropout": 0.1},
    "sasrecf": {"hidden_size": 16, "inner_size": 32, "num_heads": 2, "dropout": 0.1, "attn_dropout": 0.1},
    "fdsa": {"hidden_size": 16, "inner_size": 32, "num_heads": 2, "dropout": 0.1, "attn_dropout": 0.1},
    "mdsrec": {
        "hidden_size": 16,
        "inner_size": 32,
        "num_heads": 2,
        "dropout": 0.1,
        "attn_dropout": 0.1,
        "h": 3,
        "k": 4,
    },
    "unisrec": {
        "hidden_size": 16,
        "inner_size": 32,
        "num_heads": 2,
        "dropout": 0.1,
        "attn_dropout": 0.1,
        "n_exps": 3,
    },
    "mmmlp": {"hidden_size": 16, "dropout": 0.1},
    "missrec": {
        "hidden_size": 16,
        "inner_size": 32,
        "num_heads": 2,
        "dropout": 0.1,
        "attn_dropout": 0.1,
        "k": 4,
    },
    "pop": {},
    "cooc": {"window": 5},
    "featsim": {"last_n": 2},
}


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("data") / "tiny", TINY)


@pytest.fixture(scope="session")
def tiny_data(tiny_dir: Path) -> ProcessedDataset:
    return load_processed(tiny_dir)
