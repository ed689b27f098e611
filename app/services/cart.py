"""Cart abandonment emails: one email per (user, cart) per 24 hours, whatever the concurrency.

Seed 001 guarded with a singleton and an in-memory set, which holds for one
process only. Here the guard is a row in the cart database, ``nc_cart_claim``
keyed by (user_id, cart_hash):

* the first detector to ``INSERT IGNORE`` the claim owns the email;
* an existing claim is taken over only by a conditional ``UPDATE`` whose
  ``WHERE`` says the previous claim is finished — sent more than 24 h ago (a
  new abandonment), or still "sending"/"failed" after the in-progress window
  (its sender died or failed) — so exactly one of any number of detectors,
  threads, processes and workstations wins;
* the winner writes the ``cart_abandonment_log`` row (email_sent = 0), hands
  the email to the transport, then marks row and claim sent; a send error is
  recorded on the row (error_message) and the claim (failed).

Every step is safe to repeat: a sender that dies leaves a "sending" claim the
next detector (or a retry) takes over after the in-progress window; the
transport gets at most half that window (retries, waits and socket timeouts
included), so a slow send ends before anyone may take its claim over.
"""
from __future__ import annotations

import datetime as dt
import html as html_lib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from sqlalchemy import ColumnElement, and_, case, delete, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from .. import registry
from ..errors import ConsoleError, OperationFailed, UsageError
from ..read.cart_reads import refresh_cart_ids, refresh_cart_keys
from ..read.cart_supersede import SentRow, sent_rows_of, superseded_reason, superseding, superseding_row
from ..read.rules import group_cart_rows
from ..schema import cart_log, cart_users, nc_cart_claim
from ..sqlutil import shared_now
from .audit import operator_identity
from .claims import claim_rows
from .guard import guarded, send_budget
from .hooks import SourceActions
from .mail import Email, MailError, MailTransport, PlainSender, send_within, transport_from_config
from .tokens import lease_token

if TYPE_CHECKING:
    from ..bootstrap import Workspace
    from ..read.models import DuplicateGroup

T = TypeVar("T")
# What a caller that did not get a claim saw: (the database's now, the claim row, None once released).
_Seen: TypeAlias = tuple[dt.datetime, dict[str, Any] | None]

_HASH = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass
class CartOutcome:
    status: str                   # sent | skipped | failed
    log_id: int | None = None
    reason: str | None = None     # why skipped, or the send error
    message_id: str | None = None


# --------------------------------------------------------------------------
# Helpers

def _windows(workspace: Workspace) -> tuple[dt.timedelta, dt.timedelta]:
    th = workspace.config.thresholds
    return (dt.timedelta(minutes=th.cart_in_progress_minutes),
            dt.timedelta(hours=th.duplicate_window_hours))


def _hours(delta: dt.timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} h"


def _db(fn: Callable[[], T]) -> T:
    return guarded("cart", fn)


def _check_args(user_id: int | str, cart_hash: str, cart_value: Decimal | float | str) -> tuple[int, str, Decimal]:
    try:
        uid = int(user_id)
    except (TypeError, ValueError):
        raise UsageError(f"The user id {user_id!r} is not a number.") from None
    if uid <= 0:
        raise UsageError(f"The user id {user_id!r} must be positive.")
    if not isinstance(cart_hash, str) or not _HASH.match(cart_hash):
        raise UsageError(f"The cart hash {cart_hash!r} must be 64 hexadecimal characters (sha256 of the cart).")
    try:
        value = Decimal(str(cart_value)).quantize(Decimal("0.01"))
    except (InvalidOperation, ValueError):
        raise UsageError(f"The cart value {cart_value!r} is not a number.") from None
    if value < 0 or value >= Decimal("100000000"):
        raise UsageError(f"The cart value {cart_value!r} is out of range.")
    return uid, cart_hash.lower(), value


def _claim_key(user_id: int, cart_hash: str) -> ColumnElement[bool]:
    return and_(nc_cart_claim.c.user_id == user_id, nc_cart_claim.c.cart_hash == cart_hash)


