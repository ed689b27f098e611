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
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

STATUS_TIMELINE_INDEXES = (
    ("notifications", "nc_notif_issue_status", ("issue_id", "type", "created_at")),
)


def upgrade():
    bind = op.get_bind()
    dialect = bind.dialect.name
    if dialect == "postgresql":
        with op.get_context().autocommit_block():
            _create_indexes_postgresql()
        return
    inspector = sa.inspect(bind)
    present = set(inspector.get_table_names())
    for table_name, index_name, columns in STATUS_TIMELINE_INDEXES:
        if table_name not in present:
            continue
        if index_name in {ix["name"] for ix in inspector.get_indexes(table_name)}:
            continue
        if dialect in ("mysql", "mariadb"):
            quote = bind.dialect.identifier_preparer.quote
            op.execute(f"CREATE INDEX {quote(index_name)} ON {quote(table_name)} "
                       f"({', '.join(quote(c) for c in columns)}) ALGORITHM=INPLACE LOCK=NONE")
        else:
            op.create_index(index_name, table_name, list(columns))


def _create_indexes_postgresql():
    bind = op.get_bind()
    present = set(sa.inspect(bind).get_table_names())
    for table_name, index_name, columns in STATUS_TIMELINE_INDEXES:
        if table_name not in present:
            continue
        valid = bind.execute(sa.text(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.oid = to_regclass(quote_ident(:name))"), {"name": index_name}).scalar()
        if valid:
            continue
        if valid is not None:  # left INVALID by an interrupted concurrent build
            op.drop_index(index_name, table_name=table_name, postgresql_concurrently=True)
        op.create_index(index_name, table_name, list(columns), postgresql_concurrently=True)


def downgrade():
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    present = set(inspector.get_table_names())
    for table_name, index_name, _ in STATUS_TIMELINE_INDEXES:
        if table_name in present and index_name in {ix["name"] for ix in inspector.get_indexes(table_name)}:
            op.drop_index(index_name, table_name=table_name)
