"""Duplicate scans with ``--filter``, config rules, console cleanups seen by incremental scans, ``--since`` caps.

SQL tests run on SQLite and MariaDB; the literal/case test also on PostgreSQL.
"""
from __future__ import annotations

import datetime as dt
import json

import pytest
from bson import ObjectId
from sqlalchemy import insert

from app import cli
from app.config import BUILTIN_RULE_NAMES, load_config
from app.read import cart_reads
from app.read import duplicates as dup
from app.read.duplicates import apply_scan as merge
from app.read.duplicates import scan_duplicates, scan_duplicates_incremental
from app.schema import cart_log, notifications
from app.services.cleanup import cleanup, undo

T0 = dt.datetime(2024, 3, 1, 8, 0, 0)
HA, HB, HC = "a" * 64, "b" * 64, "c" * 64


def cart_row(user, h, at, sent=1):
    return {"user_id": user, "cart_hash": h, "cart_value": 10, "email_sent": sent, "created_at": at,
            "sent_at": at + dt.timedelta(seconds=3) if sent else None, "error_message": None}


def notif_row(user, dispatch_id, at=T0, type="comment_added", issue=5, comment=77, actor=3, message=None):
    return {"user_id": user, "type": type, "issue_id": issue, "comment_id": comment, "actor_user_id": actor,
            "message": message if message is not None else f"{type} on {issue}", "is_read": 0,
            "created_at": at, "dispatch_id": dispatch_id}


def insert_rows(ws, source, table, rows):
    with ws.engine(source).begin() as conn:
        conn.execute(insert(table), rows)


def members(groups):
    return sorted(tuple(g.member_ids) for g in groups)


def merged(state: dict) -> list:
    return [g for gs in state.values() for g in gs]


# --------------------------------------------------------------------------
# 1. A filter narrows the two-phase scan: phase 1 keeps count > 1 and since

def test_a_filter_narrows_phase_one_instead_of_widening_it(workspace_factory, sql_url, monkeypatch):
    ws = workspace_factory(cart=sql_url("cart"))
    rows = [cart_row(1, HA, T0), cart_row(1, HA, T0 + dt.timedelta(hours=1)),            # 1,2 group
            cart_row(2, HA, T0 + dt.timedelta(days=3)),                                    # 3,4 group, later
            cart_row(2, HA, T0 + dt.timedelta(days=3, hours=1)),
            cart_row(3, HB, T0), cart_row(3, HB, T0 + dt.timedelta(hours=2), sent=0)]     # one sent row only
    rows += [cart_row(100 + i, HA, T0) for i in range(40)]                                 # 40 single keys
    insert_rows(ws, "cart", cart_log, rows)
    spec = cart_reads.builtin_rule_spec(ws)
    with ws.engine("cart").connect() as conn:
        assert dup._candidate_keys(conn, spec, since=None, filter_text="aaa") == [(2, HA), (1, HA)]
        assert dup._candidate_keys(conn, spec, since=T0 + dt.timedelta(days=2), filter_text="AAA") == [(2, HA)]
        assert dup._candidate_keys(conn, spec, since=None, filter_text="bbb") == []
        assert dup._candidate_keys(conn, spec, since=None, filter_text="1") == [(1, HA)]
    fetched = []
    real = dup._rows_for_keys

    def counting(conn, spec, keys):
        out = real(conn, spec, keys)
        fetched.append(len(out))
        return out
    monkeypatch.setattr(dup, "_rows_for_keys", counting)
    assert members(scan_duplicates(ws, "cart", filter_text="aaa")) == [(1, 2), (3, 4)]
    assert sum(fetched) == 4           # only the members of the two duplicate keys, not the 40 singles
    fetched.clear()
    assert members(scan_duplicates(ws, "cart", filter_text="aaa", since=T0 + dt.timedelta(days=2))) == [(3, 4)]
    assert sum(fetched) == 2


# --------------------------------------------------------------------------
# 2. Full and incremental scans pick keys with the same predicate

FILTERS = ["2026", "2024", "7", "77", "1712", "COMMENT", "status", "to closed", "done", "%", "_", "a"]


@pytest.mark.parametrize("text", FILTERS)
def test_full_and_incremental_scans_agree_on_every_filter(workspace_factory, sql_url, text):
    ws = workspace_factory(dispatch=sql_url("dispatch"))
    at = dt.datetime(2026, 1, 5, 9, 0, 0)
    insert_rows(ws, "dispatch", notifications, [notif_row(1, "seed", at), notif_row(1, None, at)])
    first = scan_duplicates_incremental(ws, "dispatch", filter_text=text)
    state = merge({}, first)
    insert_rows(ws, "dispatch", notifications, [
        notif_row(10, None, at), notif_row(10, "comment_added:5:77:3:1712", at + dt.timedelta(seconds=1)),
        notif_row(12, "s:1", at, type="status_changed", comment=None, message="OPS-5 changed to closed"),
        notif_row(12, "s:2", at, type="status_changed", comment=None, message="OPS-5 changed to closed"),
        notif_row(13, "d-1", at, issue=7, message="done"), notif_row(13, "d-2", at, issue=7, message="done")])
    inc = scan_duplicates_incremental(ws, "dispatch", first.cursor, filter_text=text)
    state = merge(state, inc)
    full = scan_duplicates(ws, "dispatch", filter_text=text)
    assert members(merged(state)) == members(full)
    # The SQL filter is the reference: no match through a time or a substring of a number.
    expected = {"2026": [], "2024": [], "7": [(3, 4), (7, 8)], "77": [(1, 2), (3, 4), (7, 8)], "1712": [(3, 4)],
                "COMMENT": [(1, 2), (3, 4), (7, 8)], "status": [(5, 6)], "to closed": [(5, 6)],
                "done": [(7, 8)], "%": [], "_": [(1, 2), (3, 4), (5, 6), (7, 8)],
                "a": [(1, 2), (3, 4), (5, 6), (7, 8)]}
    assert members(full) == expected[text]


