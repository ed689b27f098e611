"""The one claim primitive per store: insert if free, else take over only what is finished.

Every exclusive right the console hands out (a cart email's claim, a
dispatch row's retry lease, an action's run in the ledger, an order email's
claim) is one row or document per key, won by an insert that skips existing
keys; a key that already has a row is taken over only where a condition
says its holder is finished (sent long ago, failed, a lease or heartbeat
run out), by a conditional update that exactly one of any number of
callers wins. The owner column then says who holds the key.

SQL: the insert and the takeover run in two transactions. In one, a loser's
duplicate-key check holds a shared lock on the row that deadlocks with
another loser's update; apart, each statement takes only the locks it needs.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import ColumnElement, Table, and_, or_, select, tuple_, update
from sqlalchemy.engine import Connection, RowMapping

from ..sqlutil import insert_ignore, shared_now

if TYPE_CHECKING:
    from pymongo.collection import Collection

T = TypeVar("T")
Key = tuple[Any, ...]


@dataclass
class Claimed:
    """What a claim got: the clock it was judged by, the keys this caller holds, the others' rows."""
    now: dt.datetime
    mine: set[Key]
    others: dict[Key, RowMapping | None] = field(default_factory=dict)   # None: released in the meantime

    def holds(self, key: Key) -> bool:
        return key in self.mine


def claim_rows(conn: Connection, table: Table, key: Sequence[str], rows: Callable[[dt.datetime], list[dict[str, Any]]],
               *, owner: str, token: str, finished: Callable[[dt.datetime], ColumnElement[bool]],
               takeover: Callable[[dt.datetime], dict[str, Any]], run: Callable[[Callable[[], Any]], Any],
               clock: Callable[[Connection], dt.datetime] = shared_now) -> Claimed:
    """Claim one row of ``table`` per key for ``token``.

    ``rows(now)``: the rows to insert (each carries ``owner=token``);
    ``finished(now)``: where an existing row may be taken over;
    ``takeover(now)``: the values that make it this caller's. ``run`` wraps
    each transaction (the caller's guard: deadlock retries, one sentence on
    error); ``clock`` is the shared clock every workstation compares.
    """
    cols = [table.c[k] for k in key]
    owner_col = table.c[owner]

    def key_of(row: Any) -> Key:
        return tuple(row[k] for k in key)

    def insert_tx() -> tuple[dt.datetime, list[Key], int]:
        with conn.begin():
            now = clock(conn)
            values = rows(now)
            return now, [key_of(v) for v in values], insert_ignore(conn, table, values)

    now, keys, inserted = run(insert_tx)
    if inserted == len(keys):
        return Claimed(now, set(keys))
    where_keys = tuple_(*cols).in_(keys) if len(cols) > 1 else cols[0].in_([k[0] for k in keys])

    def takeover_tx() -> Claimed:
        with conn.begin():
            now = clock(conn)
            not_mine = or_(owner_col.is_(None), owner_col != token)   # not the keys this caller just inserted
            conn.execute(update(table).where(and_(where_keys, not_mine, finished(now))).values(**takeover(now)))
            found = {key_of(r): r for r in conn.execute(select(table).where(where_keys)).mappings()}
            mine = {k for k in keys if k in found and found[k][owner] == token}
            return Claimed(now, mine, {k: found.get(k) for k in keys if k not in mine})

    result: Claimed = run(takeover_tx)
    return result


def claim_doc(collection: Collection[dict[str, Any]], doc: dict[str, Any], *, key: dict[str, Any],
              finished: dict[str, Any] | None = None, takeover: dict[str, Any] | None = None) -> bool:
    """The order store's claim: insert ``doc`` (its unique index on ``key``), else take over.

    The takeover is one update matching ``key`` and ``finished``, applying
    ``takeover`` (a pymongo update document); without ``finished`` an
    existing document is never taken over. True for exactly one caller.
    """
    from pymongo.errors import DuplicateKeyError
    try:
        collection.insert_one(doc)
        return True
    except DuplicateKeyError:
        pass
    if finished is None or takeover is None:
        return False
    return collection.find_one_and_update({**key, **finished}, takeover) is not None
