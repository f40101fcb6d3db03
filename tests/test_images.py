"""Tests for image modalities (`source: image` in a spec, mdsrec.data.images): finding files, decoding every colour
mode, refusing bad files by name, the default EfficientNet-Lite0 encoder, a local Hugging Face model (`model:`),
streaming, and the synthetic data's pictures. Images are generated in the tests; the only photo is the one that
matplotlib ships."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mdsrec.data import images
from mdsrec.data.encoders import PORTABLE_GRID
from mdsrec.data.prepare import prepare
from mdsrec.data.processed import load_processed
from mdsrec.data.synthetic import SyntheticConfig, generate, render_item_image, write_synthetic
from mdsrec.errors import ConfigError, DataFormatError, MdsrecError

# Items A, B, C (tokens in the sequences), one picture each unless a test removes or spoils one.
SEQUENCES = "u1 A B C\nu2 B C A\nu3 C A B\n"


def picture(cluster: int, seed: int = 0, side: int = 64) -> Image.Image:
    return render_item_image(cluster, 40, np.random.default_rng(seed), side)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels but holds none: opening it reads only this header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    )


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "raw"
    (root / "imgs").mkdir(parents=True)
    (root / "seq.txt").write_text(SEQUENCES, encoding="utf-8")
    for cluster, key in enumerate("ABC"):
        picture(cluster * 7).save(root / "imgs" / f"{key}.png")
    return root


@pytest.fixture
def out(tmp_path: Path) -> Path:
    (tmp_path / "proc").mkdir()
    return tmp_path / "proc" / "out"


def image_spec(src: Path, **modality: Any) -> Path:
    m = {
        "name": "img",
        "source": "image",
        "path": "imgs",
        "image_size": 64,
        "precision": "float32",
        **modality,
    }
    spec = {"name": "pics", "sequences": {"format": "s3rec", "path": "seq.txt"}, "modalities": [m]}
    path = src / "spec.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def prepare_fails(spec: Path, out: Path, *fragments: str, error: type[Exception] = DataFormatError) -> str:
    """prepare raises with every fragment in one line, and nothing is left beside `out`."""
    with pytest.raises(error) as info:
        prepare(spec, out=out, progress=False)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "\n" not in message
    assert os.listdir(out.parent) == []
    return message


# ----------------------------------------------------------------------------------------------------
# End to end through prepare


def test_image_folder_end_to_end(src: Path, out: Path) -> None:
    (src / "imgs" / "notes.txt").write_text("not an image, ignored")
    (src / "imgs" / ".hidden.png").write_bytes(b"ignored too")
    (src / "imgs" / "C.png").rename(src / "imgs" / "C.JPG")  # the extension in any case (still PNG bytes)
    report = prepare(image_spec(src), out=out, progress=False)
    data = load_processed(out)
    table = data.features["img"]
    assert table.shape == (4, 1280) and not table[0].any() and (np.abs(table[1:]).sum(axis=1) > 0).all()
    info = data.manifest["modalities"]["img"]
    assert info["encoder"] == "image:efficientnet-lite0" and info["images"] == 3 and info["zero_rows"] == 0
    assert "modality img: dim 1280, encoder image:efficientnet-lite0 (float32)" in report


def test_image_tsv_paths_are_relative_to_the_source(src: Path, out: Path) -> None:
    (src / "elsewhere").mkdir()
    (src / "imgs" / "B.png").rename(src / "elsewhere" / "b-photo.png")
    rows = [
        f"A\t{src / 'imgs' / 'A.png'}",
        "B\telsewhere/b-photo.png",
        "C\timgs/C.png",
    ]  # absolute or relative
    (src / "list.tsv").write_text("\n".join(rows) + "\n")
    prepare(image_spec(src, path="list.tsv", format="tsv"), out=out, progress=False)
    via_tsv = load_processed(out).features["img"]
    (src / "elsewhere" / "b-photo.png").rename(src / "imgs" / "B.png")
    prepare(image_spec(src), out=out.with_name("folder"), progress=False)
    np.testing.assert_array_equal(via_tsv, load_processed(out.with_name("folder")).features["img"])


def test_float64_image_values_lie_on_the_portable_grid_and_match_float32(src: Path, out: Path) -> None:
    prepare(image_spec(src, precision="float64"), out=out, progress=False)
    f64 = load_processed(out).features["img"][1:].astype(np.float64)
    scaled = f64 * PORTABLE_GRID
    np.testing.assert_array_equal(scaled, np.round(scaled))
    prepare(image_spec(src), out=out.with_name("f32"), progress=False)
    f32 = load_processed(out.with_name("f32")).features["img"][1:].astype(np.float64)
    assert not np.array_equal(f32 * PORTABLE_GRID, np.round(f32 * PORTABLE_GRID))
    assert np.abs(f64 - f32).max() < 1e-3  # the same features, up to float32 rounding


# ----------------------------------------------------------------------------------------------------
# Bad input: missing, unreadable, truncated, oversized; nothing is written


def test_missing_image_is_an_error_naming_the_folder_and_key(src: Path, out: Path) -> None:
    (src / "imgs" / "B.png").unlink()
    prepare_fails(
        image_spec(src), out, str(src / "imgs"), "no image file for 1 items", "'B'", "missing: zero"
    )


def test_missing_image_with_missing_zero_is_a_counted_zero_row(src: Path, out: Path) -> None:
    (src / "imgs" / "B.png").unlink()
    report = prepare(image_spec(src, missing="zero"), out=out, progress=False)
    data = load_processed(out)
    b = data.item_tokens.index("B") + 1
    assert not data.features["img"][b].any() and data.features["img"][[1, 2, 3]].any(axis=1).sum() == 2
    info = data.manifest["modalities"]["img"]
    assert (info["missing_items"], info["unreadable_items"], info["zero_rows"]) == (1, 0, 1)
    assert "1 zero rows (1 without an image, 0 unreadable" in report


def test_tsv_entry_whose_file_does_not_exist(src: Path, out: Path) -> None:
    (src / "list.tsv").write_text("A\timgs/A.png\nB\timgs/gone.png\nC\timgs/C.png\n")
    spec = image_spec(src, path="list.tsv", format="tsv")
    prepare_fails(spec, out, f"{src / 'list.tsv'}, line 2", "imgs/gone.png", "of item 'B' not found")
    prepare(image_spec(src, path="list.tsv", format="tsv", missing="zero"), out=out, progress=False)
    assert load_processed(out).manifest["modalities"]["img"]["missing_items"] == 1


def test_item_without_a_tsv_entry(src: Path, out: Path) -> None:
    (src / "list.tsv").write_text("A\timgs/A.png\nC\timgs/C.png\n")
    prepare_fails(image_spec(src, path="list.tsv", format="tsv"), out, "no entry for 1 items", "'B'")


@pytest.mark.parametrize(
    ("line", "fragment"), [("B imgs/B.png", "expected 'KEY<TAB>path"), ("A\timgs/C.png", "duplicate key 'A'")]
)
def test_malformed_tsv_line(src: Path, out: Path, line: str, fragment: str) -> None:
    (src / "list.tsv").write_text(f"A\timgs/A.png\n{line}\nC\timgs/C.png\n")
    prepare_fails(
        image_spec(src, path="list.tsv", format="tsv"), out, f"{src / 'list.tsv'}, line 2", fragment
    )


def test_non_image_file_is_an_error_naming_it(src: Path, out: Path) -> None:
    bad = src / "imgs" / "B.png"
    bad.write_bytes(b"this is not a picture")
    prepare_fails(image_spec(src), out, f"{bad}: not a readable image")


def test_non_image_file_with_missing_zero_is_counted_and_reported(src: Path, out: Path) -> None:
    bad = src / "imgs" / "B.png"
    bad.write_bytes(b"this is not a picture")
    report = prepare(image_spec(src, missing="zero"), out=out, progress=False)
    data = load_processed(out)
    assert not data.features["img"][data.item_tokens.index("B") + 1].any()
    info = data.manifest["modalities"]["img"]
    assert (info["missing_items"], info["unreadable_items"], info["zero_rows"]) == (0, 1, 1)
    assert info["unreadable"][0]["file"] == str(bad) and info["unreadable"][0]["key"] == "B"
    assert "not a readable image" in info["unreadable"][0]["reason"]
    assert "1 zero rows (0 without an image, 1 unreadable" in report


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_an_error_naming_it(src: Path, out: Path, fmt: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format=fmt)
    bad = src / "imgs" / "B.png"
    bad.write_bytes(
        buffer.getvalue()[: len(buffer.getvalue()) // 2]
    )  # the header is intact, the pixels are not
    prepare_fails(image_spec(src), out, f"{bad}: cannot decode the image")


def test_truncated_file_with_missing_zero(src: Path, out: Path) -> None:
    png = (src / "imgs" / "B.png").read_bytes()
    (src / "imgs" / "B.png").write_bytes(png[: len(png) // 2])
    prepare(image_spec(src, missing="zero"), out=out, progress=False)
    assert load_processed(out).manifest["modalities"]["img"]["unreadable_items"] == 1


def test_oversized_image_is_refused_before_decoding(src: Path, out: Path) -> None:
    """Headers of 8,000 x 8,000 and 100,000 x 100,000 pixels (192 MB and 30 GB decoded) in files of a few bytes:
    refused from the header by our limit (max_pixels) or, above twice its own limit, by Pillow's."""
    bomb = src / "imgs" / "B.png"
    bomb.write_bytes(png_header(8_000, 8_000))
    prepare_fails(image_spec(src), out, f"{bomb}: image of 8000 x 8000 pixels refused before decoding")
    bomb.write_bytes(png_header(100_000, 100_000))
    prepare_fails(image_spec(src, max_pixels=10**12), out, f"{bomb}: image refused before decoding (Pillow: ")
    prepare(image_spec(src, missing="zero"), out=out, progress=False)
    assert load_processed(out).manifest["modalities"]["img"]["unreadable_items"] == 1


