"""The window shell: pages, status bar, banner, background checks and screenshots."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PySide6.QtGui import QImage

from app.cli import GUI_PAGES, build_parser, open_workspace
from app.errors import SourceUnavailable
from ui import status_monitor
from ui.main_window import MainWindow
from ui.tasks import TaskError, TaskManager

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NC_NO_KEYRING", "1")
    return tmp_path / "data"


def open_window(qtbot, argv):
    window = MainWindow()
    qtbot.addWidget(window)
    args = build_parser().parse_args(argv)
    window.ctx.open_workspace(lambda: open_workspace(args))
    return window


def test_every_area_has_a_page(qtbot, data_dir):
    window = MainWindow()
    qtbot.addWidget(window)
    assert tuple(window.pages) == GUI_PAGES
    assert window.nav.count() == len(GUI_PAGES)
    assert [window.nav.item(i).text() for i in range(window.nav.count())] == [
        "Overview", "Notifications", "Duplicates", "Failed & Stuck", "Charts", "Audit"]
    for key in GUI_PAGES:
        window.show_page(key)
        assert window.current_page() == key
        assert window.stack.currentWidget() is window.pages[key]
        assert window.pages[key].header.title_label.text()


def test_status_bar_fills_in_from_background_checks(qtbot, data_dir, monkeypatch):
    threads = []
    real = status_monitor.check_source

    def recording(ws, name):
        threads.append(threading.current_thread())
        return real(ws, name)

    monkeypatch.setattr(status_monitor, "check_source", recording)
    window = open_window(qtbot, ["--demo"])
    assert window.role_label.text() == "role: —"
    with qtbot.waitSignal(window.status_settled, timeout=60000):
        pass
    qtbot.waitUntil(lambda: all(i.state == "ok" for i in window.indicators.values()), timeout=5000)
    assert window.role_label.text() == "role: admin"
    assert [i.text() for i in window.indicators.values()] == [
        "orders: connected", "cart: connected", "dispatch: connected"]
    assert len(threads) == 3 and threading.main_thread() not in threads
    cards = window.pages["overview"].cards
    assert all(c.pill.text() == "connected" for c in cards.values())
    assert window.pages["overview"].refresh_button.isEnabled()
    assert window.banner.isHidden() or window.banner.property("level") == "info"
    assert window.workspace_label.text() == "Demo workspace"
    # A second round runs on demand and is skipped while one is in flight.
    assert window.monitor.refresh() is True
    assert window.monitor.refresh() is False
    with qtbot.waitSignal(window.monitor.checks_finished, timeout=30000):
        pass


def test_config_error_is_a_banner_not_a_traceback(qtbot, data_dir, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[sources.cart\n")
    window = open_window(qtbot, ["--config", str(bad)])
    with qtbot.waitSignal(window.status_settled, timeout=10000):
        pass
    assert not window.banner.isHidden()
    msg = window.banner.message()
    assert msg.startswith(str(bad)) and "not valid TOML" in msg and "Traceback" not in msg
    assert [i.state for i in window.indicators.values()] == ["absent"] * 3
    window.banner.dismiss()
    assert window.banner.isHidden()


def test_unreachable_source_shows_down(qtbot, data_dir, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[sources.dispatch]\nurl = "mysql+pymysql://nc@127.0.0.1:1/dispatch"\n'
                   '[console]\nrole = "viewer"\n')
    window = open_window(qtbot, ["--config", str(cfg)])
    with qtbot.waitSignal(window.status_settled, timeout=20000):
        pass
    assert window.indicators["dispatch"].state == "down"
    assert window.indicators["cart"].state == "absent"
    assert window.role_label.text() == "role: viewer"
    assert window.banner.property("level") == "error"
    assert "The dispatch database cannot be reached" in window.banner.message()
    card = window.pages["overview"].cards["dispatch"]
    assert card.pill.text() == "unreachable" and "Connection refused" in card.reason.text()


def test_task_manager_reports_errors_and_keeps_references(qtbot):
    manager = TaskManager(max_threads=2)
    done, errors, gate = [], [], threading.Event()

    def slow():
        gate.wait(10)
        return {"answer": 42}

    def broken():
        raise SourceUnavailable("The cart database cannot be reached: test.")

    def crash():
        raise ZeroDivisionError("division by zero")

    first = manager.submit(slow, key="poll", on_done=done.append)
    assert first is not None and manager.is_running("poll")
    assert manager.submit(slow, key="poll") is None           # a tick never piles up
    manager.submit(broken, on_error=errors.append)
    with qtbot.waitSignal(manager.task_failed, timeout=5000) as blocker:
        manager.submit(crash)
    assert blocker.args[0] == TaskError("Unexpected error: division by zero.", "unexpected", 1)
    qtbot.waitUntil(lambda: len(errors) == 1, timeout=5000)
    assert errors[0].message == "The cart database cannot be reached: test." and errors[0].exit_code == 2
    assert manager.running == 1
    with qtbot.waitSignal(manager.idle, timeout=5000):
        gate.set()
    assert done == [{"answer": 42}] and manager.running == 0


def _variance(image: QImage) -> float:
    values = []
    for y in range(0, image.height(), 17):
        for x in range(0, image.width(), 13):
            c = image.pixelColor(x, y)
            values.append(c.red() * 0.3 + c.green() * 0.59 + c.blue() * 0.11)
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / len(values)


@pytest.mark.parametrize("page", ["overview", "failed"])
def test_screenshot_command_writes_a_real_picture(tmp_path, page):
    out = tmp_path / f"{page}.png"
    env = {**os.environ, "NC_DATA_DIR": str(tmp_path / "data"), "NC_NO_KEYRING": "1"}
    env.pop("QT_QPA_PLATFORM", None)          # launch picks offscreen by itself
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "--demo", "--screenshot", str(out),
                           "--page", page], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip() == ""
    image = QImage(str(out))
    assert not image.isNull() and image.width() >= 1000 and image.height() >= 700
    assert _variance(image) > 500              # not a blank or single-colour frame
    # The sidebar is dark and the content light: the layout really rendered.
    side, content = image.pixelColor(100, 500), image.pixelColor(900, 700)
    assert side.lightness() < 60 and content.lightness() > 200


def test_screenshot_of_a_broken_config_still_renders(tmp_path):
    out = tmp_path / "broken.png"
    env = {**os.environ, "NC_DATA_DIR": str(tmp_path / "data"), "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "--config", str(tmp_path / "none.toml"),
                           "--screenshot", str(out)], capture_output=True, text=True, env=env,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    # The banner row (error tint) is at the top of the content area.
    banner = QImage(str(out)).pixelColor(700, 15)
    assert banner.red() > banner.blue()
