"""Traffic in the background: the simulator's drivers, round after round, until stopped.

``run_simulation`` drives one batch and counts it; a console that should show
its lists moving needs traffic that keeps coming. ``TrafficRunner`` runs, on
its own thread, a *round* every ``interval`` seconds: for each configured
source a small batch of fresh events (the driver's ``prepare``), each
attempted ``ATTEMPTS_PER_EVENT`` times at once on a small thread pool, then
counted in the database (the driver's ``count``). After every round it hands
a ``TrafficReport`` — a plain, frozen dataclass, safe to pass to any thread —
to ``on_report``.

It writes through the same drivers (and so the same services) as the
``simulate`` command, on the caller's Workspace: the GUI and the runner share
engines and, for the demo, the one file-backed order store of the process.
It never raises out of its thread: a failed attempt is counted, a failed
round becomes the report's ``message``, and after ``MAX_FAILED_ROUNDS``
failed rounds in a row it stops by itself with that message.
"""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .. import registry
from ..errors import ConsoleError, PermissionDenied, UsageError
from ..schema_setup import require_schema
from ..services.actions import run_action
from ..services.roles import allowed
from ..sqlutil import with_retry
from . import MODES, SOURCES, load_driver, simulate_kind, simulate_refusal

DEFAULT_INTERVAL_S = 1.5
DEFAULT_EVENTS_PER_ROUND = 3
# SQLite has one writer at a time: a few concurrent attempts show the races
# without turning every write into a wait for the file lock.
DEFAULT_WORKERS = 3
MAX_FAILED_ROUNDS = 3
MAX_EVENTS_PER_ROUND = 200
MAX_WORKERS = 32


@dataclass(frozen=True)
class SourceTraffic:
    """What the runner has done to one source so far (all rounds together)."""

    source: str
    events: int = 0
    attempts: int = 0
    produced: int = 0           # emails / notifications the events produced, counted in the database
    duplicates: int = 0         # of those, the ones beyond one per event
    errors: int = 0             # attempts that failed (the seeds' races fail some in naive mode)


@dataclass(frozen=True)
class TrafficReport:
    mode: str
    rounds: int                 # rounds completed
    running: bool
    seconds: float
    sources: tuple[SourceTraffic, ...]
    message: str | None = None  # the last error, one sentence

    @property
    def events(self) -> int:
        return sum(s.events for s in self.sources)

    @property
    def produced(self) -> int:
        return sum(s.produced for s in self.sources)

    @property
    def duplicates(self) -> int:
        return sum(s.duplicates for s in self.sources)

    def source(self, name: str) -> SourceTraffic | None:
        return next((s for s in self.sources if s.source == name), None)

    def line(self) -> str:
        parts = ", ".join(f"{s.source} {s.events} events → {s.produced} produced, {s.duplicates} duplicates"
                          for s in self.sources)
        return f"{self.mode} round {self.rounds}: {parts}"


