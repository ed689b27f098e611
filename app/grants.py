"""The database GRANTs that make each console role real at the database level.

The console checks roles in its service layer; these grants make the same
rule hold in the database, so a viewer's console cannot write even if its
role setting were changed. ``python main.py db grants --source S --role R
--user "'name'@'%'"`` prints them for MySQL/MariaDB.

* viewer:   SELECT only. Refused attempts it cannot record in the database go
            to the local audit file (``audit-local.jsonl`` in the data dir).
* operator: viewer + what retry writes: the status columns of failed items,
            new notifications, claims, leases and the action ledger.
* admin:    operator + what cleanup and undo write: DELETE and re-INSERT of
            duplicate rows, and the archive.
* ``db upgrade`` runs as a schema owner (CREATE, ALTER, INDEX, DROP on the
  console's ``nc_*`` tables and INDEX on the production tables); no role
  needs those rights at run time.
"""
from __future__ import annotations

from .errors import UsageError

# (table, privileges) per source and role; each role adds to the one before.
_READ = {
    "cart": ["users", "cart_abandonment_log", "nc_action", "nc_action_item", "nc_archive",
             "nc_cart_claim", "nc_dispatch_attempt", "nc_cursor", "nc_alembic_version"],
    "dispatch": ["users", "issues", "issue_watchers", "notification_dispatch_log", "notifications",
                 "nc_action", "nc_action_item", "nc_archive", "nc_cart_claim", "nc_dispatch_attempt",
                 "nc_cursor", "nc_alembic_version"],
}
_OPERATOR = {
    "cart": [("cart_abandonment_log", "UPDATE (email_sent, sent_at, error_message)"),
             ("nc_cart_claim", "INSERT, UPDATE"),
             ("nc_action", "INSERT, UPDATE"), ("nc_action_item", "INSERT"), ("nc_cursor", "INSERT, UPDATE")],
    "dispatch": [("notification_dispatch_log", "UPDATE (status, completed_at, error_message, recipients_count)"),
                 ("notifications", "INSERT"), ("nc_dispatch_attempt", "INSERT, UPDATE"),
                 ("nc_action", "INSERT, UPDATE"), ("nc_action_item", "INSERT"), ("nc_cursor", "INSERT, UPDATE")],
}
_ADMIN = {
    "cart": [("cart_abandonment_log", "INSERT, DELETE"), ("nc_archive", "INSERT, UPDATE")],
    "dispatch": [("notifications", "DELETE"), ("nc_archive", "INSERT, UPDATE")],
}
ROLES = ("viewer", "operator", "admin")


def grant_statements(source: str, role: str, user: str, database: str,
                     extra_read_tables: list[str] | None = None) -> list[str]:
    """GRANT statements for ``user`` (e.g. ``'nc_viewer'@'%'``) on ``database``."""
    if source not in _READ:
        raise UsageError(f"Grants are for the SQL sources cart and dispatch, not '{source}'; "
                         "on MongoDB give a viewer the built-in 'read' role and operators/admins 'readWrite'.")
    if role not in ROLES:
        raise UsageError(f"Unknown role '{role}': choose viewer, operator or admin.")
    db = f"`{database}`"
    tables = list(dict.fromkeys(_READ[source] + list(extra_read_tables or [])))
    out = [f"GRANT SELECT ON {db}.`{t}` TO {user};" for t in tables]
    if role in ("operator", "admin"):
        out += [f"GRANT {privs} ON {db}.`{t}` TO {user};" for t, privs in _OPERATOR[source]]
    if role == "admin":
        out += [f"GRANT {privs} ON {db}.`{t}` TO {user};" for t, privs in _ADMIN[source]]
    return out
