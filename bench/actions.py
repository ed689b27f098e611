"""Admin actions on MariaDB at 10,000 items: retry, cleanup and undo against a raw-PyMySQL floor.

    .venv/bin/python bench/actions.py [--items 10000] [--only NAME] [--pool-size K]

Cases (each on its own fresh database, seeded with ``--items`` N items):

  dispatch-retry     retry --all of N failed dispatches, 3 recipients each   target <= 30 s (stretch <= 10 s)
  cart-retry-smtp    retry --all of N failed cart rows, SMTP to a local      target <= 60 s
                     aiosmtpd server (a process of its own)
  cart-retry-outbox  the same through the outbox folder                      target <= 30 s
  cleanup            cleanup --apply of N duplicate groups (cart: two sent   target <= 30 s
                     rows of one (user, cart) an hour apart)
  undo               undo of that cleanup                                    target <= 30 s

Each case calls the public service function (``app.services.retry.retry``,
``app.services.cleanup.cleanup`` / ``undo``) with the configuration a console
would have, so whatever the services gain (e.g. ``[actions] pool_size``)
shows here. Next to it runs the "floor": the same statements done by a
minimal single-threaded raw PyMySQL loop on an identically seeded fresh
database, one item per transaction (dispatch: SELECT the log row FOR UPDATE,
read the recipients, INSERT their notifications, UPDATE the row completed,
COMMIT; cart: SELECT the row with its user, send over one kept-open SMTP
connection or write one file, UPDATE sent, COMMIT; cleanup: per group SELECT
... FOR UPDATE, INSERT the archive row, DELETE, COMMIT; undo the reverse).
Printed per case: seconds and items/s of both, the ratio console/floor and
the target. The targets are for 10,000 items; with another ``--items`` the
time is projected linearly to 10,000 and marked so.

After each console run the result is checked in the database (every failed
dispatch completed with exactly one notification per recipient; N messages
accepted by the SMTP server / N outbox files, every cart row sent; N rows
archived, the kept row the earliest; undo puts back identical rows). The exit
code is 1 when a check fails, not when a target is missed. A Markdown
summary table (for the README) ends the output.

The server is NC_BENCH_MARIADB_URL (default mysql+pymysql://root@127.0.0.1:3306);
the databases are created with unique names and dropped at the end.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import smtplib
import socket
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("NC_NO_KEYRING", "1")

import pymysql  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app import config as app_config  # noqa: E402
from app.bootstrap import Workspace  # noqa: E402
from app.config import Config, MailConfig, SourceConfig, Thresholds  # noqa: E402
from app.schema_setup import create_production_schema, upgrade_sql_source  # noqa: E402

SERVER = os.environ.get("NC_BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306")
CASES = ("dispatch-retry", "cart-retry-smtp", "cart-retry-outbox", "cleanup", "undo")
# Seconds at 10,000 items: (target, stretch target or None).
TARGETS = {"dispatch-retry": (30.0, 10.0), "cart-retry-smtp": (60.0, None), "cart-retry-outbox": (30.0, None),
           "cleanup": (30.0, None), "undo": (30.0, None)}
TARGET_ITEMS = 10_000
RECIPIENTS = 3
CHUNK = 2000


# --------------------------------------------------------------------------
# Databases

class Server:
    """Fresh databases with unique names on the bench server; all dropped by ``close``."""

    def __init__(self):
        self.admin = create_engine(SERVER + "/mysql", isolation_level="AUTOCOMMIT")
        self.names: list[str] = []
        url = make_url(SERVER)
        self.raw_args = {"host": url.host or "127.0.0.1", "port": url.port or 3306, "user": url.username or "root",
                         "password": url.password or os.environ.get("NC_BENCH_MARIADB_PASSWORD", ""),
                         "charset": "utf8mb4", "autocommit": False}
        with self.admin.connect() as conn:
            self.version = conn.execute(text("SELECT VERSION()")).scalar()

    def create(self, source: str, label: str) -> str:
        name = f"nc_bench_act_{label}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        with self.admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        self.names.append(name)
        engine = create_engine(f"{SERVER}/{name}")
        try:
            create_production_schema(engine, source)
            upgrade_sql_source(engine, source)
        finally:
            engine.dispose()
        return name

    def raw(self, name: str):
        conn = pymysql.connect(database=name, **self.raw_args)
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
        conn.commit()
        return conn

    def close(self) -> None:
        with self.admin.connect() as conn:
            for name in self.names:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        self.admin.dispose()


def workspace(name: str, source: str, args, mail: MailConfig | None = None) -> Workspace:
    extra = {}
    # [actions] pool_size: only when this Config knows it (the bench predates nothing it needs).
    if args.pool_size is not None and hasattr(app_config, "ActionsConfig"):
        extra["actions"] = app_config.ActionsConfig(pool_size=args.pool_size)
    config = Config(path=None, sources={source: SourceConfig(source, f"{SERVER}/{name}")}, role="admin",
                    thresholds=Thresholds(), mail=mail or MailConfig(), **extra)
    return Workspace(config=config)


def pool_size_in_use(args) -> str:
    if not hasattr(app_config, "ActionsConfig"):
        return "n/a (no [actions] in Config)"
    return str(args.pool_size if args.pool_size is not None else app_config.ActionsConfig().pool_size)


def _insert(conn, sql: str, rows: list[tuple]) -> None:
    with conn.cursor() as cur:
        for start in range(0, len(rows), CHUNK):
            cur.executemany(sql, rows[start:start + CHUNK])
    conn.commit()


def scalar(conn, sql: str, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
    conn.commit()
    return row[0] if row else None


def rows_of(conn, sql: str, params=None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        out = list(cur.fetchall())
    conn.commit()
    return out


# --------------------------------------------------------------------------
# Seeding (the same for the console's and the floor's database)

def expected_recipients(issue_id: int) -> tuple[int, int, int]:
    """Reporter, assignee, watcher of issue ``issue_id``; the actor (61) is none of them."""
    return 1 + issue_id % 20, 21 + issue_id % 20, 41 + issue_id % 20


ACTOR = 61


def seed_dispatch(conn, n: int) -> None:
    """N issues (3 recipients each) whose comment dispatch failed and is now deliverable."""
    _insert(conn, "INSERT INTO users (id, email, display_name) VALUES (%s, %s, %s)",
            [(u, f"u{u}@example.test", f"User {u}") for u in range(1, ACTOR + 1)])
    issues, watchers, logs = [], [], []
    for i in range(1, n + 1):
        reporter, assignee, watcher = expected_recipients(i)
        issues.append((i, f"BEN-{i}", f"Bench issue {i}", reporter, assignee))
        watchers.append((i, watcher))
        logs.append((f"comment_added:{i}:{i}:{ACTOR}", i, i, ACTOR, f"Issue {i} does not exist."))
    _insert(conn, "INSERT INTO issues (id, issue_key, title, reporter_id, assignee_id) VALUES (%s, %s, %s, %s, %s)",
            issues)
    _insert(conn, "INSERT INTO issue_watchers (issue_id, user_id) VALUES (%s, %s)", watchers)
    _insert(conn, "INSERT INTO notification_dispatch_log (dispatch_id, dispatch_type, issue_id, comment_id, "
                  "actor_user_id, recipients_count, status, created_at, error_message) "
                  "VALUES (%s, 'comment_added', %s, %s, %s, 0, 'failed', "
                  "UTC_TIMESTAMP(3) - INTERVAL 10 MINUTE, %s)", logs)


def cart_hash(i: int) -> str:
    return hashlib.sha256(f"bench-cart-{i}".encode()).hexdigest()


def seed_cart_failed(conn, n: int) -> None:
    """N users, each with one cart row whose email failed 10 minutes ago."""
    _insert(conn, "INSERT INTO users (id, email, name) VALUES (%s, %s, %s)",
            [(i, f"user{i}@example.test", f"User {i}") for i in range(1, n + 1)])
    _insert(conn, "INSERT INTO cart_abandonment_log (user_id, cart_hash, cart_value, email_sent, created_at, "
                  "error_message) VALUES (%s, %s, %s, 0, UTC_TIMESTAMP(3) - INTERVAL 10 MINUTE, %s)",
            [(i, cart_hash(i), f"{10 + i % 90}.90", "451 4.3.0 try again later") for i in range(1, n + 1)])


def seed_cart_duplicates(conn, n: int) -> None:
    """N duplicate groups: per (user, cart) two sent rows an hour apart, three days ago (ids 2i-1, 2i)."""
    base = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0) - dt.timedelta(days=3)
    rows = []
    for i in range(1, n + 1):
        first = base + dt.timedelta(seconds=i)
        for at in (first, first + dt.timedelta(hours=1)):
            rows.append((i, cart_hash(i), f"{10 + i % 90}.90", at, at + dt.timedelta(seconds=2)))
    _insert(conn, "INSERT INTO cart_abandonment_log (user_id, cart_hash, cart_value, email_sent, created_at, "
                  "sent_at) VALUES (%s, %s, %s, 1, %s, %s)", rows)


def table_digest(conn, table: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    count = 0
    for row in rows_of(conn, f"SELECT * FROM {table} ORDER BY id"):
        digest.update(repr(row).encode())
        count += 1
    return count, digest.hexdigest()


# --------------------------------------------------------------------------
# The local SMTP server

class CountingHandler:
    """aiosmtpd handler: accepts every message and counts them, with their cart log ids."""

    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0
        self.log_ids: list[str] = []
        self.peers: set = set()       # client (host, port) pairs: the connections the messages came over
        self._parser = BytesHeaderParser()

    async def handle_DATA(self, server, session, envelope):
        headers = self._parser.parsebytes(envelope.original_content or envelope.content)
        with self.lock:
            self.count += 1
            self.log_ids.append(headers.get("X-NC-Cart-Log-Id") or "")
            self.peers.add(tuple(session.peer) if isinstance(session.peer, (list, tuple)) else session.peer)
        return "250 Message accepted for delivery"

    def take(self) -> tuple[int, list[str], int]:
        """(messages, their cart log ids, connections) since the last take; then start counting afresh."""
        with self.lock:
            out = (self.count, self.log_ids, len(self.peers))
            self.count, self.log_ids, self.peers = 0, [], set()
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_smtp(port: int, control) -> None:
    """The SMTP server's own process: it answers "take" with the handler's counts, ends on "stop"."""
    from aiosmtpd.controller import Controller
    handler = CountingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=port, server_hostname="bench.localhost")
    controller.start()
    handler.take()   # the controller's own start-up probe is no message, but reset anyway
    control.send("ready")
    try:
        while (what := control.recv()) != "stop":
            control.send(handler.take() if what == "take" else None)
    finally:
        controller.stop()


class SmtpServer:
    """A local aiosmtpd server in a process of its own, as a mail server would be: its
    work does not compete with the console's threads for this process's interpreter."""

    def __init__(self):
        import multiprocessing
        self.port = free_port()
        ctx = multiprocessing.get_context("spawn")
        self._control, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve_smtp, args=(self.port, child), daemon=True)
        self.handler = self   # take() as before

    def take(self) -> tuple[int, list[str], int]:
        self._control.send("take")
        return self._control.recv()

    def __enter__(self):
        self._process.start()
        if not self._control.poll(60) or self._control.recv() != "ready":
            raise RuntimeError("the local SMTP server did not start")
        return self

    def __exit__(self, *exc):
        try:
            self._control.send("stop")
        except OSError:
            pass
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()


# --------------------------------------------------------------------------
# Results

@dataclass
class Result:
    name: str
    items: int
    console_s: float | None = None
    floor_s: float | None = None
    checks: list[str] = field(default_factory=list)      # failed correctness checks
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.checks

    def projected(self) -> float | None:
        if self.console_s is None:
            return None
        return self.console_s * TARGET_ITEMS / self.items

    def verdict(self) -> str:
        target, stretch = TARGETS[self.name]
        t = self.projected()
        if t is None:
            return "n/a"
        word = "met" if t <= target else "NOT met"
        if stretch is not None:
            word += f", stretch {'met' if t <= stretch else 'not met'}"
        return word + ("" if self.items == TARGET_ITEMS else " (projected)")


def check(result: Result, condition: bool, what: str) -> None:
    if not condition:
        result.checks.append(what)
        print(f"  CHECK FAILED: {what}", flush=True)


def rate(items: int, seconds: float | None) -> str:
    return f"{items / seconds:,.0f}" if seconds else "-"


class Progress:
    """retry's progress callback: a line at most every 15 s, so a long run shows it is alive."""

    def __init__(self, name: str):
        self.name = name
        self.t0 = time.perf_counter()
        self.last = self.t0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - self.last >= 15 or done == total:
            self.last = now
            print(f"  {self.name}: {done:,}/{total:,} after {now - self.t0:.0f} s", flush=True)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


