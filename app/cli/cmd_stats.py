"""``stats``: per bucket and series, the numbers the Charts page draws.

    python main.py --demo stats [--source S] [--range 1h|24h|7d] [--bucket 1m|5m|1h] [--json | --csv]

A series is a dispatch type, an order stage or ``cart``. ``--json`` prints a
list of ``{source, series, bucket_start, count, p50_ms, p95_ms, p99_ms,
failed, failure_rate, stuck, duplicates}`` (every bucket of every series);
``--csv`` the same rows with a header; without either, a summary per source
and the buckets that hold anything. Bucket starts are UTC.
"""
from __future__ import annotations

import csv
import json

from ..config import SOURCE_NAMES
from ..jsontext import json_default


def register(sub) -> None:
    p = sub.add_parser("stats", help="latency percentiles, throughput, failures and duplicates per time bucket")
    p.add_argument("--source", choices=SOURCE_NAMES, help="one source (default: every configured source)")
    p.add_argument("--range", dest="range_", metavar="RANGE", default="24h", help="1h, 24h (default) or 7d")
    p.add_argument("--bucket", metavar="BUCKET",
                   help="1m, 5m or 1h (default: 1m for 1h, 5m for 24h, 1h for 7d)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON: one object per bucket and series")
    out.add_argument("--csv", action="store_true", help="print CSV: one row per bucket and series")
    p.set_defaults(handler=run_stats)


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f} ms" if v < 10_000 else f"{v / 1000:,.1f} s"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f} %"


def run_stats(ctx, args) -> int:
    from ..read import series as S
    from ..schema_setup import require_schema
    span = S.parse_range(args.range_)
    bucket = S.parse_bucket(args.bucket if args.bucket is not None else S.DEFAULT_BUCKET[args.range_.strip()])
    ws = ctx.workspace
    sources = S.configured_sources(ws, args.source)
    for source in sources:
        require_schema(ws, source)
    results = S.range_stats(ws, sources, span, bucket)
    points = [p for r in results for p in r.points()]
    if args.json:
        print(json.dumps([p.to_json() for p in points], default=json_default, indent=2), file=ctx.out)
        return 0
    if args.csv:
        out = csv.writer(ctx.out, lineterminator="\n")
        out.writerow(S.POINT_FIELDS)
        for p in points:
            row = p.to_json()
            out.writerow(["" if row[f] is None else row[f] for f in S.POINT_FIELDS])
        return 0
    window = results[0].window
    lines = [f"{window.start:%Y-%m-%d %H:%M} .. {window.end:%Y-%m-%d %H:%M} UTC in {window.n:,} buckets of "
             f"{S.bucket_label(bucket)} ({S.ERROR_NOTE})"]
    for r in results:
        s = r.summary()
        lines.append(f"{r.source}: {s.settled:,} settled, p50 {_ms(s.p50_ms)}, p95 {_ms(s.p95_ms)}, "
                     f"p99 {_ms(s.p99_ms)}; {s.failed:,} failed ({_pct(s.failure_rate)}), {s.stuck:,} stuck, "
                     f"{s.duplicates:,} duplicates")
        for p in r.points():
            if p.count or p.failed or p.stuck or p.duplicates:
                lines.append(f"  {p.bucket_start:%Y-%m-%d %H:%M}  {p.series:16} {p.count:6,} settled  "
                             f"p50 {_ms(p.p50_ms):>9}  p95 {_ms(p.p95_ms):>9}  p99 {_ms(p.p99_ms):>9}  "
                             f"failed {p.failed:4,} ({_pct(p.failure_rate):>7})  stuck {p.stuck:3,}  "
                             f"dup {p.duplicates:3,}")
    print("\n".join(lines), file=ctx.out)
    return 0
