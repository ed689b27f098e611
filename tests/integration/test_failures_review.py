"""Failed / stuck / missed lists: kinds asked together, and the orders missed list's paging."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import insert

from app.read.failures import failed_items
from app.schema import cart_log
from app.sqlutil import db_now

HA, HB = "a" * 64, "b" * 64


def _cart_row(user, h, at, sent=0, error=None):
    return {"user_id": user, "cart_hash": h, "cart_value": 10, "email_sent": sent, "created_at": at,
            "sent_at": at if sent else None, "error_message": error}


def test_cart_kinds_asked_with_missed_return_exactly_their_rows(workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"))
    with ws.engine("cart").begin() as conn:
        now = db_now(conn).replace(microsecond=0)
        conn.execute(insert(cart_log), [
            _cart_row(1, HA, now - dt.timedelta(minutes=30), error="SMTPRecipientsRefused: no"),  # 1 failed
            _cart_row(2, HB, now - dt.timedelta(minutes=10)),                                      # 2 stuck
        ])
    def ids(kinds):
        return [(i.id, i.kind) for i in failed_items(ws, "cart", kinds=kinds)]
    assert ids(["failed", "missed"]) == [(1, "failed")]
    assert ids(["stuck", "missed"]) == [(2, "stuck")]
    assert ids(["failed", "stuck", "missed"]) == [(2, "stuck"), (1, "failed")]
    assert ids(["missed"]) == []
