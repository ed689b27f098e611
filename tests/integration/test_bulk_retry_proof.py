"""Retry --all at scale, on real processes: 4 consoles at once, each on its own pool of workers.

Exact counts on MariaDB: every retryable item is retried by exactly one
console, every other console records one skip for it, nothing is sent or
notified twice, and each console's audit holds one outcome per snapshot item.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import multiprocessing
import random
import socket
import threading
import traceback
from collections import Counter
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, insert, select, text

from app.bootstrap import Workspace
from app.config import ActionsConfig, MailConfig
from app.schema import (
    cart_log,
    cart_users,
    dispatch_log,
    dispatch_users,
    issue_watchers,
    issues,
    nc_action,
    nc_action_item,
    nc_cart_claim,
    nc_dispatch_attempt,
    notifications,
)
from app.services import dispatch as dispatch_svc
from app.sqlutil import db_now
from tests.helpers import guard_reason

pytestmark = pytest.mark.mariadb

PROCESSES = 4
POOL_SIZE = 8


# --------------------------------------------------------------------------
# Consoles in spawned processes (the pattern of test_cart_concurrency.py)

def _console(config, source, action_id, ready, go, results):
    """A separate console: its own Workspace, engine and transport, released with the others."""
    ws = Workspace(config=config)
    try:
        ws.engine(source).connect().close()  # connected before the start line
        ready.put(1)
        go.wait(60)
        from app.services.retry import retry
        out = retry(ws, source, all_matching=True, action_id=action_id)
        results.put(("ok", action_id, out))
    except Exception:  # reported to the test as a result
        results.put(("error", action_id, traceback.format_exc()))
    finally:
        ws.close()


def retry_all_in_processes(config, source) -> dict[str, dict]:
    """``retry --all`` on ``source`` in PROCESSES spawned consoles released together; outcome per action id."""
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_console, args=(config, source, f"retry-all-p{n}", ready, go, results))
             for n in range(PROCESSES)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=120)
        go.set()
        got = [results.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    errors = [r for r in got if r[0] == "error"]
    assert not errors, errors[0][2]
    return {action_id: out for _, action_id, out in got}


def audit(engine) -> dict[str, tuple[str, list[tuple[str, str, str | None]]]]:
    """action id -> (status, [(item id, outcome, detail)] in recorded order)."""
    with engine.connect() as conn:
        actions = dict(conn.execute(select(nc_action.c.action_id, nc_action.c.status)).all())
        items: dict[str, list] = {a: [] for a in actions}
        for r in conn.execute(select(nc_action_item.c.action_id, nc_action_item.c.item_id,
                                     nc_action_item.c.outcome, nc_action_item.c.detail)
                              .order_by(nc_action_item.c.id)):
            items.setdefault(r.action_id, []).append((r.item_id, r.outcome, r.detail))
    return {a: (actions.get(a), items[a]) for a in items}


def outcomes_of(out: dict) -> list[tuple[str, str, str | None]]:
    """The (item id, outcome, detail) a retry's result reports, sorted by item id."""
    rows = [(str(i), "retried", None) for i in out["retried_ids"]]
    rows += [(str(s["id"]), "skipped", s["reason"]) for s in out["skipped"]]
    rows += [(str(f["id"]), "failed", f["error"]) for f in out["failed"]]
    return sorted(rows)


# --------------------------------------------------------------------------
# A real SMTP server in the test process

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RecordingHandler:
    """Accepts every message and records its X-NC-Cart-Log-Id.

    DATA is answered only once ``gate_connections`` SMTP sessions have said
    EHLO (or after ``gate_seconds``): a worker connects on its first send,
    which comes after its console took the snapshot, and a console has at
    most POOL_SIZE connections, so no row is marked sent before every console
    has its snapshot — each snapshot then holds exactly the retryable rows.
    """

    def __init__(self, gate_connections: int, gate_seconds: float = 8.0):
        self.log_ids: list[str] = []
        self.messages = 0
        self.sessions = 0
        self.gate_connections = gate_connections
        self.gate_seconds = gate_seconds
        self.gate_opened_by = None
        self._gate: asyncio.Event | None = None
        self.lock = threading.Lock()

    def _event(self) -> asyncio.Event:
        if self._gate is None:
            self._gate = asyncio.Event()
        return self._gate

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.sessions += 1
        if self.sessions >= self.gate_connections and not self._event().is_set():
            self.gate_opened_by = f"{self.sessions} sessions"
            self._event().set()
        return responses

    async def handle_DATA(self, server, session, envelope):
        gate = self._event()
        if not gate.is_set():
            try:
                await asyncio.wait_for(gate.wait(), self.gate_seconds)
            except TimeoutError:
                if not gate.is_set():
                    self.gate_opened_by = f"timeout after {self.gate_seconds} s with {self.sessions} sessions"
                    gate.set()
        msg = message_from_bytes(envelope.original_content or envelope.content)
        with self.lock:
            self.messages += 1
            self.log_ids.append(msg["X-NC-Cart-Log-Id"])
        return "250 OK"


