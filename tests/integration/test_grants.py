"""Roles made real by the database: users created from ``grant_statements``, the CLI run as them.

Each test prepares a cart and a dispatch database as root (production schema,
``db upgrade``, hand-made failed rows and duplicates), creates MariaDB users
with exactly the statements ``db grants`` prints, and runs ``main.py`` as a
subprocess with a config pointing at those users (passwords through
NC_CART_PASSWORD / NC_DISPATCH_PASSWORD). The console caches (latency
rollups, the cart duplicate member index, their cursors) are either built
once by root, with rows added after the build, or never built at all.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import delete, func, insert, inspect, select, text, update

from app.bootstrap import Workspace
from app.config import Config, MailConfig, SourceConfig, Thresholds
from app.grants import ARCHIVE_TABLES, CACHE_TABLES, GUARD_TABLES, LEDGER_TABLES, REFUSAL_COLUMNS, grant_statements
from app.read import cart_members, stats
from app.read.duplicates import scan_duplicates
from app.schema import (
    cart_log,
    cart_users,
    console_metadata,
    dispatch_log,
    dispatch_users,
    issue_watchers,
    issues,
    nc_action,
    nc_cart_dup_bucket,
    nc_cursor,
    nc_latency_minute,
    nc_rollup_unsettled,
    notifications,
)
from app.services.cleanup import cleanup
from app.sqlutil import db_now

REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / "main.py"
ROOT_URL = os.environ.get("NC_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306")
HOST_PORT = ROOT_URL.rsplit("@", 1)[1]
FAILED_CART_ERROR = "SMTP 550 mailbox unavailable"


# --------------------------------------------------------------------------
# The grants themselves (no database)

def test_every_console_table_is_readable_by_every_role_and_classified():
    console = {t.name for t in console_metadata.sorted_tables}
    assert {"nc_latency_minute", "nc_rollup_unsettled", "nc_cart_dup_bucket", "nc_cursor"} <= console
    # Every console table has a kind, so a new one forces a decision here.
    assert console == set(CACHE_TABLES) | set(LEDGER_TABLES) | set(GUARD_TABLES) | set(ARCHIVE_TABLES)
    for source in ("cart", "dispatch"):
        for role in ("viewer", "operator", "admin"):
            stmts = grant_statements(source, role, "'u'@'%'", "db")
            selected = {s.split("`db`.`")[1].split("`")[0] for s in stmts if s.startswith("GRANT SELECT ON")}
            assert console | {"nc_alembic_version"} <= selected
            writes = [s for s in stmts if not s.startswith("GRANT SELECT ON")]
            if role == "viewer":
                assert writes == [f"GRANT INSERT ({', '.join(REFUSAL_COLUMNS)}) ON `db`.`nc_action` TO 'u'@'%';"]
                assert "lease_token" not in writes[0] and "heartbeat_at" not in writes[0]
            else:
                for table in CACHE_TABLES:
                    assert f"GRANT INSERT, UPDATE, DELETE ON `db`.`{table}` TO 'u'@'%';" in writes
                archive = [s for s in writes if "`nc_archive`" in s]
                assert bool(archive) == (role == "admin")


def test_permission_errors_are_told_from_other_database_errors():
    import sqlite3

    import pymysql
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from app.sqlutil import is_permission_denied

    class PgError(Exception):
        def __init__(self, pgcode):
            super().__init__("ERROR: permission denied for table nc_cursor" if pgcode == "42501" else "ERROR")
            self.pgcode = pgcode

    def wrapped(orig):
        return ProgrammingError("INSERT ...", {}, orig)
    for code in (1142, 1143, 1044, 1227, 1290):
        assert is_permission_denied(wrapped(pymysql.err.OperationalError(code, "denied")))
    for code in (1213, 1205, 1062, 1146, 2003):
        assert not is_permission_denied(wrapped(pymysql.err.OperationalError(code, "other")))
    assert is_permission_denied(wrapped(PgError("42501"))) and is_permission_denied(wrapped(PgError("25006")))
    assert not is_permission_denied(wrapped(PgError("40P01")))
    assert is_permission_denied(OperationalError("INSERT", {}, sqlite3.OperationalError(
        "attempt to write a readonly database")))
    assert not is_permission_denied(OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked")))


# --------------------------------------------------------------------------
# Fixtures and helpers

@pytest.fixture
def db_users(mariadb_admin):
    """Factory: a MariaDB user per call (unique name) with the grants of ``role``; dropped afterwards."""
    made: list[tuple[str, str]] = []

    def make(role: str, databases: dict[str, str], *, audit_grant: bool = True) -> tuple[str, str]:
        name = f"nc_{role[0]}_{uuid.uuid4().hex[:12]}"
        password = uuid.uuid4().hex
        with mariadb_admin.connect() as conn:
            # '%' for TCP clients, 'localhost' so an anonymous ''@'localhost' cannot shadow it.
            for host in ("%", "localhost"):
                conn.execute(text(f"CREATE USER '{name}'@'{host}' IDENTIFIED BY '{password}'"))
                made.append((name, host))
                for source, database in databases.items():
                    for stmt in grant_statements(source, role, f"'{name}'@'{host}'", database):
                        if not audit_grant and stmt.startswith("GRANT INSERT ("):
                            continue
                        conn.execute(text(stmt))
        return name, password

    yield make
    with mariadb_admin.connect() as conn:
        for name, host in made:
            conn.execute(text(f"DROP USER IF EXISTS '{name}'@'{host}'"))


class Env:
    """One prepared pair of databases, root's workspace on them, and a way to run the CLI."""

    def __init__(self, ws: Workspace, names: dict[str, str], tmp: Path):
        self.ws = ws
        self.names = names
        self.tmp = tmp
        self.data_dir = tmp / "data"
        self.outbox = tmp / "outbox"

    def config(self, label: str, role: str, user: str = "root") -> Path:
        path = self.tmp / f"{label}.toml"
        path.write_text(
            "".join(f'[sources.{s}]\nurl = "mysql+pymysql://{user}@{HOST_PORT}/{db}"\n' for s, db in self.names.items())
            + f'[console]\nrole = "{role}"\n'
            + f'[mail]\ntransport = "outbox"\noutbox_dir = "{self.outbox}"\n', encoding="utf-8")
        return path

    def cli(self, config: Path, password: str | None, *args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, NC_DATA_DIR=str(self.data_dir), NC_NO_KEYRING="1", QT_QPA_PLATFORM="offscreen")
        for var in ("NC_CART_PASSWORD", "NC_DISPATCH_PASSWORD", "NC_DEBUG"):
            env.pop(var, None)
        if password is not None:
            env["NC_CART_PASSWORD"] = env["NC_DISPATCH_PASSWORD"] = password
        return subprocess.run([sys.executable, str(MAIN), "--config", str(config), *args], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    def many(self, calls) -> list[subprocess.CompletedProcess]:
        """Run several independent CLI calls at once (each its own process)."""
        with ThreadPoolExecutor(max_workers=len(calls)) as pool:
            return list(pool.map(lambda c: self.cli(*c), calls))

    def snapshot(self) -> dict:
        """Every row of every table of both databases, as root sees them."""
        out = {}
        for source in self.names:
            engine = self.ws.engine(source)
            with engine.connect() as conn:
                for table in sorted(inspect(conn).get_table_names()):
                    rows = conn.exec_driver_sql(f"SELECT * FROM `{table}`").all()
                    out[(source, table)] = sorted(map(repr, rows))
        return out


def _one_sentence(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr and len(err.splitlines()) == 1, proc.stderr
    assert err.startswith("error: ") and err.endswith("."), err
    return err


def _ok_json(proc: subprocess.CompletedProcess):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _seed(ws: Workspace) -> dict:
    """Hand-made rows: failed items and duplicates in both sources, latencies for the statistics."""
    cart, disp = ws.engine("cart"), ws.engine("dispatch")
    ids = {}
    with cart.begin() as conn:
        now = db_now(conn).replace(microsecond=0)
        conn.execute(insert(cart_users), [{"id": i, "email": f"c{i}@example.test", "name": f"Cust {i}"}
                                          for i in range(1, 6)])

        def row(user, chash, hours_ago, sent_after_s=None, error=None, value="19.90"):
            created = now - dt.timedelta(hours=hours_ago)
            return conn.execute(insert(cart_log).values(
                user_id=user, cart_hash=chash, cart_value=Decimal(value), created_at=created,
                email_sent=1 if sent_after_s is not None else 0,
                sent_at=created + dt.timedelta(seconds=sent_after_s) if sent_after_s is not None else None,
                error_message=error)).inserted_primary_key[0]
        ids["cart_failed"] = row(1, "h1", 3, error=FAILED_CART_ERROR)
        ids["cart_failed_2"] = row(4, "h4", 2, error="SMTP 451 try again later")
        row(2, "h2", 10, 30.5)
        row(2, "h2", 9, 45.25)              # duplicate of the one above
        row(3, "h3", 50, 12)                # its own abandonment (more than 24 h before the next)
        row(3, "h3", 20, 60)
        row(3, "h3", 19, 61.5, value="20.00")
        row(3, "h3", 18, 90)                # three members
        row(2, "h2b", 5, 2.125)             # no duplicate
        row(5, "h5", 7)                     # unsent, not a duplicate
    with disp.begin() as conn:
        now = db_now(conn).replace(microsecond=0)
        conn.execute(insert(dispatch_users), [{"id": i, "email": f"u{i}@example.test", "display_name": f"User {i}"}
                                              for i in range(1, 7)])
        conn.execute(insert(issues), {"id": 1, "issue_key": "OPS-1", "title": "Login fails",
                                      "reporter_id": 1, "assignee_id": 2})
        conn.execute(insert(issue_watchers), [{"issue_id": 1, "user_id": u} for u in (3, 4)])
        done = []
        for n in range(12):
            created = now - dt.timedelta(hours=n * 1.5 + 0.5, seconds=n)
            done.append({"dispatch_id": f"comment_added:1:{500 + n}:2", "issue_id": 1, "comment_id": 500 + n,
                         "actor_user_id": 2, "dispatch_type": "comment_added" if n % 3 else "status_changed",
                         "recipients_count": 3, "status": "completed", "created_at": created,
                         "completed_at": created + dt.timedelta(milliseconds=40 + 37 * n)})
        conn.execute(insert(dispatch_log), done)
        ids["dispatch_failed"] = conn.execute(insert(dispatch_log).values(
            dispatch_id="comment_added:1:77:1", dispatch_type="comment_added", issue_id=1, comment_id=77,
            actor_user_id=1, recipients_count=0, status="failed", created_at=now - dt.timedelta(hours=1),
            error_message="Issue 1 does not exist.")).inserted_primary_key[0]
        ids["dispatch_late"] = conn.execute(insert(dispatch_log).values(
            dispatch_id="comment_added:1:78:2", dispatch_type="comment_added", issue_id=1, comment_id=78,
            actor_user_id=2, recipients_count=0, status="pending",
            created_at=now - dt.timedelta(hours=3))).inserted_primary_key[0]

        def note(user, comment, dispatch_id, minutes_ago):
            conn.execute(insert(notifications).values(
                user_id=user, type="comment_added", issue_id=1, comment_id=comment, actor_user_id=2,
                message="User 2 commented on OPS-1: Login fails", created_at=now - dt.timedelta(minutes=minutes_ago),
                dispatch_id=dispatch_id))
        note(3, 5, "comment_added:1:5:2", 300)
        note(3, 5, None, 290)                      # legacy NULL id: same event, a duplicate
        note(4, 6, "comment_added:1:6:2", 200)
        note(4, 6, "comment_added:1:6:2:again", 199)
        note(4, 6, None, 198)                      # three members
        note(1, 5, "comment_added:1:5:2", 300)     # no duplicate
    return ids


def _add_after_build(ws: Workspace, ids: dict) -> None:
    """Rows that land after the caches were built: a new member, a new group, a late settlement."""
    with ws.engine("cart").begin() as conn:
        now = db_now(conn).replace(microsecond=0)
        for user, chash, hours_ago, sent_s in ((2, "h2", 8, 20), (4, "h6", 1, 5), (4, "h6", 0.5, 7.75)):
            created = now - dt.timedelta(hours=hours_ago)
            conn.execute(insert(cart_log).values(user_id=user, cart_hash=chash, cart_value=Decimal("5.00"),
                                                 created_at=created, email_sent=1,
                                                 sent_at=created + dt.timedelta(seconds=sent_s)))
    with ws.engine("dispatch").begin() as conn:
        now = db_now(conn).replace(microsecond=0)
        conn.execute(update(dispatch_log).where(dispatch_log.c.id == ids["dispatch_late"]).values(
            status="completed", recipients_count=3,
            completed_at=now - dt.timedelta(hours=3) + dt.timedelta(milliseconds=2500)))
        created = now - dt.timedelta(minutes=20)
        conn.execute(insert(dispatch_log).values(
            dispatch_id="status_changed:1:2:closed", dispatch_type="status_changed", issue_id=1, actor_user_id=2,
            recipients_count=3, status="completed", created_at=created,
            completed_at=created + dt.timedelta(milliseconds=910)))
        conn.execute(insert(notifications).values(
            user_id=1, type="comment_added", issue_id=1, comment_id=5, actor_user_id=2,
            message="User 2 commented on OPS-1: Login fails", created_at=now - dt.timedelta(minutes=10),
            dispatch_id=None))


def _drop_caches(ws: Workspace) -> None:
    for source in ("cart", "dispatch"):
        with ws.engine(source).begin() as conn:
            for table in (nc_cursor, nc_latency_minute, nc_rollup_unsettled, nc_cart_dup_bucket):
                conn.execute(delete(table))


@pytest.fixture(params=["caches_built", "caches_never_built"])
def env(request, workspace_factory, mariadb_database, tmp_path):
    names = {"cart": mariadb_database("cart"), "dispatch": mariadb_database("dispatch")}
    ws = workspace_factory(**names)
    names = {s: url.rsplit("/", 1)[1] for s, url in names.items()}
    ids = _seed(ws)
    if request.param == "caches_built":
        for source in ("cart", "dispatch"):
            stats.advance_rollup(ws, source, force_recheck=True)
        scan_duplicates(ws, "cart")
        _add_after_build(ws, ids)
    else:
        _add_after_build(ws, ids)
        _drop_caches(ws)
    e = Env(ws, names, tmp_path)
    e.ids = ids
    e.built = request.param == "caches_built"
    return e


def _user_workspace(env: Env, user: str, role: str) -> Workspace:
    sources = {s: SourceConfig(s, f"mysql+pymysql://{user}@{HOST_PORT}/{db}") for s, db in env.names.items()}
    return Workspace(config=Config(path=None, sources=sources, role=role, thresholds=Thresholds(),
                                   mail=MailConfig(), duplicate_rules=()))


def _cache_rows(env: Env) -> dict:
    snap = env.snapshot()
    return {k: v for k, v in snap.items() if k[1] in CACHE_TABLES}


def _without_ages(items: list[dict]) -> list[dict]:
    return [{k: v for k, v in i.items() if k != "age_seconds"} for i in items]


# --------------------------------------------------------------------------
# Viewer: reads like root, writes nothing, refused and audited

READS = (("status", "--json"), ("failed", "--json"), ("duplicates", "--json"), ("feed", "--json"),
         ("cleanup", "--source", "cart", "--dry-run", "--json"),
         ("cleanup", "--source", "dispatch", "--dry-run", "--json"), ("audit", "--json"))


@pytest.mark.mariadb
def test_viewer_on_a_read_only_user_reads_what_root_reads(env, db_users, monkeypatch):
    user, password = db_users("viewer", env.names)
    viewer_cfg = env.config("viewer", "viewer", user)
    root_cfg = env.config("root", "admin")
    caches_before = _cache_rows(env)

    as_viewer = env.many([(viewer_cfg, password, *args) for args in READS])
    # The viewer wrote nothing: the caches are as root left them.
    assert _cache_rows(env) == caches_before
    monkeypatch.setenv("NC_CART_PASSWORD", password)
    monkeypatch.setenv("NC_DISPATCH_PASSWORD", password)
    viewer_ws = _user_workspace(env, user, "viewer")
    try:
        with env.ws.engine("dispatch").connect() as conn:
            now = db_now(conn)
        viewer_stats = {(s, w): stats.latency_stats(viewer_ws, s, window=w, by_type=True, now=now)
                        for s in ("cart", "dispatch") for w in ("24h", "7d")}
    finally:
        viewer_ws.close()
    assert _cache_rows(env) == caches_before

    as_root = env.many([(root_cfg, None, *args) for args in READS])
    for args, v, r in zip(READS, as_viewer, as_root):
        assert v.returncode == 0 and r.returncode == 0, (args, v.stderr, r.stderr)
        assert "Traceback" not in v.stderr
    status_v, failed_v, dups_v, feed_v, dry_cart_v, dry_disp_v, audit_v = (json.loads(p.stdout) for p in as_viewer)
    status_r, failed_r, dups_r, feed_r, dry_cart_r, dry_disp_r, audit_r = (json.loads(p.stdout) for p in as_root)

    assert _without_ages(failed_v) == _without_ages(failed_r)
    assert {(i["source"], i["id"]) for i in failed_v} >= {
        ("cart", env.ids["cart_failed"]), ("cart", env.ids["cart_failed_2"]), ("dispatch", env.ids["dispatch_failed"])}
    assert dups_v == dups_r
    assert sorted((g["source"], g["count"]) for g in dups_v) == [
        ("cart", 2), ("cart", 3), ("cart", 3), ("dispatch", 2), ("dispatch", 2), ("dispatch", 3)]
    assert feed_v == feed_r and feed_v
    assert dry_cart_v == dry_cart_r and dry_cart_v["archived"] == 5
    assert dry_disp_v == dry_disp_r and dry_disp_v["archived"] == 4
    assert audit_v == audit_r
    def status_view(status):
        return [{k: src[k] for k in ("name", "reachable", "production_schema", "console_schema", "counts", "ok")}
                for src in status["sources"]]
    assert status_v["ok"] and status_view(status_v) == status_view(status_r)

    # Statistics: root catches the rollup up (late settlements included), the viewer computed it in memory.
    for source in ("cart", "dispatch"):
        stats.advance_rollup(env.ws, source, force_recheck=True)
    for (source, window), series in viewer_stats.items():
        root = stats.latency_stats(env.ws, source, window=window, by_type=True, now=now)
        assert series.to_json() == root.to_json(), (source, window)
    # by type: every bucket once per series, so the counts add up to the settled rows
    assert sum(b.count for b in viewer_stats[("dispatch", "24h")].buckets) == 14  # 12, the late one, the added one
    assert {b.series for b in viewer_stats[("dispatch", "24h")].buckets} == {"comment_added", "status_changed"}
    assert sum(b.count for b in viewer_stats[("cart", "24h")].buckets) == 9


@pytest.mark.mariadb
@pytest.mark.parametrize("env", ["caches_built"], indirect=True)
@pytest.mark.parametrize("audit_grant", [True, False], ids=["audited_in_db", "audited_locally"])
def test_viewer_writes_are_refused_and_audited(env, db_users, audit_grant):
    user, password = db_users("viewer", env.names, audit_grant=audit_grant)
    cfg = env.config("viewer", "viewer", user)
    before = env.snapshot()
    attempts = [("retry", "--source", "cart", "--id", str(env.ids["cart_failed"])),
                ("cleanup", "--source", "cart", "--apply"),
                ("undo", "cleanup-0123456789abcdef")]
    for proc in env.many([(cfg, password, *a) for a in attempts]):
        assert proc.returncode == 3, proc.stderr
        assert "The viewer role may not" in _one_sentence(proc)
    after = env.snapshot()
    refused = [e for e in _ok_json(env.cli(cfg, password, "audit", "--json")) if e["status"] == "refused"]
    assert sorted(e["kind"] for e in refused) == ["cleanup", "retry", "undo"]
    assert {e["role"] for e in refused} == {"viewer"}
    local = env.data_dir / "audit-local.jsonl"
    with env.ws.engine("cart").connect() as conn:
        in_db = conn.execute(select(func.count()).select_from(nc_action).where(nc_action.c.status == "refused")).scalar()
    if audit_grant:
        assert in_db == 3 and not local.exists()
        del before[("cart", "nc_action")], after[("cart", "nc_action")]
    else:
        assert in_db == 0 and len(local.read_text().splitlines()) == 3
    assert after == before
    assert not env.outbox.exists() or not any(env.outbox.iterdir())


@pytest.mark.mariadb
def test_viewer_whose_role_file_claims_admin_still_cannot_write(env, db_users):
    user, password = db_users("viewer", env.names)
    target = cleanup(env.ws, "dispatch", dry_run=False)["action_id"]   # root's cleanup, to be undone
    assert target
    cfg = env.config("lying", "admin", user)
    before = env.snapshot()
    attempts = [("cleanup", "--source", "cart", "--apply"),
                ("cleanup", "--source", "dispatch", "--apply"),
                ("retry", "--source", "cart", "--id", str(env.ids["cart_failed"])),
                ("retry", "--source", "dispatch", "--id", str(env.ids["dispatch_failed"])),
                ("undo", target)]
    for args, proc in zip(attempts, env.many([(cfg, password, *a) for a in attempts])):
        assert proc.returncode == 3, (args, proc.stdout)   # the database said no: a permission error
        assert "lacks the privilege" in _one_sentence(proc), args
    assert env.snapshot() == before                    # nothing changed, not even the audit log
    assert not env.outbox.exists() or not any(env.outbox.iterdir())


# --------------------------------------------------------------------------
# Operator and admin

@pytest.mark.mariadb
def test_operator_retries_failed_rows_and_is_refused_cleanup(env, db_users):
    user, password = db_users("operator", env.names)
    cfg = env.config("operator", "operator", user)
    cart_retry, disp_retry, clean, dups = env.many([
        (cfg, password, "retry", "--source", "cart", "--id", str(env.ids["cart_failed"]), "--json"),
        (cfg, password, "retry", "--source", "dispatch", "--id", str(env.ids["dispatch_failed"]), "--json"),
        (cfg, password, "cleanup", "--source", "cart", "--apply"),
        (cfg, password, "duplicates", "--source", "cart", "--json")])
    out = _ok_json(cart_retry)
    assert (out["retried"], out["retried_ids"], out["skipped"], out["failed"]) == (1, [env.ids["cart_failed"]], [], [])
    out = _ok_json(disp_retry)
    assert (out["retried"], out["skipped"], out["failed"]) == (1, [], [])
    assert clean.returncode == 3 and "The operator role may not cleanup" in _one_sentence(clean)
    assert len(_ok_json(dups)) == 3
    emails = sorted(p.name for p in env.outbox.iterdir() if p.name != "index.html")
    assert len(emails) == 1 and emails[0].endswith(".html")
    with env.ws.engine("cart").connect() as conn:
        row = conn.execute(select(cart_log).where(cart_log.c.id == env.ids["cart_failed"])).mappings().one()
    assert row["email_sent"] == 1 and row["sent_at"] is not None
    with env.ws.engine("dispatch").connect() as conn:
        status = conn.execute(select(dispatch_log.c.status).where(dispatch_log.c.id == env.ids["dispatch_failed"])).scalar()
        users = conn.execute(select(notifications.c.user_id).where(
            notifications.c.dispatch_id == "comment_added:1:77:1").order_by(notifications.c.user_id)).scalars().all()
    assert status == "completed" and users == [2, 3, 4]


@pytest.mark.mariadb
def test_admin_cleanup_then_undo_restores_identical_rows(env, db_users):
    user, password = db_users("admin", env.names)
    cfg = env.config("admin", "admin", user)
    before = env.snapshot()
    dups_before = _ok_json(env.cli(cfg, password, "duplicates", "--json"))
    applied = [_ok_json(p) for p in env.many([
        (cfg, password, "cleanup", "--source", "cart", "--apply", "--json"),
        (cfg, password, "cleanup", "--source", "dispatch", "--apply", "--json")])]
    assert [a["archived"] for a in applied] == [5, 4]
    assert _ok_json(env.cli(cfg, password, "duplicates", "--json")) == []
    undone = [_ok_json(p) for p in env.many([(cfg, password, "undo", a["action_id"], "--json") for a in applied])]
    assert [u["restored"] for u in undone] == [5, 4]
    after = env.snapshot()
    for key in (("cart", "cart_abandonment_log"), ("dispatch", "notifications")):
        assert after[key] == before[key]
    assert _ok_json(env.cli(cfg, password, "duplicates", "--json")) == dups_before
    # The member index the admin's cleanup and undo refreshed is exactly a fresh computation.
    with env.ws.engine("cart").connect() as conn:
        assert cart_members.snapshot(conn) == cart_members.compute_members(conn)


# --------------------------------------------------------------------------
# The same fallbacks on SQLite: a file the console may only read

def test_read_side_on_a_read_only_sqlite_file_returns_what_a_writer_returns(workspace_factory, tmp_path):
    from sqlalchemy import event

    urls = {s: f"sqlite:///{tmp_path / (s + '.db')}" for s in ("cart", "dispatch")}
    ws = workspace_factory(**urls)
    ids = _seed(ws)
    for source in ("cart", "dispatch"):
        stats.advance_rollup(ws, source, force_recheck=True)
    scan_duplicates(ws, "cart")
    _add_after_build(ws, ids)

    reader = Workspace(config=Config(path=None, sources={s: SourceConfig(s, u) for s, u in urls.items()},
                                     role="viewer", thresholds=Thresholds(), mail=MailConfig(), duplicate_rules=()))
    for source in urls:
        event.listen(reader.engine(source), "connect",
                     lambda dbapi_conn, _record: dbapi_conn.execute("PRAGMA query_only = ON"))

    def caches():
        out = {}
        for source in urls:
            with ws.engine(source).connect() as conn:
                for table in (nc_cursor, nc_latency_minute, nc_rollup_unsettled, nc_cart_dup_bucket):
                    out[(source, table.name)] = sorted(map(repr, conn.execute(select(table)).all()))
        return out

    before = caches()
    try:
        with ws.engine("dispatch").connect() as conn:
            now = db_now(conn)
        read_groups = [g.to_json() for g in scan_duplicates(reader, "cart")]
        read_stats = {s: stats.latency_stats(reader, s, window="24h", by_type=True, now=now).to_json()
                      for s in urls}
    finally:
        reader.close()
    assert caches() == before
    assert sorted(g["count"] for g in read_groups) == [2, 3, 3]
    for source in urls:
        stats.advance_rollup(ws, source, force_recheck=True)
        assert read_stats[source] == stats.latency_stats(ws, source, window="24h", by_type=True, now=now).to_json()
    assert read_groups == [g.to_json() for g in scan_duplicates(ws, "cart")]
