"""Helpers the test modules share (kept here, not imported from one another)."""
from __future__ import annotations

import datetime as dt
import hashlib
import re
from decimal import Decimal

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


def seed_cart_duplicates(engine, now=None):
    """Three carts: one emailed three times in 24 h, one twice, one once; plus noise."""
    H = dt.timedelta(hours=1)
    now = now or dt.datetime(2026, 11, 20, 12, 0, 0)
    rows = []
    def row(uid, h, at, sent=True, value="19.99"):
        rows.append({"user_id": uid, "cart_hash": h * 64, "cart_value": Decimal(value), "email_sent": 1 if sent else 0,
                     "created_at": at, "sent_at": at + dt.timedelta(seconds=2) if sent else None,
                     "error_message": None if sent else "SMTP 451 try later"})
    row(1, "a", now); row(1, "a", now + dt.timedelta(milliseconds=350)); row(1, "a", now + 3 * H)
    row(2, "b", now); row(2, "b", now + 23 * H + dt.timedelta(minutes=59))
    row(3, "c", now)
    row(3, "c", now + 24 * H + dt.timedelta(minutes=1))   # a new abandonment, not a duplicate
    row(4, "d", now); row(4, "d", now + H, sent=False)   # unsent rows are never duplicates
    with engine.begin() as conn:
        conn.execute(insert(cart_log), rows)


def table_rows(engine, table):
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(table).order_by(table.c.id))]


def emailed_reason(engine, row_id: int) -> str:
    """The skip reason that names a sent row: ``cart already emailed at T (row N)``."""
    with engine.connect() as conn:
        r = conn.execute(select(cart_log.c.sent_at, cart_log.c.created_at).where(cart_log.c.id == row_id)).one()
    return f"cart already emailed at {(r.sent_at or r.created_at):%Y-%m-%d %H:%M:%S} UTC (row {row_id})"


_EARLIER_RETRY = re.compile(r"^already retried by \S+ at [0-9: -]+ UTC \((?P<reason>.*)\)$")


def guard_reason(skip: dict) -> str:
    """A skip's reason as the guard said it, without the "already retried by X at T (...)" naming."""
    m = _EARLIER_RETRY.match(skip["reason"])
    return m.group("reason") if m else skip["reason"]


def add_failed_dispatches(engine, n: int, *, start: int = 0, error: str = "Deadlock found",
                          issue_id: int = 1, issues: int = 1) -> list[int]:
    """``n`` failed comment dispatches (comments start … start+n-1) spread over ``issues`` issues
    from ``issue_id`` on; their log ids."""
    with engine.begin() as conn:
        now = db_now(conn)
        conn.execute(insert(dispatch_log), [
            {"dispatch_id": f"comment_added:{issue_id + i % issues}:{start + i}:4", "dispatch_type": "comment_added",
             "issue_id": issue_id + i % issues, "comment_id": start + i, "actor_user_id": 4, "status": "failed",
             "error_message": error, "created_at": now} for i in range(n)])
    return [r["id"] for r in log_rows(engine) if r["comment_id"] in range(start, start + n)]


def add_notifications(engine, n: int, *, start: int = 0, user_id: int = 3, issue_id: int = 1,
                      kind: str = "comment_added", ago: dt.timedelta = dt.timedelta(0)) -> list[int]:
    """``n`` in-app notifications (comments start … start+n-1), created ``ago`` before the database's now."""
    with engine.begin() as conn:
        now = db_now(conn) - ago
        conn.execute(insert(notifications), [
            {"user_id": user_id, "type": kind, "issue_id": issue_id, "comment_id": start + i, "actor_user_id": 4,
             "message": f"{kind} #{start + i}", "created_at": now, "dispatch_id": f"{kind}:{issue_id}:{start + i}:4"}
            for i in range(n)])
        return list(conn.execute(select(notifications.c.id).where(
            notifications.c.comment_id.between(start, start + n - 1))).scalars())


def open_console(qtbot, ws, page: str, timeout: int = 30_000):
    """The real window on ``ws``, opened on ``page`` with its Ctrl+N key once the workspace is ready: (window, page)."""
    from PySide6.QtCore import Qt

    from ui.main_window import MainWindow
    from ui.pages import PAGES
    window = MainWindow()
    qtbot.addWidget(window)
    window.resize(1280, 800)
    window.show()
    window.ctx.open_workspace(lambda: ws)
    qtbot.waitUntil(lambda: window.ctx.workspace is not None, timeout=timeout)
    n = [cls.key for cls in PAGES].index(page) + 1
    qtbot.keyClick(window, getattr(Qt, f"Key_{n}"), Qt.ControlModifier)
    assert window.current_page() == page
    shown = window.pages[page]
    qtbot.waitUntil(shown.is_loaded, timeout=timeout)
    return window, shown


def activate(window) -> None:
    """The window in front, as a person's click makes it: application shortcuts reach it."""
    import warnings

    from PySide6.QtWidgets import QApplication
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # offscreen has no window manager to ask
        QApplication.setActiveWindow(window)


def dialog_on(qtbot, path):
    """The Connections dialog on the config file ``path``, shown."""
    from ui.connections import ConnectionsDialog
    from ui.context import AppContext
    dialog = ConnectionsDialog(AppContext(), path)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog
