"""Histogram percentiles against numpy, durations, and read models' JSON."""
import datetime as dt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.cli.cmd_read import parse_duration
from app.errors import UsageError
from app.read import histogram as stats  # the histogram maths, once part of app.read.stats
from app.read.models import FailedItem


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0, 5e6, allow_nan=False), min_size=1, max_size=300))
def test_histogram_percentiles_are_within_the_documented_bin_error(values):
    values = np.array(values)
    counts = np.bincount(stats.bin_index(values), minlength=stats.NBINS)
    # Encoding round-trips the histogram.
    assert (stats.decode_hist(stats.encode_hist(counts)) == counts).all()
    got = stats.hist_percentiles(counts[None, :])[0]
    want = stats.exact_percentiles(values)
    for g, w in zip(got, want):
        bound = max(stats.HIST_RELATIVE_ERROR * w, stats.HIST_ABSOLUTE_ERROR_MS) * (1 + 1e-9) + 1e-9
        assert abs(g - w) <= bound, (g, w)


def test_exact_percentiles_are_inverted_cdf():
    assert stats.exact_percentiles([10, 20, 30, 40]) == [20.0, 40.0, 40.0]
    assert stats.exact_percentiles([]) == [None, None, None]


@pytest.mark.parametrize("text,seconds", [("30m", 1800), ("24h", 86400), ("7d", 604800), ("90s", 90),
                                          ("2w", 1209600), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "abc", "10", "-5m", "0h", "5y", "1e3h", "5m; DROP TABLE x"])
def test_bad_durations_are_one_sentence(text):
    with pytest.raises(UsageError) as err:
        parse_duration(text)
    assert "30m, 24h or 7d" in err.value.message


def test_failed_item_json_has_the_cli_shape():
    item = FailedItem(source="dispatch", id=7, kind="failed", status="failed", age_seconds=12.3456,
                      error="boom", attempts=2, created_at=dt.datetime(2024, 1, 1), detail={})
    j = item.to_json()
    assert {"source", "id", "status", "age_seconds", "error"} <= set(j)
    assert j["age_seconds"] == 12.346 and j["id"] == 7
