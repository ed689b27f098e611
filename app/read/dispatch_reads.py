"""What the read side reads of the dispatch database (the issue tracker's dispatch log and
notifications), as the functions the generic read modules look up through ``READS``.

* Failed & Stuck: ``failed`` rows; ``pending`` rows older than
  ``thresholds.dispatch_stuck_minutes`` (stuck). Attempts from the console's
  ``nc_dispatch_attempt`` (0 when the console never retried the row).
* The live dispatch log (``poll_dispatch_log``, by id) and, in the unified
  feed, the in-app notifications (keyset on (created_at, id)).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, and_, case, func, literal, select
from sqlalchemy import cast as cast_
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from .. import registry
from ..schema import dispatch_log, dispatch_metadata, dispatch_users, issues, nc_dispatch_attempt, notifications
from ..sqlutil import db_now
from .common import Since, resolve_since, text_filter
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
from .hooks import FeedKeyset, SourceReads
from .models import FailedItem, FeedItem, FeedPage

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


READS = SourceReads(
    source=registry.source("dispatch"), failed_list=_failed_list,
    feed=_dispatch_notifications, feed_kind=FEED_KIND, feed_types=FEED_TYPES,
    raw_record=sql_raw_record("dispatch", dispatch_metadata),
    feed_keyset=FeedKeyset(notifications, notifications.c.created_at, notifications.c.id))
