"""The cart duplicate member index: what a full cart duplicate scan reads.

A full scan of the production log cannot stay under a second at production
size (2 M rows: 1 s for the GROUP BY alone, 10+ s to fetch the members with
a buffer pool smaller than the indexes). The console therefore keeps its own
exact copy of the only rows a cart duplicate group can contain: every *sent*
row of every (user_id, cart_hash) that holds two or more sent rows, with the
columns a group shows (id, created_at, sent_at, cart_value). The window rule
is applied when the index is read (``app.read.rules.group_cart_rows``'
rule, here in a specialised form), so changing the window needs no rebuild.

Layout: table ``nc_cart_dup_bucket``, one row per bucket (user_id modulo
``BUCKETS``) holding its keys, ids and values as JSON and its times as packed
int64. Reading ~4,000 packed rows costs a few tens of milliseconds where
~110 k member rows cost over a second in the driver (it parses every
DATETIME in Python); a change rewrites only the buckets of the keys it
touched.

Kept up to date incrementally (``advance``), under a lock on the index's
``nc_cursor`` row so every writer is serialised; that row holds the marks
(``IndexMarks``). Each advance re-reads only:

* rows inserted already sent: ids above ``floor``, the highest id seen at
  least ``LAG`` ago (transactions that took an id earlier and committed later
  are still re-read);
* rows that became sent: ``sent_at`` at or after the high-water mark
  ``sent`` minus ``LAG`` (index ``nc_cart_sent_at``; late commits within the
  lag are caught);
* rows removed below the lowest or above the highest id (retention purges,
  a truncated table).

Every key touched is refreshed exactly: its current sent rows are read again
and its members replaced (or dropped below two), so re-reading an overlap is
harmless. The cleanup and undo services refresh the keys they change in their
own transaction (``refresh_keys``).

Not seen by an advance, and repaired by ``rebuild`` (``app.read.cart_reads.
rebuild_cart_members``): rows deleted in the middle of the id range by
something other than the console, sent rows whose key or times are edited in
place, rows marked sent without ``sent_at`` (or with a ``sent_at`` older than
the lag) by an UPDATE, and sent rows set back to unsent. Run a rebuild after
any such manual change and on a schedule (nightly is plenty); a rebuild at
2 M rows takes tens of seconds and does not block scans until its final swap.
A cleanup --apply is safe whatever the index holds: it locks and regroups
the real rows.

A database user that may not write the index (a viewer on a read-only user;
see ``app.grants``) reads it with ``read_groups_unpersisted``: the stored
buckets with every key an advance would re-read replaced in memory, nothing
written. It costs what the advance would, on every scan.
"""
from __future__ import annotations

import datetime as dt
import gc
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, SupportsInt, TypedDict

import numpy as np
from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from ..schema import cart_log, nc_action, nc_archive, nc_cart_dup_bucket, nc_cursor
from ..sqlutil import backend, db_now, insert_ignore
from .common import KEY_BATCH, LATE_COMMIT_MARGIN, batched, id_key, keys_clause, time_key
from .models import DuplicateGroup
from .rules import CART_KEY, CART_RULE

CURSOR = "cart_dup_members"
BUCKETS = 4096
LAG = LATE_COMMIT_MARGIN
FORMAT = 1

_COLS = (cart_log.c.id, cart_log.c.user_id, cart_log.c.cart_hash, cart_log.c.created_at,
         cart_log.c.sent_at, cart_log.c.cart_value)


# A key is (user_id, cart_hash); a member is encoded as (id, created_us, sent_us, value),
# see below. Both hold database values as the driver hands them back.
Key = tuple[Any, ...]
Member = tuple[Any, ...]
# A bucket's keys: {key: its encoded members, earliest first}.
BucketKeys = dict[Key, list[Member]]
# A BLOB as a driver hands it back (psycopg2: a memoryview).
Blob = bytes | bytearray | memoryview


class AdvanceReport(TypedDict):
    touched: int
    changed: int


