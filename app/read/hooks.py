"""What the read side reads of a source, as one record: ``SourceReads``.

The registry (``app.registry``) states what the console knows of a source;
this record adds how the read side reads it, so the generic read modules
(``failures``, ``feeds``, ``duplicates``, ``rollup``, ``stats``,
``series``) look a source's readers up (``app.read.by_source.reads_for``)
instead of naming sources. Each per-source read module
(``app.read.dispatch_reads``, ``.cart_reads``, ``.order_reads``) builds its
own record as ``READS``.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from sqlalchemy import Column, Select, Table
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from .. import registry
from .chart_window import RawSeries, Window
from .failed_parts import FailedList
from .feed_parts import FeedReader, RawRecord
from .models import DuplicateGroup
from .rule_specs import MongoRuleSpec, SqlRuleSpec

if TYPE_CHECKING:
    from ..bootstrap import Workspace

# {series: {bucket: count}}: the failed or pending counts of a statistics window.
Counts = dict[str, dict[int, int]]


class SourceSpec(TypedDict):
    """The log a rollup reads (``app.read.rollup.source_spec``), and what a settled row of it is."""

    table: Table
    id: Column[Any]
    created: Column[Any]
    cols: tuple[Column[Any], ...]
    settled: ColumnElement[bool]        # a settled row, in SQL
    series_like: str                    # the LIKE pattern of the source's series in nc_latency_minute
    prefixed: bool                      # series are "<source>:<kind>" (charted by kind), else the source's name


@dataclass(frozen=True)
class LatencyReads:
    """How the latency statistics read a source's log (the sources with statistics have one)."""

    rollup: SourceSpec                    # the log the rollup reads, and its settled rows in SQL
    # (series, latency ms) of a row of ``rollup["cols"]`` once settled, or None while it is unsettled.
    settled: Callable[[Sequence[Any]], tuple[str, float] | None]
    # (start, end) -> (series, created, done) of the rows settled in [start, end): the exact mode's rows.
    exact_rows: Callable[[dt.datetime, dt.datetime], Select[Any]]
    # (conn, workspace, start, end, bucket seconds, first bucket, now) -> (failed, pending) per series and
    # bucket, counted in the database.
    unsettled_counts: Callable[[Connection, Workspace, dt.datetime, dt.datetime, int, int, dt.datetime],
                               tuple[Counts, Counts]]
    # (conn, workspace, window, now, raw): the charts' failed and stuck counts per series and bucket, into
    # ``raw.failed`` and ``raw.stuck`` (the histograms come from the rollup).
    chart_unsettled: Callable[[Connection, Workspace, Window, dt.datetime, RawSeries], None]


@dataclass(frozen=True)
class FeedKeyset:
    """What a SQL source's unified feed reads: its table, time and id columns, and the conditions
    every entry meets (the late-commit narrowing counts the same rows)."""

    table: Table
    time_col: Column[Any]
    id_col: Column[Any]
    conds: tuple[ColumnElement[bool], ...] = ()


@dataclass(frozen=True)
class SourceReads:
    source: registry.Source
    failed_list: FailedList               # the Failed & Stuck list: the source's failed, stuck or missed items
    feed: FeedReader                      # the source's entries of the unified notification feed
    feed_kind: tuple[str, str]            # the kind of those entries, and what it is called (sorting by kind)
    feed_types: tuple[tuple[str, str], ...]   # the feed's type filter: (type, what it is called) of this source
    raw_record: RawRecord                 # the row or document behind a feed entry (the detail pane)
    series_names: tuple[str, ...]         # the charts' series the source always has (the data may hold more)
    dup_series: Callable[[DuplicateGroup], str]   # the chart series a duplicate group's copies count under
    feed_keyset: FeedKeyset | None = None  # SQL sources: what the feed's late-commit narrowing counts
    # How the source's built-in duplicate rule reads its rows: a SQL table, or a collection of the order store.
    sql_rule_spec: Callable[[Workspace], SqlRuleSpec] | None = None
    mongo_rule_spec: Callable[[Workspace], MongoRuleSpec] | None = None
    latency: LatencyReads | None = None   # the sources with latency statistics (rollup, exact, failed/pending)
    # A source without a rollup (the order store): (workspace, window, now or None for its own clock) -> the
    # charts' histograms and failed counts, read from the store itself.
    store_series: Callable[[Workspace, Window, dt.datetime | None], RawSeries] | None = None
