"""Two status changes to the same status with another change of the issue between them are two events.

On SQLite and MariaDB (``sql_backend``): the duplicate scans (full and
incremental) and cleanup --apply read the issue's status timeline; the
order side keeps one email per (order, stage) whatever happened between.
"""
from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, insert, inspect, select, text

from app.read.duplicates import apply_scan, scan_duplicates, scan_duplicates_incremental
from app.schema import nc_archive, notifications
from app.services.cleanup import cleanup
from app.sqlutil import db_now

DAY = dt.timedelta(days=1)
ISSUE = 10


def status(user, at, to, *, actor=5, issue=ISSUE, dispatch_id=None, id=None):
    row = {"user_id": user, "type": "status_changed", "issue_id": issue, "comment_id": None,
           "actor_user_id": actor, "message": f"User {actor} changed OPS-{issue} to {to}", "is_read": 0,
           "created_at": at, "dispatch_id": dispatch_id}
    if id is not None:
        row["id"] = id
    return row


def comment(user, at, *, actor=5, issue=ISSUE, comment_id=1):
    return {"user_id": user, "type": "comment_added", "issue_id": issue, "comment_id": comment_id,
            "actor_user_id": actor, "message": f"User {actor} commented on OPS-{issue}", "is_read": 0,
            "created_at": at, "dispatch_id": None}


def insert_rows(ws, rows):
    if rows:
        with ws.engine("dispatch").begin() as conn:
            conn.execute(insert(notifications), rows)


def now_of(ws):
    with ws.engine("dispatch").connect() as conn:
        return db_now(conn).replace(microsecond=0)


def remaining_ids(ws):
    with ws.engine("dispatch").connect() as conn:
        return list(conn.execute(select(notifications.c.id).order_by(notifications.c.id)).scalars())


def as_set(groups):
    return sorted((g.rule, tuple(g.key.values()), tuple(g.member_ids)) for g in groups)


@pytest.fixture
def ws(workspace_factory, sql_url):
    return workspace_factory(dispatch=sql_url("dispatch"))


def test_resolved_reopened_resolved_are_three_events_and_cleanup_archives_nothing(ws):
    now = now_of(ws)
    insert_rows(ws, [status(4, now - 3 * DAY, "resolved"), status(4, now - 2 * DAY, "reopened"),
                     status(4, now - DAY, "resolved")])
    assert scan_duplicates(ws, "dispatch") == []
    assert scan_duplicates_incremental(ws, "dispatch").groups == []
    assert cleanup(ws, "dispatch", dry_run=True)["archived"] == 0
    out = cleanup(ws, "dispatch", dry_run=False, action_id="cleanup-three-events")
    assert out["archived"] == 0 and out["group_count"] == 0
    assert remaining_ids(ws) == [1, 2, 3]


def test_resolved_twice_with_nothing_between_is_a_duplicate_and_cleanup_archives_the_second(ws):
    now = now_of(ws)
    insert_rows(ws, [status(4, now - 3 * DAY, "resolved"), status(4, now - 3 * DAY + dt.timedelta(seconds=2),
                                                                   "resolved", dispatch_id="retry-1"),
                     # neither a comment nor another issue's change is a status change of OPS-10
                     comment(4, now - 3 * DAY + dt.timedelta(seconds=1)),
                     status(4, now - 3 * DAY + dt.timedelta(seconds=1), "closed", issue=11)])
    (group,) = scan_duplicates(ws, "dispatch")
    assert group.member_ids == [1, 2] and group.keep_id == 1
    assert group.key["event_detail"] == "User 5 changed OPS-10 to resolved"
    out = cleanup(ws, "dispatch", dry_run=False, action_id="cleanup-true-dup")
    assert out["archived_ids"] == [2]
    assert remaining_ids(ws) == [1, 3, 4]
    with ws.engine("dispatch").connect() as conn:
        assert conn.execute(select(nc_archive.c.row_id)).scalars().all() == ["2"]


