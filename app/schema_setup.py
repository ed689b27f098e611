"""Creating schemas: production tables (tests, demo) and the console's own (db upgrade)."""
from __future__ import annotations

import re

import pymongo
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from . import migrate, registry
from .errors import ConsoleError, SchemaMissing, SourceUnavailable
from .schema import PRODUCTION_TABLES, SCHEMA_DIR
from .sources import OrderStore, check_order_store, describe_db_error

# Console collections in the order store, and the version their indexes are at.
ORDER_SCHEMA_VERSION = 2  # 2: nc_item_lookup on nc_action_items
ORDER_CONSOLE_COLLECTIONS = ("nc_email_claims", "nc_actions", "nc_action_items", "nc_archive", "nc_meta")


def production_sql_statements(source: str) -> list[str]:
    """The statements of data/schemas/<source>.mysql.sql, comments stripped."""
    raw = (SCHEMA_DIR / f"{source}.mysql.sql").read_text(encoding="utf-8")
    raw = re.sub(r"--[^\n]*", "", raw)
    return [s.strip() for s in raw.split(";") if s.strip()]


def create_production_schema(engine: Engine, source: str) -> None:
    """Create the production tables of ``source`` (for tests and the demo).

    On MySQL/MariaDB the production SQL file itself runs; elsewhere the
    portable metadata in ``app.schema``.
    """
    backend = engine.url.get_backend_name()
    if backend in ("mysql", "mariadb"):
        with engine.begin() as conn:
            for stmt in production_sql_statements(source):
                conn.exec_driver_sql(stmt)
    else:
        metadata, _ = PRODUCTION_TABLES[source]
        metadata.create_all(engine)


def upgrade_sql_source(engine: Engine, source: str) -> str:
    try:
        missing = migrate.missing_production_tables(engine, source)
        if missing:
            raise SchemaMissing(
                f"The {source} database has no {', '.join(missing)} table: point sources.{source}.url "
                f"at the production {source} database.")
        revision = migrate.upgrade_sql(engine)
    except (DBAPIError, SQLAlchemyError) as exc:
        raise SourceUnavailable(describe_db_error(source, exc)) from None
    return revision


def upgrade_order_store(store: OrderStore) -> int:
    check_order_store(store)
    db = store.db
    db["orders"].create_index([("id", pymongo.ASCENDING)], unique=True, name="id_1")
    db["orders"].create_index([("updated_at", pymongo.ASCENDING), ("_id", pymongo.ASCENDING)],
                              name="nc_updated_at_id")
    # Not unique: production already holds duplicates the console must show.
    db["email_log"].create_index([("order_id", pymongo.ASCENDING), ("event", pymongo.ASCENDING)],
                                 name="nc_order_event")
    db["email_log"].create_index([("sent_at", pymongo.ASCENDING)], name="nc_sent_at")
    # The guard: one claim per (order, stage email), whatever the concurrency.
    db["nc_email_claims"].create_index([("order_id", pymongo.ASCENDING), ("event", pymongo.ASCENDING)],
                                       unique=True, name="nc_claim_order_event")
    db["nc_action_items"].create_index([("action_id", pymongo.ASCENDING)], name="nc_item_action")
    # Who retried an item last (the Failed & Stuck list, retry reasons).
    db["nc_action_items"].create_index([("item_id", pymongo.ASCENDING), ("outcome", pymongo.ASCENDING)],
                                       name="nc_item_lookup")
    db["nc_archive"].create_index([("action_id", pymongo.ASCENDING)], name="nc_archive_action")
    db["nc_actions"].create_index([("started_at", pymongo.DESCENDING)], name="nc_action_started")
    db["nc_meta"].update_one({"_id": "schema"}, {"$set": {"version": ORDER_SCHEMA_VERSION}}, upsert=True)
    store.dirty = True
    store.checkpoint()
    return ORDER_SCHEMA_VERSION


def order_schema_ready(store: OrderStore) -> bool:
    meta = store.db["nc_meta"].find_one({"_id": "schema"})
    return bool(meta) and meta.get("version", 0) >= ORDER_SCHEMA_VERSION


def require_order_schema(store: OrderStore) -> None:
    if not order_schema_ready(store):
        raise SchemaMissing(
            f"The orders database lacks the console's own collections and indexes: run `{migrate.UPGRADE_HINT}` first.")


def require_schema(workspace, source: str) -> None:
    """Raise SchemaMissing (naming the command to run) unless ``source`` is ready."""
    if not registry.source(source).is_sql:
        require_order_schema(workspace.orders())
    else:
        try:
            migrate.require_console_schema(workspace.engine(source), source)
        except (DBAPIError, SQLAlchemyError) as exc:
            raise SourceUnavailable(describe_db_error(source, exc)) from None


def upgrade_workspace(workspace) -> list[dict]:
    """``db upgrade`` on every configured source; one result per source."""
    results = []
    for source in registry.NAMES:
        if not workspace.has(source):
            continue
        try:
            if not registry.source(source).is_sql:
                version = upgrade_order_store(workspace.orders())
                message = f"order store at console schema version {version}"
            else:
                revision = upgrade_sql_source(workspace.engine(source), source)
                message = f"console tables at revision {revision}"
            results.append({"source": source, "ok": True, "message": message})
        except ConsoleError as exc:
            results.append({"source": source, "ok": False, "message": exc.message})
    return results
