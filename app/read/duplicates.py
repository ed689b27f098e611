"""Duplicate scans: the queries that find the rows each duplicate rule applies to, and the
incremental scans that re-examine only the keys touched since a cursor.

The rules themselves are pure functions in ``app.read.rules``; this module
fetches their rows (and, for dispatch, the status timeline of the rows'
issues) and hands them over. Each source's built-in rule is its read
record's spec (``app.read.by_source.reads_for``: ``dispatch_reads``,
``cart_reads``, ``order_reads``); the config-defined rules' specs are built
here.

Scans are two-phase, so they stay fast at production size: phase 1 finds the
candidate keys with a GROUP BY on an index (``db upgrade`` creates them);
phase 2 fetches only the rows of those keys and applies the rule
(dispatch: with the status timeline of their issues, one query per batch of
issues, each bounded to the [first, last] span of the candidate keys, on
index ``nc_notif_issue_status``). An incremental scan that sees a new status
change re-examines the status keys of its issue that reach past it.
The cart rule's scans without a text filter read the console's member index
instead (``app.read.cart_members``: the sent rows of every key with two or
more, kept up to date incrementally), because one pass over the 2 M-row log
already costs more than the one second a full scan may take. A database user
that may not write the index (a viewer on a read-only user) gets the same
groups: the index as stored plus what an advance would change, computed in
memory, or the two-phase scan while the index has never been built.
"""
from __future__ import annotations

import datetime as dt
import gc
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnClause, ColumnElement, DateTime, case, column, func, or_, select, table
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from .. import registry
from ..config import DuplicateRule
from ..schema import nc_action, nc_archive
from ..sqlutil import db_now, is_permission_denied
from . import cart_members
from .by_source import reads_for
from .cart_reads import rebuild_cart_members as rebuild_cart_members  # re-exported for bench/read_side.py and tests
from .common import (
    KEY_BATCH,
    LATE_COMMIT_MARGIN,
    as_time,
    batched,
    id_key,
    keys_clause,
    mongo_text_filter,
    resolve_since,
    text_filter,
    time_key,
)
from .models import DuplicateGroup
from .rule_specs import Key, MongoRuleSpec, OrderDb, Point, SqlRuleSpec

# The built-in rules' names (re-exported for the tests that check them against the config's), and the
# config rules' grouping.
from .rules import CART_RULE as CART_RULE
from .rules import DISPATCH_RULE as DISPATCH_RULE
from .rules import ORDER_RULE as ORDER_RULE
from .rules import group_rule_rows

if TYPE_CHECKING:
    from ..bootstrap import Workspace

# What a cursor keeps of one rule: {(column, id): change time} and {("action", id): state}.
Seen = dict[tuple[str, Any], Any]

# --------------------------------------------------------------------------
# Helpers shared by the scans

def _finish(groups: list[DuplicateGroup], since: dt.datetime | None, limit: int | None) -> list[DuplicateGroup]:
    if since is not None:
        groups = [g for g in groups if g.last_at is not None and g.last_at >= since]
    if all(type(g.last_at) is dt.datetime and type(g.keep_id) is int for g in groups):
        # The same order as below, with the keys compared as they are (fast
        # for the tens of thousands of groups a full cart scan returns).
        groups.sort(key=attrgetter("last_at", "keep_id"), reverse=True)
    else:
        groups.sort(key=lambda g: (time_key(g.last_at), id_key(g.keep_id)), reverse=True)
    return groups[:limit] if limit is not None else groups


# --------------------------------------------------------------------------
# SQL scans

def _config_sql_spec(rule: DuplicateRule) -> SqlRuleSpec:
    # Identifiers were validated by the config loader; they still only ever
    # enter the query as quoted identifiers through table()/column().
    key_cols: tuple[ColumnClause[Any], ...] = tuple(column(k) for k in rule.key)
    time_col: ColumnClause[Any] = column(rule.time_column, DateTime)
    id_col: ColumnClause[Any] = column(rule.id_column)
    cols = {c.name: c for c in (id_col, *key_cols, time_col)}
    t = table(rule.table, *cols.values())
    return SqlRuleSpec(
        source=rule.source, rule=rule.name, table=t, key_cols=tuple(t.c[k] for k in rule.key),
        time_col=t.c[rule.time_column], id_col=t.c[rule.id_column], fetch_cols=tuple(t.c),
        group=lambda rows: group_rule_rows(rows, rule),
        filter_cols=tuple(t.c[k] for k in rule.key))


