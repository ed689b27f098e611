"""The traffic simulator in the window: the Overview card, the Tools menu, --simulate."""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication

from app.cli import build_parser, run
from app.simulate import background
from ui.main_window import MainWindow

ROOT = Path(__file__).resolve().parents[2]
FAST = {"interval": 0.2, "events_per_round": 3}


@pytest.fixture
def demo_like(workspace_factory, tmp_path):
    def make(role="admin"):
        return workspace_factory(cart=f"sqlite:///{tmp_path / 'cart.db'}",
                                 dispatch=f"sqlite:///{tmp_path / 'dispatch.db'}",
                                 orders="mongomock://" + str(tmp_path / "orders.json"), role=role)
    return make


def open_window(qtbot, ws):
    window = MainWindow()
    qtbot.addWidget(window)
    window.traffic.options = dict(FAST)
    with qtbot.waitSignal(window.status_settled, timeout=20000):
        window.ctx.open_workspace(lambda: ws)
    return window


def counts(window) -> dict[str, int]:
    latest = window.monitor.latest
    return {"orders": latest["orders"].counts["orders"],
            "email_log": latest["orders"].counts["email_log"],
            "cart_abandonment_log": latest["cart"].counts["cart_abandonment_log"],
            "notifications": latest["dispatch"].counts["notifications"]}


def card_count(window, source: str, table: str) -> str:
    grid = window.pages["overview"].cards[source].grid
    for r in range(grid.rowCount()):
        key = grid.itemAtPosition(r, 0)
        if key is not None and key.widget().text() == table:
            return grid.itemAtPosition(r, 1).widget().text()
    raise AssertionError(f"{table} not on the {source} card")


def test_overview_control_runs_traffic_and_the_counts_grow(qtbot, demo_like, monkeypatch):
    threads = []
    real_run = background.TrafficRunner.run

    def recording(self):
        threads.append(threading.current_thread())
        return real_run(self)

    monkeypatch.setattr(background.TrafficRunner, "run", recording)
    window = open_window(qtbot, demo_like())
    panel = window.pages["overview"].traffic_panel
    assert panel.button.isEnabled() and panel.button.text() == "Start"
    assert panel.selected_mode() == "guarded"
    before = counts(window)
    assert before == {"orders": 0, "email_log": 0, "cart_abandonment_log": 0, "notifications": 0}

    qtbot.mouseClick(panel.button, Qt.LeftButton)
    assert window.traffic.running and panel.button.text() == "Stop"
    assert window.traffic_action.isChecked()
    assert not panel.mode_box.isEnabled()
    qtbot.waitUntil(lambda: window.traffic.latest is not None and window.traffic.latest.rounds >= 2,
                    timeout=8000)
    assert threads and threading.main_thread() not in threads
    report = window.traffic.latest
    assert report.mode == "guarded" and report.duplicates == 0
    assert panel.cells[("cart", "Events")].text() != "—"
    assert "guarded traffic" in panel.summary.text().lower()
    # The status monitor re-polls after the rounds: the per-source row counts grow.
    qtbot.waitUntil(lambda: all(counts(window)[k] > 0 for k in before), timeout=8000)
    grown = counts(window)
    assert card_count(window, "cart", "cart_abandonment_log") == f"{grown['cart_abandonment_log']:,}"
    assert card_count(window, "orders", "orders") == f"{grown['orders']:,}"

    qtbot.mouseClick(panel.button, Qt.LeftButton)
    qtbot.waitUntil(lambda: window.traffic.state == "stopped", timeout=5000)
    assert panel.button.text() == "Start" and panel.mode_box.isEnabled()
    assert not window.traffic_action.isChecked()
    final = window.traffic.latest
    assert final.running is False
    assert panel.cells[("cart", "Events")].text() == f"{final.source('cart').events:,}"
    assert window.ctx.tasks.pool.maxThreadCount() == 4  # the loop's extra thread is given back


def test_tools_menu_runs_naive_traffic(qtbot, demo_like):
    window = open_window(qtbot, demo_like())
    actions = {a.text(): a for a in window.findChildren(type(window.traffic_action))}
    naive = next(a for text, a in actions.items() if text.startswith("Naive"))
    naive.trigger()
    panel = window.pages["overview"].traffic_panel
    assert panel.selected_mode() == "naive"
    window.traffic_action.trigger()
    assert window.traffic.running and window.traffic.mode == "naive"
    qtbot.waitUntil(lambda: window.traffic.latest is not None and window.traffic.latest.duplicates > 0,
                    timeout=8000)
    assert panel.pill.text() == "running · naive"
    dup_cells = [panel.cells[(s, "Duplicates")] for s in ("orders", "cart", "dispatch")]
    assert any(c.property("dup") for c in dup_cells)
    window.traffic_action.trigger()
    qtbot.waitUntil(lambda: window.traffic.state == "stopped", timeout=5000)


def test_viewer_sees_the_control_disabled_with_the_reason(qtbot, demo_like):
    window = open_window(qtbot, demo_like(role="viewer"))
    panel = window.pages["overview"].traffic_panel
    assert not panel.button.isEnabled()
    assert not panel.mode_box.isEnabled()
    assert "viewer role is read only" in panel.button.toolTip()
    assert not window.traffic_action.isEnabled()
    assert "viewer role is read only" in window.traffic_action.toolTip()
    assert window.traffic.start("guarded") is False
    assert not window.traffic.running
    assert "viewer role is read only" in window.banner.message()


def test_closing_the_window_stops_the_traffic(qtbot, demo_like):
    window = open_window(qtbot, demo_like())
    assert window.traffic.start("guarded")
    qtbot.waitUntil(lambda: window.traffic.latest is not None, timeout=8000)
    window.close()
    assert window.ctx.tasks.pool.activeThreadCount() == 0
    # The runner's last report arrives after the close: it must not start another poll.
    QApplication.processEvents()
    assert window.traffic.state == "stopped" and window.traffic.latest.running is False
    assert not window.monitor.busy and window.ctx.tasks.running == 0


def test_simulate_flag(capsys):
    assert build_parser().parse_args(["--demo", "--simulate"]).simulate == "guarded"
    assert build_parser().parse_args(["--demo", "--simulate", "naive"]).simulate == "naive"
    assert build_parser().parse_args(["--demo"]).simulate is None
    assert run(["--demo", "--simulate", "sloppy"]) == 2
    assert run(["--demo", "--simulate", "naive", "status"]) == 2
    assert "--simulate opens the console" in capsys.readouterr().err


def test_screenshot_waits_for_a_simulator_report(tmp_path):
    out = tmp_path / "traffic.png"
    env = {**__import__("os").environ, "NC_DATA_DIR": str(tmp_path / "data"), "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "--demo", "--simulate", "naive",
                           "--screenshot", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr
    image = QImage(str(out))
    assert image.width() == 1280 and image.height() == 800
