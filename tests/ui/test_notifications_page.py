"""The live feed in the window: new rows on top within a second, position and selection kept, pause, export."""
from __future__ import annotations

import csv
import datetime as dt

import pytest
from PySide6.QtCore import QItemSelectionModel, QPoint, Qt
from PySide6.QtWidgets import QFileDialog

from tests.helpers import add_notifications, open_console, seed_people

WAIT = 30_000


@pytest.fixture
def ws(workspace_factory, sql_url):
    ws = workspace_factory(dispatch=sql_url("dispatch"))
    seed_people(ws.engine("dispatch"), issue_ids=(1,), reporter=1, assignee=2, watchers=(3,))
    return ws



def ids_shown(page) -> list[int]:
    return [page.model.row_at(i).id for i in range(page.model.rowCount())]


def test_new_rows_appear_on_top_within_about_a_second_and_the_selection_stays(qtbot, ws):
    engine = ws.engine("dispatch")
    old = add_notifications(engine, 5, ago=dt.timedelta(minutes=5))
    page = open_console(qtbot, ws, "notifications")[1]
    assert sorted(ids_shown(page)) == sorted(old)
    sm = page.table.selectionModel()
    pos = page.model.position(("dispatch", str(old[2])))
    sm.select(page.model.index(pos, 0), QItemSelectionModel.Select | QItemSelectionModel.Rows)
    new = add_notifications(engine, 3, start=100)
    qtbot.waitUntil(lambda: page.model.rowCount() == 8, timeout=3000)
    assert sorted(ids_shown(page)[:3]) == sorted(new)
    assert page.selected_keys() == [("dispatch", str(old[2]))]
    assert page.new_button.isHidden()                  # at the top: no marker needed


def test_a_list_scrolled_down_keeps_its_place_and_says_how_many_are_new(qtbot, ws):
    engine = ws.engine("dispatch")
    add_notifications(engine, 150, ago=dt.timedelta(minutes=5))
    page = open_console(qtbot, ws, "notifications")[1]
    bar = page.table.verticalScrollBar()
    bar.setValue(60)
    top_row = page.table.rowAt(0)
    first_seen = page.model.row_at(top_row).id
    add_notifications(engine, 4, start=1000)
    qtbot.waitUntil(lambda: page.model.rowCount() == 154, timeout=3000)
    assert page.model.row_at(page.table.rowAt(0)).id == first_seen     # the same row on top of the viewport
    assert page.new_button.isVisible() and page.new_button.text() == "↑ 4 new"
    qtbot.mouseClick(page.new_button, Qt.LeftButton)
    assert bar.value() == 0 and page.new_button.isHidden()


def test_pause_holds_new_rows_and_resume_delivers_each_once(qtbot, ws):
    engine = ws.engine("dispatch")
    add_notifications(engine, 2, ago=dt.timedelta(minutes=5))
    page = open_console(qtbot, ws, "notifications")[1]
    qtbot.mouseClick(page.pause_button, Qt.LeftButton)
    assert page.pause_button.text() == "Resume"
    add_notifications(engine, 3, start=50)
    qtbot.wait(1500)
    assert page.model.rowCount() == 2
    qtbot.mouseClick(page.pause_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: page.model.rowCount() == 5, timeout=3000)
    qtbot.wait(1500)
    assert len(set(ids_shown(page))) == 5 == page.model.rowCount()


def test_the_filter_runs_on_the_server_and_export_writes_every_matching_row(qtbot, ws, tmp_path, monkeypatch):
    engine = ws.engine("dispatch")
    add_notifications(engine, 230, kind="status_changed", ago=dt.timedelta(minutes=5))
    add_notifications(engine, 10, start=500, kind="comment_added", ago=dt.timedelta(minutes=5))
    page = open_console(qtbot, ws, "notifications")[1]
    qtbot.keyClick(page.table, Qt.Key_F, Qt.ControlModifier)
    qtbot.keyClicks(page.filter_edit, "status_changed")
    qtbot.keyClick(page.filter_edit, Qt.Key_Return)
    qtbot.waitUntil(lambda: page.is_loaded() and page.model.rowCount() == 200, timeout=WAIT)
    assert page.model.more and {page.model.row_at(i).subject.split()[0] for i in range(200)} == {"status_changed"}
    target = tmp_path / "feed.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(target), "")))
    qtbot.keyClick(page.table, Qt.Key_E, Qt.ControlModifier)
    qtbot.waitUntil(lambda: getattr(page, "exported", None) is not None, timeout=WAIT)
    with target.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 230 and all(r["subject"].startswith("status_changed") for r in rows)
    page.table.scrollToBottom()
    qtbot.waitUntil(lambda: page.model.rowCount() == 230, timeout=WAIT)
    # The detail pane shows the entry and the stored row behind it.
    page.table.selectRow(0)
    qtbot.waitUntil(lambda: '"stored"' in page.detail.toPlainText(), timeout=WAIT)
    assert '"dispatch_id"' in page.detail.toPlainText()


