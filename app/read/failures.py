"""Failed, stuck and missed items per source, newest first, one bounded page at a time.

* dispatch: ``failed`` rows; ``pending`` rows older than
  ``thresholds.dispatch_stuck_minutes`` (stuck). Attempts from the console's
  ``nc_dispatch_attempt`` (0 when the console never retried the row).
* cart: unsent rows older than ``thresholds.cart_in_progress_minutes``: with
  an error message they failed, without one they are stuck — unless a sent
  row of the same (user_id, cart_hash) already emailed the abandonment
  (``cart_supersede``): then they are superseded, listed with that row's id
  and never retried. Attempts = rows for the same (user_id, cart_hash).
* orders: a stage's images present longer than
  ``thresholds.order_missed_minutes`` with no ``email_log`` document for the
  stage's event (missed), newest first by the stage's first-image time, looking
  back ``since`` or at most ``MISSED_LOOKBACK`` (7 days). Legacy documents (a
  single image object, or null, instead of a list) read the same. Attempts =
  the console's email claims.

Every query is bounded by ``limit`` (default ``DEFAULT_LIMIT``) and uses an
index ``db upgrade`` creates or the production schema has; ``filter_text``
is matched literally (a bound, escaped LIKE; for documents an escaped regex).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVarTuple, cast

from sqlalchemy import Select, and_, func, or_, select, tuple_
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from .. import registry
from ..errors import UsageError
from ..schema import cart_log, dispatch_log, nc_dispatch_attempt
from ..sqlutil import db_now
from .cart_supersede import sent_rows_of, superseded_reason, superseding
from .common import Since, resolve_since, text_filter
from .models import FAILED_KINDS, FailedItem

if TYPE_CHECKING:
    from ..bootstrap import Workspace

_Ts = TypeVarTuple("_Ts")

DEFAULT_LIMIT = 200
# Orders examined per keyset page when looking for missed emails.
ORDER_PAGE = 1000
# Without --since, the missed list looks back this far (by first-image time).
MISSED_LOOKBACK = dt.timedelta(days=7)
# An order's image stages: stage -> (admin email event, order status before, status after).
STAGES: dict[str, tuple[str, str, str]] = {
    "pickup": ("pickup_images_added", "DRIVER_ARRIVED", "PICKUP_IMAGES_ADDED"),
    "delivery": ("delivery_images_added", "DELIVERY_ARRIVED", "DELIVERY_IMAGES_ADDED"),
}


def _check_kinds(kinds: Iterable[str] | None) -> set[str]:
    if kinds is None:
        return set(FAILED_KINDS)
    kinds = set(kinds)
    bad = kinds - set(FAILED_KINDS)
    if bad:
        raise UsageError(f"Unknown kind '{sorted(bad)[0]}': choose {', '.join(FAILED_KINDS[:-1])} or {FAILED_KINDS[-1]}.")
    return kinds


def error_class(error: str | None) -> str | None:
    """The error's class: the text before the first colon (e.g. ``SMTPRecipientsRefused``)."""
    if not error:
        return None
    head = error.split(":", 1)[0].strip()
    return head if head and len(head) <= 80 and " " not in head else None


def _age(now: dt.datetime, at: dt.datetime | None) -> float:
    return max(0.0, (now - at).total_seconds()) if at is not None else 0.0


def failed_items(workspace: Workspace, source: str, *, kinds: Iterable[str] | None = None,
                 filter_text: str | None = None, since: Since = None, limit: int | None = None,
                 before: tuple[dt.datetime, int] | None = None) -> list[FailedItem]:
    """Items of ``source`` needing an admin, newest first, at most ``limit``.

    ``since`` (datetime or timedelta) keeps items created at or after it;
    ``before`` = (created_at, id) of the last item of the previous page.
    """
    kinds = _check_kinds(kinds)
    limit = DEFAULT_LIMIT if limit is None else int(limit)
    if limit <= 0:
        return []
    registry.source(source)  # an unknown name is one sentence
    return _LISTS[source](workspace, kinds, filter_text, since, limit, before)


@dataclass(frozen=True)
class FailedCursor:
    """Where a merged Failed & Stuck list stopped: per source, the last item handed out."""

    last: dict[str, tuple[dt.datetime | None, Any]]
    taken: dict[str, int]               # items handed out per source (orders page by count)
    done: frozenset[str]                # sources with nothing more to give


