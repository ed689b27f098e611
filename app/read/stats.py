"""Statistics for the charts: latency percentiles, throughput, failure rate, duplicates per hour.

Latency = ``completed_at − created_at`` (dispatch) or ``sent_at − created_at``
(cart), in milliseconds, bucketed by the item's creation time.

Percentiles over long windows come from a rollup the console maintains
incrementally: ``nc_latency_minute`` holds, per creation minute and series
(``dispatch:<dispatch_type>`` or ``cart``), the settled count, the summed
latency and a latency histogram. ``advance_rollup`` moves it forward along
the log's id with a lagged frontier (``app.read.idwindow``, state in
``nc_cursor``): each call reads the rows above the highest id read and the
ids below it not read yet (a transaction that took a lower id and committed
later), and counts every row exactly once; it costs what is new. Advancers
are serialised by a lock on the cursor row. Rows still pending or failed when
read wait in ``nc_rollup_unsettled`` and are added when they settle (they
are re-checked at most every ``RECHECK_SECONDS``). A database user that may
not write the rollup (a viewer on a read-only user) reads the same figures:
the rollup as stored plus what an advance would add, computed in memory and
persisted nowhere (``_unpersisted``: the rows an advance would read, with
the same window, and the unsettled rows that settled since, within the
window read).

Histogram bins: bin 0 holds [0, 1 ms); bin i ≥ 1 holds [1.1^(i-1), 1.1^i) ms;
a percentile is reported as its bin's geometric middle, so it is within
``HIST_RELATIVE_ERROR`` (4.9 %) of the exact value, or 0.5 ms below 1 ms.
Percentiles use the inverted-CDF definition (numpy ``method="inverted_cdf"``):
the smallest latency with at least q of the bucket at or below it. The exact
mode (``exact=True``) fetches the window's latencies (bounded) and computes
them with numpy.

Failed and pending counts per bucket are counted live in the database
(GROUP BY bucket on the (status, created_at, ...) index): failures are few,
and a retried row changes them at once.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections import defaultdict

import numpy as np
from sqlalchemy import Integer, and_, cast, delete, func, insert, literal, select, tuple_, update
from sqlalchemy.exc import DBAPIError

from ..errors import UsageError
from ..schema import cart_log, dispatch_log, nc_cursor, nc_latency_minute, nc_rollup_unsettled
from ..sqlutil import backend, db_now, insert_ignore, is_permission_denied, with_retry
from . import idwindow
from .common import LATE_COMMIT_MARGIN
from .idwindow import IdWindow
from .models import LatencyBucket, StatsSeries

BIN_RATIO = 1.1
NBINS = 300
HIST_RELATIVE_ERROR = math.sqrt(BIN_RATIO) - 1
HIST_ABSOLUTE_ERROR_MS = 0.5
_LOG_RATIO = math.log(BIN_RATIO)
_SPARSE = np.dtype([("bin", "<u2"), ("count", "<u4")])

# The rollup keeps this much history (the longest chart is 7 days).
HORIZON = dt.timedelta(days=8)
ROLLUP_BATCH = 20000
RECHECK_SECONDS = 30.0
# A transaction that took an id commits within this long (see app.read.idwindow).
LAG = LATE_COMMIT_MARGIN
EXACT_MAX_ROWS = 2_000_000
PERIODS = {"1h": (dt.timedelta(hours=1), 60), "24h": (dt.timedelta(hours=24), 300),
           "7d": (dt.timedelta(days=7), 3600)}
QUANTILES = (0.50, 0.95, 0.99)


# --------------------------------------------------------------------------
# Histograms

def bin_index(latency_ms) -> np.ndarray:
    ms = np.asarray(latency_ms, dtype=float)
    safe = np.where(ms < 1.0, 1.0, ms)
    idx = np.floor(np.log(safe) / _LOG_RATIO).astype(np.int64) + 1
    idx = np.where(ms < 1.0, 0, idx)
    return np.clip(idx, 0, NBINS - 1)


def bin_value(idx) -> np.ndarray:
    """The value a bin reports: its geometric middle (0.5 ms for bin 0)."""
    idx = np.asarray(idx, dtype=float)
    return np.where(idx == 0, 0.5, np.power(BIN_RATIO, idx - 0.5))


def encode_hist(counts: np.ndarray) -> bytes:
    nz = np.nonzero(counts)[0]
    arr = np.empty(len(nz), dtype=_SPARSE)
    arr["bin"] = nz
    arr["count"] = counts[nz]
    return arr.tobytes()


def decode_hist(blob: bytes, out: np.ndarray | None = None) -> np.ndarray:
    counts = out if out is not None else np.zeros(NBINS, dtype=np.int64)
    if blob:
        arr = np.frombuffer(bytes(blob), dtype=_SPARSE)
        np.add.at(counts, arr["bin"].astype(np.int64), arr["count"].astype(np.int64))
    return counts


def hist_percentiles(hists: np.ndarray, quantiles=QUANTILES) -> np.ndarray:
    """Inverted-CDF percentiles of each row of ``hists`` (rows × NBINS) → rows × len(q); NaN if empty."""
    hists = np.atleast_2d(hists)
    cum = np.cumsum(hists, axis=1)
    total = cum[:, -1]
    out = np.full((hists.shape[0], len(quantiles)), np.nan)
    for j, q in enumerate(quantiles):
        rank = np.maximum(np.ceil(q * total - 1e-9), 1)
        idx = (cum < rank[:, None]).sum(axis=1)
        vals = bin_value(np.minimum(idx, NBINS - 1))
        out[:, j] = np.where(total > 0, vals, np.nan)
    return out


def exact_percentiles(values, quantiles=QUANTILES) -> list[float | None]:
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return [None] * len(quantiles)
    return [float(v) for v in np.percentile(values, [q * 100 for q in quantiles], method="inverted_cdf")]


def _ms(later: dt.datetime, earlier: dt.datetime) -> float:
    return (later - earlier) / dt.timedelta(milliseconds=1)


def _minute(t: dt.datetime) -> dt.datetime:
    return t.replace(second=0, microsecond=0)


# --------------------------------------------------------------------------
# The rollup

def _source_spec(source: str):
    if source == "dispatch":
        t = dispatch_log.c
        return dict(table=dispatch_log, id=t.id, created=t.created_at,
                    cols=(t.id, t.created_at, t.dispatch_type, t.status, t.completed_at))
    if source == "cart":
        t = cart_log.c
        return dict(table=cart_log, id=t.id, created=t.created_at,
                    cols=(t.id, t.created_at, t.email_sent, t.sent_at))
    raise UsageError(f"Statistics exist for cart and dispatch, not '{source}'.")


def _settled(source: str, row) -> tuple[str, float] | None:
    """(series, latency ms) of a settled row, or None while it is unsettled."""
    if source == "dispatch":
        _id, created, dtype, status, completed = row
        if status == "completed" and completed is not None:
            return f"dispatch:{dtype}", _ms(completed, created)
        return None
    _id, created, sent, sent_at = row
    if sent and sent_at is not None:
        return "cart", _ms(sent_at, created)
    return None


def _add_rows(acc: dict, source: str, rows) -> list:
    """Add settled rows into ``acc`` {(series, minute): [n, sum, [bins]]}; return the unsettled ones."""
    unsettled = []
    for row in rows:
        s = _settled(source, row)
        if s is None:
            unsettled.append(row)
            continue
        series, ms = s
        entry = acc.setdefault((series, _minute(row[1])), [0, 0.0, []])
        entry[0] += 1
        entry[1] += max(ms, 0.0)
        entry[2].append(ms)
    return unsettled


def _write_acc(conn, acc: dict) -> None:
    if not acc:
        return
    m = nc_latency_minute.c
    keys = list(acc)
    existing = {}
    for i in range(0, len(keys), 400):
        batch = keys[i:i + 400]
        for series, minute, settled, lsum, hist in conn.execute(
                select(m.series, m.minute, m.settled, m.latency_sum_ms, m.hist)
                .where(tuple_(m.series, m.minute).in_(batch))):
            existing[(series, minute)] = (settled, lsum, hist)
    inserts, updates = [], []
    for key, (n, lsum, values) in acc.items():
        counts = np.bincount(bin_index(values), minlength=NBINS).astype(np.int64)
        old = existing.get(key)
        if old is None:
            inserts.append({"series": key[0], "minute": key[1], "settled": n,
                            "latency_sum_ms": round(lsum, 3), "hist": encode_hist(counts)})
        else:
            decode_hist(old[2], counts)
            updates.append({"k_series": key[0], "k_minute": key[1], "settled": old[0] + n,
                            "latency_sum_ms": round(float(old[1]) + lsum, 3), "hist": encode_hist(counts)})
    if inserts:
        conn.execute(insert(nc_latency_minute), inserts)
    if updates:
        from sqlalchemy import bindparam
        conn.execute(update(nc_latency_minute)
                     .where(m.series == bindparam("k_series"), m.minute == bindparam("k_minute"))
                     .values(settled=bindparam("settled"), latency_sum_ms=bindparam("latency_sum_ms"),
                             hist=bindparam("hist")), updates)


def _cursor_name(source: str) -> str:
    return f"read.rollup.{source}"


def advance_rollup(workspace, source: str, *, max_rows: int = 500_000, force_recheck: bool = False) -> dict:
    """Bring ``nc_latency_minute`` of ``source`` up to date; return what it did.

    One console at a time advances a source (the cursor row is locked for the
    transaction; others wait, then find nothing new). Each call reads at most
    ``max_rows`` new rows; call again while ``caught_up`` is False.
    """
    engine = workspace.engine(source)
    return with_retry(lambda: _advance(engine, source, max_rows, force_recheck))


def _epoch_seconds(t: dt.datetime) -> float:
    return (t - dt.datetime(1970, 1, 1)).total_seconds()


def _gap_rows(name: str):
    """The ``nc_cursor`` rows holding a window's gaps (``<name>:gaps:NNNN``; a position is 255 characters)."""
    return and_(nc_cursor.c.name > f"{name}:gaps:", nc_cursor.c.name < f"{name}:gaps;")


