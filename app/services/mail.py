"""Mail transports: real SMTP and the development outbox.

Every stage email and cart email the console sends is handed to exactly one
``send`` call, on a transport or on one of its sessions, which returns the
message id or raises:

* ``TransientMailError`` — the server said "try later" (4xx), dropped the
  connection, timed out or refused it, and the bounded retries with
  exponential backoff and full jitter (seed 003) are used up;
* ``PermanentMailError`` — the server refused the message for good (5xx),
  or the configuration cannot work (no STARTTLS, login refused): no retry.

Sessions. ``with transport.session() as s: s.send(email, budget_seconds=...)``
sends a batch; ``s`` keeps ``send``'s contract (and works with
``send_within``). For SMTP the session keeps one connection (connected,
EHLO, STARTTLS, logged in) from one email to the next and QUITs it at the
end, instead of one connection per email. A connection the session reuses
may have died while idle (server timeout, restart, 421): when it fails
before DATA began, the attempt reconnects at once and sends on the new
connection, inside the same budget; any other failure counts as an attempt
of ``Backoff``. After an error the connection is dropped, except after a
refusal the server answered (4xx/5xx other than 421), when it is kept only
if RSET answers 250: a refused recipient does not poison the next email.
An email is reported sent only after the server answered 250 to its DATA,
and every attempt for one email carries the same Message-ID. A session is
for one thread at a time (concurrent sends on one session wait for each
other). ``SmtpTransport.send`` is a session of one email. The outbox and the
memory transport have no connection: their session is the transport itself.

The outbox (development) writes exactly one HTML file per email, named so
that concurrent writers on any number of threads and processes never
collide. ``index.html`` is kept at a constant cost per email: the email file
is written and then one ``<tr>`` row is appended to the index with a single
``O_APPEND`` write (the index has no closing tags, which browsers do not
need). Writing an email and its row happens under a shared ``flock`` on the
outbox directory; rebuilding the index from every file (``write_index``)
takes the lock exclusively. So a rebuild never runs between an email's file
and its row, and every email is listed exactly once: by its appended row,
or by the rebuild that found its file. The index is rebuilt when a writer
finds it missing, without this format's marker (the old format, rewritten in
full after each email, or anything unreadable), or could not append its
row; an index that cannot be written never fails the send.
"""
from __future__ import annotations

import datetime as dt
import errno
import html as html_lib
import json
import os
import random
import re
import smtplib
import socket
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

# A platform check rather than ``try: import fcntl``: mypy checks each branch on its platform.
if sys.platform == "win32":  # pragma: no cover - Windows: a byte lock on .outbox.lock
    import msvcrt
else:  # POSIX: flock on the outbox directory
    import fcntl

from ..config import Config, MailConfig, data_dir
from ..errors import OperationFailed

if TYPE_CHECKING:
    from _socket import _Address as _SourceAddress  # what smtplib's stubs name it

    from _typeshed import ReadableBuffer

    from ..bootstrap import Workspace


class MailError(OperationFailed):
    """The email could not be handed over; the message says why."""


class TransientMailError(MailError):
    """Worth trying again later; raised after the transport's own retries ran out."""


class PermanentMailError(MailError):
    """Trying again will not help: the message or the configuration is refused."""


@dataclass
class Email:
    to: str
    subject: str
    html: str
    text: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Backoff:
    """Bounded retries with exponential backoff and full jitter.

    Attempt ``n`` (0-based) that fails transiently waits
    ``uniform(0, min(max_delay, base_delay * 2**n))`` before the next one.
    ``sleep`` and ``rand`` are injectable so tests run without waiting.
    """

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    # No new attempt starts once this many seconds have gone by: a send must
    # finish well inside the in-progress window (cart: 2 minutes) after which
    # another console may take the claim over.
    budget_seconds: float | None = 60.0
    # An attempt is started only with at least this much of the budget left:
    # a handful of round trips on a healthy server.
    min_attempt_seconds: float = 0.5
    sleep: Callable[[float], None] = time.sleep
    rand: Callable[[float, float], float] = random.uniform
    clock: Callable[[], float] = time.monotonic

    def delay(self, attempt: int) -> float:
        return self.rand(0.0, min(self.max_delay, self.base_delay * (2 ** attempt)))


