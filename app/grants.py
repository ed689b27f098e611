"""The database GRANTs that make each console role real at the database level.

The console checks roles in its service layer; these grants make the same
rule hold in the database, so a viewer's console cannot write even if its
role setting were changed. ``python main.py db grants --source S --role R
--user "'name'@'%'" --database D`` prints them for MySQL/MariaDB.

The table lists come from ``app.schema``: every production table of the
source and every console table (``nc_*``, from the console metadata, so a
table added there is never forgotten) gets SELECT for every role, as does
``nc_alembic_version`` (the schema check reads it). Console tables fall in
three kinds:

* **cache** tables (``CACHE_TABLES``: the latency rollups, the cart
  duplicate member index, the readers' cursors): derived data the console can
  rebuild from the production rows at any time. The read side maintains them
  while it reads; operator and admin users may INSERT, UPDATE and DELETE them
  (nothing else depends on them). A user that may not write them (a viewer)
  still reads correct figures: the read side computes what is missing in
  memory, or queries the production tables directly, without persisting
  (slower, never different).
* the **ledger** (``nc_action``, ``nc_action_item``) and the **guards**
  (``nc_cart_claim``, ``nc_dispatch_attempt``): written by retry.
* the **archive** (``nc_archive``): written by cleanup and undo.

Per role (each adds to the one before):

* viewer:   SELECT only, plus INSERT on the ``nc_action`` columns a refused
            attempt writes (``REFUSAL_COLUMNS``), so its refused attempts
            are audited in the database for every console to see. The
            columns a running action needs (its lease) are left out, so even
            a viewer console whose role setting claims more cannot start an
            action: the database refuses its first write. Without that
            grant refused attempts go to the local audit file
            (``audit-local.jsonl`` in the data dir) and ``audit`` shows them
            on that workstation only.
* operator: + what retry writes: the status columns of failed items, new
            notifications, claims and leases, the action ledger, and the
            cache tables.
* admin:    + what cleanup and undo write: DELETE and re-INSERT (same ids) of
            duplicate rows, the archive; the member-index refresh a cart
            cleanup or undo runs in its own transaction is a cache write.
* ``db upgrade`` runs as a schema owner (CREATE, ALTER, INDEX, DROP on the
  console's ``nc_*`` tables and INDEX on the production tables); no role
  needs those rights at run time. It also builds the cart member index.
"""
from __future__ import annotations

from .errors import UsageError
from .schema import PRODUCTION_TABLES, console_metadata

ROLES = ("viewer", "operator", "admin")
VERSION_TABLE = "nc_alembic_version"

# Derived, rebuildable console data: the read side writes it while reading.
CACHE_TABLES = ("nc_cursor", "nc_latency_minute", "nc_rollup_unsettled", "nc_cart_dup_bucket")
CACHE_PRIVILEGES = "INSERT, UPDATE, DELETE"
# Console tables that are not caches, and the role that first writes them.
LEDGER_TABLES = ("nc_action", "nc_action_item")
GUARD_TABLES = ("nc_cart_claim", "nc_dispatch_attempt")
ARCHIVE_TABLES = ("nc_archive",)

# What ``SqlLedger.refuse`` writes: a refused attempt, already finished.
REFUSAL_COLUMNS = ("action_id", "kind", "source", "params_json", "params_hash", "operator", "role",
                   "status", "started_at", "finished_at", "message")

# Writes beyond SELECT, per source and role; each role adds to the one before.
_OPERATOR = {
    "cart": [("cart_abandonment_log", "UPDATE (email_sent, sent_at, error_message)"),
             ("nc_cart_claim", "INSERT, UPDATE, DELETE"),
             ("nc_action", "INSERT, UPDATE"), ("nc_action_item", "INSERT")],
    "dispatch": [("notification_dispatch_log", "UPDATE (status, completed_at, error_message, recipients_count)"),
                 ("notifications", "INSERT"), ("nc_dispatch_attempt", "INSERT, UPDATE"),
                 ("nc_action", "INSERT, UPDATE"), ("nc_action_item", "INSERT")],
}
_ADMIN = {
    "cart": [("cart_abandonment_log", "INSERT, DELETE"), ("nc_archive", "INSERT, UPDATE")],
    "dispatch": [("notifications", "DELETE"), ("nc_archive", "INSERT, UPDATE")],
}


def console_tables() -> list[str]:
    """Every console table of ``app.schema``, in creation order."""
    return [t.name for t in console_metadata.sorted_tables]


