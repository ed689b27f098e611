"""The duplicate rules, as pure functions: rule names, business keys, and the ``group_*``
functions that turn row dicts into ``DuplicateGroup``s (no database, no clock).

They are the single statement of the business rules (schemas in
``data/schemas``); the scans of ``app.read.duplicates`` feed them rows fetched
from the databases, the member index (``app.read.cart_members``) applies the
cart rule in a specialised form, and the cleanup service feeds them the rows
it has locked.

* cart: a second *sent* row for the same (user_id, cart_hash) created less
  than ``window`` after the first sent row of its abandonment; a sent row at
  or beyond the window starts a new abandonment; unsent rows never count.
* dispatch: more than one notification for the same (user_id, type,
  issue_id, comment_id, actor_user_id) — comment_id NULL equals NULL —
  whatever their dispatch_id (legacy NULL ids included). A status change
  can happen many times, so for ``status_changed`` the message (which names
  the new status) is part of the key, and two of them are one event only
  when no *other* status change of the same issue lies strictly between
  them in time: a status_changed notification of that issue_id, to any
  recipient, whose (actor_user_id, message) differs. Resolved, reopened,
  resolved are three events; resolved twice with nothing between is a
  duplicate. A key's time-ordered chain is split wherever such a change lies
  between consecutive members; the issue's status changes (its *status
  timeline*, ``StatusChanges``) come from
  ``app.read.dispatch_reads.fetch_status_timeline``.
* orders: more than one email_log document per (order_id, event).
* config rules: more than one row/document per key within ``window_hours``
  (anchored like the cart rule).

In every group the kept member is the earliest (time, then id).
"""
from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .. import registry
from ..config import DuplicateRule
from .common import as_time, id_key, time_key
from .models import DuplicateGroup

CART_RULE = "cart_sent_within_window"
DISPATCH_RULE = "dispatch_same_event"
ORDER_RULE = "order_email_per_event"

CART_KEY = ("user_id", "cart_hash")
DISPATCH_KEY = ("user_id", "type", "issue_id", "comment_id", "actor_user_id")
# The grouping key: the semantic key plus, for status changes, the message.
DISPATCH_GROUP_KEY = DISPATCH_KEY + ("event_detail",)
ORDER_KEY = ("order_id", "event")
STATUS_CHANGED = "status_changed"


def group_rows(rows: Iterable[dict[str, Any]], *, source: str, rule: str, key_fields: tuple[str, ...],
               time_field: str, id_field: str = "id", window: dt.timedelta | None = None,
               evidence_fields: tuple[str, ...] = (), id_as_str: bool = False,
               split: Callable[[dict[str, Any], dict[str, Any]], bool] | None = None) -> list[DuplicateGroup]:
    """Group rows sharing ``key_fields``; with ``window``, anchored chains.

    A chain is anchored at the earliest row of a key; each later row whose
    time is less than ``window`` after the anchor joins it; the first row at
    or beyond the window anchors the next chain. Without ``window`` every row
    of a key is one group. ``split(previous, row)`` true also ends a chain
    between two consecutive rows of a key (``row`` anchors the next). Only
    groups of two or more are returned, ordered by first time, then kept id.
    """
    by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if isinstance(row.get(time_field), str):
            row = dict(row, **{time_field: as_time(row[time_field])})
        by_key[tuple(row.get(k) for k in key_fields)].append(row)
    groups: list[DuplicateGroup] = []
    for key, members in by_key.items():
        members.sort(key=lambda r: (time_key(r.get(time_field)), id_key(r.get(id_field))))
        chains: list[list[dict[str, Any]]] = []
        for row in members:
            if chains and (window is None or
                           time_key(row.get(time_field)) - time_key(chains[-1][0].get(time_field)) < window) \
                    and (split is None or not split(chains[-1][-1], row)):
                chains[-1].append(row)
            else:
                chains.append([row])
        for chain in chains:
            if len(chain) < 2:
                continue
            ids = [str(r[id_field]) if id_as_str else r[id_field] for r in chain]
            evidence: list[dict[str, Any]] = []
            for r in chain:
                ev: dict[str, Any] = {"id": str(r[id_field]) if id_as_str else r[id_field]}
                for f in (time_field, *evidence_fields):
                    if f in r and f != id_field:
                        ev[f] = r[f]
                evidence.append(ev)
            groups.append(DuplicateGroup(
                source=source, rule=rule, key=dict(zip(key_fields, key)), keep_id=ids[0],
                member_ids=ids, first_at=chain[0].get(time_field), last_at=chain[-1].get(time_field),
                evidence=evidence))
    groups.sort(key=lambda g: (time_key(g.first_at), id_key(g.keep_id)))
    return groups


def group_cart_rows(rows: Iterable[dict[str, Any]], window_hours: float = 24) -> list[DuplicateGroup]:
    """Cart duplicates: sent rows of one (user_id, cart_hash) within the window of the first."""
    sent = [r for r in rows if r.get("email_sent")]
    return group_rows(sent, source="cart", rule=CART_RULE, key_fields=CART_KEY, time_field="created_at",
                      window=dt.timedelta(hours=window_hours), evidence_fields=("sent_at", "cart_value"))


