"""Index for "who retried this item last" (the Failed & Stuck list, retry reasons).

Revision ID: 0006
Revises: 0005

The Failed & Stuck page shows, per item, the last console retry (by whom,
when), and a retry that finds an item already done names the console that
did it ("already retried by ana@ws2 at 10:42 UTC"). Both look up the
ledger's items by item id and outcome; ``ix_nc_action_item_action``
(action_id, item_id) cannot answer that without reading every action.

nc_action_item
  ix_nc_action_item_item (item_id, outcome)

The table is the console's own; the index is built online as in 0002.
"""
from app.migrations.online_indexes import create_online, drop

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ITEM_LOOKUP_INDEXES = (
    ("nc_action_item", "ix_nc_action_item_item", ("item_id", "outcome")),
)


def upgrade():
    create_online(ITEM_LOOKUP_INDEXES)


def downgrade():
    drop(ITEM_LOOKUP_INDEXES)