class MailTransport:
    """Base: ``send`` hands one email over and returns its message id.

    ``budget_seconds`` bounds the whole send, retries and waits included:
    a caller holding a claim that another console may take over after a
    lease passes the part of that lease the send may use. Socket timeouts
    are cut to what is left of it, and no attempt starts once it is spent.
    """

    name = "mail"

    def send(self, email: Email, *, budget_seconds: float | None = None) -> str:  # pragma: no cover
        raise NotImplementedError

    @contextmanager
    def session(self) -> Iterator[MailTransport]:
        """A sender for a batch of emails, with ``send``'s contract; for one thread at a time.

        Transports without a connection to keep are their own session.
        """
        yield self

    def _with_backoff(self, backoff: Backoff, once: Callable[[float | None], str], what: str,
                      budget_seconds: float | None = None) -> str:
        """Run ``once(deadline)`` with retries; ``deadline`` is on ``backoff.clock`` (None: unbounded)."""
        last: TransientMailError | None = None
        started = backoff.clock()
        budgets = [b for b in (backoff.budget_seconds, budget_seconds) if b is not None]
        deadline = started + min(budgets) if budgets else None
        tries = 0
        for attempt in range(max(1, backoff.attempts)):
            if deadline is not None and deadline - backoff.clock() < backoff.min_attempt_seconds:
                if last is None:
                    raise TransientMailError(f"{what} was not tried: its time budget "
                                             f"({min(budgets):g} s) was already spent")
                break
            tries += 1
            try:
                return once(deadline)
            except TransientMailError as exc:
                last = exc
                if attempt + 1 >= backoff.attempts:
                    break
                delay = backoff.delay(attempt)
                # A wait after which no attempt fits in the budget is not worth waiting.
                if deadline is not None and \
                        backoff.clock() + delay + backoff.min_attempt_seconds > deadline:
                    break
                backoff.sleep(delay)
        raise TransientMailError(
            f"{what} failed {tries} times, last: {last.message if last else 'unknown error'}")


class PlainSender(Protocol):
    """A transport without budgets (a test double, a transport of another kind): ``send(email)`` only."""

    def send(self, email: Email) -> str: ...


def send_within(transport: MailTransport | PlainSender, email: Email, budget_seconds: float | None) -> str:
    """Hand ``email`` to ``transport`` within ``budget_seconds`` (transports without budgets: plain send)."""
    if isinstance(transport, MailTransport):
        return transport.send(email, budget_seconds=budget_seconds)
    return transport.send(email)


def _message_id(domain: str | None = None) -> str:
    return make_msgid(idstring=uuid.uuid4().hex[:12], domain=domain or "notification-console.local")


# --------------------------------------------------------------------------
# SMTP

