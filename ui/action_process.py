"""Bulk actions in a process of their own, so the window never waits for the interpreter lock.

A 10,000-item retry keeps several threads busy in Python (PyMySQL,
SQLAlchemy). Run as threads of the window's process they hold the
interpreter lock most of the time, and every cell the table paints is a
Python call that waits for it: the window froze for seconds. In a child
process the action has its own interpreter; the window's thread that waits
for it blocks in C (the lock free), relays progress to the GUI thread and
returns the outcome as plain values.

The child opens its own workspace from the same configuration (its own
connections; passwords from the environment or the keyring as usual) and
runs a function of the service layer. Cancel is a process-shared event the
action checks between chunks. The order store of the demo is a file one
process owns, so an action on the order store runs in the window's process
(``run_here``: the same action by name): it counts among the running actions
all the same, so closing the window asks first and waits for its next safe
point.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from app.errors import ConsoleError, OperationFailed

# How often the waiting thread looks whether the child died without a word.
POLL_SECONDS = 0.5
CHILD_NICENESS = 10


def _retry_plan(workspace, *args, progress, cancel, **kwargs):
    from app.services.retry import retry_plan
    return retry_plan(workspace, *args, progress=progress, cancel=cancel, **kwargs)


def _count_matching(workspace, filters, *, progress, cancel):
    from app.services.retry import retryable_snapshot
    return retryable_snapshot(workspace, filters.get("sources"), kind=filters.get("kind"),
                              filter_text=filters.get("text"))


def _undo(workspace, target, *, progress, cancel):
    from app.services.cleanup import undo
    return undo(workspace, target)


def _cleanup(workspace, source, keep_ids, *, progress, cancel):
    from app.services.cleanup import cleanup
    return cleanup(workspace, source, dry_run=False, keep_ids=keep_ids)


# What a child may run, by name (a spawned child imports it, never a Qt module).
ACTIONS: dict[str, Callable[..., Any]] = {"retry_plan": _retry_plan, "count_matching": _count_matching,
                                        "undo": _undo, "cleanup": _cleanup}


def _child(config, name: str, args: tuple, kwargs: dict, out, cancel) -> None:  # runs in the child process
    from app.bootstrap import Workspace
    # Background work yields the processor to the window a person is using (two cores and a
    # database server on them: without this the window waited for the scheduler 80 ms at a time).
    if hasattr(os, "nice"):
        os.nice(CHILD_NICENESS)
    workspace = Workspace(config=config)
    try:
        result = ACTIONS[name](workspace, *args, progress=lambda d, t: out.put(("progress", d, t)),
                               cancel=cancel.is_set, **kwargs)
        out.put(("done", result))
    except ConsoleError as exc:
        out.put(("error", exc.message, type(exc).__name__, exc.exit_code))
    except Exception as exc:  # noqa: BLE001 - the window gets one sentence, never a traceback
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        out.put(("error", f"Unexpected error: {text}.", "unexpected", 1))
    finally:
        workspace.close()


class _ChildFailed(ConsoleError):
    def __init__(self, message: str, kind: str, exit_code: int):
        super().__init__(message)
        self.kind = kind
        self.exit_code = exit_code


# The actions running now, so that closing the window can ask first and let them reach a safe point.
_RUNNING: dict[int, tuple[ActionProcess, str]] = {}
_RUNNING_LOCK = threading.Lock()


ACTION_WORDS = {"retry_plan": "retry", "count_matching": "count of the matching items", "undo": "undo",
                "cleanup": "cleanup"}


def running_actions() -> list[str]:
    """What runs now, in words ("retry", "cleanup", ...)."""
    with _RUNNING_LOCK:
        return [ACTION_WORDS.get(name, name.replace("_", " ")) for _proc, name in _RUNNING.values()]


def cancel_running() -> None:
    """Ask every running action to stop at its next safe point (a retry: after the items in hand)."""
    with _RUNNING_LOCK:
        procs = [proc for proc, _name in _RUNNING.values()]
    for proc in procs:
        proc.cancel()


class ActionProcess:
    """One action in a child process; ``run`` blocks (call it from a task), ``cancel`` from anywhere."""

    def __init__(self) -> None:
        self._ctx = mp.get_context("spawn")   # never fork a process that runs Qt threads
        self._cancel = self._ctx.Event()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @contextmanager
    def _running(self, name: str) -> Iterator[None]:
        """Counted among the running actions while inside: closing the window asks first."""
        with _RUNNING_LOCK:
            _RUNNING[id(self)] = (self, name)
        try:
            yield
        finally:
            with _RUNNING_LOCK:
                _RUNNING.pop(id(self), None)

    def run_here(self, workspace, name: str, *args, progress: Callable[[int, int], None] | None = None,
                 **kwargs) -> Any:
        """Action ``name`` in this process, on ``workspace`` (the order store's: its demo file belongs to
        one process); ``cancel`` reaches it as it does a child's, between items."""
        with self._running(name):
            return ACTIONS[name](workspace, *args, progress=progress or (lambda _d, _t: None),
                                 cancel=lambda: self.cancelled, **kwargs)

    def run(self, config, name: str, *args, progress: Callable[[int, int], None] | None = None,
            **kwargs) -> Any:
        out = self._ctx.Queue()
        child = self._ctx.Process(target=_child, args=(config, name, args, kwargs, out, self._cancel),
                                  name=f"nc-{name}", daemon=True)
        child.start()
        try:
            with self._running(name):
                while True:
                    try:
                        msg = out.get(timeout=POLL_SECONDS)
                    except queue_mod.Empty:
                        if not child.is_alive():
                            raise OperationFailed(f"The {name.replace('_', ' ')} stopped without a result "
                                                  f"(exit code {child.exitcode}); the audit log shows what it did.") \
                                from None
                        continue
                    if msg[0] == "progress":
                        if progress is not None:
                            progress(msg[1], msg[2])
                    elif msg[0] == "done":
                        return msg[1]
                    else:
                        raise _ChildFailed(msg[1], msg[2], msg[3])
        finally:
            child.join(timeout=10)
            if child.is_alive():
                child.terminate()
            out.close()
