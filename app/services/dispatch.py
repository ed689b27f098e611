"""Notification dispatch (seed 004 done right) and its retry.

The production path
-------------------
``dispatch_comment_added`` / ``dispatch_status_changed`` build a
deterministic dispatch key from the event itself (never a timestamp: the
seed's millisecond key gave every retry a new key and defeated idempotency).

1. **Claim.** ``INSERT IGNORE`` the pending log row. The log's UNIQUE
   ``dispatch_id`` is the guard: the rowcount says who won, across threads,
   processes and hosts. Losers return ``duplicate`` at once, without reading
   anything (there is no check-then-insert window). The claim commits on its
   own on purpose: a dispatcher that dies after it leaves a *pending* row,
   which the console lists as stuck after ``thresholds.dispatch_stuck_minutes``
   and ``retry`` finishes.
2. **Deliver, in one transaction.** Recipients are the reporter, the assignee
   and the watchers, minus the actor, each once. Their notifications are
   inserted with ``INSERT IGNORE`` on ``(dispatch_id, user_id)`` (a backstop
   should a retry run at the same time), and the log row is marked completed
   with ``recipients_count`` and ``completed_at`` — conditionally on it still
   being pending, so a concurrent retry that finished first makes this one
   roll back instead of double-counting.
3. **Failure.** Any error rolls the transaction back (no partial set of
   notifications) and a separate short transaction marks the row failed with
   the error message.

Retry
-----
``retry_item`` (the per-source contract of ``app.services.retry``) re-runs a
failed dispatch, or a pending one older than the stuck threshold. A lease in
``nc_dispatch_attempt`` (insert-ignore, then a conditional update where the
lease expired) lets exactly one console work on a row; the work itself locks
the log row, re-checks its status, and inserts only the notifications that
recipients do not already hold for the same semantic event
``(user_id, type, issue_id, comment_id, actor_user_id)`` — the seed's
timestamped keys mean an earlier retry may have delivered under another
dispatch id. Attempts are counted in ``nc_dispatch_attempt``.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import ColumnElement, and_, insert, or_, select, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from .. import registry
from ..errors import ConsoleError, OperationFailed, UsageError
from ..read.dispatch_reads import group_dispatch_rows_in
from ..read.rules import StatusChanges
from ..schema import dispatch_log, dispatch_users, issue_watchers, issues, nc_dispatch_attempt, notifications
from ..sources import describe_db_error
from ..sqlutil import backend, db_now, insert_ignore, shared_now, with_retry
from .claims import claim_rows
from .guard import guarded, quietly
from .hooks import SourceActions
from .tokens import lease_token

if TYPE_CHECKING:
    from ..bootstrap import Workspace
    from ..read.models import DuplicateGroup

SOURCE = "dispatch"
KEY_MAX = 255
STATUS_MAX = 32
EVENT_REF_MAX = 128
ERROR_MAX = 2000
LEASE = dt.timedelta(minutes=2)

DISPATCHED = "dispatched"
DUPLICATE = "duplicate"
FAILED = "failed"

SKIP_COMPLETED = "already completed"
SKIP_IN_PROGRESS = "in progress"
SKIP_HELD = "recipients already hold the notification"
SKIP_LEASED = "another console is retrying this dispatch right now"


@dataclass(frozen=True)
class DispatchEvent:
    """One event that notifies an issue's people; its key is derived from it alone."""

    type: str                     # comment_added | status_changed
    issue_id: int
    actor_user_id: int
    comment_id: int | None = None
    new_status: str | None = None
    event_ref: str | None = None

    @property
    def dispatch_key(self) -> str:
        if self.type == "comment_added":
            return f"comment_added:{self.issue_id}:{self.comment_id}:{self.actor_user_id}"
        key = f"status_changed:{self.issue_id}:{self.actor_user_id}:{self.new_status}"
        return key + (f":{self.event_ref}" if self.event_ref else "")

    def message(self, issue_key: str, title: str, actor_name: str | None) -> str:
        who = actor_name or f"User {self.actor_user_id}"
        if self.type == "comment_added":
            return f"{who} commented on {issue_key}: {title}"
        if self.type != "status_changed":
            return f"{who} updated {issue_key}: {title}"
        if self.new_status is None:  # a log row written by the seed's code keeps no new status
            return f"{who} changed the status of {issue_key}"
        return f"{who} changed {issue_key} to {self.new_status}"


