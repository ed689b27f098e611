"""Admin actions: roles, the idempotent action ledger and the audit log.

Every admin action (retry, cleanup, undo) runs through ``run_action``:

1. the role is checked here, in the service layer (a refused attempt is
   audited too, and raises PermissionDenied → CLI exit 3);
2. the action id (an idempotency key made when the admin starts the action)
   is claimed with an insert on the ledger's primary key: the same id again
   returns the stored outcome and does nothing twice; the same id with other
   parameters is refused; an id still running elsewhere is refused unless its
   heartbeat is stale (its console died), in which case a conditional update
   lets exactly one console take it over;
3. per-item outcomes and the final outcome are stored with operator (OS user
   and host), role, parameters and times — that is the audit log.

SQL sources keep their ledger in their own database (``nc_action``), so a
cleanup's archive, deletions and outcome commit in one transaction; the order
store keeps it in ``nc_actions``.
"""
from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import re
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ..config import data_dir
from ..errors import ActionConflict, ConsoleError, OperationFailed, PermissionDenied, UsageError
from ..schema import nc_action, nc_action_item
from ..sources import describe_db_error, json_default
from ..sqlutil import db_now, insert_ignore, is_permission_denied, utcnow, with_retry

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset(),
    "operator": frozenset({"retry", "simulate"}),
    "admin": frozenset({"retry", "cleanup", "undo", "simulate", "simulate_naive"}),
}
ACTION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
STALE_AFTER = dt.timedelta(minutes=2)


def operator_identity() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no login name in this environment
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def new_action_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:16]}"


