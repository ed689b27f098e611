"""The Charts page's plots (pyqtgraph): preallocated buffers, curves updated with ``setData`` only,
one time axis for every plot, a crosshair readout, and the exports (PNG, CSV, the PDF report).

Each (source, series) owns a ``SeriesBuffer``: numpy arrays allocated once
(with room for a live window to slide along) that hold exactly what the
curves draw; the curves are ``PlotDataItem``s with peak downsampling and
clip-to-view, created once and fed views of the buffers. A refresh writes
into the buffers and calls ``setData``; nothing is cleared and re-plotted.
The CSV export writes the buffers' numbers, so the file is what is drawn.
"""
from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QMarginsF, QObject, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPageLayout, QPageSize, QPainter, QPdfWriter, QPen
from PySide6.QtWidgets import QWidget

from app import registry
from app.read.series import EPOCH, POINT_FIELDS, SeriesData, Summary, Window, bucket_label

from .theme import CHART_COLOURS
from .theme import manager as theme_manager

# How many buckets a live window may slide before its buffer is moved back to the start.
LIVE_ROOM = 512
PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777", "#475569",
           "#65a30d"]
# The buffers' fields: SeriesData's, with the failure rate in percent as drawn.
FIELDS = ("count", "p50_ms", "p95_ms", "p99_ms", "failed", "failure_pct", "stuck", "duplicates")
PERCENTILES = (("p50", "p50_ms", Qt.DotLine), ("p95", "p95_ms", Qt.SolidLine), ("p99", "p99_ms", Qt.DashLine))


@dataclass(frozen=True)
class PlotSpec:
    key: str
    title: str
    unit: str
    metrics: tuple[tuple[str, str, Qt.PenStyle], ...]      # (label, buffer field, line style)
    log_y: bool = False


PLOTS = (
    PlotSpec("latency", "Latency", "ms", PERCENTILES, log_y=True),
    PlotSpec("throughput", "Settled per bucket", "items", (("settled", "count", Qt.SolidLine),)),
    PlotSpec("failure", "Failure rate", "%", (("failure rate", "failure_pct", Qt.SolidLine),)),
    PlotSpec("stuck", "Stuck per bucket", "items", (("stuck", "stuck", Qt.SolidLine),)),
    PlotSpec("duplicates", "Duplicates per bucket", "copies", (("duplicates", "duplicates", Qt.SolidLine),)),
)
# Where each plot sits in the grid: (row, column, column span).
GRID = {"latency": (0, 0, 2), "throughput": (1, 0, 1), "failure": (1, 1, 1), "stuck": (2, 0, 1),
        "duplicates": (2, 1, 1)}

SeriesKey = tuple[str, str]          # (source, series)
CurveKey = tuple[str, str, str]      # (source, series, buffer field)


def series_label(source: str, series: str) -> str:
    label = registry.source(source).label
    return label if series == source else f"{label} {series}"


def format_ms(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if v < 1000:
        return f"{v:,.0f} ms"
    return f"{v / 1000:,.2f} s" if v < 60_000 else f"{v / 60_000:,.1f} min"


def format_rate(v: float | None) -> str:
    return "–" if v is None or math.isnan(v) else f"{v * 100:.1f} %"


def format_value(field: str, v: float) -> str:
    if math.isnan(v):
        return "–"
    if field.endswith("_ms"):
        return format_ms(v)
    if field == "failure_pct":
        return f"{v:.1f} %"
    return f"{v:,.0f}"


def when(epoch: float) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=epoch)


