"""Mail transports against a real SMTP server on loopback (aiosmtpd) and the outbox folder."""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from email import message_from_bytes
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from app.config import MailConfig
from app.services.mail import (
    Backoff,
    Email,
    MemoryTransport,
    OutboxTransport,
    PermanentMailError,
    SmtpTransport,
    TransientMailError,
    send_within,
    transport_from_config,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Counting:
    """Accepts every message; counts them and keeps the parsed messages."""

    def __init__(self):
        self.messages = []
        self.attempts = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.attempts += 1
            self.messages.append(message_from_bytes(envelope.original_content or envelope.content))
        return "250 OK"


class DeferTwice(Counting):
    """Answers 451 to the first two messages, then accepts."""

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.attempts += 1
            if self.attempts <= 2:
                return "451 4.3.0 Try again later"
            self.messages.append(message_from_bytes(envelope.original_content or envelope.content))
        return "250 OK"


class Refuse(Counting):
    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.attempts += 1
        return "550 5.7.1 Message rejected"


class QuitAnswers421(Counting):
    """Accepts the message, then answers QUIT with 421 (a server shutting down)."""

    async def handle_QUIT(self, server, session, envelope):
        return "421 4.3.2 Service shutting down"


class QuitHangs(Counting):
    """Accepts the message, then does not answer QUIT in time."""

    async def handle_QUIT(self, server, session, envelope):
        await asyncio.sleep(2.0)
        return "221 Bye"


class SlowData(Counting):
    """Takes ``delay`` seconds to answer the end of DATA."""

    def __init__(self, delay):
        super().__init__()
        self.delay = delay

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.attempts += 1
        await asyncio.sleep(self.delay)
        return "250 OK"


class SlowEveryCommand(Counting):
    """Answers MAIL and RCPT each just inside the socket timeout: slow, never timing out."""

    def __init__(self, delay):
        super().__init__()
        self.delay = delay

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        with self.lock:
            self.attempts += 1
        await asyncio.sleep(self.delay)
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        await asyncio.sleep(self.delay)
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def smtp_server():
    started = []

    def start(handler, port=None, **kwargs):
        ctl = Controller(handler, hostname="127.0.0.1", port=port or free_port(), **kwargs)
        ctl.start()
        started.append(ctl)
        return ctl

    def stop(ctl):
        started.remove(ctl)
        ctl.stop()

    start.stop = stop
    yield start
    for ctl in started:
        ctl.stop()


class RecordedBackoff(Backoff):
    """Backoff with the real policy, recording its delays instead of sleeping."""

    def __init__(self, attempts=4):
        super().__init__(attempts=attempts, base_delay=0.5, max_delay=8.0)
        self.slept: list[float] = []
        self.sleep = self.slept.append


def email(n=1) -> Email:
    return Email(to="admin@example.com", subject=f"Order #{n}: driver added pickup images",
                 html=f"<p>Order <b>#{n}</b></p>", text=f"Order #{n}\n", headers={"X-NC-Event": "pickup_images_added"})


def test_smtp_delivers_once_with_message_id_and_both_parts(smtp_server):
    handler = Counting()
    ctl = smtp_server(handler)
    transport = SmtpTransport(host="127.0.0.1", port=ctl.port, sender="console@example.com", backoff=RecordedBackoff())
    message_id = transport.send(email(7))
    assert len(handler.messages) == 1
    msg = handler.messages[0]
    assert msg["Message-ID"] == message_id
    assert msg["Subject"] == "Order #7: driver added pickup images"
    assert msg["To"] == "admin@example.com"
    assert msg["X-NC-Event"] == "pickup_images_added"
    assert sorted(p.get_content_type() for p in msg.walk() if not p.is_multipart()) == ["text/html", "text/plain"]


def test_smtp_451_twice_then_accepted_is_delivered_once_after_backoff(smtp_server):
    handler = DeferTwice()
    ctl = smtp_server(handler)
    backoff = RecordedBackoff(attempts=4)
    transport = SmtpTransport(host="127.0.0.1", port=ctl.port, sender="console@example.com", backoff=backoff)
    message_id = transport.send(email())
    assert handler.attempts == 3
    assert len(handler.messages) == 1
    assert handler.messages[0]["Message-ID"] == message_id  # the same id on every attempt
    assert len(backoff.slept) == 2
    # full jitter: each delay within [0, base * 2**n]
    assert 0 <= backoff.slept[0] <= 0.5 and 0 <= backoff.slept[1] <= 1.0


def test_backoff_is_exponential_and_capped():
    b = Backoff(attempts=10, base_delay=0.5, max_delay=8.0, rand=lambda lo, hi: hi)
    assert [b.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_backoff_stops_when_the_time_budget_is_spent():
    now = [0.0]
    slept = []

    def sleep(d):
        slept.append(d)
        now[0] += d

    b = Backoff(attempts=10, base_delay=4.0, max_delay=8.0, budget_seconds=15.0, sleep=sleep,
                rand=lambda lo, hi: hi, clock=lambda: now[0])
    transport = SmtpTransport(host="127.0.0.1", port=free_port(), sender="c@example.com", timeout=2, backoff=b)
    with pytest.raises(TransientMailError, match="failed 3 times"):
        transport.send(email())
    assert slept == [4.0, 8.0]  # a third wait of 8 s would pass the 15 s budget


def test_smtp_quit_answered_421_after_acceptance_is_one_email_and_a_success(smtp_server):
    handler = QuitAnswers421()
    ctl = smtp_server(handler)
    backoff = RecordedBackoff()
    transport = SmtpTransport(host="127.0.0.1", port=ctl.port, sender="console@example.com", backoff=backoff)
    message_id = transport.send(email(3))
    assert len(handler.messages) == 1
    assert handler.messages[0]["Message-ID"] == message_id
    assert backoff.slept == []


def test_smtp_quit_timing_out_after_acceptance_is_one_email_and_a_success(smtp_server):
    handler = QuitHangs()
    ctl = smtp_server(handler)
    backoff = RecordedBackoff()
    transport = SmtpTransport(host="127.0.0.1", port=ctl.port, sender="console@example.com", timeout=0.5,
                              backoff=backoff)
    message_id = transport.send(email(4))
    assert [m["Message-ID"] for m in handler.messages] == [message_id]
    assert backoff.slept == []


def test_smtp_socket_timeouts_are_cut_to_the_budget(smtp_server):
    handler = SlowData(delay=3.0)
    ctl = smtp_server(handler)
    transport = SmtpTransport(host="127.0.0.1", port=ctl.port, sender="console@example.com", timeout=10,
                              backoff=RecordedBackoff())
    started = time.monotonic()
    with pytest.raises(TransientMailError, match="failed 1 times.*timed out"):
        transport.send(email(), budget_seconds=1.0)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 1.5  # not the configured 10 s; no second attempt after the budget
    assert handler.attempts == 1


def test_an_attempt_ends_with_the_budget_however_many_slow_answers_it_takes(smtp_server):
    handler = SlowEveryCommand(delay=0.6)
    ctl = smtp_server(handler)
    transport = SmtpTransport(host="127.0.0.1", port=ctl.port, sender="console@example.com", timeout=1.0,
                              backoff=RecordedBackoff())
    started = time.monotonic()
    with pytest.raises(TransientMailError):
        transport.send(email(), budget_seconds=1.0)  # MAIL + RCPT alone take 1.2 s
    assert time.monotonic() - started < 1.5
    assert handler.attempts == 1 and handler.messages == []


def test_caller_budget_shorter_than_the_backoff_budget_stops_new_attempts():
    now = [0.0]
    slept = []

    def sleep(d):
        slept.append(d)
        now[0] += d

    b = Backoff(attempts=10, base_delay=4.0, max_delay=8.0, budget_seconds=60.0, sleep=sleep,
                rand=lambda lo, hi: hi, clock=lambda: now[0])
    transport = SmtpTransport(host="127.0.0.1", port=free_port(), sender="c@example.com", timeout=2, backoff=b)
    with pytest.raises(TransientMailError, match="failed 2 times"):
        transport.send(email(), budget_seconds=10.0)
    assert slept == [4.0]  # after 4 s, a wait of 8 s leaves no time for an attempt


def test_no_attempt_starts_when_the_budget_is_already_spent(smtp_server):
    handler = Counting()
    ctl = smtp_server(handler)
    transport = SmtpTransport(host="127.0.0.1", port=ctl.port, sender="c@example.com", backoff=RecordedBackoff())
    with pytest.raises(TransientMailError, match="was not tried"):
        transport.send(email(), budget_seconds=0.0)
    assert handler.attempts == 0 and handler.messages == []


def test_smtp_550_fails_at_once_without_retry(smtp_server):
    handler = Refuse()
    ctl = smtp_server(handler)
    backoff = RecordedBackoff()
    transport = SmtpTransport(host="127.0.0.1", port=ctl.port, sender="console@example.com", backoff=backoff)
    with pytest.raises(PermanentMailError, match="550"):
        transport.send(email())
    assert handler.attempts == 1
    assert backoff.slept == []


def test_smtp_refused_connection_retries_then_gives_up():
    backoff = RecordedBackoff(attempts=3)
    transport = SmtpTransport(host="127.0.0.1", port=free_port(), sender="c@example.com", timeout=2, backoff=backoff)
    with pytest.raises(TransientMailError, match="3 times.*refused the connection"):
        transport.send(email())
    assert len(backoff.slept) == 2


def test_smtp_login_with_password_from_environment(smtp_server, monkeypatch):
    seen = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        seen.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"s3cret", handled=False)

    handler = Counting()
    ctl = smtp_server(handler, authenticator=authenticator, auth_require_tls=False)
    monkeypatch.setenv("NC_MAIL_PASSWORD", "s3cret")
    config = MailConfig(transport="smtp", host="127.0.0.1", port=ctl.port, sender="c@example.com",
                        username="console", timeout_seconds=5)
    transport = transport_from_config(config, backoff=RecordedBackoff())
    assert isinstance(transport, SmtpTransport)
    transport.send(email())
    assert seen == [(b"console", b"s3cret")]
    assert len(handler.messages) == 1

    monkeypatch.setenv("NC_MAIL_PASSWORD", "wrong")
    backoff = RecordedBackoff()
    with pytest.raises(PermanentMailError, match="refused the login"):
        transport_from_config(config, backoff=backoff).send(email())
    assert backoff.slept == []
    assert len(handler.messages) == 1


def test_smtp_username_without_password_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NC_MAIL_PASSWORD", raising=False)
    config = MailConfig(transport="smtp", host="127.0.0.1", port=free_port(), username="console")
    backoff = RecordedBackoff()
    with pytest.raises(PermanentMailError, match="NC_MAIL_PASSWORD"):
        transport_from_config(config, backoff=backoff).send(email())
    assert backoff.slept == []


def _self_signed(tmp_path):
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _starttls_server(smtp_server, tmp_path, handler):
    """A server that requires STARTTLS and a login; returns it, a transport that logs in, and the logins seen
    (True for each one over TLS)."""
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append(session.ssl is not None)
        return AuthResult(success=True)

    ctl = smtp_server(handler, tls_context=server_ctx, require_starttls=True, authenticator=authenticator)
    transport = SmtpTransport(host="127.0.0.1", port=ctl.port, sender="c@example.com", starttls=True,
                              username="console", password="pw", backoff=RecordedBackoff(),
                              tls_context=ssl.create_default_context(cafile=str(cert)))
    return ctl, transport, logins


def test_smtp_starttls_then_login(smtp_server, tmp_path):
    handler = Counting()
    ctl, transport, logins = _starttls_server(smtp_server, tmp_path, handler)
    transport.send(email())
    assert logins == [True]
    assert len(handler.messages) == 1

    # The default context verifies the certificate: a self-signed one is refused for good.
    strict = SmtpTransport(host="127.0.0.1", port=ctl.port, sender="c@example.com", starttls=True,
                           backoff=RecordedBackoff())
    with pytest.raises(PermanentMailError, match="certificate"):
        strict.send(email())
    assert len(handler.messages) == 1


def test_starttls_on_a_server_without_it_fails_at_once(smtp_server):
    handler = Counting()
    ctl = smtp_server(handler)
    backoff = RecordedBackoff()
    transport = SmtpTransport(host="127.0.0.1", port=ctl.port, sender="c@example.com", starttls=True, backoff=backoff)
    with pytest.raises(PermanentMailError, match="STARTTLS"):
        transport.send(email())
    assert backoff.slept == []


# --------------------------------------------------------------------------
# SMTP sessions: one connection for a batch

class PerConnection(Counting):
    """Accepts every message; counts connections (EHLOs) and QUITs, and which connection took what."""

    def __init__(self):
        super().__init__()
        self.ehlos = 0
        self.quits = 0
        self.by_connection: dict[int, list[str]] = {}

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self.lock:
            self.ehlos += 1
        session.host_name = hostname
        return responses

    async def handle_QUIT(self, server, session, envelope):
        with self.lock:
            self.quits += 1
        return "221 Bye"

    async def handle_DATA(self, server, session, envelope):
        result = await super().handle_DATA(server, session, envelope)
        with self.lock:
            self.by_connection.setdefault(id(session), []).append(self.messages[-1]["Message-ID"])
        session.nc_accepted = getattr(session, "nc_accepted", 0) + 1
        return result

    def accepted_ids(self) -> list[str]:
        return [m["Message-ID"] for m in self.messages]


class ClosesAfter(PerConnection):
    """Takes ``n`` messages per connection, then closes it when the next MAIL comes (silently or with 421)."""

    def __init__(self, n, with_421):
        super().__init__()
        self.n = n
        self.with_421 = with_421

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if getattr(session, "nc_accepted", 0) >= self.n:
            if self.with_421:
                await server.push("421 4.7.0 Too many messages on one connection")
            server.transport.close()
            return "421 4.7.0 closing"  # not written: the connection is closed
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"


class ClosesDuringData(PerConnection):
    """Closes the connection instead of answering the end of DATA for the subjects in ``drop`` (once each)."""

    def __init__(self, drop):
        super().__init__()
        self.drop = set(drop)
        self.dropped: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        msg = message_from_bytes(envelope.original_content or envelope.content)
        if msg["Subject"] in self.drop:
            self.drop.discard(msg["Subject"])
            self.dropped.append(msg["Message-ID"])
            server.transport.close()
            return "250 OK"  # never written: the client cannot know whether it was taken
        return await super().handle_DATA(server, session, envelope)


class RefusesRecipient(PerConnection):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"


class DeferTwicePerConnection(PerConnection):
    """Answers 451 to the first two DATA it gets, then accepts."""

    deferred = 0

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.deferred < 2:
                self.deferred += 1
                return "451 4.3.0 Try again later"
        return await super().handle_DATA(server, session, envelope)


def test_a_session_sends_50_emails_over_one_connection(smtp_server):
    handler = PerConnection()
    ctl = smtp_server(handler)
    backoff = RecordedBackoff()
    transport = SmtpTransport(host="127.0.0.1", port=ctl.port, sender="console@example.com", backoff=backoff)
    with transport.session() as session:
        ids = [session.send(email(n), budget_seconds=30) for n in range(50)]
        assert handler.quits == 0  # kept open between sends
    assert handler.ehlos == 1 and len(handler.by_connection) == 1
    assert handler.accepted_ids() == ids and len(set(ids)) == 50
    assert [m["Subject"] for m in handler.messages] == [f"Order #{n}: driver added pickup images" for n in range(50)]
    assert handler.quits == 1 and backoff.slept == []


def test_an_unused_session_opens_no_connection(smtp_server):
    handler = PerConnection()
    ctl = smtp_server(handler)
    with SmtpTransport(host="127.0.0.1", port=ctl.port, sender="c@example.com").session():
        pass
    assert handler.ehlos == 0


def test_plain_send_still_uses_one_connection_per_email(smtp_server):
    handler = PerConnection()
    ctl = smtp_server(handler)
    transport = SmtpTransport(host="127.0.0.1", port=ctl.port, sender="c@example.com", backoff=RecordedBackoff())
    ids = [transport.send(email(n)) for n in range(3)]
    assert handler.accepted_ids() == ids and handler.ehlos == 3 and handler.quits == 3


@pytest.mark.parametrize("with_421", [False, True], ids=["closed", "421"])
def test_a_session_reconnects_when_the_server_closes_the_connection_between_emails(smtp_server, with_421):
    handler = ClosesAfter(7, with_421)
    ctl = smtp_server(handler)
    backoff = RecordedBackoff()
    transport = SmtpTransport(host="127.0.0.1", port=ctl.port, sender="console@example.com", backoff=backoff)
    with transport.session() as session:
        ids = [session.send(email(n)) for n in range(30)]
    assert handler.accepted_ids() == ids and len(set(ids)) == 30  # every email accepted exactly once
    assert [len(v) for v in handler.by_connection.values()] == [7, 7, 7, 7, 2]
    assert handler.ehlos == 5
    assert backoff.slept == []  # a connection that died while idle costs no backoff wait


def test_a_session_reconnects_after_the_server_restarts(smtp_server):
    first = PerConnection()
    ctl = smtp_server(first)
    port = ctl.port
    backoff = RecordedBackoff()
    transport = SmtpTransport(host="127.0.0.1", port=port, sender="console@example.com", backoff=backoff)
    with transport.session() as session:
        before = [session.send(email(n)) for n in range(3)]
        smtp_server.stop(ctl)  # closes the session's connection
        second = PerConnection()
        smtp_server(second, port=port)
        after = [session.send(email(n)) for n in range(3, 6)]
    assert first.accepted_ids() == before and second.accepted_ids() == after
    assert second.ehlos == 1 and backoff.slept == []


def test_a_connection_lost_during_data_is_not_reported_sent_and_the_retry_delivers_it_once(smtp_server):
    handler = ClosesDuringData(drop={"Order #2: driver added pickup images"})
    ctl = smtp_server(handler)
    backoff = RecordedBackoff()
    transport = SmtpTransport(host="127.0.0.1", port=ctl.port, sender="console@example.com", backoff=backoff)
    with transport.session() as session:
        ids = [session.send(email(n)) for n in range(5)]
    assert handler.accepted_ids() == ids
    assert handler.dropped == [ids[2]]  # the retry carried the same Message-ID
    assert len(backoff.slept) == 1  # the lost answer counts as a failed attempt: backoff, then a new connection
    assert handler.ehlos == 2


def test_a_session_reports_nothing_sent_when_every_attempt_loses_the_answer(smtp_server):
    subject = "Order #1: driver added pickup images"

    class AlwaysLoses(ClosesDuringData):
        async def handle_DATA(self, server, session, envelope):
            self.drop.add(subject)
            return await super().handle_DATA(server, session, envelope)

    handler = AlwaysLoses(drop=set())
    ctl = smtp_server(handler)
    transport = SmtpTransport(host="127.0.0.1", port=ctl.port, sender="c@example.com",
                              backoff=RecordedBackoff(attempts=3))
    with transport.session() as session:
        with pytest.raises(TransientMailError, match="failed 3 times"):
            session.send(email(1))
    assert handler.messages == [] and len(handler.dropped) == 3 and len(set(handler.dropped)) == 1


def test_a_refused_recipient_fails_only_that_email_and_the_session_goes_on(smtp_server):
    handler = RefusesRecipient()
    ctl = smtp_server(handler)
    backoff = RecordedBackoff()
    transport = SmtpTransport(host="127.0.0.1", port=ctl.port, sender="c@example.com", backoff=backoff)
    bad = Email(to="nobody@example.com", subject="To nobody", html="<p>x</p>")
    with transport.session() as session:
        first = session.send(email(1))
        with pytest.raises(PermanentMailError, match="550"):
            session.send(bad)
        second = session.send(email(2))
    assert handler.accepted_ids() == [first, second]
    assert [m["To"] for m in handler.messages] == ["admin@example.com", "admin@example.com"]
    assert handler.ehlos == 1 and backoff.slept == []  # same connection, after RSET


def test_a_session_retries_451_then_delivers_once(smtp_server):
    handler = DeferTwicePerConnection()
    ctl = smtp_server(handler)
    backoff = RecordedBackoff()
    transport = SmtpTransport(host="127.0.0.1", port=ctl.port, sender="c@example.com", backoff=backoff)
    with transport.session() as session:
        ids = [session.send(email(n)) for n in range(3)]
    assert handler.deferred == 2 and handler.accepted_ids() == ids  # each once, the first after two 451s
    assert len(backoff.slept) == 2 and handler.ehlos == 1  # a 451 leaves the connection usable (RSET)


def test_send_within_a_session_keeps_the_budget(smtp_server):
    handler = SlowData(delay=3.0)
    ctl = smtp_server(handler)
    transport = SmtpTransport(host="127.0.0.1", port=ctl.port, sender="c@example.com", timeout=10,
                              backoff=RecordedBackoff())
    with transport.session() as session:
        started = time.monotonic()
        with pytest.raises(TransientMailError, match="timed out"):
            send_within(session, email(), 1.0)
        assert time.monotonic() - started < 1.5
    assert handler.attempts == 1


def test_a_session_logs_in_once_over_starttls(smtp_server, tmp_path):
    handler = PerConnection()
    _ctl, transport, logins = _starttls_server(smtp_server, tmp_path, handler)
    with transport.session() as session:
        ids = [session.send(email(n)) for n in range(10)]
    assert logins == [True] and handler.accepted_ids() == ids


# --------------------------------------------------------------------------
# Outbox

INDEX_MARK = "<!-- nc-outbox-index 2 "


def index_rows(directory: Path) -> list[str]:
    """The email files index.html lists, in its order (one row each, nothing else linked)."""
    text = (directory / "index.html").read_text(encoding="utf-8")
    assert INDEX_MARK in text[:1024]
    rows = re.findall(r'<tr data-file="([^"]+)">', text)
    assert text.count("<a href=") == len(rows)
    return rows


def old_style_index(files: list[Path]) -> str:
    """index.html as the full-rewrite outbox wrote it (newest first, closed table)."""
    rows = "\n".join(f'<tr><td>2026</td><td>admin@example.com</td><td><a href="{p.name}">{p.name}</a></td></tr>'
                     for p in reversed(files))
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Outbox</title></head><body>\n"
            f"<h1>Outbox ({len(files)} emails)</h1>\n"
            "<table><tr><th>Created (UTC)</th><th>To</th><th>Subject</th></tr>\n" + rows + "\n</table></body></html>\n")