@dataclass(frozen=True)
class DispatchResult:
    dispatch_id: str
    outcome: str                              # dispatched | duplicate | failed
    log_id: int | None = None
    recipients: tuple[int, ...] = field(default=())
    error: str | None = None

    @property
    def notified(self) -> int:
        return len(self.recipients)


class _TakenOver(Exception):
    """The log row was completed by someone else (a retry) while this transaction ran."""


class _DeliveryError(Exception):
    """A dispatch cannot be delivered for a reason a person can act on."""


# --------------------------------------------------------------------------
# Validation

BIGINT_MAX = 2 ** 64 - 1    # BIGINT UNSIGNED: issue and comment ids
INT_MAX = 2 ** 32 - 1       # INT UNSIGNED: user ids


def _positive_id(name: str, value: object, maximum: int = BIGINT_MAX) -> int:
    # Range-checked here: INSERT IGNORE would clamp an out-of-range id with only a warning.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= maximum:
        raise UsageError(f"The {name} must be a positive integer up to {maximum}, not {value!r}.")
    return value


def comment_added_event(issue_id: int, comment_id: int, actor_user_id: int) -> DispatchEvent:
    return DispatchEvent("comment_added", _positive_id("issue id", issue_id),
                         _positive_id("actor user id", actor_user_id, INT_MAX),
                         comment_id=_positive_id("comment id", comment_id))


def status_changed_event(issue_id: int, actor_user_id: int, new_status: str,
                         event_ref: str | None = None) -> DispatchEvent:
    if (not isinstance(new_status, str) or not new_status.strip() or len(new_status) > STATUS_MAX
            or ":" in new_status):
        raise UsageError(f"The new status must be 1 to {STATUS_MAX} characters without ':', not {new_status!r}.")
    if event_ref is not None and (not isinstance(event_ref, str) or not event_ref.strip()
                                  or len(event_ref) > EVENT_REF_MAX):
        raise UsageError(f"The event reference must be 1 to {EVENT_REF_MAX} characters, not {event_ref!r}.")
    return DispatchEvent("status_changed", _positive_id("issue id", issue_id),
                         _positive_id("actor user id", actor_user_id, INT_MAX),
                         new_status=new_status.strip(), event_ref=event_ref)


# --------------------------------------------------------------------------
# The production path

def dispatch_comment_added(workspace: Workspace, issue_id: int, comment_id: int, actor_user_id: int) -> DispatchResult:
    """Notify the issue's people of a new comment, once per comment whatever the concurrency."""
    return dispatch(workspace, comment_added_event(issue_id, comment_id, actor_user_id))


def dispatch_status_changed(workspace: Workspace, issue_id: int, actor_user_id: int, new_status: str,
                            event_ref: str | None = None) -> DispatchResult:
    """Notify the issue's people of a status change.

    ``event_ref`` (e.g. the id of the issue's history entry) tells two changes
    to the same status by the same person apart; without it they share a key
    and the second is treated as a repeat of the first.
    """
    return dispatch(workspace, status_changed_event(issue_id, actor_user_id, new_status, event_ref))


def dispatch(workspace: Workspace, event: DispatchEvent) -> DispatchResult:
    key = event.dispatch_key
    engine = workspace.engine(SOURCE)
    with engine.connect() as conn:
        log_id = guarded(SOURCE, lambda: _claim(conn, event, key))
        if log_id is None:
            return DispatchResult(key, DUPLICATE)
        try:
            recipients = with_retry(lambda: _deliver_once(conn, event, key))
        except _TakenOver:
            return DispatchResult(key, DUPLICATE, log_id)
        except Exception as exc:  # any failure: nothing was delivered; record why
            message = _error_text(exc)
            _mark_failed(conn, key, message)
            return DispatchResult(key, FAILED, log_id, error=message)
    return DispatchResult(key, DISPATCHED, log_id, tuple(recipients))


