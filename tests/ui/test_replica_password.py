"""A read replica's own password: typed in the Connections dialog, kept in the keyring, used by read_url."""
from __future__ import annotations

import tomllib

from PySide6.QtCore import Qt

import ui.connections as connections
from app.bootstrap import Workspace
from app.config import APP_NAME, load_config
from app.status import SourceStatus
from tests.helpers import dialog_on
from tests.ui import test_connections

WAIT = 10_000
memory_keyring = test_connections.memory_keyring   # the Connections tests' keyring of this run only
PRIMARY = "mysql+pymysql://db.example.com:3306/cart"
REPLICA = "mysql+pymysql://replica.example.com:3306/cart"


def save(qtbot, dialog) -> None:
    qtbot.mouseClick(dialog.save_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dialog.saved is not None, timeout=WAIT)


def test_the_replica_password_goes_to_the_keyring_and_read_url_logs_in_with_it(qtbot, tmp_path, memory_keyring):
    path = tmp_path / "config.toml"
    dialog = dialog_on(qtbot, path)
    form = dialog.forms["cart"]
    qtbot.keyClicks(form.url, PRIMARY)
    qtbot.keyClicks(form.user, "ann")
    qtbot.keyClicks(form.password, "primary-pw")
    qtbot.keyClicks(form.read_url, REPLICA)
    qtbot.keyClicks(form.read_password, "replica-pw")
    save(qtbot, dialog)

    assert memory_keyring.entries == {(APP_NAME, "cart"): "primary-pw", (APP_NAME, "cart.read_url"): "replica-pw"}
    written = path.read_text(encoding="utf-8")
    assert "primary-pw" not in written and "replica-pw" not in written
    assert tomllib.loads(written)["sources"]["cart"]["read_url"] == "mysql+pymysql://ann@replica.example.com:3306/cart"

    # The console: actions log in to the primary with its password, lists and counts to the replica with its own.
    ws = Workspace(config=load_config(path))
    try:
        assert ws.engine("cart").url.password == "primary-pw"
        assert ws.reader().engine("cart").url.password == "replica-pw"
        assert ws.reader().engine("cart").url.host == "replica.example.com"
    finally:
        ws.close()

    # Opened again: both fields say a password is stored, neither shows it.
    again = dialog_on(qtbot, path)
    again_form = again.forms["cart"]
    qtbot.waitUntil(lambda: "keyring" in again_form.read_password.placeholderText(), timeout=WAIT)
    assert "keyring" in again_form.password.placeholderText()
    assert again_form.read_password.text() == "" and again_form.read_url.text() == REPLICA


def test_without_its_own_password_the_replica_logs_in_with_the_primarys(qtbot, tmp_path, memory_keyring):
    path = tmp_path / "config.toml"
    dialog = dialog_on(qtbot, path)
    form = dialog.forms["cart"]
    qtbot.keyClicks(form.url, PRIMARY)
    qtbot.keyClicks(form.user, "ann")
    qtbot.keyClicks(form.password, "primary-pw")
    qtbot.keyClicks(form.read_url, REPLICA)
    assert "primary" in form.read_password.placeholderText()
    save(qtbot, dialog)
    assert memory_keyring.entries == {(APP_NAME, "cart"): "primary-pw"}
    ws = Workspace(config=load_config(path))
    try:
        assert ws.reader().engine("cart").url.password == "primary-pw"
    finally:
        ws.close()


def test_test_logs_in_to_the_replica_with_the_typed_then_the_stored_replica_password(
        qtbot, tmp_path, memory_keyring, monkeypatch):
    seen: list[tuple[str, str | None]] = []

    def fake_check(ws, name):
        source = ws.config.source(name)
        seen.append((source.url.split("//", 1)[1].split(":", 1)[0], source.password()))
        return SourceStatus(name=name, kind="sql", backend="mysql", target=source.url, reachable=True,
                            production_schema=True, console_schema=True)
    monkeypatch.setattr(connections, "check_source", fake_check)
    dialog = dialog_on(qtbot, tmp_path / "config.toml")
    form = dialog.forms["cart"]
    qtbot.keyClicks(form.url, PRIMARY)
    qtbot.keyClicks(form.password, "typed-primary")
    qtbot.keyClicks(form.read_url, REPLICA)

    def run_test() -> None:
        seen.clear()
        qtbot.mouseClick(form.test_button, Qt.LeftButton)
        qtbot.waitUntil(lambda: form.test_button.isEnabled() and form.result.text() != "Testing…", timeout=WAIT)
        assert form.result.property("state") == "ok", form.result.text()

    run_test()       # nothing of the replica's own: the primary's typed password
    assert seen == [("db.example.com", "typed-primary"), ("replica.example.com", "typed-primary")]
    memory_keyring.entries[(APP_NAME, "cart.read_url")] = "stored-replica"
    run_test()       # one stored for the replica: that one
    assert seen[1] == ("replica.example.com", "stored-replica")
    qtbot.keyClicks(form.read_password, "typed-replica")
    run_test()       # typed: that one, for this test only
    assert seen[1] == ("replica.example.com", "typed-replica")
    assert memory_keyring.entries == {(APP_NAME, "cart.read_url"): "stored-replica"}   # a test stores nothing
