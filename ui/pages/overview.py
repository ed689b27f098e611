"""Overview: one card per source with its connection, and the last 24 hours in numbers.

Each card shows failed, stuck and duplicates in the last 24 h and the latency
p95 over 24 h with a sparkline of the last hour's p95 per 5 minutes, read in a
task (``app.read.series``: the numbers of the Charts page and ``stats``) and
refreshed in place every ``HEALTH_REFRESH_MS`` while the page is shown. Each
number is a link to the page that lists it, already filtered to the source.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QPointF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QFrame, QGridLayout, QHBoxLayout, QLabel, QPushButton, QWidget

from app import registry
from app.config import SOURCE_NAMES
from app.read.series import Summary, Window, clock_now, source_stats

from ..charts import format_ms
from ..icons import icon
from ..traffic import TrafficController, TrafficPanel
from ..widgets import SourceCard
from .base import Page

HEALTH_REFRESH_MS = 30_000
HEALTH_SPAN = dt.timedelta(hours=24)
# The sparkline: the last hour's p95 per 5 minutes (per minute, a quiet source is mostly gaps).
SPARK_BUCKET_S = 300
SPARK_POINTS = 12
LINK_STYLE = "text-decoration:none;font-weight:600"   # the colour is the palette's link colour (the theme's)


@dataclass(frozen=True)
class Health:
    """A source's last 24 hours (``summary``) and its p95 per 5 minutes over the last hour (``spark``)."""

    source: str
    summary: Summary | None
    spark: np.ndarray
    error: str | None = None


def read_health(workspace, sources: list[str]) -> dict[str, Health]:
    """Every source's card figures (runs in a task); a source that fails says why, the others still show."""
    from app.errors import ConsoleError
    from app.sources import describe_db_error
    window = Window.ending(clock_now(workspace, sources), HEALTH_SPAN, SPARK_BUCKET_S)
    out: dict[str, Health] = {}
    for s in sources:
        try:
            st = source_stats(workspace, s, window)
        except ConsoleError as exc:
            out[s] = Health(s, None, np.array([]), exc.message)
            continue
        except Exception as exc:  # noqa: BLE001 - one source's database error must not blank the others
            out[s] = Health(s, None, np.array([]), describe_db_error(s, exc))
            continue
        out[s] = Health(s, st.summary(), st.overall.pcts[-SPARK_POINTS:, 1].copy())
    return out


class Sparkline(QWidget):
    """A line of values (NaN: a gap), scaled to the widget; a click opens the matching chart."""

    clicked = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.values = np.array([])
        self.setMinimumHeight(48)
        self.setCursor(Qt.PointingHandCursor)
        self.setToolTip("Latency p95 per 5 minutes over the last hour: click for the chart")

    def sizeHint(self) -> QSize:
        return QSize(160, 50)

    def set_values(self, values: np.ndarray) -> None:
        self.values = np.asarray(values, dtype=float)
        self.update()

    def mouseReleaseEvent(self, event) -> None:
        if event.button() == Qt.LeftButton:
            self.clicked.emit()

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        r = self.rect().adjusted(2, 16, -2, -3)     # the caption sits above the line
        p.setPen(QPen(QColor("#e2e8f0"), 1))
        p.drawLine(r.bottomLeft(), r.bottomRight())
        v = self.values
        finite = v[np.isfinite(v)] if v.size else v
        if finite.size == 0:
            p.setPen(QColor("#94a3b8"))
            p.drawText(r, Qt.AlignCenter, "no latencies in the last hour")
            return
        lo, hi = float(finite.min()), float(finite.max())
        span = hi - lo or 1.0
        step = r.width() / max(1, len(v) - 1)
        path = QPainterPath()
        drawing = False
        for i, y in enumerate(v):
            if not math.isfinite(y):
                drawing = False
                continue
            pt = QPointF(r.left() + i * step, r.bottom() - (y - lo) / span * r.height())
            if drawing:
                path.lineTo(pt)
            else:
                path.moveTo(pt)
                path.addEllipse(pt, 0.8, 0.8)
                path.moveTo(pt)
                drawing = True
        p.setPen(QPen(QColor("#2563eb"), 1.6))
        p.drawPath(path)
        p.setPen(QColor("#94a3b8"))
        font = p.font()
        font.setPointSizeF(7.5)
        p.setFont(font)
        p.drawText(self.rect().adjusted(2, 0, -2, 0), Qt.AlignLeft | Qt.AlignTop,
                   f"p95 per 5 min, last hour · max {format_ms(hi)}")


