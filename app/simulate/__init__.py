"""The traffic simulator: concurrent producers against the configured databases.

Each source has a driver module ``app.simulate.<source>`` (dispatch, cart,
orders) with::

    ATTEMPTS_PER_EVENT: int
    prepare(workspace, events, seed) -> dict          # picklable plan; creates the rows events need
    run_attempt(workspace, plan, event, attempt, mode) -> None
    count(workspace, plan) -> (produced, duplicates)

``run_simulation`` builds the (event, attempt) task list with each event's
attempts adjacent — so the attempts of one event hit the database at the same
moment, which is what a double-submitted request or a retry storm looks like
— runs it on ``workers`` threads (spread over ``processes`` spawned processes,
each with its own Workspace built from the Config), and counts the outcome in
the database. ``naive`` reproduces each seed's race, ``guarded`` runs the
production paths of ``app.services``.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from .. import registry
from ..bootstrap import Workspace
from ..config import Config
from ..errors import OperationFailed, UsageError
from ..schema_setup import require_schema
from ..services.actions import run_action
from ..services.roles import allowed, refuse
from ..sources import sql_engine
from . import cart as cart_driver
from . import dispatch as dispatch_driver
from . import orders as orders_driver

# One driver module per source (prepare, attempts, count), in the order traffic runs them.
DRIVERS = {d.SOURCE: d for d in (dispatch_driver, cart_driver, orders_driver)}
SOURCES = tuple(DRIVERS)
MODES = ("naive", "guarded")
WRITER_ROLES = ("operator", "admin")
MAX_WORKERS = 128
MAX_EVENTS = 100_000
MAX_PROCESSES = 16
START_TIMEOUT_S = 120


@dataclass
class SimResult:
    source: str
    mode: str
    events: int
    produced: int
    duplicates: int
    seconds: float
    attempts: int = 0
    errors: int = 0
    first_error: str | None = None

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def attempts_per_second(self) -> float:
        return self.attempts / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 3)
        return out

    def line(self) -> str:
        text = (f"{self.mode} {self.source}: {self.events} events, {self.attempts} attempts in "
                f"{self.seconds:.2f} s ({self.events_per_second:.0f} events/s) → "
                f"{self.produced} produced, {self.duplicates} duplicates")
        if self.errors:
            text += f", {self.errors} attempts failed (first: {self.first_error})"
        return text


def _count_arg(name: str, value, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise UsageError(f"{name} must be a whole number from 1 to {maximum}, not {value!r}.")
    return value


def check_arguments(source: str, mode: str, workers: int, events: int, processes: int) -> None:
    """Validate the simulation's arguments; one sentence per mistake."""
    if source not in SOURCES:
        raise registry.unknown_source(source)
    if mode not in MODES:
        raise UsageError(f"Unknown mode '{mode}': choose naive or guarded.")
    _count_arg("--workers", workers, MAX_WORKERS)
    _count_arg("--events", events, MAX_EVENTS)
    _count_arg("--processes", processes, MAX_PROCESSES)
    if processes > workers:
        raise UsageError(f"--processes ({processes}) cannot exceed --workers ({workers}): each process runs at least one worker.")


def load_driver(source: str):
    """The driver module of ``source``; a source without one is one clear sentence."""
    try:
        return DRIVERS[source]
    except KeyError:
        raise UsageError(f"The simulator has no driver for the {source} source.") from None


def _workspace_for(config: Config, source: str, workers: int) -> Workspace:
    """A workspace whose SQL pool holds a connection per worker thread."""
    engines = {}
    if registry.source(source).is_sql:
        engines[source] = sql_engine(config.source(source), pool_size=max(5, workers))
    return Workspace(config=config, _engines=engines)


def _tasks(driver, events: int) -> list[tuple[int, int]]:
    return [(e, a) for e in range(events) for a in range(driver.ATTEMPTS_PER_EVENT)]


