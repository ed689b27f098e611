"""Duplicates in the window: the Why column, members side by side, cleanup from the keyboard and its undo."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from PySide6.QtCore import QItemSelectionModel, Qt
from sqlalchemy import insert

from app.schema import cart_log
from app.sqlutil import db_now
from tests.helpers import add_user, open_console, table_rows
from ui.stall import StallProbe

WAIT = 60_000


def seed(engine) -> None:
    """Cart a: two sends 300 ms apart (a race); cart b: two sends 2 h apart (a resend); cart c: one send."""
    uid = add_user(engine)
    with engine.begin() as conn:
        now = db_now(conn) - dt.timedelta(hours=3)
        rows = []
        for h, offsets in (("a", (0, 0.3)), ("b", (0, 7200)), ("c", (0,))):
            for off in offsets:
                at = now + dt.timedelta(seconds=off)
                rows.append({"user_id": uid, "cart_hash": h * 64, "cart_value": Decimal("9.99"), "email_sent": 1,
                             "created_at": at, "sent_at": at + dt.timedelta(milliseconds=5), "error_message": None})
        conn.execute(insert(cart_log), rows)



def test_delete_and_enter_clean_up_the_selected_group_and_undo_puts_it_back(qtbot, workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"))
    engine = ws.engine("cart")
    seed(engine)
    before = table_rows(engine, cart_log)
    window, page = open_console(qtbot, ws, "duplicates")       # Ctrl+3: Duplicates
    assert page.model.rowCount() == 2
    whys = {page.model.row_at(i).group.key["cart_hash"][0]: page.model.row_at(i).why for i in range(2)}
    assert whys["a"].startswith("copies 300 ms apart: concurrent workers") or whys["a"].startswith("copies 30")
    assert whys["b"].startswith("a resend 2.0 h later")
    race = next(i for i in range(2) if page.model.row_at(i).group.key["cart_hash"][0] == "a")
    page.table.selectionModel().select(page.model.index(race, 0),
                                       QItemSelectionModel.ClearAndSelect | QItemSelectionModel.Rows)
    assert "kept" in page.members.toHtml() and "a cleanup archives" in page.members.toHtml()
    page.table.setFocus()
    qtbot.keyClick(page.table, Qt.Key_Delete)
    qtbot.waitUntil(lambda: page.confirm is not None, timeout=WAIT)
    assert page.confirm.text() == "Archive 1 extra copies in 1 selected groups?"
    assert "Cart: 1 groups, archive 1 rows, keep 1" in page.confirm.informativeText()
    probe = StallProbe().start()          # from the confirmation on: the cleanup itself
    qtbot.keyClick(page.confirm, Qt.Key_Return)
    qtbot.waitUntil(lambda: getattr(page, "last_cleanup", None) is not None, timeout=WAIT)
    stall = probe.stop()
    out = page.last_cleanup["cart"]
    assert out["archived"] == 1 and len(table_rows(engine, cart_log)) == len(before) - 1
    assert probe.max_busy_ms <= 50 and stall <= 50, \
        f"during the cleanup the GUI thread was busy {probe.max_busy_ms:.1f} ms and answered {stall:.1f} ms late"
    # The resend group is untouched; the Audit page undoes the cleanup.
    assert {r[2][0] for r in table_rows(engine, cart_log)}  # (id, user_id, cart_hash, …) == {"a", "b", "c"}
    qtbot.keyClick(window, Qt.Key_6, Qt.ControlModifier)
    audit = window.pages["audit"]
    audit.reload()
    qtbot.waitUntil(lambda: audit.is_loaded() and audit.model.rowCount() >= 1, timeout=WAIT)
    assert [audit.model.row_at(i).kind for i in range(audit.model.rowCount())] == ["cleanup"]
    audit.table.selectRow(0)
    qtbot.mouseClick(audit.undo_button, Qt.LeftButton)     # the button (Ctrl+Z: tests/ui/test_audit_page.py)
    qtbot.waitUntil(lambda: audit.confirm is not None, timeout=WAIT)
    qtbot.keyClick(audit.confirm, Qt.Key_Return)
    qtbot.waitUntil(lambda: getattr(audit, "last_undo", None) is not None, timeout=WAIT)
    assert table_rows(engine, cart_log) == before


def test_a_viewer_cannot_clean_up_and_is_told_which_role_may(qtbot, workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"), role="viewer")
    seed(ws.engine("cart"))
    _window, page = open_console(qtbot, ws, "duplicates")
    page.table.selectRow(0)
    assert not page.clean_button.isEnabled() and not page.clean_all_button.isEnabled()
    assert page.clean_button.toolTip() == "Cleanup takes the admin role; this console's role is viewer."
    qtbot.keyClick(page.table, Qt.Key_Delete)
    assert page.confirm is None
