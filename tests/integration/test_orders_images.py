"""Order stage emails: concurrent uploads, legacy documents, missed-email retry.

Runs on mongomock, and on a real MongoDB when NC_TEST_MONGO_URI is set.
"""
from __future__ import annotations

import datetime as dt
import threading

import pytest

from app.errors import OperationFailed, UsageError
from app.services import orders as orders_service
from app.services.mail import MemoryTransport, OutboxTransport, PermanentMailError
from app.services.retry import retry
from app.sqlutil import utcnow
from tests.helpers import guard_reason


class Failing:
    name = "smtp"

    def send(self, email):
        raise PermanentMailError("The mail server 127.0.0.1:25 refused the message (550 no such mailbox)")


@pytest.fixture
def ws(workspace_factory, order_store_url):
    return workspace_factory(orders=order_store_url)


def add_order(ws, oid, *, status="DRIVER_ARRIVED", images=..., created=None):
    doc = {"id": oid, "status": status, "customer_email": f"c{oid}@example.com", "driver_id": 7,
           "created_at": created or utcnow(), "updated_at": created or utcnow()}
    if images is not ...:
        doc["images"] = images
    else:
        doc["images"] = {"pickup": [], "delivery": []}
    ws.orders().db["orders"].insert_one(doc)


def image(n, at=None):
    return {"filename": f"p{n}.jpg", "url": f"/uploads/p{n}.jpg", "uploaded_at": at or utcnow(), "uploaded_by": 7}


def order(ws, oid):
    return ws.orders().db["orders"].find_one({"id": oid})


def logs(ws, oid=None):
    flt = {} if oid is None else {"order_id": oid}
    return list(ws.orders().db["email_log"].find(flt))


