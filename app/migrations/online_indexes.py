"""Secondary indexes on production tables, built online by the console's revisions.

Only indexes are added (no column is created, altered or dropped), each only
when its table exists and it is not there yet:

* PostgreSQL: ``CREATE INDEX CONCURRENTLY`` in an autocommit block (it
  cannot run inside a transaction); an INVALID leftover of an interrupted
  concurrent build is dropped and built again;
* MySQL / MariaDB: ``ALGORITHM=INPLACE, LOCK=NONE``, so writers carry on;
* SQLite: a plain CREATE INDEX.

``indexes`` is a sequence of (table, index name, columns).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def create_online(indexes) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            _create_postgresql(indexes)
        return
    inspector = sa.inspect(bind)
    present = set(inspector.get_table_names())
    for table_name, index_name, columns in indexes:
        if table_name not in present:
            continue
        if index_name in {ix["name"] for ix in inspector.get_indexes(table_name)}:
            continue
        if bind.dialect.name in ("mysql", "mariadb"):
            quote = bind.dialect.identifier_preparer.quote
            op.execute(f"CREATE INDEX {quote(index_name)} ON {quote(table_name)} "
                       f"({', '.join(quote(c) for c in columns)}) ALGORITHM=INPLACE LOCK=NONE")
        else:
            op.create_index(index_name, table_name, list(columns))


def _create_postgresql(indexes) -> None:
    bind = op.get_bind()
    present = set(sa.inspect(bind).get_table_names())
    for table_name, index_name, columns in indexes:
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


def drop(indexes) -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    present = set(inspector.get_table_names())
    for table_name, index_name, _ in indexes:
        if table_name in present and index_name in {ix["name"] for ix in inspector.get_indexes(table_name)}:
            op.drop_index(index_name, table_name=table_name)
