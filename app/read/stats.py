"""Statistics for the charts: latency percentiles, throughput, failure rate, duplicates per hour.

Latency = ``completed_at − created_at`` (dispatch) or ``sent_at − created_at``
(cart), in milliseconds, bucketed by the item's creation time.

Percentiles over long windows come from the latency rollup the console
maintains incrementally (``app.read.rollup``), read as histograms
(``app.read.histogram``: within ``HIST_RELATIVE_ERROR``, 4.9 %, of the exact
value, or 0.5 ms below 1 ms). The exact mode (``exact=True``) fetches the
window's latencies (bounded) and computes them with numpy.

Failed and pending counts per bucket are counted live in the database
(GROUP BY bucket on the (status, created_at, ...) index): failures are few,
and a retried row changes them at once.
"""
from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from sqlalchemy.engine import Connection

from .. import registry
from ..errors import UsageError
from ..schema import nc_cursor as nc_cursor  # re-exported, see below
from ..schema import nc_latency_minute as nc_latency_minute  # re-exported, see below
from ..schema import nc_rollup_unsettled as nc_rollup_unsettled  # re-exported, see below
from ..sqlutil import db_now
from .common import epoch_seconds
from .duplicates import scan_duplicates
from .histogram import HIST_ABSOLUTE_ERROR_MS, HIST_RELATIVE_ERROR, exact_percentiles, hist_percentiles, latency_ms
from .hooks import Counts, LatencyReads
from .models import LatencyBucket, StatsSeries
from .rollup import advance_if_allowed, read_hists, source_latency
from .rollup import advance_rollup as advance_rollup  # re-exported, see below
from .rollup import catch_up as catch_up  # re-exported, see below

# Re-exported (``X as X``) for callers outside app/read that reach them through this module:
# bench/read_side.py (stats.catch_up) and tests/integration/test_read_side.py (stats.nc_latency_minute,
# stats.nc_rollup_unsettled, stats.nc_cursor).

if TYPE_CHECKING:
    from ..bootstrap import Workspace

# {series: {bucket: [latency ms]}} (exact mode); the failed and pending counts are ``Counts``.
_Values = dict[str, dict[int, list[float]]]

EXACT_MAX_ROWS = 2_000_000
PERIODS: dict[str, tuple[dt.timedelta, int]] = {
    "1h": (dt.timedelta(hours=1), 60), "24h": (dt.timedelta(hours=24), 300), "7d": (dt.timedelta(days=7), 3600)}


def _window(now: dt.datetime, window: dt.timedelta, bucket_seconds: int) -> tuple[int, int, dt.datetime, dt.datetime]:
    end_b = epoch_seconds(now) // bucket_seconds + 1
    n = max(1, int(math.ceil(window.total_seconds() / bucket_seconds)))
    start_b = end_b - n
    start = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=start_b * bucket_seconds)
    end = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=end_b * bucket_seconds)
    return start_b, n, start, end


def resolve_period(period: str | dt.timedelta) -> tuple[dt.timedelta, int]:
    if isinstance(period, str):
        if period not in PERIODS:
            raise UsageError(f"Unknown period '{period}': choose 1h, 24h or 7d.")
        return PERIODS[period]
    return period, 60


