"""A bulk retry from the window works on exactly the items it counted, can be cancelled, and names earlier retries.

The confirmation shows a count; that count is a promise (a snapshot of ids
taken when the dialog opened). Items that fail after it are left alone and
counted; Cancel stops between chunks with every finished item recorded.
"""
from __future__ import annotations

import pytest
from sqlalchemy import select

from app.errors import UsageError
from app.schema import nc_action, nc_action_item
from app.services.ledger import ledger_for
from app.services.retry import retry
from tests.helpers import add_failed_dispatches, log_rows, seed_people


@pytest.fixture
def ws(workspace_factory, sql_url):
    ws = workspace_factory(dispatch=sql_url("dispatch"))
    seed_people(ws.engine("dispatch"), issue_ids=(1,), reporter=1, assignee=2, watchers=(3,))
    return ws


def test_a_snapshot_retry_works_on_the_counted_items_only_and_counts_the_later_ones(ws):
    engine = ws.engine("dispatch")
    counted = add_failed_dispatches(engine, 7)
    later = add_failed_dispatches(engine, 3, start=100)     # failed after the dialog counted
    out = retry(ws, "dispatch", snapshot_ids=counted, action_id="gui-1")
    assert out["snapshot"] == 7 and sorted(out["retried_ids"]) == sorted(counted)
    assert out["left_alone"] == 3 and out["cancelled"] is False and out["not_attempted"] == 0
    status = {r["id"]: r["status"] for r in log_rows(engine)}
    assert {status[i] for i in counted} == {"completed"} and {status[i] for i in later} == {"failed"}
    with engine.connect() as conn:
        params = conn.execute(select(nc_action.c.params_json).where(nc_action.c.action_id == "gui-1")).scalar_one()
        items = conn.execute(select(nc_action_item.c.item_id).where(nc_action_item.c.action_id == "gui-1")).scalars()
        assert sorted(int(i) for i in items) == sorted(counted)
    # The ledger keeps the count and a digest, not ten thousand ids.
    assert '"count": 7' in params and "sha256" in params and str(counted[0]) not in params.split("sha256")[0]


def test_the_same_snapshot_under_its_action_id_replays_and_another_is_refused(ws):
    counted = add_failed_dispatches(ws.engine("dispatch"), 4)
    first = retry(ws, "dispatch", snapshot_ids=counted, action_id="gui-2")
    again = retry(ws, "dispatch", snapshot_ids=counted, action_id="gui-2")
    assert again["replayed"] is True and again["retried"] == first["retried"] == 4
    with pytest.raises(Exception, match="other parameters"):
        retry(ws, "dispatch", snapshot_ids=counted[:2], action_id="gui-2")


def test_a_snapshot_with_ids_is_one_sentence(ws):
    with pytest.raises(UsageError, match="not both"):
        retry(ws, "dispatch", ids=["1"], snapshot_ids=[1])


def test_cancel_stops_between_chunks_and_records_every_finished_item(ws):
    engine = ws.engine("dispatch")
    counted = add_failed_dispatches(engine, 1000)   # 20 chunks of 50
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)

    out = retry(ws, "dispatch", snapshot_ids=counted, action_id="gui-3", progress=progress,
                cancel=lambda: bool(seen))   # cancel once the first batch of outcomes is in
    done = out["retried"] + len(out["skipped"]) + len(out["failed"])
    assert out["cancelled"] is True and 0 < done < 1000 and out["not_attempted"] == 1000 - done
    completed = {r["id"] for r in log_rows(engine) if r["status"] == "completed"}
    assert completed == set(out["retried_ids"])
    entry = ledger_for(ws, "dispatch").get("gui-3")
    assert entry is not None and entry.status == "succeeded" and len(entry.items) == done
    assert {int(i["item_id"]) for i in entry.items} == completed


def test_a_second_console_is_told_who_retried_the_item_and_when(ws):
    counted = add_failed_dispatches(ws.engine("dispatch"), 2)
    retry(ws, "dispatch", ids=[str(i) for i in counted], action_id="ana-ws2")
    again = retry(ws, "dispatch", ids=[str(i) for i in counted], action_id="bob-ws3")
    assert again["retried"] == 0
    for skip in again["skipped"]:
        assert skip["reason"].startswith("already retried by ") and skip["reason"].endswith("(already completed)")
    last = ledger_for(ws, "dispatch").last_retries([str(i) for i in counted])
    assert {k: v.action_id for k, v in last.items()} == {str(i): "ana-ws2" for i in counted}


def test_the_items_left_alone_are_counted_in_the_kind_the_snapshot_was_counted_under(ws):
    engine = ws.engine("dispatch")
    counted = add_failed_dispatches(engine, 2)
    add_failed_dispatches(engine, 3, start=100)             # failed later: not stuck
    out = retry(ws, "dispatch", snapshot_ids=counted, kind="stuck", action_id="gui-kind")
    assert out["retried"] == 2 and out["left_alone"] == 0
    assert retry(ws, "dispatch", snapshot_ids=[], kind="failed", action_id="gui-kind-2")["left_alone"] == 3