def test_another_recipients_change_of_another_status_between_splits_the_group(ws):
    now = now_of(ws)
    t = now - 3 * DAY
    insert_rows(ws, [
        status(4, t, "resolved"),                                         # 1
        status(7, t + dt.timedelta(hours=1), "resolved"),                 # 2 the same change to 7: no split
        status(4, t + dt.timedelta(hours=2), "resolved"),                 # 3 duplicate of 1
        status(7, t + dt.timedelta(hours=3), "reopened", actor=6),        # 4 another change, to 7 only
        status(4, t + dt.timedelta(hours=4), "resolved"),                 # 5 a new event for 4
        status(4, t + dt.timedelta(hours=5), "resolved"),                 # 6 duplicate of 5
    ])
    groups = sorted(scan_duplicates(ws, "dispatch"), key=lambda g: g.keep_id)
    assert [g.member_ids for g in groups] == [[1, 3], [5, 6]]
    inc = scan_duplicates_incremental(ws, "dispatch")
    assert as_set(inc.groups) == as_set(groups)
    out = cleanup(ws, "dispatch", dry_run=False, action_id="cleanup-split")
    assert sorted(out["archived_ids"]) == [3, 6]
    assert remaining_ids(ws) == [1, 2, 4, 5]


def test_an_incremental_scan_after_a_split_inducing_row_agrees_with_a_full_scan(ws):
    now = now_of(ws)
    t = now - 3 * DAY
    insert_rows(ws, [status(4, t, "resolved"), status(4, t + dt.timedelta(hours=2), "resolved"),
                     status(9, t, "resolved"), status(9, t + dt.timedelta(hours=2), "resolved")])
    first = scan_duplicates_incremental(ws, "dispatch")
    assert sorted(g.member_ids for g in first.groups) == [[1, 2], [3, 4]]
    state = apply_scan({}, first)
    # Another person reopens the issue in between; only recipient 7 is told.
    insert_rows(ws, [status(7, t + dt.timedelta(hours=1), "reopened", actor=6)])
    inc = scan_duplicates_incremental(ws, "dispatch", first.cursor)
    assert inc.groups == []
    assert {k[0] for _, k in inc.touched} >= {4, 9}       # the split keys were re-examined
    state = apply_scan(state, inc)
    assert [g for gs in state.values() for g in gs] == [] == scan_duplicates(ws, "dispatch")


def test_a_late_committed_status_change_splits_a_group_in_the_incremental_scan(ws):
    now = now_of(ws)
    insert_rows(ws, [status(4, now - dt.timedelta(minutes=1), "resolved", id=1),
                     status(4, now - dt.timedelta(seconds=1), "resolved", id=10)])
    first = scan_duplicates_incremental(ws, "dispatch")
    assert [g.member_ids for g in first.groups] == [[1, 10]]
    quiet = scan_duplicates_incremental(ws, "dispatch", first.cursor)   # rows 1 and 10 are no news now
    state = apply_scan(apply_scan({}, first), quiet)
    assert [g.member_ids for gs in state.values() for g in gs] == [[1, 10]]
    assert scan_duplicates_incremental(ws, "dispatch", quiet.cursor).touched == set()
    # A row that took id 5 and committed after the scan (below the high-water id, within the margin),
    # to another recipient: only the issue's status timeline links it to recipient 4's group.
    insert_rows(ws, [status(7, now - dt.timedelta(seconds=30), "reopened", actor=6, id=5)])
    inc = scan_duplicates_incremental(ws, "dispatch", quiet.cursor)
    assert inc.groups == [] and ("dispatch_same_event", (4, "status_changed", ISSUE, None, 5)) in inc.touched
    assert apply_scan(state, inc) == {}
    assert scan_duplicates(ws, "dispatch") == []


def test_the_timeline_is_read_on_the_issue_status_index(ws):
    with ws.engine("dispatch").connect() as conn:
        names = {ix["name"] for ix in inspect(conn).get_indexes("notifications")}
    assert "nc_notif_issue_status" in names


