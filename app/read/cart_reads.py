"""What the read side reads of the cart database (the shop's abandonment log), as the
functions the generic read modules look up through ``READS``.

* Failed & Stuck: unsent rows older than ``thresholds.cart_in_progress_minutes``:
  with an error message they failed, without one they are stuck — unless a
  sent row of the same (user_id, cart_hash) already emailed the abandonment
  (``cart_supersede``): then they are superseded, listed with that row's id
  and never retried. Attempts = rows for the same (user_id, cart_hash).
* The live cart log (``poll_cart_log``, by id) and, in the unified feed, the
  sent abandonment emails (keyset on (sent_at, id), index ``nc_cart_sent_at``:
  a row is inserted unsent and updated when sent, so its id alone would miss
  the send).
* Duplicates: the built-in rule's spec, and the console's member index of it
  (``cart_members``), brought up to date by the services that change rows
  and rebuilt on demand.
* Latency statistics: ``sent_at − created_at`` of sent rows (series
  ``cart``); unsent rows counted per bucket, failed once past the
  in-progress window, pending before.
* Charts: the one series ``cart``; unsent rows past the in-progress window
  per bucket, failed with an error message, stuck without one.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, and_, func, literal, select, tuple_
from sqlalchemy.engine import Connection

from .. import registry
from ..schema import cart_log, cart_metadata, cart_users
from ..sqlutil import backend, db_now
from . import cart_members
from .cart_supersede import sent_rows_of, superseded_reason, superseding
from .chart_window import RawSeries, Window, counts_into
from .common import Since, bucket_expr, resolve_since, text_filter
from .failed_parts import age_seconds, error_class, newest_page
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
from .rule_specs import Key, SqlRuleSpec
from .rules import CART_RULE, group_cart_rows

if TYPE_CHECKING:
    from ..bootstrap import Workspace


# --------------------------------------------------------------------------
# Failed & Stuck

def _failed_list(workspace: Workspace, kinds: set[str], filter_text: str | None, since: Since, limit: int,
                 before: tuple[dt.datetime, int] | None) -> list[FailedItem]:
    """Unsent rows past the in-progress window: failed (with an error), stuck (without),
    or superseded (another row of the cart already emailed this abandonment).

    Superseded is decided per row in Python (``cart_supersede``), so a page
    is read again from where it stopped until it holds ``limit`` rows of the
    kinds asked for, or the log has no more.
    """
    cart_kinds = kinds & {"failed", "stuck", "superseded"}
    if not cart_kinds:
        return []
    t = cart_log.c
    th = workspace.config.thresholds
    window = dt.timedelta(hours=th.duplicate_window_hours)
    items: list[FailedItem] = []
    with workspace.engine("cart").connect() as conn:
        now = db_now(conn)
        since_at = resolve_since(now, since)
        in_progress_until = now - dt.timedelta(minutes=th.cart_in_progress_minutes)
        stmt = select(t.id, t.user_id, t.cart_hash, t.cart_value, t.created_at, t.error_message) \
            .where(t.email_sent == 0, t.created_at < in_progress_until)
        # With an error message a row failed, without one it is stuck: each kind
        # asked for returns exactly its rows, whatever else (e.g. "missed") is asked.
        if "superseded" not in cart_kinds:
            if cart_kinds == {"failed"}:
                stmt = stmt.where(t.error_message.is_not(None))
            elif cart_kinds == {"stuck"}:
                stmt = stmt.where(t.error_message.is_(None))
        if since_at is not None:
            stmt = stmt.where(t.created_at >= since_at)
        flt = text_filter((t.error_message, t.cart_hash), (t.id, t.user_id), filter_text)
        if flt is not None:  # None exactly when there is no filter text
            stmt = stmt.where(flt)
        while len(items) < limit:
            page = [dict(r._mapping) for r in conn.execute(newest_page(stmt, t.created_at, t.id, before, limit))]
            if not page:
                break
            items.extend(i for i in _cart_items(conn, page, now, window) if i.kind in cart_kinds)
            if len(page) < limit:
                break
            before = (page[-1]["created_at"], page[-1]["id"])
    return items[:limit]


def _cart_items(conn: Connection, page: list[dict[str, Any]], now: dt.datetime,
                window: dt.timedelta) -> list[FailedItem]:
    t = cart_log.c
    attempts: dict[tuple[Any, Any], int] = {}
    ever_sent: set[tuple[Any, Any]] = set()
    keys = sorted({(r["user_id"], r["cart_hash"]) for r in page})
    for i in range(0, len(keys), 400):
        batch = keys[i:i + 400]
        q = select(t.user_id, t.cart_hash, func.count(), func.max(t.email_sent)) \
            .where(tuple_(t.user_id, t.cart_hash).in_(batch)).group_by(t.user_id, t.cart_hash)
        for uid, h, n, any_sent in conn.execute(q):
            attempts[(uid, h)] = int(n)
            if any_sent:
                ever_sent.add((uid, h))
    sent = sent_rows_of(conn, keys, min(r["created_at"] for r in page), now, window)
    items: list[FailedItem] = []
    for r in page:
        key = (r["user_id"], r["cart_hash"])
        by = superseding(sent.get(key, ()), r["created_at"], now, window)
        kind = "superseded" if by else "failed" if r["error_message"] else "stuck"
        detail: dict[str, Any] = {"user_id": r["user_id"], "cart_hash": r["cart_hash"], "cart_value": r["cart_value"],
                                  "cart_already_emailed": key in ever_sent, "error_class": error_class(r["error_message"])}
        if by:
            detail.update(superseded_by=by.id, emailed_at=by.emailed_at, reason=superseded_reason(by))
        items.append(FailedItem(
            source="cart", id=r["id"], kind=kind, status="failed" if r["error_message"] else "unsent",
            age_seconds=age_seconds(now, r["created_at"]), error=r["error_message"],
            attempts=attempts.get(key, 1), created_at=r["created_at"], detail=detail))
    return items


# --------------------------------------------------------------------------
# The live cart log (append order: oldest of the new rows first)

_CART_COLS = (cart_log.c.id, cart_log.c.user_id, cart_log.c.cart_hash, cart_log.c.cart_value,
              cart_log.c.email_sent, cart_log.c.created_at, cart_log.c.sent_at, cart_log.c.error_message)


def _cart_row_item(r: dict[str, Any]) -> FeedItem:
    return FeedItem(source="cart", kind="cart_row", id=r["id"], at=r["created_at"], recipient=None,
                    subject=f"cart {r['cart_hash'][:12]} of user {r['user_id']}",
                    status="sent" if r["email_sent"] else ("failed" if r["error_message"] else "unsent"),
                    link={"source": "cart", "table": "cart_abandonment_log", "id": r["id"]},
                    detail={"user_id": r["user_id"], "cart_hash": r["cart_hash"], "cart_value": r["cart_value"],
                            "sent_at": r["sent_at"], "error": r["error_message"]})


def poll_cart_log(workspace: Workspace, after_id: int | None = None, limit: int | None = 500) -> FeedPage:
    """Cart log rows not delivered before ``after_id`` (a page's cursor), oldest first.

    The newest ``limit`` on the first poll; then every row once, late commits included.
    """
    return poll_rows(workspace, "cart", _CART_COLS, _cart_row_item, after_id, limit)


def refresh_cart_rows(workspace: Workspace, ids: Iterable[int]) -> list[FeedItem]:
    return refresh_rows(workspace, "cart", _CART_COLS, _cart_row_item, ids)


# --------------------------------------------------------------------------
# The unified notification feed: sent abandonment emails

# The kind of this source's feed entries, and what it is called; sorting by kind follows the words.
FEED_KIND = ("cart_email", "cart email")
# The feed's type filter: (type, what it is called).
FEED_TYPES = (("cart_email", "Cart abandonment email"),)


def _cart_emails(conn: Connection, *, before: FeedPosition | SortPosition | None,
                 after: FeedMark | FeedPosition | None, since: dt.datetime | None, filter_text: str | None,
                 limit: int, poll: bool = False, kind: str | None = None,
                 order: FeedOrder = LIVE_ORDER) -> list[FeedItem]:
    c = cart_log.c
    u = cart_users.c
    # Every cart entry is a sent abandonment email: its subject sorts as one, by time.
    sort_value = {"at": c.sent_at, "source": literal(registry.source("cart").label.lower()),
                  "kind": literal(FEED_KIND[1]), "recipient": func.lower(func.coalesce(u.email, "")),
                  "subject": literal("cart abandonment"), "status": literal("sent"), "id": c.id}[order[0]]
    stmt = select(c.id, c.user_id, c.cart_hash, c.cart_value, c.created_at, c.sent_at, u.email,
                  sort_value.label("sort_value")).select_from(
        cart_log.outerjoin(cart_users, u.id == c.user_id)).where(c.email_sent == 1, c.sent_at.is_not(None))
    stmt = keyset(stmt, c.sent_at, c.id, before, after, since, limit, poll, order, sort_value)
    flt = text_filter((c.cart_hash, u.email), (c.id, c.user_id), filter_text)
    if flt is not None:  # None exactly when there is no filter text
        stmt = stmt.where(flt)
    return [FeedItem(source="cart", kind="cart_email", id=r.id, at=r.sent_at,
                     recipient=r.email or f"user {r.user_id}", subject=f"Cart abandonment ({r.cart_value})",
                     status="sent", link={"source": "cart", "table": "cart_abandonment_log", "id": r.id},
                     detail={"user_id": r.user_id, "cart_hash": r.cart_hash, "created_at": r.created_at,
                             "_sort": r.sort_value})
            for r in conn.execute(stmt)]


# --------------------------------------------------------------------------
# Duplicates: the built-in rule, and its member index

def builtin_rule_spec(workspace: Workspace) -> SqlRuleSpec:
    """How the built-in cart rule (``CART_RULE``) reads the cart log: its sent rows."""
    t = cart_log.c
    window = workspace.config.thresholds.duplicate_window_hours
    return SqlRuleSpec(
        source="cart", rule=CART_RULE, table=cart_log, key_cols=(t.user_id, t.cart_hash),
        time_col=t.created_at, id_col=t.id,
        fetch_cols=(t.id, t.user_id, t.cart_hash, t.created_at, t.sent_at, t.email_sent, t.cart_value),
        where=(t.email_sent == 1,), group=lambda rows: group_cart_rows(rows, window),
        filter_cols=(t.cart_hash,), filter_int_cols=(t.user_id,), changed_cols=(t.sent_at,), member_index=True)


def refresh_cart_keys(conn: Connection, keys: Iterable[Key]) -> int:
    """Bring the cart member index up to date for ``keys`` ((user_id, cart_hash) pairs).

    For services that change cart rows by id (cleanup, undo): call it in the
    same transaction, after the change. Returns the number of keys whose
    members changed.
    """
    return cart_members.refresh_keys(conn, keys)


def refresh_cart_ids(conn: Connection, ids: Iterable[int | str]) -> int:
    """``refresh_cart_keys`` for the keys of the cart rows with these ids (e.g. rows restored)."""
    return cart_members.refresh_ids(conn, ids)


def rebuild_cart_members(workspace: Workspace) -> cart_members.RebuildReport:
    """Recompute the cart duplicate member index from scratch and install it.

    The index follows inserts, rows becoming sent, and the console's own
    cleanups and undos by itself. Run a rebuild after rows were deleted or
    edited in place by anything else (a manual DELETE of duplicates, a
    back-dated ``sent_at``, a sent row set back to unsent), and on a schedule
    as a safety net (nightly is plenty). It takes tens of seconds at 2 M rows
    and holds the index's lock only for the final swap. Returns keys, members
    and seconds.
    """
    return cart_members.rebuild(workspace.engine("cart"))


# --------------------------------------------------------------------------
# Latency statistics: the rollup's log and settled rows, the exact rows, the failed and pending counts

def _settled(row: Sequence[Any]) -> tuple[str, float] | None:
    _id, created, sent, sent_at = row
    if sent and sent_at is not None:
        return "cart", latency_ms(sent_at, created)
    return None


_ROLLUP = SourceSpec(table=cart_log, id=cart_log.c.id, created=cart_log.c.created_at,
                     cols=(cart_log.c.id, cart_log.c.created_at, cart_log.c.email_sent, cart_log.c.sent_at),
                     settled=cart_log.c.email_sent == 1, series_like="cart", prefixed=False)


def _exact_rows(start: dt.datetime, end: dt.datetime) -> Select[Any]:
    t = cart_log.c
    return select(literal("cart"), t.created_at, t.sent_at).where(
        t.email_sent == 1, t.created_at >= start, t.created_at < end, t.sent_at.is_not(None))


def _unsettled_counts(conn: Connection, workspace: Workspace, start: dt.datetime, end: dt.datetime,
                      bucket_seconds: int, start_b: int, now: dt.datetime) -> tuple[Counts, Counts]:
    """Failed and pending counts per series and bucket, counted in the database."""
    dialect = backend(conn)
    failed: Counts = defaultdict(dict)
    pending: Counts = defaultdict(dict)
    t = cart_log.c
    in_progress = now - dt.timedelta(minutes=workspace.config.thresholds.cart_in_progress_minutes)
    bexpr = bucket_expr(t.created_at, bucket_seconds, dialect).label("b")
    stmt = select((t.created_at < in_progress).label("old"), bexpr, func.count()).where(
        t.email_sent == 0, t.created_at >= start, t.created_at < end).group_by("old", bexpr)
    for old, b, c in conn.execute(stmt):
        target = failed if old else pending
        target["cart"][int(b) - start_b] = target["cart"].get(int(b) - start_b, 0) + int(c)
    return failed, pending


# --------------------------------------------------------------------------
# Charts: the failed and stuck counts of a window, the series of a duplicate group

def _chart_unsettled(conn: Connection, workspace: Workspace, window: Window, now: dt.datetime,
                     raw: RawSeries) -> None:
    """Unsent rows past the in-progress window: failed with an error message, stuck without one.

    A failed send counts as failed even when a later row of the same cart
    was emailed (the Failed & Stuck list calls that row superseded): the
    attempt did fail, and the failure rate is about attempts.
    """
    t = cart_log.c
    until = now - dt.timedelta(minutes=workspace.config.thresholds.cart_in_progress_minutes)
    b = bucket_expr(t.created_at, window.bucket_seconds, backend(conn)).label("b")
    has_error = t.error_message.is_not(None).label("has_error")
    stmt = select(has_error, b, func.count()).where(
        and_(t.email_sent == 0, t.created_at < until, t.created_at >= window.start, t.created_at < window.end)) \
        .group_by(has_error, b)
    for err, bucket, c in conn.execute(stmt):
        counts_into(raw.failed if err else raw.stuck, "cart", int(bucket) - window.start_b, window.n, int(c))


def _dup_series(_g: DuplicateGroup) -> str:
    return "cart"


READS = SourceReads(
    source=registry.source("cart"), failed_list=_failed_list,
    feed=_cart_emails, feed_kind=FEED_KIND, feed_types=FEED_TYPES,
    raw_record=sql_raw_record("cart", cart_metadata),
    series_names=("cart",), dup_series=_dup_series,
    feed_keyset=FeedKeyset(cart_log, cart_log.c.sent_at, cart_log.c.id,
                           (cart_log.c.email_sent == 1, cart_log.c.sent_at.is_not(None))),
    sql_rule_spec=builtin_rule_spec,
    latency=LatencyReads(_ROLLUP, _settled, _exact_rows, _unsettled_counts, _chart_unsettled))
