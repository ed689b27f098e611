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
import uuid
from dataclasses import dataclass, field

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ..errors import ConsoleError, OperationFailed, UsageError
from ..schema import dispatch_log, dispatch_users, issue_watchers, issues, nc_dispatch_attempt, notifications
from ..sources import describe_db_error
from ..sqlutil import backend, db_now, insert_ignore, with_retry

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


def _positive_id(name: str, value, maximum: int = BIGINT_MAX) -> int:
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

def dispatch_comment_added(workspace, issue_id: int, comment_id: int, actor_user_id: int) -> DispatchResult:
    """Notify the issue's people of a new comment, once per comment whatever the concurrency."""
    return dispatch(workspace, comment_added_event(issue_id, comment_id, actor_user_id))


def dispatch_status_changed(workspace, issue_id: int, actor_user_id: int, new_status: str,
                            event_ref: str | None = None) -> DispatchResult:
    """Notify the issue's people of a status change.

    ``event_ref`` (e.g. the id of the issue's history entry) tells two changes
    to the same status by the same person apart; without it they share a key
    and the second is treated as a repeat of the first.
    """
    return dispatch(workspace, status_changed_event(issue_id, actor_user_id, new_status, event_ref))


def dispatch(workspace, event: DispatchEvent) -> DispatchResult:
    key = event.dispatch_key
    engine = workspace.engine(SOURCE)
    with engine.connect() as conn:
        try:
            log_id = with_retry(lambda: _claim(conn, event, key))
        except (DBAPIError, SQLAlchemyError) as exc:
            raise OperationFailed(describe_db_error(SOURCE, exc)) from None
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


