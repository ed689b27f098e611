"""Simulator driver for the dispatch database (issue tracker notifications, seed 004).

An event is a comment added to an issue, or a status change; each is
attempted ``ATTEMPTS_PER_EVENT`` times at once (a double-submitted request,
a retrying client).

* ``naive`` runs seed 004 as it was written: a dispatch key that embeds the
  millisecond timestamp (so every attempt gets a new key), a "completed?"
  check before the insert (which can never match such a key, and would race
  anyway), and the log row created outside the delivery transaction. Each
  attempt delivers its own set of notifications.
* ``guarded`` calls the production path, ``app.services.dispatch``.

Counting is done in the database on the run's own issues: ``produced`` is
the notifications created, ``duplicates`` the ones beyond the first per
semantic event (user_id, type, issue_id, comment_id, actor_user_id).
"""
from __future__ import annotations

import random
import time
import uuid

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import OperationFailed
from ..schema import dispatch_log, dispatch_users, issue_watchers, issues, notifications
from ..services import dispatch as service
from ..sqlutil import db_now

SOURCE = "dispatch"  # the source this driver produces traffic for

ATTEMPTS_PER_EVENT = 3
USER_POOL = 24
MAX_ISSUES = 400
STATUS_SHARE = 0.2
STATUSES = ("in_progress", "resolved", "closed", "reopened")
SIM_EMAIL = "sim-{n}@simulator.invalid"


def _user_pool(conn) -> list[int]:
    emails = [SIM_EMAIL.format(n=n) for n in range(USER_POOL)]
    have = dict(conn.execute(select(dispatch_users.c.email, dispatch_users.c.id)
                             .where(dispatch_users.c.email.in_(emails))).all())
    missing = [e for e in emails if e not in have]
    if missing:
        conn.execute(insert(dispatch_users), [
            {"email": e, "display_name": f"Sim User {e.split('@')[0].split('-')[1]}"} for e in missing])
        have = dict(conn.execute(select(dispatch_users.c.email, dispatch_users.c.id)
                                 .where(dispatch_users.c.email.in_(emails))).all())
    return sorted(have.values())


