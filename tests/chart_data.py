"""Rows the chart tests count: settled, failed, stuck and duplicated items a few minutes back, with
random latencies whose exact values the tests keep."""
from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict

from sqlalchemy import insert

from app.schema import cart_log, dispatch_log, notifications
from app.sqlutil import db_now
from tests.helpers import cart_hash, seed_people

# Rows sit 5 to 50 minutes back: inside a 1-hour window however the minute turns while a test runs.
OLDEST_MIN, NEWEST_MIN = 50, 5


def _when(rng: random.Random, now: dt.datetime) -> dt.datetime:
    return (now - dt.timedelta(minutes=rng.uniform(NEWEST_MIN, OLDEST_MIN))).replace(microsecond=0)


def seed_dispatch(engine, n: int = 150, seed: int = 7) -> dict[str, list[tuple[dt.datetime, float]]]:
    """Completed dispatches of every type, 6 failed, 3 stuck, 2 duplicate notifications.

    Returns {dispatch_type: [(created_at, latency ms)]} of the completed ones."""
    rng = random.Random(seed)
    seed_people(engine, issue_ids=(1,), reporter=1, assignee=2, watchers=(3,))
    out: dict[str, list[tuple[dt.datetime, float]]] = defaultdict(list)
    with engine.begin() as conn:
        now = db_now(conn)
        rows = []
        for i in range(n):
            kind = ("comment_added", "status_changed", "other")[i % 3]
            created = _when(rng, now)
            ms = float(round(rng.lognormvariate(5.5, 1.0)))   # whole ms: TIMESTAMP(3) keeps no more
            rows.append({"dispatch_id": f"{kind}:1:{i}:4", "dispatch_type": kind, "issue_id": 1, "comment_id": i,
                         "actor_user_id": 4, "status": "completed", "created_at": created,
                         "completed_at": created + dt.timedelta(milliseconds=ms), "error_message": None})
            out[kind].append((created, ms))
        for i in range(6):
            rows.append({"dispatch_id": f"comment_added:1:f{i}:4", "dispatch_type": "comment_added", "issue_id": 1,
                         "comment_id": 1000 + i, "actor_user_id": 4, "status": "failed", "created_at": _when(rng, now),
                         "completed_at": None, "error_message": "Deadlock found when trying to get lock"})
        for i in range(3):
            rows.append({"dispatch_id": f"status_changed:1:s{i}:4", "dispatch_type": "status_changed", "issue_id": 1,
                         "comment_id": None, "actor_user_id": 4, "status": "pending",
                         "created_at": now - dt.timedelta(minutes=30 + i), "completed_at": None,
                         "error_message": None})
        conn.execute(insert(dispatch_log), rows)
        t = now - dt.timedelta(minutes=20)
        conn.execute(insert(notifications), [
            {"user_id": 3, "type": "comment_added", "issue_id": 1, "comment_id": 7, "actor_user_id": 4,
             "message": "comment #7", "created_at": t + dt.timedelta(seconds=k), "dispatch_id": f"comment_added:1:7:4#{k}"}
            for k in range(3)])
    return dict(out)


def seed_cart(engine, n: int = 90, seed: int = 11) -> list[tuple[dt.datetime, float]]:
    """Sent cart emails, 5 failed and 2 stuck rows, and 3 carts emailed twice. Returns [(created_at, ms)]."""
    rng = random.Random(seed)
    out: list[tuple[dt.datetime, float]] = []
    with engine.begin() as conn:
        now = db_now(conn)
        rows = []
        for i in range(n):
            created = _when(rng, now)
            ms = float(round(rng.uniform(200, 9000)))
            rows.append({"user_id": 100 + i, "cart_hash": cart_hash(f"c{i}"), "cart_value": "12.00", "email_sent": 1,
                         "created_at": created, "sent_at": created + dt.timedelta(milliseconds=ms),
                         "error_message": None})
            out.append((created, ms))
        for i in range(3):      # the first three carts: a second email minutes later
            created = rows[i]["created_at"] + dt.timedelta(minutes=1)
            if created > now - dt.timedelta(minutes=NEWEST_MIN):
                created = rows[i]["created_at"] - dt.timedelta(minutes=1)
            rows.append({"user_id": 100 + i, "cart_hash": cart_hash(f"c{i}"), "cart_value": "12.00", "email_sent": 1,
                         "created_at": created, "sent_at": created + dt.timedelta(milliseconds=500),
                         "error_message": None})
            out.append((created, 500.0))
        for i in range(5):
            rows.append({"user_id": 900 + i, "cart_hash": cart_hash(f"f{i}"), "cart_value": "9.00", "email_sent": 0,
                         "created_at": _when(rng, now), "sent_at": None, "error_message": "SMTP 421 try again later"})
        for i in range(2):
            rows.append({"user_id": 950 + i, "cart_hash": cart_hash(f"s{i}"), "cart_value": "9.00", "email_sent": 0,
                         "created_at": now - dt.timedelta(minutes=15 + i), "sent_at": None, "error_message": None})
        conn.execute(insert(cart_log), rows)
    return out


def seed_orders(store, n: int = 40, seed: int = 5) -> dict[str, list[tuple[dt.datetime, float]]]:
    """Orders with pickup (and some delivery) images and their emails; 2 missed, 2 emailed twice.

    Returns {stage: [(first image at, latency ms)]} of the emailed stages."""
    rng = random.Random(seed)
    now = store.now().replace(microsecond=0)
    out: dict[str, list[tuple[dt.datetime, float]]] = defaultdict(list)
    orders, emails = [], []
    for i in range(n):
        oid = 5000 + i
        first = (now - dt.timedelta(minutes=rng.uniform(15, OLDEST_MIN))).replace(microsecond=0)
        images = {"pickup": [{"filename": "p1.jpg", "uploaded_at": first},
                             {"filename": "p2.jpg", "uploaded_at": first + dt.timedelta(seconds=20)}], "delivery": []}
        status = "PICKUP_IMAGES_ADDED"
        if i < 2:       # missed: images older than the grace period, no email
            orders.append({"id": oid, "status": status, "images": images, "created_at": first, "updated_at": first})
            continue
        ms = float(round(rng.uniform(150, 3000)))
        emails.append({"order_id": oid, "event": "pickup_images_added", "sent_at": first + dt.timedelta(milliseconds=ms)})
        out["pickup"].append((first, ms))
        if i < 4:       # the seed-000 race: a second email for the same stage
            emails.append({"order_id": oid, "event": "pickup_images_added",
                           "sent_at": first + dt.timedelta(milliseconds=ms + 300)})
        updated = first + dt.timedelta(seconds=20)
        if i % 3 == 0:
            d_first = first + dt.timedelta(minutes=5)
            images["delivery"] = [{"filename": "d1.jpg", "uploaded_at": d_first}]
            d_ms = float(round(rng.uniform(150, 3000)))
            emails.append({"order_id": oid, "event": "delivery_images_added",
                           "sent_at": d_first + dt.timedelta(milliseconds=d_ms)})
            out["delivery"].append((d_first, d_ms))
            status, updated = "DELIVERY_IMAGES_ADDED", d_first
        orders.append({"id": oid, "status": status, "images": images, "created_at": first - dt.timedelta(minutes=5),
                       "updated_at": updated})
    store.db["orders"].insert_many(orders)
    store.db["email_log"].insert_many(emails)
    return dict(out)