def _filter_clause(spec: SqlRuleSpec, filter_text: str | None) -> ColumnElement[bool] | None:
    """The one statement of what ``--filter`` matches in a row of ``spec``'s table.

    A key is picked when one of its qualifying rows matches; every scan (full
    or incremental) picks keys with this clause, so they agree.
    """
    return text_filter(spec.filter_cols, spec.filter_int_cols, filter_text)


def _candidate_keys(conn: Connection, spec: SqlRuleSpec, *, since: dt.datetime | None,
                    filter_text: str | None) -> list[Key]:
    """Phase 1: keys with more than one qualifying row, latest activity first.

    With ``filter_text`` only the keys of which at least one qualifying row
    matches it (a literal, bound pattern) — decided in the same GROUP BY, so
    a filter narrows the scan instead of widening it; phase 2 still fetches
    every member of those keys.
    """
    flt = _filter_clause(spec, filter_text)
    last = func.max(spec.time_col).label("last_at")
    stmt = select(*spec.key_cols, last).where(*spec.where).group_by(*spec.key_cols).having(func.count() > 1)
    if since is not None:
        stmt = stmt.having(last >= since)
    if flt is not None:
        stmt = stmt.having(func.max(case((flt, 1), else_=0)) == 1)
    # Sorted here, not by the database: an ORDER BY on the aggregate makes
    # MariaDB group in a temporary table instead of along the key index
    # (4 s instead of 2.3 s on 1 M sent cart rows).
    found = [(tuple(r[:-1]), time_key(as_time(r[-1]))) for r in conn.execute(stmt)]
    found.sort(key=lambda kt: kt[1], reverse=True)
    return [k for k, _ in found]


def _keys_matching(conn: Connection, spec: SqlRuleSpec, keys: list[Key], filter_text: str | None) -> set[Key]:
    """Those of ``keys`` of which a qualifying row matches ``filter_text`` (``_filter_clause``)."""
    flt = _filter_clause(spec, filter_text)
    if flt is None:
        return set(keys)
    out: set[Key] = set()
    for batch in batched(keys, KEY_BATCH):
        stmt = select(*spec.key_cols).distinct().where(*spec.where, keys_clause(spec.key_cols, batch), flt)
        out.update(tuple(r) for r in conn.execute(stmt))
    return out


def _sql_key_of(group: DuplicateGroup, spec: SqlRuleSpec) -> Key:
    return tuple(group.key.get(c.name) for c in spec.key_cols)


def _rows_for_keys(conn: Connection, spec: SqlRuleSpec, keys: list[Key]) -> list[dict[str, Any]]:
    """Phase 2: every qualifying row of ``keys`` (batched, index ranges)."""
    rows: list[dict[str, Any]] = []
    for batch in batched(keys, KEY_BATCH):
        stmt = select(*spec.fetch_cols).where(*spec.where, keys_clause(spec.key_cols, batch))
        rows.extend(dict(r._mapping) for r in conn.execute(stmt))
    return rows


def _scan_sql(conn: Connection, spec: SqlRuleSpec, *, since: dt.datetime | None, limit: int | None,
              filter_text: str | None) -> list[DuplicateGroup]:
    keys = _candidate_keys(conn, spec, since=since, filter_text=filter_text)
    if limit is None:
        return _finish(spec.groups_of(conn, _rows_for_keys(conn, spec, keys)), since, None)
    # With a limit: take candidate keys by latest activity until enough
    # groups pass the window check (a key may hold no group within it).
    groups: list[DuplicateGroup] = []
    for batch in batched(keys, max(limit, KEY_BATCH)):
        groups.extend(spec.groups_of(conn, _rows_for_keys(conn, spec, batch)))
        if len([g for g in groups if since is None or (g.last_at and g.last_at >= since)]) >= limit:
            break
    return _finish(groups, since, limit)


# --------------------------------------------------------------------------
# Order store scans

