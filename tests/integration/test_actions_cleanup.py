"""Admin actions: roles, idempotent action ids, cleanup with archive, undo, audit."""
from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from app.errors import ActionConflict, PermissionDenied
from app.schema import cart_log, nc_action, nc_archive
from app.services.audit import audit_entries, find_action
from app.services.cleanup import cleanup, undo
from tests.helpers import seed_cart_duplicates, table_rows

ROOT = Path(__file__).resolve().parents[2]


def test_cleanup_preview_apply_undo_restores_identical_rows(workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"))
    engine = ws.engine("cart")
    seed_cart_duplicates(engine)
    before = table_rows(engine, cart_log)

    preview = cleanup(ws, "cart", dry_run=True)
    assert preview["dry_run"] is True and preview["action_id"] is None
    assert preview["archived"] == 3 and preview["kept"] == 2
    assert sorted(preview["archived_ids"]) == [2, 3, 5]
    assert table_rows(engine, cart_log) == before        # a preview changes nothing

    applied = cleanup(ws, "cart", dry_run=False, action_id="clean-1")
    assert applied["archived"] == 3 and sorted(applied["archived_ids"]) == [2, 3, 5]
    after = table_rows(engine, cart_log)
    assert len(before) == len(after) + applied["archived"]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(nc_archive)).scalar_one() == 3

    restored = undo(ws, "clean-1")
    assert restored["restored"] == 3 and restored["action_id"] == "clean-1"
    assert table_rows(engine, cart_log) == before         # same ids, same values

    again = undo(ws, "clean-1")                          # idempotent: nothing twice
    assert again["replayed"] is True
    assert table_rows(engine, cart_log) == before


def test_same_action_id_twice_has_one_effect_and_other_params_are_refused(workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"))
    seed_cart_duplicates(ws.engine("cart"))
    first = cleanup(ws, "cart", dry_run=False, action_id="same-key")
    # New duplicates appear; the same action id must not act again.
    seed_cart_duplicates(ws.engine("cart"), now=dt.datetime(2026, 11, 22, 8, 0, 0))
    second = cleanup(ws, "cart", dry_run=False, action_id="same-key")
    assert second["replayed"] is True
    assert second["archived_ids"] == first["archived_ids"]
    with ws.engine("cart").connect() as conn:
        assert conn.execute(select(func.count()).select_from(nc_archive)).scalar_one() == first["archived"]
    from app.services.retry import retry
    with pytest.raises(ActionConflict, match="other parameters"):
        retry(ws, "cart", ids=["1"], action_id="same-key")


def test_viewer_and_operator_are_refused_and_audited(workspace_factory, sql_url):
    url = sql_url("cart")
    admin = workspace_factory(cart=url)
    seed_cart_duplicates(admin.engine("cart"))
    before = table_rows(admin.engine("cart"), cart_log)
    for role in ("viewer", "operator"):
        ws = admin.with_role(role)
        with pytest.raises(PermissionDenied, match=f"{role} role may not cleanup"):
            cleanup(ws, "cart", dry_run=False)
    viewer = admin.with_role("viewer")
    from app.services.retry import retry
    with pytest.raises(PermissionDenied, match="viewer role may not retry"):
        retry(viewer, "cart", ids=["1"])
    assert table_rows(admin.engine("cart"), cart_log) == before
    entries, problems = audit_entries(admin, source="cart")
    refused = [e for e in entries if e.status == "refused"]
    assert problems == []
    assert sorted((e.role, e.kind) for e in refused) == [("operator", "cleanup"), ("viewer", "cleanup"), ("viewer", "retry")]
    assert all("@" in e.operator for e in refused)
    # A preview reads only: every role may look.
    assert cleanup(viewer, "cart", dry_run=True)["archived"] == 3


def _cleanup_in_process(config, action_id, barrier, queue):
    from app.bootstrap import bootstrap
    ws = bootstrap(config)
    barrier.wait()
    try:
        out = cleanup(ws, "cart", dry_run=False, action_id=action_id)
        queue.put((action_id, out["archived"], sorted(out["archived_ids"])))
    except Exception as exc:  # reported to the test, which fails on it
        queue.put((action_id, "error", repr(exc)))
    finally:
        ws.close()


@pytest.mark.mariadb
def test_four_processes_apply_the_same_cleanup_at_once(workspace_factory, mariadb_database):
    ws = workspace_factory(cart=mariadb_database("cart"))
    engine = ws.engine("cart")
    for day in range(40):   # 40 rounds of the hand-made pattern: 120 duplicate rows
        seed_cart_duplicates(engine, now=dt.datetime(2026, 9, 1) + dt.timedelta(days=3 * day))
    before = table_rows(engine, cart_log)
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_cleanup_in_process, args=(ws.config, f"race-{i}", barrier, queue)) for i in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(r[1] != "error" for r in results), results
    archived = [r for r in results if r[1] > 0]
    assert len(archived) == 1, results                    # one action archives them ...
    assert archived[0][1] == 120
    assert sum(r[1] for r in results) == 120              # ... the others archive nothing
    after = table_rows(engine, cart_log)
    assert len(before) == len(after) + 120
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(nc_archive)).scalar_one() == 120
    undo(ws, archived[0][0])
    assert table_rows(engine, cart_log) == before


