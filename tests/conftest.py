"""Shared fixtures: real MariaDB databases, SQLite files and the order store.

* The database servers are the ones on 127.0.0.1:3306 and :5432 (or at
  NC_TEST_MARIADB_URL / NC_TEST_POSTGRES_URL) when they answer, as in CI.
  When one does not (or NC_TEST_PRIVATE_SERVERS=1), the run starts a private
  throwaway server of its own on a free port, the first time a test needs it,
  with pytest-mysql's and pytest-postgresql's process fixtures on Debian's
  mariadb-server / postgresql binaries, and removes it afterwards.
* Each MariaDB database a test asks for is created with a unique name and
  dropped afterwards, so runs (and parallel CI jobs) never collide.
* The order store is mongomock, or a real server when NC_TEST_MONGO_URI is
  set (a unique database per test, dropped afterwards).
"""
from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from port_for import select_random
from pytest_mysql import factories as mysql_factories
from pytest_postgresql import factories as postgresql_factories
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.bootstrap import Workspace
from app.config import Config, MailConfig, SourceConfig, Thresholds
from app.schema_setup import create_production_schema, upgrade_order_store, upgrade_sql_source

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("NC_NO_KEYRING", "1")
# The console's own files (the local audit log of refused attempts, the demo) go to a
# directory of this run, never the user's: a refusal recorded there would show in the tests' audit lists.
if "NC_DATA_DIR" not in os.environ:
    os.environ["NC_DATA_DIR"] = tempfile.mkdtemp(prefix="nc-test-data-")
    atexit.register(shutil.rmtree, os.environ["NC_DATA_DIR"], True)

PRIVATE_SERVERS = os.environ.get("NC_TEST_PRIVATE_SERVERS") == "1"
INSTALL_HINT = "install the Debian packages mariadb-server and postgresql (apt-get install mariadb-server postgresql)"


@dataclass
class Server:
    """The server one kind of test database lives on: the machine's, or a private one for this run."""
    label: str
    root_url: str
    private_port: int | None = None     # set: this run starts its own server there, on first use
    why_private: str = ""
    started: bool = False

    @property
    def where(self) -> str:
        url = make_url(self.root_url)
        return f"{url.host}:{url.port}"


def _answers(url: str, default_port: int) -> bool:
    """Something listens at the URL's host and port (whether it lets root in is _server_admin's to say)."""
    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def _choose(label: str, env: str, default: str, default_port: int) -> Server:
    url = os.environ.get(env, default)
    if not PRIVATE_SERVERS and _answers(url, default_port):
        return Server(label, url)
    port = select_random(exclude_ports=[s.private_port for s in CHOSEN if s.private_port])
    parsed = make_url(url)
    why = ("NC_TEST_PRIVATE_SERVERS=1" if PRIVATE_SERVERS
           else f"none answers on {parsed.host or '127.0.0.1'}:{parsed.port or default_port}")
    private = Server(label, f"{parsed.drivername}://root@127.0.0.1:{port}", private_port=port, why_private=why)
    # Decided before any test module is imported: those that read the URL (test_grants) and the
    # consoles tests spawn see the private server too.
    os.environ[env] = private.root_url
    CHOSEN.append(private)
    return private


CHOSEN: list[Server] = []
MARIADB = _choose("MariaDB", "NC_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306", 3306)
POSTGRES = _choose("PostgreSQL", "NC_TEST_POSTGRES_URL", "postgresql+psycopg2://root@127.0.0.1:5432", 5432)
MARIADB_ROOT, POSTGRES_ROOT = MARIADB.root_url, POSTGRES.root_url
MARIADB_QUOTE, POSTGRES_QUOTE = "`", '"'


# --------------------------------------------------------------------------
# Private servers: Debian's binaries, behind three small wrappers

