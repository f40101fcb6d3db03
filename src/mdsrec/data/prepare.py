"""``mdsrec prepare``: from raw public-format files and a spec to one processed data set directory.

Steps: read the sequences; drop (and count) users with fewer than ``min_interactions``; number the items 1..N in
a deterministic order (numeric tokens by value, then other tokens as strings); map tokens to external keys; build
and encode every modality (one table [N+1, d], row 0 zeros); write everything with a manifest, atomically.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from mdsrec.atomic import locked_output
from mdsrec.data import formats
from mdsrec.data.encoders import (
    encode_texts,
    multi_hot,
    snap_to_grid,
    text_encoder_environment,
    text_model_name,
)
from mdsrec.data.processed import ModalityInfo, check_output, write_processed
from mdsrec.data.spec import IMAGE_BATCH_SIZE, TEXT_BATCH_SIZE, DatasetSpec, ModalitySpec, load_spec
from mdsrec.errors import ConfigError, DataFormatError

log = logging.getLogger(__name__)


_INTEGER = re.compile(r"-?[0-9]+")


def _token_order(token: str) -> tuple[int, int, str]:
    """Integer tokens by value (ties such as "02" and "2" by string), then other tokens as strings."""
    return (0, int(token), token) if _INTEGER.fullmatch(token) else (1, 0, token)


def _line_of(path: Path, key: str) -> int | None:
    """1-based line of the entry for ``key`` (to point an error at it): a JSON object key ``"key":``, or else the
    first field of a line (every line-based item file starts with its key). None for a binary .npy table."""
    if path.suffix == ".npy":
        return None
    if path.suffix == ".json":
        pat = re.compile('"' + re.escape(key) + r'"\s*:')
    else:
        pat = re.compile(r"^\s*" + re.escape(key) + r"(\s|$)")
    try:
        for no, line in formats.iter_lines(path):
            if pat.search(line):
                return no
    except DataFormatError:
        return None
    return None


def _check_tsv_safe(path: Path, what: str, values: list[str]) -> None:
    """items.tsv and users.tsv hold one value per field: no tabs or line breaks (any that str.splitlines sees)."""
    for v in values:
        if "\t" in v or (v and v.splitlines() != [v]):
            raise DataFormatError(
                path, f"{what} {v!r} contains a tab or line break; expected a single-line value"
            )


def read_sequences(spec: DatasetSpec, source: Path) -> formats.RawSequences:
    s = spec.sequences
    p = source / s.path
    if s.format == "s3rec":
        return formats.read_s3rec_sequences(p)
    if s.format == "unisrec":
        return formats.read_unisrec_splits(p)
    if s.format == "recbole":
        return formats.read_recbole_inter(p, s.user_field, s.item_field, s.time_field)
    return formats.read_mmrec_inter(p)


def _lookup(
    m: ModalitySpec,
    path: Path,
    table: dict[str, Any],
    item_keys: list[str],
    empty: Any,
    dropped: frozenset[str] = frozenset(),
    entry: str = "entry",
) -> list[Any]:
    """Values for every item, in item order; enforces the spec's ``missing`` and ``extra`` rules.

    Entries for ``dropped`` keys (items of the sequences file seen only in dropped short users) are not extra.
    ``entry`` names what an item lacks in the error (e.g. "image file").
    """
    if m.extra == "error":
        wanted = set(item_keys)
        extra = [k for k in table if k not in wanted and k not in dropped]
        if extra:
            raise DataFormatError(
                path,
                f"modality {m.name!r}: {len(extra)} entries name items that are not in the sequences "
                f"(first: {extra[0]!r}); expected only item {'keys' if m.key == 'external' else 'tokens'} of the "
                "sequences (set `extra: ignore` in the spec to skip them)",
                line=_line_of(path, extra[0]),
            )
    out = []
    missing = []
    for k in item_keys:
        if k in table:
            out.append(table[k])
        else:
            missing.append(k)
            out.append(empty)
    if missing and m.missing == "error":
        raise DataFormatError(
            path,
            f"modality {m.name!r}: no {entry} for {len(missing)} items of the sequences (first: {missing[0]!r}); "
            f"expected one {entry} per item (set `missing: zero` in the spec to use a zero vector)",
        )
    return out


def build_modality(
    m: ModalitySpec,
    source: Path,
    item_keys: list[str],
    text_model: str | None,
    device: str,
    progress: bool,
    dropped: frozenset[str] = frozenset(),
    text_precision: str | None = None,
) -> tuple[np.ndarray, ModalityInfo]:
    """One feature table [N+1, d] with a zero padding row, and its description for the manifest.

    ``dropped``: keys of items that only dropped users have; their entries are skipped, not ``extra``.
    ``text_precision``: overrides the spec's ``precision`` of a text modality.
    """
    path = source / m.path
    details: dict[str, Any] = {"source": m.source, "path": m.path}
    if m.source == "text":
        assert m.format is not None
        texts = formats.read_item_text(path, m.format)
        if m.pattern is not None:
            rx = re.compile(m.pattern)
            split: dict[str, str] = {}
            for key, text in texts.items():
                hit = rx.match(text)
                if hit is None:
                    raise DataFormatError(
                        path,
                        f"text of item {key!r} does not match the pattern of modality {m.name!r}",
                        line=_line_of(path, key),
                    )
                parts = [hit.group(f).strip() for f in m.fields or []]
                split[key] = ". ".join(p for p in parts if p)
            texts = split
            details.update(pattern=m.pattern, fields=m.fields)
        values = _lookup(m, path, texts, item_keys, "", dropped)
        model_dir = m.model or text_model
        precision = text_precision or m.precision
        emb = encode_texts(
            values,
            model_dir,
            device=device,
            batch_size=m.batch_size or TEXT_BATCH_SIZE,
            progress=progress,
            precision=precision,
        )
        absent = np.array([k not in texts for k in item_keys], dtype=bool)
        emb[absent] = 0.0  # `missing: zero`: an item without text gets a zero vector, not the embedding of ""
        details.update(empty_texts=sum(1 for t in values if not t), missing_items=int(absent.sum()))
        details.update(precision=precision, encoded_with=text_encoder_environment())
        encoder = f"sentence-transformers:{text_model_name(model_dir)}"
    elif m.source == "attributes":
        attrs = formats.read_item_attributes(path)
        values = _lookup(m, path, attrs, item_keys, [], dropped)
        emb, vocab = multi_hot(values, m.min_count)
        details.update(attributes=len(vocab), min_count=m.min_count)
        encoder = "multi-hot"
    elif m.source == "image":
        emb, image_details, encoder = _image_modality(m, path, source, item_keys, device, progress, dropped)
        details.update(image_details)
    else:
        row_map = source / m.row_map.path if m.row_map else None
        matrix, row_keys = formats.read_dense_features(
            path, row_map_path=row_map, row_map_fmt=m.row_map.format if m.row_map else None
        )
        rows = {k: i for i, k in enumerate(row_keys)}
        # With a row map the item keys come from it, so its errors name it (and its line).
        idx = _lookup(m, row_map or path, rows, item_keys, -1, dropped)
        emb = np.zeros((len(item_keys), matrix.shape[1]), dtype=np.float32)
        have = np.array([i >= 0 for i in idx], dtype=bool)
        emb[have] = matrix[np.array([i for i in idx if i >= 0], dtype=np.int64)]
        details.update(rows_in_file=int(matrix.shape[0]))
        encoder = "dense"
    if m.dim is not None and emb.shape[1] != m.dim:
        raise DataFormatError(path, f"modality {m.name!r} has dimension {emb.shape[1]}, expected dim {m.dim}")
    if emb.shape[1] == 0:
        raise DataFormatError(path, f"modality {m.name!r} has dimension 0 (no attributes or an empty table)")
    table = np.zeros((len(item_keys) + 1, emb.shape[1]), dtype=np.float32)
    table[1:] = emb
    return table, ModalityInfo(m.name, int(emb.shape[1]), encoder, details)


def _image_modality(
    m: ModalitySpec,
    path: Path,
    source: Path,
    item_keys: list[str],
    device: str,
    progress: bool,
    dropped: frozenset[str],
) -> tuple[np.ndarray, dict[str, Any], str]:
    """Image files -> vectors [N, d] (images.py); a listed file that does not exist is a missing image, an
    unreadable one an error or (``missing: zero``) a zero row, both counted in the returned details."""
    from mdsrec.data import images

    assert m.format is not None
    files = images.find_images(path, m.format, source)
    entry = "image file" if m.format == "folder" else "entry"
    found: list[Path | None] = _lookup(m, path, files, item_keys, None, dropped, entry=entry)
    for i, p in enumerate(found):
        if p is not None and not p.is_file():
            if m.missing == "error":
                raise DataFormatError(
                    path,
                    f"image file {p} of item {item_keys[i]!r} not found (set `missing: zero` in the spec to use a "
                    "zero vector)",
                    line=_line_of(path, item_keys[i]),
                )
            found[i] = None
    encoder = images.load_image_encoder(m.model, device, m.precision, m.image_size)
    emb, bad = images.encode_images(
        found,
        encoder,
        batch_size=m.batch_size or IMAGE_BATCH_SIZE,
        max_pixels=m.max_pixels,
        on_bad=m.missing,
        progress=progress,
        snap=snap_to_grid if m.precision == "float64" else None,
        threads=m.threads,
    )
    missing = sum(p is None for p in found)
    for b in bad[:5]:
        log.warning("modality %s: zero row for item %r: %s: %s", m.name, item_keys[b.index], b.path, b.reason)
    details: dict[str, Any] = {
        "format": m.format,
        "images": len(found) - missing - len(bad),
        "zero_rows": missing + len(bad),
        "missing_items": missing,
        "unreadable_items": len(bad),
        "unreadable": [{"key": item_keys[b.index], "file": b.path, "reason": b.reason} for b in bad[:100]],
        "precision": m.precision,
        "max_pixels": m.max_pixels,
        "encoded_with": images.image_encoder_environment(),
    }
    if m.model is None:
        details["image_size"] = m.image_size
    return emb, details, f"image:{encoder.name}"


def prepare(
    spec_ref: str | Path,
    out: str | Path,
    source: str | Path | None = None,
    overwrite: bool = False,
    text_model: str | None = None,
    device: str = "cpu",
    progress: bool = True,
    text_precision: str | None = None,
) -> str:
    """Build the processed data set; returns a short human-readable report. Holds OUT's lock from the first step
    (a second writer of OUT fails at once) and removes what a killed prepare of OUT left beside it."""
    with locked_output(out, "prepare"):
        check_output(out, overwrite)
        return _prepare(spec_ref, out, source, overwrite, text_model, device, progress, text_precision)


def _prepare(
    spec_ref: str | Path,
    out: str | Path,
    source: str | Path | None = None,
    overwrite: bool = False,
    text_model: str | None = None,
    device: str = "cpu",
    progress: bool = True,
    text_precision: str | None = None,
) -> str:
    """Build the processed data set; returns a short human-readable report."""
    t0 = time.perf_counter()
    spec = load_spec(spec_ref)
    if source is None:
        if spec.path is None:
            raise ConfigError(f"recipe {spec.name!r} needs --source DIR (the directory with its raw files)")
        source = spec.path.parent
    src = Path(source)
    if not src.is_dir():
        raise ConfigError(f"--source {src} is not a directory")
    out = Path(out)
    raw = read_sequences(spec, src)
    keep = [i for i, s in enumerate(raw.sequences) if len(s) >= spec.min_interactions]
    dropped = len(raw.sequences) - len(keep)
    if not keep:
        raise DataFormatError(raw.source, f"no user has at least {spec.min_interactions} interactions")
    tokens = sorted({t for i in keep for t in raw.sequences[i]}, key=_token_order)
    dropped_tokens = {t for s in raw.sequences for t in s}.difference(tokens)
    item_id = {t: j + 1 for j, t in enumerate(tokens)}
    sequences = [[item_id[t] for t in raw.sequences[i]] for i in keep]
    users = [raw.users[i] for i in keep]

    if spec.item_keys is not None:
        kpath = src / spec.item_keys.path
        key_map = formats.read_key_map(kpath, spec.item_keys.format)
        absent = [t for t in tokens if t not in key_map]
        if absent:
            raise DataFormatError(
                kpath, f"no key for {len(absent)} item tokens of the sequences (first: {absent[0]!r})"
            )
        keys = [key_map[t] for t in tokens]
        dropped_keys = frozenset(key_map[t] for t in dropped_tokens if t in key_map)
        _check_tsv_safe(kpath, "item key", keys)
    else:
        keys = list(tokens)
        dropped_keys = frozenset(dropped_tokens)
    seq_path = src / spec.sequences.path
    _check_tsv_safe(seq_path, "user token", users)
    _check_tsv_safe(seq_path, "item token", tokens)

    features: dict[str, np.ndarray] = {}
    infos: list[ModalityInfo] = []
    for m in spec.modalities:
        lookup_keys, skip = (
            (keys, dropped_keys) if m.key == "external" else (tokens, frozenset(dropped_tokens))
        )
        log.info("encoding modality %s (%s)", m.name, m.source)
        table, info = build_modality(m, src, lookup_keys, text_model, device, progress, skip, text_precision)
        features[m.name] = table
        infos.append(info)

    settings = {
        "spec": {
            "name": spec.name,
            "description": spec.description,
            "sequences": dataclasses.asdict(spec.sequences),
            "item_keys": dataclasses.asdict(spec.item_keys) if spec.item_keys else None,
            "modalities": [dataclasses.asdict(m) for m in spec.modalities],
            "min_interactions": spec.min_interactions,
        },
        "source": str(src.resolve()),
        "item_order": "numeric tokens by value (ties by string), then other tokens as strings",
    }
    write_processed(
        out,
        name=spec.name,
        user_tokens=users,
        sequences=sequences,
        item_tokens=tokens,
        item_keys=keys,
        features=features,
        modalities=infos,
        settings=settings,
        extra_counts={
            "input_users": len(raw.sequences),
            "input_interactions": sum(len(s) for s in raw.sequences),
            "dropped_short_users": dropped,
        },
        overwrite=overwrite,
    )
    n_inter = sum(len(s) for s in sequences)
    lines = [
        f"prepared {spec.name} -> {out} in {time.perf_counter() - t0:.1f}s",
        f"  users {len(users)}, items {len(tokens)}, interactions {n_inter}",
        f"  dropped {dropped} users with fewer than {spec.min_interactions} interactions",
    ]
    lines += [
        f"  modality {i.name}: dim {i.dim}, encoder {i.encoder}"
        + (f" ({i.details['precision']})" if "precision" in i.details else "")
        + (
            f", {i.details['zero_rows']} zero rows ({i.details['missing_items']} without an image, "
            f"{i.details['unreadable_items']} unreadable: see manifest.json)"
            if i.details.get("zero_rows")
            else ""
        )
        for i in infos
    ]
    return "\n".join(lines)