def read_tables(source: str) -> list[str]:
    """Every table a console role reads on ``source``: production, console, version table."""
    return list(PRODUCTION_TABLES[source][1]) + console_tables() + [VERSION_TABLE]


def grant_statements(source: str, role: str, user: str, database: str,
                     extra_read_tables: list[str] | None = None) -> list[str]:
    """GRANT statements for ``user`` (e.g. ``'nc_viewer'@'%'``) on ``database``."""
    if source not in PRODUCTION_TABLES:
        raise UsageError(f"Grants are for the SQL sources cart and dispatch, not '{source}'; "
                         "on MongoDB give a viewer the built-in 'read' role and operators/admins 'readWrite'.")
    if role not in ROLES:
        raise UsageError(f"Unknown role '{role}': choose viewer, operator or admin.")
    db = f"`{database.replace('`', '``')}`"
    tables = list(dict.fromkeys(read_tables(source) + list(extra_read_tables or [])))
    out = [f"GRANT SELECT ON {db}.`{t}` TO {user};" for t in tables]
    if role == "viewer":
        out.append(f"GRANT INSERT ({', '.join(REFUSAL_COLUMNS)}) ON {db}.`nc_action` TO {user};")
        return out
    writes = list(_OPERATOR[source])
    if role == "admin":
        writes += _ADMIN[source]
    writes += [(t, CACHE_PRIVILEGES) for t in console_tables() if t in CACHE_TABLES]
    out += [f"GRANT {privs} ON {db}.`{t}` TO {user};" for t, privs in writes]
    return out


# --------------------------------------------------------------------------
# The other way round: what the database user of a running console may do

# What each role's first writes need, per source: (privilege, table, words for "cannot ...").
# A role is open to the user when it holds every one (a column grant counts for UPDATE and INSERT).
ROLE_NEEDS: dict[str, dict[str, list[tuple[str, str, str]]]] = {
    "operator": {
        "cart": [("UPDATE", "cart_abandonment_log", "update cart_abandonment_log"),
                 ("INSERT", "nc_cart_claim", "insert claims"), ("UPDATE", "nc_action", "record actions")],
        "dispatch": [("UPDATE", "notification_dispatch_log", "update notification_dispatch_log"),
                     ("INSERT", "notifications", "insert notifications"), ("UPDATE", "nc_action", "record actions")],
    },
    "admin": {
        "cart": [("DELETE", "cart_abandonment_log", "delete"), ("INSERT", "nc_archive", "archive")],
        "dispatch": [("DELETE", "notifications", "delete"), ("INSERT", "nc_archive", "archive")],
    },
}


def database_role(conn, source: str) -> tuple[str, str | None]:
    """The highest console role the connection's database user may act as on ``source``, and why not
    higher (``"cannot delete"``; None when nothing is missing).

    MySQL/MariaDB: the user's privileges as ``information_schema`` shows them (global, database,
    table and column grants) and ``@@read_only``; PostgreSQL: ``has_table_privilege`` /
    ``has_any_column_privilege`` and recovery or read-only transactions; SQLite: whether the file
    may be written. The order store: ``order_store_role``.
    """
    dialect = conn.dialect.name
    if dialect in ("mysql", "mariadb"):
        may = _mysql_checker(conn)
    elif dialect == "postgresql":
        may = _postgres_checker(conn)
    elif dialect == "sqlite":
        may = _sqlite_checker(conn)
    else:
        return "admin", None
    if isinstance(may, str):       # the whole database refuses writes: one reason for all
        return "viewer", may
    role, why = "viewer", None
    for candidate in ("operator", "admin"):
        missing = [words for priv, table, words in ROLE_NEEDS[candidate][source] if not may(priv, table)]
        if missing:
            why = f"the {source} database user cannot {missing[0]}"
            break
        role = candidate
    return role, why


# The order store (MongoDB): what each role's first writes need, as (action, collection, words).
ORDER_ROLE_NEEDS: dict[str, list[tuple[str, str, str]]] = {
    "operator": [("insert", "email_log", "insert into email_log"), ("update", "nc_email_claims", "claim emails"),
                 ("update", "nc_actions", "record actions")],
    "admin": [("remove", "email_log", "delete"), ("insert", "nc_archive", "archive")],
}


