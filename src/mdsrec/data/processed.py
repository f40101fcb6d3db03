"""The processed data set directory: what ``mdsrec prepare`` writes and everything else reads.

Layout::

    DATA_DIR/
      manifest.json        counts, settings, modalities, sha256 of every file below
      seq_items.npy        int64 [I]     item ids (1..N) of all sequences, concatenated, chronological
      seq_offsets.npy      int64 [U+1]   sequence u is seq_items[offsets[u]:offsets[u+1]]
      users.tsv            external user token per user, in sequence order
      items.tsv            item_id, source token, external key (item id 0 is padding and has no row)
      features/NAME.npy    float32 [N+1, d] one table per modality; row 0 (padding) is zeros

The data set's identity (``fingerprint``) is the sha256 over the manifest's file checksums; checkpoints store it and
refuse to run against a directory whose fingerprint differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mdsrec import __version__
from mdsrec.atomic import sha256_file, staged_directory
from mdsrec.errors import ConfigError, DataFormatError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class ModalityInfo:
    name: str
    dim: int
    encoder: str  # e.g. "sentence-transformers:all-MiniLM-L6-v2", "multi-hot", "dense"
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProcessedDataset:
    """Sequences (item ids 1..N, 0 = padding) and per-modality feature tables, as loaded from DATA_DIR."""

    name: str
    sequences: list[np.ndarray]  # U arrays of int64 item ids, chronological
    user_tokens: list[str]
    item_tokens: list[str]  # index i-1 describes item id i
    item_keys: list[str]
    features: dict[str, np.ndarray]  # name -> float32 [N+1, d], row 0 zeros
    manifest: dict[str, Any]
    path: Path | None = None

    @property
    def num_items(self) -> int:
        return len(self.item_tokens)

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])


def _fingerprint(files: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\t{files[name]}\n".encode())
    return h.hexdigest()


def _check_tsv_field(value: str, what: str) -> str:
    # Any line break str.splitlines sees (\r, \x85, \u2028, ...) would split the line when it is read back.
    if "\t" in value or (value and value.splitlines() != [value]):
        raise ValueError(
            f"{what} {value!r} contains a tab or line break and cannot be written to a .tsv file"
        )
    return value


def is_data_set(path: str | Path) -> bool:
    """Whether PATH is a processed data set written by mdsrec: a directory whose manifest.json is a JSON object
    with the fields every mdsrec manifest has (its files are not checked)."""
    manifest = Path(path) / MANIFEST
    try:
        obj = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and all(k in obj for k in ("format_version", "files", "fingerprint"))


def check_output(out: str | Path, overwrite: bool) -> None:
    """A data set may be written to OUT when it does not exist, or with ``overwrite`` when it is an empty directory
    or an mdsrec data set (``is_data_set``): ``--overwrite`` never removes anything else. ConfigError otherwise."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise ConfigError(f"{out} already exists (pass --overwrite to replace it)")
    if out.is_symlink() or not out.is_dir():
        raise ConfigError(f"{out} is not a directory; --overwrite replaces only a data set written by mdsrec")
    if any(out.iterdir()) and not is_data_set(out):
        raise ConfigError(
            f"{out} is not an mdsrec data set (no mdsrec {MANIFEST}); --overwrite replaces only a data set "
            "written by mdsrec prepare or synthetic: remove it yourself or choose another --out"
        )


