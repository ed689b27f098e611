"""The guarded dispatch path: one set of notifications per event, whatever the concurrency."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from app.errors import UsageError
from app.schema import dispatch_log, nc_dispatch_attempt, notifications
from app.services import dispatch as svc
from tests.helpers import log_rows, notification_users, seed_people


@pytest.mark.mariadb
def test_eight_threads_dispatch_the_same_comment_once(workspace_factory, mariadb_database):
    ws = workspace_factory(dispatch=mariadb_database("dispatch"))
    engine = ws.engine("dispatch")
    # Actor 3 watches the issue; the assignee (2) also watches it: each once, minus the actor.
    seed_people(engine, reporter=1, assignee=2, watchers=(2, 3, 4, 5))
    barrier = threading.Barrier(8)
    results = []

    def attempt():
        barrier.wait()
        results.append(svc.dispatch_comment_added(ws, 1, 500, 3))

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcomes = sorted(r.outcome for r in results)
    assert outcomes == ["dispatched"] + ["duplicate"] * 7
    winner = next(r for r in results if r.outcome == "dispatched")
    assert winner.recipients == (1, 2, 4, 5)
    assert notification_users(engine) == [1, 2, 4, 5]
    rows = log_rows(engine)
    assert len(rows) == 1
    assert rows[0]["dispatch_id"] == "comment_added:1:500:3" == winner.dispatch_id
    assert rows[0]["status"] == "completed" and rows[0]["recipients_count"] == 4
    assert rows[0]["completed_at"] is not None and rows[0]["id"] == winner.log_id

    # The same event again, later: still one set.
    again = svc.dispatch_comment_added(ws, 1, 500, 3)
    assert again.outcome == "duplicate"
    assert notification_users(engine) == [1, 2, 4, 5]
    assert len(log_rows(engine)) == 1
    with engine.connect() as conn:
        messages = set(conn.execute(select(notifications.c.message)).scalars())
    assert messages == {"User 3 commented on OPS-1: Issue 1"}


@pytest.mark.mariadb
def test_status_changes_are_told_apart_by_their_reference(workspace_factory, mariadb_database):
    ws = workspace_factory(dispatch=mariadb_database("dispatch"))
    engine = ws.engine("dispatch")
    seed_people(engine, reporter=1, assignee=None, watchers=(2,))
    first = svc.dispatch_status_changed(ws, 1, 2, "closed", event_ref="history-7")
    repeat = svc.dispatch_status_changed(ws, 1, 2, "closed", event_ref="history-7")
    reopened = svc.dispatch_status_changed(ws, 1, 2, "open", event_ref="history-8")
    assert (first.outcome, repeat.outcome, reopened.outcome) == ("dispatched", "duplicate", "dispatched")
    assert first.recipients == (1,) and reopened.recipients == (1,)
    with engine.connect() as conn:
        rows = conn.execute(select(notifications.c.user_id, notifications.c.comment_id, notifications.c.message,
                                   notifications.c.dispatch_id).order_by(notifications.c.id)).all()
    assert rows == [(1, None, "User 2 changed OPS-1 to closed", "status_changed:1:2:closed:history-7"),
                    (1, None, "User 2 changed OPS-1 to open", "status_changed:1:2:open:history-8")]


@pytest.mark.mariadb
def test_an_error_inside_the_transaction_leaves_no_notification(workspace_factory, mariadb_database):
    ws = workspace_factory(dispatch=mariadb_database("dispatch"))
    engine = ws.engine("dispatch")
    seed_people(engine, watchers=(3, 4, 5))
    # The database refuses to complete the log row: the notifications were already inserted
    # in the same transaction, so they must roll back with it.
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse_completion BEFORE UPDATE ON notification_dispatch_log FOR EACH ROW "
            "BEGIN IF NEW.status = 'completed' THEN "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'notification quota exceeded'; END IF; END")
    result = svc.dispatch_comment_added(ws, 1, 900, 1)
    assert result.outcome == "failed"
    assert result.error == "The dispatch database failed: notification quota exceeded."
    assert notification_users(engine) == []
    rows = log_rows(engine)
    assert [(r["status"], r["error_message"], r["completed_at"]) for r in rows] == [
        ("failed", "The dispatch database failed: notification quota exceeded.", None)]
    # A repeat of the event does not bypass the failed row: retry is the way back.
    assert svc.dispatch_comment_added(ws, 1, 900, 1).outcome == "duplicate"
    # While the database still refuses, a retry fails the same way and still leaves nothing.
    with pytest.raises(Exception, match="quota exceeded"):
        svc.retry_item(ws, str(rows[0]["id"]), operator="tester@host", action_id="r-1")
    assert notification_users(engine) == []
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse_completion")
    assert svc.retry_item(ws, str(rows[0]["id"]), operator="tester@host", action_id="r-2") == ("retried", None)
    assert notification_users(engine) == [2, 3, 4, 5]
    row = log_rows(engine)[0]
    assert (row["status"], row["recipients_count"], row["error_message"]) == ("completed", 4, None)
    with engine.connect() as conn:
        attempt = conn.execute(select(nc_dispatch_attempt)).mappings().one()
    assert attempt["attempts"] == 2 and attempt["lease_until"] is None and attempt["last_error"] is None


def test_basic_path_on_sqlite(workspace_factory, tmp_path):
    ws = workspace_factory(dispatch=f"sqlite:///{tmp_path / 'dispatch.db'}")
    engine = ws.engine("dispatch")
    seed_people(engine, issue_ids=(1,), reporter=1, assignee=2, watchers=(2, 3))
    first = svc.dispatch_comment_added(ws, 1, 10, 2)
    assert (first.outcome, first.recipients) == ("dispatched", (1, 3))
    assert svc.dispatch_comment_added(ws, 1, 10, 2).outcome == "duplicate"
    status = svc.dispatch_status_changed(ws, 1, 1, "resolved")
    assert (status.outcome, status.recipients, status.dispatch_id) == ("dispatched", (2, 3), "status_changed:1:1:resolved")
    missing = svc.dispatch_comment_added(ws, 2, 11, 1)   # the issue is not there (yet)
    assert (missing.outcome, missing.error) == ("failed", "Issue 2 does not exist.")
    assert notification_users(engine, comment_id=10) == [1, 3]
    assert notification_users(engine, type="status_changed") == [2, 3]
    rows = log_rows(engine)
    assert [(r["dispatch_id"], r["status"], r["recipients_count"]) for r in rows] == [
        ("comment_added:1:10:2", "completed", 2), ("status_changed:1:1:resolved", "completed", 2),
        ("comment_added:2:11:1", "failed", 0)]
    seed_people(engine, issue_ids=(2,), reporter=1, assignee=4, watchers=())
    failed_id = str(rows[2]["id"])
    assert svc.retry_item(ws, failed_id, operator="t@h", action_id="a") == ("retried", None)
    assert svc.retry_item(ws, failed_id, operator="t@h", action_id="b") == ("skipped", "already completed")
    assert notification_users(engine, issue_id=2) == [4]


def test_bad_events_are_refused_in_one_sentence(workspace_factory, tmp_path):
    ws = workspace_factory(dispatch=f"sqlite:///{tmp_path / 'dispatch.db'}")
    with pytest.raises(UsageError, match="comment id must be a positive integer"):
        svc.dispatch_comment_added(ws, 1, 0, 2)
    with pytest.raises(UsageError, match="actor user id must be a positive integer up to 4294967295"):
        svc.dispatch_comment_added(ws, 1, 5, 2 ** 32)
    with pytest.raises(UsageError, match="new status must be 1 to 32 characters"):
        svc.dispatch_status_changed(ws, 1, 2, "")
    with pytest.raises(UsageError, match="event reference"):
        svc.dispatch_status_changed(ws, 1, 2, "closed", event_ref="x" * 200)
    with pytest.raises(UsageError, match="The dispatch row id 'abc' is not a positive whole number"):
        svc.retry_item(ws, "abc", operator="t@h", action_id="a")
    with engine_connect(ws) as conn:
        assert conn.execute(select(func.count()).select_from(dispatch_log)).scalar() == 0


def engine_connect(ws):
    return ws.engine("dispatch").connect()
