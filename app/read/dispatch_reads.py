"""What the read side reads of the dispatch database (the issue tracker's dispatch log and
notifications), as the functions the generic read modules look up through ``READS``.

* Failed & Stuck: ``failed`` rows; ``pending`` rows older than
  ``thresholds.dispatch_stuck_minutes`` (stuck). Attempts from the console's
  ``nc_dispatch_attempt`` (0 when the console never retried the row).
* The live dispatch log (``poll_dispatch_log``, by id) and, in the unified
  feed, the in-app notifications (keyset on (created_at, id)).
* Duplicates: the built-in rule's spec, and the status timeline of the rows'
  issues that can split a group (``fetch_status_timeline``, on index
  ``nc_notif_issue_status``); an incremental scan that sees a new status
  change re-examines the status keys of its issue that reach past it.
* Latency statistics: ``completed_at − created_at`` of completed rows, one
  series per dispatch_type (``dispatch:<type>``); failed and pending rows
  counted per bucket.
* Charts: one series per dispatch type (``DISPATCH_TYPES``, and any other the
  rows hold); failed rows, and pending ones older than the stuck threshold,
  per type and bucket; a duplicate group's copies count under its type.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, String, and_, case, func, literal, or_, select
from sqlalchemy import cast as cast_
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from .. import registry
from ..schema import (
    DISPATCH_TYPES,
    dispatch_log,
    dispatch_metadata,
    dispatch_users,
    issues,
    nc_dispatch_attempt,
    notifications,
)
from ..sqlutil import backend, db_now
from .chart_window import RawSeries, Window, counts_into
from .common import KEY_BATCH, Since, as_time, batched, bucket_expr, id_key, resolve_since, text_filter, time_key
from .failed_parts import age_seconds, error_class, newest_first, newest_page
from .feed_parts import (
    LIVE_ORDER,
    FeedMark,
    FeedOrder,
    FeedPosition,
    SortPosition,
    keyset,
    poll_rows,
    refresh_rows,
    sql_raw_record,
)
from .histogram import latency_ms
from .hooks import Counts, FeedKeyset, LatencyReads, SourceReads, SourceSpec
from .models import DuplicateGroup, FailedItem, FeedItem, FeedPage
from .rule_specs import Key, Point, SqlRuleSpec
from .rules import DISPATCH_KEY, DISPATCH_RULE, STATUS_CHANGED, group_dispatch_rows

if TYPE_CHECKING:
    from ..bootstrap import Workspace


# --------------------------------------------------------------------------
# Failed & Stuck

def _failed_list(workspace: Workspace, kinds: set[str], filter_text: str | None, since: Since, limit: int,
                 before: tuple[dt.datetime, int] | None) -> list[FailedItem]:
    t = dispatch_log.c
    a = nc_dispatch_attempt.c
    th = workspace.config.thresholds
    items: list[FailedItem] = []
    with workspace.engine("dispatch").connect() as conn:
        now = db_now(conn)
        since_at = resolve_since(now, since)
        cols = (t.id, t.dispatch_id, t.dispatch_type, t.issue_id, t.comment_id, t.actor_user_id,
                t.recipients_count, t.status, t.created_at, t.completed_at, t.error_message)
        wanted: list[tuple[str, ColumnElement[bool]]] = []
        if "failed" in kinds:
            wanted.append(("failed", t.status == "failed"))
        if "stuck" in kinds:
            stuck_before = now - dt.timedelta(minutes=th.dispatch_stuck_minutes)
            wanted.append(("stuck", and_(t.status == "pending", t.created_at < stuck_before)))
        for kind, cond in wanted:
            # One index range per status (status, created_at), newest first. The
            # hint matters: MySQL otherwise walks idx_created backwards, reading
            # every recent completed row to find a few failed ones (75 ms vs 1 ms
            # at 5 M rows).
            stmt = select(*cols).where(cond)
            for dialect in ("mysql", "mariadb"):
                stmt = stmt.with_hint(dispatch_log, "FORCE INDEX (idx_status_created)", dialect)
            if since_at is not None:
                stmt = stmt.where(t.created_at >= since_at)
            flt = text_filter((t.error_message, t.dispatch_id), (t.id, t.issue_id), filter_text)
            if flt is not None:  # None exactly when there is no filter text
                stmt = stmt.where(flt)
            page = [dict(r._mapping) for r in conn.execute(newest_page(stmt, t.created_at, t.id, before, limit))]
            attempts: dict[Any, Any] = {}
            if page:
                ids = [r["id"] for r in page]
                attempts = dict(conn.execute(select(a.log_id, a.attempts).where(a.log_id.in_(ids))).all())
            for r in page:
                items.append(FailedItem(
                    source="dispatch", id=r["id"], kind=kind, status=r["status"],
                    age_seconds=age_seconds(now, r["created_at"]), error=r["error_message"],
                    attempts=int(attempts.get(r["id"], 0)), created_at=r["created_at"],
                    detail={"dispatch_id": r["dispatch_id"], "dispatch_type": r["dispatch_type"],
                            "issue_id": r["issue_id"], "comment_id": r["comment_id"],
                            "actor_user_id": r["actor_user_id"], "recipients_count": r["recipients_count"],
                            "error_class": error_class(r["error_message"])}))
    return newest_first(items, limit)



# --------------------------------------------------------------------------
# The live dispatch log (append order: oldest of the new rows first)

def _dispatch_item(r: dict[str, Any]) -> FeedItem:
    return FeedItem(source="dispatch", kind="dispatch", id=r["id"], at=r["created_at"], recipient=None,
                    subject=f"{r['dispatch_type']} issue {r['issue_id']}", status=r["status"],
                    link={"source": "dispatch", "table": "notification_dispatch_log", "id": r["id"],
                          "dispatch_id": r["dispatch_id"]},
                    detail={"completed_at": r["completed_at"], "recipients_count": r["recipients_count"],
                            "error": r["error_message"], "comment_id": r["comment_id"],
                            "actor_user_id": r["actor_user_id"]})


_DISPATCH_COLS = (dispatch_log.c.id, dispatch_log.c.dispatch_id, dispatch_log.c.dispatch_type,
                  dispatch_log.c.issue_id, dispatch_log.c.comment_id, dispatch_log.c.actor_user_id,
                  dispatch_log.c.recipients_count, dispatch_log.c.status, dispatch_log.c.created_at,
                  dispatch_log.c.completed_at, dispatch_log.c.error_message)


def poll_dispatch_log(workspace: Workspace, after_id: int | None = None, limit: int | None = 500) -> FeedPage:
    """Dispatch log rows not delivered before ``after_id`` (a page's cursor), oldest first.

    The newest ``limit`` on the first poll; then every row once, late commits included.
    """
    return poll_rows(workspace, "dispatch", _DISPATCH_COLS, _dispatch_item, after_id, limit)


def refresh_dispatch_rows(workspace: Workspace, ids: Iterable[int]) -> list[FeedItem]:
    return refresh_rows(workspace, "dispatch", _DISPATCH_COLS, _dispatch_item, ids)


# --------------------------------------------------------------------------
# The unified notification feed: in-app notifications

# The kind of this source's feed entries, and what it is called; sorting by kind follows the words.
FEED_KIND = ("notification", "in-app notification")
# The feed's type filter: (notification type, what it is called).
FEED_TYPES = (("comment_added", "Comment added"), ("status_changed", "Status changed"),
              ("other", "Other notification"))


def _dispatch_notifications(conn: Connection, *, before: FeedPosition | SortPosition | None,
                            after: FeedMark | FeedPosition | None, since: dt.datetime | None,
                            filter_text: str | None, limit: int, poll: bool = False, kind: str | None = None,
                            order: FeedOrder = LIVE_ORDER) -> list[FeedItem]:
    n = notifications.c
    u = dispatch_users.c
    i = issues.c
    subject = n.type + " on " + func.coalesce(i.issue_key, "issue " + cast_(n.issue_id, String))
    sort_value = {"at": n.created_at, "source": literal(registry.source("dispatch").label.lower()),
                  "kind": literal(FEED_KIND[1]), "recipient": func.lower(func.coalesce(u.email, "")),
                  "subject": func.lower(subject), "status": case((n.is_read == 1, "read"), else_="unread"),
                  "id": n.id}[order[0]]
    stmt = select(n.id, n.user_id, n.type, n.issue_id, n.comment_id, n.actor_user_id, n.message, n.is_read,
                  n.created_at, n.dispatch_id, u.email, i.issue_key, sort_value.label("sort_value")).select_from(
        notifications.outerjoin(dispatch_users, u.id == n.user_id).outerjoin(issues, i.id == n.issue_id))
    stmt = keyset(stmt, n.created_at, n.id, before, after, since, limit, poll, order, sort_value)
    flt = text_filter((n.message, n.type, n.dispatch_id, u.email), (n.id, n.issue_id, n.user_id), filter_text)
    if flt is not None:  # None exactly when there is no filter text
        stmt = stmt.where(flt)
    if kind is not None:
        stmt = stmt.where(n.type == kind)
    out: list[FeedItem] = []
    for r in conn.execute(stmt):
        out.append(FeedItem(
            source="dispatch", kind="notification", id=r.id, at=r.created_at, recipient=r.email or f"user {r.user_id}",
            subject=f"{r.type} on {r.issue_key or 'issue ' + str(r.issue_id)}", status="read" if r.is_read else "unread",
            link={"source": "dispatch", "table": "notifications", "id": r.id, "dispatch_id": r.dispatch_id,
                  "issue_id": r.issue_id},
            detail={"user_id": r.user_id, "actor_user_id": r.actor_user_id, "comment_id": r.comment_id,
                    "type": r.type, "message": (r.message or "")[:200], "_sort": r.sort_value}))
    return out


# --------------------------------------------------------------------------
# Duplicates: the built-in rule, and the status timeline it reads

def _status_spans(rows: Iterable[dict[str, Any]]) -> dict[Any, list[tuple[dt.datetime, ...]]]:
    """issue_id -> merged [first, last] spans of the status keys with two or more rows."""
    spans_of: dict[Key, tuple[dt.datetime, dt.datetime, int]] = {}
    for r in rows:
        if r.get("type") != STATUS_CHANGED:
            continue
        at = time_key(as_time(r.get("created_at")))
        key = tuple(r.get(k) for k in DISPATCH_KEY) + (r.get("message"),)
        lo, hi, n = spans_of.get(key, (at, at, 0))
        spans_of[key] = (min(lo, at), max(hi, at), n + 1)
    by_issue: dict[Any, list[tuple[dt.datetime, dt.datetime]]] = defaultdict(list)
    for key, (lo, hi, n) in spans_of.items():
        if n > 1 and lo < hi:   # nothing lies strictly between rows of one time
            by_issue[key[2]].append((lo, hi))
    merged: dict[Any, list[tuple[dt.datetime, ...]]] = {}
    for issue_id, spans in by_issue.items():
        spans.sort()
        out = [list(spans[0])]
        for lo, hi in spans[1:]:
            if lo <= out[-1][1]:
                out[-1][1] = max(out[-1][1], hi)
            else:
                out.append([lo, hi])
        merged[issue_id] = [tuple(s) for s in out]
    return merged


def fetch_status_timeline(conn: Connection, rows: Iterable[dict[str, Any]], *,
                          lock: bool = False) -> dict[Any, list[tuple[Any, Any, Any]]]:
    """The status timeline ``group_dispatch_rows`` needs for ``rows``.

    Only what can split a group: the status_changed notifications (any
    recipient, any actor) of the issues of ``rows``' status keys with two or
    more rows, within each key's [first, last] (overlapping spans of one
    issue merged). One query per batch of ``KEY_BATCH`` spans, each an index
    range on ``nc_notif_issue_status`` (issue_id, type, created_at).
    ``lock`` (cleanup) reads with a share lock, so the changes read, and on
    MariaDB the gaps between them, hold until the transaction ends: a status
    change committing meanwhile cannot land unseen between two rows the
    cleanup takes for one event.
    """
    spans = _status_spans(rows)
    if not spans:
        return {}
    t = notifications.c
    ranges = [(issue_id, lo, hi) for issue_id in sorted(spans, key=id_key) for lo, hi in spans[issue_id]]
    timeline: dict[Any, list[tuple[Any, Any, Any]]] = defaultdict(list)
    for batch in batched(ranges, KEY_BATCH):
        stmt = select(t.issue_id, t.created_at, t.actor_user_id, t.message).where(
            t.type == STATUS_CHANGED,
            or_(*[and_(t.issue_id == issue_id, t.created_at >= lo, t.created_at <= hi)
                  for issue_id, lo, hi in batch]))
        if lock and conn.dialect.name != "sqlite":
            stmt = stmt.with_for_update(read=True)
        for issue_id, at, actor, message in conn.execute(stmt):
            timeline[issue_id].append((as_time(at), actor, message))
    for changes in timeline.values():
        changes.sort(key=lambda c: time_key(c[0]))
    return dict(timeline)


def group_dispatch_rows_in(conn: Connection, rows: Iterable[dict[str, Any]], *,
                           lock: bool = False) -> list[DuplicateGroup]:
    """``group_dispatch_rows`` of ``rows`` with their status timeline read on ``conn``.

    The one way the scans and cleanup apply the dispatch rule to rows from
    the database.
    """
    rows = list(rows)
    return group_dispatch_rows(rows, status_timeline=fetch_status_timeline(conn, rows, lock=lock))


def _status_keys_after(conn: Connection, points: list[Point]) -> set[Key]:
    """Status keys of the issues of ``points`` ((key, time) of new or changed
    rows) with a row after the earliest such time of their issue.

    A new status change (any recipient, any actor) can split a group of its
    issue only if the group has members on both sides of it; every such key
    has a row after it. One query per batch of issues, index ranges on
    ``nc_notif_issue_status``.
    """
    first: dict[Any, dt.datetime] = {}
    for key, at in points:
        if key[1] != STATUS_CHANGED:
            continue
        at = time_key(as_time(at))
        if key[2] not in first or at < first[key[2]]:
            first[key[2]] = at
    if not first:
        return set()
    t = notifications.c
    key_cols = (t.user_id, t.type, t.issue_id, t.comment_id, t.actor_user_id)
    keys: set[Key] = set()
    for batch in batched(sorted(first.items(), key=lambda kv: id_key(kv[0])), KEY_BATCH):
        stmt = select(*key_cols).distinct().where(
            t.type == STATUS_CHANGED, or_(*[and_(t.issue_id == i, t.created_at > at) for i, at in batch]))
        keys.update(tuple(r) for r in conn.execute(stmt))
    return keys


def builtin_rule_spec(workspace: Workspace) -> SqlRuleSpec:
    """How the built-in dispatch rule (``DISPATCH_RULE``) reads ``notifications``."""
    t = notifications.c
    return SqlRuleSpec(
        source="dispatch", rule=DISPATCH_RULE, table=notifications,
        key_cols=(t.user_id, t.type, t.issue_id, t.comment_id, t.actor_user_id),
        time_col=t.created_at, id_col=t.id,
        fetch_cols=(t.id, t.user_id, t.type, t.issue_id, t.comment_id, t.actor_user_id, t.message, t.created_at,
                    t.dispatch_id, t.is_read),
        group=group_dispatch_rows, group_in=group_dispatch_rows_in, related_keys=_status_keys_after,
        filter_cols=(t.type, t.dispatch_id, t.message),
        filter_int_cols=(t.user_id, t.issue_id, t.comment_id, t.actor_user_id), changed_cols=(t.created_at,))


# --------------------------------------------------------------------------
# Latency statistics: the rollup's log and settled rows, the exact rows, the failed and pending counts

def _settled(row: Sequence[Any]) -> tuple[str, float] | None:
    _id, created, dtype, status, completed = row
    if status == "completed" and completed is not None:
        return f"dispatch:{dtype}", latency_ms(completed, created)
    return None


_ROLLUP = SourceSpec(table=dispatch_log, id=dispatch_log.c.id, created=dispatch_log.c.created_at,
                     cols=(dispatch_log.c.id, dispatch_log.c.created_at, dispatch_log.c.dispatch_type,
                           dispatch_log.c.status, dispatch_log.c.completed_at),
                     settled=dispatch_log.c.status == "completed", series_like="dispatch:%", prefixed=True)


def _exact_rows(start: dt.datetime, end: dt.datetime) -> Select[Any]:
    t = dispatch_log.c
    return select(t.dispatch_type, t.created_at, t.completed_at).where(
        t.status == "completed", t.created_at >= start, t.created_at < end, t.completed_at.is_not(None))


def _unsettled_counts(conn: Connection, workspace: Workspace, start: dt.datetime, end: dt.datetime,
                      bucket_seconds: int, start_b: int, now: dt.datetime) -> tuple[Counts, Counts]:
    """Failed and pending counts per series and bucket, counted in the database."""
    dialect = backend(conn)
    failed: Counts = defaultdict(dict)
    pending: Counts = defaultdict(dict)
    t = dispatch_log.c
    bexpr = bucket_expr(t.created_at, bucket_seconds, dialect).label("b")
    stmt = select(t.status, t.dispatch_type, bexpr, func.count()).where(
        t.status.in_(("failed", "pending")), t.created_at >= start, t.created_at < end) \
        .group_by(t.status, t.dispatch_type, bexpr)
    for status, dtype, b, c in conn.execute(stmt):
        target = failed if status == "failed" else pending
        target[dtype][int(b) - start_b] = int(c)
    return failed, pending


# --------------------------------------------------------------------------
# Charts: the failed and stuck counts of a window, the series of a duplicate group

def _chart_unsettled(conn: Connection, workspace: Workspace, window: Window, now: dt.datetime,
                     raw: RawSeries) -> None:
    """Failed rows, and pending ones older than the stuck threshold, per dispatch type and bucket."""
    t = dispatch_log.c
    stuck_before = now - dt.timedelta(minutes=workspace.config.thresholds.dispatch_stuck_minutes)
    b = bucket_expr(t.created_at, window.bucket_seconds, backend(conn)).label("b")
    old = (t.created_at < stuck_before).label("old")
    stmt = select(t.status, t.dispatch_type, old, b, func.count()).where(
        t.status.in_(("failed", "pending")), t.created_at >= window.start, t.created_at < window.end) \
        .group_by(t.status, t.dispatch_type, old, b)
    for status, dtype, is_old, bucket, c in conn.execute(stmt):
        i = int(bucket) - window.start_b
        if status == "failed":
            counts_into(raw.failed, str(dtype), i, window.n, int(c))
        elif is_old:
            counts_into(raw.stuck, str(dtype), i, window.n, int(c))


def _dup_series(g: DuplicateGroup) -> str:
    return str(g.key.get("type") or g.key.get("dispatch_type") or "other")


READS = SourceReads(
    source=registry.source("dispatch"), failed_list=_failed_list,
    feed=_dispatch_notifications, feed_kind=FEED_KIND, feed_types=FEED_TYPES,
    raw_record=sql_raw_record("dispatch", dispatch_metadata),
    series_names=DISPATCH_TYPES, dup_series=_dup_series,
    feed_keyset=FeedKeyset(notifications, notifications.c.created_at, notifications.c.id),
    sql_rule_spec=builtin_rule_spec,
    latency=LatencyReads(_ROLLUP, _settled, _exact_rows, _unsettled_counts, _chart_unsettled))
