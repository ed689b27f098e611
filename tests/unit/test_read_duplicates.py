"""The duplicate rules as pure functions over row dicts: exact groups on hand-made rows."""
import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from app.read.rules import group_cart_rows, group_dispatch_rows, group_order_logs

T0 = dt.datetime(2024, 3, 1, 8, 0, 0)
H = "a" * 64


def cart(id, user=1, h=H, at=T0, sent=1):
    return {"id": id, "user_id": user, "cart_hash": h, "created_at": at,
            "sent_at": at + dt.timedelta(seconds=5) if sent else None, "email_sent": sent}


def test_cart_rows_23h59_apart_are_duplicates():
    groups = group_cart_rows([cart(1), cart(2, at=T0 + dt.timedelta(hours=23, minutes=59))], 24)
    assert [(g.keep_id, g.member_ids, g.count) for g in groups] == [(1, [1, 2], 2)]
    g = groups[0]
    assert g.key == {"user_id": 1, "cart_hash": H}
    assert g.first_at == T0 and g.last_at == T0 + dt.timedelta(hours=23, minutes=59)
    assert [e["id"] for e in g.evidence] == [1, 2] and g.evidence[1]["sent_at"] is not None
    assert g.to_json()["member_ids"] == [1, 2] and g.to_json()["count"] == 2


def test_cart_rows_24h01_apart_and_exactly_24h_are_new_abandonments():
    assert group_cart_rows([cart(1), cart(2, at=T0 + dt.timedelta(hours=24, minutes=1))], 24) == []
    assert group_cart_rows([cart(1), cart(2, at=T0 + dt.timedelta(hours=24))], 24) == []


def test_cart_different_hash_or_user_is_not_a_duplicate():
    assert group_cart_rows([cart(1), cart(2, h="b" * 64, at=T0 + dt.timedelta(minutes=1))], 24) == []
    assert group_cart_rows([cart(1), cart(2, user=2, at=T0 + dt.timedelta(minutes=1))], 24) == []


def test_cart_unsent_rows_never_count():
    rows = [cart(1), cart(2, at=T0 + dt.timedelta(minutes=1), sent=0),
            cart(3, at=T0 + dt.timedelta(minutes=2), sent=0)]
    assert group_cart_rows(rows, 24) == []
    # An unsent first row does not anchor the window: the sent rows do.
    rows = [cart(1, sent=0), cart(2, at=T0 + dt.timedelta(hours=20)), cart(3, at=T0 + dt.timedelta(hours=30))]
    assert [g.member_ids for g in group_cart_rows(rows, 24)] == [[2, 3]]


def test_cart_chain_is_anchored_at_the_first_sent_row():
    at = [0, 10, 23.9, 24.5, 30, 49]
    rows = [cart(i + 1, at=T0 + dt.timedelta(hours=h)) for i, h in enumerate(at)]
    groups = group_cart_rows(rows, 24)
    # 0,10,23.9 | 24.5 anchors the next: 24.5,30 | 49 (24.5 h after 24.5) alone
    assert [g.member_ids for g in groups] == [[1, 2, 3], [4, 5]]


def test_cart_keep_is_earliest_time_then_id_whatever_the_input_order():
    rows = [cart(9, at=T0 + dt.timedelta(hours=1)), cart(7, at=T0), cart(5, at=T0)]
    (g,) = group_cart_rows(rows, 24)
    assert g.keep_id == 5 and g.member_ids == [5, 7, 9] and g.remove_ids == [7, 9]


def test_cart_window_is_a_setting():
    rows = [cart(1), cart(2, at=T0 + dt.timedelta(hours=2))]
    assert group_cart_rows(rows, 1) == []
    assert len(group_cart_rows(rows, 3)) == 1


def notif(id, dispatch_id, user=10, type="comment_added", issue=5, comment=77, actor=3, at=T0):
    return {"id": id, "user_id": user, "type": type, "issue_id": issue, "comment_id": comment,
            "actor_user_id": actor, "created_at": at, "dispatch_id": dispatch_id}


def test_dispatch_legacy_null_ids_are_grouped_with_keyed_ones():
    rows = [notif(1, None), notif(2, "k-1", at=T0 + dt.timedelta(seconds=1)),
            notif(3, "k-2-retry", at=T0 + dt.timedelta(days=3)), notif(4, "k-1", user=11)]
    (g,) = group_dispatch_rows(rows)
    assert g.member_ids == [1, 2, 3] and g.keep_id == 1
    assert [e["dispatch_id"] for e in g.evidence] == [None, "k-1", "k-2-retry"]
    assert g.key == {"user_id": 10, "type": "comment_added", "issue_id": 5, "comment_id": 77, "actor_user_id": 3}


def test_dispatch_null_comment_id_equals_null_but_not_a_value():
    rows = [notif(1, "a", comment=None, type="status_changed"), notif(2, "b", comment=None, type="status_changed"),
            notif(3, "c", comment=1, type="status_changed")]
    assert [g.member_ids for g in group_dispatch_rows(rows)] == [[1, 2]]


def test_dispatch_different_event_parts_are_different_keys():
    base = notif(1, "a")
    others = [notif(2, "b", type="status_changed"), notif(3, "c", issue=6), notif(4, "d", comment=78),
              notif(5, "e", actor=4), notif(6, "f", user=12)]
    assert group_dispatch_rows([base, *others]) == []


def test_order_logs_group_per_order_and_event_ids_as_strings():
    from bson import ObjectId
    a, b, c, d = (ObjectId() for _ in range(4))
    docs = [{"_id": b, "order_id": 1042, "event": "pickup_images_added", "sent_at": T0 + dt.timedelta(seconds=2)},
            {"_id": a, "order_id": 1042, "event": "pickup_images_added", "sent_at": T0},
            {"_id": c, "order_id": 1042, "event": "delivery_images_added", "sent_at": T0},
            {"_id": d, "order_id": 1043, "event": "pickup_images_added", "sent_at": T0}]
    (g,) = group_order_logs(docs)
    assert g.keep_id == str(a) and g.member_ids == [str(a), str(b)]
    assert g.key == {"order_id": 1042, "event": "pickup_images_added"}
    assert g.to_json()["keep_id"] == str(a)


rows_strategy = st.lists(st.tuples(st.integers(1, 3), st.sampled_from("ab"), st.integers(0, 96 * 60),
                                   st.booleans()), max_size=30)


@settings(max_examples=60, deadline=None)
@given(rows_strategy)
def test_cart_groups_partition_sent_rows_and_respect_the_window(spec):
    rows = [cart(i + 1, user=u, h=h * 64, at=T0 + dt.timedelta(minutes=m), sent=int(s))
            for i, (u, h, m, s) in enumerate(spec)]
    groups = group_cart_rows(rows, 24)
    by_id = {r["id"]: r for r in rows}
    seen = set()
    for g in groups:
        members = [by_id[i] for i in g.member_ids]
        assert all(m["email_sent"] for m in members)
        assert len({(m["user_id"], m["cart_hash"]) for m in members}) == 1
        anchor = members[0]
        assert all(m["created_at"] - anchor["created_at"] < dt.timedelta(hours=24) for m in members)
        assert [(m["created_at"], m["id"]) for m in members] == sorted((m["created_at"], m["id"]) for m in members)
        assert not seen & set(g.member_ids)
        seen |= set(g.member_ids)
    # Every sent row left out is the only row of its chain.
    assert all(r["email_sent"] for r in rows if r["id"] in seen)