def _claim(conn: Connection, event: DispatchEvent, key: str) -> int | None:
    """Insert the pending log row; the id when this caller won, None when the key exists."""
    row: dict[str, Any] = {"dispatch_id": key, "dispatch_type": event.type, "issue_id": event.issue_id,
           "comment_id": event.comment_id, "actor_user_id": event.actor_user_id,
           "recipients_count": 0, "status": "pending"}
    b = backend(conn)
    with conn.begin():
        if b in ("mysql", "mariadb"):
            # created_at: the production DEFAULT CURRENT_TIMESTAMP(3), the database's clock.
            result = conn.execute(insert(dispatch_log).prefix_with("IGNORE").values(
                created_at=_db_clock(b)), row)
            return result.lastrowid if result.rowcount == 1 else None
        row["created_at"] = db_now(conn)
        if b == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert
            got: int | None = conn.execute(pg_insert(dispatch_log).on_conflict_do_nothing()
                               .returning(dispatch_log.c.id), row).scalar()
            return got
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert
        result = conn.execute(sqlite_insert(dispatch_log).on_conflict_do_nothing(), row)
        return result.lastrowid if result.rowcount == 1 else None


def _db_clock(b: str) -> ColumnElement[dt.datetime]:
    from sqlalchemy import func
    return func.utc_timestamp(3) if b in ("mysql", "mariadb") else func.current_timestamp()


@dataclass(frozen=True)
class _Audience:
    issue_key: str
    title: str
    people: frozenset[int]        # reporter, assignee and watchers


def _audiences(conn: Connection, issue_ids: Iterable[int],
               actor_ids: Iterable[int]) -> tuple[dict[int, _Audience], dict[int, str | None]]:
    """The people of many issues (one query, watchers joined) and the actors' names (one query)."""
    w = issue_watchers.c
    found: dict[int, tuple[str, str]] = {}
    people: dict[int, set[int | None]] = {}   # the assignee and the watcher may be NULL
    for r in conn.execute(select(issues.c.id, issues.c.issue_key, issues.c.title, issues.c.reporter_id,
                                 issues.c.assignee_id, w.user_id)
                          .select_from(issues.outerjoin(issue_watchers, w.issue_id == issues.c.id))
                          .where(issues.c.id.in_(sorted(set(issue_ids))))):
        found[r.id] = (r.issue_key, r.title)
        people.setdefault(r.id, set()).update((r.reporter_id, r.assignee_id, r.user_id))
    names = dict(conn.execute(select(dispatch_users.c.id, dispatch_users.c.display_name)
                              .where(dispatch_users.c.id.in_(sorted(set(actor_ids))))).all())
    # Without None (mypy does not narrow a set difference), each issue's people are user ids.
    return ({i: _Audience(key, title, frozenset(cast("set[int]", people[i] - {None})))
             for i, (key, title) in found.items()}, names)


def _recipients(event: DispatchEvent, audiences: dict[int, _Audience],
                names: dict[int, str | None]) -> tuple[list[int], str]:
    audience = audiences.get(event.issue_id)
    if audience is None:
        raise _DeliveryError(f"Issue {event.issue_id} does not exist.")
    return (sorted(audience.people - {event.actor_user_id}),
            event.message(audience.issue_key, audience.title, names.get(event.actor_user_id)))


def recipients_of(conn: Connection, event: DispatchEvent) -> tuple[list[int], str]:
    """Reporter, assignee and watchers minus the actor, each once; and the message."""
    return _recipients(event, *_audiences(conn, [event.issue_id], [event.actor_user_id]))


def _notification_rows(event: DispatchEvent, key: str, users: Iterable[int], message: str,
                       now: dt.datetime) -> list[dict[str, Any]]:
    return [{"user_id": u, "type": event.type, "issue_id": event.issue_id, "comment_id": event.comment_id,
             "actor_user_id": event.actor_user_id, "message": message, "is_read": 0,
             "created_at": now, "dispatch_id": key} for u in users]