def _classify_smtp(exc: BaseException, host: str, port: int) -> MailError:
    """Turn an smtplib/socket exception into a transient or permanent error."""
    where = f"{host}:{port}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _msg in exc.recipients.values()]
        detail = "; ".join(f"{rcpt}: {code} {_text(msg)}" for rcpt, (code, msg) in exc.recipients.items())
        if codes and all(400 <= c < 500 for c in codes):
            return TransientMailError(f"The mail server {where} deferred the recipients ({detail})")
        return PermanentMailError(f"The mail server {where} refused the recipients ({detail})")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return PermanentMailError(f"The mail server {where} does not support what the configuration asks: {exc}")
    if isinstance(exc, smtplib.SMTPResponseException):
        code = exc.smtp_code
        text = f"{code} {_text(exc.smtp_error)}"
        if isinstance(exc, smtplib.SMTPAuthenticationError) and not 400 <= code < 500:
            return PermanentMailError(f"The mail server {where} refused the login ({text}): "
                                      "check mail.username and NC_MAIL_PASSWORD")
        if 400 <= code < 500 or code < 0:
            return TransientMailError(f"The mail server {where} answered {text}")
        return PermanentMailError(f"The mail server {where} refused the message ({text})")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentMailError(f"The mail server {where} presented a certificate that cannot be verified: "
                                  f"{exc.verify_message or exc}")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return TransientMailError(f"The mail server {where} closed the connection: {exc}")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return TransientMailError(f"The mail server {where} did not answer in time")
    if isinstance(exc, ConnectionRefusedError):
        return TransientMailError(f"The mail server {where} refused the connection")
    if isinstance(exc, socket.gaierror):
        return TransientMailError(f"The mail server name {host} cannot be resolved: {exc}")
    if isinstance(exc, OSError):
        return TransientMailError(f"The mail server {where} cannot be reached: {exc}")
    if isinstance(exc, smtplib.SMTPException):
        return PermanentMailError(f"The mail server {where} failed: {exc}")
    return PermanentMailError(f"Sending through {where} failed: {type(exc).__name__}: {exc}")


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip()


class SmtpTransport(MailTransport):
    name = "smtp"

    def __init__(self, *, host: str, port: int, sender: str, starttls: bool = False,
                 username: str = "", password: str | None = None, timeout: float = 10.0,
                 backoff: Backoff | None = None, tls_context: ssl.SSLContext | None = None):
        self.host = host
        self.port = port
        self.sender = sender
        self.starttls = starttls
        self.username = username
        self.password = password
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        # Verify the server's certificate (smtplib's own default does not).
        self.tls_context = tls_context

    def build(self, email: Email, message_id: str) -> Message:
        """The MIME message: text and HTML alternatives, UTF-8.

        Built with the classic ``email.mime`` classes: the modern
        ``EmailMessage`` API costs about 2.8 ms a message to build and
        flatten against 0.5 ms here, and a bulk retry builds thousands.
        """
        # email.mime's classes use the compat32 policy, whose header values may be Header
        # objects (the stubs' default says str only).
        msg = cast("Message[str, str | Header]", MIMEMultipart("alternative"))
        msg["From"] = _address(self.sender)
        msg["To"] = _address(email.to)
        msg["Subject"] = Header(email.subject, "utf-8") if not email.subject.isascii() else email.subject
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = message_id
        for name, value in (email.headers or {}).items():
            if name.lower() in ("from", "to", "subject", "date", "message-id"):
                continue
            msg[name] = value if value.isascii() else Header(value, "utf-8")
        msg.attach(MIMEText(email.text or _html_to_text(email.html), "plain", "utf-8"))
        msg.attach(MIMEText(email.html, "html", "utf-8"))
        return msg

    @contextmanager
    def session(self) -> Iterator[SmtpSession]:
        """One SMTP connection kept across the batch's sends, QUIT at the end."""
        session = SmtpSession(self)
        try:
            yield session
        finally:
            session.close()

    def send(self, email: Email, *, budget_seconds: float | None = None) -> str:
        session = SmtpSession(self)
        try:
            return session.send(email, budget_seconds=budget_seconds)
        finally:
            # QUIT within this email's budget: the send is over when it is.
            session.close(within_budget=True)

    def _connect(self, remaining: Callable[[], float] | None) -> _BoundedSMTP:
        """A connection ready for MAIL FROM: connected, EHLO, STARTTLS and login as configured."""
        smtp = _BoundedSMTP(self.timeout, remaining)
        try:
            smtp.connect(self.host, self.port)
            smtp.ehlo()
            if self.starttls:
                smtp.starttls(context=self.tls_context or ssl.create_default_context())
                smtp.ehlo()
            if self.username:
                assert self.password is not None  # SmtpSession.send refuses a username without password first
                smtp.login(self.username, self.password)
        except BaseException:
            smtp.close()
            raise
        return smtp


