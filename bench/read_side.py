"""Read-side benchmark on MariaDB at production size.

Loads (once; reused while the row counts match) 5,000,000 dispatch log rows
into ``nc_bench_dispatch`` and 2,000,000 cart rows into ``nc_bench_cart``
(generated CSV through LOAD DATA LOCAL INFILE), runs ``db upgrade`` (the
read-side indexes), then prints median times of:

  incremental poll of 500 new rows          target <= 10 ms
  failed + stuck first page                 target <= 50 ms
  full duplicate scan of 2 M cart rows      target <= 1 s
      (from the console's member index; its rebuild from scratch is timed
      and printed separately)
  incremental duplicate scan                target <= 50 ms
  24 h latency percentiles, 1-minute buckets target <= 500 ms

Usage: python bench/read_side.py [--reload] [--repeat N]
Environment: NC_BENCH_MARIADB_URL (default mysql+pymysql://root@127.0.0.1:3306).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.bootstrap import Workspace  # noqa: E402
from app.config import Config, SourceConfig, Thresholds  # noqa: E402
from app.read import rollup, stats  # noqa: E402
from app.read.duplicates import rebuild_cart_members, scan_duplicates, scan_duplicates_incremental  # noqa: E402
from app.read.failures import failed_items  # noqa: E402
from app.schema import cart_log, dispatch_log  # noqa: E402
from app.schema_setup import create_production_schema, upgrade_sql_source  # noqa: E402

ROOT = os.environ.get("NC_BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306")
DISPATCH_DB, CART_DB = "nc_bench_dispatch", "nc_bench_cart"
DISPATCH_ROWS, CART_ROWS = 5_000_000, 2_000_000
SPAN = dt.timedelta(days=30)
CHUNK = 500_000


def _admin():
    return create_engine(ROOT + "/", isolation_level="AUTOCOMMIT", future=True,
                         connect_args={"local_infile": True})


def _db_engine(name):
    return create_engine(f"{ROOT}/{name}", future=True, connect_args={"local_infile": True})


def _loaded(name, expected) -> bool:
    eng = _admin()
    with eng.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM information_schema.tables WHERE table_schema=:d "
                                 "AND table_name='bench_meta'"), {"d": name}).first():
            return False
        v = conn.execute(text(f"SELECT v FROM `{name}`.bench_meta WHERE k='loaded_rows'")).scalar()
    return v is not None and int(v) == expected


def _fmt(ts: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(ts, unit="ms")


def _load_csv(engine, table, columns, rows_iter):
    with tempfile.TemporaryDirectory() as tmp:
        for i, block in enumerate(rows_iter):
            path = Path(tmp) / f"{table}_{i}.csv"
            path.write_text("\n".join(block) + "\n", encoding="ascii")
            with engine.begin() as conn:
                conn.exec_driver_sql(
                    f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE {table} FIELDS TERMINATED BY ',' "
                    f"LINES TERMINATED BY '\\n' ({', '.join(columns)})")
            path.unlink()
            print(f"  {table}: {(i + 1) * CHUNK:,} rows", flush=True)


def _end_time() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def load_dispatch(end: dt.datetime):
    rng = np.random.default_rng(4)
    admin = _admin()
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{DISPATCH_DB}`")
        conn.exec_driver_sql(f"CREATE DATABASE `{DISPATCH_DB}`")
    eng = _db_engine(DISPATCH_DB)
    create_production_schema(eng, "dispatch")
    start = np.datetime64(end - SPAN, "ms")
    span_ms = int(SPAN.total_seconds() * 1000)

    def blocks():
        for off in range(0, DISPATCH_ROWS, CHUNK):
            n = min(CHUNK, DISPATCH_ROWS - off)
            ids = np.arange(off + 1, off + n + 1)
            created = start + (ids.astype(np.int64) * span_ms // DISPATCH_ROWS).astype("timedelta64[ms]")
            latency = np.maximum(rng.lognormal(np.log(250), 0.8, n), 1).astype(np.int64)
            completed = created + latency.astype("timedelta64[ms]")
            u = rng.random(n)
            status = np.where(u < 0.015, "failed", np.where(u < 0.017, "pending", "completed"))
            dtype = rng.choice(["comment_added", "status_changed", "other"], n, p=[0.6, 0.35, 0.05])
            issue = rng.integers(1, 50_000, n)
            actor = rng.integers(1, 5_000, n)
            c_created, c_completed = _fmt(created), _fmt(completed)
            lines = []
            for i in range(n):
                st = status[i]
                lines.append(
                    f"{ids[i]},d-{ids[i]},{dtype[i]},{issue[i]},{ids[i]},{actor[i]},3,{st},"
                    f"{c_created[i]},{c_completed[i] if st == 'completed' else chr(92) + 'N'},"
                    f"{'SMTPServerDisconnected: connection lost' if st == 'failed' else chr(92) + 'N'}")
            yield lines
    _load_csv(eng, "notification_dispatch_log",
              ["id", "dispatch_id", "dispatch_type", "issue_id", "comment_id", "actor_user_id",
               "recipients_count", "status", "created_at", "completed_at", "error_message"], blocks())
    return eng


def load_cart(end: dt.datetime):
    rng = np.random.default_rng(1)
    admin = _admin()
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{CART_DB}`")
        conn.exec_driver_sql(f"CREATE DATABASE `{CART_DB}`")
    eng = _db_engine(CART_DB)
    create_production_schema(eng, "cart")
    start = np.datetime64(end - SPAN, "ms")
    span_ms = int(SPAN.total_seconds() * 1000)

    def blocks():
        for off in range(0, CART_ROWS, CHUNK):
            n = min(CHUNK, CART_ROWS - off)
            ids = np.arange(off + 1, off + n + 1)
            created = start + (ids.astype(np.int64) * span_ms // CART_ROWS).astype("timedelta64[ms]")
            users = rng.integers(1, 300_000, n)
            carts = rng.integers(0, 2**62, n)
            # ~3 % re-send the cart of a recent row (a duplicate when within 24 h).
            resend = np.nonzero(rng.random(n) < 0.03)[0]
            back = rng.integers(1, 4000, resend.size)
            src = np.maximum(resend - back, 0)
            users[resend] = users[src]
            carts[resend] = carts[src]
            u = rng.random(n)
            sent = u >= 0.02
            sent_at = created + np.maximum(rng.lognormal(np.log(900), 0.6, n), 1).astype("timedelta64[ms]")
            c_created, c_sent = _fmt(created), _fmt(sent_at)
            lines = []
            for i in range(n):
                h = f"{carts[i]:064x}"
                if sent[i]:
                    lines.append(f"{ids[i]},{users[i]},{h},19.90,1,{c_created[i]},{c_sent[i]},\\N")
                else:
                    lines.append(f"{ids[i]},{users[i]},{h},19.90,0,{c_created[i]},\\N,"
                                 f"SMTPRecipientsRefused: mailbox unavailable")
            yield lines
    _load_csv(eng, "cart_abandonment_log",
              ["id", "user_id", "cart_hash", "cart_value", "email_sent", "created_at", "sent_at",
               "error_message"], blocks())
    return eng


def _mark(name, rows):
    eng = _db_engine(name)
    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS bench_meta (k VARCHAR(32) PRIMARY KEY, v VARCHAR(64))")
        conn.exec_driver_sql(f"REPLACE INTO bench_meta VALUES ('loaded_rows', '{rows}')")


def ensure_loaded(reload: bool) -> Workspace:
    end = _end_time()
    for name, rows, loader, source in ((DISPATCH_DB, DISPATCH_ROWS, load_dispatch, "dispatch"),
                                       (CART_DB, CART_ROWS, load_cart, "cart")):
        if reload or not _loaded(name, rows):
            print(f"loading {rows:,} rows into {name} ...", flush=True)
            t0 = time.perf_counter()
            eng = loader(end)
            print("  db upgrade (read-side indexes) ...", flush=True)
            upgrade_sql_source(eng, source)
            _mark(name, rows)
            print(f"  loaded in {time.perf_counter() - t0:.0f} s", flush=True)
    config = Config(path=None, sources={"dispatch": SourceConfig("dispatch", f"{ROOT}/{DISPATCH_DB}"),
                                        "cart": SourceConfig("cart", f"{ROOT}/{CART_DB}")},
                    thresholds=Thresholds())
    ws = Workspace(config=config)
    for source in ("dispatch", "cart"):
        upgrade_sql_source(ws.engine(source), source)
    return ws


def _median_ms(fn, repeat, setup=None):
    times = []
    result = None
    for _ in range(repeat):
        if setup:
            setup()
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


def _count(engine, table):
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reload", action="store_true", help="drop and reload the bench databases")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args(argv)
    from app.read.feeds import poll_dispatch_log
    ws = ensure_loaded(args.reload)
    de, ce = ws.engine("dispatch"), ws.engine("cart")
    with de.connect() as conn:
        data_end = conn.execute(text("SELECT MAX(created_at) FROM notification_dispatch_log")).scalar()
    n_dispatch, n_cart = _count(de, "notification_dispatch_log"), _count(ce, "cart_abandonment_log")
    print(f"rows: notification_dispatch_log {n_dispatch:,}; cart_abandonment_log {n_cart:,}")
    print("catching up the latency rollup ...", flush=True)
    t0 = time.perf_counter()
    rolled = rollup.catch_up(ws, "dispatch")
    print(f"  rollup read {rolled:,} rows in {time.perf_counter() - t0:.1f} s", flush=True)
    results = []

    # 1. incremental poll of 500 new rows
    state = {}

    def add_500():
        with de.connect() as conn:
            state["after"] = conn.execute(text("SELECT MAX(id) FROM notification_dispatch_log")).scalar()
        now = _end_time()
        rows = [{"dispatch_id": f"bench-{time.time_ns()}-{i}", "dispatch_type": "comment_added",
                 "issue_id": 1, "comment_id": i, "actor_user_id": 1, "recipients_count": 2,
                 "status": "completed", "created_at": now, "completed_at": now, "error_message": None}
                for i in range(500)]
        with de.begin() as conn:
            conn.execute(dispatch_log.insert(), rows)
    t, page = _median_ms(lambda: poll_dispatch_log(ws, after_id=state["after"], limit=500), args.repeat, add_500)
    assert len(page.items) == 500, len(page.items)
    results.append(("incremental poll of 500 new dispatch rows", t, 10))

    # 2. failed + stuck first page
    t, items = _median_ms(lambda: failed_items(ws, "dispatch", kinds=("failed", "stuck"), limit=50), args.repeat)
    results.append(("failed + stuck first page (50 of dispatch)", t, 50))
    t, items = _median_ms(lambda: failed_items(ws, "cart", limit=50), args.repeat)
    results.append(("failed + stuck first page (50 of cart)", t, 50))

    # 3. full duplicate scan of the cart log (from the console's member index)
    print("rebuilding the cart duplicate member index from scratch ...", flush=True)
    built = rebuild_cart_members(ws)
    print(f"  rebuild of the member index from scratch: {built['seconds']:.1f} s "
          f"({built['keys']:,} keys, {built['members']:,} member rows of {n_cart:,} cart rows)", flush=True)
    t, groups = _median_ms(lambda: scan_duplicates(ws, "cart"), max(3, args.repeat // 2))
    results.append((f"full duplicate scan of cart ({len(groups):,} groups)", t, 1000))
    del groups  # 55 k groups held here would make every later measure pay for the collector

    # 4. incremental scan after 100 new rows (10 of them re-sends within 24 h)
    cur = {"c": scan_duplicates_incremental(ws, "cart").cursor}

    def add_cart():
        now = _end_time()
        rows = []
        for i in range(100):
            uid = 900_000 + (time.time_ns() % 1_000_000) + i
            rows.append({"user_id": uid, "cart_hash": f"{uid:064x}", "cart_value": 5, "email_sent": 1,
                         "created_at": now, "sent_at": now, "error_message": None})
        rows += [dict(r, created_at=now + dt.timedelta(seconds=1)) for r in rows[:10]]
        with ce.begin() as conn:
            conn.execute(cart_log.insert(), rows)

    def inc():
        out = scan_duplicates_incremental(ws, "cart", cur["c"])
        cur["c"] = out.cursor
        return out
    t, out = _median_ms(inc, args.repeat, add_cart)
    results.append((f"incremental duplicate scan after 110 new rows ({len(out.groups)} groups)", t, 50))

    # 5. 24 h latency percentiles in 1-minute buckets (from the rollup)
    t, series = _median_ms(lambda: stats.latency_stats(ws, "dispatch", window=dt.timedelta(hours=24),
                                                       bucket_seconds=60, now=data_end), args.repeat)
    filled = sum(1 for b in series.buckets if b.count)
    results.append((f"24 h latency p50/p95/p99 in 1-minute buckets ({filled} buckets)", t, 500))
    t, series = _median_ms(lambda: stats.latency_stats(ws, "dispatch", window=dt.timedelta(hours=24),
                                                       bucket_seconds=60, by_type=True, now=data_end),
                           args.repeat)
    results.append(("  the same, per dispatch_type", t, 500))

    print()
    print(f"{'measure':62} {'median':>10} {'target':>8}")
    ok = True
    for name, ms, target in results:
        flag = "ok" if ms <= target else "SLOW"
        ok &= ms <= target
        print(f"{name:62} {ms:8.1f} ms {target:6d} ms  {flag}")
    ws.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
