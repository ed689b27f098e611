"""The About box: what this console is, which versions it runs on, where its log file is, and its keys."""
from __future__ import annotations

import platform
import sys
from importlib import metadata

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QGridLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.config import data_dir, default_config_path

from .icons import icon
from .log import log_path

DISTRIBUTIONS = (("Notification Console", "notification-console"), ("PySide6", "PySide6-Essentials"),
                 ("SQLAlchemy", "SQLAlchemy"), ("PyMySQL", "PyMySQL"), ("psycopg2", "psycopg2-binary"),
                 ("pymongo", "pymongo"), ("pyqtgraph", "pyqtgraph"), ("keyring", "keyring"))


# The keys of the whole window (each list page adds Ctrl+F, F5, Ctrl+E, Ctrl+A and Ctrl+C).
SHORTCUTS = (("Ctrl+1 … Ctrl+6", "Open a page, in the sidebar's order"),
             ("Ctrl+T", "Start or stop the traffic simulator"),
             ("Ctrl+Shift+A", "Desktop alerts: threshold and sources"),
             ("Ctrl+Shift+T", "Next theme: system, light, dark"),
             ("F1", "This box"),
             ("Ctrl+Q", "Quit (asks first while an action runs)"))


def versions() -> list[tuple[str, str]]:
    """(name, version) of the console and what it runs on."""
    from PySide6.QtCore import qVersion
    out = []
    for label, dist in DISTRIBUTIONS:
        try:
            out.append((label, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            out.append((label, "not installed"))
    out.insert(2, ("Qt", qVersion()))
    out.append(("Python", f"{platform.python_version()} ({sys.executable})"))
    out.append(("System", platform.platform()))
    return out


def details_report(text: str, detail: str) -> str:
    """What "Copy details" puts on the clipboard: the sentence, the detail, the log file, the versions."""
    parts = [text, "", detail.strip() or "(no further detail: the sentence says it all)", "",
             f"Log file: {log_path()}"]
    parts += [f"{name}: {version}" for name, version in versions()]
    return "\n".join(parts)


class AboutDialog(QDialog):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("aboutDialog")
        self.setWindowTitle("About Notification Console")
        self.setWindowIcon(icon("app"))
        self.setMinimumWidth(560)
        v = QVBoxLayout(self)
        v.setContentsMargins(24, 20, 24, 16)
        v.setSpacing(12)
        head = QLabel("<b style='font-size:16px'>Notification Console</b><br>"
                      "Keeps notification delivery honest across the orders, cart and dispatch databases.")
        head.setWordWrap(True)
        v.addWidget(head)
        grid = QGridLayout()
        grid.setHorizontalSpacing(16)
        grid.setVerticalSpacing(4)
        rows = versions() + [("Log file", str(log_path())), ("Configuration", str(default_config_path())),
                             ("Data directory", str(data_dir()))]
        self.values: dict[str, QLabel] = {}
        for r, (name, value) in enumerate(rows):
            key = QLabel(name)
            key.setObjectName("muted")
            val = QLabel(value)
            val.setTextInteractionFlags(Qt.TextSelectableByMouse)
            val.setWordWrap(True)
            grid.addWidget(key, r, 0, Qt.AlignTop)
            grid.addWidget(val, r, 1)
            self.values[name] = val
        grid.setColumnStretch(1, 1)
        v.addLayout(grid)
        keys_head = QLabel("<b>Keys</b>")
        v.addWidget(keys_head)
        keys = QGridLayout()
        keys.setHorizontalSpacing(16)
        keys.setVerticalSpacing(2)
        self.keys: dict[str, str] = {}
        for r, (seq, what) in enumerate(SHORTCUTS):
            key = QLabel(seq)
            key.setObjectName("muted")
            keys.addWidget(key, r, 0)
            keys.addWidget(QLabel(what), r, 1)
            self.keys[seq] = what
        keys.setColumnStretch(1, 1)
        v.addLayout(keys)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setObjectName("secondary")
        self.copy_button.setToolTip("The versions and paths, to the clipboard (for a bug report)")
        self.copy_button.clicked.connect(self.copy)
        self.open_log_button = QPushButton("Open log folder")
        self.open_log_button.setObjectName("secondary")
        self.open_log_button.clicked.connect(
            lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(log_path().parent))))
        buttons.addButton(self.copy_button, QDialogButtonBox.ActionRole)
        buttons.addButton(self.open_log_button, QDialogButtonBox.ActionRole)
        buttons.rejected.connect(self.reject)
        v.addWidget(buttons)

    def text(self) -> str:
        return "\n".join(f"{name}: {label.text()}" for name, label in self.values.items())

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.text())
