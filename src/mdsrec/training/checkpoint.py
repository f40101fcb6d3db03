"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)`` (a checkpoint cannot run code),
loaded strictly (a missing or unexpected parameter is an error that lists the keys), and tied to the data set
they were trained on by its fingerprint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mdsrec import __version__
from mdsrec.atomic import torch_save
from mdsrec.errors import ManifestMismatchError, MdsrecError
from mdsrec.models.base import SequentialRecommender
from mdsrec.rundir import check_not_restored

CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    torch_save({"checkpoint_version": CHECKPOINT_VERSION, "mdsrec_version": __version__, **state}, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        check_not_restored(path.parent)
        raise MdsrecError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise MdsrecError(f"checkpoint {path} cannot be read safely (weights_only=True): {e}") from e
    if not isinstance(state, dict) or state.get("checkpoint_version") != CHECKPOINT_VERSION:
        raise MdsrecError(f"checkpoint {path}: not an mdsrec checkpoint of version {CHECKPOINT_VERSION}")
    return dict(state)


def check_fingerprint(
    state: dict[str, Any], fingerprint: str, data_path: str | Path, ckpt: str | Path
) -> None:
    expected = state.get("data_fingerprint")
    if expected != fingerprint:
        raise ManifestMismatchError(
            f"checkpoint {ckpt} was trained on data with fingerprint {str(expected)[:12]}..., but {data_path} has "
            f"fingerprint {fingerprint[:12]}... (manifest.json 'fingerprint'): use the data directory it was "
            "trained on"
        )


def load_model_state(model: SequentialRecommender, state_dict: dict[str, Any], ckpt: str | Path) -> None:
    """Strict load; a mismatch lists the missing and unexpected keys instead of loading part of the model."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise MdsrecError(
            f"checkpoint {ckpt} does not fit model {model.name}: missing keys {missing[:10]}, "
            f"unexpected keys {unexpected[:10]}"
        )
    bad = [k for k, v in state_dict.items() if tuple(v.shape) != own[k]]
    if bad:
        k = bad[0]
        raise MdsrecError(
            f"checkpoint {ckpt}: parameter {k} has shape {tuple(state_dict[k].shape)}, model expects {own[k]}"
        )
    model.load_state_dict(state_dict, strict=True)
