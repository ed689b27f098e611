"""How a duplicate rule reads its rows: ``SqlRuleSpec`` (one SQL table) and ``MongoRuleSpec``
(one collection of the order store), and the key and point types the scans pass around.

Nothing here knows a source; each per-source read module builds its built-in
rule's spec from these (``builtin_rule_spec``), ``duplicates`` builds the
config-defined rules' specs and runs the scans.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnClause, ColumnElement, TableClause
from sqlalchemy.engine import Connection

from .models import DuplicateGroup

# A rule's key values, as the database hands them back.
Key = tuple[Any, ...]
# (key, time) of a row an incremental scan finds new or changed.
Point = tuple[Key, Any]
# A rule's grouping: rows (or documents) -> groups.
GroupRows = Callable[[list[dict[str, Any]]], list[DuplicateGroup]]
# The order store's database: pymongo's or mongomock's (``OrderStore.db``; neither is typed).
OrderDb = Any


@dataclass(frozen=True)
class SqlRuleSpec:
    """How one rule reads one SQL table: key, time and id columns, filter, grouping."""

    source: str
    rule: str
    table: TableClause
    key_cols: tuple[ColumnClause[Any], ...]
    time_col: ColumnClause[Any]
    id_col: ColumnClause[Any]
    fetch_cols: tuple[ColumnClause[Any], ...]
    where: tuple[ColumnElement[bool], ...] = ()   # always-on conditions (cart: sent rows only)
    group: GroupRows | None = None       # rows -> groups (every spec has one)
    filter_cols: tuple[ColumnClause[Any], ...] = ()
    filter_int_cols: tuple[ColumnClause[Any], ...] = ()
    changed_cols: tuple[ColumnClause[Any], ...] = ()   # indexed time columns re-read for late commits and late changes
    # (conn, rows) -> groups, for a rule that reads more than the rows
    group_in: Callable[[Connection, list[dict[str, Any]]], list[DuplicateGroup]] | None = None
    # (conn, [(key, time)] of touched rows) -> more keys to re-examine
    related_keys: Callable[[Connection, list[Point]], set[Key]] | None = None
    # The rule's groups are kept in the console's member index (``cart_members``: the built-in cart rule):
    # its scans without a text filter read the index instead of the table.
    member_index: bool = False

    def groups_of(self, conn: Connection, rows: list[dict[str, Any]]) -> list[DuplicateGroup]:
        if self.group_in is not None:
            return self.group_in(conn, rows)
        assert self.group is not None   # every spec builder sets it
        return self.group(rows)


@dataclass(frozen=True)
class MongoRuleSpec:
    source: str
    rule: str
    collection: str
    key_fields: tuple[str, ...]
    time_field: str
    group: GroupRows
    filter_fields: tuple[str, ...] = ()
    filter_int_fields: tuple[str, ...] = ()
