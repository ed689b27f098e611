"""Dispatch retries in chunks share round trips, never fates (MariaDB).

A chunk of failed dispatches is read, leased and delivered together; each
item keeps its own lease, its own outcome and its own error.
"""
from __future__ import annotations

import pytest
from sqlalchemy import func, insert, select

from app.schema import dispatch_log, nc_dispatch_attempt, notifications
from app.services import dispatch as svc
from app.services.retry import retry
from app.sqlutil import db_now
from tests.helpers import log_rows, notification_users, seed_people

pytestmark = pytest.mark.mariadb


def failed_row(conn, key: str, issue_id: int, comment_id: int, actor: int, now) -> None:
    conn.execute(insert(dispatch_log), {"dispatch_id": key, "dispatch_type": "comment_added", "issue_id": issue_id,
                                        "comment_id": comment_id, "actor_user_id": actor, "status": "failed",
                                        "error_message": "Deadlock found", "created_at": now})


@pytest.fixture
def ws(workspace_factory, mariadb_database):
    return workspace_factory(dispatch=mariadb_database("dispatch"))


def test_one_missing_issue_fails_its_item_only(ws):
    engine = ws.engine("dispatch")
    seed_people(engine, issue_ids=(1, 2, 3), reporter=1, assignee=2, watchers=(3,))
    with engine.begin() as conn:
        now = db_now(conn)
        for issue in (1, 2, 77, 3):
            failed_row(conn, f"comment_added:{issue}:5:4", issue, 5, 4, now)
    ids = [r["id"] for r in log_rows(engine)]
    outcomes = svc.retry_items(ws, [str(i) for i in ids], operator="t@h", action_id="a")
    assert outcomes == [("retried", None), ("retried", None),
                        ("failed", f"Dispatch {ids[2]} failed again: Issue 77 does not exist."), ("retried", None)]
    assert [(r["status"], r["error_message"]) for r in log_rows(engine)] == [
        ("completed", None), ("completed", None), ("failed", "Issue 77 does not exist."), ("completed", None)]
    with engine.connect() as conn:
        attempts = {r.log_id: (r.attempts, r.lease_until, r.last_error)
                    for r in conn.execute(select(nc_dispatch_attempt))}
    assert attempts == {ids[0]: (1, None, None), ids[1]: (1, None, None),
                        ids[2]: (1, None, "Issue 77 does not exist."), ids[3]: (1, None, None)}
    assert notification_users(engine, issue_id=1) == [1, 2, 3]


def test_two_rows_of_one_event_in_one_chunk_notify_each_recipient_once(ws):
    """The seed's timestamped keys: two failed log rows of the same comment."""
    engine = ws.engine("dispatch")
    seed_people(engine, issue_ids=(1,), reporter=1, assignee=2, watchers=(3,))
    with engine.begin() as conn:
        now = db_now(conn)
        failed_row(conn, "comment_added_1_comment_5_4_1733676800123", 1, 5, 4, now)
        failed_row(conn, "comment_added_1_comment_5_4_1733676800977", 1, 5, 4, now)
    ids = [r["id"] for r in log_rows(engine)]
    out = retry(ws, "dispatch", all_matching=True, action_id="retry-all")
    # --all takes the newest first: the later row delivers, the earlier finds them held.
    assert out["retried_ids"] == [ids[1]]
    assert out["skipped"] == [{"id": ids[0], "reason": svc.SKIP_HELD}]
    assert notification_users(engine) == [1, 2, 3]
    assert [r["status"] for r in log_rows(engine)] == ["completed", "completed"]


def test_a_chunk_whose_transaction_fails_runs_each_item_alone(ws):
    engine = ws.engine("dispatch")
    seed_people(engine, issue_ids=(1, 2, 3), reporter=1, assignee=2, watchers=(3,))
    with engine.begin() as conn:
        now = db_now(conn)
        for issue in (1, 2, 3):
            failed_row(conn, f"comment_added:{issue}:5:4", issue, 5, 4, now)
        # The database refuses to complete issue 2's dispatch (a trigger, as a quota would).
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse_two BEFORE UPDATE ON notification_dispatch_log FOR EACH ROW "
            "BEGIN IF NEW.status = 'completed' AND NEW.issue_id = 2 THEN "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'notification quota exceeded'; END IF; END")
    ids = [r["id"] for r in log_rows(engine)]
    out = retry(ws, "dispatch", ids=[str(i) for i in ids], action_id="retry-3")
    assert out["retried_ids"] == [ids[0], ids[2]]
    [failed] = out["failed"]
    assert failed["id"] == ids[1] and "quota exceeded" in failed["error"]
    assert failed["error"].startswith(f"Dispatch {ids[1]} failed again: ")
    assert notification_users(engine, issue_id=2) == []
    assert notification_users(engine, issue_id=1) == [1, 2, 3] == notification_users(engine, issue_id=3)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(nc_dispatch_attempt)
                            .where(nc_dispatch_attempt.c.lease_until.is_not(None))).scalar() == 0


