"""Shared fixtures: real MariaDB databases, SQLite files and the order store.

* Each MariaDB database a test asks for is created with a unique name and
  dropped afterwards, so runs (and parallel CI jobs) never collide.
* The order store is mongomock, or a real server when NC_TEST_MONGO_URI is
  set (a unique database per test, dropped afterwards).
"""
from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text

from app.bootstrap import Workspace
from app.config import Config, MailConfig, SourceConfig, Thresholds
from app.schema_setup import create_production_schema, upgrade_order_store, upgrade_sql_source

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("NC_NO_KEYRING", "1")

MARIADB_ROOT = os.environ.get("NC_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306")


def _mariadb_admin():
    return create_engine(MARIADB_ROOT + "/test", future=True, isolation_level="AUTOCOMMIT",
                         connect_args={"connect_timeout": 5})


@pytest.fixture(scope="session")
def mariadb_admin():
    engine = _mariadb_admin()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # the suite needs MariaDB: say so, do not skip
        pytest.fail(f"MariaDB on 127.0.0.1:3306 is not reachable ({exc}); run .ci/run or start mariadbd.")
    yield engine
    engine.dispose()


@pytest.fixture
def mariadb_database(mariadb_admin):
    """Factory: ``mariadb_database("cart")`` → URL of a fresh, empty database."""
    created = []

    def make(label: str = "db") -> str:
        name = f"nc_t_{label}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with mariadb_admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        created.append(name)
        return f"{MARIADB_ROOT}/{name}"

    yield make
    with mariadb_admin.connect() as conn:
        for name in created:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))


@pytest.fixture
def order_store_url():
    """URL of a fresh order store: real MongoDB when NC_TEST_MONGO_URI is set, else mongomock."""
    real = os.environ.get("NC_TEST_MONGO_URI")
    name = f"nc_t_orders_{uuid.uuid4().hex[:8]}"
    if real:
        url = real.rstrip("/") + "/" + name
        yield url
        import pymongo
        client = pymongo.MongoClient(real)
        client.drop_database(name)
        client.close()
    else:
        yield f"mongomock://{name}"


def make_config(*, cart=None, dispatch=None, orders=None, role="admin",
                thresholds: Thresholds | None = None, mail: MailConfig | None = None,
                duplicate_rules=()) -> Config:
    sources = {}
    for name, url in (("orders", orders), ("cart", cart), ("dispatch", dispatch)):
        if url:
            sources[name] = SourceConfig(name, url)
    return Config(path=None, sources=sources, role=role, thresholds=thresholds or Thresholds(),
                  mail=mail or MailConfig(), duplicate_rules=tuple(duplicate_rules))


@pytest.fixture(params=["sqlite", "mariadb"])
def sql_backend(request):
    """Run a test on SQLite and on real MariaDB."""
    return request.param


@pytest.fixture
def sql_url(request, tmp_path, sql_backend):
    """Factory: a fresh database URL of the current ``sql_backend`` for ``label``."""
    def make(label: str) -> str:
        if sql_backend == "sqlite":
            return f"sqlite:///{tmp_path / (label + '.db')}"
        return request.getfixturevalue("mariadb_database")(label)
    return make


@pytest.fixture
def workspace_factory(tmp_path):
    """Factory: a Workspace on the given URLs with production schemas and ``db upgrade`` done."""
    opened = []

    def make(*, cart=None, dispatch=None, orders=None, role="admin", upgrade=True, **kw) -> Workspace:
        mail = kw.pop("mail", None) or MailConfig(transport="outbox", outbox_dir=str(tmp_path / "outbox"))
        ws = Workspace(config=make_config(cart=cart, dispatch=dispatch, orders=orders, role=role,
                                          mail=mail, **kw))
        opened.append(ws)
        for source in ("cart", "dispatch"):
            if ws.has(source):
                create_production_schema(ws.engine(source), source)
                if upgrade:
                    upgrade_sql_source(ws.engine(source), source)
        if orders and upgrade:
            upgrade_order_store(ws.orders())
        return ws

    yield make
    for ws in opened:
        ws.close()