def test_outbox_one_file_per_email_and_index(tmp_path):
    outbox = OutboxTransport(tmp_path / "outbox")
    ids = [outbox.send(email(n)) for n in range(3)]
    files = outbox.files()
    assert len(files) == 3 and len(set(ids)) == 3
    assert index_rows(tmp_path / "outbox") == [f.name for f in files]  # oldest first, newest appended last
    index = (tmp_path / "outbox" / "index.html").read_text()
    assert "Order #2: driver added pickup images" in index and "admin@example.com" in index
    assert "<b>#1</b>" in files[1].read_text()
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == sorted([f.name for f in files] + ["index.html"])


def test_outbox_concurrent_writers_never_collide(tmp_path):
    outbox_dir = tmp_path / "outbox"
    barrier = threading.Barrier(8)
    errors = []

    def writer(w):
        transport = OutboxTransport(outbox_dir)  # one transport per worker, like separate consoles
        barrier.wait()
        try:
            for n in range(10):
                transport.send(email(w * 100 + n))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    files = OutboxTransport(outbox_dir).files()
    assert len(files) == 80
    assert sorted(index_rows(outbox_dir)) == [f.name for f in files]
    assert sorted(p.name for p in outbox_dir.iterdir() if p.name.endswith(".part")) == []


OUTBOX_WRITER = r"""
import sys
from app.services.mail import Email, OutboxTransport
directory, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
transport = OutboxTransport(directory)
print("ready", flush=True)
sys.stdin.readline()
for i in range(n):
    transport.send(Email(to="p@example.com", subject=f"Process {worker} email {i}", html="<p>x</p>"))
"""


