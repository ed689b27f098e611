"""Live feeds with cursors, and the unified notification feed.

A live feed poll reads only what is new after its cursor, through an index:

* dispatch log, cart log, notifications: the primary key (``id > cursor``);
  rows the caller shows as unsettled (pending, unsent) are re-read by id with
  ``refresh_*``;
* cart emails: (sent_at, id) — a row is inserted unsent and updated when
  sent, so its id alone would miss the send (index ``nc_cart_sent_at``);
* orders: (updated_at, _id) — documents change (index ``nc_updated_at_id``);
* order emails: (sent_at, _id) on ``email_log`` (index ``nc_sent_at``).

Each source's readers live in its read module (``dispatch_reads``,
``cart_reads``, ``order_reads``); this module looks them up
(``app.read.by_source.reads_for``) and merges what they read.

The unified notification feed merges order admin emails, cart abandonment
emails and dispatch notifications, newest first, each with source,
recipient, subject/type, time and a link to the row behind it. Paging is by
keyset per source (``before``), so every page is one bounded index range per
source, and a poll for newer entries (``after``) costs what is new.

Late commits: a row's id or time is taken before its transaction commits,
so a row can become visible after a poll already delivered rows above it.
Every poll therefore re-reads a margin (``LAG``, the late-commit margin of
``app.read.common``) and skips what it already delivered:

* id polls keep an ``app.read.idwindow.IdWindow`` in their cursor
  (``IdCursor``, which compares as the highest id delivered): the ids below
  it not delivered yet are re-read by primary-key range until the lag has
  passed;
* the unified feed's (time, id) keysets keep a ``FeedMark`` per source: rows
  are read from ``low`` (the newest time delivered, or the clock if earlier,
  minus the lag) in ascending order, and the ids delivered since ``low``
  (``seen``) are skipped.

A poller thus sees every row exactly once, provided no transaction stays
open longer than the lag. A poll delivers the oldest ``limit`` new entries
and sets ``has_more`` when more wait; its cursor moves to the last entry
delivered, never past an entry it did not deliver.
"""
from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Connection

from .. import registry
from ..errors import UsageError
from ..sqlutil import db_now
from .by_source import ALL_READS, reads_for
from .cart_reads import poll_cart_log as poll_cart_log  # re-exported: the live cart log, by id
from .common import Since, resolve_since
from .dispatch_reads import poll_dispatch_log as poll_dispatch_log  # re-exported: the live dispatch log, by id
from .feed_parts import LAG, FeedMark, FeedOrder, FeedPosition, SortPosition, feed_limit
from .feed_parts import LIVE_ORDER as LIVE_ORDER  # re-exported for the Notifications page
from .models import FeedItem, FeedPage

if TYPE_CHECKING:
    from ..bootstrap import Workspace

FEED_SOURCES = registry.NAMES
FEED_SORTS = ("at", "source", "kind", "recipient", "subject", "status", "id")
# What each kind of entry is called; sorting by kind follows these words.
KIND_WORDS: dict[str, str] = dict(r.feed_kind for r in ALL_READS)
# The feed's type filter: type -> (the source that has it, what it is called).
FEED_TYPES: dict[str, tuple[str, str]] = {
    kind: (r.source.name, label) for r in ALL_READS for kind, label in r.feed_types}


def check_feed_order(order: FeedOrder | None) -> FeedOrder:
    """``order`` as given, or the live order; an unknown column is one sentence."""
    if order is None:
        return LIVE_ORDER
    column, desc = order
    if column not in FEED_SORTS:
        raise UsageError(f"The feed cannot be sorted by '{column}': choose {', '.join(FEED_SORTS)}.")
    return column, bool(desc)


def _type_sources(kind: str | None, sources: list[str]) -> list[str]:
    """The sources that hold entries of type ``kind`` (all of ``sources`` without one)."""
    if kind is None:
        return sources
    if kind not in FEED_TYPES:
        raise UsageError(f"Unknown notification type '{kind}': choose {', '.join(FEED_TYPES)}.")
    return [s for s in sources if s == FEED_TYPES[kind][0]]


def _as_mark(pos: FeedMark | FeedPosition | None) -> FeedMark | None:
    if pos is None or isinstance(pos, FeedMark):
        return pos
    at, last = pos  # a plain (time, id) position: everything up to it was delivered
    return FeedMark(at=at, low=at, floor=(at, last))


def _item_sort_key(item: FeedItem) -> tuple[dt.datetime, str, str]:
    return (item.at or dt.datetime.min, item.source, str(item.id).zfill(24))


def _position(item: FeedItem) -> FeedPosition:
    raw_id = item.id if registry.source(item.source).is_sql else item.detail.get("_oid", item.id)
    return (item.at, raw_id)


