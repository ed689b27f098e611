"""Connections to the monitored databases, built in one place and injected.

* SQL sources (cart, dispatch): a SQLAlchemy engine from any URL; MySQL and
  MariaDB run through PyMySQL with the session clock on UTC.
* The order store (MongoDB): ``open_order_store`` is the one factory; it
  returns a real pymongo database for ``mongodb://`` URLs and a mongomock one
  for ``mongomock://`` URLs (tests, the demo). Every order-side module takes
  an ``OrderStore`` and never builds its own client.
"""
from __future__ import annotations

import atexit
import datetime as dt
import errno
import functools
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from .config import SourceConfig
from .errors import ConfigError, SourceUnavailable
from .sqlutil import OffsetClock, utcnow

try:  # POSIX; elsewhere the demo store is not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

CONNECT_TIMEOUT_S = 5


def _is_mysql(url) -> bool:
    return url.get_backend_name() in ("mysql", "mariadb")


def sql_engine(source: SourceConfig, *, pool_size: int = 5, echo: bool = False) -> Engine:
    """Engine for a cart or dispatch URL, with the password from env or keyring."""
    try:
        url = make_url(source.url)
    except ArgumentError as exc:
        raise ConfigError(f"The {source.name} URL {source.url!r} cannot be parsed: {exc}.") from None
    password = source.password()
    if password is not None and url.password is None and url.get_backend_name() != "sqlite":
        url = url.set(password=password)
    kwargs: dict = {"echo": echo, "future": True}
    if url.get_backend_name() == "sqlite":
        path = url.database
        if path and path != ":memory:" and not Path(path).parent.exists():
            raise SourceUnavailable(f"The {source.name} SQLite database folder {Path(path).parent} does not exist.")
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        kwargs.update(pool_pre_ping=True, pool_recycle=3600, pool_size=pool_size, max_overflow=pool_size * 2)
        if _is_mysql(url):
            if url.drivername in ("mysql", "mariadb"):
                url = url.set(drivername=url.get_backend_name() + "+pymysql")
            kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": 120,
                                      "write_timeout": 120, "charset": "utf8mb4"}
        elif url.get_backend_name() == "postgresql":
            if url.drivername == "postgresql":  # the driver this project installs
                url = url.set(drivername="postgresql+psycopg2")
            kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        engine = create_engine(url, **kwargs)
    except (NoSuchModuleError, ArgumentError, ImportError) as exc:
        raise ConfigError(f"The {source.name} URL {source.url!r} names an unsupported or missing driver: {exc}.") from None
    _install_session_setup(engine)
    engine.info = {"source": source.name}  # type: ignore[attr-defined]
    return engine