def _deliver_once(conn: Connection, event: DispatchEvent, key: str) -> list[int]:
    with conn.begin():
        recipients, message = recipients_of(conn, event)
        now = db_now(conn)
        if recipients:
            insert_ignore(conn, notifications, _notification_rows(event, key, recipients, message, now))
        done = conn.execute(update(dispatch_log)
                            .where(and_(dispatch_log.c.dispatch_id == key, dispatch_log.c.status == "pending"))
                            .values(status="completed", recipients_count=len(recipients),
                                    completed_at=now)).rowcount
        if done != 1:
            raise _TakenOver()
    return recipients


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ConsoleError):
        text = exc.message
    elif isinstance(exc, _DeliveryError):
        text = str(exc)
    elif isinstance(exc, (DBAPIError, SQLAlchemyError)):
        text = describe_db_error(SOURCE, exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:ERROR_MAX]


def _mark_failed(conn: Connection, key: str, message: str) -> None:
    """Mark a pending row failed, in its own short transaction (the delivery rolled back)."""
    def run() -> None:
        if conn.in_transaction():
            conn.rollback()
        with conn.begin():
            conn.execute(update(dispatch_log)
                         .where(and_(dispatch_log.c.dispatch_id == key, dispatch_log.c.status == "pending"))
                         .values(status="failed", error_message=message))
    # Should this fail too, the row stays pending and shows up as stuck after the threshold.
    quietly(lambda: with_retry(run))


# --------------------------------------------------------------------------
# Retry (per-source contract of app.services.retry)

def _verdict(row: RowMapping, now: dt.datetime, stuck_after: dt.timedelta) -> str | None:
    """Why a log row must not be retried now, or None when it may be."""
    if row["status"] == "completed":
        return SKIP_COMPLETED
    if row["status"] == "pending" and row["created_at"] is not None and row["created_at"] >= now - stuck_after:
        return SKIP_IN_PROGRESS
    return None


def _event_of(row: RowMapping) -> DispatchEvent:
    """The event a log row stands for (the status of a status change is not in the log)."""
    return DispatchEvent(row["dispatch_type"], int(row["issue_id"]), int(row["actor_user_id"]),
                         comment_id=int(row["comment_id"]) if row["comment_id"] is not None else None,
                         new_status=_status_from_key(row["dispatch_id"]))


def _status_from_key(key: str) -> str | None:
    parts = key.split(":")
    if len(parts) >= 4 and parts[0] == "status_changed":
        return parts[3]
    return None


def _same_text(a: str | None, b: str | None) -> bool:
    """Equal as the database's collation compares them (case and trailing spaces aside)."""
    return a is not None and b is not None and a.rstrip().casefold() == b.rstrip().casefold()


def _held(event: DispatchEvent, dispatch_id: str, message: str, known: list[dict[str, Any]],
          event_at: dt.datetime | None = None, changes: StatusChanges | None = None) -> set[int]:
    """Recipients that already hold a notification of this event, among ``known`` (the
    notifications of the event's issue for its recipients).

    Those holding one under this very dispatch id, plus those holding one of
    the same semantic event under another id (the seed's timestamped keys,
    legacy NULL ids). A status change is the same event only with the same
    new status, which the notification names in its message, and only with
    no other status change of the issue between the notification and the
    event (``changes``, the issue's timeline, and ``event_at``, the log row's
    time; the duplicate rule says the same): resolved, reopened, resolved are
    three events. When the log row does not tell the new status (the seed's
    keys), the coarser semantic match is all there is.
    """
    held: set[int] = set()
    for n in known:
        if n["dispatch_id"] is not None and n["dispatch_id"] == dispatch_id:
            held.add(n["user_id"])
        elif (n["type"] == event.type and n["actor_user_id"] == event.actor_user_id
              and n["comment_id"] == event.comment_id
              and (event.type != "status_changed" or event.new_status is None
                   or (_same_text(n["message"], message)
                       and not _changed_between(changes, event, n, event_at)))):
            held.add(n["user_id"])
    return held