def _sentence(exc: BaseException) -> str:
    if isinstance(exc, ConsoleError):
        return exc.message
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class TrafficRunner:
    """Keeps producing traffic against ``workspace`` until ``stop()``.

    ``start()`` validates (role, mode, sources) and raises before any thread
    starts; ``run()`` is the loop itself, for a caller that brings its own
    worker thread. ``on_report`` is called on the runner's thread.
    """

    def __init__(self, workspace, mode: str = "guarded", *, sources: tuple[str, ...] | None = None,
                 events_per_round: int = DEFAULT_EVENTS_PER_ROUND, interval: float = DEFAULT_INTERVAL_S,
                 workers: int = DEFAULT_WORKERS, on_report: Callable[[TrafficReport], None] | None = None,
                 seed: int | None = None):
        self.workspace = workspace
        self.mode = mode
        self.sources = tuple(sources) if sources is not None else \
            tuple(s for s in SOURCES if workspace.has(s))
        self.events_per_round = events_per_round
        self.interval = interval
        self.workers = workers
        self.on_report = on_report
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._latest: TrafficReport | None = None
        self._totals = {s: SourceTraffic(s) for s in self.sources}
        self._rounds = 0
        self._running = False

    # Validation ------------------------------------------------------------
    def check(self) -> None:
        """Raise the operator's mistake as one sentence; touches no database."""
        role = self.workspace.role
        kind = simulate_kind(self.workspace.config, self.mode)
        if not allowed(role, kind):
            raise PermissionDenied(simulate_refusal(role, kind))
        if self.mode not in MODES:
            raise UsageError(f"Unknown mode '{self.mode}': choose naive or guarded.")
        if not self.sources:
            raise UsageError("No source is configured for the traffic simulator to drive.")
        for s in self.sources:
            if s not in SOURCES:
                raise registry.unknown_source(s)
            if not self.workspace.has(s):
                raise UsageError(f"The {s} source is not configured, so the simulator cannot drive it.")
        if isinstance(self.events_per_round, bool) or not isinstance(self.events_per_round, int) \
                or not 1 <= self.events_per_round <= MAX_EVENTS_PER_ROUND:
            raise UsageError(f"Events per round must be a whole number from 1 to {MAX_EVENTS_PER_ROUND}.")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or not 1 <= self.workers <= MAX_WORKERS:
            raise UsageError(f"Simulator workers must be a whole number from 1 to {MAX_WORKERS}.")
        if not self.interval >= 0:
            raise UsageError("The interval between rounds cannot be negative.")

    # Control -----------------------------------------------------------------
    def start(self) -> None:
        """Validate, then run the loop on a daemon thread of its own."""
        self.check()
        if self._thread is not None:
            raise UsageError("This traffic simulator has already been started.")
        self._thread = threading.Thread(target=self.run, name="traffic-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Ask the loop to stop and wait up to ``timeout`` s; True once it has."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return not self._running

    def request_stop(self) -> None:
        """Ask the loop to stop without waiting (for a GUI thread)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self._running

    @property
    def latest(self) -> TrafficReport | None:
        with self._lock:
            return self._latest

    # The loop --------------------------------------------------------------------
    def run(self) -> TrafficReport:
        """Produce rounds until stopped; returns (and reports) the final report. Never raises."""
        self._running = True
        started = time.monotonic()
        try:
            self.check()
            drivers = {s: load_driver(s) for s in self.sources}
            for s in self.sources:
                require_schema(self.workspace, s)
        except Exception as exc:  # nothing ran: the reason is the whole report
            self._running = False
            return self._report(started, _sentence(exc), running=False)
        # The whole run is one audited action: who ran traffic into which
        # databases, in which mode, and what it produced.
        holder: dict = {}

        def body(ctx) -> dict:
            holder["report"] = report = self._loop(drivers, started, ctx)
            return {"mode": self.mode, "rounds": report.rounds, "events": report.events,
                    "produced": report.produced, "duplicates": report.duplicates,
                    "message": report.message}
        try:
            run_action(self.workspace, kind=simulate_kind(self.workspace.config, self.mode),
                       source=self.sources[0], action_id=None, body=body,
                       params={"mode": self.mode, "background": True, "sources": list(self.sources)})
        except Exception as exc:  # the audit could not be written: say so, the run itself is over
            if "report" not in holder:
                self._running = False
                return self._report(started, _sentence(exc), running=False)
        self._running = False
        return holder["report"]

    def _loop(self, drivers: dict, started: float, ctx) -> TrafficReport:
        message: str | None = None
        failed_rounds = 0
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="traffic") as pool:
            while not self._stop.is_set():
                round_started = time.monotonic()
                try:
                    message = self._round(pool, drivers)
                    failed_rounds = 0
                except Exception as exc:  # a round that could not run is reported, not raised
                    message = _sentence(exc)
                    failed_rounds += 1
                if self._stop.is_set():
                    break  # a round cut short is counted in the totals, not in ``rounds``
                self._rounds += 1
                if failed_rounds >= MAX_FAILED_ROUNDS:
                    message = f"The simulator stopped after {failed_rounds} failed rounds: {message}"
                    break
                self._report(started, message, running=True)
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - round_started)))
        self._running = False
        return self._report(started, message, running=False)

    def _report(self, started: float, message: str | None, running: bool) -> TrafficReport:
        report = TrafficReport(mode=self.mode, rounds=self._rounds, running=running,
                               seconds=time.monotonic() - started,
                               sources=tuple(self._totals[s] for s in self.sources), message=message)
        with self._lock:
            self._latest = report
        if self.on_report is not None:
            try:
                self.on_report(report)
            except Exception:  # a listener's problem never stops the traffic
                pass
        return report

    def _round(self, pool: ThreadPoolExecutor, drivers: dict) -> str | None:
        """One batch per source; returns the last attempt error of the round, if any."""
        last_error = None
        for source in self.sources:
            if self._stop.is_set():
                break
            driver = drivers[source]
            sql = registry.source(source).is_sql
            plan = self._sql(sql, lambda driver=driver: driver.prepare(self.workspace, self.events_per_round,
                                                                       self._rng.randrange(2 ** 31)))
            tasks = [(e, a) for e in range(self.events_per_round) for a in range(driver.ATTEMPTS_PER_EVENT)]
            futures = [pool.submit(self._attempt, driver, plan, e, a, sql) for e, a in tasks]
            attempts = errors = 0
            for f in futures:
                ran, error = f.result()
                attempts += ran
                if error is not None:
                    errors += 1
                    last_error = f"{source}: {error}"
            produced, duplicates = self._sql(sql, lambda driver=driver, plan=plan: driver.count(self.workspace, plan))
            t = self._totals[source]
            self._totals[source] = SourceTraffic(
                source, events=t.events + self.events_per_round, attempts=t.attempts + attempts,
                produced=t.produced + produced, duplicates=t.duplicates + duplicates, errors=t.errors + errors)
        return last_error

    def _attempt(self, driver, plan, event: int, attempt: int, sql: bool) -> tuple[bool, str | None]:
        """(ran, error sentence or None)."""
        if self._stop.is_set():
            return False, None  # stopping: the rest of the batch is left undone, and counted as it stands
        try:
            self._sql(sql, lambda: driver.run_attempt(self.workspace, plan, event, attempt, self.mode))
        except Exception as exc:  # one attempt's failure is counted, never raised
            return True, _sentence(exc)
        return True, None

    @staticmethod
    def _sql(sql: bool, fn):
        # SQLite answers a writer that lost the race for the file lock with
        # "database is locked"; retry it (and MySQL deadlocks) with backoff.
        return with_retry(fn) if sql else fn()