def _stored_window(conn, name: str, pos: dict) -> IdWindow | None:
    """The id window of a stored cursor (a cursor of the high-water-mark format reads on from its mark)."""
    if pos.get("w") is not None:
        w = IdWindow.from_json(pos["w"])
        if pos["w"].get("ng"):
            text = ",".join(conn.execute(select(nc_cursor.c.position).where(_gap_rows(name))
                                         .order_by(nc_cursor.c.name)).scalars())
            w.gaps = [[int(a), int(b)] for a, _, b in (g.partition("-") for g in text.split(",") if g)]
        return w
    if pos.get("last_id") is not None:
        return IdWindow.at(pos["last_id"])
    return None


def _save_window(conn, name: str, pos: dict, w: IdWindow, now: dt.datetime) -> None:
    """Store ``w`` in ``pos`` (the cursor row, written by the caller) and its gaps in their own rows."""
    old = (pos.get("w") or {}).get("ng", 0)
    chunks: list[str] = []
    line = ""
    for lo, hi in w.gaps:
        g = f"{lo}-{hi}"
        if line and len(line) + 1 + len(g) > 250:
            chunks.append(line)
            line = ""
        line = f"{line},{g}" if line else g
    if line:
        chunks.append(line)
    if old or chunks:
        conn.execute(delete(nc_cursor).where(_gap_rows(name)))
    if chunks:
        conn.execute(insert(nc_cursor), [{"name": f"{name}:gaps:{k:04d}", "position": c, "updated_at": now}
                                         for k, c in enumerate(chunks)])
    state = w.to_json()
    del state["gaps"]
    state["ng"] = len(chunks)
    pos["w"] = state
    pos["last_id"] = w.last


