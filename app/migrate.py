"""``db upgrade``: the console's own tables, collections and indexes.

SQL sources run the Alembic chain in ``app/migrations`` (version table
``nc_alembic_version``); the order store gets its collections and indexes
with ``create_index``. Both are idempotent and never touch existing columns.
"""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from .errors import SchemaMissing
from .schema import CONSOLE_TABLES, PRODUCTION_TABLES

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
UPGRADE_HINT = "python main.py db upgrade"


def _alembic_config(connection) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    script = ScriptDirectory.from_config(_alembic_config(None))
    head = script.get_current_head()
    assert head is not None  # the console ships its revisions
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": "nc_alembic_version"})
        return ctx.get_current_revision()


def upgrade_sql(engine: Engine) -> str:
    """Bring the console's tables in this database to the newest revision.

    Alembic owns the transactions (one per revision), so a revision may step
    out of them with ``autocommit_block`` (PostgreSQL CREATE INDEX CONCURRENTLY).
    """
    with engine.connect() as conn:
        command.upgrade(_alembic_config(conn), "head")
        conn.commit()
    return head_revision()


def missing_production_tables(engine: Engine, source: str) -> list[str]:
    _, names = PRODUCTION_TABLES[source]
    present = set(inspect(engine).get_table_names())
    return [n for n in names if n not in present]


def console_schema_ready(engine: Engine) -> bool:
    present = set(inspect(engine).get_table_names())
    if not set(CONSOLE_TABLES) <= present:
        return False
    return current_revision(engine) == head_revision()


def require_console_schema(engine: Engine, source: str) -> None:
    """Raise SchemaMissing with the command to run when the console tables lag."""
    missing = missing_production_tables(engine, source)
    if missing:
        raise SchemaMissing(
            f"The {source} database has no {', '.join(missing)} table: point sources.{source}.url "
            f"at the production {source} database.")
    if not console_schema_ready(engine):
        raise SchemaMissing(
            f"The {source} database lacks the console's own tables: run `{UPGRADE_HINT}` first.")
