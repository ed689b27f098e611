"""What the read side reads of the dispatch database (the issue tracker's dispatch log and
notifications), as the functions the generic read modules look up through ``READS``.

* Failed & Stuck: ``failed`` rows; ``pending`` rows older than
  ``thresholds.dispatch_stuck_minutes`` (stuck). Attempts from the console's
  ``nc_dispatch_attempt`` (0 when the console never retried the row).
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, select
from sqlalchemy.sql.elements import ColumnElement

from .. import registry
from ..schema import dispatch_log, nc_dispatch_attempt
from ..sqlutil import db_now
from .common import Since, resolve_since, text_filter
from .failed_parts import age_seconds, error_class, newest_first, newest_page
from .hooks import SourceReads
from .models import FailedItem

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


READS = SourceReads(source=registry.source("dispatch"), failed_list=_failed_list)
