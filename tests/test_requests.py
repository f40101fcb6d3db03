"""Request files of ``mdsrec recommend`` (serving/requests.py): every error names the file and the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mdsrec.config import resolve_config
from mdsrec.errors import MdsrecError
from mdsrec.serving import Recommender
from mdsrec.serving.requests import read_candidates, read_sessions, read_users
from mdsrec.training.trainer import train


@pytest.fixture(scope="module")
def rec(tiny_data, tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    run = tmp_path_factory.mktemp("pop") / "run"
    train(resolve_config(None, ["train.progress=false"], model="pop"), tiny_data, run)
    return Recommender.from_run(run)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_candidates_file_names_the_line_of_an_unknown_item(rec: Recommender, tmp_path: Path) -> None:
    keys = rec.data.item_keys
    path = write(tmp_path / "cand.txt", f"# in stock\n{keys[0]}\n\n{keys[3]}\nNOPE\nNOPE2\n")
    with pytest.raises(
        MdsrecError, match=r"cand.txt, line 5: item 'NOPE' is not in the catalogue .*2 unknown in all"
    ):
        read_candidates(rec, path)
    blocked = read_candidates(rec, path, skip_unknown=True)
    assert sorted(i for i in range(len(blocked)) if not blocked[i]) == [1, 4]  # the two known items only
    with pytest.raises(MdsrecError, match=r"empty.txt names no item of the catalogue"):
        read_candidates(rec, write(tmp_path / "empty.txt", "# nothing\n"))


def test_users_file_names_the_line_of_an_unknown_or_repeated_user(rec: Recommender, tmp_path: Path) -> None:
    u = rec.data.user_tokens
    assert [r.id for r in read_users(rec, write(tmp_path / "ok.txt", f"{u[2]}\n# c\n{u[0]}\n"))] == [
        u[2],
        u[0],
    ]
    with pytest.raises(MdsrecError, match=r"users file .*bad.txt, line 3: user 'ghost' not found"):
        read_users(rec, write(tmp_path / "bad.txt", f"{u[2]}\n\nghost\n"))
    with pytest.raises(MdsrecError, match=r"rep.txt, line 2: user .* repeats line 1"):
        read_users(rec, write(tmp_path / "rep.txt", f"{u[2]}\n{u[2]}\n"))
    with pytest.raises(MdsrecError, match=r"users file .*big.txt, line 1: user '9{20}"):
        read_users(rec, write(tmp_path / "big.txt", "9" * 5000 + "\n"))  # not a user, not a ValueError


def test_session_files_refuse_control_characters_in_ids_and_hostile_json(
    rec: Recommender, tmp_path: Path
) -> None:
    k = rec.data.item_keys[0]
    ok = json.dumps({"id": "a", "history": [k]})
    path = write(tmp_path / "s.jsonl", ok + "\n\n" + json.dumps({"id": "b\x1b[2J", "history": [k]}) + "\n")
    with pytest.raises(MdsrecError, match=r"s.jsonl:3: \"id\" 'b\\x1b\[2J' contains a control character"):
        read_sessions(rec, path)
    for text in ["[" * 100_000, '{"id": ' + "7" * 5000 + ', "history": []}']:
        with pytest.raises(MdsrecError, match=r"h.jsonl:1: not valid JSON"):
            read_sessions(rec, write(tmp_path / "h.jsonl", text + "\n"))
    # a line separator inside a JSON string is not a line break: lines are numbered as an editor numbers them
    sep = write(
        tmp_path / "sep.jsonl", json.dumps({"id": "x\u2028y", "history": [k]}, ensure_ascii=False) + "\n"
    )
    with pytest.raises(MdsrecError, match=r"sep.jsonl:1: \"id\" 'x\\u2028y' contains a control character"):
        read_sessions(rec, sep)