def _config_mongo_spec(rule: DuplicateRule) -> MongoRuleSpec:
    return MongoRuleSpec(source=rule.source, rule=rule.name, collection=rule.table, key_fields=tuple(rule.key),
                         time_field=rule.time_column, group=lambda docs: group_rule_rows(docs, rule),
                         filter_fields=tuple(rule.key))


def _mongo_filter(spec: MongoRuleSpec, filter_text: str | None) -> dict[str, Any]:
    return mongo_text_filter(spec.filter_fields, spec.filter_int_fields, filter_text)


def _mongo_candidates(db: OrderDb, spec: MongoRuleSpec, *, match: dict[str, Any], since: dt.datetime | None,
                      limit: int | None, min_count: int = 2) -> list[Key]:
    group_id = {f"k{i}": f"${f}" for i, f in enumerate(spec.key_fields)}
    pipeline: list[dict[str, Any]] = []
    if match:
        pipeline.append({"$match": match})
    pipeline += [
        {"$group": {"_id": group_id, "n": {"$sum": 1}, "last": {"$max": f"${spec.time_field}"}}},
        {"$match": {"n": {"$gte": min_count}, **({"last": {"$gte": since}} if since is not None else {})}},
        {"$sort": {"last": -1}},
    ]
    if limit is not None:
        pipeline.append({"$limit": int(limit)})
    out: list[Key] = []
    for doc in db[spec.collection].aggregate(pipeline):
        out.append(tuple(doc["_id"].get(f"k{i}") for i in range(len(spec.key_fields))))
    return out