def _order_key(item: FailedItem) -> tuple[dt.datetime, str, str]:
    return (item.created_at or dt.datetime.min, item.source, str(item.id).zfill(24))


def failed_page(workspace: Workspace, sources: Iterable[str], *, kinds: Iterable[str] | None = None,
                filter_text: str | None = None, since: Since = None, limit: int = DEFAULT_LIMIT,
                cursor: FailedCursor | None = None) -> tuple[list[FailedItem], FailedCursor | None]:
    """One page of the list over several sources, newest first; the cursor for the next (None: the end).

    Each source is read with its own keyset (``before``) and the pages merged;
    an item not handed out is read again by the next page, so nothing is
    lost or repeated while rows arrive (new ones are newer than the cursor).
    The order store's missed list has no keyset: it is read up to the items
    handed out so far plus a page, and those already handed out are dropped.
    """
    names = [registry.source(s).name for s in sources]
    last = dict(cursor.last) if cursor else {}
    taken = dict(cursor.taken) if cursor else {}
    done = set(cursor.done) if cursor else set()
    pool: list[FailedItem] = []
    full: set[str] = set()
    for name in names:
        if name in done:
            continue
        before = last.get(name)
        if registry.source(name).is_sql:
            got = failed_items(workspace, name, kinds=kinds, filter_text=filter_text, since=since, limit=limit,
                               before=cast("tuple[dt.datetime, int] | None", before))
        else:
            got = failed_items(workspace, name, kinds=kinds, filter_text=filter_text, since=since,
                               limit=taken.get(name, 0) + limit)[taken.get(name, 0):]
        if len(got) >= limit:
            full.add(name)
        pool.extend(got)
    pool.sort(key=_order_key, reverse=True)
    page = pool[:limit]
    for item in page:
        last[item.source] = (item.created_at, item.id)
        taken[item.source] = taken.get(item.source, 0) + 1
    left_over = {i.source for i in pool[limit:]}
    # A source is done when it gave less than a page and all of it was handed out.
    done |= {n for n in names if n not in full and n not in left_over}
    if all(n in done for n in names):
        return page, None
    return page, FailedCursor(last, taken, frozenset(done))


def _orders_list(workspace: Workspace, kinds: set[str], filter_text: str | None, since: Since, limit: int,
                 before: tuple[Any, Any] | None) -> list[FailedItem]:
    return _orders_missed(workspace, kinds, filter_text, since, limit)  # newest first by first image, no paging


def _page(stmt: Select[*_Ts], time_col: ColumnElement[Any], id_col: ColumnElement[Any],
          before: tuple[dt.datetime, int] | None, limit: int) -> Select[*_Ts]:
    if before is not None:
        at, last_id = before
        stmt = stmt.where(or_(time_col < at, and_(time_col == at, id_col < last_id)))
    return stmt.order_by(time_col.desc(), id_col.desc()).limit(limit)


def _merge(items: list[FailedItem], limit: int) -> list[FailedItem]:
    items.sort(key=lambda i: (i.created_at or dt.datetime.min, i.id), reverse=True)
    return items[:limit]


# --------------------------------------------------------------------------
# dispatch

