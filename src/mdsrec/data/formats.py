"""Readers for public recommendation data formats.

Interaction (sequence) formats, each returning `RawSequences` (external tokens, chronological per user):
- S3-Rec / P5 sequence files: `user item item ...` per line (`read_s3rec_sequences`).
- UniSRec / RecBole split files `{prefix}.{train,valid,test}.inter` with `user_id`, `item_id_list`, `item_id`
  columns; full sequences are rebuilt and every row is checked against them (`read_unisrec_splits`).
- RecBole atomic `.inter` files with user, item and timestamp columns (`read_recbole_inter`).
- MMRec `.inter` files with `userID`, `itemID`, `timestamp` columns (`read_mmrec_inter`).

Item side:
- Token -> external key maps: P5 `datamaps.json`, UniSRec `.item2index`, MMRec `i_id_mapping.csv`, plain TSV
  (`read_key_map`).
- Item text: UniSRec `.text`, IDGenRec keyword files, plain TSV (`read_item_text`).
- S3-Rec `*_item2attributes.json` (`read_item_attributes`).
- Dense `.npy` feature matrices, rows keyed by a row map or by row number (`read_dense_features`).

Every problem with an input file raises `DataFormatError` naming the file, the 1-based line (or the JSON field)
where it applies, and what was expected. Tokens (user and item tokens, external keys) must be printable: a control
character (C0, DEL, C1) or a line or paragraph separator in one is refused, as it would corrupt users.tsv/items.tsv
or a terminal that shows it; free text (item text) is not checked. Interactions with equal timestamps keep their file order (sort by time, then
original row).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from mdsrec.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)

KEY_MAP_FORMATS = ("datamaps", "item2index", "mmrec_item_map", "tsv")
ITEM_TEXT_FORMATS = ("unisrec_text", "keyword", "tsv")
ROW_MAP_FORMATS = ("tsv", "mmrec_item_map")


@dataclass
class RawSequences:
    users: list[str]  # external user tokens, one per sequence, in first-appearance order of the file
    sequences: list[list[str]]  # item tokens per user, chronological
    source: str  # human-readable description of where they came from (paths)


# ----------------------------------------------------------------------------------------------------
# Shared low-level readers


def _open_binary(path: str | Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DataFormatError(path, "file not found") from None
    except OSError as e:
        raise DataFormatError(path, f"cannot read file ({e.strerror})") from None


# C0 controls, DEL, C1 controls (Unicode category Cc) and the line/paragraph separators
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def check_token(path: str | Path, what: str, value: str, line: int | None = None, field: str = "") -> str:
    """``value`` when it is not empty and holds no control character; else a DataFormatError naming the file and the
    line (or ``field``), the value (escaped) and the character."""
    if not value:
        raise DataFormatError(path, f"{field + ': ' if field else ''}{what} is empty", line=line)
    hit = CONTROL_CHARACTERS.search(value)
    if hit is not None:
        where = f"{field}: " if field else ""
        raise DataFormatError(
            path,
            f"{where}{what} {value!r} contains control character U+{ord(hit.group()):04X}; expected printable text",
            line=line,
        )
    return value


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without newline) for every non-blank line of a UTF-8 text file.

    Trailing blank lines are ignored; a blank line followed by more content is an error naming it. A missing
    file, bytes that are not UTF-8 and a file without any content raise DataFormatError. A leading BOM is
    dropped.
    """
    blank_since: int | None = None
    seen = False
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataFormatError(path, f"not valid UTF-8 (byte {e.start + 1})", line=lineno) from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                blank_since = lineno if blank_since is None else blank_since
                continue
            if blank_since is not None:
                raise DataFormatError(path, "blank line before the end of the file", line=blank_since)
            seen = True
            yield lineno, line
    if not seen:
        raise DataFormatError(path, "file is empty")


def _read_json(path: str | Path) -> Any:
    with _open_binary(path) as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataFormatError(path, "not valid UTF-8", line=data.count(b"\n", 0, e.start) + 1) from None
    if not text.strip():
        raise DataFormatError(path, "file is empty")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise DataFormatError(path, f"duplicate JSON key {key!r}")
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as e:
        raise DataFormatError(path, f"invalid JSON: {e.msg} (column {e.colno})", line=e.lineno) from None
    except RecursionError:
        raise DataFormatError(path, "invalid JSON: nested too deeply") from None
    except ValueError:  # an integer literal beyond Python's digit limit
        raise DataFormatError(path, "invalid JSON: a number with too many digits to read") from None


