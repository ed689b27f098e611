"""Rows that commit after a higher id (or a later time) is already visible, on real MariaDB.

The latency rollup counts every settled row exactly once, the id polls and
the unified feed deliver every row exactly once, with real transactions held
open while others commit, and with concurrent writers and advancers.
"""
from __future__ import annotations

import datetime as dt
import itertools
import random
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, insert, select

from app.read import rollup as stats  # the rollup (advance_rollup, LAG, the viewer tail), once part of app.read.stats
from app.read.feeds import poll_cart_log, poll_dispatch_log, poll_notification_feed
from app.schema import cart_log, dispatch_log, nc_cursor, nc_latency_minute, nc_rollup_unsettled, notifications
from app.sqlutil import db_now


def _now(ws, source="dispatch"):
    with ws.engine(source).connect() as conn:
        return db_now(conn).replace(microsecond=0)


_SERIAL = itertools.count()


def _dispatch(now, i, latency_ms=50):
    return {"dispatch_id": f"late-{i}-{next(_SERIAL)}", "dispatch_type": "comment_added", "issue_id": 1,
            "comment_id": i, "actor_user_id": 1, "recipients_count": 1, "status": "completed",
            "created_at": now, "completed_at": now + dt.timedelta(milliseconds=latency_ms),
            "error_message": None}


def _notif(at, i):
    return {"user_id": 1, "type": "comment_added", "issue_id": 5, "comment_id": i, "actor_user_id": 3,
            "message": f"n{i}", "is_read": 0, "created_at": at, "dispatch_id": f"d{i}"}


_OPEN: list = []


@pytest.fixture(autouse=True)
def _close_held(mariadb_database):
    """A failing test leaves no transaction open (the database could not be dropped)."""
    yield
    while _OPEN:
        held = _OPEN.pop()
        if not held.conn.closed:
            held.rollback()


class Held:
    """A transaction that inserted (or updated) a row and has not committed yet."""

    def __init__(self, engine, stmt, rows=None):
        self.conn = engine.connect()
        _OPEN.append(self)
        self.tx = self.conn.begin()
        res = self.conn.execute(stmt, rows) if rows is not None else self.conn.execute(stmt)
        self.id = res.inserted_primary_key[0] if res.is_insert else None

    def commit(self):
        self.tx.commit()
        self.conn.close()

    def rollback(self):
        self.tx.rollback()
        self.conn.close()


def _insert(ws, source, table, rows):
    with ws.engine(source).begin() as conn:
        res = conn.execute(insert(table), rows)
        return res.inserted_primary_key[0] if isinstance(rows, dict) else None


def _rollup_total(ws) -> int:
    with ws.engine("dispatch").connect() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(nc_latency_minute.c.settled), 0))
                                .where(nc_latency_minute.c.series.like("dispatch:%"))).scalar())


def _exact_total(ws) -> int:
    with ws.engine("dispatch").connect() as conn:
        return conn.execute(select(func.count()).select_from(dispatch_log)
                            .where(dispatch_log.c.status == "completed")).scalar()


def _viewer_total(ws) -> int:
    """What a read-only viewer counts: the stored rollup plus the tail computed in memory."""
    with ws.engine("dispatch").connect() as conn:
        stored = int(conn.execute(select(func.coalesce(func.sum(nc_latency_minute.c.settled), 0))
                                  .where(nc_latency_minute.c.series.like("dispatch:%"))).scalar())
        acc = stats._unpersisted(conn, "dispatch", db_now(conn) - dt.timedelta(days=1))
    return stored + sum(v[0] for v in acc.values())


@pytest.fixture
def dispatch_ws(workspace_factory, mariadb_database):
    return workspace_factory(dispatch=mariadb_database("dispatch"))


# --------------------------------------------------------------------------
# the latency rollup

def test_rollup_counts_a_row_committed_after_a_higher_id(dispatch_ws):
    ws = dispatch_ws
    now = _now(ws)
    _insert(ws, "dispatch", dispatch_log, _dispatch(now, 1))
    stats.advance_rollup(ws, "dispatch")
    held = Held(ws.engine("dispatch"), insert(dispatch_log), _dispatch(now, 2))
    assert held.id == 2
    assert _insert(ws, "dispatch", dispatch_log, _dispatch(now, 3)) == 3
    out = stats.advance_rollup(ws, "dispatch")
    assert _rollup_total(ws) == 2 and _viewer_total(ws) == 2
    assert out["last_id"] == 3 and out.get("gaps") == 1
    held.commit()
    assert _viewer_total(ws) == 3          # the viewer's tail reads the gap too
    out = stats.advance_rollup(ws, "dispatch")
    assert _rollup_total(ws) == _exact_total(ws) == 3
    assert out["read"] == 1 and out["gaps"] == 0
    assert stats.advance_rollup(ws, "dispatch")["read"] == 0
    assert _rollup_total(ws) == 3