def _dispatch_event_detail(row: dict[str, Any]) -> object:
    """What tells two status changes apart: the new status, named in the message.

    The semantic key (user, type, issue, comment, actor) identifies a comment
    event; a status change by one person on one issue can happen many times,
    so for those the message (``… changed OPS-1 to closed``) is part of the key.
    """
    return row.get("message") if row.get("type") == STATUS_CHANGED else None


# issue_id -> that issue's status changes as (created_at, actor_user_id, message), by time.
# Issue ids are keys as the database hands them back (Mapping is invariant in its key).
StatusTimeline = Mapping[Any, Sequence[tuple[object, object, object]]]


class StatusChanges:
    """The status timeline of some issues, asked "another change between these two times?".

    The duplicate rule asks it of two notifications; a dispatch retry asks it
    of a notification held and the event it is retrying (``app.services.dispatch``).
    """

    def __init__(self, timeline: StatusTimeline | None, rows: list[dict[str, Any]]) -> None:
        by_issue: dict[Any, list[tuple[dt.datetime, object, object]]] = defaultdict(list)
        for issue_id, changes in (timeline or {}).items():
            by_issue[issue_id].extend((time_key(as_time(at)), actor, message) for at, actor, message in changes)
        # The rows' own status changes belong to their issue's timeline whatever
        # the caller fetched (a change listed twice changes no answer).
        for r in rows:
            if r.get("type") == STATUS_CHANGED:
                by_issue[r.get("issue_id")].append((time_key(r.get("created_at")), r.get("actor_user_id"),
                                                    r.get("message")))
        self._times: dict[Any, list[dt.datetime]] = {}
        self._times_of: dict[Any, dict[tuple[object, object], list[dt.datetime]]] = {}
        for issue_id, changes in by_issue.items():
            changes.sort(key=lambda c: c[0])
            self._times[issue_id] = [c[0] for c in changes]
            per_event: dict[tuple[object, object], list[dt.datetime]] = defaultdict(list)
            for at, actor, message in changes:
                per_event[(actor, message)].append(at)
            self._times_of[issue_id] = per_event

    def other_between(self, issue_id: object, actor: object, message: object,
                      after: dt.datetime, before: dt.datetime) -> bool:
        """A change of ``issue_id`` other than (actor, message) strictly between the two times."""
        if not after < before:
            return False
        times = self._times.get(issue_id, ())
        total = bisect.bisect_left(times, before) - bisect.bisect_right(times, after)
        if total == 0:
            return False
        same = self._times_of[issue_id].get((actor, message), ())
        return total > bisect.bisect_left(same, before) - bisect.bisect_right(same, after)


def group_dispatch_rows(rows: Iterable[dict[str, Any]],
                        status_timeline: StatusTimeline | None = None) -> list[DuplicateGroup]:
    """Dispatch duplicates: notifications of the same semantic event for the same user.

    ``status_timeline`` (issue_id -> [(created_at, actor_user_id, message)],
    see ``fetch_status_timeline``) holds the status changes of the rows'
    issues to any recipient; two status changes of a key with another
    change of their issue between them are two events. The rows' own status
    changes always count, so without a timeline the rows are the only history.
    """
    keyed: list[dict[str, Any]] = []
    for r in rows:
        if isinstance(r.get("created_at"), str):
            r = dict(r, created_at=as_time(r["created_at"]))
        keyed.append(dict(r, event_detail=_dispatch_event_detail(r)))
    changes = StatusChanges(status_timeline, keyed)

    def split(prev: dict[str, Any], row: dict[str, Any]) -> bool:
        return row.get("type") == STATUS_CHANGED and changes.other_between(
            row.get("issue_id"), row.get("actor_user_id"), row.get("message"),
            time_key(prev.get("created_at")), time_key(row.get("created_at")))

    groups = group_rows(keyed, source="dispatch", rule=DISPATCH_RULE, key_fields=DISPATCH_GROUP_KEY,
                        time_field="created_at", evidence_fields=("dispatch_id", "is_read"), split=split)
    # The detail shows in the key only where it takes part (status changes).
    return [g if g.key.get("event_detail") is not None else
            dataclasses.replace(g, key={k: v for k, v in g.key.items() if k != "event_detail"})
            for g in groups]


def group_order_logs(docs: Iterable[dict[str, Any]]) -> list[DuplicateGroup]:
    """Order duplicates: more than one email_log document per (order_id, event)."""
    return group_rows(docs, source="orders", rule=ORDER_RULE, key_fields=ORDER_KEY, time_field="sent_at",
                      id_field="_id", id_as_str=True,
                      evidence_fields=("to", "subject", "message_id", "transport"))


def group_rule_rows(rows: Iterable[dict[str, Any]], rule: DuplicateRule) -> list[DuplicateGroup]:
    """Duplicates of a config-defined rule: rows of one key within ``window_hours``."""
    return group_rows(rows, source=rule.source, rule=rule.name, key_fields=tuple(rule.key),
                      time_field=rule.time_column, id_field=rule.id_column,
                      window=dt.timedelta(hours=rule.window_hours), id_as_str=not registry.source(rule.source).is_sql)