def notification_feed(workspace: Workspace, *, sources: Iterable[str] | None = None,
                      before: dict[str, Any] | None = None, since: Since = None,
                      filter_text: str | None = None, limit: int | None = None, kind: str | None = None,
                      order: FeedOrder | None = None) -> FeedPage:
    """Notifications across sources, newest first (or in ``order``); ``cursor`` pages on (pass as ``before``).

    ``before`` maps source → the position of the last entry already shown:
    (time, id) in the live order, (sort value, time, id) in any other.
    ``kind``: only entries of that type (``FEED_TYPES``).
    """
    limit = feed_limit(limit)
    order = check_feed_order(order)
    sources = _type_sources(kind, [s for s in (sources or FEED_SOURCES) if workspace.has(s)])
    before = dict(before or {})
    fetched: list[list[FeedItem]] = []
    for source in sources:
        got, _now = _read_source(workspace, source, before=before.get(source), after=None, since=since,
                                 filter_text=filter_text, limit=limit + 1, kind=kind, order=order)
        fetched.append(got)
    if order == LIVE_ORDER:
        items = sorted((i for got in fetched for i in got), key=_item_sort_key, reverse=True)
    else:
        # Each source's entries come in the database's order; merging keeps it, so every
        # source's cursor is the last of its entries shown whatever the collation.
        items = list(heapq.merge(*fetched, key=_sorted_key, reverse=order[1]))
    more = len(items) > limit
    page = items[:limit]
    cursor = dict(before)
    for item in page:  # the last included entry per source
        cursor[item.source] = _position(item) if order == LIVE_ORDER else _sort_position(item)
    return FeedPage(items=page, cursor=cursor, has_more=more)


def _sort_position(item: FeedItem) -> SortPosition:
    at, raw = _position(item)
    return (item.detail.get("_sort"), at, raw)


def _sorted_key(item: FeedItem) -> tuple[Any, ...]:
    """How entries of different sources compare in a sorted feed (numbers before text, text by lower case)."""
    value = item.detail.get("_sort")
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        v: tuple[Any, ...] = (0, value, "")
    elif isinstance(value, dt.datetime):
        v = (1, 0, value.isoformat())
    else:
        v = (2, 0, str(value if value is not None else "").lower())
    return (*v, item.at or dt.datetime.min, item.source, str(item.id).zfill(24))


def _next_mark(mark: FeedMark | None, delivered: list[FeedItem], now: dt.datetime,
               floor: FeedPosition | None = None) -> FeedMark | None:
    """The mark after delivering ``delivered`` (entries of one source), read at ``now``."""
    positions = [_position(i) for i in delivered]
    if mark is None and not positions and floor is None:
        return None
    times = [p[0] for p in positions if p[0] is not None]
    old_at = mark.at if mark is not None else None
    at = max([t for t in (old_at, *times) if t is not None], default=None)
    if at is None and floor is not None:
        at = floor[0]
    low = mark.low if mark is not None else None
    if at is not None:
        candidate = min(at, now) - LAG
        low = candidate if low is None else max(low, candidate)
    floor = floor if floor is not None else (mark.floor if mark is not None else None)
    if floor is not None and low is not None and floor[0] is not None and low > floor[0]:
        floor = None
    seen = (mark.seen if mark is not None else ()) + tuple(positions)
    if low is not None:
        seen = tuple(p for p in seen if p[0] is not None and p[0] >= low)
    return FeedMark(at=at, low=low, floor=floor, seen=seen)


def oldest_positions(items: Iterable[FeedItem]) -> dict[str, FeedPosition]:
    """Per source, the oldest entry's position among ``items``: ``notification_feed``'s ``before`` for the next page."""
    out: dict[str, FeedPosition] = {}
    for item in items:
        pos = _position(item)
        if item.source not in out or _position_key(pos) < _position_key(out[item.source]):
            out[item.source] = pos
    return out


def raw_record(workspace: Workspace, link: dict[str, Any]) -> dict[str, Any] | None:
    """The row or document behind a feed entry, every field, as stored (the detail pane)."""
    return reads_for(registry.source(str(link.get("source"))).name).raw_record(workspace, link)


def _raw_id(item: FeedItem) -> object:
    return _position(item)[1]


