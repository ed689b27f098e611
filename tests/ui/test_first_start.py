"""The first start explains itself: no display, a platform plugin that cannot load, no configuration."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import Qt

from app.cli import build_parser
from ui import platform_check
from ui.launch import build_window

ROOT = Path(__file__).resolve().parents[2]


def run_console(tmp_path, **env_changes):
    """``main.py --demo`` as a new user would start it, with the display environment given."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "XDG_SESSION_TYPE")}
    env.update(NC_DATA_DIR=str(tmp_path / "data"), NC_CONFIG=str(tmp_path / "config.toml"), NC_NO_KEYRING="1")
    env.update({k: v for k, v in env_changes.items() if v is not None})
    return subprocess.run([sys.executable, str(ROOT / "main.py"), "--demo"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def one_sentence(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "Aborted" not in result.stderr
    return lines[0]


def test_without_a_display_the_console_says_so_and_points_at_screenshots_and_the_cli(tmp_path):
    result = run_console(tmp_path)
    assert result.returncode == 2
    line = one_sentence(result)
    assert line.startswith("error: There is no display (DISPLAY and WAYLAND_DISPLAY are unset)")
    assert "--screenshot" in line and "python main.py --help" in line


def test_a_platform_qt_cannot_load_is_one_sentence_and_exit_2_not_an_abort(tmp_path):
    # Qt itself aborts the process (SIGABRT, a core dump) on this one; the check runs first.
    result = run_console(tmp_path, QT_QPA_PLATFORM="nosuch", DISPLAY=":1")
    assert result.returncode == 2
    line = one_sentence(result)
    assert "QT_QPA_PLATFORM names the platform 'nosuch'" in line and "xcb" in line and "offscreen" in line


def test_a_display_without_an_x_server_is_one_sentence(tmp_path):
    number = next(n for n in range(4242, 4300) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    result = run_console(tmp_path, DISPLAY=f":{number}")
    assert result.returncode == 2
    line = one_sentence(result)
    assert line.startswith(f"error: No X server answers on DISPLAY=:{number}")


def test_a_plugin_whose_libraries_are_missing_names_the_packages_per_platform():
    # The two ways the loader reports it: a library not found, a library damaged.
    missing = platform_check._libraries_named(
        "libxcb-cursor.so.0: cannot open shared object file: No such file or directory", Path("libqxcb.so"))
    damaged = platform_check._libraries_named("/lib/x86_64-linux-gnu/libxcb-icccm.so.4: file too short",
                                              Path("libqxcb.so"))
    assert missing == ["libxcb-cursor.so.0"] and damaged == ["libxcb-icccm.so.4"]
    text = platform_check.missing_libraries_sentence("xcb", missing + damaged + ["libweird.so.3"], "x")
    assert "(libxcb-cursor.so.0, libxcb-icccm.so.4, libweird.so.3)" in text
    assert "Debian/Ubuntu: sudo apt-get install libxcb-cursor0 libxcb-icccm4" in text
    assert "Fedora: sudo dnf install xcb-util-cursor xcb-util-wm" in text
    assert "the package that provides libweird.so.3" in text and "--screenshot" in text


def test_a_plugin_file_that_cannot_load_is_reported_with_the_loaders_words(tmp_path, monkeypatch):
    platforms = tmp_path / "platforms"
    platforms.mkdir()
    (platforms / "libqxcb.so").write_bytes(b"not a shared object")
    monkeypatch.setattr(platform_check, "plugin_dirs", lambda env: [platforms])
    text = platform_check.platform_problem({"DISPLAY": ":0"}, system="linux")
    assert text.startswith("Qt's xcb platform plugin cannot load (") and "libqxcb.so" in text
    assert "README" in text


def test_offscreen_needs_no_display_and_other_systems_are_not_checked():
    assert platform_check.platform_problem({"QT_QPA_PLATFORM": "offscreen"}, system="linux") is None
    assert platform_check.platform_problem({}, system="darwin") is None
    assert platform_check.platform_problem({}, system="linux").startswith("There is no display")


def test_without_a_configuration_the_window_opens_on_the_welcome_page(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("NC_CONFIG", str(tmp_path / "nowhere" / "config.toml"))
    window = build_window(build_parser().parse_args([]))
    qtbot.addWidget(window)
    window.show()
    assert window.current_page() == "welcome" and window.settled
    assert window.ctx.workspace is None and window.banner.isHidden()
    assert str(tmp_path / "nowhere" / "config.toml") in window.welcome.text.text()
    assert window.welcome.demo_button.text() == "Open the demo workspace"
    assert window.welcome.connect_button.text() == "Add a connection"
    qtbot.mouseClick(window.welcome.demo_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: window.ctx.workspace is not None, timeout=60_000)
    assert window.ctx.workspace.config.demo and window.current_page() == "overview"
    qtbot.waitUntil(lambda: window.workspace_label.text() == "Demo workspace", timeout=10_000)
