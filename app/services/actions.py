"""Admin actions: ``run_action`` runs each action once per action id, guarded and audited.

Every admin action (retry, cleanup, undo) runs through ``run_action``:

1. the role is checked first (``roles``: a refused attempt is audited too,
   and raises PermissionDenied → CLI exit 3);
2. the action id (an idempotency key made when the admin starts the action)
   is claimed in the source's ledger (``ledger``): the same id again returns
   the stored outcome and does nothing twice; the same id with other
   parameters is refused; an id still running elsewhere is refused unless its
   heartbeat is stale (its console died), in which case exactly one console
   takes it over;
3. per-item outcomes and the final outcome are stored with operator (OS user
   and host), role, parameters and times — that is the audit log (``audit``).
"""
from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ..errors import ActionConflict, ConsoleError, OperationFailed, PermissionDenied, UsageError
from .audit import operator_identity
from .guard import db_failure, quietly
from .ledger import STALE_AFTER, Ledger, configured_sources, ledger_for
from .roles import require_role
from .tokens import new_action_id, params_hash

if TYPE_CHECKING:
    from ..bootstrap import Workspace

ACTION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


def check_action_id(action_id: str) -> str:
    if not ACTION_ID_RE.match(action_id or ""):
        raise UsageError(f"The action id {action_id!r} is invalid: use 1 to 64 letters, digits, '.', '_', ':' or '-'.")
    return action_id


@dataclass
class ActionContext:
    action_id: str
    kind: str
    source: str
    params: dict[str, Any]
    operator: str
    role: str
    ledger: Ledger
    token: str = ""
    finished: bool = False
    items: list[dict[str, Any]] = field(default_factory=list)

    def record(self, items: list[dict[str, Any]], conn: Connection | None = None) -> None:
        """Store per-item outcomes ({id, outcome, detail}) as they happen."""
        self.items.extend(items)
        self.ledger.record_items(self.action_id, items, conn=conn)

    def heartbeat(self, conn: Connection | None = None) -> None:
        if not self.ledger.heartbeat(self.action_id, self.token, conn=conn):
            raise ActionConflict(f"Action {self.action_id} was taken over by another console: stopping here.")

    def finish_in(self, conn: Connection, outcome: dict[str, Any]) -> None:
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

    def _run(self) -> None:
        while not self.stop.wait(self.INTERVAL):
            try:
                if not self.ctx.ledger.heartbeat(self.ctx.action_id, self.ctx.token):
                    return  # taken over: finish() will refuse this console's result
            except Exception:  # a missed beat is retried at the next interval
                pass

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def _check_other_sources(workspace: Workspace, action_id: str, source: str) -> None:
    """An action id names one action: refuse one another source's ledger already holds."""
    for other in configured_sources(workspace):
        if other == source:
            continue
        try:
            entry = ledger_for(workspace, other).get(action_id)
        except Exception:  # an unreachable source cannot hold a conflicting id we could see
            continue
        if entry is not None:
            raise ActionConflict(f"Action id {action_id} was already used for a {entry.kind} on {other}: "
                                 "start a new action instead.")


def run_action(workspace: Workspace, *, kind: str, source: str, params: dict[str, Any], action_id: str | None,
               body: Callable[[ActionContext], dict[str, Any]], rerun_failed: bool = False) -> dict[str, Any]:
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
        assert entry is not None  # both ledgers return the stored record with every start that is not fresh
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
        error = db_failure(source, exc)
        _finish_quietly(ledger, action_id, token, "failed", {"action_id": action_id}, error.message)
        raise error from None
    except Exception as exc:
        message = f"The {kind} on {source} failed: {type(exc).__name__}: {exc}"
        _finish_quietly(ledger, action_id, token, "failed", {"action_id": action_id}, message)
        raise OperationFailed(message) from None
    if not ctx.finished:
        ledger.finish(action_id, token, "succeeded", outcome)
    return dict(outcome, replayed=False)


def _finish_quietly(ledger: Ledger, action_id: str, token: str, status: str, outcome: dict[str, Any],
                    message: str) -> None:
    # The original error is what the operator must see.
    quietly(lambda: ledger.finish(action_id, token, status, outcome, message))
