"""What the read side reads of the order store (the delivery service's orders and their
``email_log``), as the functions the generic read modules look up through ``READS``.

* Failed & Stuck: a stage's images present longer than
  ``thresholds.order_missed_minutes`` with no ``email_log`` document for the
  stage's event (missed), newest first by the stage's first-image time, looking
  back ``since`` or at most ``MISSED_LOOKBACK`` (7 days). Legacy documents (a
  single image object, or null, instead of a list) read the same. Attempts =
  the console's email claims.
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, cast

from .. import registry
from .common import Since, resolve_since
from .failed_parts import age_seconds, newest_first
from .hooks import SourceReads
from .models import FailedItem
from .order_docs import STAGES, first_image_at, stage_images

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


READS = SourceReads(source=registry.source("orders"), failed_list=_failed_list)
