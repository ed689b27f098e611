"""A stall probe: how late the GUI thread's event loop answers a short timer.

A timer asks to fire every ``interval_ms``; when the GUI thread is busy (a
query in a slot, a model reset over many rows, a long repaint) it fires
late. The lateness beyond the interval is the stall a person feels as a
frozen window (``max_stall_ms``). Tests and ``bench/ui.py`` start a probe,
drive the window, and read it.

Lateness also counts time the operating system gave to other processes
(on two cores with the database server and a bulk action's child process
at full speed, the window is sometimes not scheduled for tens of ms), which
no code in the window can change. ``max_busy_ms`` is the GUI thread's own
processor time between two ticks: the work the window did on its thread
without answering — what the window's code owns. For the worst stall the
probe also keeps what the whole process did meanwhile (``worst``: the GUI
thread's and every thread's processor time): little of either means the
process was not scheduled or waited on the operating system; much of the
process's but little of the GUI thread's means another thread of the
window held the interpreter.
"""
from __future__ import annotations

import time

from PySide6.QtCore import QObject, Qt, QTimer


class StallProbe(QObject):
    def __init__(self, interval_ms: int = 5, parent: QObject | None = None):
        super().__init__(parent)
        self.interval_ms = interval_ms
        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self._last: float | None = None
        self._cpu: float | None = None
        self._proc: float | None = None
        self.worst: tuple[float, float, float] = (0.0, 0.0, 0.0)   # (stall, GUI thread, whole process) ms
        self.max_stall_ms = 0.0
        self.max_busy_ms = 0.0
        self.ticks = 0

    def start(self) -> StallProbe:
        self.max_stall_ms = 0.0
        self.max_busy_ms = 0.0
        self.ticks = 0
        self.worst = (0.0, 0.0, 0.0)
        self._last = time.perf_counter()
        self._cpu = time.thread_time()
        self._proc = time.process_time()
        self.timer.start()
        return self

    def stop(self) -> float:
        self.timer.stop()
        return self.max_stall_ms

    def _tick(self) -> None:
        now = time.perf_counter()
        cpu = time.thread_time()
        proc = time.process_time()
        if self._last is not None and self._cpu is not None and self._proc is not None:
            late = (now - self._last) * 1000.0 - self.interval_ms
            busy = (cpu - self._cpu) * 1000.0
            if late > self.max_stall_ms:
                self.worst = (late, busy, (proc - self._proc) * 1000.0)
            self.max_stall_ms = max(self.max_stall_ms, late)
            self.max_busy_ms = max(self.max_busy_ms, busy)
        self._last = now
        self._cpu = cpu
        self._proc = proc
        self.ticks += 1
