"""Closing the window: the GUI thread is not held, and no task loses its databases mid-flight."""
from __future__ import annotations

import threading
import time

from ui.context import AppContext


class _Workspace:
    """Stands for app.bootstrap.Workspace: records when its connections are let go."""

    role = "admin"

    def __init__(self, running: threading.Event):
        self.running = running
        self.closed_while_running: bool | None = None

    def close(self) -> None:
        self.closed_while_running = self.running.is_set()


def _context(qtbot):
    ctx = AppContext()
    running = threading.Event()
    ctx.workspace = _Workspace(running)
    return ctx, running


def test_close_with_a_running_task_returns_at_once_and_releases_after_it(qtbot):
    ctx, running = _context(qtbot)
    release = threading.Event()
    done = []

    def slow_query():
        running.set()
        release.wait(10)
        running.clear()
        return "rows"
    ctx.tasks.submit(slow_query, on_done=done.append)
    assert running.wait(5)
    started = time.monotonic()
    ctx.close()
    assert time.monotonic() - started < 0.5                 # the GUI thread is not held
    assert ctx.workspace.closed_while_running is None       # not pulled from under the task
    with qtbot.waitSignal(ctx.released, timeout=5000):
        release.set()
    assert ctx.workspace.closed_while_running is False
    qtbot.waitUntil(lambda: done == ["rows"], timeout=2000)


def test_close_refuses_new_tasks_and_drops_queued_ones(qtbot):
    ctx, running = _context(qtbot)
    ctx.tasks.pool.setMaxThreadCount(1)
    release = threading.Event()
    ran = []

    def blocker():
        running.set()
        release.wait(10)
        running.clear()
    ctx.tasks.submit(blocker)
    assert running.wait(5)
    ctx.tasks.submit(ran.append, "queued")                  # waits for the only thread
    ctx.close()
    assert ctx.tasks.submit(ran.append, "after close") is None
    with qtbot.waitSignal(ctx.released, timeout=5000):
        release.set()
    assert ran == [] and ctx.workspace.closed_while_running is False


def test_close_when_idle_releases_at_once_and_only_once(qtbot):
    ctx, _ = _context(qtbot)
    closes = []
    ctx.workspace.close = lambda: closes.append(1)
    with qtbot.waitSignal(ctx.released, timeout=1000):
        ctx.close()
    ctx.close()
    assert closes == [1]