def _dispatch_failed(workspace: Workspace, kinds: set[str], filter_text: str | None, since: Since, limit: int,
                     before: tuple[dt.datetime, int] | None) -> list[FailedItem]:
    t = dispatch_log.c
    a = nc_dispatch_attempt.c
    th = workspace.config.thresholds
    items: list[FailedItem] = []
    with workspace.engine("dispatch").connect() as conn:
        now = db_now(conn)
        since_at = resolve_since(now, since)
        cols = (t.id, t.dispatch_id, t.dispatch_type, t.issue_id, t.comment_id, t.actor_user_id,
                t.recipients_count, t.status, t.created_at, t.completed_at, t.error_message)
        wanted: list[tuple[str, ColumnElement[bool]]] = []
        if "failed" in kinds:
            wanted.append(("failed", t.status == "failed"))
        if "stuck" in kinds:
            stuck_before = now - dt.timedelta(minutes=th.dispatch_stuck_minutes)
            wanted.append(("stuck", and_(t.status == "pending", t.created_at < stuck_before)))
        for kind, cond in wanted:
            # One index range per status (status, created_at), newest first. The
            # hint matters: MySQL otherwise walks idx_created backwards, reading
            # every recent completed row to find a few failed ones (75 ms vs 1 ms
            # at 5 M rows).
            stmt = select(*cols).where(cond)
            for dialect in ("mysql", "mariadb"):
                stmt = stmt.with_hint(dispatch_log, "FORCE INDEX (idx_status_created)", dialect)
            if since_at is not None:
                stmt = stmt.where(t.created_at >= since_at)
            flt = text_filter((t.error_message, t.dispatch_id), (t.id, t.issue_id), filter_text)
            if flt is not None:  # None exactly when there is no filter text
                stmt = stmt.where(flt)
            page = [dict(r._mapping) for r in conn.execute(_page(stmt, t.created_at, t.id, before, limit))]
            attempts: dict[Any, Any] = {}
            if page:
                ids = [r["id"] for r in page]
                attempts = dict(conn.execute(select(a.log_id, a.attempts).where(a.log_id.in_(ids))).all())
            for r in page:
                items.append(FailedItem(
                    source="dispatch", id=r["id"], kind=kind, status=r["status"],
                    age_seconds=_age(now, r["created_at"]), error=r["error_message"],
                    attempts=int(attempts.get(r["id"], 0)), created_at=r["created_at"],
                    detail={"dispatch_id": r["dispatch_id"], "dispatch_type": r["dispatch_type"],
                            "issue_id": r["issue_id"], "comment_id": r["comment_id"],
                            "actor_user_id": r["actor_user_id"], "recipients_count": r["recipients_count"],
                            "error_class": error_class(r["error_message"])}))
    return _merge(items, limit)


# --------------------------------------------------------------------------
# cart

def _cart_failed(workspace: Workspace, kinds: set[str], filter_text: str | None, since: Since, limit: int,
                 before: tuple[dt.datetime, int] | None) -> list[FailedItem]:
    """Unsent rows past the in-progress window: failed (with an error), stuck (without),
    or superseded (another row of the cart already emailed this abandonment).

    Superseded is decided per row in Python (``cart_supersede``), so a page
    is read again from where it stopped until it holds ``limit`` rows of the
    kinds asked for, or the log has no more.
    """
    cart_kinds = kinds & {"failed", "stuck", "superseded"}
    if not cart_kinds:
        return []
    t = cart_log.c
    th = workspace.config.thresholds
    window = dt.timedelta(hours=th.duplicate_window_hours)
    items: list[FailedItem] = []
    with workspace.engine("cart").connect() as conn:
        now = db_now(conn)
        since_at = resolve_since(now, since)
        in_progress_until = now - dt.timedelta(minutes=th.cart_in_progress_minutes)
        stmt = select(t.id, t.user_id, t.cart_hash, t.cart_value, t.created_at, t.error_message) \
            .where(t.email_sent == 0, t.created_at < in_progress_until)
        # With an error message a row failed, without one it is stuck: each kind
        # asked for returns exactly its rows, whatever else (e.g. "missed") is asked.
        if "superseded" not in cart_kinds:
            if cart_kinds == {"failed"}:
                stmt = stmt.where(t.error_message.is_not(None))
            elif cart_kinds == {"stuck"}:
                stmt = stmt.where(t.error_message.is_(None))
        if since_at is not None:
            stmt = stmt.where(t.created_at >= since_at)
        flt = text_filter((t.error_message, t.cart_hash), (t.id, t.user_id), filter_text)
        if flt is not None:  # None exactly when there is no filter text
            stmt = stmt.where(flt)
        while len(items) < limit:
            page = [dict(r._mapping) for r in conn.execute(_page(stmt, t.created_at, t.id, before, limit))]
            if not page:
                break
            items.extend(i for i in _cart_items(conn, page, now, window) if i.kind in cart_kinds)
            if len(page) < limit:
                break
            before = (page[-1]["created_at"], page[-1]["id"])
    return items[:limit]