class SmtpSession(MailTransport):
    """Sends through one kept SMTP connection; made by ``SmtpTransport.session()``.

    The connection is opened by the first send and kept for the next; see
    the module docstring for when it is reconnected, dropped or kept.
    """

    name = "smtp"

    def __init__(self, transport: SmtpTransport):
        self.transport = transport
        self.backoff = transport.backoff
        self._smtp: _BoundedSMTP | None = None
        self._lock = threading.Lock()

    def send(self, email: Email, *, budget_seconds: float | None = None) -> str:
        t = self.transport
        if t.username and t.password is None:
            raise PermanentMailError("mail.username is set but NC_MAIL_PASSWORD is not: set it to log in")
        # One Message-ID for every attempt: a server that got the message but
        # whose answer was lost sees the same id again.
        message_id = _message_id(t.sender.rsplit("@", 1)[-1] if "@" in t.sender else None)
        msg = t.build(email, message_id)
        clock = t.backoff.clock

        def once(deadline: float | None) -> str:
            remaining = None if deadline is None else (lambda: deadline - clock())
            may_reconnect = True
            while True:
                smtp = self._smtp
                reused = smtp is not None
                try:
                    if smtp is None:
                        smtp = self._smtp = t._connect(remaining)
                    else:
                        smtp.bound_by(remaining)
                    smtp.data_started = False
                    smtp.send_message(msg)
                except Exception as exc:  # smtplib and socket raise many kinds; classify each
                    # A kept connection that died while idle fails before DATA:
                    # the server cannot have the message, so send it on a new one.
                    stale = (reused and smtp is not None and may_reconnect and not smtp.data_started
                             and _connection_lost(exc))
                    self._settle(exc)
                    if stale:
                        may_reconnect = False
                        continue
                    raise _classify_smtp(exc, t.host, t.port) from None
                except BaseException:
                    self._drop()
                    raise
                # 250 after DATA: the message is handed over.
                return message_id

        with self._lock:
            return self._with_backoff(t.backoff, once, f"Sending through {t.host}:{t.port}", budget_seconds)

    def _settle(self, exc: BaseException) -> None:
        """After an error, keep the connection only if the server answered and RSET says it is ready."""
        smtp = self._smtp
        if smtp is None:
            return
        answered = False
        if isinstance(exc, smtplib.SMTPResponseException):
            answered = exc.smtp_code != 421
        elif isinstance(exc, smtplib.SMTPRecipientsRefused):
            answered = all(code != 421 for code, _msg in exc.recipients.values())
        if answered and smtp.sock is not None:
            try:
                if smtp.rset()[0] == 250:
                    return
            except Exception:  # noqa: BLE001 - any doubt: drop it
                pass
        self._drop()

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    def close(self, *, within_budget: bool = False) -> None:
        """QUIT and close the kept connection (bounded by the last email's budget, or by the timeout)."""
        with self._lock:  # after a send still running on another thread, never in its middle
            smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        if not within_budget:
            smtp.bound_by(None)
        # Every email was answered already: whatever QUIT answers (421, a
        # timeout, a dropped connection) changes nothing and must not make
        # anyone send again.
        try:
            smtp.quit()
        except Exception:  # noqa: BLE001 - see above
            pass
        finally:
            smtp.close()


def _connection_lost(exc: BaseException) -> bool:
    """The server is gone from this connection (closed, reset, 421); not slow and not refusing."""
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return not isinstance(exc.__context__, TimeoutError)
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return any(code == 421 for code, _msg in exc.recipients.values())
    return isinstance(exc, (ConnectionError, EOFError))


