"""Property-based fuzzing (hypothesis) of every reader of user input: the four sequence formats, item maps, item
text, attribute JSON, dense .npy, spec YAML, session JSON lines, --candidates and --users-file files, and prepare
end to end.

Each property writes a generated file -- arbitrary bytes, a valid file of the format, or a valid file with a few
byte edits (control bytes, broken UTF-8, line breaks, deletions) -- and calls the reader. Two outcomes pass: a
correct result (checked against an oracle where one is cheap, else against the invariants every result has) or an
``MdsrecError`` (``DataFormatError``, ``ConfigError``) whose message is one line naming the file. Any other
exception fails, and so does a reader that runs longer than ``TIME_LIMIT`` seconds (a hang) or a prepare that
leaves a half-written output.

The ``ci`` profile (loaded by default) keeps every property to a few dozen derandomized examples;
``benchmarks/fuzz_readers.py`` runs the same properties with more seeded examples and counts them (``OUTCOMES``).
"""

from __future__ import annotations

import atexit
import functools
import io
import json
import os
import pickle
import re
import shutil
import signal
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdsrec.data import formats
from mdsrec.data.prepare import prepare
from mdsrec.data.processed import load_processed
from mdsrec.data.spec import DatasetSpec, load_spec
from mdsrec.errors import MdsrecError

T = TypeVar("T")

settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,  # a loaded CI machine; hangs are caught by TIME_LIMIT instead
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.load_profile(os.environ.get("MDSREC_HYPOTHESIS_PROFILE", "ci"))

TIME_LIMIT = 20.0  # seconds one reader call may take before it counts as a hang
OUTCOMES: Counter[tuple[str, str]] = Counter()  # (reader, "ok" | "error") -> examples
COLLECT = False  # benchmarks/fuzz_readers.py: count other outcomes in FAILURES and go on, instead of failing
FAILURES: Counter[tuple[str, str]] = Counter()  # (reader, describe(exception)) -> examples
SAMPLES: dict[tuple[str, str], str] = {}  # (reader, describe(exception)) -> the first one's message


# ---------------------------------------------------------------------------------------------------------------
# The oracle of every property: a correct result or one clean error line naming the file
# ---------------------------------------------------------------------------------------------------------------


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    def hang(signum: int, frame: Any) -> None:
        raise TimeoutError(f"reader still running after {seconds}s (a hang)")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(
    reader: str,
    path: Path,
    call: Callable[[], T],
    check: Callable[[T], None] = lambda r: None,
    after_error: Callable[[], None] = lambda: None,
) -> None:
    """Run ``call``: its result must pass ``check``; an MdsrecError must be one line naming ``path`` (and pass
    ``after_error``). With COLLECT any other outcome is counted in FAILURES instead of raised."""
    try:
        try:
            with _time_limit(TIME_LIMIT):
                result = call()
        except MdsrecError as e:
            message = str(e)
            assert message.splitlines() == [message], f"error is not one line: {message!r}"
            assert path.name in message, f"error does not name {path.name}: {message!r}"
            after_error()
            OUTCOMES[reader, "error"] += 1
            return
        check(result)
        OUTCOMES[reader, "ok"] += 1
    except Exception as e:
        if not COLLECT:
            raise
        FAILURES[reader, describe(e)] += 1
        SAMPLES.setdefault((reader, describe(e)), (str(e).strip().splitlines() or [""])[0][:150])


def describe(e: BaseException) -> str:
    """A failure's kind, the same for every example that hits it: the exception and where it was raised (the last
    frame in mdsrec or in this file), and for a failed check of this file which check it was."""
    frames = [
        f for f in traceback.extract_tb(e.__traceback__) if "mdsrec" in f.filename or "fuzz" in f.filename
    ]
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    check = (str(e).strip().splitlines() or [""])[0].split(":", 1)[0] if isinstance(e, AssertionError) else ""
    return f"{type(e).__name__} at {where}" + (f" ({check})" if check else "")


CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0, DEL, C1, line/paragraph separators


