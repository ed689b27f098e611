"""Connection checks of every configured source, run on workers and repeated.

A source that drops (server down, network gone, its connection killed) is
noticed by the next round or at once, when a task fails with a sentence
naming it; from then on that source alone is checked again with backoff
(1 s, 2 s, 4 s … 30 s, with jitter) until it answers. The other sources and
the pages on them carry on; live lists resume from their cursors.
"""
from __future__ import annotations

import random

from PySide6.QtCore import QObject, QTimer, Signal

from app.registry import NAMES
from app.status import SourceStatus, check_source, configured_sources, describe_target

from .context import AppContext
from .tasks import TaskError

REFRESH_MS = 30_000
# Reconnect attempts of a dropped source: the first after 1 s, doubling up to 30 s, ±20 % jitter.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
BACKOFF_JITTER = 0.2


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds before reconnect attempt ``attempt`` (0-based)."""
    base = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** attempt)
    return base * (1 + BACKOFF_JITTER * ((rng or random).random() * 2 - 1))


def source_named(message: str) -> str | None:
    """The source a sentence is about ("The cart database cannot be reached: …"), if any."""
    for name in NAMES:
        if f"The {name} database" in message or f"The {name} read replica" in message:
            return name
    return None


class SourceMonitor(QObject):
    """Checks each source on the task pool; a tick is skipped while one runs."""

    checks_started = Signal(list)          # names of the sources being checked
    source_checked = Signal(object)        # SourceStatus
    checks_finished = Signal(list)         # [SourceStatus], in source order
    source_down = Signal(str, str, float)  # name, the sentence why, seconds to the next attempt
    source_back = Signal(str)              # a dropped source answers again

    def __init__(self, ctx: AppContext, parent: QObject | None = None, interval_ms: int = REFRESH_MS):
        super().__init__(parent)
        self.ctx = ctx
        self.latest: dict[str, SourceStatus] = {}
        self._pending: list[str] = []
        self._round: dict[str, SourceStatus] = {}
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.refresh)
        ctx.workspace_ready.connect(self._workspace_ready)
        ctx.notice_detail.connect(self._noticed)
        self.down: dict[str, int] = {}          # dropped source → reconnect attempts so far
        self.retry_timers: dict[str, QTimer] = {}

    def _workspace_ready(self, _ws) -> None:
        for timer in self.retry_timers.values():
            timer.stop()
        self.down.clear()
        self.refresh()
        self.timer.start()

    def _noticed(self, level: str, text: str, _detail: str) -> None:
        """A task failed with a sentence naming a source: check that source now, not in 30 s."""
        name = source_named(text)
        ws = self.ctx.workspace
        if level == "info" or name is None or ws is None or not ws.has(name) or name in self.down:
            return
        self.check_one(name)

    def check_one(self, name: str) -> bool:
        """Check one source outside the rounds (a reconnect attempt); False if a check of it runs."""
        ws = self.ctx.workspace
        if ws is None or not ws.has(name) or name in self._pending:
            return False
        task = self.ctx.tasks.submit(check_source, ws, name, key=f"status:{name}",
                                     on_done=self._single_checked,
                                     on_error=lambda err, n=name: self._check_failed(n, err, single=True))
        return task is not None

    def _single_checked(self, status: SourceStatus) -> None:
        self.latest[status.name] = status
        self.source_checked.emit(status)
        self._track(status)

    def _track(self, status: SourceStatus) -> None:
        """Down: the next attempt after the backoff; up again: tell, and stop trying."""
        name = status.name
        if status.reachable and status.replica_reachable is not False:
            if name in self.down:
                del self.down[name]
                self.retry_timers[name].stop()
                self.source_back.emit(name)
            return
        attempt = self.down.get(name, 0)
        self.down[name] = attempt + 1
        delay = backoff_delay(attempt)
        timer = self.retry_timers.get(name)
        if timer is None:
            timer = self.retry_timers[name] = QTimer(self)
            timer.setSingleShot(True)
            timer.timeout.connect(lambda n=name: self._attempt(n))
        timer.start(int(delay * 1000))
        self.source_down.emit(name, status.reason or status.replica_reason or "", delay)

    def _attempt(self, name: str) -> None:
        if name in self.down and not self.check_one(name):
            self.retry_timers[name].start(int(BACKOFF_FIRST_S * 1000))   # a round's check of it runs

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def refresh(self) -> bool:
        """Start a round of checks; False when one is still running or nothing is open."""
        ws = self.ctx.workspace
        if ws is None or self._pending:
            return False
        names = configured_sources(ws)
        self._pending = list(names)
        self._round = {}
        self.checks_started.emit(list(names))
        if not names:
            self.checks_finished.emit([])
            return True
        for name in names:
            self.ctx.tasks.submit(check_source, ws, name, key=f"status:{name}",
                                  on_done=self._checked,
                                  on_error=lambda err, n=name: self._check_failed(n, err))
        return True

    def _check_failed(self, name: str, error: TaskError, single: bool = False) -> None:
        if self.ctx.workspace is None:
            return
        source = self.ctx.workspace.config.sources[name]
        status = SourceStatus(name=name, kind=source.kind, backend=source.scheme,
                              target=describe_target(source), reachable=False, reason=error.message)
        (self._single_checked if single else self._checked)(status)

    def _checked(self, status: SourceStatus) -> None:
        self._track(status)
        self.latest[status.name] = status
        self._round[status.name] = status
        if status.name in self._pending:
            self._pending.remove(status.name)
        self.source_checked.emit(status)
        if not self._pending:
            order = [n for n in NAMES if n in self._round]
            self.checks_finished.emit([self._round[n] for n in order])
