"""Cart abandonment emails through the guarded path: claim, log row, send, mark (SQLite and MariaDB)."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import func, insert, select, update

from app.errors import UsageError
from app.schema import cart_log, nc_cart_claim
from app.services import cart as cart_service
from app.services.mail import MemoryTransport, OutboxTransport, PermanentMailError
from app.services.retry import retry
from app.sqlutil import db_now
from tests.helpers import add_row, add_user, cart_hash, emailed_reason, rows


class Failing:
    name = "failing"

    def __init__(self):
        self.calls = 0

    def send(self, email):
        self.calls += 1
        raise PermanentMailError("The mail server 127.0.0.1:25 refused the message (550 mailbox unavailable)")


def claim(engine, user_id, chash):
    with engine.connect() as conn:
        return conn.execute(select(nc_cart_claim).where(nc_cart_claim.c.user_id == user_id,
                                                        nc_cart_claim.c.cart_hash == chash)).mappings().first()


def age_claim(engine, user_id, chash, by: dt.timedelta):
    with engine.begin() as conn:
        c = conn.execute(select(nc_cart_claim).where(nc_cart_claim.c.user_id == user_id,
                                                     nc_cart_claim.c.cart_hash == chash)).mappings().one()
        conn.execute(update(nc_cart_claim).where(nc_cart_claim.c.user_id == user_id,
                                                 nc_cart_claim.c.cart_hash == chash)
                     .values(claimed_at=c["claimed_at"] - by,
                             sent_at=c["sent_at"] - by if c["sent_at"] else None))


def age_rows(engine, by: dt.timedelta):
    with engine.begin() as conn:
        for r in conn.execute(select(cart_log)).mappings().all():
            conn.execute(update(cart_log).where(cart_log.c.id == r["id"]).values(
                created_at=r["created_at"] - by, sent_at=r["sent_at"] - by if r["sent_at"] else None))


@pytest.fixture
def cart_ws(workspace_factory, sql_url, tmp_path):
    return workspace_factory(cart=sql_url("cart"))


def test_first_detection_sends_one_email_and_marks_row_and_claim(cart_ws, tmp_path):
    engine = cart_ws.engine("cart")
    uid = add_user(engine)
    h = cart_hash("cart-1")
    first = cart_service.process_abandoned_cart(cart_ws, uid, h, "1543.00")
    assert first.status == "sent" and first.message_id
    again = cart_service.process_abandoned_cart(cart_ws, uid, h, "1543.00")
    assert again.status == "skipped"
    assert again.reason == emailed_reason(engine, first.log_id)
    [row] = rows(engine)
    assert row["id"] == first.log_id and row["email_sent"] == 1 and row["sent_at"] is not None
    assert str(row["cart_value"]) == "1543.00"
    c = claim(engine, uid, h)
    assert c["state"] == "sent" and c["log_id"] == first.log_id
    outbox = OutboxTransport(tmp_path / "outbox")
    [f] = outbox.files()
    assert "1543.00" in f.read_text() and "ann@example.com" in (tmp_path / "outbox" / "index.html").read_text()
    # a different cart of the same user is a different email
    other = cart_service.process_abandoned_cart(cart_ws, uid, cart_hash("cart-2"), 5)
    assert other.status == "sent"
    assert len(outbox.files()) == 2


def test_same_cart_after_24_hours_is_a_new_abandonment(cart_ws):
    engine = cart_ws.engine("cart")
    uid = add_user(engine)
    h = cart_hash("cart-1")
    mem = MemoryTransport()
    first = cart_service.process_abandoned_cart(cart_ws, uid, h, 10, transport=mem)
    # 23 h later: still the same abandonment
    age_claim(engine, uid, h, dt.timedelta(hours=23))
    age_rows(engine, dt.timedelta(hours=23))
    assert cart_service.process_abandoned_cart(cart_ws, uid, h, 10, transport=mem).status == "skipped"
    # 25 h later: a new one
    age_claim(engine, uid, h, dt.timedelta(hours=2))
    age_rows(engine, dt.timedelta(hours=2))
    second = cart_service.process_abandoned_cart(cart_ws, uid, h, 10, transport=mem)
    assert second.status == "sent" and second.log_id != first.log_id
    assert len(mem.sent) == 2
    assert [r["email_sent"] for r in rows(engine)] == [1, 1]


def test_send_failure_is_recorded_and_retried_after_the_in_progress_window(cart_ws):
    engine = cart_ws.engine("cart")
    uid = add_user(engine)
    h = cart_hash("cart-1")
    failing = Failing()
    out = cart_service.process_abandoned_cart(cart_ws, uid, h, 10, transport=failing)
    assert out.status == "failed" and "550" in out.reason
    [row] = rows(engine)
    assert row["email_sent"] == 0 and "550 mailbox unavailable" in row["error_message"]
    assert claim(engine, uid, h)["state"] == "failed"
    # inside the in-progress window the detector leaves it alone
    mem = MemoryTransport()
    skipped = cart_service.process_abandoned_cart(cart_ws, uid, h, 10, transport=mem)
    assert skipped.status == "skipped" and skipped.reason.startswith("cart email failed")
    assert mem.sent == []
    # after the window, the next detection takes it over
    age_claim(engine, uid, h, dt.timedelta(minutes=3))
    again = cart_service.process_abandoned_cart(cart_ws, uid, h, 10, transport=mem)
    assert again.status == "sent" and len(mem.sent) == 1
    assert [(r["email_sent"]) for r in rows(engine)] == [0, 1]


def test_a_dead_sender_is_taken_over_after_the_window(cart_ws):
    engine = cart_ws.engine("cart")
    uid = add_user(engine)
    h = cart_hash("cart-1")
    with engine.begin() as conn:  # a console died after claiming
        conn.execute(insert(nc_cart_claim).values(user_id=uid, cart_hash=h, state="sending",
                                                  claimed_at=db_now(conn), owner="dead@host#1"))
    mem = MemoryTransport()
    out = cart_service.process_abandoned_cart(cart_ws, uid, h, 10, transport=mem)
    assert out.status == "skipped" and "in progress on dead@host#1" in out.reason
    age_claim(engine, uid, h, dt.timedelta(minutes=2, seconds=5))
    assert cart_service.process_abandoned_cart(cart_ws, uid, h, 10, transport=mem).status == "sent"
    assert len(mem.sent) == 1


def test_a_sent_row_written_before_the_console_counts(cart_ws):
    engine = cart_ws.engine("cart")
    uid = add_user(engine)
    h = cart_hash("cart-1")
    old = add_row(engine, uid, h, age=dt.timedelta(hours=3), sent=True)
    mem = MemoryTransport()
    out = cart_service.process_abandoned_cart(cart_ws, uid, h, 10, transport=mem)
    assert out.status == "skipped" and out.reason == emailed_reason(engine, old)
    assert mem.sent == [] and len(rows(engine)) == 1
    assert claim(engine, uid, h)["state"] == "sent"


def test_bad_input_is_one_sentence(cart_ws):
    from app.errors import OperationFailed, UsageError
    with pytest.raises(UsageError, match="64 hexadecimal"):
        cart_service.process_abandoned_cart(cart_ws, 1, "abc", 10)
    with pytest.raises(UsageError, match="not a number"):
        cart_service.process_abandoned_cart(cart_ws, "x", cart_hash("a"), 10)
    with pytest.raises(OperationFailed, match="User 99 does not exist"):
        cart_service.process_abandoned_cart(cart_ws, 99, cart_hash("a"), 10)


# --------------------------------------------------------------------------
# retry

def test_retry_sends_a_failed_row_once(cart_ws, tmp_path):
    engine = cart_ws.engine("cart")
    uid = add_user(engine)
    failed = add_row(engine, uid, cart_hash("c"), age=dt.timedelta(minutes=10), error="451 try later")
    out = retry(cart_ws, "cart", ids=[str(failed)], action_id="retry-1")
    assert out["retried"] == 1 and out["retried_ids"] == [failed]
    [row] = rows(engine)
    assert row["email_sent"] == 1 and row["error_message"] is None
    assert len(OutboxTransport(tmp_path / "outbox").files()) == 1
    again = retry(cart_ws, "cart", ids=[str(failed)], action_id="retry-2")
    assert again["retried"] == 0
    # The second retry names the console that sent it, from the audit of the first.
    [skip] = again["skipped"]
    assert skip["id"] == failed and re.fullmatch(
        rf"already retried by \S+@\S+ at \d\d:\d\d UTC \(cart row {failed} was already sent\)", skip["reason"])
    assert len(OutboxTransport(tmp_path / "outbox").files()) == 1


def test_retry_skipped_when_the_cart_was_emailed_within_24_hours(cart_ws, tmp_path):
    engine = cart_ws.engine("cart")
    uid = add_user(engine)
    h = cart_hash("c")
    sent = add_row(engine, uid, h, age=dt.timedelta(hours=1), sent=True)
    failed = add_row(engine, uid, h, age=dt.timedelta(minutes=10), error="451 try later")
    out = retry(cart_ws, "cart", ids=[str(failed)], action_id="retry-1")
    assert out["retried"] == 0 and out["failed"] == []
    assert out["skipped"] == [{"id": failed, "reason": emailed_reason(engine, sent)}]
    assert OutboxTransport(tmp_path / "outbox").files() == []
    assert [r["email_sent"] for r in rows(engine)] == [1, 0]


def test_retry_of_in_progress_missing_and_bad_ids(cart_ws):
    engine = cart_ws.engine("cart")
    uid = add_user(engine)
    fresh = add_row(engine, uid, cart_hash("c"), age=dt.timedelta(seconds=20))
    with pytest.raises(UsageError, match="The cart row id 'abc' is not a positive whole number"):
        retry(cart_ws, "cart", ids=[str(fresh), "abc"], action_id="retry-0")
    out = retry(cart_ws, "cart", ids=[str(fresh), "999999"], action_id="retry-1")
    assert out["retried"] == 0
    assert out["skipped"][0]["id"] == fresh
    assert out["skipped"][0]["reason"].startswith(f"cart row {fresh} is still in progress")
    assert out["failed"] == [{"id": 999999, "error": "Cart row 999999 does not exist."}]


def test_retry_send_failure_is_failed_with_the_error_and_recorded(cart_ws):
    engine = cart_ws.engine("cart")
    uid = add_user(engine)
    h = cart_hash("c")
    failed = add_row(engine, uid, h, age=dt.timedelta(minutes=10), error="451 try later")
    failing = Failing()
    with pytest.raises(Exception, match="could not be sent: .*550"):
        cart_service.retry_item(cart_ws, str(failed), operator="op@host", action_id="a1", transport=failing)
    [row] = rows(engine)
    assert row["email_sent"] == 0 and "550" in row["error_message"]
    assert claim(engine, uid, h)["state"] == "failed"
    # an admin may retry a failed claim at once; nothing was sent, so no guarantee is at stake
    mem = MemoryTransport()
    assert cart_service.retry_item(cart_ws, str(failed), operator="op@host", action_id="a2",
                                   transport=mem) == ("retried", None)
    assert len(mem.sent) == 1
    with engine.connect() as conn:
        assert conn.execute(select(func.sum(cart_log.c.email_sent))).scalar() == 1