def test_outbox_threads_and_processes_list_every_email_exactly_once_migrating_an_old_index(tmp_path):
    outbox_dir = tmp_path / "outbox"
    seed = OutboxTransport(outbox_dir)
    for n in range(5):
        seed.send(email(n))
    (outbox_dir / "index.html").write_text(old_style_index(seed.files()))
    per_writer = 150
    repo = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", OUTBOX_WRITER, str(outbox_dir), str(w), str(per_writer)],
                              cwd=repo, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for w in range(2)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    barrier = threading.Barrier(8 + 1)
    errors = []

    def writer(w):
        transport = OutboxTransport(outbox_dir)
        barrier.wait()
        try:
            for n in range(per_writer):
                transport.send(email(w * 1000 + n))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    barrier.wait()
    for t in threads:
        t.join()
    for proc in procs:
        proc.stdin.close()
        assert proc.wait(timeout=120) == 0
    assert errors == []
    files = OutboxTransport(outbox_dir).files()
    assert len(files) == 5 + 10 * per_writer
    rows = index_rows(outbox_dir)
    assert len(rows) == len(files) and sorted(rows) == [f.name for f in files]
    assert "Outbox (5 emails)" not in (outbox_dir / "index.html").read_text()


def test_outbox_rebuilds_while_writers_append_still_list_every_email_once(tmp_path):
    outbox_dir = tmp_path / "outbox"
    errors = []

    def writer(w):
        transport = OutboxTransport(outbox_dir)
        try:
            for n in range(120):
                transport.send(email(w * 1000 + n))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    rebuilds = 0
    rebuilder = OutboxTransport(outbox_dir)
    while any(t.is_alive() for t in threads):
        rebuilder.write_index()
        rebuilds += 1
    for t in threads:
        t.join()
    assert errors == [] and rebuilds > 0
    files = rebuilder.files()
    assert len(files) == 480
    assert sorted(index_rows(outbox_dir)) == [f.name for f in files]