def printable(token: str) -> bool:
    return bool(token) and CONTROL.search(token) is None


# ---------------------------------------------------------------------------------------------------------------
# Strategies: tokens, byte edits, files
# ---------------------------------------------------------------------------------------------------------------

NASTY = ["\x00", "a\x1bb", "\x1b[31m", "a\x85b", "a\u2028b", "z\x7f", "\x9b", "x\ty", "x y", "", "é", "#c"]
TOKENS = st.one_of(
    st.sampled_from(["u1", "u2", "1", "2", "3", "10", "007", "A1", "B0", "-1", "1e3", "nan", *NASTY]),
    st.text(max_size=4),
)
# tokens without whitespace or control characters (valid in every format)
CLEAN = st.one_of(
    st.sampled_from(["1", "2", "3", "10", "A1", "B0", "é"]),
    st.text(
        alphabet=st.characters(blacklist_categories=("Z", "Cc", "Cs"), blacklist_characters="#"),
        min_size=1,
        max_size=3,
    ),
)
MIXED = st.one_of(CLEAN, CLEAN, CLEAN, TOKENS)  # mostly valid tokens, some hostile ones
SPECIAL_BYTES = [
    b"\x00", b"\x1b", b"\xff", b"\xc3", b"\r", b"\n", b"\t", b"\r\n", b"\n\n", b" ",
    b"\xe2\x80\xa8", b"\xc2\x85", b"\xef\xbb\xbf", b'"', b"{", b"[", b"]", b",", b":", b"9" * 12,
]  # fmt: skip
EDITS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete", "repeat"]),
        st.integers(0, 1 << 16),
        st.one_of(st.sampled_from(SPECIAL_BYTES), st.binary(min_size=1, max_size=3)),
    ),
    min_size=1,
    max_size=3,
)


def mutate(data: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    """Apply byte edits: flip a byte, insert bytes, delete a span, repeat the preceding bytes."""
    b = bytearray(data)
    for kind, pos, chunk in edits:
        i = pos % (len(b) + 1)
        if kind == "insert":
            b[i:i] = chunk
        elif not b:
            continue
        elif kind == "flip":
            b[i % len(b)] ^= chunk[0] or 0xFF
        elif kind == "delete":
            del b[i : i + len(chunk)]
        else:
            b[i:i] = b[max(0, i - 16) : i]
    return bytes(b)


def variants(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[tuple[bytes, bool]]:
    """(file bytes, whether they are the unedited valid file): valid, valid with edits, or arbitrary bytes."""
    return st.one_of(
        valid.map(lambda b: (b, True)),
        st.builds(mutate, valid, EDITS).map(lambda b: (b, False)),
        st.binary(max_size=200).map(lambda b: (b, False)),
    )


def lines(rows: list[str], nl: str, final: bool) -> bytes:
    return (nl.join(rows) + (nl if final and rows else "")).encode("utf-8")


NEWLINE = st.sampled_from(["\n", "\r\n"])


def decoded_lines(data: bytes) -> list[str]:
    """The non-blank lines as formats.iter_lines sees them (split on LF, CR LF stripped, BOM dropped)."""
    out = []
    for n, raw in enumerate(data.split(b"\n")):
        line = raw.decode("utf-8").rstrip("\r\n")
        out.append(line.removeprefix("\ufeff") if n == 0 else line)
    return [line for line in out if line.strip()]


# ---------------------------------------------------------------------------------------------------------------
# Sequence formats
# ---------------------------------------------------------------------------------------------------------------


@st.composite
def s3rec_files(draw: st.DrawFn) -> bytes:
    rows = draw(st.lists(st.lists(MIXED, min_size=0, max_size=5), min_size=1, max_size=6))
    users = [
        draw(st.one_of(st.just(f"u{i}"), st.just(f"u{i}"), st.just(f"u{i}"), MIXED)) for i in range(len(rows))
    ]
    sep = draw(st.sampled_from([" ", "  ", "\t", " \t "]))
    return lines(
        [sep.join([u, *r]) for u, r in zip(users, rows, strict=True)], draw(NEWLINE), draw(st.booleans())
    )


def check_sequences(raw: formats.RawSequences) -> None:
    assert len(raw.users) == len(raw.sequences) == len(set(raw.users)), "users not one per sequence"
    for user, seq in zip(raw.users, raw.sequences, strict=True):
        assert printable(user) and seq, f"accepted user {user!r} with {len(seq)} items"
        assert all(printable(t) for t in seq), f"accepted an item token that is not printable: {seq!r}"


@given(variants(s3rec_files()))
def test_fuzz_s3rec_sequences(case: tuple[bytes, bool]) -> None:
    data, _ = case
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "seq.txt"
        path.write_bytes(data)

        def check(raw: formats.RawSequences) -> None:
            check_sequences(raw)
            expected = [line.split() for line in decoded_lines(data)]  # the format's meaning, as an oracle
            assert [[u, *s] for u, s in zip(raw.users, raw.sequences, strict=True)] == expected

        outcome("s3rec", path, lambda: formats.read_s3rec_sequences(path), check)


TIMES = st.one_of(
    *[st.integers(-5, 10**6).map(str)] * 6,
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "1e400", "-inf", "0x10", "1_000"]),
    TOKENS,
)


