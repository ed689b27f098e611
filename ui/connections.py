"""The Connections dialog: each source's URL, user, password (keyring), read replica and its password, and a Test.

Everything that touches the network, the keyring or the file runs on the
task pool: Test is the ``status`` check of that one source (the same
sentences, within 10 s), Save writes the TOML file (comments and unknown
keys kept, ``app.config_write``) and the passwords into the OS keyring,
never into the file.
"""
from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.bootstrap import Workspace
from app.config import Config, ConfigError, SourceConfig, default_config_path, load_config, validate_url
from app.config_write import SourceEntry, save_sources, split_user, store_password, stored_password, with_user
from app.registry import SOURCES
from app.status import check_source

from .context import AppContext
from .icons import icon
from .tasks import TaskError
from .widgets import repolish

PLACEHOLDERS = {"mongo": "mongodb://db.example.com:27017/orders",
                "sql": "mysql+pymysql://db.example.com:3306/{name}"}
KEYRING_HINT = "stored in the system keyring"
REPLICA_HINT = "empty: the replica logs in with the primary's password"


def test_connection(name: str, url: str, read_url: str, password: str | None,
                    read_password: str | None = None) -> list[tuple[str, bool, str]]:
    """The ``status`` check of one source as typed (and of its replica): [(which, ok, sentence)].

    Runs in a task. The typed passwords are used for this test only; without one the stored one
    (environment, keyring) is used, as the console will. The replica logs in with its own password
    where one is typed or stored, else with the primary's.
    """
    validate_url(None, name, url)
    if read_url:
        validate_url(None, name, read_url, "read_url")
    out = []
    for which, target in (("primary", url), ("read replica", read_url)):
        if not target:
            continue
        secret = password
        if which != "primary":
            secret = read_password if read_password is not None else SourceConfig(name, target).replica_password()
            if secret is None:
                secret = password
        ws = Workspace(config=Config(path=None, sources={name: SourceConfig(name, target, secret=secret,
                                                                            replica=which != "primary")}))
        started = time.monotonic()
        try:
            status = check_source(ws, name)
        finally:
            ws.close()
        ms = int((time.monotonic() - started) * 1000)
        if status.ok:
            out.append((which, True, f"Connected to {status.target} in {ms:,} ms: production schema present, "
                                     "console schema ready."))
        elif status.reachable:
            out.append((which, True, f"Connected to {status.target} in {ms:,} ms. {status.reason}"))
        else:
            out.append((which, False, status.reason or f"The {name} database cannot be reached."))
    return out


class SourceForm(QFrame):
    """One source's fields, its Test button and the test's answer."""

    def __init__(self, source, parent: QWidget | None = None):
        super().__init__(parent)
        self.name = source.name
        self.setObjectName("card")
        v = QVBoxLayout(self)
        v.setContentsMargins(16, 12, 16, 12)
        v.setSpacing(8)
        top = QHBoxLayout()
        ic = QLabel()
        ic.setPixmap(icon("database", "#2563eb").pixmap(18, 18))
        title = QLabel(f"{source.label}  <span style='color:#64748b;font-weight:400'>"
                       f"({'MongoDB' if not source.is_sql else 'MySQL/MariaDB, PostgreSQL or SQLite'})</span>")
        title.setObjectName("cardTitle")
        top.addWidget(ic)
        top.addWidget(title, 1)
        self.test_button = QPushButton("Test")
        self.test_button.setObjectName("secondary")
        self.test_button.setToolTip("Connect with what is typed here, as the console will (at most 10 s)")
        top.addWidget(self.test_button)
        v.addLayout(top)
        form = QFormLayout()
        form.setHorizontalSpacing(12)
        form.setVerticalSpacing(6)
        kind = "sql" if source.is_sql else "mongo"
        self.url = QLineEdit()
        self.url.setObjectName(f"{self.name}Url")
        self.url.setPlaceholderText(PLACEHOLDERS[kind].format(name=self.name) + "   (empty: not watched)")
        self.user = QLineEdit()
        self.user.setObjectName(f"{self.name}User")
        self.user.setPlaceholderText("the database user")
        self.password = QLineEdit()
        self.password.setObjectName(f"{self.name}Password")
        self.password.setEchoMode(QLineEdit.Password)
        self.password.setPlaceholderText("not stored yet")
        self.read_url = QLineEdit()
        self.read_url.setObjectName(f"{self.name}ReadUrl")
        self.read_url.setPlaceholderText("optional read replica: lists, counts and charts read there")
        self.read_password = QLineEdit()
        self.read_password.setObjectName(f"{self.name}ReadPassword")
        self.read_password.setEchoMode(QLineEdit.Password)
        self.read_password.setPlaceholderText(REPLICA_HINT)
        form.addRow("URL", self.url)
        form.addRow("User", self.user)
        form.addRow("Password", self.password)
        form.addRow("Read replica", self.read_url)
        form.addRow("Replica password", self.read_password)
        v.addLayout(form)
        self.result = QLabel()
        self.result.setObjectName("testResult")
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.result.hide()
        v.addWidget(self.result)

    def load(self, source: SourceConfig | None) -> None:
        if source is None:
            return
        url, user = split_user(source.url)
        self.url.setText(url)
        self.user.setText(user)
        self.read_url.setText(split_user(source.read_url)[0] if source.read_url else "")

    def entry(self) -> SourceEntry:
        user = self.user.text()
        read = self.read_url.text().strip()
        return SourceEntry(url=with_user(self.url.text(), user) if self.url.text().strip() else "",
                           read_url=with_user(read, user) if read else "")

    def typed_password(self) -> str | None:
        return self.password.text() or None

    def typed_read_password(self) -> str | None:
        return self.read_password.text() or None

    def show_result(self, state: str, text: str) -> None:
        self.result.setText(text)
        self.result.setProperty("state", state)
        repolish(self.result)
        self.result.show()


