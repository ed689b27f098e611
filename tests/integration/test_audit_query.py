"""The audit log filtered and paged in each ledger's query, merged across sources in one order."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import insert

from app.schema import nc_action
from app.services.audit import audit_entries, audit_position


def _rows(source: str, n: int, t0: dt.datetime) -> list[dict]:
    return [{"action_id": f"{source}-{i:04d}", "kind": "retry" if i % 3 else "cleanup", "source": source,
             "params_json": "{}", "params_hash": "x", "operator": f"{'ana' if i % 2 else 'ben'}@ws{i % 4}",
             "role": "admin", "status": "succeeded",
             # Every fifth one shares its second with the one before: ties break on the action id.
             "started_at": t0 + dt.timedelta(seconds=i - (i % 5 == 0)), "finished_at": None,
             "message": "smtp refused" if i % 7 == 0 else None} for i in range(n)]


def test_text_and_kind_filter_in_the_query_and_pages_meet_without_gap_or_repeat(workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"), dispatch=sql_url("dispatch"))
    t0 = dt.datetime(2026, 11, 1, 8, 0, 0)
    expected = []
    for source in ("cart", "dispatch"):
        rows = _rows(source, 130, t0)
        with ws.engine(source).begin() as conn:
            conn.execute(insert(nc_action), rows)
        expected += [r for r in rows if "ana@" in r["operator"] and r["kind"] == "retry"]
    got, before = [], None
    while True:
        page, problems = audit_entries(ws, limit=25, text="ANA@", kind="retry", before=before)
        assert problems == []
        got += page
        if len(page) < 25:
            break
        before = audit_position(page[-1])
    assert [e.action_id for e in got] == [r["action_id"] for r in sorted(
        expected, key=lambda r: (r["started_at"], r["action_id"]), reverse=True)]
    smtp, _ = audit_entries(ws, limit=500, text="smtp refused")
    assert len(smtp) == 2 * len(range(0, 130, 7)) and all(e.message == "smtp refused" for e in smtp)
    assert audit_entries(ws, limit=5, text="%")[0] == []      # literal text, never a pattern


def test_the_order_store_ledger_filters_and_pages_the_same_way(workspace_factory, order_store_url):
    ws = workspace_factory(orders=order_store_url)
    rows = _rows("orders", 60, dt.datetime(2026, 11, 1, 8, 0, 0))
    ws.orders().db["nc_actions"].insert_many([dict({k: v for k, v in r.items() if k != "action_id"},
                                                   _id=r["action_id"], params={}) for r in rows])
    expected = [r["action_id"] for r in sorted(rows, key=lambda r: (r["started_at"], r["action_id"]), reverse=True)
                if "ben@" in r["operator"] and r["kind"] == "cleanup"]
    got, before = [], None
    for _ in range(20):
        page, _problems = audit_entries(ws, limit=4, text="Ben@", kind="cleanup", before=before)
        got += [e.action_id for e in page]
        if len(page) < 4:
            break
        before = audit_position(page[-1])
    assert got == expected
