"""What every page shares: the workspace, the task manager and the banner channel."""
from __future__ import annotations

import gc
from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer, Signal

from app.grants import lower_role

from .tasks import TaskError, TaskManager

# How long closing the window may hold the GUI thread for tasks to finish.
CLOSE_WAIT_MS = 100
# How often a deferred release checks whether the last task has finished.
RELEASE_POLL_MS = 50


class AppContext(QObject):
    """Opens the workspace off the GUI thread and hands it to whoever listens.

    Pages receive the context in their constructor; they start their own
    queries through ``ctx.tasks`` and report problems through ``ctx.notify``.
    """

    workspace_ready = Signal(object)        # app.bootstrap.Workspace
    workspace_failed = Signal(object)       # TaskError
    notice = Signal(str, str)               # level (error|warning|info), one sentence
    notice_detail = Signal(str, str, str)   # the same, with the detail behind it (a traceback, or "")
    released = Signal()                     # the workspace's connections were let go after close()

    def __init__(self, parent: QObject | None = None, tasks: TaskManager | None = None):
        super().__init__(parent)
        self.tasks = tasks or TaskManager(self)
        self.workspace = None
        self.error: TaskError | None = None
        self.closing = False
        self._release_timer: QTimer | None = None
        self._retiring: list = []
        self.database_role: str | None = None   # what the database users allow, from the latest checks
        self._retire_timer: QTimer | None = None
        self.tasks.task_failed.connect(lambda err: self.notify(err.message, "error", err.detail))

    @property
    def role(self) -> str | None:
        """The effective role: the configured one, lowered to what the database users may do once the
        connection checks have read their privileges. Buttons follow it; the service layer checks too."""
        if self.workspace is None:
            return None
        if self.database_role is None:
            return self.workspace.role
        return lower_role(self.workspace.role, self.database_role)

    @property
    def reader(self):
        """Where lists, counts and charts read: the read replicas where configured, else the workspace.
        Actions take ``workspace`` (the primaries)."""
        return self.workspace.reader() if self.workspace is not None else None

    def open_workspace(self, opener: Callable[[], object]) -> None:
        """Build the workspace with ``opener`` (may create the demo) on a worker."""
        self.tasks.submit(opener, on_done=self._opened, on_error=self._failed, key="workspace")

    def replace_workspace(self, opener: Callable[[], object]) -> None:
        """Open another workspace (new connections saved); the old one is let go once no task uses it."""
        old, self.workspace = self.workspace, None
        self.error = None
        if old is not None:
            self._retiring.append(old)
            if self._retire_timer is None:
                self._retire_timer = QTimer(self)
                self._retire_timer.setInterval(RELEASE_POLL_MS)
                self._retire_timer.timeout.connect(self._retire_when_idle)
            self._retire_timer.start()
        self.open_workspace(opener)

    def _retire_when_idle(self) -> None:
        if self.tasks.busy:
            return
        self._retire_timer.stop()
        while self._retiring:
            self._retiring.pop().close()

    def _opened(self, workspace) -> None:
        # Everything made so far (Qt wrappers, SQLAlchemy's and the driver's
        # modules, the window) lives as long as the window. Frozen, the
        # collector's full passes skip it: unfrozen, a full pass over it held
        # the GUI thread 80-95 ms whenever a list or a retry made many rows.
        gc.freeze()
        self.workspace = workspace
        self.database_role = None
        self.error = None
        self.workspace_ready.emit(workspace)

    def _failed(self, error: TaskError) -> None:
        self.error = error
        self.notify(error.message, "error", error.detail)
        self.workspace_failed.emit(error)

    def notify(self, text: str, level: str = "error", detail: str | None = None) -> None:
        """A banner: one sentence; ``detail`` (else the failed task's behind that sentence) goes to the
        log file and "Copy details"."""
        if detail is None:
            detail = self.tasks.detail_for(text) if level == "error" else ""
        self.notice_detail.emit(level, text, detail)
        self.notice.emit(level, text)

    def close(self) -> None:
        """Stop new work; let go of the databases once no task uses them.

        New tasks are refused and queued ones dropped. The GUI thread waits at
        most ``CLOSE_WAIT_MS`` for running tasks; if one still runs (a slow
        query), the workspace is closed when the pool becomes idle — never
        under a running task. If the application exits first, the process
        exit lets go of the connections (order-store writes checkpoint
        themselves as they happen).
        """
        if self.closing:
            return
        self.closing = True
        self.tasks.stop_accepting()
        if self.tasks.wait(CLOSE_WAIT_MS):
            self._release()
            return
        self._release_timer = QTimer(self)
        self._release_timer.setInterval(RELEASE_POLL_MS)
        self._release_timer.timeout.connect(self._release_when_idle)
        self._release_timer.start()

    def _release_when_idle(self) -> None:
        if self.tasks.busy:
            return
        self._release_timer.stop()
        self._release()

    def _release(self) -> None:
        while self._retiring:
            self._retiring.pop().close()
        if self.workspace is not None:
            self.workspace.close()
        self.released.emit()
