"""The unified feed in any order: sorted in each store, merged across sources, paged without loss or repeat."""
from __future__ import annotations

import datetime as dt
import random

import pytest
from sqlalchemy import insert

from app.errors import UsageError
from app.read.feeds import FEED_SORTS, notification_feed
from app.schema import cart_log, cart_users, dispatch_users, notifications
from app.sqlutil import db_now


def _now(ws):
    with ws.engine("dispatch").connect() as conn:
        return db_now(conn).replace(microsecond=0)


@pytest.fixture
def ws(workspace_factory, sql_url, order_store_url):
    ws = workspace_factory(cart=sql_url("cart"), dispatch=sql_url("dispatch"), orders=order_store_url)
    rnd = random.Random(7)
    now = _now(ws)
    names = ["ann", "Bob", "carl", "Dora", "eve", None]
    with ws.engine("dispatch").begin() as conn:
        conn.execute(insert(dispatch_users), [{"id": i + 1, "email": f"{n}@d.test" if n else f"nobody{i}@d.test",
                                               "display_name": str(n)} for i, n in enumerate(names)])
        conn.execute(insert(notifications), [
            {"user_id": rnd.randint(1, 6), "type": rnd.choice(["comment_added", "status_changed", "other"]),
             "issue_id": rnd.randint(1, 9), "comment_id": i, "actor_user_id": 1, "message": f"m{i}",
             "is_read": rnd.randint(0, 1), "created_at": now - dt.timedelta(seconds=rnd.randint(0, 40)),
             "dispatch_id": f"k{i}"} for i in range(70)])
    with ws.engine("cart").begin() as conn:
        conn.execute(insert(cart_users), [{"id": i + 1, "email": f"{n}@c.test", "name": n}
                                          for i, n in enumerate(["ann", "Zed", "bob"])])
        conn.execute(insert(cart_log), [
            {"user_id": rnd.randint(1, 3), "cart_hash": f"{i:064x}", "cart_value": 10 + i, "email_sent": 1,
             "created_at": now - dt.timedelta(minutes=5), "sent_at": now - dt.timedelta(seconds=rnd.randint(0, 40)),
             "error_message": None} for i in range(40)])
    ws.orders().db["email_log"].insert_many([
        {"order_id": i, "event": rnd.choice(["pickup_images_added", "delivery_images_added"]),
         "to": rnd.choice(["Ops@o.test", "admin@o.test"]), "subject": f"Order #{i}",
         "sent_at": now - dt.timedelta(seconds=rnd.randint(0, 40))} for i in range(30)])
    return ws


def _all_pages(ws, order, limit, **kw):
    items, before = [], None
    for _ in range(200):
        page = notification_feed(ws, order=order, before=before, limit=limit, **kw)
        items += page.items
        before = page.cursor
        if not page.has_more:
            return items
    raise AssertionError("the feed never ended")


@pytest.mark.parametrize("column", [c for c in FEED_SORTS if c != "at"] + ["at"])
@pytest.mark.parametrize("desc", [False, True])
def test_every_order_pages_through_every_entry_once_in_order(ws, column, desc):
    items = _all_pages(ws, (column, desc), limit=17)
    keys = [(i.source, str(i.id)) for i in items]
    assert len(keys) == len(set(keys)) == 140
    shown = {"recipient": lambda i: (i.recipient or "").lower(), "source": lambda i: i.source,
             "kind": lambda i: {"notification": "in-app notification", "cart_email": "cart email",
                                "order_email": "admin email"}[i.kind],
             "status": lambda i: i.status, "at": lambda i: i.at}
    if column in shown:
        values = [shown[column](i) for i in items]
        assert values == sorted(values, reverse=desc)
    for source in ("dispatch", "cart", "orders"):   # each source in the database's own order
        mine = [i for i in items if i.source == source]
        sort_keys = [(i.detail["_sort"], i.at) for i in mine]
        assert sort_keys == sorted(sort_keys, reverse=desc, key=lambda k: (str(k[0]).lower()
                                                                           if isinstance(k[0], str) else k[0], k[1]))


def test_a_type_keeps_only_its_entries_and_an_unknown_order_or_type_is_one_sentence(ws):
    got = _all_pages(ws, ("recipient", False), limit=9, kind="status_changed")
    assert got and {i.subject.split()[0] for i in got} == {"status_changed"}
    orders = _all_pages(ws, None, limit=50, kind="pickup_images_added")
    assert orders and {i.detail["event"] for i in orders} == {"pickup_images_added"}
    assert {i.source for i in _all_pages(ws, None, limit=50, kind="cart_email")} == {"cart"}
    with pytest.raises(UsageError, match="cannot be sorted by 'colour'"):
        notification_feed(ws, order=("colour", True))
    with pytest.raises(UsageError, match="Unknown notification type 'fax'"):
        notification_feed(ws, kind="fax")