class SourceHealthCard(SourceCard):
    """A source's connection card with its last 24 hours below; every number links to its page."""

    # (source, what): "failed", "stuck", "duplicates", "latency" or "spark".
    sig_link = Signal(str, str)

    def __init__(self, name: str, parent: QWidget | None = None):
        super().__init__(name, parent)
        lay = self.layout()
        rule = QFrame()
        rule.setObjectName("cardRule")
        rule.setFixedHeight(1)
        head = QLabel("Last 24 hours")
        head.setObjectName("cardKey")
        grid = QGridLayout()
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(4)
        self.links: dict[str, QLabel] = {}
        src = registry.source(name)
        self.kinds = {"failed": "failed" if "failed" in src.retryable_kinds else src.retryable_kinds[0],
                      "stuck": "stuck" if "stuck" in src.retryable_kinds else None}
        rows = (("failed", "Failed" if self.kinds["failed"] == "failed" else "Missed emails"),
                ("stuck", "Stuck"), ("duplicates", "Duplicates"), ("latency", "Latency p95"))
        for r, (what, label) in enumerate(rows):
            k = QLabel(label)
            k.setObjectName("cardKey")
            v = QLabel("…")
            v.setObjectName(f"health_{what}")
            v.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
            v.setTextFormat(Qt.RichText)
            v.linkActivated.connect(lambda _href, w=what: self.sig_link.emit(self.name, w))
            grid.addWidget(k, r, 0)
            grid.addWidget(v, r, 1)
            self.links[what] = v
        self.spark = Sparkline()
        self.spark.clicked.connect(lambda: self.sig_link.emit(self.name, "spark"))
        self.health_error = QLabel()
        self.health_error.setObjectName("cardReason")
        self.health_error.setWordWrap(True)
        self.health_error.hide()
        at = lay.count() - 1     # before the stretch at the bottom
        for w in (rule, head):
            lay.insertWidget(at, w)
            at += 1
        lay.insertLayout(at, grid)
        lay.insertWidget(at + 1, self.spark)
        lay.insertWidget(at + 2, self.health_error)
        self.health: Health | None = None

    def _link(self, what: str, text: str, tip: str, linked: bool = True) -> None:
        label = self.links[what]
        label.setText(f"<a href='{what}' style='{LINK_STYLE}'>{text}</a>" if linked else text)
        label.setToolTip(tip)

    def set_health(self, h: Health) -> None:
        """The figures, changed in place (the card's layout stays as it is)."""
        self.health = h
        if h.summary is None:
            for what in self.links:
                self._link(what, "–", "", linked=False)
            self.spark.set_values(np.array([]))
            self.health_error.setText(h.error or "")
            self.health_error.setVisible(bool(h.error))
            return
        self.health_error.hide()
        s = h.summary
        self._link("failed", f"{s.failed:,}", "Open Failed & Stuck for this source")
        if self.kinds["stuck"] is None:
            self._link("stuck", "–", "This source has no stuck state", linked=False)
        else:
            self._link("stuck", f"{s.stuck:,}", "Open Failed & Stuck for this source")
        self._link("duplicates", f"{s.duplicates:,}", "Open Duplicates for this source, last 24 hours")
        self._link("latency", format_ms(s.p95_ms), f"{s.settled:,} settled in 24 h: open the Charts page")
        self.spark.set_values(h.spark)

    def figures(self) -> dict[str, str]:
        """What the card shows now, as text (tests and screenshots read it)."""
        from PySide6.QtGui import QTextDocument
        out = {}
        for what, label in self.links.items():
            doc = QTextDocument()
            doc.setHtml(label.text())
            out[what] = doc.toPlainText()
        return out