def test_outbox_send_does_not_list_the_directory(tmp_path, monkeypatch):
    outbox_dir = tmp_path / "outbox"
    outbox = OutboxTransport(outbox_dir)
    outbox.send(email(0))  # the first email creates the index
    listings = []
    real_iterdir, real_scandir, real_listdir, real_files = Path.iterdir, os.scandir, os.listdir, OutboxTransport.files
    monkeypatch.setattr(Path, "iterdir", lambda self: (listings.append("iterdir"), real_iterdir(self))[1])
    monkeypatch.setattr(os, "scandir", lambda *a: (listings.append("scandir"), real_scandir(*a))[1])
    monkeypatch.setattr(os, "listdir", lambda *a: (listings.append("listdir"), real_listdir(*a))[1])
    monkeypatch.setattr(OutboxTransport, "files", lambda self: (listings.append("files"), real_files(self))[1])
    index = outbox_dir / "index.html"
    for n in range(1, 201):
        before = index.read_bytes()
        outbox.send(email(n))
        after = index.read_bytes()
        # one row appended, nothing before it rewritten
        assert after.startswith(before) and after[len(before):].count(b"\n") == 1
    assert listings == []
    monkeypatch.undo()
    assert len(index_rows(outbox_dir)) == 201 == len(outbox.files())