# --------------------------------------------------------------------------
# 1. dispatch retry

def console_retry_all(ws: Workspace, source: str, res: Result) -> None:
    """retry --all on the console's database, timed into ``res``; every item must be retried."""
    from app.services.retry import retry
    n = res.items
    try:
        out, res.console_s = timed(lambda: retry(ws, source, all_matching=True,
                                                 action_id=f"bench-{source}-{uuid.uuid4().hex[:8]}",
                                                 progress=Progress(res.name)))
    finally:
        ws.close()
    print(f"  console: {res.console_s:.2f} s; retried {out['retried']}, skipped {len(out['skipped'])}, "
          f"failed {len(out['failed'])} of {out['snapshot']}", flush=True)
    check(res, out["snapshot"] == n, f"retry snapshot holds {out['snapshot']} items, not {n}")
    check(res, out["retried"] == n and not out["skipped"] and not out["failed"],
          f"retried {out['retried']}, skipped {len(out['skipped'])}, failed {len(out['failed'])} "
          f"(first: {(out['failed'] or out['skipped'] or [None])[0]})")


def bench_dispatch_retry(server: Server, args) -> Result:
    n = args.items
    res = Result("dispatch-retry", n)
    console_db, floor_db = server.create("dispatch", "dr_console"), server.create("dispatch", "dr_floor")
    for name in (console_db, floor_db):
        conn = server.raw(name)
        seed_dispatch(conn, n)
        conn.close()

    console_retry_all(workspace(console_db, "dispatch", args), "dispatch", res)
    verify_dispatch(server, console_db, n, res, "console")

    conn = server.raw(floor_db)
    try:
        res.floor_s = floor_dispatch_retry(conn)
    finally:
        conn.close()
    verify_dispatch(server, floor_db, n, res, "floor")
    return res