@pytest.mark.mariadb
def test_killed_cleanup_is_all_or_nothing(workspace_factory, mariadb_database, tmp_path):
    url = mariadb_database("cart")
    ws = workspace_factory(cart=url)
    engine = ws.engine("cart")
    seed_cart_duplicates(engine)
    before = table_rows(engine, cart_log)
    cfg = tmp_path / "nc.toml"
    cfg.write_text(f'[console]\nrole = "admin"\n[sources.cart]\nurl = "{url}"\n')
    reached = tmp_path / "reached"
    env = dict(os.environ, NC_FAULT="cleanup.after_archive:sleep=120", NC_FAULT_REACHED=str(reached),
               NC_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--config", str(cfg), "cleanup",
                             "--source", "cart", "--apply", "--action-id", "killed-1"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while not reached.exists():   # it has archived and deleted, and not committed
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the cleanup never reached its fault point: {proc.communicate()}")
            time.sleep(0.02)
        with engine.connect() as conn:   # its transaction is open, holding the changes
            open_changes = conn.execute(text(
                "SELECT MAX(t.trx_rows_modified) FROM information_schema.INNODB_TRX t "
                "JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
                "WHERE p.DB = DATABASE()")).scalar_one()
        assert open_changes and open_changes >= 6
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert table_rows(engine, cart_log) == before          # nothing removed ...
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(nc_archive)).scalar_one() == 0   # ... nothing archived
        status = conn.execute(select(nc_action.c.status).where(nc_action.c.action_id == "killed-1")).scalar_one()
    assert status == "running"   # the audit log shows it never finished
    out = cleanup(ws, "cart", dry_run=False, action_id="after-kill")
    assert out["archived"] == 3


def test_undo_refuses_unknown_and_non_cleanup_actions(workspace_factory, sql_url):
    from app.errors import UsageError
    ws = workspace_factory(cart=sql_url("cart"))
    with pytest.raises(UsageError, match="No action nope"):
        undo(ws, "nope")


def test_order_email_log_cleanup_and_undo(workspace_factory, order_store_url):
    ws = workspace_factory(orders=order_store_url)
    db = ws.orders().db
    t0 = dt.datetime(2026, 11, 20, 9, 0, 0)
    docs = [{"order_id": 1042, "event": "pickup_images_added", "to": "admin@example.com", "subject": "s",
             "message_id": f"<m{i}@h>", "transport": "outbox", "sent_at": t0 + dt.timedelta(seconds=i)} for i in range(3)]
    docs.append({"order_id": 1042, "event": "delivery_images_added", "to": "admin@example.com", "subject": "s",
                 "message_id": "<d@h>", "transport": "outbox", "sent_at": t0})
    db["email_log"].insert_many(docs)
    before = sorted(db["email_log"].find({}), key=lambda d: str(d["_id"]))
    preview = cleanup(ws, "orders", dry_run=True)
    assert preview["archived"] == 2 and preview["kept"] == 1
    out = cleanup(ws, "orders", dry_run=False, action_id="orders-clean")
    assert out["archived"] == 2
    assert db["email_log"].count_documents({}) == 2
    assert cleanup(ws, "orders", dry_run=False, action_id="orders-clean-2")["archived"] == 0
    back = undo(ws, "orders-clean")
    assert back["restored"] == 2
    assert sorted(db["email_log"].find({}), key=lambda d: str(d["_id"])) == before
    assert find_action(ws, "undo-orders-clean").status == "succeeded"


def test_a_cleanup_of_selected_groups_archives_only_those(workspace_factory, sql_url):
    from app.services.cleanup import cleanup as run_cleanup
    from tests.helpers import seed_cart_duplicates as seed
    ws = workspace_factory(cart=sql_url("cart"))
    seed(ws.engine("cart"))
    preview = run_cleanup(ws, "cart", dry_run=True)
    assert preview["group_count"] == 2
    first = preview["groups"][0]
    chosen = run_cleanup(ws, "cart", dry_run=True, keep_ids=[first["keep_id"]])
    assert chosen["group_count"] == 1 and chosen["archived_ids"] == first["archived_ids"]
    done = run_cleanup(ws, "cart", dry_run=False, keep_ids=[first["keep_id"]], action_id="cleanup-selected")
    assert done["archived_ids"] == first["archived_ids"]
    assert run_cleanup(ws, "cart", dry_run=True)["group_count"] == 1   # the other group is still there
