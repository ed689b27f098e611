"""The status bar's role badge says why the order store left the configured role as it is."""
from __future__ import annotations

import os

import pytest

from tests.helpers import open_console


@pytest.mark.skipif(bool(os.environ.get("NC_TEST_MONGO_URI")), reason="mongomock only: a real server says")
def test_the_role_badge_tooltip_says_the_order_store_did_not_say(qtbot, workspace_factory, order_store_url):
    ws = workspace_factory(orders=order_store_url, role="operator")
    window, _page = open_console(qtbot, ws, "overview")
    qtbot.waitUntil(lambda: window.settled and window.role_label.toolTip() != "", timeout=30_000)
    assert window.role_label.text() == "role: operator"
    assert ("Orders: the orders database does not say what its user may do (it answers no connectionStatus); "
            "the configured role holds.") in window.role_label.toolTip()