@pytest.fixture
def smtp_server():
    started = []

    def start(handler):
        ctl = Controller(handler, hostname="127.0.0.1", port=free_port())
        ctl.start()
        started.append(ctl)
        return ctl

    yield start
    for ctl in started:
        ctl.stop()


# --------------------------------------------------------------------------
# 1. Cart over SMTP

def chash(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def test_four_consoles_retrying_all_of_500_cart_rows_over_smtp_send_one_message_per_retryable_row(
        workspace_factory, mariadb_database, smtp_server):
    handler = RecordingHandler(gate_connections=(PROCESSES - 1) * POOL_SIZE + 1)
    ctl = smtp_server(handler)
    ws = workspace_factory(cart=mariadb_database("cart"),
                           mail=MailConfig(transport="smtp", host="127.0.0.1", port=ctl.port))
    config = dataclasses.replace(ws.config, actions=ActionsConfig(pool_size=POOL_SIZE))
    engine = ws.engine("cart")
    rnd = random.Random(500)
    n_rows, n_superseded = 500, 100
    with engine.begin() as conn:
        now = db_now(conn)
        conn.execute(insert(cart_users), [{"email": f"u{i}@example.com", "name": f"User {i}"} for i in range(50)])
        uids = list(conn.execute(select(cart_users.c.id).order_by(cart_users.c.id)).scalars())
        superseded_at = set(rnd.sample(range(n_rows), n_superseded))
        failed_rows, sent_rows = [], []
        for i in range(n_rows):
            created = now - dt.timedelta(days=1, hours=1) - dt.timedelta(seconds=rnd.randrange(47 * 3600))
            row = {"user_id": uids[i % len(uids)], "cart_hash": chash(f"cart-{i}"), "cart_value": f"{10 + i}.00",
                   "email_sent": 0, "created_at": created, "sent_at": None,
                   "error_message": f"451 4.3.0 try again later (attempt {i})"}
            failed_rows.append(row)
            if i in superseded_at:  # the same abandonment, emailed 5 minutes before this row bounced
                at = created - dt.timedelta(minutes=5)
                sent_rows.append(dict(row, email_sent=1, created_at=at, sent_at=at, error_message=None))
        conn.execute(insert(cart_log), sent_rows + failed_rows)
        unsent = {r.cart_hash: (r.id, r.error_message) for r in conn.execute(
            select(cart_log.c.id, cart_log.c.cart_hash, cart_log.c.error_message).where(cart_log.c.email_sent == 0))}
    superseded = {unsent[chash(f"cart-{i}")][0]: unsent[chash(f"cart-{i}")][1] for i in superseded_at}
    retryable = {row_id for row_id, _ in unsent.values()} - set(superseded)
    assert len(unsent) == n_rows and len(retryable) == n_rows - n_superseded

    results = retry_all_in_processes(config, "cart")

    gate = f"SMTP gate opened by {handler.gate_opened_by}"
    assert [r["snapshot"] for r in results.values()] == [len(retryable)] * PROCESSES, gate
    assert all(r["failed"] == [] for r in results.values()), [r["failed"][:3] for r in results.values()]
    retried = Counter(i for r in results.values() for i in r["retried_ids"])
    assert set(retried) == retryable and set(retried.values()) == {1}       # each row by exactly one console
    assert sum(r["retried"] for r in results.values()) == len(retryable)
    for r in results.values():
        assert r["retried"] + len(r["skipped"]) == r["snapshot"]
        assert {s["id"] for s in r["skipped"]} | set(r["retried_ids"]) == retryable
    # The server got exactly one message per retryable row, and none for a superseded one.
    assert handler.messages == len(retryable), gate
    headers = Counter(int(h) for h in handler.log_ids)
    assert set(headers) == retryable and set(headers.values()) == {1}
    assert not set(headers) & set(superseded)
    with engine.connect() as conn:
        db_rows = {r.id: r for r in conn.execute(select(cart_log))}
        claims = Counter(conn.execute(select(nc_cart_claim.c.state)).scalars())
    assert len(db_rows) == n_rows + n_superseded
    for row_id, error in superseded.items():
        assert (db_rows[row_id].email_sent, db_rows[row_id].sent_at, db_rows[row_id].error_message) == (0, None, error)
    for row_id in retryable:
        assert db_rows[row_id].email_sent == 1 and db_rows[row_id].error_message is None
        assert db_rows[row_id].sent_at is not None
    assert claims == {"sent": len(retryable)}
    # The audit: 4 actions succeeded, each with one outcome per snapshot item, as reported.
    ledger = audit(engine)
    assert sorted(ledger) == sorted(results)
    for action_id, out in results.items():
        status, items = ledger[action_id]
        assert status == "succeeded" and len(items) == len(retryable)
        assert sorted(items) == outcomes_of(out)


# --------------------------------------------------------------------------
# 2. Dispatch with the production schema

def test_four_consoles_retrying_all_failed_dispatches_with_a_pool_of_8_notify_each_recipient_once(
        workspace_factory, mariadb_database):
    ws = workspace_factory(dispatch=mariadb_database("dispatch"))
    config = dataclasses.replace(ws.config, actions=ActionsConfig(pool_size=POOL_SIZE))
    assert config.actions.pool_size == POOL_SIZE
    engine = ws.engine("dispatch")
    rnd = random.Random(300)
    n_dispatches, n_partial, n_complete = 300, 40, 10     # 50 failed mid-way: 40 partly, 10 fully delivered
    expected: dict[str, list[int]] = {}                   # dispatch_id -> recipients
    held: dict[str, list[int]] = {}                       # dispatch_id -> recipients already notified
    logs, people, watchers = [], [], []
    for n in range(n_dispatches):
        issue_id, comment_id = 1000 + n, 50_000 + n
        k = rnd.randint(2, 4)
        actor, *recipients = rnd.sample(range(1, 21), k + 1)
        reporter, assignee, *others = recipients
        # The assignee also watching and the actor watching: each must count once / not at all.
        w = set(others) | ({assignee} if n % 3 == 0 else set()) | ({actor} if n % 5 == 0 else set())
        people.append({"id": issue_id, "issue_key": f"OPS-{issue_id}", "title": f"Issue {issue_id}",
                       "reporter_id": reporter, "assignee_id": assignee})
        watchers += [{"issue_id": issue_id, "user_id": u} for u in sorted(w)]
        key = f"comment_added:{issue_id}:{comment_id}:{actor}"
        expected[key] = sorted(recipients)
        logs.append({"dispatch_id": key, "dispatch_type": "comment_added", "issue_id": issue_id,
                     "comment_id": comment_id, "actor_user_id": actor, "recipients_count": 0,
                     "status": "failed", "error_message": "Deadlock found when trying to get lock",
                     "created_at": None})
    keys = list(expected)
    rnd.shuffle(keys)
    for key in keys[:n_partial]:
        held[key] = sorted(rnd.sample(expected[key], rnd.randint(1, len(expected[key]) - 1)))
    for key in keys[n_partial:n_partial + n_complete]:
        held[key] = list(expected[key])
    with engine.begin() as conn:
        now = db_now(conn)
        conn.execute(insert(dispatch_users), [{"id": i, "email": f"u{i}@example.test", "display_name": f"User {i}"}
                                              for i in range(1, 21)])
        conn.execute(insert(issues), people)
        conn.execute(insert(issue_watchers), watchers)
        for n, row in enumerate(logs):
            row["created_at"] = now - dt.timedelta(minutes=30, seconds=n)
        conn.execute(insert(dispatch_log), logs)
        by_key = {row["dispatch_id"]: row for row in logs}
        conn.execute(insert(notifications), [
            {"user_id": u, "type": "comment_added", "issue_id": by_key[key]["issue_id"],
             "comment_id": by_key[key]["comment_id"], "actor_user_id": by_key[key]["actor_user_id"],
             "message": f"User {by_key[key]['actor_user_id']} commented on OPS-{by_key[key]['issue_id']}: "
                        f"Issue {by_key[key]['issue_id']}",
             "is_read": 0, "created_at": now - dt.timedelta(minutes=29), "dispatch_id": key}
            for key, users in held.items() for u in users])
        log_id = dict(conn.execute(select(dispatch_log.c.dispatch_id, dispatch_log.c.id)).all())
    all_ids = {log_id[k] for k in expected}
    fully_held = {log_id[k] for k in keys[n_partial:n_partial + n_complete]}
    to_retry = all_ids - fully_held

    results = retry_all_in_processes(config, "dispatch")

    assert all(r["failed"] == [] for r in results.values()), [r["failed"][:3] for r in results.values()]
    # A console whose snapshot comes a moment after another's misses the rows that one completed
    # meanwhile; the first snapshot precedes every completion, so it holds them all.
    snapshots = sorted(r["snapshot"] for r in results.values())
    assert snapshots[-1] == n_dispatches and all(s <= n_dispatches for s in snapshots)
    for r in results.values():
        handled = r["retried_ids"] + [s["id"] for s in r["skipped"]]
        assert len(handled) == len(set(handled)) == r["snapshot"] and set(handled) <= all_ids
    retried = Counter(i for r in results.values() for i in r["retried_ids"])
    assert set(retried) == to_retry and set(retried.values()) == {1}
    skips = [s for r in results.values() for s in r["skipped"]]
    held_skips = Counter(s["id"] for s in skips if guard_reason(s) == dispatch_svc.SKIP_HELD)
    assert set(held_skips) == fully_held and set(held_skips.values()) == {1}
    assert {guard_reason(s) for s in skips} - {dispatch_svc.SKIP_HELD} <= {dispatch_svc.SKIP_COMPLETED,
                                                                     dispatch_svc.SKIP_LEASED}
    assert len(skips) == sum(snapshots) - len(to_retry)
    # Every recipient holds exactly one notification per dispatch, and nobody else holds one.
    with engine.connect() as conn:
        dup_keys = conn.execute(text("SELECT dispatch_id, user_id FROM notifications "
                                     "GROUP BY dispatch_id, user_id HAVING COUNT(*) > 1")).all()
        dup_events = conn.execute(text(
            "SELECT user_id, type, issue_id, comment_id, actor_user_id FROM notifications "
            "GROUP BY user_id, type, issue_id, comment_id, actor_user_id HAVING COUNT(*) > 1")).all()
        total = conn.execute(select(func.count()).select_from(notifications)).scalar()
        pairs = Counter(conn.execute(select(notifications.c.dispatch_id, notifications.c.user_id)).all())
        rows = {r.id: r for r in conn.execute(select(dispatch_log))}
        attempts = dict(conn.execute(select(nc_dispatch_attempt.c.log_id, nc_dispatch_attempt.c.attempts)).all())
        leases = conn.execute(select(func.count()).select_from(nc_dispatch_attempt)
                              .where(nc_dispatch_attempt.c.lease_until.is_not(None))).scalar()
    assert dup_keys == [] and dup_events == []
    assert total == sum(len(v) for v in expected.values())
    assert pairs == Counter({(k, u): 1 for k, users in expected.items() for u in users})
    assert len(rows) == n_dispatches
    for key, recipients in expected.items():
        row = rows[log_id[key]]
        assert (row.status, row.recipients_count, row.error_message) == ("completed", len(recipients), None), key
        assert row.completed_at is not None
    assert attempts == {i: 1 for i in all_ids} and leases == 0
    # The audit: 4 actions succeeded, each with one outcome per snapshot item, as reported.
    ledger = audit(engine)
    assert sorted(ledger) == sorted(results)
    for action_id, out in results.items():
        status, items = ledger[action_id]
        assert status == "succeeded" and len(items) == out["snapshot"]
        assert sorted(items) == outcomes_of(out)