def verify_dispatch(server: Server, name: str, n: int, res: Result, who: str) -> None:
    conn = server.raw(name)
    try:
        bad = scalar(conn, "SELECT COUNT(*) FROM notification_dispatch_log WHERE status <> 'completed' "
                           "OR recipients_count <> %s OR error_message IS NOT NULL OR completed_at IS NULL",
                     (RECIPIENTS,))
        check(res, bad == 0, f"{who}: {bad} dispatch log rows are not completed with {RECIPIENTS} recipients")
        got = rows_of(conn, "SELECT issue_id, user_id FROM notifications")
        expected = {(i, u) for i in range(1, n + 1) for u in expected_recipients(i)}
        check(res, len(got) == len(expected) == n * RECIPIENTS,
              f"{who}: {len(got)} notifications, expected {n * RECIPIENTS}")
        check(res, set(got) == expected and len(set(got)) == len(got),
              f"{who}: notifications are not exactly one per recipient "
              f"({len(set(got) - expected)} unexpected, {len(expected - set(got))} missing, "
              f"{len(got) - len(set(got))} repeated)")
    finally:
        conn.close()


def floor_dispatch_retry(conn) -> float:
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM notification_dispatch_log WHERE status = 'failed' ORDER BY id")
        ids = [r[0] for r in cur.fetchall()]
        conn.commit()
        for log_id in ids:
            cur.execute("SELECT dispatch_id, dispatch_type, issue_id, comment_id, actor_user_id, status "
                        "FROM notification_dispatch_log WHERE id = %s FOR UPDATE", (log_id,))
            key, dtype, issue_id, comment_id, actor, status = cur.fetchone()
            if status == "completed":
                conn.commit()
                continue
            cur.execute("SELECT reporter_id FROM issues WHERE id = %s UNION SELECT assignee_id FROM issues "
                        "WHERE id = %s UNION SELECT user_id FROM issue_watchers WHERE issue_id = %s",
                        (issue_id, issue_id, issue_id))
            users = sorted({r[0] for r in cur.fetchall() if r[0] is not None} - {actor})
            message = f"User {actor} commented on BEN-{issue_id}"
            cur.executemany("INSERT INTO notifications (user_id, type, issue_id, comment_id, actor_user_id, "
                            "message, is_read, created_at, dispatch_id) "
                            "VALUES (%s, %s, %s, %s, %s, %s, 0, UTC_TIMESTAMP(3), %s)",
                            [(u, dtype, issue_id, comment_id, actor, message, key) for u in users])
            cur.execute("UPDATE notification_dispatch_log SET status = 'completed', recipients_count = %s, "
                        "completed_at = UTC_TIMESTAMP(3), error_message = NULL WHERE id = %s",
                        (len(users), log_id))
            conn.commit()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------
