"""The rollup's stored minute histograms, fetched for a range: {series: (minutes, bins, counts)}.

A week of one-minute buckets is some 10,000 stored rows per series. Read as
rows, MySQL/MariaDB's pure-Python driver spends most of a chart's range
change taking 30,000 rows apart (and parsing a datetime in each). There, the
rows are concatenated by the server instead, per series: three
``GROUP_CONCAT`` columns ordered by the same unique key (the minutes, each
histogram's length, the histograms end to end), so a week arrives as
three rows and numpy cuts them apart. A range whose concatenation would pass the
server's packet limit comes back cut short (the counts do not match) and is
read again in halves: never a silently shorter chart. Other
databases read the rows as they are.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select, text
from sqlalchemy.engine import Connection

from ..schema import nc_latency_minute
from ..sqlutil import backend
from .common import epoch_seconds
from .histogram import SPARSE_DTYPE

I64 = npt.NDArray[np.int64]
# Per series: each stored histogram's minute (minutes since 1970), and its non-empty
# bins laid end to end with the histogram (row of ``minutes``) each pair belongs to.
MinuteHists = dict[str, tuple[I64, I64, I64, I64]]



class TruncatedRead(RuntimeError):
    """The server cut a concatenation short (its limit is below what a day of histograms needs)."""


def fetch_minute_hists(conn: Connection, series_like: str, start: dt.datetime, end: dt.datetime) -> MinuteHists:
    """The stored histograms of the series matching ``series_like`` with ``start <= minute < end``."""
    if backend(conn) in ("mysql", "mariadb"):
        return _packed(conn, series_like, start, end)
    return _plain(conn, series_like, start, end)


def _assemble(per: dict[str, tuple[list[I64], list[I64], list[bytes]]]) -> MinuteHists:
    out: MinuteHists = {}
    for series, (minute_parts, length_parts, blobs) in per.items():
        minutes = np.concatenate(minute_parts)
        lengths = np.concatenate(length_parts)
        pairs = np.frombuffer(b"".join(blobs), dtype=SPARSE_DTYPE)
        if len(pairs) * SPARSE_DTYPE.itemsize != int(lengths.sum()):
            raise TruncatedRead(f"the stored histograms of {series} came back cut short")
        rows_of = np.repeat(np.arange(len(minutes), dtype=np.int64), lengths // SPARSE_DTYPE.itemsize)
        out[series] = (minutes, rows_of, pairs["bin"].astype(np.int64), pairs["count"].astype(np.int64))
    return out


def _plain(conn: Connection, series_like: str, start: dt.datetime, end: dt.datetime) -> MinuteHists:
    m = nc_latency_minute.c
    rows: dict[str, tuple[list[int], list[int], list[bytes]]] = {}
    for series, minute, blob in conn.execute(select(m.series, m.minute, m.hist).where(
            m.minute >= start, m.minute < end, m.series.like(series_like))):
        minutes, lengths, blobs = rows.setdefault(series, ([], [], []))
        blob = bytes(blob or b"")
        minutes.append(epoch_seconds(minute) // 60)
        lengths.append(len(blob))
        blobs.append(blob)
    return _assemble({series: ([np.array(minutes, dtype=np.int64)], [np.array(lengths, dtype=np.int64)], blobs)
                      for series, (minutes, lengths, blobs) in rows.items()})


def _int_list(raw: Any) -> I64:
    s = raw.decode() if isinstance(raw, bytes | bytearray) else str(raw)
    return np.array(s.split(","), dtype=np.int64)


_PACKED = text(f"""
    SELECT series, COUNT(*),
           GROUP_CONCAT(TIMESTAMPDIFF(MINUTE, '1970-01-01', minute) ORDER BY minute),
           GROUP_CONCAT(LENGTH(hist) ORDER BY minute),
           GROUP_CONCAT(hist ORDER BY minute SEPARATOR '')
    FROM {nc_latency_minute.name}
    WHERE minute >= :start AND minute < :end AND series LIKE :series_like
    GROUP BY series""")
_SMALLEST_SPAN = dt.timedelta(hours=1)   # 60 histograms: at most 108 kB, below any server's limit


def _packed(conn: Connection, series_like: str, start: dt.datetime, end: dt.datetime, *,
            limit: int | None = None) -> MinuteHists:
    # The concatenation may be as long as a packet may be (or ``limit`` bytes); a range whose rows
    # are longer comes back cut short (the server warns and truncates) and is read again in halves.
    if limit is None:
        limit = int(conn.execute(text("SELECT @@max_allowed_packet")).scalar_one())
    conn.execute(text(f"SET SESSION group_concat_max_len = {int(limit)}"))
    per: dict[str, tuple[list[I64], list[I64], list[bytes]]] = {}
    spans = [(start, end)]
    while spans:
        a, b = spans.pop()
        try:
            got = _packed_span(conn, series_like, a, b)
        except TruncatedRead:
            if b - a <= _SMALLEST_SPAN:
                raise
            mid = a + dt.timedelta(minutes=(b - a) // dt.timedelta(minutes=2))
            spans += [(mid, b), (a, mid)]
            continue
        for series, (minutes, lengths, blob) in got.items():
            minute_parts, length_parts, blobs = per.setdefault(series, ([], [], []))
            minute_parts.append(minutes)
            length_parts.append(lengths)
            blobs.append(blob)
    return _assemble(per)


def _packed_span(conn: Connection, series_like: str, start: dt.datetime,
                 end: dt.datetime) -> dict[str, tuple[I64, I64, bytes]]:
    out: dict[str, tuple[I64, I64, bytes]] = {}
    for series, count, minute_list, length_list, blob in conn.execute(
            _PACKED, {"start": start, "end": end, "series_like": series_like}):
        minutes, lengths, blob = _int_list(minute_list), _int_list(length_list), bytes(blob or b"")
        if not len(minutes) == len(lengths) == int(count) or int(lengths.sum()) != len(blob):
            raise TruncatedRead(f"the stored histograms of {series} came back cut short")
        out[series] = (minutes, lengths, blob)
    return out