def params_hash(kind: str, source: str, params: dict) -> str:
    canonical = json.dumps({"kind": kind, "source": source, "params": params},
                           sort_keys=True, default=json_default, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_action_id(action_id: str) -> str:
    if not ACTION_ID_RE.match(action_id or ""):
        raise UsageError(f"The action id {action_id!r} is invalid: use 1 to 64 letters, digits, '.', '_', ':' or '-'.")
    return action_id


def allowed(role: str, kind: str) -> bool:
    return kind in ROLE_PERMISSIONS.get(role, frozenset())


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
    params: dict
    outcome: dict | None
    message: str | None
    items: list[dict] = field(default_factory=list)
    heartbeat_at: dt.datetime | None = None

    def counts(self) -> dict:
        out = self.outcome or {}
        return {k: v for k, v in out.items() if isinstance(v, int) and not isinstance(v, bool)}

    def to_json(self) -> dict:
        return {"action_id": self.action_id, "kind": self.kind, "source": self.source,
                "operator": self.operator, "role": self.role, "status": self.status,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "params": self.params, "counts": self.counts(), "message": self.message,
                "items": self.items}


@dataclass
class Started:
    fresh: bool                      # True: this console runs the action now
    stored: AuditEntry | None = None  # the earlier run's record when not fresh


# --------------------------------------------------------------------------
# Ledgers

class SqlLedger:
    def __init__(self, engine, source: str):
        self.engine = engine
        self.source = source

    def _guard(self, fn):
        try:
            return with_retry(fn)
        except (DBAPIError, SQLAlchemyError) as exc:
            raise _db_failure(self.source, exc) from None

    def start(self, action_id, kind, params, phash, operator, role, token,
              rerun_failed=False) -> Started:
        def tx():
            with self.engine.begin() as conn:
                now = db_now(conn)
                won = insert_ignore(conn, nc_action, {
                    "action_id": action_id, "kind": kind, "source": self.source,
                    "params_json": json.dumps(params, default=json_default, sort_keys=True),
                    "params_hash": phash, "operator": operator, "role": role, "status": "running",
                    "started_at": now, "heartbeat_at": now, "lease_token": token})
                if won:
                    return Started(True)
                row = conn.execute(select(nc_action).where(nc_action.c.action_id == action_id)).mappings().one()
                if row["params_hash"] != phash:
                    raise ActionConflict(
                        f"Action id {action_id} was already used for a {row['kind']} on {row['source']} "
                        "with other parameters: start a new action instead.")
                takeover = None
                if row["status"] == "running":
                    takeover = or_(nc_action.c.heartbeat_at.is_(None), nc_action.c.heartbeat_at < now - STALE_AFTER)
                elif row["status"] == "failed" and rerun_failed:
                    takeover = nc_action.c.status == "failed"
                if takeover is not None:
                    taken = conn.execute(update(nc_action).where(
                        nc_action.c.action_id == action_id, nc_action.c.status == row["status"], takeover)
                        .values(status="running", operator=operator, role=role, heartbeat_at=now,
                                lease_token=token, finished_at=None, message=None)).rowcount
                    if taken == 1:
                        return Started(True)
                if row["status"] == "running":
                    raise ActionConflict(f"Action {action_id} is still running on {row['operator']}: wait for it to finish.")
                return Started(False, self._entry(conn, row))
        return self._guard(tx)

    def _entry(self, conn, row, with_items=True) -> AuditEntry:
        items = []
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

    def heartbeat(self, action_id, token, conn=None) -> bool:
        """Renew the action's lease; False when another console has taken it over."""
        def run(c):
            return c.execute(update(nc_action).where(nc_action.c.action_id == action_id,
                                                     nc_action.c.lease_token == token)
                             .values(heartbeat_at=db_now(c))).rowcount == 1
        if conn is not None:
            return run(conn)
        return self._guard(lambda: _begin_run(self.engine, run))

    def record_items(self, action_id, items: list[dict], conn=None) -> None:
        if not items:
            return
        rows = [{"action_id": action_id, "item_id": str(i["id"]), "outcome": i["outcome"],
                 "detail": i.get("detail")} for i in items]

        def run(c):
            c.execute(insert(nc_action_item), rows)
        if conn is not None:
            return run(conn)
        self._guard(lambda: _begin_run(self.engine, run))

    def finish(self, action_id, token, status, outcome, message=None, conn=None) -> None:
        """Record the end of the action, only while this console still holds it.

        Inside the action's own transaction (cleanup, undo) a lost lease
        raises, so the whole transaction rolls back: a console whose action
        was taken over never commits its work.
        """
        values = {"status": status, "outcome_json": json.dumps(outcome, default=json_default),
                  "message": message}

        def run(c):
            done = c.execute(update(nc_action).where(
                nc_action.c.action_id == action_id, nc_action.c.lease_token == token,
                nc_action.c.status == "running").values(finished_at=db_now(c), **values)).rowcount
            if done != 1:
                raise ActionConflict(f"Action {action_id} was taken over by another console; "
                                     "this console's result was not recorded.")
        if conn is not None:
            return run(conn)
        self._guard(lambda: _begin_run(self.engine, run))

    def refuse(self, action_id, kind, params, phash, operator, role, message) -> None:
        def tx():
            with self.engine.begin() as conn:
                now = db_now(conn)
                conn.execute(insert(nc_action).values(
                    action_id=action_id, kind=kind, source=self.source,
                    params_json=json.dumps(params, default=json_default, sort_keys=True), params_hash=phash,
                    operator=operator, role=role, status="refused", started_at=now, finished_at=now,
                    message=message))
        with_retry(tx)

    def get(self, action_id) -> AuditEntry | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(nc_action).where(nc_action.c.action_id == action_id)).mappings().first()
            return self._entry(conn, row) if row else None

    def entries(self, limit: int, since: dt.datetime | None = None) -> list[AuditEntry]:
        q = select(nc_action).order_by(nc_action.c.started_at.desc()).limit(limit)
        if since is not None:
            q = q.where(nc_action.c.started_at >= since)
        with self.engine.connect() as conn:
            return [self._entry(conn, r, with_items=False) for r in conn.execute(q).mappings()]


def _db_failure(source: str, exc: BaseException) -> ConsoleError:
    """A database error as the operator's error: the database user's missing
    privilege is a permission error (exit 3), anything else a failed operation."""
    message = describe_db_error(source, exc)
    return PermissionDenied(message) if is_permission_denied(exc) else OperationFailed(message)


def _begin_run(engine, fn):
    with engine.begin() as c:
        return fn(c)


