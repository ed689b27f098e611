"""The console's configuration: one TOML file, one entry per source.

```toml
[sources.orders]
url = "mongodb://host:27017/orders"
[sources.cart]
url = "mysql+pymysql://user@host:3306/cart"
read_url = "mysql+pymysql://user@replica:3306/cart"   # optional: lists, counts and charts read here
[sources.dispatch]
url = "mysql+pymysql://user@host:3306/dispatch"
[console]
role = "admin"                 # viewer | operator | admin; without it: viewer
[actions]
pool_size = 4                  # connections a retry works on at once (1 to 64)
[thresholds]
dispatch_stuck_minutes = 5
cart_in_progress_minutes = 2
order_missed_minutes = 10
duplicate_window_hours = 24
[mail]
transport = "outbox"           # smtp | outbox
host = "localhost"
port = 25
sender = "console@example.com"
admin_to = "admin@example.com"
outbox_dir = "~/nc-outbox"
[[duplicate_rules]]            # optional, any number
name = "assets"
source = "cart"
table = "assets"
key = ["md5", "asset_type"]
time_column = "created_at"
id_column = "id"               # default: "id" ("_id" for an orders rule)
window_hours = 24
```

Passwords never live in the file: they come from ``NC_<SOURCE>_PASSWORD`` or
the OS keyring (service ``notification-console``, user = source name). A
source's ``read_url`` (a read replica) logs in with a password of its own where
one is set (``NC_<SOURCE>_READ_PASSWORD``, or the keyring's ``<source>.read_url``
entry), else with the primary's.
"""
from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

import platformdirs

from .errors import ConfigError
from .registry import NAMES, SOURCES
from .registry import source as source_of

APP_NAME = "notification-console"
SOURCE_NAMES = NAMES
ROLES = ("viewer", "operator", "admin")
SQL_SCHEMES = ("mysql", "mysql+pymysql", "mariadb", "mariadb+pymysql", "postgresql",
               "postgresql+psycopg2", "sqlite", "sqlite+pysqlite")
MONGO_SCHEMES = ("mongodb", "mongodb+srv", "mongomock")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# The built-in duplicate rules (app.registry, app.read.rules): config rules may not take their names.
BUILTIN_RULE_NAMES = tuple(s.builtin_rule for s in SOURCES)


def data_dir() -> Path:
    """Where the console keeps its demo workspace and local files."""
    override = os.environ.get("NC_DATA_DIR")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def log_dir() -> Path:
    """Where the console writes its log file: NC_LOG_DIR, else beside a moved data directory, else the
    platform's log directory (``~/.local/state/notification-console/log`` on Linux)."""
    override = os.environ.get("NC_LOG_DIR")
    if override:
        return Path(override).expanduser()
    if os.environ.get("NC_DATA_DIR"):
        return data_dir() / "log"
    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))


def default_config_path() -> Path:
    override = os.environ.get("NC_CONFIG")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


@dataclass(frozen=True)
class SourceConfig:
    name: str
    url: str
    # A read replica: every list, count and chart reads there; actions always use ``url``.
    read_url: str | None = None
    # A password typed into the Connections dialog, for its Test button (never written anywhere).
    secret: str | None = field(default=None, repr=False, compare=False)
    # This is a source's read replica (``Config.for_reading``): its own password first.
    replica: bool = False

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0].lower()

    @property
    def kind(self) -> str:
        return "mongo" if self.scheme in MONGO_SCHEMES else "sql"

    def password(self) -> str | None:
        """The password typed for a test, else NC_<SOURCE>_PASSWORD, else the OS keyring, else None.

        A read replica's own password (``replica_password``) comes first; without one it logs in
        with the primary's."""
        if self.secret is not None:
            return self.secret
        if self.replica:
            own = self.replica_password()
            if own is not None:
                return own
        return _stored_password(self.name, replica=False)

    def replica_password(self) -> str | None:
        """The read replica's own password: NC_<SOURCE>_READ_PASSWORD, else the keyring's
        ``<source>.read_url`` entry, else None (then the replica uses the primary's)."""
        return _stored_password(self.name, replica=True)


def keyring_user(source: str, replica: bool = False) -> str:
    """The keyring entry's user name: the source (``cart``), or its read replica's (``cart.read_url``)."""
    return f"{source}.read_url" if replica else source


