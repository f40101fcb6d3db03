"""Shared tiny fixtures: a small synthetic processed data set and a tiny config for every registered model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mdsrec.data.processed import ProcessedDataset, load_processed
from mdsrec.data.protocol import Split
from mdsrec.data.synthetic import SyntheticConfig, write_synthetic
from mdsrec.models import DataInfo, SequentialRecommender, build_model
from mdsrec.training import trainer as trainer_mod

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


def make_model(
    name: str, data: ProcessedDataset, max_len: int = 20, **overrides: Any
) -> tuple[SequentialRecommender, Split]:
    """The tiny ``name`` model (seed 0) for ``data``'s catalogue and training parts, and the data's split."""
    torch.manual_seed(0)
    split = Split(data.sequences)
    info = DataInfo(
        data.num_items, max_len, data.features, [split.train_part(u) for u in range(split.num_users)]
    )
    return build_model({"name": name, **TINY_MODEL[name], **overrides}, info), split


@pytest.fixture
def train_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Records trainer.train calls as ("<parent>/<run directory>", resume), still training."""
    calls: list[tuple[str, bool]] = []
    real = trainer_mod.train

    def counting(cfg, data, run_dir, resume=False):
        calls.append((f"{run_dir.parent.name}/{run_dir.name}", resume))
        return real(cfg, data, run_dir, resume=resume)

    monkeypatch.setattr(trainer_mod, "train", counting)
    return calls


def make_untrained_run(name: str, data: ProcessedDataset, out: Path, sets: list[str] | None = None) -> Path:
    """A run directory of the tiny ``name`` model as built, not trained (best.pt at epoch 0), as a trained run's:
    serving must not depend on what the weights learned. ``sets``: more config overrides."""
    from mdsrec.config import resolve_config
    from mdsrec.training.checkpoint import save_checkpoint

    overrides = [f"model.{k}={v}" for k, v in TINY_MODEL[name].items()] + ["data.eval_batch_size=16"]
    cfg = trainer_mod.full_config(resolve_config(None, overrides + (sets or []), model=name))
    torch.manual_seed(0)
    exp = trainer_mod.make_experiment(cfg, data)
    trainer_mod._start_run(out, cfg, data)
    save_checkpoint(out / "best.pt", trainer_mod._model_state(cfg, data, exp.model, 0))
    return out