def _first_window(conn, spec, floor: dt.datetime) -> IdWindow | None:
    """The window of a first read: from the first row created at or after ``floor``. None on an empty log.

    The ids between the visible row before that one and it are gaps (a
    transaction still open holds them, or they were rolled back): everything
    below that row was created before ``floor``, long settled.
    """
    first = conn.execute(select(func.min(spec["id"])).where(spec["created"] >= floor)).scalar()
    if first is None:
        top = conn.execute(select(func.max(spec["id"]))).scalar()
        return None if top is None else IdWindow.at(top)
    before = conn.execute(select(func.max(spec["id"])).where(spec["id"] < first)).scalar() or 0
    w = IdWindow.at(before)
    if first - 1 > before:
        w.last, w.gaps = first - 1, [[before + 1, first - 1]]
    return w


def _advance(engine, source: str, max_rows: int, force_recheck: bool) -> dict:
    spec = _source_spec(source)
    name = _cursor_name(source)
    with engine.begin() as conn:
        now = db_now(conn)
        horizon = now - HORIZON
        # The lock serialises advancers: another console waits here, then
        # reads the state this one leaves (a locking read sees the latest).
        # The row is created only when missing: an INSERT IGNORE on an existing
        # row takes a shared lock, and two advancers each holding one while
        # asking for the exclusive one deadlock every time.
        lock = select(nc_cursor.c.position).where(nc_cursor.c.name == name).with_for_update()
        raw = conn.execute(lock).scalar_one_or_none()
        if raw is None:
            insert_ignore(conn, nc_cursor, {"name": name, "position": "{}", "updated_at": now})
            raw = conn.execute(lock).scalar_one()
        pos = json.loads(raw or "{}")
        w = _stored_window(conn, name, pos) or _first_window(conn, spec, horizon) or IdWindow.at(0)
        acc: dict = {}
        read = 0
        caught_up = False
        while read < max_rows:
            rows, more = idwindow.read(conn, spec["cols"], spec["id"], w, min(ROLLUP_BATCH, max_rows - read))
            if rows:
                read += len(rows)
                idwindow.note(w, [r[0] for r in rows])
                fresh = [r for r in rows if r[1] >= horizon]
                unsettled = _add_rows(acc, source, fresh)
                if unsettled:
                    insert_ignore(conn, nc_rollup_unsettled,
                                  [{"source": source, "row_id": r[0], "created_at": r[1]} for r in unsettled])
            if not more:
                caught_up = True
                break
        idwindow.settle(w, _epoch_seconds(now), LAG.total_seconds())
        settled_late = 0
        last_check = pos.get("rechecked_at", 0.0)
        if force_recheck or time.time() - last_check >= RECHECK_SECONDS:
            settled_late = _recheck(conn, source, spec, acc, horizon)
            pos["rechecked_at"] = time.time()
        _write_acc(conn, acc)
        # Minutes that left the horizon are dropped (bounded table).
        conn.execute(delete(nc_latency_minute).where(nc_latency_minute.c.minute < horizon - dt.timedelta(days=1),
                                                     nc_latency_minute.c.series.like(
                                                         "dispatch:%" if source == "dispatch" else "cart")))
        _save_window(conn, name, pos, w, now)
        conn.execute(update(nc_cursor).where(nc_cursor.c.name == name)
                     .values(position=json.dumps(pos, separators=(",", ":")), updated_at=now))
    return {"source": source, "read": read, "last_id": w.last, "caught_up": caught_up,
            "settled_late": settled_late, "gaps": len(w.gaps)}


