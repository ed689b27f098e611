"""The Why column: the likely cause of a duplicate group, from its evidence."""
from __future__ import annotations

import datetime as dt

from app.read.models import DuplicateGroup
from app.read.why import explain

T = dt.datetime(2026, 12, 1, 12, 0, 0)


def group(source: str, members: list[dict]) -> DuplicateGroup:
    ids = [m["id"] for m in members]
    return DuplicateGroup(source=source, rule="r", key={"k": 1}, keep_id=ids[0], member_ids=ids,
                          first_at=T, last_at=T, evidence=members)


def test_copies_milliseconds_apart_are_a_race():
    g = group("cart", [{"id": 1, "sent_at": T}, {"id": 2, "sent_at": T + dt.timedelta(milliseconds=350)}])
    assert explain(g) == "copies 350 ms apart: concurrent workers sent the same event (a race)"


def test_two_timestamped_dispatch_ids_apart_are_a_retry_that_made_a_new_key():
    g = group("dispatch", [
        {"id": 1, "created_at": T, "dispatch_id": "status_changed_372_108_1796227703248"},
        {"id": 2, "created_at": T + dt.timedelta(minutes=3), "dispatch_id": "status_changed_372_108_1796227883248"}])
    assert explain(g) == ("the same event under 2 timestamped dispatch ids, 3 min apart: a retry made a new key")


def test_a_legacy_row_without_a_dispatch_id_is_named():
    g = group("dispatch", [{"id": 1, "created_at": T, "dispatch_id": None},
                           {"id": 2, "created_at": T + dt.timedelta(hours=1), "dispatch_id": "comment_added:1:2:3"}])
    assert explain(g).startswith("a legacy row without a dispatch id")


def test_a_resend_after_the_in_progress_window_and_the_consoles_own_retry():
    g = group("orders", [{"id": "a", "sent_at": T}, {"id": "b", "sent_at": T + dt.timedelta(minutes=9)}])
    assert explain(g).startswith("a resend 9 min later, after the 2 min in-progress window")
    assert explain(g, console_retries={"b": "retry-1 by ana@ws2"}) == \
        "a copy the console's own retry sent (retry-1 by ana@ws2)"
