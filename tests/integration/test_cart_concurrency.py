"""Cart emails under real concurrency on MariaDB: 8 threads and 4 spawned processes at once."""
from __future__ import annotations

import datetime as dt
import hashlib
import multiprocessing
import threading
import traceback

from sqlalchemy import func, insert, select

from app.bootstrap import Workspace
from app.schema import cart_log, cart_users, nc_action
from app.services.mail import OutboxTransport
from app.sqlutil import db_now

THREADS = 8
PROCESSES = 4


def _in_process(config, kind, args, ready, go, results):
    """A separate console: its own Workspace, engine and transport (spawned process)."""
    ws = Workspace(config=config)
    try:
        ready.put(1)
        go.wait(60)
        results.put(_act(ws, kind, args, tag="process"))
    except Exception:  # reported to the test as a result
        results.put(("error", traceback.format_exc()))
    finally:
        ws.close()


def _act(ws, kind, args, tag):
    if kind == "process":
        from app.services.cart import process_abandoned_cart
        out = process_abandoned_cart(ws, *args)
        return (out.status, out.log_id)
    from app.services.retry import retry
    ids, action_id = args
    out = retry(ws, "cart", ids=ids, action_id=action_id)
    return ("retry", out["retried_ids"], [s["id"] for s in out["skipped"]], out["failed"])


def run_everywhere(ws, kind, make_args):
    """Run ``kind`` in THREADS threads here and PROCESSES spawned processes, all released at once."""
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_in_process, args=(ws.config, kind, make_args(f"p{n}"), ready, go, results))
             for n in range(PROCESSES)]
    for p in procs:
        p.start()
    thread_results = []
    lock = threading.Lock()

    def in_thread(n):
        local = Workspace(config=ws.config)  # each thread a console of its own
        try:
            go.wait(60)
            r = _act(local, kind, make_args(f"t{n}"), tag=f"t{n}")
        except Exception:
            r = ("error", traceback.format_exc())
        finally:
            local.close()
        with lock:
            thread_results.append(r)

    threads = [threading.Thread(target=in_thread, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for _ in procs:
        ready.get(timeout=120)
    go.set()
    for t in threads:
        t.join(120)
    proc_results = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    everything = thread_results + proc_results
    errors = [r for r in everything if r[0] == "error"]
    assert not errors, errors[0][1]
    return everything


def chash(label):
    return hashlib.sha256(label.encode()).hexdigest()


def test_twelve_detectors_on_one_abandoned_cart_send_one_email(workspace_factory, mariadb_database, tmp_path):
    ws = workspace_factory(cart=mariadb_database("cart"))
    engine = ws.engine("cart")
    with engine.begin() as conn:
        uid = conn.execute(insert(cart_users).values(email="ann@example.com", name="Ann")).inserted_primary_key[0]
    h = chash("the-cart")
    results = run_everywhere(ws, "process", lambda tag: (uid, h, "1543.00"))
    statuses = sorted(r[0] for r in results)
    assert statuses == ["sent"] + ["skipped"] * (THREADS + PROCESSES - 1)
    assert len(OutboxTransport(tmp_path / "outbox").files()) == 1
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(cart_log)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(cart_log)
                            .where(cart_log.c.email_sent == 1)).scalar() == 1


def test_twelve_consoles_retrying_the_same_failed_rows_send_one_email_per_row(
        workspace_factory, mariadb_database, tmp_path):
    ws = workspace_factory(cart=mariadb_database("cart"))
    engine = ws.engine("cart")
    n_rows = 15
    with engine.begin() as conn:
        now = db_now(conn)
        uids = [conn.execute(insert(cart_users).values(email=f"u{i}@example.com", name=f"U{i}"))
                .inserted_primary_key[0] for i in range(5)]
        ids = [str(conn.execute(insert(cart_log).values(
            user_id=uids[i % 5], cart_hash=chash(f"cart-{i}"), cart_value="10.00", email_sent=0,
            created_at=now - dt.timedelta(minutes=10 + i), error_message="451 4.3.0 try again later"))
            .inserted_primary_key[0]) for i in range(n_rows)]
    results = run_everywhere(ws, "retry", lambda tag: (ids, f"retry-same-rows-{tag}"))
    retried = [i for r in results for i in r[1]]
    assert sorted(retried) == sorted(int(i) for i in ids)  # every row retried exactly once across all consoles
    assert all(r[3] == [] for r in results)  # nobody failed
    assert sum(len(r[1]) + len(r[2]) for r in results) == n_rows * (THREADS + PROCESSES)
    assert len(OutboxTransport(tmp_path / "outbox").files()) == n_rows
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(cart_log)
                            .where(cart_log.c.email_sent == 1)).scalar() == n_rows
        assert conn.execute(select(func.count()).select_from(nc_action)).scalar() == THREADS + PROCESSES
