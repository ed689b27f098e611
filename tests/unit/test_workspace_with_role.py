"""Workspace.with_role: another console's role on the very same databases."""
from __future__ import annotations

from app.bootstrap import Workspace
from app.config import Config, SourceConfig, Thresholds


def _workspace(tmp_path) -> Workspace:
    sources = {"cart": SourceConfig("cart", f"sqlite:///{tmp_path / 'cart.db'}"),
               "orders": SourceConfig("orders", f"mongomock://nc_t_with_role_{tmp_path.name}")}
    return Workspace(config=Config(path=None, sources=sources, role="admin",
                                   thresholds=Thresholds(duplicate_window_hours=2)))


def test_the_copy_has_another_role_and_the_same_engines_and_order_store(tmp_path):
    admin = _workspace(tmp_path)
    engine = admin.engine("cart")
    viewer = admin.with_role("viewer")
    assert (admin.role, viewer.role) == ("admin", "viewer")
    assert viewer.config.sources == admin.config.sources and viewer.config.thresholds == admin.config.thresholds
    assert viewer.engine("cart") is engine
    assert viewer.orders() is admin.orders()
    admin.close()


def test_an_engine_either_one_opens_is_the_others_too(tmp_path):
    admin = _workspace(tmp_path)
    operator = admin.with_role("operator")       # before any engine was opened
    assert operator.engine("cart") is admin.engine("cart")
    admin.close()


def test_closing_either_one_closes_the_shared_engines(tmp_path):
    admin = _workspace(tmp_path)
    engine = admin.engine("cart")
    store = admin.orders()
    viewer = admin.with_role("viewer")
    viewer.close()
    assert admin._engines == {}                    # the shared dict, emptied and the engine disposed
    assert admin.engine("cart") is not engine      # the original opens a fresh one on next use
    assert viewer.orders() is not store            # the closer forgets the store it closed
    admin.close()
