"""The cart simulator: seed 001's race produces duplicates; the guarded path none (MariaDB)."""
from __future__ import annotations

from concurrency_helpers import attempts_together as shared_attempts_together
from sqlalchemy import func, select

from app.schema import cart_log
from app.simulate import cart as driver
from app.simulate import run_simulation


def attempts_together(fn, events: int):
    shared_attempts_together(fn, events, driver.ATTEMPTS_PER_EVENT)


def test_naive_detectors_that_check_before_either_inserts_all_send(workspace_factory, mariadb_database):
    ws = workspace_factory(cart=mariadb_database("cart"))
    plan = driver.prepare(ws, 6, seed=1)
    # every detector checks, then all insert: the seed's window, held open
    attempts_together(lambda e, a, b: driver.naive_attempt(ws, plan, e, a, between=b.wait), 6)
    assert driver.count(ws, plan) == (18, 12)


def test_guarded_detectors_released_together_send_once(workspace_factory, mariadb_database):
    ws = workspace_factory(cart=mariadb_database("cart"))
    plan = driver.prepare(ws, 6, seed=1)

    def guarded(e, a, barrier):
        barrier.wait()
        driver.guarded_attempt(ws, plan, e, a)

    attempts_together(guarded, 6)
    assert driver.count(ws, plan) == (6, 0)
    with ws.engine("cart").connect() as conn:  # one log row per cart: losers never insert
        assert conn.execute(select(func.count()).select_from(cart_log)).scalar() == 6


def test_runner_guarded_on_threads_and_processes_and_naive_at_the_same_load(workspace_factory, mariadb_database):
    ws = workspace_factory(cart=mariadb_database("cart"))
    guarded = run_simulation(ws.config, "cart", "guarded", workers=8, events=60, processes=2, seed=3)
    assert (guarded.produced, guarded.duplicates, guarded.errors) == (60, 0, 0)
    assert guarded.attempts == 60 * driver.ATTEMPTS_PER_EVENT
    naive = run_simulation(ws.config, "cart", "naive", workers=8, events=60, processes=1, seed=3)
    assert naive.errors == 0
    assert naive.produced - naive.duplicates == 60  # every cart emailed, some more than once
    assert naive.duplicates > 0
