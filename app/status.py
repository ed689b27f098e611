"""Is each configured source reachable, is its schema in place, how big is it?

The CLI's ``status`` and the GUI's status bar and overview cards both call
``check_source``/``check_all``; the results are plain dataclasses, safe to
hand from a worker thread to the GUI.

Row counts are cheap by default, because the GUI repeats the check every
30 s and ``COUNT(*)`` reads a whole table (1.4 s at 5 M rows on MariaDB):

* a bounded count (``COUNT`` over at most ``EXACT_BELOW + 1`` rows) is exact
  for every table below ``EXACT_BELOW`` rows, whatever the statistics say;
* a bigger table shows the database's own estimate: MySQL/MariaDB
  ``information_schema.TABLES.table_rows``, PostgreSQL ``pg_class.reltuples``
  (``pg_stat_user_tables.n_live_tup`` before the first ANALYZE), SQLite
  ``max(rowid)``, MongoDB ``estimated_document_count``; its name is listed in
  ``SourceStatus.estimated``.

``exact=True`` (``status --exact``) counts every row, at the cost of a full
scan of each table.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field, replace

from sqlalchemy import func, inspect, literal, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from . import migrate
from .config import SOURCE_NAMES, SourceConfig
from .errors import ConsoleError
from .grants import database_role, lower_role, order_store_role
from .schema import PRODUCTION_TABLES
from .schema_setup import order_schema_ready
from .sources import check_order_store, describe_db_error

# The tables (collections) whose row counts the report shows, per source.
COUNTED = {
    "cart": ("users", "cart_abandonment_log"),
    "dispatch": ("notification_dispatch_log", "notifications", "issues", "users"),
    "orders": ("orders", "email_log"),
}
ORDER_COLLECTIONS = ("orders", "email_log")
# Tables (collections) with fewer rows are counted exactly even by the cheap check.
EXACT_BELOW = 50_000


@dataclass(frozen=True)
class SourceStatus:
    name: str                       # orders | cart | dispatch
    kind: str                       # sql | mongo
    backend: str                    # sqlite | mysql | postgresql | mongodb | mongomock
    target: str                     # where it points, without secrets
    reachable: bool
    reason: str | None = None       # one sentence when something is wrong
    production_schema: bool = False
    console_schema: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    elapsed_ms: int = 0
    estimated: tuple[str, ...] = ()  # tables whose count is the database's estimate
    # The read replica (``read_url``), where one is configured: the counts above were read there.
    replica_target: str | None = None
    replica_reachable: bool | None = None
    replica_reason: str | None = None
    # The highest console role the database user may act as here, and why not higher; None (with the
    # reason) when the database does not say, and the configured role holds.
    database_role: str | None = None
    database_role_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reachable and self.production_schema and self.console_schema

    @property
    def state(self) -> str:
        """One word for a status bar: ok, schema, or down."""
        if not self.reachable:
            return "down"
        return "ok" if self.ok else "schema"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["estimated"] = list(self.estimated)
        for key in ("replica_target", "replica_reachable", "replica_reason"):
            del d[key]
        if self.replica_target is not None:   # only where a read replica is configured
            d["replica"] = {"target": self.replica_target, "reachable": self.replica_reachable,
                            "reason": self.replica_reason}
        d["ok"] = self.ok
        d["state"] = self.state
        return d


def effective_role(configured: str, statuses) -> tuple[str, str | None]:
    """The lower of the configured role and what the database users may do, with the note that says
    why it is lower: ``("operator", "config says admin; the cart database user cannot delete")``."""
    role, why = configured, None
    for s in statuses:
        if s.database_role is not None and lower_role(s.database_role, role) != role:
            role, why = s.database_role, s.database_role_reason
    if role == configured:
        return role, None
    return role, f"config says {configured}; {why or 'the database user may not do more'}"


def role_line(configured: str, statuses) -> str:
    """``role: operator (config says admin; the cart database user cannot delete)``."""
    role, note = effective_role(configured, statuses)
    return f"role: {role}" + (f" ({note})" if note else "")


@dataclass(frozen=True)
class StatusReport:
    role: str
    demo: bool
    sources: tuple[SourceStatus, ...]

    @property
    def effective_role(self) -> str:
        return effective_role(self.role, self.sources)[0]

    @property
    def all_reachable(self) -> bool:
        return all(s.reachable and s.replica_reachable is not False for s in self.sources)

    def to_dict(self) -> dict:
        role, note = effective_role(self.role, self.sources)
        return {"ok": self.all_reachable and all(s.ok for s in self.sources),
                "all_reachable": self.all_reachable, "role": self.role, "effective_role": role,
                "role_note": note, "demo": self.demo,
                "sources": [s.to_dict() for s in self.sources]}


def describe_target(source: SourceConfig) -> str:
    """The URL without user secrets: host/database, or the file."""
    scheme = source.scheme
    if scheme == "mongomock":
        rest = source.url.split("://", 1)[1]
        return rest if rest.startswith("/") else f"in-memory store '{rest}'"
    if scheme.startswith("mongodb"):
        rest = source.url.split("://", 1)[1]
        return rest.rsplit("@", 1)[-1].split("?", 1)[0]
    try:
        url = make_url(source.url)
    except Exception:  # validated at load time; show it raw if it cannot parse
        return source.url
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    host = url.host or "localhost"
    port = f":{url.port}" if url.port else ""
    user = f"{url.username}@" if url.username else ""
    return f"{user}{host}{port}/{url.database or ''}"


def _backend(source: SourceConfig) -> str:
    if source.kind == "mongo":
        return "mongomock" if source.scheme == "mongomock" else "mongodb"
    return source.scheme.split("+", 1)[0].replace("mariadb", "mysql")


# A host that accepts TCP but never answers (a firewall, a hung server) would
# otherwise hold the check for the driver's read timeout. Reaching the source
# (connect, log in) must happen within CONNECT_DEADLINE_S, so the whole report
# answers within 10 s; once connected, counting rows may take longer.
CONNECT_DEADLINE_S = 6.0
TOTAL_DEADLINE_S = 60.0


def check_source(workspace, name: str, connect_timeout: float = CONNECT_DEADLINE_S,
                 total_timeout: float = TOTAL_DEADLINE_S, exact: bool = False) -> SourceStatus:
    """Check one configured source, and its read replica if it has one; never raises for a database problem.

    Row counts of big tables are estimates unless ``exact`` (see the module). With a replica
    (``read_url``) both are checked at once and the counts are the replica's, where the lists read.
    """
    source = workspace.config.source(name)
    if not source.read_url:
        return _check_within(workspace, name, connect_timeout, total_timeout, exact)
    box: list[SourceStatus] = []
    reader = workspace.reader()
    side = threading.Thread(target=lambda: box.append(_check_within(reader, name, connect_timeout,
                                                                    total_timeout, exact)),
                            name=f"status-replica-{name}", daemon=True)
    side.start()
    primary = _check_within(workspace, name, connect_timeout, total_timeout, exact)
    side.join()
    replica = box[0]
    counts = replica.counts if replica.reachable else primary.counts
    estimated = replica.estimated if replica.reachable else primary.estimated
    return replace(primary, counts=counts, estimated=estimated, replica_target=replica.target,
                   replica_reachable=replica.reachable,
                   replica_reason=replica.reason and replica.reason.replace(
                       f"The {name} database", f"The {name} read replica", 1).replace(
                       f"sources.{name}.url", f"sources.{name}.read_url"))


def _check_within(workspace, name: str, connect_timeout: float, total_timeout: float,
                  exact: bool) -> SourceStatus:
    source = workspace.config.source(name)
    box: list[SourceStatus] = []
    connected = threading.Event()
    worker = threading.Thread(target=lambda: box.append(_check_now(workspace, name, connected, exact)),
                              name=f"status-{name}", daemon=True)
    started = time.monotonic()
    worker.start()
    while not box and time.monotonic() - started < connect_timeout and not connected.is_set():
        worker.join(0.05)
    if not box and connected.is_set():
        worker.join(max(0.0, total_timeout - (time.monotonic() - started)))
    if box:
        return box[0]
    if connected.is_set():
        reason = (f"The {name} database answered but did not finish the checks within "
                  f"{total_timeout:g} s: it is reachable, and slow.")
        reachable = True
    else:
        reason = (f"The {name} database did not answer within {connect_timeout:g} s: check the "
                  f"host and port in sources.{name}.url and the network.")
        reachable = False
    return SourceStatus(name=name, kind=source.kind, backend=_backend(source),
                        target=describe_target(source), reachable=reachable, reason=reason,
                        elapsed_ms=int((time.monotonic() - started) * 1000))


def _check_now(workspace, name: str, connected: threading.Event, exact: bool = False) -> SourceStatus:
    source = workspace.config.source(name)
    started = time.monotonic()
    base = {"name": name, "kind": source.kind, "backend": _backend(source),
            "target": describe_target(source)}
    try:
        if source.kind == "mongo":
            fields = _check_orders(workspace, connected, exact)
        else:
            fields = _check_sql(workspace, name, connected, exact)
    except ConsoleError as exc:
        fields = {"reachable": False, "reason": exc.message}
    except (DBAPIError, SQLAlchemyError, OSError) as exc:
        fields = {"reachable": False, "reason": describe_db_error(name, exc)}
    elapsed = int((time.monotonic() - started) * 1000)
    return SourceStatus(**base, **fields, elapsed_ms=elapsed)


def _count_table(conn, table, exact: bool) -> tuple[int, bool]:
    """(rows, estimated): exact below ``EXACT_BELOW`` rows or when asked, else the estimate."""
    if exact:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one()), False
    capped = select(literal(1).label("one")).select_from(table).limit(EXACT_BELOW + 1).subquery()
    n = int(conn.execute(select(func.count()).select_from(capped)).scalar_one())
    if n <= EXACT_BELOW:
        return n, False
    estimate = _estimate_rows(conn, table.name)
    return max(n, estimate or 0), True


def _estimate_rows(conn, name: str) -> int | None:
    """The database's own idea of a table's size, without reading the table."""
    dialect = conn.dialect.name
    if dialect in ("mysql", "mariadb"):
        value = conn.execute(text(
            "SELECT table_rows FROM information_schema.TABLES WHERE table_schema = DATABASE() "
            "AND table_name = :t"), {"t": name}).scalar()
    elif dialect == "postgresql":
        row = conn.execute(text(
            "SELECT c.reltuples, s.n_live_tup FROM pg_class c "
            "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
            "WHERE c.oid = to_regclass(quote_ident(:t))"), {"t": name}).first()
        if row is None:
            return None
        value = row[0] if row[0] is not None and row[0] >= 0 else row[1]
    elif dialect == "sqlite":
        # The rowid b-tree's last key: one page read (an overestimate after deletes).
        value = conn.execute(text(f'SELECT max(rowid) FROM "{name}"')).scalar()
    else:
        return None
    return int(value) if value is not None else None


def _check_sql(workspace, name: str, connected: threading.Event, exact: bool = False) -> dict:
    engine = workspace.engine(name)
    try:
        conn = engine.connect()
    except (DBAPIError, SQLAlchemyError, OSError) as exc:
        return {"reachable": False, "reason": describe_db_error(name, exc)}
    connected.set()
    with conn:
        present = set(inspect(conn).get_table_names())
        metadata, wanted = PRODUCTION_TABLES[name]
        missing = [t for t in wanted if t not in present]
        counts = {}
        estimated = []
        for table in COUNTED[name]:
            if table in present:
                counts[table], guessed = _count_table(conn, metadata.tables[table], exact)
                if guessed:
                    estimated.append(table)
        production = not missing
        try:
            db_role, db_role_reason = database_role(conn, name)
        except (DBAPIError, SQLAlchemyError):
            db_role, db_role_reason = None, None   # the privileges cannot be read: the configured role holds
    console = production and migrate.console_schema_ready(engine)
    reason = None
    if missing:
        reason = (f"The {name} database has no {', '.join(missing)} table: point sources.{name}.url "
                  f"at the production {name} database.")
    elif not console:
        reason = f"The {name} database lacks the console's own tables: run `{migrate.UPGRADE_HINT}`."
    return {"reachable": True, "reason": reason, "production_schema": production,
            "console_schema": console, "counts": counts, "estimated": tuple(estimated),
            "database_role": db_role, "database_role_reason": db_role_reason}


def _count_collection(coll, exact: bool) -> tuple[int, bool]:
    if exact:
        return int(coll.count_documents({})), False
    n = int(coll.count_documents({}, limit=EXACT_BELOW + 1))
    if n <= EXACT_BELOW:
        return n, False
    return max(n, int(coll.estimated_document_count())), True


def _check_orders(workspace, connected: threading.Event, exact: bool = False) -> dict:
    import pymongo.errors
    store = workspace.orders()
    check_order_store(store)
    connected.set()
    try:
        names = set(store.db.list_collection_names())
        counts = {}
        estimated = []
        for c in ORDER_COLLECTIONS:
            if c in names:
                counts[c], guessed = _count_collection(store.db[c], exact)
                if guessed:
                    estimated.append(c)
        console = order_schema_ready(store)
        db_role, db_role_reason = order_store_role(store.db)
    except pymongo.errors.PyMongoError as exc:
        first = str(exc).split(",")[0].split("\n")[0]
        return {"reachable": False, "reason": f"The orders database failed: {first}."}
    # MongoDB creates collections on first write: an empty store is "present"
    # once the console's own schema marker exists or orders exist.
    production = "orders" in names or console
    reason = None
    if not console:
        reason = f"The orders database lacks the console's own collections and indexes: run `{migrate.UPGRADE_HINT}`."
    return {"reachable": True, "reason": reason, "production_schema": production,
            "console_schema": console, "counts": counts, "estimated": tuple(estimated),
            "database_role": db_role, "database_role_reason": db_role_reason}


def configured_sources(workspace) -> list[str]:
    return [n for n in SOURCE_NAMES if workspace.has(n)]


def check_all(workspace, exact: bool = False) -> StatusReport:
    """Check every configured source in parallel, so one dead host costs one timeout."""
    names = configured_sources(workspace)
    box: dict[str, SourceStatus] = {}
    threads = [threading.Thread(target=lambda n=n: box.__setitem__(n, check_source(workspace, n, exact=exact)),
                                name=f"status-all-{n}", daemon=True) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = tuple(box[n] for n in names)
    return StatusReport(role=workspace.role, demo=workspace.config.demo, sources=results)
