"""The page base class: a header, a scrollable body, and hooks for live data.

Later pages put a ``QTableView`` on a ``QAbstractTableModel`` (filled by
tasks, updated with ``beginInsertRows``/``dataChanged``) or a pyqtgraph plot
into ``self.body``; they start their queries from ``on_workspace`` and
``on_activated`` through ``self.ctx.tasks`` and never query in a slot.
"""
from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QScrollArea, QVBoxLayout, QWidget

from ..context import AppContext
from ..widgets import PageHeader, PlannedCard


class Page(QWidget):
    key = ""
    title = ""
    subtitle = ""
    icon_name = ""
    planned: list[str] = []

    def __init__(self, ctx: AppContext, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctx = ctx
        self.setObjectName(f"page_{self.key}")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setObjectName("pageScroll")
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.NoFrame)
        inner = QWidget()
        inner.setObjectName("pageInner")
        self.body = QVBoxLayout(inner)
        self.body.setContentsMargins(32, 28, 32, 28)
        self.body.setSpacing(18)
        self.header_row = QHBoxLayout()
        self.header = PageHeader(self.title, self.subtitle)
        self.header_row.addWidget(self.header, 1)
        self.body.addLayout(self.header_row)
        scroll.setWidget(inner)
        outer.addWidget(scroll)
        ctx.workspace_ready.connect(self.on_workspace)
        self.build()

    def build(self) -> None:
        """Fill ``self.body``; the default shows what the page will hold."""
        if self.planned:
            self.body.addWidget(PlannedCard("What this page shows", self.planned))
        self.body.addStretch(1)

    # Hooks ---------------------------------------------------------------
    def on_workspace(self, workspace) -> None:
        """The workspace is open: start loading (through ``ctx.tasks``)."""

    def on_source_status(self, status) -> None:
        """A connection check finished for one source."""

    def on_activated(self) -> None:
        """The page became visible."""