def _claim(conn, event: DispatchEvent, key: str) -> int | None:
    """Insert the pending log row; the id when this caller won, None when the key exists."""
    row = {"dispatch_id": key, "dispatch_type": event.type, "issue_id": event.issue_id,
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
            got = conn.execute(pg_insert(dispatch_log).on_conflict_do_nothing()
                               .returning(dispatch_log.c.id), row).scalar()
            return got
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert
        result = conn.execute(sqlite_insert(dispatch_log).on_conflict_do_nothing(), row)
        return result.lastrowid if result.rowcount == 1 else None


def _db_clock(b: str):
    from sqlalchemy import func
    return func.utc_timestamp(3) if b in ("mysql", "mariadb") else func.current_timestamp()


def recipients_of(conn, event: DispatchEvent) -> tuple[list[int], str]:
    """Reporter, assignee and watchers minus the actor, each once; and the message."""
    actor_name = (select(dispatch_users.c.display_name)
                  .where(dispatch_users.c.id == event.actor_user_id).scalar_subquery())
    issue = conn.execute(select(issues.c.issue_key, issues.c.title, issues.c.reporter_id,
                                issues.c.assignee_id, actor_name.label("actor_name"))
                         .where(issues.c.id == event.issue_id)).first()
    if issue is None:
        raise _DeliveryError(f"Issue {event.issue_id} does not exist.")
    watchers = conn.execute(select(issue_watchers.c.user_id)
                            .where(issue_watchers.c.issue_id == event.issue_id)).scalars().all()
    people = {issue.reporter_id, issue.assignee_id, *watchers}
    people.discard(None)
    people.discard(event.actor_user_id)
    return sorted(people), event.message(issue.issue_key, issue.title, issue.actor_name)


def _notification_rows(event: DispatchEvent, key: str, users, message: str, now) -> list[dict]:
    return [{"user_id": u, "type": event.type, "issue_id": event.issue_id, "comment_id": event.comment_id,
             "actor_user_id": event.actor_user_id, "message": message, "is_read": 0,
             "created_at": now, "dispatch_id": key} for u in users]


def _deliver_once(conn, event: DispatchEvent, key: str) -> list[int]:
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


def _mark_failed(conn, key: str, message: str) -> None:
    """Mark a pending row failed, in its own short transaction (the delivery rolled back)."""
    def run():
        if conn.in_transaction():
            conn.rollback()
        with conn.begin():
            conn.execute(update(dispatch_log)
                         .where(and_(dispatch_log.c.dispatch_id == key, dispatch_log.c.status == "pending"))
                         .values(status="failed", error_message=message))
    try:
        with_retry(run)
    except (DBAPIError, SQLAlchemyError):
        # The row stays pending and shows up as stuck after the threshold: retry picks it up.
        pass


# --------------------------------------------------------------------------
# Retry (per-source contract of app.services.retry)

def _parse_log_id(item_id) -> int:
    text = str(item_id).strip()
    if not text.isdigit() or int(text) <= 0:
        raise UsageError(f"The dispatch id {item_id!r} is not a log row id (a positive integer).")
    return int(text)


def _verdict(row, now: dt.datetime, stuck_after: dt.timedelta) -> str | None:
    """Why a log row must not be retried now, or None when it may be."""
    if row["status"] == "completed":
        return SKIP_COMPLETED
    if row["status"] == "pending" and row["created_at"] is not None and row["created_at"] >= now - stuck_after:
        return SKIP_IN_PROGRESS
    return None


def _event_of(row) -> DispatchEvent:
    """The event a log row stands for (the status of a status change is not in the log)."""
    return DispatchEvent(row["dispatch_type"], int(row["issue_id"]), int(row["actor_user_id"]),
                         comment_id=int(row["comment_id"]) if row["comment_id"] is not None else None,
                         new_status=_status_from_key(row["dispatch_id"]))


def _status_from_key(key: str) -> str | None:
    parts = key.split(":")
    if len(parts) >= 4 and parts[0] == "status_changed":
        return parts[3]
    return None


def _holders(conn, event: DispatchEvent, users: list[int], dispatch_id: str, message: str) -> set[int]:
    """Recipients that already hold a notification of this event.

    Those holding one under this very dispatch id, plus those holding one of
    the same semantic event under another id (the seed's timestamped keys,
    legacy NULL ids). A status change is the same event only with the same
    new status, which the notification names in its message: two changes by
    one person on one issue are two events. When the log row does not tell
    the new status (the seed's keys), the coarser semantic match is all there is.
    """
    if not users:
        return set()
    n = notifications.c
    held = set(conn.execute(select(n.user_id).distinct().where(
        n.dispatch_id == dispatch_id, n.user_id.in_(users))).scalars())
    same_comment = n.comment_id.is_(None) if event.comment_id is None else n.comment_id == event.comment_id
    conditions = [n.issue_id == event.issue_id, same_comment, n.user_id.in_(users), n.type == event.type,
                  n.actor_user_id == event.actor_user_id]
    if event.type == "status_changed" and event.new_status is not None:
        conditions.append(n.message == message)
    held |= set(conn.execute(select(n.user_id).distinct().where(and_(*conditions))).scalars())
    return held


def retry_item(workspace, item_id: str, *, operator: str, action_id: str) -> tuple[str, str | None]:
    """Re-run one failed or stuck dispatch; exactly one of many concurrent retriers wins."""
    log_id = _parse_log_id(item_id)
    engine = workspace.engine(SOURCE)
    stuck_after = dt.timedelta(minutes=workspace.config.thresholds.dispatch_stuck_minutes)
    token = f"{operator} {action_id} {uuid.uuid4().hex[:12]}"[-255:]
    a = nc_dispatch_attempt.c
    with engine.connect() as conn:
        # 1. Look, then take the lease (each step its own short transaction: no lock upgrades).
        def look():
            with conn.begin():
                now = db_now(conn)
                row = conn.execute(select(dispatch_log).where(dispatch_log.c.id == log_id)).mappings().first()
            return row, now
        row, now = with_retry(look)
        if row is None:
            raise OperationFailed(f"Dispatch log row {log_id} does not exist.")
        reason = _verdict(row, now, stuck_after)
        if reason:
            return "skipped", reason

        def lease() -> bool:
            with conn.begin():
                if insert_ignore(conn, nc_dispatch_attempt, {
                        "log_id": log_id, "attempts": 0, "lease_until": now + LEASE, "owner": token,
                        "updated_at": now}):
                    return True
            with conn.begin():
                return conn.execute(update(nc_dispatch_attempt).where(and_(
                    a.log_id == log_id, or_(a.lease_until.is_(None), a.lease_until < now)))
                    .values(lease_until=now + LEASE, owner=token, updated_at=now)).rowcount == 1
        if not with_retry(lease):
            return "skipped", SKIP_LEASED

        # 2. The work: lock the log row, re-check, deliver what is missing, complete — one transaction.
        def work() -> tuple[str, str | None]:
            with conn.begin():
                now2 = db_now(conn)
                current = conn.execute(select(dispatch_log).where(dispatch_log.c.id == log_id)
                                       .with_for_update()).mappings().one()
                why = _verdict(current, now2, stuck_after)
                held = conn.execute(update(nc_dispatch_attempt).where(and_(
                    a.log_id == log_id, a.owner == token)).values(
                    attempts=a.attempts + (0 if why else 1), lease_until=None, owner=None,
                    updated_at=now2, **({} if why else {"last_error": None}))).rowcount
                if not held:
                    return "skipped", SKIP_LEASED
                if why:
                    return "skipped", why
                event = _event_of(current)
                recipients, message = recipients_of(conn, event)
                missing = sorted(set(recipients) - _holders(conn, event, recipients,
                                                            current["dispatch_id"], message))
                inserted = 0
                if missing:
                    inserted = insert_ignore(conn, notifications, _notification_rows(
                        event, current["dispatch_id"], missing, message, now2))
                conn.execute(update(dispatch_log).where(dispatch_log.c.id == log_id).values(
                    status="completed", recipients_count=len(recipients), completed_at=now2,
                    error_message=None))
            if recipients and not inserted:
                return "skipped", SKIP_HELD
            return "retried", None

        try:
            return with_retry(work)
        except Exception as exc:
            message = _error_text(exc)
            _record_retry_failure(conn, log_id, token, message)
            raise OperationFailed(f"Dispatch {log_id} failed again: {message.rstrip('.')}.") from None


def _record_retry_failure(conn, log_id: int, token: str, message: str) -> None:
    a = nc_dispatch_attempt.c

    def run():
        if conn.in_transaction():
            conn.rollback()
        with conn.begin():
            now = db_now(conn)
            conn.execute(update(dispatch_log).where(and_(
                dispatch_log.c.id == log_id, dispatch_log.c.status.in_(("pending", "failed"))))
                .values(status="failed", error_message=message))
            conn.execute(update(nc_dispatch_attempt).where(and_(a.log_id == log_id, a.owner == token))
                         .values(attempts=a.attempts + 1, last_error=message, lease_until=None,
                                 owner=None, updated_at=now))
    try:
        with_retry(run)
    except (DBAPIError, SQLAlchemyError):
        pass  # the lease expires by itself; the row keeps its earlier state
