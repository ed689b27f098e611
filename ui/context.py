"""What every page shares: the workspace, the task manager and the banner channel."""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, Signal

from .tasks import TaskError, TaskManager


class AppContext(QObject):
    """Opens the workspace off the GUI thread and hands it to whoever listens.

    Pages receive the context in their constructor; they start their own
    queries through ``ctx.tasks`` and report problems through ``ctx.notify``.
    """

    workspace_ready = Signal(object)        # app.bootstrap.Workspace
    workspace_failed = Signal(object)       # TaskError
    notice = Signal(str, str)               # level (error|warning|info), one sentence

    def __init__(self, parent: QObject | None = None, tasks: TaskManager | None = None):
        super().__init__(parent)
        self.tasks = tasks or TaskManager(self)
        self.workspace = None
        self.error: TaskError | None = None
        self.tasks.task_failed.connect(lambda err: self.notify(err.message, "error"))

    @property
    def role(self) -> str | None:
        return self.workspace.role if self.workspace is not None else None

    def open_workspace(self, opener: Callable[[], object]) -> None:
        """Build the workspace with ``opener`` (may create the demo) on a worker."""
        self.tasks.submit(opener, on_done=self._opened, on_error=self._failed, key="workspace")

    def _opened(self, workspace) -> None:
        self.workspace = workspace
        self.error = None
        self.workspace_ready.emit(workspace)

    def _failed(self, error: TaskError) -> None:
        self.error = error
        self.notify(error.message, "error")
        self.workspace_failed.emit(error)

    def notify(self, text: str, level: str = "error") -> None:
        self.notice.emit(level, text)

    def close(self) -> None:
        self.tasks.wait(5000)
        if self.workspace is not None:
            self.workspace.close()
