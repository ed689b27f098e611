"""Cart duplicate member index: the rows a full cart duplicate scan reads.

Revision ID: 0003
Revises: 0002

Console table nc_cart_dup_bucket (see app.read.cart_members): every sent row
of every (user_id, cart_hash) with two or more sent rows, packed per bucket
of user ids. When this database holds the cart log, the index is built here,
from scratch (one GROUP BY pass, then the members of the keys found: tens of
seconds at 2 M rows); elsewhere the table stays empty. No production table
or column is touched.
"""
import sqlalchemy as sa
from alembic import op

from app.schema import console_metadata

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    from app.read import cart_members

    bind = op.get_bind()
    console_metadata.create_all(bind, tables=[console_metadata.tables["nc_cart_dup_bucket"]], checkfirst=True)
    if "cart_abandonment_log" in sa.inspect(bind).get_table_names() and cart_members.read_state(bind) is None:
        cart_members.build_in(bind, report=cart_members.report_to_stderr)


def downgrade():
    bind = op.get_bind()
    if "nc_cart_dup_bucket" in sa.inspect(bind).get_table_names():
        op.drop_table("nc_cart_dup_bucket")
    bind.execute(sa.text("DELETE FROM nc_cursor WHERE name = 'cart_dup_members'"))
