"""Overview: one card per source with its connection, schema and size."""
from __future__ import annotations

import datetime as dt

from PySide6.QtCore import QSize
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton

from app.config import SOURCE_NAMES

from ..icons import icon
from ..traffic import TrafficController, TrafficPanel
from ..widgets import PlannedCard, SourceCard
from .base import Page


class OverviewPage(Page):
    key = "overview"
    title = "Overview"
    subtitle = "The three notification pipelines this console watches, and whether it can reach them."
    icon_name = "overview"

    def build(self) -> None:
        self.checked_label = QLabel("")
        self.checked_label.setObjectName("muted")
        self.refresh_button = QPushButton(" Check again")
        self.refresh_button.setObjectName("secondary")
        self.refresh_button.setIcon(icon("refresh", "#334155"))
        self.refresh_button.setIconSize(QSize(14, 14))
        self.refresh_button.setEnabled(False)
        self.header_row.addWidget(self.checked_label)
        self.header_row.addSpacing(12)
        self.header_row.addWidget(self.refresh_button)

        row = QHBoxLayout()
        row.setSpacing(16)
        self.cards = {name: SourceCard(name) for name in SOURCE_NAMES}
        for name in SOURCE_NAMES:
            row.addWidget(self.cards[name], 1)
        self.body.addLayout(row)
        self.traffic = TrafficController(self.ctx, self)
        self.traffic_panel = TrafficPanel(self.traffic)
        self.body.addWidget(self.traffic_panel)
        self.body.addWidget(PlannedCard("Coming to the overview", [
            "Notifications per minute across the three sources, with the last hour's trend.",
            "Counters for failed, stuck and in-progress items against the configured thresholds.",
            "Duplicate groups found in the last 24 hours, by kind, each linking to its evidence.",
        ]))
        self.body.addStretch(1)

    def on_workspace(self, workspace) -> None:
        for name, card in self.cards.items():
            if workspace.has(name):
                card.set_checking()
            else:
                card.set_absent()

    def on_checks_started(self, names: list) -> None:
        self.refresh_button.setEnabled(False)
        self.checked_label.setText("Checking connections…")

    def on_source_status(self, status) -> None:
        self.cards[status.name].set_status(status)

    def on_checks_finished(self, results: list) -> None:
        self.refresh_button.setEnabled(True)
        now = dt.datetime.now().strftime("%H:%M:%S")
        self.checked_label.setText(f"Last checked {now}")
