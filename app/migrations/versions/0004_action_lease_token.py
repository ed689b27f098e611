"""nc_action.lease_token: the fencing token of the console running an action.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("nc_action")}
    if "lease_token" not in columns:  # 0001 on a new database already has it
        op.add_column("nc_action", sa.Column("lease_token", sa.String(64), nullable=True))
