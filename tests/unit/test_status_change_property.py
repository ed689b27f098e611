"""The status-change rule as a pure function, on random histories of status changes.

Two status_changed notifications of one recipient are one event only when
they name the same issue, actor and new status and no other status change
of that issue (any recipient, any actor) lies strictly between them.
"""
import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from app.read.rules import group_dispatch_rows

T0 = dt.datetime(2026, 11, 20, 10, 0)
KEY = ("user_id", "issue_id", "actor_user_id", "message")


def status(id, user, issue, actor, to, minute):
    return {"id": id, "user_id": user, "type": "status_changed", "issue_id": issue, "comment_id": None,
            "actor_user_id": actor, "message": f"User {actor} changed OPS-{issue} to {to}", "is_read": 0,
            "created_at": T0 + dt.timedelta(minutes=minute), "dispatch_id": None}


def timeline_of(rows):
    out: dict = {}
    for r in sorted(rows, key=lambda r: r["created_at"]):
        out.setdefault(r["issue_id"], []).append((r["created_at"], r["actor_user_id"], r["message"]))
    return out


def other_between(rows, member, a, b):
    """A status change of ``member``'s issue, other than its (actor, message), strictly between a and b."""
    return any(r["issue_id"] == member["issue_id"] and a < r["created_at"] < b
               and (r["actor_user_id"], r["message"]) != (member["actor_user_id"], member["message"])
               for r in rows)


change = st.tuples(st.integers(1, 3),                             # recipient
                   st.integers(1, 2),                             # issue
                   st.integers(1, 2),                             # actor
                   st.sampled_from(["resolved", "reopened", "closed"]),
                   st.integers(0, 40))                            # minute: ties are frequent
history = st.lists(change, max_size=30)


def rows_of(spec):
    return [status(i + 1, *c) for i, c in enumerate(spec)]


@settings(max_examples=300, deadline=None)
@given(history)
def test_no_group_spans_another_status_change_and_every_split_has_one(spec):
    rows = rows_of(spec)
    by_id = {r["id"]: r for r in rows}
    groups = group_dispatch_rows(rows, status_timeline=timeline_of(rows))
    grouped: dict = {}
    for g in groups:
        members = [by_id[i] for i in g.member_ids]
        assert len({tuple(m[k] for k in KEY) for m in members}) == 1
        assert [(m["created_at"], m["id"]) for m in members] == sorted((m["created_at"], m["id"]) for m in members)
        for a, b in zip(members, members[1:]):
            assert not other_between(rows, a, a["created_at"], b["created_at"])
        for m in members:
            assert m["id"] not in grouped
            grouped[m["id"]] = g.keep_id
    # Maximal: consecutive rows of one key fall apart only where another change lies between.
    by_key: dict = {}
    for r in rows:
        by_key.setdefault(tuple(r[k] for k in KEY), []).append(r)
    for members in by_key.values():
        members.sort(key=lambda r: (r["created_at"], r["id"]))
        for a, b in zip(members, members[1:]):
            together = a["id"] in grouped and grouped[a["id"]] == grouped.get(b["id"])
            assert together != other_between(rows, a, a["created_at"], b["created_at"])


@settings(max_examples=200, deadline=None)
@given(st.lists(change, max_size=30, unique_by=lambda c: c[4]))
def test_with_distinct_times_no_two_members_of_a_group_have_another_change_between(spec):
    rows = rows_of(spec)
    by_id = {r["id"]: r for r in rows}
    for g in group_dispatch_rows(rows, status_timeline=timeline_of(rows)):
        members = [by_id[i] for i in g.member_ids]
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                assert not other_between(rows, a, a["created_at"], b["created_at"])


@settings(max_examples=200, deadline=None)
@given(history, st.integers(1, 3))
def test_one_recipients_rows_with_the_issue_timeline_group_as_in_the_whole_history(spec, user):
    """What the scans do: the candidate rows of some keys, the timeline of every recipient."""
    rows = rows_of(spec)
    whole = {tuple(g.member_ids) for g in group_dispatch_rows(rows) if g.key["user_id"] == user}
    mine = [r for r in rows if r["user_id"] == user]
    assert {tuple(g.member_ids) for g in group_dispatch_rows(mine, status_timeline=timeline_of(rows))} == whole


def test_resolved_reopened_resolved_is_no_group_and_resolved_twice_is_one():
    rows = [status(1, 4, 10, 5, "resolved", 0), status(2, 4, 10, 5, "reopened", 1),
            status(3, 4, 10, 5, "resolved", 2)]
    assert group_dispatch_rows(rows) == []
    (g,) = group_dispatch_rows([rows[0], rows[2]])
    assert g.member_ids == [1, 3]
    # The reopen, told to another recipient only, still lies between.
    assert group_dispatch_rows([rows[0], rows[2]], status_timeline=timeline_of([dict(rows[1], user_id=7)])) == []
    # A change at the very time of a member is not between.
    tie = status(4, 7, 10, 6, "closed", 0)
    assert [g.member_ids for g in group_dispatch_rows([rows[0], rows[2]], status_timeline=timeline_of([tie]))] \
        == [[1, 3]]
    # Comments keep today's rule: a status change between two copies of one comment changes nothing.
    comment = {"user_id": 4, "type": "comment_added", "issue_id": 10, "comment_id": 8, "actor_user_id": 5,
               "message": "c", "is_read": 0, "dispatch_id": None}
    copies = [dict(comment, id=5, created_at=T0), dict(comment, id=6, created_at=T0 + dt.timedelta(minutes=2))]
    assert [g.member_ids for g in group_dispatch_rows(copies + [rows[1]])] == [[5, 6]]
