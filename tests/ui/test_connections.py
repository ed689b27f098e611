"""The Connections dialog: the TOML file (comments kept), the keyring (never the file), Test, read replicas."""
from __future__ import annotations

import time
import tomllib
import uuid
from dataclasses import replace

import keyring
import keyring.backend
import pytest
from PySide6.QtCore import Qt
from sqlalchemy import text

from app.bootstrap import Workspace
from app.config import APP_NAME, load_config
from app.services.retry import retry
from tests.helpers import add_failed_dispatches, dialog_on, log_rows, open_console, seed_people
from ui.main_window import MainWindow

WAIT = 30_000


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring of this test run only: the dialog stores into it as into the desktop's."""

    priority = 1

    def __init__(self):
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.entries.get((service, username))

    def set_password(self, service, username, password):
        self.entries[(service, username)] = password

    def delete_password(self, service, username):
        self.entries.pop((service, username), None)


@pytest.fixture
def memory_keyring(monkeypatch):
    monkeypatch.delenv("NC_NO_KEYRING", raising=False)
    for name in ("ORDERS", "CART", "DISPATCH"):
        monkeypatch.delenv(f"NC_{name}_PASSWORD", raising=False)
    previous = keyring.get_keyring()
    ring = MemoryKeyring()
    keyring.set_keyring(ring)
    yield ring
    keyring.set_keyring(previous)


@pytest.fixture
def db_user(mariadb_admin):
    """Factory: a MariaDB user with ``password`` that may read ``database``; dropped afterwards."""
    made = []

    def make(database: str, password: str) -> str:
        name = f"nc_dlg_{uuid.uuid4().hex[:10]}"
        with mariadb_admin.connect() as conn:
            for host in ("%", "localhost"):
                conn.execute(text(f"CREATE USER '{name}'@'{host}' IDENTIFIED BY '{password}'"))
                conn.execute(text(f"GRANT SELECT ON `{database}`.* TO '{name}'@'{host}'"))
        made.append(name)
        return name
    yield make
    with mariadb_admin.connect() as conn:
        for name in made:
            for host in ("%", "localhost"):
                conn.execute(text(f"DROP USER IF EXISTS '{name}'@'{host}'"))


def host_url(url: str) -> tuple[str, str]:
    """(``mysql+pymysql://127.0.0.1:3306/db`` without the user, the database name)."""
    rest = url.split("://", 1)[1].split("@", 1)[-1]
    return f"mysql+pymysql://{rest}", rest.rsplit("/", 1)[1]


def test_save_writes_the_file_keeping_comments_and_the_password_into_the_keyring(
        qtbot, tmp_path, memory_keyring, workspace_factory, mariadb_database, db_user):
    url = mariadb_database("cart")
    workspace_factory(cart=url)
    bare, database = host_url(url)
    user = db_user(database, "s3cret-pw")
    path = tmp_path / "conf" / "config.toml"
    path.parent.mkdir()
    path.write_text('# Ops console on ws-7\n[console]\nrole = "operator"   # operators retry\n\n'
                    '[thresholds]\ndispatch_stuck_minutes = 7\n', encoding="utf-8")
    dialog = dialog_on(qtbot, path)
    form = dialog.forms["cart"]
    qtbot.keyClicks(form.url, bare)
    qtbot.keyClicks(form.user, user)
    qtbot.keyClicks(form.password, "s3cret-pw")
    qtbot.keyClicks(form.read_url, bare)
    qtbot.mouseClick(form.test_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: form.test_button.isEnabled() and form.result.text() != "Testing…", timeout=WAIT)
    assert form.result.property("state") == "ok", form.result.text()
    assert form.result.text().startswith(f"Connected to {user}@127.0.0.1")
    assert "Read replica: Connected" in form.result.text()
    assert memory_keyring.entries == {}, "a test stores nothing"

    qtbot.mouseClick(dialog.save_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dialog.saved is not None, timeout=WAIT)
    written = path.read_text(encoding="utf-8")
    assert written.startswith("# Ops console on ws-7\n[console]\nrole = \"operator\"   # operators retry\n")
    assert "dispatch_stuck_minutes = 7" in written and "s3cret-pw" not in written
    raw = tomllib.loads(written)
    user_url = bare.replace("://", f"://{user}@")
    assert raw["sources"] == {"cart": {"url": user_url, "read_url": user_url}}
    assert memory_keyring.entries == {(APP_NAME, "cart"): "s3cret-pw"}
    config = load_config(path)
    assert config.role == "operator" and config.sources["cart"].password() == "s3cret-pw"

    # Opened again: the fields show what the file says, the password stays in the keyring.
    again = dialog_on(qtbot, path)
    assert again.forms["cart"].url.text() == bare and again.forms["cart"].user.text() == user
    qtbot.waitUntil(lambda: "keyring" in again.forms["cart"].password.placeholderText(), timeout=WAIT)
    assert again.forms["cart"].password.text() == ""