# 2./3. cart retry (SMTP, outbox)

def _cart_html(name: str, value) -> str:
    return (f"<p>Hi {name},</p><p>You left items worth <b>{value}</b> in your cart. "
            "They are still waiting for you.</p>")


def bench_cart_retry(server: Server, args, transport: str, smtp: SmtpServer | None) -> Result:
    n = args.items
    res = Result(f"cart-retry-{transport}", n)
    console_db, floor_db = server.create("cart", "cr_console"), server.create("cart", "cr_floor")
    for name in (console_db, floor_db):
        conn = server.raw(name)
        seed_cart_failed(conn, n)
        conn.close()
    outdir = Path(tempfile.mkdtemp(prefix="nc-bench-outbox-"))
    try:
        console_out, floor_out = outdir / "console", outdir / "floor"
        if transport == "smtp":
            mail = MailConfig(transport="smtp", host="127.0.0.1", port=smtp.port, sender="bench@example.test")
            smtp.handler.take()
        else:
            mail = MailConfig(transport="outbox", outbox_dir=str(console_out), sender="bench@example.test")
        console_retry_all(workspace(console_db, "cart", args, mail), "cart", res)
        if transport == "smtp":
            count, log_ids, connections = smtp.handler.take()
            print(f"  console: the SMTP server accepted {count} messages over {connections} connections",
                  flush=True)
            res.notes.append(f"{connections} SMTP connections")
            check(res, count == n, f"console: the SMTP server accepted {count} messages, expected {n}")
            check(res, len(set(log_ids)) == n, f"console: the messages name {len(set(log_ids))} distinct "
                                               f"cart rows, expected {n}")
        else:
            files = [p for p in console_out.glob("*.html") if p.name != "index.html"]
            check(res, len(files) == n, f"console: {len(files)} outbox files, expected {n}")
        verify_cart_sent(server, console_db, n, res, "console", claims=True)

        conn = server.raw(floor_db)
        try:
            res.floor_s = floor_cart_retry(conn, transport, smtp, floor_out)
        finally:
            conn.close()
        if transport == "smtp":
            count, _, _ = smtp.handler.take()
            check(res, count == n, f"floor: the SMTP server accepted {count} messages, expected {n}")
        else:
            files = list(floor_out.glob("*.html"))
            check(res, len(files) == n, f"floor: {len(files)} outbox files, expected {n}")
        verify_cart_sent(server, floor_db, n, res, "floor", claims=False)
    finally:
        shutil.rmtree(outdir, ignore_errors=True)
    return res


