"""Closing the window while an action on the order store runs (in the window's process) asks first, too."""
from __future__ import annotations

import threading

from PySide6.QtCore import Qt

import app.services.cleanup as cleanup_service
import app.services.retry as retry_service
import ui.pages.duplicates as duplicates_page
from tests.helpers import open_console
from ui.action_process import running_actions
from ui.pages.failed import RetryPlan

WAIT = 30_000


def test_closing_while_an_order_store_retry_runs_asks_then_quits_once_it_stopped(
        qtbot, workspace_factory, order_store_url, monkeypatch):
    gate = threading.Semaphore(0)      # one release: one item may finish
    calls = []

    def slow_retry_plan(workspace, ids, *, snapshot, filter_text, kind, progress, cancel):
        """Stands for the order store's retry: one item at a time, the cancel checked between items."""
        done = 0
        for _oid in ids["orders"]:
            if cancel():
                break
            gate.acquire(timeout=10)
            done += 1
            progress(done, len(ids["orders"]))
        calls.append(done)
        return [{"source": "orders", "retried_ids": ids["orders"][:done], "skipped": [], "failed": [],
                 "retried": done, "not_attempted": len(ids["orders"]) - done}]
    monkeypatch.setattr(retry_service, "retry_plan", slow_retry_plan)
    ws = workspace_factory(orders=order_store_url)
    window, page = open_console(qtbot, ws, "failed")
    page.start_retry(RetryPlan(ids={"orders": [101, 102, 103, 104]}, snapshot=False))
    qtbot.waitUntil(lambda: running_actions() == ["retry"], timeout=WAIT)

    window.close()                                   # the window manager's close button
    assert window.isVisible() and window.close_question is not None
    assert window.close_question.text() == "A retry is running. Quit when it has stopped?"
    qtbot.keyClick(window.close_question, Qt.Key_Escape)    # keep working: nothing stops
    qtbot.waitUntil(lambda: window.close_question is None, timeout=WAIT)
    assert window.isVisible() and not page.running.cancelled

    gate.release()                                   # one item finishes, the next one is in hand
    qtbot.waitUntil(lambda: page.progress.value() == 1, timeout=WAIT)
    window.quit_action.trigger()                     # Ctrl+Q
    qtbot.waitUntil(lambda: window.close_question is not None, timeout=WAIT)
    qtbot.keyClick(window.close_question, Qt.Key_Return)    # stop it and quit
    assert window.isVisible(), "the item in hand finishes first"
    gate.release()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=WAIT)
    assert calls == [2], "the retry stopped at its next safe point: after the item in hand"
    assert page.summary.text().startswith("Retried 2,") and "Cancelled" in page.summary.text()
    assert running_actions() == []


def test_an_order_store_cleanup_counts_as_running_while_it_runs(qtbot, workspace_factory, order_store_url,
                                                                 monkeypatch):
    gate, seen = threading.Event(), []

    def slow_cleanup(workspace, source, *, dry_run, keep_ids):
        seen.append(running_actions())
        gate.wait(10)
        return {"removed": 0}
    monkeypatch.setattr(cleanup_service, "cleanup", slow_cleanup)
    ws = workspace_factory(orders=order_store_url)
    worker = threading.Thread(target=duplicates_page.apply_cleanup, args=(ws, {"orders": [1]}))
    worker.start()
    try:
        qtbot.waitUntil(lambda: seen == [["cleanup"]], timeout=WAIT)
        assert running_actions() == ["cleanup"]
    finally:
        gate.set()
        worker.join(10)
    assert running_actions() == []