def _header(path: str | Path, lines: Iterator[tuple[int, str]], required: list[str]) -> tuple[int, list[int]]:
    """Read a header line; return its number of columns and the index of each required column.

    Columns are matched by the name before ':' (RecBole `name:type`), so their order does not matter.
    """
    lineno, line = next(lines)
    names = [f.strip().split(":", 1)[0] for f in line.split("\t")]
    for name in names:
        if names.count(name) > 1:
            raise DataFormatError(path, f"header has column {name!r} twice", line=lineno)
    missing = [r for r in required if r not in names]
    if missing:
        text = ", ".join(map(repr, missing))
        raise DataFormatError(path, f"header is missing column(s) {text}; it has {names}", lineno)
    return len(names), [names.index(r) for r in required]


def _rows(
    path: str | Path,
    columns: list[str],
    header: bool,
    may_be_empty: tuple[str, ...] = (),
    free_text: tuple[str, ...] = (),
) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, stripped value of each column) for the data rows of a tab-separated file.

    With header=True the columns are found by name in the header and extra columns are ignored; without, the
    file must have exactly these columns. Values must be non-empty unless their column is in `may_be_empty`, and
    hold no control character (``check_token``) unless their column is in `free_text`.
    """
    lines = iter_lines(path)
    if header:
        ncols, index = _header(path, lines, columns)
        expected = f"{ncols} tab-separated fields as in the header"
    else:
        ncols, index = len(columns), list(range(len(columns)))
        expected = f"'{'<TAB>'.join(columns)}' ({ncols} tab-separated fields)"
    found = False
    for lineno, line in lines:
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) != ncols:
            raise DataFormatError(path, f"expected {expected}, got {len(fields)}", line=lineno)
        values = [fields[i] for i in index]
        for column, value in zip(columns, values, strict=True):
            if not value and column not in may_be_empty:
                raise DataFormatError(path, f"expected a non-empty {column!r}", line=lineno)
            if value and column not in free_text:
                check_token(path, f"{column!r} value", value, lineno)
        found = True
        yield lineno, values
    if not found:
        raise DataFormatError(path, "file is empty: a header but no data rows")


def _is_id(value: object) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _short(tokens: Sequence[str], n: int = 8) -> str:
    return " ".join(tokens) if len(tokens) <= n else "... " + " ".join(tokens[-n:])


# ----------------------------------------------------------------------------------------------------
# Interaction formats


def read_s3rec_sequences(path: str | Path) -> RawSequences:
    """S3-Rec / P5 file: one user per line, `user item item ...` (whitespace-separated, chronological)."""
    users: list[str] = []
    sequences: list[list[str]] = []
    first_line: dict[str, int] = {}
    for lineno, line in iter_lines(path):
        tokens = line.split()
        if len(tokens) < 2:
            expected = "'user item [item ...]' separated by spaces"
            raise DataFormatError(path, f"expected {expected}, got {len(tokens)} field", line=lineno)
        user = check_token(path, "user token", tokens[0], lineno)
        for token in tokens[1:]:
            check_token(path, "item token", token, lineno)
        if user in first_line:
            raise DataFormatError(path, f"duplicate user {user!r} (first on line {first_line[user]})", lineno)
        first_line[user] = lineno
        users.append(user)
        sequences.append(tokens[1:])
    logger.info("read %d users, %d interactions from %s", len(users), sum(map(len, sequences)), path)
    return RawSequences(users, sequences, f"S3-Rec sequences {path}")


class _SplitRow(NamedTuple):
    path: Path
    line: int
    user: str
    history: list[str]
    target: str


def _read_split_rows(path: Path) -> list[_SplitRow]:
    rows = []
    columns = ["user_id", "item_id_list", "item_id"]
    for lineno, (user, history, target) in _rows(path, columns, header=True, may_be_empty=("item_id_list",)):
        if len(target.split()) != 1:
            raise DataFormatError(path, f"expected one item in 'item_id', got {target!r}", line=lineno)
        rows.append(_SplitRow(path, lineno, user, history.split(), target))
    return rows


def _one_row_per_user(rows: list[_SplitRow]) -> dict[str, _SplitRow]:
    out: dict[str, _SplitRow] = {}
    for row in rows:
        if row.user in out:
            message = f"user {row.user!r} has a second row (first on line {out[row.user].line})"
            raise DataFormatError(row.path, message, line=row.line)
        out[row.user] = row
    return out


def read_unisrec_splits(prefix: str | Path) -> RawSequences:
    """UniSRec / RecBole leave-one-out split files `{prefix}.train.inter`, `.valid.inter`, `.test.inter`.

    Per user: its train rows in reverse file order give the sequence (first row's history, then each row's
    target), followed by the valid target and the test target. Every row's history must then equal the items
    right before its target in the rebuilt sequence (histories may be truncated, e.g. to the last 50 items).
    Users appear in train-file order; users found only in valid/test follow, built from their own rows.
    """
    train_path, valid_path, test_path = (Path(f"{prefix}.{s}.inter") for s in ("train", "valid", "test"))
    train: dict[str, list[_SplitRow]] = {}
    for row in _read_split_rows(train_path):
        train.setdefault(row.user, []).append(row)
    valid = _one_row_per_user(_read_split_rows(valid_path))
    test = _one_row_per_user(_read_split_rows(test_path))

    users = list(dict.fromkeys([*train, *valid, *test]))  # train order, then users seen only in valid/test
    sequences: list[list[str]] = []
    placed: list[tuple[_SplitRow, list[str], int]] = []  # (row, its user's sequence, position of its target)
    for user in users:
        rows = list(reversed(train.get(user, [])))
        if user in valid:
            rows.append(valid[user])
        elif user in train:
            message = f"user {user!r} has train rows but no row in {valid_path}"
            raise DataFormatError(train_path, message, line=train[user][0].line)
        if user not in test:
            first = train[user][0] if user in train else rows[0]
            raise DataFormatError(first.path, f"user {user!r} has no row in {test_path}", line=first.line)
        rows.append(test[user])
        seq = list(rows[0].history)
        for row in rows:
            placed.append((row, seq, len(seq)))
            seq.append(row.target)
        sequences.append(seq)

    for row, seq, pos in placed:
        n = len(row.history)
        # An empty history is consistent only with the first item of a sequence.
        if n > pos or seq[pos - n : pos] != row.history or (n == 0 and pos > 0):
            expected = seq[max(pos - max(n, 1), 0) : pos]
            raise DataFormatError(
                row.path,
                f"history of user {row.user!r} does not match the sequence rebuilt from the split files: "
                f"expected '{_short(expected)}' before target {row.target!r}, got '{_short(row.history)}'",
                line=row.line,
            )
    logger.info("rebuilt %d users, %d interactions from %s.*", len(users), sum(map(len, sequences)), prefix)
    return RawSequences(users, sequences, f"UniSRec splits {train_path}, {valid_path}, {test_path}")


def _read_timed_interactions(
    path: str | Path, user_field: str, item_field: str, time_field: str, integer_items: bool, source: str
) -> RawSequences:
    """Tab-separated interactions with a header; each user's items sorted by (time, original row)."""
    per_user: dict[str, list[tuple[float, int, str]]] = {}
    rows = _rows(path, [user_field, item_field, time_field], header=True)
    for row_index, (lineno, (user, item, time_text)) in enumerate(rows):
        if integer_items and not (item.isascii() and item.isdigit()):
            raise DataFormatError(path, f"expected an integer >= 0 in {item_field!r}, got {item!r}", lineno)
        try:
            time = float(time_text)
        except ValueError:
            time = math.nan
        if not math.isfinite(time):
            raise DataFormatError(path, f"expected a number in {time_field!r}, got {time_text!r}", lineno)
        per_user.setdefault(user, []).append((time, row_index, item))
    users = list(per_user)
    # (time, original row) is unique per interaction, so ties in time keep file order.
    sequences = [[item for _, _, item in sorted(per_user[u], key=lambda r: (r[0], r[1]))] for u in users]
    logger.info("read %d users, %d interactions from %s", len(users), sum(map(len, sequences)), path)
    return RawSequences(users, sequences, f"{source} {path}")


