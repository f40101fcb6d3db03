"""The built-in default data: a deterministic synthetic multimodal sequence generator with planted structure.

Items carry two modality feature tables ("style" and "topic"). Each modality groups the items into clusters, and
the two groupings are independent: items that look alike in one modality are unrelated in the other. Every user
follows one interest that lives in ONE modality: a cluster of that modality. Each next item is drawn from the
interest cluster (with probability ``focus``, popularity-skewed inside the cluster) or from the whole catalogue.

With many items and few interactions per item, ID embeddings alone learn the clusters slowly from co-occurrence,
while a model that reads each modality separately sees the cluster of the last items directly: that is the gap
that modality-aware models should exploit. Everything depends only on the seed.

With ``images`` (the default) the style modality is a picture: every item that occurs in a sequence gets a small
PNG whose shape, fill pattern and colour follow its style cluster (``render_item_image``), and the data set is
written as raw files (sequences, item keys, the topic table, the PNGs and a spec, ``write_synthetic_raw``) that
``mdsrec prepare`` turns into the processed set, the images through the image encoder: the modalities are "image"
(EfficientNet-Lite0 features) and "topic". Only items that occur in a sequence become items of the data set
(``prepare`` numbers those). Without ``images`` (the unit-test fixtures) both tables are written directly.
"""

from __future__ import annotations

import colorsys
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mdsrec.atomic import staged_directory
from mdsrec.data.processed import ModalityInfo, write_processed
from mdsrec.errors import MdsrecError


@dataclass
class SyntheticConfig:
    num_users: int = 3000
    # 6,000 items for 3,000 users: sparse like the real sets (each item seen ~5 times in training), so ID
    # embeddings alone learn the planted clusters slowly (at 2,000 items SASRec gets within 7% of MDSRec).
    num_items: int = 6000
    clusters_per_modality: int = 40
    feature_dim: int = 32
    feature_noise: float = 0.6  # std of item noise around its cluster centre (centres have unit norm)
    min_length: int = 5
    mean_extra_length: float = 5.0  # lengths are min_length + Geometric
    max_length: int = 60
    focus: float = 0.85  # probability that the next item comes from the interest cluster
    interest_switch: float = 0.05  # probability per step of moving to another cluster of the same modality
    seed: int = 0
    # the style modality as a PNG per item, encoded by `mdsrec prepare` (False: the style table, written directly)
    images: bool = True
    image_side: int = 64  # pixels; the images are encoded at this size (no upscaling)


def sports_size(**overrides: Any) -> SyntheticConfig:
    """A synthetic set of the Amazon Sports set's size, for benchmarks that need its scale but not its data: 35,598
    users, 18,357 items, histories of 5 + a geometric number of items (mean 8.32, as Sports; at most 296), two
    384-d feature tables of 60 clusters, seed 7; ``overrides`` change any field (e.g. ``images=False``)."""
    fields: dict[str, Any] = {
        "num_users": 35598,
        "num_items": 18357,
        "min_length": 5,
        "mean_extra_length": 3.32,
        "max_length": 296,
        "clusters_per_modality": 60,
        "feature_dim": 384,
        "seed": 7,
    }
    return SyntheticConfig(**{**fields, **overrides})