class MongoLedger:
    def __init__(self, store):
        self.store = store
        self.db = store.db
        self.source = "orders"

    def _now(self):
        clock = getattr(self.store, "now", None)
        return clock() if callable(clock) else utcnow()

    def start(self, action_id, kind, params, phash, operator, role, token,
              rerun_failed=False) -> Started:
        from pymongo.errors import DuplicateKeyError
        now = self._now()
        try:
            self.db["nc_actions"].insert_one({
                "_id": action_id, "kind": kind, "source": self.source, "params": params,
                "params_hash": phash, "operator": operator, "role": role, "status": "running",
                "started_at": now, "heartbeat_at": now, "lease_token": token, "finished_at": None,
                "outcome": None, "message": None})
            return Started(True)
        except DuplicateKeyError:
            pass
        doc = self.db["nc_actions"].find_one({"_id": action_id})
        if doc["params_hash"] != phash:
            raise ActionConflict(
                f"Action id {action_id} was already used for a {doc['kind']} on {doc['source']} "
                "with other parameters: start a new action instead.")
        flt = None
        if doc["status"] == "running":
            flt = {"_id": action_id, "status": "running", "heartbeat_at": {"$lt": now - STALE_AFTER}}
        elif doc["status"] == "failed" and rerun_failed:
            flt = {"_id": action_id, "status": "failed"}
        if flt is not None:
            res = self.db["nc_actions"].update_one(flt, {"$set": {
                "status": "running", "operator": operator, "role": role, "heartbeat_at": now,
                "lease_token": token, "finished_at": None, "message": None}})
            if res.modified_count == 1:
                return Started(True)
        if doc["status"] == "running":
            raise ActionConflict(f"Action {action_id} is still running on {doc['operator']}: wait for it to finish.")
        return Started(False, self._entry(doc))

    def _entry(self, doc, with_items=True) -> AuditEntry:
        items = []
        if with_items:
            items = [{"item_id": d["item_id"], "outcome": d["outcome"], "detail": d.get("detail")}
                     for d in self.db["nc_action_items"].find({"action_id": doc["_id"]}, sort=[("seq", 1)])]
        return AuditEntry(action_id=doc["_id"], kind=doc["kind"], source=doc["source"], operator=doc["operator"],
                          role=doc["role"], status=doc["status"], started_at=doc.get("started_at"),
                          finished_at=doc.get("finished_at"), params=doc.get("params") or {},
                          outcome=doc.get("outcome"), message=doc.get("message"), items=items,
                          heartbeat_at=doc.get("heartbeat_at"))

    def heartbeat(self, action_id, token, conn=None) -> bool:
        res = self.db["nc_actions"].update_one({"_id": action_id, "lease_token": token},
                                               {"$set": {"heartbeat_at": self._now()}})
        return res.matched_count == 1

    def record_items(self, action_id, items, conn=None) -> None:
        if items:
            base = utcnow().timestamp()
            self.db["nc_action_items"].insert_many([
                {"action_id": action_id, "item_id": str(i["id"]), "outcome": i["outcome"],
                 "detail": i.get("detail"), "seq": base + n / 1e6} for n, i in enumerate(items)])
            self.store.dirty = True

    def finish(self, action_id, token, status, outcome, message=None, conn=None) -> None:
        clean = json.loads(json.dumps(outcome, default=json_default))
        res = self.db["nc_actions"].update_one(
            {"_id": action_id, "lease_token": token, "status": "running"},
            {"$set": {"status": status, "outcome": clean, "message": message, "finished_at": self._now()}})
        self.store.checkpoint()
        if res.matched_count != 1:
            raise ActionConflict(f"Action {action_id} was taken over by another console; "
                                 "this console's result was not recorded.")

    def refuse(self, action_id, kind, params, phash, operator, role, message) -> None:
        now = self._now()
        self.db["nc_actions"].insert_one({
            "_id": action_id, "kind": kind, "source": self.source, "params": params, "params_hash": phash,
            "operator": operator, "role": role, "status": "refused", "started_at": now, "heartbeat_at": now,
            "finished_at": now, "outcome": None, "message": message})
        self.store.checkpoint()

    def get(self, action_id) -> AuditEntry | None:
        doc = self.db["nc_actions"].find_one({"_id": action_id})
        return self._entry(doc) if doc else None

    def entries(self, limit: int, since: dt.datetime | None = None) -> list[AuditEntry]:
        flt = {"started_at": {"$gte": since}} if since else {}
        docs = self.db["nc_actions"].find(flt, sort=[("started_at", -1)], limit=limit)
        return [self._entry(d, with_items=False) for d in docs]


