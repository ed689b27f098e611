"""Alembic environment for the console's own tables.

Run through ``app.migrate.upgrade`` (``python main.py db upgrade``), which
hands over an open connection; the version table is ``nc_alembic_version``
so it never meets an application's own ``alembic_version``.
"""
from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None,
                  version_table="nc_alembic_version", transactional_ddl=False)
with context.begin_transaction():
    context.run_migrations()
