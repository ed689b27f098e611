"""Order stage emails: exactly one admin email per (order, stage), whatever the concurrency.

Seed 000 pushed the image and then read the count in a separate ``find``:
two concurrent uploads can both read 2 and no email goes out (or, checking
before the push, both read 0 and two go out). Here:

1. a legacy document (``images.<stage>`` a single object or null) is turned
   into a list by a conditional update that matches the exact legacy value,
   so concurrent converters cannot lose an image;
2. the image is added with ``find_one_and_update($push, return_document=AFTER)``:
   the array length each upload sees is its own, so exactly one sees 1;
3. that upload also has to win the insert into ``nc_email_claims`` (unique
   on (order_id, event)) — belt and braces against an image removed and
   added again, or a document rewritten by hand;
4. the winner moves the status with a conditional update on the expected
   previous status, hands the email to the transport, writes the
   ``email_log`` document and marks the claim sent; a send error marks the
   claim failed with the error, and the missed-email retry picks it up.

Nothing here spans two databases or promises atomicity across steps: every
step can be repeated safely, and a crash leaves a claim the retry takes over.
"""
from __future__ import annotations

import datetime as dt
import html as html_lib
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pymongo import ReturnDocument

from .. import registry
from ..errors import OperationFailed, UsageError
from ..read.order_docs import STAGES, first_image_at, stage_images
from ..read.rules import group_order_logs
from ..schema_setup import require_order_schema
from .audit import operator_identity
from .claims import claim_doc
from .guard import mongo_step, order_db, send_budget
from .hooks import SourceActions
from .mail import Email, MailError, MailTransport, PlainSender, send_within, transport_from_config
from .tokens import lease_token

if TYPE_CHECKING:
    from pymongo.database import Database

    from ..bootstrap import Workspace
    from ..read.models import DuplicateGroup
    from ..sources import OrderStore

_CONVERT_ROUNDS = 8
_AFTER_FIELDS = {"id": 1, "status": 1, "driver_id": 1, "images": 1}
_READY: weakref.WeakValueDictionary[int, object] = weakref.WeakValueDictionary()


def _require_schema_once(store: OrderStore) -> None:
    """The claim index must exist before any upload relies on it; once seen, it stays."""
    if _READY.get(id(store)) is store:
        return
    require_order_schema(store)
    _READY[id(store)] = store


@dataclass
class ImageOutcome:
    order_id: int
    stage: str
    images: int                 # images of the stage after this upload
    emailed: bool
    status: str | None          # the order's status afterwards, as far as this upload knows
    reason: str | None = None   # why no email, or the send error
    message_id: str | None = None
    error: str | None = None    # the send error, when the email could not be handed over


def _order_id(value: object) -> int:
    try:
        oid = int(str(value).strip())
    except ValueError:
        raise UsageError(f"The order id {value!r} is not a number.") from None
    return oid


def _ensure_stage_list(db: Database[dict[str, Any]], oid: int, stage: str) -> None:
    """Turn a legacy ``images.<stage>`` (single object or null) into a list, race-free."""
    for _ in range(_CONVERT_ROUNDS):
        doc = db["orders"].find_one({"id": oid}, projection={"images": 1})
        if doc is None:
            raise OperationFailed(f"Order {oid} does not exist.")
        images = doc.get("images")
        if images is None:
            db["orders"].update_one({"id": oid, "images": None}, {"$set": {"images": {stage: []}}})
            continue
        if not isinstance(images, dict):
            raise OperationFailed(f"Order {oid} has an images field of an unknown shape ({type(images).__name__}).")
        value = images.get(stage)
        if isinstance(value, list):
            return
        # The filter names the exact legacy value and excludes arrays, so an
        # update only applies to the shape it was computed from: a converter
        # that lost the race matches nothing and re-reads.
        if value is None:
            db["orders"].update_one({"id": oid, f"images.{stage}": {"$eq": None, "$not": {"$type": "array"}}},
                                    {"$set": {f"images.{stage}": []}})
        elif isinstance(value, dict):
            db["orders"].update_one({"id": oid, f"images.{stage}": {"$eq": value, "$not": {"$type": "array"}}},
                                    {"$set": {f"images.{stage}": [value] if value else []}})
        else:
            raise OperationFailed(f"Order {oid} has {stage} images of an unknown shape ({type(value).__name__}).")
    raise OperationFailed(f"Order {oid}'s {stage} images keep changing shape; try the upload again.")


def stage_email(workspace: Workspace, order: dict[str, Any], oid: int, stage: str, event: str, count: int) -> Email:
    mail = workspace.config.mail
    images = stage_images(order, stage) if order else []
    rows = "".join(
        f"<li>{html_lib.escape(str(i.get('filename', '')))} "
        f"<a href=\"{html_lib.escape(str(i.get('url', '')))}\">{html_lib.escape(str(i.get('url', '')))}</a></li>"
        for i in images[:20] if isinstance(i, dict))
    driver = order.get("driver_id") if order else None
    return Email(
        to=mail.admin_to,
        subject=f"Order #{oid}: driver added {stage} images",
        html=(f"<p>The driver{' #' + html_lib.escape(str(driver)) if driver is not None else ''} added "
              f"{stage} images to order <b>#{oid}</b>.</p><ul>{rows}</ul>"),
        text=f"The driver added {stage} images to order #{oid} ({count} so far).\n",
        headers={"X-NC-Order": str(oid), "X-NC-Event": event})


