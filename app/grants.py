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