def order_store_role(db) -> tuple[str | None, str | None]:
    """The highest console role the order store's user may act as, and why not higher; or (None, why
    the server did not say), when the configured role holds.

    Reads ``connectionStatus`` with ``showPrivileges``: the privileges of the authenticated users
    (their roles resolved by the server). No authenticated user on a server that let the console read
    means access control is off: every connection may do everything.
    """
    import pymongo.errors
    try:
        status = db.command("connectionStatus", showPrivileges=True)
    except NotImplementedError:      # mongomock: it has no users and no privileges to tell
        return None, ("the orders database does not say what its user may do (it answers no "
                      "connectionStatus); the configured role holds")
    except pymongo.errors.PyMongoError as exc:
        first = str(exc).split("\n")[0].split(",")[0]
        return None, f"the orders database did not say what its user may do ({first}); the configured role holds"
    info = status.get("authInfo") or {}
    if not info.get("authenticatedUsers"):
        return "admin", "the orders database runs without access control: its connections may do everything"
    privileges = info.get("authenticatedUserPrivileges")
    if privileges is None:
        return None, "the orders database did not list its user's privileges; the configured role holds"
    may = _mongo_checker(privileges, db.name)
    role, why = "viewer", None
    for candidate in ("operator", "admin"):
        missing = [words for action, coll, words in ORDER_ROLE_NEEDS[candidate] if not may(action, coll)]
        if missing:
            why = f"the orders database user cannot {missing[0]}"
            break
        role = candidate
    return role, why


def _mongo_checker(privileges: list[dict], database: str):
    grants: list[tuple[dict, set[str]]] = [(p.get("resource") or {}, set(p.get("actions") or ()))
                                           for p in privileges]

    def covers(resource: dict, collection: str) -> bool:
        if resource.get("anyResource"):
            return True
        if "db" not in resource or "collection" not in resource:
            return False               # the cluster, or a system buffer: not a collection
        return resource["db"] in ("", database) and resource["collection"] in ("", collection) \
            and not collection.startswith("system.")

    def may(action: str, collection: str) -> bool:
        return any((action in actions or "anyAction" in actions) and covers(resource, collection)
                   for resource, actions in grants)
    return may


def lower_role(a: str, b: str) -> str:
    return a if ROLES.index(a) <= ROLES.index(b) else b


def _mysql_checker(conn):
    from sqlalchemy import text
    read_only = conn.execute(text("SELECT @@global.read_only")).scalar()
    grantee = conn.execute(text("SELECT CURRENT_USER()")).scalar() or ""
    user, _, host = grantee.rpartition("@")
    quoted = f"'{user}'@'{host}'"
    privs = {p for (p,) in conn.execute(text(
        "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = :g"), {"g": quoted})}
    if read_only and not privs & {"SUPER", "READ_ONLY ADMIN"}:
        return "the database is read-only (read_only=ON)"
    schema = {p for (p,) in conn.execute(text(
        "SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = :g "
        "AND TABLE_SCHEMA = DATABASE()"), {"g": quoted})}
    tables: set[tuple[str, str]] = set()
    for q in ("SELECT TABLE_NAME, PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES "
              "WHERE GRANTEE = :g AND TABLE_SCHEMA = DATABASE()",
              "SELECT DISTINCT TABLE_NAME, PRIVILEGE_TYPE FROM information_schema.COLUMN_PRIVILEGES "
              "WHERE GRANTEE = :g AND TABLE_SCHEMA = DATABASE()"):
        tables |= {(t, p) for t, p in conn.execute(text(q), {"g": quoted})}

    def may(priv: str, table: str) -> bool:
        return priv in privs or priv in schema or (table, priv) in tables
    return may


def _postgres_checker(conn):
    from sqlalchemy import text
    if conn.execute(text("SELECT pg_is_in_recovery()")).scalar():
        return "the database is a standby (read-only)"
    if conn.execute(text("SHOW transaction_read_only")).scalar() == "on":
        return "the database's transactions are read-only"

    def may(priv: str, table: str) -> bool:
        if not conn.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}).scalar():
            return False
        fn = "has_table_privilege" if priv == "DELETE" else "has_any_column_privilege"
        return bool(conn.execute(text(f"SELECT {fn}(:t, :p)"), {"t": table, "p": priv}).scalar())
    return may


def _sqlite_checker(conn):
    import os
    path = conn.engine.url.database
    if path and path != ":memory:" and not os.access(path, os.W_OK):
        return "the database file is read-only"
    return lambda _priv, _table: True