def _move_status(store: OrderStore, oid: int, stage: str) -> bool:
    _event, before, after = STAGES[stage]
    res = order_db(store)["orders"].update_one({"id": oid, "status": before},
                                        {"$set": {"status": after, "updated_at": store.now()}})
    return res.modified_count == 1


def _send_claimed(workspace: Workspace, store: OrderStore, transport: MailTransport | PlainSender,
                  order: dict[str, Any], oid: int, stage: str, token: str, count: int,
                  budget_seconds: float) -> tuple[str | None, str | None]:
    """Hand the claimed stage email over, log it, mark the claim; (message_id, error)."""
    db = order_db(store)
    event = STAGES[stage][0]
    email = stage_email(workspace, order, oid, stage, event, count)
    try:
        message_id = send_within(transport, email, budget_seconds)
    except MailError as exc:
        error = exc.message
    except Exception as exc:  # a transport bug must still leave the claim failed, not "sending"
        error = f"{type(exc).__name__}: {exc}"
    else:
        now = store.now()
        # email_log first: a crash before the claim is marked leaves the log,
        # and the retry sees it and skips.
        log = db["email_log"].insert_one({
            "order_id": oid, "event": event, "to": email.to, "subject": email.subject,
            "message_id": message_id, "transport": getattr(transport, "name", "smtp"), "sent_at": now})
        db["nc_email_claims"].update_one(
            {"order_id": oid, "event": event, "owner": token},
            {"$set": {"state": "sent", "sent_at": now, "message_id": message_id,
                      "email_log_id": log.inserted_id, "error": None}})
        return message_id, None
    db["nc_email_claims"].update_one(
        {"order_id": oid, "event": event, "owner": token, "state": "sending"},
        {"$set": {"state": "failed", "error": error, "failed_at": store.now()}})
    return None, error


# --------------------------------------------------------------------------
# The production path (what seed 000's upload handler should have run)

def add_order_image(workspace: Workspace, order_id: object, stage: str, image: dict[str, Any],
                    transport: MailTransport | PlainSender | None = None) -> ImageOutcome:
    """Add one driver image to an order; the first image of a stage sends the admin email once."""
    oid = _order_id(order_id)
    if stage not in STAGES:
        raise UsageError(f"Unknown image stage {stage!r}: choose pickup or delivery.")
    if not isinstance(image, dict) or not image:
        raise UsageError("The image must be a non-empty document (filename, url, uploaded_at, uploaded_by).")
    image = dict(image)
    event = STAGES[stage][0]
    store = workspace.orders()
    db = order_db(store)
    _require_schema_once(store)
    lease = dt.timedelta(minutes=workspace.config.thresholds.order_missed_minutes)
    image.setdefault("uploaded_at", mongo_step("reading the orders database's clock", store.now))

    def push() -> dict[str, Any]:
        # Current documents take the push at once; a legacy (or missing) one
        # matches nothing, is converted, and the push is tried again.
        for _ in range(_CONVERT_ROUNDS):
            after = db["orders"].find_one_and_update(
                {"id": oid, f"images.{stage}": {"$type": "array"}},
                {"$push": {f"images.{stage}": image}, "$set": {"updated_at": store.now()}},
                projection=_AFTER_FIELDS, return_document=ReturnDocument.AFTER)
            if after is not None:
                return after
            _ensure_stage_list(db, oid, stage)
        raise OperationFailed(f"Order {oid}'s {stage} images keep changing shape; try the upload again.")

    after = mongo_step(f"adding a {stage} image to order {oid}", push)
    count = len(after["images"][stage])
    if count != 1:
        return ImageOutcome(oid, stage, count, False, after.get("status"),
                            reason=f"not the first {stage} image ({count} now)")

    token = lease_token(operator_identity())

    claimed = time.monotonic()

    def claim() -> bool:
        return claim_doc(db["nc_email_claims"], {
            "order_id": oid, "event": event, "state": "sending", "owner": token,
            "claimed_at": store.now(), "attempts": 1, "error": None}, key={"order_id": oid, "event": event})

    if not mongo_step(f"claiming the {event} email of order {oid}", claim):
        return ImageOutcome(oid, stage, count, False, after.get("status"),
                            reason=f"the {event} email of order {oid} was already claimed")
    moved = mongo_step(f"moving order {oid}'s status", lambda: _move_status(store, oid, stage))
    status = STAGES[stage][2] if moved else after.get("status")
    transport = transport or transport_from_config(workspace)
    message_id, error = mongo_step(f"sending the {event} email of order {oid}",
                               lambda: _send_claimed(workspace, store, transport, after, oid, stage, token, count,
                                                     send_budget(lease, claimed)))
    if error is not None:
        return ImageOutcome(oid, stage, count, False, status, reason=error, error=error)
    return ImageOutcome(oid, stage, count, True, status, message_id=message_id)