def test_an_incremental_scan_drops_a_touched_group_that_does_not_match(workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"))
    insert_rows(ws, "cart", cart_log, [cart_row(1, HA, T0)])
    first = scan_duplicates_incremental(ws, "cart", filter_text="2024")
    insert_rows(ws, "cart", cart_log, [cart_row(1, HA, T0 + dt.timedelta(minutes=5))])
    inc = scan_duplicates_incremental(ws, "cart", first.cursor, filter_text="2024")
    assert inc.groups == [] and inc.touched == {(dup.CART_RULE, (1, HA))}
    inc = scan_duplicates_incremental(ws, "cart", first.cursor, filter_text="AAAA")
    assert members(inc.groups) == [(1, 2)]


def test_order_scans_agree_on_a_filter(workspace_factory, order_store_url):
    ws = workspace_factory(orders=order_store_url)
    db = ws.orders().db
    first = scan_duplicates_incremental(ws, "orders", filter_text="2026")
    now = ws.orders().now()
    db["email_log"].insert_many([
        {"order_id": 7, "event": "pickup_images_added", "to": "Admin@X", "sent_at": now},
        {"order_id": 7, "event": "pickup_images_added", "to": "admin@x", "sent_at": now}])
    for text, want in (("2026", 0), (str(now.year), 0), ("ADMIN@x", 1), ("7", 1), ("pickup", 1), ("77", 0)):
        inc = scan_duplicates_incremental(ws, "orders", first.cursor, filter_text=text)
        assert len(inc.groups) == want == len(scan_duplicates(ws, "orders", filter_text=text)), text


# --------------------------------------------------------------------------
# 3. Literal and case-insensitive on every backend

@pytest.fixture(params=["sqlite", "mariadb", "postgresql"])
def any_sql_url(request, tmp_path):
    def make(label):
        if request.param == "sqlite":
            return f"sqlite:///{tmp_path / (label + '.db')}"
        fixture = "mariadb_database" if request.param == "mariadb" else "postgres_database"
        return request.getfixturevalue(fixture)(label)
    return make


LITERAL_CASES = [
    ("smtp timeout", [(1, 2)]), ("SMTP TIMEOUT", [(1, 2)]), ("100%", [(1, 2)]), ("e_n", [(1, 2)]),
    ("'q'", [(1, 2)]), ("k\\s", [(1, 2)]), ("k/s", [(3, 4)]), ("' OR 1=1 --", []), ("%%", []),
    ("1000", [(3, 4)]), ("_", [(1, 2), (3, 4)]),
]


def test_filter_is_literal_and_case_insensitive_on_every_backend(workspace_factory, any_sql_url):
    ws = workspace_factory(dispatch=any_sql_url("dispatch"))
    first = scan_duplicates_incremental(ws, "dispatch")
    insert_rows(ws, "dispatch", notifications, [
        notif_row(1, "x1", message="SMTP Timeout: 100% done_now 'q' back\\slash"), notif_row(1, "x2"),
        notif_row(2, "y1", message="1000 done-now back/slash"), notif_row(2, "y2", issue=5)])
    for text, want in LITERAL_CASES:
        assert members(scan_duplicates(ws, "dispatch", filter_text=text)) == want, text
        inc = scan_duplicates_incremental(ws, "dispatch", first.cursor, filter_text=text)
        assert members(inc.groups) == want, text
    from app.read.failures import failed_items  # like_any reaches the failed list too
    from app.schema import dispatch_log
    insert_rows(ws, "dispatch", dispatch_log, [{
        "dispatch_id": "f1", "dispatch_type": "comment_added", "issue_id": 5, "comment_id": 1,
        "actor_user_id": 3, "recipients_count": 0, "status": "failed", "created_at": T0, "completed_at": None,
        "error_message": "SMTP Timeout"}])
    assert [i.error for i in failed_items(ws, "dispatch", filter_text="smtp timeout")] == ["SMTP Timeout"]


# --------------------------------------------------------------------------
# 4. Config-defined rules

def test_an_orders_rule_from_the_config_file_scans_documents(tmp_path, workspace_factory, order_store_url):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[duplicate_rules]]\nname = "receipts"\nsource = "orders"\ntable = "receipts"\n'
                   'key = ["order_id"]\ntime_column = "sent_at"\n')
    rules = load_config(cfg).duplicate_rules
    assert rules[0].id_column == "_id"
    ws = workspace_factory(orders=order_store_url, duplicate_rules=rules)
    a, b, c = ObjectId(), ObjectId(), ObjectId()
    ws.orders().db["receipts"].insert_many([{"_id": a, "order_id": 1, "sent_at": T0},
                                            {"_id": b, "order_id": 1, "sent_at": T0 + dt.timedelta(hours=1)},
                                            {"_id": c, "order_id": 2, "sent_at": T0}])
    (g,) = scan_duplicates(ws, "orders", rule="receipts")
    assert g.member_ids == [str(a), str(b)] and g.keep_id == str(a)


