"""Retrying dispatches: exactly one winner across threads and processes, and every guarantee re-checked."""
from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import threading
from collections import Counter

import pytest
from sqlalchemy import func, insert, select, update

from app.config import Thresholds
from app.errors import OperationFailed
from app.schema import dispatch_log, nc_dispatch_attempt, notifications
from app.services import dispatch as svc
from app.sqlutil import db_now
from tests.helpers import guard_reason, log_rows, notification_users, seed_people

ALLOWED_SKIPS = {svc.SKIP_COMPLETED, svc.SKIP_LEASED}


def _retry_in_process(config, ids, action_id, barrier, queue):
    from app.bootstrap import bootstrap
    from app.services.retry import retry
    ws = bootstrap(config)
    try:
        ws.engine("dispatch").connect().close()   # connected before the start line
        barrier.wait(timeout=120)
        queue.put(("ok", retry(ws, "dispatch", ids=ids, action_id=action_id)))
    except Exception as exc:  # reported to the test, which fails on it
        queue.put(("error", repr(exc)))
    finally:
        ws.close()


def make_failed_dispatches(ws, count: int) -> tuple[list[str], dict[int, list[int]]]:
    """``count`` dispatches that failed because their issue did not exist yet, then the issues appear."""
    engine = ws.engine("dispatch")
    seed_people(engine, issue_ids=(), users=8)
    ids = []
    for n in range(count):
        result = svc.dispatch_comment_added(ws, 100 + n, 1000 + n, 1 + n % 3)
        assert result.outcome == "failed" and result.error == f"Issue {100 + n} does not exist."
        ids.append(str(result.log_id))
    expected = {}
    for n in range(count):
        watchers = tuple(sorted({(n % 5) + 2, 6, 7}))
        seed_people(engine, issue_ids=(100 + n,), reporter=1, assignee=(n % 4) + 3, watchers=watchers)
        expected[100 + n] = sorted(({1, (n % 4) + 3} | set(watchers)) - {1 + n % 3})
    return ids, expected