class OverviewPage(Page):
    key = "overview"
    title = "Overview"
    subtitle = "Is delivery healthy? The three notification pipelines, their connection and their last 24 hours."
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
        self.cards = {name: SourceHealthCard(name) for name in SOURCE_NAMES}
        for name in SOURCE_NAMES:
            row.addWidget(self.cards[name], 1)
            self.cards[name].sig_link.connect(self.open_link)
        self.body.addLayout(row)
        self.health_label = QLabel("")
        self.health_label.setObjectName("muted")
        self.body.addWidget(self.health_label)
        self.traffic = TrafficController(self.ctx, self)
        self.traffic_panel = TrafficPanel(self.traffic)
        self.body.addWidget(self.traffic_panel)
        self.body.addStretch(1)
        self.health_generation = 0
        self.health_loaded = 0
        self.health_timer = QTimer(self)
        self.health_timer.setInterval(HEALTH_REFRESH_MS)
        self.health_timer.timeout.connect(self.refresh_health)

    def on_workspace(self, workspace) -> None:
        for name, card in self.cards.items():
            if workspace.has(name):
                card.set_checking()
            else:
                card.set_absent()
        if self.isVisible():
            self.refresh_health()

    def on_checks_started(self, names: list) -> None:
        self.refresh_button.setEnabled(False)
        self.checked_label.setText("Checking connections…")

    def on_source_status(self, status) -> None:
        self.cards[status.name].set_status(status)

    def on_checks_finished(self, results: list) -> None:
        self.refresh_button.setEnabled(True)
        now = dt.datetime.now().strftime("%H:%M:%S")
        self.checked_label.setText(f"Last checked {now}")

    # The last 24 hours -------------------------------------------------------------
    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self.ctx.workspace is not None:
            QTimer.singleShot(0, self.refresh_health)
        self.health_timer.start()

    def hideEvent(self, event) -> None:
        super().hideEvent(event)
        self.health_timer.stop()

    def refresh_health(self) -> None:
        ws = self.ctx.workspace
        if ws is None:
            return
        sources = [s for s in registry.NAMES if ws.has(s)]
        if not sources:
            return
        self.health_generation += 1
        gen = self.health_generation
        if self.ctx.tasks.submit(read_health, ws, sources, key="overview-health",
                                 on_done=lambda res: self._health(gen, res),
                                 on_error=lambda err: self._health_failed(gen, err)) is None:
            self.health_generation -= 1     # the previous read still runs: its figures will do

    def _health(self, gen: int, res: dict[str, Health]) -> None:
        for source, h in res.items():
            self.cards[source].set_health(h)
        self.health_loaded = gen
        self.health_label.setText(f"Figures of the last 24 hours, updated {dt.datetime.now():%H:%M:%S} "
                                  f"(every {HEALTH_REFRESH_MS // 1000} s while shown); click a number to "
                                  "open its list or chart.")
        self.sig_loaded.emit()

    def _health_failed(self, gen: int, err) -> None:
        self.health_loaded = gen
        self.health_label.setText(f"The figures could not be read: {err.message}")
        self.sig_loaded.emit()

    def is_loaded(self) -> bool:
        ws = self.ctx.workspace
        return ws is None or not any(ws.has(s) for s in registry.NAMES) or (
            self.health_generation > 0 and self.health_loaded >= self.health_generation)

    def open_link(self, source: str, what: str) -> None:
        """Open the page behind a number, filtered to ``source``."""
        win = self.window()
        pages = getattr(win, "pages", None)
        if pages is None:
            return
        card = self.cards[source]
        if what in ("failed", "stuck"):
            win.show_page("failed")
            pages["failed"].show_filtered(source=source, kind=card.kinds[what])
        elif what == "duplicates":
            win.show_page("duplicates")
            pages["duplicates"].show_filtered(source=source, since=HEALTH_SPAN)
        else:
            win.show_page("charts")
            pages["charts"].show_filtered(source=source, range_key="1h" if what == "spark" else "24h")
