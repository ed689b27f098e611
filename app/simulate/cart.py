"""Simulator driver for the cart database (abandonment emails, seed 001).

An event is one abandoned cart; ``ATTEMPTS_PER_EVENT`` detectors notice it
at the same moment (several app workers, a scheduler that fired twice).

* ``naive`` runs seed 001's detector as it actually ran: no shared guard —
  every worker is its own detector instance with its own ``processed_carts``
  set (what the singleton was meant to prevent, and what any second process
  or host has anyway) — checking the log for a sent or in-progress row and
  then inserting its own: two detectors that check before either inserts
  both send.
* ``guarded`` calls the production path, ``app.services.cart.process_abandoned_cart``.

Both modes do the same work between noticing the cart and writing
(``WORK_SECONDS``, computing the cart's contents and value), so their
throughputs compare fairly. Mail goes to an in-memory counting transport;
``count`` reads the outcome from the database: ``produced`` is the emails
sent (rows with email_sent = 1) on the run's users, ``duplicates`` those
beyond one per (user, cart).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import random
import time
import uuid
from decimal import Decimal

from sqlalchemy import func, insert, select, update

from ..errors import OperationFailed
from ..schema import cart_log, cart_users
from ..services import cart as service
from ..services.mail import MailError, MemoryTransport
from ..sqlutil import db_now

SOURCE = "cart"  # the source this driver produces traffic for

ATTEMPTS_PER_EVENT = 3
USERS_PER_RUN = 24
WORK_SECONDS = 0.001

# The simulator never sends real mail: it counts what would go out, per process.
TRANSPORT = MemoryTransport(keep=False)


def prepare(workspace, events: int, seed: int) -> dict:
    """Create the run's users and one abandoned cart per event."""
    rng = random.Random(seed)
    token = uuid.uuid4().hex[:10]
    n_users = max(1, min(USERS_PER_RUN, events))
    engine = workspace.engine("cart")
    with engine.begin() as conn:
        emails = [f"sim-{token}-{n}@simulator.invalid" for n in range(n_users)]
        conn.execute(insert(cart_users), [{"email": e, "name": f"Sim Shopper {n}"} for n, e in enumerate(emails)])
        users = sorted(conn.execute(select(cart_users.c.id).where(cart_users.c.email.in_(emails))).scalars())
    carts = []
    for e in range(events):
        items = f"{token}:{e}:" + ",".join(str(rng.randrange(10_000)) for _ in range(rng.randint(1, 5)))
        carts.append((users[e % len(users)], hashlib.sha256(items.encode()).hexdigest(),
                      f"{rng.uniform(5, 2000):.2f}"))
    return {"token": token, "users": users, "carts": carts}


def run_attempt(workspace, plan: dict, event: int, attempt: int, mode: str) -> None:
    if mode == "naive":
        naive_attempt(workspace, plan, event, attempt)
    else:
        guarded_attempt(workspace, plan, event, attempt)


def guarded_attempt(workspace, plan: dict, event: int, attempt: int) -> None:
    user_id, cart_hash, value = plan["carts"][event]
    time.sleep(WORK_SECONDS)
    out = service.process_abandoned_cart(workspace, user_id, cart_hash, value, transport=TRANSPORT)
    if out.status == "failed":
        raise OperationFailed(out.reason or "The cart email failed.")


class SeedDetector:
    """Seed 001's CartAbandonmentDetector, one instance per worker (no shared state)."""

    def __init__(self, workspace, transport):
        self.workspace = workspace
        self.transport = transport
        self.processed_carts: set[str] = set()

    def process(self, user_id: int, cart_hash: str, value, between=None) -> bool:
        key = f"{user_id}_{cart_hash}"
        if key in self.processed_carts:
            return False
        engine = self.workspace.engine("cart")
        in_progress = dt.timedelta(minutes=self.workspace.config.thresholds.cart_in_progress_minutes)
        with engine.connect() as conn:
            now = db_now(conn)
            # "Check for ANY log entry (sent or pending) within 24 hours"
            existing = conn.execute(
                select(cart_log.c.id, cart_log.c.email_sent, cart_log.c.created_at)
                .where(cart_log.c.user_id == user_id, cart_log.c.cart_hash == cart_hash,
                       cart_log.c.created_at > now - dt.timedelta(hours=24))
                .order_by(cart_log.c.created_at.desc()).limit(1)).mappings().first()
            conn.rollback()
        if existing and existing["email_sent"]:
            return False
        if existing and now - existing["created_at"] < in_progress:
            return False
        # "Mark as processed IMMEDIATELY (before logging or sending)" — in this instance's set only.
        self.processed_carts.add(key)
        if between is not None:
            between()
        else:
            time.sleep(WORK_SECONDS)
        with engine.begin() as conn:
            log_id = conn.execute(insert(cart_log).values(
                user_id=user_id, cart_hash=cart_hash, cart_value=Decimal(value), email_sent=0,
                created_at=db_now(conn))).inserted_primary_key[0]
        try:
            self.transport.send(service.cart_email({"email": f"user{user_id}@simulator.invalid", "name": "Shopper"},
                                                   user_id, cart_hash, Decimal(value), log_id))
        except MailError as exc:
            self.processed_carts.discard(key)
            with engine.begin() as conn:
                conn.execute(update(cart_log).where(cart_log.c.id == log_id).values(error_message=exc.message))
            raise
        with engine.begin() as conn:
            conn.execute(update(cart_log).where(cart_log.c.id == log_id)
                         .values(email_sent=1, sent_at=db_now(conn)))
        return True


def naive_attempt(workspace, plan: dict, event: int, attempt: int, between=None) -> None:
    """One detector noticing the cart, as seed 001 ran it. ``between`` runs between check and insert."""
    user_id, cart_hash, value = plan["carts"][event]
    SeedDetector(workspace, TRANSPORT).process(user_id, cart_hash, value, between=between)


def count(workspace, plan: dict) -> tuple[int, int]:
    """(emails sent, duplicates among them) on the run's users."""
    c = cart_log.c
    on_run = (c.user_id.in_(plan["users"])) & (c.email_sent == 1)
    with workspace.engine("cart").connect() as conn:
        produced = conn.execute(select(func.count()).select_from(cart_log).where(on_run)).scalar()
        carts = conn.execute(select(func.count()).select_from(
            select(c.user_id).where(on_run).group_by(c.user_id, c.cart_hash).subquery())).scalar()
    return int(produced), int(produced - carts)