def test_rollup_forgets_a_rolled_back_id_once_the_lag_has_passed(dispatch_ws, monkeypatch):
    ws = dispatch_ws
    now = _now(ws)
    _insert(ws, "dispatch", dispatch_log, _dispatch(now, 1))
    stats.advance_rollup(ws, "dispatch")
    held = Held(ws.engine("dispatch"), insert(dispatch_log), _dispatch(now, 2))
    _insert(ws, "dispatch", dispatch_log, _dispatch(now, 3))
    held.rollback()
    assert stats.advance_rollup(ws, "dispatch")["gaps"] == 1
    assert stats.advance_rollup(ws, "dispatch")["gaps"] == 1     # within the lag: still re-read
    monkeypatch.setattr(stats, "LAG", dt.timedelta(0))
    stats.advance_rollup(ws, "dispatch")                          # the frontier reaches id 3
    assert stats.advance_rollup(ws, "dispatch")["gaps"] == 0
    assert _rollup_total(ws) == _exact_total(ws) == 2


OPS = st.lists(st.one_of(
    st.just(("open",)), st.just(("insert",)), st.just(("advance",)), st.just(("check",)),
    st.tuples(st.just("commit"), st.integers(0, 5)), st.tuples(st.just("rollback"), st.integers(0, 5))),
    min_size=1, max_size=18)


def test_rollup_counts_every_row_once_whatever_the_commit_order(dispatch_ws):
    ws = dispatch_ws
    engine = ws.engine("dispatch")

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(ops=OPS)
    def run(ops):
        with engine.begin() as conn:
            for t in (dispatch_log, nc_latency_minute, nc_rollup_unsettled, nc_cursor):
                conn.execute(delete(t))
        now = _now(ws)
        held: list[Held] = []
        try:
            for i, op in enumerate(ops):
                if op[0] == "open":
                    held.append(Held(engine, insert(dispatch_log), _dispatch(now, i, latency_ms=i)))
                elif op[0] == "insert":
                    _insert(ws, "dispatch", dispatch_log, _dispatch(now, i, latency_ms=i))
                elif op[0] == "advance":
                    stats.advance_rollup(ws, "dispatch")
                    assert _rollup_total(ws) <= _exact_total(ws)
                elif op[0] == "check":
                    assert _viewer_total(ws) == _exact_total(ws)
                elif held:
                    h = held.pop(op[1] % len(held))
                    h.commit() if op[0] == "commit" else h.rollback()
        finally:
            for h in held:
                h.commit()
        assert _viewer_total(ws) == _exact_total(ws)
        stats.advance_rollup(ws, "dispatch")
        assert _rollup_total(ws) == _exact_total(ws)
        stats.advance_rollup(ws, "dispatch")
        assert _rollup_total(ws) == _exact_total(ws)

    run()