class SeriesBuffer:
    """One series' numbers over the shown window, in arrays allocated once.

    The window's buckets sit at ``lo .. lo + n`` of each array; a live window
    that moves on by a bucket moves ``lo`` (no copy) until the room runs out.
    """

    def __init__(self, capacity: int = 2048):
        self._alloc(capacity)
        self.lo = 0
        self.n = 0
        self.bucket_seconds = 60
        self.start_b = 0

    def _alloc(self, capacity: int) -> None:
        self.capacity = capacity
        self.x = np.full(capacity, np.nan)
        self.data = {f: np.full(capacity, np.nan) for f in FIELDS}

    def load(self, window: Window, s: SeriesData | None) -> None:
        """Hold ``window`` with the values of ``s`` (zeros and gaps for a series without data)."""
        if window.n + LIVE_ROOM > self.capacity:
            self._alloc(window.n + LIVE_ROOM)
        self.lo, self.n = 0, window.n
        self.bucket_seconds, self.start_b = window.bucket_seconds, window.start_b
        self.x[:self.n] = window.epochs()
        self._put(0, self.n, s, 0)

    def _put(self, at: int, count: int, s: SeriesData | None, src: int) -> None:
        i = slice(self.lo + at, self.lo + at + count)
        j = slice(src, src + count)
        d = self.data
        if s is None:
            for f in FIELDS:
                d[f][i] = np.nan if f.endswith("_ms") or f == "failure_pct" else 0.0
            return
        d["count"][i] = s.count[j]
        d["p50_ms"][i] = s.pcts[j, 0]
        d["p95_ms"][i] = s.pcts[j, 1]
        d["p99_ms"][i] = s.pcts[j, 2]
        d["failed"][i] = s.failed[j]
        d["failure_pct"][i] = s.failure_rate[j] * 100.0
        d["stuck"][i] = s.stuck[j]
        d["duplicates"][i] = s.duplicates[j]

    def update(self, window: Window, s: SeriesData | None) -> bool:
        """Write a few recent buckets (``window``, same bucket size) into the shown window, sliding
        it forward when ``window`` ends past it. False when ``window`` does not fit (reload instead)."""
        if window.bucket_seconds != self.bucket_seconds or self.n == 0:
            return False
        shift = window.start_b + window.n - (self.start_b + self.n)
        if shift > 0:
            if shift >= self.n:
                return False
            if self.lo + self.n + shift > self.capacity:   # out of room: move the window back to the start
                keep = slice(self.lo + shift, self.lo + self.n)
                self.x[:self.n - shift] = self.x[keep]
                for f in FIELDS:
                    self.data[f][:self.n - shift] = self.data[f][keep]
                self.lo = 0
            else:
                self.lo += shift
            self.start_b += shift
            new = slice(self.lo + self.n - shift, self.lo + self.n)
            self.x[new] = (np.arange(self.start_b + self.n - shift, self.start_b + self.n, dtype=np.float64)
                           * self.bucket_seconds)
            self._put(self.n - shift, shift, None, 0)
        at = window.start_b - self.start_b
        src = max(0, -at)
        at = max(0, at)
        count = min(window.n - src, self.n - at)
        if count > 0:
            self._put(at, count, s, src)
        return True

    def put_field(self, window: Window, field: str, values: np.ndarray) -> None:
        """Write one field of ``window``'s buckets (a later phase of a load: the duplicates) where they
        overlap the shown window."""
        if window.bucket_seconds != self.bucket_seconds or self.n == 0:
            return
        at = window.start_b - self.start_b
        src = max(0, -at)
        at = max(0, at)
        count = min(window.n - src, self.n - at)
        if count > 0:
            self.data[field][self.lo + at:self.lo + at + count] = values[src:src + count]

    def xs(self) -> np.ndarray:
        return self.x[self.lo:self.lo + self.n]

    def ys(self, field: str) -> np.ndarray:
        return self.data[field][self.lo:self.lo + self.n]

    def index_at(self, epoch: float) -> int | None:
        """The shown bucket that holds ``epoch`` (None outside the window)."""
        if self.n == 0:
            return None
        i = int(math.floor(epoch / self.bucket_seconds)) - self.start_b
        return i if 0 <= i < self.n else None