def test_max_pixels_applies_to_ordinary_images(src: Path, out: Path) -> None:
    prepare_fails(
        image_spec(src, max_pixels=64 * 64 - 1), out, "image of 64 x 64 pixels refused before decoding"
    )


def test_image_of_an_item_not_in_the_sequences(src: Path, out: Path) -> None:
    picture(3).save(src / "imgs" / "Z.webp")
    prepare_fails(
        image_spec(src), out, str(src / "imgs"), "1 entries name items that are not in the sequences"
    )
    prepare(image_spec(src, extra="ignore"), out=out, progress=False)
    assert load_processed(out).num_items == 3


def test_two_files_for_one_key(src: Path, out: Path) -> None:
    picture(3).save(src / "imgs" / "B.jpg")
    prepare_fails(image_spec(src), out, "a second image for key 'B'")


def test_folder_without_images(src: Path, out: Path) -> None:
    for p in (src / "imgs").iterdir():
        p.unlink()
    prepare_fails(image_spec(src), out, str(src / "imgs"), "no image files")


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("format", "zip", "format ('zip') must be one of folder, tsv"),
        ("image_size", 0, "image_size (0) must be >= 1"),
        ("max_pixels", "many", "max_pixels ('many') must be an integer"),
        ("precision", "float16", "precision ('float16') must be one of float64, float32"),
        ("threads", -1, "threads (-1) must be >= 0"),
    ],
)
def test_image_spec_fields_are_checked(src: Path, out: Path, field: str, value: Any, fragment: str) -> None:
    prepare_fails(image_spec(src, **{field: value}), out, fragment, error=ConfigError)


