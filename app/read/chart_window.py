"""The charts' window and the raw per-series numbers a source's statistics read into it.

``Window`` is ``n`` buckets aligned on whole multiples of the bucket since
1970 (UTC); ``RawSeries`` holds a source's latency histograms, failed and
stuck counts per series over one window, as the per-source read modules
fill them (``LatencyReads.chart_unsettled``, ``SourceReads.store_series``)
and ``app.read.series`` turns them into the charts' numbers.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import UsageError
from .common import epoch_seconds

EPOCH = dt.datetime(1970, 1, 1)
# At most seven days of minutes (the rollup keeps eight days).
MAX_BUCKETS = 7 * 24 * 60 + 1

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Window:
    """``n`` buckets of ``bucket_seconds``, the first numbered ``start_b`` (epoch seconds // bucket)."""

    start_b: int
    n: int
    bucket_seconds: int

    def __post_init__(self) -> None:
        if self.bucket_seconds < 60 or self.bucket_seconds % 60:
            raise UsageError("Chart buckets are whole minutes.")
        if not 1 <= self.n <= MAX_BUCKETS:
            raise UsageError(f"A chart holds 1 to {MAX_BUCKETS:,} buckets, not {self.n:,}: choose a larger bucket.")

    @classmethod
    def ending(cls, now: dt.datetime, span: dt.timedelta, bucket_seconds: int) -> Window:
        """The last ``span`` up to ``now``: its last bucket is the one holding ``now``."""
        end_b = epoch_seconds(now) // bucket_seconds + 1
        n = max(1, math.ceil(span.total_seconds() / bucket_seconds))
        return cls(end_b - n, n, bucket_seconds)

    @classmethod
    def covering(cls, start: dt.datetime, end: dt.datetime, bucket_seconds: int) -> Window:
        """The buckets that cover ``start``..``end`` (at least one)."""
        start_b = epoch_seconds(start) // bucket_seconds
        end_b = max(start_b + 1, -(-epoch_seconds(end) // bucket_seconds))
        return cls(start_b, end_b - start_b, bucket_seconds)

    @property
    def start(self) -> dt.datetime:
        return EPOCH + dt.timedelta(seconds=self.start_b * self.bucket_seconds)

    @property
    def end(self) -> dt.datetime:
        return EPOCH + dt.timedelta(seconds=(self.start_b + self.n) * self.bucket_seconds)

    def bucket_start(self, i: int) -> dt.datetime:
        return EPOCH + dt.timedelta(seconds=(self.start_b + i) * self.bucket_seconds)

    def epochs(self) -> F64:
        """Each bucket's start as epoch seconds (the charts' x values)."""
        return (np.arange(self.n, dtype=np.float64) + self.start_b) * self.bucket_seconds

    def index(self, t: dt.datetime) -> int | None:
        b = epoch_seconds(t) // self.bucket_seconds - self.start_b
        return b if 0 <= b < self.n else None

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "bucket_seconds": self.bucket_seconds}


@dataclass
class RawSeries:
    """Per series: latency histograms (n × NBINS), failed and stuck counts (n)."""

    hists: dict[str, I64] = field(default_factory=dict)
    failed: dict[str, I64] = field(default_factory=dict)
    stuck: dict[str, I64] = field(default_factory=dict)


def counts_into(target: dict[str, I64], series: str, b: int, n: int, c: int) -> None:
    """Add ``c`` to bucket ``b`` of ``target[series]`` (n zeros when new); a bucket outside 0..n-1 adds nothing."""
    arr = target.get(series)
    if arr is None:
        arr = target[series] = np.zeros(n, dtype=np.int64)
    if 0 <= b < n:
        arr[b] += c
