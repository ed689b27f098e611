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


MARIADB_QUOTE, POSTGRES_QUOTE = "`", '"'
POSTGRES_ROOT = os.environ.get("NC_TEST_POSTGRES_URL", "postgresql+psycopg2://root@127.0.0.1:5432")


def _server_admin(url: str, what: str):
    engine = create_engine(url, future=True, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # the suite needs the server: say so, do not skip
        pytest.fail(f"{what} is not reachable ({exc}); run .ci/run, which starts it.")
    return engine


def _database_factory(admin, root_url: str, quote: str, drop_suffix: str = ""):
    """Yield a factory of fresh databases on ``admin``'s server; drop them afterwards."""
    created = []

    def make(label: str = "db") -> str:
        name = f"nc_t_{label}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {quote}{name}{quote}"))
        created.append(name)
        return f"{root_url}/{name}"

    yield make
    with admin.connect() as conn:
        for name in created:
            conn.execute(text(f"DROP DATABASE IF EXISTS {quote}{name}{quote}{drop_suffix}"))


@pytest.fixture(scope="session")
def mariadb_admin():
    engine = _server_admin(MARIADB_ROOT + "/test", "MariaDB on 127.0.0.1:3306")
    yield engine
    engine.dispose()


@pytest.fixture
def mariadb_database(mariadb_admin):
    """Factory: ``mariadb_database("cart")`` → URL of a fresh, empty database."""
    yield from _database_factory(mariadb_admin, MARIADB_ROOT, MARIADB_QUOTE)


@pytest.fixture(scope="session")
def postgres_admin():
    engine = _server_admin(POSTGRES_ROOT + "/test", "PostgreSQL on 127.0.0.1:5432")
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_database(postgres_admin):
    """Factory: ``postgres_database("cart")`` → URL of a fresh, empty database."""
    yield from _database_factory(postgres_admin, POSTGRES_ROOT, POSTGRES_QUOTE, " WITH (FORCE)")


# A test that reaches a server through these fixtures, or through a parametrized fixture whose
# param names the server (``any_sql_url``'s "postgresql" asks for ``postgres_database`` by name),
# carries that server's marker, so ``-m "not mariadb and not postgres"`` runs without servers.
SERVER_FIXTURES = {"mariadb": ("mariadb_admin", "mariadb_database"), "postgres": ("postgres_admin", "postgres_database")}
SERVER_PARAMS = {"mariadb": ("mariadb",), "postgres": ("postgres", "postgresql")}


def pytest_collection_modifyitems(items):
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        for marker, fixtures in SERVER_FIXTURES.items():
            if item.get_closest_marker(marker):
                continue
            by_name = any(name in item.fixturenames for name in fixtures)
            by_param = any(isinstance(v, str) and v in SERVER_PARAMS[marker] for v in params.values())
            if by_name or by_param:
                item.add_marker(getattr(pytest.mark, marker))


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


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
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