@st.composite
def timed_files(draw: st.DrawFn, names: tuple[str, str, str], integer_items: bool) -> bytes:
    order = draw(st.permutations([0, 1, 2]))
    header = [f"{names[0]}:token", f"{names[1]}:token", f"{names[2]}:float"]
    items = st.integers(0, 20).map(str) if integer_items else CLEAN
    body = draw(
        st.lists(st.tuples(MIXED, st.one_of(items, items, items, TOKENS), TIMES), min_size=1, max_size=8)
    )
    rows = ["\t".join(header[i] for i in order)] + ["\t".join(r[i] for i in order) for r in body]
    return lines(rows, draw(NEWLINE), draw(st.booleans()))


def _timed(reader: str, data: bytes, read: Callable[[Path], formats.RawSequences]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.inter"
        path.write_bytes(data)

        def check(raw: formats.RawSequences) -> None:
            check_sequences(raw)
            rows = len(decoded_lines(data)) - 1  # every data row is one interaction
            assert sum(map(len, raw.sequences)) == rows

        outcome(reader, path, lambda: read(path), check)


@given(variants(timed_files(("user_id", "item_id", "timestamp"), False)))
def test_fuzz_recbole_interactions(case: tuple[bytes, bool]) -> None:
    _timed("recbole", case[0], formats.read_recbole_inter)


@given(variants(timed_files(("userID", "itemID", "timestamp"), True)))
def test_fuzz_mmrec_interactions(case: tuple[bytes, bool]) -> None:
    _timed("mmrec", case[0], formats.read_mmrec_inter)


@st.composite
def unisrec_sets(draw: st.DrawFn) -> tuple[dict[str, list[str]], int, str]:
    users = draw(st.integers(1, 4))
    seqs = {f"u{u}": draw(st.lists(CLEAN, min_size=3, max_size=6)) for u in range(users)}
    return seqs, draw(st.integers(1, 4)), draw(NEWLINE)


def unisrec_files(seqs: dict[str, list[str]], keep: int, nl: str) -> dict[str, bytes]:
    """The three split files of these sequences, histories cut to the last ``keep`` items; train rows latest
    first, as the reader expects."""
    header = "user_id:token\titem_id_list:token_seq\titem_id:token"
    out: dict[str, list[str]] = {"train": [header], "valid": [header], "test": [header]}
    for user, s in seqs.items():
        rows = [f"{user}\t{' '.join(s[:i][-keep:])}\t{s[i]}" for i in range(1, len(s))]
        out["train"] += reversed(rows[:-2])
        out["valid"].append(rows[-2])
        out["test"].append(rows[-1])
    return {k: lines(v, nl, True) for k, v in out.items()}


@given(unisrec_sets(), st.sampled_from(["none", "train", "valid", "test"]), EDITS)
def test_fuzz_unisrec_splits(case: tuple[dict[str, list[str]], int, str], edited: str, edits: Any) -> None:
    seqs, keep, nl = case
    files = unisrec_files(seqs, keep, nl)
    if edited != "none":
        files[edited] = mutate(files[edited], edits)
    with tempfile.TemporaryDirectory() as d:
        prefix = Path(d) / "S"
        for split, data in files.items():
            Path(f"{prefix}.{split}.inter").write_bytes(data)

        def check(raw: formats.RawSequences) -> None:
            check_sequences(raw)
            if edited == "none":  # the oracle: the sequences the files were made from
                order = [u for u in seqs if len(seqs[u]) > 3] + [u for u in seqs if len(seqs[u]) == 3]
                assert raw.users == order and raw.sequences == [seqs[u] for u in order]

        outcome("unisrec", prefix, lambda: formats.read_unisrec_splits(prefix), check)


# ---------------------------------------------------------------------------------------------------------------
# Item side: key maps, text, attributes, dense tables
# ---------------------------------------------------------------------------------------------------------------

PAIRS = st.lists(st.tuples(MIXED, MIXED), max_size=6)


@st.composite
def key_map_files(draw: st.DrawFn, fmt: str) -> bytes:
    pairs = draw(PAIRS)
    nl = draw(NEWLINE)
    if fmt == "datamaps":
        obj: Any = {"id2item": dict(pairs), "item2id": {}}
        if draw(st.booleans()):
            obj = draw(JSON_VALUES)
        return json.dumps(obj, ensure_ascii=draw(st.booleans())).encode("utf-8")
    rows = [f"{a}\t{b}" for a, b in pairs]
    if fmt == "mmrec_item_map":
        rows = ["asin\titemID", *rows]
    return lines(rows, nl, True)


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(CLEAN, TOKENS), inner, max_size=4)
    ),
    max_leaves=12,
)
HOSTILE_JSON = st.sampled_from(
    [
        b"[" * 5000 + b"]" * 5000,
        b'{"1": [' + b"9" * 5000 + b"]}",
        b'{"a": 1, "a": 2}',
        b"NaN",
        b"\xef\xbb\xbf{}",
    ]
)


