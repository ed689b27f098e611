"""The console's own tables: action ledger and audit, archive, claims, leases, cursors.

Revision ID: 0001
Revises:
"""
from alembic import op

from app.schema import console_metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    bind = op.get_bind()
    # checkfirst: a table an earlier, interrupted upgrade created is kept as is.
    tables = [console_metadata.tables[name] for name in (
        "nc_action", "nc_action_item", "nc_archive", "nc_cart_claim",
        "nc_dispatch_attempt", "nc_cursor")]
    console_metadata.create_all(bind, tables=tables, checkfirst=True)