class BuildReport(TypedDict):
    keys: int
    members: int
    seconds: float


class RebuildReport(TypedDict):
    keys: int | None          # None: another console's index was kept (``only_if_missing``)
    members: int | None
    seconds: float
    installed: bool


def bucket_of(user_id: SupportsInt | str) -> int:
    return int(user_id) % BUCKETS


# --------------------------------------------------------------------------
# Encoding. A member is (id, created_us, sent_us, value): times as int64
# microseconds since 1970 (NAT for NULL); a value as its cents when it is a
# two-place decimal (the column's type), else as itself (a decimal as text).
# A bucket is ``members``: the JSON items [user_id, cart_hash, n] (or
# [user_id, cart_hash, n, [values]] for a key whose values are not all
# two-place decimals) joined by commas without brackets, so buckets
# concatenate into one JSON list; and ``times``: id, created_us, sent_us,
# cents of each member in the same order, little-endian int64.

EPOCH = dt.datetime(1970, 1, 1)
_US = dt.timedelta(microseconds=1)
NAT = -(2 ** 63)          # numpy's NaT: reads back as None
_WIDTH = 4


def _enc_time(value: dt.datetime | None) -> int:
    if value is None:
        return NAT
    return (value - EPOCH) // _US


def _enc_value(value: Any) -> int | str | dict[str, Any]:
    """Cents (int) for a two-place decimal, text for another decimal, else the value."""
    if isinstance(value, Decimal):
        if value.is_finite() and value.as_tuple().exponent == -2 and not (value.is_signed() and not value):
            cents = int(value.scaleb(2))
            if -2 ** 62 < cents < 2 ** 62:
                return cents
        return str(value)
    return {"raw": value}


def _cents_value(cents: int, cache: dict[int, Decimal]) -> Decimal:
    found = cache.get(cents)
    if found is None:
        found = cache[cents] = Decimal(cents).scaleb(-2)
    return found


def _dec_value(value: int | str | dict[str, Any], cache: dict[int, Decimal]) -> Any:
    # Any: a value that is not a decimal comes back as whatever the column held (``{"raw": ...}``).
    if isinstance(value, int):
        return _cents_value(value, cache)
    if isinstance(value, str):
        return Decimal(value)
    return value["raw"]


def _encode_members(rows: Iterable[dict[str, Any]]) -> list[Member]:
    rows = sorted(rows, key=lambda r: (time_key(r["created_at"]), id_key(r["id"])))
    return [(r["id"], _enc_time(r["created_at"]), _enc_time(r["sent_at"]), _enc_value(r["cart_value"]))
            for r in rows]


def _encode_bucket(keys: BucketKeys) -> tuple[str, bytes]:
    items: list[str] = []
    packed: list[int] = []
    for k in sorted(keys, key=lambda k: (k[0], k[1])):
        members = keys[k]
        item = [k[0], k[1], len(members)]
        if not all(type(m[3]) is int for m in members):
            item.append([m[3] for m in members])
        items.append(json.dumps(item, separators=(",", ":")))
        for m in members:
            packed += (m[0], m[1], m[2], m[3] if type(m[3]) is int else 0)
    return ",".join(items), np.asarray(packed, dtype="<i8").tobytes()


def _decode_bucket(text: str, blob: Blob) -> BucketKeys:
    packed = np.frombuffer(bytes(blob), dtype="<i8").tolist()
    out: BucketKeys = {}
    pos = 0
    for item in json.loads("[" + text + "]"):
        n = item[2]
        values = item[3] if len(item) > 3 else packed[pos + 3:pos + _WIDTH * n:_WIDTH]
        out[(item[0], item[1])] = [tuple(packed[pos + _WIDTH * i:pos + _WIDTH * i + 3]) + (values[i],)
                                   for i in range(n)]
        pos += _WIDTH * n
    return out


# --------------------------------------------------------------------------
# Reading production rows

