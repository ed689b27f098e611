"""Settings that stick (QSettings): where the admin left the window, restored at the next start.

Window geometry and state, the last page, every splitter's sizes, every list's
column order and widths (the header's state), each page's filters (its text
box and drop-downs, by name) and the theme. Stored where Qt keeps settings on
the platform; with NC_DATA_DIR set (tests, a moved data directory) in
``settings.ini`` there.
"""
from __future__ import annotations

import os

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QComboBox, QHeaderView, QLineEdit, QSplitter, QWidget

from app.config import APP_NAME, data_dir

FORMAT_VERSION = 1


def settings() -> QSettings:
    if os.environ.get("NC_DATA_DIR"):
        return QSettings(str(data_dir() / "settings.ini"), QSettings.IniFormat)
    return QSettings(APP_NAME, "Notification Console")


def _splitters(page: QWidget) -> list[QSplitter]:
    return page.findChildren(QSplitter)


def _headers(page: QWidget) -> list[QHeaderView]:
    return [h for h in page.findChildren(QHeaderView) if h.orientation() == Qt.Horizontal]


def _filters(page: QWidget) -> tuple[list[QLineEdit], list[QComboBox]]:
    edits = [e for e in page.findChildren(QLineEdit) if e.objectName() == "filterEdit"]
    boxes = [b for b in page.findChildren(QComboBox) if b.objectName().endswith("Filter")]
    return edits, boxes


def save_window(window) -> None:
    s = settings()
    s.setValue("version", FORMAT_VERSION)
    s.setValue("window/geometry", window.saveGeometry())
    s.setValue("window/state", window.saveState())
    s.setValue("window/page", window.current_page())
    if getattr(window, "theme_choice", None):
        s.setValue("window/theme", window.theme_choice)
    for key, page in window.pages.items():
        s.beginGroup(f"pages/{key}")
        for i, sp in enumerate(_splitters(page)):
            s.setValue(f"splitter{i}", sp.saveState())
        for i, header in enumerate(_headers(page)):
            s.setValue(f"header{i}", header.saveState())
        edits, boxes = _filters(page)
        for edit in edits:
            s.setValue(f"filter/{edit.objectName()}", edit.text())
        for box in boxes:
            s.setValue(f"filter/{box.objectName()}", box.currentIndex())
        extra = getattr(page, "saved_state", None)   # a page with more to keep (a chart's range)
        if callable(extra):
            s.setValue("extra", extra())
        s.endGroup()
    s.sync()


def restore_window(window) -> None:
    """Put the window back as it was saved; a page the console no longer has is skipped."""
    s = settings()
    if s.value("version") is None:
        return
    geometry = s.value("window/geometry")
    if geometry is not None:
        window.restoreGeometry(geometry)
    state = s.value("window/state")
    if state is not None:
        window.restoreState(state)
    for key, page in window.pages.items():
        s.beginGroup(f"pages/{key}")
        for i, sp in enumerate(_splitters(page)):
            value = s.value(f"splitter{i}")
            if value is not None:
                sp.restoreState(value)
        for i, header in enumerate(_headers(page)):
            value = s.value(f"header{i}")
            if value is not None:
                header.restoreState(value)
        edits, boxes = _filters(page)
        for edit in edits:
            value = s.value(f"filter/{edit.objectName()}")
            if value is not None:
                edit.setText(str(value))
        for box in boxes:
            value = s.value(f"filter/{box.objectName()}")
            if value is not None and 0 <= int(value) < box.count():
                box.setCurrentIndex(int(value))
        extra = s.value("extra")
        restore = getattr(page, "restore_state", None)
        if extra is not None and callable(restore):
            restore(extra)
        s.endGroup()
    page = s.value("window/page")
    if page in window.pages:
        window.show_page(page)


def saved_theme() -> str | None:
    value = settings().value("window/theme")
    return str(value) if value else None
