"""What every source's feeds are built from: the limits, the positions and orders of the
unified feed and its keyset (``FeedMark``, ``keyset``), the id polls of the per-table live
feeds (``IdCursor``, ``poll_rows``, ``refresh_rows``), and the row behind an entry.

Nothing here knows a source; each per-source read module (``dispatch_reads``,
``cart_reads``, ``order_reads``) builds its feeds from these, and ``feeds``
looks them up per source. The late-commit rules these follow are described in
``app.read.feeds``.
"""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVarTuple, cast

from sqlalchemy import Column, MetaData, Select, and_, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from ..errors import UsageError
from ..sqlutil import fetch_fast
from . import idwindow
from .common import LATE_COMMIT_MARGIN
from .idwindow import IdWindow
from .models import FeedItem, FeedPage

if TYPE_CHECKING:
    from ..bootstrap import Workspace

_Ts = TypeVarTuple("_Ts")

DEFAULT_LIMIT = 100
MAX_LIMIT = 5000
# A transaction commits within this long after taking its id or time.
LAG = LATE_COMMIT_MARGIN
# (time, id) of an entry of the unified feed: the id as the source holds it (a row's
# primary key, an email_log document's ObjectId).
FeedPosition: TypeAlias = "tuple[dt.datetime | None, Any]"
# A sorted page's position in one source: (sort value, time, id) of the last entry shown.
SortPosition: TypeAlias = "tuple[Any, dt.datetime | None, Any]"
# How the unified feed is ordered: (column, descending). Newest first is the live order.
FeedOrder: TypeAlias = "tuple[str, bool]"
LIVE_ORDER: FeedOrder = ("at", True)
# One source's entries of the unified feed: (connection, or the order store's database; keyword
# arguments before, after, since, filter_text, limit, poll, kind, order) -> entries in the asked order.
FeedReader = Callable[..., list[FeedItem]]
# (workspace, an entry's link) -> the row or document behind it, every field, or None.
RawRecord = Callable[["Workspace", dict[str, Any]], "dict[str, Any] | None"]


def feed_limit(limit: int | None) -> int:
    limit = DEFAULT_LIMIT if limit is None else int(limit)
    if limit <= 0:
        raise UsageError("--limit must be a positive number.")
    return min(limit, MAX_LIMIT)


@dataclass(frozen=True)
class FeedMark:
    """Where a source of the live unified feed stands (one per source in a poll's cursor).

    ``at``: the newest time delivered. ``low``: rows older than it are not
    read again (``at``, or the clock when earlier, minus ``LAG``; it never
    moves back). ``seen``: (time, id) of the entries delivered at or after
    ``low``, skipped when read again. ``floor``: a (time, id) at or below
    which nothing is delivered (the rows older than a first page, or a plain
    (time, id) cursor); dropped once ``low`` has passed it.
    """

    at: dt.datetime | None = None
    low: dt.datetime | None = None
    floor: FeedPosition | None = None
    seen: tuple[FeedPosition, ...] = field(default=())


def keyset(stmt: Select[*_Ts], time_col: ColumnElement[Any], id_col: ColumnElement[Any],
           before: FeedPosition | SortPosition | None, after: FeedMark | FeedPosition | None,
           since: dt.datetime | None, limit: int, poll: bool = False, order: FeedOrder = LIVE_ORDER,
           sort_value: ColumnElement[Any] | None = None) -> Select[*_Ts]:
    if order != LIVE_ORDER and sort_value is not None:
        # Any other order: a keyset on (value, time, id) in the order's direction.
        desc = order[1]

        def beyond(col: ColumnElement[Any], value: Any) -> ColumnElement[bool]:
            past: ColumnElement[bool] = col < value if desc else col > value
            return past
        if before is not None:
            value, at, last = cast("SortPosition", before)
            stmt = stmt.where(or_(beyond(sort_value, value), and_(sort_value == value, or_(
                beyond(time_col, at), and_(time_col == at, beyond(id_col, last))))))
        if since is not None:
            stmt = stmt.where(time_col >= since)
        cols = (sort_value, time_col, id_col)
        return stmt.order_by(*(c.desc() if desc else c.asc() for c in cols)).limit(limit)
    if poll:
        # Oldest first from the mark's margin; the caller skips what it delivered.
        mark = cast("FeedMark | None", after)  # a poll passes the source's mark (_as_mark), never a bare position
        if mark is not None and mark.low is not None:
            stmt = stmt.where(time_col >= mark.low)
        if mark is not None and mark.floor is not None:
            at, last = mark.floor
            stmt = stmt.where(or_(time_col > at, and_(time_col == at, id_col > last)))
        if since is not None:
            stmt = stmt.where(time_col >= since)
        return stmt.order_by(time_col.asc(), id_col.asc()).limit(limit)
    if before is not None:
        at, last = cast(FeedPosition, before)
        stmt = stmt.where(or_(time_col < at, and_(time_col == at, id_col < last)))
    if after is not None:
        at, last = cast(FeedPosition, after)  # a page (not a poll) is read after a (time, id) position
        stmt = stmt.where(or_(time_col > at, and_(time_col == at, id_col > last)))
    if since is not None:
        stmt = stmt.where(time_col >= since)
    return stmt.order_by(time_col.desc(), id_col.desc()).limit(limit)


