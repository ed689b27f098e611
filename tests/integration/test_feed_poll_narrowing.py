"""A live poll reads only newer rows while nothing inside the late-commit margin is missing, and everything else still arrives."""
from __future__ import annotations

import datetime as dt

from app.read import feeds
from app.read.feeds import poll_notification_feed
from tests.helpers import add_notifications, seed_people


def test_the_margin_is_read_again_only_when_a_row_there_is_missing(workspace_factory, sql_url):
    ws = workspace_factory(dispatch=sql_url("dispatch"))
    engine = ws.engine("dispatch")
    seed_people(engine, issue_ids=(1,), reporter=1, assignee=2, watchers=(3,))
    add_notifications(engine, 5, ago=dt.timedelta(seconds=30))
    first = poll_notification_feed(ws, None, sources=["dispatch"], limit=100)
    assert len(first.items) == 5
    new = add_notifications(engine, 3, start=100)
    page = poll_notification_feed(ws, first.cursor, sources=["dispatch"], limit=100)
    assert sorted(i.id for i in page.items) == sorted(new)
    mark = page.cursor["dispatch"]
    with engine.connect() as conn:
        assert feeds._narrowed(conn, "dispatch", mark) is not None       # all delivered: only newer rows are read
    late = add_notifications(engine, 1, start=200, ago=dt.timedelta(seconds=20))   # inside the margin, undelivered
    with engine.connect() as conn:
        assert feeds._narrowed(conn, "dispatch", mark) is None           # the full margin is read again
    again = poll_notification_feed(ws, page.cursor, sources=["dispatch"], limit=100)
    assert [i.id for i in again.items] == late
    assert poll_notification_feed(ws, again.cursor, sources=["dispatch"], limit=100).items == []