def _run_threads(workspace, driver, plan, mode: str, tasks, workers: int) -> tuple[int, int, str | None]:
    """Run ``tasks`` on ``workers`` threads pulling in order; (attempts, errors, first error)."""
    lock = threading.Lock()
    position = [0]
    stats: dict[str, Any] = {"attempts": 0, "errors": 0, "first": None}

    def worker():
        attempts = errors = 0
        first = None
        while True:
            with lock:
                i = position[0]
                position[0] += 1
            if i >= len(tasks):
                break
            event, attempt = tasks[i]
            attempts += 1
            try:
                driver.run_attempt(workspace, plan, event, attempt, mode)
            except Exception as exc:  # one attempt's failure never stops the run; it is counted
                errors += 1
                if first is None:
                    first = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        with lock:
            stats["attempts"] += attempts
            stats["errors"] += errors
            if stats["first"] is None:
                stats["first"] = first

    threads = [threading.Thread(target=worker, name=f"sim-{n}", daemon=True) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stats["attempts"], stats["errors"], stats["first"]


def _process_main(config, source, plan, mode, tasks, threads, barrier, results) -> None:
    """One simulator process: its own workspace and threads, started together with the others."""
    try:
        driver = load_driver(source)
        workspace = _workspace_for(config, source, threads)
    except Exception as exc:
        barrier.abort()
        results.put(("error", f"{type(exc).__name__}: {exc}"))
        return
    try:
        barrier.wait(timeout=START_TIMEOUT_S)
        results.put(("ok", _run_threads(workspace, driver, plan, mode, tasks, threads)))
    except Exception as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        workspace.close()


def _run_processes(config, source, plan, mode, tasks, workers, processes) -> tuple[tuple[int, int, str | None], float]:
    import multiprocessing as mp
    import queue as queue_mod
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(processes + 1)
    results = ctx.Queue()
    # Task i goes to process i % P: the attempts of one event land in different processes.
    shares = [tasks[p::processes] for p in range(processes)]
    threads = [workers // processes + (1 if p < workers % processes else 0) for p in range(processes)]
    procs = [ctx.Process(target=_process_main, name=f"nc-sim-{p}",
                         args=(config, source, plan, mode, shares[p], threads[p], barrier, results))
             for p in range(processes)]
    for p in procs:
        p.start()
    try:
        try:
            barrier.wait(timeout=START_TIMEOUT_S)
        except threading.BrokenBarrierError:
            pass  # a process failed to start: its error is in the queue
        started = time.perf_counter()
        attempts = errors = 0
        first = None
        for _ in procs:
            try:
                kind, payload = results.get(timeout=3600)
            except queue_mod.Empty:
                raise OperationFailed("A simulator process stopped answering.") from None
            if kind == "error":
                raise OperationFailed(f"A simulator process failed: {payload}")
            a, e, f = payload
            attempts, errors = attempts + a, errors + e
            first = first or f
        seconds = time.perf_counter() - started
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join()
    return (attempts, errors, first), seconds


def simulate_kind(config: Config, mode: str) -> str:
    """The action a simulation is: naive traffic writes the seeds' duplicates on purpose, so
    outside the demo workspace it takes an admin."""
    return "simulate_naive" if mode == "naive" and not config.demo else "simulate"


def simulate_refusal(role: str, kind: str) -> str:
    if kind == "simulate_naive":
        return (f"The {role} role may not run naive traffic, which writes duplicates on purpose, against "
                "these databases: it takes an admin (or the demo workspace).")
    return (f"The {role} role may not run the simulator, which writes to the databases: "
            "use an operator or admin configuration.")


def run_simulation(config: Config, source: str, mode: str, workers: int, events: int,
                   processes: int = 1, seed: int | None = None) -> SimResult:
    """Drive ``events`` events (each attempted ATTEMPTS_PER_EVENT times at once) and count the outcome."""
    check_arguments(source, mode, workers, events, processes)
    kind = simulate_kind(config, mode)
    params = {"mode": mode, "workers": workers, "events": events, "processes": processes, "seed": seed}
    if not allowed(config.role, kind):
        refusing = _workspace_for(config, source, 1)
        try:
            refuse(refusing, kind, source, params, message=simulate_refusal(config.role, kind))
        finally:
            refusing.close()
    if processes > 1 and not registry.source(source).is_sql \
            and not config.source(source).scheme.startswith("mongodb"):
        raise UsageError("The in-process order store (mongomock) cannot be shared between processes: "
                         "use --processes 1 or a mongodb:// server.")
    driver = load_driver(source)
    seed = random.randrange(2 ** 31) if seed is None else seed
    workspace = _workspace_for(config, source, workers)
    holder: dict = {}

    def body(ctx) -> dict:
        plan = driver.prepare(workspace, events, seed)
        tasks = _tasks(driver, events)
        if processes == 1:
            started = time.perf_counter()
            attempts, errors, first = _run_threads(workspace, driver, plan, mode, tasks, workers)
            seconds = time.perf_counter() - started
        else:
            (attempts, errors, first), seconds = _run_processes(config, source, plan, mode, tasks,
                                                                workers, processes)
        if attempts and errors == attempts:
            raise OperationFailed(f"Every simulated attempt failed; the first error: {first}")
        produced, duplicates = driver.count(workspace, plan)
        holder.update(produced=produced, duplicates=duplicates, seconds=seconds, attempts=attempts,
                      errors=errors, first=first)
        return {"mode": mode, "events": events, "produced": produced, "duplicates": duplicates,
                "seconds": round(seconds, 3), "attempts": attempts, "errors": errors}
    try:
        require_schema(workspace, source)
        # Each run is an audited action: the simulator writes to real databases.
        run_action(workspace, kind=kind, source=source, action_id=None, body=body, params=dict(params, seed=seed))
    finally:
        workspace.close()
    produced, duplicates, seconds = holder["produced"], holder["duplicates"], holder["seconds"]
    attempts, errors, first = holder["attempts"], holder["errors"], holder["first"]
    return SimResult(source=source, mode=mode, events=events, produced=produced, duplicates=duplicates,
                     seconds=seconds, attempts=attempts, errors=errors, first_error=first)