def test_the_window_creates_the_file_where_the_platform_keeps_it_and_opens_the_new_workspace(
        qtbot, tmp_path, monkeypatch, memory_keyring, workspace_factory, mariadb_database):
    url = mariadb_database("dispatch")
    workspace_factory(dispatch=url)
    path = tmp_path / "nowhere-yet" / "config.toml"
    monkeypatch.setenv("NC_CONFIG", str(path))
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    window.show_welcome(path)
    qtbot.mouseClick(window.welcome.connect_button, Qt.LeftButton)
    dialog = window.connections
    qtbot.keyClicks(dialog.forms["dispatch"].url, url)      # root, no password: nothing for the keyring
    qtbot.mouseClick(dialog.save_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: window.ctx.workspace is not None, timeout=WAIT)
    assert path.exists() and load_config(path).sources["dispatch"].url == url
    assert window.current_page() == "overview" and memory_keyring.entries == {}
    qtbot.waitUntil(lambda: window.indicators["dispatch"].state == "ok", timeout=WAIT)
    assert window.indicators["cart"].state == "absent"


def test_test_reports_a_wrong_password_as_status_does(qtbot, tmp_path, memory_keyring, workspace_factory,
                                                       mariadb_database, db_user):
    url = mariadb_database("cart")
    workspace_factory(cart=url)
    bare, database = host_url(url)
    user = db_user(database, "right-one")
    dialog = dialog_on(qtbot, tmp_path / "config.toml")
    form = dialog.forms["cart"]
    form.url.setText(bare)
    form.user.setText(user)
    form.password.setText("wrong-one")
    started = time.monotonic()
    qtbot.mouseClick(form.test_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: form.test_button.isEnabled() and form.result.text() != "Testing…", timeout=WAIT)
    assert time.monotonic() - started < 10
    assert form.result.property("state") == "down"
    assert form.result.text().startswith("The cart database refused the login (Access denied for user")
    assert form.result.text().endswith("check the user in the URL and NC_CART_PASSWORD or the keyring.")
    assert not (tmp_path / "config.toml").exists()


def test_test_reports_an_unreachable_host_within_10_seconds(qtbot, tmp_path, memory_keyring):
    dialog = dialog_on(qtbot, tmp_path / "config.toml")
    form = dialog.forms["dispatch"]
    form.url.setText("mysql+pymysql://127.0.0.1:1/dispatch")
    form.user.setText("console")
    started = time.monotonic()
    qtbot.mouseClick(form.test_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: form.test_button.isEnabled() and form.result.text() != "Testing…", timeout=WAIT)
    assert time.monotonic() - started < 10
    assert form.result.property("state") == "down"
    assert form.result.text() == ("The dispatch database cannot be reached: Can't connect to MySQL server on "
                                  "'127.0.0.1' ([Errno 111] Connection refused).")


def test_a_url_the_console_would_refuse_is_one_sentence_and_the_file_stays(qtbot, tmp_path, memory_keyring):
    path = tmp_path / "config.toml"
    path.write_text("# mine\n", encoding="utf-8")
    dialog = dialog_on(qtbot, path)
    dialog.forms["orders"].url.setText("mysql+pymysql://db/orders")
    qtbot.mouseClick(dialog.save_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dialog.problem.isVisible(), timeout=WAIT)
    assert dialog.problem.text() == (f"{path}: key 'sources.orders.url' must be a mongodb:// URL: "
                                     "the orders database is MongoDB.")
    assert path.read_text(encoding="utf-8") == "# mine\n" and dialog.saved is None


def test_lists_read_the_replica_and_actions_the_primary(qtbot, workspace_factory, mariadb_database):
    primary = workspace_factory(dispatch=mariadb_database("dispatch"))
    replica = workspace_factory(dispatch=mariadb_database("replica"))
    # Told apart by their contents: 3 failed items on the primary, 5 on the "replica".
    for ws, n in ((primary, 3), (replica, 5)):
        seed_people(ws.engine("dispatch"), issue_ids=(1,), reporter=1, assignee=2, watchers=(3,))
        add_failed_dispatches(ws.engine("dispatch"), n)
    source = primary.config.sources["dispatch"]
    both = Workspace(config=replace(primary.config, sources={
        "dispatch": replace(source, read_url=replica.config.sources["dispatch"].url)}))
    try:
        window, page = open_console(qtbot, both, "failed")
        assert page.model.rowCount() == 5, "the list reads the replica"
        out = retry(both, "dispatch", all_matching=True)
        assert out["retried"] == 3, "the retry works on the primary"
        statuses = {r["status"] for r in log_rows(replica.engine("dispatch"))}
        assert statuses == {"failed"}, "nothing was written to the replica"
    finally:
        both.close()


def test_status_shows_the_primary_and_the_read_replica(tmp_path, capsys, workspace_factory, mariadb_database):
    from app.cli import run
    url = mariadb_database("dispatch")
    workspace_factory(dispatch=url)
    path = tmp_path / "config.toml"
    path.write_text(f'[sources.dispatch]\nurl = "{url}"\nread_url = "mysql+pymysql://nc@127.0.0.1:1/dispatch"\n',
                    encoding="utf-8")
    assert run(["--config", str(path), "status"]) == 2      # a configured replica that cannot be reached
    out = capsys.readouterr().out
    assert "dispatch  reachable  mysql root@127.0.0.1:3306/" in out
    assert "          read replica: UNREACHABLE  nc@127.0.0.1:1/dispatch\n" in out
    assert ("          The dispatch read replica cannot be reached: Can't connect to MySQL server on '127.0.0.1' "
            "([Errno 111] Connection refused).") in out