def write_processed(
    out_dir: str | Path,
    name: str,
    user_tokens: list[str],
    sequences: list[list[int]],
    item_tokens: list[str],
    item_keys: list[str],
    features: dict[str, np.ndarray],
    modalities: list[ModalityInfo],
    settings: dict[str, Any],
    extra_counts: dict[str, int] | None = None,
    overwrite: bool = False,
) -> Path:
    """Validate and write a processed data set atomically (a temporary directory renamed into place, holding
    the output's lock); with ``overwrite`` it replaces only an existing data set (``check_output``)."""
    check_output(out_dir, overwrite)
    n_items = len(item_tokens)
    if len(item_keys) != n_items:
        raise ValueError(f"item_keys has {len(item_keys)} entries, expected {n_items}")
    if len(user_tokens) != len(sequences):
        raise ValueError(f"user_tokens has {len(user_tokens)} entries, expected {len(sequences)}")
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    flat = np.fromiter((i for s in sequences for i in s), dtype=np.int64, count=int(lengths.sum()))
    if flat.size and (flat.min() < 1 or flat.max() > n_items):
        raise ValueError(f"item ids must lie in 1..{n_items}, found {flat.min()}..{flat.max()}")
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    infos = {m.name: m for m in modalities}
    if set(infos) != set(features):
        raise ValueError(f"modalities {sorted(infos)} do not match feature tables {sorted(features)}")
    for mname, table in features.items():
        if table.ndim != 2 or table.shape[0] != n_items + 1:
            raise ValueError(f"feature table {mname!r} has shape {table.shape}, expected ({n_items + 1}, d)")
        if not np.isfinite(table).all():
            raise ValueError(f"feature table {mname!r} has non-finite values")
        if np.any(table[0] != 0):
            raise ValueError(f"feature table {mname!r}: row 0 (padding) must be zeros")
        infos[mname].dim = int(table.shape[1])

    with staged_directory(out_dir, overwrite=overwrite) as tmp:
        check_output(out_dir, overwrite)  # again under the lock: another writer may have finished meanwhile
        np.save(tmp / "seq_items.npy", flat)
        np.save(tmp / "seq_offsets.npy", offsets)
        (tmp / "users.tsv").write_text(
            "".join(_check_tsv_field(u, "user token") + "\n" for u in user_tokens), encoding="utf-8"
        )
        rows = ["item_id\ttoken\tkey\n"] + [
            f"{i + 1}\t{_check_tsv_field(t, 'item token')}\t{_check_tsv_field(k, 'item key')}\n"
            for i, (t, k) in enumerate(zip(item_tokens, item_keys, strict=True))
        ]
        (tmp / "items.tsv").write_text("".join(rows), encoding="utf-8")
        (tmp / "features").mkdir()
        for mname, table in features.items():
            np.save(tmp / "features" / f"{mname}.npy", table.astype(np.float32))
        files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        counts = {
            "users": len(sequences),
            "items": n_items,
            "interactions": int(lengths.sum()),
            "min_length": int(lengths.min()) if len(lengths) else 0,
            "max_length": int(lengths.max()) if len(lengths) else 0,
            "mean_length": round(float(lengths.mean()), 4) if len(lengths) else 0.0,
            **(extra_counts or {}),
        }
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "created_by": f"mdsrec {__version__}",
            "counts": counts,
            "modalities": {
                m.name: {"dim": m.dim, "encoder": m.encoder, "file": f"features/{m.name}.npy", **m.details}
                for m in modalities
            },
            "settings": settings,
            "files": files,
            "fingerprint": _fingerprint(files),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s: %s", out_dir, counts)
    return Path(out_dir)


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise DataFormatError(path, "no manifest.json: is this a directory written by `mdsrec prepare`?")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFormatError(path, f"invalid JSON ({e.msg})", line=e.lineno) from e
    for key in ("format_version", "files", "fingerprint", "counts", "modalities"):
        if key not in manifest:
            raise DataFormatError(path, f"missing field {key!r}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise DataFormatError(
            path, f"format_version {manifest['format_version']} is not supported (expected {FORMAT_VERSION})"
        )
    return dict(manifest)


def load_processed(data_dir: str | Path, verify: bool = True) -> ProcessedDataset:
    """Load DATA_DIR; with ``verify`` every file's sha256 is checked against the manifest."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    if _fingerprint(manifest["files"]) != manifest["fingerprint"]:
        raise DataFormatError(data_dir / MANIFEST, "field 'fingerprint' does not match field 'files'")
    for rel, digest in manifest["files"].items():
        p = data_dir / rel
        if not p.is_file():
            raise DataFormatError(p, "listed in manifest.json but missing")
        if verify and sha256_file(p) != digest:
            raise DataFormatError(
                p, "sha256 differs from manifest.json: the file changed after `mdsrec prepare`"
            )
    flat = np.load(data_dir / "seq_items.npy", allow_pickle=False)
    offsets = np.load(data_dir / "seq_offsets.npy", allow_pickle=False)
    sequences = [flat[offsets[u] : offsets[u + 1]] for u in range(len(offsets) - 1)]
    users = (data_dir / "users.tsv").read_text(encoding="utf-8").splitlines()
    item_lines = (data_dir / "items.tsv").read_text(encoding="utf-8").splitlines()[1:]
    item_tokens, item_keys = [], []
    for line in item_lines:
        _, tok, key = line.split("\t")
        item_tokens.append(tok)
        item_keys.append(key)
    features = {
        name: np.load(data_dir / info["file"], allow_pickle=False)
        for name, info in manifest["modalities"].items()
    }
    return ProcessedDataset(
        name=str(manifest.get("name", data_dir.name)),
        sequences=sequences,
        user_tokens=users,
        item_tokens=item_tokens,
        item_keys=item_keys,
        features=features,
        manifest=manifest,
        path=data_dir,
    )
