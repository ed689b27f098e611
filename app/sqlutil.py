"""Small portable SQL helpers the services and read models share."""
from __future__ import annotations

import datetime as dt
import random
import threading
import time
import weakref
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import CHAR, DateTime, Table, cast, insert, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

# MySQL/MariaDB error codes worth a retry with jittered backoff.
DEADLOCK = 1213
LOCK_WAIT_TIMEOUT = 1205
DUPLICATE_KEY = 1062

T = TypeVar("T")


def backend(conn_or_engine) -> str:
    engine = getattr(conn_or_engine, "engine", conn_or_engine)
    return engine.url.get_backend_name()


def utcnow() -> dt.datetime:
    """Naive UTC now, the form every console timestamp takes."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def db_now(conn: Connection) -> dt.datetime:
    """The database's clock in naive UTC: several workstations share one clock."""
    b = backend(conn)
    if b in ("mysql", "mariadb"):
        return conn.execute(text("SELECT UTC_TIMESTAMP(6)")).scalar_one()
    if b == "postgresql":
        return conn.execute(text("SELECT (now() AT TIME ZONE 'UTC')")).scalar_one()
    return utcnow()


class OffsetClock:
    """A shared clock (a database's) read at most once per ``refresh`` seconds.

    Several workstations must agree on "24 h ago" and "lease expired", so the
    console stamps and compares on the database's clock; in between reads it
    is the local clock plus the last measured offset, without a round trip.
    """

    def __init__(self, refresh: float = 30.0):
        self.refresh = refresh
        self._cached: tuple | None = None
        self._lock = threading.Lock()

    def now(self, read) -> dt.datetime:
        """The shared clock's time; ``read()`` asks the database when the offset is stale."""
        mono = time.monotonic()
        with self._lock:
            cached = self._cached
        if cached is not None and mono - cached[1] <= self.refresh:
            return utcnow() + cached[0]
        before = utcnow()
        remote = read()
        after = utcnow()
        with self._lock:
            self._cached = (remote - (before + (after - before) / 2), mono)
        return remote


class _EngineClocks:
    """The database's clock of each engine, one ``OffsetClock`` per engine."""

    def __init__(self):
        self._clocks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def now(self, conn: Connection) -> dt.datetime:
        with self._lock:
            clock = self._clocks.get(conn.engine)
            if clock is None:
                clock = self._clocks[conn.engine] = OffsetClock()
        return clock.now(lambda: db_now(conn))


_engine_clocks = _EngineClocks()


def shared_now(conn: Connection) -> dt.datetime:
    """The database's clock without a round trip per call (see ``OffsetClock``): for the
    leases and claims that every workstation compares, stamped at a high rate."""
    return _engine_clocks.now(conn)


def insert_ignore(conn: Connection, table: Table, values: dict | list[dict]) -> int:
    """INSERT that silently skips rows colliding with a unique key; returns rows inserted.

    The rowcount is what tells a winner from a loser (never ON DUPLICATE KEY
    UPDATE, whose rowcount SQLAlchemy reports as 1 for everyone on MySQL).
    """
    b = backend(conn)
    if b in ("mysql", "mariadb"):
        stmt = insert(table).prefix_with("IGNORE")
    elif b == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert
        stmt = sqlite_insert(table).on_conflict_do_nothing()
    elif b == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        stmt = pg_insert(table).on_conflict_do_nothing()
    else:  # pragma: no cover - other backends: catch the integrity error row by row
        rows = values if isinstance(values, list) else [values]
        n = 0
        for row in rows:
            try:
                with conn.begin_nested():
                    conn.execute(insert(table), row)
                n += 1
            except IntegrityError:
                pass
        return n
    result = conn.execute(stmt, values)
    return max(result.rowcount, 0)


def is_retryable(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    code = orig.args[0] if orig is not None and orig.args and isinstance(orig.args[0], int) else None
    if code in (DEADLOCK, LOCK_WAIT_TIMEOUT):
        return True
    msg = str(orig or exc).lower()
    return "database is locked" in msg or "deadlock detected" in msg or "could not serialize" in msg


def with_retry(fn: Callable[[], T], *, attempts: int = 8, base_delay: float = 0.02, max_delay: float = 1.0) -> T:
    """Run ``fn()`` again after a deadlock or lock timeout, with full-jitter backoff."""
    for attempt in range(attempts):
        try:
            return fn()
        except (OperationalError, DBAPIError) as exc:
            if not is_retryable(exc) or attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0, min(max_delay, base_delay * (2 ** attempt))))
    raise AssertionError("unreachable")


def fetch_fast(conn: Connection, stmt) -> list[tuple]:
    """Rows (plain tuples) of a Core ``select`` without SQLAlchemy's per-value result processing.

    For the hot live-feed polls on MySQL/MariaDB. The statement is still built
    with Core (bound parameters, never text pasted in), only executed through
    the driver; datetime columns travel as text and are parsed with
    ``datetime.fromisoformat`` (C), which costs a fraction of PyMySQL's own
    conversion — a 500-row poll is mostly that. Elsewhere (SQLite stores
    datetimes as text) it is a plain execute.
    """
    if backend(conn) not in ("mysql", "mariadb"):
        return [tuple(r) for r in conn.execute(stmt).all()]
    columns = list(stmt.selected_columns)
    times = [i for i, c in enumerate(columns) if isinstance(c.type, DateTime)]
    if times:
        stmt = stmt.with_only_columns(*[
            cast(c, CHAR()).label(c.name) if i in times else c for i, c in enumerate(columns)])
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.params
    if compiled.positional:
        params = tuple(params[name] for name in compiled.positiontup)
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None  # a checked-out connection always holds its driver connection
    cursor = dbapi.cursor()
    try:
        cursor.execute(compiled.string, params)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    if not times:
        return [tuple(r) for r in rows]
    parse = dt.datetime.fromisoformat
    out = []
    for r in rows:
        r = list(r)
        for i in times:
            if r[i] is not None:
                try:
                    r[i] = parse(r[i])
                except ValueError:  # MySQL's zero date: no moment in time
                    r[i] = None
        out.append(tuple(r))
    return out


# Errors that mean "this database user may not write here" (not a fault of
# the data): MySQL/MariaDB table, column, database and global privileges, and
# a server or replica running read-only; PostgreSQL insufficient_privilege
# and a read-only transaction (hot standby); SQLite's read-only file.
PERMISSION_CODES = frozenset({1142, 1143, 1044, 1227, 1290, 1836})
PERMISSION_SQLSTATES = frozenset({"42501", "25006"})


def is_permission_denied(exc: BaseException) -> bool:
    """True when ``exc`` says the database user lacks the right to write (or read) what it tried.

    The read side uses it to tell "this user may not maintain the console's
    caches" (fall back to computing without persisting) from real failures.
    """
    orig = getattr(exc, "orig", None) or exc
    args = getattr(orig, "args", None) or ()
    if args and isinstance(args[0], int) and args[0] in PERMISSION_CODES:
        return True
    if getattr(orig, "pgcode", None) in PERMISSION_SQLSTATES:
        return True
    msg = str(orig).lower()
    return "attempt to write a readonly database" in msg or "permission denied for" in msg
