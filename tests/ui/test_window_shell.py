"""The window at a workstation: the log file behind every banner, Copy details, About, Ctrl+Q,
and closing while an action runs."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from sqlalchemy import select

from app.schema import nc_action
from tests.helpers import activate, add_failed_dispatches, log_rows, open_console, seed_people
from ui.log import log_path
from ui.main_window import MainWindow

WAIT = 30_000


def broken_query():
    return {"rows": [1, 2, 3]}["missing"]


def test_an_error_banner_keeps_the_traceback_in_the_log_and_behind_copy_details(qtbot, data_dir):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    window.ctx.tasks.submit(broken_query)
    qtbot.waitUntil(lambda: not window.banner.isHidden(), timeout=WAIT)
    assert window.banner.message() == "Unexpected error: 'missing'."
    assert "Traceback" not in window.banner.message()
    assert window.banner.copy_button.isVisible()
    qtbot.mouseClick(window.banner.copy_button, Qt.LeftButton)
    copied = QGuiApplication.clipboard().text()
    assert copied.startswith("Unexpected error: 'missing'.\n")
    assert "Traceback (most recent call last)" in copied and "broken_query" in copied and "KeyError" in copied
    assert f"Log file: {log_path()}" in copied and "PySide6: 6." in copied and "Qt: 6." in copied
    assert log_path().parent == data_dir / "log"
    logged = log_path().read_text(encoding="utf-8")
    assert "banner: Unexpected error: 'missing'." in logged and "broken_query" in logged
    # A note has nothing behind it to copy.
    window.ctx.notify("Exported 3 rows.", "info")
    assert window.banner.message() == "Exported 3 rows." and not window.banner.copy_button.isVisible()


def test_the_about_box_names_the_log_file_and_the_versions(qtbot, data_dir):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    activate(window)
    qtbot.keyClick(window.nav, Qt.Key_F1)
    about = window.about
    assert about is not None and about.isVisible()
    assert about.values["Log file"].text() == str(data_dir / "log" / "console.log")
    for name in ("Notification Console", "PySide6", "Qt", "SQLAlchemy", "Python"):
        assert about.values[name].text() and about.values[name].text() != "not installed"
    about.copy()
    assert "Log file: " + str(data_dir / "log" / "console.log") in QGuiApplication.clipboard().text()


def test_ctrl_q_quits_from_the_window(qtbot, data_dir):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    window.activateWindow()
    activate(window)
    qtbot.keyClick(window.nav, Qt.Key_Q, Qt.ControlModifier)
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=5000)
    assert window.ctx.closing


@pytest.mark.mariadb
def test_closing_while_a_retry_runs_asks_then_quits_once_it_has_stopped_and_recorded_itself(
        qtbot, workspace_factory, mariadb_database):
    ws = workspace_factory(dispatch=mariadb_database("dispatch"))
    engine = ws.engine("dispatch")
    seed_people(engine, issue_ids=range(1, 101), reporter=1, assignee=2, watchers=(3,))
    add_failed_dispatches(engine, 4000, issues=100)
    window, page = open_console(qtbot, ws, "failed")
    qtbot.mouseClick(page.retry_all_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: page.confirm is not None, timeout=WAIT)
    qtbot.keyClick(page.confirm, Qt.Key_Return)
    qtbot.waitUntil(lambda: page.running is not None and page.progress.value() > 0, timeout=60_000)

    window.close()                                  # as the window manager's close button does
    assert window.isVisible() and window.close_question is not None
    assert window.close_question.text() == "A retry is running. Quit when it has stopped?"
    qtbot.keyClick(window.close_question, Qt.Key_Escape)   # keep working: nothing stops
    qtbot.waitUntil(lambda: window.close_question is None, timeout=WAIT)
    assert page.running is not None and not page.running.cancelled and window.isVisible()

    window.quit_action.trigger()                    # Ctrl+Q
    qtbot.waitUntil(lambda: window.close_question is not None, timeout=WAIT)
    qtbot.keyClick(window.close_question, Qt.Key_Return)   # stop it and quit
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=120_000)
    assert page.running is None and page.summary.text().startswith("Retried")
    with engine.connect() as conn:
        action = conn.execute(select(nc_action).where(nc_action.c.kind == "retry")).mappings().one()
    assert action["status"] != "running" and action["finished_at"] is not None
    completed = sum(1 for r in log_rows(engine) if r["status"] == "completed")
    assert 0 < completed < 4000, "the retry stopped at a safe point before the end"
    assert f"Retried {completed:,}," in page.summary.text()
