"""Desktop alerts: a tray icon whose tooltip says the counts, and a message when new problems appear.

The figures are the Overview's (``read_health``: failed or missed, stuck and
duplicates of the last 24 hours per source). While the Overview is shown its
own poll delivers them (``sig_loaded``); otherwise each round of connection
checks (``SourceMonitor.checks_finished``, every 30 s) reads them once more
in a task with the Overview's key, so the two never run at once and no second
timer exists.

What the admin has seen is the baseline: whenever the window is in front, and
for what an alert has told. While the window is not the active window, a
source whose figure has risen by at least the threshold since then (and whose
switch is on) raises one tray message; clicking it opens the page behind the
Overview's number, filtered to that source and kind.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QSpinBox,
    QSystemTrayIcon,
    QVBoxLayout,
    QWidget,
)

from app import registry

from .icons import icon
from .pages.overview import Health, read_health
from .settings import settings
from .widgets import SOURCE_TITLES

KINDS = ("failed", "stuck", "duplicates")
DEFAULT_THRESHOLD = 1
THRESHOLD_MAX = 100_000
# Traffic asks for a round of checks after each of its reports: the figures are read at most this often.
MIN_READ_INTERVAL_S = 10.0
MESSAGE_MS = 15_000
UNAVAILABLE = "Desktop alerts are off: this desktop has no system tray to show them in."


def tray_available() -> bool:
    return QSystemTrayIcon.isSystemTrayAvailable()


def kind_words(source: str, kind: str, n: int) -> str:
    """``3 new failures``, ``1 newly stuck item``, ``2 new missed emails``, ``1 new duplicate``."""
    if kind == "failed":
        noun = "failure" if "failed" in registry.source(source).retryable_kinds else "missed email"
        return f"{n:,} new {noun}{'s' if n != 1 else ''}"
    if kind == "stuck":
        return f"{n:,} newly stuck item{'s' if n != 1 else ''}"
    return f"{n:,} new duplicate{'s' if n != 1 else ''}"


@dataclass(frozen=True)
class AlertSettings:
    """The threshold (alert at this many new of one kind on one source) and each source's switch."""

    threshold: int = DEFAULT_THRESHOLD
    sources: dict[str, bool] = field(default_factory=lambda: {n: True for n in registry.NAMES})

    def enabled(self, source: str) -> bool:
        return self.sources.get(source, True)


def _as_bool(value: object) -> bool:
    # QSettings' INI files give back "true"/"false" strings.
    return value if isinstance(value, bool) else str(value).strip().lower() not in ("false", "0", "no", "off")


def load_alert_settings() -> AlertSettings:
    """The saved choices; a value that makes no sense (a hand-edited file) falls back to the default."""
    s = settings()
    try:
        threshold = int(s.value("alerts/threshold", DEFAULT_THRESHOLD))
    except (TypeError, ValueError):
        threshold = DEFAULT_THRESHOLD
    if not 1 <= threshold <= THRESHOLD_MAX:
        threshold = DEFAULT_THRESHOLD
    return AlertSettings(threshold, {n: _as_bool(s.value(f"alerts/source/{n}", True)) for n in registry.NAMES})


def save_alert_settings(value: AlertSettings) -> None:
    s = settings()
    s.setValue("alerts/threshold", int(value.threshold))
    for name in registry.NAMES:
        s.setValue(f"alerts/source/{name}", bool(value.enabled(name)))
    s.sync()


def counts_of(h: Health) -> dict[str, int] | None:
    """A source's figures by kind (stuck left out where the source has no stuck state); None if unread."""
    if h.summary is None:
        return None
    out = {"failed": h.summary.failed, "duplicates": h.summary.duplicates}
    if "stuck" in registry.source(h.source).retryable_kinds:
        out["stuck"] = h.summary.stuck
    return out


def tooltip_text(latest: dict[str, dict[str, int] | None]) -> str:
    """The tray icon's tooltip: each watched source's figures of the last 24 hours."""
    lines = ["Notification Console: last 24 hours"]
    if not latest:
        lines.append("counting…")
    for name in registry.NAMES:
        if name not in latest:
            continue
        c = latest[name]
        title = SOURCE_TITLES.get(name, name)
        if c is None:
            lines.append(f"{title}: cannot be read now")
            continue
        failed = "failed" if "failed" in registry.source(name).retryable_kinds else "missed"
        parts = [f"{c['failed']:,} {failed}"]
        if "stuck" in c:
            parts.append(f"{c['stuck']:,} stuck")
        parts.append(f"{c['duplicates']:,} duplicates")
        lines.append(f"{title}: " + ", ".join(parts))
    return "\n".join(lines)


