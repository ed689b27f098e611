"""The orders simulator: seed 000's check-count-before-push race against the guarded path."""
from __future__ import annotations

from concurrency_helpers import attempts_together as shared_attempts_together

from app.simulate import orders as driver
from app.simulate import run_simulation


def attempts_together(fn, events: int):
    shared_attempts_together(fn, events, driver.ATTEMPTS_PER_EVENT)


def test_naive_uploads_that_count_before_any_push_all_email(workspace_factory, order_store_url):
    ws = workspace_factory(orders=order_store_url)
    plan = driver.prepare(ws, 8, seed=2)
    attempts_together(lambda e, a, b: driver.naive_attempt(ws, plan, e, a, between=b.wait), 8)
    assert driver.count(ws, plan) == (24, 16)


def test_guarded_uploads_released_together_email_once(workspace_factory, order_store_url):
    ws = workspace_factory(orders=order_store_url)
    plan = driver.prepare(ws, 8, seed=2)
    db = ws.orders().db
    legacy = [d["id"] for d in db["orders"].find({"id": {"$in": plan["orders"]}, "images.pickup": None})]
    assert legacy  # the run exercises legacy documents too

    def guarded(e, a, barrier):
        barrier.wait()
        driver.guarded_attempt(ws, plan, e, a)

    attempts_together(guarded, 8)
    assert driver.count(ws, plan) == (8, 0)
    for doc in db["orders"].find({"id": {"$in": plan["orders"]}}):
        assert len(doc["images"]["pickup"]) == driver.ATTEMPTS_PER_EVENT  # no image lost
        assert doc["status"] == "PICKUP_IMAGES_ADDED"


def test_runner_guarded_and_naive_at_the_same_load(workspace_factory, order_store_url):
    ws = workspace_factory(orders=order_store_url)
    guarded = run_simulation(ws.config, "orders", "guarded", workers=8, events=60, seed=5)
    assert (guarded.produced, guarded.duplicates, guarded.errors) == (60, 0, 0)
    naive = run_simulation(ws.config, "orders", "naive", workers=8, events=60, seed=5)
    assert naive.errors == 0
    assert naive.produced - naive.duplicates == 60
    assert naive.duplicates > 0
