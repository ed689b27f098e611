"""The action ledger: one record per action id, with its per-item outcomes.

SQL sources keep it in their own database (``nc_action``, ``nc_action_item``),
so a cleanup's archive, deletions and outcome commit in one transaction; the
order store keeps it in ``nc_actions`` / ``nc_action_items``. Both ledgers
claim an action id the same way: an insert on the id, and for an id that
exists a conditional update that takes over a stale run (its heartbeat older
than ``STALE_AFTER``) or, for ``rerun_failed``, a failed one — exactly one
console wins. ``Ledger`` is the protocol both follow.
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import ColumnElement, and_, false, func, insert, or_, select, true, update
from sqlalchemy.engine import Connection, Engine, RowMapping

from ..config import SOURCE_NAMES
from ..errors import ActionConflict
from ..jsontext import json_default
from ..read.common import mongo_text_filter, text_filter
from ..schema import nc_action, nc_action_item
from ..sqlutil import db_now, utcnow, with_retry
from .claims import claim_doc, claim_rows
from .guard import guarded, order_db

if TYPE_CHECKING:
    from ..bootstrap import Workspace
    from ..sources import OrderStore

T = TypeVar("T")

STALE_AFTER = dt.timedelta(minutes=2)
# Where a page of the audit log ends: (started_at, action_id) of its last entry.
AuditPosition = tuple[dt.datetime, str]


@dataclass
class AuditEntry:
    action_id: str
    kind: str
    source: str
    operator: str
    role: str
    status: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    params: dict[str, Any]
    outcome: dict[str, Any] | None
    message: str | None
    items: list[dict[str, Any]] = field(default_factory=list)
    heartbeat_at: dt.datetime | None = None

    def counts(self) -> dict[str, int]:
        out = self.outcome or {}
        return {k: v for k, v in out.items() if isinstance(v, int) and not isinstance(v, bool)}

    def to_json(self) -> dict[str, Any]:
        return {"action_id": self.action_id, "kind": self.kind, "source": self.source,
                "operator": self.operator, "role": self.role, "status": self.status,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "params": self.params, "counts": self.counts(), "message": self.message,
                "items": self.items}


@dataclass(frozen=True)
class LastRetry:
    """The latest console retry that sent an item: who, when, under which action."""

    operator: str
    at: dt.datetime | None
    action_id: str

    def to_json(self) -> dict[str, Any]:
        return {"operator": self.operator, "at": self.at, "action_id": self.action_id}


# Item ids looked up per query (an IN list the databases plan well).
LOOKUP_CHUNK = 500


@dataclass
class Started:
    fresh: bool                      # True: this console runs the action now
    stored: AuditEntry | None = None  # the earlier run's record when not fresh


def _same_params(action_id: str, stored: RowMapping | Mapping[str, Any], phash: str) -> None:
    """An action id names one action: the same id with other parameters is refused."""
    if stored["params_hash"] != phash:
        raise ActionConflict(
            f"Action id {action_id} was already used for a {stored['kind']} on {stored['source']} "
            "with other parameters: start a new action instead.")


def _still_running(action_id: str, operator: str) -> ActionConflict:
    return ActionConflict(f"Action {action_id} is still running on {operator}: wait for it to finish.")


class Ledger(Protocol):
    source: str

    def start(self, action_id: str, kind: str, params: dict[str, Any], phash: str, operator: str, role: str,
              token: str, rerun_failed: bool = False) -> Started: ...

    def heartbeat(self, action_id: str, token: str, conn: Connection | None = None) -> bool: ...

    def record_items(self, action_id: str, items: list[dict[str, Any]], conn: Connection | None = None) -> None: ...

    def finish(self, action_id: str, token: str, status: str, outcome: dict[str, Any], message: str | None = None,
               conn: Connection | None = None) -> None: ...

    def refuse(self, action_id: str, kind: str, params: dict[str, Any], phash: str, operator: str, role: str,
               message: str) -> None: ...

    def get(self, action_id: str) -> AuditEntry | None: ...

    def entries(self, limit: int, since: dt.datetime | None = None, *, text: str | None = None,
                kind: str | None = None, before: AuditPosition | None = None) -> list[AuditEntry]: ...

    def last_retries(self, item_ids: list[str], exclude_action: str | None = None) -> dict[str, LastRetry]: ...


class SqlLedger:
    def __init__(self, engine: Engine, source: str):
        self.engine = engine
        self.source = source

    def _guard(self, fn: Callable[[], T]) -> T:
        return guarded(self.source, fn)

    def start(self, action_id: str, kind: str, params: dict[str, Any], phash: str, operator: str, role: str,
              token: str, rerun_failed: bool = False) -> Started:
        c = nc_action.c

        def finished(now: dt.datetime) -> ColumnElement[bool]:
            # Its runner stopped beating (a crash), or it failed and the operator asks to run it again.
            stale = and_(c.status == "running", or_(c.heartbeat_at.is_(None), c.heartbeat_at < now - STALE_AFTER))
            return and_(c.params_hash == phash, or_(stale, and_(c.status == "failed", true() if rerun_failed
                                                                else false())))

        with self.engine.connect() as conn:
            got = claim_rows(
                conn, nc_action, ("action_id",),
                lambda now: [{"action_id": action_id, "kind": kind, "source": self.source,
                              "params_json": json.dumps(params, default=json_default, sort_keys=True),
                              "params_hash": phash, "operator": operator, "role": role, "status": "running",
                              "started_at": now, "heartbeat_at": now, "lease_token": token}],
                owner="lease_token", token=token, finished=finished, run=self._guard, clock=db_now,
                takeover=lambda now: {"status": "running", "operator": operator, "role": role, "heartbeat_at": now,
                                      "lease_token": token, "finished_at": None, "message": None})
            if got.holds((action_id,)):
                return Started(True)
            row = got.others[(action_id,)]
            assert row is not None  # the insert just failed on this id, and the console never deletes ledger records
            _same_params(action_id, row, phash)
            if row["status"] == "running":
                raise _still_running(action_id, row["operator"])
            return Started(False, self._guard(lambda: self._entry(conn, row)))

    def _entry(self, conn: Connection, row: RowMapping, with_items: bool = True) -> AuditEntry:
        items: list[dict[str, Any]] = []
        if with_items:
            items = [dict(r) for r in conn.execute(
                select(nc_action_item.c.item_id, nc_action_item.c.outcome, nc_action_item.c.detail)
                .where(nc_action_item.c.action_id == row["action_id"]).order_by(nc_action_item.c.id)).mappings()]
        return AuditEntry(
            action_id=row["action_id"], kind=row["kind"], source=row["source"], operator=row["operator"],
            role=row["role"], status=row["status"], started_at=row["started_at"], finished_at=row["finished_at"],
            params=json.loads(row["params_json"] or "{}"),
            outcome=json.loads(row["outcome_json"]) if row["outcome_json"] else None,
            message=row["message"], items=items, heartbeat_at=row["heartbeat_at"])

    def heartbeat(self, action_id: str, token: str, conn: Connection | None = None) -> bool:
        """Renew the action's lease; False when another console has taken it over."""
        def run(c: Connection) -> bool:
            return c.execute(update(nc_action).where(nc_action.c.action_id == action_id,
                                                     nc_action.c.lease_token == token)
                             .values(heartbeat_at=db_now(c))).rowcount == 1
        if conn is not None:
            return run(conn)
        return self._guard(lambda: _begin_run(self.engine, run))

    def record_items(self, action_id: str, items: list[dict[str, Any]], conn: Connection | None = None) -> None:
        if not items:
            return
        rows = [{"action_id": action_id, "item_id": str(i["id"]), "outcome": i["outcome"],
                 "detail": i.get("detail")} for i in items]

        def run(c: Connection) -> None:
            c.execute(insert(nc_action_item), rows)
        if conn is not None:
            return run(conn)
        self._guard(lambda: _begin_run(self.engine, run))

    def finish(self, action_id: str, token: str, status: str, outcome: dict[str, Any], message: str | None = None,
               conn: Connection | None = None) -> None:
        """Record the end of the action, only while this console still holds it.

        Inside the action's own transaction (cleanup, undo) a lost lease
        raises, so the whole transaction rolls back: a console whose action
        was taken over never commits its work.
        """
        values = {"status": status, "outcome_json": json.dumps(outcome, default=json_default),
                  "message": message}

        def run(c: Connection) -> None:
            done = c.execute(update(nc_action).where(
                nc_action.c.action_id == action_id, nc_action.c.lease_token == token,
                nc_action.c.status == "running").values(finished_at=db_now(c), **values)).rowcount
            if done != 1:
                raise ActionConflict(f"Action {action_id} was taken over by another console; "
                                     "this console's result was not recorded.")
        if conn is not None:
            return run(conn)
        self._guard(lambda: _begin_run(self.engine, run))

    def refuse(self, action_id: str, kind: str, params: dict[str, Any], phash: str, operator: str, role: str,
               message: str) -> None:
        def tx() -> None:
            with self.engine.begin() as conn:
                now = db_now(conn)
                conn.execute(insert(nc_action).values(
                    action_id=action_id, kind=kind, source=self.source,
                    params_json=json.dumps(params, default=json_default, sort_keys=True), params_hash=phash,
                    operator=operator, role=role, status="refused", started_at=now, finished_at=now,
                    message=message))
        with_retry(tx)

    def get(self, action_id: str) -> AuditEntry | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(nc_action).where(nc_action.c.action_id == action_id)).mappings().first()
            return self._entry(conn, row) if row else None

    def entries(self, limit: int, since: dt.datetime | None = None, *, text: str | None = None,
                kind: str | None = None, before: AuditPosition | None = None) -> list[AuditEntry]:
        """Newest first: those ``since``, of ``kind``, with ``text`` in the operator, id or message
        (literal), older than ``before`` — all in the query."""
        c = nc_action.c
        q = select(nc_action).order_by(c.started_at.desc(), c.action_id.desc()).limit(limit)
        if since is not None:
            q = q.where(c.started_at >= since)
        if kind is not None:
            q = q.where(c.kind == kind)
        flt = text_filter((c.operator, c.action_id, c.message), (), text)
        if flt is not None:
            q = q.where(flt)
        if before is not None:
            at, last = before
            q = q.where(or_(c.started_at < at, and_(c.started_at == at, c.action_id < last)))
        with self.engine.connect() as conn:
            return [self._entry(conn, r, with_items=False) for r in conn.execute(q).mappings()]


    def last_retries(self, item_ids: list[str], exclude_action: str | None = None) -> dict[str, LastRetry]:
        """Per item id, the latest action that retried it (outcome ``retried``)."""
        out: dict[str, LastRetry] = {}
        at = func.coalesce(nc_action.c.finished_at, nc_action.c.heartbeat_at, nc_action.c.started_at)
        with self.engine.connect() as conn:
            for i in range(0, len(item_ids), LOOKUP_CHUNK):
                q = (select(nc_action_item.c.item_id, nc_action.c.operator, nc_action.c.action_id, at.label("at"))
                     .join(nc_action, nc_action.c.action_id == nc_action_item.c.action_id)
                     .where(nc_action_item.c.item_id.in_(item_ids[i:i + LOOKUP_CHUNK]),
                            nc_action_item.c.outcome == "retried", nc_action.c.kind == "retry",
                            nc_action.c.source == self.source))
                if exclude_action is not None:
                    q = q.where(nc_action.c.action_id != exclude_action)
                for r in conn.execute(q).mappings():
                    seen = out.get(r["item_id"])
                    if seen is None or (r["at"] is not None and (seen.at is None or r["at"] > seen.at)):
                        out[r["item_id"]] = LastRetry(r["operator"], r["at"], r["action_id"])
        return out


