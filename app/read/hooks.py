"""What the read side reads of a source, as one record: ``SourceReads``.

The registry (``app.registry``) states what the console knows of a source;
this record adds how the read side reads it, so the generic read modules
(``failures``, ``feeds``, ``duplicates``, ...) look a source's readers up
(``app.read.by_source.reads_for``) instead of naming sources. Each per-source
read module (``app.read.dispatch_reads``, ``.cart_reads``, ``.order_reads``)
builds its own record as ``READS``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Table
from sqlalchemy.sql.elements import ColumnElement

from .. import registry
from .failed_parts import FailedList
from .feed_parts import FeedReader, RawRecord
from .rule_specs import MongoRuleSpec, SqlRuleSpec

if TYPE_CHECKING:
    from ..bootstrap import Workspace


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
    feed_keyset: FeedKeyset | None = None  # SQL sources: what the feed's late-commit narrowing counts
    # How the source's built-in duplicate rule reads its rows: a SQL table, or a collection of the order store.
    sql_rule_spec: Callable[[Workspace], SqlRuleSpec] | None = None
    mongo_rule_spec: Callable[[Workspace], MongoRuleSpec] | None = None
