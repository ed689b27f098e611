"""The first start: no configuration file and no --demo, so the window says where to begin."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from .icons import icon
from .widgets import Card


class WelcomePage(QWidget):
    """Two ways in: the demo workspace, or a connection to the admin's own databases."""

    key = "welcome"
    title = "Welcome"
    sig_open_demo = Signal()
    sig_add_connection = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("page_welcome")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(24, 48, 24, 48)
        outer.addStretch(1)
        card = Card()
        card.setObjectName("card")
        card.setMaximumWidth(720)
        v = QVBoxLayout(card)
        v.setContentsMargins(36, 32, 36, 32)
        v.setSpacing(14)
        top = QHBoxLayout()
        logo = QLabel()
        logo.setPixmap(icon("app").pixmap(40, 40))
        heading = QLabel("Welcome to Notification Console")
        heading.setObjectName("pageTitle")
        heading.setWordWrap(True)      # in a narrow window the heading wraps rather than widen the window
        top.addWidget(logo)
        top.addSpacing(8)
        top.addWidget(heading, 1)
        v.addLayout(top)
        self.text = QLabel()
        self.text.setObjectName("welcomeText")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextSelectableByMouse)
        v.addWidget(self.text)
        buttons = QHBoxLayout()
        buttons.setSpacing(12)
        self.demo_button = QPushButton("Open the demo workspace")
        self.demo_button.setObjectName("welcomeDemo")
        self.demo_button.setToolTip("Seven days of realistic traffic in local files; no server needed")
        self.demo_button.clicked.connect(self.sig_open_demo)
        self.connect_button = QPushButton("Add a connection")
        self.connect_button.setObjectName("secondary")
        self.connect_button.setToolTip("Point the console at your orders, cart and dispatch databases")
        self.connect_button.clicked.connect(self.sig_add_connection)
        buttons.addWidget(self.demo_button)
        buttons.addWidget(self.connect_button)
        buttons.addStretch(1)
        v.addLayout(buttons)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(card, 3)
        row.addStretch(1)
        outer.addLayout(row)
        outer.addStretch(2)
        self.set_config_path(None)

    def set_config_path(self, path: Path | None) -> None:
        where = f" (looked for <code>{path}</code>)" if path else ""
        self.text.setText(
            "There is no configuration file yet" + where + ". Start with the <b>demo workspace</b>: "
            "a shop, an issue tracker and a delivery service with a week of traffic, failures and duplicates, "
            "all in local files. Or <b>add a connection</b> to your own orders (MongoDB), cart and dispatch "
            "(MySQL/MariaDB) databases; the console saves it to that file and the passwords to the system "
            "keyring.")

    def focus_target(self) -> QWidget:
        return self.demo_button
