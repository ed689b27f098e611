"""Background work for the GUI: every database or network call runs here.

A ``Task`` wraps a plain function; it runs on the manager's ``QThreadPool``,
catches its own exception and reports through signals, so the GUI thread
only ever receives plain values (dataclasses, lists, dicts) or a ``TaskError``.
The ``TaskManager`` caps threads, keeps a reference to every running task
(a task collected mid-flight would take its signals with it), and can skip a
poll while the previous one with the same key still runs.
"""
from __future__ import annotations

import itertools
import logging
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from app.errors import ConsoleError

log = logging.getLogger(__name__)
DETAILS_KEPT = 50


@dataclass(frozen=True)
class TaskError:
    """What went wrong, as one sentence for a banner."""

    message: str
    kind: str = "error"           # the ConsoleError class name, or "unexpected"
    exit_code: int = 1
    # The traceback behind the sentence: for the log file and "Copy details", never the banner.
    detail: str = field(default="", compare=False, repr=False)


class _TaskSignals(QObject):
    # (token, payload): the token tells the manager which task spoke.
    finished = Signal(int, object)
    failed = Signal(int, object)


class Task(QRunnable):
    def __init__(self, token: int, fn: Callable[..., Any], args: tuple, kwargs: dict, key: str | None):
        super().__init__()
        self.setAutoDelete(False)   # Python owns it: the manager drops it when it reports
        self.token = token
        self.key = key
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.signals = _TaskSignals()
        self.on_done: Callable[[Any], None] | None = None
        self.on_error: Callable[[TaskError], None] | None = None

    def run(self) -> None:  # worker thread
        try:
            result = self.fn(*self.args, **self.kwargs)
        except ConsoleError as exc:
            detail = traceback.format_exc()
            log.info("task %s: %s", self.key or getattr(self.fn, "__name__", self.fn), exc.message)
            self.signals.failed.emit(self.token, TaskError(exc.message, type(exc).__name__, exc.exit_code, detail))
        except Exception as exc:  # a worker never dies silently: the GUI gets one sentence
            detail = traceback.format_exc()
            log.warning("task %s failed\n%s", self.key or getattr(self.fn, "__name__", self.fn), detail)
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.signals.failed.emit(self.token, TaskError(f"Unexpected error: {text}.", "unexpected", 1, detail))
        else:
            try:
                self.signals.finished.emit(self.token, result)
            except RuntimeError:  # the window closed while this ran: nobody is left to tell
                log.debug("task %s finished after its receiver was deleted", self.key or self.fn)


class TaskManager(QObject):
    """Runs tasks on a capped pool and delivers their outcome on the GUI thread."""

    task_failed = Signal(object)          # every TaskError, for a window-wide banner
    idle = Signal()                       # no task is running any more

    def __init__(self, parent: QObject | None = None, max_threads: int = 4):
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self._running: dict[int, Task] = {}
        self._tokens = itertools.count(1)
        self.accepting = True
        # The detail behind the latest failures' sentences, for whoever shows one of them.
        self._details: OrderedDict[str, str] = OrderedDict()

    def submit(self, fn: Callable[..., Any], *args, on_done: Callable[[Any], None] | None = None,
               on_error: Callable[[TaskError], None] | None = None, key: str | None = None,
               **kwargs) -> Task | None:
        """Run ``fn(*args, **kwargs)`` off the GUI thread.

        With ``key``, a task is skipped (returns None) while another with the
        same key still runs: a polling timer never piles up work. After
        ``stop_accepting`` every task is skipped.
        """
        if not self.accepting:
            return None
        if key is not None and self.is_running(key):
            return None
        task = Task(next(self._tokens), fn, args, kwargs, key)
        task.on_done, task.on_error = on_done, on_error
        task.signals.finished.connect(self._finished)
        task.signals.failed.connect(self._failed)
        self._running[task.token] = task
        self.pool.start(task)
        return task

    def is_running(self, key: str) -> bool:
        return any(t.key == key for t in self._running.values())

    @property
    def running(self) -> int:
        return len(self._running)

    def stop_accepting(self) -> None:
        """Shutdown: refuse new tasks and drop the queued ones that have not started."""
        self.accepting = False
        self.pool.clear()

    @property
    def busy(self) -> bool:
        """A task is running on the pool (queued ones count only until ``stop_accepting``)."""
        return self.pool.activeThreadCount() > 0

    def wait(self, msecs: int = 10000) -> bool:
        """Block until the pool drains (shutdown only)."""
        return self.pool.waitForDone(msecs)

    @Slot(int, object)
    def _finished(self, token: int, result: object) -> None:
        task = self._running.pop(token, None)
        if task is None:
            return
        try:
            if task.on_done is not None:
                task.on_done(result)
        except ConsoleError as exc:
            self.task_failed.emit(TaskError(exc.message, type(exc).__name__, exc.exit_code))
        finally:
            self._maybe_idle()

    def detail_for(self, text: str) -> str:
        """The detail of the latest failure whose sentence is (or is part of) ``text``; "" if none."""
        for message, detail in reversed(self._details.items()):
            if message and message in text:
                return detail
        return ""

    @Slot(int, object)
    def _failed(self, token: int, error: object) -> None:
        task = self._running.pop(token, None)
        if task is None:
            return
        if isinstance(error, TaskError) and error.detail:
            self._details.pop(error.message, None)
            self._details[error.message] = error.detail
            while len(self._details) > DETAILS_KEPT:
                self._details.popitem(last=False)
        try:
            if task.on_error is not None:
                task.on_error(error)
            else:
                self.task_failed.emit(error)
        finally:
            self._maybe_idle()

    def _maybe_idle(self) -> None:
        if not self._running:
            self.idle.emit()
