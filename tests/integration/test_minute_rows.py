"""The stored minute histograms come back whole, however they are fetched.

MySQL/MariaDB concatenates them on the server (one row per series); a range
too long for the concatenation limit is read again in halves; a limit below
one hour of histograms is an error, never a shorter chart.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from sqlalchemy import insert

from app.read import minute_rows
from app.read.histogram import NBINS, encode_hist
from app.schema import nc_latency_minute

START = dt.datetime(2026, 11, 20)


def seed(engine) -> dict[str, dict[int, np.ndarray]]:
    """Three series over three days, some minutes missing, some histograms empty."""
    rng = np.random.default_rng(11)
    want: dict[str, dict[int, np.ndarray]] = {}
    rows = []
    for series in ("dispatch:comment_added", "dispatch:other", "cart"):
        for i in range(0, 3 * 1440, 3):
            minute = START + dt.timedelta(minutes=i)
            h = np.zeros(NBINS, dtype=np.int64)
            if i % 7:
                bins = rng.integers(0, NBINS, size=rng.integers(1, 60))
                np.add.at(h, bins, rng.integers(1, 1000, size=len(bins)))
            rows.append({"series": series, "minute": minute, "settled": int(h.sum()), "hist": encode_hist(h)})
            want.setdefault(series, {})[int((minute - dt.datetime(1970, 1, 1)).total_seconds()) // 60] = h
    with engine.begin() as conn:
        for lo in range(0, len(rows), 2000):
            conn.execute(insert(nc_latency_minute), rows[lo:lo + 2000])
    return want


def as_dense(got) -> dict[str, dict[int, np.ndarray]]:
    out: dict[str, dict[int, np.ndarray]] = {}
    for series, (minutes, rows_of, bins, counts) in got.items():
        per = out.setdefault(series, {})
        for r, m in enumerate(minutes):
            h = np.zeros(NBINS, dtype=np.int64)
            sel = rows_of == r
            np.add.at(h, bins[sel], counts[sel].astype(np.int64))
            per[int(m)] = h
    return out


def expect(want, pattern: str, start: dt.datetime, end: dt.datetime):
    lo = int((start - dt.datetime(1970, 1, 1)).total_seconds()) // 60
    hi = int((end - dt.datetime(1970, 1, 1)).total_seconds()) // 60
    prefix = pattern.rstrip("%")
    return {s: {m: h for m, h in per.items() if lo <= m < hi} for s, per in want.items()
            if (s.startswith(prefix) if pattern.endswith("%") else s == pattern)}


def same(got, want):
    assert set(got) == set(want)
    for s in want:
        assert set(got[s]) == set(want[s]), s
        for m in want[s]:
            assert np.array_equal(got[s][m], want[s][m]), (s, m)


def test_every_stored_histogram_comes_back_exactly(workspace_factory, sql_url):
    ws = workspace_factory(dispatch=sql_url("dispatch"))
    engine = ws.engine("dispatch")
    want = seed(engine)
    start, end = START + dt.timedelta(hours=5), START + dt.timedelta(days=2, hours=7)
    with engine.connect() as conn:
        for pattern in ("dispatch:%", "cart"):
            same(as_dense(minute_rows.fetch_minute_hists(conn, pattern, start, end)),
                 expect(want, pattern, start, end))


@pytest.mark.mariadb
def test_a_range_too_long_for_one_concatenation_is_read_in_halves(workspace_factory, mariadb_database,
                                                                   monkeypatch):
    spans = []
    real = minute_rows._packed_span
    monkeypatch.setattr(minute_rows, "_packed_span", lambda conn, like, a, b: spans.append(b - a) or real(conn, like, a, b))
    ws = workspace_factory(dispatch=mariadb_database("dispatch"))
    engine = ws.engine("dispatch")
    want = seed(engine)
    start, end = START, START + dt.timedelta(days=3)
    with engine.connect() as conn:
        # An hour of these histograms is at most 20 × 60 pairs of 6 bytes: 64 kB holds it, not a day.
        same(as_dense(minute_rows._packed(conn, "dispatch:%", start, end, limit=64_000)),
             expect(want, "dispatch:%", start, end))
        assert len(spans) > 3 and min(spans) < dt.timedelta(days=1), spans
        with pytest.raises(minute_rows.TruncatedRead, match="cut short"):
            minute_rows._packed(conn, "dispatch:%", start, end, limit=1_000)