def ledger_for(workspace, source: str):
    if source == "orders":
        return MongoLedger(workspace.orders())
    return SqlLedger(workspace.engine(source), source)


# --------------------------------------------------------------------------
# Local audit file: refused attempts a read-only database user cannot record.

def _local_audit_path():
    return data_dir() / "audit-local.jsonl"


def _append_local(entry: dict) -> None:
    path = _local_audit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, default=json_default) + "\n")


def local_entries(limit: int) -> list[AuditEntry]:
    path = _local_audit_path()
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines()[-limit:]:
        try:
            d = json.loads(line)
        except ValueError:
            continue
        out.append(AuditEntry(action_id=d["action_id"], kind=d["kind"], source=d["source"],
                              operator=d["operator"], role=d["role"], status=d["status"],
                              started_at=dt.datetime.fromisoformat(d["started_at"]),
                              finished_at=dt.datetime.fromisoformat(d["started_at"]),
                              params=d.get("params", {}), outcome=None, message=d.get("message")))
    return out


# --------------------------------------------------------------------------
# Running an action

@dataclass
class ActionContext:
    action_id: str
    kind: str
    source: str
    params: dict
    operator: str
    role: str
    ledger: object
    token: str = ""
    finished: bool = False
    items: list[dict] = field(default_factory=list)

    def record(self, items: list[dict], conn=None) -> None:
        """Store per-item outcomes ({id, outcome, detail}) as they happen."""
        self.items.extend(items)
        self.ledger.record_items(self.action_id, items, conn=conn)

    def heartbeat(self, conn=None) -> None:
        if not self.ledger.heartbeat(self.action_id, self.token, conn=conn):
            raise ActionConflict(f"Action {self.action_id} was taken over by another console: stopping here.")

    def finish_in(self, conn, outcome: dict) -> None:
        """Record success inside the caller's transaction (cleanup, undo)."""
        self.ledger.finish(self.action_id, self.token, "succeeded", outcome, conn=conn)
        self.finished = True


class _Heartbeat:
    """Renews a running action's lease from a side thread, so a long item
    (a slow SMTP server, a big cleanup transaction) never looks dead."""

    INTERVAL = STALE_AFTER.total_seconds() / 6

    def __init__(self, ctx: ActionContext):
        self.ctx = ctx
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{ctx.action_id}", daemon=True)

    def _run(self):
        while not self.stop.wait(self.INTERVAL):
            try:
                if not self.ctx.ledger.heartbeat(self.ctx.action_id, self.ctx.token):
                    return  # taken over: finish() will refuse this console's result
            except Exception:  # a missed beat is retried at the next interval
                pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)


def require_role(workspace, kind: str, source: str, params: dict, action_id: str | None = None) -> None:
    """Refuse (audited) before anything else happens when the role may not ``kind``."""
    if not allowed(workspace.role, kind):
        refuse(workspace, kind, source, params, action_id)


def refuse(workspace, kind: str, source: str, params: dict, action_id: str | None = None,
           message: str | None = None):
    """Audit a refused attempt and raise PermissionDenied."""
    role = workspace.role
    operator = operator_identity()
    may = sorted(r for r, kinds in ROLE_PERMISSIONS.items() if kind in kinds)
    message = message or f"The {role} role may not {kind}: it takes the {' or '.join(may) or 'no'} role."
    aid = f"refused-{uuid.uuid4().hex[:16]}"
    params = dict(params, requested_action_id=action_id) if action_id else params
    record = {"action_id": aid, "kind": kind, "source": source, "operator": operator, "role": role,
              "status": "refused", "started_at": utcnow(), "params": params, "message": message}
    try:
        ledger_for(workspace, source).refuse(aid, kind, params, params_hash(kind, source, params),
                                             operator, role, message)
    except Exception:  # a read-only database user cannot write the ledger: keep it locally
        _append_local(record)
    raise PermissionDenied(message)


