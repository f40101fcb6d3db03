"""Data set spec files: a small YAML file that says where a data set's files are and how to encode each modality.

Example (the built-in ``scientific`` recipe)::

    name: scientific
    sequences: {format: unisrec, path: Scientific}
    item_keys: {format: item2index, path: Scientific.item2index}
    modalities:
      - name: title
        source: text
        path: Scientific.text
        format: unisrec_text
        key: external
        pattern: '^(?P<title>.*?)\\. (?P<categories>Industrial & Scientific.*?|)\\. (?P<brand>.*?)\\.?$'
        fields: [title]

Paths are relative to the source directory (``--source``, default the spec file's directory). See docs/data.md for
every field.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mdsrec.errors import ConfigError, yaml_problem

SEQUENCE_FORMATS = ("s3rec", "unisrec", "recbole", "mmrec")
KEY_MAP_FORMATS = ("datamaps", "item2index", "mmrec_item_map", "tsv")
TEXT_FORMATS = ("unisrec_text", "keyword", "tsv")
TEXT_PRECISIONS = ("float64", "float32")
IMAGE_FORMATS = ("folder", "tsv")
TEXT_BATCH_SIZE, IMAGE_BATCH_SIZE = 64, 16  # default batch_size per source
SOURCES = ("text", "attributes", "dense", "image")
RECIPES = ("scientific", "sports", "toys")


@dataclass
class SequenceSpec:
    format: str
    path: str
    user_field: str = "user_id"  # recbole only
    item_field: str = "item_id"
    time_field: str = "timestamp"


@dataclass
class KeyMapSpec:
    format: str
    path: str


@dataclass
class ModalitySpec:
    name: str
    source: str  # text | attributes | dense | image
    path: str
    format: str | None = None  # text: unisrec_text | keyword | tsv; image: folder (default) | tsv
    key: str = (
        "token"  # "token": keyed by the sequence file's item token; "external": by item_keys (e.g. ASIN)
    )
    pattern: str | None = None  # text: regex with named groups splitting the text into fields
    fields: list[str] | None = None  # text: groups joined (with ". ") to form this modality's text
    encoder: str | None = None  # text: sentence_transformer (default); attributes: multi_hot; dense: identity
    # text: local sentence-transformers directory (default: bundled all-MiniLM-L6-v2); image: local Hugging Face
    # CLIP-like or vision model directory (default: bundled EfficientNet-Lite0)
    model: str | None = None
    # text: 64 texts, image: 16 pictures encoded at a time (a batch of 64 at 224 px peaks at 2.5 GiB in float64)
    batch_size: int | None = None
    # text and image: "float64" computes in double precision and stores values on a 2^-20 grid, so the bytes (and
    # the data fingerprint) are the same on other CPUs and library versions; "float32" is faster (text ~2x, images
    # ~4-5x), machine-dependent
    precision: str = "float64"
    image_size: int = 224  # image, default encoder: the side the central crop is resized to
    # image: a file of more pixels (width x height) is refused before it is decoded (decompression bombs)
    max_pixels: int = 50_000_000
    # image: torch threads while encoding (0: torch's default, one per core); 1 is fastest for small pictures
    # when other processes keep cores busy (threads waiting on each other)
    threads: int = 0
    min_count: int = 1  # attributes: drop attribute ids used by fewer items
    dim: int | None = None  # expected feature dimension (checked when given)
    row_map: KeyMapSpec | None = None  # dense: token/key -> row; default row i = item token str(i)
    # an item of the sequences without an entry: "error" or "zero" (zero vector / ""); for images also an
    # unreadable, truncated or oversized file
    missing: str = "error"
    extra: str = "error"  # an entry for an item that is not in the sequences: "error" or "ignore"


@dataclass
class DatasetSpec:
    name: str
    sequences: SequenceSpec
    modalities: list[ModalitySpec] = field(default_factory=list)
    item_keys: KeyMapSpec | None = None
    min_interactions: int = 3
    description: str = ""
    path: Path | None = None  # the spec file


def _section(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {values!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {_names(unknown)} (known: {', '.join(sorted(known))})")
    try:
        obj = cls(**values)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from e
    for f in dataclasses.fields(cls):
        _check_type(f"{where}.{f.name}", getattr(obj, f.name), str(f.type))
    return obj


def _names(keys: Any) -> str:
    """Mapping keys for a message, sorted as text (YAML keys need not be strings)."""
    return ", ".join(sorted(str(k) for k in keys))


def _listed(value: Any, where: str) -> list[Any]:
    """A YAML list (None: empty); ConfigError for anything else."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where} ({value!r}) must be a list")
    return value


def _check_type(where: str, value: Any, annotation: str) -> None:
    """Check a YAML value against a field annotation of the spec dataclasses (str, int, list[str], optional)."""
    base = annotation.removesuffix(" | None")
    if value is None and base != annotation:
        return
    if base == "str" and not isinstance(value, str):
        raise ConfigError(f"{where} ({value!r}) must be a string")
    if base == "int" and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"{where} ({value!r}) must be an integer")
    if base == "list[str]" and not (isinstance(value, list) and all(isinstance(x, str) for x in value)):
        raise ConfigError(f"{where} ({value!r}) must be a list of strings")