def test_model_directory_must_exist(src: Path, out: Path) -> None:
    prepare_fails(
        image_spec(src, model=str(src / "nowhere")), out, "is not a local directory", error=ConfigError
    )


# ----------------------------------------------------------------------------------------------------
# Decoding: every colour mode gives the features of its RGB version


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    import matplotlib.cbook

    return Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")


@pytest.fixture(scope="module")
def encoder() -> images.ImageEncoder:
    return images.load_image_encoder(None, "cpu", "float32", 128)  # smaller than the default 224: faster


def features(encoder: images.ImageEncoder, *files: Path) -> np.ndarray:
    return images.encode_images(list(files), encoder)[0]


def test_colour_modes_give_the_features_of_their_rgb_version(
    tmp_path: Path, photo: Image.Image, encoder: images.ImageEncoder
) -> None:
    photo = photo.resize((256, 300))
    photo.save(tmp_path / "rgb.png")
    rgba = photo.convert("RGBA")
    cut = Image.new("L", photo.size, 0)
    cut.paste(255, (20, 20, photo.size[0] - 20, photo.size[1] - 20))
    rgba.putalpha(cut)  # transparent but for a central window: the border composites to white
    rgba.save(tmp_path / "alpha.png")
    white_border = Image.new("RGB", photo.size, "white")
    white_border.paste(photo, mask=cut)
    white_border.save(tmp_path / "alpha_rgb.png")
    photo.convert("L").save(tmp_path / "grey.png")
    photo.convert("L").convert("RGB").save(tmp_path / "grey_rgb.png")
    grey16 = np.asarray(photo.convert("L"), dtype=np.uint16) * 257  # the same grey levels in 16 bits
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    photo.quantize(256).save(tmp_path / "palette.png")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "palette_t.png", transparency=0)
    photo.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    photo.convert("CMYK").save(tmp_path / "cmyk.tif")
    pairs = [
        ("alpha.png", "alpha_rgb.png"),
        ("grey.png", "grey_rgb.png"),
        ("grey16.png", "grey_rgb.png"),
        ("palette.png", "rgb.png"),
        ("palette_t.png", "rgb.png"),
        ("cmyk.jpg", "rgb.png"),
        ("cmyk.tif", "rgb.png"),
    ]
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    assert (
        Image.open(tmp_path / "cmyk.jpg").mode == "CMYK" and Image.open(tmp_path / "palette.png").mode == "P"
    )
    for name, reference in pairs:
        f = features(encoder, tmp_path / name, tmp_path / reference)
        assert cosine(f[0], f[1]) >= 0.99, name
    other = features(encoder, tmp_path / "rgb.png", tmp_path / "grey_rgb.png")  # colour matters somewhat
    assert cosine(other[0], other[1]) < 0.99