def _sent_rows_for_keys(conn: Connection, keys: Iterable[Key], *,
                        locking: bool = False) -> dict[Key, list[dict[str, Any]]]:
    """Every sent row of ``keys``, by exact key."""
    by_key: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    keys = sorted(set(keys), key=lambda k: (k[0], k[1]))
    lock = locking and backend(conn) != "sqlite"
    for batch in batched(keys, KEY_BATCH):
        stmt = select(*_COLS).where(cart_log.c.email_sent == 1,
                                    keys_clause((cart_log.c.user_id, cart_log.c.cart_hash), batch))
        if lock:
            # Inside a caller's transaction (cleanup, undo): a locking read
            # sees the latest committed rows whatever its snapshot.
            stmt = stmt.with_for_update(read=True)
        for r in conn.execute(stmt):
            row = dict(r._mapping)
            by_key[(row["user_id"], row["cart_hash"])].append(row)
    return by_key


def compute_members(conn: Connection) -> BucketKeys:
    """The index computed from scratch: {(user_id, cart_hash): encoded members}."""
    t = cart_log.c
    stmt = (select(t.user_id, t.cart_hash).where(t.email_sent == 1)
            .group_by(t.user_id, t.cart_hash).having(func.count() > 1))
    keys = [tuple(r) for r in conn.execute(stmt)]
    by_key = _sent_rows_for_keys(conn, keys)
    return {k: _encode_members(rows) for k, rows in by_key.items() if len(rows) >= 2}


# --------------------------------------------------------------------------
# The index's marks (nc_cursor row ``cart_dup_members``)