def _take_claims(conn: Connection, wanted: list[tuple[int, str, int | None]], token: str, *,
                 in_progress: dt.timedelta, window: dt.timedelta,
                 failed_any_age: bool) -> dict[tuple[int, str], _Seen | None]:
    """Claim each (user, cart) of ``wanted`` = [(user_id, cart_hash, log_id)] for one email.

    Returns, per key, None when this caller holds the claim now, else what it
    saw instead: (now, claim row). ``claim_rows``: one insert claims every
    free key; the keys that had a claim are taken over only where that claim
    is finished (sent beyond the window, or sending/failed past the
    in-progress window), by exactly one of any number of callers.
    """
    c = nc_cart_claim.c

    def finished(now: dt.datetime) -> ColumnElement[bool]:
        failed: ColumnElement[bool] = c.state == "failed"
        if not failed_any_age:
            failed = and_(failed, c.claimed_at < now - in_progress)
        return or_(and_(c.state == "sent", c.sent_at < now - window),
                   and_(c.state == "sending", c.claimed_at < now - in_progress),
                   failed)

    whens = [(_claim_key(uid, chash), log_id) for uid, chash, log_id in wanted if log_id is not None]
    got = claim_rows(
        conn, nc_cart_claim, ("user_id", "cart_hash"),
        lambda now: [{"user_id": uid, "cart_hash": chash, "log_id": log_id, "state": "sending",
                      "claimed_at": now, "sent_at": None, "owner": token} for uid, chash, log_id in wanted],
        owner="owner", token=token, finished=finished, run=_db,
        takeover=lambda now: {"state": "sending", "claimed_at": now, "sent_at": None, "owner": token,
                              "log_id": case(*whens, else_=None) if whens else None})
    out: dict[tuple[int, str], _Seen | None] = {}
    for uid, chash, _ in wanted:
        row = got.others.get((uid, chash))
        out[(uid, chash)] = None if got.holds((uid, chash)) else (got.now, dict(row) if row is not None else None)
    return out


def _take_claim(conn: Connection, user_id: int, cart_hash: str, token: str, *, log_id: int | None,
                in_progress: dt.timedelta, window: dt.timedelta, failed_any_age: bool) -> tuple[bool, _Seen | None]:
    """Claim (user, cart) for one email: (True, None) for exactly one caller, else (False, what it saw)."""
    seen = _take_claims(conn, [(user_id, cart_hash, log_id)], token, in_progress=in_progress, window=window,
                        failed_any_age=failed_any_age)[(user_id, cart_hash)]
    return seen is None, seen


def _claim_reason(seen: _Seen, window: dt.timedelta, in_progress: dt.timedelta) -> str:
    now, row = seen
    if row is None:  # released in the meantime: still someone else's turn
        return "cart email is being handled by another console"
    ref = f"row {row['log_id']}" if row["log_id"] is not None else "no row yet"
    if row["state"] == "sent":
        if row["log_id"] is not None and row["sent_at"] is not None:
            return superseded_reason(SentRow(row["log_id"], row["sent_at"], row["sent_at"]))
        return f"cart already emailed within {_hours(window)} ({ref})"
    age = max(0, int((now - row["claimed_at"]).total_seconds()))
    if row["state"] == "sending":
        return f"cart email already in progress on {row['owner'] or 'another console'} ({ref}, {age} s ago)"
    return (f"cart email failed {age} s ago ({ref}); it is tried again after the "
            f"{in_progress.total_seconds() / 60:g}-minute in-progress window")


def _mark_sent(engine: Engine, user_id: int, cart_hash: str, log_id: int, token: str) -> None:
    def tx() -> None:
        with engine.begin() as conn:
            now = shared_now(conn)
            conn.execute(update(cart_log).where(cart_log.c.id == log_id, cart_log.c.email_sent == 0)
                         .values(email_sent=1, sent_at=now, error_message=None))
            conn.execute(update(nc_cart_claim).where(_claim_key(user_id, cart_hash), nc_cart_claim.c.owner == token)
                         .values(state="sent", sent_at=now, log_id=log_id))
    _db(tx)


def _mark_failed(engine: Engine, user_id: int, cart_hash: str, log_id: int, token: str, error: str) -> None:
    def tx() -> None:
        with engine.begin() as conn:
            conn.execute(update(cart_log).where(cart_log.c.id == log_id, cart_log.c.email_sent == 0)
                         .values(error_message=error[:60000]))
            conn.execute(update(nc_cart_claim).where(_claim_key(user_id, cart_hash), nc_cart_claim.c.owner == token,
                                                     nc_cart_claim.c.state == "sending")
                         .values(state="failed"))
    _db(tx)


