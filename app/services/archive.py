"""The console's archive: rows a cleanup removed, kept exactly so undo restores them.

SQL rows are stored as JSON with typed values (datetimes and decimals keep
their exact value); order documents are stored as they are (BSON). An
archive entry is written in the same transaction as the row's removal.
"""
from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.engine import Connection

from ..schema import nc_archive
from ..sqlutil import backend, insert_ignore

if TYPE_CHECKING:
    from pymongo.database import Database


def encode_value(value: object) -> object:
    if isinstance(value, dt.datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"$dec": str(value)}
    if isinstance(value, (bytes, bytearray)):
        return {"$b64": base64.b64encode(bytes(value)).decode()}
    return value


def decode_value(value: object) -> object:
    if isinstance(value, dict) and len(value) == 1:
        (tag, raw), = value.items()
        if tag == "$dt":
            return dt.datetime.fromisoformat(raw)
        if tag == "$date":
            return dt.date.fromisoformat(raw)
        if tag == "$dec":
            return decimal.Decimal(raw)
        if tag == "$b64":
            return base64.b64decode(raw)
    return value


def encode_row(row: dict[str, Any]) -> str:
    return json.dumps({k: encode_value(v) for k, v in row.items()}, sort_keys=True)


def decode_row(text: str) -> dict[str, Any]:
    return {k: decode_value(v) for k, v in json.loads(text).items()}


def lock_rows(conn: Connection, table: Table, ids: list[int]) -> list[dict[str, Any]]:
    """The current rows with these ids, locked until the transaction ends, in id order.

    Locking in one order (the primary key) keeps concurrent cleanups from
    deadlocking each other; rows another console already removed are absent.
    """
    out: list[dict[str, Any]] = []
    for start in range(0, len(ids), 1000):
        chunk = sorted(ids[start:start + 1000])
        q = select(table).where(table.c.id.in_(chunk)).order_by(table.c.id)
        if backend(conn) != "sqlite":
            q = q.with_for_update()
        out.extend(dict(r) for r in conn.execute(q).mappings())
    return out


def archive_and_delete(conn: Connection, table: Table, rows: list[dict[str, Any]], action_id: str,
                       now: dt.datetime) -> list[int]:
    """Move ``rows`` into the archive and delete them, inside the caller's transaction."""
    if not rows:
        return []
    conn.execute(insert(nc_archive), [
        {"action_id": action_id, "table_name": table.name, "row_id": str(r["id"]),
         "row_json": encode_row(r), "archived_at": now} for r in rows])
    ids = [r["id"] for r in rows]
    removed = 0
    for start in range(0, len(ids), 1000):
        removed += conn.execute(delete(table).where(table.c.id.in_(ids[start:start + 1000]))).rowcount
    if removed != len(ids):  # rows are locked: anything else means the lock did not hold
        raise RuntimeError(f"expected to remove {len(ids)} rows from {table.name}, removed {removed}")
    return ids


def restore(conn: Connection, tables: dict[str, Table], action_id: str,
            now: dt.datetime) -> tuple[list[str], list[str]]:
    """Put back every row ``action_id`` archived and not yet restored.

    Returns (restored ids, conflicting ids). A row whose id is back already
    with the archived values counts as restored; one whose id another row
    now holds is a conflict and stays in the archive, never overwritten.
    """
    q = (select(nc_archive).where(nc_archive.c.action_id == action_id, nc_archive.c.restored_at.is_(None))
         .order_by(nc_archive.c.id))
    if backend(conn) != "sqlite":
        q = q.with_for_update()
    entries = list(conn.execute(q).mappings())
    restored: list[str] = []
    conflicts: list[str] = []
    done: list[int] = []
    for entry in entries:
        table = tables[entry["table_name"]]
        row = decode_row(entry["row_json"])
        if not insert_ignore(conn, table, row):
            current = conn.execute(select(table).where(table.c.id == row["id"])).mappings().first()
            if current is None or encode_row(dict(current)) != encode_row(row):
                conflicts.append(entry["row_id"])
                continue
        restored.append(entry["row_id"])
        done.append(entry["id"])
    for start in range(0, len(done), 1000):
        conn.execute(update(nc_archive).where(nc_archive.c.id.in_(done[start:start + 1000]))
                     .values(restored_at=now))
    if backend(conn) == "postgresql":
        _resync_pg_sequences(conn, {tables[e["table_name"]] for e in entries})
    return restored, conflicts


def _resync_pg_sequences(conn: Connection, tables: Iterable[Table]) -> None:
    from sqlalchemy import text
    for table in tables:
        conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                          f"GREATEST((SELECT COALESCE(MAX(id), 1) FROM {table.name}), 1))"))


# --------------------------------------------------------------------------
# Order store: no multi-document transactions are promised, so each step is
# safe to repeat: archive first (keyed by action and document), then delete;
# a document someone else deleted in between takes its archive entry back.

def archive_documents(db: Database[dict[str, Any]], collection: str, docs: list[dict[str, Any]], action_id: str,
                      now: dt.datetime) -> list[Any]:
    from pymongo.errors import DuplicateKeyError
    removed: list[Any] = []  # the documents' _id values
    for doc in docs:
        key = f"{action_id}:{collection}:{doc['_id']}"
        try:
            db["nc_archive"].insert_one({"_id": key, "action_id": action_id, "collection": collection,
                                         "doc": doc, "archived_at": now, "restored_at": None})
        except DuplicateKeyError:
            pass  # this action archived it before (a repeated run)
        if db[collection].delete_one({"_id": doc["_id"]}).deleted_count == 1:
            removed.append(doc["_id"])
        else:
            db["nc_archive"].delete_one({"_id": key, "restored_at": None})
    return removed


def restore_documents(db: Database[dict[str, Any]], action_id: str, now: dt.datetime) -> list[Any]:
    from pymongo.errors import DuplicateKeyError
    restored: list[Any] = []  # the documents' _id values
    for entry in db["nc_archive"].find({"action_id": action_id, "restored_at": None}, sort=[("_id", 1)]):
        try:
            db[entry["collection"]].insert_one(entry["doc"])
            restored.append(entry["doc"]["_id"])
        except DuplicateKeyError:
            pass  # already back (an interrupted undo ran this far)
        db["nc_archive"].update_one({"_id": entry["_id"]}, {"$set": {"restored_at": now}})
    return restored
