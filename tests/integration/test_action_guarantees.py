"""What an action id promises: one action per id, across sources and consoles."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import insert, select, update

from app.errors import ActionConflict, OperationFailed, PermissionDenied
from app.schema import cart_log, nc_action
from app.services.actions import run_action
from app.services.audit import audit_entries, find_action
from app.services.cleanup import cleanup, undo
from app.services.tokens import params_hash
from tests.helpers import seed_cart_duplicates, table_rows


def test_an_action_id_used_on_one_source_is_refused_on_another(workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"), dispatch=sql_url("dispatch"))
    seed_cart_duplicates(ws.engine("cart"))
    cleanup(ws, "cart", dry_run=False, action_id="shared-key")
    with pytest.raises(ActionConflict, match="already used for a cleanup on cart"):
        cleanup(ws, "dispatch", dry_run=False, action_id="shared-key")
    assert find_action(ws, "shared-key").source == "cart"


def test_a_console_whose_action_was_taken_over_cannot_record_its_result(workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"))
    engine = ws.engine("cart")
    seed_cart_duplicates(engine)
    before = table_rows(engine, cart_log)
    seen = {}

    def slow_body(ctx):
        # While this console works, it looks dead (no heartbeat for a long
        # time) and another console takes the action over and finishes it.
        with engine.begin() as conn:
            conn.execute(update(nc_action).where(nc_action.c.action_id == ctx.action_id)
                         .values(heartbeat_at=dt.datetime(2000, 1, 1)))
        seen["other"] = cleanup(ws, "cart", dry_run=False, action_id=ctx.action_id)
        return {"archived": 999}

    with pytest.raises(ActionConflict, match="taken over by another console"):
        run_action(ws, kind="cleanup", source="cart", params={"dry_run": False}, action_id="contested",
                   body=slow_body)
    entry = find_action(ws, "contested")
    assert entry.status == "succeeded" and entry.outcome["archived"] == seen["other"]["archived"] == 3
    assert len(table_rows(engine, cart_log)) == len(before) - 3


def test_a_killed_cleanup_transaction_can_be_rerun_under_its_id_once_stale(workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"))
    engine = ws.engine("cart")
    seed_cart_duplicates(engine)
    with engine.begin() as conn:   # what a console that died mid-action leaves behind
        conn.execute(insert(nc_action).values(
            action_id="died", kind="cleanup", source="cart", params_json='{"dry_run": false}',
            params_hash=params_hash("cleanup", "cart", {"dry_run": False}),
            operator="gone@elsewhere", role="admin", status="running",
            started_at=dt.datetime(2000, 1, 1), heartbeat_at=dt.datetime(2000, 1, 1), lease_token="old"))
    out = cleanup(ws, "cart", dry_run=False, action_id="died")
    assert out["archived"] == 3 and out["replayed"] is False


def test_a_failed_orders_cleanup_is_undone_from_its_archive(workspace_factory, order_store_url, monkeypatch):
    ws = workspace_factory(orders=order_store_url)
    db = ws.orders().db
    t0 = dt.datetime(2026, 11, 20, 9, 0, 0)
    for order in (1, 2):
        db["email_log"].insert_many([{"order_id": order, "event": "pickup_images_added", "to": "a@x", "subject": "s",
                                      "message_id": f"<{order}-{i}@h>", "transport": "outbox",
                                      "sent_at": t0 + dt.timedelta(seconds=i)} for i in range(2)])
    before = sorted(db["email_log"].find({}), key=lambda d: str(d["_id"]))
    monkeypatch.setenv("NC_FAULT", "cleanup.after_archive:raise")
    with pytest.raises(OperationFailed, match="fault injected"):
        cleanup(ws, "orders", dry_run=False, action_id="half-done")
    monkeypatch.delenv("NC_FAULT")
    assert db["email_log"].count_documents({}) == 3          # the first group was archived before the fault
    assert find_action(ws, "half-done").status == "failed"
    out = undo(ws, "half-done")
    assert out["restored"] == 1
    assert sorted(db["email_log"].find({}), key=lambda d: str(d["_id"])) == before


def test_undo_never_overwrites_a_row_that_took_an_archived_id(workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"))
    engine = ws.engine("cart")
    seed_cart_duplicates(engine)
    before = table_rows(engine, cart_log)
    out = cleanup(ws, "cart", dry_run=False, action_id="c1")
    taken = out["archived_ids"][0]
    squatter = {"id": taken, "user_id": 99, "cart_hash": "z" * 64, "cart_value": 1, "email_sent": 0,
                "created_at": dt.datetime(2026, 11, 25), "sent_at": None, "error_message": None}
    with engine.begin() as conn:
        conn.execute(insert(cart_log).values(**squatter))
    with pytest.raises(OperationFailed, match=rf"Restored 2 rows; 1 archived rows \({taken}\)"):
        undo(ws, "c1")
    with engine.connect() as conn:
        assert conn.execute(select(cart_log.c.user_id).where(cart_log.c.id == taken)).scalar_one() == 99
    with engine.begin() as conn:   # the operator deals with the squatter, then runs the undo again
        conn.execute(cart_log.delete().where(cart_log.c.id == taken))
    again = undo(ws, "c1")
    assert again["restored"] == 1 and again["conflicts"] == []
    assert table_rows(engine, cart_log) == before


def test_a_viewer_is_refused_undo_before_anything_else_and_audited(workspace_factory, sql_url):
    admin = workspace_factory(cart=sql_url("cart"))
    viewer = admin.with_role("viewer")
    with pytest.raises(PermissionDenied, match="viewer role may not undo"):
        undo(viewer, "no-such-action")
    entries, _ = audit_entries(admin, source="cart")
    assert [(e.kind, e.status, e.role) for e in entries] == [("undo", "refused", "viewer")]


def test_simulator_runs_are_audited_and_naive_traffic_takes_an_admin(workspace_factory, sql_url):
    from app.simulate import run_simulation
    admin = workspace_factory(dispatch=sql_url("dispatch"))
    operator = admin.with_role("operator")
    with pytest.raises(PermissionDenied, match="may not run naive traffic"):
        run_simulation(operator.config, "dispatch", "naive", workers=2, events=3)
    result = run_simulation(operator.config, "dispatch", "guarded", workers=2, events=3)
    assert result.duplicates == 0
    entries, _ = audit_entries(admin, source="dispatch")
    assert [(e.kind, e.status, e.role) for e in entries] == [("simulate", "succeeded", "operator"),
                                                             ("simulate_naive", "refused", "operator")]
    assert entries[0].outcome["events"] == 3 and entries[0].params["mode"] == "guarded"
