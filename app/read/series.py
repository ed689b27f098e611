"""The numbers the Charts page, the Overview and ``stats`` show: per source, series and time bucket.

A *series* is a dispatch type (dispatch), an order stage (orders: first image
of the stage → its admin email) or ``cart`` (abandonment created → email
sent). Per bucket of a ``Window`` (aligned on whole multiples of the bucket
since 1970, UTC) each series has:

* ``count``: items settled (completed, sent, emailed), bucketed by their
  creation (first image, for orders) — the throughput;
* ``p50_ms``/``p95_ms``/``p99_ms``: their latency percentiles, read from
  per-minute latency histograms (``app.read.histogram``: within
  ``HIST_RELATIVE_ERROR``, 4.9 %, of the exact inverted-CDF value, or 0.5 ms
  below 1 ms). Cart and dispatch read the console's rollup
  (``app.read.rollup``); the order store has none, so its histograms are
  built in memory from the orders touched in the window (its read record's
  ``store_series``: ``order_reads``, ``order_stats``);
* ``failed`` (given up, or for orders a missed stage email), ``stuck``
  (still pending past its threshold) and ``failure_rate`` = failed /
  (settled + failed);
* ``duplicates``: extra copies (every member of a duplicate group but the
  kept one) at the copy's own time, from the same scan as the Duplicates page.

Everything here runs off the GUI thread and returns plain values (numpy
arrays in frozen dataclasses); ``points`` flattens them into the rows
``stats --json`` prints and the Charts page exports.
"""
from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import registry
from ..errors import UsageError
from ..sqlutil import db_now
from .by_source import ALL_READS, reads_for
from .chart_window import EPOCH as EPOCH  # re-exported for ui/charts.py, ui/pages/charts.py and tests
from .chart_window import F64, I64, RawSeries, counts_into
from .chart_window import MAX_BUCKETS as MAX_BUCKETS  # re-exported for tests
from .chart_window import Window as Window  # re-exported for ui/ and tests
from .duplicates import scan_duplicates
from .histogram import HIST_ABSOLUTE_ERROR_MS, HIST_RELATIVE_ERROR, NBINS, QUANTILES, hist_percentiles
from .rollup import advance_if_allowed, read_hists, source_latency

if TYPE_CHECKING:
    from ..bootstrap import Workspace

# The named ranges and bucket sizes of the charts and ``stats`` (seconds).
RANGES: dict[str, dt.timedelta] = {"1h": dt.timedelta(hours=1), "24h": dt.timedelta(hours=24),
                                   "7d": dt.timedelta(days=7)}
BUCKETS: dict[str, int] = {"1m": 60, "5m": 300, "1h": 3600}
DEFAULT_BUCKET: dict[str, str] = {"1h": "1m", "24h": "5m", "7d": "1h"}
ERROR_NOTE = (f"percentiles from latency histograms: within {HIST_RELATIVE_ERROR:.1%} of the exact value, "
              f"or {HIST_ABSOLUTE_ERROR_MS} ms below 1 ms")
# Each source's series, the ones it always has (more appear when the data holds others).
SERIES: dict[str, tuple[str, ...]] = {r.source.name: r.series_names for r in ALL_READS}
# The JSON fields of one point, in the order the CSV writes them.
POINT_FIELDS = ("source", "series", "bucket_start", "count", "p50_ms", "p95_ms", "p99_ms", "failed",
                "failure_rate", "stuck", "duplicates")

def parse_range(text: str) -> dt.timedelta:
    """``1h``, ``24h`` or ``7d``; anything else is one sentence (exit 2)."""
    try:
        return RANGES[str(text).strip()]
    except KeyError:
        raise UsageError(f"--range takes 1h, 24h or 7d, not {text!r}.") from None


def parse_bucket(text: str) -> int:
    """``1m``, ``5m`` or ``1h`` as seconds; anything else is one sentence (exit 2)."""
    try:
        return BUCKETS[str(text).strip()]
    except KeyError:
        raise UsageError(f"--bucket takes 1m, 5m or 1h, not {text!r}.") from None


def auto_bucket(span: dt.timedelta) -> int:
    """The bucket a span is drawn with: minutes up to 3 h, 5 minutes up to 3 days, else hours."""
    if span <= dt.timedelta(hours=3):
        return 60
    if span <= dt.timedelta(days=3):
        return 300
    return 3600


def bucket_label(seconds: int) -> str:
    return {60: "1 min", 300: "5 min", 3600: "1 h"}.get(seconds, f"{seconds} s")


@dataclass(frozen=True)
class SeriesPoint:
    """One bucket of one series: a row of ``stats --json`` and of the chart's CSV."""

    source: str
    series: str
    bucket_start: dt.datetime
    count: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    failed: int
    stuck: int
    duplicates: int

    @property
    def failure_rate(self) -> float | None:
        total = self.count + self.failed
        return self.failed / total if total else None

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "series": self.series, "bucket_start": self.bucket_start.isoformat(),
                "count": self.count, "p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "p99_ms": self.p99_ms,
                "failed": self.failed, "failure_rate": self.failure_rate, "stuck": self.stuck,
                "duplicates": self.duplicates}