def test_outbox_missing_index_is_rebuilt(tmp_path):
    outbox_dir = tmp_path / "outbox"
    outbox = OutboxTransport(outbox_dir)
    for n in range(3):
        outbox.send(email(n))
    (outbox_dir / "index.html").unlink()
    outbox.send(email(3))
    assert index_rows(outbox_dir) == [f.name for f in outbox.files()] and len(outbox.files()) == 4


def test_outbox_old_format_index_is_migrated(tmp_path):
    outbox_dir = tmp_path / "outbox"
    outbox = OutboxTransport(outbox_dir)
    for n in range(3):
        outbox.send(email(n))
    (outbox_dir / "index.html").write_text(old_style_index(outbox.files()))
    outbox.send(email(3))
    assert index_rows(outbox_dir) == [f.name for f in outbox.files()] and len(outbox.files()) == 4
    assert "</html>" not in (outbox_dir / "index.html").read_text()
    outbox.send(email(4))  # and appends from then on
    assert index_rows(outbox_dir) == [f.name for f in outbox.files()] and len(outbox.files()) == 5


@pytest.mark.parametrize("garbage", [b"", b"\x00\xff not an index", b"<html><body>something else</body></html>"])
def test_outbox_unreadable_index_is_rebuilt(tmp_path, garbage):
    outbox_dir = tmp_path / "outbox"
    outbox = OutboxTransport(outbox_dir)
    outbox.send(email(0))
    (outbox_dir / "index.html").write_bytes(garbage)
    outbox.send(email(1))
    assert index_rows(outbox_dir) == [f.name for f in outbox.files()] and len(outbox.files()) == 2


