"""Settings that stick: a restart puts the admin back where they left off."""
from __future__ import annotations

from PySide6.QtCore import QPoint

from ui.main_window import MainWindow
from ui.settings import restore_window, settings


def new_window(qtbot) -> MainWindow:
    window = MainWindow()
    qtbot.addWidget(window)
    window.remember = True
    restore_window(window)
    window.show()
    return window


def test_geometry_page_splitters_columns_and_filters_survive_a_restart(qtbot, data_dir):
    first = new_window(qtbot)
    first.resize(780, 580)          # inside the offscreen screen (800 x 600)
    first.move(QPoint(40, 30))
    first.show_page("failed")
    failed = first.pages["failed"]
    failed.filter_edit.setText("Deadlock")
    failed.kind_box.setCurrentIndex(2)
    failed.splitter.setSizes([700, 300])
    header = failed.table.horizontalHeader()
    header.resizeSection(1, 177)
    header.moveSection(0, 3)
    notifications = first.pages["notifications"]
    notifications.range_box.setCurrentIndex(1)
    sizes, order = failed.splitter.sizes(), [header.logicalIndex(i) for i in range(header.count())]
    first.close()
    assert (data_dir / "settings.ini").exists() and settings().value("window/page") == "failed"

    second = new_window(qtbot)
    assert second.current_page() == "failed"
    assert (second.width(), second.height()) == (780, 580)
    again = second.pages["failed"]
    assert again.filter_edit.text() == "Deadlock" and again.kind_box.currentIndex() == 2
    assert second.pages["notifications"].range_box.currentIndex() == 1
    h = again.table.horizontalHeader()
    assert h.sectionSize(1) == 177 and [h.logicalIndex(i) for i in range(h.count())] == order
    qtbot.waitUntil(lambda: again.splitter.sizes() == sizes, timeout=5000)


def test_a_window_that_does_not_remember_leaves_the_settings_alone(qtbot, data_dir):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    window.show_page("audit")
    window.close()
    assert settings().value("window/page") is None