@dataclass(frozen=True)
class SeriesData:
    """One series over a window: arrays of ``window.n`` values (``pcts`` is n × 3, NaN where empty)."""

    name: str
    count: I64
    failed: I64
    stuck: I64
    duplicates: I64
    pcts: F64
    hist: I64          # every latency of the window, NBINS counts (the range's percentiles)

    @property
    def failure_rate(self) -> F64:
        """Per bucket, in [0, 1]; NaN where nothing settled or failed."""
        total = (self.count + self.failed).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, self.failed / np.where(total > 0, total, 1), np.nan)


@dataclass(frozen=True)
class Summary:
    """A source (or series) over the whole window: the report's table row."""

    source: str
    settled: int
    failed: int
    stuck: int
    duplicates: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def failure_rate(self) -> float | None:
        total = self.settled + self.failed
        return self.failed / total if total else None

    @property
    def duplicate_rate(self) -> float | None:
        """Extra copies per settled item."""
        return self.duplicates / self.settled if self.settled else None

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "settled": self.settled, "failed": self.failed, "stuck": self.stuck,
                "duplicates": self.duplicates, "p50_ms": self.p50_ms, "p95_ms": self.p95_ms,
                "p99_ms": self.p99_ms, "failure_rate": self.failure_rate, "duplicate_rate": self.duplicate_rate}


@dataclass(frozen=True)
class SourceStats:
    """A source's series over one window, and the same for all its series together (``overall``)."""

    source: str
    window: Window
    series: dict[str, SeriesData]
    overall: SeriesData
    duplicates_loaded: bool = True
    error_note: str = ERROR_NOTE

    def points(self, names: Iterable[str] | None = None) -> list[SeriesPoint]:
        """Every bucket of every series (or of ``names``), series by series, oldest bucket first."""
        out: list[SeriesPoint] = []
        for name in (self.series if names is None else names):
            s = self.series[name]
            for i in range(self.window.n):
                p = s.pcts[i]
                out.append(SeriesPoint(
                    source=self.source, series=name, bucket_start=self.window.bucket_start(i),
                    count=int(s.count[i]), p50_ms=_num(p[0]), p95_ms=_num(p[1]), p99_ms=_num(p[2]),
                    failed=int(s.failed[i]), stuck=int(s.stuck[i]), duplicates=int(s.duplicates[i])))
        return out

    def summary(self, names: Iterable[str] | None = None) -> Summary:
        """The window as one row: totals, and percentiles of every latency of ``names`` (default: all)."""
        chosen = [self.series[n] for n in (self.series if names is None else names)]
        if not chosen:
            return Summary(self.source, 0, 0, 0, 0, None, None, None)
        hist = np.sum([s.hist for s in chosen], axis=0)
        p = hist_percentiles(hist)[0]
        return Summary(self.source, settled=int(sum(int(s.count.sum()) for s in chosen)),
                       failed=int(sum(int(s.failed.sum()) for s in chosen)),
                       stuck=int(sum(int(s.stuck.sum()) for s in chosen)),
                       duplicates=int(sum(int(s.duplicates.sum()) for s in chosen)),
                       p50_ms=_num(p[0]), p95_ms=_num(p[1]), p99_ms=_num(p[2]))

    def with_duplicates(self, dups: dict[str, I64]) -> SourceStats:
        """The same window with the duplicate counts of a later scan (``source_duplicates``)."""
        series = {name: _replace_dups(s, dups.get(name)) for name, s in self.series.items()}
        for name, d in dups.items():
            if name not in series:
                series[name] = _series(name, self.window.n, np.zeros((self.window.n, NBINS), np.int64), None, None, d)
        total = np.sum([s.duplicates for s in series.values()], axis=0).astype(np.int64) if series else \
            np.zeros(self.window.n, np.int64)
        return SourceStats(self.source, self.window, series, _replace_dups(self.overall, total), True,
                           self.error_note)


