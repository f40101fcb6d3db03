"""Tests for mdsrec.data.formats: exact parses of tiny inline files; errors name the file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mdsrec.data.formats import (
    iter_lines,
    read_dense_features,
    read_item_attributes,
    read_item_text,
    read_key_map,
    read_mmrec_inter,
    read_recbole_inter,
    read_s3rec_sequences,
    read_unisrec_splits,
)
from mdsrec.errors import ConfigError, DataFormatError

UNISREC_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def write_splits(tmp_path: Path, train: str, valid: str, test: str, header: str = UNISREC_HEADER) -> Path:
    for part, body in (("train", train), ("valid", valid), ("test", test)):
        write(tmp_path, f"D.{part}.inter", header + body)
    return tmp_path / "D"


# --- iter_lines


def test_iter_lines_skips_trailing_blank_lines_and_strips_newlines(tmp_path: Path) -> None:
    path = write(tmp_path, "a.txt", "x y\r\nz\n\n  \n")
    assert list(iter_lines(path)) == [(1, "x y"), (2, "z")]


def test_iter_lines_errors(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="missing.txt: file not found"):
        list(iter_lines(tmp_path / "missing.txt"))
    with pytest.raises(DataFormatError, match="empty.txt: file is empty"):
        list(iter_lines(write(tmp_path, "empty.txt", "\n\n")))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(DataFormatError, match=r"bad.txt, line 2: not valid UTF-8"):
        list(iter_lines(bad))


# --- S3-Rec / P5 sequences


def test_s3rec_real_format_head(tmp_path: Path) -> None:
    # Mirrors the head of Sports_and_Outdoors.txt (S3-Rec): user id, then 1-based item ids, chronological.
    path = write(
        tmp_path,
        "Sports_and_Outdoors.txt",
        "1 1 2 3 4 5 6 7 8\n2 9 10 11 12 13 14 15 16 1 17 18 19 20 21 22 23 24 25 26\n4 48 49 50 1 51\n",
    )
    raw = read_s3rec_sequences(path)
    assert raw.users == ["1", "2", "4"]
    assert raw.sequences[0] == [str(i) for i in range(1, 9)]
    assert raw.sequences[1][8] == "1" and len(raw.sequences[1]) == 19
    assert raw.sequences[2] == ["48", "49", "50", "1", "51"]
    assert str(path) in raw.source


def test_s3rec_tolerates_repeated_and_trailing_whitespace(tmp_path: Path) -> None:
    raw = read_s3rec_sequences(write(tmp_path, "s.txt", "u1  a   b \nu2 c\n\n"))
    assert (raw.users, raw.sequences) == (["u1", "u2"], [["a", "b"], ["c"]])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("u1 a\nu2\n", r"s.txt, line 2: expected 'user item \[item ...\]'.* got 1 field"),
        ("u1 a\nu2 b\nu1 c\n", r"s.txt, line 3: duplicate user 'u1' \(first on line 1\)"),
        ("u1 a\n\nu2 b\n", r"s.txt, line 2: blank line before the end of the file"),
        ("", r"s.txt: file is empty"),
    ],
)
def test_s3rec_errors(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(DataFormatError, match=match):
        read_s3rec_sequences(write(tmp_path, "s.txt", text))


# --- UniSRec splits


def test_unisrec_rebuild_with_truncated_histories(tmp_path: Path) -> None:
    # User 7: a b c d e f. User 3: its rows' histories are truncated to the last 2 items (like UniSRec's 50).
    # Users are interleaved in the train file; train rows are longest-first per user.
    prefix = write_splits(
        tmp_path,
        train="7\ta b c\td\n3\tp q\tr\n7\ta b\tc\n3\tp\tq\n7\ta\tb\n",
        valid="3\tq r\ts\n7\ta b c d\te\n",
        test="7\ta b c d e\tf\n3\tr s\tt\n",
    )
    raw = read_unisrec_splits(prefix)
    assert raw.users == ["7", "3"]
    assert raw.sequences == [["a", "b", "c", "d", "e", "f"], ["p", "q", "r", "s", "t"]]
    assert "D.train.inter" in raw.source and "D.test.inter" in raw.source


def test_unisrec_columns_in_any_order_and_users_only_in_valid_or_test(tmp_path: Path) -> None:
    header = "item_id:token\tuser_id:token\titem_id_list:token_seq\n"
    prefix = write_splits(
        tmp_path,
        train="b\tu\ta\n",
        valid="c\tu\ta b\nx\tv\tw\n",
        test="d\tu\ta b c\ny\tv\tw x\nk\tt\ti j\n",
        header=header,
    )
    raw = read_unisrec_splits(prefix)
    assert raw.users == ["u", "v", "t"]
    assert raw.sequences == [["a", "b", "c", "d"], ["w", "x", "y"], ["i", "j", "k"]]


def test_unisrec_history_mismatch(tmp_path: Path) -> None:
    prefix = write_splits(
        tmp_path, train="7\ta b\tc\n7\ta\tb\n", valid="7\ta b c\td\n", test="7\ta X c d\te\n"
    )
    with pytest.raises(DataFormatError, match=r"D.test.inter, line 2: history of user '7' does not match"):
        read_unisrec_splits(prefix)


def test_unisrec_truncated_history_mismatch_in_train(tmp_path: Path) -> None:
    prefix = write_splits(
        tmp_path, train="7\tX c\td\n7\ta b\tc\n7\ta\tb\n", valid="7\tc d\te\n", test="7\td e\tf\n"
    )
    with pytest.raises(DataFormatError, match=r"D.train.inter, line 2: .*expected 'b c' before target 'd'"):
        read_unisrec_splits(prefix)


@pytest.mark.parametrize(
    ("train", "valid", "test", "match"),
    [
        (
            "7\ta\tb\n",
            "8\tx\ty\n",
            "7\ta b\tc\n8\tx y\tz\n",
            r"D.train.inter, line 2: user '7' .* no row in .*valid",
        ),
        ("7\ta\tb\n", "7\ta b\tc\n", "8\tx\ty\n", r"D.train.inter, line 2: user '7' has no row in .*test"),
        (
            "7\ta\tb\n",
            "7\ta b\tc\n7\ta b\tc\n",
            "7\ta b c\td\n",
            r"D.valid.inter, line 3: user '7' has a second row",
        ),
        (
            "7\ta\n",
            "7\ta b\tc\n",
            "7\ta b c\td\n",
            r"D.train.inter, line 2: expected .*3 tab-separated fields",
        ),
        ("", "7\ta b\tc\n", "7\ta b c\td\n", r"D.train.inter: file is empty"),
    ],
)
def test_unisrec_errors(tmp_path: Path, train: str, valid: str, test: str, match: str) -> None:
    with pytest.raises(DataFormatError, match=match):
        read_unisrec_splits(write_splits(tmp_path, train, valid, test))


def test_unisrec_missing_column(tmp_path: Path) -> None:
    prefix = write_splits(tmp_path, "7\tb\n", "7\tc\n", "7\td\n", header="user_id:token\titem_id:token\n")
    with pytest.raises(
        DataFormatError, match=r"D.train.inter, line 1: header is missing column\(s\) 'item_id_list'"
    ):
        read_unisrec_splits(prefix)


def test_unisrec_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"nope.train.inter: file not found"):
        read_unisrec_splits(tmp_path / "nope")


# --- RecBole / MMRec interactions


def test_recbole_stable_tie_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "d.inter",
        "rating:float\tuser_id:token\titem_id:token\ttimestamp:float\n"
        "5\tu1\ti1\t100\n"
        "4\tu2\ti9\t7\n"
        "3\tu1\ti2\t100\n"  # same time as i1: stays after it
        "2\tu1\ti3\t50.5\n"  # earlier time, later row: sorts first
        "1\tu1\ti4\t1e2\n",  # equal to 100 as a number: after i1 and i2
    )
    raw = read_recbole_inter(path)
    assert raw.users == ["u1", "u2"]
    assert raw.sequences == [["i3", "i1", "i2", "i4"], ["i9"]]


def test_recbole_custom_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "d.inter", "uid\tts\tiid\na\t2\tx\na\t1\ty\n")
    raw = read_recbole_inter(path, user_field="uid", item_field="iid", time_field="ts")
    assert raw.sequences == [["y", "x"]]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "user_id:token\titem_id:token\ttimestamp:float\nu\ti\t1\nu\tj\tsoon\n",
            r"d.inter, line 3: .*number.*'soon'",
        ),
        ("user_id:token\titem_id:token\ttimestamp:float\nu\ti\t1\nu\tj\tnan\n", r"d.inter, line 3: .*number"),
        ("user_id:token\titem_id:token\nu\ti\n", r"d.inter, line 1: .*'timestamp'.*\['user_id', 'item_id'\]"),
        ("user_id:token\titem_id:token\ttimestamp:float\n", r"d.inter: file is empty"),
        ("user_id:token\titem_id:token\ttimestamp:float\nu\ti\t1\t9\n", r"d.inter, line 2: expected"),
    ],
)
def test_recbole_errors(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(DataFormatError, match=match):
        read_recbole_inter(write(tmp_path, "d.inter", text))


def test_mmrec_inter(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "sports.inter",
        "userID\titemID\trating\ttimestamp\tx_label\n0\t5\t5.0\t1400000000\t0\n1\t0\t4.0\t1300000000\t0\n"
        "0\t3\t5.0\t1300000000\t1\n0\t12\t3.0\t1400000000\t2\n",
    )
    raw = read_mmrec_inter(path)
    assert raw.users == ["0", "1"]
    assert raw.sequences == [["3", "5", "12"], ["0"]]


def test_mmrec_non_integer_item(tmp_path: Path) -> None:
    path = write(tmp_path, "m.inter", "userID\titemID\ttimestamp\n0\t1\t5\n0\tB00X\t6\n")
    with pytest.raises(DataFormatError, match=r"m.inter, line 3: expected an integer >= 0 in 'itemID'"):
        read_mmrec_inter(path)


# --- Key maps


def test_key_maps(tmp_path: Path) -> None:
    datamaps = write(tmp_path, "datamaps.json", '{"item2id": {"A1": "1"}, "id2item": {"1": "A1", "2": "B2"}}')
    assert read_key_map(datamaps, "datamaps") == {"1": "A1", "2": "B2"}
    item2index = write(tmp_path, "S.item2index", "B00TNNWMXI\t0\nB00IBZE2EQ\t1\n")
    assert read_key_map(item2index, "item2index") == {"0": "B00TNNWMXI", "1": "B00IBZE2EQ"}
    mmrec = write(tmp_path, "i_id_mapping.csv", "asin\titemID\n1881509818\t0\n2094869245\t1\n")
    assert read_key_map(mmrec, "mmrec_item_map") == {"0": "1881509818", "1": "2094869245"}
    tsv = write(tmp_path, "map.tsv", "7\tKEY7\n8\tKEY8\n")
    assert read_key_map(tsv, "tsv") == {"7": "KEY7", "8": "KEY8"}


@pytest.mark.parametrize(
    ("fmt", "text", "match"),
    [
        ("tsv", "1\tA\n2\tB\n1\tC\n", r"m.txt, line 3: duplicate key '1' \(first on line 1\)"),
        ("tsv", "1\tA\n2\tA\n", r"m.txt, line 2: duplicate value 'A' \(first on line 1\)"),
        ("item2index", "A\t0\nB\n", r"m.txt, line 2: expected 'ASIN<TAB>index'"),
        ("mmrec_item_map", "asin\titem\nA\t0\n", r"m.txt, line 1: .*'itemID'"),
        ("datamaps", '{"id2user": {}}', r"m.txt: .*'id2item'"),
        ("datamaps", '{"id2item": {"1": "A",\n "1": "B"}}', r"m.txt: duplicate JSON key '1'"),
    ],
)
def test_key_map_errors(tmp_path: Path, fmt: str, text: str, match: str) -> None:
    with pytest.raises(DataFormatError, match=match):
        read_key_map(write(tmp_path, "m.txt", text), fmt)


# --- Item text and attributes


def test_item_text_formats(tmp_path: Path) -> None:
    unisrec = write(
        tmp_path, "S.text", "item_id:token\ttext:token_seq\nB01\tGlue. Tools. Gorilla. \nB02\t  Roll. \n"
    )
    assert read_item_text(unisrec, "unisrec_text") == {"B01": "Glue. Tools. Gorilla.", "B02": "Roll."}
    keyword = write(tmp_path, "kw.txt", "1881509818 ghost armorers tool 332 punch\nB0000C4LOU  jump rope \n")
    assert read_item_text(keyword, "keyword") == {
        "1881509818": "ghost armorers tool 332 punch",
        "B0000C4LOU": "jump rope",
    }
    tsv = write(tmp_path, "t.tsv", "K1\tsome text\nK2\t\n")
    assert read_item_text(tsv, "tsv") == {"K1": "some text", "K2": ""}


@pytest.mark.parametrize(
    ("fmt", "text", "match"),
    [
        ("keyword", "A one\nB\n", r"t.txt, line 2: expected 'KEY free text ...'"),
        ("keyword", "A one\nB two\nA three\n", r"t.txt, line 3: duplicate key 'A' \(first on line 1\)"),
        ("tsv", "A\tone\nB two\n", r"t.txt, line 2: expected 'KEY<TAB>text'"),
        ("unisrec_text", "item_id:token\ttext:token_seq\n", r"t.txt: file is empty"),
    ],
)
def test_item_text_errors(tmp_path: Path, fmt: str, text: str, match: str) -> None:
    with pytest.raises(DataFormatError, match=match):
        read_item_text(write(tmp_path, "t.txt", text), fmt)


def test_item_attributes(tmp_path: Path) -> None:
    path = write(tmp_path, "x_item2attributes.json", '{"1": [1, 2, 3], "156": [7, "b"], "9": []}')
    assert read_item_attributes(path) == {"1": ["1", "2", "3"], "156": ["7", "b"], "9": []}


def test_item_attributes_errors(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"a.json, line 3: invalid JSON"):
        read_item_attributes(write(tmp_path, "a.json", '{\n"1": [1],\n"2": [2,,]}'))
    with pytest.raises(DataFormatError, match=r"a.json: item '2': expected a list of attribute ids"):
        read_item_attributes(write(tmp_path, "a.json", '{"1": [1], "2": {"x": 1}}'))
    with pytest.raises(DataFormatError, match=r"a.json: item '2'"):
        read_item_attributes(write(tmp_path, "a.json", '{"1": [1], "2": [1.5]}'))


# --- Dense features


def test_dense_features_keys(tmp_path: Path) -> None:
    matrix = np.arange(6, dtype=np.float64).reshape(3, 2)
    np.save(tmp_path / "f.npy", matrix)
    feats, keys = read_dense_features(tmp_path / "f.npy")
    assert feats.dtype == np.float32 and np.array_equal(feats, matrix) and keys == ["0", "1", "2"]
    _, keys = read_dense_features(tmp_path / "f.npy", row_keys=["a", "b", "c"])
    assert keys == ["a", "b", "c"]
    row_map = write(tmp_path, "rows.tsv", "x\t2\ny\t0\nz\t1\n")
    _, keys = read_dense_features(tmp_path / "f.npy", row_map_path=row_map, row_map_fmt="tsv")
    assert keys == ["y", "z", "x"]
    mmrec = write(tmp_path, "i_id_mapping.csv", "asin\titemID\nB2\t2\nB0\t0\nB1\t1\n")
    _, keys = read_dense_features(tmp_path / "f.npy", row_map_path=mmrec, row_map_fmt="mmrec_item_map")
    assert keys == ["B0", "B1", "B2"]


def test_dense_features_errors(tmp_path: Path) -> None:
    bad = np.ones((3, 2), dtype=np.float32)
    bad[1, 1] = np.inf
    bad[2, 0] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(DataFormatError, match=r"bad.npy: row 1 \(key 'b'\) has non-finite values"):
        read_dense_features(tmp_path / "bad.npy", row_keys=["a", "b", "c"])
    np.save(tmp_path / "v.npy", np.ones(4))
    with pytest.raises(DataFormatError, match=r"v.npy: expected a 2-D matrix .*shape \(4,\)"):
        read_dense_features(tmp_path / "v.npy")
    with pytest.raises(DataFormatError, match=r"junk.npy: cannot load"):
        read_dense_features(write(tmp_path, "junk.npy", "not an array"))
    with pytest.raises(DataFormatError, match=r"none.npy: file not found"):
        read_dense_features(tmp_path / "none.npy")
    np.save(tmp_path / "ok.npy", np.ones((3, 2)))
    short_map = write(tmp_path, "rows.tsv", "x\t2\ny\t0\n")
    with pytest.raises(DataFormatError, match=r"rows.tsv: maps 2 items to 3 rows; row 1 has none"):
        read_dense_features(tmp_path / "ok.npy", row_map_path=short_map, row_map_fmt="tsv")


def test_unknown_format_names_the_choices(tmp_path: Path) -> None:
    path = write(tmp_path, "m.txt", "1\tA\n")
    with pytest.raises(ConfigError, match=r"unknown key map format 'csv'; expected one of"):
        read_key_map(path, "csv")
    with pytest.raises(ConfigError, match=r"unknown item text format 'json'"):
        read_item_text(path, "json")


# --- Control characters in tokens, hostile JSON and .npy headers

CONTROL = ["\x00", "\x1b", "\x7f", "\x9b"]  # NUL, ESC, DEL, C1 CSI


@pytest.mark.parametrize("char", CONTROL)
def test_control_characters_in_tokens_are_refused_naming_file_and_line(tmp_path: Path, char: str) -> None:
    esc = f"U+{ord(char):04X}"
    cases = [
        ("s.txt", f"u1 1 2 3\nu2 1 a{char}b 3\n", read_s3rec_sequences, "s.txt, line 2: item token 'a"),
        ("s.txt", f"u1 1 2 3\nu{char} 1 2\n", read_s3rec_sequences, "s.txt, line 2: user token 'u"),
        (
            "r.inter",
            f"user_id:token\titem_id:token\ttimestamp:float\nu1\t1\t1\nu1\tx{char}\t2\n",
            read_recbole_inter,
            "r.inter, line 3: 'item_id' value 'x",
        ),
        (
            "m.tsv",
            f"t1\tA1\nt2\tA{char}2\n",
            lambda p: read_key_map(p, "tsv"),
            "m.tsv, line 2: 'key' value 'A",
        ),
        (
            "k.txt",
            f"A1 a title\nA{char} another\n",
            lambda p: read_item_text(p, "keyword"),
            "k.txt, line 2: item key",
        ),
    ]
    for name, text, reader, fragment in cases:
        with pytest.raises(DataFormatError) as info:
            reader(write(tmp_path, name, text))
        message = str(info.value)
        assert fragment in message and f"contains control character {esc}" in message, message
        assert message.splitlines() == [message]  # escaped: the raw character never reaches a terminal
    unisrec = write_splits(tmp_path, f"u1\t1\t2{char}\n", "u1\t1 2\t3\n", "u1\t1 2 3\t4\n")
    with pytest.raises(
        DataFormatError, match=rf"D.train.inter, line 2: 'item_id' value '2.*U\+{ord(char):04X}"
    ):
        read_unisrec_splits(unisrec)
    datamaps = write(tmp_path, "dm.json", '{"id2item": {"1": "A\\u001b[31m"}}')
    with pytest.raises(DataFormatError, match=r"dm.json: field 'id2item', entry '1': item key 'A\\x1b\[31m'"):
        read_key_map(datamaps, "datamaps")


def test_free_text_may_hold_control_characters(tmp_path: Path) -> None:
    texts = read_item_text(write(tmp_path, "t.tsv", "A1\ta\x1btitle\n"), "tsv")
    assert texts == {"A1": "a\x1btitle"}  # the encoder reads text; only tokens are refused


def test_hostile_json_is_a_data_error(tmp_path: Path) -> None:
    deep = write(tmp_path, "deep.json", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataFormatError, match=r"deep.json: invalid JSON: nested too deeply"):
        read_item_attributes(deep)
    big = write(tmp_path, "big.json", '{"1": [' + "9" * 5000 + "]}")
    with pytest.raises(DataFormatError, match=r"big.json: invalid JSON: a number with too many digits"):
        read_item_attributes(big)


def test_npy_files_that_are_not_plain_numeric_arrays_are_refused(tmp_path: Path) -> None:
    import io
    import pickle

    np.save(tmp_path / "obj.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    with pytest.raises(DataFormatError, match=r"obj.npy: holds Python objects .* refused"):
        read_dense_features(tmp_path / "obj.npy")
    (tmp_path / "p.npy").write_bytes(pickle.dumps({"rows": [[1.0]]}))
    with pytest.raises(DataFormatError, match=r"p.npy: cannot load as a .npy array"):
        read_dense_features(tmp_path / "p.npy")
    buf = io.BytesIO()
    np.save(buf, np.ones((2, 3), dtype=np.float32))
    header_says_more = buf.getvalue().replace(b"(2, 3)", b"(2000000000, 3)")
    (tmp_path / "h.npy").write_bytes(header_says_more)
    with pytest.raises(
        DataFormatError,
        match=r"h.npy: .*header says shape \(2000000000, 3\) of float32 \(24000000000 bytes\), the file holds \d+ bytes",
    ):
        read_dense_features(tmp_path / "h.npy")  # refused before numpy allocates 24 GB
    np.savez(tmp_path / "z.npz", a=np.ones((2, 2)))
    with pytest.raises(DataFormatError, match=r"got an .npz archive"):
        read_dense_features(tmp_path / "z.npz")
