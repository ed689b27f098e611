"""Connection checks of every configured source, run on workers and repeated."""
from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal

from app.registry import NAMES
from app.status import SourceStatus, check_source, configured_sources, describe_target

from .context import AppContext
from .tasks import TaskError

REFRESH_MS = 30_000


class SourceMonitor(QObject):
    """Checks each source on the task pool; a tick is skipped while one runs."""

    checks_started = Signal(list)          # names of the sources being checked
    source_checked = Signal(object)        # SourceStatus
    checks_finished = Signal(list)         # [SourceStatus], in source order

    def __init__(self, ctx: AppContext, parent: QObject | None = None, interval_ms: int = REFRESH_MS):
        super().__init__(parent)
        self.ctx = ctx
        self.latest: dict[str, SourceStatus] = {}
        self._pending: list[str] = []
        self._round: dict[str, SourceStatus] = {}
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.refresh)
        ctx.workspace_ready.connect(lambda _ws: (self.refresh(), self.timer.start()))

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

    def _check_failed(self, name: str, error: TaskError) -> None:
        source = self.ctx.workspace.config.sources[name]
        self._checked(SourceStatus(name=name, kind=source.kind, backend=source.scheme,
                                   target=describe_target(source), reachable=False,
                                   reason=error.message))

    def _checked(self, status: SourceStatus) -> None:
        self.latest[status.name] = status
        self._round[status.name] = status
        if status.name in self._pending:
            self._pending.remove(status.name)
        self.source_checked.emit(status)
        if not self._pending:
            order = [n for n in NAMES if n in self._round]
            self.checks_finished.emit([self._round[n] for n in order])