def test_outbox_index_that_cannot_be_written_never_fails_the_send(tmp_path):
    outbox_dir = tmp_path / "outbox"
    outbox_dir.mkdir()
    (outbox_dir / "index.html").mkdir()  # cannot be opened, appended to, removed or replaced
    backoff = RecordedBackoff()
    outbox = OutboxTransport(outbox_dir, backoff=backoff)
    message_id = outbox.send(email(1))
    [f] = outbox.files()
    assert message_id in f.read_text() and backoff.slept == []
    (outbox_dir / "index.html").rmdir()
    outbox.send(email(2))  # the next write rebuilds it
    assert index_rows(outbox_dir) == [p.name for p in outbox.files()] and len(outbox.files()) == 2


def test_outbox_write_index_is_a_full_rebuild(tmp_path):
    outbox_dir = tmp_path / "outbox"
    outbox = OutboxTransport(outbox_dir)
    for n in range(3):
        outbox.send(email(n))
    (outbox_dir / "index.html").write_text(old_style_index(outbox.files()[:1]))
    outbox.write_index()
    assert index_rows(outbox_dir) == [f.name for f in outbox.files()]


def test_outbox_and_memory_sessions_are_the_transport(tmp_path):
    outbox = OutboxTransport(tmp_path / "outbox")
    with outbox.session() as s:
        s.send(email(1), budget_seconds=5)
        send_within(s, email(2), 5)
    assert len(outbox.files()) == 2 and len(index_rows(tmp_path / "outbox")) == 2
    memory = MemoryTransport()
    with memory.session() as s:
        s.send(email(1))
    assert memory.count == 1