def _choice(where: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{where} ({value!r}) must be one of {', '.join(choices)}")


def parse_spec(values: dict[str, Any], where: str) -> DatasetSpec:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: a spec must be a mapping")
    for req in ("name", "sequences"):
        if req not in values:
            raise ConfigError(f"{where}: missing required key {req!r}")
    v = dict(values)
    seq = _section(SequenceSpec, v.pop("sequences"), f"{where}: sequences")
    _choice(f"{where}: sequences.format", seq.format, SEQUENCE_FORMATS)
    keys = v.pop("item_keys", None)
    key_spec = _section(KeyMapSpec, keys, f"{where}: item_keys") if keys is not None else None
    if key_spec is not None:
        _choice(f"{where}: item_keys.format", key_spec.format, KEY_MAP_FORMATS)
    mods = []
    for i, m in enumerate(_listed(v.pop("modalities", []), f"{where}: modalities")):
        mw = f"{where}: modalities[{i}]"
        if isinstance(m, dict) and isinstance(m.get("row_map"), dict):
            m = {**m, "row_map": _section(KeyMapSpec, m["row_map"], f"{mw}.row_map")}
        ms = _section(ModalitySpec, m, mw)
        _choice(f"{mw}.source", ms.source, SOURCES)
        _choice(f"{mw}.key", ms.key, ("token", "external"))
        _choice(f"{mw}.missing", ms.missing, ("error", "zero"))
        _choice(f"{mw}.extra", ms.extra, ("error", "ignore"))
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", str(ms.name)):
            raise ConfigError(f"{mw}.name ({ms.name!r}) must use letters, digits, '_' or '-'")
        if ms.key == "external" and key_spec is None:
            raise ConfigError(f"{mw}: key 'external' needs an item_keys section")
        if ms.batch_size is None:
            ms.batch_size = IMAGE_BATCH_SIZE if ms.source == "image" else TEXT_BATCH_SIZE
        for positive in ("batch_size", "image_size", "max_pixels"):
            if getattr(ms, positive) < 1:
                raise ConfigError(f"{mw}.{positive} ({getattr(ms, positive)}) must be >= 1")
        if ms.threads < 0:
            raise ConfigError(f"{mw}.threads ({ms.threads}) must be >= 0 (0: torch's default)")
        if ms.source == "image":
            ms.format = ms.format or "folder"
            _choice(f"{mw}.format", ms.format, IMAGE_FORMATS)
            _choice(f"{mw}.precision", ms.precision, TEXT_PRECISIONS)
        if ms.source == "text":
            _choice(f"{mw}.format", ms.format, TEXT_FORMATS)
            _choice(f"{mw}.precision", ms.precision, TEXT_PRECISIONS)
            if ms.pattern is not None:
                try:
                    groups = set(re.compile(ms.pattern).groupindex)
                except re.error as e:
                    raise ConfigError(f"{mw}.pattern is not a valid regex: {e}") from e
                missing = sorted(set(ms.fields or []) - groups)
                if not ms.fields or missing:
                    raise ConfigError(
                        f"{mw}.fields {ms.fields} must name groups of pattern (groups: {sorted(groups)})"
                    )
        mods.append(ms)
    names = [m.name for m in mods]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: modality names must be unique, got {names}")
    min_interactions = v.pop("min_interactions", 3)
    _check_type(f"{where}: min_interactions", min_interactions, "int")
    spec = DatasetSpec(
        name=str(v.pop("name")),
        sequences=seq,
        modalities=mods,
        item_keys=key_spec,
        min_interactions=min_interactions,
        description=str(v.pop("description", "")),
    )
    if v:
        raise ConfigError(f"{where}: unknown key(s) {_names(v)}")
    if spec.min_interactions < 3:
        raise ConfigError(f"{where}: min_interactions ({spec.min_interactions}) must be >= 3 (leave-one-out)")
    return spec


def read_spec_text(path: Path) -> str:
    """A spec file's text; ConfigError naming the file and line when it is not UTF-8 (a leading BOM is dropped)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"{path}, line {line}: not valid UTF-8 (byte {e.start + 1}); save the spec as UTF-8"
        ) from None


def load_spec(name_or_path: str | Path) -> DatasetSpec:
    """A built-in recipe name or a path to a spec .yaml file."""
    p = Path(name_or_path)
    if str(name_or_path) in RECIPES and not p.exists():
        text = (
            resources.files("mdsrec.data")
            .joinpath(f"recipes/{name_or_path}.yaml")
            .read_text(encoding="utf-8")
        )
        where = f"recipe {name_or_path}"
        path = None
    elif p.is_file():
        text, where, path = read_spec_text(p), str(p), p
    else:
        raise ConfigError(f"{name_or_path}: not a built-in recipe ({', '.join(RECIPES)}) and not a spec file")
    try:
        values = yaml.safe_load(text)
    except (
        yaml.YAMLError,
        RecursionError,
        ValueError,
        TypeError,
        OverflowError,
    ) as e:  # (a tag's constructor)
        raise ConfigError(f"{where}: not valid YAML: {yaml_problem(e)}") from None
    spec = parse_spec(values, where)
    spec.path = path
    return spec