def poll_notification_feed(workspace: Workspace, after: dict[str, FeedMark | FeedPosition | None] | None = None,
                           *, sources: Iterable[str] | None = None, filter_text: str | None = None,
                           limit: int | None = 500, since: Since = None, kind: str | None = None) -> FeedPage:
    """Entries not delivered before ``after`` (a poll's cursor: source → ``FeedMark``), newest first.

    With no cursor, the newest ``limit`` entries (the feed's first page; ``since``
    keeps those at or after it — later polls deliver only newer entries anyway).
    Then the oldest ``limit`` entries not delivered yet (late commits
    included), shown newest first; ``has_more`` when more wait (poll again
    at once). A plain (time, id) per source is accepted as a cursor too.
    ``kind``: only entries of that type (``FEED_TYPES``).
    """
    limit = feed_limit(limit)
    sources = _type_sources(kind, [s for s in (sources or FEED_SOURCES) if workspace.has(s)])
    if after is None:
        # The first page: the newest ``limit`` across sources.
        fetched: dict[str, list[FeedItem]] = {}
        nows: dict[str, dt.datetime] = {}
        merged: list[FeedItem] = []
        for source in sources:
            got, nows[source] = _read_source(workspace, source, before=None, after=None, since=since,
                                             filter_text=filter_text, limit=limit + 1, kind=kind)
            fetched[source] = got
            merged.extend(got)
        merged.sort(key=_item_sort_key, reverse=True)
        page = merged[:limit]
        shown = {(i.source, str(i.id)) for i in page}
        cursor: dict[str, FeedMark | FeedPosition | None] = {}
        for source in sources:
            delivered = [i for i in fetched[source] if (source, str(i.id)) in shown]
            left = [i for i in fetched[source] if (source, str(i.id)) not in shown]
            # Entries of the source older than the page are not delivered: the floor.
            floor = max((_position(i) for i in left), key=_position_key, default=None)
            cursor[source] = _next_mark(None, delivered, nows[source], floor=floor)
        return FeedPage(items=page, cursor=cursor, has_more=False)
    fresh: list[FeedItem] = []
    marks: dict[str, FeedMark | None]
    marks, nows = {}, {}
    for source in sources:
        mark = marks[source] = _as_mark(after.get(source))
        seen = {p[1] for p in mark.seen} if mark is not None else set()
        got, nows[source] = _read_source(workspace, source, before=None, after=mark, since=None,
                                         filter_text=filter_text, limit=limit + 1 + len(seen), poll=True, kind=kind)
        fresh.extend([i for i in got if _raw_id(i) not in seen][:limit + 1])
    fresh.sort(key=_item_sort_key)
    delivered = fresh[:limit]
    cursor = dict(after)
    for source in sources:
        mine = [i for i in delivered if i.source == source]
        cursor[source] = _next_mark(marks[source], mine, nows[source])
    delivered.reverse()
    return FeedPage(items=delivered, cursor=cursor, has_more=len(fresh) > limit)


def _position_key(pos: FeedPosition) -> tuple[dt.datetime, str]:
    at, raw = pos
    return (at or dt.datetime.min, str(raw).zfill(24))


def _narrowed(conn: Connection, source: str, mark: FeedMark) -> FeedMark | None:
    """A mark that reads only rows newer than the newest delivered, when no late commit is waiting.

    A poll re-reads every row inside the late-commit margin to find those
    that committed late; at 200 new rows/s that is 24,000 rows a second. One
    COUNT over the margin tells whether any row there is not delivered yet:
    when the database holds exactly the delivered ones, only newer rows can
    be new. Otherwise (a late commit, a deleted row) the full re-read stands.
    Rows at or below a first page's floor are never delivered, so they are
    not counted either.
    """
    if mark.low is None or mark.at is None or not mark.seen:
        return None
    spec = reads_for(source).feed_keyset
    if spec is None:
        return None
    table, time_col, id_col, conds = spec.table, spec.time_col, spec.id_col, spec.conds
    upto = [p for p in mark.seen if p[0] is not None and p[0] <= mark.at]
    if not upto:
        return None
    where = [*conds, time_col >= mark.low, time_col <= mark.at]
    if mark.floor is not None and mark.floor[0] is not None:
        at, last = mark.floor
        where.append(or_(time_col > at, and_(time_col == at, id_col > last)))
    held = conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
    if held != len(upto):
        return None
    newest = max(t for t, _id in upto if t is not None)
    return FeedMark(at=mark.at, low=newest, floor=None, seen=tuple(p for p in mark.seen if p[0] == newest))


def _read_source(workspace: Workspace, source: str, *, before: FeedPosition | SortPosition | None,
                 after: FeedMark | FeedPosition | None, since: Since, filter_text: str | None, limit: int,
                 poll: bool = False, kind: str | None = None,
                 order: FeedOrder = LIVE_ORDER) -> tuple[list[FeedItem], dt.datetime]:
    """(entries of one source, the source's clock)."""
    if not registry.source(source).is_sql:
        store = workspace.orders()
        now = store.now()
        since_at = resolve_since(now, since)
        return reads_for(source).feed(store.db, before=before, after=after, since=since_at, filter_text=filter_text,
                                      limit=limit, poll=poll, kind=kind, order=order), now
    with workspace.engine(source).connect() as conn:
        now = db_now(conn)
        since_at = resolve_since(now, since)
        if poll and isinstance(after, FeedMark) and not filter_text and kind is None:
            after = _narrowed(conn, source, after) or after
        reader = reads_for(source).feed
        return reader(conn, before=before, after=after, since=since_at, filter_text=filter_text, limit=limit,
                      poll=poll, kind=kind, order=order), now