def verify_cart_sent(server: Server, name: str, n: int, res: Result, who: str, claims: bool) -> None:
    conn = server.raw(name)
    try:
        unsent = scalar(conn, "SELECT COUNT(*) FROM cart_abandonment_log WHERE email_sent <> 1 "
                              "OR sent_at IS NULL OR error_message IS NOT NULL")
        total = scalar(conn, "SELECT COUNT(*) FROM cart_abandonment_log")
        check(res, unsent == 0 and total == n, f"{who}: {unsent} of {total} cart rows are not marked sent")
        if claims:
            sent = scalar(conn, "SELECT COUNT(*) FROM nc_cart_claim WHERE state = 'sent'")
            check(res, sent == n, f"{who}: {sent} cart claims are 'sent', expected {n}")
    finally:
        conn.close()


def floor_cart_retry(conn, transport: str, smtp: SmtpServer | None, outdir: Path) -> float:
    t0 = time.perf_counter()
    client = None
    if transport == "smtp":
        client = smtplib.SMTP("127.0.0.1", smtp.port, timeout=10)
        client.ehlo()
    else:
        outdir.mkdir(parents=True, exist_ok=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM cart_abandonment_log WHERE email_sent = 0 AND error_message IS NOT NULL "
                        "ORDER BY id")
            ids = [r[0] for r in cur.fetchall()]
            conn.commit()
            for log_id in ids:
                cur.execute("SELECT c.user_id, c.cart_hash, c.cart_value, c.email_sent, u.email, u.name "
                            "FROM cart_abandonment_log c JOIN users u ON u.id = c.user_id WHERE c.id = %s",
                            (log_id,))
                user_id, chash, value, sent, email, name = cur.fetchone()
                if sent:
                    conn.commit()
                    continue
                html = _cart_html(name, value)
                if client is not None:
                    msg = EmailMessage()
                    msg["From"], msg["To"] = "bench@example.test", email
                    msg["Subject"] = "You left something in your cart"
                    msg["X-NC-Cart-Log-Id"] = str(log_id)
                    msg.set_content(f"Hi {name},\n\nYou left items worth {value} in your cart.\n")
                    msg.add_alternative(html, subtype="html")
                    client.send_message(msg)
                else:
                    (outdir / f"{log_id}.html").write_text(html, encoding="utf-8")
                cur.execute("UPDATE cart_abandonment_log SET email_sent = 1, sent_at = UTC_TIMESTAMP(3), "
                            "error_message = NULL WHERE id = %s AND email_sent = 0", (log_id,))
                conn.commit()
    finally:
        if client is not None:
            client.quit()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------