def _release(conn: Connection, user_id: int, cart_hash: str, token: str, *, sent_row: SentRow | None = None,
             drop: bool = False) -> None:
    """Give a claim back inside the caller's transaction: as sent (a sent row it did not know of),
    or dropped (nothing to send)."""
    key = and_(_claim_key(user_id, cart_hash), nc_cart_claim.c.owner == token)
    if drop:
        conn.execute(delete(nc_cart_claim).where(key, nc_cart_claim.c.state == "sending"))
    else:
        assert sent_row is not None  # every caller passes drop=True or the sent row
        conn.execute(update(nc_cart_claim).where(key).values(
            state="sent", log_id=sent_row.id, sent_at=sent_row.sent_at or shared_now(conn)))


def cart_email(user: dict[str, Any], user_id: int, cart_hash: str, cart_value: Decimal, log_id: int) -> Email:
    name = html_lib.escape(user["name"] or "there")
    value = f"{Decimal(cart_value):.2f}"
    return Email(
        to=user["email"],
        subject="You left something in your cart",
        html=(f"<p>Hi {name},</p><p>You left items worth <b>{value}</b> in your cart. "
              "They are still waiting for you.</p>"),
        text=f"Hi {user['name']},\n\nYou left items worth {value} in your cart. They are still waiting for you.\n",
        headers={"X-NC-Cart": f"{user_id}:{cart_hash}", "X-NC-Cart-Log-Id": str(log_id)})


def _send(transport: MailTransport | PlainSender, email: Email, budget_seconds: float) -> tuple[str | None, str | None]:
    try:
        return send_within(transport, email, budget_seconds), None
    except MailError as exc:
        return None, exc.message
    except Exception as exc:  # a transport bug must still leave the row marked failed
        return None, f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------
# The production path (what seed 001's detector should have run)

def process_abandoned_cart(workspace: Workspace, user_id: int | str, cart_hash: str,
                           cart_value: Decimal | float | str,
                           transport: MailTransport | PlainSender | None = None) -> CartOutcome:
    """Email the user about an abandoned cart unless this cart got one within 24 h."""
    uid, chash, value = _check_args(user_id, cart_hash, cart_value)
    engine = workspace.engine("cart")
    in_progress, window = _windows(workspace)
    token = lease_token(operator_identity())

    with engine.connect() as conn:  # one connection for claim and log row: fewer round trips
        claimed = time.monotonic()
        won, seen = _take_claim(conn, uid, chash, token, log_id=None, in_progress=in_progress,
                                window=window, failed_any_age=False)
        if not won:
            assert seen is not None  # a caller without the claim saw someone else's
            return CartOutcome("skipped", reason=_claim_reason(seen, window, in_progress))

        def log_tx() -> tuple[dict[str, Any] | None, int | None, SentRow | None]:
            with conn.begin():
                user = conn.execute(select(cart_users.c.email, cart_users.c.name)
                                    .where(cart_users.c.id == uid)).mappings().first()
                if user is None:
                    _release(conn, uid, chash, token, drop=True)
                    return None, None, None
                now = shared_now(conn)
                sent = superseding_row(conn, uid, chash, now, now, window)
                if sent is not None:
                    _release(conn, uid, chash, token, sent_row=sent)
                    return dict(user), None, sent
                pk = conn.execute(insert(cart_log).values(
                    user_id=uid, cart_hash=chash, cart_value=value, email_sent=0, created_at=now)
                ).inserted_primary_key
                assert pk is not None  # a single-row INSERT always reports its primary key
                log_id = pk[0]
                conn.execute(update(nc_cart_claim).where(_claim_key(uid, chash), nc_cart_claim.c.owner == token)
                             .values(log_id=log_id))
                return dict(user), int(log_id), None

        user, log_id, sent = _db(log_tx)
    if user is None:
        raise OperationFailed(f"User {uid} does not exist in the cart database.")
    if sent is not None:
        return CartOutcome("skipped", log_id=sent.id, reason=superseded_reason(sent))
    assert log_id is not None  # log_tx inserted the row: the user exists and no sent row supersedes it

    transport = transport or transport_from_config(workspace)
    message_id, error = _send(transport, cart_email(user, uid, chash, value, log_id),
                              send_budget(in_progress, claimed))
    if error is not None:
        _mark_failed(engine, uid, chash, log_id, token, error)
        return CartOutcome("failed", log_id=log_id, reason=error)
    _mark_sent(engine, uid, chash, log_id, token)
    return CartOutcome("sent", log_id=log_id, message_id=message_id)


# --------------------------------------------------------------------------
# Admin retry (app.services.retry hands it chunks of RETRY_BATCH items)