class IdCursor(int):
    """The cursor of an id poll: the highest id delivered (it compares and prints as that id).

    It carries the poll's ``IdWindow`` (the ids below not delivered yet,
    re-read until the late-commit lag has passed). A plain int is accepted
    as a cursor too: everything up to it counts as delivered.
    """

    window: IdWindow

    def __new__(cls, window: IdWindow) -> IdCursor:
        obj = super().__new__(cls, window.last)
        obj.window = window.copy()
        return obj


def _window_of(after: int) -> IdWindow:
    if isinstance(after, IdCursor):
        return after.window.copy()
    return IdWindow.at(int(after))


def id_poll(conn: Connection, cols: Sequence[Column[Any]], id_col: ColumnElement[Any], after: int | None, limit: int,
            now: float | None = None) -> tuple[list[dict[str, Any]], bool, IdCursor | None]:
    """Rows (dicts) not delivered yet, oldest first; whether more wait; the next cursor.

    First poll (``after`` None): the newest ``limit`` rows. Otherwise the
    rows of the cursor's gaps (late commits) and those above its highest id:
    primary-key ranges, cost in proportion to what is new.
    """
    names = [c.name for c in cols]
    now = time.time() if now is None else now
    if after is None:
        rows = fetch_fast(conn, select(*cols).order_by(id_col.desc()).limit(limit))
        rows.reverse()
        if not rows:
            return [], False, None
        # The page holds the newest rows: a hole between them, or below them
        # when the page holds the whole log, may be a transaction still open.
        start = rows[0][0] - 1 if len(rows) == limit else 0
        w = IdWindow.at(start)
        more = False
    else:
        w = _window_of(after)
        rows, more = idwindow.read(conn, cols, id_col, w, limit)
    idwindow.note(w, [r[0] for r in rows])
    idwindow.settle(w, now, LAG.total_seconds())
    return [dict(zip(names, r)) for r in rows], more, IdCursor(w)


def poll_rows(workspace: Workspace, source: str, cols: Sequence[Column[Any]],
              item: Callable[[dict[str, Any]], FeedItem], after_id: int | None, limit: int | None) -> FeedPage:
    limit = feed_limit(limit)
    with workspace.engine(source).connect() as conn:
        rows, more, cursor = id_poll(conn, cols, cols[0], after_id, limit)
    items = [item(r) for r in rows]
    return FeedPage(items=items, cursor=after_id if cursor is None else cursor, has_more=more)


def refresh_rows(workspace: Workspace, source: str, cols: Sequence[Column[Any]],
                 item: Callable[[dict[str, Any]], FeedItem], ids: Iterable[int]) -> list[FeedItem]:
    """Re-read rows by id (a pending row the caller shows may have settled)."""
    ids = list(ids)[:MAX_LIMIT]
    if not ids:
        return []
    with workspace.engine(source).connect() as conn:
        rows = conn.execute(select(*cols).where(cols[0].in_(ids)).order_by(cols[0])).all()
    return [item(dict(r._mapping)) for r in rows]


def sql_raw_record(source: str, metadata: MetaData) -> RawRecord:
    """The reader of the row behind an entry of SQL ``source``, from the entry's link (table and id)."""
    def read(workspace: Workspace, link: dict[str, Any]) -> dict[str, Any] | None:
        table = metadata.tables[str(link["table"])]
        with workspace.engine(source).connect() as conn:
            row = conn.execute(select(table).where(table.c.id == link["id"])).mappings().first()
        return dict(row) if row else None
    return read