def test_exif_orientation_is_applied(tmp_path: Path, encoder: images.ImageEncoder) -> None:
    img = picture(2, side=96)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img.save(tmp_path / "tagged.jpg", exif=exif, quality=95)
    img.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "upright.jpg", quality=95)
    assert images.load_rgb(tmp_path / "tagged.jpg").size == (96, 96)
    f = features(encoder, tmp_path / "tagged.jpg", tmp_path / "upright.jpg", tmp_path / "tagged.jpg")
    assert cosine(f[0], f[1]) > 0.99


# ----------------------------------------------------------------------------------------------------
# The default encoder: strict weights, sensible features, bounded memory


def test_default_encoder_recognises_the_photo(photo: Image.Image) -> None:
    """The packaged ImageNet weights with this preprocessing name the photo of Grace Hopper in uniform: ImageNet
    class 652 ("military uniform") is in the top 5, as with the reference implementation."""
    net = images.load_efficientnet_lite0()
    x = torch.from_numpy(images.efficientnet_preprocess(photo, 224))[None]
    with torch.inference_mode():
        top5 = net(x).topk(5).indices[0].tolist()
    assert 652 in top5


def test_default_weights_load_strictly(tmp_path: Path) -> None:
    state = torch.load(images.default_image_weights(), map_location="cpu", weights_only=True)
    state["_blocks.0.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(RuntimeError, match="Unexpected key"):
        images.load_efficientnet_lite0(tmp_path / "extra.pth")
    del state["_blocks.0.extra"], state["_fc.bias"]
    torch.save(state, tmp_path / "short.pth")
    with pytest.raises(RuntimeError, match="Missing key"):
        images.load_efficientnet_lite0(tmp_path / "short.pth")


def test_default_features_separate_shapes_and_survive_re_encoding(
    tmp_path: Path, encoder: images.ImageEncoder
) -> None:
    """A picture is nearer its own JPEG copy (and a re-drawn sibling of its cluster) than any other cluster's."""
    for c in range(4):
        picture(c, seed=0, side=96).save(tmp_path / f"{c}.png")
        picture(c, seed=0, side=96).save(tmp_path / f"{c}.jpg", quality=70)
        picture(c, seed=5, side=96).save(tmp_path / f"{c}-sibling.png")
    f = features(encoder, *[tmp_path / f"{c}{s}" for c in range(4) for s in (".png", ".jpg", "-sibling.png")])
    f = f.reshape(4, 3, -1)
    for c in range(4):
        others = max(cosine(f[c, 0], f[d, 0]) for d in range(4) if d != c)
        assert cosine(f[c, 0], f[c, 1]) > others and cosine(f[c, 0], f[c, 2]) > others


def test_encoder_streams_at_most_one_batch_of_decoded_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(7):
        picture(i).save(tmp_path / f"{i}.png")
    live, peak = [0], [0]
    real_load = images.load_rgb

    def counting_load(path: Path, max_pixels: int = images.DEFAULT_MAX_PIXELS) -> Any:
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        return real_load(path, max_pixels)

    tiny = images.load_image_encoder(None, "cpu", "float32", 32)
    small = images.ImageEncoder(
        tiny.name,
        tiny.dim,
        tiny.preprocess,
        lambda x: (live.__setitem__(0, 0), tiny.embed(x))[1],  # a batch encoded: its images are released
        tiny.dtype,
        tiny.device,
    )
    monkeypatch.setattr(images, "load_rgb", counting_load)
    paths: list[Path | None] = [tmp_path / f"{i}.png" for i in range(7)]
    paths.insert(3, None)
    vectors, bad = images.encode_images(paths, small, batch_size=3)
    assert peak[0] == 3 and not bad
    assert (
        vectors.shape == (8, 1280)
        and not vectors[3].any()
        and np.abs(vectors).sum(axis=1).astype(bool).sum() == 7
    )


def test_threads_apply_while_encoding_and_are_restored(tmp_path: Path) -> None:
    picture(0).save(tmp_path / "0.png")
    tiny = images.load_image_encoder(None, "cpu", "float32", 32)
    seen: list[int] = []
    spy = images.ImageEncoder(
        tiny.name,
        tiny.dim,
        tiny.preprocess,
        lambda x: (seen.append(torch.get_num_threads()), tiny.embed(x))[1],
        tiny.dtype,
        tiny.device,
    )
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        images.encode_images([tmp_path / "0.png"], spy, threads=1)
        images.encode_images([tmp_path / "0.png"], spy)  # 0: torch's setting as it is
        assert seen == [1, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------------
# A local Hugging Face model (`model:`): a tiny CLIP and a tiny ViT with random weights


def tiny_clip(root: Path) -> Path:
    pytest.importorskip("transformers")
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    small = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={
            **small,
            "vocab_size": 64,
            "max_position_embeddings": 8,
            "bos_token_id": 0,
            "eos_token_id": 1,
        },
        vision_config={**small, "image_size": 32, "patch_size": 8},
        projection_dim=12,
    )
    CLIPModel(config).save_pretrained(root)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        root
    )
    return root