def _binary(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"]))


def _has_user(name: str) -> bool:
    try:
        return bool(pwd.getpwnam(name))
    except KeyError:
        return False


def _pg_ctl() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return found[-1] if found else _binary("pg_ctl")


MARIADB_BINARIES = {name: _binary(name)
                    for name in ("mariadbd", "mariadbd-safe", "mariadb-install-db", "mariadb-admin")}
PG_CTL = _pg_ctl()
OS_USER = pwd.getpwuid(os.getuid()).pw_name
AS_ROOT = os.getuid() == 0
WRAPPERS = Path(tempfile.gettempdir()) / f"nc-test-servers-{os.getpid()}"


# The machine's option files are its own server's (user, datadir, socket, port): the private MariaDB
# reads none of them, and its root logs in over TCP without a password, like CI's.
MARIADBD_SAFE = 'exec "{mariadbd-safe}" --no-defaults "$@"'
MARIADB_INSTALL_DB = 'exec "{mariadb-install-db}" --no-defaults --auth-root-authentication-method=normal "$@"'
# PostgreSQL will not run as root, so as root pg_ctl runs as the postgres user. That user cannot
# enter pytest's temporary folders (0700, and pytest resets pytest-of-root to 0700 whenever one
# starts), so the cluster and its log live in {home} (the postgres user's, inside our folder), and
# the paths pytest-postgresql gives for them (its data dir and -l log) are symlinks to there; once
# stopped, the cluster and the link are removed (the rest of the folder at exit).
PG_CTL_AS_POSTGRES = """home="{home}"
n=$# prev= link=
for arg in "$@"; do
    case $prev in --pgdata|-D|-l)
        case $arg in "$home"/*) ;; *)
            case $prev in -l) ;; *) link=$arg ;; esac
            case $1 in initdb|start) [ -e "$arg" ] || [ -L "$arg" ] || ln -s "$home/${arg##*/}" "$arg" ;; esac
            arg=$home/${arg##*/} ;;
        esac ;;
    esac
    set -- "$@" "$arg"
    prev=$arg
done
shift "$n"
cd /
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "{pg_ctl}" "$@"; }
if [ "$1" = stop ] && [ -n "$link" ]; then   # stopped: the cluster goes, and the link to it
    as_postgres "$@" && rm -rf "$home/${link##*/}" && rm -f "$link"
else
    as_postgres "$@"
fi
"""
PG_HOME = WRAPPERS / "postgres"


def _write_wrappers() -> None:
    if WRAPPERS.exists():
        return
    WRAPPERS.mkdir()
    WRAPPERS.chmod(0o711)   # the postgres user may pass through to its own folder, and no more
    atexit.register(shutil.rmtree, WRAPPERS, True)
    if AS_ROOT and POSTGRES.private_port:
        PG_HOME.mkdir(mode=0o700)
        os.chown(PG_HOME, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)
    paths = {**MARIADB_BINARIES, "pg_ctl": PG_CTL or "pg_ctl", "home": PG_HOME}
    for name, body in (("mariadbd-safe", MARIADBD_SAFE), ("mariadb-install-db", MARIADB_INSTALL_DB),
                       ("pg_ctl", PG_CTL_AS_POSTGRES)):
        for binary, path in paths.items():
            body = body.replace("{" + binary + "}", str(path))
        (WRAPPERS / name).write_text(f"#!/bin/sh\n{body.rstrip()}\n")
        (WRAPPERS / name).chmod(0o700)


private_mariadb_proc = mysql_factories.mysql_proc(
    mysqld_exec=MARIADB_BINARIES["mariadbd"] or "mariadbd",
    mysqld_safe=WRAPPERS / "mariadbd-safe",
    install_db=str(WRAPPERS / "mariadb-install-db"),
    admin_executable=MARIADB_BINARIES["mariadb-admin"] or "mariadb-admin",
    host="127.0.0.1", port=MARIADB.private_port or -1, user=OS_USER,
    # CI's server settings (this machine's /etc/mysql/my.cnf), which the private one does not read.
    params="--bind-address=127.0.0.1 --skip-name-resolve --character-set-server=utf8mb4 "
           "--collation-server=utf8mb4_general_ci",
)

private_postgres_proc = postgresql_factories.postgresql_proc(
    executable=str(WRAPPERS / "pg_ctl") if AS_ROOT else (PG_CTL or "pg_ctl"),
    host="127.0.0.1", port=POSTGRES.private_port or -1, user="root",
)


def _start_private(request, server: Server, fixture: str, missing: list[str]) -> None:
    if missing:  # the suite needs the server: say so, do not skip
        pytest.fail(f"The tests need a {server.label} ({server.why_private}) and this machine has no "
                    f"{', '.join(missing)} to start a private one: {INSTALL_HINT}.", pytrace=False)
    _write_wrappers()
    executor = request.getfixturevalue(fixture)
    if fixture == "private_mariadb_proc":   # pytest-mysql leaves its 180 MB data directory behind
        atexit.register(shutil.rmtree, executor.datadir, True)
    server.started = True


def _server_admin(url: str, what: str):
    engine = create_engine(url, future=True, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # the suite needs the server: say so, do not skip
        pytest.fail(f"{what} is not reachable ({exc}); run .ci/run, which starts it.")
    return engine


def pytest_terminal_summary(terminalreporter):
    for server in (MARIADB, POSTGRES):
        if server.started:
            terminalreporter.write_line(f"private {server.label} for this run on {server.where} ({server.why_private})")


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
def mariadb_admin(request):
    if MARIADB.private_port:
        missing = [name for name, path in MARIADB_BINARIES.items() if not path]
        _start_private(request, MARIADB, "private_mariadb_proc", missing)
    engine = _server_admin(MARIADB_ROOT + "/test", f"MariaDB on {MARIADB.where}")
    yield engine
    engine.dispose()


@pytest.fixture
def mariadb_database(mariadb_admin):
    """Factory: ``mariadb_database("cart")`` → URL of a fresh, empty database."""
    yield from _database_factory(mariadb_admin, MARIADB_ROOT, MARIADB_QUOTE)


@pytest.fixture(scope="session")
def postgres_admin(request):
    if POSTGRES.private_port:
        missing = [name for name, found in (("pg_ctl", PG_CTL), ("setpriv", not AS_ROOT or _binary("setpriv")),
                                            ("postgres user", not AS_ROOT or _has_user("postgres"))) if not found]
        _start_private(request, POSTGRES, "private_postgres_proc", missing)
        maintenance = _server_admin(POSTGRES_ROOT + "/postgres", f"PostgreSQL on {POSTGRES.where}")
        with maintenance.connect() as conn:
            conn.execute(text("CREATE DATABASE test"))   # CI's server has it, and the admin URL names it
        maintenance.dispose()
    engine = _server_admin(POSTGRES_ROOT + "/test", f"PostgreSQL on {POSTGRES.where}")
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_database(postgres_admin):
    """Factory: ``postgres_database("cart")`` → URL of a fresh, empty database."""
    yield from _database_factory(postgres_admin, POSTGRES_ROOT, POSTGRES_QUOTE, " WITH (FORCE)")


# A test that reaches a server through these fixtures, or through a parametrized fixture whose
# param names the server (``any_sql_url``'s "postgresql" asks for ``postgres_database`` by name),
# carries that server's marker, so ``-m "not mariadb and not postgres"`` runs without servers.
SERVER_FIXTURES = {"mariadb": ("mariadb_admin", "mariadb_database"),
                   "postgres": ("postgres_admin", "postgres_database")}
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
