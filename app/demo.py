"""The embedded demo workspace: three seeded databases that need no server.

``ensure_demo_workspace()`` creates, once, under ``data_dir()/demo``:

* ``cart.db`` and ``dispatch.db``: SQLite files with the production schemas
  and the console's own tables (``db upgrade``);
* ``orders.json``: the order store, a mongomock database loaded from and
  checkpointed to this file by ``app.sources.open_order_store`` (so what the
  console changes survives a restart);
* ``demo.json``: the marker (format version, creation time, row counts).
  While it names the current version the workspace is reused as it is.

The data is seeded deterministically (fixed random seed, timestamps relative
to the moment of creation) over the last seven days and holds every case the
console looks for: sent/failed/in-progress cart emails with duplicates inside
24 h and re-abandonments after it; completed, failed and stuck dispatches with
a spread of latencies, semantic duplicate notifications under new dispatch ids
and legacy rows without one; orders at every stage, legacy single-image
documents, duplicate and missed admin emails.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from decimal import Decimal
from operator import itemgetter
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import insert

from .config import Config, MailConfig, SourceConfig, Thresholds, data_dir
from .errors import OperationFailed
from .registry import SQL_NAMES
from .schema import cart_log, cart_users, dispatch_log, dispatch_users, issue_watchers, issues, notifications
from .schema_setup import create_production_schema, upgrade_order_store, upgrade_sql_source
from .sources import open_order_store, sql_engine
from .sqlutil import utcnow

DEMO_VERSION = 1
SEED = 20251208
DAYS = 7
MARKER = "demo.json"

FIRST = ["Aino", "Ben", "Chloe", "Daniel", "Elif", "Farah", "Gustav", "Hana", "Ivan", "Julia",
         "Kofi", "Lena", "Mateo", "Nora", "Oskar", "Priya", "Quentin", "Rosa", "Sami", "Tara",
         "Umar", "Vera", "Wei", "Ximena", "Yusuf", "Zoe", "Eero", "Mia", "Leo", "Sofia"]
LAST = ["Virtanen", "Okafor", "Martin", "Schmidt", "Yilmaz", "Khan", "Lindqvist", "Sato", "Petrov",
        "Rossi", "Mensah", "Novak", "Garcia", "Berg", "Nieminen", "Patel", "Dubois", "Silva", "Laine",
        "Kowalski", "Haddad", "Fischer", "Chen", "Lopez", "Demir", "Evans", "Korhonen", "Jensen"]
PRODUCTS = ["espresso beans 1kg", "trail shoes", "desk lamp", "wool socks", "yoga mat", "kettle",
            "headphones", "backpack", "rain jacket", "cast iron pan", "notebook set", "water bottle",
            "phone case", "running vest", "camping stove", "board game", "tea sampler", "chair cushion"]
CART_ERRORS = ["SMTP 421 4.7.0 Try again later, closing connection",
               "SMTP timeout after 30 s talking to smtp.mail.example.com:587",
               "550 5.1.1 Recipient mailbox unavailable",
               "Connection reset by peer while sending DATA",
               "451 4.3.0 Temporary local problem: rate limit exceeded"]
DISPATCH_ERRORS = ["(1213, 'Deadlock found when trying to get lock; try restarting transaction')",
                   "(1205, 'Lock wait timeout exceeded; try restarting transaction')",
                   "(2006, 'MySQL server has gone away')",
                   "(1406, \"Data too long for column 'message' at row 1\")",
                   "Worker killed: memory limit of 128M exceeded"]
PROJECTS = ["OPS", "WEB", "PAY", "MOB"]
ISSUE_TITLES = ["Checkout button unresponsive on Safari", "Nightly export misses last hour",
                "Refund webhook retried forever", "Search ranks out-of-stock items first",
                "Login rate limit too strict", "Push tokens expire after app update",
                "Invoice PDF has wrong VAT line", "Map tiles fail behind corporate proxy",
                "Slow query on order history page", "Password reset email lands in spam",
                "Android crash when rotating camera view", "Dashboard totals off by one day",
                "Memory leak in image resizer", "Duplicate charge on retry", "Cron drift on worker-3",
                "Translate settings page to Finnish", "Upgrade TLS certificates", "Flaky e2e test in CI"]
ISSUE_STATUSES = ["open", "in_progress", "in_review", "resolved", "closed"]
ORDER_STATUSES = ("DRIVER_ARRIVED", "PICKUP_IMAGES_ADDED", "DELIVERY_ARRIVED", "DELIVERY_IMAGES_ADDED")
ADMIN_TO = "ops-admin@example.com"


def demo_dir() -> Path:
    return data_dir() / "demo"


def demo_config(directory: Path | None = None) -> Config:
    """The configuration of the demo workspace in ``directory`` (created or not)."""
    d = (directory or demo_dir()).resolve()
    sources = {
        "orders": SourceConfig("orders", "mongomock://" + quote(str(d / "orders.json"))),
        "cart": SourceConfig("cart", f"sqlite:///{d / 'cart.db'}"),
        "dispatch": SourceConfig("dispatch", f"sqlite:///{d / 'dispatch.db'}"),
    }
    mail = MailConfig(transport="outbox", sender="notification-console@demo.local",
                      admin_to=ADMIN_TO, outbox_dir=str(d / "outbox"))
    return Config(path=None, sources=sources, role="admin", thresholds=Thresholds(), mail=mail,
                  duplicate_rules=(), demo=True)


def read_marker(directory: Path | None = None) -> dict | None:
    path = (directory or demo_dir()) / MARKER
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _is_current(directory: Path) -> bool:
    marker = read_marker(directory)
    if not marker or marker.get("version") != DEMO_VERSION:
        return False
    return all((directory / name).exists() for name in ("cart.db", "dispatch.db", "orders.json"))


def ensure_demo_workspace(reset: bool = False) -> Config:
    """Create the demo workspace once (or again with ``reset``) and return its config."""
    target = demo_dir()
    if not reset and _is_current(target):
        _keep_console_schema_current(target)
        return demo_config(target)
    base = target.parent
    try:
        base.mkdir(parents=True, exist_ok=True)
        staging = base / f"demo.building-{os.getpid()}-{time.monotonic_ns()}"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        try:
            counts = build_demo(staging)
            from .schema_setup import ORDER_SCHEMA_VERSION
            _write_marker(staging, {
                "version": DEMO_VERSION, "seed": SEED,
                "created_at": utcnow().isoformat(timespec="seconds") + "Z",
                "order_schema_version": ORDER_SCHEMA_VERSION, "counts": counts})
            # Swap the finished workspace in; a half-built one is never visible.
            if target.exists():
                old = base / f"demo.old-{os.getpid()}-{time.monotonic_ns()}"
                os.replace(target, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise OperationFailed(f"The demo workspace cannot be created under {base}: {exc}.") from None
    return demo_config(target)


def _keep_console_schema_current(directory: Path) -> None:
    """A reused workspace gets the console migrations added since it was made."""
    from . import migrate
    from .schema_setup import ORDER_SCHEMA_VERSION
    config = demo_config(directory)
    for source in SQL_NAMES:
        engine = sql_engine(config.sources[source])
        try:
            if migrate.current_revision(engine) != migrate.head_revision():
                upgrade_sql_source(engine, source)
        finally:
            engine.dispose()
    marker = read_marker(directory) or {}
    if marker.get("order_schema_version", 0) < ORDER_SCHEMA_VERSION:
        store = open_order_store(config.sources["orders"].url)
        try:
            upgrade_order_store(store)
        finally:
            store.file = None
        marker["order_schema_version"] = ORDER_SCHEMA_VERSION
        _write_marker(directory, marker)


def _write_marker(directory: Path, marker: dict) -> None:
    tmp = directory / (MARKER + ".tmp")
    tmp.write_text(json.dumps(marker, indent=2), encoding="utf-8")
    os.replace(tmp, directory / MARKER)


# --------------------------------------------------------------------------
# Seeding

@dataclass
class _Clock:
    now: dt.datetime

    def ago(self, rng: random.Random, *, max_days: float = DAYS, min_minutes: float = 0) -> dt.datetime:
        """A moment in the window, denser in working hours and nearer the present."""
        while True:
            seconds = rng.uniform(min_minutes * 60, max_days * 86400)
            t = self.now - dt.timedelta(seconds=seconds)
            hour = t.hour + t.minute / 60
            weight = 1.0 if 7 <= hour <= 21 else 0.3
            if rng.random() < weight:
                return t


def _person(rng: random.Random, i: int) -> tuple[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    email = f"{first}.{last}{i}@example.com".lower()
    return f"{first} {last}", email


def build_demo(directory: Path, *, now: dt.datetime | None = None, seed: int = SEED) -> dict:
    """Create and seed the three databases in ``directory``; return row counts."""
    now = (now or utcnow()).replace(microsecond=0)
    config = demo_config(directory)
    counts: dict[str, dict[str, int]] = {}
    for source, seeder in (("cart", _seed_cart), ("dispatch", _seed_dispatch)):
        engine = sql_engine(config.sources[source])
        try:
            create_production_schema(engine, source)
            upgrade_sql_source(engine, source)
            with engine.begin() as conn:
                counts[source] = seeder(conn, random.Random(f"{seed}-{source}"), _Clock(now))
        finally:
            engine.dispose()
    store = open_order_store(config.sources["orders"].url)
    try:
        # Documents before indexes: mongomock checks a unique index per insert by a scan.
        counts["orders"] = _seed_orders(store, random.Random(f"{seed}-orders"), _Clock(now))
        upgrade_order_store(store)  # indexes, console collections, and a checkpoint
    finally:
        store.file = None  # stops the checkpoint thread; the file is complete
    return counts


def _ms(rng: random.Random, lo: float, hi: float) -> dt.timedelta:
    return dt.timedelta(milliseconds=rng.uniform(lo, hi))


def _seed_cart(conn, rng: random.Random, clock: _Clock) -> dict:
    n_users = 450
    users = []
    for i in range(1, n_users + 1):
        name, email = _person(rng, i)
        users.append({"id": i, "email": email, "name": name})
    conn.execute(insert(cart_users), users)

    carts: dict[int, list[tuple[str, Decimal]]] = {}
    for uid in range(1, n_users + 1):
        carts[uid] = []
        for _ in range(rng.choice((1, 1, 2, 2, 3, 4))):
            items = sorted(rng.sample(PRODUCTS, rng.randint(1, 4)))
            payload = json.dumps({"user": uid, "items": items, "n": rng.random()})
            value = Decimal(rng.randint(900, 180000)) / 100
            carts[uid].append((hashlib.sha256(payload.encode()).hexdigest(), value))

    rows: list[dict] = []

    def sent_row(uid, h, value, t, delay_ms=(300, 8000)):
        rows.append({"user_id": uid, "cart_hash": h, "cart_value": value, "email_sent": 1,
                     "created_at": t, "sent_at": t + _ms(rng, *delay_ms), "error_message": None})

    def failed_row(uid, h, value, t):
        rows.append({"user_id": uid, "cart_hash": h, "cart_value": value, "email_sent": 0,
                     "created_at": t, "sent_at": None, "error_message": rng.choice(CART_ERRORS)})

    for _ in range(2600):
        uid = rng.randint(1, n_users)
        h, value = rng.choice(carts[uid])
        t = clock.ago(rng, min_minutes=3)
        r = rng.random()
        if r < 0.78:
            sent_row(uid, h, value, t)
        elif r < 0.86:
            failed_row(uid, h, value, t)
        elif r < 0.90:
            # Failed, then retried successfully a few minutes later: one email, no duplicate.
            failed_row(uid, h, value, t)
            retry = t + dt.timedelta(minutes=rng.uniform(2.5, 20))
            if retry < clock.now:
                sent_row(uid, h, value, retry)
        elif r < 0.95:
            # The race of seed 001: two or three detectors send within the same second.
            for _k in range(rng.choice((2, 2, 2, 3))):
                sent_row(uid, h, value, t + _ms(rng, 0, 900))
        elif r < 0.97:
            # A second email hours later, still inside 24 h: also a duplicate.
            sent_row(uid, h, value, t)
            later = t + dt.timedelta(hours=rng.uniform(1, 23))
            if later < clock.now:
                sent_row(uid, h, value, later)
        else:
            # Abandoned again after 24 h: a new abandonment, not a duplicate.
            sent_row(uid, h, value, t)
            again = t + dt.timedelta(hours=rng.uniform(25, 60))
            if again < clock.now:
                sent_row(uid, h, value, again)
    # In progress right now: created under two minutes ago, not sent yet.
    for _ in range(6):
        uid = rng.randint(1, n_users)
        h, value = rng.choice(carts[uid])
        t = clock.now - dt.timedelta(seconds=rng.uniform(5, 100))
        rows.append({"user_id": uid, "cart_hash": h, "cart_value": value, "email_sent": 0,
                     "created_at": t, "sent_at": None, "error_message": None})
    rows.sort(key=lambda row: row["created_at"])
    conn.execute(insert(cart_log), rows)
    return {"users": len(users), "cart_abandonment_log": len(rows)}


def _seed_dispatch(conn, rng: random.Random, clock: _Clock) -> dict:
    n_users = 140
    users, names = [], {}
    for i in range(1, n_users + 1):
        name, email = _person(rng, i)
        users.append({"id": i, "email": email, "display_name": name})
        names[i] = name
    conn.execute(insert(dispatch_users), users)

    issue_rows: list[dict[str, Any]] = []
    watcher_rows: list[dict[str, Any]] = []
    audience: dict[int, tuple[str, set[int]]] = {}
    counters = {p: 100 for p in PROJECTS}
    for iid in range(1, 651):
        project = rng.choice(PROJECTS)
        counters[project] += 1
        reporter = rng.randint(1, n_users)
        assignee = rng.randint(1, n_users) if rng.random() < 0.85 else None
        key = f"{project}-{counters[project]}"
        issue_rows.append({"id": iid, "issue_key": key, "title": rng.choice(ISSUE_TITLES),
                           "reporter_id": reporter, "assignee_id": assignee,
                           "status": rng.choice(ISSUE_STATUSES)})
        watchers = set(rng.sample(range(1, n_users + 1), rng.randint(0, 5)))
        watcher_rows.extend({"issue_id": iid, "user_id": u} for u in sorted(watchers))
        audience[iid] = (key, {reporter, *([assignee] if assignee else []), *watchers})
    conn.execute(insert(issues), issue_rows)
    conn.execute(insert(issue_watchers), watcher_rows)

    logs: list[dict] = []
    notes: list[dict] = []
    used_ids: set[str] = set()
    comment_seq = [5000]

    def event(t):
        iid = rng.randint(1, len(issue_rows))
        key, people = audience[iid]
        kind = rng.choices(("comment_added", "status_changed", "other"), (0.66, 0.29, 0.05))[0]
        actor = rng.choice(sorted(people)) if rng.random() < 0.8 else rng.randint(1, n_users)
        comment = None
        if kind == "comment_added":
            comment_seq[0] += 1
            comment = comment_seq[0]
        recipients = sorted(people - {actor})
        return {"kind": kind, "issue": iid, "key": key, "comment": comment, "actor": actor,
                "recipients": recipients, "t": t}

    def dispatch_id(ev, t):
        ms = int((t - dt.datetime(1970, 1, 1)).total_seconds() * 1000)
        base = (f"{ev['kind']}_{ev['issue']}_comment_{ev['comment']}_{ev['actor']}"
                if ev["comment"] else f"{ev['kind']}_{ev['issue']}_{ev['actor']}")
        did = f"{base}_{ms}"
        while did in used_ids:
            ms += 1
            did = f"{base}_{ms}"
        used_ids.add(did)
        return did

    def message(ev):
        who = names[ev["actor"]]
        if ev["kind"] == "comment_added":
            return f"{who} commented on {ev['key']}"
        if ev["kind"] == "status_changed":
            return f"{who} changed the status of {ev['key']} to {rng.choice(ISSUE_STATUSES)}"
        return f"{who} updated {ev['key']}"

    def latency():
        # Mostly fast, a long tail: median ~0.2 s, some seconds, a few over a minute.
        r = rng.random()
        if r < 0.97:
            return dt.timedelta(milliseconds=rng.lognormvariate(5.3, 0.8))
        if r < 0.995:
            return dt.timedelta(seconds=rng.uniform(3, 40))
        return dt.timedelta(seconds=rng.uniform(60, 240))

    def write(ev, t, status, recipients=None, err=None):
        did = dispatch_id(ev, t)
        done = t + latency() if status == "completed" else None
        if done is not None and done > clock.now:
            done = clock.now
        who = ev["recipients"] if recipients is None else recipients
        logs.append({"dispatch_id": did, "dispatch_type": ev["kind"], "issue_id": ev["issue"],
                     "comment_id": ev["comment"], "actor_user_id": ev["actor"],
                     "recipients_count": len(ev["recipients"]), "status": status, "created_at": t,
                     "completed_at": done, "error_message": err})
        end = done or (t + dt.timedelta(milliseconds=50))
        text_ = message(ev)
        for uid in who:
            created = t + (end - t) * rng.uniform(0.2, 0.95)
            age_h = (clock.now - created).total_seconds() / 3600
            notes.append({"user_id": uid, "type": ev["kind"], "issue_id": ev["issue"],
                          "comment_id": ev["comment"], "actor_user_id": ev["actor"],
                          "message": text_, "is_read": 1 if rng.random() < min(0.9, age_h / 48) else 0,
                          "created_at": created, "dispatch_id": did})

    for _ in range(3600):
        t = clock.ago(rng, min_minutes=6)
        ev = event(t)
        r = rng.random()
        if r < 0.915:
            write(ev, t, "completed")
        elif r < 0.955:
            # Failed mid-way: some recipients may already hold their notification.
            partial = ev["recipients"][:rng.randint(0, len(ev["recipients"]))] if rng.random() < 0.3 else []
            write(ev, t, "failed", recipients=partial, err=rng.choice(DISPATCH_ERRORS))
        elif r < 0.96:
            # Stuck: the worker died after creating the log row.
            write(ev, t, "pending", recipients=[])
        else:
            # Retried at another millisecond: a NEW dispatch id, the same event again.
            write(ev, t, "completed")
            for _k in range(rng.choice((1, 1, 2))):
                t2 = t + _ms(rng, 1, 4000)
                write(ev, t2, "completed")
    # Stuck past any threshold: the draw above gives about 18, but never fewer than 12.
    stuck = sum(1 for row in logs if row["status"] == "pending")
    for _ in range(max(0, 12 - stuck)):
        t = clock.ago(rng, min_minutes=30)
        write(event(t), t, "pending", recipients=[])
    # In flight right now (not stuck yet).
    for _ in range(3):
        ev = event(clock.now - dt.timedelta(seconds=rng.uniform(2, 60)))
        write(ev, ev["t"], "pending", recipients=[])
    # Legacy notifications written before idempotent dispatch: no dispatch id,
    # some of them twice for the same event.
    for _ in range(700):
        t = clock.ago(rng, min_minutes=60 * 24 * 4)
        ev = event(t)
        copies = 2 if rng.random() < 0.07 else 1
        text_ = message(ev)
        for k in range(copies):
            for uid in ev["recipients"]:
                notes.append({"user_id": uid, "type": ev["kind"], "issue_id": ev["issue"],
                              "comment_id": ev["comment"], "actor_user_id": ev["actor"],
                              "message": text_, "is_read": 1 if rng.random() < 0.8 else 0,
                              "created_at": t + _ms(rng, 5 + 900 * k, 200 + 2000 * k),
                              "dispatch_id": None})
    logs.sort(key=lambda row: row["created_at"])
    notes.sort(key=lambda row: row["created_at"])
    conn.execute(insert(dispatch_log), logs)
    conn.execute(insert(notifications), notes)
    return {"users": len(users), "issues": len(issue_rows), "issue_watchers": len(watcher_rows),
            "notification_dispatch_log": len(logs), "notifications": len(notes)}


def _seed_orders(store, rng: random.Random, clock: _Clock) -> dict:
    orders, emails = [], []
    hexd = "0123456789abcdef"

    def image(order_id, stage, n, t, driver):
        return {"filename": f"{stage[0]}{n}.jpg", "url": f"/uploads/{order_id}/{stage[0]}{n}.jpg",
                "uploaded_at": t, "uploaded_by": driver}

    def email(order_id, event_, t):
        what = "pickup" if event_.startswith("pickup") else "delivery"
        emails.append({"order_id": order_id, "event": event_, "to": ADMIN_TO,
                       "subject": f"Order #{order_id}: driver added {what} images",
                       "message_id": "<" + "".join(rng.choice(hexd) for _ in range(24)) + "@mail.example.com>",
                       "transport": "smtp", "sent_at": t})

    def stage_images(order_id, stage, start, driver, count):
        imgs, t = [], start
        burst = rng.random() < 0.35  # several files picked at once: uploads race
        for n in range(1, count + 1):
            imgs.append(image(order_id, stage, n, t, driver))
            t += _ms(rng, 20, 400) if burst else dt.timedelta(seconds=rng.uniform(3, 90))
        return imgs, burst

    def stage_emails(order_id, event_, imgs, burst, legacy):
        first = imgs[0]["uploaded_at"]
        if clock.now - first < dt.timedelta(minutes=10) and rng.random() < 0.5:
            return  # still inside the grace period: not sent yet, not missed yet
        r = rng.random()
        if r < 0.025:
            return  # missed: images present, no email
        email(order_id, event_, first + _ms(rng, 200, 2500))
        if not legacy and burst and len(imgs) > 1 and r < 0.30:
            # The seed-000 race: each simultaneous upload saw "no images yet".
            for img in imgs[1:rng.randint(2, len(imgs))]:
                email(order_id, event_, img["uploaded_at"] + _ms(rng, 200, 2500))

    # Order ids grow with creation time, as they do in production.
    created_times = sorted(clock.ago(rng, min_minutes=1) for _ in range(1700))
    for k, created in enumerate(created_times):
        oid = 1001 + k
        age_min = (clock.now - created).total_seconds() / 60
        driver = rng.randint(1, 45)
        legacy = age_min > 60 * 24 * 4.5 and rng.random() < 0.22
        # Older orders are further along the flow.
        if age_min < 30:
            stage_n = rng.choice((0, 0, 1, 1, 2))
        elif age_min < 240:
            stage_n = rng.choice((0, 1, 1, 2, 2, 3, 3))
        else:
            stage_n = rng.choices((0, 1, 2, 3), (0.02, 0.05, 0.05, 0.88))[0]
        status = ORDER_STATUSES[stage_n]
        t = created + dt.timedelta(minutes=rng.uniform(5, min(40, max(6, age_min * 0.2))))
        pickup, delivery = [], []
        updated = created
        if stage_n >= 1 and t < clock.now:
            pickup, burst = stage_images(oid, "pickup", t, driver, rng.choice((1, 1, 2, 3, 4, 5)))
            stage_emails(oid, "pickup_images_added", pickup, burst, legacy)
            updated = pickup[-1]["uploaded_at"]
        if stage_n >= 3:
            t2 = updated + dt.timedelta(minutes=rng.uniform(10, 90))
            if t2 < clock.now:
                delivery, burst = stage_images(oid, "delivery", t2, driver, rng.choice((1, 2, 2, 3, 4)))
                stage_emails(oid, "delivery_images_added", delivery, burst, legacy)
                updated = delivery[-1]["uploaded_at"]
            else:
                status = "DELIVERY_ARRIVED"
        elif stage_n == 2:
            updated = updated + dt.timedelta(minutes=rng.uniform(1, 30))
        if not pickup and stage_n >= 1:
            status = "DRIVER_ARRIVED"
        images: dict = {"pickup": pickup, "delivery": delivery}
        if legacy:
            # Written before the multi-image change: one image object, or null.
            images = {"pickup": pickup[0] if pickup else None,
                      "delivery": delivery[0] if delivery else None}
        updated = min(updated, clock.now)
        orders.append({"id": oid, "status": status,
                       "customer_email": f"customer{rng.randint(1, 900)}@example.com",
                       "driver_id": driver, "images": images,
                       "created_at": created, "updated_at": updated})
    orders.sort(key=itemgetter("id"))
    emails.sort(key=itemgetter("sent_at"))
    store.db["orders"].insert_many(orders)
    if emails:
        store.db["email_log"].insert_many(emails)
    return {"orders": len(orders), "email_log": len(emails)}