def test_config_and_scan_agree_on_the_built_in_rule_names():
    assert set(BUILTIN_RULE_NAMES) == {dup.CART_RULE, dup.DISPATCH_RULE, dup.ORDER_RULE}


# --------------------------------------------------------------------------
# 6. Incremental scans see the console's cleanups and undos

def test_incremental_scan_reports_groups_a_cleanup_removed_and_an_undo_restored(workspace_factory, sql_url):
    ws = workspace_factory(cart=sql_url("cart"))
    insert_rows(ws, "cart", cart_log, [cart_row(1, HA, T0), cart_row(1, HA, T0 + dt.timedelta(hours=1)),
                                       cart_row(2, HB, T0), cart_row(2, HB, T0 + dt.timedelta(hours=2)),
                                       cart_row(3, HC, T0)])
    first = scan_duplicates_incremental(ws, "cart")
    state = merge({}, first)
    assert members(merged(state)) == [(1, 2), (3, 4)]
    cleanup(ws, "cart", dry_run=False, action_id="clean-1")      # another console cleans up
    after = scan_duplicates_incremental(ws, "cart", first.cursor)
    assert after.groups == [] and after.touched == {(dup.CART_RULE, (1, HA)), (dup.CART_RULE, (2, HB))}
    state = merge(state, after)
    assert merged(state) == [] == scan_duplicates(ws, "cart")
    quiet = scan_duplicates_incremental(ws, "cart", after.cursor)
    assert quiet.touched == set()                                  # the same action is no news twice
    undo(ws, "clean-1")
    back = scan_duplicates_incremental(ws, "cart", quiet.cursor)
    state = merge(state, back)
    assert members(back.groups) == [(1, 2), (3, 4)] == members(merged(state))
    assert members(scan_duplicates(ws, "cart")) == [(1, 2), (3, 4)]


def test_incremental_dispatch_scan_sees_a_cleanup(workspace_factory, sql_url):
    ws = workspace_factory(dispatch=sql_url("dispatch"))
    insert_rows(ws, "dispatch", notifications, [notif_row(10, None), notif_row(10, "k", T0 + dt.timedelta(seconds=1)),
                                                notif_row(11, "k")])
    first = scan_duplicates_incremental(ws, "dispatch")
    assert members(first.groups) == [(1, 2)]
    cleanup(ws, "dispatch", dry_run=False, action_id="clean-d")
    after = scan_duplicates_incremental(ws, "dispatch", first.cursor)
    assert after.groups == [] and {k for _, k in after.touched} == {(10, "comment_added", 5, 77, 3)}
    assert merged(merge(merge({}, first), after)) == []


def test_incremental_order_scan_sees_a_cleanup_and_its_undo(workspace_factory, order_store_url):
    ws = workspace_factory(orders=order_store_url)
    db = ws.orders().db
    db["email_log"].insert_many([{"order_id": 1, "event": "pickup_images_added", "sent_at": T0},
                                 {"order_id": 1, "event": "pickup_images_added", "sent_at": T0}])
    first = scan_duplicates_incremental(ws, "orders")
    assert len(first.groups) == 1
    cleanup(ws, "orders", dry_run=False, action_id="clean-o")
    after = scan_duplicates_incremental(ws, "orders", first.cursor)
    assert after.groups == [] and {k for _, k in after.touched} == {(1, "pickup_images_added")}
    quiet = scan_duplicates_incremental(ws, "orders", after.cursor)
    assert quiet.touched == set()
    undo(ws, "clean-o")
    back = scan_duplicates_incremental(ws, "orders", quiet.cursor)
    assert len(back.groups) == 1 and back.groups[0].count == 2


# --------------------------------------------------------------------------
# 5. --since is capped

def test_a_huge_since_is_one_usage_sentence(workspace_factory, tmp_path, capsys):
    ws = workspace_factory(cart=f"sqlite:///{tmp_path / 'cart.db'}")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[sources.cart]\nurl = "{ws.config.sources["cart"].url}"\n')
    for command, since in (("failed", "99999999999d"), ("duplicates", "100000000w"), ("feed", "1" * 400 + "s"),
                           ("duplicates", "3651d")):
        assert cli.run(["--config", str(cfg), command, "--since", since]) == 2, (command, since)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "at most 3650 days" in err and "Traceback" not in err
    assert cli.run(["--config", str(cfg), "duplicates", "--since", "3650d", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
