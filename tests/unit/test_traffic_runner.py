"""The background traffic runner on a demo-like workspace (SQLite + mongomock orders)."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

from app.bootstrap import Workspace
from app.errors import PermissionDenied, UsageError
from app.schema import cart_log, notifications
from app.simulate.background import TrafficReport, TrafficRunner

SOURCES = ("dispatch", "cart", "orders")


@pytest.fixture
def demo_like(workspace_factory, tmp_path, order_store_url):
    def make(role="admin", orders=None, **kw):
        return workspace_factory(cart=f"sqlite:///{tmp_path / 'cart.db'}",
                                 dispatch=f"sqlite:///{tmp_path / 'dispatch.db'}",
                                 orders=orders or order_store_url, role=role, **kw)
    return make


class Collector:
    def __init__(self):
        self.reports: list[TrafficReport] = []
        self.cond = threading.Condition()

    def __call__(self, report):
        with self.cond:
            self.reports.append(report)
            self.cond.notify_all()

    def wait_for(self, predicate, timeout=8.0) -> TrafficReport:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not (self.reports and predicate(self.reports[-1])):
                left = deadline - time.monotonic()
                assert left > 0, f"no such report within {timeout} s: {self.reports[-1:]}"
                self.cond.wait(left)
            return self.reports[-1]


def direct_counts(ws: Workspace) -> dict[str, tuple[int, int]]:
    """(produced, duplicates) per source, counted straight from the databases."""
    out = {}
    with ws.engine("cart").connect() as conn:
        c = cart_log.c
        sent = c.email_sent == 1
        produced = conn.execute(select(func.count()).select_from(cart_log).where(sent)).scalar()
        carts = conn.execute(select(func.count()).select_from(
            select(c.user_id).where(sent).group_by(c.user_id, c.cart_hash).subquery())).scalar()
        out["cart"] = (produced, produced - carts)
    with ws.engine("dispatch").connect() as conn:
        n = notifications.c
        produced = conn.execute(select(func.count()).select_from(notifications)).scalar()
        events = conn.execute(select(func.count()).select_from(
            select(n.user_id).group_by(n.user_id, n.type, n.issue_id, n.comment_id, n.actor_user_id)
            .subquery())).scalar()
        out["dispatch"] = (produced, produced - events)
    docs = ws.orders().db["email_log"].find({"event": "pickup_images_added"}, projection={"order_id": 1})
    out["orders"] = (len(docs), len(docs) - len({d["order_id"] for d in docs}))
    return out


def test_guarded_traffic_keeps_coming_without_duplicates(demo_like):
    ws = demo_like()
    seen = Collector()
    runner = TrafficRunner(ws, "guarded", events_per_round=3, interval=0.0, on_report=seen, seed=7)
    runner.start()
    try:
        seen.wait_for(lambda r: r.rounds >= 3)
    finally:
        assert runner.stop(timeout=5)
    final = runner.latest
    assert final.running is False and final.mode == "guarded"
    assert final.rounds >= 3 and final.message is None
    assert [s.source for s in final.sources] == list(SOURCES)
    for s in final.sources:
        # A round that stop() cut short still counts the events it had begun.
        assert s.events in (3 * final.rounds, 3 * final.rounds + 3)
        assert 9 * final.rounds <= s.attempts <= 3 * s.events
        assert s.errors == 0 and s.duplicates == 0
    # One email per cart and per order; each dispatch notifies its recipients once.
    assert final.source("cart").produced == final.source("cart").events
    assert final.source("orders").produced == final.source("orders").events
    assert final.source("dispatch").produced > 0
    assert direct_counts(ws) == {s.source: (s.produced, s.duplicates) for s in final.sources}
    # Every report is a new round, and the totals never go backwards.
    rounds = [r.rounds for r in seen.reports]
    assert rounds == sorted(rounds) and rounds[0] == 1
    events = [r.events for r in seen.reports]
    assert events == sorted(events)


def test_naive_traffic_counts_match_the_databases(demo_like):
    ws = demo_like()
    seen = Collector()
    runner = TrafficRunner(ws, "naive", events_per_round=4, interval=0.0, on_report=seen, seed=11)
    runner.start()
    try:
        seen.wait_for(lambda r: r.rounds >= 2 and r.duplicates > 0)
    finally:
        assert runner.stop(timeout=5)
    final = runner.latest
    assert final.duplicates > 0
    assert direct_counts(ws) == {s.source: (s.produced, s.duplicates) for s in final.sources}


def test_stop_returns_promptly_while_waiting_and_mid_round(demo_like):
    ws = demo_like()
    seen = Collector()
    idle = TrafficRunner(ws, "guarded", sources=("cart",), events_per_round=2, interval=60.0, on_report=seen)
    idle.start()
    seen.wait_for(lambda r: r.rounds == 1)
    started = time.monotonic()
    assert idle.stop(timeout=5)
    assert time.monotonic() - started < 2.0
    assert idle.latest.running is False and idle.latest.rounds == 1

    busy = TrafficRunner(ws, "guarded", events_per_round=150, interval=0.0)
    busy.start()
    time.sleep(0.3)  # the first round is under way (a plain thread, not a Qt test)
    started = time.monotonic()
    assert busy.stop(timeout=5)
    assert time.monotonic() - started < 2.0


def test_viewer_is_refused_before_anything_runs(demo_like):
    ws = demo_like(role="viewer")
    runner = TrafficRunner(ws, "guarded")
    with pytest.raises(PermissionDenied, match="viewer role may not run the simulator"):
        runner.start()
    assert runner.latest is None and not runner.running
    assert direct_counts(ws) == {"cart": (0, 0), "dispatch": (0, 0), "orders": (0, 0)}


def test_bad_arguments_are_one_sentence(demo_like, workspace_factory, tmp_path):
    ws = demo_like()
    with pytest.raises(UsageError, match="Unknown mode 'sloppy'"):
        TrafficRunner(ws, "sloppy").start()
    with pytest.raises(UsageError, match="from 1 to"):
        TrafficRunner(ws, "guarded", events_per_round=0).start()
    only_cart = workspace_factory(cart=f"sqlite:///{tmp_path / 'only.db'}")
    with pytest.raises(UsageError, match="orders source is not configured"):
        TrafficRunner(only_cart, "guarded", sources=("orders",)).start()


def test_a_missing_schema_becomes_the_report_message(workspace_factory, tmp_path):
    ws = workspace_factory(cart=f"sqlite:///{tmp_path / 'cart.db'}", upgrade=False)
    seen = Collector()
    runner = TrafficRunner(ws, "guarded", on_report=seen)
    runner.start()
    report = seen.wait_for(lambda r: not r.running)
    assert runner.stop(timeout=2)
    assert report.rounds == 0
    assert "db upgrade" in report.message


def test_file_backed_order_store_is_shared_with_another_workspace(demo_like, tmp_path):
    url = "mongomock://" + str(tmp_path / "orders.json")
    ws = demo_like(orders=url)
    gui = Workspace(config=ws.config)  # what the window holds: a second workspace on the same config
    try:
        assert gui.orders() is ws.orders()
        before = gui.orders().db["orders"].count_documents({})
        seen = Collector()
        runner = TrafficRunner(ws, "guarded", sources=("orders",), events_per_round=3, interval=0.0,
                               on_report=seen)
        runner.start()
        try:
            seen.wait_for(lambda r: r.rounds >= 2)
        finally:
            assert runner.stop(timeout=5)
        assert gui.orders().db["orders"].count_documents({}) == before + runner.latest.events
    finally:
        gui.close()
