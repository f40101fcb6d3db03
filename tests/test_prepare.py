"""Tests for `mdsrec prepare`: tiny raw data sets and spec files written inline, end to end through
`mdsrec.data.prepare.prepare`, `load_processed` and the CLI. Bad input must fail with an error naming the file
(and line) and leave nothing behind."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from mdsrec.cli import main
from mdsrec.data.encoders import PORTABLE_GRID, encode_texts
from mdsrec.data.prepare import _token_order, prepare
from mdsrec.data.processed import ProcessedDataset, load_processed, write_processed
from mdsrec.data.synthetic import SyntheticConfig, write_synthetic
from mdsrec.errors import ConfigError, DataFormatError

# ----------------------------------------------------------------------------------------------------
# A tiny S3-Rec data set. Kept users u1, u2, u4; u3 (2 items) and u5 (1 item) are dropped. Numeric token order
# numbers the items 1 -> 1, 2 -> 2, 3 -> 3, 10 -> 4 (string order would put "10" second).

SEQUENCES = "u1 10 2 3 1\nu2 2 3 10\nu3 1 2\nu4 3 1 2 10 2\nu5 10\n"
EXPECTED_TOKENS = ["1", "2", "3", "10"]
EXPECTED_SEQUENCES = [[4, 2, 3, 1], [2, 3, 4], [3, 1, 2, 4, 2]]
DATAMAPS = {"id2item": {"1": "A1", "2": "A2", "3": "A3", "10": "A10"}, "item2id": {}}
# Multi-hot columns are sorted by (descending count, id): 6 (3 items), 5 (2 items), 7 (1 item).
ATTRIBUTES = {"1": [5, 6], "2": [6], "3": [], "10": [5, 7, 6]}
EXPECTED_MULTI_HOT = {"1": [1, 1, 0], "2": [1, 0, 0], "3": [0, 0, 0], "10": [1, 1, 1]}
DENSE = np.arange(12, dtype=np.float32).reshape(4, 3) * 1.5  # row r is [4.5r, 4.5r + 1.5, 4.5r + 3]
DENSE_ROWS = {"10": 0, "1": 1, "3": 2, "2": 3}  # item token -> row of DENSE


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_s3rec_source(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write(root / "seq.txt", SEQUENCES)
    write(root / "datamaps.json", json.dumps(DATAMAPS))
    write(root / "attrs.json", json.dumps(ATTRIBUTES))
    np.save(root / "img.npy", DENSE)
    write(root / "img_rows.tsv", "".join(f"{t}\t{r}\n" for t, r in DENSE_ROWS.items()))
    return root


def s3rec_spec() -> dict[str, Any]:
    """A fresh spec dict for the tiny S3-Rec data set (tests modify it)."""
    return {
        "name": "tiny",
        "sequences": {"format": "s3rec", "path": "seq.txt"},
        "item_keys": {"format": "datamaps", "path": "datamaps.json"},
        "modalities": [
            {"name": "attr", "source": "attributes", "path": "attrs.json"},
            {
                "name": "img",
                "source": "dense",
                "path": "img.npy",
                "row_map": {"format": "tsv", "path": "img_rows.tsv"},
                "dim": 3,
            },
        ],
    }


def write_spec(root: Path, spec: dict[str, Any] | str, name: str = "spec.yaml") -> Path:
    text = spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False)
    return write(root / name, text)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return write_s3rec_source(tmp_path / "raw")


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An output path inside an empty directory, so a test can check that nothing is left beside it."""
    (tmp_path / "proc").mkdir()
    return tmp_path / "proc" / "out"


def assert_prepare_fails(spec: Path, out: Path, error: type[Exception], *fragments: str) -> str:
    """prepare() raises `error` whose message has every fragment, and neither `out` nor a temporary directory
    beside it exists afterwards."""
    before = sorted(os.listdir(out.parent))
    with pytest.raises(error) as info:
        prepare(spec, out=out, progress=False)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert not out.exists()
    assert sorted(os.listdir(out.parent)) == before
    return message


# ----------------------------------------------------------------------------------------------------
# End to end