def test_notifications_delivered_by_someone_else_meanwhile_are_not_counted_twice(ws, monkeypatch):
    """Holders read, then another dispatcher inserts: the unique key turns the chunk's rows away,
    and each item is judged again alone."""
    engine = ws.engine("dispatch")
    seed_people(engine, issue_ids=(1, 2), reporter=1, assignee=2, watchers=(3,))
    with engine.begin() as conn:
        now = db_now(conn)
        for issue in (1, 2):
            failed_row(conn, f"comment_added:{issue}:5:4", issue, 5, 4, now)
        # Issue 1's recipients already hold their notifications under the row's own key.
        conn.execute(insert(notifications), [{
            "user_id": u, "type": "comment_added", "issue_id": 1, "comment_id": 5, "actor_user_id": 4,
            "message": "User 4 commented on OPS-1: Issue 1", "created_at": now,
            "dispatch_id": "comment_added:1:5:4"} for u in (1, 2, 3)])
    real_held = svc._held
    calls = {"n": 0}

    def blind_once(*args):  # the first (chunk) pass misses them, as a read before their commit would
        calls["n"] += 1
        return set() if calls["n"] <= 2 else real_held(*args)
    monkeypatch.setattr(svc, "_held", blind_once)
    ids = [r["id"] for r in log_rows(engine)]
    outcomes = svc.retry_items(ws, [str(i) for i in ids], operator="t@h", action_id="a")
    assert outcomes == [("skipped", svc.SKIP_HELD), ("retried", None)]
    assert notification_users(engine, issue_id=1) == [1, 2, 3] == notification_users(engine, issue_id=2)


def test_a_second_change_to_the_same_status_is_delivered_after_a_change_between(ws):
    """Resolved, reopened, resolved: retrying the third is a new event, not a repeat of the first."""
    import datetime as dt
    engine = ws.engine("dispatch")
    seed_people(engine, issue_ids=(1,), reporter=1, assignee=2, watchers=(3,))
    with engine.begin() as conn:
        now = db_now(conn)
        for n, (status, days) in enumerate((("resolved", 3), ("reopened", 2))):
            key = f"status_changed:1:4:{status}:h{n}"
            conn.execute(insert(dispatch_log), {
                "dispatch_id": key, "dispatch_type": "status_changed", "issue_id": 1, "actor_user_id": 4,
                "status": "completed", "recipients_count": 3, "created_at": now - dt.timedelta(days=days),
                "completed_at": now - dt.timedelta(days=days)})
            conn.execute(insert(notifications), [{
                "user_id": u, "type": "status_changed", "issue_id": 1, "comment_id": None, "actor_user_id": 4,
                "message": f"User 4 changed OPS-1 to {status}", "created_at": now - dt.timedelta(days=days),
                "dispatch_id": key} for u in (1, 2, 3)])
        conn.execute(insert(dispatch_log), {
            "dispatch_id": "status_changed:1:4:resolved:h2", "dispatch_type": "status_changed", "issue_id": 1,
            "actor_user_id": 4, "status": "failed", "error_message": "Deadlock found",
            "created_at": now - dt.timedelta(days=1)})
    out = retry(ws, "dispatch", all_matching=True, action_id="retry-all")
    assert out["retried"] == 1 and out["skipped"] == [] and out["failed"] == []
    with engine.connect() as conn:
        held = conn.execute(select(notifications.c.user_id).where(
            notifications.c.dispatch_id == "status_changed:1:4:resolved:h2").order_by(notifications.c.user_id)).all()
    assert [u for (u,) in held] == [1, 2, 3]


def test_a_repeat_of_the_same_status_change_with_nothing_between_is_held(ws):
    import datetime as dt
    engine = ws.engine("dispatch")
    seed_people(engine, issue_ids=(1,), reporter=1, assignee=2, watchers=(3,))
    with engine.begin() as conn:
        now = db_now(conn)
        conn.execute(insert(notifications), [{
            "user_id": u, "type": "status_changed", "issue_id": 1, "comment_id": None, "actor_user_id": 4,
            "message": "User 4 changed OPS-1 to resolved", "created_at": now - dt.timedelta(days=3),
            "dispatch_id": "status_changed_1_4_1733676800123"} for u in (1, 2, 3)])
        conn.execute(insert(dispatch_log), {
            "dispatch_id": "status_changed:1:4:resolved", "dispatch_type": "status_changed", "issue_id": 1,
            "actor_user_id": 4, "status": "failed", "error_message": "Deadlock found",
            "created_at": now - dt.timedelta(days=3)})
    out = retry(ws, "dispatch", all_matching=True, action_id="retry-all")
    assert out["retried"] == 0 and [s["reason"] for s in out["skipped"]] == [svc.SKIP_HELD]