def _changed_between(changes: StatusChanges | None, event: DispatchEvent, held: dict[str, Any],
                     event_at: dt.datetime | None) -> bool:
    if changes is None or event_at is None or held.get("event_at") is None:
        return False
    lo, hi = sorted((held["event_at"], event_at))
    return changes.other_between(event.issue_id, held["actor_user_id"], held["message"], lo, hi)


# Items one retry_items call works on together (app.services.retry hands it chunks this size).
RETRY_BATCH = 50


def retry_item(workspace: Workspace, item_id: str, *, operator: str, action_id: str) -> tuple[str, str | None]:
    """Re-run one failed or stuck dispatch; exactly one of many concurrent retriers wins."""
    [(outcome, detail)] = retry_items(workspace, [item_id], operator=operator, action_id=action_id)
    if outcome == "failed":
        assert detail is not None  # a failure always carries its sentence
        raise OperationFailed(detail)
    return outcome, detail


def retry_items(workspace: Workspace, item_ids: list[str], *, operator: str,
                action_id: str) -> list[tuple[str, str | None]]:
    """Re-run failed or stuck dispatches, each with its own lease and its own outcome.

    The items share round trips, not fates: one query reads them, one insert
    takes their leases (``nc_dispatch_attempt``, one row per item, then a
    conditional takeover of expired ones), and one transaction locks the log
    rows still held, re-checks each, and delivers what each one's recipients
    lack. Each item is judged alone on the way: done meanwhile, in progress,
    leased by another console, its issue gone (that item fails, the others
    go on). Should the shared transaction fail as a whole, every lease is
    given back and each item runs again alone, so an error names its own
    item only. Returns one (outcome, detail) per id, in order; a failure is
    ("failed", sentence).
    """
    ids = [registry.source(SOURCE).parse_item_id(i) for i in item_ids]
    if len(set(ids)) != len(ids):
        raise UsageError("Each dispatch may appear once in one retry batch.")
    engine = workspace.engine(SOURCE)
    stuck_after = dt.timedelta(minutes=workspace.config.thresholds.dispatch_stuck_minutes)
    token = lease_token(operator, action_id)
    with engine.connect() as conn:
        outcomes, won = with_retry(lambda: _look_and_lease(conn, ids, token, stuck_after))
        if won:
            try:
                outcomes.update(with_retry(lambda: _work(conn, won, token, stuck_after)))
            except Exception as exc:
                outcomes.update(_after_failure(workspace, conn, won, token, exc, operator, action_id))
    return [outcomes[i] for i in ids]


def _look_and_lease(conn: Connection, ids: list[int], token: str,
                    stuck_after: dt.timedelta) -> tuple[dict[int, tuple[str, str | None]], list[int]]:
    """Read the rows; lease those that may be retried now. Returns (outcomes so far, leased ids)."""
    a = nc_dispatch_attempt.c
    outcomes: dict[int, tuple[str, str | None]] = {}
    with conn.begin():
        now = shared_now(conn)
        rows = {r["id"]: r for r in conn.execute(select(dispatch_log).where(dispatch_log.c.id.in_(ids))).mappings()}
        wanted: list[int] = []
        for i in ids:
            row = rows.get(i)
            if row is None:
                outcomes[i] = ("failed", f"Dispatch log row {i} does not exist.")
            elif why := _verdict(row, now, stuck_after):
                outcomes[i] = ("skipped", why)
            else:
                wanted.append(i)
    if not wanted:
        return outcomes, []
    # Lease the rows still retryable: free ones by insert, expired leases by takeover (claim_rows).
    got = claim_rows(
        conn, nc_dispatch_attempt, ("log_id",),
        lambda now: [{"log_id": i, "attempts": 0, "lease_until": now + LEASE, "owner": token, "updated_at": now}
                     for i in wanted],
        owner="owner", token=token, run=lambda tx: tx(),   # the caller retries the whole look-and-lease
        finished=lambda now: or_(a.lease_until.is_(None), a.lease_until < now),
        takeover=lambda now: {"lease_until": now + LEASE, "owner": token, "updated_at": now})
    mine = {k[0] for k in got.mine}
    for i in wanted:
        if i not in mine:
            outcomes[i] = ("skipped", SKIP_LEASED)
    return outcomes, [i for i in wanted if i in mine]