class AlertWatcher(QObject):
    """The tray icon and its messages, for one main window."""

    alerted = Signal(str, str)      # title, text: a message was shown

    def __init__(self, window, parent: QObject | None = None):
        super().__init__(parent or window)
        self.window = window
        self.ctx = window.ctx
        self.overview = window.pages["overview"]
        self.available = tray_available()
        self.settings = load_alert_settings()
        self.latest: dict[str, dict[str, int] | None] = {}
        self.seen: dict[str, dict[str, int]] = {}
        self.target: tuple[str, str] | None = None      # (source, kind) the last message opens
        self._last_read = 0.0
        self.tray: QSystemTrayIcon | None = None
        if self.available:
            self.tray = QSystemTrayIcon(icon("app"), self)
            self.tray.setToolTip(tooltip_text({}))
            menu = QMenu()
            menu.addAction("Open the console", self.raise_window)
            menu.addAction("Desktop alerts…", window.show_alerts)
            menu.addSeparator()
            menu.addAction(window.quit_action)
            self.menu = menu           # the tray does not own its menu
            self.tray.setContextMenu(menu)
            self.tray.messageClicked.connect(self.open_target)
            self.tray.activated.connect(self._activated)
            self.tray.show()
        window.monitor.checks_finished.connect(self.poll)
        self.overview.sig_loaded.connect(self._overview_loaded)
        self.ctx.workspace_ready.connect(self._workspace_ready)

    # Reading the figures ------------------------------------------------------------
    def _workspace_ready(self, _ws) -> None:
        self.latest.clear()
        self.seen.clear()
        self.target = None
        self._last_read = 0.0
        self._show_tooltip()

    def poll(self, _results: list | None = None) -> bool:
        """After a round of checks: read the figures in a task unless the Overview reads them itself."""
        ws = self.ctx.workspace
        if not self.available or ws is None or self.overview.health_timer.isActive():
            return False
        if time.monotonic() - self._last_read < MIN_READ_INTERVAL_S:
            return False
        sources = [s for s in registry.NAMES if ws.has(s)]
        if not sources:
            return False
        task = self.ctx.tasks.submit(read_health, ws, sources, key="overview-health",
                                     on_done=self.update, on_error=lambda _err: None)
        if task is not None:
            self._last_read = time.monotonic()
        return task is not None

    def _overview_loaded(self) -> None:
        ws = self.ctx.workspace
        if ws is None:
            return
        found = {s: card.health for s, card in self.overview.cards.items() if ws.has(s) and card.health is not None}
        if found:
            self._last_read = time.monotonic()
            self.update(found)

    # Deciding -------------------------------------------------------------------------
    def window_active(self) -> bool:
        """The admin is looking: a window of the console is the active one and the main one is not minimized."""
        return QApplication.activeWindow() is not None and not self.window.isMinimized()

    def update(self, figures: dict[str, Health]) -> None:
        """New figures: the tooltip, and a message for what rose past the threshold while in the background."""
        for source, h in figures.items():
            self.latest[source] = counts_of(h)
        self._show_tooltip()
        active = self.window_active()
        news: list[tuple[str, str, int]] = []
        for source in registry.NAMES:
            counts = self.latest.get(source) if source in figures else None
            if counts is None:
                continue
            seen = self.seen.setdefault(source, {})
            for kind in KINDS:
                if kind not in counts:
                    continue
                now, before = counts[kind], seen.get(kind)
                if before is None or active or now < before:      # first sight, looked at, or aged out of 24 h
                    seen[kind] = now
                elif now - before >= self.settings.threshold and self.settings.enabled(source):
                    news.append((source, kind, now - before))
                    seen[kind] = now
        if news and self.tray is not None:
            self._show(news)

    def _show(self, news: list[tuple[str, str, int]]) -> None:
        source, kind, n = news[0]
        title = f"{SOURCE_TITLES.get(source, source)}: {kind_words(source, kind, n)}"
        page = "Duplicates" if kind == "duplicates" else "Failed & Stuck"
        lines = [f"{SOURCE_TITLES.get(s, s)}: {kind_words(s, k, c)}" for s, k, c in news[1:]]
        lines.append(f"Click to open {page}, filtered to {SOURCE_TITLES.get(source, source)}.")
        text = "\n".join(lines)
        self.target = (source, kind)
        assert self.tray is not None
        self.tray.showMessage(title, text, QSystemTrayIcon.Warning, MESSAGE_MS)
        self.alerted.emit(title, text)

    def _show_tooltip(self) -> None:
        if self.tray is not None:
            self.tray.setToolTip(self.tooltip())

    def tooltip(self) -> str:
        return tooltip_text(self.latest)

    # Acting -----------------------------------------------------------------------------
    def raise_window(self) -> None:
        w = self.window
        if w.isMinimized():
            w.showNormal()
        w.show()
        w.raise_()
        w.activateWindow()

    def open_target(self) -> None:
        """The message was clicked: the window in front, on the page behind the number, filtered."""
        self.raise_window()
        if self.target is not None:
            source, kind = self.target
            self.overview.open_link(source, kind)     # the Overview's own links: the same filters

    def _activated(self, reason) -> None:
        if reason in (QSystemTrayIcon.Trigger, QSystemTrayIcon.DoubleClick):
            self.raise_window()

    def set_settings(self, value: AlertSettings) -> None:
        self.settings = value
        save_alert_settings(value)

    def close(self) -> None:
        if self.tray is not None:
            self.tray.hide()