class ConnectionsDialog(QDialog):
    """Add or change the console's connections; Save writes the file and the keyring, then reopens."""

    sig_saved = Signal(object)          # the Config written

    def __init__(self, ctx: AppContext, path: Path | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctx = ctx
        self.setObjectName("connectionsDialog")
        self.setWindowTitle("Connections")
        self.setWindowIcon(icon("app"))
        self.setMinimumWidth(680)
        self.path = Path(path) if path is not None else default_config_path()
        self.saved: Config | None = None
        v = QVBoxLayout(self)
        v.setContentsMargins(20, 16, 20, 14)
        v.setSpacing(10)
        intro = QLabel(f"Saved to <code>{self.path}</code> (made if missing; comments and other settings are "
                       "kept). Passwords go to the system keyring, never into the file.")
        intro.setObjectName("muted")
        intro.setWordWrap(True)
        intro.setTextInteractionFlags(Qt.TextSelectableByMouse)
        v.addWidget(intro)
        self.problem = QLabel()
        self.problem.setObjectName("testResult")
        self.problem.setProperty("state", "down")
        self.problem.setWordWrap(True)
        self.problem.hide()
        v.addWidget(self.problem)
        self.forms: dict[str, SourceForm] = {}
        for source in SOURCES:
            form = SourceForm(source)
            form.test_button.clicked.connect(lambda _c=False, n=source.name: self.test(n))
            self.forms[source.name] = form
            v.addWidget(form)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Save | QDialogButtonBox.Cancel)
        self.save_button = self.buttons.button(QDialogButtonBox.Save)
        self.buttons.button(QDialogButtonBox.Cancel).setObjectName("secondary")
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        v.addWidget(self.buttons)
        self._load()

    def _load(self) -> None:
        if self.path.exists():
            try:
                config = load_config(self.path)
            except ConfigError as exc:
                self.show_problem(exc.message)
            else:
                for name, form in self.forms.items():
                    form.load(config.sources.get(name))
        # The keyring may ask the desktop (D-Bus): off the GUI thread.
        self.ctx.tasks.submit(lambda: {n: (stored_password(n) is not None,
                                           stored_password(n, replica=True) is not None) for n in self.forms},
                              on_done=self._stored, key="connections-keyring")

    def _stored(self, stored: dict[str, tuple[bool, bool]]) -> None:
        for name, (primary, replica) in stored.items():
            if primary:
                self.forms[name].password.setPlaceholderText(f"{KEYRING_HINT} (type to replace)")
            if replica:
                self.forms[name].read_password.setPlaceholderText(f"{KEYRING_HINT} (type to replace)")

    def show_problem(self, text: str) -> None:
        self.problem.setText(text)
        repolish(self.problem)
        self.problem.show()

    # Test ----------------------------------------------------------------------
    def test(self, name: str) -> None:
        form = self.forms[name]
        entry = form.entry()
        if not entry.url:
            form.show_result("down", f"Type the {name} URL first.")
            return
        form.test_button.setEnabled(False)
        form.show_result("checking", "Testing…")

        def done(results) -> None:
            form.test_button.setEnabled(True)
            lines = [(f"Read replica: {text}" if which != "primary" else text) for which, _ok, text in results]
            form.show_result("ok" if all(ok for _w, ok, _t in results) else "down", "\n".join(lines))

        def failed(err: TaskError) -> None:
            form.test_button.setEnabled(True)
            form.show_result("down", err.message)
        self.ctx.tasks.submit(test_connection, name, entry.url, entry.read_url, form.typed_password(),
                              form.typed_read_password(), on_done=done, on_error=failed, key=f"connection-test:{name}")

    # Save -------------------------------------------------------------------------
    def save(self) -> None:
        entries = {name: form.entry() for name, form in self.forms.items()}
        passwords = {name: form.typed_password() for name, form in self.forms.items() if form.typed_password()}
        read_passwords = {name: form.typed_read_password() for name, form in self.forms.items()
                          if form.typed_read_password()}
        path = self.path
        self.save_button.setEnabled(False)

        def work() -> Config:
            config = save_sources(entries, path)
            for name, password in passwords.items():
                store_password(name, password)
            for name, password in read_passwords.items():
                store_password(name, password, replica=True)
            return config

        def done(config: Config) -> None:
            self.save_button.setEnabled(True)
            self.saved = config
            self.sig_saved.emit(config)
            self.accept()

        def failed(err: TaskError) -> None:
            self.save_button.setEnabled(True)
            self.show_problem(err.message)
        self.ctx.tasks.submit(work, on_done=done, on_error=failed, key="connections-save")