def _unpersisted(conn, source: str, floor: dt.datetime) -> dict:
    """What an advance would add to the rollup, computed in memory and written nowhere.

    For a database user that may not write the rollup (a viewer): the rows
    an advance would read (in the stored window's gaps, then past its highest
    id: late commits included, nothing counted twice), and the rows the
    rollup holds as unsettled that have settled since, both created at or
    after ``floor`` (the start of the window read). Read on the caller's
    connection, so the stored rollup and this tail come from one snapshot.
    """
    spec = _source_spec(source)
    now = db_now(conn)
    floor = max(floor, now - HORIZON)
    name = _cursor_name(source)
    raw = conn.execute(select(nc_cursor.c.position).where(nc_cursor.c.name == name)).scalar()
    w = _stored_window(conn, name, json.loads(raw or "{}"))
    acc: dict = {}
    if w is None:
        # Never advanced: every row of the window is the tail.
        w = _first_window(conn, spec, floor)
        if w is None:
            return acc
    while True:
        rows, more = idwindow.read(conn, spec["cols"], spec["id"], w, ROLLUP_BATCH)
        idwindow.note(w, [r[0] for r in rows])
        _add_rows(acc, source, [r for r in rows if r[1] >= floor])
        if not more:
            break
    u = nc_rollup_unsettled.c
    t = spec["table"]
    settled_cond = (t.c.status == "completed") if source == "dispatch" else (t.c.email_sent == 1)
    _add_rows(acc, source, conn.execute(select(*spec["cols"]).select_from(
        t.join(nc_rollup_unsettled, and_(u.source == source, u.row_id == spec["id"])))
        .where(settled_cond, u.created_at >= floor)).all())
    return acc


