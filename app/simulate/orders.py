"""Simulator driver for the order database (driver image uploads, seed 000).

An event is one order whose driver has arrived at the pickup; the driver
uploads ``ATTEMPTS_PER_EVENT`` images at once (a multi-file upload).

* ``naive`` runs seed 000's first attempt: read the image count, store the
  image, ``$push`` it, and send the admin email when the count read *before*
  the push was 0 — uploads that read before any push all send. Legacy
  documents are converted the seed's way, by an unconditional ``$set``.
* ``guarded`` calls the production path, ``app.services.orders.add_order_image``.

Both modes store the image file first (``WORK_SECONDS``), as the upload
handler does, so throughputs compare fairly. A quarter of the run's orders
are legacy-shaped (``images.pickup`` null). Mail goes to an in-memory
counting transport; ``count`` reads ``email_log``: ``produced`` is the
pickup emails logged for the run's orders, ``duplicates`` those beyond one
per order.
"""
from __future__ import annotations

import random
import time
import uuid
from typing import Any

from pymongo import DESCENDING
from pymongo.errors import BulkWriteError, DuplicateKeyError

from ..errors import OperationFailed
from ..read.order_docs import stage_images
from ..services import orders as service
from ..services.mail import MemoryTransport
from ..sqlutil import utcnow

SOURCE = "orders"  # the source this driver produces traffic for

ATTEMPTS_PER_EVENT = 3
WORK_SECONDS = 0.002
LEGACY_SHARE = 0.25
EVENT = "pickup_images_added"

TRANSPORT = MemoryTransport(keep=False)


def prepare(workspace, events: int, seed: int) -> dict:
    """Create one DRIVER_ARRIVED order per event, with fresh order ids."""
    rng = random.Random(seed)
    token = uuid.uuid4().hex[:10]
    db = workspace.orders().db
    now = utcnow()
    for _ in range(5):
        top = db["orders"].find_one({}, projection={"id": 1}, sort=[("id", DESCENDING)])
        base = int(top["id"]) + 1 if top and isinstance(top.get("id"), int) else 1
        docs: list[dict[str, Any]] = []
        for e in range(events):
            legacy = rng.random() < LEGACY_SHARE
            docs.append({"id": base + e, "status": "DRIVER_ARRIVED", "customer_email": f"sim-{token}-{e}@simulator.invalid",
                         "driver_id": rng.randint(1, 40),
                         "images": {"pickup": None, "delivery": None} if legacy else {"pickup": [], "delivery": []},
                         "created_at": now, "updated_at": now, "nc_sim": token})
        try:
            for start in range(0, len(docs), 1000):
                db["orders"].insert_many(docs[start:start + 1000])
            return {"token": token, "orders": [d["id"] for d in docs]}
        except (BulkWriteError, DuplicateKeyError):
            # Another run took the same ids at the same moment: drop ours and pick new ones.
            db["orders"].delete_many({"nc_sim": token})
    raise OperationFailed("The simulator could not reserve order ids: other runs keep taking them.")


def _image(plan: dict, event: int, attempt: int) -> dict:
    oid = plan["orders"][event]
    return {"filename": f"p{attempt}.jpg", "url": f"/uploads/{oid}/p{attempt}.jpg",
            "uploaded_at": utcnow(), "uploaded_by": 7}


def run_attempt(workspace, plan: dict, event: int, attempt: int, mode: str) -> None:
    if mode == "naive":
        naive_attempt(workspace, plan, event, attempt)
    else:
        guarded_attempt(workspace, plan, event, attempt)


def guarded_attempt(workspace, plan: dict, event: int, attempt: int) -> None:
    time.sleep(WORK_SECONDS)  # the image file is stored before the document changes
    out = service.add_order_image(workspace, plan["orders"][event], "pickup", _image(plan, event, attempt),
                                  transport=TRANSPORT)
    if out.error:
        raise OperationFailed(out.error)


def naive_attempt(workspace, plan: dict, event: int, attempt: int, between=None) -> None:
    """Seed 000's upload handler, first attempt. ``between`` runs between the count and the push."""
    oid = plan["orders"][event]
    db = workspace.orders().db
    before = db["orders"].find_one({"id": oid})
    count_before = len(stage_images(before, "pickup"))
    if between is not None:
        between()
    else:
        time.sleep(WORK_SECONDS)  # storing the image file
    raw = (before.get("images") or {}).get("pickup")
    if not isinstance(raw, list):  # the seed's migration: unconditional, so it can drop a concurrent image
        db["orders"].update_one({"id": oid}, {"$set": {"images.pickup": [raw] if raw else []}})
    db["orders"].update_one({"id": oid}, {"$push": {"images.pickup": _image(plan, event, attempt)},
                                          "$set": {"updated_at": utcnow()}})
    if count_before == 0:
        db["orders"].update_one({"id": oid}, {"$set": {"status": "PICKUP_IMAGES_ADDED", "updated_at": utcnow()}})
        email = service.stage_email(workspace, before, oid, "pickup", EVENT, 1)
        message_id = TRANSPORT.send(email)
        db["email_log"].insert_one({"order_id": oid, "event": EVENT, "to": email.to, "subject": email.subject,
                                    "message_id": message_id, "transport": TRANSPORT.name, "sent_at": utcnow()})


def count(workspace, plan: dict) -> tuple[int, int]:
    """(pickup emails logged, duplicates among them) for the run's orders."""
    db = workspace.orders().db
    produced = 0
    orders_emailed = set()
    ids = plan["orders"]
    for start in range(0, len(ids), 1000):
        for doc in db["email_log"].find({"order_id": {"$in": ids[start:start + 1000]}, "event": EVENT},
                                        projection={"order_id": 1}):
            produced += 1
            orders_emailed.add(doc["order_id"])
    return produced, produced - len(orders_emailed)
