"""The embedded demo workspace: created once, seeded with every case, kept across restarts."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update

from app.bootstrap import bootstrap
from app.demo import DEMO_VERSION, build_demo, demo_dir, ensure_demo_workspace
from app.read.failures import stage_images
from app.schema import cart_log, dispatch_log, notifications
from app.schema_setup import require_schema
from app.sqlutil import utcnow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NC_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One demo workspace for the read-only checks of this module."""
    old = os.environ.get("NC_DATA_DIR")
    os.environ["NC_DATA_DIR"] = str(tmp_path_factory.mktemp("demo-data"))
    try:
        started = time.monotonic()
        config = ensure_demo_workspace()
        seconds = time.monotonic() - started
        ws = bootstrap(config)
        yield ws, seconds
        ws.close()
    finally:
        if old is None:
            os.environ.pop("NC_DATA_DIR", None)
        else:
            os.environ["NC_DATA_DIR"] = old


def scalar(ws, source, sql, **params):
    with ws.engine(source).connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def test_creation_is_quick_and_complete(demo):
    ws, seconds = demo
    assert seconds < 10
    cfg = ws.config
    assert cfg.demo and cfg.role == "admin" and cfg.mail.transport == "outbox"
    assert Path(cfg.mail.outbox_dir).parent == demo_dir()
    assert cfg.sources["orders"].url == "mongomock://" + str(demo_dir() / "orders.json")
    for source in ("orders", "cart", "dispatch"):
        require_schema(ws, source)          # production + console schema in place
    marker = json.loads((demo_dir() / "demo.json").read_text())
    assert marker["version"] == DEMO_VERSION
    assert marker["counts"]["cart"]["cart_abandonment_log"] >= 2000
    assert marker["counts"]["dispatch"]["notifications"] >= 5000
    assert marker["counts"]["orders"]["orders"] >= 1000


def test_cart_holds_every_case(demo):
    ws, _ = demo
    n = lambda sql: scalar(ws, "cart", sql)  # noqa: E731
    assert n("SELECT COUNT(*) FROM users") >= 300
    assert n("SELECT COUNT(*) FROM cart_abandonment_log WHERE email_sent = 1") > 1500
    assert n("SELECT COUNT(*) FROM cart_abandonment_log WHERE email_sent = 0 AND error_message IS NOT NULL") > 100
    with ws.engine("cart").connect() as conn:
        rows = conn.execute(select(cart_log.c.user_id, cart_log.c.cart_hash, cart_log.c.email_sent,
                                   cart_log.c.created_at, cart_log.c.error_message)).all()
    now = utcnow()
    in_progress = [r for r in rows if not r.email_sent and r.error_message is None
                   and now - r.created_at < dt.timedelta(minutes=2)]
    assert in_progress
    sent: dict = {}
    for r in rows:
        if r.email_sent:
            sent.setdefault((r.user_id, r.cart_hash), []).append(r.created_at)
    within = after = 0
    for times in sent.values():
        times.sort()
        for a, b in zip(times, times[1:]):
            if b - a < dt.timedelta(hours=24):
                within += 1
            else:
                after += 1
    assert within > 50        # duplicates: second sent email inside 24 h
    assert after > 10         # re-abandonments after 24 h
    span = max(r.created_at for r in rows) - min(r.created_at for r in rows)
    assert dt.timedelta(days=6) < span <= dt.timedelta(days=7)


