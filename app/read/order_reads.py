"""What the read side reads of the order store (the delivery service's orders and their
``email_log``), as the functions the generic read modules look up through ``READS``.

* Failed & Stuck: a stage's images present longer than
  ``thresholds.order_missed_minutes`` with no ``email_log`` document for the
  stage's event (missed), newest first by the stage's first-image time, looking
  back ``since`` or at most ``MISSED_LOOKBACK`` (7 days). Legacy documents (a
  single image object, or null, instead of a list) read the same. Attempts =
  the console's email claims.
* The live orders (``poll_orders``: (updated_at, _id), index
  ``nc_updated_at_id``: documents change) and, in the unified feed, the
  admin emails of ``email_log`` ((sent_at, _id), index ``nc_sent_at``).
* Duplicates: the built-in rule's spec (``email_log`` by order and event).
* Charts: one series per stage (``STAGES``); the store keeps no rollup, so
  a window's histograms and missed counts are read from the orders touched
  in it (``order_stats``); a duplicate group's copies count under the stage
  of its event.
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, cast

from bson import ObjectId

from .. import registry
from .chart_window import RawSeries, Window
from .common import Since, mongo_text_filter, resolve_since
from .failed_parts import age_seconds, newest_first
from .feed_parts import LIVE_ORDER, FeedMark, FeedOrder, FeedPosition, SortPosition, feed_limit
from .hooks import SourceReads
from .models import DuplicateGroup, FailedItem, FeedItem, FeedPage
from .order_docs import STAGES, first_image_at, stage_images
from .order_stats import order_stage_hists
from .rule_specs import MongoRuleSpec
from .rules import ORDER_KEY, ORDER_RULE, group_order_logs

if TYPE_CHECKING:
    from ..bootstrap import Workspace

# Orders examined per keyset page when looking for missed emails.
ORDER_PAGE = 1000
# Without --since, the missed list looks back this far (by first-image time).
MISSED_LOOKBACK = dt.timedelta(days=7)


# --------------------------------------------------------------------------
# Failed & Stuck (missed)

def _failed_list(workspace: Workspace, kinds: set[str], filter_text: str | None, since: Since, limit: int,
                 before: tuple[Any, Any] | None) -> list[FailedItem]:
    return _orders_missed(workspace, kinds, filter_text, since, limit)  # newest first by first image, no paging


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
    return newest_first(list(found.values()), limit)


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
        age_seconds=age_seconds(now, first), error=error, attempts=attempts, created_at=first,
        detail={"stage": stage, "event": event, "images": len(images),
                "order_oid": str(order.get("_id")), "customer_email": order.get("customer_email"),
                "claim_state": claim.get("state") if claim else None})


# --------------------------------------------------------------------------
# The live orders (oldest change first)

def poll_orders(workspace: Workspace, after: tuple[dt.datetime, Any] | None = None,
                limit: int | None = 500) -> FeedPage:
    """Orders changed after ``after`` = (updated_at, _id), oldest change first."""
    limit = feed_limit(limit)
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
# The unified notification feed: admin emails, and the documents behind them

# The kind of this source's feed entries, and what it is called; sorting by kind follows the words.
FEED_KIND = ("order_email", "admin email")
# The feed's type filter: (email event, what it is called), one per image stage.
FEED_TYPES = tuple((event, f"{stage.capitalize()} images email") for stage, (event, *_r) in STAGES.items())

_ORDER_SORTS: dict[str, Any] = {
    "at": "$sent_at", "source": {"$literal": registry.source("orders").label.lower()},
    "kind": {"$literal": FEED_KIND[1]}, "recipient": {"$toLower": {"$ifNull": ["$to", ""]}},
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


def _raw_record(workspace: Workspace, link: dict[str, Any]) -> dict[str, Any] | None:
    db = workspace.orders().db
    if link.get("table") == "email_log":
        doc = db["email_log"].find_one({"_id": ObjectId(str(link["id"]))})
    else:
        doc = db["orders"].find_one({"id": link.get("id")})
    return {k: (str(v) if k == "_id" else v) for k, v in doc.items()} if doc else None


# --------------------------------------------------------------------------
# Duplicates: the built-in rule

def builtin_rule_spec(workspace: Workspace) -> MongoRuleSpec:
    """How the built-in order rule (``ORDER_RULE``) reads ``email_log``."""
    return MongoRuleSpec(source="orders", rule=ORDER_RULE, collection="email_log", key_fields=ORDER_KEY,
                         time_field="sent_at", group=group_order_logs,
                         filter_fields=("event", "to", "subject", "message_id"),
                         filter_int_fields=("order_id",))


# --------------------------------------------------------------------------
# Charts: a window's histograms and missed counts, the series of a duplicate group

def _store_series(workspace: Workspace, window: Window, now: dt.datetime | None) -> RawSeries:
    """Per stage and bucket: latency histograms of the emailed stages, counts of the missed ones."""
    store = workspace.orders()
    grace = dt.timedelta(minutes=workspace.config.thresholds.order_missed_minutes)
    hists, missed = order_stage_hists(store.db, window.start, window.end, window.bucket_seconds, window.start_b,
                                      window.n, now or store.now(), grace)
    return RawSeries(hists=hists, failed=missed)


_STAGE_OF_EVENT = {event: stage for stage, (event, _before, _after) in STAGES.items()}


def _dup_series(g: DuplicateGroup) -> str:
    event = str(g.key.get("event") or "")
    return _STAGE_OF_EVENT.get(event, event or "other")


READS = SourceReads(
    source=registry.source("orders"), failed_list=_failed_list,
    feed=_order_emails, feed_kind=FEED_KIND, feed_types=FEED_TYPES, raw_record=_raw_record,
    series_names=tuple(STAGES), dup_series=_dup_series,
    mongo_rule_spec=builtin_rule_spec, store_series=_store_series)
