"""``status [--json] [--exact]``: per source, reachable or not, schema present or not, row counts.

Like ``pg_isready`` it exits 2 when any configured source cannot be reached,
after printing the whole report.

Row counts are cheap by default, as in the GUI: a table below
``app.status.EXACT_BELOW`` rows (50,000) is counted exactly, a bigger one shows
the database's estimate, marked ``~`` in the text and listed under
``"estimated"`` in the JSON (``counts`` stays {table: rows}). ``--exact``
counts every row: a full scan per table, seconds on tables of millions of rows.
"""
from __future__ import annotations

from ..errors import EXIT_OK, EXIT_USAGE


def register(sub) -> None:
    p = sub.add_parser("status", help="reachability, schema and row counts of each source")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--exact", action="store_true",
                   help="count every row exactly (a full scan of each table: seconds at millions of rows); "
                        "by default tables above 50,000 rows show the database's estimate, marked ~")
    p.set_defaults(handler=handle_status)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def format_report(report) -> str:
    from ..status import role_line
    lines = [role_line(report.role, report.sources) + ("   (demo workspace)" if report.demo else "")]
    if not report.sources:
        lines.append("no sources are configured: add [sources.orders], [sources.cart] or [sources.dispatch].")
    for s in report.sources:
        state = "reachable" if s.reachable else "UNREACHABLE"
        lines.append("")
        lines.append(f"{s.name:<9} {state}  {s.backend} {s.target}  ({s.elapsed_ms} ms)")
        if s.reachable:
            lines.append(f"          production schema: {_yes(s.production_schema)}   "
                         f"console schema: {_yes(s.console_schema)}")
            if s.counts:
                estimated = set(s.estimated)
                lines.append("          rows: " + ", ".join(
                    f"{k} {'~' if k in estimated else ''}{v:,}" for k, v in s.counts.items())
                    + ("   (~ estimated; status --exact counts every row)" if estimated else ""))
        if s.reason:
            lines.append(f"          {s.reason}")
        if s.reachable and s.database_role is not None:
            lines.append(f"          database user may act as: {s.database_role}"
                         + (f" ({s.database_role_reason})" if s.database_role_reason else ""))
        elif s.reachable and s.database_role_reason:
            lines.append(f"          database user: {s.database_role_reason}")
        if s.replica_target is not None:
            rstate = "reachable" if s.replica_reachable else "UNREACHABLE"
            lines.append(f"          read replica: {rstate}  {s.replica_target}"
                         + ("   (the rows above were counted there)" if s.replica_reachable and s.counts else ""))
            if s.replica_reason:
                lines.append(f"          {s.replica_reason}")
    return "\n".join(lines)


def handle_status(ctx, args) -> int:
    from ..status import check_all
    report = check_all(ctx.workspace, exact=args.exact)
    ctx.emit(report.to_dict(), format_report(report))
    return EXIT_OK if report.all_reachable else EXIT_USAGE