def _add_acc(hists: dict, source: str, acc: dict, bucket_seconds: int, start_b: int, n: int) -> None:
    """Add an in-memory rollup tail (``_unpersisted``) into ``_rollup_hists``' arrays."""
    for (series, minute), (_count, _lsum, values) in acc.items():
        row = _hist_row(hists, source, series, minute, bucket_seconds, start_b, n)
        if row is not None:
            row += np.bincount(bin_index(values), minlength=NBINS)


def _hist_row(hists: dict, source: str, series: str, minute, bucket_seconds: int, start_b: int, n: int):
    """The histogram row of ``series`` at ``minute``'s bucket (allocated on first use), None outside the window."""
    b = (_epoch(minute) // bucket_seconds) - start_b
    if not 0 <= b < n:
        return None
    key = series.split(":", 1)[1] if source == "dispatch" else series
    h = hists.get(key)
    if h is None:
        h = hists[key] = np.zeros((n, NBINS), dtype=np.int64)
    return h[b]


def _recheck(conn, source: str, spec, acc: dict, horizon: dt.datetime) -> int:
    u = nc_rollup_unsettled.c
    conn.execute(delete(nc_rollup_unsettled).where(u.source == source, u.created_at < horizon))
    t = spec["table"]
    settled_cond = (t.c.status == "completed") if source == "dispatch" else (t.c.email_sent == 1)
    rows = conn.execute(select(*spec["cols"]).select_from(
        t.join(nc_rollup_unsettled, and_(u.source == source, u.row_id == spec["id"])))
        .where(settled_cond)).all()
    _add_rows(acc, source, rows)
    ids = [r[0] for r in rows]
    for i in range(0, len(ids), 1000):
        conn.execute(delete(nc_rollup_unsettled).where(u.source == source, u.row_id.in_(ids[i:i + 1000])))
    return len(ids)


def catch_up(workspace, source: str, *, max_seconds: float = 600.0) -> int:
    """Advance until caught up (first run on a big log); return rows read."""
    total, deadline = 0, time.monotonic() + max_seconds
    while True:
        out = advance_rollup(workspace, source)
        total += out["read"]
        if out["caught_up"] or time.monotonic() > deadline:
            return total


# --------------------------------------------------------------------------
# Queries

def bucket_expr(col, seconds: int, dialect: str):
    """Integer bucket number of a timestamp column: floor(epoch seconds / bucket)."""
    if dialect in ("mysql", "mariadb"):
        return func.floor(func.unix_timestamp(col) / seconds)
    if dialect == "postgresql":
        return func.floor(func.extract("epoch", col) / seconds)
    return cast(func.strftime("%s", col), Integer) / seconds


def _epoch(t: dt.datetime) -> int:
    return int((t - dt.datetime(1970, 1, 1)).total_seconds())


def _window(now: dt.datetime, window: dt.timedelta, bucket_seconds: int):
    end_b = _epoch(now) // bucket_seconds + 1
    n = max(1, int(math.ceil(window.total_seconds() / bucket_seconds)))
    start_b = end_b - n
    start = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=start_b * bucket_seconds)
    end = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=end_b * bucket_seconds)
    return start_b, n, start, end