def tiny_vit(root: Path) -> Path:
    pytest.importorskip("transformers")
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    ViTModel(config).save_pretrained(root)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root)
    return root


def test_local_clip_model_gives_its_projected_image_embedding(src: Path, out: Path, tmp_path: Path) -> None:
    from transformers import AutoImageProcessor, CLIPModel

    model_dir = tiny_clip(tmp_path / "tiny-clip")
    prepare(image_spec(src, model=str(model_dir)), out=out, progress=False)
    data = load_processed(out)
    table = data.features["img"]
    assert table.shape == (4, 12)  # projection_dim, not the vision tower's width
    info = data.manifest["modalities"]["img"]
    assert info["encoder"] == "image:tiny-clip" and "image_size" not in info
    clip = CLIPModel.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    a = Image.open(src / "imgs" / "A.png").convert("RGB")
    with torch.inference_mode():
        direct = clip.get_image_features(
            pixel_values=processor(images=[a], return_tensors="pt")["pixel_values"]
        )
    direct = direct if isinstance(direct, torch.Tensor) else direct.pooler_output
    np.testing.assert_allclose(table[data.item_tokens.index("A") + 1], direct[0].numpy(), atol=1e-5)
    prepare(
        image_spec(src, model=str(model_dir), precision="float64"), out=out.with_name("f64"), progress=False
    )
    f64 = load_processed(out.with_name("f64")).features["img"]
    np.testing.assert_allclose(f64, table, atol=1e-4)


