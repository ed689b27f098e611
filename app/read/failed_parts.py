"""What every source's failed list is built from: the reader's signature, a keyset page newest
first, an item's age, an error's class, and the merge of a list's pages.

Nothing here knows a source; each per-source read module (``dispatch_reads``, ``cart_reads``,
``order_reads``) builds its list from these, and ``failures`` looks the list up per source.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVarTuple

from sqlalchemy import Select, and_, or_
from sqlalchemy.sql.elements import ColumnElement

from .common import Since
from .models import FailedItem

if TYPE_CHECKING:
    from ..bootstrap import Workspace

_Ts = TypeVarTuple("_Ts")

# (workspace, kinds, filter_text, since, limit, before) -> the source's items of those kinds, newest
# first, at most ``limit``; ``before`` = (created_at, id) of the last item of the previous page.
FailedList = Callable[["Workspace", set[str], "str | None", Since, int, "tuple[Any, Any] | None"], list[FailedItem]]


def error_class(error: str | None) -> str | None:
    """The error's class: the text before the first colon (e.g. ``SMTPRecipientsRefused``)."""
    if not error:
        return None
    head = error.split(":", 1)[0].strip()
    return head if head and len(head) <= 80 and " " not in head else None


def age_seconds(now: dt.datetime, at: dt.datetime | None) -> float:
    return max(0.0, (now - at).total_seconds()) if at is not None else 0.0


def newest_page(stmt: Select[*_Ts], time_col: ColumnElement[Any], id_col: ColumnElement[Any],
                before: tuple[dt.datetime, int] | None, limit: int) -> Select[*_Ts]:
    """``stmt`` newest first on (time, id), after the keyset position ``before``, at most ``limit`` rows."""
    if before is not None:
        at, last_id = before
        stmt = stmt.where(or_(time_col < at, and_(time_col == at, id_col < last_id)))
    return stmt.order_by(time_col.desc(), id_col.desc()).limit(limit)


def newest_first(items: list[FailedItem], limit: int) -> list[FailedItem]:
    items.sort(key=lambda i: (i.created_at or dt.datetime.min, i.id), reverse=True)
    return items[:limit]