def test_dispatch_holds_every_case(demo):
    ws, _ = demo
    with ws.engine("dispatch").connect() as conn:
        by_status = dict(conn.execute(select(dispatch_log.c.status, func.count()).group_by(dispatch_log.c.status)).all())
        latencies = [(c - s).total_seconds() for s, c in conn.execute(
            select(dispatch_log.c.created_at, dispatch_log.c.completed_at)
            .where(dispatch_log.c.status == "completed")).all()]
        stuck = conn.execute(select(func.count()).select_from(dispatch_log).where(
            dispatch_log.c.status == "pending",
            dispatch_log.c.created_at < utcnow() - dt.timedelta(minutes=5))).scalar_one()
        failed_errors = conn.execute(select(func.count()).select_from(dispatch_log).where(
            dispatch_log.c.status == "failed", dispatch_log.c.error_message.is_not(None))).scalar_one()
        legacy = conn.execute(select(func.count()).select_from(notifications)
                              .where(notifications.c.dispatch_id.is_(None))).scalar_one()
        semantic_dupes = conn.execute(text(
            "SELECT COUNT(*) FROM (SELECT user_id, type, issue_id, comment_id, actor_user_id, "
            "COUNT(DISTINCT dispatch_id) AS ids FROM notifications WHERE comment_id IS NOT NULL "
            "AND dispatch_id IS NOT NULL GROUP BY 1, 2, 3, 4, 5 HAVING ids > 1) AS g")).scalar_one()
    assert by_status["completed"] > 3000 and by_status["failed"] > 50 and by_status["pending"] > 10
    assert stuck >= 10 and failed_errors == by_status["failed"]
    latencies.sort()
    assert latencies[0] >= 0
    assert latencies[len(latencies) // 2] < 1.0          # most are fast
    assert latencies[-1] > 60                             # and a tail exists
    assert legacy > 500
    assert semantic_dupes > 50


def test_orders_hold_every_case(demo):
    ws, _ = demo
    db = ws.orders().db
    orders = db["orders"].find({})
    assert {o["status"] for o in orders} == {"DRIVER_ARRIVED", "PICKUP_IMAGES_ADDED",
                                             "DELIVERY_ARRIVED", "DELIVERY_IMAGES_ADDED"}
    legacy_single = [o for o in orders if isinstance(o["images"]["pickup"], dict)]
    legacy_null = [o for o in orders if o["images"]["pickup"] is None or o["images"]["delivery"] is None]
    assert len(legacy_single) > 20 and legacy_null
    emails = db["email_log"].find({})
    per_key: dict = {}
    for e in emails:
        per_key[(e["order_id"], e["event"])] = per_key.get((e["order_id"], e["event"]), 0) + 1
    assert sum(1 for v in per_key.values() if v > 1) > 20            # duplicate admin emails
    grace = utcnow() - dt.timedelta(minutes=10)
    missed = 0
    for o in orders:
        for stage, event in (("pickup", "pickup_images_added"), ("delivery", "delivery_images_added")):
            imgs = stage_images(o, stage)
            if imgs and (o["id"], event) not in per_key and imgs[0]["uploaded_at"] < grace:
                missed += 1
    assert missed > 10


def test_legacy_order_documents_read_as_lists(demo):
    ws, _ = demo
    db = ws.orders().db
    orders = db["orders"].find({})
    single = next(o for o in orders if isinstance(o["images"]["pickup"], dict))
    assert stage_images(single, "pickup") == [single["images"]["pickup"]]
    assert single["images"]["pickup"]["filename"] == "p1.jpg"
    null = next(o for o in orders if o["images"]["delivery"] is None)
    assert stage_images(null, "delivery") == []
    current = next(o for o in orders if isinstance(o["images"]["pickup"], list) and len(o["images"]["pickup"]) > 1)
    assert stage_images(current, "pickup") == current["images"]["pickup"]


def test_seeding_is_deterministic(tmp_path):
    now = dt.datetime(2025, 3, 4, 12, 0, 0)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert build_demo(a, now=now) == build_demo(b, now=now)
    import sqlite3
    for name, table in (("cart.db", "cart_abandonment_log"), ("dispatch.db", "notifications")):
        rows = [sqlite3.connect(d / name).execute(f"SELECT * FROM {table} ORDER BY id").fetchall() for d in (a, b)]
        assert rows[0] == rows[1] and rows[0]
    docs = [json.loads((d / "orders.json").read_text())["collections"]["orders"] for d in (a, b)]
    strip = lambda ds: [{k: v for k, v in d.items() if k != "_id"} for d in ds]  # noqa: E731
    assert strip(docs[0]) == strip(docs[1])


def test_restart_keeps_what_changed(data_dir):
    cfg = ensure_demo_workspace()
    created = json.loads((demo_dir() / "demo.json").read_text())["created_at"]
    ws = bootstrap(cfg)
    ws.orders().db["orders"].update_one({"id": 1001}, {"$set": {"status": "DELIVERY_ARRIVED", "note": "kept"}})
    ws.orders().db["email_log"].delete_many({"order_id": 1002})
    with ws.engine("cart").begin() as conn:
        conn.execute(update(cart_log).where(cart_log.c.id == 1).values(error_message="edited by test"))
    ws.close()                                   # the store checkpoints to orders.json

    again = bootstrap(ensure_demo_workspace())   # a restart: the same workspace, not a new one
    try:
        assert json.loads((demo_dir() / "demo.json").read_text())["created_at"] == created
        order = again.orders().db["orders"].find_one({"id": 1001})
        assert order["note"] == "kept" and order["status"] == "DELIVERY_ARRIVED"
        assert again.orders().db["email_log"].count_documents({"order_id": 1002}) == 0
        with again.engine("cart").connect() as conn:
            assert conn.execute(select(cart_log.c.error_message).where(cart_log.c.id == 1)).scalar_one() == "edited by test"
        # Indexes survive the checkpoint too.
        assert "nc_claim_order_event" in again.orders().db["nc_email_claims"].index_information()
    finally:
        again.close()


def test_reset_recreates(data_dir):
    ws = bootstrap(ensure_demo_workspace())
    ws.orders().db["orders"].delete_many({})
    ws.close()
    assert bootstrap(ensure_demo_workspace()).orders().db["orders"].count_documents({}) == 0
    fresh = bootstrap(ensure_demo_workspace(reset=True))
    try:
        marker = json.loads((demo_dir() / "demo.json").read_text())
        assert fresh.orders().db["orders"].count_documents({}) == marker["counts"]["orders"]["orders"]
    finally:
        fresh.close()
    leftovers = [p.name for p in data_dir.iterdir() if p.name != "demo"]
    assert leftovers == []


def test_demo_reset_from_the_command_line(tmp_path):
    env = {**os.environ, "NC_DATA_DIR": str(tmp_path / "data"), "NC_NO_KEYRING": "1"}
    run = lambda *a: subprocess.run([sys.executable, str(ROOT / "main.py"), *a], capture_output=True,  # noqa: E731
                                    text=True, env=env, timeout=120, cwd=ROOT)
    assert run("--demo", "status").returncode == 0
    marker = tmp_path / "data" / "demo" / "demo.json"
    first = json.loads(marker.read_text())["created_at"]
    (tmp_path / "data" / "demo" / "cart.db").unlink()        # a damaged workspace is rebuilt
    time.sleep(1.1)                                            # created_at has second resolution
    assert run("--demo", "status").returncode == 0
    second = json.loads(marker.read_text())["created_at"]
    assert second != first
    time.sleep(1.1)
    proc = run("--demo", "--reset", "status", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["ok"] is True
    assert json.loads(marker.read_text())["created_at"] not in (first, second)