@given(st.sampled_from(formats.KEY_MAP_FORMATS), st.data())
def test_fuzz_key_maps(fmt: str, data: st.DataObject) -> None:
    raw, _ = data.draw(variants(key_map_files(fmt)))
    if fmt == "datamaps" and data.draw(st.booleans()):
        raw = data.draw(HOSTILE_JSON)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"map.{fmt}"
        path.write_bytes(raw)

        def check(mapping: dict[str, str]) -> None:
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())
            assert len(set(mapping.values())) == len(mapping), "a key names two items"
            assert all(printable(v) for v in mapping.values()), (
                f"accepted a key that is not printable: {mapping!r}"
            )

        outcome(f"key map ({fmt})", path, lambda: formats.read_key_map(path, fmt), check)


@st.composite
def text_files(draw: st.DrawFn, fmt: str) -> bytes:
    pairs = draw(st.lists(st.tuples(MIXED, st.text(max_size=12)), max_size=6))
    sep = " " if fmt == "keyword" else "\t"
    rows = [f"{k}{sep}{t}" for k, t in pairs]
    if fmt == "unisrec_text":
        rows = ["item_id:token\ttext:token_seq", *rows]
    return lines(rows, draw(NEWLINE), draw(st.booleans()))


@given(st.sampled_from(formats.ITEM_TEXT_FORMATS), st.data())
def test_fuzz_item_text(fmt: str, data: st.DataObject) -> None:
    raw, _ = data.draw(variants(text_files(fmt)))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"items.{fmt}"
        path.write_bytes(raw)

        def check(texts: dict[str, str]) -> None:
            assert all(printable(k) for k in texts), f"accepted a key that is not printable: {list(texts)!r}"
            assert all(isinstance(t, str) and t == t.strip() for t in texts.values()), "text not stripped"

        outcome(f"item text ({fmt})", path, lambda: formats.read_item_text(path, fmt), check)