# 4./5. cleanup and undo (cart)

CART_COLUMNS = ("id", "user_id", "cart_hash", "cart_value", "email_sent", "created_at", "sent_at", "error_message")


def bench_cleanup_undo(server: Server, args, wanted: set[str]) -> list[Result]:
    from app.services.cleanup import cleanup, undo
    n = args.items
    clean, und = Result("cleanup", n), Result("undo", n)
    console_db, floor_db = server.create("cart", "cl_console"), server.create("cart", "cl_floor")
    digests = {}
    for name in (console_db, floor_db):
        conn = server.raw(name)
        seed_cart_duplicates(conn, n)
        digests[name] = table_digest(conn, "cart_abandonment_log")
        conn.close()

    ws = workspace(console_db, "cart", args)
    try:
        action_id = f"bench-cl-{uuid.uuid4().hex[:8]}"
        out, clean.console_s = timed(lambda: cleanup(ws, "cart", dry_run=False, action_id=action_id))
        print(f"  cleanup console: {clean.console_s:.2f} s; archived {out['archived']} rows in "
              f"{out['group_count']} groups", flush=True)
        check(clean, out["archived"] == n and out["group_count"] == n,
              f"cleanup archived {out['archived']} rows in {out['group_count']} groups, expected {n} in {n}")
        verify_cleaned(server, console_db, n, clean, "console", action_id)

        back, und.console_s = timed(lambda: undo(ws, action_id))
        print(f"  undo console: {und.console_s:.2f} s; restored {back['restored']} rows, "
              f"{len(back.get('conflicts', []))} conflicts", flush=True)
        check(und, back["restored"] == n and not back.get("conflicts"),
              f"undo restored {back['restored']} rows ({len(back.get('conflicts', []))} conflicts), expected {n}")
        verify_restored(server, console_db, digests[console_db], und, "console", action_id)
    finally:
        ws.close()

    conn = server.raw(floor_db)
    try:
        floor_action = "floor-cleanup"
        clean.floor_s = floor_cleanup(conn, floor_action)
        verify_cleaned(server, floor_db, n, clean, "floor", floor_action)
        und.floor_s = floor_undo(conn, floor_action)
        verify_restored(server, floor_db, digests[floor_db], und, "floor", floor_action)
    finally:
        conn.close()
    return [r for r in (clean, und) if r.name in wanted]


