"""Admin actions on the command line: retry, cleanup, undo, audit."""
from __future__ import annotations

from ..errors import EXIT_FAILED, UsageError
from ..registry import NAMES as SOURCES


def register(sub) -> None:
    p = sub.add_parser("retry", help="retry failed or stuck items (operator, admin)")
    p.add_argument("--source", required=True, choices=SOURCES)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="ids", action="append", metavar="ID", help="an item id (repeatable)")
    which.add_argument("--all", action="store_true", help="every failed/stuck item (a fixed snapshot)")
    p.add_argument("--filter", metavar="TEXT", help="with --all: only items whose error contains TEXT")
    p.add_argument("--action-id", metavar="K", help="idempotency key: repeating it does nothing twice")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=handle_retry)

    p = sub.add_parser("cleanup", help="archive duplicate rows, keeping the earliest (admin)")
    p.add_argument("--source", required=True, choices=SOURCES)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="show what would be archived and kept")
    mode.add_argument("--apply", action="store_true", help="archive and remove the duplicates")
    p.add_argument("--action-id", metavar="K", help="idempotency key: repeating it does nothing twice")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=handle_cleanup)

    p = sub.add_parser("undo", help="restore what a cleanup action archived (admin)")
    p.add_argument("target", metavar="ACTION_ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=handle_undo)

    p = sub.add_parser("audit", help="the audit log of admin actions")
    p.add_argument("--source", choices=SOURCES)
    p.add_argument("--action", metavar="ACTION_ID", help="one action with its per-item outcomes")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=handle_audit)


def handle_retry(ctx, args) -> int:
    from ..services.retry import retry
    out = retry(ctx.workspace, args.source, ids=args.ids, all_matching=args.all,
                filter_text=args.filter, action_id=args.action_id)
    lines = [f"{out['action_id']}: retried {out['retried']}, skipped {len(out['skipped'])}, "
             f"failed {len(out['failed'])} of {out['snapshot']}" + (" (stored outcome)" if out.get("replayed") else "")]
    if out.get("left_alone"):
        lines[0] += f"; {out['left_alone']} matching items arrived after the snapshot and were left alone"
    lines += [f"  skipped {s['id']}: {s['reason']}" for s in out["skipped"]]
    lines += [f"  failed  {f['id']}: {f['error']}" for f in out["failed"]]
    ctx.emit(out, "\n".join(lines))
    return EXIT_FAILED if out["failed"] else 0


def handle_cleanup(ctx, args) -> int:
    from ..services.cleanup import cleanup
    out = cleanup(ctx.workspace, args.source, dry_run=args.dry_run, action_id=args.action_id)
    if out["dry_run"]:
        head = (f"dry run on {args.source}: {out['group_count']} duplicate groups; would archive "
                f"{out['archived']} rows and keep {out['kept']}")
    else:
        head = (f"{out['action_id']}: archived {out['archived']} rows in {out['group_count']} groups, "
                f"kept {out['kept']}" + (" (stored outcome)" if out.get("replayed") else "")
                + (f"; undo with `undo {out['action_id']}`" if out["archived"] else ""))
    lines = [head]
    for g in out["groups"][:200]:
        lines.append(f"  {g['key']}: keep {g['keep_id']}, archive {', '.join(map(str, g['archived_ids']))}")
    if len(out["groups"]) > 200:
        lines.append(f"  … {len(out['groups']) - 200} more groups (use --json for all)")
    ctx.emit(out, "\n".join(lines))
    return 0


def handle_undo(ctx, args) -> int:
    from ..services.cleanup import undo
    out = undo(ctx.workspace, args.target)
    ctx.emit(out, f"{out['undo_action_id']}: restored {out['restored']} rows archived by {args.target}"
             + (" (stored outcome)" if out.get("replayed") else ""))
    return 0


def handle_audit(ctx, args) -> int:
    from ..services.audit import audit_entries, find_action
    if args.limit < 1 or args.limit > 10_000:
        raise UsageError("--limit must be between 1 and 10000.")
    if args.action:
        entry = find_action(ctx.workspace, args.action)
        if entry is None:
            raise UsageError(f"No action {args.action} is in the audit log of any configured source.")
        lines = [_audit_line(entry)] + [f"  {i['item_id']}: {i['outcome']}" + (f" ({i['detail']})" if i.get('detail') else "")
                                       for i in entry.items]
        ctx.emit(entry.to_json(), "\n".join(lines))
        return 0
    entries, problems = audit_entries(ctx.workspace, source=args.source, limit=args.limit)
    if ctx.json:
        ctx.emit([e.to_json() for e in entries])
    else:
        lines = [_audit_line(e) for e in entries] or ["the audit log is empty."]
        ctx.emit(None, "\n".join(lines + [f"warning: {p}" for p in problems]))
    return 0


def _audit_line(e) -> str:
    when = e.started_at.strftime("%Y-%m-%d %H:%M:%S") if e.started_at else "?"
    counts = ", ".join(f"{k} {v}" for k, v in e.counts().items())
    tail = f" — {e.message}" if e.message else ""
    return f"{when}  {e.action_id:<28} {e.kind:<8} {e.source:<8} {e.status:<9} {e.operator} ({e.role}) {counts}{tail}"
