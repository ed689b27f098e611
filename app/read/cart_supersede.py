"""When a cart email must not be sent: the abandonment was already emailed.

Seed 001's race, seen from the console: a second detector attempt for the
same abandonment writes its own log row, and that row bounces while the
first attempt's email goes out. Asking only "was this cart emailed in the
last 24 h *from now*" lets a retry days later send a second email for the
same abandonment, which the duplicate view then flags and cleanup archives.

So an unsent (failed or stuck) row is **superseded** — never sent, listed
with the row that was — when a sent row of the same ``(user_id, cart_hash)``

* was created less than ``window`` before or after it (the same abandonment:
  the duplicate rule groups sent rows closer than the window), or
* was sent (created, when the send time is unknown) within ``window``
  before now (one email per cart per window, whatever the rows).

The rule is stated once here, as a pure function and as the one SQL query
that finds a row's superseding sent row; the retry, the production path
(the simulator's guarded path) and the failed list all use it.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select, tuple_
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from ..schema import cart_log


@dataclass(frozen=True)
class SentRow:
    id: int
    created_at: dt.datetime
    sent_at: dt.datetime | None

    @property
    def emailed_at(self) -> dt.datetime:
        return self.sent_at or self.created_at


def supersedes(sent: SentRow, created_at: dt.datetime, now: dt.datetime, window: dt.timedelta) -> bool:
    """True when ``sent`` already emailed the abandonment of an unsent row created at ``created_at``."""
    return abs(sent.created_at - created_at) < window or sent.emailed_at >= now - window


def superseding(sent_rows: Iterable[SentRow], created_at: dt.datetime, now: dt.datetime,
                window: dt.timedelta) -> SentRow | None:
    """The latest sent row that supersedes an unsent row created at ``created_at``, or None."""
    best = None
    for s in sent_rows:
        if supersedes(s, created_at, now, window) and (best is None or (s.created_at, s.id) > (best.created_at, best.id)):
            best = s
    return best


def superseded_reason(sent: SentRow) -> str:
    return f"cart already emailed at {sent.emailed_at:%Y-%m-%d %H:%M:%S} UTC (row {sent.id})"


def _near(created_at: dt.datetime, now: dt.datetime, window: dt.timedelta) -> ColumnElement[bool]:
    t = cart_log.c
    return or_(and_(t.created_at > created_at - window, t.created_at < created_at + window),
               func.coalesce(t.sent_at, t.created_at) >= now - window)


def superseding_row(conn: Connection, user_id: int, cart_hash: str, created_at: dt.datetime, now: dt.datetime,
                    window: dt.timedelta) -> SentRow | None:
    """The sent row that supersedes an unsent row of (user, cart) created at ``created_at``, read now."""
    t = cart_log.c
    row = conn.execute(
        select(t.id, t.created_at, t.sent_at)
        .where(t.user_id == user_id, t.cart_hash == cart_hash, t.email_sent == 1, _near(created_at, now, window))
        .order_by(t.created_at.desc(), t.id.desc()).limit(1)).first()
    return SentRow(int(row.id), row.created_at, row.sent_at) if row else None


def sent_rows_of(conn: Connection, keys: list[tuple[int, str]], oldest: dt.datetime, now: dt.datetime,
                 window: dt.timedelta, batch: int = 400) -> dict[tuple[int, str], list[SentRow]]:
    """Sent rows of many (user, cart) keys that may supersede unsent rows created at or after ``oldest``."""
    t = cart_log.c
    out: dict[tuple[int, str], list[SentRow]] = {}
    for i in range(0, len(keys), batch):
        part = keys[i:i + batch]
        q = select(t.user_id, t.cart_hash, t.id, t.created_at, t.sent_at).where(
            tuple_(t.user_id, t.cart_hash).in_(part), t.email_sent == 1,
            or_(t.created_at > oldest - window, func.coalesce(t.sent_at, t.created_at) >= now - window))
        for r in conn.execute(q):
            out.setdefault((r.user_id, r.cart_hash), []).append(SentRow(int(r.id), r.created_at, r.sent_at))
    return out
