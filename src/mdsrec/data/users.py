"""Users and items of a processed data set as a person names them: user tokens or row indices, item keys or tokens,
and a user's history at a stage of the leave-one-out protocol. Used by ``recommend``/``serve`` and ``explain``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from mdsrec.data.processed import ProcessedDataset
from mdsrec.data.protocol import STAGES, held_out
from mdsrec.errors import MdsrecError

log = logging.getLogger(__name__)


def resolve_user(data: ProcessedDataset, user: str, by_index: bool = False) -> tuple[int, str]:
    """The internal user index (0-based row of users.tsv) of ``user`` and how it was resolved ("token"/"index").

    ``user`` is the external token of users.tsv; with ``by_index`` it is the internal index. Without the flag an
    integer that is not a token is taken as an index only when no token of the file looks like an integer (so a
    number can never mean two users)."""
    users_file = Path(data.path) / "users.tsv" if data.path is not None else Path("users.tsv")
    count = len(data.user_tokens)
    if by_index:
        try:
            index = int(user) if len(user) <= 40 else int("x")  # (Python refuses ints of over 4300 digits)
        except ValueError:
            raise MdsrecError(
                f"user index {user!r} is not an integer ({users_file} has {count} users)"
            ) from None
        if not 0 <= index < count:
            raise MdsrecError(f"user index {index} is outside 0..{count - 1} (the rows of {users_file})")
        return index, "index"
    matches = [i for i, t in enumerate(data.user_tokens) if t == user]
    if len(matches) == 1:
        return matches[0], "token"
    if len(matches) > 1:
        raise MdsrecError(
            f"user {user!r} occurs {len(matches)} times in {users_file}: pass --index with its row"
        )
    # isdecimal, not isdigit: int() reads exactly the decimal digits ('²' is a digit, not a number).
    numeric_tokens = any(t.strip().lstrip("-").isdecimal() for t in data.user_tokens)
    if user.strip().isdecimal() and len(user.strip()) <= 18 and int(user) < count and not numeric_tokens:
        log.info("user %r is not a token of %s: taken as the internal index", user, users_file)
        return int(user), "index"
    hint = f" (tokens look like {data.user_tokens[0]!r}; --index takes a 0-based row)" if count else ""
    raise MdsrecError(f"user {user!r} not found in {users_file}{hint}")


class UserIndex:
    """Token -> user index for a data set, built once (``resolve_user`` scans the tokens on every call); tokens
    that occur more than once, indices and unknown tokens fall back to ``resolve_user``'s rules and errors."""

    def __init__(self, data: ProcessedDataset) -> None:
        self.data = data
        counts: dict[str, int] = {}
        for t in data.user_tokens:
            counts[t] = counts.get(t, 0) + 1
        self._unique = {t: i for i, t in enumerate(data.user_tokens) if counts[t] == 1}

    def resolve(self, user: str, by_index: bool = False) -> int:
        index = None if by_index else self._unique.get(user)
        if index is None:
            index, _ = resolve_user(self.data, user, by_index)
        return index


def user_history(data: ProcessedDataset, index: int, stage: str) -> tuple[np.ndarray, int | None]:
    """The whole history of user ``index`` before the stage's held-out item, and that item (None for ``next``)."""
    if stage not in STAGES:
        raise MdsrecError(f"stage ({stage!r}) must be one of {', '.join(STAGES)}")
    return held_out(data.sequences[index], stage)


def item_ref(data: ProcessedDataset, item: int) -> dict[str, Any]:
    """An item as reports and served lists show it: internal id, external key (e.g. ASIN) and source token."""
    return {"id": int(item), "key": data.item_keys[item - 1], "token": data.item_tokens[item - 1]}
