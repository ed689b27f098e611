"""Charts: latency percentiles, throughput, failure rate, stuck and duplicates per source and series.

Ranges 1 h / 24 h / 7 d follow the present (live: the newest buckets are
read again every ``LIVE_MS`` and written into the curves' buffers); Custom,
or panning and zooming away from the present, shows a fixed range. Either
way only the range in view is read, in tasks (``app.read.series``), with the
bucket the range calls for (or the one chosen). A load draws in two steps:
latency, throughput, failures and stuck first, the duplicate scan after.

Exports: PNG of the plots, CSV of exactly the numbers drawn, and a one-page
PDF report of the range (the plots and a table per source) to forward.
"""
from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import QDateTime, Qt, QTimer, QTimeZone
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDateTimeEdit,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app import registry
from app.read.series import (
    EPOCH,
    ERROR_NOTE,
    RANGES,
    SERIES,
    SourceStats,
    Window,
    auto_bucket,
    bucket_label,
    clock_now,
    source_duplicates,
    source_stats,
)

from ..charts import ChartView, report_rows, write_csv, write_png, write_report_pdf
from ..tasks import TaskError
from .base import Page

LIVE_MS = 5_000
# Buckets a live refresh reads again: the newest, and the one before (rows that settled late).
LIVE_BUCKETS = 2
RANGE_CHOICES = (("1h", "1 h"), ("24h", "24 h"), ("7d", "7 d"), ("custom", "Custom"))
BUCKET_CHOICES = (("Auto bucket", None), ("1 min", 60), ("5 min", 300), ("1 h", 3600))
DEFAULT_BUCKETS = {"1h": 60, "24h": 300, "7d": 3600}
MIN_SPAN_S = 10 * 60
MAX_SPAN_S = 31 * 86400


@dataclass(frozen=True)
class Loaded:
    """What a load task hands the page: the window and each source's series (or why it failed)."""

    window: Window
    stats: dict[str, SourceStats]
    errors: dict[str, str]


def _try(source: str, errors: dict[str, str], fn, *args, **kwargs):
    """Run one source's read; a source that fails is named, the others still draw."""
    from app.errors import ConsoleError
    try:
        return fn(*args, **kwargs)
    except ConsoleError as exc:
        errors[source] = exc.message
    except Exception as exc:  # noqa: BLE001 - one source's database error must not blank the others
        from app.sources import describe_db_error
        errors[source] = describe_db_error(source, exc)
    return None


def load_window(workspace, sources: list[str], window: Window | None, span: dt.timedelta | None,
                bucket: int) -> Loaded:
    """Every series of ``sources`` in ``window`` (or the last ``span`` by the database clock), without
    the duplicate scan (``load_duplicates`` adds it)."""
    if window is None:
        assert span is not None
        window = Window.ending(clock_now(workspace, sources), span, bucket)
    errors: dict[str, str] = {}
    stats = {}
    for s in sources:
        r = _try(s, errors, source_stats, workspace, s, window, duplicates=False)
        if r is not None:
            stats[s] = r
    return Loaded(window, stats, errors)


def load_duplicates(workspace, sources: list[str], window: Window) -> dict[str, dict[str, Any]]:
    errors: dict[str, str] = {}
    out = {}
    for s in sources:
        r = _try(s, errors, source_duplicates, workspace, s, window)
        if r is not None:
            out[s] = r
    return out


def load_recent(workspace, sources: list[str], bucket: int) -> Loaded:
    """The newest ``LIVE_BUCKETS`` buckets of every source, duplicates included."""
    window = Window.ending(clock_now(workspace, sources), dt.timedelta(seconds=bucket * LIVE_BUCKETS), bucket)
    errors: dict[str, str] = {}
    stats = {}
    for s in sources:
        r = _try(s, errors, source_stats, workspace, s, window)
        if r is not None:
            stats[s] = r
    return Loaded(window, stats, errors)


