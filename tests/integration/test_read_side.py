"""The monitoring read side on real databases (SQLite and MariaDB; orders on the order-store factory)."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, text

from app import cli
from app.config import DuplicateRule, Thresholds
from app.read import stats
from app.read.duplicates import apply_scan as _merge
from app.read.duplicates import scan_duplicates, scan_duplicates_incremental
from app.read.failures import failed_items
from app.read.feeds import notification_feed, poll_dispatch_log, poll_notification_feed
from app.schema import (
    cart_log,
    cart_users,
    dispatch_log,
    dispatch_users,
    nc_cursor,
    nc_dispatch_attempt,
    nc_latency_minute,
    nc_rollup_unsettled,
    notifications,
)
from app.sqlutil import db_now

T0 = dt.datetime(2024, 3, 1, 8, 0, 0)
HA, HB = "a" * 64, "b" * 64


def cart_row(user, h, at, sent=1, error=None):
    return {"user_id": user, "cart_hash": h, "cart_value": 10, "email_sent": sent, "created_at": at,
            "sent_at": at + dt.timedelta(seconds=3) if sent else None, "error_message": error}


def notif_row(user, dispatch_id, at=T0, type="comment_added", issue=5, comment=77, actor=3):
    return {"user_id": user, "type": type, "issue_id": issue, "comment_id": comment, "actor_user_id": actor,
            "message": f"{type} on {issue}", "is_read": 0, "created_at": at, "dispatch_id": dispatch_id}


def insert_rows(ws, source, table, rows):
    if not rows:
        return
    with ws.engine(source).begin() as conn:
        conn.execute(insert(table), rows)


def now_of(ws, source):
    with ws.engine(source).connect() as conn:
        return db_now(conn).replace(microsecond=0)


# --------------------------------------------------------------------------
# duplicates

def test_cart_duplicates_edges(workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"))
    insert_rows(ws, "cart", cart_log, [
        cart_row(1, HA, T0), cart_row(1, HA, T0 + dt.timedelta(hours=23, minutes=59)),    # 1,2 dup
        cart_row(2, HA, T0), cart_row(2, HA, T0 + dt.timedelta(hours=24, minutes=1)),     # 3,4 not
        cart_row(3, HA, T0), cart_row(3, HB, T0 + dt.timedelta(minutes=5)),               # 5,6 not
        cart_row(4, HA, T0), cart_row(4, HA, T0 + dt.timedelta(minutes=5), sent=0, error="x"),  # 7,8 not
        cart_row(4, HA, T0 + dt.timedelta(minutes=9), sent=0),                             # 9 not
    ])
    groups = scan_duplicates(ws, "cart")
    assert [(g.key, g.keep_id, g.member_ids) for g in groups] == [({"user_id": 1, "cart_hash": HA}, 1, [1, 2])]
    assert groups[0].first_at == T0 and groups[0].last_at == T0 + dt.timedelta(hours=23, minutes=59)
    assert scan_duplicates(ws, "cart", filter_text="1") == groups      # user id 1
    assert scan_duplicates(ws, "cart", filter_text="%") == []          # literal, not a wildcard
    assert scan_duplicates(ws, "cart", filter_text="aaaa") == groups
    assert scan_duplicates(ws, "cart", since=dt.datetime(2024, 3, 2, 8)) == []
    assert scan_duplicates(ws, "cart", since=dt.datetime(2024, 3, 2, 7)) == groups
    assert scan_duplicates(ws, "cart", limit=0) == []


def test_dispatch_duplicates_group_legacy_null_ids_with_keyed_ones(workspace_factory, sql_url):
    ws = workspace_factory(dispatch=sql_url("dispatch"))
    insert_rows(ws, "dispatch", notifications, [
        notif_row(10, None),                                              # 1 legacy
        notif_row(10, "comment_added:5:77:3", T0 + dt.timedelta(seconds=1)),  # 2
        notif_row(11, "comment_added:5:77:3", T0 + dt.timedelta(seconds=1)),  # 3 other user
        notif_row(10, "comment_added:5:77:3:1712", T0 + dt.timedelta(days=2)),  # 4 retry with new key
        notif_row(12, "s:1", type="status_changed", comment=None),         # 5
        notif_row(12, "s:2", type="status_changed", comment=None),         # 6 NULL = NULL
        notif_row(12, "s:3", type="status_changed", comment=9),            # 7 not
    ])
    groups = sorted(scan_duplicates(ws, "dispatch"), key=lambda g: g.keep_id)
    assert [(g.keep_id, g.member_ids) for g in groups] == [(1, [1, 2, 4]), (5, [5, 6])]
    assert [e["dispatch_id"] for e in groups[0].evidence] == [None, "comment_added:5:77:3",
                                                              "comment_added:5:77:3:1712"]
    assert groups[1].key["comment_id"] is None
    # The filter picks keys through any member; the group keeps all members.
    assert [g.member_ids for g in scan_duplicates(ws, "dispatch", filter_text="1712")] == [[1, 2, 4]]


def test_incremental_scan_after_new_rows_finds_exactly_the_new_groups(workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"))
    insert_rows(ws, "cart", cart_log, [cart_row(1, HA, T0), cart_row(1, HA, T0 + dt.timedelta(hours=1)),
                                       cart_row(2, HA, T0)])
    first = scan_duplicates_incremental(ws, "cart")
    assert first.full and [g.member_ids for g in first.groups] == [[1, 2]]
    quiet = scan_duplicates_incremental(ws, "cart", first.cursor)
    assert quiet.groups == [] and quiet.touched == set()
    insert_rows(ws, "cart", cart_log, [cart_row(2, HA, T0 + dt.timedelta(hours=2)),      # 4: new group 3,4
                                       cart_row(5, HB, T0), cart_row(5, HB, T0 + dt.timedelta(minutes=1)),
                                       cart_row(6, HB, T0)])
    inc = scan_duplicates_incremental(ws, "cart", quiet.cursor)
    assert sorted(g.member_ids for g in inc.groups) == [[3, 4], [5, 6]]
    assert {k for _, k in inc.touched} == {(2, HA), (5, HB), (6, HB)}
    # A row sent later (inserted unsent before the scan) is picked up too.
    insert_rows(ws, "cart", cart_log, [cart_row(6, HB, T0 + dt.timedelta(minutes=3), sent=0)])
    mid = scan_duplicates_incremental(ws, "cart", inc.cursor)
    assert mid.groups == []
    with ws.engine("cart").begin() as conn:
        conn.execute(cart_log.update().where(cart_log.c.id == 8).values(email_sent=1, sent_at=db_now(conn)))
    late = scan_duplicates_incremental(ws, "cart", mid.cursor)
    assert [g.member_ids for g in late.groups] == [[7, 8]]


def _as_set(groups):
    return sorted((g.rule, tuple(g.key.values()), tuple(g.member_ids)) for g in groups)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(st.tuples(st.integers(1, 3), st.sampled_from([HA, HB]),
                                           st.integers(0, 60 * 60), st.booleans()), max_size=8),
                        min_size=1, max_size=4))
def test_incremental_scans_agree_with_full_scans(workspace_factory, sql_url, batches):
    if not hasattr(test_incremental_scans_agree_with_full_scans, "_ws"):
        pass
    ws = _shared_ws(workspace_factory, sql_url)
    with ws.engine("cart").begin() as conn:
        conn.execute(delete(cart_log))
    scan = scan_duplicates_incremental(ws, "cart")
    state = _merge({}, scan)
    for batch in batches:
        if batch:
            insert_rows(ws, "cart", cart_log, [cart_row(u, h, T0 + dt.timedelta(minutes=m), sent=int(s))
                                               for u, h, m, s in batch])
        scan = scan_duplicates_incremental(ws, "cart", scan.cursor)
        state = _merge(state, scan)
        merged = [g for gs in state.values() for g in gs]
        assert _as_set(merged) == _as_set(scan_duplicates(ws, "cart"))


_WS = {}


def _shared_ws(workspace_factory, sql_url):
    key = id(workspace_factory)
    if key not in _WS:
        _WS.clear()
        small = Thresholds(duplicate_window_hours=0.5)  # 30-minute window: chains matter within an hour
        _WS[key] = workspace_factory(cart=sql_url("cartprop"), thresholds=small)
    return _WS[key]


def test_config_rule_watches_another_table(workspace_factory, sql_url):
    rule = DuplicateRule(name="assets", source="cart", table="assets", key=("md5", "asset_type"),
                         time_column="created_at", id_column="id", window_hours=24)
    ws = workspace_factory(cart=sql_url("cart"), duplicate_rules=[rule])
    with ws.engine("cart").begin() as conn:
        conn.execute(text("CREATE TABLE assets (id INTEGER PRIMARY KEY, md5 VARCHAR(32), asset_type VARCHAR(16), "
                          "created_at DATETIME)"))
        conn.execute(text("INSERT INTO assets VALUES (1, 'm1', 'img', :a), (2, 'm1', 'img', :b), "
                          "(3, 'm1', 'pdf', :a), (4, 'm2', 'img', :a), (5, 'm1', 'img', :c)"),
                     {"a": T0, "b": T0 + dt.timedelta(hours=1), "c": T0 + dt.timedelta(days=2)})
    groups = scan_duplicates(ws, "cart")
    assert [(g.rule, g.key, g.member_ids) for g in groups] == [
        ("assets", {"md5": "m1", "asset_type": "img"}, [1, 2])]
    assert scan_duplicates(ws, "cart", filter_text="m2") == []
    assert [g.member_ids for g in scan_duplicates(ws, "cart", filter_text="m1")] == [[1, 2]]


def test_order_duplicates(workspace_factory, order_store_url):
    ws = workspace_factory(orders=order_store_url)
    db = ws.orders().db
    ids = [ObjectId() for _ in range(4)]
    db["email_log"].insert_many([
        {"_id": ids[0], "order_id": 1042, "event": "pickup_images_added", "to": "admin@x", "sent_at": T0},
        {"_id": ids[1], "order_id": 1042, "event": "pickup_images_added", "to": "admin@x",
         "sent_at": T0 + dt.timedelta(seconds=1)},
        {"_id": ids[2], "order_id": 1042, "event": "delivery_images_added", "to": "admin@x", "sent_at": T0},
        {"_id": ids[3], "order_id": 1043, "event": "pickup_images_added", "to": "admin@x", "sent_at": T0}])
    (g,) = scan_duplicates(ws, "orders")
    assert g.keep_id == str(ids[0]) and g.member_ids == [str(ids[0]), str(ids[1])]
    assert g.key == {"order_id": 1042, "event": "pickup_images_added"}
    assert scan_duplicates(ws, "orders", filter_text="1043") == []
    assert scan_duplicates(ws, "orders", filter_text=".*") == []
    full = scan_duplicates_incremental(ws, "orders")
    db["email_log"].insert_one({"order_id": 1043, "event": "pickup_images_added", "to": "admin@x",
                                "sent_at": dt.datetime.utcnow()})
    inc = scan_duplicates_incremental(ws, "orders", full.cursor)
    # the new document's sent time is now; its key's group spans both
    assert [g.key["order_id"] for g in inc.groups] == [1043]


# --------------------------------------------------------------------------
# failed / stuck / missed

def test_dispatch_failed_and_stuck(workspace_factory, sql_url):
    ws = workspace_factory(dispatch=sql_url("dispatch"))
    now = now_of(ws, "dispatch")

    def row(key, status, minutes_ago, error=None):
        at = now - dt.timedelta(minutes=minutes_ago)
        return {"dispatch_id": key, "dispatch_type": "comment_added", "issue_id": 5, "comment_id": 1,
                "actor_user_id": 3, "recipients_count": 0, "status": status, "created_at": at,
                "completed_at": at if status == "completed" else None, "error_message": error}
    insert_rows(ws, "dispatch", dispatch_log, [
        row("a", "failed", 60, "SMTPServerDisconnected: lost"),   # 1
        row("b", "pending", 10),                                   # 2 stuck (> 5 min)
        row("c", "pending", 1),                                    # 3 in flight
        row("d", "completed", 30),                                 # 4
        row("e", "failed", 2, "100% _done_ 'quoted'"),             # 5
    ])
    insert_rows(ws, "dispatch", nc_dispatch_attempt, [{"log_id": 1, "attempts": 2, "updated_at": now}])
    items = failed_items(ws, "dispatch")
    assert [(i.id, i.kind, i.status, i.attempts) for i in items] == [
        (5, "failed", "failed", 0), (2, "stuck", "pending", 0), (1, "failed", "failed", 2)]
    assert items[2].error == "SMTPServerDisconnected: lost"
    assert items[2].detail["error_class"] == "SMTPServerDisconnected"
    assert 3590 <= items[2].age_seconds <= 3700
    assert [i.id for i in failed_items(ws, "dispatch", kinds=["stuck"])] == [2]
    assert [i.id for i in failed_items(ws, "dispatch", filter_text="SMTPServer")] == [1]
    assert [i.id for i in failed_items(ws, "dispatch", filter_text="100% _done_ 'quoted'")] == [5]
    assert failed_items(ws, "dispatch", filter_text="1%0") == []
    assert [i.id for i in failed_items(ws, "dispatch", since=dt.timedelta(minutes=30))] == [5, 2]
    assert [i.id for i in failed_items(ws, "dispatch", limit=2)] == [5, 2]
    page2 = failed_items(ws, "dispatch", limit=2, before=(items[1].created_at, items[1].id))
    assert [i.id for i in page2] == [1]


def test_cart_failed_and_stuck(workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"))
    now = now_of(ws, "cart")
    insert_rows(ws, "cart", cart_log, [
        cart_row(1, HA, now - dt.timedelta(minutes=30), sent=0, error="SMTPRecipientsRefused: no"),  # 1 failed
        cart_row(1, HA, now - dt.timedelta(minutes=20)),                                              # 2 sent
        cart_row(2, HB, now - dt.timedelta(minutes=10), sent=0),                                      # 3 stuck
        cart_row(3, HB, now - dt.timedelta(seconds=30), sent=0),                                      # 4 in progress
    ])
    items = failed_items(ws, "cart")
    # Row 1 failed, but row 2 emailed the same abandonment 10 minutes later: superseded.
    assert [(i.id, i.kind, i.attempts) for i in items] == [(3, "stuck", 1), (1, "superseded", 2)]
    assert items[1].detail["cart_already_emailed"] is True
    assert items[1].detail["superseded_by"] == 2
    assert items[1].detail["reason"].startswith("cart already emailed at ")
    assert items[1].detail["reason"].endswith("(row 2)")
    assert [i.id for i in failed_items(ws, "cart", kinds=["failed"])] == []
    assert [i.id for i in failed_items(ws, "cart", kinds=["superseded"])] == [1]
    assert [i.id for i in failed_items(ws, "cart", kinds=["stuck"])] == [3]
    assert [i.id for i in failed_items(ws, "cart", filter_text="Refused")] == [1]


def test_orders_missed_reads_legacy_documents(workspace_factory, order_store_url):
    ws = workspace_factory(orders=order_store_url)
    db = ws.orders().db
    old = dt.datetime.utcnow() - dt.timedelta(hours=1)
    fresh = dt.datetime.utcnow()
    img = {"filename": "p.jpg", "url": "/u/p.jpg", "uploaded_at": old, "uploaded_by": 7}
    db["orders"].insert_many([
        {"id": 1, "status": "PICKUP_IMAGES_ADDED", "images": {"pickup": [img], "delivery": []}, "updated_at": old},
        {"id": 2, "status": "PICKUP_IMAGES_ADDED", "images": {"pickup": img}, "updated_at": old},        # legacy
        {"id": 3, "status": "DRIVER_ARRIVED", "images": {"pickup": None, "delivery": None}, "updated_at": old},
        {"id": 4, "status": "PICKUP_IMAGES_ADDED", "images": {"pickup": [img]}, "updated_at": old},     # emailed
        {"id": 5, "status": "PICKUP_IMAGES_ADDED",
         "images": {"pickup": [dict(img, uploaded_at=fresh)]}, "updated_at": fresh},                      # in grace
        {"id": 6, "status": "DELIVERY_IMAGES_ADDED", "images": {"pickup": [img], "delivery": {"filename": "d.jpg"}},
         "updated_at": old},                                                                               # legacy, no time
    ])
    db["email_log"].insert_many([{"order_id": 4, "event": "pickup_images_added", "sent_at": old},
                                 {"order_id": 6, "event": "pickup_images_added", "sent_at": old}])
    db["nc_email_claims"].insert_one({"order_id": 2, "event": "pickup_images_added", "state": "failed",
                                      "attempts": 3, "error": "SMTPDataError: 554"})
    items = failed_items(ws, "orders")
    got = sorted((i.id, i.detail["stage"], i.kind, i.attempts) for i in items)
    assert got == [(1, "pickup", "missed", 0), (2, "pickup", "missed", 3), (6, "delivery", "missed", 0)]
    by_id = {i.id: i for i in items}
    assert by_id[2].error == "SMTPDataError: 554" and by_id[2].status == "PICKUP_IMAGES_ADDED"
    assert [i.id for i in failed_items(ws, "orders", filter_text="554")] == [2]
    assert failed_items(ws, "orders", kinds=["failed"]) == []


# --------------------------------------------------------------------------
# feeds

def test_live_poll_costs_what_is_new_and_unified_feed_merges(workspace_factory, sql_url, order_store_url):
    ws = workspace_factory(cart=sql_url("cart"), dispatch=sql_url("dispatch"), orders=order_store_url)
    now = now_of(ws, "dispatch")
    insert_rows(ws, "dispatch", dispatch_users, [{"email": "ann@x", "display_name": "Ann"}])
    insert_rows(ws, "cart", cart_users, [{"email": "bob@x", "name": "Bob"}])
    log = lambda k, at: {"dispatch_id": k, "dispatch_type": "other", "issue_id": 1, "comment_id": None,  # noqa
                         "actor_user_id": 2, "recipients_count": 1, "status": "pending", "created_at": at,
                         "completed_at": None, "error_message": None}
    insert_rows(ws, "dispatch", dispatch_log, [log(f"k{i}", now) for i in range(3)])
    first = poll_dispatch_log(ws, limit=2)
    assert [i.id for i in first.items] == [2, 3] and first.cursor == 3
    assert poll_dispatch_log(ws, after_id=first.cursor).items == []
    insert_rows(ws, "dispatch", dispatch_log, [log(f"n{i}", now) for i in range(3)])
    nxt = poll_dispatch_log(ws, after_id=first.cursor, limit=2)
    assert [i.id for i in nxt.items] == [4, 5] and nxt.has_more and nxt.cursor == 5

    s = lambda n: now - dt.timedelta(minutes=n)  # noqa
    insert_rows(ws, "dispatch", notifications, [notif_row(1, "d1", at=s(5)), notif_row(1, "d2", at=s(3))])
    insert_rows(ws, "cart", cart_log, [cart_row(1, HA, s(10)), cart_row(1, HB, s(4), sent=0)])
    ws.orders().db["email_log"].insert_one({"order_id": 7, "event": "pickup_images_added", "to": "admin@x",
                                            "subject": "Order #7: pickup", "sent_at": s(1)})
    page = notification_feed(ws, limit=2)
    assert [(i.source, i.kind) for i in page.items] == [("orders", "order_email"), ("dispatch", "notification")]
    assert page.items[1].recipient == "ann@x" and page.items[1].link["table"] == "notifications"
    older = notification_feed(ws, before=page.cursor, limit=10)
    assert [(i.source, i.id) for i in older.items] == [("dispatch", 1), ("cart", 1)]
    assert older.items[1].recipient == "bob@x" and older.items[1].link == {
        "source": "cart", "table": "cart_abandonment_log", "id": 1}
    assert [i.source for i in notification_feed(ws, filter_text="bob@").items] == ["cart"]
    assert notification_feed(ws, filter_text="%%").items == []
    live = poll_notification_feed(ws)
    assert len(live.items) == 4
    assert poll_notification_feed(ws, live.cursor).items == []
    with ws.engine("cart").begin() as conn:  # the unsent cart row is sent now: it joins the feed
        conn.execute(cart_log.update().where(cart_log.c.id == 2).values(email_sent=1, sent_at=db_now(conn)))
    new = poll_notification_feed(ws, live.cursor)
    assert [(i.source, i.id) for i in new.items] == [("cart", 2)]


# --------------------------------------------------------------------------
# statistics

def _dispatch_rows(now, latencies_ms, minutes_ago, statuses, types):
    rows = []
    for i, (lat, ago, st_, ty) in enumerate(zip(latencies_ms, minutes_ago, statuses, types)):
        created = now - dt.timedelta(minutes=ago)
        rows.append({"dispatch_id": f"k{now:%H%M%S}-{i}-{ago}-{lat}", "dispatch_type": ty, "issue_id": 1,
                     "comment_id": i, "actor_user_id": 1, "recipients_count": 1, "status": st_,
                     "created_at": created,
                     "completed_at": created + dt.timedelta(milliseconds=lat) if st_ == "completed" else None,
                     "error_message": "boom" if st_ == "failed" else None})
    return rows


def _numpy_by_bucket(rows, start, bucket_seconds):
    out = {}
    for r in rows:
        if r["status"] != "completed":
            continue
        b = int((r["created_at"] - start).total_seconds() // bucket_seconds)
        out.setdefault(b, []).append((r["completed_at"] - r["created_at"]) / dt.timedelta(milliseconds=1))
    return out


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.lists(st.tuples(st.integers(0, 120_000), st.integers(1, 58),
                               st.sampled_from(["completed"] * 6 + ["failed", "pending"]),
                               st.sampled_from(["comment_added", "status_changed"])), min_size=1, max_size=60))
def test_rollup_and_exact_percentiles_match_numpy(workspace_factory, sql_url, data):
    ws = _stats_ws(workspace_factory, sql_url)
    with ws.engine("dispatch").begin() as conn:
        for t in (dispatch_log, nc_latency_minute, nc_rollup_unsettled, nc_cursor):
            conn.execute(delete(t))
    now = now_of(ws, "dispatch").replace(second=30)
    rows = _dispatch_rows(now, *zip(*data))
    # Half before the first rollup, half after: the rollup advances incrementally.
    insert_rows(ws, "dispatch", dispatch_log, rows[: len(rows) // 2])
    stats.advance_rollup(ws, "dispatch")
    if rows[len(rows) // 2:]:
        insert_rows(ws, "dispatch", dispatch_log, rows[len(rows) // 2:])
    rollup = stats.latency_stats(ws, "dispatch", window="1h", bucket_seconds=60, now=now)
    exact = stats.latency_stats(ws, "dispatch", window="1h", bucket_seconds=60, exact=True, now=now)
    want = _numpy_by_bucket(rows, rollup.start, 60)
    for series in (rollup, exact):
        counts = {i: b.count for i, b in enumerate(series.buckets) if b.count}
        assert counts == {b: len(v) for b, v in want.items()}
        failed = sum(b.failed for b in series.buckets)
        assert failed == sum(r["status"] == "failed" for r in rows)
        assert sum(b.pending for b in series.buckets) == sum(r["status"] == "pending" for r in rows)
    for i, b in enumerate(exact.buckets):
        if i in want:
            assert [b.p50_ms, b.p95_ms, b.p99_ms] == pytest.approx(
                list(np.percentile(want[i], [50, 95, 99], method="inverted_cdf")), abs=1e-6)
    for i, b in enumerate(rollup.buckets):
        if i in want:
            for got, w in zip([b.p50_ms, b.p95_ms, b.p99_ms],
                              np.percentile(want[i], [50, 95, 99], method="inverted_cdf")):
                assert abs(got - w) <= max(stats.HIST_RELATIVE_ERROR * w, 0.5) + 1e-6


_STATS_WS = {}


def _stats_ws(workspace_factory, sql_url):
    key = id(workspace_factory)
    if key not in _STATS_WS:
        _STATS_WS.clear()
        _STATS_WS[key] = workspace_factory(dispatch=sql_url("stats"))
    return _STATS_WS[key]


def test_rollup_adds_rows_that_settle_later(workspace_factory, sql_url):
    ws = workspace_factory(dispatch=sql_url("dispatch"))
    now = now_of(ws, "dispatch")
    rows = _dispatch_rows(now, [100, 200, 300], [5, 5, 5], ["completed", "pending", "failed"],
                          ["other"] * 3)
    insert_rows(ws, "dispatch", dispatch_log, rows)
    stats.advance_rollup(ws, "dispatch", force_recheck=True)
    s = stats.latency_stats(ws, "dispatch", window="1h", now=now, by_type=True, advance=False)
    assert sum(b.count for b in s.buckets) == 1 and sum(b.pending for b in s.buckets) == 1
    with ws.engine("dispatch").begin() as conn:
        conn.execute(dispatch_log.update().where(dispatch_log.c.id.in_([2, 3])).values(
            status="completed", completed_at=now))
    out = stats.advance_rollup(ws, "dispatch", force_recheck=True)
    assert out["settled_late"] == 2
    s = stats.latency_stats(ws, "dispatch", window="1h", now=now, advance=False)
    assert sum(b.count for b in s.buckets) == 3 and sum(b.failed for b in s.buckets) == 0
    assert [b.series for b in s.buckets][:1] == ["*"]
    again = stats.advance_rollup(ws, "dispatch", force_recheck=True)
    assert again["read"] == 0 and again["settled_late"] == 0


def test_cart_latency_and_duplicates_per_hour(workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"))
    now = now_of(ws, "cart")
    insert_rows(ws, "cart", cart_log, [cart_row(1, HA, now - dt.timedelta(minutes=50)),
                                       cart_row(1, HA, now - dt.timedelta(minutes=20)),
                                       cart_row(2, HA, now - dt.timedelta(minutes=20), sent=0)])
    s = stats.latency_stats(ws, "cart", window="1h", now=now)
    assert sum(b.count for b in s.buckets) == 2
    assert [b.p50_ms for b in s.buckets if b.count] == [pytest.approx(3000, rel=0.05)] * 2
    assert sum(b.failed for b in s.buckets) == 1
    per_hour = stats.duplicates_per_hour(ws, "cart", window="24h")
    assert sum(c for _, c in per_hour) == 1 and len(per_hour) == 24


# --------------------------------------------------------------------------
# CLI

@pytest.fixture
def cli_config(workspace_factory, sql_url, order_store_url, tmp_path):
    ws = workspace_factory(cart=sql_url("cart"), dispatch=sql_url("dispatch"), orders=order_store_url)
    insert_rows(ws, "cart", cart_log, [cart_row(1, HA, T0), cart_row(1, HA, T0 + dt.timedelta(hours=1)),
                                       cart_row(2, HB, T0, sent=0, error="SMTP 550 'x'")])
    insert_rows(ws, "dispatch", notifications, [notif_row(1, None), notif_row(1, "k")])
    cfg = tmp_path / "config.toml"
    urls = {s: ws.config.sources[s].url for s in ("cart", "dispatch", "orders")}
    cfg.write_text("".join(f'[sources.{s}]\nurl = "{u}"\n' for s, u in urls.items()))
    return str(cfg)


def test_cli_json_shapes_and_errors(cli_config, capsys):
    assert cli.run(["--config", cli_config, "duplicates", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted((g["source"], g["keep_id"], g["member_ids"], g["count"]) for g in out) == [
        ("cart", 1, [1, 2], 2), ("dispatch", 1, [1, 2], 2)]
    assert all({"source", "key", "keep_id", "member_ids", "count"} <= set(g) for g in out)
    assert cli.run(["--config", cli_config, "failed", "--source", "cart", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(i["source"], i["id"], i["status"], i["error"]) for i in out] == [("cart", 3, "failed", "SMTP 550 'x'")]
    assert isinstance(out[0]["age_seconds"], float)
    assert cli.run(["--config", cli_config, "failed", "--filter", "550 'x'", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    assert cli.run(["--config", cli_config, "failed", "--filter", "' OR 1=1 --", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert cli.run(["--config", cli_config, "feed", "--limit", "5"]) == 0
    assert "notification(s), newest first" in capsys.readouterr().out
    assert cli.run(["--config", cli_config, "duplicates", "--since", "soon"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "30m, 24h or 7d" in err
    assert cli.run(["--config", cli_config, "failed", "--limit", "-1"]) == 2


def test_cli_requires_the_schema(workspace_factory, sql_url, tmp_path, capsys):
    ws = workspace_factory(cart=sql_url("cart"), upgrade=False)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[sources.cart]\nurl = "{ws.config.sources["cart"].url}"\n')
    assert cli.run(["--config", str(cfg), "duplicates"]) == 2
    assert "db upgrade" in capsys.readouterr().err
