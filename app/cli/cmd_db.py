"""``db upgrade``: create or update the console's own tables, collections and indexes."""
from __future__ import annotations

from ..errors import EXIT_USAGE
from ..registry import SQL_NAMES


def register(sub) -> None:
    db = sub.add_parser("db", help="the console's own schema")
    dbsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True,
                              parser_class=sub._parser_class)
    up = dbsub.add_parser("upgrade", help="create/upgrade the console's tables and indexes (idempotent)")
    up.add_argument("--json", action="store_true")
    up.set_defaults(handler=handle_upgrade)
    gr = dbsub.add_parser("grants", help="print the MySQL GRANTs that make a console role real")
    gr.add_argument("--source", required=True, choices=SQL_NAMES)
    gr.add_argument("--role", required=True, choices=("viewer", "operator", "admin"))
    gr.add_argument("--user", required=True, metavar="'NAME'@'HOST'")
    gr.add_argument("--database", required=True, metavar="NAME")
    gr.set_defaults(handler=handle_grants)


def handle_grants(ctx, args) -> int:
    from ..grants import grant_statements
    print("\n".join(grant_statements(args.source, args.role, args.user, args.database)), file=ctx.out)
    return 0


def handle_upgrade(ctx, args) -> int:
    from ..schema_setup import upgrade_workspace
    results = upgrade_workspace(ctx.workspace)
    failed = [r for r in results if not r["ok"]]
    lines = [f"{r['source']:<9} {'ok' if r['ok'] else 'FAILED'}  {r['message']}" for r in results]
    if not results:
        lines = ["no sources are configured."]
    ctx.emit(results, "\n".join(lines))
    return EXIT_USAGE if failed else 0