RETRY_BATCH = 25


def retry_item(workspace: Workspace, item_id: str, *, operator: str, action_id: str,
               transport: MailTransport | PlainSender | None = None) -> tuple[str, str | None]:
    """Send the email of a failed (or stuck) cart_abandonment_log row, exactly once."""
    [(outcome, detail)] = retry_items(workspace, [item_id], operator=operator, action_id=action_id,
                                      transport=transport)
    if outcome == "failed":
        assert detail is not None  # a failure always carries its sentence
        raise OperationFailed(detail)
    return outcome, detail


def retry_items(workspace: Workspace, item_ids: list[str], *, operator: str, action_id: str,
                transport: MailTransport | PlainSender | None = None) -> list[tuple[str, str | None]]:
    """Send the emails of failed (or stuck) rows, each exactly once, with its own claim and outcome.

    The rows of a chunk are read, judged (sent, in progress, superseded, user
    gone) and claimed together, and checked again once claimed; then each
    email goes out on its own and its row and claim are marked at once, so a
    crash leaves at most the email in flight unmarked. A second row of a cart
    already in the chunk waits for the first and is judged after it (it is
    then superseded). Returns one (outcome, detail) per id, in order; a
    failure is ("failed", sentence).
    """
    ids = [registry.source("cart").parse_item_id(i) for i in item_ids]
    engine = workspace.engine("cart")
    in_progress, window = _windows(workspace)
    token = lease_token(operator, action_id)
    outcomes: dict[int, tuple[str, str | None]] = {}
    later: list[int] = []

    with engine.connect() as conn:
        def read() -> tuple[dt.datetime, dict[int, dict[str, Any]], dict[tuple[int, str], list[SentRow]],
                            dict[int, dict[str, Any]]]:
            with conn.begin():
                now = shared_now(conn)
                rows = {r["id"]: dict(r) for r in conn.execute(
                    select(cart_log).where(cart_log.c.id.in_(ids))).mappings()}
                if not rows:
                    return now, rows, {}, {}
                keys = sorted({(r["user_id"], r["cart_hash"]) for r in rows.values()})
                sent = sent_rows_of(conn, keys, min(r["created_at"] for r in rows.values()), now, window)
                users = {u["id"]: dict(u) for u in conn.execute(
                    select(cart_users.c.id, cart_users.c.email, cart_users.c.name)
                    .where(cart_users.c.id.in_(sorted({k[0] for k in keys})))).mappings()}
                return now, rows, sent, users

        now, rows, sent, users = _db(read)
        ready: dict[int, dict[str, Any]] = {}
        seen_keys: set[tuple[int, str]] = set()
        for log_id in ids:
            row = rows.get(log_id)
            if row is None:
                outcomes[log_id] = ("failed", f"Cart row {log_id} does not exist.")
                continue
            key = (row["user_id"], row["cart_hash"])
            by = superseding(sent.get(key, ()), row["created_at"], now, window)
            if row["email_sent"]:
                outcomes[log_id] = ("skipped", f"cart row {log_id} was already sent")
            elif row["created_at"] > now - in_progress:
                age = max(0, int((now - row["created_at"]).total_seconds()))
                outcomes[log_id] = ("skipped", f"cart row {log_id} is still in progress (created {age} s ago)")
            elif by is not None:
                outcomes[log_id] = ("skipped", superseded_reason(by))
            elif row["user_id"] not in users:
                outcomes[log_id] = ("failed", f"Cart row {log_id} names user {row['user_id']}, who no longer exists.")
            elif key in seen_keys:
                later.append(log_id)
            else:
                seen_keys.add(key)
                ready[log_id] = row

        claimed = time.monotonic()
        if ready:
            seen = _take_claims(conn, [(r["user_id"], r["cart_hash"], i) for i, r in ready.items()], token,
                                in_progress=in_progress, window=window, failed_any_age=True)
            for log_id, row in list(ready.items()):
                other = seen[(row["user_id"], row["cart_hash"])]
                if other is not None:
                    outcomes[log_id] = ("skipped", _claim_reason(other, window, in_progress))
                    del ready[log_id]

        # Holding the claims: check again, in the database, what may have changed since the read.
        def recheck() -> dict[int, tuple[str, str | None]]:
            with conn.begin():
                current = dict(conn.execute(select(cart_log.c.id, cart_log.c.email_sent)
                                            .where(cart_log.c.id.in_(list(ready)))).all())
                now2 = shared_now(conn)
                keys = sorted({(r["user_id"], r["cart_hash"]) for r in ready.values()})
                sent2 = sent_rows_of(conn, keys, min(r["created_at"] for r in ready.values()), now2, window)
                verdicts: dict[int, tuple[str, str | None]] = {}
                for log_id, row in ready.items():
                    uid, chash = row["user_id"], row["cart_hash"]
                    by2 = superseding(sent2.get((uid, chash), ()), row["created_at"], now2, window)
                    if by2 is not None:
                        _release(conn, uid, chash, token, sent_row=by2)
                        verdicts[log_id] = ("skipped", superseded_reason(by2))
                    elif current.get(log_id):
                        _release(conn, uid, chash, token, sent_row=SentRow(log_id, row["created_at"], None))
                        verdicts[log_id] = ("skipped", f"cart row {log_id} was already sent")
                    elif log_id not in current:
                        _release(conn, uid, chash, token, drop=True)
                        verdicts[log_id] = ("failed", f"Cart row {log_id} was removed while it was being retried.")
                return verdicts

        if ready:
            for log_id, verdict in _db(recheck).items():
                outcomes[log_id] = verdict
                del ready[log_id]

        if ready:
            transport = transport or transport_from_config(workspace)
            for log_id, row in ready.items():
                uid, chash = row["user_id"], row["cart_hash"]
                # One item's database error never stops the chunk: each email keeps its own outcome.
                try:
                    if time.monotonic() - claimed > in_progress.total_seconds() / 4:
                        # Slow sends before this one: renew the claim so this send gets its whole budget.
                        if not _renew(conn, uid, chash, token):
                            outcomes[log_id] = ("skipped", "cart email is being handled by another console")
                            continue
                        claimed = time.monotonic()
                except ConsoleError as exc:
                    outcomes[log_id] = ("failed", exc.message)
                    continue
                _message_id, error = _send(transport, cart_email(users[uid], uid, chash, row["cart_value"], log_id),
                                           send_budget(in_progress, claimed))
                try:
                    if error is not None:
                        _mark_failed(engine, uid, chash, log_id, token, error)
                        outcomes[log_id] = ("failed", f"The email of cart row {log_id} could not be sent: {error}")
                    else:
                        _mark_sent(engine, uid, chash, log_id, token)
                        outcomes[log_id] = ("retried", None)
                except ConsoleError as exc:
                    # The claim stays "sending": nobody sends again before the in-progress window ends.
                    done = "was sent" if error is None else "could not be sent"
                    outcomes[log_id] = ("failed", f"The email of cart row {log_id} {done}, but recording it failed: "
                                                  f"{exc.message}")

    for log_id in later:  # a second row of a cart this chunk emailed: judged now, alone
        outcomes[log_id] = _alone(workspace, log_id, operator=operator, action_id=action_id, transport=transport)
    return [outcomes[i] for i in ids]