def concurrently(n, fn):
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def run(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return results


def outbox_files(tmp_path):
    return OutboxTransport(tmp_path / "outbox").files()


def test_five_concurrent_pickup_uploads_send_one_email(ws, tmp_path):
    for oid in (1042, 1043, 1044):
        add_order(ws, oid)
        outcomes = concurrently(5, lambda i, oid=oid: orders_service.add_order_image(ws, oid, "pickup", image(i)))
        assert sorted(o.images for o in outcomes) == [1, 2, 3, 4, 5]
        assert [o.emailed for o in outcomes].count(True) == 1
        doc = order(ws, oid)
        assert doc["status"] == "PICKUP_IMAGES_ADDED"
        assert len(doc["images"]["pickup"]) == 5
        [log] = logs(ws, oid)
        assert log["event"] == "pickup_images_added" and log["transport"] == "outbox"
        assert log["subject"] == f"Order #{oid}: driver added pickup images"
        assert log["to"] == ws.config.mail.admin_to and log["message_id"]
        claim = ws.orders().db["nc_email_claims"].find_one({"order_id": oid})
        assert claim["state"] == "sent" and claim["message_id"] == log["message_id"]
    assert len(outbox_files(tmp_path)) == 3


def test_delivery_stage_moves_status_and_sends_its_own_email(ws):
    add_order(ws, 7, status="DELIVERY_ARRIVED",
              images={"pickup": [image(0)], "delivery": []})
    mem = MemoryTransport()
    first = orders_service.add_order_image(ws, 7, "delivery", image(1), transport=mem)
    second = orders_service.add_order_image(ws, 7, "delivery", image(2), transport=mem)
    assert (first.emailed, first.status) == (True, "DELIVERY_IMAGES_ADDED")
    assert (second.emailed, second.images, second.reason) == (False, 2, "not the first delivery image (2 now)")
    assert [log["event"] for log in logs(ws, 7)] == ["delivery_images_added"]
    assert len(mem.sent) == 1 and mem.sent[0][1].headers["X-NC-Event"] == "delivery_images_added"


def test_status_elsewhere_is_left_alone_but_the_first_image_still_emails(ws):
    add_order(ws, 8, status="IN_TRANSIT")
    out = orders_service.add_order_image(ws, 8, "pickup", image(1), transport=MemoryTransport())
    assert out.emailed and out.status == "IN_TRANSIT"
    assert order(ws, 8)["status"] == "IN_TRANSIT"


@pytest.mark.parametrize("legacy", ["null_stage", "missing_stage", "null_images"])
def test_legacy_empty_documents_concurrently(ws, legacy):
    shapes = {"null_stage": {"pickup": None, "delivery": None}, "missing_stage": {}, "null_images": None}
    add_order(ws, 9, images=shapes[legacy])
    mem = MemoryTransport()
    outcomes = concurrently(5, lambda i: orders_service.add_order_image(ws, 9, "pickup", image(i), transport=mem))
    assert sorted(o.images for o in outcomes) == [1, 2, 3, 4, 5]
    doc = order(ws, 9)
    assert len(doc["images"]["pickup"]) == 5 and doc["status"] == "PICKUP_IMAGES_ADDED"
    assert len(logs(ws, 9)) == 1 and len(mem.sent) == 1


def test_legacy_single_image_is_kept_and_no_new_email(ws):
    legacy = {"filename": "old.jpg", "url": "/uploads/old.jpg", "uploaded_by": 7}
    add_order(ws, 10, status="PICKUP_IMAGES_ADDED", images={"pickup": legacy, "delivery": None})
    mem = MemoryTransport()
    outcomes = concurrently(5, lambda i: orders_service.add_order_image(ws, 10, "pickup", image(i), transport=mem))
    assert sorted(o.images for o in outcomes) == [2, 3, 4, 5, 6]
    pickup = order(ws, 10)["images"]["pickup"]
    assert isinstance(pickup, list) and len(pickup) == 6
    assert pickup[0] == legacy
    assert logs(ws, 10) == [] and mem.sent == []


def test_image_removed_and_added_again_does_not_email_twice(ws):
    add_order(ws, 11)
    mem = MemoryTransport()
    assert orders_service.add_order_image(ws, 11, "pickup", image(1), transport=mem).emailed
    ws.orders().db["orders"].update_one({"id": 11}, {"$set": {"images.pickup": []}})
    again = orders_service.add_order_image(ws, 11, "pickup", image(2), transport=mem)
    assert (again.images, again.emailed) == (1, False)
    assert again.reason == "the pickup_images_added email of order 11 was already claimed"
    assert len(mem.sent) == 1 and len(logs(ws, 11)) == 1


def test_bad_upload_input(ws):
    add_order(ws, 12)
    with pytest.raises(UsageError, match="pickup or delivery"):
        orders_service.add_order_image(ws, 12, "dropoff", image(1))
    with pytest.raises(UsageError, match="not a number"):
        orders_service.add_order_image(ws, "x", "pickup", image(1))
    with pytest.raises(OperationFailed, match="Order 404 does not exist"):
        orders_service.add_order_image(ws, 404, "pickup", image(1))


# --------------------------------------------------------------------------
# failures and the missed-email retry

def test_send_failure_marks_the_claim_and_retry_sends_once_after_the_grace(ws, tmp_path):
    add_order(ws, 20)
    out = orders_service.add_order_image(ws, 20, "pickup", image(1), transport=Failing())
    assert not out.emailed and "550" in out.reason
    assert out.status == "PICKUP_IMAGES_ADDED"
    claim = ws.orders().db["nc_email_claims"].find_one({"order_id": 20})
    assert claim["state"] == "failed" and "550" in claim["error"]
    assert logs(ws, 20) == []
    # not missed yet: inside the grace period
    early = retry(ws, "orders", ids=["20"], action_id="retry-early")
    assert early["retried"] == 0
    assert "not yet missed" in early["skipped"][0]["reason"]
    # 30 minutes later it is missed
    ws.orders().db["orders"].update_one({"id": 20}, {"$set": {
        "images.pickup.0.uploaded_at": utcnow() - dt.timedelta(minutes=30)}})
    done = retry(ws, "orders", ids=["20"], action_id="retry-late")
    assert done["retried"] == 1 and done["failed"] == []
    assert len(logs(ws, 20)) == 1 and len(outbox_files(tmp_path)) == 1
    assert ws.orders().db["nc_email_claims"].find_one({"order_id": 20})["state"] == "sent"
    again = retry(ws, "orders", ids=["20"], action_id="retry-again")
    # The guard's reason, naming the console retry that sent it (the order store's ledger).
    [skip] = again["skipped"]
    assert skip["id"] == 20 and guard_reason(skip) == "the pickup_images_added email of order 20 was already sent"
    assert skip["reason"].startswith("already retried by ")
    assert len(outbox_files(tmp_path)) == 1


def test_missed_emails_of_both_stages_concurrent_retries_send_each_once(ws, tmp_path):
    old = utcnow() - dt.timedelta(hours=2)
    # images written by a handler that never emailed (no claim, no email_log); delivery is legacy-shaped
    add_order(ws, 30, status="DELIVERY_IMAGES_ADDED", created=old,
              images={"pickup": [image(1, old), image(2, old)],
                      "delivery": {"filename": "d.jpg", "url": "/uploads/d.jpg", "uploaded_at": old}})
    results = concurrently(8, lambda i: retry(ws, "orders", ids=["30"], action_id=f"retry-{i}"))
    assert sum(r["retried"] for r in results) >= 1
    assert all(r["failed"] == [] for r in results)
    assert sorted(log["event"] for log in logs(ws, 30)) == ["delivery_images_added", "pickup_images_added"]
    assert len(outbox_files(tmp_path)) == 2
    # retry never reshapes the order
    assert isinstance(order(ws, 30)["images"]["delivery"], dict)


def test_dead_sender_claim_is_taken_over_after_the_grace(ws):
    old = utcnow() - dt.timedelta(minutes=40)
    add_order(ws, 40, created=old, images={"pickup": [image(1, old)], "delivery": []})
    claims = ws.orders().db["nc_email_claims"]
    claims.insert_one({"order_id": 40, "event": "pickup_images_added", "state": "sending",
                       "owner": "dead@host#1", "claimed_at": utcnow(), "attempts": 1})
    mem = MemoryTransport()
    assert orders_service.retry_item(ws, "40", operator="op", action_id="a1", transport=mem) == (
        "skipped", "the pickup_images_added email of order 40 is being sent by dead@host#1")
    claims.update_one({"order_id": 40}, {"$set": {"claimed_at": utcnow() - dt.timedelta(minutes=11)}})
    assert orders_service.retry_item(ws, "40", operator="op", action_id="a2", transport=mem) == ("retried", None)
    assert len(mem.sent) == 1
    # status moved by the retry too (conditional on DRIVER_ARRIVED)
    assert order(ws, 40)["status"] == "PICKUP_IMAGES_ADDED"


def test_sender_died_after_logging_retry_does_not_resend(ws):
    old = utcnow() - dt.timedelta(minutes=40)
    add_order(ws, 41, created=old, images={"pickup": [image(1, old)], "delivery": []})
    db = ws.orders().db
    db["nc_email_claims"].insert_one({"order_id": 41, "event": "pickup_images_added", "state": "sending",
                                      "owner": "dead@host#2", "claimed_at": utcnow() - dt.timedelta(minutes=30),
                                      "attempts": 1})
    db["email_log"].insert_one({"order_id": 41, "event": "pickup_images_added", "to": "a@x", "subject": "s",
                                "message_id": "<m@x>", "transport": "smtp", "sent_at": old})
    mem = MemoryTransport()
    outcome, reason = orders_service.retry_item(ws, "41", operator="op", action_id="a", transport=mem)
    assert outcome == "skipped" and "already sent" in reason
    assert mem.sent == []


def test_retry_of_orders_without_missed_emails(ws):
    add_order(ws, 50)
    with pytest.raises(UsageError, match="The order id 'x' is not a positive whole number"):
        retry(ws, "orders", ids=["50", "x"], action_id="retry-0")
    out = retry(ws, "orders", ids=["50", "404"], action_id="retry-1")
    assert out["skipped"] == [{"id": 50, "reason": "order 50 has no images"}]
    assert out["failed"] == [{"id": 404, "error": "Order 404 does not exist."}]
