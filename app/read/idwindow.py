"""Reading an id-ordered log exactly once although transactions commit late.

An auto-increment id is taken when a row is inserted, not when it commits: a
transaction that took id 2 may commit after one that took id 3. A reader that
keeps only "the highest id read" moves past 2 while it is still invisible and
never reads it. ``IdWindow`` keeps, besides the highest id read (``last``):

* ``floor``: every id at or below it is settled (read, or never going to
  commit). It is the highest id read at least ``lag`` ago (``pid`` read at
  ``pat``), the way ``app.read.cart_members.IndexMarks`` moves its ``floor``: a
  transaction holding an id below it would have been open for longer than
  the lag (``app.read.common.LATE_COMMIT_MARGIN``).
* ``gaps``: the ids between ``floor`` and ``last`` not read yet, as inclusive
  ranges ``[lo, hi]``. Each read fetches the rows in the gaps (primary-key
  ranges; usually none, sometimes a rolled-back id or a late commit) and the
  rows above ``last``; a row found in a gap leaves it. So every row is
  returned exactly once, and a read costs what is new plus one range lookup
  per gap of the last ``lag``.

The state is small and JSON-serialisable (``to_json`` / ``from_json``); the
caller persists it (the rollup's ``nc_cursor`` row) or hands it back (a feed
cursor).
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from ..sqlutil import fetch_fast

GAP_BATCH = 200  # ranges per query


@dataclass
class IdWindow:
    last: int
    floor: int
    gaps: list[list[int]] = field(default_factory=list)  # [[lo, hi], ...] ascending, disjoint, in (floor, last]
    pid: int | None = None                                # the highest id read at ``pat``
    pat: float | None = None                              # seconds, on the clock the caller passes to ``settle``

    @classmethod
    def at(cls, last_id: int) -> IdWindow:
        """A window that has read everything up to ``last_id`` and nothing above."""
        return cls(last=int(last_id), floor=int(last_id))

    def to_json(self) -> dict[str, Any]:
        return {"last": self.last, "floor": self.floor, "gaps": [list(g) for g in self.gaps],
                "pid": self.pid, "pat": self.pat}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IdWindow:
        return cls(last=int(d["last"]), floor=int(d["floor"]), gaps=[[int(a), int(b)] for a, b in d.get("gaps", ())],
                   pid=None if d.get("pid") is None else int(d["pid"]),
                   pat=None if d.get("pat") is None else float(d["pat"]))

    def copy(self) -> IdWindow:
        return IdWindow(self.last, self.floor, [list(g) for g in self.gaps], self.pid, self.pat)


def gap_clause(id_col: ColumnElement[Any], gaps: Iterable[Sequence[int]]) -> ColumnElement[bool]:
    return or_(*[(id_col == lo) if lo == hi else id_col.between(lo, hi) for lo, hi in gaps])


def read(conn: Connection, cols: Sequence[ColumnElement[Any]], id_col: ColumnElement[Any], w: IdWindow, limit: int,
         where: ColumnElement[bool] | None = None) -> tuple[list[tuple[Any, ...]], bool]:
    """Rows (tuples of ``cols``) not read yet: in the gaps, then above ``last``; ascending id.

    At most ``limit`` rows; the flag tells whether more are waiting. Does not
    change ``w``: call ``note`` with the ids of the rows taken.
    """
    got: list[tuple[Any, ...]] = []
    for i in range(0, len(w.gaps), GAP_BATCH):
        stmt = select(*cols).where(gap_clause(id_col, w.gaps[i:i + GAP_BATCH]))
        if where is not None:
            stmt = stmt.where(where)
        got.extend(fetch_fast(conn, stmt.order_by(id_col).limit(limit + 1 - len(got))))
        if len(got) > limit:
            return got[:limit], True
    stmt = select(*cols).where(id_col > w.last)
    if where is not None:
        stmt = stmt.where(where)
    got.extend(fetch_fast(conn, stmt.order_by(id_col).limit(limit + 1 - len(got))))
    return got[:limit], len(got) > limit


def note(w: IdWindow, ids: Iterable[int]) -> None:
    """Record that the rows with these ids were read (ids from ``read``)."""
    ids = sorted(int(i) for i in ids)
    if not ids:
        return
    cut = bisect_right(ids, w.last)
    old, new = ids[:cut], ids[cut:]
    if old and w.gaps:
        gaps = []
        for lo, hi in w.gaps:
            a, b = bisect_left(old, lo), bisect_right(old, hi)
            for i in old[a:b]:
                if i > lo:
                    gaps.append([lo, i - 1])
                lo = i + 1
            if lo <= hi:
                gaps.append([lo, hi])
        w.gaps = gaps
    prev = w.last
    for i in new:
        lo = max(prev + 1, w.floor + 1)
        if i - 1 >= lo:
            w.gaps.append([lo, i - 1])
        prev = i
    w.last = prev


def settle(w: IdWindow, now: float, lag: float) -> None:
    """Move ``floor`` to the highest id read at least ``lag`` seconds ago; drop the gaps below it."""
    if w.pat is not None and now - w.pat < lag:
        return
    if w.pid is not None and w.pid > w.floor:
        w.floor = min(w.pid, w.last)
        w.gaps = [[max(lo, w.floor + 1), hi] for lo, hi in w.gaps if hi > w.floor]
    w.pid, w.pat = w.last, now
