"""Small widgets the pages share: the banner, source indicators and cards."""
from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QPainter
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.registry import SOURCES
from app.status import SourceStatus

from .icons import icon

STATE_COLORS = {"ok": "#16a34a", "schema": "#d97706", "down": "#dc2626",
                "checking": "#94a3b8", "absent": "#cbd5e1"}
STATE_WORDS = {"ok": "connected", "schema": "needs db upgrade", "down": "unreachable",
               "checking": "checking…", "absent": "not configured"}
SOURCE_TITLES = {s.name: s.label for s in SOURCES}
SOURCE_BLURBS = {"orders": "Delivery service · MongoDB · admin emails per image stage",
                 "cart": "Shop · abandonment emails, one per cart per 24 h",
                 "dispatch": "Issue tracker · in-app notifications via dispatch log"}


def repolish(widget: QWidget) -> None:
    """Re-apply the style sheet after a dynamic property changed."""
    widget.style().unpolish(widget)
    widget.style().polish(widget)
    widget.update()


class Dot(QWidget):
    """A filled circle in a state colour."""

    def __init__(self, state: str = "checking", diameter: int = 10, parent=None):
        super().__init__(parent)
        self._d = diameter
        self._color = QColor(STATE_COLORS[state])
        self.setFixedSize(diameter + 2, diameter + 2)

    def set_state(self, state: str) -> None:
        self._color = QColor(STATE_COLORS.get(state, STATE_COLORS["checking"]))
        self.update()

    def paintEvent(self, _event):
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        p.setPen(Qt.NoPen)
        p.setBrush(self._color)
        p.drawEllipse(1, 1, self._d, self._d)


class Banner(QFrame):
    """A dismissible message across the top of the window; never a traceback.

    The detail behind an error (its traceback, the versions, the log file)
    goes to the clipboard with "Copy details", not onto the screen.
    """

    dismissed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("banner")
        self.setProperty("level", "error")
        self.detail = ""
        lay = QHBoxLayout(self)
        lay.setContentsMargins(16, 10, 10, 10)
        self.title = QLabel()
        self.title.setObjectName("bannerTitle")
        self.text = QLabel()
        self.text.setObjectName("bannerText")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextSelectableByMouse)
        close = QToolButton()
        close.setObjectName("bannerClose")
        close.setIcon(icon("close", "#475569"))
        close.setIconSize(QSize(14, 14))
        close.setToolTip("Dismiss")
        close.clicked.connect(self.dismiss)
        self.copy_button = QPushButton("Copy details")
        self.copy_button.setObjectName("bannerCopy")
        self.copy_button.setToolTip("The message, what lies behind it, the log file and the versions, "
                                    "to the clipboard")
        self.copy_button.clicked.connect(self.copy_details)
        lay.addWidget(self.title, 0, Qt.AlignTop)
        lay.addWidget(self.text, 1)
        lay.addWidget(self.copy_button, 0, Qt.AlignTop)
        lay.addWidget(close, 0, Qt.AlignTop)
        self.hide()

    def show_message(self, text: str, level: str = "error", detail: str = "") -> None:
        self.detail = detail
        self.copy_button.setVisible(level == "error")
        self.setProperty("level", level)
        self.title.setText({"error": "Error", "warning": "Warning", "info": "Note"}.get(level, level))
        self.text.setText(text)
        repolish(self)
        repolish(self.title)
        self.show()

    def message(self) -> str:
        return "" if self.isHidden() else self.text.text()

    def copy_details(self) -> str:
        from .about import details_report
        report = details_report(self.text.text(), self.detail)
        QGuiApplication.clipboard().setText(report)
        return report

    def dismiss(self) -> None:
        self.hide()
        self.dismissed.emit()


class SourceIndicator(QWidget):
    """Status-bar item: a dot, the source name and its state."""

    def __init__(self, name: str, parent=None):
        super().__init__(parent)
        self.name = name
        self.state = "absent"
        lay = QHBoxLayout(self)
        lay.setContentsMargins(8, 0, 8, 0)
        lay.setSpacing(6)
        self.dot = Dot("absent", 8)
        self.name_label = QLabel(SOURCE_TITLES[name])
        self.name_label.setObjectName("indicatorName")
        self.label = QLabel()
        self.label.setObjectName("indicatorText")
        # Room for the longest state word, so the bar does not jump as states change.
        self.label.setMinimumWidth(self.label.fontMetrics().horizontalAdvance("needs db upgrade") + 12)
        lay.addWidget(self.dot)
        lay.addWidget(self.name_label)
        lay.addWidget(self.label)
        self.set_state("absent")

    def set_state(self, state: str, tooltip: str = "") -> None:
        self.state = state
        self.dot.set_state(state)
        self.label.setText(STATE_WORDS[state])
        self.setToolTip(tooltip or f"{SOURCE_TITLES[self.name]}: {STATE_WORDS[state]}")

    def text(self) -> str:
        return f"{self.name}: {STATE_WORDS[self.state]}"