def _stored_password(source: str, *, replica: bool) -> str | None:
    """NC_<SOURCE>_PASSWORD (NC_<SOURCE>_READ_PASSWORD for the replica), else the keyring's entry."""
    env = os.environ.get(f"NC_{source.upper()}_{'READ_' if replica else ''}PASSWORD")
    if env is not None:
        return env
    return _keyring_password(keyring_user(source, replica=replica))


def _keyring_password(user: str) -> str | None:
    if os.environ.get("NC_NO_KEYRING"):
        return None
    try:
        import keyring
        return keyring.get_password(APP_NAME, user)
    except Exception:  # no keyring backend on this machine: not an error
        return None


@dataclass(frozen=True)
class Thresholds:
    dispatch_stuck_minutes: float = 5
    cart_in_progress_minutes: float = 2
    order_missed_minutes: float = 10
    duplicate_window_hours: float = 24


@dataclass(frozen=True)
class MailConfig:
    transport: str = "outbox"
    host: str = "localhost"
    port: int = 25
    sender: str = "notification-console@localhost"
    admin_to: str = "admin@localhost"
    outbox_dir: str = ""
    starttls: bool = False
    username: str = ""
    timeout_seconds: float = 10.0

    def password(self) -> str | None:
        return os.environ.get("NC_MAIL_PASSWORD")


@dataclass(frozen=True)
class ActionsConfig:
    # Items of one retry worked on at once, each on its own connection.
    pool_size: int = 4


POOL_SIZE_MAX = 64


@dataclass(frozen=True)
class DuplicateRule:
    """An extra duplicate watch defined by an admin in the config file."""

    name: str
    source: str
    table: str
    key: tuple[str, ...]
    time_column: str
    id_column: str = "id"
    window_hours: float = 24


@dataclass(frozen=True)
class Config:
    path: Path | None
    sources: dict[str, SourceConfig]
    # Fail closed: a configuration that names no role may only look.
    role: str = "viewer"
    thresholds: Thresholds = field(default_factory=Thresholds)
    mail: MailConfig = field(default_factory=MailConfig)
    duplicate_rules: tuple[DuplicateRule, ...] = ()
    actions: ActionsConfig = field(default_factory=ActionsConfig)
    demo: bool = False

    def source(self, name: str) -> SourceConfig:
        if name not in SOURCE_NAMES:
            raise ConfigError(
                f"Unknown source '{name}': choose one of {', '.join(SOURCE_NAMES)}.")
        if name not in self.sources:
            where = f" in {self.path}" if self.path else ""
            raise ConfigError(f"Source '{name}' is not configured{where}: add a [sources.{name}] table with a url.")
        return self.sources[name]

    def with_role(self, role: str) -> Config:
        if role not in ROLES:
            raise ConfigError(f"Unknown role '{role}': choose viewer, operator or admin.")
        return replace(self, role=role)

    @property
    def has_replicas(self) -> bool:
        return any(s.read_url for s in self.sources.values())

    def for_reading(self) -> Config:
        """The same configuration with each source's read replica (where it has one) as its URL."""
        return replace(self, sources={name: replace(s, url=s.read_url, read_url=None, replica=True) if s.read_url else s
                                      for name, s in self.sources.items()})


def _where(path: Path, key: str) -> str:
    return f"{path}: key '{key}'"


# Upper bounds keep every derived time span representable (a year at most).
_MAX = {"minutes": 525_600, "hours": 8_760, "seconds": 3_600}


def _number(path: Path, section: dict, key: str, default: float, dotted: str) -> float:
    value = section.get(key, default)
    unit = key.rsplit("_", 1)[-1]
    limit = _MAX.get(unit, 1e6)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= limit:
        raise ConfigError(f"{_where(path, dotted)} must be a positive number of {unit} up to {limit:,}, "
                          f"not {value!r}.")
    return value


