"""``simulate``: drive concurrent producers in naive or guarded mode and count the duplicates."""
from __future__ import annotations

import argparse


def _bounded(flag: str, maximum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {maximum}, not {text!r}") from None
        if not 1 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {maximum}, not {value}")
        return value
    parse.__name__ = flag
    return parse


def register(sub) -> None:
    from ..simulate import MAX_EVENTS, MAX_PROCESSES, MAX_WORKERS, SOURCES
    p = sub.add_parser("simulate", help="run concurrent producers (naive reproduces the seeds' races)")
    p.add_argument("--mode", required=True, choices=("naive", "guarded"),
                   help="naive: the seeds' racy code; guarded: the production paths")
    p.add_argument("--workers", required=True, type=_bounded("--workers", MAX_WORKERS),
                   help=f"concurrent producer threads in all (1–{MAX_WORKERS})")
    p.add_argument("--events", required=True, type=_bounded("--events", MAX_EVENTS),
                   help=f"events to produce (1–{MAX_EVENTS}); each is attempted several times at once")
    p.add_argument("--processes", type=_bounded("--processes", MAX_PROCESSES), default=1,
                   help=f"spread the workers over this many processes (1–{MAX_PROCESSES}, default 1)")
    p.add_argument("--source", default="dispatch", metavar="S",
                   help=f"the database to drive: {', '.join(SOURCES)} (default dispatch)")
    p.add_argument("--seed", type=int, default=None, help="random seed of the event plan")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=handle)


def handle(ctx, args) -> int:
    from ..simulate import check_arguments, run_simulation
    # Arguments first: a mistake is reported before any database is opened.
    check_arguments(args.source, args.mode, args.workers, args.events, args.processes)
    result = run_simulation(ctx.workspace.config, args.source, args.mode, args.workers, args.events,
                            processes=args.processes, seed=args.seed)
    payload = {"mode": result.mode, "source": result.source, "events": result.events,
               "produced": result.produced, "duplicates": result.duplicates,
               "seconds": round(result.seconds, 3), "attempts": result.attempts, "errors": result.errors}
    ctx.emit(payload, result.line())
    return 0
