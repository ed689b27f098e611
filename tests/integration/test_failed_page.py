"""The Failed & Stuck list over several sources pages in, newest first, never losing or repeating an item."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import insert

from app.read.failures import failed_items, failed_page
from app.schema import dispatch_log
from app.sqlutil import db_now
from tests.helpers import add_row, add_user, cart_hash


def test_pages_over_cart_and_dispatch_give_every_item_once_in_order(workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"), dispatch=sql_url("dispatch"))
    uid = add_user(ws.engine("cart"))
    for i in range(23):
        add_row(ws.engine("cart"), uid, cart_hash(f"c{i}"), age=dt.timedelta(minutes=30 + 7 * i), error="451 later")
    with ws.engine("dispatch").begin() as conn:
        now = db_now(conn)
        conn.execute(insert(dispatch_log), [
            {"dispatch_id": f"comment_added:1:{i}:4", "dispatch_type": "comment_added", "issue_id": 1,
             "comment_id": i, "actor_user_id": 4, "status": "failed", "error_message": "Deadlock found",
             "created_at": now - dt.timedelta(minutes=31 + 5 * i)} for i in range(17)])
    everything = (failed_items(ws, "cart", limit=1000) + failed_items(ws, "dispatch", limit=1000))
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = failed_page(ws, ["cart", "dispatch"], limit=6, cursor=cursor)
        seen += page
        pages += 1
        if cursor is None:
            break
    assert pages == 7 and len(seen) == 40 == len(everything)
    assert {(i.source, i.id) for i in seen} == {(i.source, i.id) for i in everything}
    times = [i.created_at for i in seen]
    assert times == sorted(times, reverse=True)


def test_a_filter_selects_on_the_server_and_an_empty_list_ends_at_once(workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"))
    uid = add_user(ws.engine("cart"))
    add_row(ws.engine("cart"), uid, cart_hash("a"), age=dt.timedelta(minutes=40), error="451 try later")
    add_row(ws.engine("cart"), uid, cart_hash("b"), age=dt.timedelta(minutes=50), error="550 no such user")
    page, cursor = failed_page(ws, ["cart"], filter_text="550", limit=10)
    assert [i.error for i in page] == ["550 no such user"] and cursor is None
    assert failed_page(ws, ["cart"], filter_text="nothing like it", limit=10) == ([], None)