def test_prepare_s3rec_end_to_end(src: Path, out: Path) -> None:
    report = prepare(write_spec(src, s3rec_spec()), out=out, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())

    counts = manifest["counts"]
    assert (counts["users"], counts["items"], counts["interactions"]) == (3, 4, 12)
    assert (counts["input_users"], counts["input_interactions"], counts["dropped_short_users"]) == (5, 15, 2)
    assert "users 3, items 4, interactions 12" in report

    data = load_processed(out)
    assert data.item_tokens == EXPECTED_TOKENS
    assert data.item_keys == [f"A{t}" for t in EXPECTED_TOKENS]
    assert data.user_tokens == ["u1", "u2", "u4"]
    assert [s.tolist() for s in data.sequences] == EXPECTED_SEQUENCES
    assert all(s.dtype == np.int64 for s in data.sequences)

    assert set(data.features) == {"attr", "img"}
    for name, table in data.features.items():
        assert table.dtype == np.float32
        assert table.shape == (5, manifest["modalities"][name]["dim"])
        assert not table[0].any(), f"row 0 of {name} must be padding zeros"
    attr, img = data.features["attr"], data.features["img"]
    assert attr.shape[1] == 3 and manifest["modalities"]["attr"]["attributes"] == 3
    for item_id, token in enumerate(EXPECTED_TOKENS, start=1):
        assert attr[item_id].tolist() == EXPECTED_MULTI_HOT[token]
        np.testing.assert_array_equal(img[item_id], DENSE[DENSE_ROWS[token]])