def validate_url(path: Path | None, name: str, url: object, key: str = "url") -> str:
    where = f"{path}: key 'sources.{name}.{key}'" if path else f"source '{name}'"
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"{where} must be a URL such as mysql+pymysql://user@host:3306/{name}, not {url!r}.")
    scheme = url.split("://", 1)[0].lower()
    if scheme not in SQL_SCHEMES + MONGO_SCHEMES:
        raise ConfigError(f"{where} has the unsupported scheme '{scheme}': use mongodb:// for orders, "
                          "or mysql+pymysql://, postgresql:// or sqlite:/// for cart and dispatch.")
    sql = source_of(name).is_sql if name in SOURCE_NAMES else scheme not in MONGO_SCHEMES
    if not sql and scheme not in MONGO_SCHEMES:
        raise ConfigError(f"{where} must be a mongodb:// URL: the {name} database is MongoDB.")
    if sql and scheme in MONGO_SCHEMES:
        raise ConfigError(f"{where} must be an SQL URL (mysql+pymysql://, postgresql://, sqlite:///): the {name} database is SQL.")
    if scheme.startswith("sqlite") or scheme == "mongomock":
        return url
    rest = url.split("://", 1)[1]
    netloc = rest.split("/", 1)[0]
    if ":" in netloc.rsplit("@", 1)[0] and "@" in netloc:
        raise ConfigError(f"{where} holds a password: remove it and set NC_{name.upper()}_PASSWORD or the keyring instead.")
    if not netloc.rsplit("@", 1)[-1]:
        raise ConfigError(f"{where} names no host.")
    host_port = netloc.rsplit("@", 1)[-1]
    if host_port.count(":") == 1:
        port = host_port.split(":")[1]
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{where} has an invalid port '{port}'.")
    return url


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate the configuration file; raise ConfigError with one sentence."""
    explicit = path is not None
    p = Path(path).expanduser() if path is not None else default_config_path()
    if not p.exists():
        hint = "" if explicit else " (create it, pass --config FILE, or try --demo)"
        raise ConfigError(f"Configuration file {p} does not exist{hint}.")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p} cannot be read: {exc}.") from None
    return parse_config(raw, p)


def parse_config(raw: dict, p: Path | None) -> Config:
    p = p or Path("<config>")
    known = {"sources", "console", "actions", "thresholds", "mail", "duplicate_rules"}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{_where(p, key)} is unknown: the sections are {', '.join(sorted(known))}.")
    sources_raw = raw.get("sources", {})
    if not isinstance(sources_raw, dict):
        raise ConfigError(f"{_where(p, 'sources')} must be a table of sources.")
    sources: dict[str, SourceConfig] = {}
    for name, entry in sources_raw.items():
        if name not in SOURCE_NAMES:
            raise ConfigError(f"{_where(p, 'sources.' + name)} names an unknown source: "
                              f"the sources are {', '.join(SOURCE_NAMES)}.")
        if not isinstance(entry, dict) or "url" not in entry:
            raise ConfigError(f"{_where(p, 'sources.' + name)} must be a table with a url.")
        extra = set(entry) - {"url", "read_url"}
        if extra:
            raise ConfigError(f"{_where(p, 'sources.' + name + '.' + sorted(extra)[0])} is unknown: "
                              "a source has a url and optionally a read_url.")
        url = validate_url(p, name, entry["url"])
        read_url = entry.get("read_url") or None
        if read_url is not None:
            read_url = validate_url(p, name, read_url, "read_url")
            if (read_url.split("://", 1)[0].lower() in MONGO_SCHEMES) != (url.split("://", 1)[0].lower() in MONGO_SCHEMES):
                raise ConfigError(f"{_where(p, 'sources.' + name + '.read_url')} must be the same kind of "
                                  "database as its url.")
        sources[name] = SourceConfig(name, url, read_url)

    console = raw.get("console", {})
    # Fail closed: without a role the console only reads (the demo workspace alone defaults to admin).
    role = console.get("role", "viewer") if isinstance(console, dict) else None
    if role not in ROLES:
        raise ConfigError(f"{_where(p, 'console.role')} must be viewer, operator or admin, not {role!r}.")
    actions = _actions(p, raw.get("actions", {}))

    th_raw = raw.get("thresholds", {})
    if not isinstance(th_raw, dict):
        raise ConfigError(f"{_where(p, 'thresholds')} must be a table.")
    defaults = Thresholds()
    for key in th_raw:
        if not hasattr(defaults, key):
            raise ConfigError(f"{_where(p, 'thresholds.' + key)} is unknown.")
    thresholds = Thresholds(**{
        key: _number(p, th_raw, key, getattr(defaults, key), "thresholds." + key)
        for key in defaults.__dataclass_fields__})

    mail_raw = raw.get("mail", {})
    if not isinstance(mail_raw, dict):
        raise ConfigError(f"{_where(p, 'mail')} must be a table.")
    mdef = MailConfig()
    for key in mail_raw:
        if not hasattr(mdef, key):
            raise ConfigError(f"{_where(p, 'mail.' + key)} is unknown.")
    for key, value in mail_raw.items():
        expected = type(getattr(mdef, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            kind = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}[expected]
            raise ConfigError(f"{_where(p, 'mail.' + key)} must be {kind}, not {value!r}.")
    if "timeout_seconds" in mail_raw:
        _number(p, mail_raw, "timeout_seconds", mdef.timeout_seconds, "mail.timeout_seconds")
    for key in ("host", "sender", "admin_to"):
        if key in mail_raw and not mail_raw[key].strip():
            raise ConfigError(f"{_where(p, 'mail.' + key)} must not be empty.")
    mail = replace(mdef, **mail_raw)
    if mail.transport not in ("smtp", "outbox"):
        raise ConfigError(f"{_where(p, 'mail.transport')} must be smtp or outbox, not {mail.transport!r}.")
    if isinstance(mail.port, bool) or not isinstance(mail.port, int) or not 0 < mail.port < 65536:
        raise ConfigError(f"{_where(p, 'mail.port')} must be a port number, not {mail.port!r}.")

    rules = []
    rules_raw = raw.get("duplicate_rules", [])
    if not isinstance(rules_raw, list):
        raise ConfigError(f"{_where(p, 'duplicate_rules')} must be an array of tables ([[duplicate_rules]]).")
    seen_names: dict[str, str] = {}
    for i, r in enumerate(rules_raw):
        base = f"duplicate_rules[{i}]"
        if not isinstance(r, dict):
            raise ConfigError(f"{_where(p, base)} must be a table.")
        for need in ("name", "source", "table", "key", "time_column"):
            if need not in r:
                raise ConfigError(f"{_where(p, base + '.' + need)} is missing.")
        name = r["name"]
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{_where(p, base + '.name')} must be a non-empty string, not {name!r}.")
        # Scan cursors and rule selection are keyed by the rule's name.
        if name in BUILTIN_RULE_NAMES:
            raise ConfigError(f"{_where(p, base + '.name')} takes the name of the built-in rule {name!r}: "
                              "choose another name.")
        if name in seen_names:
            raise ConfigError(f"{_where(p, base + '.name')} repeats {name!r}, the name of {seen_names[name]}: "
                              "each rule needs its own name.")
        seen_names[name] = base
        if r["source"] not in SOURCE_NAMES:
            raise ConfigError(f"{_where(p, base + '.source')} must be {', '.join(NAMES[:-1])} or {NAMES[-1]}.")
        key = r["key"]
        if isinstance(key, str):
            key = [key] if key.strip() else []
        if not isinstance(key, list) or not key:
            raise ConfigError(f"{_where(p, base + '.key')} must name at least one column, not {r['key']!r}.")
        # Documents are identified by _id, rows by id.
        id_column = r.get("id_column", "id" if source_of(r["source"]).is_sql else "_id")
        names = [r["table"], r["time_column"], id_column, *key]
        for n in names:
            if not isinstance(n, str) or not _IDENT.match(n):
                raise ConfigError(f"{_where(p, base)} has the invalid column or table name {n!r}.")
        if len(set(key)) != len(key):
            raise ConfigError(f"{_where(p, base + '.key')} names a column twice: {key!r}.")
        rules.append(DuplicateRule(
            name=name, source=r["source"], table=r["table"], key=tuple(key),
            time_column=r["time_column"], id_column=id_column,
            window_hours=_number(p, r, "window_hours", 24, base + ".window_hours")))
    return Config(path=p, sources=sources, role=role, thresholds=thresholds, mail=mail,
                  duplicate_rules=tuple(rules), actions=actions)


def _actions(p: Path, raw) -> ActionsConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{_where(p, 'actions')} must be a table.")
    for key in raw:
        if key not in ActionsConfig.__dataclass_fields__:
            raise ConfigError(f"{_where(p, 'actions.' + key)} is unknown: the only key is pool_size.")
    size = raw.get("pool_size", ActionsConfig.pool_size)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= POOL_SIZE_MAX:
        raise ConfigError(f"{_where(p, 'actions.pool_size')} must be a whole number from 1 to {POOL_SIZE_MAX}, "
                          f"not {size!r}.")
    return ActionsConfig(pool_size=size)