def read_recbole_inter(
    path: str | Path, user_field: str = "user_id", item_field: str = "item_id", time_field: str = "timestamp"
) -> RawSequences:
    """RecBole atomic `.inter` file (tab-separated, `name:type` header, extra columns ignored)."""
    return _read_timed_interactions(path, user_field, item_field, time_field, False, "RecBole atomic file")


def read_mmrec_inter(path: str | Path) -> RawSequences:
    """MMRec `.inter` file (`userID`, `itemID` (0-based feature row), `timestamp`; extra columns ignored)."""
    return _read_timed_interactions(path, "userID", "itemID", "timestamp", True, "MMRec interactions")


# ----------------------------------------------------------------------------------------------------
# Item side


def _unique_map(
    path: str | Path, pairs: list[tuple[int | None, str, str]], unique_values: bool
) -> dict[str, str]:
    """Build a dict from (line, key, value) triples; a duplicate key (or value, if asked) names both lines."""

    def duplicate(kind: str, token: str, first: int | None, lineno: int | None) -> DataFormatError:
        where = f" (first on line {first})" if first is not None else ""
        return DataFormatError(path, f"duplicate {kind} {token!r}{where}", line=lineno)

    out: dict[str, str] = {}
    key_line: dict[str, int | None] = {}
    value_line: dict[str, int | None] = {}
    for lineno, key, value in pairs:
        if key in key_line:
            raise duplicate("key", key, key_line[key], lineno)
        if unique_values and value in value_line:
            raise duplicate("value", value, value_line[value], lineno)
        key_line[key] = value_line[value] = lineno
        out[key] = value
    return out


