"""Desktop alerts: a tray message for new problems while the window is in the background, and what it opens."""
from __future__ import annotations

import datetime as dt

import pytest
from PySide6.QtCore import Qt

import ui.alerts as alerts
from tests.helpers import activate, add_row, add_user, cart_hash, open_console
from ui.alerts import UNAVAILABLE, AlertSettings, load_alert_settings
from ui.main_window import MainWindow
from ui.settings import settings

WAIT = 30_000
MIN = dt.timedelta(minutes=1)


@pytest.fixture
def tray(monkeypatch):
    """A desktop with a system tray (the offscreen platform has none); every shown message, recorded."""
    monkeypatch.setattr(alerts, "tray_available", lambda: True)
    return []


def console(qtbot, tmp_path, workspace_factory, messages, monkeypatch, page="failed"):
    ws = workspace_factory(cart=f"sqlite:///{tmp_path / 'cart.db'}")
    engine = ws.engine("cart")
    user = add_user(engine)
    for i in range(2):
        add_row(engine, user, cart_hash(f"old-{i}"), age=30 * MIN, error="SMTP timeout")
    window, shown = open_console(qtbot, ws, page)
    watcher = window.alerts
    assert watcher.tray is not None
    monkeypatch.setattr(watcher.tray, "showMessage", lambda *args: messages.append(args))
    watcher.window_active = lambda: False          # the admin is in another application
    qtbot.waitUntil(lambda: (watcher.latest.get("cart") or {}).get("failed") == 2, timeout=WAIT)
    return window, watcher, engine, user


def read_again(qtbot, window) -> None:
    """The next round of connection checks, and the figures read after it."""
    watcher = window.alerts
    watcher._last_read = 0.0
    qtbot.waitUntil(lambda: not window.monitor.busy and not window.ctx.tasks.is_running("overview-health"),
                    timeout=WAIT)
    with qtbot.waitSignal(window.ctx.tasks.idle, timeout=WAIT):
        assert window.monitor.refresh()
    qtbot.waitUntil(lambda: not window.ctx.tasks.is_running("overview-health"), timeout=WAIT)


def test_a_new_failure_while_the_window_is_inactive_shows_a_tray_message_that_opens_the_filtered_list(
        qtbot, tmp_path, workspace_factory, tray, monkeypatch):
    window, watcher, engine, user = console(qtbot, tmp_path, workspace_factory, tray, monkeypatch)
    assert tray == []                                # what was there at the start is no news
    window.show_page("audit")
    add_row(engine, user, cart_hash("new"), age=10 * MIN, error="SMTP timeout")
    read_again(qtbot, window)
    qtbot.waitUntil(lambda: len(tray) == 1, timeout=WAIT)
    title, text, _icon, _ms = tray[0]
    assert title == "Cart: 1 new failure"
    assert text == "Click to open Failed & Stuck, filtered to Cart."
    assert watcher.tray.toolTip() == "Notification Console: last 24 hours\nCart: 3 failed, 0 stuck, 0 duplicates"

    watcher.tray.messageClicked.emit()               # the admin clicks the message
    assert window.current_page() == "failed"
    failed = window.pages["failed"]
    assert failed.source_box.currentData() == "cart" and failed.kind_box.currentData() == "failed"

    read_again(qtbot, window)                        # nothing new since: no second message
    assert len(tray) == 1


