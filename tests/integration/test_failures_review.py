"""Failed / stuck / missed lists: kinds asked together, and the orders missed list's paging."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import insert

from app.read import order_reads
from app.read.failures import failed_items
from app.schema import cart_log
from app.sqlutil import db_now

HA, HB = "a" * 64, "b" * 64


def _cart_row(user, h, at, sent=0, error=None):
    return {"user_id": user, "cart_hash": h, "cart_value": 10, "email_sent": sent, "created_at": at,
            "sent_at": at if sent else None, "error_message": error}


def test_cart_kinds_asked_with_missed_return_exactly_their_rows(workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"))
    with ws.engine("cart").begin() as conn:
        now = db_now(conn).replace(microsecond=0)
        conn.execute(insert(cart_log), [
            _cart_row(1, HA, now - dt.timedelta(minutes=30), error="SMTPRecipientsRefused: no"),  # 1 failed
            _cart_row(2, HB, now - dt.timedelta(minutes=10)),                                      # 2 stuck
        ])
    def ids(kinds):
        return [(i.id, i.kind) for i in failed_items(ws, "cart", kinds=kinds)]
    assert ids(["failed", "missed"]) == [(1, "failed")]
    assert ids(["stuck", "missed"]) == [(2, "stuck")]
    assert ids(["failed", "stuck", "missed"]) == [(2, "stuck"), (1, "failed")]
    assert ids(["missed"]) == []


# --------------------------------------------------------------------------
# orders: the missed list walks a bounded, keyset-paged range

class _CountingOrders:
    """The order store as ``failed_items`` sees it, counting the orders each find returns."""

    def __init__(self, store, after_find=None):
        self._store = store
        self.read = []                 # orders returned per find on ``orders``
        self.after_find = after_find   # called with the call number after each orders find
        outer = self

        class _Coll:
            def __init__(self, coll):
                self._coll = coll

            def find(self, *args, **kwargs):
                docs = list(self._coll.find(*args, **kwargs))
                outer.read.append(len(docs))
                if outer.after_find is not None:
                    outer.after_find(len(outer.read))
                return docs

            def __getattr__(self, name):
                return getattr(self._coll, name)

        class _Db:
            def __getitem__(self, name):
                coll = store.db[name]
                return _Coll(coll) if name == "orders" else coll

        self.db = _Db()

    def now(self):
        return self._store.now()


def _order(oid, first_at, updated_at, stage="pickup", extra_images=0):
    imgs = [{"filename": f"{i}.jpg", "url": f"/u/{oid}/{i}.jpg", "uploaded_at": first_at + dt.timedelta(minutes=i),
             "uploaded_by": 7} for i in range(1 + extra_images)]
    return {"id": oid, "status": "PICKUP_IMAGES_ADDED", "images": {stage: imgs}, "created_at": first_at,
            "updated_at": updated_at}


@pytest.fixture
def orders_ws(workspace_factory, order_store_url, monkeypatch):
    monkeypatch.setattr(order_reads, "ORDER_PAGE", 2)
    ws = workspace_factory(orders=order_store_url)
    now = ws.orders().now().replace(microsecond=0)
    return ws, now


def test_missed_orders_are_ordered_and_filtered_by_first_image_time(orders_ws):
    ws, now = orders_ws
    h = dt.timedelta(hours=1)
    ws.orders().db["orders"].insert_many([
        _order(1, now - 5 * h, now - dt.timedelta(minutes=1), extra_images=3),  # changed lately, first image old
        _order(2, now - 4 * h, now - dt.timedelta(minutes=2)),
        _order(3, now - 3 * h, now - 3 * h),                                      # newest first image, page 2
        _order(4, now - 30 * dt.timedelta(minutes=1), now - 30 * dt.timedelta(minutes=1)),
    ])
    assert [i.id for i in failed_items(ws, "orders")] == [4, 3, 2, 1]
    assert [i.id for i in failed_items(ws, "orders", limit=2)] == [4, 3]
    # --since speaks of the first image, not of the order's last change.
    assert [i.id for i in failed_items(ws, "orders", since=h)] == [4]
    since = 3 * h + dt.timedelta(minutes=1)
    assert [i.id for i in failed_items(ws, "orders", since=since)] == [4, 3]
    items = failed_items(ws, "orders", since=since)
    assert items[1].created_at == now - 3 * h and 3 * 3600 - 5 <= items[1].age_seconds <= 3 * 3600 + 60


def test_missed_orders_look_back_seven_days_unless_asked_and_never_read_older_orders(orders_ws, monkeypatch):
    ws, now = orders_ws
    day = dt.timedelta(days=1)
    old = [_order(100 + n, now - 30 * day, now - 30 * day + dt.timedelta(seconds=n)) for n in range(40)]
    legacy = {"id": 9, "status": "PICKUP_IMAGES_ADDED", "images": {"pickup": {"filename": "x.jpg"}, "delivery": None},
              "updated_at": now - 2 * day}                         # legacy single object, no time
    ws.orders().db["orders"].insert_many(old + [
        _order(1, now - 8 * day, now - 8 * day),
        _order(2, now - day, now - day),
        legacy,
        {"id": 10, "status": "DRIVER_ARRIVED", "images": {"pickup": None}, "updated_at": now - day},
    ])
    counting = _CountingOrders(ws.orders())
    monkeypatch.setattr(ws, "orders", lambda: counting)
    assert [i.id for i in failed_items(ws, "orders")] == [2, 9]
    assert sum(counting.read) <= 3          # the 40 month-old orders and the 8-day-old one are never read
    assert [i.id for i in failed_items(ws, "orders", since=10 * day)] == [2, 9, 1]


def test_missed_orders_stop_once_the_page_is_certain(orders_ws, monkeypatch):
    ws, now = orders_ws
    minute = dt.timedelta(minutes=1)
    ws.orders().db["orders"].insert_many(
        [_order(n, now - (30 + n) * minute, now - (30 + n) * minute) for n in range(1, 41)])
    counting = _CountingOrders(ws.orders())
    monkeypatch.setattr(ws, "orders", lambda: counting)
    assert [i.id for i in failed_items(ws, "orders", limit=3)] == [1, 2, 3]
    assert sum(counting.read) <= 6


def test_missed_orders_changed_during_the_walk_are_neither_skipped_nor_repeated(orders_ws, monkeypatch):
    ws, now = orders_ws
    minute = dt.timedelta(minutes=1)
    store = ws.orders()
    store.db["orders"].insert_many(
        [_order(n, now - (30 + n) * minute, now - (30 + n) * minute) for n in range(1, 8)])

    def upload_during_walk(call):
        if call == 1:  # after the first page: order 5 (further down) gets another image
            store.db["orders"].update_one(
                {"id": 5}, {"$push": {"images.pickup": {"filename": "late.jpg", "uploaded_at": now}},
                            "$set": {"updated_at": now}})
    counting = _CountingOrders(store, upload_during_walk)
    monkeypatch.setattr(ws, "orders", lambda: counting)
    items = failed_items(ws, "orders")
    assert [i.id for i in items] == [1, 2, 3, 4, 5, 6, 7]
    assert next(i for i in items if i.id == 5).detail["images"] == 2