@dataclass
class IndexMarks:
    """How far the index has read the log: what the next advance re-reads starts here.

    * ``floor``: the highest id seen at least ``LAG`` ago; an advance re-reads
      the sent rows above it (late commits below the newest id included).
    * ``pid``, ``pat``: the highest id seen at time ``pat``; it becomes the
      floor once ``pat`` is ``LAG`` old (as in ``IdWindow``). None before the
      first advance.
    * ``sent``: the newest ``sent_at`` seen (never past the clock); an advance
      re-reads the rows sent at or after ``sent - LAG``.
    * ``max_id``, ``min_id``: the log's id range at the last advance; ids that
      left it (purged below, removed above) have their keys swept.
    * ``built``: when the index was computed from scratch.

    Stored as JSON in the row's ``position`` with the layout it describes
    (``v`` = ``FORMAT``, ``nb`` = ``BUCKETS``) and the short names of the
    first format: ``idf`` (floor), ``pid``, ``pat``, ``sent``, ``max``,
    ``min``, ``built``; times as ISO text.
    """

    sent: dt.datetime
    floor: int
    max_id: int
    min_id: int
    built: dt.datetime | None = None
    pid: int | None = None
    pat: dt.datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {"v": FORMAT, "nb": BUCKETS, "sent": self.sent.isoformat(), "idf": self.floor, "pid": self.pid,
                "pat": None if self.pat is None else self.pat.isoformat(), "max": self.max_id,
                "min": self.min_id, "built": None if self.built is None else self.built.isoformat()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IndexMarks | None:
        """The marks of a stored position; None for another layout (rebuilt on the next scan)."""
        if d.get("v") != FORMAT or d.get("nb") != BUCKETS:
            return None
        return cls(sent=_time(d["sent"]), floor=int(d["idf"]), max_id=int(d["max"]), min_id=int(d["min"]),
                   built=None if d.get("built") is None else _time(d["built"]),
                   pid=None if d.get("pid") is None else int(d["pid"]),
                   pat=None if d.get("pat") is None else _time(d["pat"]))


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _state_row(conn: Connection, *, lock: bool) -> str | None:
    stmt = select(nc_cursor.c.position).where(nc_cursor.c.name == CURSOR)
    if lock and backend(conn) != "sqlite":
        stmt = stmt.with_for_update()
    position: str | None = conn.execute(stmt).scalar()   # a String column; None: no row yet
    return position


def _load_marks(text: str | None) -> IndexMarks | None:
    if not text:
        return None
    return IndexMarks.from_json(json.loads(text))


def _save_marks(conn: Connection, marks: IndexMarks, now: dt.datetime) -> None:
    text = json.dumps(marks.to_json(), separators=(",", ":"))
    if conn.execute(update(nc_cursor).where(nc_cursor.c.name == CURSOR)
                    .values(position=text, updated_at=now)).rowcount == 0:
        conn.execute(insert(nc_cursor).values(name=CURSOR, position=text, updated_at=now))


def read_marks(conn: Connection) -> IndexMarks | None:
    """The index's marks, or None while it has not been built."""
    return _load_marks(_state_row(conn, lock=False))


def read_state(conn: Connection) -> dict[str, Any] | None:
    """The index's marks as stored (``IndexMarks.to_json``), or None while it has not been built."""
    marks = read_marks(conn)
    return None if marks is None else marks.to_json()


# --------------------------------------------------------------------------
# Buckets

def _load_buckets(conn: Connection, buckets: Iterable[int] | None = None) -> dict[int, BucketKeys]:
    b = nc_cart_dup_bucket.c
    stmt = select(b.bucket, b.members, b.times)
    out: dict[int, BucketKeys] = {}
    if buckets is None:
        for bucket, text, blob in conn.execute(stmt):
            out[bucket] = _decode_bucket(text, blob)
        return out
    for batch in batched(sorted(buckets), 500):
        for bucket, text, blob in conn.execute(stmt.where(b.bucket.in_(batch))):
            out[bucket] = _decode_bucket(text, blob)
    return out


def _write_bucket(conn: Connection, bucket: int, keys: BucketKeys, existed: bool) -> None:
    b = nc_cart_dup_bucket
    if not keys:
        if existed:
            conn.execute(delete(b).where(b.c.bucket == bucket))
        return
    text, blob = _encode_bucket(keys)
    values = {"key_count": len(keys), "member_count": sum(len(m) for m in keys.values()),
              "members": text, "times": blob}
    if existed:
        conn.execute(update(b).where(b.c.bucket == bucket).values(**values))
    else:
        conn.execute(insert(b).values(bucket=bucket, **values))


def _refresh(conn: Connection, keys: Iterable[Key], *, locking: bool = False, added_only: bool = False) -> int:
    """Replace the members of ``keys`` with their current sent rows; return keys changed.

    ``added_only`` (an advance, which sees rows added or sent, never rows
    removed): a key with fewer than two sent rows cannot have gained a
    group, so its bucket is not read at all.
    """
    keys = set(keys)
    if not keys:
        return 0
    current = _sent_rows_for_keys(conn, keys, locking=locking)
    keys |= set(current)
    if added_only:
        keys = {k for k in keys if len(current.get(k, ())) >= 2}
    by_bucket: dict[int, set[Key]] = defaultdict(set)
    for k in keys:
        by_bucket[bucket_of(k[0])].add(k)
    stored = _load_buckets(conn, by_bucket)
    changed = 0
    for bucket, bkeys in by_bucket.items():
        existed = bucket in stored
        entries = stored.get(bucket, {})
        before = dict(entries)
        for k in bkeys:
            rows = current.get(k, [])
            if len(rows) >= 2:
                entries[k] = _encode_members(rows)
            else:
                entries.pop(k, None)
        diff = sum(1 for k in bkeys if before.get(k) != entries.get(k))
        if diff:
            changed += diff
            _write_bucket(conn, bucket, entries, existed)
    return changed


def _keys_outside(conn: Connection, low: int | None, high: int | None) -> set[Key]:
    """Keys holding a member whose id is below ``low`` or above ``high`` (None: no bound)."""
    keys: set[Key] = set()
    for entries in _load_buckets(conn).values():
        for k, members in entries.items():
            if any((low is not None and m[0] < low) or (high is not None and m[0] > high) for m in members):
                keys.add(k)
    return keys


def _id_range(conn: Connection) -> Row[Any, Any]:
    """(max id, min id) of the log; both None when it is empty."""
    return conn.execute(select(func.max(cart_log.c.id), func.min(cart_log.c.id))).one()


# --------------------------------------------------------------------------
# Advance, refresh (cleanup hook), rebuild

def _transaction(engine: Engine) -> Connection:
    conn = engine.connect()
    if backend(conn) in ("mysql", "mariadb"):
        # Each statement sees what committed before it: after the lock is
        # granted every earlier writer's rows are visible.
        conn = conn.execution_options(isolation_level="READ COMMITTED")
    return conn


def advance(engine: Engine) -> AdvanceReport | None:
    """Bring the index up to date; None when it has not been built yet."""
    with _transaction(engine) as conn, conn.begin():
        marks = _load_marks(_state_row(conn, lock=True))
        if marks is None:
            return None
        return _advance_locked(conn, marks)


def _advance_locked(conn: Connection, marks: IndexMarks) -> AdvanceReport:
    now = db_now(conn)
    keys, swept, max_id, min_id = _touched(conn, marks, now)
    if max_id is None:
        # The table is empty: nothing can be a member.
        if conn.execute(select(func.count()).select_from(nc_cart_dup_bucket)).scalar():
            conn.execute(delete(nc_cart_dup_bucket))
        max_id = min_id = 0
    changed = _refresh(conn, keys - swept, added_only=True) + _refresh(conn, swept)
    marks.max_id, marks.min_id = max_id, min_id
    if marks.pat is None or marks.pat <= now - LAG:
        if marks.pid is not None:
            marks.floor = marks.pid
        marks.pid, marks.pat = max_id, now
    _save_marks(conn, marks, now)
    return {"touched": len(keys), "changed": changed}


def _touched(conn: Connection, marks: IndexMarks, now: dt.datetime) -> tuple[set[Key], set[Key], Any, Any]:
    """What an advance re-reads: (keys that may have gained members, keys holding members
    outside the id range, max id, min id as the database hands them back); None ids when
    the table is empty.

    Moves ``marks`` past what it found (not saved here).
    """
    t = cart_log.c
    max_id, min_id = _id_range(conn)
    keys: set[Key] = set()
    swept: set[Key] = set()
    if max_id is None:
        marks.floor = 0
        if marks.pid is not None:
            marks.pid = 0
    else:
        low = min_id if min_id > marks.min_id else None      # rows purged below
        high = max_id if max_id < marks.max_id else None     # newest rows removed
        if low is not None or high is not None:
            swept = _keys_outside(conn, low, high)
        if max_id < marks.floor:
            marks.floor = max_id                              # ids handed out again (SQLite)
        if marks.pid is not None and marks.pid > max_id:
            marks.pid = max_id
        stmt = select(t.user_id, t.cart_hash).where(t.id > marks.floor, t.email_sent == 1).distinct()
        keys.update(tuple(r) for r in conn.execute(stmt))
        hwm = marks.sent
        top = hwm
        sent_stmt = select(t.user_id, t.cart_hash, t.sent_at).where(t.sent_at >= hwm - LAG)
        for u, h, sent_at in conn.execute(sent_stmt):
            keys.add((u, h))
            if sent_at is not None and sent_at > top:
                top = sent_at
        marks.sent = max(hwm, min(top, now))
    return keys, swept, max_id, min_id


def refresh_keys(conn: Connection, keys: Iterable[Key]) -> int:
    """Refresh ``keys`` inside the caller's transaction (cleanup, undo); return keys changed.

    Waits for the index lock, so it runs after (or before) any advance, never
    interleaved; a locking read sees the rows as they are now. Does nothing
    while the index has not been built (the build catches up on actions that
    ran meanwhile).
    """
    keys = {(k[0], k[1]) for k in keys}
    if not keys:
        return 0
    marks = _load_marks(_state_row(conn, lock=True))
    if marks is None:
        return 0
    changed = _refresh(conn, keys, locking=True)
    max_id = conn.execute(select(func.max(cart_log.c.id))).scalar() or 0
    if max_id < marks.max_id:
        # The newest rows went: a database that hands their ids out again
        # (SQLite) must have the new rows re-read.
        marks.max_id = max_id
        marks.floor = min(marks.floor, max_id)
        if marks.pid is not None:
            marks.pid = min(marks.pid, max_id)
        _save_marks(conn, marks, db_now(conn))
    return changed


def refresh_ids(conn: Connection, ids: Iterable[int | str]) -> int:
    """``refresh_keys`` for the keys of the cart rows with these ids (rows just restored)."""
    ids = sorted({int(i) for i in ids})
    keys: set[Key] = set()
    for batch in batched(ids, 1000):
        keys.update(tuple(r) for r in conn.execute(
            select(cart_log.c.user_id, cart_log.c.cart_hash).where(cart_log.c.id.in_(batch))))
    return refresh_keys(conn, keys)


def _marks(conn: Connection) -> IndexMarks:
    """High-water marks taken before a build reads anything."""
    now = db_now(conn)
    max_id, min_id = _id_range(conn)
    max_sent = conn.execute(select(func.max(cart_log.c.sent_at))).scalar()
    sent = now if max_sent is None else min(max_sent, now)
    return IndexMarks(sent=sent, floor=max_id or 0, max_id=max_id or 0, min_id=min_id or 0, built=now)


def _keys_of_actions_since(conn: Connection, since: dt.datetime) -> set[Key]:
    """Keys of cart rows archived or restored by actions that began at or after ``since``."""
    a = nc_action.c
    action_ids: set[Any] = set()
    for action_id, kind, params in conn.execute(
            select(a.action_id, a.kind, a.params_json)
            .where(a.source == "cart", a.kind.in_(("cleanup", "undo")), a.started_at >= since)):
        action_ids.add(action_id)
        if kind == "undo":
            try:
                target = json.loads(params).get("target")
            except (ValueError, AttributeError):
                target = None
            if target:
                action_ids.add(target)
    keys: set[Key] = set()
    for batch in batched(sorted(action_ids), 200):
        for (text,) in conn.execute(select(nc_archive.c.row_json).where(
                nc_archive.c.action_id.in_(batch), nc_archive.c.table_name == cart_log.name)):
            row = json.loads(text)
            keys.add((row.get("user_id"), row.get("cart_hash")))
    return keys


def _swap(conn: Connection, members: BucketKeys, marks: IndexMarks) -> None:
    """Install a computed index (caller holds the lock) and catch up on actions since its marks."""
    # The marks of a build (``_marks``) always carry the time it began.
    assert marks.built is not None
    conn.execute(delete(nc_cart_dup_bucket))
    by_bucket: dict[int, BucketKeys] = defaultdict(dict)
    for k, m in members.items():
        by_bucket[bucket_of(k[0])][k] = m
    rows: list[dict[str, Any]] = []
    for b, keys in sorted(by_bucket.items()):
        text, blob = _encode_bucket(keys)
        rows.append({"bucket": b, "key_count": len(keys), "member_count": sum(len(m) for m in keys.values()),
                     "members": text, "times": blob})
    for batch in batched(rows, 100):
        conn.execute(insert(nc_cart_dup_bucket), batch)
    # Cleanups and undos that ran while the index was computed changed rows
    # the computation may have read before them.
    _refresh(conn, _keys_of_actions_since(conn, marks.built - LAG), locking=True)
    _save_marks(conn, marks, db_now(conn))


def build_in(conn: Connection, *, report: Callable[[str], None] | None = None) -> BuildReport:
    """Compute and install the index on ``conn`` in the caller's transaction (db upgrade)."""
    t0 = time.perf_counter()
    marks = _marks(conn)
    if report and marks.max_id:
        report(f"building the cart duplicate member index from {marks.max_id - marks.min_id + 1:,} "
               f"cart rows ...")
    members = compute_members(conn)
    insert_ignore(conn, nc_cursor, {"name": CURSOR, "position": "", "updated_at": db_now(conn)})
    _state_row(conn, lock=True)
    _swap(conn, members, marks)
    out: BuildReport = {"keys": len(members), "members": sum(len(m) for m in members.values()),
                        "seconds": time.perf_counter() - t0}
    if report and marks.max_id:
        report(f"  cart duplicate member index: {out['keys']:,} keys, {out['members']:,} members "
               f"in {out['seconds']:.1f} s")
    return out


def rebuild(engine: Engine, *, only_if_missing: bool = False) -> RebuildReport:
    """Compute the index from the production rows and install it.

    The computation (one GROUP BY pass, then the members of the keys found)
    holds no lock; only the final swap does. With ``only_if_missing`` an
    index another console installed meanwhile is kept.
    """
    t0 = time.perf_counter()
    with _transaction(engine) as conn:
        with conn.begin():
            # First, so a database user that may not write the index is told
            # before the computation, not after.
            insert_ignore(conn, nc_cursor, {"name": CURSOR, "position": "", "updated_at": db_now(conn)})
        with conn.begin():
            marks = _marks(conn)
            members = compute_members(conn)
        with conn.begin():
            if only_if_missing and _load_marks(_state_row(conn, lock=True)) is not None:
                return {"keys": None, "members": None, "seconds": time.perf_counter() - t0, "installed": False}
            _state_row(conn, lock=True)
            _swap(conn, members, marks)
    return {"keys": len(members), "members": sum(len(m) for m in members.values()),
            "seconds": time.perf_counter() - t0, "installed": True}


def ensure_current(engine: Engine) -> AdvanceReport:
    """Advance the index, building it first when it does not exist yet."""
    out = advance(engine)
    if out is None:
        rebuild(engine, only_if_missing=True)
        out = advance(engine) or {"touched": 0, "changed": 0}
    return out


def snapshot(conn: Connection) -> BucketKeys:
    """The index as stored: {(user_id, cart_hash): encoded members} (tests, diagnostics)."""
    out: BucketKeys = {}
    for entries in _load_buckets(conn).values():
        out.update(entries)
    return out


# --------------------------------------------------------------------------
# Reading: the groups of the window rule, straight from the packed members

def read_groups(conn: Connection, window_hours: float, since: dt.datetime | None = None) -> list[DuplicateGroup]:
    """Every cart duplicate group held by the index (unsorted).

    Identical to ``group_cart_rows`` over the production's sent rows: chains
    anchored at the earliest member (time, then id), a member joins while it
    is less than the window after the anchor; groups of two or more.
    ``since`` skips groups whose last member is before it.
    """
    # Hundreds of thousands of small objects, none of them cyclic: the cyclic
    # collector would walk them over and over while they are being made.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _read_groups(conn, window_hours, since)
    finally:
        if enabled:
            gc.enable()


def read_groups_unpersisted(conn: Connection, window_hours: float, since: dt.datetime | None = None
                            ) -> list[DuplicateGroup] | None:
    """``read_groups`` over the index as an advance would leave it, computed in memory.

    For a database user that may not write the index (a viewer): the stored
    buckets, with every key an advance would re-read (``_touched``) replaced
    by its current sent rows; nothing is written. None while the index has
    never been built (the caller scans the production rows instead). Read on
    the caller's connection, so the stored index and the rows re-read come
    from one snapshot.
    """
    marks = read_marks(conn)
    if marks is None:
        return None
    keys, swept, max_id, _min_id = _touched(conn, marks, db_now(conn))
    if max_id is None:
        return []
    stored = _load_buckets(conn)
    keys |= swept
    current = _sent_rows_for_keys(conn, keys)
    for k in keys:
        entries = stored.setdefault(bucket_of(k[0]), {})
        rows = current.get(k, ())
        if len(rows) >= 2:
            entries[k] = _encode_members(rows)
        else:
            entries.pop(k, None)
    texts: list[str] = []
    blobs: list[Blob] = []
    for entries in stored.values():
        if entries:
            text, blob = _encode_bucket(entries)
            texts.append(text)
            blobs.append(blob)
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _groups_from(texts, blobs, window_hours, since)
    finally:
        if enabled:
            gc.enable()


def _read_groups(conn: Connection, window_hours: float, since: dt.datetime | None) -> list[DuplicateGroup]:
    texts: list[str] = []
    blobs: list[Blob] = []
    for text, blob in conn.execute(select(nc_cart_dup_bucket.c.members, nc_cart_dup_bucket.c.times)):
        texts.append(text)
        blobs.append(blob)
    return _groups_from(texts, blobs, window_hours, since)


def _groups_from(texts: list[str], blobs: list[Blob], window_hours: float,
                 since: dt.datetime | None) -> list[DuplicateGroup]:
    """The groups of packed buckets (``members`` texts and ``times`` blobs, in the same order)."""
    if not texts:
        return []
    items = json.loads("[" + ",".join(texts) + "]")
    packed = np.frombuffer(b"".join(blobs), dtype="<i8").reshape(-1, _WIDTH)
    created_us = packed[:, 1]
    ids_all = packed[:, 0].tolist()
    created_all = created_us.view("datetime64[us]").tolist()      # NaT reads back as None
    sent_all = packed[:, 2].view("datetime64[us]").tolist()
    cents = packed[:, 3]
    decimals = {c: Decimal(c).scaleb(-2) for c in np.unique(cents).tolist()}
    values_all = [decimals[c] for c in cents.tolist()]
    for item, start in zip(items, _offsets(items)):
        if len(item) > 3:  # a key whose values are not all two-place decimals
            for i, v in enumerate(item[3]):
                values_all[start + i] = _dec_value(v, decimals)
    evidence_all = [{"id": i, "created_at": c, "sent_at": s, "cart_value": v}
                    for i, c, s, v in zip(ids_all, created_all, sent_all, values_all)]

    window = dt.timedelta(hours=window_hours)
    window_us = window // _US
    since_us = None if since is None else _enc_time(since)
    counts = np.fromiter((item[2] for item in items), dtype=np.int64, count=len(items))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    # The common case in one vector step: a key of two members, both times known.
    pair = counts == 2
    first_us = created_us[starts]
    second_us = created_us[np.minimum(starts + 1, len(created_us) - 1)]
    known = (first_us != NAT) & (second_us != NAT)
    joined = pair & known & (second_us - first_us < window_us)
    if since_us is not None:
        joined &= second_us >= since_us
    general = ~(pair & known)

    out: list[DuplicateGroup] = []
    append = out.append
    k_user, k_hash = CART_KEY
    for k in np.flatnonzero(joined).tolist():
        item, p = items[k], int(starts[k])
        ids = ids_all[p:p + 2]
        append(DuplicateGroup("cart", CART_RULE, {k_user: item[0], k_hash: item[1]}, ids[0], ids,
                              created_all[p], created_all[p + 1], evidence_all[p:p + 2]))
    minimum = dt.datetime.min
    for k in np.flatnonzero(general).tolist():
        item, p = items[k], int(starts[k])
        n = item[2]
        created = created_all[p:p + n]
        start = 0
        while start < n:
            anchor = created[start] or minimum
            end = start + 1
            while end < n and (created[end] or minimum) - anchor < window:
                end += 1
            last = created[end - 1]
            if end - start >= 2 and (since is None or (last is not None and last >= since)):
                ids = ids_all[p + start:p + end]
                append(DuplicateGroup("cart", CART_RULE, {k_user: item[0], k_hash: item[1]}, ids[0], ids,
                                      created[start], last, evidence_all[p + start:p + end]))
            start = end
    return out


def _offsets(items: Iterable[Sequence[Any]]) -> Iterator[int]:
    """Where each bucket item's members start (an item is JSON: [user_id, cart_hash, n, ...])."""
    pos = 0
    for item in items:
        yield pos
        pos += item[2]


def report_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