def light_curve(plot: pg.PlotItem, *args: Any, **kwargs: Any) -> pg.PlotDataItem:
    """A curve on ``plot`` that draws only what its pixels show: clipped to the visible range and
    peak-downsampled (each group of samples as its lowest and highest) to about two samples a pixel.

    Set after ``addItem``, which gives a curve its plot's own settings (none). pyqtgraph's default of
    five samples a pixel drew a week of minutes (10,080 samples) whole; at two, a repaint of all five
    plots took 15 ms instead of 52-68 ms here, and the peaks look the same."""
    curve = pg.PlotDataItem(*args, autoDownsampleFactor=2.0, **kwargs)
    plot.addItem(curve)
    curve.setDownsampling(auto=True, method="peak")
    curve.setClipToView(True)
    return curve


class ChartView(QObject):
    """The plots on one ``GraphicsLayoutWidget``: curves per (source, series, metric), linked on time."""

    # The person panned or zoomed: (first, last) epoch seconds now in view, after a short pause.
    sig_view_changed = Signal(float, float)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.widget = pg.GraphicsLayoutWidget(parent)
        self.widget.setObjectName("chartPlots")
        self.widget.ci.setSpacing(6)
        self.plots: dict[str, pg.PlotItem] = {}
        self.lines: dict[str, pg.InfiniteLine] = {}
        self.curves: dict[CurveKey, pg.PlotDataItem] = {}
        self.curve_plot: dict[CurveKey, str] = {}
        self.curve_label: dict[CurveKey, str] = {}       # how the crosshair readout names a curve
        self.buffers: dict[SeriesKey, SeriesBuffer] = {}
        self.colors: dict[SeriesKey, str] = {}
        # One legend for every plot, an entry per selected series: a click hides or shows the series.
        self.legend = pg.LegendItem(colCount=3, labelTextSize="8pt", labelTextColor="#334155", frame=False)
        self.widget.addItem(self.legend, row=0, col=0, colspan=2)
        self.toggles: dict[SeriesKey, pg.PlotDataItem] = {}
        self.selected: set[SeriesKey] = set()
        self.percentiles: set[str] = {"p95_ms"}
        self._setting_range = 0
        for spec in PLOTS:
            row, col, span = GRID[spec.key]
            axis = pg.DateAxisItem(orientation="bottom", utcOffset=0)
            plot = self.widget.addPlot(row=row + 1, col=col, colspan=span, axisItems={"bottom": axis})
            # No grid: its lines, blended across every plot, were half of each frame (20 of 40 ms here).
            plot.setMenuEnabled(False)
            plot.hideButtons()
            plot.getViewBox().setMouseEnabled(x=True, y=False)
            plot.enableAutoRange(axis="y")
            plot.setAutoVisible(y=True)
            if spec.log_y:
                plot.setLogMode(y=True)
            plot.getAxis("left").setWidth(52)
            if spec.key in ("throughput", "failure"):
                # The row below carries the same times: its labels are enough (tick labels are most of a frame).
                plot.getAxis("bottom").setStyle(showValues=False)
            line = pg.InfiniteLine(angle=90, movable=False)
            line.hide()
            plot.addItem(line, ignoreBounds=True)
            # Linked by hand: pyqtgraph's X link aligns side-by-side plots by screen position.
            plot.getViewBox().sigXRangeChanged.connect(lambda _vb, rng, k=spec.key: self._x_range_changed(k, rng))
            self.plots[spec.key], self.lines[spec.key] = plot, line
        self.colours: dict[str, str] = {}
        theme = theme_manager()
        self.apply_colours(CHART_COLOURS[theme.effective or "light"])
        theme.theme_changed.connect(self._theme_changed)   # a slot of this object: gone with it
        self.widget.ci.layout.setRowStretchFactor(1, 3)
        self.widget.ci.layout.setRowStretchFactor(2, 2)
        self.widget.ci.layout.setRowStretchFactor(3, 2)
        self.main = self.plots["latency"]
        self._pause = QTimer(self)
        self._pause.setSingleShot(True)
        self._pause.setInterval(300)
        self._pause.timeout.connect(self._view_settled)
        # Staged drawing: one plot per turn of the event loop, so each paint covers one plot (a frame of
        # all five at once held the GUI thread 30-50 ms on two busy cores; one plot is a fifth of that).
        self._stages: list[str] = []
        self._stage_range: tuple[float, float] | None = None
        self._stage_fields: set[str] = set(FIELDS)
        self._stage_done: list[Any] = []
        self._stage_timer = QTimer(self)
        self._stage_timer.setInterval(0)
        self._stage_timer.timeout.connect(self._stage)
        self.crosshair_x: float | None = None
        self.readout: list[tuple[str, str]] = []
        self._mouse = pg.SignalProxy(self.widget.scene().sigMouseMoved, rateLimit=30, slot=self._mouse_moved)

    # Looks --------------------------------------------------------------------------
    def apply_colours(self, colours: dict[str, str]) -> None:
        """Background, titles, axes, legend and crosshair in ``colours`` (``ui.theme.CHART_COLOURS``): the window's
        theme, or the light look for an export."""
        self.colours = dict(colours)
        self.widget.setBackground(colours["background"])
        for spec in PLOTS:
            plot = self.plots[spec.key]
            plot.setTitle(f"<span style='color:{colours['title']};font-size:10pt'>{spec.title}</span>"
                          f"<span style='color:{colours['muted']};font-size:9pt'> · {spec.unit}</span>")
            for name in ("left", "bottom"):
                ax = plot.getAxis(name)
                ax.setPen(pg.mkPen(colours["axis"]))
                ax.setTextPen(pg.mkPen(colours["foreground"]))
            self.lines[spec.key].setPen(pg.mkPen(colours["muted"], width=1, style=Qt.DashLine))
        self.legend.setLabelTextColor(colours["foreground"])

    def _theme_changed(self, kind: str) -> None:
        self.apply_colours(CHART_COLOURS[kind])

    # Curves ------------------------------------------------------------------------
    def ensure_series(self, key: SeriesKey) -> SeriesBuffer:
        """The buffer and curves of ``key``, created on first use (then only fed with ``setData``)."""
        buf = self.buffers.get(key)
        if buf is not None:
            return buf
        buf = self.buffers[key] = SeriesBuffer()
        color = self.colors[key] = PALETTE[len(self.colors) % len(PALETTE)]
        for spec in PLOTS:
            for label, field, style in spec.metrics:
                curve = light_curve(self.plots[spec.key], pen=pg.mkPen(color, width=1.4, style=style),
                                    connect="finite")
                curve.setVisible(False)
                self.curves[(*key, field)] = curve
                self.curve_plot[(*key, field)] = spec.key
                self.curve_label[(*key, field)] = f"{series_label(*key)} {label}"
        # The legend's stand-in for the series: its sample is drawn in the series' colour, and the
        # legend's click hides or shows it, which hides or shows the series' curves.
        toggle = pg.PlotDataItem(pen=pg.mkPen(color, width=2.5), name=series_label(*key))
        toggle.visibleChanged.connect(lambda k=key: self._series_toggled(k))
        self.toggles[key] = toggle
        return buf

    def series_on(self, key: SeriesKey) -> bool:
        """Selected, and not hidden by its legend entry."""
        return key in self.selected and self.toggles[key].isVisible()

    def _wanted(self, ck: CurveKey) -> bool:
        """A curve of a selected series (a latency curve only for a chosen percentile): kept current."""
        return (ck[0], ck[1]) in self.selected and (not ck[2].endswith("_ms") or ck[2] in self.percentiles)

    def toggle_series(self, key: SeriesKey) -> None:
        """What a click on the series' legend entry does."""
        self.toggles[key].setVisible(not self.toggles[key].isVisible())

    def _series_toggled(self, key: SeriesKey) -> None:
        self.apply_selection()

    def apply_selection(self) -> None:
        """Show the curves of the selected series (and percentiles), and their legend entries."""
        for key, toggle in self.toggles.items():
            listed = self.legend.getLabel(toggle) is not None
            if key in self.selected and not listed:
                self.legend.addItem(toggle, toggle.name())
            elif key not in self.selected and listed:
                self.legend.removeItem(toggle)
        for ck, curve in self.curves.items():
            want = self._wanted(ck)
            if want and not curve.isVisible() and self.series_on((ck[0], ck[1])):
                self._feed(ck)
            curve.setVisible(want and self.series_on((ck[0], ck[1])))
        self.show_crosshair(self.crosshair_x)

    def _feed(self, ck: CurveKey) -> None:
        buf = self.buffers[(ck[0], ck[1])]
        self.curves[ck].setData(buf.xs(), buf.ys(ck[2]))

    def redraw(self, keys: Iterable[SeriesKey] | None = None, fields: Iterable[str] | None = None) -> None:
        """``setData`` on the kept-current curves of ``keys`` (default: all) and ``fields`` (default: all)
        from their buffers. Only the plots whose curves changed are painted again."""
        wanted = set(self.buffers if keys is None else keys)
        chosen = set(FIELDS if fields is None else fields)
        for ck in self.curves:
            if (ck[0], ck[1]) in wanted and ck[2] in chosen and self._wanted(ck):
                self._feed(ck)
        self.show_crosshair(self.crosshair_x)

    def draw_staged(self, x_range: tuple[float, float] | None = None, fields: Iterable[str] | None = None,
                    done: Any = None) -> None:
        """``redraw`` (and, with ``x_range``, show that range) one plot per turn of the event loop; call
        ``done`` when every plot is drawn. A new call takes over the plots not drawn yet."""
        chosen = set(FIELDS if fields is None else fields)
        plots = [s.key for s in PLOTS if any(m[1] in chosen for m in s.metrics)] if x_range is None else \
            [s.key for s in PLOTS]
        if self._stages:
            chosen |= self._stage_fields
            plots = list(dict.fromkeys(self._stages + plots))
            x_range = x_range or self._stage_range
        self._stages, self._stage_range, self._stage_fields = plots, x_range, chosen
        if done is not None:
            self._stage_done.append(done)
        self._stage_timer.start()

    def drawing(self) -> bool:
        return bool(self._stages)

    def _stage(self) -> None:
        if not self._stages:
            self._stage_timer.stop()
            return
        key = self._stages.pop(0)
        if self._stage_range is not None:
            self._setting_range += 1
            try:
                self.plots[key].setXRange(*self._stage_range, padding=0)
            finally:
                self._setting_range -= 1
        for ck in self.curves:
            if self.curve_plot[ck] == key and ck[2] in self._stage_fields and self._wanted(ck):
                self._feed(ck)
        if not self._stages:
            self._stage_timer.stop()
            self.show_crosshair(self.crosshair_x)
            done, self._stage_done = self._stage_done, []
            for fn in done:
                fn()

    def visible_curves(self) -> list[CurveKey]:
        return [ck for ck, c in self.curves.items() if self._wanted(ck) and c.isVisible()]

    # Time range ---------------------------------------------------------------------
    def set_x_range(self, x0: float, x1: float) -> None:
        """Show ``x0``..``x1`` without counting it as the person's pan."""
        self._setting_range += 1
        try:
            for plot in self.plots.values():
                plot.setXRange(x0, x1, padding=0)
        finally:
            self._setting_range -= 1

    def x_range(self) -> tuple[float, float]:
        if self._stages and self._stage_range is not None:
            return self._stage_range
        lo, hi = self.main.getViewBox().viewRange()[0]
        return float(lo), float(hi)

    def _x_range_changed(self, key: str, rng: Sequence[float]) -> None:
        if self._setting_range:
            return
        self._setting_range += 1
        try:   # the other plots follow the one panned or zoomed
            for k, plot in self.plots.items():
                if k != key:
                    plot.setXRange(rng[0], rng[1], padding=0)
        finally:
            self._setting_range -= 1
        self._pause.start()

    def _view_settled(self) -> None:
        self.sig_view_changed.emit(*self.x_range())

    # Crosshair ----------------------------------------------------------------------
    def _mouse_moved(self, event: Sequence[Any]) -> None:
        pos = event[0]
        for plot in self.plots.values():
            if plot.sceneBoundingRect().contains(pos):
                self.show_crosshair(plot.getViewBox().mapSceneToView(pos).x())
                return

    def show_crosshair(self, x: float | None) -> list[tuple[str, str]]:
        """Put the crosshair on the bucket holding ``x``; return (and keep) the readout: the bucket's
        time, then every visible curve's value there."""
        self.crosshair_x = x
        buf = next((self.buffers[(ck[0], ck[1])] for ck in self.visible_curves()), None)
        i = buf.index_at(x) if (buf is not None and x is not None) else None
        if buf is None or i is None:
            for line in self.lines.values():
                line.hide()
            self.readout = []
            return self.readout
        start = buf.xs()[i]
        for line in self.lines.values():
            line.setPos(start + buf.bucket_seconds / 2)
            line.show()
        rows = [("bucket", f"{when(start):%Y-%m-%d %H:%M} UTC · {bucket_label(buf.bucket_seconds)}")]
        for ck in self.visible_curves():
            b = self.buffers[(ck[0], ck[1])]
            j = b.index_at(start)
            value = b.ys(ck[2])[j] if j is not None else math.nan
            rows.append((self.curve_label[ck], format_value(ck[2], float(value))))
        self.readout = rows
        return rows

    # Exports ------------------------------------------------------------------------
    def image(self, scale: float = 2.0) -> QImage:
        """The plots as an image, always in the light look (it is printed and forwarded; GUI thread)."""
        shown = self.colours
        if shown != CHART_COLOURS["light"]:
            self.apply_colours(CHART_COLOURS["light"])
        try:
            size = self.widget.size()
            img = QImage(int(size.width() * scale), int(size.height() * scale), QImage.Format_ARGB32)
            img.fill(QColor(CHART_COLOURS["light"]["background"]))
            painter = QPainter(img)
            painter.setRenderHint(QPainter.Antialiasing)
            self.widget.render(painter, QRectF(0, 0, img.width(), img.height()))
            painter.end()
        finally:
            if shown != self.colours:
                self.apply_colours(shown)
        return img

    def plotted_rows(self) -> list[list[Any]]:
        """The numbers drawn, for the selected series: the CSV's rows (``POINT_FIELDS``)."""
        rows: list[list[Any]] = []
        for key in sorted(self.selected, key=lambda k: (registry.NAMES.index(k[0]), k[1])):
            buf = self.buffers.get(key)
            if buf is None:
                continue
            x = buf.xs()
            d = {f: buf.ys(f) for f in FIELDS}
            for i in range(buf.n):
                count, failed = int(d["count"][i]), int(d["failed"][i])
                rate = failed / (count + failed) if count + failed else None
                rows.append([key[0], key[1], when(float(x[i])).isoformat(), count,
                             _maybe(d["p50_ms"][i]), _maybe(d["p95_ms"][i]), _maybe(d["p99_ms"][i]), failed,
                             rate, int(d["stuck"][i]), int(d["duplicates"][i])])
        return rows