def test_transport_from_config_outbox_default(tmp_path):
    t = transport_from_config(MailConfig(transport="outbox", outbox_dir=str(tmp_path / "o")))
    assert isinstance(t, OutboxTransport) and t.directory == tmp_path / "o"


def test_non_ascii_names_subjects_and_bodies_survive_the_message():
    from email import message_from_bytes, policy

    from app.services.mail import Email, SmtpTransport
    t = SmtpTransport(host="127.0.0.1", port=25, sender="Konsole Ümlaut <console@example.com>")
    msg = t.build(Email(to="Zoë Ågren <zoe@example.com>", subject="Grüße: dein Warenkorb",
                        html="<p>Hallo Zoë, 12,50 €</p>", text="Hallo Zoë, 12,50 €\n",
                        headers={"X-NC-Cart": "7:abc"}), "<id@example.com>")
    back = message_from_bytes(msg.as_bytes(), policy=policy.default)
    assert back["Subject"] == "Grüße: dein Warenkorb"
    assert back["To"].addresses[0].addr_spec == "zoe@example.com"
    assert back["To"].addresses[0].display_name == "Zoë Ågren"
    assert back["From"].addresses[0].addr_spec == "console@example.com"
    assert back["X-NC-Cart"] == "7:abc" and back["Message-ID"] == "<id@example.com>"
    assert back.get_body(("plain",)).get_content() == "Hallo Zoë, 12,50 €\n"
    assert back.get_body(("html",)).get_content() == "<p>Hallo Zoë, 12,50 €</p>"
