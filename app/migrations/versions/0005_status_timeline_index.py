"""Index for the status timeline of an issue (dispatch duplicate rule).

Revision ID: 0005
Revises: 0004

Two status changes to the same status are one event only when no other
status change of their issue lies between them, so the duplicate scans and
cleanup read an issue's status changes within a time span. One new
secondary index on a production table (no column is created, altered or
dropped), created only when the table exists and the index is not there yet:

notifications
  nc_notif_issue_status (issue_id, type, created_at)
      the status_changed notifications of one issue within [first, last]
      (``fetch_status_timeline``), and those after a new status change
      (the incremental scan's re-examined keys): one index range per issue.
      ``idx_event`` (issue_id, comment_id, user_id) narrows to the issue
      only, every comment and every recipient over all time.

Built online as in 0002: PostgreSQL ``CREATE INDEX CONCURRENTLY`` in an
autocommit block (an INVALID leftover of an interrupted build is dropped and
built again); MySQL / MariaDB ``ALGORITHM=INPLACE, LOCK=NONE``; SQLite a
plain CREATE INDEX.
"""
from app.migrations.online_indexes import create_online, drop

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

STATUS_TIMELINE_INDEXES = (
    ("notifications", "nc_notif_issue_status", ("issue_id", "type", "created_at")),
)


def upgrade():
    create_online(STATUS_TIMELINE_INDEXES)


def downgrade():
    drop(STATUS_TIMELINE_INDEXES)
