"""Read side: indexes the monitoring queries need, and the statistics rollup tables.

Revision ID: 0002
Revises: 0001

Indexes added to production tables (new secondary indexes only; no
production column is created, altered or dropped). Each is created only when
its table exists in this database and it is not there yet:

cart_abandonment_log
  nc_cart_sent_key (email_sent, user_id, cart_hash, created_at)
      duplicate scan phase 1: GROUP BY (user_id, cart_hash) over sent rows
      read from the index alone (no row lookups), and phase 2 key lookups.
  nc_cart_unsent (email_sent, created_at)
      failed / stuck list: unsent rows older than the in-progress window,
      newest first, one index range.
  nc_cart_sent_at (sent_at)
      cart email feed cursor and the incremental duplicate scan's "sent since
      the last scan" (rows are inserted unsent and updated when sent).
notifications
  nc_notif_event (user_id, type, issue_id, comment_id, actor_user_id, created_at)
      dispatch duplicate scan: GROUP BY the semantic event from the index
      alone; phase 2 looks members up by key.
notification_dispatch_log
  nc_dispatch_status_times (status, created_at, completed_at, dispatch_type)
      covering index for the statistics' failed/pending counts per bucket
      and exact latency windows: one index range, no row lookups.

Console tables: nc_latency_minute (per-minute latency histograms) and
nc_rollup_unsettled (rows to re-check until they settle).

The indexes go onto live production tables without blocking their writers:

* PostgreSQL: ``CREATE INDEX CONCURRENTLY`` inside an autocommit block (it
  cannot run in a transaction). An index a broken earlier run left INVALID
  is dropped (concurrently) and built again, so running the upgrade again
  after a failure repairs it.
* MySQL / MariaDB: ``ALGORITHM=INPLACE, LOCK=NONE`` — InnoDB builds online
  anyway; saying so makes the server refuse rather than lock the table.
* SQLite: a plain CREATE INDEX (a local file, no concurrent writers to speak of).
"""
import sqlalchemy as sa
from alembic import op

from app.migrations.online_indexes import create_online, drop
from app.schema import console_metadata

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

READ_SIDE_INDEXES = (
    ("cart_abandonment_log", "nc_cart_sent_key", ("email_sent", "user_id", "cart_hash", "created_at")),
    ("cart_abandonment_log", "nc_cart_unsent", ("email_sent", "created_at")),
    ("cart_abandonment_log", "nc_cart_sent_at", ("sent_at",)),
    ("notifications", "nc_notif_event", ("user_id", "type", "issue_id", "comment_id", "actor_user_id",
                                         "created_at")),
    ("notification_dispatch_log", "nc_dispatch_status_times", ("status", "created_at", "completed_at",
                                                               "dispatch_type")),
)


def upgrade():
    bind = op.get_bind()
    console_metadata.create_all(bind, tables=[console_metadata.tables["nc_latency_minute"],
                                              console_metadata.tables["nc_rollup_unsettled"]],
                                checkfirst=True)
    # The console tables above are committed first, then each index builds while writers carry on.
    create_online(READ_SIDE_INDEXES)


def downgrade():
    drop(READ_SIDE_INDEXES)
    present = set(sa.inspect(op.get_bind()).get_table_names())
    for name in ("nc_rollup_unsettled", "nc_latency_minute"):
        if name in present:
            op.drop_table(name)