def _check_other_sources(workspace, action_id: str, source: str) -> None:
    """An action id names one action: refuse one another source's ledger already holds."""
    for other in ("cart", "dispatch", "orders"):
        if other == source or not workspace.has(other):
            continue
        try:
            entry = ledger_for(workspace, other).get(action_id)
        except Exception:  # an unreachable source cannot hold a conflicting id we could see
            continue
        if entry is not None:
            raise ActionConflict(f"Action id {action_id} was already used for a {entry.kind} on {other}: "
                                 "start a new action instead.")


def run_action(workspace, *, kind: str, source: str, params: dict, action_id: str | None,
               body: Callable[[ActionContext], dict], rerun_failed: bool = False) -> dict:
    """Run ``body`` once per action id, guarded by role and audited.

    ``rerun_failed``: an action that failed may run again under its id (undo,
    whose work is idempotent); otherwise a failed id stays failed.
    """
    require_role(workspace, kind, source, params, action_id)
    if action_id:
        check_action_id(action_id)
        _check_other_sources(workspace, action_id, source)
    else:
        action_id = new_action_id(kind)
    ledger = ledger_for(workspace, source)
    operator = operator_identity()
    token = uuid.uuid4().hex
    phash = params_hash(kind, source, params)
    started = ledger.start(action_id, kind, params, phash, operator, workspace.role, token,
                           rerun_failed=rerun_failed)
    if not started.fresh:
        entry = started.stored
        if entry.status == "failed":
            raise OperationFailed(f"Action {action_id} failed earlier ({entry.message}): start a new action to try again.")
        if entry.status == "refused":
            raise PermissionDenied(f"Action {action_id} was refused earlier: {entry.message}")
        return dict(entry.outcome or {}, action_id=action_id, replayed=True)
    ctx = ActionContext(action_id=action_id, kind=kind, source=source, params=params,
                        operator=operator, role=workspace.role, ledger=ledger, token=token)
    try:
        with _Heartbeat(ctx):
            outcome = dict(body(ctx), action_id=action_id)
    except ActionConflict:
        raise  # taken over: the other console owns the record now
    except ConsoleError as exc:
        _finish_quietly(ledger, action_id, token, "failed", {"action_id": action_id}, exc.message)
        raise
    except (DBAPIError, SQLAlchemyError) as exc:
        error = _db_failure(source, exc)
        _finish_quietly(ledger, action_id, token, "failed", {"action_id": action_id}, error.message)
        raise error from None
    except Exception as exc:
        message = f"The {kind} on {source} failed: {type(exc).__name__}: {exc}"
        _finish_quietly(ledger, action_id, token, "failed", {"action_id": action_id}, message)
        raise OperationFailed(message) from None
    if not ctx.finished:
        ledger.finish(action_id, token, "succeeded", outcome)
    return dict(outcome, replayed=False)


def _finish_quietly(ledger, action_id, token, status, outcome, message) -> None:
    try:
        ledger.finish(action_id, token, status, outcome, message)
    except Exception:  # the original error is what the operator must see
        pass


def find_action(workspace, action_id: str) -> AuditEntry | None:
    """Look an action up in every configured source's ledger."""
    for source in ("cart", "dispatch", "orders"):
        if workspace.has(source):
            try:
                entry = ledger_for(workspace, source).get(action_id)
            except (DBAPIError, SQLAlchemyError):
                continue
            if entry is not None:
                return entry
    return None


def audit_entries(workspace, *, source: str | None = None, limit: int = 100,
                  since: dt.datetime | None = None) -> tuple[list[AuditEntry], list[str]]:
    """Newest first, across sources; also returns one sentence per source that could not be read."""
    entries: list[AuditEntry] = []
    problems: list[str] = []
    for name in ("cart", "dispatch", "orders"):
        if not workspace.has(name) or (source and name != source):
            continue
        try:
            entries.extend(ledger_for(workspace, name).entries(limit, since))
        except ConsoleError as exc:
            problems.append(exc.message)
        except (DBAPIError, SQLAlchemyError) as exc:
            problems.append(describe_db_error(name, exc))
    entries.extend(e for e in local_entries(limit) if not source or e.source == source)
    entries.sort(key=lambda e: e.started_at or dt.datetime.min, reverse=True)
    return entries[:limit], problems