def verify_cleaned(server: Server, name: str, n: int, res: Result, who: str, action_id: str) -> None:
    conn = server.raw(name)
    try:
        left = scalar(conn, "SELECT COUNT(*) FROM cart_abandonment_log")
        later = scalar(conn, "SELECT COUNT(*) FROM cart_abandonment_log WHERE id % 2 = 0")
        archived = scalar(conn, "SELECT COUNT(*) FROM nc_archive WHERE action_id = %s AND restored_at IS NULL",
                          (action_id,))
        check(res, left == n and later == 0, f"{who}: {left} cart rows left ({later} of them not the earliest "
                                             f"of their group), expected the {n} earliest")
        check(res, archived == n, f"{who}: {archived} rows in the archive, expected {n}")
    finally:
        conn.close()


def verify_restored(server: Server, name: str, before: tuple[int, str], res: Result, who: str,
                    action_id: str) -> None:
    conn = server.raw(name)
    try:
        after = table_digest(conn, "cart_abandonment_log")
        pending = scalar(conn, "SELECT COUNT(*) FROM nc_archive WHERE action_id = %s AND restored_at IS NULL",
                         (action_id,))
        check(res, after == before, f"{who}: after undo the cart log holds {after[0]} rows "
                                    f"{'identical to' if after[1] == before[1] else 'different from'} the "
                                    f"{before[0]} before the cleanup")
        check(res, pending == 0, f"{who}: {pending} archive rows are not marked restored")
    finally:
        conn.close()


def _json_value(v):
    if isinstance(v, dt.datetime):
        return v.isoformat()
    return str(v) if not isinstance(v, (int, str, type(None))) else v


def floor_cleanup(conn, action_id: str) -> float:
    cols = ", ".join(CART_COLUMNS)
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute("SELECT user_id, cart_hash FROM cart_abandonment_log WHERE email_sent = 1 "
                    "GROUP BY user_id, cart_hash HAVING COUNT(*) > 1 ORDER BY user_id, cart_hash")
        keys = list(cur.fetchall())
        conn.commit()
        for user_id, chash in keys:
            cur.execute(f"SELECT {cols} FROM cart_abandonment_log WHERE user_id = %s AND cart_hash = %s "
                        "AND email_sent = 1 ORDER BY created_at, id FOR UPDATE", (user_id, chash))
            rows = [dict(zip(CART_COLUMNS, r)) for r in cur.fetchall()]
            first = rows[0]["created_at"]
            doomed = [r for r in rows[1:] if r["created_at"] - first < dt.timedelta(hours=24)]
            if doomed:
                cur.executemany("INSERT INTO nc_archive (action_id, table_name, row_id, row_json, archived_at) "
                                "VALUES (%s, 'cart_abandonment_log', %s, %s, UTC_TIMESTAMP(6))",
                                [(action_id, str(r["id"]), json.dumps({k: _json_value(v) for k, v in r.items()}))
                                 for r in doomed])
                cur.execute("DELETE FROM cart_abandonment_log WHERE id IN %s", ([r["id"] for r in doomed],))
            conn.commit()
    return time.perf_counter() - t0


def floor_undo(conn, action_id: str) -> float:
    cols = ", ".join(CART_COLUMNS)
    marks = ", ".join(["%s"] * len(CART_COLUMNS))
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM nc_archive WHERE action_id = %s AND restored_at IS NULL ORDER BY id",
                    (action_id,))
        entries = [r[0] for r in cur.fetchall()]
        conn.commit()
        for entry_id in entries:
            cur.execute("SELECT row_json FROM nc_archive WHERE id = %s AND restored_at IS NULL FOR UPDATE",
                        (entry_id,))
            got = cur.fetchone()
            if got is None:
                conn.commit()
                continue
            row = json.loads(got[0])
            cur.execute(f"INSERT INTO cart_abandonment_log ({cols}) VALUES ({marks})",
                        [row[c] for c in CART_COLUMNS])
            cur.execute("UPDATE nc_archive SET restored_at = UTC_TIMESTAMP(6) WHERE id = %s", (entry_id,))
            conn.commit()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------