@st.composite
def attribute_files(draw: st.DrawFn) -> bytes:
    valid = draw(
        st.dictionaries(CLEAN, st.lists(st.one_of(st.integers(0, 50), CLEAN), max_size=4), max_size=5)
    )
    obj = valid if draw(st.booleans()) else draw(JSON_VALUES)
    return json.dumps(obj, ensure_ascii=draw(st.booleans())).encode("utf-8")


@given(st.one_of(variants(attribute_files()), HOSTILE_JSON.map(lambda b: (b, False))))
def test_fuzz_item_attributes(case: tuple[bytes, bool]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "attrs.json"
        path.write_bytes(case[0])

        def check(attrs: dict[str, list[str]]) -> None:
            assert all(isinstance(k, str) and all(isinstance(a, str) for a in v) for k, v in attrs.items())

        outcome("attribute JSON", path, lambda: formats.read_item_attributes(path), check)


DTYPES = ["<f4", "<f8", "<f2", ">f4", "<i4", "|u1", "|b1", "<c8", "<U3", "<M8[s]", "|V4"]


@st.composite
def npy_files(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["numeric", "numeric", "object", "pickle", "structured"]))
    buf = io.BytesIO()
    if kind == "pickle":
        return pickle.dumps({"rows": [[1.0, 2.0]]})
    if kind == "object":
        np.save(buf, np.array([[1, "a"], [None, 2.5]], dtype=object), allow_pickle=True)
    elif kind == "structured":
        np.save(buf, np.zeros((2, 2), dtype=[("a", "<f4"), ("b", "<i4")]))
    else:
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        dtype = np.dtype(draw(st.sampled_from(DTYPES)))
        array = np.zeros(shape, dtype=dtype)
        if dtype.kind == "f" and array.size and draw(st.booleans()):
            array.flat[draw(st.integers(0, array.size - 1))] = draw(
                st.sampled_from([np.nan, np.inf, 1e39, 1.5])
            )
        np.save(buf, array)
    return buf.getvalue()


