"""The latency rollup: ``nc_latency_minute`` kept up to date incrementally, and read back
as histograms per chart bucket.

Latency = ``completed_at − created_at`` (dispatch) or ``sent_at − created_at``
(cart), in milliseconds, counted in the minute of the item's creation.
``nc_latency_minute`` holds, per creation minute and series
(``dispatch:<dispatch_type>`` or ``cart``), the settled count, the summed
latency and a latency histogram (``app.read.histogram``). ``advance_rollup``
moves it forward along the log's id with a lagged frontier
(``app.read.idwindow``, state in ``nc_cursor``): each call reads the rows
above the highest id read and the ids below it not read yet (a transaction
that took a lower id and committed later), and counts every row exactly
once; it costs what is new. Advancers are serialised by a lock on the cursor
row. Rows still pending or failed when read wait in ``nc_rollup_unsettled``
and are added when they settle (they are re-checked at most every
``RECHECK_SECONDS``). A database user that may not write the rollup (a
viewer on a read-only user) reads the same figures: the rollup as stored plus
what an advance would add, computed in memory and persisted nowhere
(``read_hists(..., tail=True)``: the rows an advance would read, with the
same window, and the unsettled rows that settled since, within the window
read).
"""
from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypedDict, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import and_, bindparam, delete, func, insert, select, tuple_, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement

from .. import registry
from ..errors import UsageError
from ..schema import nc_cursor, nc_latency_minute, nc_rollup_unsettled
from ..sqlutil import db_now, insert_ignore, is_permission_denied, with_retry
from . import idwindow
from .by_source import reads_for
from .common import LATE_COMMIT_MARGIN, epoch_seconds
from .histogram import NBINS, bin_index, decode_hist, encode_hist
from .hooks import LatencyReads
from .hooks import SourceSpec as SourceSpec  # re-exported: the log a rollup reads (app.read.stats)
from .idwindow import IdWindow
from .minute_rows import fetch_minute_hists

if TYPE_CHECKING:
    from ..bootstrap import Workspace

# The rollup keeps this much history (the longest chart is 7 days).
HORIZON = dt.timedelta(days=8)
ROLLUP_BATCH = 20000
RECHECK_SECONDS = 30.0
# A transaction that took an id commits within this long (see app.read.idwindow).
LAG = LATE_COMMIT_MARGIN


class RollupProgress(TypedDict):
    """What one ``advance_rollup`` did."""

    source: str
    read: int
    last_id: int
    caught_up: bool
    settled_late: int
    gaps: int


# (series, creation minute) -> [settled count, summed latency ms, [latencies ms]]: what an
# advance adds to ``nc_latency_minute``. The entry is a mutable list whose items differ in
# type (tests read it by position), hence Any.
_Acc = dict[tuple[str, dt.datetime], list[Any]]


def _minute(t: dt.datetime) -> dt.datetime:
    return t.replace(second=0, microsecond=0)


def source_latency(source: str) -> LatencyReads:
    """How the statistics of ``source`` read its log; a source without them is one sentence."""
    try:
        latency = reads_for(source).latency
    except UsageError:
        latency = None
    if latency is None:
        names = [r.source.name for r in map(reads_for, registry.NAMES) if r.latency is not None]
        raise UsageError(f"Statistics exist for {', '.join(names[:-1])} and {names[-1]}, not '{source}'.")
    return latency


def source_spec(source: str) -> SourceSpec:
    """The log the rollup of ``source`` reads: table, id and creation columns, columns read."""
    return source_latency(source).rollup


def _add_rows(acc: _Acc, source: str, rows: Iterable[Sequence[Any]]) -> list[Sequence[Any]]:
    """Add settled rows into ``acc`` {(series, minute): [n, sum, [bins]]}; return the unsettled ones."""
    unsettled: list[Sequence[Any]] = []
    settled = source_latency(source).settled
    for row in rows:
        s = settled(row)
        if s is None:
            unsettled.append(row)
            continue
        series, ms = s
        entry = acc.setdefault((series, _minute(row[1])), [0, 0.0, []])
        entry[0] += 1
        entry[1] += max(ms, 0.0)
        entry[2].append(ms)
    return unsettled