# Report

def _secs(s: float | None) -> str:
    return f"{s:.2f}" if s is not None else "-"


def print_case(r: Result) -> None:
    target, stretch = TARGETS[r.name]
    ratio = f"{r.console_s / r.floor_s:.2f}" if r.console_s and r.floor_s else "-"
    goal = f"<= {target:g} s" + (f" (stretch <= {stretch:g} s)" if stretch else "")
    proj = "" if r.items == TARGET_ITEMS or r.console_s is None else \
        f", projected to {TARGET_ITEMS:,}: {r.projected():.1f} s"
    print(f"{r.name}: {r.items:,} items: console {_secs(r.console_s)} s ({rate(r.items, r.console_s)}/s), "
          f"floor {_secs(r.floor_s)} s ({rate(r.items, r.floor_s)}/s), console/floor {ratio}; "
          f"target {goal} at {TARGET_ITEMS:,}{proj}: {r.verdict()}; "
          f"correctness {'ok' if r.ok else 'FAILED'}", flush=True)


def markdown(results: list[Result]) -> str:
    lines = ["| action | items | console s | console items/s | floor s | floor items/s | console/floor "
             "| target (10,000 items) | met | correct |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in results:
        target, stretch = TARGETS[r.name]
        goal = f"≤ {target:g} s" + (f" (stretch ≤ {stretch:g} s)" if stretch else "")
        ratio = f"{r.console_s / r.floor_s:.2f}" if r.console_s and r.floor_s else "-"
        lines.append(f"| {r.name} | {r.items:,} | {_secs(r.console_s)} | {rate(r.items, r.console_s)} | "
                     f"{_secs(r.floor_s)} | {rate(r.items, r.floor_s)} | {ratio} | {goal} | {r.verdict()} | "
                     f"{'yes' if r.ok else 'NO'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=TARGET_ITEMS, help="items per case (default 10,000)")
    ap.add_argument("--only", choices=CASES, action="append", help="run only this case (repeatable)")
    ap.add_argument("--pool-size", type=int, default=None,
                    help="[actions] pool_size for the console (default: the Config default)")
    args = ap.parse_args(argv)
    if args.items < 1:
        ap.error("--items must be positive")
    wanted = set(args.only or CASES)

    server = Server()
    print(f"MariaDB {server.version}, {os.cpu_count()} CPUs; {args.items:,} items per case; "
          f"console [actions] pool_size {pool_size_in_use(args)}; floor: one raw PyMySQL connection, "
          "one item per transaction", flush=True)
    results: list[Result] = []

    def run(names: list[str], fn) -> None:
        print(f"{' + '.join(names)} ...", flush=True)
        try:
            out = fn()
        except Exception as exc:  # a crashed case is a failed check; the other cases still run
            import traceback
            traceback.print_exc()
            out = [Result(name, args.items, checks=[f"raised {type(exc).__name__}: {exc}"])
                   for name in names if name in wanted]
        for r in out if isinstance(out, list) else [out]:
            results.append(r)
            print_case(r)

    try:
        if "dispatch-retry" in wanted:
            run(["dispatch-retry"], lambda: bench_dispatch_retry(server, args))
        if "cart-retry-smtp" in wanted:
            def smtp_case():
                with SmtpServer() as smtp:
                    return bench_cart_retry(server, args, "smtp", smtp)
            run(["cart-retry-smtp"], smtp_case)
        if "cart-retry-outbox" in wanted:
            run(["cart-retry-outbox"], lambda: bench_cart_retry(server, args, "outbox", None))
        if wanted & {"cleanup", "undo"}:
            # undo needs the cleanup it undoes: --only undo runs that cleanup too, unreported.
            run(["cleanup", "undo"], lambda: bench_cleanup_undo(server, args, wanted))
    finally:
        server.close()

    print()
    print(markdown(results))
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"\ncorrectness checks failed in: {', '.join(r.name for r in failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
