"""SQLAlchemy Core tables: the production schemas and the console's own tables.

The production tables mirror ``data/schemas/*.mysql.sql`` (copies of the
shared production schemas) column for column. On MySQL/MariaDB the console
creates them from those very files (tests and the demo); elsewhere from this
metadata, with portable types.

The console's own tables (prefix ``nc_``) are created by ``db upgrade``
through the Alembic migrations in ``app/migrations``; the tables below are
their current shape, used by queries.
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
                        BigInteger,
                        Column,
                        DateTime,
                        Enum,
                        Index,
                        Integer,
                        LargeBinary,
                        MetaData,
                        Numeric,
                        PrimaryKeyConstraint,
                        SmallInteger,
                        String,
                        Table,
                        Text,
                        UniqueConstraint,
)
from sqlalchemy.dialects import mysql

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "data" / "schemas"

# Portable types that become the exact production types on MySQL.
# SQLite autoincrements only an INTEGER PRIMARY KEY (the rowid alias), so big ids are INTEGER there.
BigId = (BigInteger().with_variant(mysql.BIGINT(unsigned=True), "mysql", "mariadb")
         .with_variant(Integer(), "sqlite"))
IntId = Integer().with_variant(mysql.INTEGER(unsigned=True), "mysql", "mariadb")
Ts3 = DateTime().with_variant(mysql.TIMESTAMP(fsp=3), "mysql", "mariadb")
Dt3 = DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb")
Bool1 = SmallInteger().with_variant(mysql.TINYINT(1), "mysql", "mariadb")
# Console timestamps: microseconds where the database has them.
NcTime = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

# --------------------------------------------------------------------------
# cart (production)
cart_metadata = MetaData()

cart_users = Table(
    "users", cart_metadata,
    Column("id", IntId, primary_key=True, autoincrement=True),
    Column("email", String(255), nullable=False),
    Column("name", String(255), nullable=False),
    sqlite_autoincrement=True,
)

cart_log = Table(
    "cart_abandonment_log", cart_metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", IntId, nullable=False),
    Column("cart_hash", String(64).with_variant(mysql.CHAR(64), "mysql", "mariadb"), nullable=False),
    Column("cart_value", Numeric(10, 2), nullable=False),
    Column("email_sent", Bool1, nullable=False, server_default="0"),
    Column("created_at", Dt3, nullable=False),
    Column("sent_at", Dt3, nullable=True),
    Column("error_message", Text, nullable=True),
    Index("idx_user_cart_unique", "user_id", "cart_hash", "created_at"),
    sqlite_autoincrement=True,
)

# --------------------------------------------------------------------------
# dispatch (production)
dispatch_metadata = MetaData()

dispatch_users = Table(
    "users", dispatch_metadata,
    Column("id", IntId, primary_key=True, autoincrement=True),
    Column("email", String(255), nullable=False),
    Column("display_name", String(255), nullable=False),
    sqlite_autoincrement=True,
)

issues = Table(
    "issues", dispatch_metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("issue_key", String(32), nullable=False, unique=True),
    Column("title", String(255), nullable=False),
    Column("reporter_id", IntId, nullable=False),
    Column("assignee_id", IntId, nullable=True),
    Column("status", String(32), nullable=False, server_default="open"),
    sqlite_autoincrement=True,
)

issue_watchers = Table(
    "issue_watchers", dispatch_metadata,
    Column("issue_id", BigId, nullable=False),
    Column("user_id", IntId, nullable=False),
    PrimaryKeyConstraint("issue_id", "user_id"),
)

DISPATCH_TYPES = ("comment_added", "status_changed", "other")
DISPATCH_STATUSES = ("pending", "completed", "failed")

dispatch_log = Table(
    "notification_dispatch_log", dispatch_metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("dispatch_id", String(255), nullable=False, unique=True),
    Column("dispatch_type", Enum(*DISPATCH_TYPES, name="dispatch_type", native_enum=True,
                                 create_constraint=False), nullable=False),
    Column("issue_id", BigId, nullable=False),
    Column("comment_id", BigId, nullable=True),
    Column("actor_user_id", IntId, nullable=False),
    Column("recipients_count", IntId, server_default="0"),
    Column("status", Enum(*DISPATCH_STATUSES, name="dispatch_status", native_enum=True,
                          create_constraint=False), server_default="pending"),
    Column("created_at", Ts3, nullable=False),
    Column("completed_at", Ts3, nullable=True),
    Column("error_message", Text, nullable=True),
    Index("idx_status_created", "status", "created_at"),
    Index("idx_dispatch_log_created", "created_at"),
    sqlite_autoincrement=True,
)

notifications = Table(
    "notifications", dispatch_metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user_id", IntId, nullable=False),
    Column("type", String(50), nullable=False),
    Column("issue_id", BigId, nullable=False),
    Column("comment_id", BigId, nullable=True),
    Column("actor_user_id", IntId, nullable=False),
    Column("message", Text, nullable=False),
    Column("is_read", Bool1, nullable=False, server_default="0"),
    Column("created_at", Ts3, nullable=False),
    Column("dispatch_id", String(255), nullable=True),
    UniqueConstraint("dispatch_id", "user_id", name="uq_dispatch_recipient"),
    Index("idx_event", "issue_id", "comment_id", "user_id"),
    # "idx_created" on MySQL (from the SQL file); index names are per database
    # on SQLite and PostgreSQL, so the portable copy needs its own name.
    Index("idx_notifications_created", "created_at"),
    sqlite_autoincrement=True,
)

PRODUCTION_TABLES = {
    "cart": (cart_metadata, ("users", "cart_abandonment_log")),
    "dispatch": (dispatch_metadata, ("users", "issues", "issue_watchers",
                                     "notification_dispatch_log", "notifications")),
}

# --------------------------------------------------------------------------
# The console's own tables. The same set lives in each SQL source database,
# so an action's archive, deletions and outcome commit in one transaction.
console_metadata = MetaData()

nc_action = Table(
    "nc_action", console_metadata,
    Column("action_id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),          # retry | cleanup | undo | ...
    Column("source", String(16), nullable=False),
    Column("params_json", Text, nullable=False),
    Column("params_hash", String(64), nullable=False),
    Column("operator", String(255), nullable=False),     # OS user@host
    Column("role", String(16), nullable=False),
    Column("status", String(16), nullable=False),        # running | succeeded | failed | refused
    Column("started_at", NcTime, nullable=False),
    Column("heartbeat_at", NcTime, nullable=True),      # a running action's last sign of life
    # Fencing token of the console running the action: a console that lost
    # it (its action was taken over) can neither heartbeat nor finish.
    Column("lease_token", String(64), nullable=True),
    Column("finished_at", NcTime, nullable=True),
    Column("outcome_json", LongText, nullable=True),
    Column("message", Text, nullable=True),
    Index("ix_nc_action_started", "started_at"),
)

nc_action_item = Table(
    "nc_action_item", console_metadata,
    Column("id", BigInteger().with_variant(mysql.BIGINT(unsigned=True), "mysql", "mariadb")
           .with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("action_id", String(64), nullable=False),
    Column("item_id", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),       # retried | skipped | failed | archived | restored
    Column("detail", Text, nullable=True),
    Index("ix_nc_action_item_action", "action_id", "item_id"),
)

nc_archive = Table(
    "nc_archive", console_metadata,
    Column("id", BigInteger().with_variant(mysql.BIGINT(unsigned=True), "mysql", "mariadb")
           .with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("action_id", String(64), nullable=False),
    Column("table_name", String(64), nullable=False),
    Column("row_id", String(64), nullable=False),
    Column("row_json", LongText, nullable=False),
    Column("archived_at", NcTime, nullable=False),
    Column("restored_at", NcTime, nullable=True),
    UniqueConstraint("action_id", "table_name", "row_id", name="uq_nc_archive_row"),
)

# Claim for a cart abandonment email: the database-level guard that makes
# "one email per (user, cart) per 24 h" hold across processes and hosts.
nc_cart_claim = Table(
    "nc_cart_claim", console_metadata,
    Column("user_id", IntId, nullable=False),
    Column("cart_hash", String(64), nullable=False),
    Column("log_id", BigId, nullable=True),
    Column("state", String(16), nullable=False),         # sending | sent | failed
    Column("claimed_at", NcTime, nullable=False),
    Column("sent_at", NcTime, nullable=True),
    Column("owner", String(255), nullable=True),
    PrimaryKeyConstraint("user_id", "cart_hash"),
)

# Retry bookkeeping for dispatches: attempts and the lease a retrying
# console holds, so two workstations never retry the same stuck row at once.
nc_dispatch_attempt = Table(
    "nc_dispatch_attempt", console_metadata,
    Column("log_id", BigId, primary_key=True, autoincrement=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_until", NcTime, nullable=True),
    Column("owner", String(255), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("updated_at", NcTime, nullable=False),
)

# High-water marks of incremental readers (rollups, duplicate scans).
nc_cursor = Table(
    "nc_cursor", console_metadata,
    Column("name", String(64), primary_key=True),
    Column("position", String(255), nullable=False),
    Column("updated_at", NcTime, nullable=False),
)


# --------------------------------------------------------------------------
# Read-side rollups (revision 0002), advanced incrementally from a high-water
# mark in nc_cursor so chart queries never scan the production log.

# Per minute and series ("dispatch:<dispatch_type>" or "cart"): settled items
# (completed dispatches / sent cart emails) by their creation minute, their
# summed latency, and a latency histogram (app.read.histogram.NBINS little-endian
# uint32 counts in log-spaced bins).
nc_latency_minute = Table(
    "nc_latency_minute", console_metadata,
    Column("series", String(48), nullable=False),
    Column("minute", DateTime, nullable=False),
    Column("settled", Integer, nullable=False, server_default="0"),
    Column("latency_sum_ms", Numeric(20, 3), nullable=False, server_default="0"),
    Column("hist", LargeBinary().with_variant(mysql.BLOB(), "mysql", "mariadb"), nullable=False),
    PrimaryKeyConstraint("series", "minute"),
    Index("ix_nc_latency_minute_minute", "minute"),
)

# Rows a rollup saw unsettled (pending or failed); re-checked until they
# settle or leave the statistics horizon.
nc_rollup_unsettled = Table(
    "nc_rollup_unsettled", console_metadata,
    Column("source", String(16), nullable=False),
    Column("row_id", BigId, nullable=False, autoincrement=False),
    Column("created_at", DateTime, nullable=False),
    PrimaryKeyConstraint("source", "row_id"),
    Index("ix_nc_rollup_unsettled_created", "source", "created_at"),
)

# Cart duplicate member index (revision 0003): every sent row of every
# (user_id, cart_hash) holding two or more sent rows, packed per bucket
# (user_id modulo app.read.cart_members.BUCKETS): keys, ids and values as
# JSON, created_at/sent_at as little-endian int64 microseconds, so a full
# duplicate scan reads a few thousand rows instead of the production log.
# Maintained by app.read.cart_members from high-water marks in nc_cursor.
nc_cart_dup_bucket = Table(
    "nc_cart_dup_bucket", console_metadata,
    Column("bucket", Integer, primary_key=True, autoincrement=False),
    Column("key_count", Integer, nullable=False),
    Column("member_count", Integer, nullable=False),
    Column("members", LongText, nullable=False),
    Column("times", LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb"), nullable=False),
)


# Every console table, whichever migration adds it (defined last, after all of them).
CONSOLE_TABLES = tuple(t.name for t in console_metadata.sorted_tables)