def _begin_run(engine: Engine, fn: Callable[[Connection], T]) -> T:
    with engine.begin() as c:
        return fn(c)


class MongoLedger:
    def __init__(self, store: OrderStore):
        self.store = store
        self.db = order_db(store)
        self.source = "orders"

    def _now(self) -> dt.datetime:
        clock = getattr(self.store, "now", None)
        return clock() if callable(clock) else utcnow()

    def start(self, action_id: str, kind: str, params: dict[str, Any], phash: str, operator: str, role: str,
              token: str, rerun_failed: bool = False) -> Started:
        now = self._now()
        # Its runner stopped beating (a crash), or it failed and the operator asks to run it again.
        finished: dict[str, Any] = {"params_hash": phash, "$or": [
            {"status": "running", "heartbeat_at": {"$lt": now - STALE_AFTER}}]}
        if rerun_failed:
            finished["$or"].append({"status": "failed"})
        if claim_doc(self.db["nc_actions"], {
                "_id": action_id, "kind": kind, "source": self.source, "params": params,
                "params_hash": phash, "operator": operator, "role": role, "status": "running",
                "started_at": now, "heartbeat_at": now, "lease_token": token, "finished_at": None,
                "outcome": None, "message": None},
                key={"_id": action_id}, finished=finished, takeover={"$set": {
                    "status": "running", "operator": operator, "role": role, "heartbeat_at": now,
                    "lease_token": token, "finished_at": None, "message": None}}):
            return Started(True)
        doc = self.db["nc_actions"].find_one({"_id": action_id})
        # The insert just failed on this id, and the console never deletes ledger records.
        assert doc is not None
        _same_params(action_id, doc, phash)
        if doc["status"] == "running":
            raise _still_running(action_id, doc["operator"])
        return Started(False, self._entry(doc))

    def _entry(self, doc: dict[str, Any], with_items: bool = True) -> AuditEntry:
        items: list[dict[str, Any]] = []
        if with_items:
            items = [{"item_id": d["item_id"], "outcome": d["outcome"], "detail": d.get("detail")}
                     for d in self.db["nc_action_items"].find({"action_id": doc["_id"]}, sort=[("seq", 1)])]
        return AuditEntry(action_id=doc["_id"], kind=doc["kind"], source=doc["source"], operator=doc["operator"],
                          role=doc["role"], status=doc["status"], started_at=doc.get("started_at"),
                          finished_at=doc.get("finished_at"), params=doc.get("params") or {},
                          outcome=doc.get("outcome"), message=doc.get("message"), items=items,
                          heartbeat_at=doc.get("heartbeat_at"))

    def heartbeat(self, action_id: str, token: str, conn: Connection | None = None) -> bool:
        res = self.db["nc_actions"].update_one({"_id": action_id, "lease_token": token},
                                               {"$set": {"heartbeat_at": self._now()}})
        return res.matched_count == 1

    def record_items(self, action_id: str, items: list[dict[str, Any]], conn: Connection | None = None) -> None:
        if items:
            base = utcnow().timestamp()
            self.db["nc_action_items"].insert_many([
                {"action_id": action_id, "item_id": str(i["id"]), "outcome": i["outcome"],
                 "detail": i.get("detail"), "seq": base + n / 1e6} for n, i in enumerate(items)])
            self.store.dirty = True

    def finish(self, action_id: str, token: str, status: str, outcome: dict[str, Any], message: str | None = None,
               conn: Connection | None = None) -> None:
        clean = json.loads(json.dumps(outcome, default=json_default))
        res = self.db["nc_actions"].update_one(
            {"_id": action_id, "lease_token": token, "status": "running"},
            {"$set": {"status": status, "outcome": clean, "message": message, "finished_at": self._now()}})
        self.store.checkpoint()
        if res.matched_count != 1:
            raise ActionConflict(f"Action {action_id} was taken over by another console; "
                                 "this console's result was not recorded.")

    def refuse(self, action_id: str, kind: str, params: dict[str, Any], phash: str, operator: str, role: str,
               message: str) -> None:
        now = self._now()
        self.db["nc_actions"].insert_one({
            "_id": action_id, "kind": kind, "source": self.source, "params": params, "params_hash": phash,
            "operator": operator, "role": role, "status": "refused", "started_at": now, "heartbeat_at": now,
            "finished_at": now, "outcome": None, "message": message})
        self.store.checkpoint()

    def get(self, action_id: str) -> AuditEntry | None:
        doc = self.db["nc_actions"].find_one({"_id": action_id})
        return self._entry(doc) if doc else None

    def entries(self, limit: int, since: dt.datetime | None = None, *, text: str | None = None,
                kind: str | None = None, before: AuditPosition | None = None) -> list[AuditEntry]:
        conds: list[dict[str, Any]] = [{"started_at": {"$gte": since}}] if since else []
        if kind is not None:
            conds.append({"kind": kind})
        if text:
            conds.append(mongo_text_filter(("operator", "_id", "message"), (), text))
        if before is not None:
            at, last = before
            conds.append({"$or": [{"started_at": {"$lt": at}}, {"started_at": at, "_id": {"$lt": last}}]})
        docs = self.db["nc_actions"].find({"$and": conds} if conds else {},
                                          sort=[("started_at", -1), ("_id", -1)], limit=limit)
        return [self._entry(d, with_items=False) for d in docs]


    def last_retries(self, item_ids: list[str], exclude_action: str | None = None) -> dict[str, LastRetry]:
        """Per item id, the latest action that retried it (outcome ``retried``)."""
        actions: dict[str, list[str]] = {}
        for i in range(0, len(item_ids), LOOKUP_CHUNK):
            for d in self.db["nc_action_items"].find(
                    {"item_id": {"$in": item_ids[i:i + LOOKUP_CHUNK]}, "outcome": "retried"},
                    {"item_id": 1, "action_id": 1}):
                if d["action_id"] != exclude_action:
                    actions.setdefault(d["action_id"], []).append(d["item_id"])
        out: dict[str, LastRetry] = {}
        for doc in self.db["nc_actions"].find({"_id": {"$in": list(actions)}, "kind": "retry"}):
            at = doc.get("finished_at") or doc.get("heartbeat_at") or doc.get("started_at")
            for item in actions[doc["_id"]]:
                seen = out.get(item)
                if seen is None or (at is not None and (seen.at is None or at > seen.at)):
                    out[item] = LastRetry(doc["operator"], at, doc["_id"])
        return out


def ledger_for(workspace: Workspace, source: str) -> Ledger:
    if workspace.config.source(source).kind == "mongo":
        return MongoLedger(workspace.orders())
    return SqlLedger(workspace.engine(source), source)


def configured_sources(workspace: Workspace) -> list[str]:
    """The sources this workspace has, in the console's order."""
    return [s for s in SOURCE_NAMES if workspace.has(s)]