class _BoundedSMTP(smtplib.SMTP):
    """smtplib.SMTP whose every connect, write and read ends by a deadline.

    Before each command and each reply the socket timeout is set to the
    configured timeout or what is left of the budget, whichever is smaller,
    so one attempt cannot outlast the budget however slow the server is.
    """

    def __init__(self, timeout: float, remaining: Callable[[], float] | None):
        self._configured = timeout
        self._remaining = remaining
        # Set when DATA starts: before it, the server cannot have accepted the message.
        self.data_started = False
        super().__init__(timeout=timeout)

    def bound_by(self, remaining: Callable[[], float] | None) -> None:
        """Bound the next commands by another email's budget (None: the configured timeout only)."""
        self._remaining = remaining

    def _left(self) -> float:
        if self._remaining is None:
            return self._configured
        left = self._remaining()
        if left <= 0:
            raise TimeoutError("the time budget for this email is spent")
        return min(self._configured, left)

    def _bound(self) -> None:
        timeout = self._left()
        self.timeout = timeout
        if self.sock is not None:
            self.sock.settimeout(timeout)

    def connect(self, host: str = "localhost", port: int = 0,
                source_address: _SourceAddress | None = None) -> tuple[int, bytes]:
        self._bound()  # _get_socket uses self.timeout for the TCP connect
        self._host = host  # STARTTLS checks the certificate against it
        return super().connect(host, port, source_address)

    def send(self, s: ReadableBuffer | str) -> None:
        self._bound()
        return super().send(s)

    def getreply(self) -> tuple[int, bytes]:
        self._bound()
        return super().getreply()

    def starttls(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        self._bound()  # the TLS handshake runs on the socket's timeout
        return super().starttls(*args, **kwargs)

    def data(self, msg: ReadableBuffer | str) -> tuple[int, bytes]:
        self.data_started = True
        return super().data(msg)


def _address(text: str) -> str:
    """An address header value whose display name may be non-ASCII (encoded, the address not)."""
    if text.isascii():
        return text
    name, addr = parseaddr(text)
    return formataddr((name, addr), charset="utf-8") if addr else str(Header(text, "utf-8"))


def _html_to_text(html: str) -> str:
    text = re.sub(r"<(br|/p|/div|/tr|/h\d)\s*/?>", "\n", html, flags=re.I)
    text = re.sub(r"<[^>]+>", "", text)
    return html_lib.unescape(text).strip() + "\n"


# --------------------------------------------------------------------------
# Development outbox

_META_PREFIX = "<!-- nc-outbox "
_META_SUFFIX = " -->"
INDEX_NAME = "index.html"
# An index with this marker near its start takes appended rows; any other is rebuilt.
_INDEX_MARK = "<!-- nc-outbox-index 2 "
_INDEX_HEAD = (
    "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Outbox</title>\n"
    "<style>table{counter-reset:n}tr[data-file]{counter-increment:n}"
    "tr[data-file] td:first-child::before{content:counter(n)}</style></head><body>\n"
    + _INDEX_MARK + "one row is appended per email, newest last; delete this file to have it rebuilt -->\n"
    "<h1>Outbox</h1>\n"
    "<table><tr><th>#</th><th>Created (UTC)</th><th>To</th><th>Subject</th></tr>\n")
# Enough of the index's start to hold the marker.
_INDEX_PEEK = 1024


class OutboxTransport(MailTransport):
    """One HTML file per email in ``directory`` plus ``index.html``, one row appended per email."""

    name = "outbox"

    def __init__(self, directory: str | os.PathLike[str], *, sender: str = "", backoff: Backoff | None = None):
        self.directory = Path(directory).expanduser()
        self.sender = sender
        self.backoff = backoff or Backoff(attempts=3, base_delay=0.05, max_delay=0.5)

    def files(self) -> list[Path]:
        """The email files, oldest first (names start with the UTC time)."""
        if not self.directory.exists():
            return []
        return sorted(p for p in self.directory.iterdir()
                      if p.suffix == ".html" and p.name != INDEX_NAME and not p.name.startswith("."))

    def send(self, email: Email, *, budget_seconds: float | None = None) -> str:
        message_id = _message_id("outbox.localhost")
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        # Time first so a listing sorts by time; the uuid makes the name unique
        # across threads, processes and hosts sharing the folder.
        name = f"{now:%Y%m%dT%H%M%S.%f}-{uuid.uuid4().hex[:16]}-{_slug(email.subject)}.html"
        meta = {"to": email.to, "from": self.sender, "subject": email.subject, "message_id": message_id,
                "created": now.isoformat(timespec="milliseconds") + "Z", "headers": email.headers or {}}
        body = _META_PREFIX + json.dumps(meta).replace("--", "\\u002d\\u002d") + _META_SUFFIX + "\n" + email.html
        row = _index_row(name, meta).encode("utf-8")
        index_state = ["ok"]

        def once(_deadline: float | None) -> str:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TransientMailError(f"The outbox {self.directory} cannot be written: {exc}") from None
            # The file and its row under one shared lock: a rebuild (exclusive)
            # sees either both or neither, so it never lists an email whose row
            # is still to come.
            with _outbox_lock(self.directory, exclusive=False) as locked:
                try:
                    _atomic_write(self.directory / name, body)
                except OSError as exc:
                    raise TransientMailError(f"The outbox {self.directory} cannot be written: {exc}") from None
                index_state[0] = self._append_row(row) if locked else "unlocked"
            return message_id

        result = self._with_backoff(self.backoff, once, f"Writing to the outbox {self.directory}",
                                    budget_seconds)
        # The email is in the outbox now; an index that cannot be brought up to
        # date is rebuilt by a later write and must not make the caller send again.
        if index_state[0] != "ok":
            self._repair(index_state[0])
        return result

    def _append_row(self, row: bytes) -> str:
        """Append this email's row in one write: "ok", or why the index needs a rebuild.

        "missing" and "stale" (no marker: the old format or unreadable) mean
        the row was not written; "error" means it may be missing or partial.
        """
        try:
            fd = os.open(self.directory / INDEX_NAME, os.O_RDWR | os.O_APPEND | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            return "missing"
        except OSError:
            return "error"
        try:
            if _INDEX_MARK.encode() not in os.read(fd, _INDEX_PEEK):
                return "stale"
            return "ok" if os.write(fd, row) == len(row) else "error"
        except OSError:
            return "error"
        finally:
            os.close(fd)

    def _index_ok(self) -> bool:
        try:
            with (self.directory / INDEX_NAME).open("rb") as fh:
                return _INDEX_MARK.encode() in fh.read(_INDEX_PEEK)
        except OSError:
            return False

    def _repair(self, state: str) -> None:
        """After an email's row could not be appended: have the index rebuilt so it lists every email once.

        A valid index found after this email's lock was released was built by
        a rebuild that listed its file, so it needs nothing more.
        """
        try:
            if state in ("error", "unlocked"):
                # The index may lack this email's row: remove it, so that every
                # writer stops appending and the next one (or this one) rebuilds it.
                try:
                    (self.directory / INDEX_NAME).unlink()
                except FileNotFoundError:
                    pass
                if state == "unlocked":
                    return
            with _outbox_lock(self.directory, exclusive=False) as locked:
                if locked and self._index_ok():
                    return
            with _outbox_lock(self.directory, exclusive=True) as locked:
                if locked and not self._index_ok():
                    self._rebuild()
        except OSError:
            pass

    def write_index(self) -> None:
        """Rebuild index.html from every email file (cost grows with the outbox; for repairs and migration).

        The index is removed first: writers that find it missing wait for a
        rebuild instead of appending, so the exclusive lock is not starved.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            (self.directory / INDEX_NAME).unlink()
        except FileNotFoundError:
            pass
        with _outbox_lock(self.directory, exclusive=True):
            self._rebuild()

    def _rebuild(self) -> None:
        _atomic_write(self.directory / INDEX_NAME, self._render_index(self.files()))

    def _render_index(self, files: list[Path]) -> str:
        return _INDEX_HEAD + "".join(_index_row(path.name, _read_meta(path)) for path in files)


def _index_row(name: str, meta: dict[str, Any]) -> str:
    """One email's line of the index: a table row, ``data-file`` naming its file."""
    href = html_lib.escape(name)
    cells = (html_lib.escape(str(meta.get(key, "")).replace("\n", " ")) for key in ("created", "to"))
    subject = html_lib.escape(str(meta.get("subject") or name).replace("\n", " "))
    return "<tr data-file=\"{href}\"><td></td><td>{}</td><td>{}</td><td><a href=\"{href}\">{subject}</a></td></tr>\n" \
        .format(*cells, href=href, subject=subject)


@contextmanager
def _outbox_lock(directory: Path, *, exclusive: bool) -> Iterator[bool]:
    """Lock the outbox for every thread and process (yields False when the lock cannot be had).

    POSIX: ``flock`` on the directory itself, shared or exclusive; each call
    opens its own descriptor, so threads of one process exclude each other
    too. Elsewhere: a byte lock on ``.outbox.lock``, always exclusive.
    """
    try:
        fd = _lock_outbox(directory, exclusive)
    except OSError:
        fd = None
    try:
        yield fd is not None
    finally:
        if fd is not None:
            if sys.platform == "win32":  # pragma: no cover - Windows
                try:
                    os.lseek(fd, 0, os.SEEK_SET)
                    msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
                except OSError:
                    pass
            os.close(fd)  # releases a flock


def _lock_outbox(directory: Path, exclusive: bool) -> int:
    if sys.platform != "win32":
        fd = os.open(directory, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        return fd
    else:  # pragma: no cover - Windows
        fd = os.open(directory / ".outbox.lock", os.O_RDWR | os.O_CREAT)
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                return fd
            except OSError as exc:  # LK_LOCK gives up after about 10 s; keep waiting
                if exc.errno not in (errno.EACCES, getattr(errno, "EDEADLOCK", errno.EDEADLK)):
                    os.close(fd)
                    raise


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as fh:
            first = fh.readline().strip()
    except OSError:
        return {}
    if first.startswith(_META_PREFIX) and first.endswith(_META_SUFFIX):
        try:
            # The line send() wrote: a JSON object.
            return cast("dict[str, Any]", json.loads(first[len(_META_PREFIX):-len(_META_SUFFIX)]))
        except ValueError:
            return {}
    return {}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "email"


def _atomic_write(path: Path, content: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        tmp.write_text(content, encoding="utf-8")
        for attempt in range(5):
            try:
                os.replace(tmp, path)
                return
            except PermissionError:  # Windows: a reader holds the target open
                if attempt == 4:
                    raise
                time.sleep(0.01 * (attempt + 1))
    finally:
        if tmp.exists():
            try:
                tmp.unlink()
            except OSError:
                pass


# --------------------------------------------------------------------------
# In-memory transport: the simulator and the demo count what would be sent.

class MemoryTransport(MailTransport):
    """Keeps (or, with ``keep=False``, only counts) the emails handed to it."""

    name = "memory"

    def __init__(self, *, keep: bool = True):
        self.keep = keep
        self.count = 0
        self.sent: list[tuple[str, Email]] = []
        self._lock = threading.Lock()

    def send(self, email: Email, *, budget_seconds: float | None = None) -> str:
        message_id = _message_id("memory.localhost")
        with self._lock:
            self.count += 1
            if self.keep:
                self.sent.append((message_id, email))
        return message_id


def outbox_dir(mail: MailConfig) -> Path:
    return Path(mail.outbox_dir).expanduser() if mail.outbox_dir else data_dir() / "outbox"


def transport_from_config(workspace_or_mailconfig: Workspace | Config | MailConfig, *,
                          backoff: Backoff | None = None) -> MailTransport:
    """The transport the configuration names (``[mail] transport = smtp | outbox``)."""
    obj = workspace_or_mailconfig
    if isinstance(obj, MailConfig):
        mail = obj
    elif hasattr(obj, "mail"):
        mail = obj.mail
    else:
        mail = obj.config.mail
    if mail.transport == "smtp":
        return SmtpTransport(host=mail.host, port=mail.port, sender=mail.sender, starttls=mail.starttls,
                             username=mail.username, password=mail.password(),
                             timeout=mail.timeout_seconds, backoff=backoff)
    return OutboxTransport(outbox_dir(mail), sender=mail.sender, backoff=backoff)