def test_local_vision_model_without_projection_gives_its_pooled_output(
    src: Path, out: Path, tmp_path: Path
) -> None:
    prepare(image_spec(src, model=str(tiny_vit(tmp_path / "tiny-vit"))), out=out, progress=False)
    table = load_processed(out).features["img"]
    assert table.shape == (4, 16) and np.isfinite(table).all()
    assert len({row.tobytes() for row in table[1:]}) == 3  # three pictures, three vectors


def test_directory_that_is_not_a_model(src: Path, out: Path, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    (tmp_path / "empty-model").mkdir()
    prepare_fails(
        image_spec(src, model=str(tmp_path / "empty-model")),
        out,
        "not a loadable Hugging Face",
        error=ConfigError,
    )


# ----------------------------------------------------------------------------------------------------
# The synthetic data's pictures carry the planted style clusters


def test_synthetic_images_go_through_prepare_and_carry_the_style_clusters(tmp_path: Path) -> None:
    cfg = SyntheticConfig(num_users=40, num_items=60, clusters_per_modality=4, feature_dim=8, seed=3)
    data = load_processed(write_synthetic(tmp_path / "data", cfg, raw_dir=tmp_path / "raw"))
    assert list(data.features) == ["image", "topic"] and data.features["image"].shape[1] == 1280
    assert (tmp_path / "raw" / "synthetic.yaml").is_file()
    assert len(list((tmp_path / "raw" / "images").glob("item*.png"))) == data.num_items
    info = data.manifest["modalities"]["image"]
    assert info["source"] == "image" and info["image_size"] == 64 and info["zero_rows"] == 0
    _, tables, labels = generate(cfg)
    ids = np.array([int(t) for t in data.item_tokens])
    np.testing.assert_array_equal(data.features["topic"][1:], tables["topic"][ids])
    style = labels["style"][ids - 1]
    f = data.features["image"][1:].astype(np.float64)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.argmax(axis=1)
    assert (style[nearest] == style).mean() > 0.9


def test_synthetic_raw_directory_of_something_else_is_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "precious.txt").write_text("keep me")
    cfg = SyntheticConfig(num_users=10, num_items=12, clusters_per_modality=2, feature_dim=4)
    with pytest.raises(MdsrecError, match="holds no synthetic data set"):
        write_synthetic(tmp_path / "data", cfg, raw_dir=tmp_path / "raw")
    assert (tmp_path / "raw" / "precious.txt").read_text() == "keep me" and not (tmp_path / "data").exists()


ENCODE = """
import hashlib, sys
from pathlib import Path
from mdsrec.data import images
from mdsrec.data.encoders import snap_to_grid
encoder = images.load_image_encoder(None, "cpu", sys.argv[2], 64)
snap = snap_to_grid if sys.argv[2] == "float64" else None
vectors, _ = images.encode_images(sorted(Path(sys.argv[1]).glob("*.png")), encoder, snap=snap)
print(hashlib.sha256(vectors.tobytes()).hexdigest())
"""


@pytest.mark.slow
def test_float64_image_encoding_gives_the_same_bytes_on_other_cpu_paths(tmp_path: Path) -> None:
    """As for text: PyTorch's generic kernels and MKL's compatible branch stand in for another machine; the float64
    vectors snapped to the grid are the same bytes."""
    import subprocess
    import sys

    for c in range(6):
        picture(c * 5, seed=c).save(tmp_path / f"{c}.png")
    script = tmp_path / "encode.py"
    script.write_text(ENCODE)
    digests = []
    for env in ({}, {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}):
        run = subprocess.run(
            [sys.executable, str(script), str(tmp_path), "float64"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        digests.append(run.stdout.split()[-1])
    assert len(digests[0]) == 64 and digests[0] == digests[1]
