"""What every read query shares: the ``--filter`` and ``--since`` clauses, the late-commit
margin, key batching, the sort keys for ids and times that may be of mixed types, and
epoch seconds and the chart buckets numbered by them.

Nothing here knows a source or a rule; the scans (``duplicates``), the member
index (``cart_members``), the lists (``failures``), the feeds and the rollup
all build on it.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeAlias, TypeVar

from sqlalchemy import Integer, and_, cast, func, or_, tuple_
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from ..errors import UsageError
from ..sqlutil import db_now

# Keys per phase-2 query: small enough for the planner to use index ranges.
KEY_BATCH = 400
# Rows a scan catches late: a transaction that committed after the previous
# scan with an older id or time (clock skew, long transactions).
LATE_COMMIT_MARGIN = dt.timedelta(minutes=2)
_MIN_TIME = dt.datetime.min

_T = TypeVar("_T")

# What ``--since`` takes: an absolute naive-UTC time, a span back from now, or nothing.
Since: TypeAlias = "dt.datetime | dt.timedelta | None"


# --------------------------------------------------------------------------
# Sort keys and values as a driver hands them back

def id_key(value: object) -> tuple[int, int | str]:
    """A sort key for an id that may be an int, a string or an ObjectId (ints first, by value)."""
    if isinstance(value, bool):
        return (1, str(value))
    if isinstance(value, int):
        return (0, value)
    return (1, str(value))


def time_key(value: object) -> dt.datetime:
    """A sort key for a time that may be missing (None and non-times sort first)."""
    return value if isinstance(value, dt.datetime) else _MIN_TIME


def as_time(value: _T) -> _T | dt.datetime:
    """A row's time as a datetime (a driver may hand back text for an untyped column)."""
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.strip().replace("T", " ")).replace(tzinfo=None)
        except ValueError:
            return value
    return value


def epoch_seconds(t: dt.datetime) -> int:
    """Whole seconds since 1970 of a naive-UTC time (chart buckets are numbered by it)."""
    return int((t - dt.datetime(1970, 1, 1)).total_seconds())


def bucket_expr(col: ColumnElement[Any], seconds: int, dialect: str) -> ColumnElement[Any]:
    """Integer bucket number of a timestamp column: floor(epoch seconds / bucket), in SQL."""
    if dialect in ("mysql", "mariadb"):
        return func.floor(func.unix_timestamp(col) / seconds)
    if dialect == "postgresql":
        return func.floor(func.extract("epoch", col) / seconds)
    return cast(func.strftime("%s", col), Integer) / seconds


def batched(items: list[_T], size: int) -> Iterator[list[_T]]:
    """``items`` in consecutive slices of at most ``size`` (a query per slice)."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


# --------------------------------------------------------------------------
# --since and --filter

def resolve_since(conn_or_now: Connection | dt.datetime, since: Since) -> dt.datetime | None:
    """``since`` as an absolute naive-UTC time (a timedelta counts back from the DB clock)."""
    if since is None or isinstance(since, dt.datetime):
        return since
    if isinstance(since, dt.timedelta):
        now = conn_or_now if isinstance(conn_or_now, dt.datetime) else db_now(conn_or_now)
        return now - since
    raise UsageError(f"--since must be a duration such as 30m, 24h or 7d, not {since!r}.")


def like_any(columns: Iterable[ColumnElement[Any]], text: str) -> ColumnElement[bool]:
    """``text`` in any of ``columns``: literal and case-insensitive on every backend.

    A bound, escaped pattern (``%``, ``_``, quotes and backslashes match
    themselves); ``icontains`` is ``lower(..) LIKE lower(..)`` on MariaDB and
    SQLite and ``ILIKE`` on PostgreSQL, whose plain LIKE is case-sensitive.
    """
    return or_(*[c.icontains(text, autoescape=True) for c in columns])


def text_filter(text_cols: Sequence[ColumnElement[Any]], int_cols: Iterable[ColumnElement[Any]],
                text: str | None) -> ColumnElement[bool] | None:
    """What ``--filter TEXT`` matches: TEXT literally (case-insensitive) in one of
    ``text_cols``, or, when TEXT is a whole number, equal to one of ``int_cols``.
    None when there is no filter. Every list the console filters uses this."""
    if not text:
        return None
    clauses = [like_any(text_cols, text)] if text_cols else []
    n = _int_or_none(text)
    if n is not None:
        clauses += [c == n for c in int_cols]
    return or_(*clauses) if clauses else None


def mongo_text_filter(text_fields: Iterable[str], int_fields: Iterable[str],
                      text: str | None) -> dict[str, Any]:
    """``text_filter`` for the order store: TEXT literally (case-insensitive) in a
    text field, or a whole number equal to an int field; {} without a filter."""
    if not text:
        return {}
    pattern = re.escape(text)  # literal text, never an operator or a pattern
    ors: list[dict[str, Any]] = [{f: {"$regex": pattern, "$options": "i"}} for f in text_fields]
    n = _int_or_none(text)
    if n is not None:
        ors += [{f: n} for f in int_fields]
    return {"$or": ors}


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    t = text.strip()
    return int(t) if re.fullmatch(r"\d{1,18}", t) else None


# --------------------------------------------------------------------------
# Rows of given keys

def key_match(cols: Iterable[ColumnElement[Any]], key: tuple[Any, ...]) -> ColumnElement[bool]:
    """Row matches ``key``, NULL equal to NULL (MySQL ``<=>``, SQLite ``IS``)."""
    return and_(*[c.is_(None) if v is None else c == v for c, v in zip(cols, key)])


def keys_clause(cols: Sequence[ColumnElement[Any]], keys: list[tuple[Any, ...]]) -> ColumnElement[bool]:
    """Row matches one of ``keys`` (a tuple IN when no key holds a NULL)."""
    if all(v is not None for k in keys for v in k):
        return tuple_(*cols).in_(keys)
    return or_(*[key_match(cols, k) for k in keys])
