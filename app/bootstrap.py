"""Build everything a front end needs from a configuration, in one place.

Engines and clients are created here (lazily, on first use) and handed to
services and read models; nothing opens a connection at import time.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from .config import Config
from .sources import OrderStore, open_order_store, sql_engine


@dataclass
class Workspace:
    config: Config
    _engines: dict[str, Engine] = field(default_factory=dict)
    _orders: OrderStore | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reader: Workspace | None = None

    @property
    def role(self) -> str:
        return self.config.role

    def has(self, source: str) -> bool:
        return source in self.config.sources

    def engine(self, source: str) -> Engine:
        """The SQLAlchemy engine of ``cart`` or ``dispatch``."""
        with self._lock:
            if source not in self._engines:
                # Room for a retry's worker pool, its heartbeat and a reader beside it.
                size = max(5, self.config.actions.pool_size + 2)
                self._engines[source] = sql_engine(self.config.source(source), pool_size=size)
            return self._engines[source]

    def orders(self) -> OrderStore:
        with self._lock:
            if self._orders is None:
                source = self.config.source("orders")
                # The password of a real server: typed for a test, NC_ORDERS_PASSWORD, or the keyring.
                password = source.password() if source.scheme.startswith("mongodb") else None
                self._orders = open_order_store(source.url, password)
            return self._orders

    def reader(self) -> Workspace:
        """Where lists, counts and charts read: the read replicas (``read_url``), else this workspace.

        Its engines and order store are its own (the replicas'), made on first use and closed with
        this workspace. Actions never run on it: they take this workspace, the primaries.
        """
        if not self.config.has_replicas:
            return self
        with self._lock:
            if self._reader is None:
                self._reader = Workspace(config=self.config.for_reading())
            return self._reader

    def with_role(self, role: str) -> Workspace:
        """The same workspace as another console's ``role`` sees it: same config otherwise, same databases.

        The copy shares this workspace's engines (the very dict, so an engine either one opens is
        the other's too), its order store and its lock. Nothing is copied, so closing either one
        closes the shared engines and order store for both: close the original once, when both
        are done (the copy needs no close of its own).
        """
        if self.has("orders"):
            self.orders()  # open it now, so that there is one store to share
        reader = self.reader() if self.config.has_replicas else None
        return Workspace(config=self.config.with_role(role), _engines=self._engines, _orders=self._orders,
                         _lock=self._lock, _reader=reader)

    def close(self) -> None:
        with self._lock:
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        with self._lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()
            if self._orders is not None:
                self._orders.close()
                self._orders = None


def bootstrap(config: Config) -> Workspace:
    return Workspace(config=config)
