"""The audit in the window: every action with its items, and Undo of a cleanup from the keyboard."""
from __future__ import annotations

from PySide6.QtCore import QItemSelectionModel, Qt

from app.schema import cart_log
from app.services.cleanup import cleanup
from app.services.retry import retry
from tests.helpers import add_failed_dispatches, open_console, seed_cart_duplicates, seed_people, table_rows

WAIT = 30_000



def select(page, action_id: str) -> None:
    for i in range(page.model.rowCount()):
        if page.model.row_at(i).action_id == action_id:
            page.table.selectionModel().select(page.model.index(i, 0),
                                               QItemSelectionModel.ClearAndSelect | QItemSelectionModel.Rows)
            return
    raise AssertionError(f"{action_id} is not listed")


def test_ctrl_z_and_enter_undo_a_cleanup_and_the_rows_come_back(qtbot, workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"))
    engine = ws.engine("cart")
    seed_cart_duplicates(engine)
    before = table_rows(engine, cart_log)
    out = cleanup(ws, "cart", dry_run=False, action_id="cleanup-gui")
    assert out["archived"] == 3 and len(table_rows(engine, cart_log)) == len(before) - 3
    _window, page = open_console(qtbot, ws, "audit")
    select(page, "cleanup-gui")
    qtbot.waitUntil(lambda: page.items.rowCount() == 3, timeout=WAIT)      # its per-item outcomes
    assert {page.items.row_at(i)["outcome"] for i in range(3)} == {"archived"}
    assert page.undo_button.isEnabled()
    page.table.setFocus()
    qtbot.keyClick(page.table, Qt.Key_Z, Qt.ControlModifier)
    qtbot.waitUntil(lambda: page.confirm is not None, timeout=WAIT)
    assert page.confirm.text() == "Undo cleanup cleanup-gui?" and "3 archived rows" in page.confirm.informativeText()
    qtbot.keyClick(page.confirm, Qt.Key_Return)
    qtbot.waitUntil(lambda: getattr(page, "last_undo", None) is not None, timeout=60_000)
    assert page.last_undo["restored"] == 3
    assert table_rows(engine, cart_log) == before
    qtbot.waitUntil(lambda: any(page.model.row_at(i).kind == "undo" for i in range(page.model.rowCount())),
                    timeout=WAIT)


def test_an_operator_cannot_undo_and_the_button_says_who_can(qtbot, workspace_factory, sql_url):
    ws = workspace_factory(dispatch=sql_url("dispatch"), role="operator")
    seed_people(ws.engine("dispatch"), issue_ids=(1,), reporter=1, assignee=2, watchers=(3,))
    ids = add_failed_dispatches(ws.engine("dispatch"), 2)
    retry(ws, "dispatch", ids=[str(i) for i in ids], action_id="retry-by-operator")
    _window, page = open_console(qtbot, ws, "audit")
    assert page.model.row_at(0).action_id == "retry-by-operator" and page.model.row_at(0).operator
    select(page, "retry-by-operator")
    assert not page.undo_button.isEnabled()
    assert page.undo_button.toolTip() == "Undo takes the admin role; this console's role is operator."
    qtbot.waitUntil(lambda: page.items.rowCount() == 2, timeout=WAIT)