@given(variants(npy_files()))
def test_fuzz_dense_npy(case: tuple[bytes, bool]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "feat.npy"
        path.write_bytes(case[0])

        def check(result: tuple[np.ndarray, list[str]]) -> None:
            matrix, keys = result
            assert matrix.dtype == np.float32 and matrix.ndim == 2 and len(keys) == matrix.shape[0]
            assert np.isfinite(matrix).all()

        outcome("dense .npy", path, lambda: formats.read_dense_features(path), check)


# ---------------------------------------------------------------------------------------------------------------
# Spec YAML (any bytes)
# ---------------------------------------------------------------------------------------------------------------

SPEC_VALUES = st.one_of(
    JSON_VALUES,
    st.sampled_from(
        ["s3rec", "recbole", "text", "dense", "attributes", "tsv", "external", "zero", "(?P<a>x)"]
    ),
)


@st.composite
def spec_files(draw: st.DrawFn) -> bytes:
    spec: dict[Any, Any] = {
        "name": draw(st.one_of(st.just("tiny"), SPEC_VALUES)),
        "sequences": {"format": draw(st.sampled_from(["s3rec", "recbole", "bogus"])), "path": "seq.txt"},
    }
    if draw(st.booleans()):
        spec["modalities"] = draw(
            st.one_of(
                st.lists(
                    st.dictionaries(
                        st.sampled_from(["name", "source", "path", "format", "key", "pattern", "fields", "dim",
                                         "batch_size", "min_count", "row_map", "missing", "extra", "precision"]),
                        SPEC_VALUES,
                        max_size=6,
                    ),
                    max_size=3,
                ),
                SPEC_VALUES,
            )
        )  # fmt: skip
    if draw(st.booleans()):
        spec[draw(st.one_of(st.sampled_from(["item_keys", "min_interactions", "colour"]), st.integers()))] = (
            draw(SPEC_VALUES)
        )
    return yaml.safe_dump(spec, allow_unicode=draw(st.booleans())).encode("utf-8")


YAML_BYTES = st.sampled_from(
    [b"!!python/object:os.system {}", b"a: &x [*x]", b"[" * 3000, b"name: x\nname: y\n", b"\xff\xfe", b"{1: 2}",
     b"? [a]\n: 1\n", b"name: t\nsequences: {format: s3rec, path: s}\nmodalities: 5\n", b"-\t- x",
     b'name: "\\U00110000"', b"name: !!int 0x", b"a: !!timestamp 2020-13-45", b'name: !!binary "@@"', b"!!set {a}"]
)  # fmt: skip


@given(st.one_of(variants(spec_files()), YAML_BYTES.map(lambda b: (b, False))))
def test_fuzz_spec_yaml(case: tuple[bytes, bool]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "spec.yaml"
        path.write_bytes(case[0])

        def check(spec: DatasetSpec) -> None:
            assert isinstance(spec, DatasetSpec) and isinstance(spec.name, str) and spec.min_interactions >= 3

        outcome("spec YAML", path, lambda: load_spec(path), check)


# ---------------------------------------------------------------------------------------------------------------
# Serving request files: sessions, candidates, users
# ---------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def recommender() -> Any:
    """A tiny run of the popularity reference (no training) to read request files against (built once)."""
    from mdsrec.config import resolve_config
    from mdsrec.data.synthetic import SyntheticConfig, write_synthetic
    from mdsrec.serving import Recommender
    from mdsrec.training.trainer import train

    root = Path(tempfile.mkdtemp(prefix="mdsrec-fuzz-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    data = write_synthetic(root / "data", SyntheticConfig(num_users=30, num_items=20, feature_dim=4, seed=1))
    from mdsrec.data.processed import load_processed as load

    train(resolve_config(None, ["train.progress=false"], model="pop"), load(data), root / "run")
    return Recommender.from_run(root / "run")


ITEM_NAMES = st.one_of(st.sampled_from(["item1", "item2", "item20", "1", "7", "item99", "ITEM1"]), TOKENS)


@st.composite
def session_files(draw: st.DrawFn) -> bytes:
    rows = []
    for _ in range(draw(st.integers(0, 4))):
        obj: Any = {
            "id": draw(st.one_of(CLEAN, st.integers(), JSON_VALUES)),
            "history": draw(st.lists(ITEM_NAMES)),
        }
        if draw(st.integers(0, 4)) == 0:
            obj = draw(JSON_VALUES)
        rows.append(json.dumps(obj, ensure_ascii=draw(st.booleans())))
    return lines(rows, draw(NEWLINE), draw(st.booleans()))


@given(
    st.one_of(variants(session_files()), HOSTILE_JSON.map(lambda b: (b, False))),
    st.sampled_from(["key", "token"]),
    st.booleans(),
    st.sampled_from(["error", "popular"]),
)
def test_fuzz_session_files(case: tuple[bytes, bool], item_field: str, skip: bool, cold: str) -> None:
    from mdsrec.serving.requests import read_sessions

    rec = recommender()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "sessions.jsonl"
        path.write_bytes(case[0])

        def check(requests: list[Any]) -> None:
            assert requests and len({r.id for r in requests}) == len(requests)
            for r in requests:
                assert all(1 <= i <= rec.data.num_items for i in r.history)
                assert len(r.history) or r.fallback

        outcome("session JSON lines", path, lambda: read_sessions(rec, path, item_field, skip, cold), check)


@st.composite
def list_files(draw: st.DrawFn) -> bytes:
    rows = draw(
        st.lists(st.one_of(ITEM_NAMES, st.sampled_from(["# a comment", "", "  u3  ", "u0"])), max_size=6)
    )
    return lines(rows, draw(NEWLINE), draw(st.booleans()))


@given(variants(list_files()), st.sampled_from(["key", "token"]), st.booleans())
def test_fuzz_candidates_files(case: tuple[bytes, bool], item_field: str, skip: bool) -> None:
    from mdsrec.serving.requests import read_candidates

    rec = recommender()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "candidates.txt"
        path.write_bytes(case[0])

        def check(blocked: Any) -> None:
            assert tuple(blocked.shape) == (rec.data.num_items + 1,) and bool(blocked[0])
            assert not bool(blocked.all())  # something can be recommended

        outcome("--candidates", path, lambda: read_candidates(rec, path, item_field, skip), check)


@given(variants(list_files()))
def test_fuzz_users_files(case: tuple[bytes, bool]) -> None:
    from mdsrec.serving.requests import read_users

    rec = recommender()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "users.txt"
        path.write_bytes(case[0])

        def check(requests: list[Any]) -> None:
            assert requests and all(0 <= r.user < rec.data.num_users for r in requests)

        outcome("--users-file", path, lambda: read_users(rec, path), check)


# ---------------------------------------------------------------------------------------------------------------
# prepare end to end: a complete data set or nothing
# ---------------------------------------------------------------------------------------------------------------

POOL = ["1", "2", "3", "10", "A"]


@st.composite
def prepare_inputs(draw: st.DrawFn) -> tuple[bytes, bytes, bytes, dict[str, Any]]:
    users = draw(st.lists(st.lists(st.sampled_from(POOL), min_size=1, max_size=6), min_size=1, max_size=5))
    seq = lines([f"u{i} " + " ".join(s) for i, s in enumerate(users)], "\n", True)
    attrs = json.dumps(
        {t: [int(i) for i in draw(st.lists(st.sampled_from("1234"), max_size=3))] for t in POOL}
    )
    buf = io.BytesIO()
    np.save(buf, np.arange(len(POOL) * 3, dtype=np.float32).reshape(len(POOL), 3))
    rows = "".join(f"{t}\t{i}\n" for i, t in enumerate(POOL)).encode()
    rules = {
        "missing": draw(st.sampled_from(["error", "zero"])),
        "extra": draw(st.sampled_from(["error", "ignore"])),
    }
    edited = draw(st.sampled_from(["none", "seq", "attrs", "npy", "rows"]))
    files = {"seq": seq, "attrs": attrs.encode(), "npy": buf.getvalue(), "rows": rows}
    if edited != "none":
        files[edited] = mutate(files[edited], draw(EDITS))
    return files["seq"], files["attrs"], files["npy"] + b"|" + files["rows"], rules


@given(prepare_inputs())
def test_fuzz_prepare_leaves_a_complete_data_set_or_nothing(
    case: tuple[bytes, bytes, bytes, dict[str, Any]],
) -> None:
    seq, attrs, dense, rules = case
    npy, _, rows = dense.rpartition(b"|")
    with tempfile.TemporaryDirectory() as d:
        src, parent = Path(d) / "raw", Path(d) / "proc"
        src.mkdir()
        parent.mkdir()
        (src / "seq.txt").write_bytes(seq)
        (src / "attrs.json").write_bytes(attrs)
        (src / "img.npy").write_bytes(npy)
        (src / "rows.tsv").write_bytes(rows)
        spec = {
            "name": "fuzz",
            "sequences": {"format": "s3rec", "path": "seq.txt"},
            "modalities": [
                {"name": "attr", "source": "attributes", "path": "attrs.json", **rules},
                {"name": "img", "source": "dense", "path": "img.npy", "row_map": {"format": "tsv", "path": "rows.tsv"}, **rules},
            ],
        }  # fmt: skip
        (src / "spec.yaml").write_text(yaml.safe_dump(spec))
        out = parent / "out"

        def nothing_left() -> None:
            assert os.listdir(parent) == [], f"a failed prepare left {os.listdir(parent)}"

        def complete(_: str) -> None:
            assert os.listdir(parent) == ["out"], f"prepare left {os.listdir(parent)}"
            data = load_processed(out)  # complete: every file there, every sha256 as in the manifest
            assert set(data.features) == {"attr", "img"} and data.num_users >= 1
            assert all(printable(t) for t in data.item_tokens + data.user_tokens)

        spec_path = src / "spec.yaml"
        outcome("prepare", src, lambda: prepare(spec_path, out=out, progress=False), complete, nothing_left)
