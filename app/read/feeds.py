"""Live feeds with cursors, and the unified notification feed.

A live feed poll reads only what is new after its cursor, through an index:

* dispatch log, cart log, notifications: the primary key (``id > cursor``);
  rows the caller shows as unsettled (pending, unsent) are re-read by id with
  ``refresh_*``;
* cart emails: (sent_at, id) — a row is inserted unsent and updated when
  sent, so its id alone would miss the send (index ``nc_cart_sent_at``);
* orders: (updated_at, _id) — documents change (index ``nc_updated_at_id``);
* order emails: (sent_at, _id) on ``email_log`` (index ``nc_sent_at``).

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
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVarTuple, cast

from sqlalchemy import Column, Select, String, and_, case, func, literal, or_, select
from sqlalchemy import cast as cast_
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from .. import registry
from ..errors import UsageError
from ..schema import cart_log, cart_users, dispatch_log, dispatch_users, issues, notifications
from ..sqlutil import db_now, fetch_fast
from . import idwindow
from .common import LATE_COMMIT_MARGIN, Since, mongo_text_filter, resolve_since, text_filter
from .failures import STAGES, stage_images
from .idwindow import IdWindow
from .models import FeedItem, FeedPage

if TYPE_CHECKING:
    from ..bootstrap import Workspace

_Ts = TypeVarTuple("_Ts")

DEFAULT_LIMIT = 100
MAX_LIMIT = 5000
FEED_SOURCES = registry.NAMES
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
FEED_SORTS = ("at", "source", "kind", "recipient", "subject", "status", "id")
# What each kind of entry is called; sorting by kind follows these words.
KIND_WORDS = {"notification": "in-app notification", "cart_email": "cart email", "order_email": "admin email"}
# The feed's type filter: type -> (the source that has it, what it is called).
FEED_TYPES: dict[str, tuple[str, str]] = {
    "comment_added": ("dispatch", "Comment added"),
    "status_changed": ("dispatch", "Status changed"),
    "other": ("dispatch", "Other notification"),
    "cart_email": ("cart", "Cart abandonment email"),
    **{event: ("orders", f"{stage.capitalize()} images email") for stage, (event, *_r) in STAGES.items()},
}


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


def _limit(limit: int | None) -> int:
    limit = DEFAULT_LIMIT if limit is None else int(limit)
    if limit <= 0:
        raise UsageError("--limit must be a positive number.")
    return min(limit, MAX_LIMIT)


# --------------------------------------------------------------------------
# Per-table live feeds (append order: oldest of the new rows first)

def _dispatch_item(r: dict[str, Any]) -> FeedItem:
    return FeedItem(source="dispatch", kind="dispatch", id=r["id"], at=r["created_at"], recipient=None,
                    subject=f"{r['dispatch_type']} issue {r['issue_id']}", status=r["status"],
                    link={"source": "dispatch", "table": "notification_dispatch_log", "id": r["id"],
                          "dispatch_id": r["dispatch_id"]},
                    detail={"completed_at": r["completed_at"], "recipients_count": r["recipients_count"],
                            "error": r["error_message"], "comment_id": r["comment_id"],
                            "actor_user_id": r["actor_user_id"]})


_DISPATCH_COLS = (dispatch_log.c.id, dispatch_log.c.dispatch_id, dispatch_log.c.dispatch_type,
                  dispatch_log.c.issue_id, dispatch_log.c.comment_id, dispatch_log.c.actor_user_id,
                  dispatch_log.c.recipients_count, dispatch_log.c.status, dispatch_log.c.created_at,
                  dispatch_log.c.completed_at, dispatch_log.c.error_message)


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


def _id_poll(conn: Connection, cols: Sequence[Column[Any]], id_col: ColumnElement[Any], after: int | None, limit: int,
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


def _poll(workspace: Workspace, source: str, cols: Sequence[Column[Any]], item: Callable[[dict[str, Any]], FeedItem],
          after_id: int | None, limit: int | None) -> FeedPage:
    limit = _limit(limit)
    with workspace.engine(source).connect() as conn:
        rows, more, cursor = _id_poll(conn, cols, cols[0], after_id, limit)
    items = [item(r) for r in rows]
    return FeedPage(items=items, cursor=after_id if cursor is None else cursor, has_more=more)


def _refresh(workspace: Workspace, source: str, cols: Sequence[Column[Any]],
             item: Callable[[dict[str, Any]], FeedItem], ids: Iterable[int]) -> list[FeedItem]:
    """Re-read rows by id (a pending row the caller shows may have settled)."""
    ids = list(ids)[:MAX_LIMIT]
    if not ids:
        return []
    with workspace.engine(source).connect() as conn:
        rows = conn.execute(select(*cols).where(cols[0].in_(ids)).order_by(cols[0])).all()
    return [item(dict(r._mapping)) for r in rows]


def poll_dispatch_log(workspace: Workspace, after_id: int | None = None, limit: int | None = 500) -> FeedPage:
    """Dispatch log rows not delivered before ``after_id`` (a page's cursor), oldest first.

    The newest ``limit`` on the first poll; then every row once, late commits included.
    """
    return _poll(workspace, "dispatch", _DISPATCH_COLS, _dispatch_item, after_id, limit)


def refresh_dispatch_rows(workspace: Workspace, ids: Iterable[int]) -> list[FeedItem]:
    return _refresh(workspace, "dispatch", _DISPATCH_COLS, _dispatch_item, ids)


_CART_COLS = (cart_log.c.id, cart_log.c.user_id, cart_log.c.cart_hash, cart_log.c.cart_value,
              cart_log.c.email_sent, cart_log.c.created_at, cart_log.c.sent_at, cart_log.c.error_message)


def _cart_row_item(r: dict[str, Any]) -> FeedItem:
    return FeedItem(source="cart", kind="cart_row", id=r["id"], at=r["created_at"], recipient=None,
                    subject=f"cart {r['cart_hash'][:12]} of user {r['user_id']}",
                    status="sent" if r["email_sent"] else ("failed" if r["error_message"] else "unsent"),
                    link={"source": "cart", "table": "cart_abandonment_log", "id": r["id"]},
                    detail={"user_id": r["user_id"], "cart_hash": r["cart_hash"], "cart_value": r["cart_value"],
                            "sent_at": r["sent_at"], "error": r["error_message"]})


def poll_cart_log(workspace: Workspace, after_id: int | None = None, limit: int | None = 500) -> FeedPage:
    """Cart log rows not delivered before ``after_id`` (a page's cursor), oldest first.

    The newest ``limit`` on the first poll; then every row once, late commits included.
    """
    return _poll(workspace, "cart", _CART_COLS, _cart_row_item, after_id, limit)


def refresh_cart_rows(workspace: Workspace, ids: Iterable[int]) -> list[FeedItem]:
    return _refresh(workspace, "cart", _CART_COLS, _cart_row_item, ids)


def poll_orders(workspace: Workspace, after: tuple[dt.datetime, Any] | None = None,
                limit: int | None = 500) -> FeedPage:
    """Orders changed after ``after`` = (updated_at, _id), oldest change first."""
    limit = _limit(limit)
    db = workspace.orders().db
    proj = {"id": 1, "status": 1, "customer_email": 1, "updated_at": 1, "created_at": 1, "images": 1}
    if after is None:
        docs = list(db["orders"].find({}, projection=proj, sort=[("updated_at", -1), ("_id", -1)], limit=limit))
        docs.reverse()
        more = False
    else:
        at, oid = after
        query = {"$or": [{"updated_at": {"$gt": at}}, {"updated_at": at, "_id": {"$gt": oid}}]}
        docs = list(db["orders"].find(query, projection=proj, sort=[("updated_at", 1), ("_id", 1)],
                                      limit=limit + 1))
        more = len(docs) > limit
        docs = docs[:limit]
    items = [FeedItem(source="orders", kind="order", id=d.get("id"), at=d.get("updated_at"),
                      recipient=d.get("customer_email"), subject=f"order {d.get('id')}", status=d.get("status"),
                      link={"source": "orders", "table": "orders", "id": d.get("id"), "_id": str(d["_id"])},
                      detail={s: len(stage_images(d, s)) for s in STAGES}) for d in docs]
    cursor = (docs[-1].get("updated_at"), docs[-1]["_id"]) if docs else after
    return FeedPage(items=items, cursor=cursor, has_more=more)


# --------------------------------------------------------------------------
# The unified notification feed

def _dispatch_notifications(conn: Connection, *, before: FeedPosition | SortPosition | None,
                            after: FeedMark | FeedPosition | None, since: dt.datetime | None,
                            filter_text: str | None, limit: int, poll: bool = False, kind: str | None = None,
                            order: FeedOrder = LIVE_ORDER) -> list[FeedItem]:
    n = notifications.c
    u = dispatch_users.c
    i = issues.c
    subject = n.type + " on " + func.coalesce(i.issue_key, "issue " + cast_(n.issue_id, String))
    sort_value = {"at": n.created_at, "source": literal(registry.source("dispatch").label.lower()),
                  "kind": literal(KIND_WORDS["notification"]), "recipient": func.lower(func.coalesce(u.email, "")),
                  "subject": func.lower(subject), "status": case((n.is_read == 1, "read"), else_="unread"),
                  "id": n.id}[order[0]]
    stmt = select(n.id, n.user_id, n.type, n.issue_id, n.comment_id, n.actor_user_id, n.message, n.is_read,
                  n.created_at, n.dispatch_id, u.email, i.issue_key, sort_value.label("sort_value")).select_from(
        notifications.outerjoin(dispatch_users, u.id == n.user_id).outerjoin(issues, i.id == n.issue_id))
    stmt = _keyset(stmt, n.created_at, n.id, before, after, since, limit, poll, order, sort_value)
    flt = text_filter((n.message, n.type, n.dispatch_id, u.email), (n.id, n.issue_id, n.user_id), filter_text)
    if flt is not None:  # None exactly when there is no filter text
        stmt = stmt.where(flt)
    if kind is not None:
        stmt = stmt.where(n.type == kind)
    out: list[FeedItem] = []
    for r in conn.execute(stmt):
        out.append(FeedItem(
            source="dispatch", kind="notification", id=r.id, at=r.created_at, recipient=r.email or f"user {r.user_id}",
            subject=f"{r.type} on {r.issue_key or 'issue ' + str(r.issue_id)}", status="read" if r.is_read else "unread",
            link={"source": "dispatch", "table": "notifications", "id": r.id, "dispatch_id": r.dispatch_id,
                  "issue_id": r.issue_id},
            detail={"user_id": r.user_id, "actor_user_id": r.actor_user_id, "comment_id": r.comment_id,
                    "type": r.type, "message": (r.message or "")[:200], "_sort": r.sort_value}))
    return out


def _cart_emails(conn: Connection, *, before: FeedPosition | SortPosition | None,
                 after: FeedMark | FeedPosition | None, since: dt.datetime | None, filter_text: str | None,
                 limit: int, poll: bool = False, kind: str | None = None,
                 order: FeedOrder = LIVE_ORDER) -> list[FeedItem]:
    c = cart_log.c
    u = cart_users.c
    # Every cart entry is a sent abandonment email: its subject sorts as one, by time.
    sort_value = {"at": c.sent_at, "source": literal(registry.source("cart").label.lower()),
                  "kind": literal(KIND_WORDS["cart_email"]), "recipient": func.lower(func.coalesce(u.email, "")),
                  "subject": literal("cart abandonment"), "status": literal("sent"), "id": c.id}[order[0]]
    stmt = select(c.id, c.user_id, c.cart_hash, c.cart_value, c.created_at, c.sent_at, u.email,
                  sort_value.label("sort_value")).select_from(
        cart_log.outerjoin(cart_users, u.id == c.user_id)).where(c.email_sent == 1, c.sent_at.is_not(None))
    stmt = _keyset(stmt, c.sent_at, c.id, before, after, since, limit, poll, order, sort_value)
    flt = text_filter((c.cart_hash, u.email), (c.id, c.user_id), filter_text)
    if flt is not None:  # None exactly when there is no filter text
        stmt = stmt.where(flt)
    return [FeedItem(source="cart", kind="cart_email", id=r.id, at=r.sent_at,
                     recipient=r.email or f"user {r.user_id}", subject=f"Cart abandonment ({r.cart_value})",
                     status="sent", link={"source": "cart", "table": "cart_abandonment_log", "id": r.id},
                     detail={"user_id": r.user_id, "cart_hash": r.cart_hash, "created_at": r.created_at,
                             "_sort": r.sort_value})
            for r in conn.execute(stmt)]


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


def _as_mark(pos: FeedMark | FeedPosition | None) -> FeedMark | None:
    if pos is None or isinstance(pos, FeedMark):
        return pos
    at, last = pos  # a plain (time, id) position: everything up to it was delivered
    return FeedMark(at=at, low=at, floor=(at, last))


def _keyset(stmt: Select[*_Ts], time_col: ColumnElement[Any], id_col: ColumnElement[Any],
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


_ORDER_SORTS: dict[str, Any] = {
    "at": "$sent_at", "source": {"$literal": registry.source("orders").label.lower()},
    "kind": {"$literal": KIND_WORDS["order_email"]}, "recipient": {"$toLower": {"$ifNull": ["$to", ""]}},
    "subject": {"$toLower": {"$ifNull": ["$subject", {"$ifNull": ["$event", ""]}]}},
    "status": {"$literal": "sent"}, "id": "$_id"}


def _order_emails(db: Any, *, before: FeedPosition | SortPosition | None, after: FeedMark | FeedPosition | None,
                  since: dt.datetime | None, filter_text: str | None, limit: int,
                  poll: bool = False, kind: str | None = None, order: FeedOrder = LIVE_ORDER) -> list[FeedItem]:
    # ``db``: a pymongo or mongomock database (OrderStore.db; neither is typed).
    conds: list[dict[str, Any]] = []
    sorted_page = order != LIVE_ORDER and not poll
    if before is not None and not sorted_page:
        at, oid = cast(FeedPosition, before)
        conds.append({"$or": [{"sent_at": {"$lt": at}}, {"sent_at": at, "_id": {"$lt": oid}}]})
    if poll:
        mark = cast("FeedMark | None", after)  # a poll passes the source's mark (_as_mark), never a bare position
        if mark is not None and mark.low is not None:
            conds.append({"sent_at": {"$gte": mark.low}})
        if mark is not None and mark.floor is not None:
            at, oid = mark.floor
            conds.append({"$or": [{"sent_at": {"$gt": at}}, {"sent_at": at, "_id": {"$gt": oid}}]})
    elif after is not None:
        at, oid = cast(FeedPosition, after)  # a page (not a poll) is read after a (time, id) position
        conds.append({"$or": [{"sent_at": {"$gt": at}}, {"sent_at": at, "_id": {"$gt": oid}}]})
    if since is not None:
        conds.append({"sent_at": {"$gte": since}})
    if filter_text:
        conds.append(mongo_text_filter(("to", "subject", "event"), ("order_id",), filter_text))
    if kind is not None:
        conds.append({"event": kind})
    query = {"$and": conds} if conds else {}
    if sorted_page:
        # Any other order: the sort value computed in the store, and a keyset on (value, time, id).
        way, op = (-1, "$lt") if order[1] else (1, "$gt")
        pipeline: list[dict[str, Any]] = [{"$match": query}, {"$addFields": {"_nc_sort": _ORDER_SORTS[order[0]]}}]
        if before is not None:
            value, at, oid = cast("SortPosition", before)
            pipeline.append({"$match": {"$or": [{"_nc_sort": {op: value}}, {"_nc_sort": value, "sent_at": {op: at}},
                                                {"_nc_sort": value, "sent_at": at, "_id": {op: oid}}]}})
        pipeline += [{"$sort": {"_nc_sort": way, "sent_at": way, "_id": way}}, {"$limit": limit}]
        docs = list(db["email_log"].aggregate(pipeline))
    else:
        way = 1 if poll else -1
        docs = db["email_log"].find(query, sort=[("sent_at", way), ("_id", way)], limit=limit)
    return [FeedItem(source="orders", kind="order_email", id=str(d["_id"]), at=d.get("sent_at"),
                     recipient=d.get("to"), subject=d.get("subject") or d.get("event"), status="sent",
                     link={"source": "orders", "table": "email_log", "id": str(d["_id"]),
                           "order_id": d.get("order_id")},
                     detail={"event": d.get("event"), "transport": d.get("transport"),
                             "message_id": d.get("message_id"), "_oid": d["_id"],
                             "_sort": d.get("_nc_sort", d.get("sent_at"))})
            for d in docs]


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
    limit = _limit(limit)
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
    source = registry.source(str(link.get("source")))
    if not source.is_sql:
        db = workspace.orders().db
        if link.get("table") == "email_log":
            from bson import ObjectId
            doc = db["email_log"].find_one({"_id": ObjectId(str(link["id"]))})
        else:
            doc = db["orders"].find_one({"id": link.get("id")})
        return {k: (str(v) if k == "_id" else v) for k, v in doc.items()} if doc else None
    from ..schema import cart_metadata, dispatch_metadata
    tables = {"cart": cart_metadata, "dispatch": dispatch_metadata}[source.name].tables
    table = tables[str(link["table"])]
    with workspace.engine(source.name).connect() as conn:
        row = conn.execute(select(table).where(table.c.id == link["id"])).mappings().first()
    return dict(row) if row else None


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
    limit = _limit(limit)
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


# Each SQL source's feed table, time column and the conditions its feed reads under.
_SQL_TIMES: dict[str, tuple[Any, Any, Any, tuple[Any, ...]]] = {
    "cart": (cart_log, cart_log.c.sent_at, cart_log.c.id,
             (cart_log.c.email_sent == 1, cart_log.c.sent_at.is_not(None))),
    "dispatch": (notifications, notifications.c.created_at, notifications.c.id, ()),
}


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
    table, time_col, id_col, conds = _SQL_TIMES[source]
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


# What each SQL source's feed reads (the order store's is _order_emails).
_SQL_READERS = {"cart": _cart_emails, "dispatch": _dispatch_notifications}


def _read_source(workspace: Workspace, source: str, *, before: FeedPosition | SortPosition | None,
                 after: FeedMark | FeedPosition | None, since: Since, filter_text: str | None, limit: int,
                 poll: bool = False, kind: str | None = None,
                 order: FeedOrder = LIVE_ORDER) -> tuple[list[FeedItem], dt.datetime]:
    """(entries of one source, the source's clock)."""
    if not registry.source(source).is_sql:
        store = workspace.orders()
        now = store.now()
        since_at = resolve_since(now, since)
        return _order_emails(store.db, before=before, after=after, since=since_at,
                             filter_text=filter_text, limit=limit, poll=poll, kind=kind, order=order), now
    with workspace.engine(source).connect() as conn:
        now = db_now(conn)
        since_at = resolve_since(now, since)
        if poll and isinstance(after, FeedMark) and not filter_text and kind is None:
            after = _narrowed(conn, source, after) or after
        reader = _SQL_READERS[source]
        return reader(conn, before=before, after=after, since=since_at, filter_text=filter_text, limit=limit,
                      poll=poll, kind=kind, order=order), now
