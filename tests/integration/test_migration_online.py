"""``db upgrade`` builds the read-side indexes on live production tables without blocking their writers."""
from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from sqlalchemy import create_engine, event, func, insert, select, text

from app import migrate
from app.schema import cart_log, dispatch_log, notifications
from app.schema_setup import upgrade_sql_source

READ_SIDE = {"cart": ("nc_cart_sent_key", "nc_cart_unsent", "nc_cart_sent_at"),
             "dispatch": ("nc_notif_event", "nc_dispatch_status_times")}
T0 = dt.datetime(2025, 1, 1, 10)


def _cart_rows(n, start=0):
    return [{"user_id": i % 7, "cart_hash": f"{i:064d}", "cart_value": 10, "email_sent": i % 2,
             "created_at": T0 + dt.timedelta(minutes=i), "sent_at": None, "error_message": None}
            for i in range(start, start + n)]


def _populate(ws):
    with ws.engine("cart").begin() as conn:
        conn.execute(insert(cart_log), _cart_rows(300))
    with ws.engine("dispatch").begin() as conn:
        conn.execute(insert(dispatch_log), [
            {"dispatch_id": f"d{i}", "dispatch_type": "comment_added", "issue_id": i, "comment_id": i,
             "actor_user_id": 1, "recipients_count": 1, "status": "completed", "created_at": T0,
             "completed_at": T0, "error_message": None} for i in range(200)])
        conn.execute(insert(notifications), [
            {"user_id": i % 5, "type": "comment_added", "issue_id": i, "comment_id": i, "actor_user_id": 1,
             "message": "m", "is_read": 0, "created_at": T0, "dispatch_id": f"d{i}"} for i in range(200)])


def _indexes(engine):
    with engine.connect() as conn:
        return dict(conn.execute(text(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname LIKE 'nc\\_%'")).all())


def _counts(engine, table):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


@pytest.mark.postgres
def test_upgrade_of_a_populated_postgresql_database_builds_concurrently_and_twice_is_a_no_op(
        workspace_factory, postgres_database):
    ws = workspace_factory(cart=postgres_database("cart"), dispatch=postgres_database("dispatch"), upgrade=False)
    _populate(ws)
    for source, table in (("cart", cart_log), ("dispatch", notifications)):
        engine = ws.engine(source)
        seen = []
        event.listen(engine, "before_cursor_execute", lambda *a, seen=seen: seen.append(a[2]))
        assert upgrade_sql_source(engine, source) == migrate.head_revision()
        built = [s for s in seen if s.startswith("CREATE INDEX") and any(f" {n} " in s for n in READ_SIDE[source])]
        assert len(built) == len(READ_SIDE[source])
        assert all(s.startswith("CREATE INDEX CONCURRENTLY") for s in built)
        valid = _indexes(engine)
        assert all(valid.get(name) is True for name in READ_SIDE[source])
        rows = _counts(engine, table)
        seen.clear()
        assert upgrade_sql_source(engine, source) == migrate.head_revision()   # twice: nothing to do
        assert not [s for s in seen if s.upper().startswith(("CREATE", "DROP"))]
        assert _indexes(engine) == valid and _counts(engine, table) == rows
        assert migrate.console_schema_ready(engine)


@pytest.mark.postgres
def test_a_rerun_after_an_interrupted_build_repairs_the_invalid_index(workspace_factory, postgres_database):
    ws = workspace_factory(cart=postgres_database("cart"))
    engine = ws.engine("cart")
    with engine.begin() as conn:
        conn.execute(insert(cart_log), _cart_rows(50))
        # What a cancelled CREATE INDEX CONCURRENTLY leaves: an INVALID index, the revision not stamped.
        conn.execute(text("UPDATE pg_index SET indisvalid = false "
                          "WHERE indexrelid = to_regclass('nc_cart_unsent')"))
        conn.execute(text("UPDATE nc_alembic_version SET version_num = '0001'"))
    assert _indexes(engine)["nc_cart_unsent"] is False
    assert upgrade_sql_source(engine, "cart") == migrate.head_revision()
    assert all(_indexes(engine)[name] is True for name in READ_SIDE["cart"])


@pytest.mark.postgres
def test_writers_carry_on_while_postgresql_builds_the_indexes(workspace_factory, postgres_database):
    url = postgres_database("cart")
    ws = workspace_factory(cart=url, upgrade=False)
    with ws.engine("cart").begin() as conn:
        conn.execute(insert(cart_log), _cart_rows(100))
    writers = create_engine(url)
    try:
        a = writers.connect()
        a.execute(insert(cart_log), _cart_rows(1, start=1000))      # a writer's open transaction
        outcome = {}

        def upgrade():
            try:
                outcome["revision"] = upgrade_sql_source(ws.engine("cart"), "cart")
            except Exception as exc:  # reported by the assertion below
                outcome["error"] = exc
        worker = threading.Thread(target=upgrade)
        worker.start()
        deadline = time.monotonic() + 20
        with writers.connect() as probe:   # the index build now waits for the open transaction
            while not probe.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar():
                assert time.monotonic() < deadline and worker.is_alive(), outcome
                time.sleep(0.02)
        with writers.connect() as b:       # a new writer is not queued behind the index build
            b.execute(text("SET lock_timeout = '3s'"))
            b.execute(insert(cart_log), _cart_rows(1, start=2000))
            b.commit()
        a.commit()
        a.close()
        worker.join(30)
        assert outcome.get("revision") == migrate.head_revision(), outcome
        assert all(_indexes(ws.engine("cart"))[name] is True for name in READ_SIDE["cart"])
        assert _counts(ws.engine("cart"), cart_log) == 102
    finally:
        writers.dispose()


def test_upgrade_of_a_populated_mariadb_database_builds_online_and_twice_is_a_no_op(
        workspace_factory, mariadb_database):
    ws = workspace_factory(cart=mariadb_database("cart"), upgrade=False)
    with ws.engine("cart").begin() as conn:
        conn.execute(insert(cart_log), _cart_rows(300))
    engine = ws.engine("cart")
    seen = []
    event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    assert upgrade_sql_source(engine, "cart") == migrate.head_revision()
    built = [s for s in seen if s.startswith("CREATE INDEX") and any(f" {n} " in s for n in READ_SIDE["cart"])]
    assert len(built) == 3 and all(s.endswith("ALGORITHM=INPLACE LOCK=NONE") for s in built)
    with engine.connect() as conn:
        names = {r.Key_name for r in conn.execute(text("SHOW INDEX FROM cart_abandonment_log"))}
    assert set(READ_SIDE["cart"]) <= names
    seen.clear()
    assert upgrade_sql_source(engine, "cart") == migrate.head_revision()
    assert not [s for s in seen if s.upper().startswith(("CREATE", "DROP", "ALTER"))]
    assert _counts(engine, cart_log) == 300 and migrate.console_schema_ready(engine)
