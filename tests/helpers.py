"""Helpers the test modules share (kept here, not imported from one another)."""
from __future__ import annotations

import datetime as dt
import hashlib

from sqlalchemy import insert, select

from app.schema import cart_log, cart_users
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
