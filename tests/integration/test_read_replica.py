"""A source with a read replica (``read_url``): charts and counts read there, the rollup is kept on
the primary, and actions never touch the replica.

The "replica" here is a second database holding other rows than the primary, so every figure shows
where it was read.
"""
from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import func, select

from app.bootstrap import Workspace
from app.read import series as S
from app.read.failures import failed_items
from app.schema import nc_cursor, nc_latency_minute
from tests.helpers import add_failed_dispatches


def replica_workspace(workspace_factory, sql_url):
    primary = workspace_factory(dispatch=sql_url("primary"))
    replica = workspace_factory(dispatch=sql_url("replica"))     # its schemas, as replication would bring
    add_failed_dispatches(primary.engine("dispatch"), 2, start=0)
    add_failed_dispatches(replica.engine("dispatch"), 5, start=100)
    src = primary.config.source("dispatch")
    config = dataclasses.replace(primary.config, sources={
        "dispatch": dataclasses.replace(src, read_url=replica.config.source("dispatch").url)})
    return Workspace(config=config), primary, replica


def count(engine, table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_charts_and_lists_read_the_replica_and_the_rollup_advances_on_the_primary(workspace_factory, sql_url):
    ws, primary, replica = replica_workspace(workspace_factory, sql_url)
    try:
        window = S.Window.ending(S.clock_now(ws, ["dispatch"]), dt.timedelta(hours=1), 60)
        stats = S.source_stats(ws, "dispatch", window, duplicates=False)
        assert int(stats.overall.failed.sum()) == 5                     # the replica's rows
        assert len(failed_items(ws.reader(), "dispatch")) == 5
        assert len(failed_items(ws, "dispatch")) == 2                   # actions' view: the primary
        # The rollup's cursor was written on the primary; the replica's console tables are as they came.
        assert count(primary.engine("dispatch"), nc_cursor) >= 1
        assert count(replica.engine("dispatch"), nc_cursor) == 0
        assert count(replica.engine("dispatch"), nc_latency_minute) == 0
    finally:
        ws.close()