def generate(cfg: SyntheticConfig) -> tuple[list[list[int]], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Return (sequences of item ids 1..N, feature tables [N+1, d] with zero row 0, cluster labels per modality)."""
    rng = np.random.default_rng(cfg.seed)
    n, c, d = cfg.num_items, cfg.clusters_per_modality, cfg.feature_dim
    labels: dict[str, np.ndarray] = {}
    features: dict[str, np.ndarray] = {}
    for m in ("style", "topic"):
        lab = rng.integers(0, c, size=n)  # independent clustering per modality
        centres = rng.normal(size=(c, d))
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        table = np.zeros((n + 1, d), dtype=np.float32)
        table[1:] = centres[lab] + cfg.feature_noise * rng.normal(size=(n, d)) / np.sqrt(d)
        labels[m] = lab
        features[m] = table
    popularity = rng.zipf(1.6, size=n).clip(max=50).astype(np.float64)
    members = {m: [np.flatnonzero(labels[m] == k) for k in range(c)] for m in labels}
    global_p = popularity / popularity.sum()
    sequences: list[list[int]] = []
    modalities = list(labels)
    for _ in range(cfg.num_users):
        m = modalities[int(rng.integers(0, len(modalities)))]
        k = int(rng.integers(0, c))
        length = min(
            cfg.min_length + int(rng.geometric(1.0 / (1.0 + cfg.mean_extra_length))) - 1, cfg.max_length
        )
        seq: list[int] = []
        while len(seq) < length:
            if rng.random() < cfg.interest_switch:
                k = int(rng.integers(0, c))
            pool = members[m][k]
            if rng.random() < cfg.focus and len(pool):
                w = popularity[pool] / popularity[pool].sum()
                item = int(rng.choice(pool, p=w))
            else:
                item = int(rng.choice(n, p=global_p))
            if seq and item + 1 == seq[-1]:
                continue  # no immediate repeats
            seq.append(item + 1)
        sequences.append(seq)
    return sequences, features, labels


SHAPES = ("circle", "square", "triangle", "cross", "ring")
PATTERNS = ("solid", "stripes", "dots", "grid")


def render_item_image(cluster: int, clusters: int, rng: np.random.Generator, side: int = 64) -> Any:
    """A ``side`` x ``side`` RGB picture of one item of style ``cluster`` (0..clusters-1): the cluster fixes the
    shape (5), the fill pattern (4) and the hue (one per 20 clusters); the item varies position, size, rotation,
    saturation, brightness and the grey of the background. EfficientNet-Lite0 features of 40 clusters x 25 such
    images put 97% of each image's 10 nearest neighbours (cosine) in its own cluster."""
    from PIL import Image, ImageDraw

    shape = SHAPES[cluster % len(SHAPES)]
    pattern = PATTERNS[(cluster // len(SHAPES)) % len(PATTERNS)]
    per_hue = len(SHAPES) * len(PATTERNS)
    n_hues = math.ceil(clusters / per_hue)
    # n_hues + 1 steps round the circle: the two hues of 40 clusters are a third apart, not opposite (ImageNet
    # features confuse complementary colours)
    hue = 0.6 + (cluster // per_hue) / (n_hues + 1) + rng.uniform(-0.03, 0.03)
    rgb = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.65, 0.9), rng.uniform(0.6, 0.9))
    colour = tuple(round(255 * c) for c in rgb)
    grey = int(rng.integers(232, 256))
    background = (grey, grey, grey)
    img = Image.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(img)
    cx, cy = side * (0.5 + rng.uniform(-0.06, 0.06)), side * (0.5 + rng.uniform(-0.06, 0.06))
    r = side * rng.uniform(0.26, 0.34)
    angle = rng.uniform(-0.3, 0.3)
    cos, sin = math.cos(angle), math.sin(angle)

    def polygon(points: list[tuple[float, float]]) -> list[tuple[float, float]]:  # rotated about the centre
        return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]

    if shape in ("circle", "ring"):
        width = 0 if shape == "circle" else max(2, round(r * 0.45))
        draw.ellipse(
            [cx - r, cy - r, cx + r, cy + r], fill=None if width else colour, outline=colour, width=width
        )
    elif shape == "square":
        q = 0.85 * r
        draw.polygon(polygon([(-q, -q), (q, -q), (q, q), (-q, q)]), fill=colour)
    elif shape == "triangle":
        draw.polygon(polygon([(0, -r), (0.95 * r, 0.7 * r), (-0.95 * r, 0.7 * r)]), fill=colour)
    else:  # cross
        w = 0.4 * r
        arm = [
            (-w, -r),
            (w, -r),
            (w, -w),
            (r, -w),
            (r, w),
            (w, w),
            (w, r),
            (-w, r),
            (-w, w),
            (-r, w),
            (-r, -w),
        ]
        draw.polygon(polygon([*arm, (-w, -w)]), fill=colour)
    step = max(4, side // 10)
    offset = int(rng.integers(0, step))
    lines = range(offset, side, step)
    if pattern in ("stripes", "grid"):
        for y in lines:
            draw.line([(0, y), (side, y)], fill=background, width=max(1, step // 3))
    if pattern == "grid":
        for x in lines:
            draw.line([(x, 0), (x, side)], fill=background, width=max(1, step // 3))
    if pattern == "dots":
        dot = step / 4
        for y in lines:
            for x in lines:
                draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=background)
    return img


def write_synthetic_raw(
    raw_dir: str | Path, cfg: SyntheticConfig | None = None, overwrite: bool = False
) -> Path:
    """Write the synthetic data set as raw files plus a spec; returns the spec's path. Layout::

        synthetic.yaml     the spec (`mdsrec prepare RAW_DIR/synthetic.yaml --out DATA_DIR`)
        sequences.txt      `user item item ...` per user (S3-Rec format), items 1..num_items
        item_keys.tsv      item token -> key ("item17")
        images/KEY.png     one picture per item, following its style cluster
        topic.npy          the topic table [I, feature_dim], rows named by topic_rows.tsv

    Only items that occur in a sequence get a row or a picture.
    """
    cfg = cfg or SyntheticConfig()
    sequences, features, labels = generate(cfg)
    used = sorted({i for s in sequences for i in s})
    rng = np.random.default_rng([cfg.seed, 1])  # a stream of its own: the sequences stay those of `generate`
    with staged_directory(raw_dir, overwrite=overwrite) as tmp:
        (tmp / "sequences.txt").write_text(
            "".join(f"u{u} " + " ".join(map(str, s)) + "\n" for u, s in enumerate(sequences)),
            encoding="utf-8",
        )
        (tmp / "item_keys.tsv").write_text("".join(f"{i}\titem{i}\n" for i in used), encoding="utf-8")
        np.save(tmp / "topic.npy", features["topic"][used])
        (tmp / "topic_rows.tsv").write_text(
            "".join(f"{i}\t{r}\n" for r, i in enumerate(used)), encoding="utf-8"
        )
        (tmp / "images").mkdir()
        for i in used:
            img = render_item_image(
                int(labels["style"][i - 1]), cfg.clusters_per_modality, rng, cfg.image_side
            )
            img.save(tmp / "images" / f"item{i}.png", compress_level=6)
        spec = {
            "name": "synthetic",
            "description": "built-in synthetic data, mdsrec.data.synthetic "
            + ", ".join(f"{k}={v}" for k, v in asdict(cfg).items()),
            "sequences": {"format": "s3rec", "path": "sequences.txt"},
            "item_keys": {"format": "tsv", "path": "item_keys.tsv"},
            "modalities": [
                {
                    "name": "image",
                    "source": "image",
                    "path": "images",
                    "format": "folder",
                    "key": "external",
                    "image_size": cfg.image_side,
                    # float32: ~5x faster than the portable float64 here, which would add minutes to the quick start;
                    # so these bytes, and the synthetic set's fingerprint, may differ between machines
                    "precision": "float32",
                    # one thread: 64-px pictures gain little from more, and lose much when other processes keep
                    # the cores busy (measured 7x slower with 2 threads on 2 shared cores)
                    "threads": 1,
                },
                {
                    "name": "topic",
                    "source": "dense",
                    "path": "topic.npy",
                    "row_map": {"format": "tsv", "path": "topic_rows.tsv"},
                },
            ],
        }
        (tmp / "synthetic.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return Path(raw_dir) / "synthetic.yaml"


def write_synthetic(
    out_dir: str | Path,
    cfg: SyntheticConfig | None = None,
    overwrite: bool = False,
    raw_dir: str | Path | None = None,
    progress: bool = False,
) -> Path:
    """Generate and write a processed data set directory (same layout as `mdsrec prepare`).

    With ``cfg.images`` the raw files go to ``raw_dir`` (default: a temporary directory, removed afterwards; an
    existing one is replaced only if it holds an earlier synthetic set) and ``mdsrec prepare`` builds ``out_dir``
    from them."""
    cfg = cfg or SyntheticConfig()
    if cfg.images:
        from mdsrec.data.prepare import prepare

        if raw_dir is not None:
            if Path(raw_dir).exists() and not (Path(raw_dir) / "synthetic.yaml").is_file():
                raise MdsrecError(
                    f"{raw_dir} exists and holds no synthetic data set (synthetic.yaml): not replaced"
                )
            spec = write_synthetic_raw(raw_dir, cfg, overwrite=True)
            prepare(spec, out_dir, overwrite=overwrite, progress=progress)
        else:
            with tempfile.TemporaryDirectory(prefix="mdsrec-synthetic-") as tmp:
                spec = write_synthetic_raw(Path(tmp) / "raw", cfg)
                prepare(spec, out_dir, overwrite=overwrite, progress=progress)
        return Path(out_dir)
    sequences, features, _ = generate(cfg)
    n = cfg.num_items
    return write_processed(
        out_dir,
        name="synthetic",
        user_tokens=[f"u{i}" for i in range(len(sequences))],
        sequences=sequences,
        item_tokens=[str(i) for i in range(1, n + 1)],
        item_keys=[f"item{i}" for i in range(1, n + 1)],
        features=features,
        modalities=[
            ModalityInfo(m, cfg.feature_dim, "synthetic", {"clusters": cfg.clusters_per_modality})
            for m in features
        ],
        settings={"generator": "mdsrec.data.synthetic", **cfg.__dict__},
        extra_counts={"dropped_short_users": 0},
        overwrite=overwrite,
    )
