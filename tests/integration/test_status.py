"""``status``: reachability, schemas and row counts, on SQLite, real MariaDB and the order store."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, inspect

from app.bootstrap import Workspace
from app.schema import PRODUCTION_TABLES, cart_log, cart_users
from app.schema_setup import create_production_schema
from app.status import check_all, check_source
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parents[2]
SOURCE_KEYS = {"name", "kind", "backend", "target", "reachable", "reason", "production_schema",
               "console_schema", "counts", "estimated", "elapsed_ms", "ok", "state",
               "database_role", "database_role_reason"}   # what the database user may do, and why not more


def run_main(args, tmp_path, timeout=60):
    env = {**os.environ, "NC_DATA_DIR": str(tmp_path / "data"), "NC_NO_KEYRING": "1"}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)


def test_status_counts_rows_on_each_backend(workspace_factory, sql_url, order_store_url):
    ws = workspace_factory(cart=sql_url("cart"), dispatch=sql_url("dispatch"), orders=order_store_url)
    with ws.engine("cart").begin() as conn:
        conn.execute(insert(cart_users), [{"id": i, "email": f"u{i}@x", "name": f"U{i}"} for i in (1, 2, 3)])
        conn.execute(insert(cart_log), [{"user_id": 1, "cart_hash": "a" * 64, "cart_value": 10,
                                         "email_sent": 1, "created_at": dt.datetime(2025, 1, 1, 10)}])
    ws.orders().db["orders"].insert_many([{"id": 1, "images": {"pickup": None}}, {"id": 2, "images": {}}])
    report = check_all(ws)
    assert [s.name for s in report.sources] == ["orders", "cart", "dispatch"]
    assert report.all_reachable
    by = {s.name: s for s in report.sources}
    assert by["cart"].counts == {"users": 3, "cart_abandonment_log": 1}
    assert by["dispatch"].counts == {"notification_dispatch_log": 0, "notifications": 0, "issues": 0, "users": 0}
    assert by["orders"].counts["orders"] == 2
    assert all(s.ok and s.state == "ok" and s.reason is None for s in report.sources)
    assert set(report.to_dict()["sources"][0]) == SOURCE_KEYS


def test_status_names_db_upgrade_when_console_tables_lack(workspace_factory, sql_url, order_store_url):
    ws = workspace_factory(cart=sql_url("cart"), orders=order_store_url, upgrade=False)
    cart = check_source(ws, "cart")
    assert cart.reachable and cart.production_schema and not cart.console_schema
    assert cart.state == "schema" and "python main.py db upgrade" in cart.reason
    orders = check_source(ws, "orders")
    assert orders.reachable and not orders.console_schema and "python main.py db upgrade" in orders.reason


def test_status_of_a_database_without_production_tables(tmp_path):
    ws = Workspace(config=make_config(dispatch=f"sqlite:///{tmp_path / 'empty.db'}"))
    try:
        s = check_source(ws, "dispatch")
    finally:
        ws.close()
    assert s.reachable and not s.production_schema and not s.console_schema
    assert "has no users, issues" in s.reason and s.counts == {}


def test_status_json_on_the_demo(tmp_path):
    proc = run_main(["--demo", "status", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report) == {"ok", "all_reachable", "role", "effective_role", "role_note", "demo", "sources"}
    assert report["effective_role"] == "admin" and report["role_note"] is None
    assert report["ok"] is True and report["role"] == "admin" and report["demo"] is True
    assert [s["name"] for s in report["sources"]] == ["orders", "cart", "dispatch"]
    for s in report["sources"]:
        assert set(s) == SOURCE_KEYS
        assert s["reachable"] and s["production_schema"] and s["console_schema"] and s["state"] == "ok"
        assert all(isinstance(v, int) and v > 0 for v in s["counts"].values())
        assert s["estimated"] == []   # demo tables are below the exact-count bound
    marker = json.loads((tmp_path / "data" / "demo" / "demo.json").read_text())
    assert report["sources"][1]["counts"]["cart_abandonment_log"] == marker["counts"]["cart"]["cart_abandonment_log"]
    assert report["sources"][2]["counts"]["notifications"] == marker["counts"]["dispatch"]["notifications"]
    assert report["sources"][0]["counts"] == marker["counts"]["orders"]
    # The demo's order store (mongomock) does not say what its user may do: the configured role holds,
    # and the report says so; the SQLite files may do anything.
    orders, cart = report["sources"][0], report["sources"][1]
    assert orders["database_role"] is None and "configured role holds" in orders["database_role_reason"]
    assert cart["database_role"] == "admin"
    text = run_main(["--demo", "status"], tmp_path).stdout
    assert f"database user: {orders['database_role_reason']}" in text and "may act as: admin" in text


def test_status_exit_2_when_one_source_is_down_after_the_full_report(tmp_path):
    good = tmp_path / "cart.db"
    engine = create_engine(f"sqlite:///{good}")
    create_production_schema(engine, "cart")
    engine.dispose()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[sources.cart]\nurl = "sqlite:///{good}"\n'
                   f'[sources.dispatch]\nurl = "mysql+pymysql://nc@127.0.0.1:1/dispatch"\n')
    proc = run_main(["--config", str(cfg), "status", "--json"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    assert report["all_reachable"] is False
    cart, dispatch = report["sources"]
    assert cart["reachable"] is True and cart["state"] == "schema"
    assert dispatch["reachable"] is False and dispatch["state"] == "down"
    assert "cannot be reached" in dispatch["reason"] and "Connection refused" in dispatch["reason"]
    text = run_main(["--config", str(cfg), "status"], tmp_path)
    assert text.returncode == 2 and "UNREACHABLE" in text.stdout and "reachable" in text.stdout


def test_status_with_no_sources_configured(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[console]\nrole = "viewer"\n')
    proc = run_main(["--config", str(cfg), "status"], tmp_path)
    assert proc.returncode == 0
    assert "role: viewer" in proc.stdout and "no sources are configured" in proc.stdout


# --------------------------------------------------------------------------
# The production schema created from data/schemas on real MariaDB matches
# app/schema.py column by column; db upgrade is idempotent from the CLI.

def _norm_type(compiled: str) -> str:
    """A MySQL column type as text, without the display widths MySQL adds to integers."""
    s = re.sub(r"\b(INTEGER|INT|BIGINT)\(\d+\)", r"\1", compiled.upper()).replace(" ", "")
    return s.replace("INTEGER", "INT").replace("NUMERIC", "DECIMAL")


@pytest.mark.mariadb
@pytest.mark.parametrize("source", ["cart", "dispatch"])
def test_schema_from_data_schemas_matches_app_schema_on_mariadb(mariadb_database, source):
    engine = create_engine(mariadb_database(source))
    try:
        create_production_schema(engine, source)
        insp = inspect(engine)
        metadata, names = PRODUCTION_TABLES[source]
        assert set(names) <= set(insp.get_table_names())
        for name in names:
            table = metadata.tables[name]
            reflected = {c["name"]: c for c in insp.get_columns(name)}
            assert list(reflected) == [c.name for c in table.columns], name
            for col in table.columns:
                r = reflected[col.name]
                expected = _norm_type(col.type.compile(dialect=engine.dialect))
                actual = _norm_type(r["type"].compile(dialect=engine.dialect))
                assert actual == expected, (name, col.name, actual, expected)
                assert r["nullable"] == col.nullable, (name, col.name)
            pk = insp.get_pk_constraint(name)["constrained_columns"]
            assert pk == [c.name for c in table.primary_key.columns], name
            uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints(name)}
            uniques |= {tuple(i["column_names"]) for i in insp.get_indexes(name) if i.get("unique")}
            for con in table.constraints:
                if con.__class__.__name__ == "UniqueConstraint":
                    assert tuple(c.name for c in con.columns) in uniques, (name, con)
            for col in table.columns:
                if col.unique:
                    assert (col.name,) in uniques, (name, col.name)
    finally:
        engine.dispose()


@pytest.mark.mariadb
def test_db_upgrade_twice_from_the_cli_on_mariadb(tmp_path, mariadb_database):
    urls = {s: mariadb_database(s) for s in ("cart", "dispatch")}
    for source, url in urls.items():
        engine = create_engine(url)
        create_production_schema(engine, source)
        engine.dispose()
    cfg = tmp_path / "c.toml"
    cfg.write_text("".join(f'[sources.{s}]\nurl = "{u}"\n' for s, u in urls.items()))
    first = run_main(["--config", str(cfg), "db", "upgrade", "--json"], tmp_path)
    second = run_main(["--config", str(cfg), "db", "upgrade", "--json"], tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stdout + first.stderr
    assert json.loads(first.stdout) == json.loads(second.stdout)
    status = json.loads(run_main(["--config", str(cfg), "status", "--json"], tmp_path).stdout)
    assert [s["console_schema"] for s in status["sources"]] == [True, True]
    engine = create_engine(urls["cart"])
    try:
        cols = [c["name"] for c in inspect(engine).get_columns("cart_abandonment_log")]
    finally:
        engine.dispose()
    assert cols == [c.name for c in cart_log.columns]   # production columns untouched