def read_key_map(path: str | Path, fmt: str) -> dict[str, str]:
    """Map item token (as in the sequence file) -> external key (e.g. ASIN).

    fmt: "datamaps" (P5 datamaps.json, its "id2item"), "item2index" (UniSRec `ASIN<TAB>index`, no header),
    "mmrec_item_map" (MMRec i_id_mapping.csv, header `asin<TAB>itemID`), "tsv" (`token<TAB>key`, no header).
    """
    pairs: list[tuple[int | None, str, str]]
    if fmt == "datamaps":
        data = _read_json(path)
        id2item = data.get("id2item") if isinstance(data, dict) else None
        if not isinstance(id2item, dict):
            raise DataFormatError(path, "expected a JSON object with field 'id2item' (item token -> ASIN)")
        if not all(_is_id(v) for v in id2item.values()):
            raise DataFormatError(path, "expected every value of field 'id2item' to be a string (ASIN)")
        pairs = [(None, str(k), str(v)) for k, v in id2item.items()]
        for _, k, v in pairs:
            check_token(path, "item token", k, field="field 'id2item'")
            check_token(path, "item key", v, field=f"field 'id2item', entry {k!r}")
    elif fmt == "item2index":
        pairs = [(n, index, asin) for n, (asin, index) in _rows(path, ["ASIN", "index"], header=False)]
    elif fmt == "tsv":
        pairs = [(n, token, key) for n, (token, key) in _rows(path, ["token", "key"], header=False)]
    elif fmt == "mmrec_item_map":
        pairs = [(n, item, asin) for n, (asin, item) in _rows(path, ["asin", "itemID"], header=True)]
    else:
        raise ConfigError(f"unknown key map format {fmt!r}; expected one of {KEY_MAP_FORMATS}")
    return _unique_map(path, pairs, unique_values=True)


def read_item_text(path: str | Path, fmt: str) -> dict[str, str]:
    """Map item key -> text (stripped).

    fmt: "unisrec_text" (header `item_id:token<TAB>text:token_seq`), "keyword" (IDGenRec `KEY free text...`;
    a line without text is an error), "tsv" (`KEY<TAB>text`, no header). In the tab formats an empty text is
    kept as "".
    """
    pairs: list[tuple[int | None, str, str]] = []
    if fmt == "keyword":
        for lineno, line in iter_lines(path):
            parts = line.split(None, 1)  # key = first whitespace-separated token, text = the rest
            if len(parts) < 2:
                raise DataFormatError(path, "expected 'KEY free text ...', got no text after the key", lineno)
            pairs.append((lineno, check_token(path, "item key", parts[0], lineno), parts[1].strip()))
    elif fmt in ("unisrec_text", "tsv"):
        header = fmt == "unisrec_text"
        columns = ["item_id", "text"] if header else ["KEY", "text"]
        rows = _rows(path, columns, header, may_be_empty=("text",), free_text=("text",))
        pairs = [(n, key, text) for n, (key, text) in rows]
    else:
        raise ConfigError(f"unknown item text format {fmt!r}; expected one of {ITEM_TEXT_FORMATS}")
    return _unique_map(path, pairs, unique_values=False)