class PageHeader(QWidget):
    def __init__(self, title: str, subtitle: str, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        t = QLabel(title)
        t.setObjectName("pageTitle")
        s = QLabel(subtitle)
        s.setObjectName("pageSubtitle")
        s.setWordWrap(True)
        lay.addWidget(t)
        lay.addWidget(s)
        self.title_label, self.subtitle_label = t, s


class Card(QFrame):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("card")
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)


class SourceCard(Card):
    """One source on the Overview: state, target, schema and row counts."""

    def __init__(self, name: str, parent=None):
        super().__init__(parent)
        self.name = name
        self.setMinimumHeight(250)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(18, 16, 18, 16)
        lay.setSpacing(8)
        top = QHBoxLayout()
        ic = QLabel()
        ic.setPixmap(icon("database", "#2563eb").pixmap(22, 22))
        title = QLabel(SOURCE_TITLES[name])
        title.setObjectName("cardTitle")
        self.pill = QLabel()
        self.pill.setObjectName("pill")
        top.addWidget(ic)
        top.addWidget(title)
        top.addStretch(1)
        top.addWidget(self.pill)
        lay.addLayout(top)
        blurb = QLabel(SOURCE_BLURBS[name])
        blurb.setObjectName("cardBlurb")
        blurb.setWordWrap(True)
        lay.addWidget(blurb)
        self.target = QLabel()
        self.target.setObjectName("cardTarget")
        self.target.setWordWrap(True)
        lay.addWidget(self.target)
        line = QFrame()
        line.setObjectName("cardRule")
        line.setFixedHeight(1)
        lay.addWidget(line)
        self.grid = QGridLayout()
        self.grid.setHorizontalSpacing(12)
        self.grid.setVerticalSpacing(6)
        lay.addLayout(self.grid)
        self.reason = QLabel()
        self.reason.setObjectName("cardReason")
        self.reason.setWordWrap(True)
        self.reason.hide()
        lay.addWidget(self.reason)
        lay.addStretch(1)
        self.set_checking()

    def _set_pill(self, state: str) -> None:
        self.pill.setText(STATE_WORDS[state])
        self.pill.setProperty("state", state)
        repolish(self.pill)

    def _clear_grid(self) -> None:
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.widget():
                item.widget().deleteLater()

    def _row(self, r: int, key: str, value: str, value_name: str = "cardValue") -> None:
        k = QLabel(key)
        k.setObjectName("cardKey")
        v = QLabel(value)
        v.setObjectName(value_name)
        v.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
        self.grid.addWidget(k, r, 0)
        self.grid.addWidget(v, r, 1)

    def set_absent(self) -> None:
        self._set_pill("absent")
        self.target.setText(f"Add a [sources.{self.name}] table with a url to the configuration.")
        self._clear_grid()
        self.reason.hide()

    def set_checking(self) -> None:
        self._set_pill("checking")
        self.target.setText("Connecting…")
        self._clear_grid()
        self.reason.hide()

    def set_status(self, status: SourceStatus) -> None:
        self._set_pill(status.state)
        self.target.setText(f"{status.backend} · {status.target}")
        self._clear_grid()
        r = 0
        if status.reachable:
            self._row(r, "Production schema", "present" if status.production_schema else "missing")
            r += 1
            self._row(r, "Console schema", "ready" if status.console_schema else "missing")
            r += 1
            for table, n in status.counts.items():
                self._row(r, table, f"{n:,}", "cardCount")
                r += 1
        self._row(r, "Checked in", f"{status.elapsed_ms:,} ms")
        if status.replica_target is not None:
            self._row(r + 1, "Read replica", ("reachable · " if status.replica_reachable else "unreachable · ")
                      + status.replica_target)
        reason = " ".join(t for t in (status.reason, status.replica_reason) if t)
        if reason:
            self.reason.setText(reason)
            self.reason.setProperty("state", status.state)
            repolish(self.reason)
            self.reason.show()
        else:
            self.reason.hide()


class PlannedCard(Card):
    """What a page will hold, said plainly while the page is being built."""

    def __init__(self, heading: str, points: list[str], parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(22, 18, 22, 20)
        lay.setSpacing(10)
        h = QLabel(heading)
        h.setObjectName("cardTitle")
        lay.addWidget(h)
        for text in points:
            row = QHBoxLayout()
            row.setSpacing(10)
            bullet = Dot("checking", 6)
            row.addWidget(bullet, 0, Qt.AlignTop)
            label = QLabel(text)
            label.setObjectName("plannedPoint")
            label.setWordWrap(True)
            row.addWidget(label, 1)
            lay.addLayout(row)