def _work(conn: Connection, ids: list[int], token: str, stuck_after: dt.timedelta) -> dict[int, tuple[str, str | None]]:
    """One transaction: lock the leased rows, re-check each, deliver what is missing, complete."""
    a = nc_dispatch_attempt.c
    n = notifications.c
    outcomes: dict[int, tuple[str, str | None]] = {}
    with conn.begin():
        now = shared_now(conn)
        rows = {r["id"]: r for r in conn.execute(select(dispatch_log).where(dispatch_log.c.id.in_(ids))
                                                 .order_by(dispatch_log.c.id).with_for_update()).mappings()}
        held = set(conn.execute(select(a.log_id).where(a.log_id.in_(ids), a.owner == token)
                                .with_for_update()).scalars())
        go: list[int] = []
        stop: list[int] = []
        for i in ids:
            why = SKIP_LEASED if i not in held else _verdict(rows[i], now, stuck_after)
            if why:
                outcomes[i] = ("skipped", why)
                if i in held:
                    stop.append(i)
            else:
                go.append(i)
        if stop:
            conn.execute(update(nc_dispatch_attempt).where(a.log_id.in_(stop), a.owner == token)
                         .values(lease_until=None, owner=None, updated_at=now))
        events = {i: _event_of(rows[i]) for i in go}
        audiences, names = _audiences(conn, [e.issue_id for e in events.values()],
                                      [e.actor_user_id for e in events.values()]) if go else ({}, {})
        plans: dict[int, tuple[DispatchEvent, list[int], str]] = {}
        for i in go:
            try:
                recipients, message = _recipients(events[i], audiences, names)
            except _DeliveryError as exc:
                outcomes[i] = ("failed", _failed_again(i, str(exc)))
                _fail_in(conn, i, token, str(exc), now)
                continue
            plans[i] = (events[i], recipients, message)
        known: dict[int, list[dict[str, Any]]] = {}
        users = sorted({u for _e, r, _m in plans.values() for u in r})
        issue_ids = sorted({e.issue_id for e, _r, _m in plans.values()})
        if users:
            for r in conn.execute(select(n.user_id, n.dispatch_id, n.type, n.issue_id, n.comment_id,
                                         n.actor_user_id, n.message, n.created_at.label("event_at"))
                                  .where(n.issue_id.in_(issue_ids), n.user_id.in_(users))).mappings():
                known.setdefault(r["issue_id"], []).append(dict(r))
        changes = _status_changes(conn, [e.issue_id for e, _r, _m in plans.values()
                                         if e.type == "status_changed" and e.new_status is not None])
        new_rows: list[dict[str, Any]] = []
        by_count: dict[int, list[int]] = {}
        for i, (event, recipients, message) in plans.items():
            dispatch_id = rows[i]["dispatch_id"]
            wanted = set(recipients)
            mine = [k for k in known.get(event.issue_id, ()) if k["user_id"] in wanted]
            event_at = rows[i]["created_at"]
            missing = sorted(set(recipients) - _held(event, dispatch_id, message, mine, event_at, changes))
            fresh = _notification_rows(event, dispatch_id, missing, message, now)
            new_rows.extend(fresh)
            # What this item delivers counts for the next items of the same event in this batch,
            # at the time of the event it delivers.
            known.setdefault(event.issue_id, []).extend(dict(f, event_at=event_at) for f in fresh)
            outcomes[i] = ("skipped", SKIP_HELD) if recipients and not missing else ("retried", None)
            by_count.setdefault(len(recipients), []).append(i)
        inserted = insert_ignore(conn, notifications, new_rows) if new_rows else 0
        if inserted != len(new_rows):
            # Someone delivered some of these meanwhile (the unique (dispatch_id, user_id)
            # key turned them away): alone, an item is judged by what it inserted; in a
            # batch, each item runs again alone.
            if len(plans) > 1:
                raise _Contended()
            [(i, (_e, recipients, _m))] = plans.items()
            if recipients and not inserted:
                outcomes[i] = ("skipped", SKIP_HELD)
        for count, group in by_count.items():
            conn.execute(update(dispatch_log).where(dispatch_log.c.id.in_(group)).values(
                status="completed", recipients_count=count, completed_at=now, error_message=None))
        if plans:
            conn.execute(update(nc_dispatch_attempt).where(a.log_id.in_(list(plans)), a.owner == token).values(
                attempts=a.attempts + 1, lease_until=None, owner=None, updated_at=now, last_error=None))
    return outcomes