def test_manifest_checksums_cover_every_file(src: Path, out: Path) -> None:
    prepare(write_spec(src, s3rec_spec()), out=out, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == written
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest, rel
    assert load_processed(out).fingerprint == manifest["fingerprint"]


def test_prepare_is_deterministic(src: Path, tmp_path: Path) -> None:
    spec = write_spec(src, s3rec_spec())
    prepare(spec, out=tmp_path / "a", progress=False)
    prepare(spec, out=tmp_path / "b", progress=False)
    assert load_processed(tmp_path / "a").fingerprint == load_processed(tmp_path / "b").fingerprint


def test_token_order_is_numeric_then_string_with_explicit_ties() -> None:
    tokens = ["10", "b", "2", "-1", "a10", "02", "2a", "1"]
    expected = ["-1", "1", "02", "2", "10", "2a", "a10", "b"]
    assert sorted(tokens, key=_token_order) == expected
    assert (
        sorted(reversed(tokens), key=_token_order) == expected
    )  # ties ("02" vs "2") do not depend on input order
    assert sorted(["--5", "5"], key=_token_order) == ["5", "--5"]  # not a number: must not crash int()


def test_short_users_are_dropped_and_counted(src: Path, out: Path) -> None:
    write(src / "seq.txt", "a 1 2 3\nb 1\nc 2 3\nd 3 2 1 2\ne 1 2 3\nf 3 3\n")
    spec = s3rec_spec()
    spec["modalities"] = []
    report = prepare(write_spec(src, spec), out=out, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["dropped_short_users"] == 3
    assert manifest["counts"]["users"] == 3
    assert "dropped 3 users with fewer than 3 interactions" in report
    assert load_processed(out).user_tokens == ["a", "d", "e"]


def test_min_interactions_from_spec(src: Path, out: Path) -> None:
    spec = s3rec_spec()
    spec["min_interactions"] = 4  # only u1 (4 items) and u4 (5 items) stay
    report = prepare(write_spec(src, spec), out=out, progress=False)
    assert load_processed(out).user_tokens == ["u1", "u4"]
    assert "dropped 3 users with fewer than 4 interactions" in report


def test_items_only_in_dropped_users_do_not_count_as_extra(src: Path, out: Path) -> None:
    """Item 99 is in the sequences file, but only for a dropped user: its entries in the item files are
    expected (not `extra`) and it gets no item id."""
    write(src / "seq.txt", SEQUENCES + "u6 99 1\n")
    write(src / "attrs.json", json.dumps({**ATTRIBUTES, "99": [8]}))
    write(src / "datamaps.json", json.dumps({"id2item": {**DATAMAPS["id2item"], "99": "A99"}}))
    np.save(src / "img.npy", np.concatenate([DENSE, np.ones((1, 3), np.float32)]))
    write(src / "img_rows.tsv", "".join(f"{t}\t{r}\n" for t, r in {**DENSE_ROWS, "99": 4}.items()))
    prepare(write_spec(src, s3rec_spec()), out=out, progress=False)
    data = load_processed(out)
    assert data.item_tokens == EXPECTED_TOKENS
    assert data.manifest["counts"]["dropped_short_users"] == 3
    assert data.features["attr"].shape == (5, 3)  # attribute 8 belongs only to item 99


def test_recbole_sequences_sorted_by_time_then_file_order(tmp_path: Path, out: Path) -> None:
    root = tmp_path / "raw"
    root.mkdir()
    write(
        root / "d.inter",
        "user_id:token\titem_id:token\ttimestamp:float\n"
        "a\tx\t3\na\ty\t1\na\tz\t2\nb\tx\t5\nb\tz\t5\nb\ty\t4\nc\tx\t1\n",
    )
    spec = {"name": "rb", "sequences": {"format": "recbole", "path": "d.inter"}}
    report = prepare(write_spec(root, spec), out=out, progress=False)
    data = load_processed(out)
    assert data.item_tokens == ["x", "y", "z"]
    assert [s.tolist() for s in data.sequences] == [[2, 3, 1], [2, 1, 3]]  # b: x before z at equal time
    assert "dropped 1 users" in report


# ----------------------------------------------------------------------------------------------------
# Text modalities through the bundled sentence encoder (one prepare call: the model takes seconds to load)

TEXT_INTER = (
    "user_id:token\titem_id:token\ttimestamp:float\na\tx\t1\na\ty\t2\na\tz\t3\nb\tz\t1\nb\ty\t2\nb\tx\t3\n"
)
KEYWORDS = "x red cotton shirt\ny red cotton shirt\nz blue steel hammer\n"
TITLED = "x\tShirt A. Clothing. Acme\ny\tShirt B. Clothing. Bolt\nz\tHammer. Tools. Acme\n"
TEXT_SPEC = r"""
name: texts
sequences: {format: recbole, path: d.inter}
modalities:
  - {name: kw, source: text, path: kw.txt, format: keyword}
  - name: brand_title
    source: text
    path: titled.tsv
    format: tsv
    pattern: '^(?P<title>.*?)\. (?P<category>.*?)\. (?P<brand>.*)$'
    fields: [brand, title]
  - {name: partial, source: text, path: partial.txt, format: keyword, missing: zero}
"""


@pytest.fixture(scope="module")
def text_data(tmp_path_factory: pytest.TempPathFactory) -> ProcessedDataset:
    root = tmp_path_factory.mktemp("text")
    write(root / "d.inter", TEXT_INTER)
    write(root / "kw.txt", KEYWORDS)
    write(root / "titled.tsv", TITLED)
    write(root / "partial.txt", "x red cotton shirt\nz blue steel hammer\n")  # no text for y
    prepare(write_spec(root, TEXT_SPEC), out=root / "out", progress=False)
    return load_processed(root / "out")


def test_text_modality_sentence_encoder(text_data: ProcessedDataset) -> None:
    assert text_data.item_tokens == ["x", "y", "z"]
    kw = text_data.features["kw"]
    assert kw.shape == (4, 384) and kw.dtype == np.float32
    assert np.isfinite(kw).all()
    assert not kw[0].any()
    np.testing.assert_array_equal(kw[1], kw[2])  # x and y have the same text
    assert np.abs(kw[1] - kw[3]).max() > 1e-3
    assert text_data.manifest["modalities"]["kw"]["encoder"] == "sentence-transformers:all-MiniLM-L6-v2"
    encoded_with = text_data.manifest["modalities"]["kw"]["encoded_with"]  # what else the floats depend on
    assert encoded_with["torch"] == torch.__version__ and encoded_with["sentence-transformers"][0].isdigit()
    assert text_data.manifest["modalities"]["kw"]["precision"] == "float64"  # the default


ENCODE = """
import hashlib
from mdsrec.data.encoders import encode_texts
texts = ["red cotton shirt", "steel claw hammer", "blue tent for two"]
print(hashlib.sha256(encode_texts(texts, precision="float64").tobytes()).hexdigest())
"""


@pytest.mark.slow
def test_float64_text_encoding_gives_the_same_bytes_on_other_cpu_paths(tmp_path: Path) -> None:
    """The default precision makes the feature bytes (so the data fingerprint) independent of the CPU's instruction
    set: PyTorch's generic kernels and MKL's compatible branch stand in for another machine. Float32 results differ
    between these paths on AVX2/AVX-512 machines; rounding a float64 result once to float32 hides that."""
    script = tmp_path / "encode.py"
    script.write_text(ENCODE)
    digests = []
    for env in ({}, {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}):
        run = subprocess.run(
            [sys.executable, str(script)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        digests.append(run.stdout.split()[-1])
    assert len(digests[0]) == 64 and digests[0] == digests[1]


def test_float64_text_values_lie_on_the_portable_grid(text_data: ProcessedDataset) -> None:
    kw = text_data.features["kw"].astype(np.float64)
    scaled = kw * PORTABLE_GRID
    np.testing.assert_array_equal(scaled, np.round(scaled))
    assert np.abs(scaled).max() > 1e4  # the grid is fine enough to keep the values' leading digits
    fast = encode_texts(["red cotton shirt"], precision="float32").astype(np.float64) * PORTABLE_GRID
    assert not np.array_equal(fast, np.round(fast))  # float32 stores the encoder's values as they come


def test_text_precision_must_be_float64_or_float32(tmp_path: Path) -> None:
    write(tmp_path / "d.inter", TEXT_INTER)
    write(tmp_path / "kw.txt", KEYWORDS)
    spec = TEXT_SPEC.split("  - name: brand_title")[0].replace(
        "format: keyword}", "format: keyword, precision: half}"
    )
    assert_prepare_fails(
        write_spec(tmp_path, spec),
        tmp_path / "out",
        ConfigError,
        "modalities[0].precision ('half') must be one of float64",
    )


def test_cli_text_precision_overrides_the_spec(
    tmp_path: Path, text_data: ProcessedDataset, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "d.inter", TEXT_INTER)
    write(tmp_path / "kw.txt", KEYWORDS)
    spec = write_spec(tmp_path, TEXT_SPEC.split("  - name: brand_title")[0])
    out = tmp_path / "out"
    assert (
        main(["prepare", str(spec), "--out", str(out), "--text-precision", "float32", "--no-progress"]) == 0
    )
    fast = load_processed(out)
    assert fast.manifest["modalities"]["kw"]["precision"] == "float32"
    assert (
        fast.manifest["settings"]["spec"]["modalities"][0]["precision"] == "float64"
    )  # the spec, as written
    np.testing.assert_allclose(fast.features["kw"], text_data.features["kw"], atol=1e-5)


def test_text_pattern_fields_pick_the_named_groups(text_data: ProcessedDataset) -> None:
    table = text_data.features["brand_title"]
    expected = encode_texts(["Acme. Shirt A", "Bolt. Shirt B", "Acme. Hammer"])
    assert table.shape == (4, 384)
    np.testing.assert_allclose(table[1:], expected, atol=1e-5)
    assert text_data.manifest["modalities"]["brand_title"]["fields"] == ["brand", "title"]


def test_text_missing_zero_gives_a_zero_row(text_data: ProcessedDataset) -> None:
    partial = text_data.features["partial"]
    assert not partial[2].any()  # y has no text: zero vector, not the embedding of ""
    np.testing.assert_array_equal(partial[1], text_data.features["kw"][1])
    assert text_data.manifest["modalities"]["partial"]["missing_items"] == 1


# ----------------------------------------------------------------------------------------------------
# Bad input: the error names the file, the line and what was expected; nothing is written


def test_malformed_sequence_line(src: Path, out: Path) -> None:
    write(src / "seq.txt", "u1 1 2 3\nu2\nu3 1 2 3\n")
    assert_prepare_fails(
        write_spec(src, s3rec_spec()),
        out,
        DataFormatError,
        "seq.txt, line 2",
        "expected 'user item [item ...]'",
    )


def test_empty_sequences_file(src: Path, out: Path) -> None:
    write(src / "seq.txt", "\n\n")
    assert_prepare_fails(write_spec(src, s3rec_spec()), out, DataFormatError, "seq.txt: file is empty")


def test_no_user_long_enough(src: Path, out: Path) -> None:
    write(src / "seq.txt", "u1 1 2\nu2 3\n")
    assert_prepare_fails(
        write_spec(src, s3rec_spec()), out, DataFormatError, "seq.txt", "no user has at least 3 interactions"
    )


def test_unknown_item_in_attribute_file(src: Path, out: Path) -> None:
    # Item 99 is not in the sequences; "99" also appears as an attribute id on line 3, which must not be
    # mistaken for the entry (line 5).
    write(src / "attrs.json", '{\n"1": [5],\n"2": [6, 99, 5],\n"3": [],\n"99": [5],\n"10": [6]\n}\n')
    assert_prepare_fails(
        write_spec(src, s3rec_spec()), out, DataFormatError, "attrs.json, line 5", "'99'", "extra: ignore"
    )


def test_unknown_item_ignored_with_extra_ignore(src: Path, out: Path) -> None:
    write(src / "attrs.json", json.dumps({**ATTRIBUTES, "99": [8]}))
    spec = s3rec_spec()
    spec["modalities"][0]["extra"] = "ignore"
    prepare(write_spec(src, spec), out=out, progress=False)
    assert load_processed(out).features["attr"].shape == (5, 3)


def test_unknown_item_in_dense_row_map(src: Path, out: Path) -> None:
    write(src / "img_rows.tsv", "10\t0\n1\t1\n3\t2\n77\t3\n")  # "77" instead of "2"
    message = assert_prepare_fails(
        write_spec(src, s3rec_spec()), out, DataFormatError, "img_rows.tsv, line 4", "'77'"
    )
    assert "img.npy" not in message


def test_item_missing_from_modality_file(src: Path, out: Path) -> None:
    write(src / "attrs.json", json.dumps({k: v for k, v in ATTRIBUTES.items() if k != "2"}))
    assert_prepare_fails(
        write_spec(src, s3rec_spec()), out, DataFormatError, "attrs.json", "no entry for 1 items", "'2'"
    )


def test_item_missing_with_missing_zero(src: Path, out: Path) -> None:
    write(src / "attrs.json", json.dumps({k: v for k, v in ATTRIBUTES.items() if k != "2"}))
    spec = s3rec_spec()
    spec["modalities"][0]["missing"] = "zero"
    prepare(write_spec(src, spec), out=out, progress=False)
    attr = load_processed(out).features["attr"]
    assert attr.shape == (5, 3)  # vocabulary now 5 (2 items), 6 (2 items), 7 (1 item)
    assert not attr[2].any()
    assert attr[1].tolist() == [1, 1, 0] and attr[4].tolist() == [1, 1, 1]


def test_dense_missing_item_with_missing_zero(src: Path, out: Path) -> None:
    np.save(src / "img.npy", DENSE[:3])
    write(src / "img_rows.tsv", "10\t0\n1\t1\n3\t2\n")  # no row for item token 2
    spec = s3rec_spec()
    spec["modalities"][1]["missing"] = "zero"
    prepare(write_spec(src, spec), out=out, progress=False)
    img = load_processed(out).features["img"]
    assert not img[2].any()
    np.testing.assert_array_equal(img[4], DENSE[0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_dense_row(src: Path, out: Path, bad: float) -> None:
    dense = DENSE.copy()
    dense[2, 1] = bad
    np.save(src / "img.npy", dense)
    assert_prepare_fails(
        write_spec(src, s3rec_spec()),
        out,
        DataFormatError,
        "img.npy",
        "row 2 (key '3') has non-finite values",
    )


def test_dense_wrong_dim(src: Path, out: Path) -> None:
    spec = s3rec_spec()
    spec["modalities"][1]["dim"] = 4
    assert_prepare_fails(
        write_spec(src, spec), out, DataFormatError, "img.npy", "dimension 3, expected dim 4"
    )


def test_dense_row_map_beyond_table(src: Path, out: Path) -> None:
    np.save(src / "img.npy", DENSE[:3])  # 3 rows, the row map names row 3
    assert_prepare_fails(
        write_spec(src, s3rec_spec()), out, DataFormatError, "img_rows.tsv", "row '3'", "0..2"
    )


def test_dense_table_too_short_without_row_map(src: Path, out: Path) -> None:
    # Without a row map, row i belongs to item token str(i): rows 0..3 cover tokens 1, 2, 3 but not 10.
    spec = s3rec_spec()
    del spec["modalities"][1]["row_map"]
    spec["modalities"][1]["extra"] = "ignore"  # row 0 has no item
    assert_prepare_fails(
        write_spec(src, spec), out, DataFormatError, "img.npy", "no entry for 1 items", "'10'"
    )


def test_unknown_spec_key(src: Path, out: Path) -> None:
    spec = s3rec_spec()
    spec["min_interaction"] = 3
    path = write_spec(src, spec)
    assert_prepare_fails(path, out, ConfigError, str(path), "unknown key(s) min_interaction")
    spec = s3rec_spec()
    spec["modalities"][1]["dims"] = 3
    assert_prepare_fails(write_spec(src, spec), out, ConfigError, "modalities[1]", "unknown key(s) dims")


def test_unknown_format(src: Path, out: Path) -> None:
    spec = s3rec_spec()
    spec["sequences"]["format"] = "csv"
    path = write_spec(src, spec)
    assert_prepare_fails(path, out, ConfigError, str(path), "sequences.format ('csv') must be one of s3rec")


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("dim", "3", "dim ('3') must be an integer"),
        ("batch_size", 1.5, "batch_size (1.5) must be an integer"),
        ("path", 5, "path (5) must be a string"),
        ("missing", None, "missing (None) must be a string"),
        ("fields", "title", "fields ('title') must be a list of strings"),
    ],
)
def test_spec_field_types_are_checked(src: Path, out: Path, key: str, value: object, fragment: str) -> None:
    spec = s3rec_spec()
    spec["modalities"][1][key] = value
    assert_prepare_fails(write_spec(src, spec), out, ConfigError, "modalities[1]", fragment)


def test_spec_min_interactions_must_be_an_integer(src: Path, out: Path) -> None:
    spec = s3rec_spec()
    spec["min_interactions"] = "many"
    assert_prepare_fails(
        write_spec(src, spec), out, ConfigError, "min_interactions ('many') must be an integer"
    )


def test_item_key_with_tab_is_a_data_error(src: Path, out: Path) -> None:
    write(src / "datamaps.json", json.dumps({"id2item": {**DATAMAPS["id2item"], "3": "A\t3"}}))
    assert_prepare_fails(
        write_spec(src, s3rec_spec()),
        out,
        DataFormatError,
        "datamaps.json",
        "field 'id2item', entry '3': item key 'A\\t3' contains control character U+0009",
    )


def test_user_token_with_line_break_is_a_data_error(tmp_path: Path, out: Path) -> None:
    # U+2028 is not a tab-file separator, but str.splitlines (used to read users.tsv back) splits on it.
    root = tmp_path / "raw"
    root.mkdir()
    rows = "".join(f"a\u2028b\t{i}\t{i}\n" for i in range(3))
    write(root / "d.inter", "user_id:token\titem_id:token\ttimestamp:float\n" + rows)
    spec = write_spec(root, {"name": "rb", "sequences": {"format": "recbole", "path": "d.inter"}})
    assert_prepare_fails(
        spec,
        out,
        DataFormatError,
        "d.inter, line 2",
        "'user_id' value 'a\\u2028b' contains control character U+2028",
    )


def test_write_processed_refuses_values_that_would_not_read_back(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="user token 'u\\\\r1' contains a tab or line break"):
        write_processed(tmp_path / "d", "x", ["u\r1"], [[1]], ["1"], ["k"], {}, [], {})
    assert os.listdir(tmp_path) == []


def test_existing_out_is_left_untouched(src: Path, out: Path) -> None:
    out.mkdir()
    write(out / "keep.txt", "mine")
    spec = write_spec(src, s3rec_spec())
    with pytest.raises(ConfigError, match="already exists"):
        prepare(spec, out=out, progress=False)
    # --overwrite replaces only an mdsrec data set: a folder of other files is never removed
    with pytest.raises(
        ConfigError, match=r"is not an mdsrec data set .*--overwrite replaces only a data set"
    ):
        prepare(spec, out=out, overwrite=True, progress=False)
    assert os.listdir(out.parent) == ["out"]
    assert os.listdir(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()  # an empty folder holds nothing to lose: replaced
    prepare(spec, out=out, overwrite=True, progress=False)
    fingerprint = load_processed(out).fingerprint
    write(out / "notes.txt", "in a data set")
    prepare(spec, out=out, overwrite=True, progress=False)  # a data set (its manifest) is replaced
    assert os.listdir(out.parent) == ["out"]
    assert not (out / "notes.txt").exists()
    assert load_processed(out).num_items == 4 and load_processed(out).fingerprint == fingerprint


# ----------------------------------------------------------------------------------------------------
# Checkpoints refuse data they were not trained on; load_processed refuses changed files


def test_checkpoint_refuses_other_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d1, d2, run = tmp_path / "d1", tmp_path / "d2", tmp_path / "run"
    write_synthetic(d1, SyntheticConfig(num_users=60, num_items=50, seed=0, images=False))
    write_synthetic(d2, SyntheticConfig(num_users=60, num_items=50, seed=1, images=False))
    sets = ["train.epochs=1", "train.progress=false", "model.hidden_size=16"]
    assert main(["train", "--data", str(d1), "--model", "sasrec", "--out", str(run), "--set", *sets]) == 0
    capsys.readouterr()

    assert main(["evaluate", "--run", str(run), "--data", str(d2)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "fingerprint" in err and str(d2) in err

    assert main(["evaluate", "--run", str(run)]) == 0
    assert "test metrics match" in capsys.readouterr().out


def test_changed_feature_file_is_refused(tmp_path: Path) -> None:
    d1 = write_synthetic(tmp_path / "d1", SyntheticConfig(num_users=60, num_items=50, seed=0, images=False))
    path = d1 / "features" / "style.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(DataFormatError, match=re.escape(str(path)) + ": sha256 differs"):
        load_processed(d1)


# ----------------------------------------------------------------------------------------------------
# CLI


def test_cli_prepare(src: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(src, s3rec_spec())
    assert main(["prepare", str(spec), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"prepared tiny -> {out}" in printed
    assert "modality attr: dim 3, encoder multi-hot" in printed
    assert load_processed(out).num_users == 3


def test_cli_prepare_bad_spec(src: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(src, "name: tiny\nsequences: {format: s3rec, path: seq.txt}\ncolour: red\n")
    assert main(["prepare", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert str(spec) in err and "unknown key(s) colour" in err
    assert not out.exists()


def test_a_spec_that_is_not_utf8_is_one_error_line(
    src: Path, out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = src / "latin.yaml"
    spec.write_bytes(b"name: caf\xe9\nsequences: {format: s3rec, path: seq.txt}\n")
    assert main(["prepare", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{spec}, line 1: not valid UTF-8 (byte 10)" in err
    assert not out.exists()


def test_a_spec_yaml_error_is_one_line(src: Path, out: Path) -> None:
    spec = write_spec(src, "name: tiny\nsequences: {format: s3rec, path: [seq.txt}\n")
    with pytest.raises(ConfigError) as info:
        prepare(spec, out=out, progress=False)
    message = str(info.value)
    assert message.splitlines() == [message] and "not valid YAML: line 2, column" in message
