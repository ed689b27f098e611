"""Cleanup of duplicate groups (preview, apply with archive) and undo.

* ``--dry-run`` shows exactly which rows each group keeps (the earliest) and
  which it would archive; it reads only, so every role may preview.
* ``--apply`` (admin) locks the planned rows in primary-key order, groups
  the rows it actually holds again with the same business rules the read
  side uses (``app.read.duplicates``), and moves the extra members into the
  archive in the same transaction as their removal, together with the
  action's outcome. Several consoles applying at once: the first archives,
  the others find nothing left to remove. A killed process leaves nothing
  half done: the transaction rolls back.
* ``undo`` (admin) restores exactly what an action archived (same ids, same
  values); it is an action itself, so repeating it does nothing twice.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection

from .. import registry
from ..errors import ActionConflict, OperationFailed, UsageError
from ..faults import fault_point
from ..read import duplicates as dup
from ..read.models import DuplicateGroup
from ..schema_setup import require_schema
from ..sqlutil import db_now, utcnow, with_retry
from .actions import ActionContext, run_action
from .archive import archive_and_delete, archive_documents, lock_rows, restore, restore_documents
from .audit import find_action
from .by_source import actions_for
from .guard import order_db
from .ledger import STALE_AFTER, configured_sources
from .roles import require_role
from .tokens import ids_digest

if TYPE_CHECKING:
    from ..bootstrap import Workspace

def _check_source(source: str) -> None:
    registry.source(source)


def _regroup(workspace: Workspace, source: str, rows: list[dict[str, Any]],
             conn: Connection | None = None) -> list[DuplicateGroup]:
    """The groups of the rows a cleanup holds, by the read side's rules (the source's ``regroup``)."""
    return actions_for(source).regroup(workspace, rows, conn)


def _table(source: str) -> Table:
    table = actions_for(source).archive_table
    assert table is not None  # every SQL source names the table its cleanup archives from
    return table


def _group_plan(groups: Iterable[DuplicateGroup]) -> list[dict[str, Any]]:
    return [{"key": g.to_json()["key"], "keep_id": g.to_json()["keep_id"],
             "archived_ids": [str(i) if not isinstance(i, int) else i for i in g.remove_ids],
             "count": g.count} for g in groups]


def _outcome(source: str, dry_run: bool, groups: Sequence[DuplicateGroup],
             archived_ids: Sequence[int | str]) -> dict[str, Any]:
    return {"source": source, "dry_run": dry_run, "groups": _group_plan(groups),
            "group_count": len(groups), "archived": len(archived_ids),
            "kept": len(groups), "archived_ids": archived_ids}




def cleanup(workspace: Workspace, source: str, *, dry_run: bool, action_id: str | None = None,
            keep_ids: Sequence[Any] | None = None) -> dict[str, Any]:
    """Preview (``dry_run``) or apply the cleanup of every duplicate group of ``source``.

    Only the source's own business rule is cleaned up; groups found by extra
    rules from the config file are shown by ``duplicates`` but never removed
    here (the console does not own those tables' semantics).

    ``keep_ids``: only the groups whose kept member is one of these (the
    groups an admin selected in the window, as the preview showed them); a
    group whose kept member changed since (an earlier copy appeared) is left
    alone. The ledger keeps their count and digest.
    """
    _check_source(source)
    params: dict[str, Any] = {"dry_run": False}
    chosen: set[str] | None = None
    if keep_ids is not None:
        chosen = {str(k) for k in keep_ids}
        params["groups"] = ids_digest(sorted(chosen))
    if not dry_run:
        require_role(workspace, "cleanup", source, params, action_id)
    require_schema(workspace, source)
    planned = dup.scan_duplicates(workspace, source, rule=registry.source(source).builtin_rule)
    if chosen is not None:
        planned = [g for g in planned if str(g.keep_id) in chosen]
    if dry_run:
        would = [i if isinstance(i, int) else str(i) for g in planned for i in g.remove_ids]
        return dict(_outcome(source, True, planned, would), action_id=None)
    body = _apply_sql if registry.source(source).is_sql else _apply_orders
    return run_action(workspace, kind="cleanup", source=source, params=params,
                      action_id=action_id, body=lambda ctx: body(workspace, source, planned, ctx, chosen))


def _apply_sql(workspace: Workspace, source: str, planned: list[DuplicateGroup],
               ctx: ActionContext, chosen: set[str] | None = None) -> dict[str, Any]:
    table = _table(source)
    member_ids = sorted({int(i) for g in planned for i in g.member_ids})

    def tx() -> dict[str, Any]:
        ctx.items.clear()
        with workspace.engine(source).begin() as conn:
            now = db_now(conn)
            rows = lock_rows(conn, table, member_ids)
            groups = [g for g in _regroup(workspace, source, rows, conn)
                      if g.remove_ids and (chosen is None or str(g.keep_id) in chosen)]
            remove = {int(i) for g in groups for i in g.remove_ids}
            doomed = [r for r in rows if r["id"] in remove]
            archived = archive_and_delete(conn, table, doomed, ctx.action_id, now)
            if (on_archived := actions_for(source).on_archived) is not None:
                on_archived(conn, doomed)
            fault_point("cleanup.after_archive")
            outcome = _outcome(source, False, groups, archived)
            ctx.record([{"id": i, "outcome": "archived", "detail": None} for i in archived], conn=conn)
            ctx.finish_in(conn, dict(outcome, action_id=ctx.action_id))
            return outcome
    return with_retry(tx)


def _apply_orders(workspace: Workspace, source: str, planned: list[DuplicateGroup],
                  ctx: ActionContext, chosen: set[str] | None = None) -> dict[str, Any]:
    db = order_db(workspace.orders())
    collection = actions_for(source).archive_collection
    assert collection is not None  # the order store names the collection its cleanup archives from
    now = utcnow()
    archived: list[str] = []
    done_groups: list[DuplicateGroup] = []
    for g in planned:
        key = {"order_id": g.key["order_id"], "event": g.key["event"]}
        # A list: a real server's cursor can be read only once.
        current = list(db[collection].find(key, sort=[("sent_at", 1), ("_id", 1)]))
        for group in _regroup(workspace, source, current):
            if not group.remove_ids or (chosen is not None and str(group.keep_id) not in chosen):
                continue
            remove = set(map(str, group.remove_ids))
            doomed = [d for d in current if str(d["_id"]) in remove]
            removed = archive_documents(db, collection, doomed, ctx.action_id, now)
            if removed:
                done_groups.append(group)
                archived.extend(str(i) for i in removed)
        fault_point("cleanup.after_archive")
    ctx.record([{"id": i, "outcome": "archived", "detail": None} for i in archived])
    workspace.orders().checkpoint()
    return _outcome(source, False, done_groups, archived)


def undo_action_id(target: str) -> str:
    candidate = f"undo-{target}"
    if len(candidate) <= 64:
        return candidate
    return "undo-" + hashlib.sha256(target.encode()).hexdigest()[:32]


def undo(workspace: Workspace, target: str) -> dict[str, Any]:
    """Restore what cleanup action ``target`` archived; repeating it restores nothing twice."""
    target = (target or "").strip()
    if not target:
        raise UsageError("Name the cleanup action to undo, e.g. `undo cleanup-1a2b3c`.")
    entry = find_action(workspace, target)
    params = {"target": target}
    source = entry.source if entry is not None else next(
        # SQL sources first: their ledger records a refusal in the same database.
        iter(sorted(configured_sources(workspace), key=lambda s: not registry.source(s).is_sql)),
        registry.SQL_NAMES[0])
    require_role(workspace, "undo", source, params)
    if entry is None:
        raise UsageError(f"No action {target} is in the audit log of any configured source.")
    if entry.kind != "cleanup":
        raise UsageError(f"Action {target} is a {entry.kind}: only cleanup actions can be undone.")
    if entry.status == "refused":
        raise UsageError(f"Action {target} was refused: it archived nothing.")
    if entry.status == "running" and entry.heartbeat_at is not None and \
            entry.heartbeat_at > utcnow() - STALE_AFTER * 1.5:
        raise ActionConflict(f"Cleanup {target} is still running on {entry.operator}: undo it when it has finished.")
    # A failed or abandoned cleanup may still have archived documents (the
    # order store has no multi-document transactions): undo puts back
    # whatever is in the archive under that action.
    require_schema(workspace, source)

    def body(ctx: ActionContext) -> dict[str, Any]:
        if not registry.source(source).is_sql:
            restored = [str(i) for i in restore_documents(order_db(workspace.orders()), target, utcnow())]
            ctx.record([{"id": i, "outcome": "restored", "detail": None} for i in restored])
            workspace.orders().checkpoint()
            return {"source": source, "undone_action_id": target, "restored": len(restored),
                    "restored_ids": restored}

        def tx() -> dict[str, Any]:
            ctx.items.clear()
            with workspace.engine(source).begin() as conn:
                restored, conflicts = restore(conn, {_table(source).name: _table(source)}, target,
                                              db_now(conn))
                if (on_restored := actions_for(source).on_restored) is not None:
                    on_restored(conn, restored)
                outcome = {"source": source, "undone_action_id": target, "restored": len(restored),
                           "restored_ids": [int(i) for i in restored],
                           "conflicts": [int(i) for i in conflicts]}
                ctx.record([{"id": i, "outcome": "restored", "detail": None} for i in restored]
                           + [{"id": i, "outcome": "conflict",
                               "detail": "another row holds this id now; left in the archive"} for i in conflicts],
                           conn=conn)
                if not conflicts:
                    ctx.finish_in(conn, dict(outcome, action_id=ctx.action_id))
                return outcome
        outcome = with_retry(tx)
        if outcome["conflicts"]:
            # Committed what could be restored; the rest waits in the archive.
            # The undo is recorded as failed, so running it again (once the
            # rows holding those ids are dealt with) restores the remainder.
            raise OperationFailed(
                f"Restored {outcome['restored']} rows; {len(outcome['conflicts'])} archived rows "
                f"({', '.join(map(str, outcome['conflicts'][:10]))}) were not restored because other rows "
                "now hold their ids: resolve those, then run the undo again.")
        return outcome

    out = run_action(workspace, kind="undo", source=source, params=params,
                     action_id=undo_action_id(target), body=body, rerun_failed=True)
    return dict(out, undo_action_id=out["action_id"], action_id=target)
