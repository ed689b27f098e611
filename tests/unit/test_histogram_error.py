"""The histogram percentiles the charts draw are within the stated error of numpy's exact ones."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import UsageError
from app.read.histogram import (
    HIST_ABSOLUTE_ERROR_MS,
    HIST_RELATIVE_ERROR,
    NBINS,
    QUANTILES,
    bin_index,
    decode_hist,
    encode_hist,
    hist_percentiles,
)
from app.read.series import MAX_BUCKETS, Window, auto_bucket, parse_bucket, parse_range

# Latencies the bins hold (the top bin starts at 1.1^298 ms, far beyond any delivery).
latency = st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False)


def _within(got: float, exact: float) -> bool:
    return abs(got - exact) <= max(HIST_RELATIVE_ERROR * exact, HIST_ABSOLUTE_ERROR_MS) + 1e-9


@settings(max_examples=300, deadline=None)
@given(st.lists(latency, min_size=1, max_size=400))
def test_histogram_percentiles_are_within_the_stated_error_of_numpy(values):
    counts = np.bincount(bin_index(values), minlength=NBINS)
    got = hist_percentiles(counts)[0]
    exact = np.percentile(np.asarray(values), [q * 100 for q in QUANTILES], method="inverted_cdf")
    for g, e in zip(got, exact):
        assert _within(g, e), (g, e)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(latency, min_size=0, max_size=60), min_size=1, max_size=12))
def test_merged_minute_histograms_read_as_the_latencies_of_every_minute_together(minutes):
    """A bucket of several minutes (stored apart, encoded, decoded and added) has the percentiles of all of them."""
    total = np.zeros(NBINS, dtype=np.int64)
    for values in minutes:
        decode_hist(encode_hist(np.bincount(bin_index(values), minlength=NBINS)), total)
    flat = [v for m in minutes for v in m]
    got = hist_percentiles(total)[0]
    if not flat:
        assert np.isnan(got).all()
        return
    exact = np.percentile(np.asarray(flat), [q * 100 for q in QUANTILES], method="inverted_cdf")
    for g, e in zip(got, exact):
        assert _within(g, e), (g, e)


def test_the_stated_error_is_the_half_bin_of_a_ten_percent_bin():
    assert HIST_RELATIVE_ERROR == pytest.approx(1.1 ** 0.5 - 1)
    assert HIST_RELATIVE_ERROR < 0.049


def test_a_window_ends_with_the_bucket_that_holds_now():
    now = dt.datetime(2026, 3, 1, 12, 34, 56)
    w = Window.ending(now, dt.timedelta(hours=1), 60)
    assert (w.n, w.start, w.end) == (60, dt.datetime(2026, 3, 1, 11, 35), dt.datetime(2026, 3, 1, 12, 35))
    assert w.index(now) == 59 and w.index(w.start) == 0 and w.index(w.end) is None
    c = Window.covering(dt.datetime(2026, 3, 1, 10, 2), dt.datetime(2026, 3, 1, 10, 58), 300)
    assert (c.start, c.end, c.n) == (dt.datetime(2026, 3, 1, 10, 0), dt.datetime(2026, 3, 1, 11, 0), 12)
    assert list(c.epochs()[:2]) == [(c.start - dt.datetime(1970, 1, 1)).total_seconds(),
                                    (c.start - dt.datetime(1970, 1, 1)).total_seconds() + 300]


def test_ranges_and_buckets_are_named_or_one_sentence():
    assert parse_range("7d") == dt.timedelta(days=7) and parse_bucket("5m") == 300
    with pytest.raises(UsageError, match=r"^--range takes 1h, 24h or 7d, not '2h'\.$"):
        parse_range("2h")
    with pytest.raises(UsageError, match=r"^--bucket takes 1m, 5m or 1h, not '30s'\.$"):
        parse_bucket("30s")
    assert [auto_bucket(dt.timedelta(hours=h)) for h in (1, 3, 24, 72, 168)] == [60, 60, 300, 300, 3600]
    assert Window.ending(dt.datetime(2026, 3, 1), dt.timedelta(days=7), 60).n == MAX_BUCKETS - 1
    with pytest.raises(UsageError, match="choose a larger bucket"):
        Window.ending(dt.datetime(2026, 3, 1), dt.timedelta(days=8), 60)