def test_rollup_exact_under_concurrent_writers_and_advancers(dispatch_ws):
    ws = dispatch_ws
    engine = ws.engine("dispatch")
    now = _now(ws)
    stats.advance_rollup(ws, "dispatch")
    stop = threading.Event()
    errors: list = []

    def writer(seed):
        rnd = random.Random(seed)
        try:
            while not stop.is_set():
                with engine.connect() as conn:
                    tx = conn.begin()
                    conn.execute(insert(dispatch_log), [_dispatch(now, seed, rnd.randint(1, 5000))
                                                        for _ in range(rnd.randint(1, 3))])
                    time.sleep(rnd.random() * 0.004)
                    tx.rollback() if rnd.random() < 0.1 else tx.commit()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def advancer():
        try:
            while not stop.is_set():
                stats.advance_rollup(ws, "dispatch")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(3)]
    threads += [threading.Thread(target=advancer) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(2.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors
    stats.advance_rollup(ws, "dispatch")
    exact = _exact_total(ws)
    assert exact > 100
    assert _rollup_total(ws) == exact


# --------------------------------------------------------------------------
# feeds

def test_id_poll_delivers_a_row_committed_after_a_higher_id(dispatch_ws):
    ws = dispatch_ws
    now = _now(ws)
    _insert(ws, "dispatch", dispatch_log, _dispatch(now, 1))
    first = poll_dispatch_log(ws)
    assert [i.id for i in first.items] == [1] and first.cursor == 1
    held = Held(ws.engine("dispatch"), insert(dispatch_log), _dispatch(now, 2))
    _insert(ws, "dispatch", dispatch_log, _dispatch(now, 3))
    p = poll_dispatch_log(ws, after_id=first.cursor)
    assert [i.id for i in p.items] == [3] and p.cursor == 3
    held.commit()
    p = poll_dispatch_log(ws, after_id=p.cursor)
    assert [i.id for i in p.items] == [2]
    assert poll_dispatch_log(ws, after_id=p.cursor).items == []


def test_cart_id_poll_pages_and_delivers_late_commits(workspace_factory, mariadb_database):
    ws = workspace_factory(cart=mariadb_database("cart"))
    now = _now(ws, "cart")
    row = lambda i: {"user_id": i, "cart_hash": "c" * 64, "cart_value": 1, "email_sent": 0,  # noqa: E731
                     "created_at": now, "sent_at": None, "error_message": None}
    first = poll_cart_log(ws)
    assert first.items == []
    held = Held(ws.engine("cart"), insert(cart_log), row(0))
    _insert(ws, "cart", cart_log, [row(i) for i in range(1, 6)])
    seen = []
    p = poll_cart_log(ws, after_id=first.cursor)
    seen += [i.id for i in p.items]
    p = poll_cart_log(ws, after_id=p.cursor, limit=3)
    seen += [i.id for i in p.items]
    held.commit()
    while True:
        p = poll_cart_log(ws, after_id=p.cursor, limit=3)
        seen += [i.id for i in p.items]
        if not p.has_more:
            break
    assert sorted(seen) == list(range(1, 7)) and len(seen) == 6


def test_feed_poll_delivers_every_entry_when_more_than_the_limit_are_new(workspace_factory, mariadb_database,
                                                                       order_store_url):
    ws = workspace_factory(dispatch=mariadb_database("dispatch"), orders=order_store_url)
    now = _now(ws)
    _insert(ws, "dispatch", notifications, [_notif(now - dt.timedelta(minutes=30), 0)])
    live = poll_notification_feed(ws)
    assert [i.id for i in live.items] == [1]
    _insert(ws, "dispatch", notifications,
            [_notif(now - dt.timedelta(minutes=20) + dt.timedelta(seconds=i), i) for i in range(1, 13)])
    ws.orders().db["email_log"].insert_many(
        [{"order_id": i, "event": "pickup_images_added", "to": "admin@x", "subject": f"o{i}",
          "sent_at": now - dt.timedelta(minutes=20) + dt.timedelta(seconds=i, milliseconds=500)}
         for i in range(1, 4)])
    p1 = poll_notification_feed(ws, live.cursor, limit=10)
    assert p1.has_more and len(p1.items) == 10
    # The oldest ten new entries, shown newest first.
    assert [(i.source, i.subject if i.source == "orders" else i.id) for i in reversed(p1.items)] == [
        ("dispatch", 2), ("orders", "o1"), ("dispatch", 3), ("orders", "o2"), ("dispatch", 4),
        ("orders", "o3"), ("dispatch", 5), ("dispatch", 6), ("dispatch", 7), ("dispatch", 8)]
    p2 = poll_notification_feed(ws, p1.cursor, limit=10)
    assert not p2.has_more and [i.id for i in p2.items] == [13, 12, 11, 10, 9]
    assert poll_notification_feed(ws, p2.cursor, limit=10).items == []


def test_feed_poll_delivers_entries_committed_late(workspace_factory, mariadb_database):
    ws = workspace_factory(dispatch=mariadb_database("dispatch"), cart=mariadb_database("cart"))
    now = _now(ws)
    live = poll_notification_feed(ws)
    assert live.items == []
    # A notification stamped first commits after one stamped a second later.
    held = Held(ws.engine("dispatch"), insert(notifications), _notif(now - dt.timedelta(seconds=1), 1))
    _insert(ws, "dispatch", notifications, _notif(now, 2))
    # A cart email sent first commits after one sent later.
    cart = lambda u, sent: {"user_id": u, "cart_hash": "h" * 64, "cart_value": 1,  # noqa: E731
                            "email_sent": 0, "created_at": now - dt.timedelta(minutes=5), "sent_at": None,
                            "error_message": None} if not sent else {
        "user_id": u, "cart_hash": "h" * 64, "cart_value": 1, "email_sent": 1,
        "created_at": now - dt.timedelta(minutes=5), "sent_at": now, "error_message": None}
    unsent = _insert(ws, "cart", cart_log, cart(1, False))
    held_cart = Held(ws.engine("cart"), cart_log.update().where(cart_log.c.id == unsent).values(
        email_sent=1, sent_at=now - dt.timedelta(seconds=2)))
    _insert(ws, "cart", cart_log, cart(2, True))
    p = poll_notification_feed(ws, live.cursor)
    assert [(i.source, i.id) for i in p.items] == [("dispatch", 2), ("cart", 2)]
    held.commit()
    held_cart.commit()
    p = poll_notification_feed(ws, p.cursor)
    assert [(i.source, i.id) for i in p.items] == [("dispatch", 1), ("cart", 1)]
    assert poll_notification_feed(ws, p.cursor).items == []
    # A plain (time, id) position per source is still a cursor.
    plain = {"dispatch": (now, 2), "cart": (now, 2)}
    assert poll_notification_feed(ws, plain).items == []
