"""A cart retry never sends a second email for an abandonment already emailed (SQLite and MariaDB).

Seed 001's race: a second detector attempt writes its own row and bounces
while the first attempt's email goes out. Days later that failed row is
*superseded*, not retried: a sent row of the same cart lies within the
duplicate window before or after it.
"""
from __future__ import annotations

import datetime as dt

import pytest

from app.read.failures import failed_items
from app.services import cart as cart_service
from app.services.mail import MemoryTransport, OutboxTransport
from app.services.retry import retry
from tests.helpers import add_row, add_user, cart_hash, emailed_reason, rows

DAYS_AGO = dt.timedelta(days=3)


@pytest.fixture
def cart_ws(workspace_factory, sql_url):
    return workspace_factory(cart=sql_url("cart"))


def sent_count(tmp_path) -> int:
    return len(OutboxTransport(tmp_path / "outbox").files())


@pytest.mark.parametrize("sent_offset", [dt.timedelta(minutes=-5), dt.timedelta(hours=23, minutes=59)],
                         ids=["sent-5-minutes-before", "sent-23h59-after"])
def test_a_failed_row_with_a_sent_row_within_the_window_is_superseded(cart_ws, tmp_path, sent_offset):
    engine = cart_ws.engine("cart")
    uid = add_user(engine)
    h = cart_hash("c")
    failed = add_row(engine, uid, h, age=DAYS_AGO, error="SMTPRecipientsRefused: 550 bounced")
    sent = add_row(engine, uid, h, age=DAYS_AGO - sent_offset, sent=True)

    [item] = failed_items(cart_ws, "cart")
    assert (item.id, item.kind) == (failed, "superseded")
    assert item.detail["superseded_by"] == sent
    assert item.detail["reason"] == emailed_reason(engine, sent)

    out = retry(cart_ws, "cart", ids=[str(failed)], action_id="retry-ids")
    assert out["retried"] == 0 and out["failed"] == []
    assert out["skipped"] == [{"id": failed, "reason": emailed_reason(engine, sent)}]
    # --all never picks it up
    out = retry(cart_ws, "cart", all_matching=True, action_id="retry-all")
    assert out["snapshot"] == 0 and out["retried"] == 0
    assert sent_count(tmp_path) == 0
    assert [r["email_sent"] for r in rows(engine)] == [0, 1]


def test_a_sent_row_24h01_before_is_another_abandonment_and_the_row_is_retried(cart_ws, tmp_path):
    engine = cart_ws.engine("cart")
    uid = add_user(engine)
    h = cart_hash("c")
    add_row(engine, uid, h, age=DAYS_AGO + dt.timedelta(hours=24, minutes=1), sent=True)
    failed = add_row(engine, uid, h, age=DAYS_AGO, error="451 try later")
    [item] = failed_items(cart_ws, "cart")
    assert item.kind == "failed"
    out = retry(cart_ws, "cart", all_matching=True, action_id="retry-all")
    assert (out["snapshot"], out["retried"], out["retried_ids"]) == (1, 1, [failed])
    assert sent_count(tmp_path) == 1


def test_a_sent_row_of_another_cart_does_not_supersede(cart_ws, tmp_path):
    engine = cart_ws.engine("cart")
    uid = add_user(engine)
    add_row(engine, uid, cart_hash("other"), age=DAYS_AGO + dt.timedelta(minutes=5), sent=True)
    failed = add_row(engine, uid, cart_hash("c"), age=DAYS_AGO, error="451 try later")
    out = retry(cart_ws, "cart", all_matching=True, action_id="retry-all")
    assert out["retried_ids"] == [failed]
    assert sent_count(tmp_path) == 1


@pytest.mark.parametrize("apart", [dt.timedelta(hours=1), dt.timedelta(days=2)], ids=["1h-apart", "2-days-apart"])
def test_two_failed_rows_of_one_cart_send_exactly_one_email(cart_ws, tmp_path, apart):
    engine = cart_ws.engine("cart")
    uid = add_user(engine)
    h = cart_hash("c")
    older = add_row(engine, uid, h, age=DAYS_AGO + apart, error="451 try later")
    newer = add_row(engine, uid, h, age=DAYS_AGO, error="451 try later")
    assert {i.kind for i in failed_items(cart_ws, "cart")} == {"failed"}
    out = retry(cart_ws, "cart", all_matching=True, action_id="retry-all")
    assert out["snapshot"] == 2 and out["retried"] == 1 and out["failed"] == []
    [won] = out["retried_ids"]
    [skip] = out["skipped"]
    assert {won, skip["id"]} == {older, newer}
    # Sequentially the second row finds the first sent; on the pool the two may
    # run at once and the second then finds the first's claim in progress.
    assert skip["reason"] == emailed_reason(engine, won) or \
        skip["reason"].startswith("cart email already in progress on ") and f"(row {won}," in skip["reason"]
    assert sent_count(tmp_path) == 1
    # the other row now shows as superseded by the one that was sent
    [item] = failed_items(cart_ws, "cart")
    assert (item.id, item.kind, item.detail["superseded_by"]) == (skip["id"], "superseded", won)


