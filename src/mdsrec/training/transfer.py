"""Transfer learning: parameters copied from another run's checkpoint into a new run's model before it trains
(UniSRec's ``init_from``: pre-train on one data set, fine-tune on another). Applied by the trainer when a run is
created, never when a trained run is loaded (its own checkpoint already holds the result)."""

from __future__ import annotations

import logging
from typing import Any

from mdsrec.errors import ConfigError
from mdsrec.models.base import SequentialRecommender
from mdsrec.models.unisrec import TRANSFERABLE, UniSRec
from mdsrec.training.checkpoint import load_checkpoint

log = logging.getLogger(__name__)


def transfer_source(model: SequentialRecommender) -> str | None:
    """The checkpoint a new run of ``model`` starts from (its config's ``init_from``), or None."""
    return getattr(getattr(model, "cfg", None), "init_from", None)


def load_transferable(model: SequentialRecommender, path: str) -> None:
    """Copy UniSRec's transferable parameters (adaptor, position embeddings, LayerNorm, Transformer) from the
    UniSRec checkpoint ``path``. Every transferable parameter must be present with the same shape (no silent
    partial load): a ConfigError names what differs."""
    if not isinstance(model, UniSRec):
        raise ConfigError(f"init_from: model {model.name} has no transferable parameters")
    ck = load_checkpoint(path)
    src_name = ck.get("config", {}).get("model", {}).get("name")
    if src_name != model.name:
        raise ConfigError(f"init_from ({path}) is a checkpoint of model {src_name!r}, expected 'unisrec'")
    src: dict[str, Any] = ck["model_state"]
    own = {k: v for k, v in model.state_dict().items() if k.startswith(TRANSFERABLE)}
    missing = sorted(set(own) - set(src))
    if missing:
        raise ConfigError(f"init_from ({path}) lacks transferable parameters {missing[:10]}")
    bad = [k for k in own if tuple(src[k].shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise ConfigError(
            f"init_from ({path}): parameter {k} has shape {tuple(src[k].shape)}, this model expects "
            f"{tuple(own[k].shape)} (hidden_size, num_layers, n_exps, feature size and max_len must match)"
        )
    model.load_state_dict({**model.state_dict(), **{k: src[k] for k in own}}, strict=True)
    log.info("UniSRec: loaded %d transferable tensors from %s", len(own), path)