def _cart_items(conn: Connection, page: list[dict[str, Any]], now: dt.datetime,
                window: dt.timedelta) -> list[FailedItem]:
    t = cart_log.c
    attempts: dict[tuple[Any, Any], int] = {}
    ever_sent: set[tuple[Any, Any]] = set()
    keys = sorted({(r["user_id"], r["cart_hash"]) for r in page})
    for i in range(0, len(keys), 400):
        batch = keys[i:i + 400]
        q = select(t.user_id, t.cart_hash, func.count(), func.max(t.email_sent)) \
            .where(tuple_(t.user_id, t.cart_hash).in_(batch)).group_by(t.user_id, t.cart_hash)
        for uid, h, n, any_sent in conn.execute(q):
            attempts[(uid, h)] = int(n)
            if any_sent:
                ever_sent.add((uid, h))
    sent = sent_rows_of(conn, keys, min(r["created_at"] for r in page), now, window)
    items: list[FailedItem] = []
    for r in page:
        key = (r["user_id"], r["cart_hash"])
        by = superseding(sent.get(key, ()), r["created_at"], now, window)
        kind = "superseded" if by else "failed" if r["error_message"] else "stuck"
        detail: dict[str, Any] = {"user_id": r["user_id"], "cart_hash": r["cart_hash"], "cart_value": r["cart_value"],
                                  "cart_already_emailed": key in ever_sent, "error_class": error_class(r["error_message"])}
        if by:
            detail.update(superseded_by=by.id, emailed_at=by.emailed_at, reason=superseded_reason(by))
        items.append(FailedItem(
            source="cart", id=r["id"], kind=kind, status="failed" if r["error_message"] else "unsent",
            age_seconds=_age(now, r["created_at"]), error=r["error_message"],
            attempts=attempts.get(key, 1), created_at=r["created_at"], detail=detail))
    return items


# --------------------------------------------------------------------------
# orders

def stage_images(order: dict[str, Any], stage: str) -> list[dict[str, Any]]:
    """The images of one stage as a list, whatever the document's shape.

    Current documents hold a list; legacy ones a single image object or null.
    """
    images = order.get("images") or {}
    if not isinstance(images, dict):
        return []
    value = images.get(stage)
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if v is not None]
    return []


def first_image_at(order: dict[str, Any], images: list[dict[str, Any]]) -> dt.datetime | None:
    times: list[dt.datetime] = [i["uploaded_at"] for i in images if isinstance(i, dict)
                                and isinstance(i.get("uploaded_at"), dt.datetime)]
    if times:
        return min(times)
    # A legacy image without a time: the order's own last change is the best evidence.
    for f in ("updated_at", "created_at"):
        at = order.get(f)
        if isinstance(at, dt.datetime):
            return at
    return None