def _install_session_setup(engine: Engine) -> None:
    backend = engine.url.get_backend_name()
    if backend in ("mysql", "mariadb"):
        @event.listens_for(engine, "connect")
        def _utc(dbapi_conn, _record):  # every timestamp the console reads or writes is UTC
            with dbapi_conn.cursor() as cur:
                cur.execute("SET time_zone = '+00:00'")
    elif backend == "sqlite":
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
    elif backend == "postgresql":
        @event.listens_for(engine, "connect")
        def _pg_utc(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("SET TIME ZONE 'UTC'")
            cur.close()
            dbapi_conn.commit()


def describe_db_error(source: str, exc: BaseException) -> str:
    """One sentence for a database error, naming what the operator can fix."""
    orig = getattr(exc, "orig", exc)
    code = orig.args[0] if getattr(orig, "args", None) and isinstance(orig.args[0], int) else None
    detail = str(orig.args[1]) if code is not None and len(orig.args) > 1 else str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if code == 1045:
        return (f"The {source} database refused the login ({detail}): check the user in the URL "
                f"and NC_{source.upper()}_PASSWORD or the keyring.")
    if code in (2003, 2005, 2006, 2013):
        return f"The {source} database cannot be reached: {detail}."
    if code == 1049:
        return f"The {source} database does not exist: {detail}."
    if code in (1142, 1143, 1227, 1044):
        return f"The {source} database user lacks the privilege: {detail}."
    if "password authentication failed" in detail or "no password supplied" in detail:
        return f"The {source} database refused the login: check NC_{source.upper()}_PASSWORD or the keyring."
    if "could not connect" in detail or "Connection refused" in detail or "timeout expired" in detail:
        return f"The {source} database cannot be reached: {detail}."
    return f"The {source} database failed: {detail}."


def check_sql(engine: Engine) -> None:
    """Connect once; raise SourceUnavailable with one sentence on failure."""
    name = getattr(engine, "info", {}).get("source", "sql")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (DBAPIError, SQLAlchemyError, OSError) as exc:
        raise SourceUnavailable(describe_db_error(name, exc)) from None


# --------------------------------------------------------------------------
# Order store

class _LockedCollection:
    """A mongomock collection whose every call holds the store's lock.

    A real server applies each single-document operation atomically; mongomock
    does not guard against threads, so the factory adds the lock here. ``find``
    returns a list (materialised under the lock): order-side code passes
    ``sort``/``limit``/``skip`` as keyword arguments and iterates.
    """

    _WRITES = {"insert_one", "insert_many", "update_one", "update_many", "replace_one",
               "delete_one", "delete_many", "find_one_and_update", "find_one_and_replace",
               "find_one_and_delete", "bulk_write", "create_index", "drop", "drop_index"}

    def __init__(self, coll, store: OrderStore):
        self._coll = coll
        self._store = store

    def find(self, *args, **kwargs):
        with self._store.lock:
            return list(self._coll.find(*args, **kwargs))

    def aggregate(self, *args, **kwargs):
        with self._store.lock:
            return list(self._coll.aggregate(*args, **kwargs))

    def __getattr__(self, name):
        attr = getattr(self._coll, name)
        if not callable(attr):
            return attr

        if name in self._WRITES and self._store.read_only:
            raise SourceUnavailable(self._store.read_only)

        @functools.wraps(attr)
        def locked(*args, **kwargs):
            with self._store.lock:
                result = attr(*args, **kwargs)
                if name in self._WRITES:
                    self._store.dirty = True
                return result
        return locked


class _LockedDatabase:
    def __init__(self, db, store: OrderStore):
        self._db = db
        self._store = store
        self.name = db.name

    def __getitem__(self, name):
        return _LockedCollection(self._db[name], self._store)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name in ("list_collection_names", "command", "drop_collection", "create_collection"):
            if name in ("drop_collection", "create_collection") and self._store.read_only:
                raise SourceUnavailable(self._store.read_only)
            attr = getattr(self._db, name)

            def locked(*a, **k):
                with self._store.lock:
                    return attr(*a, **k)
            return locked
        return self[name]


_MEMORY_CLIENTS: dict[str, tuple[Any, threading.RLock]] = {}
_FILE_STORES: dict[Path, OrderStore] = {}
_CHECKPOINT_LOCK = threading.Lock()
# Reentrant: retiring a store (``store.file = None``) drops it from the cache under this lock.
_MEMORY_LOCK = threading.RLock()
CLOCK_REFRESH_S = 30.0


def _stamp(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class _FileLock:
    """An exclusive advisory lock on ``<store file>.lock``, naming the holder's pid.

    The first process to open a file-backed store holds it until it closes
    the store or exits (the system drops the lock with the process), so two
    processes never both dump their own copy over the file.
    """

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> int | None:
        """Take the lock: None when taken, else the holder's pid (0 when it cannot be read)."""
        if fcntl is None:
            return None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return None  # a folder the lock cannot be made in: nothing to share it with either
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                return None
            pid = 0
            for _ in range(20):  # the holder writes its pid right after taking the lock
                try:
                    pid = int(os.pread(fd, 32, 0).decode("ascii", "replace").strip() or 0)
                except ValueError:
                    pid = 0
                if pid:
                    break
                time.sleep(0.01)
            os.close(fd)
            return pid
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        self.fd = fd
        return None

    def held(self) -> bool:
        """Still the lock of the file at ``path`` (not of one a reset swapped away)?"""
        if self.fd is None:
            return False
        try:
            return os.fstat(self.fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            return False

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


def read_only_message(pid: int) -> str:
    holder = f"pid {pid}" if pid else "pid unknown"
    return (f"The demo order store is open in another process ({holder}); "
            "close it there to change orders from here.")


@dataclass
class OrderStore:
    """The order database, real or mock, plus where (if anywhere) a mock persists."""

    db: Any                       # a pymongo or mongomock database (neither is typed)
    kind: str                     # "mongodb" | "mongomock"
    client: Any
    file: Path | None = None
    lock: threading.RLock | None = None
    dirty: bool = False
    file_stamp: tuple | None = None
    # Set (to the sentence to show) when another process holds the file:
    # reads work, writes raise SourceUnavailable, nothing is checkpointed.
    read_only: str | None = None
    refs: int = 1
    _file_lock: _FileLock | None = field(default=None, repr=False)
    _clock: OffsetClock = field(default_factory=lambda: OffsetClock(CLOCK_REFRESH_S), repr=False)

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if name == "file" and value is None:
            self._retire()

    def __getitem__(self, name):
        return self.db[name]

    # -- the order database's clock -------------------------------------

    def now(self) -> dt.datetime:
        """The order database's clock, naive UTC.

        Every order-side lease and claim is stamped and compared on it, so
        consoles on workstations whose clocks disagree agree on "expired".
        A real server's time is read once and the offset to the local clock
        reused for ``CLOCK_REFRESH_S`` seconds; a mock store is local.
        """
        if self.kind != "mongodb":
            return utcnow()
        return self._clock.now(self._server_time)

    def _server_time(self) -> dt.datetime:
        from pymongo.errors import OperationFailure
        try:
            reply = self.db.command("hello")
        except OperationFailure:  # servers before 4.4.2
            reply = self.db.command("isMaster")
        value = reply["localTime"]
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value

    # -- the file-backed demo store --------------------------------------

    def checkpoint(self) -> None:
        """Persist a file-backed mock store (the demo); nothing for a real server."""
        if self.file is None or not self.dirty or self.read_only:
            return
        if self._file_lock is not None and not self._file_lock.held():
            # The file was replaced (demo --reset elsewhere): this copy is not its to overwrite.
            self.file = None
            return
        from bson import json_util
        with _CHECKPOINT_LOCK:  # one checkpoint at a time, so an older dump never lands last
            assert self.lock is not None  # a file-backed store is always a locked mongomock one
            with self.lock:
                raw = self.db._db  # the mongomock database behind the lock
                names = raw.list_collection_names()
                dump = {"collections": {name: list(raw[name].find()) for name in names},
                        "indexes": {name: _index_specs(raw[name]) for name in names}}
                self.dirty = False
            target = self.file
            if target is None:
                return
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json_util.dumps(dump), encoding="utf-8")
            os.replace(tmp, target)
            self.file_stamp = _stamp(target)

    def _retire(self) -> None:
        """No longer the process's store of its file: release the lock, leave the cache."""
        lock = self.__dict__.get("_file_lock")
        if lock is not None:
            lock.release()
        with _MEMORY_LOCK:
            for path, cached in list(_FILE_STORES.items()):
                if cached is self:
                    del _FILE_STORES[path]

    def close(self) -> None:
        """Give back one ``open_order_store``; the last one out checkpoints and lets go of the file."""
        with _MEMORY_LOCK:
            self.refs -= 1
            last = self.refs <= 0
        if not last:
            return
        self.checkpoint()
        if self.file is not None:
            self.file = None
        if self.kind == "mongodb":
            self.client.close()


def _load_mock_file(db, path: Path) -> None:
    from bson import json_util
    if not path.exists():
        return
    dump = json_util.loads(path.read_text(encoding="utf-8"))
    # Documents first, indexes after: mongomock checks a unique index by
    # scanning the collection on every insert (quadratic), once on creation.
    for name, docs in dump.get("collections", {}).items():
        if docs:
            db[name].insert_many(docs)
    for name, specs in dump.get("indexes", {}).items():
        for spec in specs:
            db[name].create_index([tuple(k) for k in spec["key"]], name=spec["name"],
                                  unique=spec.get("unique", False))


def _index_specs(coll) -> list[dict]:
    specs = []
    for name, info in coll.index_information().items():
        if name == "_id_":
            continue
        specs.append({"name": name, "key": [list(k) for k in info["key"]],
                      "unique": bool(info.get("unique", False))})
    return specs


def open_order_store(url: str, password: str | None = None) -> OrderStore:
    """The one factory for the order database.

    ``mongodb://host/db`` and ``mongodb+srv://`` → pymongo; ``mongomock://name``
    → an in-memory store shared by name inside this process;
    ``mongomock:///abs/path/orders.json`` → an in-memory store loaded from and
    checkpointed to that file (the demo workspace).
    """
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("mongodb", "mongodb+srv"):
        import pymongo
        parts = urlsplit(url)
        dbname = unquote(parts.path.lstrip("/")) or "orders"
        if password is None:
            password = os.environ.get("NC_ORDERS_PASSWORD")
        kwargs: dict[str, Any] = {}
        if password is not None and parts.username and not parts.password:
            kwargs["password"] = password
            kwargs["username"] = unquote(parts.username)
        client = pymongo.MongoClient(url, serverSelectionTimeoutMS=CONNECT_TIMEOUT_S * 1000,
                                     connectTimeoutMS=CONNECT_TIMEOUT_S * 1000, tz_aware=False,
                                     **kwargs)
        return OrderStore(db=client[dbname], kind="mongodb", client=client)
    if scheme == "mongomock":
        import mongomock
        rest = url.split("://", 1)[1]
        lock = threading.RLock()
        if rest.startswith("/"):
            path = Path(unquote(rest)).resolve()
            # One store per file in a process: the GUI and a simulator running
            # beside it must share it, or the last to checkpoint would win.
            with _MEMORY_LOCK:
                cached = _FILE_STORES.get(path)
                if cached is not None and cached.file_stamp == _stamp(path):
                    cached.refs += 1
                    return cached
                if cached is not None:
                    cached.file = None  # replaced on disk (demo --reset): retire it
            # Across processes, the first to open the file owns it; the others
            # read a copy and are refused writes, which they could not keep.
            file_lock = _FileLock(path.with_name(path.name + ".lock"))
            holder = file_lock.acquire()
            client = mongomock.MongoClient(tz_aware=False)
            raw = client["orders"]
            store = OrderStore(db=None, kind="mongomock", client=client, file=path, lock=lock)
            try:
                _load_mock_file(raw, path)
            except (ValueError, OSError) as exc:
                file_lock.release()
                raise SourceUnavailable(f"The order store file {path} cannot be read: {exc}.") from None
            store.db = _LockedDatabase(raw, store)
            store.file_stamp = _stamp(path)
            if holder is not None:
                store.read_only = read_only_message(holder)
            else:
                store._file_lock = file_lock
            with _MEMORY_LOCK:
                _FILE_STORES[path] = store
            if store.read_only is None:
                _start_flusher(store)
            return store
        name = rest.strip("/") or "orders"
        with _MEMORY_LOCK:
            entry = _MEMORY_CLIENTS.get(name)
            if entry is None:
                entry = _MEMORY_CLIENTS[name] = (mongomock.MongoClient(tz_aware=False), threading.RLock())
        client, lock = entry
        store = OrderStore(db=None, kind="mongomock", client=client, lock=lock)
        store.db = _LockedDatabase(client["orders"], store)
        return store
    raise ConfigError(f"The orders URL {url!r} must start with mongodb:// (or mongomock:// for tests).")


def _start_flusher(store: OrderStore) -> None:
    """Checkpoint a file-backed store every second while it changes, and at exit."""
    def loop():
        while store.file is not None:
            time.sleep(1.0)
            try:
                store.checkpoint()
            except OSError:
                pass
    threading.Thread(target=loop, name="order-store-flusher", daemon=True).start()
    atexit.register(store.checkpoint)


def check_order_store(store: OrderStore) -> None:
    if store.kind != "mongodb":
        return
    try:
        store.client.admin.command("ping")
    except Exception as exc:  # pymongo raises many kinds; all mean "not reachable"
        first = str(exc).split(",")[0].split("\n")[0]
        raise SourceUnavailable(f"The orders database cannot be reached: {first}.") from None