def build_report(workspace, path: str, image, selected: dict[str, list[str]], window: Window) -> str:
    """The PDF report (runs in a task): the range read again, so the table is the range's own figures."""
    summaries = []
    for source, names in selected.items():
        stats = source_stats(workspace, source, window)
        summaries.append(stats.summary([n for n in names if n in stats.series]))
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    subtitle = (f"{window.start:%Y-%m-%d %H:%M} – {window.end:%Y-%m-%d %H:%M} UTC · buckets of "
                f"{bucket_label(window.bucket_seconds)} · generated {now:%Y-%m-%d %H:%M} UTC")
    note = (f"Latency: created → delivered (orders: first image of a stage → its admin email); {ERROR_NOTE}. "
            "Failure rate = failed / (settled + failed); duplicate rate = extra copies per settled item.")
    return write_report_pdf(path, image, "Notification delivery report", subtitle, report_rows(summaries), note)


class ChartsPage(Page):
    key = "charts"
    title = "Charts"
    subtitle = "Latency, throughput, failures and duplicates over time, for managers and for post-mortems."
    icon_name = "charts"
    scrolls = False

    def build(self) -> None:
        self.generation = 0
        self.loaded_generation = 0
        self.drawn_generation = 0          # the load whose first step (all but duplicates) is drawn
        self.loading = False
        self.window: Window | None = None
        self.stats: dict[str, SourceStats] = {}
        self.range_key = "24h"
        self.follow = True                 # the range ends now: live refresh moves it along
        self.custom: tuple[dt.datetime, dt.datetime] | None = None
        self.sources: list[str] = []
        self.exported: tuple[str, str] | None = None
        self.items: dict[tuple[str, str], QTreeWidgetItem] = {}

        controls = QHBoxLayout()
        controls.setSpacing(6)
        self.range_buttons = QButtonGroup(self)
        self.range_buttons.setExclusive(True)
        holder = QWidget()
        holder.setObjectName("rangeButtons")
        # Styled in resources/style.qss (and its dark overlay in ui/theme.py).
        hl = QHBoxLayout(holder)
        hl.setContentsMargins(0, 0, 0, 0)
        hl.setSpacing(4)
        self.range_button: dict[str, QPushButton] = {}
        for key, label in RANGE_CHOICES:
            b = QPushButton(label)
            b.setCheckable(True)
            b.setObjectName(f"range_{key}")
            b.setToolTip("A fixed range: From and To" if key == "custom" else f"The last {label}, live")
            self.range_buttons.addButton(b)
            self.range_button[key] = b
            hl.addWidget(b)
            b.clicked.connect(lambda _c=False, k=key: self.set_range(k))
        self.range_button["24h"].setChecked(True)
        controls.addWidget(holder)
        self.bucket_box = QComboBox()
        self.bucket_box.setObjectName("bucketBox")
        for label, seconds in BUCKET_CHOICES:
            self.bucket_box.addItem(label, seconds)
        self.bucket_box.setToolTip("Bucket size: Auto is 1 min up to 3 h, 5 min up to 3 days, else 1 h")
        self.bucket_box.currentIndexChanged.connect(lambda _i: self.reload())
        self.bucket_box.setMinimumWidth(72)   # may narrow in a small window
        controls.addWidget(self.bucket_box)
        self.from_edit = QDateTimeEdit()
        self.to_edit = QDateTimeEdit()
        for e in (self.from_edit, self.to_edit):
            e.setDisplayFormat("yyyy-MM-dd HH:mm")
            e.setCalendarPopup(True)
            e.setTimeZone(QTimeZone.utc())
        self.from_label = QLabel("From")
        self.to_label = QLabel("To (UTC)")
        self.apply_button = QPushButton("Show")
        self.apply_button.setObjectName("secondary")
        self.apply_button.clicked.connect(self._apply_custom)
        for w in (self.from_label, self.from_edit, self.to_label, self.to_edit, self.apply_button):
            controls.addWidget(w)
            w.hide()
        controls.addStretch(1)
        self.live_label = QLabel("")
        self.live_label.setObjectName("muted")
        self.live_label.setMinimumWidth(1)   # the first to give way in a narrow window
        controls.addWidget(self.live_label)
        self.png_button = QPushButton("PNG")
        self.csv_button = QPushButton("CSV")
        self.pdf_button = QPushButton("PDF report")
        for b, tip, slot in ((self.png_button, "The plots as an image", self.ask_png),
                             (self.csv_button, "Exactly the numbers drawn, for the selected series", self.ask_csv),
                             (self.pdf_button, "One page to forward: the plots and a table per source (Ctrl+P)",
                              self.ask_pdf)):
            b.setObjectName("secondary")
            b.setToolTip(tip)
            b.clicked.connect(slot)
        self.pdf_button.setObjectName("primary")
        self.body.addLayout(controls)

        self.chart = ChartView(self)
        self.chart.sig_view_changed.connect(self._view_changed)
        for plot in self.chart.plots.values():
            plot.getViewBox().setLimits(minXRange=MIN_SPAN_S, maxXRange=MAX_SPAN_S)

        side = QWidget()
        side.setObjectName("chartSide")
        sv = QVBoxLayout(side)
        sv.setContentsMargins(0, 0, 8, 0)
        sv.setSpacing(6)
        t = QLabel("Series")
        t.setObjectName("sectionTitle")
        sv.addWidget(t)
        self.tree = QTreeWidget()
        self.tree.setObjectName("seriesTree")
        self.tree.setHeaderHidden(True)
        self.tree.itemChanged.connect(self._tree_changed)
        sv.addWidget(self.tree, 2)
        prow = QHBoxLayout()
        prow.addWidget(QLabel("Latency"))
        self.pct_boxes: dict[str, QCheckBox] = {}
        for field, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
            box = QCheckBox(label)
            box.setObjectName(f"pct_{label}")
            box.setChecked(field in self.chart.percentiles)
            box.toggled.connect(self._percentiles_changed)
            self.pct_boxes[field] = box
            prow.addWidget(box)
        prow.addStretch(1)
        sv.addLayout(prow)
        t2 = QLabel("At the crosshair")
        t2.setObjectName("sectionTitle")
        sv.addWidget(t2)
        self.readout_label = QLabel("Move the mouse over a plot.")
        self.readout_label.setObjectName("muted")
        self.readout_label.setWordWrap(True)
        self.readout_label.setAlignment(Qt.AlignTop | Qt.AlignLeft)
        self.readout_label.setTextFormat(Qt.RichText)
        sv.addWidget(self.readout_label, 3)
        t3 = QLabel("Export")
        t3.setObjectName("sectionTitle")
        sv.addWidget(t3)
        erow = QHBoxLayout()   # beside the series they export (the row above the plots stays narrow)
        for b in (self.png_button, self.csv_button, self.pdf_button):
            erow.addWidget(b)
        erow.addStretch(1)
        sv.addLayout(erow)
        self.note_label = QLabel(f"Times are UTC; {ERROR_NOTE}. Drag to pan, wheel to zoom; click a legend "
                                 "entry to hide its curve.")
        self.note_label.setObjectName("muted")
        self.note_label.setWordWrap(True)
        sv.addWidget(self.note_label)
        self.splitter = QSplitter(Qt.Horizontal)
        self.splitter.addWidget(side)
        self.splitter.addWidget(self.chart.widget)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([230, 800])
        self.body.addWidget(self.splitter, 1)
        self.status_label = QLabel("")
        self.status_label.setObjectName("muted")
        self.body.addWidget(self.status_label)

        self._readout_timer = QTimer(self)
        self._readout_timer.setInterval(100)
        self._readout_timer.timeout.connect(self._show_readout)
        self._readout_timer.start()
        self._shown_readout: list[tuple[str, str]] | None = None
        self.live = QTimer(self)
        self.live.setInterval(LIVE_MS)
        self.live.timeout.connect(self.refresh_live)
        sc = QShortcut(QKeySequence("Ctrl+P"), self)
        sc.setContext(Qt.WidgetWithChildrenShortcut)
        sc.activated.connect(self.ask_pdf)
        self._set_custom_edits(dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=1),
                               dt.datetime.now(dt.UTC).replace(tzinfo=None))

    # Series ---------------------------------------------------------------------------
    def on_workspace(self, workspace) -> None:
        self.sources = [s for s in registry.NAMES if workspace.has(s)]
        self.tree.blockSignals(True)
        self.tree.clear()
        self.items = {}
        for source in self.sources:
            top = QTreeWidgetItem([registry.source(source).label])
            top.setFlags(top.flags() | Qt.ItemIsUserCheckable | Qt.ItemIsAutoTristate)
            self.tree.addTopLevelItem(top)
            for name in SERIES[source]:
                self._add_series_item(top, source, name)
            top.setExpanded(True)
        self.tree.blockSignals(False)
        self._tree_changed()
        if self.isVisible():
            self.reload()

    def _add_series_item(self, top: QTreeWidgetItem, source: str, name: str) -> QTreeWidgetItem:
        label = "abandonment → email" if name == source else name
        item = QTreeWidgetItem([label])
        item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
        item.setCheckState(0, Qt.Checked)
        item.setData(0, Qt.UserRole, (source, name))
        top.addChild(item)
        self.items[(source, name)] = item
        self.chart.ensure_series((source, name))
        return item

    def _tree_changed(self, *_args) -> None:
        selected = {k for k, item in self.items.items() if item.checkState(0) == Qt.Checked}
        for k in selected:
            self.chart.ensure_series(k)
        self.chart.selected = selected
        self.chart.apply_selection()
        self._color_items()

    def _color_items(self) -> None:
        from PySide6.QtGui import QColor
        for k, item in self.items.items():
            item.setForeground(0, QColor(self.chart.colors.get(k, "#334155")))

    def _percentiles_changed(self, *_args) -> None:
        self.chart.percentiles = {f for f, box in self.pct_boxes.items() if box.isChecked()}
        self.chart.apply_selection()

    def select_series(self, keys: set[tuple[str, str]]) -> None:
        """Check exactly ``keys`` in the series list (the legend toggles single curves)."""
        self.tree.blockSignals(True)
        for k, item in self.items.items():
            item.setCheckState(0, Qt.Checked if k in keys else Qt.Unchecked)
        self.tree.blockSignals(False)
        self._tree_changed()

    def selected_series(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for source, name in sorted(self.chart.selected, key=lambda k: (registry.NAMES.index(k[0]), k[1])):
            out.setdefault(source, []).append(name)
        return out

    def show_filtered(self, source: str | None = None, range_key: str = "24h") -> None:
        """Open on one source's series (every source's with None) over ``range_key``: the Overview's links."""
        if source is not None:
            registry.source(source)
        self.select_series({k for k in self.items if source is None or k[0] == source})
        self.set_range(range_key)

    # Range ----------------------------------------------------------------------------
    def bucket_for(self, span: dt.timedelta) -> int:
        chosen = self.bucket_box.currentData()
        if chosen:
            return int(chosen)
        if self.follow and self.range_key in DEFAULT_BUCKETS:
            return DEFAULT_BUCKETS[self.range_key]
        return auto_bucket(span)

    def set_range(self, key: str) -> None:
        """1h / 24h / 7d: the last span, live; custom: the From and To fields."""
        if key not in dict(RANGE_CHOICES):
            raise ValueError(key)
        self.range_key = key
        self.range_button[key].setChecked(True)
        custom = key == "custom"
        for w in (self.from_label, self.from_edit, self.to_label, self.to_edit, self.apply_button):
            w.setVisible(custom)
        if custom:
            if self.window is not None:
                self._set_custom_edits(self.window.start, self.window.end)
            self._apply_custom()
            return
        self.follow = True
        self.custom = None
        self.reload()

    def _set_custom_edits(self, start: dt.datetime, end: dt.datetime) -> None:
        for edit, t in ((self.from_edit, start), (self.to_edit, end)):
            edit.setDateTime(QDateTime.fromSecsSinceEpoch(int((t - EPOCH).total_seconds()), QTimeZone.utc()))

    def _edit_time(self, edit: QDateTimeEdit) -> dt.datetime:
        return EPOCH + dt.timedelta(seconds=edit.dateTime().toSecsSinceEpoch())

    def _apply_custom(self) -> None:
        start, end = self._edit_time(self.from_edit), self._edit_time(self.to_edit)
        if end <= start:
            self.ctx.notify("The custom range ends before it starts: set To after From.", "warning")
            return
        self.show_range(start, end)

    def show_range(self, start: dt.datetime, end: dt.datetime) -> None:
        """A fixed range (Custom, or panned and zoomed to): no live refresh."""
        self.follow = False
        self.custom = (start, end)
        self.range_key = "custom"
        self.range_button["custom"].setChecked(True)
        self.reload()

    def _view_changed(self, x0: float, x1: float) -> None:
        """The person panned or zoomed: load the range in view, as a fixed range (1 h, 24 h, 7 d go live again)."""
        if self.window is None:
            return
        start, end = EPOCH + dt.timedelta(seconds=x0), EPOCH + dt.timedelta(seconds=x1)
        self._set_custom_edits(start, end)
        self.show_range(start, end)

    # Loading --------------------------------------------------------------------------
    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self.ctx.workspace is not None and self.generation == 0:
            QTimer.singleShot(0, self.reload)
        self.live.start()

    def hideEvent(self, event) -> None:
        super().hideEvent(event)
        self.live.stop()

    def is_loaded(self) -> bool:
        return self.ctx.workspace is None or (self.generation > 0 and self.loaded_generation == self.generation)

    def reload(self) -> None:
        """Read the range again from the databases (a new range, bucket, or F5)."""
        ws = self.ctx.workspace
        if ws is None or not self.sources:
            return
        self.generation += 1
        gen = self.generation
        self.loading = True
        window = None
        span = RANGES.get(self.range_key)
        try:
            if self.follow:
                bucket = self.bucket_for(span)
            else:
                start, end = self.custom
                bucket = self.bucket_for(end - start)
                window = Window.covering(start, end, bucket)
        except Exception as exc:  # noqa: BLE001 - a range too long for its bucket: one sentence
            self.loading = False
            self.loaded_generation = gen
            self.status_label.setText(str(exc))
            self.ctx.notify(str(exc), "warning")
            self.sig_loaded.emit()
            return
        self.status_label.setText("Loading…")
        self.live_label.setText("")
        self.ctx.tasks.submit(load_window, ws, list(self.sources), window, span, bucket,
                              on_done=lambda res: self._loaded(gen, res),
                              on_error=lambda err: self._failed(gen, err))

    def _failed(self, gen: int, err: TaskError) -> None:
        if gen != self.generation:
            return
        self.loading = False
        self.loaded_generation = gen
        self.status_label.setText(f"Could not load: {err.message}")
        self.ctx.notify(err.message, "error")
        self.sig_loaded.emit()

    def _loaded(self, gen: int, res: Loaded) -> None:
        if gen != self.generation:
            return
        self.window = res.window
        self.stats = res.stats
        for source, st in res.stats.items():
            for name in st.series:
                if (source, name) not in self.items:    # a series the data holds beyond the usual ones
                    top = self.tree.topLevelItem(self.sources.index(source))
                    self.tree.blockSignals(True)
                    self._add_series_item(top, source, name)
                    self.tree.blockSignals(False)
                    self._tree_changed()
        for key, buf in self.chart.buffers.items():
            st = res.stats.get(key[0])
            buf.load(res.window, st.series.get(key[1]) if st else None)
        self.chart.draw_staged(self._x_bounds(res.window), done=lambda: setattr(self, "drawn_generation", gen))
        self._status(res, duplicates=False)
        if res.errors:
            self.ctx.notify(" ".join(res.errors.values()), "error")
        self.ctx.tasks.submit(load_duplicates, self.ctx.workspace, list(res.stats), res.window,
                              on_done=lambda d: self._duplicates(gen, res, d),
                              on_error=lambda err: self._failed(gen, err))

    def _x_bounds(self, window: Window) -> tuple[float, float]:
        return ((window.start - EPOCH).total_seconds(), (window.end - EPOCH).total_seconds())

    def _duplicates(self, gen: int, res: Loaded, dups: dict[str, dict[str, Any]]) -> None:
        if gen != self.generation:
            return
        for key, buf in self.chart.buffers.items():
            per = dups.get(key[0])
            if per is None:
                continue
            values = per.get(key[1])
            buf.put_field(res.window, "duplicates", values if values is not None else np.zeros(res.window.n))
        self.stats = {s: (st.with_duplicates(dups[s]) if s in dups else st) for s, st in self.stats.items()}
        self.chart.draw_staged(fields=("duplicates",), done=lambda: self._drawn(gen, res))

    def _drawn(self, gen: int, res: Loaded) -> None:
        if gen != self.generation:
            return
        self.loading = False
        self.loaded_generation = gen
        self._status(res, duplicates=True)
        self.sig_loaded.emit()

    def _status(self, res: Loaded, duplicates: bool) -> None:
        w = res.window
        what = "" if duplicates else " · counting duplicates…"
        self.status_label.setText(f"{w.start:%Y-%m-%d %H:%M} – {w.end:%Y-%m-%d %H:%M} UTC · {w.n:,} buckets of "
                                  f"{bucket_label(w.bucket_seconds)}{what}")
        self.live_label.setText(f"Live · every {LIVE_MS // 1000} s" if self.follow else "Fixed range")

    def refresh_live(self) -> None:
        """The newest buckets again, written into the shown ones (the window moves on with the clock)."""
        ws = self.ctx.workspace
        if (ws is None or not self.follow or self.loading or self.window is None or not self.isVisible()):
            return
        gen = self.generation
        self.ctx.tasks.submit(load_recent, ws, list(self.stats), self.window.bucket_seconds, key="charts-live",
                              on_done=lambda res: self._live(gen, res), on_error=lambda _e: None)

    def _live(self, gen: int, res: Loaded) -> None:
        if gen != self.generation or not self.follow or self.window is None:
            return
        moved = res.window.start_b + res.window.n - (self.window.start_b + self.window.n)
        for key, buf in self.chart.buffers.items():
            st = res.stats.get(key[0])
            if not buf.update(res.window, st.series.get(key[1]) if st else None):
                self.reload()
                return
        x_range = None
        if moved > 0:
            self.window = Window(self.window.start_b + moved, self.window.n, self.window.bucket_seconds)
            x_range = self._x_bounds(self.window)
        self.chart.draw_staged(x_range, done=lambda: self.live_label.setText(
            f"Live · updated {dt.datetime.now():%H:%M:%S}"))

    # Crosshair ------------------------------------------------------------------------
    def crosshair_at(self, t: dt.datetime | float) -> list[tuple[str, str]]:
        """Put the crosshair at ``t`` (a time, or epoch seconds) and return its readout."""
        x = (t - EPOCH).total_seconds() if isinstance(t, dt.datetime) else float(t)
        rows = self.chart.show_crosshair(x)
        self._show_readout()
        return rows

    def _show_readout(self) -> None:
        rows = self.chart.readout
        if rows == self._shown_readout:
            return
        self._shown_readout = list(rows)
        if not rows:
            self.readout_label.setText("Move the mouse over a plot.")
            return
        head = f"<b>{html.escape(rows[0][1])}</b>"
        body = "".join(f"<tr><td>{html.escape(k)}</td><td align='right'>&nbsp;{html.escape(v)}</td></tr>"
                       for k, v in rows[1:])
        self.readout_label.setText(f"{head}<table cellspacing='0' cellpadding='1'>{body}</table>")

    # Exports ----------------------------------------------------------------------------
    def _ask(self, what: str, suffix: str, pattern: str) -> str | None:
        path, _ = QFileDialog.getSaveFileName(self, f"Export the charts as {what}", f"charts.{suffix}", pattern)
        return path or None

    def ask_png(self) -> None:
        if (path := self._ask("PNG", "png", "PNG images (*.png)")):
            self.export_png(path)

    def ask_csv(self) -> None:
        if (path := self._ask("CSV", "csv", "CSV files (*.csv)")):
            self.export_csv(path)

    def ask_pdf(self) -> None:
        if (path := self._ask("a PDF report", "pdf", "PDF files (*.pdf)")):
            self.export_pdf(path)

    def _exported(self, kind: str, path: str) -> None:
        self.exported = (kind, path)
        self.ctx.notify(f"Exported the charts ({kind}) to {path}.", "info")

    def _export_failed(self, path: str, err: TaskError) -> None:
        self.ctx.notify(f"The export to {path} failed: {err.message}", "error")

    def export_png(self, path: str) -> None:
        image = self.chart.image(scale=1.0)   # painted here (widgets live on this thread), saved in a task
        self.ctx.tasks.submit(write_png, path, image, on_done=lambda p: self._exported("PNG", p),
                              on_error=lambda e: self._export_failed(path, e), key="charts-export")

    def export_csv(self, path: str) -> None:
        rows = self.chart.plotted_rows()
        self.ctx.tasks.submit(write_csv, path, rows, on_done=lambda _n: self._exported("CSV", path),
                              on_error=lambda e: self._export_failed(path, e), key="charts-export")

    def export_pdf(self, path: str) -> None:
        ws = self.ctx.workspace
        if ws is None or self.window is None:
            return
        image = self.chart.image(scale=1.5)
        self.ctx.tasks.submit(build_report, ws, path, image, self.selected_series(), self.window,
                              on_done=lambda p: self._exported("PDF", p),
                              on_error=lambda e: self._export_failed(path, e), key="charts-export")

    def focus_target(self) -> QWidget | None:
        return self.range_button[self.range_key]