def _status_changes(conn: Connection, issue_ids: list[int]) -> StatusChanges | None:
    """Every status change of these issues (any recipient), for ``_held``; None without any."""
    if not issue_ids:
        return None
    n = notifications.c
    timeline: dict[int, list[tuple[dt.datetime, int, str]]] = {}
    for r in conn.execute(select(n.issue_id, n.created_at, n.actor_user_id, n.message)
                          .where(n.type == "status_changed", n.issue_id.in_(sorted(set(issue_ids))))):
        timeline.setdefault(r.issue_id, []).append((r.created_at, r.actor_user_id, r.message))
    return StatusChanges(timeline, [])


class _Contended(Exception):
    """Notifications of a batch were inserted by someone else while it ran."""


def _failed_again(log_id: int, message: str) -> str:
    return f"Dispatch {log_id} failed again: {message.rstrip('.')}."


def _fail_in(conn: Connection, log_id: int, token: str, message: str, now: dt.datetime) -> None:
    """Record a failed retry of one row inside the caller's transaction, and give its lease back."""
    a = nc_dispatch_attempt.c
    conn.execute(update(dispatch_log).where(and_(
        dispatch_log.c.id == log_id, dispatch_log.c.status.in_(("pending", "failed"))))
        .values(status="failed", error_message=message))
    conn.execute(update(nc_dispatch_attempt).where(and_(a.log_id == log_id, a.owner == token))
                 .values(attempts=a.attempts + 1, last_error=message, lease_until=None,
                         owner=None, updated_at=now))


def _after_failure(workspace: Workspace, conn: Connection, ids: list[int], token: str, exc: BaseException,
                   operator: str, action_id: str) -> dict[int, tuple[str, str | None]]:
    """The shared transaction failed: one item alone records its error; several run again alone."""
    if conn.in_transaction():
        conn.rollback()
    if len(ids) == 1:
        message = _error_text(exc)
        _record_retry_failure(conn, ids[0], token, message)
        return {ids[0]: ("failed", _failed_again(ids[0], message))}
    _release(conn, ids, token)
    return {i: retry_items(workspace, [str(i)], operator=operator, action_id=action_id)[0] for i in ids}


def _release(conn: Connection, ids: list[int], token: str) -> None:
    a = nc_dispatch_attempt.c

    def run() -> None:
        with conn.begin():
            conn.execute(update(nc_dispatch_attempt).where(a.log_id.in_(ids), a.owner == token)
                         .values(lease_until=None, owner=None))
    quietly(lambda: with_retry(run))  # else the leases expire by themselves


def _record_retry_failure(conn: Connection, log_id: int, token: str, message: str) -> None:
    def run() -> None:
        if conn.in_transaction():
            conn.rollback()
        with conn.begin():
            _fail_in(conn, log_id, token, message, shared_now(conn))
    quietly(lambda: with_retry(run))  # else the lease expires by itself; the row keeps its earlier state


# --------------------------------------------------------------------------
# What retry and cleanup look up for this source (app.services.by_source)

def _regroup(workspace: Workspace, rows: list[dict[str, Any]], conn: Connection | None) -> list[DuplicateGroup]:
    # Regrouped with the status timeline of the rows' issues read on the cleanup's connection, in its
    # transaction and share-locked: another status change between two rows keeps them apart.
    assert conn is not None  # SQL rows are regrouped in the cleanup's transaction
    return group_dispatch_rows_in(conn, rows, lock=True)


ACTIONS = SourceActions(source=registry.source(SOURCE), retry_item=retry_item, retry_items=retry_items,
                        retry_batch=RETRY_BATCH, regroup=_regroup, archive_table=notifications)
