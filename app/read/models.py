"""Read models of the monitoring side: plain frozen dataclasses, no queries, no Qt.

Every list the console shows (duplicate groups, failed/stuck/missed items,
feed entries, statistics) is built from these. ``to_json`` gives the shapes
the CLI prints with ``--json`` (ids are primary keys; for order documents the
``_id`` as a string).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, TypeAlias

# What ``_plain`` makes of a value: the shapes ``json.dumps`` takes as they are.
JsonValue: TypeAlias = "dict[str, JsonValue] | list[JsonValue] | str | int | float | bool | None"


def _iso(value: object) -> object:
    return value.isoformat() if isinstance(value, (dt.datetime, dt.date)) else value


def _plain(value: object) -> JsonValue:
    """A JSON-friendly copy of ``value`` (datetimes as ISO text, ObjectIds as strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


@dataclass(frozen=True)
class DuplicateGroup:
    """Rows (or documents) that break one business key's "only once" rule.

    ``member_ids`` holds every member, the kept one included, earliest first;
    ``keep_id`` is the earliest (by time, then id): cleanup keeps it and
    archives the rest. ``evidence`` holds one dict per member, in the same
    order (ids, dispatch ids, sent times), for the side-by-side view.
    """

    source: str
    rule: str
    key: dict[str, Any]
    keep_id: object
    member_ids: list[Any]
    first_at: dt.datetime | None
    last_at: dt.datetime | None
    evidence: list[dict[str, Any]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.member_ids)

    @property
    def remove_ids(self) -> list[Any]:
        """Members a cleanup would archive: all but the kept one."""
        return [m for m in self.member_ids if m != self.keep_id]

    @property
    def identity(self) -> tuple[str, str, tuple[tuple[str, str], ...], str]:
        """Stable identity of the group: its rule, key and first member."""
        return (self.source, self.rule, tuple(sorted((k, str(v)) for k, v in self.key.items())),
                str(self.keep_id))

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rule": self.rule,
            "key": _plain(self.key),
            "keep_id": _plain(self.keep_id),
            "member_ids": _plain(self.member_ids),
            "count": self.count,
            "first_at": _iso(self.first_at),
            "last_at": _iso(self.last_at),
            "evidence": _plain(self.evidence),
        }


FAILED_KINDS = ("failed", "stuck", "superseded", "missed")


@dataclass(frozen=True)
class FailedItem:
    """One item that needs an admin: a failed send, a stuck one, or a missed email.

    ``kind`` is ``failed`` (the system gave up, with an error), ``stuck``
    (still pending past its threshold), ``superseded`` (a cart row whose
    abandonment another row already emailed: listed so support sees why,
    never retried; ``detail["superseded_by"]`` names that row) or ``missed``
    (an order stage email that never went out). ``status`` is the row's own
    status text.
    """

    source: str
    id: object
    kind: str
    status: str
    age_seconds: float
    error: str | None
    attempts: int
    created_at: dt.datetime | None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "id": _plain(self.id),
            "kind": self.kind,
            "status": self.status,
            "age_seconds": round(float(self.age_seconds), 3),
            "error": self.error,
            "attempts": self.attempts,
            "created_at": _iso(self.created_at),
            "detail": _plain(self.detail),
        }


@dataclass(frozen=True)
class FeedItem:
    """One entry of a live feed or of the unified notification feed.

    ``link`` names the row behind the entry: ``{"source", "table", "id"}``
    (plus the order id for order emails, the dispatch id for notifications).
    """

    source: str
    kind: str              # notification | cart_email | order_email | dispatch | cart_row | order
    id: object
    at: dt.datetime | None
    recipient: str | None
    subject: str | None
    status: str | None = None
    link: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "id": _plain(self.id),
            "at": _iso(self.at),
            "recipient": self.recipient,
            "subject": self.subject,
            "status": self.status,
            "link": _plain(self.link),
            "detail": _plain(self.detail),
        }


@dataclass(frozen=True)
class FeedPage:
    """Items of one poll plus the cursor to hand to the next poll."""

    items: list[FeedItem]
    cursor: object
    has_more: bool = False


@dataclass(frozen=True)
class LatencyBucket:
    """Statistics of one time bucket (and one dispatch_type, or ``*`` for all)."""

    start: dt.datetime
    series: str            # dispatch_type, "cart", or "*"
    count: int             # settled (completed / sent) items
    failed: int
    pending: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def failure_rate(self) -> float | None:
        total = self.count + self.failed
        return self.failed / total if total else None

    def to_json(self) -> dict[str, Any]:
        return {"start": _iso(self.start), "series": self.series, "count": self.count,
                "failed": self.failed, "pending": self.pending, "failure_rate": self.failure_rate,
                "p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "p99_ms": self.p99_ms}


@dataclass(frozen=True)
class StatsSeries:
    """A chart's worth of buckets: ``start``..``end`` in steps of ``bucket_seconds``."""

    source: str
    metric: str
    start: dt.datetime
    end: dt.datetime
    bucket_seconds: int
    buckets: list[LatencyBucket]
    exact: bool
    error_note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "metric": self.metric, "start": _iso(self.start),
                "end": _iso(self.end), "bucket_seconds": self.bucket_seconds, "exact": self.exact,
                "error_note": self.error_note, "buckets": [b.to_json() for b in self.buckets]}