def _mongo_docs_for_keys(db: OrderDb, spec: MongoRuleSpec, keys: list[Key]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for batch in batched(keys, KEY_BATCH):
        query = {"$or": [dict(zip(spec.key_fields, k)) for k in batch]}
        docs.extend(db[spec.collection].find(query))
    return docs


def _scan_mongo(db: OrderDb, spec: MongoRuleSpec, *, since: dt.datetime | None, limit: int | None,
                filter_text: str | None) -> list[DuplicateGroup]:
    if filter_text:
        # The filter picks keys; every member of a picked key is fetched.
        picked = _mongo_candidates(db, spec, match=_mongo_filter(spec, filter_text), since=None, limit=None,
                                   min_count=1)
        picked_set = set(picked)
        keys = [k for k in _mongo_candidates(db, spec, match={}, since=since, limit=None) if k in picked_set]
    else:
        keys = _mongo_candidates(db, spec, match={}, since=since, limit=None)
    groups: list[DuplicateGroup] = []
    for batch in batched(keys, KEY_BATCH if limit is None else max(limit, KEY_BATCH)):
        groups.extend(spec.group(_mongo_docs_for_keys(db, spec, batch)))
        if limit is not None and len(_finish(list(groups), since, None)) >= limit:
            break
    return _finish(groups, since, limit)


# --------------------------------------------------------------------------
# Public entry points

def _mongo_specs(workspace: Workspace, source: str, rules: str | None = None) -> list[MongoRuleSpec]:
    """The specs of order-store ``source``: its built-in rule and the config-defined ones."""
    build = reads_for(source).mongo_rule_spec
    specs = [build(workspace)] if build is not None else []
    specs += [_config_mongo_spec(r) for r in workspace.config.duplicate_rules if r.source == source]
    if rules is not None:
        specs = [s for s in specs if s.rule == rules]
    return specs


def _sql_specs(workspace: Workspace, source: str, rules: str | None = None) -> list[SqlRuleSpec]:
    """The specs of SQL ``source`` (cart or dispatch): its built-in rule and the config-defined ones."""
    build = reads_for(source).sql_rule_spec
    if build is None:
        raise registry.unknown_source(source)
    specs = [build(workspace)]
    specs += [_config_sql_spec(r) for r in workspace.config.duplicate_rules if r.source == source]
    if rules is not None:
        specs = [s for s in specs if s.rule == rules]
    return specs


def scan_duplicates(workspace: Workspace, source: str, *, since: dt.datetime | dt.timedelta | None = None,
                    limit: int | None = None,
                    filter_text: str | None = None, rule: str | None = None) -> list[DuplicateGroup]:
    """Every duplicate group of ``source`` (built-in rule plus config rules), newest activity first.

    ``since`` (datetime, or timedelta back from the database clock) keeps
    groups whose last member is at or after it; ``filter_text`` (literal)
    keeps groups whose key or members match it; ``limit`` bounds the groups.
    """
    groups: list[DuplicateGroup] = []
    if not registry.source(source).is_sql:
        db = workspace.orders().db
        since_at = resolve_since(workspace.orders().now(), since)
        for order_spec in _mongo_specs(workspace, source, rule):
            groups.extend(_scan_mongo(db, order_spec, since=since_at, limit=limit, filter_text=filter_text))
    else:
        specs = _sql_specs(workspace, source, rule)
        index_current = _advance_member_index(workspace, specs, filter_text)
        with workspace.engine(source).connect() as conn, _bulk_objects():
            since_at = resolve_since(conn, since)
            for spec in specs:
                groups.extend(_scan_spec(workspace, conn, spec, since=since_at, limit=limit,
                                         filter_text=filter_text, index_current=index_current))
            return _finish(groups, since_at, limit)
    return _finish(groups, since_at, limit)


@contextmanager
def _bulk_objects() -> Iterator[None]:
    """Pause the cyclic garbage collector while a scan builds its (acyclic) groups.

    A full cart scan makes some 300 k small objects; the collector would walk
    them again and again while they are made, for a third of the scan's time.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _uses_member_index(spec: SqlRuleSpec, filter_text: str | None) -> bool:
    # A filter keeps the two-phase scan: its LIKE is the database's own.
    return spec.member_index and not filter_text


def _advance_member_index(workspace: Workspace, specs: Sequence[SqlRuleSpec], filter_text: str | None) -> bool:
    """Bring the member index up to date; False when this database user may not write it."""
    indexed = [s for s in specs if _uses_member_index(s, filter_text)]
    if indexed:
        try:
            cart_members.ensure_current(workspace.engine(indexed[0].source))
        except DBAPIError as exc:
            if not is_permission_denied(exc):
                raise
            return False
    return True


def _scan_spec(workspace: Workspace, conn: Connection, spec: SqlRuleSpec, *, since: dt.datetime | None,
               limit: int | None, filter_text: str | None, index_current: bool = True) -> list[DuplicateGroup]:
    """One rule's groups: a rule kept in the member index (``spec.member_index``: the cart rule) from the
    index, the others by a two-phase scan.

    ``index_current`` False (a database user that may not write the index):
    the index as stored plus what an advance would change, in memory; or,
    when it was never built, the two-phase scan of the production rows.
    Either way the same groups, only slower.
    """
    if _uses_member_index(spec, filter_text):
        window = workspace.config.thresholds.duplicate_window_hours
        if index_current:
            return cart_members.read_groups(conn, window, since)
        groups = cart_members.read_groups_unpersisted(conn, window, since)
        if groups is not None:
            return groups
        return _scan_sql(conn, spec, since=since, limit=None, filter_text=filter_text)
    return _scan_sql(conn, spec, since=since, limit=limit, filter_text=filter_text)


# --------------------------------------------------------------------------
# Incremental scans

@dataclass(frozen=True)
class ScanCursor:
    """Where the previous scan of one source stopped (kept by the caller, per console).

    ``last_ids`` maps rule → highest id seen; ``scanned_at`` is the database
    clock when that scan began (rows changed after it are re-read, minus a
    margin for late commits).
    """

    source: str
    scanned_at: dt.datetime
    last_ids: dict[str, Any] = field(default_factory=dict)
    # rule → {(column, id): change time} of the rows the late-commit margin
    # re-read last time, and {("action", id): state} of the console actions
    # it looked at: re-reading them again is free, only a new change counts.
    recent: dict[str, Seen] = field(default_factory=dict)


@dataclass(frozen=True)
class IncrementalScan:
    """The groups of every key touched since ``cursor``, and the next cursor.

    ``touched`` holds (rule, key tuple) of every key looked at: a caller that
    keeps a group list replaces the groups of these keys with ``groups``
    (a touched key with no group left has none any more).
    """

    groups: list[DuplicateGroup]
    touched: set[tuple[str, Key]]
    cursor: ScanCursor
    full: bool = False


def group_key(group: DuplicateGroup, key_fields: Sequence[str] | None = None) -> tuple[str, Key]:
    """(rule, key tuple) of a group, as in ``IncrementalScan.touched``.

    The scans touch keys of the rule's key columns; a status change group's
    ``event_detail`` (its message) is not one of them, so a touched key
    covers the groups of every status of that key.
    """
    return (group.rule, tuple(v for k, v in group.key.items() if k != "event_detail"))


def apply_scan(state: dict[tuple[str, Key], list[DuplicateGroup]],
               scan: IncrementalScan) -> dict[tuple[str, Key], list[DuplicateGroup]]:
    """A caller's group list ({group_key: [groups]}) after ``scan``: a full scan
    replaces it, an incremental one replaces the groups of the keys it touched."""
    if scan.full:
        state = {}
    for touched in scan.touched:
        state.pop(touched, None)
    for g in scan.groups:
        state.setdefault(group_key(g), []).append(g)
    return state


def _touched_sql(conn: Connection, spec: SqlRuleSpec, last_id: Any, changed_since: dt.datetime,
                 recent: Seen | None = None) -> tuple[set[Key], Any, Seen]:
    """Keys of rows added (id above ``last_id``) or changed since ``changed_since``.

    Returns (keys, new high-water id, the changed rows seen: {id: time}). A
    row the previous scan already saw with the same change time is no news.
    With ``spec.related_keys``, also the keys whose groups the news can
    change (dispatch: the status keys a new status change may split).
    """
    keys: set[Key] = set()
    points: list[Point] = []   # (key, time) of every row that is news
    top = last_id
    stmt = select(spec.id_col, spec.time_col, *spec.key_cols).where(spec.id_col > last_id).order_by(spec.id_col)
    for row in conn.execute(stmt):
        key = tuple(row[2:])
        keys.add(key)
        points.append((key, row[1]))
        top = row[0]
    seen: Seen = {}
    recent = recent or {}
    # Cart rows matter once sent (sent_at, index nc_cart_sent_at); notifications
    # by created_at (idx_created). Config rules' tables may lack a time index:
    # their id cursor alone marks new rows.
    for col in spec.changed_cols:
        stmt = select(spec.id_col, col, spec.time_col, *spec.key_cols).where(col >= changed_since)
        for row in conn.execute(stmt):
            rid, at = row[0], row[1]
            seen[(col.name, rid)] = at
            if recent.get((col.name, rid)) != at or rid > last_id:
                key = tuple(row[3:])
                keys.add(key)
                points.append((key, row[2]))
    keys |= _keys_of_actions_sql(conn, spec, changed_since, recent, seen, points)
    if spec.related_keys is not None and points:
        keys |= spec.related_keys(conn, points)
    return keys, top, seen


# Console actions that remove rows (archiving them) or put them back.
_ROW_ACTIONS = ("cleanup", "undo")


def _action_mark(status: Any, heartbeat_at: Any, finished_at: Any) -> tuple[Any, str, str]:
    """An action's state as a cursor keeps it: a scan re-reads an action's keys when it changes."""
    return (status, str(heartbeat_at), str(finished_at))


def _undo_target(kind: str, params: Any) -> str | None:
    if kind != "undo":
        return None
    try:
        data = params if isinstance(params, dict) else json.loads(params)
        target = data.get("target")
    except (ValueError, TypeError, AttributeError):
        return None
    return target if isinstance(target, str) and target else None


def _keys_of_actions_sql(conn: Connection, spec: SqlRuleSpec, since: dt.datetime, recent: Seen, seen: Seen,
                        points: list[Point] | None = None) -> set[Key]:
    """Keys of ``spec``'s rows that console actions archived or restored since ``since``.

    A cleanup deletes rows and an undo puts them back with their old ids and
    times: neither shows in the id cursor or the change times, so the
    actions' archive entries name the keys. An action counts when it began,
    finished or beat its heartbeat since ``since`` or is still running; one
    the previous scan saw in the same state is no news. The (key, time) of
    each row archived or restored is added to ``points``.
    """
    a = nc_action.c
    action_ids: set[Any] = set()
    stmt = select(a.action_id, a.kind, a.params_json, a.status, a.heartbeat_at, a.finished_at).where(
        a.source == spec.source, a.kind.in_(_ROW_ACTIONS),
        or_(a.started_at >= since, a.finished_at >= since, a.heartbeat_at >= since, a.finished_at.is_(None)))
    for action_id, kind, params, status, heartbeat_at, finished_at in conn.execute(stmt):
        mark = _action_mark(status, heartbeat_at, finished_at)
        seen[("action", action_id)] = mark
        if recent.get(("action", action_id)) == mark:
            continue
        action_ids.add(action_id)
        target = _undo_target(kind, params)
        if target:
            action_ids.add(target)
    keys: set[Key] = set()
    names = [c.name for c in spec.key_cols]
    for batch in batched(sorted(action_ids), 200):
        for (text,) in conn.execute(select(nc_archive.c.row_json).where(
                nc_archive.c.action_id.in_(batch), nc_archive.c.table_name == spec.table.name)):
            try:
                row = json.loads(text)
            except ValueError:
                continue
            if isinstance(row, dict):
                key = tuple(row.get(n) for n in names)
                keys.add(key)
                if points is not None:
                    at = row.get(spec.time_col.name)
                    if isinstance(at, dict) and isinstance(at.get("$dt"), str):  # the archive's typed datetime
                        at = at["$dt"]
                    points.append((key, as_time(at)))
    return keys


def _max_id(conn: Connection, spec: SqlRuleSpec) -> Any:
    """The highest id of ``spec``'s table as the database hands it back (0 when it is empty)."""
    return conn.execute(select(func.max(spec.id_col))).scalar() or 0


def scan_duplicates_incremental(workspace: Workspace, source: str, cursor: ScanCursor | None = None, *,
                                filter_text: str | None = None) -> IncrementalScan:
    """Groups touched since ``cursor`` (all groups, with ``full=True``, when there is none).

    Phase 1 reads only the keys of rows added (id above the high-water mark),
    changed (time at or after the previous scan, minus a late-commit margin)
    or archived and restored by the console's own cleanups and undos since
    the previous scan; phase 2 applies the rule to those keys and reports
    their current groups (none, for a group a cleanup removed).

    ``filter_text`` picks keys exactly as the full scan does (the same SQL
    clause, run on the touched keys only); a touched key that no longer
    matches has no group in the result.

    Rows deleted, or edited without a newer time (a sent row set back to
    unsent, a back-dated time), by anything other than the console are not
    seen here: only a full scan (no cursor) shows their effect.
    """
    if not registry.source(source).is_sql:
        return _incremental_mongo(workspace, source, cursor, filter_text)
    specs = _sql_specs(workspace, source)
    if cursor is None:
        # The marks come first: whatever lands during the scan is above them.
        with workspace.engine(source).connect() as conn:
            now = db_now(conn)
            last_ids: dict[str, Any] = {s.rule: _max_id(conn, s) for s in specs}
        index_current = _advance_member_index(workspace, specs, filter_text)
        with workspace.engine(source).connect() as conn:
            groups: list[DuplicateGroup] = []
            for spec in specs:
                groups.extend(_scan_spec(workspace, conn, spec, since=None, limit=None, filter_text=filter_text,
                                         index_current=index_current))
        return IncrementalScan(groups=_finish(groups, None, None), touched=set(),
                               cursor=ScanCursor(source, now, last_ids), full=True)
    with workspace.engine(source).connect() as conn:
        now = db_now(conn)
        changed_since = cursor.scanned_at - LATE_COMMIT_MARGIN
        groups = []
        touched: set[tuple[str, Key]] = set()
        last_ids = dict(cursor.last_ids)
        recent: dict[str, Seen] = {}
        for spec in specs:
            found_keys, top, seen = _touched_sql(conn, spec, cursor.last_ids.get(spec.rule, 0), changed_since,
                                                 cursor.recent.get(spec.rule))
            last_ids[spec.rule] = top
            recent[spec.rule] = seen
            keys = sorted(found_keys, key=lambda k: tuple(id_key(v) for v in k))
            touched.update((spec.rule, k) for k in keys)
            found = spec.groups_of(conn, _rows_for_keys(conn, spec, keys))
            if filter_text:
                picked = _keys_matching(conn, spec, keys, filter_text)
                found = [g for g in found if _sql_key_of(g, spec) in picked]
            groups.extend(found)
    return IncrementalScan(groups=_finish(groups, None, None), touched=touched,
                           cursor=ScanCursor(source, now, last_ids, recent))


def _incremental_mongo(workspace: Workspace, source: str, cursor: ScanCursor | None,
                       filter_text: str | None) -> IncrementalScan:
    db = workspace.orders().db
    now = workspace.orders().now()
    specs = _mongo_specs(workspace, source)
    if cursor is None:
        groups: list[DuplicateGroup] = []
        for spec in specs:
            groups.extend(_scan_mongo(db, spec, since=None, limit=None, filter_text=filter_text))
        return IncrementalScan(groups=_finish(groups, None, None), touched=set(),
                               cursor=ScanCursor(source, now, {}), full=True)
    changed_since = cursor.scanned_at - LATE_COMMIT_MARGIN
    groups = []
    touched: set[tuple[str, Key]] = set()
    recent: dict[str, Seen] = {}
    for spec in specs:
        found_keys: set[Key] = set()
        for doc in db[spec.collection].find({spec.time_field: {"$gte": changed_since}},
                                            projection={f: 1 for f in spec.key_fields}):
            found_keys.add(tuple(doc.get(f) for f in spec.key_fields))
        seen: Seen = {}
        found_keys |= _keys_of_actions_mongo(db, spec, changed_since, cursor.recent.get(spec.rule) or {}, seen)
        recent[spec.rule] = seen
        keys = sorted(found_keys, key=lambda k: tuple(id_key(v) for v in k))
        touched.update((spec.rule, k) for k in keys)
        found = spec.group(_mongo_docs_for_keys(db, spec, keys))
        if filter_text:
            picked = _mongo_keys_matching(db, spec, keys, filter_text)
            found = [g for g in found if tuple(g.key.get(f) for f in spec.key_fields) in picked]
        groups.extend(found)
    return IncrementalScan(groups=_finish(groups, None, None), touched=touched,
                           cursor=ScanCursor(source, now, {}, recent))


def _mongo_keys_matching(db: OrderDb, spec: MongoRuleSpec, keys: list[Key], filter_text: str | None) -> set[Key]:
    """Those of ``keys`` of which a document matches ``filter_text`` (``_mongo_filter``, as the full scan)."""
    out: set[Key] = set()
    for batch in batched(keys, KEY_BATCH):
        query = {"$and": [{"$or": [dict(zip(spec.key_fields, k)) for k in batch]},
                          _mongo_filter(spec, filter_text)]}
        for doc in db[spec.collection].find(query, projection={f: 1 for f in spec.key_fields}):
            out.add(tuple(doc.get(f) for f in spec.key_fields))
    return out


def _keys_of_actions_mongo(db: OrderDb, spec: MongoRuleSpec, since: dt.datetime, recent: Seen,
                           seen: Seen) -> set[Key]:
    """``_keys_of_actions_sql`` for the order store (``nc_actions`` and ``nc_archive`` collections)."""
    action_ids: set[Any] = set()
    query = {"source": spec.source, "kind": {"$in": list(_ROW_ACTIONS)},
             "$or": [{"started_at": {"$gte": since}}, {"finished_at": {"$gte": since}},
                     {"heartbeat_at": {"$gte": since}}, {"finished_at": None}]}
    for doc in db["nc_actions"].find(query):
        mark = _action_mark(doc.get("status"), doc.get("heartbeat_at"), doc.get("finished_at"))
        seen[("action", doc["_id"])] = mark
        if recent.get(("action", doc["_id"])) == mark:
            continue
        action_ids.add(doc["_id"])
        target = _undo_target(doc.get("kind") or "", doc.get("params") or {})
        if target:
            action_ids.add(target)
    keys: set[Key] = set()
    if action_ids:
        for entry in db["nc_archive"].find({"action_id": {"$in": sorted(action_ids)},
                                            "collection": spec.collection}):
            doc = entry.get("doc") or {}
            keys.add(tuple(doc.get(f) for f in spec.key_fields))
    return keys