def test_the_failed_list_keeps_kinds_apart_and_pages_past_superseded_rows(cart_ws):
    engine = cart_ws.engine("cart")
    uid = add_user(engine)
    superseded = []
    for n in range(5):  # newest rows: superseded, each by its own sent row
        h = cart_hash(f"s{n}")
        superseded.append(add_row(engine, uid, h, age=DAYS_AGO - dt.timedelta(minutes=n), error="bounce"))
        add_row(engine, uid, h, age=DAYS_AGO - dt.timedelta(minutes=n, seconds=30), sent=True)
    failed = add_row(engine, uid, cart_hash("f"), age=DAYS_AGO + dt.timedelta(hours=1), error="451")
    stuck = add_row(engine, uid, cart_hash("k"), age=DAYS_AGO + dt.timedelta(hours=2))
    # A page of two "failed" items must look past the five newer superseded rows.
    assert [i.id for i in failed_items(cart_ws, "cart", kinds=["failed", "stuck"], limit=2)] == [failed, stuck]
    assert [i.id for i in failed_items(cart_ws, "cart", kinds=["superseded"], limit=3)] == superseded[::-1][:3]
    assert len(failed_items(cart_ws, "cart")) == 7


def test_the_production_path_skips_a_cart_emailed_within_the_window(cart_ws):
    """The simulator's guarded path: a new detection of a cart emailed 5 minutes ago sends nothing."""
    engine = cart_ws.engine("cart")
    uid = add_user(engine)
    h = cart_hash("c")
    sent = add_row(engine, uid, h, age=dt.timedelta(minutes=5), sent=True)
    mem = MemoryTransport()
    out = cart_service.process_abandoned_cart(cart_ws, uid, h, 10, transport=mem)
    assert (out.status, out.log_id) == ("skipped", sent)
    assert out.reason == emailed_reason(engine, sent)
    assert mem.sent == []


def test_a_chunk_renews_its_claims_when_earlier_sends_were_slow(cart_ws, monkeypatch):
    """Claims of a chunk are taken together; a send that starts late in a slow chunk
    first renews its claim, so it still gets its whole time budget."""
    from app.services import cart as svc
    engine = cart_ws.engine("cart")
    uid = add_user(engine)
    ids = [add_row(engine, uid, cart_hash(f"c{n}"), age=DAYS_AGO, error="451") for n in range(3)]
    clock = {"t": 1000.0}
    monkeypatch.setattr(svc.time, "monotonic", lambda: clock["t"])
    budgets = []

    class Slow(MemoryTransport):
        def send(self, email, *, budget_seconds=None):
            budgets.append(budget_seconds)
            clock["t"] += 40  # each send takes 40 s of the 120-s in-progress window
            return super().send(email)

    renewals = []
    real_renew = svc._renew
    monkeypatch.setattr(svc, "_renew", lambda *a: renewals.append(a[1:3]) or real_renew(*a))
    outcomes = svc.retry_items(cart_ws, [str(i) for i in ids], operator="op", action_id="slow", transport=Slow())
    assert outcomes == [("retried", None)] * 3
    assert len(renewals) == 2                 # before the second and the third send
    assert budgets == [60.0, 60.0, 60.0]      # every send had half the window


def test_a_mark_that_fails_in_a_chunk_fails_its_item_only(cart_ws, monkeypatch):
    from app.errors import OperationFailed
    from app.services import cart as svc
    engine = cart_ws.engine("cart")
    uid = add_user(engine)
    ids = [add_row(engine, uid, cart_hash(f"c{n}"), age=DAYS_AGO, error="451") for n in range(3)]
    real_mark = svc._mark_sent

    def flaky(engine_, user_id, chash, log_id, token):
        if log_id == ids[1]:
            raise OperationFailed("The cart database failed: connection lost.")
        return real_mark(engine_, user_id, chash, log_id, token)
    monkeypatch.setattr(svc, "_mark_sent", flaky)
    mem = MemoryTransport()
    outcomes = svc.retry_items(cart_ws, [str(i) for i in ids], operator="op", action_id="flaky", transport=mem)
    assert outcomes[0] == outcomes[2] == ("retried", None)
    assert outcomes[1] == ("failed", f"The email of cart row {ids[1]} was sent, but recording it failed: "
                                     "The cart database failed: connection lost.")
    assert len(mem.sent) == 3
    # Its claim stays "sending": an immediate retry does not send it again.
    monkeypatch.setattr(svc, "_mark_sent", real_mark)
    again = svc.retry_items(cart_ws, [str(ids[1])], operator="op", action_id="again", transport=mem)
    assert again[0][0] == "skipped" and "in progress" in again[0][1]
    assert len(mem.sent) == 3
