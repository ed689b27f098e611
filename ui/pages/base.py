"""The page base class: a header, a scrollable body, and hooks for live data.

Later pages put a ``QTableView`` on a ``QAbstractTableModel`` (filled by
tasks, updated with ``beginInsertRows``/``dataChanged``) or a pyqtgraph plot
into ``self.body``; they start their queries from ``on_workspace`` and
``on_activated`` through ``self.ctx.tasks`` and never query in a slot.
"""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QScrollArea, QVBoxLayout, QWidget

from ..context import AppContext
from ..widgets import PageHeader, PlannedCard


class Page(QWidget):
    # The page's data is on screen (a list's first page, a chart's series).
    sig_loaded = Signal()

    key = ""
    title = ""
    subtitle = ""
    icon_name = ""
    planned: list[str] = []
    # Cards scroll as one; a page built around a list keeps the list's own scrolling.
    scrolls = True

    def __init__(self, ctx: AppContext, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctx = ctx
        self.setObjectName(f"page_{self.key}")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        inner = QWidget()
        inner.setObjectName("pageInner")
        self.body = QVBoxLayout(inner)
        margins = (32, 28, 32, 28) if self.scrolls else (28, 20, 28, 16)
        self.body.setContentsMargins(*margins)
        self.body.setSpacing(18 if self.scrolls else 10)
        self.header_row = QHBoxLayout()
        self.header = PageHeader(self.title, self.subtitle)
        self.header_row.addWidget(self.header, 1)
        self.body.addLayout(self.header_row)
        if self.scrolls:
            scroll = QScrollArea()
            scroll.setObjectName("pageScroll")
            scroll.setWidgetResizable(True)
            scroll.setFrameShape(QScrollArea.NoFrame)
            scroll.setWidget(inner)
            outer.addWidget(scroll)
        else:
            outer.addWidget(inner)
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

    def is_loaded(self) -> bool:
        """Its data is shown (screenshots wait for this)."""
        return True

    def focus_target(self) -> QWidget | None:
        """Where the keyboard goes when the page opens (Ctrl+1 … Ctrl+6)."""
        return None
