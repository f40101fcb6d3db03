"""Next-item recommendations from a trained run: the library side of ``mdsrec recommend`` and ``mdsrec serve``.

A :class:`Recommender` holds one run's best model in evaluation mode (no dropout, no Gumbel noise) and ranks the
whole catalogue for a batch of histories in one ``score_all`` call per batch, as the evaluator does:

* a known user's history is their whole sequence in the processed data (validation and test items included: this
  is serving, nothing is held out), or, with ``stage="test"``/``"valid"``, the history the evaluator would see
  (and, as in the evaluator, the held-out item stays rankable when it also occurs in that history);
* an ad-hoc session is a list of item keys (items.tsv ``key``, e.g. the ASIN) or tokens (``item_field="token"``),
  oldest first. An unknown item is an error that names it, unless ``skip_unknown`` drops it. A session left
  without a known item is an error (no model ranks without a history) unless ``cold_start="popular"``: it then
  gets the items most interacted with in the whole data set (its result says ``"fallback": "popular"``).

Like the evaluator, the model sees the last ``data.max_len`` items. Items of the history (the whole given history,
not only the window) are left out of the ranking when ``exclude_history`` (default: the run's
``eval.exclude_history``); ``candidates`` restricts the ranking to a set of items (e.g. what is in stock). The
padding item is never ranked. Scores keep the model's precision (float64 for ``cooc``, whose popularity tie-break
needs it). Equal scores are listed lower item id first; the evaluator counts a tie against the held-out item, so its
rank is 1 + the number of other listed items scoring at least as high. NaN scores are refused.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mdsrec.data.processed import ProcessedDataset
from mdsrec.data.protocol import STAGES, Batch
from mdsrec.data.users import UserIndex, item_ref, user_history
from mdsrec.errors import MdsrecError
from mdsrec.evaluation.ranking import exclusion_mask, masked, nan_rows, pad_histories, top_k
from mdsrec.training.trainer import Experiment, open_run

log = logging.getLogger(__name__)

ITEM_FIELDS = ("key", "token")
COLD_START = ("error", "popular")


@dataclass
class Request:
    """One history to rank. ``id`` names it in the output (the user token, or the session's id)."""

    id: str
    history: np.ndarray  # int64 item ids 1..N, oldest first (the whole history; the model sees the window)
    user: int | None = None  # internal user index when the history is a known user's
    keep: int | None = None  # held-out item (stage test/valid): rankable even when it occurs in the history
    dropped: list[str] = field(default_factory=list)  # unknown items skipped (skip_unknown)
    fallback: bool = False  # no known item (cold start): ranked by popularity, not by the model


@dataclass(frozen=True)
class Options:
    """How one request's list is made: ``top`` items, history left out or not (None: the run's
    ``eval.exclude_history``), and ``blocked`` [N+1] bool, the items it may not list (see
    :meth:`Recommender.candidate_mask`; None: any)."""

    top: int = 10
    exclude_history: bool | None = None
    blocked: Tensor | None = None


class Recommender:
    """Ranks the catalogue for histories with one run's model (see the module docstring)."""

    def __init__(self, exp: Experiment, run: str | Path | None = None) -> None:
        self.exp = exp
        self.run = None if run is None else Path(run)
        self.data: ProcessedDataset = exp.data
        self.model = exp.model
        self.model.eval()
        self.max_len = exp.cfg.data.max_len
        self.batch_size = requests_per_call(exp.cfg.data.eval_batch_size, exp.data.num_items)
        self.run_excludes_history = bool(exp.cfg.eval.exclude_history)
        self.loaded_at = datetime.now(timezone.utc)  # the model is loaded before a Recommender is made
        self._lock = threading.Lock()  # one forward pass at a time, whichever thread calls
        # how the front end lets a user drop unknown items (the CLI's flag; the HTTP service names its field)
        self.unknown_hint = "pass --skip-unknown to drop them"
        self._index: dict[str, dict[str, int]] = {}
        self._users: UserIndex | None = None
        self._popularity: Tensor | None = None

    @classmethod
    def from_run(
        cls, run: str | Path, data: str | None = None, device: str = "cpu", which: str = "best"
    ) -> Recommender:
        """Load RUN_DIR/{which}.pt for its processed data (``data`` or the path in RUN_DIR/run.json)."""
        return cls(open_run(run, data, which=which, device=device), run)

    # -- items and users ----------------------------------------------------------------------------------------

    def _item_index(self, item_field: str) -> dict[str, int]:
        if item_field not in ITEM_FIELDS:
            raise MdsrecError(f"item field ({item_field!r}) must be one of {', '.join(ITEM_FIELDS)}")
        if item_field not in self._index:
            names = self.data.item_keys if item_field == "key" else self.data.item_tokens
            index: dict[str, int] = {}
            for i, name in enumerate(names, 1):
                index.setdefault(name, i)  # a repeated key: its first item (prepare keeps keys unique)
            self._index[item_field] = index
        return self._index[item_field]

    def item_ids(
        self,
        names: Sequence[str],
        item_field: str = "key",
        skip_unknown: bool = False,
        where: str = "history",
    ) -> tuple[np.ndarray, list[str]]:
        """Item ids of ``names`` (keys or tokens) and the names skipped as unknown (only with ``skip_unknown``)."""
        index = self._item_index(item_field)
        ids, unknown = [], []
        for name in names:
            if not isinstance(name, str):
                raise MdsrecError(
                    f"{where}: item {name!r} is not a string (items are {item_field}s of items.tsv)"
                )
            i = index.get(name)
            if i is None:
                unknown.append(name)
            else:
                ids.append(i)
        if unknown and not skip_unknown:
            shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise MdsrecError(
                f"{where}: {len(unknown)} item(s) not in the catalogue ({item_field} of {self._items_file()}): "
                f"{shown} ({self.unknown_hint})"
            )
        return np.asarray(ids, dtype=np.int64), unknown

    def _items_file(self) -> str:
        return str(Path(self.data.path) / "items.tsv") if self.data.path is not None else "items.tsv"

    def user_request(self, user: str, by_index: bool = False, stage: str = "next") -> Request:
        """The history of a user of the processed data: whole sequence (``next``) or before a held-out item."""
        if stage not in STAGES:
            raise MdsrecError(f"stage ({stage!r}) must be one of {', '.join(STAGES)}")
        if self._users is None:
            self._users = UserIndex(self.data)
        index = self._users.resolve(user, by_index)
        history, target = user_history(self.data, index, stage)
        return Request(self.data.user_tokens[index], history.astype(np.int64), user=index, keep=target)

    def session_request(
        self,
        session: str,
        items: Sequence[str],
        item_field: str = "key",
        skip_unknown: bool = False,
        cold_start: str = "error",
    ) -> Request:
        """An ad-hoc history of item keys/tokens, oldest first. ``cold_start``: what a session without a known
        item gets, "error" or "popular" (the most interacted-with items)."""
        where = f"session {session!r}"
        check_cold_start(cold_start)
        ids, dropped = self.item_ids(items, item_field, skip_unknown, where)
        return session_request_from_ids(session, ids, dropped, cold_start, where)

    def popularity(self) -> Tensor:
        """[N+1] float64 log(1 + interactions of each item in the whole data set); the cold-start ranking."""
        if self._popularity is None:
            counts = np.bincount(
                np.concatenate(self.data.sequences).astype(np.int64), minlength=self.data.num_items + 1
            )
            self._popularity = torch.from_numpy(np.log1p(counts.astype(np.float64)))
        return self._popularity

    def candidate_mask(
        self, names: Sequence[str], item_field: str = "key", skip_unknown: bool = False
    ) -> Tensor:
        """[N+1] bool, True where an item may NOT be recommended: everything outside ``names``."""
        ids, _ = self.item_ids(names, item_field, skip_unknown, where="candidates")
        if len(ids) == 0:
            raise MdsrecError("candidates: the list is empty; nothing could be recommended")
        mask = torch.ones(self.data.num_items + 1, dtype=torch.bool)
        mask[torch.from_numpy(ids)] = False
        mask[0] = True
        return mask

    # -- ranking ------------------------------------------------------------------------------------------------

    def recommend(
        self,
        requests: Sequence[Request],
        top: int = 10,
        exclude_history: bool | None = None,
        blocked: Tensor | None = None,
    ) -> list[dict[str, Any]]:
        """The top-``top`` items of each request: [{id, user?, items: [{rank, id, key, token, score}], ...}].

        ``exclude_history`` None follows the run's ``eval.exclude_history``; ``blocked`` [N+1] bool marks items
        that may not be recommended (see :meth:`candidate_mask`)."""
        return list(self.iter_recommend(requests, top, exclude_history, blocked))

    def iter_recommend(
        self,
        requests: Iterable[Request],
        top: int = 10,
        exclude_history: bool | None = None,
        blocked: Tensor | None = None,
    ) -> Iterator[dict[str, Any]]:
        """As :meth:`recommend`, lazily, one ``score_all`` per ``data.eval_batch_size`` requests (fewer above
        131,072 items, so that a batch's scores stay near 512 MiB)."""
        options = Options(top, exclude_history, blocked)
        chunk: list[Request] = []
        for request in requests:
            chunk.append(request)
            if len(chunk) == self.batch_size:
                yield from self._rank(chunk, [options] * len(chunk))
                chunk = []
        if chunk:
            yield from self._rank(chunk, [options] * len(chunk))

    def rank(self, requests: Sequence[Request], options: Sequence[Options]) -> list[dict[str, Any]]:
        """As :meth:`recommend`, each request with its own options, all in ONE ``score_all`` call (the HTTP
        service's micro-batches). A request's list does not depend on what else is in the call: the same items
        in the same order, scores equal to float tolerance (batched matrix products may round differently)."""
        if len(requests) != len(options):
            raise ValueError(f"{len(requests)} requests but {len(options)} options")
        return list(self._rank(list(requests), list(options))) if requests else []

    def scores(self, requests: Sequence[Request]) -> Tensor:
        """Raw ``score_all`` of the requests' windows, [B, N+1] on the CPU (nothing masked; float32, or float64
        when the model scores in float64)."""
        windows = [r.history[-self.max_len :] for r in requests]
        for r, w in zip(requests, windows, strict=True):
            if len(w) == 0:
                raise MdsrecError(f"{r.id!r} has an empty history: nothing to rank from")
        items = pad_histories(windows)  # [B, L] right-padded
        lengths = torch.tensor([len(w) for w in windows], dtype=torch.long)  # [B]
        with self._lock, torch.no_grad():
            self.model.eval()
            y = self.model.score_all(Batch(items, lengths).to(self.exp.device))  # [B, N+1]
        y = y.detach().cpu()
        return y if y.dtype == torch.float64 else y.float()

    def _rank(self, requests: list[Request], options: list[Options]) -> Iterator[dict[str, Any]]:
        tops = [o.top for o in options]
        for t in tops:
            if t < 1:
                raise MdsrecError(f"top ({t}) must be >= 1")
        exclude = [
            self.run_excludes_history if o.exclude_history is None else o.exclude_history for o in options
        ]
        cold = [b for b, r in enumerate(requests) if r.fallback]
        warm = [b for b, r in enumerate(requests) if not r.fallback]
        if not cold:
            y = self.scores(requests)  # [B, N+1] the model's precision
        else:  # float64, so that a request's scores do not depend on what else is in its batch
            y = torch.empty(len(requests), self.data.num_items + 1, dtype=torch.float64)  # [B, N+1]
            if warm:
                y[warm] = self.scores([requests[b] for b in warm]).double()  # exact widening
            y[cold] = self.popularity()
        bad = nan_rows(y)
        if len(bad):
            raise MdsrecError(
                f"model {self.model.name} produced NaN scores for {requests[int(bad[0])].id!r}: the run is broken"
            )
        history = None  # [B, H] whole histories of the rows that leave them out (others: empty)
        if any(exclude):
            history = pad_histories(
                [r.history if ex else r.history[:0] for r, ex in zip(requests, exclude, strict=True)]
            )
        keep = torch.tensor([0 if r.keep is None else r.keep for r in requests], dtype=torch.long)  # [B]
        y = masked(y, exclusion_mask(self.data.num_items, history, keep, _blocked(options)))  # [B, N+1]
        order, rankable = top_k(y, max(tops))  # [B, max top], [B]
        listed, scores = (
            order.tolist(),
            y.gather(1, order).tolist(),
        )  # Python values: no per-item tensor indexing
        for b, r in enumerate(requests):
            n = min(tops[b], int(rankable[b]))
            items = [
                {"rank": k + 1, **item_ref(self.data, i), "score": score}
                for k, (i, score) in enumerate(zip(listed[b][:n], scores[b][:n], strict=True))
            ]
            out: dict[str, Any] = {"id": r.id, "history_length": len(r.history), "items": items}
            if r.fallback:
                out["fallback"] = "popular"
            if r.user is not None:
                out["user_index"] = r.user
            if r.dropped:
                out["unknown_items"] = r.dropped
            yield out


# Most scores one score_all call of recommend holds: 2^27 float32 = 512 MiB (plus its masks).
MAX_SCORES_PER_CALL = 1 << 27


def requests_per_call(eval_batch_size: int, num_items: int) -> int:
    """Requests ranked per ``score_all`` call by ``recommend``: ``data.eval_batch_size``, fewer for a catalogue so
    large that their [B, N+1] scores would pass ``MAX_SCORES_PER_CALL`` (at least 1)."""
    return max(1, min(eval_batch_size, MAX_SCORES_PER_CALL // (num_items + 1)))


def _blocked(options: list[Options]) -> Tensor | None:
    """The blocked items of a batch: None, one [N+1] mask shared by every row, or [B, N+1] rows."""
    masks = [o.blocked for o in options]
    if all(m is None for m in masks):
        return None
    if all(m is masks[0] for m in masks):
        return masks[0]
    shape = next(m for m in masks if m is not None).shape
    return torch.stack([torch.zeros(shape, dtype=torch.bool) if m is None else m for m in masks])  # [B, N+1]


def check_cold_start(cold_start: str) -> None:
    if cold_start not in COLD_START:
        raise MdsrecError(f"cold_start ({cold_start!r}) must be one of {', '.join(COLD_START)}")


def session_request_from_ids(
    sid: str, ids: np.ndarray, dropped: list[str], cold_start: str, where: str
) -> Request:
    """The request of a session whose known items are ``ids``; without any: the popularity fallback or an error."""
    if len(ids) == 0 and cold_start != "popular":
        what = "no known items" if dropped else "an empty history"
        raise MdsrecError(
            f"{where} has {what}: a model needs at least one item of the catalogue to rank "
            "(cold_start 'popular' recommends the most interacted-with items instead)"
        )
    return Request(sid, ids, dropped=dropped, fallback=len(ids) == 0)
