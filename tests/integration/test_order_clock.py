"""Order-side leases run on the order database's clock, not the workstation's.

The "server" here is a mongomock database answering ``hello`` with a
``localTime`` that differs from this machine's clock, as a real MongoDB
server does when the workstation's clock is off.
"""
from __future__ import annotations

import datetime as dt

import mongomock
import pytest

from app import sources
from app.schema_setup import upgrade_order_store
from app.services import orders as orders_service
from app.services.mail import MemoryTransport
from app.sources import OrderStore, open_order_store
from app.sqlutil import utcnow

EVENT = "pickup_images_added"


class ServerDb:
    """A mongomock database whose ``hello`` reports a clock ``skew`` away from this machine's."""

    def __init__(self, skew: dt.timedelta):
        self._db = mongomock.MongoClient(tz_aware=False)["orders"]
        self.skew = skew
        self.hellos = 0
        self.name = "orders"

    def command(self, name, *args, **kwargs):
        assert name == "hello"
        self.hellos += 1
        return {"isWritablePrimary": True, "localTime": (utcnow() + self.skew).replace(microsecond=0)}

    def __getitem__(self, name):
        return self._db[name]

    def __getattr__(self, name):
        return getattr(self._db, name)


class Client:
    class admin:  # noqa: N801 - pymongo's attribute name
        @staticmethod
        def command(name):
            return {"ok": 1}

    def close(self):
        pass


def server_store(skew: dt.timedelta) -> OrderStore:
    store = OrderStore(db=ServerDb(skew), kind="mongodb", client=Client())
    upgrade_order_store(store)
    return store


@pytest.fixture
def ws_on_server(workspace_factory):
    def make(skew: dt.timedelta):
        ws = workspace_factory()
        ws._orders = server_store(skew)  # what open_order_store returns for a mongodb:// URL
        return ws
    return make


def close_to(a: dt.datetime, b: dt.datetime, seconds: float = 2.0) -> bool:
    return abs((a - b).total_seconds()) <= seconds


def test_server_clock_is_read_once_and_the_offset_reused(monkeypatch):
    store = server_store(dt.timedelta(hours=-1))
    db = store.db
    assert close_to(store.now(), utcnow() - dt.timedelta(hours=1))
    assert close_to(store.now(), utcnow() - dt.timedelta(hours=1))
    assert db.hellos == 1
    # After the refresh period the server is asked again (and a changed clock is seen).
    db.skew = dt.timedelta(hours=-2)
    real = sources.time.monotonic
    monkeypatch.setattr(sources.time, "monotonic", lambda: real() + sources.CLOCK_REFRESH_S + 1)
    assert close_to(store.now(), utcnow() - dt.timedelta(hours=2))
    assert db.hellos == 2


def test_mock_store_runs_on_the_local_clock():
    store = open_order_store("mongomock://clock-local")
    assert close_to(store.now(), utcnow(), 1.0)


def add_missed_order(db, oid: int, *, images_at: dt.datetime):
    img = {"filename": "a.jpg", "url": "/a.jpg", "uploaded_at": images_at, "uploaded_by": 7}
    db["orders"].insert_one({"id": oid, "status": "PICKUP_IMAGES_ADDED", "driver_id": 7,
                             "created_at": images_at, "updated_at": images_at,
                             "images": {"pickup": [img], "delivery": []}})


def test_workstation_clock_ahead_does_not_take_over_a_live_claim(ws_on_server):
    # The server is 30 minutes behind this workstation (its clock runs ahead).
    ws = ws_on_server(dt.timedelta(minutes=-30))
    store = ws.orders()
    server_now = store.now()
    add_missed_order(store.db, 1, images_at=server_now - dt.timedelta(minutes=20))
    # Another console claimed the email a minute ago, by the server's clock, and is sending it.
    store.db["nc_email_claims"].insert_one({"order_id": 1, "event": EVENT, "state": "sending",
                                            "owner": "other-console#1", "claimed_at": server_now
                                            - dt.timedelta(minutes=1), "attempts": 1, "error": None})
    transport = MemoryTransport()
    status, reason = orders_service.retry_item(ws, "1", operator="t", action_id="clock-1", transport=transport)
    assert status == "skipped"
    assert reason == f"the {EVENT} email of order 1 is being sent by other-console#1"
    assert transport.count == 0
    assert store.db["nc_email_claims"].find_one({"order_id": 1})["owner"] == "other-console#1"


def test_workstation_clock_behind_still_takes_over_an_expired_claim(ws_on_server):
    # The server is 30 minutes ahead: by its clock the claim is 15 minutes old, past the 10-minute lease.
    ws = ws_on_server(dt.timedelta(minutes=30))
    store = ws.orders()
    server_now = store.now()
    add_missed_order(store.db, 2, images_at=server_now - dt.timedelta(minutes=20))
    store.db["nc_email_claims"].insert_one({"order_id": 2, "event": EVENT, "state": "sending",
                                            "owner": "dead-console#1", "claimed_at": server_now
                                            - dt.timedelta(minutes=15), "attempts": 1, "error": None})
    transport = MemoryTransport()
    status, reason = orders_service.retry_item(ws, "2", operator="t", action_id="clock-2", transport=transport)
    assert (status, reason) == ("retried", None)
    assert transport.count == 1
    claim = store.db["nc_email_claims"].find_one({"order_id": 2})
    assert claim["state"] == "sent" and claim["attempts"] == 2
    assert close_to(claim["claimed_at"], server_now) and close_to(claim["sent_at"], server_now)
    [log] = list(store.db["email_log"].find({"order_id": 2}))
    assert close_to(log["sent_at"], server_now)


def test_images_not_yet_missed_by_the_server_clock_are_not_retried(ws_on_server):
    # Uploaded 5 minutes ago by the server's clock; this workstation runs 30 minutes ahead.
    ws = ws_on_server(dt.timedelta(minutes=-30))
    store = ws.orders()
    add_missed_order(store.db, 3, images_at=store.now() - dt.timedelta(minutes=5))
    transport = MemoryTransport()
    status, reason = orders_service.retry_item(ws, "3", operator="t", action_id="clock-3", transport=transport)
    assert status == "skipped" and "not yet missed" in reason
    assert transport.count == 0


def test_upload_stamps_image_claim_and_log_with_the_server_clock(ws_on_server):
    ws = ws_on_server(dt.timedelta(hours=-3))
    store = ws.orders()
    store.db["orders"].insert_one({"id": 4, "status": "DRIVER_ARRIVED", "driver_id": 7,
                                   "images": {"pickup": [], "delivery": []}})
    out = orders_service.add_order_image(ws, 4, "pickup", {"filename": "a.jpg", "url": "/a.jpg"},
                                         transport=MemoryTransport())
    assert out.emailed
    server_now = utcnow() - dt.timedelta(hours=3)
    order = store.db["orders"].find_one({"id": 4})
    claim = store.db["nc_email_claims"].find_one({"order_id": 4})
    log = store.db["email_log"].find_one({"order_id": 4})
    for value in (order["images"]["pickup"][0]["uploaded_at"], order["updated_at"],
                  claim["claimed_at"], claim["sent_at"], log["sent_at"]):
        assert close_to(value, server_now)
