"""``status`` row counts: cheap by default (bounded count, then the database's estimate), exact on request."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import event, insert, text

from app import cli, status
from app.schema import cart_log, cart_users
from app.status import check_all, check_source


def _seed_cart(ws, n):
    with ws.engine("cart").begin() as conn:
        conn.execute(insert(cart_users), [{"id": i, "email": f"u{i}@x", "name": f"U{i}"} for i in (1, 2, 3)])
        conn.execute(insert(cart_log), [{"user_id": 1, "cart_hash": f"{i:064d}", "cart_value": 10, "email_sent": 1,
                                         "created_at": dt.datetime(2025, 1, 1, 10)} for i in range(n)])
        if conn.dialect.name in ("mysql", "mariadb"):
            conn.execute(text("ANALYZE TABLE cart_abandonment_log"))
        elif conn.dialect.name == "postgresql":
            conn.execute(text("ANALYZE cart_abandonment_log"))


def _statements(engine):
    seen = []
    event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def _check_estimates(ws, monkeypatch):
    monkeypatch.setattr(status, "EXACT_BELOW", 10)
    seen = _statements(ws.engine("cart"))
    cheap = check_source(ws, "cart")
    assert cheap.reachable and cheap.estimated == ("cart_abandonment_log",)
    assert cheap.counts["users"] == 3                                   # small: exact
    assert 40 <= cheap.counts["cart_abandonment_log"] <= 60             # the database's estimate
    counts = [s for s in seen if "count(" in s.lower()]
    assert counts and all("limit" in s.lower() for s in counts)       # never a whole-table COUNT
    exact = check_source(ws, "cart", exact=True)
    assert exact.counts == {"users": 3, "cart_abandonment_log": 50} and exact.estimated == ()


def test_big_tables_show_estimates_and_exact_counts_on_request(workspace_factory, sql_url, monkeypatch):
    ws = workspace_factory(cart=sql_url("cart"))
    _seed_cart(ws, 50)
    _check_estimates(ws, monkeypatch)


@pytest.mark.postgres
def test_estimates_on_postgresql(workspace_factory, postgres_database, monkeypatch):
    ws = workspace_factory(cart=postgres_database("cart"))
    _seed_cart(ws, 50)
    _check_estimates(ws, monkeypatch)


def test_order_collections_estimated_above_the_bound(workspace_factory, order_store_url, monkeypatch):
    ws = workspace_factory(orders=order_store_url)
    ws.orders().db["orders"].insert_many([{"id": i, "images": {}} for i in range(5)])
    ws.orders().db["email_log"].insert_one({"order_id": 1, "event": "pickup_images_added"})
    monkeypatch.setattr(status, "EXACT_BELOW", 3)
    cheap = check_source(ws, "orders")
    assert cheap.counts == {"orders": 5, "email_log": 1} and cheap.estimated == ("orders",)
    exact = check_source(ws, "orders", exact=True)
    assert exact.counts == {"orders": 5, "email_log": 1} and exact.estimated == ()


def test_cli_marks_estimates_and_exact_counts_every_row(workspace_factory, tmp_path, order_store_url,
                                                        monkeypatch, capsys):
    ws = workspace_factory(cart=f"sqlite:///{tmp_path / 'cart.db'}")
    _seed_cart(ws, 50)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[sources.cart]\nurl = "{ws.config.sources["cart"].url}"\n')
    monkeypatch.setattr(status, "EXACT_BELOW", 10)
    assert cli.run(["--config", str(cfg), "status", "--json"]) == 0
    cart = json.loads(capsys.readouterr().out)["sources"][0]
    assert cart["counts"] == {"users": 3, "cart_abandonment_log": 50}
    assert cart["estimated"] == ["cart_abandonment_log"]
    assert cli.run(["--config", str(cfg), "status"]) == 0
    out = capsys.readouterr().out
    assert "users 3, cart_abandonment_log ~50" in out and "status --exact" in out
    assert cli.run(["--config", str(cfg), "status", "--exact", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sources"][0]["estimated"] == []
    assert cli.run(["--config", str(cfg), "status", "--exact"]) == 0
    assert "cart_abandonment_log 50" in capsys.readouterr().out


def test_check_all_passes_exact_through(workspace_factory, tmp_path, monkeypatch):
    ws = workspace_factory(cart=f"sqlite:///{tmp_path / 'cart.db'}")
    _seed_cart(ws, 20)
    monkeypatch.setattr(status, "EXACT_BELOW", 10)
    assert check_all(ws).sources[0].estimated == ("cart_abandonment_log",)
    assert check_all(ws, exact=True).sources[0].estimated == ()