@pytest.mark.mariadb
def test_eight_threads_and_four_processes_retry_the_same_failed_dispatches(workspace_factory, mariadb_database):
    ws = workspace_factory(dispatch=mariadb_database("dispatch"))
    engine = ws.engine("dispatch")
    ids, expected = make_failed_dispatches(ws, 12)
    from app.services.retry import retry

    ctx = mp.get_context("spawn")
    pbarrier, queue = ctx.Barrier(5), ctx.Queue()
    procs = [ctx.Process(target=_retry_in_process, args=(ws.config, ids, f"proc-retry-{i}", pbarrier, queue))
             for i in range(4)]
    for p in procs:
        p.start()
    tbarrier = threading.Barrier(9)
    thread_results, thread_errors = [], []

    def in_thread(i):
        try:
            tbarrier.wait(timeout=120)
            thread_results.append(retry(ws, "dispatch", ids=ids, action_id=f"thread-retry-{i}"))
        except Exception as exc:
            thread_errors.append(repr(exc))

    threads = [threading.Thread(target=in_thread, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    pbarrier.wait(timeout=120)       # the processes are connected and waiting: release everyone
    tbarrier.wait(timeout=120)
    for t in threads:
        t.join(timeout=180)
    proc_results = [queue.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert thread_errors == []
    assert all(kind == "ok" for kind, _ in proc_results), proc_results
    results = thread_results + [out for _, out in proc_results]
    assert len(results) == 12

    retried = Counter(i for r in results for i in r["retried_ids"])
    assert retried == Counter({int(i): 1 for i in ids})            # exactly one 'retried' per item overall
    assert all(r["failed"] == [] for r in results)
    skips = [s for r in results for s in r["skipped"]]
    assert len(skips) == 11 * len(ids)                          # the outcomes add up: one per item per action
    assert {guard_reason(s) for s in skips} <= ALLOWED_SKIPS

    for row in log_rows(engine):
        assert row["status"] == "completed" and row["error_message"] is None
        assert row["recipients_count"] == len(expected[row["issue_id"]])
        assert notification_users(engine, issue_id=row["issue_id"]) == expected[row["issue_id"]]
    with engine.connect() as conn:
        attempts = dict(conn.execute(select(nc_dispatch_attempt.c.log_id, nc_dispatch_attempt.c.attempts)).all())
        leases = conn.execute(select(func.count()).select_from(nc_dispatch_attempt)
                              .where(nc_dispatch_attempt.c.lease_until.is_not(None))).scalar()
    assert attempts == {int(i): 1 for i in ids} and leases == 0
    # Every action is in the audit ledger with its per-item outcomes.
    from app.services.audit import find_action
    entry = find_action(ws, "proc-retry-0")
    assert entry.status == "succeeded" and len(entry.items) == len(ids)


@pytest.mark.mariadb
def test_recipients_already_holding_the_notification_are_not_notified_again(workspace_factory, mariadb_database):
    ws = workspace_factory(dispatch=mariadb_database("dispatch"))
    engine = ws.engine("dispatch")
    seed_people(engine, issue_ids=(1, 2), reporter=1, assignee=2, watchers=(3,))
    with engine.begin() as conn:
        now = db_now(conn)
        # Seed-era rows: a failed log row whose notifications a timestamped retry already delivered.
        for issue_id, holders in ((1, (1, 2, 3)), (2, (2,))):
            key = f"comment_added_{issue_id}_comment_7_4_1733676800123"
            conn.execute(insert(dispatch_log), {"dispatch_id": key, "dispatch_type": "comment_added",
                                                "issue_id": issue_id, "comment_id": 7, "actor_user_id": 4,
                                                "status": "failed", "error_message": "Deadlock found",
                                                "created_at": now})
            conn.execute(insert(notifications), [{
                "user_id": u, "type": "comment_added", "issue_id": issue_id, "comment_id": 7, "actor_user_id": 4,
                "message": "User 4 commented", "created_at": now, "dispatch_id": key + "9"} for u in holders])
    rows = log_rows(engine)
    assert svc.retry_item(ws, str(rows[0]["id"]), operator="t@h", action_id="a") == (
        "skipped", "recipients already hold the notification")
    assert svc.retry_item(ws, str(rows[1]["id"]), operator="t@h", action_id="a") == ("retried", None)
    assert notification_users(engine, issue_id=1) == [1, 2, 3]          # nobody got a second one
    assert notification_users(engine, issue_id=2) == [1, 2, 3]          # only the missing two were added
    assert [(r["status"], r["recipients_count"]) for r in log_rows(engine)] == [("completed", 3), ("completed", 3)]
    # Completed now: a further retry is skipped.
    assert svc.retry_item(ws, str(rows[0]["id"]), operator="t@h", action_id="b") == ("skipped", "already completed")


@pytest.mark.mariadb
def test_a_pending_dispatch_is_retried_only_once_it_is_stuck(workspace_factory, mariadb_database):
    ws = workspace_factory(dispatch=mariadb_database("dispatch"), thresholds=Thresholds(dispatch_stuck_minutes=5))
    engine = ws.engine("dispatch")
    seed_people(engine, reporter=1, assignee=2, watchers=(3,))
    with engine.begin() as conn:
        now = db_now(conn)
        # A dispatcher claimed the event and died before delivering.
        conn.execute(insert(dispatch_log), {"dispatch_id": "comment_added:1:9:3", "dispatch_type": "comment_added",
                                            "issue_id": 1, "comment_id": 9, "actor_user_id": 3,
                                            "status": "pending", "created_at": now - dt.timedelta(minutes=4)})
    log_id = str(log_rows(engine)[0]["id"])
    assert svc.retry_item(ws, log_id, operator="t@h", action_id="a") == ("skipped", "in progress")
    assert notification_users(engine) == []
    # The same event dispatched again meanwhile is a duplicate: the pending row holds the key.
    assert svc.dispatch_comment_added(ws, 1, 9, 3).outcome == "duplicate"
    with engine.begin() as conn:
        conn.execute(update(dispatch_log).values(created_at=now - dt.timedelta(minutes=6)))
    assert svc.retry_item(ws, log_id, operator="t@h", action_id="b") == ("retried", None)
    assert notification_users(engine) == [1, 2]
    row = log_rows(engine)[0]
    assert (row["status"], row["recipients_count"]) == ("completed", 2)


@pytest.mark.mariadb
def test_a_retry_that_fails_again_is_reported_and_counted(workspace_factory, mariadb_database):
    ws = workspace_factory(dispatch=mariadb_database("dispatch"))
    engine = ws.engine("dispatch")
    seed_people(engine, issue_ids=())
    result = svc.dispatch_comment_added(ws, 77, 1, 2)
    assert result.outcome == "failed"
    from app.services.retry import retry
    out = retry(ws, "dispatch", ids=[str(result.log_id), "999999"], action_id="retry-fails")
    assert out["retried"] == 0 and out["skipped"] == []
    assert out["failed"] == [
        {"id": result.log_id, "error": f"Dispatch {result.log_id} failed again: Issue 77 does not exist."},
        {"id": 999999, "error": "Dispatch log row 999999 does not exist."}]
    row = log_rows(engine)[0]
    assert (row["status"], row["error_message"]) == ("failed", "Issue 77 does not exist.")
    with engine.connect() as conn:
        attempt = conn.execute(select(nc_dispatch_attempt)).mappings().one()
    assert (attempt["attempts"], attempt["last_error"], attempt["lease_until"]) == (1, "Issue 77 does not exist.", None)
    with pytest.raises(OperationFailed, match="failed again"):
        svc.retry_item(ws, str(result.log_id), operator="t@h", action_id="again")