def _orders_missed(workspace: Workspace, kinds: set[str], filter_text: str | None, since: Since,
                   limit: int) -> list[FailedItem]:
    """Missed stage emails, newest first by the stage's first-image time.

    Bounded lookback: only stages whose first image arrived at or after
    ``since`` — or, without ``since``, within ``MISSED_LOOKBACK`` (7 days) —
    are listed; older missed emails need an explicit, longer ``--since``.

    The walk relies on the order's ``updated_at`` never being earlier than a
    stage's first image (the first image changes the order's status, which
    stamps ``updated_at``). So:

    * candidates are the orders with ``updated_at`` at or after the lookback
      start: one range of the ``nc_updated_at_id`` index;
    * they are read newest ``updated_at`` first in keyset pages on
      (updated_at, _id) — no ``skip``, each page costs its own size;
    * the walk stops as soon as ``limit`` items are held and the next order's
      ``updated_at`` (an upper bound of any first-image time still unread)
      is older than the oldest item held;
    * an order changed during the walk moves ahead of where the walk started:
      one last query for ``updated_at`` past the walk's start reads it again,
      and items are keyed by (order, stage), so none is skipped or repeated.
    """
    if "missed" not in kinds:
        return []
    store = workspace.orders()
    db = store.db
    now = store.now()  # the order store's clock, shared by every workstation
    since_at = resolve_since(now, since)
    start_at = since_at if since_at is not None else now - MISSED_LOOKBACK
    grace = dt.timedelta(minutes=workspace.config.thresholds.order_missed_minutes)
    needle = filter_text.lower() if filter_text else None
    # Orders with any image in either stage (a list with items, or a legacy object).
    has_images: dict[str, Any] = {"$or": [{f"images.{s}": {"$type": "object"}} for s in STAGES]
                                  + [{f"images.{s}.0": {"$exists": True}} for s in STAGES]}
    projection: dict[str, int] = {"id": 1, "status": 1, "images": 1, "created_at": 1, "updated_at": 1,
                                  "customer_email": 1}
    found: dict[tuple[Any, str], FailedItem] = {}

    def read(extra: dict[str, Any], page_size: int) -> list[dict[str, Any]]:
        return list(db["orders"].find({"$and": [{"updated_at": {"$gte": start_at}}, has_images, extra]},
                                      projection=projection, sort=[("updated_at", -1), ("_id", -1)],
                                      limit=page_size))

    def examine(page: list[dict[str, Any]]) -> None:
        ids = [o.get("id") for o in page]
        sent = {(d["order_id"], d["event"]) for d in db["email_log"].find(
            {"order_id": {"$in": ids}}, projection={"order_id": 1, "event": 1})}
        claims = {(c["order_id"], c["event"]): c for c in db["nc_email_claims"].find({"order_id": {"$in": ids}})}
        for order in page:
            for stage, (event, _before, _after) in STAGES.items():
                found.pop((order.get("id"), stage), None)  # a re-read order speaks for itself
                item = _missed_item(order, stage, event, now, start_at, grace, sent, claims, needle)
                if item is not None:
                    found[(order.get("id"), stage)] = item

    def oldest_kept() -> dt.datetime | None:
        if len(found) < limit:
            return None
        # Every missed item's created_at is its stage's first-image time, never None.
        return sorted((cast(dt.datetime, i.created_at) for i in found.values()), reverse=True)[limit - 1]

    walk_top: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    while True:
        extra: dict[str, Any] = {} if after is None else {"$or": [
            {"updated_at": {"$lt": after["updated_at"]}},
            {"updated_at": after["updated_at"], "_id": {"$lt": after["_id"]}}]}
        page = read(extra, ORDER_PAGE)
        if not page:
            break
        if walk_top is None:
            walk_top = page[0]
        examine(page)
        after = page[-1]
        if len(page) < ORDER_PAGE:
            break
        bound = oldest_kept()
        if bound is not None and after["updated_at"] < bound:
            break  # nothing unread can have a newer first image than the items held
    if walk_top is not None:
        # Orders changed while the walk ran sit ahead of its start: read them once more.
        changed = read({"$or": [{"updated_at": {"$gt": walk_top["updated_at"]}},
                                {"updated_at": walk_top["updated_at"], "_id": {"$gt": walk_top["_id"]}}]},
                       ORDER_PAGE)
        if changed:
            examine(changed)
    return _merge(list(found.values()), limit)


def _missed_item(order: dict[str, Any], stage: str, event: str, now: dt.datetime, start_at: dt.datetime,
                 grace: dt.timedelta, sent: set[tuple[Any, Any]], claims: dict[tuple[Any, Any], dict[str, Any]],
                 needle: str | None) -> FailedItem | None:
    images = stage_images(order, stage)
    if not images or (order.get("id"), event) in sent:
        return None
    first = first_image_at(order, images)
    if first is None or first < start_at or now - first < grace:
        return None
    claim = claims.get((order.get("id"), event))
    error: str | None = None
    if claim:
        error = claim.get("error") or claim.get("last_error")
    error = error or f"no {event} email in email_log"
    if needle and not (needle in error.lower() or needle in event or needle == str(order.get("id"))):
        return None
    attempts = int(claim.get("attempts", 1)) if claim else 0
    return FailedItem(
        source="orders", id=order.get("id"), kind="missed", status=str(order.get("status")),
        age_seconds=_age(now, first), error=error, attempts=attempts, created_at=first,
        detail={"stage": stage, "event": event, "images": len(images),
                "order_oid": str(order.get("_id")), "customer_email": order.get("customer_email"),
                "claim_state": claim.get("state") if claim else None})


# Each source's list, by name.
_LISTS = {"dispatch": _dispatch_failed, "cart": _cart_failed, "orders": _orders_list}