def test_ctrl_c_copies_the_selected_rows_with_a_header(qtbot, ws):
    from PySide6.QtGui import QGuiApplication
    add_notifications(ws.engine("dispatch"), 3, ago=dt.timedelta(minutes=5))
    page = open_console(qtbot, ws, "notifications")[1]
    page.table.selectAll()
    page.table.setFocus()
    qtbot.keyClick(page.table, Qt.Key_C, Qt.ControlModifier)
    lines = QGuiApplication.clipboard().text().splitlines()
    assert lines[0].split("\t")[:3] == ["Time (UTC)", "Source", "Kind"] and len(lines) == 4
    assert all("\tDispatch\t" in line for line in lines[1:])


def recipients_shown(page) -> list[str]:
    return [page.model.row_at(i).recipient for i in range(page.model.rowCount())]


def test_a_click_on_a_header_sorts_in_the_database_and_pages_on_in_that_order(qtbot, ws):
    engine = ws.engine("dispatch")
    for user in (5, 2, 6, 3):
        add_notifications(engine, 60, start=user * 1000, user_id=user, ago=dt.timedelta(minutes=5))
    page = open_console(qtbot, ws, "notifications")[1]
    assert page.pause_button.isEnabled()
    column = next(i for i, c in enumerate(page.columns) if c.key == "recipient")
    header = page.table.horizontalHeader()
    qtbot.mouseClick(header.viewport(), Qt.LeftButton, pos=QPoint(header.sectionViewportPosition(column) + 10, 10))
    qtbot.waitUntil(lambda: page.is_loaded() and page.sort_box.currentData()[0] == "recipient", timeout=WAIT)
    asc = page.sort_box.currentData()[1] is False
    qtbot.waitUntil(lambda: page.model.rowCount() == 200, timeout=WAIT)
    page.table.scrollToBottom()
    qtbot.waitUntil(lambda: page.model.rowCount() == 240 and not page.model.more, timeout=WAIT)
    got = recipients_shown(page)
    assert got == sorted(got, reverse=not asc) and len(set(ids_shown(page))) == 240
    # Sorted by recipient, new entries do not jump in: live updates follow the newest-first order.
    assert not page.pause_button.isEnabled()
    add_notifications(engine, 3, start=90_000, user_id=4)
    qtbot.wait(1500)
    assert page.model.rowCount() == 240
    # Back to newest first from the keyboard (the Sort box), and the new entries are there.
    page.sort_box.setFocus()
    qtbot.keyClick(page.sort_box, Qt.Key_Home)
    qtbot.waitUntil(lambda: page.is_loaded() and page.model.rowCount() == 200, timeout=WAIT)
    assert {page.model.row_at(i).recipient for i in range(3)} == {"u4@example.test"}
    assert page.pause_button.isEnabled()


def test_the_type_filter_keeps_one_type_live_and_in_the_export(qtbot, ws, tmp_path, monkeypatch):
    engine = ws.engine("dispatch")
    add_notifications(engine, 5, kind="status_changed", ago=dt.timedelta(minutes=5))
    add_notifications(engine, 4, start=500, kind="comment_added", ago=dt.timedelta(minutes=5))
    page = open_console(qtbot, ws, "notifications")[1]
    page.type_box.setCurrentIndex(page.type_box.findData("comment_added"))
    qtbot.waitUntil(lambda: page.is_loaded() and page.model.rowCount() == 4, timeout=WAIT)
    add_notifications(engine, 2, start=900, kind="status_changed")
    add_notifications(engine, 1, start=950, kind="comment_added")
    qtbot.waitUntil(lambda: page.model.rowCount() == 5, timeout=3000)
    qtbot.wait(1200)
    assert page.model.rowCount() == 5
    assert {page.model.row_at(i).subject.split()[0] for i in range(5)} == {"comment_added"}
    target = tmp_path / "comments.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(target), "")))
    qtbot.keyClick(page.table, Qt.Key_E, Qt.ControlModifier)
    qtbot.waitUntil(lambda: getattr(page, "exported", None) is not None, timeout=WAIT)
    with target.open(encoding="utf-8") as fh:
        assert len([r for r in csv.DictReader(fh) if r["subject"].startswith("comment_added")]) == 5
