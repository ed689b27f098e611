"""Bad input through the real entry point: one sentence, exit 2, never a traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.errors import SchemaMissing
from app.schema_setup import require_schema

ROOT = Path(__file__).resolve().parents[2]


def run_main(args, tmp_path, env=None, timeout=60):
    full_env = {**os.environ, "NC_DATA_DIR": str(tmp_path / "data"), "NC_NO_KEYRING": "1",
                "QT_QPA_PLATFORM": "offscreen", **(env or {})}
    full_env.pop("NC_CONFIG", None)
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=ROOT)


def assert_one_sentence_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and lines[0].endswith(".")
    for needle in needles:
        assert needle in lines[0], lines[0]


def config(tmp_path, body: str) -> Path:
    p = tmp_path / "console.toml"
    p.write_text(body, encoding="utf-8")
    return p


@pytest.mark.parametrize("body, needles", [
    (None, ["does not exist"]),
    ('[sources.cart\nurl = "x"\n', ["is not valid TOML"]),
    ('[sources.inventory]\nurl = "sqlite:///i.db"\n', ["sources.inventory", "unknown source"]),
    ('[sources.cart]\nurl = "ftp://h/cart"\n', ["unsupported scheme 'ftp'"]),
    ('[sources.dispatch]\nurl = "mysql+pymysql://nc:hunter2@h/dispatch"\n', ["holds a password", "NC_DISPATCH_PASSWORD"]),
    ('[thresholds]\norder_missed_minutes = 0\n', ["thresholds.order_missed_minutes", "positive number"]),
])
def test_config_errors(tmp_path, body, needles):
    path = tmp_path / "missing.toml" if body is None else config(tmp_path, body)
    proc = run_main(["--config", str(path), "status"], tmp_path)
    assert_one_sentence_error(proc, str(path), *needles)


def test_usage_errors_are_one_sentence(tmp_path):
    assert_one_sentence_error(run_main(["--reset", "status"], tmp_path), "--reset only goes with --demo")
    assert_one_sentence_error(run_main(["--demo", "frobnicate"], tmp_path), "invalid choice")


@pytest.mark.mariadb
def test_wrong_password_on_mariadb(tmp_path, mariadb_admin, mariadb_database):
    url = mariadb_database("pw")
    dbname = url.rsplit("/", 1)[1]
    user = f"nc_pw_{uuid.uuid4().hex[:8]}"
    with mariadb_admin.connect() as conn:
        conn.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'right-one'"))
        conn.execute(text(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY 'right-one'"))
        conn.execute(text(f"GRANT ALL ON `{dbname}`.* TO '{user}'@'%'"))
        conn.execute(text(f"GRANT ALL ON `{dbname}`.* TO '{user}'@'localhost'"))
    try:
        server = make_url(url)  # the server the suite runs on (shared, or its private one)
        path = config(tmp_path, f'[sources.cart]\nurl = "mysql+pymysql://{user}@{server.host}:{server.port or 3306}/{dbname}"\n')
        wrong = run_main(["--config", str(path), "db", "upgrade"], tmp_path, env={"NC_CART_PASSWORD": "wrong"})
        assert wrong.returncode == 2 and "Traceback" not in wrong.stderr + wrong.stdout
        assert "refused the login" in wrong.stdout and "NC_CART_PASSWORD" in wrong.stdout
        status = run_main(["--config", str(path), "status", "--json"], tmp_path, env={"NC_CART_PASSWORD": "wrong"})
        assert status.returncode == 2 and "Traceback" not in status.stderr
        cart = json.loads(status.stdout)["sources"][0]
        assert cart["reachable"] is False and "refused the login" in cart["reason"]
        # The right password from the environment gets in (the URL never holds it).
        right = run_main(["--config", str(path), "status", "--json"], tmp_path, env={"NC_CART_PASSWORD": "right-one"})
        assert json.loads(right.stdout)["sources"][0]["reachable"] is True
    finally:
        with mariadb_admin.connect() as conn:
            conn.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))
            conn.execute(text(f"DROP USER IF EXISTS '{user}'@'localhost'"))


@pytest.mark.parametrize("url", [
    "mysql+pymysql://nc@10.255.255.1:3306/cart",     # unroutable: no answer at all
    "mysql+pymysql://nc@127.0.0.1:1/cart",           # closed port: refused at once
])
def test_unreachable_host_answers_within_10_s(tmp_path, url):
    path = config(tmp_path, f'[sources.cart]\nurl = "{url}"\n')
    started = time.monotonic()
    proc = run_main(["--config", str(path), "status"], tmp_path, timeout=30)
    elapsed = time.monotonic() - started
    assert elapsed < 10, elapsed
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert "UNREACHABLE" in proc.stdout and "The cart database" in proc.stdout


@pytest.mark.mariadb
def test_database_without_the_console_tables_names_the_command(tmp_path, mariadb_database, workspace_factory):
    url = mariadb_database("bare")
    ws = workspace_factory(cart=url, upgrade=False)       # production tables only
    with pytest.raises(SchemaMissing, match=r"run `python main.py db upgrade` first"):
        require_schema(ws, "cart")
    path = config(tmp_path, f'[sources.cart]\nurl = "{url}"\n')
    proc = run_main(["--config", str(path), "failed"], tmp_path)
    assert_one_sentence_error(proc, "python main.py db upgrade")
    status = run_main(["--config", str(path), "status"], tmp_path)
    assert status.returncode == 0 and "python main.py db upgrade" in status.stdout


def test_database_without_any_tables_says_where_to_point(tmp_path):
    empty = tmp_path / "empty.db"
    path = config(tmp_path, f'[sources.dispatch]\nurl = "sqlite:///{empty}"\n')
    proc = run_main(["--config", str(path), "db", "upgrade"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert "has no users, issues, issue_watchers, notification_dispatch_log, notifications table" in proc.stdout


def test_a_reader_that_stops_early_ends_the_output_quietly(tmp_path):
    """``stats | head -1``: the reader closes the pipe; the console stops writing, no error line, exit 0."""
    env = {**os.environ, "NC_DATA_DIR": str(tmp_path / "data"), "NC_NO_KEYRING": "1"}
    env.pop("NC_CONFIG", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--demo", "stats", "--range", "7d",
                             "--bucket", "1m"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert first.strip() and err.strip() == "", err
