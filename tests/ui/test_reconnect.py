"""A source that drops: the banner names it, the rest carries on, it reconnects with backoff, the live list
resumes from its cursor without losing or repeating a row."""
from __future__ import annotations

import random
import uuid

from sqlalchemy import text

from app.bootstrap import Workspace
from app.config import Config, SourceConfig
from app.grants import grant_statements
from tests.helpers import add_notifications, open_console, seed_people
from ui.status_monitor import BACKOFF_MAX_S, backoff_delay, source_named

WAIT = 60_000


def test_backoff_doubles_from_one_second_to_thirty_with_jitter():
    rng = random.Random(7)
    delays = [backoff_delay(n, rng) for n in range(8)]
    for n, d in enumerate(delays):
        base = min(BACKOFF_MAX_S, 2 ** n)
        assert 0.8 * base <= d <= 1.2 * base
    assert source_named("The cart database cannot be reached: refused.") == "cart"
    assert source_named("The orders read replica cannot be reached: x.") == "orders"
    assert source_named("Exported 3 rows.") is None


def test_a_killed_connection_shows_the_banner_and_the_feed_recovers_without_loss_or_repeats(
        qtbot, workspace_factory, mariadb_database, mariadb_admin, order_store_url, monkeypatch):
    root = workspace_factory(dispatch=mariadb_database("dispatch"), orders=order_store_url)
    engine = root.engine("dispatch")
    seed_people(engine, issue_ids=(1,), reporter=1, assignee=2, watchers=(3,))
    database = root.config.sources["dispatch"].url.rsplit("/", 1)[1]
    user, password = f"nc_drop_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    with mariadb_admin.connect() as conn:
        for host in ("%", "localhost"):
            conn.execute(text(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'"))
            for stmt in grant_statements("dispatch", "admin", f"'{user}'@'{host}'", database):
                conn.execute(text(stmt))
    monkeypatch.setenv("NC_DISPATCH_PASSWORD", password)
    url = root.config.sources["dispatch"].url.replace("://root@", f"://{user}@")
    ws = Workspace(config=Config(path=None, role="admin", sources={
        "dispatch": SourceConfig("dispatch", url), "orders": SourceConfig("orders", order_store_url)}))

    def lock(locked: bool) -> None:
        with mariadb_admin.connect() as conn:
            for host in ("%", "localhost"):
                conn.execute(text(f"ALTER USER '{user}'@'{host}' ACCOUNT {'LOCK' if locked else 'UNLOCK'}"))

    def kill_console_connections() -> int:
        with mariadb_admin.connect() as conn:
            ids = list(conn.execute(text("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = :u"),
                                    {"u": user}).scalars())
            for pid in ids:
                conn.execute(text(f"KILL CONNECTION {int(pid)}"))
        return len(ids)

    def keys(page) -> list:
        return [page.row_key(page.model.row_at(i)) for i in range(page.model.rowCount())]

    try:
        add_notifications(engine, 3, start=0)
        window, page = open_console(qtbot, ws, "notifications")
        qtbot.waitUntil(lambda: window.indicators["dispatch"].state == "ok", timeout=WAIT)
        qtbot.waitUntil(lambda: page.model.rowCount() == 3, timeout=WAIT)

        lock(True)                       # a DBA kills the console's sessions and keeps it out for a while
        assert kill_console_connections() >= 1
        qtbot.waitUntil(lambda: "dispatch" in window.monitor.down, timeout=WAIT)
        assert window.banner.property("level") == "error"
        assert window.banner.message().startswith("Dispatch is not answering: The dispatch database")
        assert "reconnects by itself (next try in" in window.banner.message()
        assert window.indicators["dispatch"].state == "down"
        assert window.indicators["orders"].state == "ok", "the other source carries on"
        add_notifications(engine, 4, start=100)       # written while the console cannot see them
        window.show_page("audit")                     # the window still answers
        window.show_page("notifications")
        qtbot.waitUntil(lambda: window.monitor.down.get("dispatch", 0) >= 2, timeout=WAIT)   # it kept trying

        lock(False)
        qtbot.waitUntil(lambda: not window.monitor.down, timeout=WAIT)
        assert window.banner.message() == "Dispatch is back: reconnected."
        assert window.indicators["dispatch"].state == "ok"
        qtbot.waitUntil(lambda: page.model.rowCount() == 7, timeout=WAIT)
        for _ in range(2):                            # two more polls from the cursor: nothing comes twice
            page.poll()
            qtbot.waitUntil(lambda: not window.ctx.tasks.is_running("feed-live"), timeout=WAIT)
        shown = keys(page)
        assert len(shown) == len(set(shown)) == 7
    finally:
        ws.close()
        with mariadb_admin.connect() as conn:
            for host in ("%", "localhost"):
                conn.execute(text(f"DROP USER IF EXISTS '{user}'@'{host}'"))