def _num(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def _replace_dups(s: SeriesData, dups: I64 | None) -> SeriesData:
    d = np.zeros_like(s.count) if dups is None else dups
    return SeriesData(s.name, s.count, s.failed, s.stuck, d.astype(np.int64), s.pcts, s.hist)


def _series(name: str, n: int, hists: I64 | None, failed: I64 | None, stuck: I64 | None,
            dups: I64 | None) -> SeriesData:
    zeros = np.zeros(n, dtype=np.int64)
    if hists is None:
        count = zeros
        pcts = np.full((n, len(QUANTILES)), np.nan)
        hist = np.zeros(NBINS, dtype=np.int64)
    else:
        count = hists.sum(axis=1).astype(np.int64)
        pcts = hist_percentiles(hists)
        hist = hists.sum(axis=0).astype(np.int64)
    return SeriesData(name, count, zeros if failed is None else failed, zeros if stuck is None else stuck,
                      zeros if dups is None else dups, pcts, hist)


# --------------------------------------------------------------------------
# What each source's statistics read

def _sql_raw(workspace: Workspace, source: str, window: Window, now: dt.datetime | None, advance: bool) -> RawSeries:
    """A SQL source's series: histograms from the rollup (advanced first, when ``advance``), failed and stuck
    counts from the log (its record's ``chart_unsettled``)."""
    latency = source_latency(source)
    persisted = advance_if_allowed(workspace, source) if advance else True
    raw = RawSeries()
    # Read where lists and counts read (the read replica, if configured); the advance above wrote the
    # primary, which the replica follows.
    with workspace.reader().engine(source).connect() as conn:
        now = now or db_now(conn)
        raw.hists = read_hists(conn, source, window.start, window.end, window.bucket_seconds, window.start_b,
                               window.n, tail=not persisted)
        latency.chart_unsettled(conn, workspace, window, now, raw)
    return raw


def _member_time(source: str, member: dict[str, Any]) -> dt.datetime | None:
    field_name = "created_at" if registry.source(source).is_sql else "sent_at"
    at = member.get(field_name)
    if not isinstance(at, dt.datetime):  # config rules: their own time column
        at = next((v for v in member.values() if isinstance(v, dt.datetime)), None)
    return at


def source_duplicates(workspace: Workspace, source: str, window: Window) -> dict[str, I64]:
    """Extra copies per series and bucket: every member of a duplicate group but the kept one, at its time."""
    out: dict[str, I64] = {}
    series_of = reads_for(source).dup_series
    for g in scan_duplicates(workspace, source, since=window.start):
        name = series_of(g)
        for member in g.evidence[1:]:
            at = _member_time(source, member)
            i = window.index(at) if at is not None else None
            if i is not None:
                counts_into(out, name, i, window.n, 1)
    return out


def source_stats(workspace: Workspace, source: str, window: Window, *, now: dt.datetime | None = None,
                 duplicates: bool = True, advance: bool = True) -> SourceStats:
    """Every series of ``source`` over ``window`` (duplicates too, unless ``duplicates`` is False).

    ``workspace`` is the primaries' (the rollup is advanced there); the numbers are read from its
    ``reader()``: the read replicas where configured. The duplicate scan stays on the primary: it keeps
    the console's own member index current as it reads."""
    reads = reads_for(source)
    if reads.store_series is not None:
        raw = reads.store_series(workspace.reader(), window, now)
    else:
        raw = _sql_raw(workspace, source, window, now, advance)
    dups = source_duplicates(workspace, source, window) if duplicates else {}
    names = list(reads.series_names) + sorted((set(raw.hists) | set(raw.failed) | set(raw.stuck) | set(dups))
                                              - set(reads.series_names))
    n = window.n
    series = {name: _series(name, n, raw.hists.get(name), raw.failed.get(name), raw.stuck.get(name),
                            dups.get(name)) for name in names}
    merged = np.zeros((n, NBINS), dtype=np.int64)
    for h in raw.hists.values():
        merged += h
    overall = _series("*", n, merged, _total(series.values(), "failed", n), _total(series.values(), "stuck", n),
                      _total(series.values(), "duplicates", n))
    return SourceStats(source, window, series, overall, duplicates_loaded=duplicates)


def _total(series: Iterable[SeriesData], attr: str, n: int) -> I64:
    total = np.zeros(n, dtype=np.int64)
    for s in series:
        total += getattr(s, attr)
    return total


def clock_now(workspace: Workspace, sources: Sequence[str]) -> dt.datetime:
    """One clock for a chart's sources: the first SQL source's database, else the order store's."""
    for name in sources:
        if registry.source(name).is_sql:
            with workspace.engine(name).connect() as conn:
                return db_now(conn)
    return workspace.orders().now()


def configured_sources(workspace: Workspace, source: str | None = None) -> list[str]:
    """The configured sources, in the console's order (or only ``source``)."""
    if source is not None:
        registry.source(source)
        workspace.config.source(source)  # an unconfigured source is one sentence
        return [source]
    names = [s for s in registry.NAMES if workspace.has(s)]
    if not names:
        raise UsageError("No source is configured: add [sources.<name>] tables to the configuration.")
    return names


def range_stats(workspace: Workspace, sources: Sequence[str], span: dt.timedelta, bucket_seconds: int, *,
                duplicates: bool = True) -> list[SourceStats]:
    """The last ``span`` of every source in ``sources``, one window for all of them."""
    window = Window.ending(clock_now(workspace, sources), span, bucket_seconds)
    return [source_stats(workspace, s, window, duplicates=duplicates) for s in sources]