def _alone(workspace: Workspace, log_id: int, *, operator: str, action_id: str,
           transport: MailTransport | PlainSender | None) -> tuple[str, str | None]:
    try:
        return retry_item(workspace, str(log_id), operator=operator, action_id=action_id, transport=transport)
    except OperationFailed as exc:
        return "failed", exc.message


def _renew(conn: Connection, user_id: int, cart_hash: str, token: str) -> bool:
    def tx() -> bool:
        with conn.begin():
            return conn.execute(update(nc_cart_claim).where(
                _claim_key(user_id, cart_hash), nc_cart_claim.c.owner == token, nc_cart_claim.c.state == "sending")
                .values(claimed_at=shared_now(conn))).rowcount == 1
    return _db(tx)


# --------------------------------------------------------------------------
# What retry and cleanup look up for this source (app.services.by_source)

def _regroup(workspace: Workspace, rows: list[dict[str, Any]], conn: Connection | None) -> list[DuplicateGroup]:
    return group_cart_rows(rows, workspace.config.thresholds.duplicate_window_hours)


ACTIONS = SourceActions(
    source=registry.source("cart"), retry_item=retry_item, retry_items=retry_items, retry_batch=RETRY_BATCH,
    regroup=_regroup, archive_table=cart_log,
    # The console's cart member index follows what a cleanup archived and an undo restored.
    on_archived=lambda conn, rows: refresh_cart_keys(conn, {(r["user_id"], r["cart_hash"]) for r in rows}),
    on_restored=lambda conn, ids: refresh_cart_ids(conn, ids))