def _write_acc(conn: Connection, acc: _Acc) -> None:
    if not acc:
        return
    m = nc_latency_minute.c
    keys = list(acc)
    existing: dict[tuple[Any, Any], tuple[Any, Any, Any]] = {}
    for i in range(0, len(keys), 400):
        batch = keys[i:i + 400]
        for series, minute, settled, lsum, hist in conn.execute(
                select(m.series, m.minute, m.settled, m.latency_sum_ms, m.hist)
                .where(tuple_(m.series, m.minute).in_(batch))):
            existing[(series, minute)] = (settled, lsum, hist)
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
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
        conn.execute(update(nc_latency_minute)
                     .where(m.series == bindparam("k_series"), m.minute == bindparam("k_minute"))
                     .values(settled=bindparam("settled"), latency_sum_ms=bindparam("latency_sum_ms"),
                             hist=bindparam("hist")), updates)


def _cursor_name(source: str) -> str:
    return f"read.rollup.{source}"


def advance_rollup(workspace: Workspace, source: str, *, max_rows: int = 500_000,
                   force_recheck: bool = False) -> RollupProgress:
    """Bring ``nc_latency_minute`` of ``source`` up to date; return what it did.

    One console at a time advances a source (the cursor row is locked for the
    transaction; others wait, then find nothing new). Each call reads at most
    ``max_rows`` new rows; call again while ``caught_up`` is False.
    """
    engine = workspace.engine(source)
    return with_retry(lambda: _advance(engine, source, max_rows, force_recheck))


def advance_if_allowed(workspace: Workspace, source: str) -> bool:
    """``advance_rollup``; False when this database user may not write the rollup (the reader then
    adds the unwritten tail in memory: ``read_hists(..., tail=True)``)."""
    try:
        advance_rollup(workspace, source)
    except DBAPIError as exc:
        if not is_permission_denied(exc):
            raise
        return False
    return True


def _settle_clock(t: dt.datetime) -> float:
    """The clock the rollup's id window settles on (``idwindow.settle``): seconds since 1970, as a float."""
    return (t - dt.datetime(1970, 1, 1)).total_seconds()


def _gap_rows(name: str) -> ColumnElement[bool]:
    """The ``nc_cursor`` rows holding a window's gaps (``<name>:gaps:NNNN``; a position is 255 characters)."""
    return and_(nc_cursor.c.name > f"{name}:gaps:", nc_cursor.c.name < f"{name}:gaps;")


def _stored_window(conn: Connection, name: str, pos: dict[str, Any]) -> IdWindow | None:
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


def _save_window(conn: Connection, name: str, pos: dict[str, Any], w: IdWindow, now: dt.datetime) -> None:
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


def _first_window(conn: Connection, spec: SourceSpec, floor: dt.datetime) -> IdWindow | None:
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


def _advance(engine: Engine, source: str, max_rows: int, force_recheck: bool) -> RollupProgress:
    spec = source_spec(source)
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
        acc: _Acc = {}
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
        idwindow.settle(w, _settle_clock(now), LAG.total_seconds())
        settled_late = 0
        last_check = pos.get("rechecked_at", 0.0)
        if force_recheck or time.time() - last_check >= RECHECK_SECONDS:
            settled_late = _recheck(conn, source, spec, acc, horizon)
            pos["rechecked_at"] = time.time()
        _write_acc(conn, acc)
        # Minutes that left the horizon are dropped (bounded table).
        conn.execute(delete(nc_latency_minute).where(nc_latency_minute.c.minute < horizon - dt.timedelta(days=1),
                                                     nc_latency_minute.c.series.like(spec["series_like"])))
        _save_window(conn, name, pos, w, now)
        conn.execute(update(nc_cursor).where(nc_cursor.c.name == name)
                     .values(position=json.dumps(pos, separators=(",", ":")), updated_at=now))
    return {"source": source, "read": read, "last_id": w.last, "caught_up": caught_up,
            "settled_late": settled_late, "gaps": len(w.gaps)}


def _recheck(conn: Connection, source: str, spec: SourceSpec, acc: _Acc, horizon: dt.datetime) -> int:
    u = nc_rollup_unsettled.c
    conn.execute(delete(nc_rollup_unsettled).where(u.source == source, u.created_at < horizon))
    t = spec["table"]
    settled_cond = spec["settled"]
    rows = conn.execute(select(*spec["cols"]).select_from(
        t.join(nc_rollup_unsettled, and_(u.source == source, u.row_id == spec["id"])))
        .where(settled_cond)).all()
    _add_rows(acc, source, rows)
    ids = [r[0] for r in rows]
    for i in range(0, len(ids), 1000):
        conn.execute(delete(nc_rollup_unsettled).where(u.source == source, u.row_id.in_(ids[i:i + 1000])))
    return len(ids)


