"""The SQL sources on PostgreSQL: schema, db upgrade, the guarded paths and the read side."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from app.read.duplicates import scan_duplicates
from app.read.failures import failed_items
from app.read.stats import latency_stats
from app.schema import cart_log, notifications
from app.services import dispatch as dispatch_service
from app.services.cleanup import cleanup, undo
from app.services.retry import retry
from tests.helpers import seed_cart_duplicates, seed_people, table_rows


@pytest.mark.postgres
def test_cart_cleanup_and_undo_on_postgresql(workspace_factory, postgres_database):
    ws = workspace_factory(cart=postgres_database("cart"))
    engine = ws.engine("cart")
    seed_cart_duplicates(engine)
    before = table_rows(engine, cart_log)
    assert len(scan_duplicates(ws, "cart")) == 2
    out = cleanup(ws, "cart", dry_run=False, action_id="pg-clean")
    assert out["archived"] == 3 and len(table_rows(engine, cart_log)) == len(before) - 3
    assert undo(ws, "pg-clean")["restored"] == 3
    assert table_rows(engine, cart_log) == before
    with engine.begin() as conn:   # ids keep counting after the restore (sequence re-synced)
        new_id = conn.execute(cart_log.insert().values(
            user_id=9, cart_hash="q" * 64, cart_value=1, email_sent=0,
            created_at=dt.datetime(2026, 11, 25))).inserted_primary_key[0]
    assert new_id > max(r[0] for r in before)


@pytest.mark.postgres
def test_dispatch_retry_failed_list_and_latency_on_postgresql(workspace_factory, postgres_database):
    ws = workspace_factory(dispatch=postgres_database("dispatch"))
    engine = ws.engine("dispatch")
    seed_people(engine, issue_ids=(1,))
    ok = dispatch_service.dispatch_comment_added(ws, 1, 10, 1)
    assert ok.outcome == "dispatched" and ok.recipients == (2, 3, 4)
    assert dispatch_service.dispatch_comment_added(ws, 1, 10, 1).outcome == "duplicate"
    failed = dispatch_service.dispatch_comment_added(ws, 2, 11, 1)      # issue 2 does not exist yet
    assert failed.outcome == "failed"
    assert [i.id for i in failed_items(ws, "dispatch", kinds=("failed",))] == [failed.log_id]
    seed_people(engine, issue_ids=(2,))
    out = retry(ws, "dispatch", all_matching=True, action_id="pg-retry")
    assert out["retried_ids"] == [failed.log_id]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(notifications)).scalar_one() == 6
    stats = latency_stats(ws, "dispatch", window=dt.timedelta(hours=1), bucket_seconds=60)
    assert sum(b.count for b in stats.buckets) >= 1


def test_a_plain_postgresql_url_uses_the_installed_driver():
    from app.config import SourceConfig
    from app.sources import sql_engine
    engine = sql_engine(SourceConfig("cart", "postgresql://root@127.0.0.1:5432/test"))
    assert engine.url.drivername == "postgresql+psycopg2"
    engine.dispose()
