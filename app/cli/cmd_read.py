"""``failed``, ``duplicates`` and ``feed``: the monitoring read side on the command line.

Common options: ``--source S`` (default: every configured source), ``--filter
TEXT`` (matched literally; it travels as a bound parameter, never as query
text), ``--since DURATION`` (30m, 24h, 7d, ...), ``--limit N`` and ``--json``.
"""
from __future__ import annotations

import datetime as dt
import re

from ..config import SOURCE_NAMES
from ..errors import UsageError
from ..read.models import FAILED_KINDS

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


# Longest --since: ten years reach back past any log the console reads and
# keep "now minus the duration" a representable date on every backend.
MAX_SINCE_DAYS = 3650


def parse_duration(text: str) -> dt.timedelta:
    """``30m``, ``24h``, ``7d``, ``90s``, ``2w`` → timedelta; anything else is a usage error."""
    m = _DURATION.match(text or "")
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--since takes a duration such as 30m, 24h or 7d, not {text!r}.")
    seconds = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not seconds <= MAX_SINCE_DAYS * 86400:
        raise UsageError(f"--since reaches back at most {MAX_SINCE_DAYS} days (about ten years), not {text!r}.")
    return dt.timedelta(seconds=seconds)


def _positive(text: str) -> int:
    if not re.fullmatch(r"\s*\d{1,9}\s*", text or "") or int(text) <= 0:
        raise UsageError(f"--limit takes a positive whole number, not {text!r}.")
    return int(text)


def _common(p, *, default_limit: int) -> None:
    p.add_argument("--source", choices=SOURCE_NAMES, help="one source (default: every configured source)")
    p.add_argument("--filter", dest="filter_text", metavar="TEXT", help="literal text to match")
    p.add_argument("--since", metavar="DURATION", help="only the last DURATION (e.g. 30m, 24h, 7d)")
    p.add_argument("--limit", metavar="N", default=str(default_limit), help=f"at most N entries (default {default_limit})")
    p.add_argument("--json", action="store_true", help="print JSON")


def register(sub) -> None:
    p = sub.add_parser("failed", help="failed, stuck and missed items per source")
    _common(p, default_limit=200)
    p.add_argument("--kind", action="append", choices=FAILED_KINDS,
                   help="only this kind (repeatable)")
    p.set_defaults(handler=run_failed)

    p = sub.add_parser("duplicates", help="duplicate groups on business keys")
    _common(p, default_limit=500)
    p.set_defaults(handler=run_duplicates)

    p = sub.add_parser("feed", help="the unified notification feed, newest first")
    _common(p, default_limit=50)
    p.add_argument("--type", dest="kind", metavar="TYPE",
                   help="only entries of this type (comment_added, status_changed, other, cart_email, "
                        "pickup_images_added, delivery_images_added)")
    p.add_argument("--sort", metavar="COLUMN[:asc|desc]",
                   help="order by at, source, kind, recipient, subject, status or id (default at:desc)")
    p.set_defaults(handler=run_feed)


def _prepare(ctx, args) -> tuple[list[str], dt.timedelta | None, int]:
    since = parse_duration(args.since) if args.since is not None else None
    limit = _positive(args.limit)
    ws = ctx.workspace
    if args.source:
        ws.config.source(args.source)  # an unconfigured source is a config error
        sources = [args.source]
    else:
        sources = [s for s in SOURCE_NAMES if ws.has(s)]
        if not sources:
            raise UsageError("No source is configured: add [sources.<name>] tables to the configuration.")
    from ..schema_setup import require_schema
    for source in sources:
        require_schema(ws, source)
    return sources, since, limit


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def run_failed(ctx, args) -> int:
    from ..read.failures import failed_items
    sources, since, limit = _prepare(ctx, args)
    items = []
    for source in sources:
        items.extend(failed_items(ctx.workspace, source, kinds=args.kind, filter_text=args.filter_text,
                                  since=since, limit=limit))
    items.sort(key=lambda i: (i.created_at or dt.datetime.min), reverse=True)
    items = items[:limit]
    lines = [f"{len(items)} item(s) need attention"]
    for i in items:
        err = (i.error or "").replace("\n", " ")
        lines.append(f"{i.source:8} {str(i.id):>10} {i.kind:10} {i.status:20} age {_age(i.age_seconds):>5} "
                     f"attempts {i.attempts}  {err[:100]}")
    ctx.emit([i.to_json() for i in items], "\n".join(lines))
    return 0


def run_duplicates(ctx, args) -> int:
    from ..read.duplicates import scan_duplicates
    sources, since, limit = _prepare(ctx, args)
    groups = []
    for source in sources:
        groups.extend(scan_duplicates(ctx.workspace, source, since=since, limit=limit,
                                      filter_text=args.filter_text))
    groups.sort(key=lambda g: (g.last_at or dt.datetime.min), reverse=True)
    groups = groups[:limit]
    lines = [f"{len(groups)} duplicate group(s), {sum(g.count - 1 for g in groups)} extra member(s)"]
    for g in groups:
        key = ", ".join(f"{k}={v}" for k, v in g.key.items())
        lines.append(f"{g.source:8} {g.rule:24} {key}: {g.count} members, keep {g.keep_id}, "
                     f"remove {', '.join(str(m) for m in g.remove_ids)} "
                     f"({g.first_at:%Y-%m-%d %H:%M:%S} .. {g.last_at:%Y-%m-%d %H:%M:%S})"
                     if g.first_at and g.last_at else
                     f"{g.source:8} {g.rule:24} {key}: {g.count} members, keep {g.keep_id}")
    ctx.emit([g.to_json() for g in groups], "\n".join(lines))
    return 0


def run_feed(ctx, args) -> int:
    from ..read.feeds import notification_feed
    sources, since, limit = _prepare(ctx, args)
    order = None
    if args.sort:
        column, _, way = args.sort.partition(":")
        if way not in ("", "asc", "desc"):
            raise UsageError(f"--sort {args.sort}: the direction is asc or desc, e.g. --sort recipient:asc.")
        order = (column, way != "asc" if way else column == "at")
    page = notification_feed(ctx.workspace, sources=sources, since=since, filter_text=args.filter_text,
                             limit=limit, kind=args.kind, order=order)
    how = f"by {order[0]} {'descending' if order[1] else 'ascending'}" if order else "newest first"
    lines = [f"{len(page.items)} notification(s), {how}"]
    for i in page.items:
        at = f"{i.at:%Y-%m-%d %H:%M:%S}" if i.at else "-"
        lines.append(f"{at}  {i.source:8} {i.kind:12} {str(i.recipient):30} {i.subject}  "
                     f"[{i.link.get('table')} {i.link.get('id')}]")
    ctx.emit([i.to_json() for i in page.items], "\n".join(lines))
    return 0
