"""The effective role: the lower of the configured role and what the database user may do."""
from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import text

from app.bootstrap import Workspace
from app.cli import run
from app.config import Config, SourceConfig
from app.grants import grant_statements
from tests.helpers import add_failed_dispatches, open_console, seed_people

WAIT = 30_000


@pytest.fixture
def user_with_grants(mariadb_admin, monkeypatch):
    """Factory: the URL of ``url``'s database as a new user holding ``db grants`` of ``role`` there."""
    made = []

    def make(url: str, source: str, role: str) -> str:
        database = url.rsplit("/", 1)[1]
        name = f"nc_eff_{uuid.uuid4().hex[:10]}"
        password = uuid.uuid4().hex
        with mariadb_admin.connect() as conn:
            for host in ("%", "localhost"):
                conn.execute(text(f"CREATE USER '{name}'@'{host}' IDENTIFIED BY '{password}'"))
                for stmt in grant_statements(source, role, f"'{name}'@'{host}'", database):
                    conn.execute(text(stmt))
        made.append(name)
        monkeypatch.setenv(f"NC_{source.upper()}_PASSWORD", password)
        return url.replace("://root@", f"://{name}@")
    yield make
    with mariadb_admin.connect() as conn:
        for name in made:
            for host in ("%", "localhost"):
                conn.execute(text(f"DROP USER IF EXISTS '{name}'@'{host}'"))


def test_a_read_only_database_user_makes_an_admin_console_a_viewer(qtbot, workspace_factory, mariadb_database,
                                                                    user_with_grants):
    root_ws = workspace_factory(dispatch=mariadb_database("dispatch"))
    seed_people(root_ws.engine("dispatch"), issue_ids=(1,), reporter=1, assignee=2, watchers=(3,))
    add_failed_dispatches(root_ws.engine("dispatch"), 2)
    url = user_with_grants(root_ws.config.sources["dispatch"].url, "dispatch", "viewer")
    ws = Workspace(config=Config(path=None, sources={"dispatch": SourceConfig("dispatch", url)}, role="admin"))
    try:
        window, page = open_console(qtbot, ws, "failed")
        qtbot.waitUntil(lambda: window.role_label.text() != "role: admin", timeout=WAIT)
        assert window.role_label.text() == ("role: viewer (config says admin; the dispatch database user cannot "
                                            "update notification_dispatch_log)")
        assert window.ctx.role == "viewer"
        page.table.selectAll()
        assert page.selected_rows()
        assert not page.retry_button.isEnabled() and not page.retry_all_button.isEnabled()
        assert "this console's role is viewer" in page.retry_all_button.toolTip()
    finally:
        ws.close()


def test_status_prints_the_effective_role_and_says_why(tmp_path, capsys, workspace_factory, mariadb_database,
                                                       user_with_grants):
    root_ws = workspace_factory(cart=mariadb_database("cart"))
    url = user_with_grants(root_ws.config.sources["cart"].url, "cart", "operator")
    path = tmp_path / "config.toml"
    path.write_text(f'[sources.cart]\nurl = "{url}"\n[console]\nrole = "admin"\n', encoding="utf-8")
    assert run(["--config", str(path), "status"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "role: operator (config says admin; the cart database user cannot delete)"
    assert run(["--config", str(path), "status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["role"] == "admin" and report["effective_role"] == "operator"
    assert report["role_note"] == "config says admin; the cart database user cannot delete"


def test_a_user_with_every_grant_keeps_the_configured_role(tmp_path, capsys, monkeypatch, workspace_factory,
                                                           mariadb_database, user_with_grants):
    root_ws = workspace_factory(cart=mariadb_database("cart"))
    url = user_with_grants(root_ws.config.sources["cart"].url, "cart", "admin")
    path = tmp_path / "config.toml"
    path.write_text(f'[sources.cart]\nurl = "{url}"\n[console]\nrole = "admin"\n', encoding="utf-8")
    assert run(["--config", str(path), "status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["effective_role"] == "admin" and report["role_note"] is None
    # Root may do anything: a viewer configuration stays a viewer (the lower of the two).
    monkeypatch.delenv("NC_CART_PASSWORD")
    path.write_text(f'[sources.cart]\nurl = "{root_ws.config.sources["cart"].url}"\n', encoding="utf-8")
    assert run(["--config", str(path), "status"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "role: viewer"
