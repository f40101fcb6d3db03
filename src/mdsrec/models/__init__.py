"""Model registry: every model is one file with its config dataclass; ``build_model`` is the only constructor."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from mdsrec.config import ExperimentConfig, dataclass_from_dict
from mdsrec.errors import ConfigError
from mdsrec.models.base import DataInfo, SequentialRecommender
from mdsrec.models.bert4rec import BERT4Rec, BERT4RecConfig
from mdsrec.models.fdsa import FDSA, FDSAConfig
from mdsrec.models.gru4rec import GRU4Rec, GRU4RecConfig
from mdsrec.models.gru4recf import GRU4RecF, GRU4RecFConfig
from mdsrec.models.mdsrec import MDSRec, MDSRecConfig
from mdsrec.models.missrec import MISSRec, MISSRecConfig
from mdsrec.models.mmmlp import MMMLP, MMMLPConfig
from mdsrec.models.references import Cooc, CoocConfig, FeatSim, FeatSimConfig, Pop, PopConfig
from mdsrec.models.sasrec import SASRec, SASRecConfig
from mdsrec.models.sasrecf import SASRecF, SASRecFConfig
from mdsrec.models.unisrec import UniSRec, UniSRecConfig

REGISTRY: dict[str, tuple[type[SequentialRecommender], type]] = {
    "sasrec": (SASRec, SASRecConfig),
    "gru4rec": (GRU4Rec, GRU4RecConfig),
    "bert4rec": (BERT4Rec, BERT4RecConfig),
    "gru4recf": (GRU4RecF, GRU4RecFConfig),
    "sasrecf": (SASRecF, SASRecFConfig),
    "fdsa": (FDSA, FDSAConfig),
    "unisrec": (UniSRec, UniSRecConfig),
    "mmmlp": (MMMLP, MMMLPConfig),
    "missrec": (MISSRec, MISSRecConfig),
    "mdsrec": (MDSRec, MDSRecConfig),
    "pop": (Pop, PopConfig),
    "cooc": (Cooc, CoocConfig),
    "featsim": (FeatSim, FeatSimConfig),
}


def model_config(params: dict[str, Any]) -> Any:
    """Validate the ``model`` config section against the model's own dataclass."""
    name = params.get("name")
    if name not in REGISTRY:
        raise ConfigError(f"unknown model {name!r} (known: {', '.join(sorted(REGISTRY))})")
    _, cfg_cls = REGISTRY[name]
    try:
        return dataclass_from_dict(cfg_cls, params, "model")
    except ValueError as e:  # a value the config dataclass's __post_init__ refuses
        raise ConfigError(f"model {name}: {e}") from e


def check_experiment(cfg: ExperimentConfig) -> Any:
    """``model_config`` of the model section, plus the checks that join it to the other sections (a non-causal
    model trained on all-prefix rows), so that commands planning many runs refuse a bad one before any trains."""
    parsed = model_config(cfg.model)
    cls, _ = REGISTRY[parsed.name]
    if cls.needs_materialized(parsed) and cfg.data.train_mode != "materialized":
        raise ConfigError(
            f"model {parsed.name}: this model config is not causal ({cls.needs_materialized_because(parsed)}), so it "
            f"trains on one target per row only; data.train_mode is {cfg.data.train_mode!r}: set "
            "data.train_mode=materialized"
        )
    return parsed


def full_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """A copy of ``cfg`` whose model section lists every field of the model's config dataclass, defaults included.

    New runs save this form, so a later change of a model default cannot make an old run's saved config look like
    a new one's; two configs are the same experiment when their full forms are equal (a run saved with only the
    given keys equals one saved with every key)."""
    out = copy.deepcopy(cfg)
    out.model = dataclasses.asdict(model_config(cfg.model))
    return out


def build_model(params: dict[str, Any], info: DataInfo) -> SequentialRecommender:
    cfg = model_config(params)
    cls, _ = REGISTRY[cfg.name]
    try:
        return cls(cfg, info)
    except ValueError as e:  # e.g. hidden size not divisible by heads, dropout outside [0, 1]
        raise ConfigError(f"model {cfg.name}: {e}") from e


__all__ = [
    "REGISTRY",
    "DataInfo",
    "SequentialRecommender",
    "build_model",
    "check_experiment",
    "full_config",
    "model_config",
]
