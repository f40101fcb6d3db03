"""Typed experiment configuration.

Defaults live in the dataclasses below. A YAML file and ``--set section.key=value`` overrides are applied on top;
unknown sections or keys are errors, and values are checked against the field types (``"False"`` is a bool, never
the truthy string).

Layout of a config file::

    model: {name: sasrec, hidden_size: 300, num_layers: 2}
    data: {max_len: 50, batch_size: 512}
    train: {lr: 0.001, patience: 10, seed: 42}
    eval: {exclude_history: false}

The ``model`` section is validated by the chosen model's own config dataclass (see ``mdsrec.models``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mdsrec.errors import ConfigError, yaml_problem

T = TypeVar("T")


@dataclass
class DataConfig:
    max_len: int = 50  # histories are cut to the last max_len items
    batch_size: int = 512  # counted in batch_unit
    batch_unit: str = (
        "prefixes"  # "prefixes": a batch holds ~batch_size training targets; "sequences": batch_size users
    )
    train_mode: str = (
        "all_prefix"  # "all_prefix": one causal pass per sequence; "materialized": one example per prefix
    )
    eval_batch_size: int = 1024  # users per evaluation batch
    bucket_batches: int = 32  # sort by length within pools of this many batches (less padding)
    # materialized rows: "max_len" pads every row to max_len in random order (RecBole's way, the speed reference);
    # "batch" sorts them by length within pools as all_prefix does and pads to each batch's longest row (the same
    # rows and targets, far fewer padded positions; for models whose outputs do not depend on padding)
    materialized_padding: str = "max_len"

    def __post_init__(self) -> None:
        _check_choice("data.batch_unit", self.batch_unit, ("prefixes", "sequences"))
        _check_choice("data.train_mode", self.train_mode, ("all_prefix", "materialized"))
        _check_choice("data.materialized_padding", self.materialized_padding, ("max_len", "batch"))
        _check_positive("data.max_len", self.max_len)
        _check_positive("data.batch_size", self.batch_size)
        _check_positive("data.eval_batch_size", self.eval_batch_size)
        _check_positive("data.bucket_batches", self.bucket_batches)


@dataclass
class TrainConfig:
    epochs: int = 300  # upper bound; early stopping usually ends training first
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10  # evaluations without improvement of valid_metric before stopping
    # an epoch counts as an improvement (kept as best, patience restarted) only when valid_metric rises by more than
    # this over the best so far; 0 = any rise, the paper's protocol
    min_delta: float = 0.0
    valid_metric: str = "ndcg@20"
    seed: int = 42
    device: str = "cpu"
    grad_clip: float = 0.0  # 0 = off
    progress: bool = True
    num_threads: int = 0  # 0 = torch default
    # "bf16": training forward passes under torch.autocast(bfloat16) -- matrix products in bf16 (fast on CPUs with
    # AMX/AVX512-BF16 and on recent GPUs), parameters, gradients and optimizer state in fp32; evaluation always runs
    # in fp32 (exact full ranking). Part of a run's identity: a resume keeps the saved value.
    precision: str = "fp32"
    # Catalogues with more items than this compute the training cross-entropy and the evaluation ranks over item
    # chunks (mdsrec.models.catalogue): the same values to float tolerance, memory bounded by rows x chunk.
    score_chunk_above: int = 262_144

    def __post_init__(self) -> None:
        _check_choice("train.precision", self.precision, ("fp32", "bf16"))
        if self.score_chunk_above < 0:
            raise ConfigError(f"train.score_chunk_above ({self.score_chunk_above}) must be >= 0")
        _check_positive("train.epochs", self.epochs)
        _check_positive("train.patience", self.patience)
        if not (math.isfinite(self.min_delta) and self.min_delta >= 0):
            raise ConfigError(f"train.min_delta ({self.min_delta}) must be a finite number >= 0")
        if self.lr <= 0:
            raise ConfigError(f"train.lr ({self.lr}) must be > 0")


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [10, 20])
    exclude_history: bool = False  # RecBole's convention (and the paper's): history items stay rankable
    # Each epoch's log line and metrics.json also carry every channel's metrics alone and the metrics by the
    # target's training occurrences (mdsrec.evaluation.evaluator.diagnose); the metrics themselves do not change.
    diagnostics: bool = True

    def __post_init__(self) -> None:
        if not self.ks or any(k <= 0 for k in self.ks):
            raise ConfigError(f"eval.ks ({self.ks}) must be a non-empty list of positive integers")


@dataclass
class ExperimentConfig:
    model: dict[str, Any] = field(default_factory=lambda: {"name": "sasrec"})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # A named variant of the model (a frozen config such as ``mdsrec_plus``: the model's name, "_", a suffix):
    # benchmarks and reports list its runs under this name, beside the model's own row. None: the model itself.
    variant: str | None = None

    @property
    def model_name(self) -> str:
        return str(self.model["name"])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Keys that change how a run is shown or how fast it goes, never what it learns or its metrics: a run resumed or
# reused with other values for them is the same run.
OPERATIONAL_KEYS = frozenset(
    {
        "train.progress",
        "train.num_threads",
        "train.score_chunk_above",
        "data.eval_batch_size",
        "eval.diagnostics",
    }
)


def config_differences(
    a: dict[str, Any], b: dict[str, Any], prefix: str = "", ignore: frozenset[str] = OPERATIONAL_KEYS
) -> list[str]:
    """Every key (dotted, sorted) where two config dicts differ, with both values:
    ``['train.lr (0.001 in the run, 0.01 given)']``; a key missing on one side reads as None there. Keys in
    ``ignore`` (default: ``OPERATIONAL_KEYS``) are not compared."""
    out: list[str] = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if f"{prefix}{k}" in ignore:
            continue
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, f"{prefix}{k}.", ignore)
        elif va != vb:
            out.append(f"{prefix}{k} ({va!r} in the run, {vb!r} given)")
    return out


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} ({value!r}) must be one of {', '.join(choices)}")


def _check_positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{name} ({value}) must be > 0")


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats. Raise ConfigError otherwise."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            if arm is type(None) and value is None:
                return None
            try:
                return _coerce(name, value, arm)
            except ConfigError:
                continue
        raise ConfigError(f"{name}: {value!r} does not match {tp}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return [_coerce(f"{name}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{name}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{name}: unsupported field type {tp}")


def dataclass_from_dict(cls: type[T], values: dict[str, Any], section: str) -> T:
    """Build dataclass ``cls`` from ``values``, rejecting unknown keys and mistyped values."""
    if not isinstance(values, dict):
        raise ConfigError(f"section {section!r} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(
            f"unknown key(s) in {section}: {', '.join(unknown)} (known: {', '.join(sorted(fields))})"
        )
    kwargs = {k: _coerce(f"{section}.{k}", v, hints[k]) for k, v in values.items()}
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value``; the value is read as YAML (so 1e-3 is a float, false a bool)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts) or (len(parts) < 2 and parts != ["variant"]):
        raise ConfigError(
            f"override {text!r}: key must be section.key (for example train.lr=0.001) or variant"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError) as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({yaml_problem(e)})") from None
    return parts, value


def merge_overrides(base: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {p} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def load_config_dict(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 (byte {e.start + 1}); save it as UTF-8") from None
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError) as e:
        raise ConfigError(f"config file {path} is not valid YAML: {yaml_problem(e)}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(loaded).__name__}")
    return loaded


def build_config(values: dict[str, Any]) -> ExperimentConfig:
    """Turn a dict of sections into an ExperimentConfig (model section is validated later by the model)."""
    known = {"model", "data", "train", "eval", "variant"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown config section(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    model = values.get("model", {"name": "sasrec"})
    if isinstance(model, str):
        model = {"name": model}
    if not isinstance(model, dict) or "name" not in model:
        raise ConfigError("config section 'model' must be a mapping with a 'name'")
    variant = values.get("variant")
    if variant is not None:
        check_variant_name(variant, str(model["name"]))
    return ExperimentConfig(
        model=dict(model),
        data=dataclass_from_dict(DataConfig, values.get("data", {}) or {}, "data"),
        train=dataclass_from_dict(TrainConfig, values.get("train", {}) or {}, "train"),
        eval=dataclass_from_dict(EvalConfig, values.get("eval", {}) or {}, "eval"),
        variant=variant,
    )


def check_variant_name(variant: Any, model: str) -> None:
    """A variant's name is its model's name, an underscore and a suffix (``mdsrec_plus`` for model mdsrec), so
    that every table can tell which model a variant row belongs to."""
    if not isinstance(variant, str) or not re.fullmatch(rf"{re.escape(model)}_[a-z0-9][a-z0-9_]*", variant):
        raise ConfigError(
            f"variant ({variant!r}) must be the model's name, an underscore and a suffix of lower-case letters, "
            f"digits and underscores (e.g. {model}_plus for model {model})"
        )


def resolve_config(
    config_file: str | Path | None, overrides: list[str], model: str | None = None
) -> ExperimentConfig:
    values: dict[str, Any] = load_config_dict(config_file) if config_file else {}
    if model is not None:
        m = values.get("model")
        if isinstance(m, dict) and m.get("name") not in (None, model):
            raise ConfigError(f"--model {model} conflicts with model.name {m.get('name')!r} in {config_file}")
        values["model"] = {**(m if isinstance(m, dict) else {}), "name": model}
    return build_config(merge_overrides(values, overrides))