def catch_up(workspace: Workspace, source: str, *, max_seconds: float = 600.0) -> int:
    """Advance until caught up (first run on a big log); return rows read."""
    total, deadline = 0, time.monotonic() + max_seconds
    while True:
        out = advance_rollup(workspace, source)
        total += out["read"]
        if out["caught_up"] or time.monotonic() > deadline:
            return total


# --------------------------------------------------------------------------
# Reading it back

def read_hists(conn: Connection, source: str, start: dt.datetime, end: dt.datetime, bucket_seconds: int,
               start_b: int, n: int, *, tail: bool = False) -> dict[str, npt.NDArray[np.int64]]:
    """The rollup's histograms of ``source`` between ``start`` and ``end``: {series: n × NBINS counts}.

    Row b of a series counts the minutes whose epoch second // ``bucket_seconds``
    is ``start_b + b``; a series is a dispatch_type (dispatch) or ``cart``.
    ``tail`` (a database user that may not write the rollup) adds what an
    advance would add, computed in memory (``_unpersisted``), read on the same
    connection so the stored rollup and the tail come from one snapshot.
    """
    out: dict[str, npt.NDArray[np.int64]] = {}
    prefixed = source_spec(source)["prefixed"]
    # Each stored minute's (bin, count) pairs placed at its bucket's row of the n × NBINS array, one
    # bincount per series (a week of minutes is ~10,000 histograms a series).
    for series, (minutes, rows_of, bins, counts) in fetch_minute_hists(
            conn, source_spec(source)["series_like"], start, end).items():
        b = (minutes * 60 // bucket_seconds - start_b)[rows_of]
        keep = (b >= 0) & (b < n)
        flat = b[keep] * NBINS + bins[keep]
        if bucket_seconds == 60:    # one stored minute per bucket: every (bucket, bin) occurs once
            h = np.zeros(n * NBINS, dtype=np.int64)
            h[flat] = counts[keep]
        else:
            h = np.rint(np.bincount(flat, weights=counts[keep].astype(np.float64), minlength=n * NBINS)).astype(np.int64)
        out[series.split(":", 1)[1] if prefixed else series] = h.reshape(n, NBINS)
    if tail:
        _add_acc(out, source, _unpersisted(conn, source, start), bucket_seconds, start_b, n)
    return out


def _unpersisted(conn: Connection, source: str, floor: dt.datetime) -> _Acc:
    """What an advance would add to the rollup, computed in memory and written nowhere.

    For a database user that may not write the rollup (a viewer): the rows
    an advance would read (in the stored window's gaps, then past its highest
    id: late commits included, nothing counted twice), and the rows the
    rollup holds as unsettled that have settled since, both created at or
    after ``floor`` (the start of the window read). Read on the caller's
    connection, so the stored rollup and this tail come from one snapshot.
    """
    spec = source_spec(source)
    now = db_now(conn)
    floor = max(floor, now - HORIZON)
    name = _cursor_name(source)
    raw = conn.execute(select(nc_cursor.c.position).where(nc_cursor.c.name == name)).scalar()
    w = _stored_window(conn, name, json.loads(raw or "{}"))
    acc: _Acc = {}
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
    settled_cond = spec["settled"]
    _add_rows(acc, source, conn.execute(select(*spec["cols"]).select_from(
        t.join(nc_rollup_unsettled, and_(u.source == source, u.row_id == spec["id"])))
        .where(settled_cond, u.created_at >= floor)).all())
    return acc


def _add_acc(hists: dict[str, npt.NDArray[np.int64]], source: str, acc: _Acc, bucket_seconds: int, start_b: int,
             n: int) -> None:
    """Add an in-memory rollup tail (``_unpersisted``) into ``read_hists``' arrays."""
    for (series, minute), (_count, _lsum, values) in acc.items():
        row = _hist_row(hists, source, series, minute, bucket_seconds, start_b, n)
        if row is not None:
            row += np.bincount(bin_index(values), minlength=NBINS)


def _hist_row(hists: dict[str, npt.NDArray[np.int64]], source: str, series: str, minute: dt.datetime,
              bucket_seconds: int, start_b: int, n: int) -> npt.NDArray[np.int64] | None:
    """The histogram row of ``series`` at ``minute``'s bucket (allocated on first use), None outside the window."""
    b = (epoch_seconds(minute) // bucket_seconds) - start_b
    if not 0 <= b < n:
        return None
    key = series.split(":", 1)[1] if source_spec(source)["prefixed"] else series
    h = hists.get(key)
    if h is None:
        h = hists[key] = np.zeros((n, NBINS), dtype=np.int64)
    # A row of the n × NBINS array (numpy types an integer index as Any: it may be a scalar).
    return cast(npt.NDArray[np.int64], h[b])
