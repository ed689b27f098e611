"""Two status changes by one person on one issue are two events, not a duplicate."""
from __future__ import annotations

from sqlalchemy import select, update

from app.read.duplicates import scan_duplicates
from app.read.rules import group_dispatch_rows
from app.schema import dispatch_log, issues, notifications
from app.services import dispatch as svc
from app.services.cleanup import cleanup
from app.services.retry import retry
from tests.helpers import seed_people


def test_a_failed_second_status_change_is_delivered_by_a_retry(workspace_factory, sql_url):
    ws = workspace_factory(dispatch=sql_url("dispatch"))
    engine = ws.engine("dispatch")
    seed_people(engine, issue_ids=(3,), reporter=1, assignee=2, watchers=(4,))
    first = svc.dispatch_status_changed(ws, 3, 5, "resolved")
    assert first.outcome == "dispatched" and first.recipients == (1, 2, 4)
    # The second change fails: the issue row is briefly gone (as in a migration).
    with engine.begin() as conn:
        conn.execute(update(issues).where(issues.c.id == 3).values(id=33))
    second = svc.dispatch_status_changed(ws, 3, 5, "closed")
    assert second.outcome == "failed"
    with engine.begin() as conn:
        conn.execute(update(issues).where(issues.c.id == 33).values(id=3))
    out = retry(ws, "dispatch", ids=[str(second.log_id)], action_id="retry-closed")
    assert out["retried"] == 1, out
    with engine.connect() as conn:
        messages = sorted(conn.execute(select(notifications.c.message).where(notifications.c.user_id == 4)).scalars())
        status = conn.execute(select(dispatch_log.c.status).where(dispatch_log.c.id == second.log_id)).scalar_one()
    assert messages == ["User 5 changed OPS-3 to closed", "User 5 changed OPS-3 to resolved"]
    assert status == "completed"
    # Neither the duplicate view nor a cleanup takes the two changes for one event.
    assert scan_duplicates(ws, "dispatch") == []
    assert cleanup(ws, "dispatch", dry_run=True)["archived"] == 0


def test_status_changes_group_only_with_the_same_new_status():
    base = {"user_id": 4, "type": "status_changed", "issue_id": 3, "comment_id": None, "actor_user_id": 5,
            "is_read": 0, "dispatch_id": None}
    import datetime as dt
    t = dt.datetime(2026, 11, 20, 10, 0)
    rows = [dict(base, id=1, created_at=t, message="User 5 changed OPS-3 to resolved"),
            dict(base, id=2, created_at=t + dt.timedelta(seconds=1), message="User 5 changed OPS-3 to closed"),
            dict(base, id=3, created_at=t + dt.timedelta(seconds=2), message="User 5 changed OPS-3 to closed",
                 dispatch_id="status_changed_3_5_1733676800123")]
    (group,) = group_dispatch_rows(rows)
    assert group.member_ids == [2, 3] and group.keep_id == 2
    assert group.key["event_detail"] == "User 5 changed OPS-3 to closed"
    comment = dict(base, type="comment_added", comment_id=7, message="x")
    (cgroup,) = group_dispatch_rows([dict(comment, id=10, created_at=t), dict(comment, id=11, created_at=t, message="y")])
    assert "event_detail" not in cgroup.key and cgroup.member_ids == [10, 11]
