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
"""
from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import and_, or_, select

from ..errors import UsageError
from ..schema import cart_log, cart_users, dispatch_log, dispatch_users, issues, notifications
from ..sqlutil import db_now, fetch_fast
from .duplicates import _int_or_none, like_any, resolve_since
from .models import FeedItem, FeedPage

DEFAULT_LIMIT = 100
MAX_LIMIT = 5000
FEED_SOURCES = ("orders", "cart", "dispatch")


def _limit(limit) -> int:
    limit = DEFAULT_LIMIT if limit is None else int(limit)
    if limit <= 0:
        raise UsageError("--limit must be a positive number.")
    return min(limit, MAX_LIMIT)


# --------------------------------------------------------------------------
# Per-table live feeds (append order: oldest of the new rows first)

def _dispatch_item(r: dict) -> FeedItem:
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


def _id_poll(conn, cols, id_col, after_id, limit):
    """Rows (dicts) with id above ``after_id``: one primary-key range, cost in proportion to what is new."""
    names = [c.name for c in cols]
    if after_id is None:
        # First poll: the newest rows, returned oldest first.
        rows = fetch_fast(conn, select(*cols).order_by(id_col.desc()).limit(limit))
        rows.reverse()
        return [dict(zip(names, r)) for r in rows], False
    rows = fetch_fast(conn, select(*cols).where(id_col > after_id).order_by(id_col).limit(limit + 1))
    return [dict(zip(names, r)) for r in rows[:limit]], len(rows) > limit


def _poll(workspace, source, cols, item, after_id, limit) -> FeedPage:
    limit = _limit(limit)
    with workspace.engine(source).connect() as conn:
        rows, more = _id_poll(conn, cols, cols[0], after_id, limit)
    items = [item(r) for r in rows]
    return FeedPage(items=items, cursor=items[-1].id if items else after_id, has_more=more)


def _refresh(workspace, source, cols, item, ids) -> list[FeedItem]:
    """Re-read rows by id (a pending row the caller shows may have settled)."""
    ids = list(ids)[:MAX_LIMIT]
    if not ids:
        return []
    with workspace.engine(source).connect() as conn:
        rows = conn.execute(select(*cols).where(cols[0].in_(ids)).order_by(cols[0])).all()
    return [item(dict(r._mapping)) for r in rows]


def poll_dispatch_log(workspace, after_id: int | None = None, limit: int | None = 500) -> FeedPage:
    """Dispatch log rows with id above ``after_id`` (the newest ``limit`` on the first poll)."""
    return _poll(workspace, "dispatch", _DISPATCH_COLS, _dispatch_item, after_id, limit)


def refresh_dispatch_rows(workspace, ids) -> list[FeedItem]:
    return _refresh(workspace, "dispatch", _DISPATCH_COLS, _dispatch_item, ids)


_CART_COLS = (cart_log.c.id, cart_log.c.user_id, cart_log.c.cart_hash, cart_log.c.cart_value,
              cart_log.c.email_sent, cart_log.c.created_at, cart_log.c.sent_at, cart_log.c.error_message)


def _cart_row_item(r: dict) -> FeedItem:
    return FeedItem(source="cart", kind="cart_row", id=r["id"], at=r["created_at"], recipient=None,
                    subject=f"cart {r['cart_hash'][:12]} of user {r['user_id']}",
                    status="sent" if r["email_sent"] else ("failed" if r["error_message"] else "unsent"),
                    link={"source": "cart", "table": "cart_abandonment_log", "id": r["id"]},
                    detail={"user_id": r["user_id"], "cart_hash": r["cart_hash"], "cart_value": r["cart_value"],
                            "sent_at": r["sent_at"], "error": r["error_message"]})


def poll_cart_log(workspace, after_id: int | None = None, limit: int | None = 500) -> FeedPage:
    """Cart log rows with id above ``after_id`` (the newest ``limit`` on the first poll)."""
    return _poll(workspace, "cart", _CART_COLS, _cart_row_item, after_id, limit)


def refresh_cart_rows(workspace, ids) -> list[FeedItem]:
    return _refresh(workspace, "cart", _CART_COLS, _cart_row_item, ids)


def poll_orders(workspace, after: tuple | None = None, limit: int | None = 500) -> FeedPage:
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
    from .failures import STAGES, stage_images
    items = [FeedItem(source="orders", kind="order", id=d.get("id"), at=d.get("updated_at"),
                      recipient=d.get("customer_email"), subject=f"order {d.get('id')}", status=d.get("status"),
                      link={"source": "orders", "table": "orders", "id": d.get("id"), "_id": str(d["_id"])},
                      detail={s: len(stage_images(d, s)) for s, _ in STAGES}) for d in docs]
    cursor = (docs[-1].get("updated_at"), docs[-1]["_id"]) if docs else after
    return FeedPage(items=items, cursor=cursor, has_more=more)


# --------------------------------------------------------------------------
# The unified notification feed

def _dispatch_notifications(conn, *, before, after, since, filter_text, limit) -> list[FeedItem]:
    n = notifications.c
    u = dispatch_users.c
    i = issues.c
    stmt = select(n.id, n.user_id, n.type, n.issue_id, n.comment_id, n.actor_user_id, n.message, n.is_read,
                  n.created_at, n.dispatch_id, u.email, i.issue_key).select_from(
        notifications.outerjoin(dispatch_users, u.id == n.user_id).outerjoin(issues, i.id == n.issue_id))
    stmt = _keyset(stmt, n.created_at, n.id, before, after, since, limit)
    if filter_text:
        clauses = [like_any((n.message, n.type, n.dispatch_id, u.email), filter_text)]
        num = _int_or_none(filter_text)
        if num is not None:
            clauses += [n.id == num, n.issue_id == num, n.user_id == num]
        stmt = stmt.where(or_(*clauses))
    out = []
    for r in conn.execute(stmt):
        out.append(FeedItem(
            source="dispatch", kind="notification", id=r.id, at=r.created_at, recipient=r.email or f"user {r.user_id}",
            subject=f"{r.type} on {r.issue_key or 'issue ' + str(r.issue_id)}", status="read" if r.is_read else "unread",
            link={"source": "dispatch", "table": "notifications", "id": r.id, "dispatch_id": r.dispatch_id,
                  "issue_id": r.issue_id},
            detail={"user_id": r.user_id, "actor_user_id": r.actor_user_id, "comment_id": r.comment_id,
                    "message": (r.message or "")[:200]}))
    return out


def _cart_emails(conn, *, before, after, since, filter_text, limit) -> list[FeedItem]:
    c = cart_log.c
    u = cart_users.c
    stmt = select(c.id, c.user_id, c.cart_hash, c.cart_value, c.created_at, c.sent_at, u.email).select_from(
        cart_log.outerjoin(cart_users, u.id == c.user_id)).where(c.email_sent == 1, c.sent_at.is_not(None))
    stmt = _keyset(stmt, c.sent_at, c.id, before, after, since, limit)
    if filter_text:
        clauses = [like_any((c.cart_hash, u.email), filter_text)]
        num = _int_or_none(filter_text)
        if num is not None:
            clauses += [c.id == num, c.user_id == num]
        stmt = stmt.where(or_(*clauses))
    return [FeedItem(source="cart", kind="cart_email", id=r.id, at=r.sent_at,
                     recipient=r.email or f"user {r.user_id}", subject=f"Cart abandonment ({r.cart_value})",
                     status="sent", link={"source": "cart", "table": "cart_abandonment_log", "id": r.id},
                     detail={"user_id": r.user_id, "cart_hash": r.cart_hash, "created_at": r.created_at})
            for r in conn.execute(stmt)]


def _keyset(stmt, time_col, id_col, before, after, since, limit):
    if before is not None:
        at, last = before
        stmt = stmt.where(or_(time_col < at, and_(time_col == at, id_col < last)))
    if after is not None:
        at, last = after
        stmt = stmt.where(or_(time_col > at, and_(time_col == at, id_col > last)))
    if since is not None:
        stmt = stmt.where(time_col >= since)
    return stmt.order_by(time_col.desc(), id_col.desc()).limit(limit)


def _order_emails(db, *, before, after, since, filter_text, limit) -> list[FeedItem]:
    conds: list[dict] = []
    if before is not None:
        at, oid = before
        conds.append({"$or": [{"sent_at": {"$lt": at}}, {"sent_at": at, "_id": {"$lt": oid}}]})
    if after is not None:
        at, oid = after
        conds.append({"$or": [{"sent_at": {"$gt": at}}, {"sent_at": at, "_id": {"$gt": oid}}]})
    if since is not None:
        conds.append({"sent_at": {"$gte": since}})
    if filter_text:
        pattern = re.escape(filter_text)  # literal text, never a pattern
        ors: list[dict] = [{f: {"$regex": pattern, "$options": "i"}} for f in ("to", "subject", "event")]
        num = _int_or_none(filter_text)
        if num is not None:
            ors.append({"order_id": num})
        conds.append({"$or": ors})
    query = {"$and": conds} if conds else {}
    docs = db["email_log"].find(query, sort=[("sent_at", -1), ("_id", -1)], limit=limit)
    return [FeedItem(source="orders", kind="order_email", id=str(d["_id"]), at=d.get("sent_at"),
                     recipient=d.get("to"), subject=d.get("subject") or d.get("event"), status="sent",
                     link={"source": "orders", "table": "email_log", "id": str(d["_id"]),
                           "order_id": d.get("order_id")},
                     detail={"event": d.get("event"), "transport": d.get("transport"),
                             "message_id": d.get("message_id"), "_oid": d["_id"]})
            for d in docs]


def _item_sort_key(item: FeedItem):
    return (item.at or dt.datetime.min, item.source, str(item.id).zfill(24))


def _position(item: FeedItem):
    raw_id = item.detail.get("_oid", item.id) if item.source == "orders" else item.id
    return (item.at, raw_id)


def notification_feed(workspace, *, sources=None, before: dict | None = None, since=None,
                      filter_text: str | None = None, limit: int | None = None) -> FeedPage:
    """Newest notifications first across sources; ``cursor`` pages to older ones (pass as ``before``).

    ``before`` maps source → (time, id) of the oldest entry already shown.
    """
    limit = _limit(limit)
    sources = [s for s in (sources or FEED_SOURCES) if workspace.has(s)]
    before = dict(before or {})
    items: list[FeedItem] = []
    for source in sources:
        items.extend(_read_source(workspace, source, before=before.get(source), after=None, since=since,
                                  filter_text=filter_text, limit=limit + 1))
    items.sort(key=_item_sort_key, reverse=True)
    more = len(items) > limit
    page = items[:limit]
    cursor = dict(before)
    for item in page:  # oldest included entry per source
        cursor[item.source] = _position(item)
    return FeedPage(items=page, cursor=cursor, has_more=more)


def poll_notification_feed(workspace, after: dict | None = None, *, sources=None,
                           filter_text: str | None = None, limit: int | None = 500) -> FeedPage:
    """Entries newer than ``after`` (source → (time, id)), newest first; the cursor of the next poll.

    With no cursor, the newest ``limit`` entries (the feed's first page).
    """
    if after is None:
        page = notification_feed(workspace, sources=sources, filter_text=filter_text, limit=limit)
        cursor = {}
        for item in reversed(page.items):
            cursor[item.source] = _position(item)
        for source in (sources or FEED_SOURCES):
            if workspace.has(source) and source not in cursor:
                cursor[source] = None
        return FeedPage(items=page.items, cursor=cursor, has_more=False)
    limit = _limit(limit)
    items: list[FeedItem] = []
    for source in (sources or FEED_SOURCES):
        if not workspace.has(source):
            continue
        pos = after.get(source)
        items.extend(_read_source(workspace, source, before=None, after=pos, since=None,
                                  filter_text=filter_text, limit=limit))
    items.sort(key=_item_sort_key, reverse=True)
    cursor = dict(after)
    for item in reversed(items):
        cursor[item.source] = _position(item)
    return FeedPage(items=items, cursor=cursor, has_more=False)


def _read_source(workspace, source, *, before, after, since, filter_text, limit) -> list[FeedItem]:
    if source == "orders":
        since_at = resolve_since(workspace.orders().now(), since)
        return _order_emails(workspace.orders().db, before=before, after=after, since=since_at,
                             filter_text=filter_text, limit=limit)
    with workspace.engine(source).connect() as conn:
        since_at = resolve_since(conn, since)
        reader = _cart_emails if source == "cart" else _dispatch_notifications
        return reader(conn, before=before, after=after, since=since_at, filter_text=filter_text, limit=limit)