def _maybe(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def write_csv(path: str | Path, rows: Sequence[Sequence[Any]]) -> int:
    """The plotted numbers as CSV (``POINT_FIELDS`` columns, as ``stats --csv`` writes them)."""
    with Path(path).expanduser().open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(POINT_FIELDS)
        for r in rows:
            out.writerow(["" if v is None else v for v in r])
    return len(rows)


def write_png(path: str | Path, image: QImage) -> str:
    if not image.save(str(Path(path).expanduser()), "PNG"):
        raise OSError(f"The image cannot be written to {path}.")
    return str(path)


REPORT_HEADER = ("Source", "Settled", "p50", "p95", "p99", "Failed", "Failure rate", "Stuck", "Duplicates",
                 "Duplicate rate")


def report_rows(summaries: Iterable[Summary]) -> list[list[str]]:
    """The report's table: one row per source, formatted as printed."""
    return [[registry.source(s.source).label, f"{s.settled:,}", format_ms(s.p50_ms), format_ms(s.p95_ms),
             format_ms(s.p99_ms), f"{s.failed:,}", format_rate(s.failure_rate), f"{s.stuck:,}",
             f"{s.duplicates:,}", format_rate(s.duplicate_rate)] for s in summaries]


def write_report_pdf(path: str | Path, image: QImage, title: str, subtitle: str, rows: Sequence[Sequence[str]],
                     note: str) -> str:
    """One A4 landscape page: the title, the range, the charts and the table per source (Qt's PDF writer).

    Paints on a ``QPdfWriter`` only (no widget), so it runs in a task."""
    writer = QPdfWriter(str(Path(path).expanduser()))
    writer.setTitle(title)
    writer.setCreator("Notification Console")
    writer.setResolution(300)
    writer.setPageLayout(QPageLayout(QPageSize(QPageSize.A4), QPageLayout.Landscape, QMarginsF(12, 12, 12, 12),
                                     QPageLayout.Millimeter))
    painter = QPainter()
    if not painter.begin(writer):
        raise OSError(f"The report cannot be written to {path}.")
    try:
        page = writer.pageLayout().paintRectPixels(writer.resolution())
        w, h = page.width(), page.height()
        mm = writer.resolution() / 25.4
        y = 0.0
        painter.setPen(QColor("#0f172a"))
        painter.setFont(_font(16, bold=True))
        painter.drawText(QRectF(0, y, w, 10 * mm), Qt.AlignLeft | Qt.AlignVCenter, title)
        y += 10 * mm
        painter.setPen(QColor("#475569"))
        painter.setFont(_font(9))
        painter.drawText(QRectF(0, y, w, 6 * mm), Qt.AlignLeft | Qt.AlignVCenter, subtitle)
        y += 8 * mm
        table_h = (len(rows) + 1) * 7 * mm + 10 * mm
        room = h - y - table_h
        if not image.isNull() and room > 20 * mm:
            scale = min(w / image.width(), room / image.height())
            target = QRectF(0, y, image.width() * scale, image.height() * scale)
            painter.drawImage(target, image)
            y += target.height() + 4 * mm
        widths = [0.16, 0.09, 0.09, 0.09, 0.09, 0.08, 0.1, 0.07, 0.1, 0.13]
        row_h = 7 * mm
        painter.setFont(_font(9, bold=True))
        painter.setPen(QColor("#334155"))
        _table_row(painter, y, w, row_h, widths, REPORT_HEADER)
        y += row_h
        painter.setPen(QPen(QColor("#cbd5e1"), 0.3 * mm))
        painter.drawLine(QPointF(0, y), QPointF(w, y))
        painter.setFont(_font(9))
        painter.setPen(QColor("#0f172a"))
        for r in rows:
            _table_row(painter, y, w, row_h, widths, r)
            y += row_h
        painter.setPen(QColor("#64748b"))
        painter.setFont(_font(7.5))
        painter.drawText(QRectF(0, y + 2 * mm, w, 6 * mm), Qt.AlignLeft | Qt.AlignVCenter, note)
    finally:
        painter.end()
    return str(path)


def _font(points: float, bold: bool = False) -> QFont:
    f = QFont("DejaVu Sans")
    f.setPointSizeF(points)
    f.setBold(bold)
    return f


def _table_row(painter: QPainter, y: float, w: float, h: float, widths: Sequence[float],
               cells: Sequence[str]) -> None:
    x = 0.0
    for i, (frac, text) in enumerate(zip(widths, cells)):
        align = (Qt.AlignLeft if i == 0 else Qt.AlignRight) | Qt.AlignVCenter
        painter.drawText(QRectF(x, y, frac * w - 8, h), align, str(text))
        x += frac * w