def prepare(workspace, events: int, seed: int) -> dict:
    """Create the run's issues (reporter, assignee, watchers) and the event list."""
    rng = random.Random(seed)
    token = uuid.uuid4().hex[:8]
    engine = workspace.engine("dispatch")
    with engine.begin() as conn:
        users = _user_pool(conn)
        n_issues = max(1, min(MAX_ISSUES, events // 2 or 1))
        keys = [f"SIM-{token}-{k}" for k in range(n_issues)]
        conn.execute(insert(issues), [{
            "issue_key": key, "title": f"Simulated issue {k}", "reporter_id": rng.choice(users),
            "assignee_id": rng.choice(users) if rng.random() < 0.8 else None, "status": "open"}
            for k, key in enumerate(keys)])
        by_key = dict(conn.execute(select(issues.c.issue_key, issues.c.id)
                                   .where(issues.c.issue_key.in_(keys))).all())
        issue_ids = [by_key[k] for k in keys]
        watchers = [{"issue_id": i, "user_id": u} for i in issue_ids
                    for u in rng.sample(users, rng.randint(0, 4))]
        if watchers:
            conn.execute(insert(issue_watchers), watchers)
        top = max(conn.execute(select(func.max(dispatch_log.c.comment_id))).scalar() or 0,
                  conn.execute(select(func.max(notifications.c.comment_id))).scalar() or 0)
    plan_events: list[tuple[str, int, int | None, int, str | None, str | None]] = []
    status_pairs: set[tuple[int, int]] = set()
    for e in range(events):
        issue_id = rng.choice(issue_ids)
        actor = rng.choice(users)
        # A status change by the same person on the same issue would be the same semantic
        # event as an earlier one: keep the run's status events distinct.
        if rng.random() < STATUS_SHARE and (issue_id, actor) not in status_pairs:
            status_pairs.add((issue_id, actor))
            plan_events.append(("status_changed", issue_id, None, actor, rng.choice(STATUSES), f"sim-{token}-{e}"))
        else:
            plan_events.append(("comment_added", issue_id, top + 1 + e, actor, None, None))
    return {"token": token, "issue_ids": issue_ids, "events": plan_events}


def run_attempt(workspace, plan: dict, event: int, attempt: int, mode: str) -> None:
    kind, issue_id, comment_id, actor, new_status, event_ref = plan["events"][event]
    if mode == "naive":
        _seed_dispatch(workspace, kind, issue_id, comment_id, actor)
        return
    if kind == "comment_added":
        result = service.dispatch_comment_added(workspace, issue_id, comment_id, actor)
    else:
        result = service.dispatch_status_changed(workspace, issue_id, actor, new_status, event_ref)
    if result.outcome == service.FAILED:
        raise OperationFailed(result.error or "The dispatch failed.")


def _seed_dispatch(workspace, kind: str, issue_id: int, comment_id: int | None, actor: int) -> None:
    """Seed 004's dispatchCommentAdded / dispatchStatusChanged, step by step, flaws included."""
    ms = int(time.time() * 1000)
    # Step 1: the "deterministic" key — with a millisecond timestamp in it.
    if kind == "comment_added":
        key = f"comment_added_{issue_id}_comment_{comment_id}_{actor}_{ms}"
    else:
        key = f"status_changed_{issue_id}_{actor}_{ms}"
    event = service.DispatchEvent(kind, issue_id, actor, comment_id=comment_id)
    engine = workspace.engine("dispatch")
    with engine.connect() as conn:
        # Step 2: isDuplicateDispatch — check, then (later) insert.
        with conn.begin():
            done = conn.execute(select(func.count()).select_from(dispatch_log).where(and_(
                dispatch_log.c.dispatch_id == key, dispatch_log.c.status == "completed"))).scalar()
        if done:
            return
        # Step 3: createDispatchLog, outside the transaction.
        try:
            with conn.begin():
                conn.execute(insert(dispatch_log), {
                    "dispatch_id": key, "dispatch_type": kind, "issue_id": issue_id, "comment_id": comment_id,
                    "actor_user_id": actor, "recipients_count": 0, "status": "pending",
                    "created_at": db_now(conn)})
        except IntegrityError:
            # Two attempts in the same millisecond: the seed's request dies with a duplicate-key error.
            raise OperationFailed("The seed's dispatch log insert collided on its millisecond key.") from None
        # Steps 4–8: begin, query recipients, insert notifications, mark completed, commit.
        try:
            with conn.begin():
                recipients, message = service.recipients_of(conn, event)
                now = db_now(conn)
                if recipients:
                    conn.execute(insert(notifications), [{
                        "user_id": u, "type": kind, "issue_id": issue_id, "comment_id": comment_id,
                        "actor_user_id": actor, "message": message, "is_read": 0, "created_at": now,
                        "dispatch_id": key} for u in recipients])
                conn.execute(update(dispatch_log).where(dispatch_log.c.dispatch_id == key).values(
                    status="completed", recipients_count=len(recipients), completed_at=now))
        except Exception as exc:
            with conn.begin():
                conn.execute(update(dispatch_log).where(dispatch_log.c.dispatch_id == key).values(
                    status="failed", error_message=str(exc)[:2000]))
            raise


def count(workspace, plan: dict) -> tuple[int, int]:
    """(notifications produced, duplicates among them) on the run's issues."""
    n = notifications.c
    on_run = n.issue_id.in_(plan["issue_ids"])
    with workspace.engine("dispatch").connect() as conn:
        produced = conn.execute(select(func.count()).select_from(notifications).where(on_run)).scalar()
        events = conn.execute(select(func.count()).select_from(
            select(n.user_id).where(on_run)
            .group_by(n.user_id, n.type, n.issue_id, n.comment_id, n.actor_user_id).subquery())).scalar()
    return int(produced), int(produced - events)