def test_two_emails_of_one_order_stage_stay_duplicates_whatever_lies_between(workspace_factory, order_store_url):
    ws = workspace_factory(orders=order_store_url)
    db = ws.orders().db
    t0 = dt.datetime(2026, 11, 20, 10, 0)
    ids = [ObjectId() for _ in range(3)]
    # An order stage happens once: a delivery email between two pickup emails changes nothing.
    db["email_log"].insert_many([
        {"_id": ids[0], "order_id": 7, "event": "pickup_images_added", "to": "admin@x", "sent_at": t0},
        {"_id": ids[1], "order_id": 7, "event": "delivery_images_added", "to": "admin@x",
         "sent_at": t0 + dt.timedelta(hours=1)},
        {"_id": ids[2], "order_id": 7, "event": "pickup_images_added", "to": "admin@x",
         "sent_at": t0 + dt.timedelta(hours=2)}])
    (group,) = scan_duplicates(ws, "orders")
    assert group.key == {"order_id": 7, "event": "pickup_images_added"}
    assert group.member_ids == [str(ids[0]), str(ids[2])]
    out = cleanup(ws, "orders", dry_run=False, action_id="cleanup-order-stage")
    assert out["archived_ids"] == [str(ids[2])]


@pytest.mark.mariadb
def test_cleanup_waits_for_a_status_change_committing_between_and_then_keeps_both(workspace_factory,
                                                                                  mariadb_database):
    ws = workspace_factory(dispatch=mariadb_database("dispatch"))
    now = now_of(ws)
    insert_rows(ws, [status(4, now - 2 * DAY, "resolved"), status(4, now - DAY, "resolved")])
    writer = ws.engine("dispatch").connect()
    tx = writer.begin()
    try:
        # A reopen between the two, inserted and not yet committed.
        writer.execute(insert(notifications), [status(7, now - dt.timedelta(hours=36), "reopened", actor=6)])
        outcome = {}

        def run():
            try:
                outcome["out"] = cleanup(ws, "dispatch", dry_run=False, action_id="cleanup-waits")
            except Exception as exc:  # reported by the assertion below
                outcome["error"] = exc
        worker = threading.Thread(target=run)
        worker.start()
        deadline = time.monotonic() + 20
        # The cleanup's share-locked timeline read reaches the writer's uncommitted row and waits for it.
        waiting = text("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                       "WHERE db = DATABASE() AND info LIKE '%LOCK IN SHARE MODE%'")
        with ws.engine("dispatch").connect() as probe:
            while not probe.execute(waiting).scalar():
                assert time.monotonic() < deadline and worker.is_alive(), outcome
                time.sleep(0.02)
        tx.commit()
    finally:
        if tx.is_active:
            tx.rollback()
        writer.close()
    worker.join(30)
    assert outcome.get("out", {}).get("archived") == 0, outcome
    assert remaining_ids(ws) == [1, 2, 3]


# --------------------------------------------------------------------------
# full and incremental scans agree on random histories

_WS: dict = {}


def _shared_ws(workspace_factory, sql_url):
    key = id(workspace_factory)
    if key not in _WS:
        _WS.clear()
        _WS[key] = workspace_factory(dispatch=sql_url("statusprop"))
    return _WS[key]


change = st.tuples(st.sampled_from([4, 7]),                       # recipient
                   st.sampled_from([10, 11]),                     # issue
                   st.sampled_from([5, 6]),                       # actor
                   st.sampled_from(["resolved", "reopened"]),     # new status
                   st.integers(0, 12))                            # hour


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(change, max_size=6), min_size=1, max_size=4))
def test_full_and_incremental_scans_agree_on_random_status_histories(workspace_factory, sql_url, batches):
    ws = _shared_ws(workspace_factory, sql_url)
    with ws.engine("dispatch").begin() as conn:
        conn.execute(delete(notifications))
    t0 = now_of(ws) - 3 * DAY
    scan = scan_duplicates_incremental(ws, "dispatch")
    state = apply_scan({}, scan)
    for batch in batches:
        insert_rows(ws, [status(user, t0 + dt.timedelta(hours=hour), to, actor=actor, issue=issue)
                         for user, issue, actor, to, hour in batch])
        scan = scan_duplicates_incremental(ws, "dispatch", scan.cursor)
        state = apply_scan(state, scan)
        assert as_set([g for gs in state.values() for g in gs]) == as_set(scan_duplicates(ws, "dispatch"))
    with ws.engine("dispatch").connect() as conn:
        assert conn.execute(select(func.count()).select_from(notifications)).scalar() == sum(map(len, batches))