class AlertsDialog(QDialog):
    """The threshold and each source's switch; says in one sentence why alerts are off, when they are."""

    sig_saved = Signal(object)      # AlertSettings

    def __init__(self, current: AlertSettings, available: bool, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("alertsDialog")
        self.setWindowTitle("Desktop alerts")
        self.setWindowIcon(icon("app"))
        self.setMinimumWidth(460)
        v = QVBoxLayout(self)
        v.setContentsMargins(20, 16, 20, 14)
        v.setSpacing(10)
        intro = QLabel("While the console is in the background, a desktop notification tells when new failures, "
                       "stuck items or duplicates appear in the last 24 hours; clicking it opens the list, "
                       "filtered. The tray icon's tooltip shows the counts.")
        intro.setObjectName("muted")
        intro.setWordWrap(True)
        v.addWidget(intro)
        self.unavailable = QLabel(UNAVAILABLE)
        self.unavailable.setObjectName("testResult")
        self.unavailable.setProperty("state", "down")
        self.unavailable.setWordWrap(True)
        self.unavailable.setVisible(not available)
        v.addWidget(self.unavailable)
        row = QHBoxLayout()
        lead = QLabel("Alert when at least")
        self.threshold = QSpinBox()
        self.threshold.setObjectName("alertThreshold")
        self.threshold.setRange(1, THRESHOLD_MAX)
        self.threshold.setValue(current.threshold)
        self.threshold.setAccessibleName("Alert threshold")
        lead.setBuddy(self.threshold)
        row.addWidget(lead)
        row.addWidget(self.threshold)
        row.addWidget(QLabel("new of one kind appear on a source"))
        row.addStretch(1)
        v.addLayout(row)
        self.switches: dict[str, QCheckBox] = {}
        for source in registry.SOURCES:
            failed = "failures" if "failed" in source.retryable_kinds else "missed emails"
            stuck = ", stuck items" if "stuck" in source.retryable_kinds else ""
            box = QCheckBox(f"{source.label}: {failed}{stuck} and duplicates")
            box.setObjectName(f"alert_{source.name}")
            box.setChecked(current.enabled(source.name))
            self.switches[source.name] = box
            v.addWidget(box)
        for w in [self.threshold, *self.switches.values()]:
            w.setEnabled(available)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Save | QDialogButtonBox.Cancel)
        self.buttons.button(QDialogButtonBox.Cancel).setObjectName("secondary")
        self.buttons.button(QDialogButtonBox.Save).setEnabled(available)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        v.addWidget(self.buttons)
        self.threshold.setFocus(Qt.OtherFocusReason)

    def value(self) -> AlertSettings:
        return AlertSettings(self.threshold.value(), {n: box.isChecked() for n, box in self.switches.items()})

    def save(self) -> None:
        self.sig_saved.emit(self.value())
        self.accept()
