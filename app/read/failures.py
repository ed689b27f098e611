"""Failed, stuck and missed items per source, newest first, one bounded page at a time.

Each source's list is its read record's ``failed_list``
(``app.read.by_source.reads_for``): dispatch's failed and stuck rows
(``dispatch_reads``), cart's failed, stuck and superseded rows
(``cart_reads``), the order store's missed stage emails (``order_reads``).
This module checks the kinds and the limit, and merges several sources'
lists into one keyset-paged list (``failed_page``).

Every query is bounded by ``limit`` (default ``DEFAULT_LIMIT``) and uses an
index ``db upgrade`` creates or the production schema has; ``filter_text``
is matched literally (a bound, escaped LIKE; for documents an escaped regex).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from .. import registry
from ..errors import UsageError
from .by_source import reads_for
from .common import Since
from .failed_parts import error_class as error_class  # re-exported for the Failed page (ui/pages/failed.py)
from .models import FAILED_KINDS, FailedItem
from .order_docs import stage_images as stage_images  # re-exported for tests (test_demo)

if TYPE_CHECKING:
    from ..bootstrap import Workspace

DEFAULT_LIMIT = 200


def _check_kinds(kinds: Iterable[str] | None) -> set[str]:
    if kinds is None:
        return set(FAILED_KINDS)
    kinds = set(kinds)
    bad = kinds - set(FAILED_KINDS)
    if bad:
        raise UsageError(f"Unknown kind '{sorted(bad)[0]}': choose {', '.join(FAILED_KINDS[:-1])} or {FAILED_KINDS[-1]}.")
    return kinds


def failed_items(workspace: Workspace, source: str, *, kinds: Iterable[str] | None = None,
                 filter_text: str | None = None, since: Since = None, limit: int | None = None,
                 before: tuple[dt.datetime, int] | None = None) -> list[FailedItem]:
    """Items of ``source`` needing an admin, newest first, at most ``limit``.

    ``since`` (datetime or timedelta) keeps items created at or after it;
    ``before`` = (created_at, id) of the last item of the previous page.
    """
    kinds = _check_kinds(kinds)
    limit = DEFAULT_LIMIT if limit is None else int(limit)
    if limit <= 0:
        return []
    failed_list = reads_for(source).failed_list  # an unknown name is one sentence
    return failed_list(workspace, kinds, filter_text, since, limit, before)


@dataclass(frozen=True)
class FailedCursor:
    """Where a merged Failed & Stuck list stopped: per source, the last item handed out."""

    last: dict[str, tuple[dt.datetime | None, Any]]
    taken: dict[str, int]               # items handed out per source (orders page by count)
    done: frozenset[str]                # sources with nothing more to give


def _order_key(item: FailedItem) -> tuple[dt.datetime, str, str]:
    return (item.created_at or dt.datetime.min, item.source, str(item.id).zfill(24))


def failed_page(workspace: Workspace, sources: Iterable[str], *, kinds: Iterable[str] | None = None,
                filter_text: str | None = None, since: Since = None, limit: int = DEFAULT_LIMIT,
                cursor: FailedCursor | None = None) -> tuple[list[FailedItem], FailedCursor | None]:
    """One page of the list over several sources, newest first; the cursor for the next (None: the end).

    Each source is read with its own keyset (``before``) and the pages merged;
    an item not handed out is read again by the next page, so nothing is
    lost or repeated while rows arrive (new ones are newer than the cursor).
    The order store's missed list has no keyset: it is read up to the items
    handed out so far plus a page, and those already handed out are dropped.
    """
    names = [registry.source(s).name for s in sources]
    last = dict(cursor.last) if cursor else {}
    taken = dict(cursor.taken) if cursor else {}
    done = set(cursor.done) if cursor else set()
    pool: list[FailedItem] = []
    full: set[str] = set()
    for name in names:
        if name in done:
            continue
        before = last.get(name)
        if registry.source(name).is_sql:
            got = failed_items(workspace, name, kinds=kinds, filter_text=filter_text, since=since, limit=limit,
                               before=cast("tuple[dt.datetime, int] | None", before))
        else:
            got = failed_items(workspace, name, kinds=kinds, filter_text=filter_text, since=since,
                               limit=taken.get(name, 0) + limit)[taken.get(name, 0):]
        if len(got) >= limit:
            full.add(name)
        pool.extend(got)
    pool.sort(key=_order_key, reverse=True)
    page = pool[:limit]
    for item in page:
        last[item.source] = (item.created_at, item.id)
        taken[item.source] = taken.get(item.source, 0) + 1
    left_over = {i.source for i in pool[limit:]}
    # A source is done when it gave less than a page and all of it was handed out.
    done |= {n for n in names if n not in full and n not in left_over}
    if all(n in done for n in names):
        return page, None
    return page, FailedCursor(last, taken, frozenset(done))
