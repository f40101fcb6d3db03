"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)`` (a checkpoint cannot run code),
verified against the sha256 recorded when they were written, loaded strictly (a missing or unexpected parameter is
an error that lists the keys), refused with NaN or infinite weights, and tied to the data set they were trained on
by its fingerprint and to their run by its config.yaml.

Each checkpoint gets a record beside it, CHECKPOINT.sha256.json (``rundir.checkpoint_record``), written atomically
after the checkpoint file is complete and before it is renamed into place. The record also keeps the sha256 of the
checkpoint it replaces, so a process killed between writing the record and the rename leaves a pair that still
verifies (the previous checkpoint). A checkpoint whose bytes match neither is damaged or another file, and is
refused; a checkpoint without a record (written before records existed) is read with a warning.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import torch
import yaml

from mdsrec import __version__
from mdsrec.atomic import sha256_file, torch_save, write_json
from mdsrec.config import build_config, config_differences
from mdsrec.errors import ManifestMismatchError, MdsrecError
from mdsrec.models import full_config
from mdsrec.models.base import SequentialRecommender
from mdsrec.rundir import CONFIG, check_not_restored, checkpoint_record

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
# The fields a checkpoint is read for, and their types: model_state in every checkpoint, the others in a run's
# (last.pt adds the optimizer, RNG and early-stopping state)
FIELDS = {"model_state": dict, "config": dict, "data_fingerprint": str, "epoch": int}
RUN_FIELDS = ("config", "data_fingerprint", "epoch")


def _recorded(record: Path) -> list[str]:
    """The sha256 values a checkpoint's record accepts: the one written, then the one it replaced (if any)."""
    try:
        entry = json.loads(record.read_text(encoding="utf-8"))
        hashes = [entry["sha256"], *([entry["previous_sha256"]] if entry.get("previous_sha256") else [])]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise MdsrecError(f"{record}: not a checkpoint record ({type(e).__name__}: {e})") from None
    if not all(isinstance(h, str) and len(h) == 64 for h in hashes):
        raise MdsrecError(f"{record}: not a checkpoint record (sha256 is not 64 hex digits)")
    return hashes


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write the checkpoint atomically with its sha256 record (see the module docstring for the order)."""
    path = Path(path)
    record = checkpoint_record(path)
    previous = None
    if path.is_file() and record.is_file():
        try:
            digest = sha256_file(path)
            previous = digest if digest in _recorded(record) else None
        except MdsrecError:
            previous = None  # an unreadable record: the checkpoint it describes is replaced now anyway

    def write_record(tmp: Path) -> None:  # the complete temporary file, just before it replaces PATH
        entry: dict[str, Any] = {"file": path.name, "sha256": sha256_file(tmp), "bytes": tmp.stat().st_size}
        if previous is not None:
            entry["previous_sha256"] = previous
        write_json(record, entry)

    payload = {"checkpoint_version": CHECKPOINT_VERSION, "mdsrec_version": __version__, **state}
    torch_save(payload, path, before_replace=write_record)


def _verified_bytes(path: Path) -> bytes:
    """The checkpoint's bytes, checked against its record (a warning when it has none)."""
    data = path.read_bytes()
    record = checkpoint_record(path)
    if not record.is_file():
        log.warning(
            "checkpoint %s has no %s (written before mdsrec recorded checkpoint hashes): read unverified",
            path,
            record.name,
        )
        return data
    accepted = _recorded(record)
    digest = hashlib.sha256(data).hexdigest()
    if digest not in accepted:
        raise MdsrecError(
            f"checkpoint {path} is damaged or was replaced: its sha256 {digest[:12]}... differs from "
            f"{accepted[0][:12]}..., recorded in {record.name} when mdsrec wrote it; refused"
        )
    return data


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint, verified (its record), read safely (weights_only) and checked: an mdsrec checkpoint of this
    version with finite weights. Every failure is an MdsrecError naming the file."""
    path = Path(path)
    if not path.is_file():
        check_not_restored(path.parent)
        raise MdsrecError(f"checkpoint {path} not found")
    data = _verified_bytes(path)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MdsrecError(f"checkpoint {path} cannot be read safely (weights_only=True): {first}") from None
    if not isinstance(state, dict) or state.get("checkpoint_version") != CHECKPOINT_VERSION:
        raise MdsrecError(f"checkpoint {path}: not an mdsrec checkpoint of version {CHECKPOINT_VERSION}")
    for key, kind in FIELDS.items():
        if (key == "model_state" or key in state) and not isinstance(state.get(key), kind):
            raise MdsrecError(f"checkpoint {path}: field {key!r} missing or not a {kind.__name__}")
    check_finite(state["model_state"], path)
    return dict(state)


def check_finite(model_state: dict[str, Any], ckpt: str | Path) -> None:
    """MdsrecError unless every entry is a tensor and every floating-point tensor is finite."""
    for k, v in model_state.items():
        if not isinstance(v, torch.Tensor):
            raise MdsrecError(f"checkpoint {ckpt}: model_state[{k!r}] is not a tensor")
        if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise MdsrecError(
                f"checkpoint {ckpt}: parameter {k} holds {bad} NaN or infinite value(s); a model with non-finite "
                "weights cannot rank; refused"
            )


def check_run_config(state: dict[str, Any], run_dir: str | Path, ckpt: str | Path) -> None:
    """MdsrecError when a run's checkpoint was written for another model or config than RUN_DIR/config.yaml
    (both compared in full form, operational keys left out); nothing to check without a config.yaml."""
    cfg_file = Path(run_dir) / CONFIG
    if not cfg_file.is_file():
        return
    try:
        run_values = yaml.safe_load(cfg_file.read_text(encoding="utf-8"))
        run_cfg = full_config(build_config(run_values)).to_dict()
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError, TypeError, MdsrecError) as e:
        raise MdsrecError(f"{cfg_file}: not a readable run config ({type(e).__name__}: {e})") from None
    ck_model = state["config"].get("model", {})
    ck_name = ck_model.get("name") if isinstance(ck_model, dict) else ck_model
    if ck_name != run_cfg["model"]["name"]:
        raise MdsrecError(
            f"checkpoint {ckpt} holds a {ck_name} model, but the run's {CONFIG} says "
            f"{run_cfg['model']['name']}: it belongs to another run; refused"
        )
    try:
        ck_cfg = full_config(build_config(state["config"])).to_dict()
    except MdsrecError as e:
        raise MdsrecError(f"checkpoint {ckpt}: its config cannot be read ({e})") from None
    diff = config_differences(run_cfg, ck_cfg)
    if diff:
        keys = ", ".join(d.split(" (", 1)[0] for d in diff[:5]) + (" ..." if len(diff) > 5 else "")
        raise MdsrecError(
            f"checkpoint {ckpt} was written with another config than the run's {CONFIG} (differs in {keys}): it "
            "belongs to another run; refused"
        )


def load_run_checkpoint(run_dir: str | Path, path: str | Path) -> dict[str, Any]:
    """``load_checkpoint`` plus the check that it is a run's checkpoint (config, data fingerprint, epoch) and belongs
    to the run in RUN_DIR (``check_run_config``)."""
    state = load_checkpoint(path)
    missing = [k for k in RUN_FIELDS if k not in state]
    if missing:
        raise MdsrecError(f"checkpoint {path}: not a run's checkpoint (no {', '.join(missing)})")
    check_run_config(state, run_dir, path)
    return state


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