def latency_stats(workspace: Workspace, source: str, *, window: dt.timedelta | str = "24h",
                  bucket_seconds: int | None = None, by_type: bool = False, exact: bool = False,
                  advance: bool = True, now: dt.datetime | None = None) -> StatsSeries:
    """Latency p50/p95/p99, settled count (throughput), failed and pending per bucket.

    Series: ``*`` (all), plus one per dispatch_type with ``by_type``.
    ``exact`` computes percentiles from the rows themselves (bounded by
    ``EXACT_MAX_ROWS``); otherwise from the rollup histograms.
    """
    window, default_bucket = resolve_period(window)
    bucket_seconds = int(bucket_seconds or default_bucket)
    if bucket_seconds < 60 or bucket_seconds % 60:
        raise UsageError("Statistics buckets are whole minutes (60 s, 300 s, 3600 s, ...).")
    engine = workspace.engine(source)
    latency = source_latency(source)
    persisted = advance_if_allowed(workspace, source) if advance and not exact else True
    with engine.connect() as conn:
        now = now or db_now(conn)
        start_b, n, start, end = _window(now, window, bucket_seconds)
        hists: dict[str, npt.NDArray[np.int64]]
        values: _Values
        if exact:
            hists, values = {}, _exact_values(conn, latency, start, end, bucket_seconds, start_b, n)
        else:
            hists = read_hists(conn, source, start, end, bucket_seconds, start_b, n, tail=not persisted)
        failed, pending = latency.unsettled_counts(conn, workspace, start, end, bucket_seconds, start_b, now)
    data = values if exact else hists
    series_names = sorted(set(data) | set(failed) | set(pending))
    if not by_type:
        series_names = ["*"]
    buckets: list[LatencyBucket] = []
    for series in series_names:
        if exact:
            per = _merge_values(values) if series == "*" else values.get(series, {})
            counts: dict[int, int] = {b: len(v) for b, v in per.items()}
            pcts: dict[int, list[float | None]] = {b: exact_percentiles(v) for b, v in per.items()}
        else:
            h = _merge_hists(hists) if series == "*" else hists.get(series)
            counts, pcts = {}, {}
            if h is not None:
                totals = h.sum(axis=1)
                p = hist_percentiles(h)
                for nz in np.nonzero(totals)[0]:
                    counts[int(nz)] = int(totals[nz])
                    pcts[int(nz)] = [float(x) for x in p[nz]]
        f = _sum_series(failed) if series == "*" else failed.get(series, {})
        pe = _sum_series(pending) if series == "*" else pending.get(series, {})
        for b in range(n):
            pc = pcts.get(b, [None, None, None])
            buckets.append(LatencyBucket(
                start=start + dt.timedelta(seconds=b * bucket_seconds), series=series,
                count=counts.get(b, 0), failed=f.get(b, 0), pending=pe.get(b, 0),
                p50_ms=pc[0], p95_ms=pc[1], p99_ms=pc[2]))
    note = "exact (inverted-CDF percentiles)" if exact else (
        f"histogram: within {HIST_RELATIVE_ERROR:.1%} or {HIST_ABSOLUTE_ERROR_MS} ms of the exact value")
    return StatsSeries(source=source, metric="latency", start=start, end=end, bucket_seconds=bucket_seconds,
                       buckets=buckets, exact=exact, error_note=note)


def _merge_hists(hists: dict[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.int64] | None:
    if not hists:
        return None
    it = iter(hists.values())
    total = next(it).copy()
    for h in it:
        total += h
    return total


def _exact_values(conn: Connection, latency: LatencyReads, start: dt.datetime, end: dt.datetime,
                  bucket_seconds: int, start_b: int, n: int) -> _Values:
    """{series: {bucket: [latency ms]}} from the rows (bounded)."""
    stmt = latency.exact_rows(start, end)
    rows = conn.execute(stmt.limit(EXACT_MAX_ROWS + 1)).all()
    if len(rows) > EXACT_MAX_ROWS:
        raise UsageError(f"The window holds more than {EXACT_MAX_ROWS} rows: use the rollup (exact=False).")
    out: _Values = defaultdict(lambda: defaultdict(list))
    for series, created, done in rows:
        b = epoch_seconds(created) // bucket_seconds - start_b
        if 0 <= b < n:
            out[series][b].append(latency_ms(done, created))
    return out


def _merge_values(values: _Values) -> dict[int, list[float]]:
    merged: dict[int, list[float]] = defaultdict(list)
    for per in values.values():
        for b, v in per.items():
            merged[b].extend(v)
    return merged


def _sum_series(per_series: Counts) -> dict[int, int]:
    total: dict[int, int] = defaultdict(int)
    for per in per_series.values():
        for b, c in per.items():
            total[b] += c
    return total


def throughput(series: StatsSeries) -> list[tuple[dt.datetime, float]]:
    """Settled items per minute of each bucket of ``series`` (its ``*`` series)."""
    per_min = series.bucket_seconds / 60
    return [(b.start, b.count / per_min) for b in series.buckets if b.series == "*"]


def duplicates_per_hour(workspace: Workspace, source: str, *,
                        window: dt.timedelta | str = "24h") -> list[tuple[dt.datetime, int]]:
    """Duplicate members (all but the kept one) per hour of their time, over ``window``."""
    if isinstance(window, str):
        window = resolve_period(window)[0]
    groups = scan_duplicates(workspace, source, since=window)
    sql = registry.source(source).is_sql
    if not sql:
        now = workspace.orders().now()
    else:
        with workspace.engine(source).connect() as conn:
            now = db_now(conn)
    start_b, n, start, _end = _window(now, window, 3600)
    counts = [0] * n
    for g in groups:
        time_field = "created_at" if sql else "sent_at"
        for ev in g.evidence[1:]:
            at = ev.get(time_field)
            if not isinstance(at, dt.datetime):  # config rules: their own time column
                at = next((v for v in ev.values() if isinstance(v, dt.datetime)), None)
            if isinstance(at, dt.datetime):
                b = epoch_seconds(at) // 3600 - start_b
                if 0 <= b < n:
                    counts[b] += 1
    return [(start + dt.timedelta(hours=i), counts[i]) for i in range(n)]