# --------------------------------------------------------------------------
# Admin retry of missed stage emails (app.services.retry calls this per order)

def _claim_for_retry(store: OrderStore, oid: int, event: str, token: str, lease: dt.timedelta) -> bool:
    now = store.now()
    # A failed claim (nothing was sent) or one whose sender died (still
    # "sending" after the lease): exactly one retrier's update matches.
    return claim_doc(
        order_db(store)["nc_email_claims"],
        {"order_id": oid, "event": event, "state": "sending", "owner": token, "claimed_at": now, "attempts": 1,
         "error": None},
        key={"order_id": oid, "event": event},
        finished={"$or": [{"state": "failed"}, {"state": "sending", "claimed_at": {"$lt": now - lease}}]},
        takeover={"$set": {"state": "sending", "owner": token, "claimed_at": now}, "$inc": {"attempts": 1}})


def _claim_reason(db: Database[dict[str, Any]], oid: int, event: str) -> str:
    claim = db["nc_email_claims"].find_one({"order_id": oid, "event": event})
    if claim is None:
        return f"the {event} email of order {oid} is being handled by another console"
    if claim.get("state") == "sent":
        return f"the {event} email of order {oid} was already sent"
    if claim.get("state") == "sending":
        return f"the {event} email of order {oid} is being sent by {claim.get('owner') or 'another console'}"
    return f"the {event} email of order {oid} was just taken by another console"


def retry_item(workspace: Workspace, item_id: str, *, operator: str, action_id: str,
               transport: MailTransport | PlainSender | None = None) -> tuple[str, str | None]:
    """Send every missed stage email of one order, each exactly once."""
    oid = registry.source("orders").parse_item_id(item_id)
    store = workspace.orders()
    db = order_db(store)
    grace = dt.timedelta(minutes=workspace.config.thresholds.order_missed_minutes)

    def read() -> dict[str, Any] | None:
        return db["orders"].find_one({"id": oid})
    order = mongo_step(f"reading order {oid}", read)
    if order is None:
        raise OperationFailed(f"Order {oid} does not exist.")
    now = mongo_step("reading the orders database's clock", store.now)
    missed: list[tuple[str, str, int]] = []
    notes: list[str] = []
    for stage, (event, _before, _after) in STAGES.items():
        images = stage_images(order, stage)
        if not images:
            continue
        if mongo_step("reading email_log", db["email_log"].find_one, {"order_id": oid, "event": event}):
            notes.append(f"the {event} email of order {oid} was already sent")
            continue
        first = first_image_at(order, images)
        if first is None or now - first < grace:
            minutes = (now - first).total_seconds() / 60 if first else 0
            notes.append(f"order {oid}'s {stage} images were added {minutes:.0f} min ago, "
                         f"not yet missed ({grace.total_seconds() / 60:g}-minute grace period)")
            continue
        missed.append((stage, event, len(images)))
    if not missed:
        return "skipped", "; ".join(notes) if notes else f"order {oid} has no images"

    transport = transport or transport_from_config(workspace)
    sent: list[str] = []
    errors: list[str] = []
    for stage, event, count in missed:
        token = lease_token(operator, action_id)
        claimed = time.monotonic()
        if not mongo_step(f"claiming the {event} email", _claim_for_retry, store, oid, event, token, grace):
            notes.append(mongo_step("reading the claim", _claim_reason, db, oid, event))
            continue
        # Holding the claim: a sender that logged the email and died before
        # marking its claim must not cause a second email.
        logged = mongo_step("reading email_log", db["email_log"].find_one, {"order_id": oid, "event": event})
        if logged is not None:
            db["nc_email_claims"].update_one({"order_id": oid, "event": event, "owner": token},
                                             {"$set": {"state": "sent", "sent_at": logged.get("sent_at"),
                                                       "email_log_id": logged["_id"], "error": None}})
            notes.append(f"the {event} email of order {oid} was already sent")
            continue
        mongo_step(f"moving order {oid}'s status", _move_status, store, oid, stage)
        _message_id, error = mongo_step(f"sending the {event} email of order {oid}", _send_claimed, workspace, store,
                                        transport, order, oid, stage, token, count, send_budget(grace, claimed))
        if error is None:
            sent.append(event)
        else:
            errors.append(f"the {event} email could not be sent: {error}")
    if errors:
        done = f" (sent: {', '.join(sent)})" if sent else ""
        raise OperationFailed(f"Order {oid}: {'; '.join(errors)}{done}.")
    if sent:
        return "retried", None
    return "skipped", "; ".join(notes)


# --------------------------------------------------------------------------
# What retry and cleanup look up for this source (app.services.by_source)

def _regroup(workspace: Workspace, docs: list[dict[str, Any]], conn: object) -> list[DuplicateGroup]:
    return group_order_logs(docs)


ACTIONS = SourceActions(source=registry.source("orders"), retry_item=retry_item, regroup=_regroup,
                        archive_collection="email_log")
