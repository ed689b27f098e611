"""The cart and order paths give the transport at most half of their claim's lease.

After the lease another console may take the claim over and send the email
again, so a slow mail server must make the send fail before that, never after.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import socket
import threading
import time

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import insert, select

from app.config import Thresholds
from app.schema import cart_log, cart_users, nc_cart_claim
from app.services import cart as cart_service
from app.services import orders as orders_service
from app.services.mail import MailTransport, SmtpTransport
from app.sqlutil import db_now, utcnow


class Recording(MailTransport):
    """Accepts every email and records the budget each send was given."""

    name = "recording"

    def __init__(self):
        self.budgets: list[float | None] = []

    def send(self, email, *, budget_seconds=None):
        self.budgets.append(budget_seconds)
        return f"<{len(self.budgets)}@recording.localhost>"


class SlowData:
    """An SMTP server that takes ``delay`` seconds to answer the end of DATA."""

    def __init__(self, delay):
        self.delay = delay
        self.attempts = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.attempts += 1
        await asyncio.sleep(self.delay)
        return "250 OK"


@pytest.fixture
def slow_smtp():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    handler = SlowData(delay=6.0)
    ctl = Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    yield handler, ctl.port
    ctl.stop()


def cart_ws(workspace_factory, tmp_path, minutes):
    return workspace_factory(cart=f"sqlite:///{tmp_path / 'cart.db'}",
                             thresholds=Thresholds(cart_in_progress_minutes=minutes))


def add_user(engine) -> int:
    with engine.begin() as conn:
        return conn.execute(insert(cart_users).values(email="ann@example.com", name="Ann")).inserted_primary_key[0]


def chash(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def test_cart_send_gets_half_the_in_progress_window(workspace_factory, tmp_path):
    ws = cart_ws(workspace_factory, tmp_path, minutes=1)
    uid = add_user(ws.engine("cart"))
    transport = Recording()
    out = cart_service.process_abandoned_cart(ws, uid, chash("a"), "12.50", transport=transport)
    assert out.status == "sent"
    [budget] = transport.budgets
    assert 29.0 < budget <= 30.0


def test_cart_retry_send_gets_half_the_in_progress_window(workspace_factory, tmp_path):
    ws = cart_ws(workspace_factory, tmp_path, minutes=1)
    engine = ws.engine("cart")
    uid = add_user(engine)
    with engine.begin() as conn:
        now = db_now(conn)
        row = conn.execute(insert(cart_log).values(
            user_id=uid, cart_hash=chash("b"), cart_value="3.00", email_sent=0,
            created_at=now - dt.timedelta(minutes=5), error_message="451 try later")).inserted_primary_key[0]
    transport = Recording()
    status, reason = cart_service.retry_item(ws, str(row), operator="t", action_id="budget-1",
                                             transport=transport)
    assert (status, reason) == ("retried", None)
    [budget] = transport.budgets
    assert 29.0 < budget <= 30.0


def test_slow_smtp_server_fails_the_cart_email_inside_the_in_progress_window(workspace_factory, tmp_path,
                                                                              slow_smtp):
    handler, port = slow_smtp
    ws = cart_ws(workspace_factory, tmp_path, minutes=0.05)  # a 3 s window: the send gets 1.5 s
    engine = ws.engine("cart")
    uid = add_user(engine)
    transport = SmtpTransport(host="127.0.0.1", port=port, sender="c@example.com", timeout=4)
    started = time.monotonic()
    out = cart_service.process_abandoned_cart(ws, uid, chash("c"), "9.99", transport=transport)
    elapsed = time.monotonic() - started
    assert out.status == "failed" and "timed out" in out.reason
    assert elapsed < 3.0  # failed and recorded before another console could take the claim over
    assert handler.attempts == 1
    with engine.connect() as conn:
        claim = conn.execute(select(nc_cart_claim)).mappings().one()
        row = conn.execute(select(cart_log)).mappings().one()
    assert claim["state"] == "failed"
    assert row["email_sent"] == 0 and "timed out" in row["error_message"]


def test_order_stage_email_gets_half_the_claim_lease(workspace_factory, order_store_url):
    ws = workspace_factory(orders=order_store_url, thresholds=Thresholds(order_missed_minutes=1))
    ws.orders().db["orders"].insert_one({"id": 5, "status": "DRIVER_ARRIVED", "driver_id": 7,
                                         "images": {"pickup": [], "delivery": []},
                                         "created_at": utcnow(), "updated_at": utcnow()})
    transport = Recording()
    out = orders_service.add_order_image(ws, 5, "pickup", {"filename": "a.jpg", "url": "/a.jpg"},
                                         transport=transport)
    assert out.emailed
    [budget] = transport.budgets
    assert 29.0 < budget <= 30.0


def test_order_retry_send_gets_half_the_claim_lease(workspace_factory, order_store_url):
    ws = workspace_factory(orders=order_store_url, thresholds=Thresholds(order_missed_minutes=1))
    old = utcnow() - dt.timedelta(minutes=5)
    ws.orders().db["orders"].insert_one({
        "id": 6, "status": "PICKUP_IMAGES_ADDED", "driver_id": 7, "created_at": old, "updated_at": old,
        "images": {"pickup": [{"filename": "a.jpg", "url": "/a.jpg", "uploaded_at": old}], "delivery": []}})
    transport = Recording()
    status, reason = orders_service.retry_item(ws, "6", operator="t", action_id="budget-2", transport=transport)
    assert (status, reason) == ("retried", None)
    [budget] = transport.budgets
    assert 29.0 < budget <= 30.0