def resolve_period(period) -> tuple[dt.timedelta, int]:
    if isinstance(period, str):
        if period not in PERIODS:
            raise UsageError(f"Unknown period '{period}': choose 1h, 24h or 7d.")
        return PERIODS[period]
    return period, 60


def latency_stats(workspace, source: str, *, window: dt.timedelta | str = "24h",
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
    spec = _source_spec(source)
    persisted = True
    if advance and not exact:
        try:
            advance_rollup(workspace, source)
        except DBAPIError as exc:
            if not is_permission_denied(exc):
                raise
            persisted = False  # this database user may not write the rollup: add the tail in memory
    with engine.connect() as conn:
        now = now or db_now(conn)
        start_b, n, start, end = _window(now, window, bucket_seconds)
        if exact:
            hists, values = None, _exact_values(conn, source, spec, start, end, bucket_seconds, start_b, n)
        else:
            hists = _rollup_hists(conn, source, start, end, bucket_seconds, start_b, n)
            if not persisted:
                _add_acc(hists, source, _unpersisted(conn, source, start), bucket_seconds, start_b, n)
        failed, pending = _unsettled_counts(conn, workspace, source, start, end, bucket_seconds, start_b, n, now)
    data = values if exact else hists
    series_names = sorted(set(data) | set(failed) | set(pending))
    if not by_type:
        series_names = ["*"]
    buckets = []
    for series in series_names:
        if exact:
            per = _merge_values(values) if series == "*" else values.get(series, {})
            counts = {b: len(v) for b, v in per.items()}
            pcts = {b: exact_percentiles(v) for b, v in per.items()}
        else:
            h = _merge_hists(hists) if series == "*" else hists.get(series)
            counts, pcts = {}, {}
            if h is not None:
                totals = h.sum(axis=1)
                p = hist_percentiles(h)
                for b in np.nonzero(totals)[0]:
                    counts[int(b)] = int(totals[b])
                    pcts[int(b)] = [float(x) for x in p[b]]
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


def _rollup_hists(conn, source, start, end, bucket_seconds, start_b, n) -> dict:
    m = nc_latency_minute.c
    pattern = "dispatch:%" if source == "dispatch" else "cart"
    rows = conn.execute(select(m.series, m.minute, m.hist)
                        .where(m.minute >= start, m.minute < end, m.series.like(pattern))).all()
    out: dict = {}
    for series, minute, blob in rows:
        row = _hist_row(out, source, series, minute, bucket_seconds, start_b, n)
        if row is not None:
            decode_hist(blob, row)
    return out


def _merge_hists(hists: dict):
    if not hists:
        return None
    it = iter(hists.values())
    total = next(it).copy()
    for h in it:
        total += h
    return total


def _exact_values(conn, source, spec, start, end, bucket_seconds, start_b, n) -> dict:
    """{series: {bucket: [latency ms]}} from the rows (bounded)."""
    if source == "dispatch":
        t = dispatch_log.c
        stmt = select(t.dispatch_type, t.created_at, t.completed_at).where(
            t.status == "completed", t.created_at >= start, t.created_at < end, t.completed_at.is_not(None))
    else:
        t = cart_log.c
        stmt = select(literal("cart"), t.created_at, t.sent_at).where(
            t.email_sent == 1, t.created_at >= start, t.created_at < end, t.sent_at.is_not(None))
    rows = conn.execute(stmt.limit(EXACT_MAX_ROWS + 1)).all()
    if len(rows) > EXACT_MAX_ROWS:
        raise UsageError(f"The window holds more than {EXACT_MAX_ROWS} rows: use the rollup (exact=False).")
    out: dict = defaultdict(lambda: defaultdict(list))
    for series, created, done in rows:
        b = _epoch(created) // bucket_seconds - start_b
        if 0 <= b < n:
            out[series][b].append(_ms(done, created))
    return out


def _merge_values(values: dict) -> dict:
    merged: dict = defaultdict(list)
    for per in values.values():
        for b, v in per.items():
            merged[b].extend(v)
    return merged


def _sum_series(per_series: dict) -> dict:
    total: dict = defaultdict(int)
    for per in per_series.values():
        for b, c in per.items():
            total[b] += c
    return total


def _unsettled_counts(conn, workspace, source, start, end, bucket_seconds, start_b, n, now):
    """Failed and pending counts per series and bucket, counted in the database."""
    dialect = backend(conn)
    failed: dict = defaultdict(dict)
    pending: dict = defaultdict(dict)
    if source == "dispatch":
        t = dispatch_log.c
        bexpr = bucket_expr(t.created_at, bucket_seconds, dialect).label("b")
        stmt = select(t.status, t.dispatch_type, bexpr, func.count()).where(
            t.status.in_(("failed", "pending")), t.created_at >= start, t.created_at < end) \
            .group_by(t.status, t.dispatch_type, bexpr)
        for status, dtype, b, c in conn.execute(stmt):
            target = failed if status == "failed" else pending
            target[dtype][int(b) - start_b] = int(c)
    else:
        t = cart_log.c
        in_progress = now - dt.timedelta(minutes=workspace.config.thresholds.cart_in_progress_minutes)
        bexpr = bucket_expr(t.created_at, bucket_seconds, dialect).label("b")
        stmt = select((t.created_at < in_progress).label("old"), bexpr, func.count()).where(
            t.email_sent == 0, t.created_at >= start, t.created_at < end).group_by("old", bexpr)
        for old, b, c in conn.execute(stmt):
            target = failed if old else pending
            target["cart"][int(b) - start_b] = target["cart"].get(int(b) - start_b, 0) + int(c)
    return failed, pending


def throughput(series: StatsSeries) -> list[tuple[dt.datetime, float]]:
    """Settled items per minute of each bucket of ``series`` (its ``*`` series)."""
    per_min = series.bucket_seconds / 60
    return [(b.start, b.count / per_min) for b in series.buckets if b.series == "*"]


def duplicates_per_hour(workspace, source: str, *, window: dt.timedelta | str = "24h") -> list[tuple[dt.datetime, int]]:
    """Duplicate members (all but the kept one) per hour of their time, over ``window``."""
    from .duplicates import scan_duplicates
    if isinstance(window, str):
        window = resolve_period(window)[0]
    groups = scan_duplicates(workspace, source, since=window)
    if source == "orders":
        now = workspace.orders().now()
    else:
        with workspace.engine(source).connect() as conn:
            now = db_now(conn)
    start_b, n, start, _end = _window(now, window, 3600)
    counts = [0] * n
    for g in groups:
        time_field = "sent_at" if source == "orders" else "created_at"
        for ev in g.evidence[1:]:
            at = ev.get(time_field)
            if not isinstance(at, dt.datetime):  # config rules: their own time column
                at = next((v for v in ev.values() if isinstance(v, dt.datetime)), None)
            if isinstance(at, dt.datetime):
                b = _epoch(at) // 3600 - start_b
                if 0 <= b < n:
                    counts[b] += 1
    return [(start + dt.timedelta(hours=i), counts[i]) for i in range(n)]