def test_below_the_threshold_or_with_the_source_off_no_message_and_in_front_none_either(
        qtbot, tmp_path, workspace_factory, tray, monkeypatch):
    window, watcher, engine, user = console(qtbot, tmp_path, workspace_factory, tray, monkeypatch)
    watcher.set_settings(AlertSettings(threshold=3))
    for i in range(2):
        add_row(engine, user, cart_hash(f"a-{i}"), age=10 * MIN, error="SMTP timeout")
    read_again(qtbot, window)
    assert tray == [], "2 new is below the threshold of 3"
    add_row(engine, user, cart_hash("a-2"), age=10 * MIN, error="SMTP timeout")
    read_again(qtbot, window)
    qtbot.waitUntil(lambda: len(tray) == 1, timeout=WAIT)
    assert tray[0][0] == "Cart: 3 new failures", "counted since the admin last looked, not since the last read"

    watcher.set_settings(AlertSettings(threshold=1, sources={"orders": True, "cart": False, "dispatch": True}))
    add_row(engine, user, cart_hash("b"), age=10 * MIN, error="SMTP timeout")
    read_again(qtbot, window)
    assert len(tray) == 1, "the cart's switch is off"

    watcher.set_settings(AlertSettings(threshold=1))
    watcher.window_active = lambda: True             # the admin is looking at the console
    add_row(engine, user, cart_hash("c"), age=10 * MIN, error="SMTP timeout")
    read_again(qtbot, window)
    assert len(tray) == 1
    assert watcher.latest["cart"]["failed"] == 7 and watcher.seen["cart"]["failed"] == 7

    # Kept in QSettings: a restart keeps the threshold and the switches.
    watcher.set_settings(AlertSettings(threshold=4, sources={"orders": False, "cart": True, "dispatch": True}))
    assert load_alert_settings() == AlertSettings(threshold=4, sources={"orders": False, "cart": True,
                                                                        "dispatch": True})


def test_a_new_duplicate_opens_duplicates_filtered_to_the_source(qtbot, tmp_path, workspace_factory, tray,
                                                                 monkeypatch):
    window, watcher, engine, user = console(qtbot, tmp_path, workspace_factory, tray, monkeypatch, page="audit")
    twice = cart_hash("twice")
    add_row(engine, user, twice, age=20 * MIN, sent=True)
    add_row(engine, user, twice, age=19 * MIN, sent=True)     # the same cart emailed again within 24 h
    read_again(qtbot, window)
    qtbot.waitUntil(lambda: len(tray) == 1, timeout=WAIT)
    assert tray[0][0] == "Cart: 1 new duplicate"
    assert tray[0][1] == "Click to open Duplicates, filtered to Cart."
    watcher.tray.messageClicked.emit()
    assert window.current_page() == "duplicates"
    assert window.pages["duplicates"].source_box.currentData() == "cart"


def test_the_alerts_dialog_is_reached_by_its_key_and_saves_the_threshold_and_switches(qtbot, data_dir, tray):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    activate(window)
    qtbot.keyClick(window.nav, Qt.Key_A, Qt.ControlModifier | Qt.ShiftModifier)
    dialog = window.alerts_dialog
    assert dialog is not None and dialog.isVisible() and not dialog.unavailable.isVisible()
    dialog.threshold.setValue(5)
    dialog.switches["dispatch"].setChecked(False)
    qtbot.keyClick(dialog.threshold, Qt.Key_Return)     # Save is the default button
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=WAIT)
    assert window.alerts.settings.threshold == 5 and not window.alerts.settings.enabled("dispatch")
    assert settings().value("alerts/threshold") in (5, "5")
    assert "Ctrl+Shift+A" in window.show_about().keys


def test_without_a_system_tray_alerts_are_off_and_the_dialog_says_why(qtbot, data_dir, monkeypatch):
    monkeypatch.setattr(alerts, "tray_available", lambda: False)
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    assert window.alerts.tray is None and not window.alerts.available
    dialog = window.show_alerts()
    assert dialog.unavailable.isVisible() and dialog.unavailable.text() == UNAVAILABLE
    assert not dialog.threshold.isEnabled() and not any(b.isEnabled() for b in dialog.switches.values())
    assert window.alerts.poll() is False              # nothing is read for alerts no one can see


def test_a_hand_edited_threshold_falls_back_to_the_default(data_dir, qapp):
    s = settings()
    s.setValue("alerts/threshold", "lots")
    s.setValue("alerts/source/cart", "false")
    s.sync()
    loaded = load_alert_settings()
    assert loaded.threshold == 1 and not loaded.enabled("cart") and loaded.enabled("orders")
