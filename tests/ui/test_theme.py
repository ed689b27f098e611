"""Themes: light, dark, or the system's (the default); chosen from the window and kept for the next start."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

import ui.theme as theme
from tests.helpers import activate
from ui.launch import load_style
from ui.main_window import MainWindow
from ui.settings import restore_window, settings
from ui.theme import DARK_QSS, chart_colours
from ui.theme import manager as theme_manager

DARK_WINDOW, LIGHT_WINDOW = "#0b1220", "#f4f6f9"


def window_colour() -> str:
    return QApplication.palette().color(QPalette.Window).name()


@pytest.fixture(autouse=True)
def light_afterwards(qapp):
    """The next test starts with the system's look, whatever this one chose."""
    sheet = qapp.styleSheet()
    yield
    qapp.setStyleSheet(sheet)
    theme_manager().apply("system")


def new_window(qtbot) -> MainWindow:
    window = MainWindow()
    qtbot.addWidget(window)
    window.remember = True
    restore_window(window)
    window.show()
    return window


def test_the_default_follows_the_system_and_changes_with_it(qtbot, data_dir, monkeypatch):
    window = new_window(qtbot)
    assert window.theme_choice == "system" and window.theme_actions["system"].isChecked()
    assert window_colour() == LIGHT_WINDOW           # a desktop that says nothing is light
    changes = []
    theme_manager().theme_changed.connect(changes.append)
    # The desktop turns dark (offscreen Qt has no desktop to ask: it is told, as a desktop tells it).
    monkeypatch.setattr(theme, "system_theme", lambda: "dark")
    QGuiApplication.styleHints().colorSchemeChanged.emit(Qt.ColorScheme.Dark)
    assert window_colour() == DARK_WINDOW
    assert changes == ["dark"] and chart_colours()["background"] == "#111a2b"
    window.set_theme("light")                         # a choice of the admin's: the desktop no longer decides
    assert window_colour() == LIGHT_WINDOW
    QGuiApplication.styleHints().colorSchemeChanged.emit(Qt.ColorScheme.Dark)
    assert window_colour() == LIGHT_WINDOW and changes == ["dark", "light"]


def test_the_theme_chosen_from_the_menu_survives_a_restart(qtbot, data_dir):
    first = new_window(qtbot)
    first.theme_actions["dark"].trigger()            # the sidebar's Theme menu
    assert window_colour() == DARK_WINDOW and first.theme_choice == "dark"
    first.close()
    assert settings().value("window/theme") == "dark"
    theme_manager().apply("light")                   # as a fresh process starts

    second = new_window(qtbot)
    assert second.theme_choice == "dark" and second.theme_actions["dark"].isChecked()
    assert window_colour() == DARK_WINDOW


def test_ctrl_shift_t_switches_to_the_next_theme(qtbot, data_dir):
    window = new_window(qtbot)
    qtbot.waitExposed(window)
    activate(window)
    qtbot.keyClick(window.nav, Qt.Key_T, Qt.ControlModifier | Qt.ShiftModifier)
    assert window.theme_choice == "light" and window_colour() == LIGHT_WINDOW
    qtbot.keyClick(window.nav, Qt.Key_T, Qt.ControlModifier | Qt.ShiftModifier)
    assert window.theme_choice == "dark" and window_colour() == DARK_WINDOW
    qtbot.keyClick(window.nav, Qt.Key_T, Qt.ControlModifier | Qt.ShiftModifier)
    assert window.theme_choice == "system" and window_colour() == LIGHT_WINDOW


def test_the_dark_theme_lays_its_sheet_over_the_consoles_and_takes_it_off_again(qtbot, data_dir, qapp):
    load_style(qapp)
    base = qapp.styleSheet()
    window = new_window(qtbot)
    window.set_theme("dark")
    assert qapp.styleSheet() == base + DARK_QSS
    window.set_theme("dark")
    assert qapp.styleSheet() == base + DARK_QSS, "laid over once, not twice"
    window.set_theme("light")
    assert qapp.styleSheet() == base


def test_a_hand_edited_theme_falls_back_to_following_the_system(qtbot, data_dir):
    settings().setValue("window/theme", "purple")
    window = new_window(qtbot)
    assert window.theme_choice == "system" and window_colour() == LIGHT_WINDOW


def test_with_the_consoles_style_sheet_the_window_fits_780_px_in_either_theme(qtbot, data_dir, qapp):
    load_style(qapp)                                  # as launched: the sheet makes text and margins larger
    window = new_window(qtbot)
    window.show_welcome(data_dir / "config.toml")     # the widest page (its heading wraps)
    for choice in ("light", "dark"):
        window.set_theme(choice)
        window.resize(780, 580)
        assert window.minimumSizeHint().width() <= 780 and window.width() == 780


def test_the_charts_follow_the_theme_and_their_exports_stay_light(qtbot, data_dir):
    window = new_window(qtbot)
    chart = window.pages["charts"].chart
    background = lambda: chart.widget.backgroundBrush().color().name()  # noqa: E731
    assert background() == chart_colours("light")["background"]
    window.set_theme("dark")
    assert background() == chart_colours("dark")["background"]
    assert chart.plots["latency"].getAxis("left").textPen().color().name() == chart_colours("dark")["foreground"]
    image = chart.image(scale=1.0)            # printed and forwarded: the light look, whatever the window shows
    assert image.pixelColor(2, 2).name() == chart_colours("light")["background"]
    assert background() == chart_colours("dark")["background"]
    window.set_theme("light")
    assert background() == chart_colours("light")["background"]