def read_item_attributes(path: str | Path) -> dict[str, list[str]]:
    """S3-Rec `*_item2attributes.json`: `{"item token": [attribute id, ...]}`; ids returned as strings."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DataFormatError(path, f"expected a JSON object {{item: [ids]}}, got {type(data).__name__}")
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        if not isinstance(value, list) or not all(_is_id(a) for a in value):
            raise DataFormatError(path, f"item {key!r}: expected a list of attribute ids (ints or strings)")
        out[key] = [str(a) for a in value]
    return out


def _keys_from_row_map(path: str | Path, fmt: str | None, n: int) -> list[str]:
    """Key of each of the n rows of a feature matrix, from a row-map file (see read_dense_features)."""
    if fmt not in ROW_MAP_FORMATS:
        raise ConfigError(f"unknown row map format {fmt!r}; expected one of {ROW_MAP_FORMATS}")
    mapping = read_key_map(path, fmt)
    # tsv: token -> row; mmrec_item_map: itemID (= row) -> asin. Normalise to row -> key.
    row_to_key = {v: k for k, v in mapping.items()} if fmt == "tsv" else mapping
    keys: list[str | None] = [None] * n
    for text, key in row_to_key.items():
        row = int(text) if text.isascii() and text.isdigit() else n
        if row >= n:
            raise DataFormatError(path, f"row {text!r} of {key!r} is not an integer in 0..{n - 1}")
        if keys[row] is not None:
            raise DataFormatError(path, f"row {text!r} is given to both {keys[row]!r} and {key!r}")
        keys[row] = key
    if None in keys:
        raise DataFormatError(
            path, f"maps {len(row_to_key)} items to {n} rows; row {keys.index(None)} has none"
        )
    return [k for k in keys if k is not None]


def check_npy_layout(path: str | Path) -> None:
    """Read a .npy file's header and check it against the file's size before the array is loaded: the header must
    describe an array without Python objects (those need pickle: refused) whose data is exactly the rest of the
    file, so a damaged or hostile header never makes numpy allocate more than the file holds."""
    with _open_binary(path) as f:
        start = f.read(4)
        if start == b"PK\x03\x04":
            raise DataFormatError(path, "expected a single .npy array, got an .npz archive")
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"format version {version[0]}.{version[1]} is not supported (1.0 or 2.0)")
        except Exception as e:  # noqa: BLE001 - numpy's header parser raises several kinds for a bad header
            why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise DataFormatError(path, f"cannot load as a .npy array ({why})") from None
        data_bytes = os.fstat(f.fileno()).st_size - f.tell()
    if dtype.hasobject:
        raise DataFormatError(
            path, f"holds Python objects (dtype {dtype}), which only pickle can read; refused"
        )
    need = math.prod(shape) * dtype.itemsize
    if data_bytes != need:
        raise DataFormatError(
            path,
            f"cannot load as a .npy array: its header says shape {shape} of {dtype} ({need} bytes), the file holds "
            f"{data_bytes} bytes of data",
        )


def read_dense_features(
    path: str | Path,
    row_keys: list[str] | None = None,
    row_map_path: str | Path | None = None,
    row_map_fmt: str | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Load a 2-D `.npy` feature matrix; return it as float32 with the key of each row.

    Row keys come from `row_keys`, or from a row-map file mapping item token -> row index (`row_map_fmt`
    "tsv": `token<TAB>row`, key = token; "mmrec_item_map": MMRec i_id_mapping.csv, row = itemID, key = asin),
    or default to "0", "1", ... (MMRec convention: row i is itemID i). Every row must get exactly one key.
    """
    if row_keys is not None and row_map_path is not None:
        raise ValueError("give row_keys or row_map_path, not both")
    check_npy_layout(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataFormatError(path, "file not found") from None
    except (OSError, ValueError, EOFError) as e:
        raise DataFormatError(path, f"cannot load as a .npy array ({e})") from None
    if not isinstance(loaded, np.ndarray):
        raise DataFormatError(path, "expected a single .npy array, got an .npz archive")
    if loaded.ndim != 2:
        raise DataFormatError(path, f"expected a 2-D matrix (items x features), got shape {loaded.shape}")
    if not (np.issubdtype(loaded.dtype, np.floating) or np.issubdtype(loaded.dtype, np.integer)):
        raise DataFormatError(path, f"expected a numeric matrix, got dtype {loaded.dtype}")
    matrix = loaded.astype(np.float32)
    n = matrix.shape[0]

    if row_map_path is not None:
        row_keys = _keys_from_row_map(row_map_path, row_map_fmt, n)
    elif row_keys is None:
        row_keys = [str(i) for i in range(n)]
    elif len(row_keys) != n:
        raise DataFormatError(path, f"expected {len(row_keys)} rows (one per key), got {n}")

    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))  # after the cast, so float32 overflow counts too
    if bad.size:
        message = f"row {bad[0]} (key {row_keys[bad[0]]!r}) has non-finite values ({bad.size} such rows)"
        raise DataFormatError(path, message)
    return matrix, list(row_keys)
