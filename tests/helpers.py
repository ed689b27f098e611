"""Helpers the test modules share (kept here, not imported from one another)."""
from __future__ import annotations

import datetime as dt
import hashlib

from sqlalchemy import func, insert, select

from app.schema import cart_log, cart_users, dispatch_log, dispatch_users, issue_watchers, issues, notifications
from app.sqlutil import db_now


def cart_hash(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def add_user(engine, email="ann@example.com", name="Ann") -> int:
    with engine.begin() as conn:
        return conn.execute(insert(cart_users).values(email=email, name=name)).inserted_primary_key[0]


def add_row(engine, user_id, chash, *, age: dt.timedelta, sent=False, error=None, value="10.00") -> int:
    with engine.begin() as conn:
        now = db_now(conn)
        return conn.execute(insert(cart_log).values(
            user_id=user_id, cart_hash=chash, cart_value=value, email_sent=1 if sent else 0,
            created_at=now - age, sent_at=(now - age) if sent else None, error_message=error)).inserted_primary_key[0]


def rows(engine):
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(cart_log).order_by(cart_log.c.id)).mappings()]


def seed_people(engine, *, issue_ids=(1,), reporter=1, assignee=2, watchers=(2, 3, 4), users=6):
    """Users 1..users; issues with the given reporter, assignee and watchers."""
    with engine.begin() as conn:
        if not conn.execute(select(func.count()).select_from(dispatch_users)).scalar():
            conn.execute(insert(dispatch_users), [
                {"id": i, "email": f"u{i}@example.test", "display_name": f"User {i}"} for i in range(1, users + 1)])
        for issue_id in issue_ids:
            conn.execute(insert(issues), {"id": issue_id, "issue_key": f"OPS-{issue_id}", "title": f"Issue {issue_id}",
                                          "reporter_id": reporter, "assignee_id": assignee})
            if watchers:
                conn.execute(insert(issue_watchers), [{"issue_id": issue_id, "user_id": u} for u in watchers])


def notification_users(engine, **where):
    n = notifications.c
    q = select(n.user_id).order_by(n.user_id)
    for col, value in where.items():
        q = q.where(getattr(n, col) == value)
    with engine.connect() as conn:
        return list(conn.execute(q).scalars())


def log_rows(engine):
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(dispatch_log).order_by(dispatch_log.c.id)).mappings()]
