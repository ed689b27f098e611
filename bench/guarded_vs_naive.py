"""Guarded vs naive on MariaDB (dispatch and cart): throughput and duplicates at the same load.

    .venv/bin/python bench/guarded_vs_naive.py [--workers 16] [--events 1500] [--rounds 3] [--source S]

Per source, creates two fresh databases (one per mode, so both start from the
same state), runs the simulator's driver in each with the same seeded
events — each event attempted ATTEMPTS_PER_EVENT times at once by 16 worker
threads — alternating the modes round by round, prints events/s, attempts/s
and duplicates of each and the ratio guarded/naive, then drops the databases.
Target: ratio >= 0.8 with 0 guarded duplicates (exit code 1 otherwise).
The server is NC_BENCH_MARIADB_URL (default mysql+pymysql://root@127.0.0.1:3306).
"""
from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("NC_NO_KEYRING", "1")

from sqlalchemy import create_engine, text  # noqa: E402

from app.bootstrap import Workspace  # noqa: E402
from app.config import Config, SourceConfig  # noqa: E402
from app.schema_setup import create_production_schema, upgrade_sql_source  # noqa: E402
from app.simulate import load_driver, run_simulation  # noqa: E402

SERVER = os.environ.get("NC_BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306")
MODES = ("naive", "guarded")
TARGET = 0.8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--events", type=int, default=1500, help="events per round and mode")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--source", action="append", choices=("dispatch", "cart"),
                        help="source to drive (repeatable; default: dispatch and cart)")
    args = parser.parse_args()
    ok = True
    for source in args.source or ["dispatch", "cart"]:
        ok &= bench_source(source, args)
        print()
    return 0 if ok else 1


def bench_source(source: str, args) -> bool:
    attempts_per_event = load_driver(source).ATTEMPTS_PER_EVENT

    admin = create_engine(SERVER + "/mysql", isolation_level="AUTOCOMMIT")
    names = {mode: f"nc_bench_{mode}_{os.getpid()}_{uuid.uuid4().hex[:6]}" for mode in MODES}
    configs = {}
    try:
        with admin.connect() as conn:
            version = conn.execute(text("SELECT VERSION()")).scalar()
            for name in names.values():
                conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        for mode, name in names.items():
            config = Config(path=None, sources={source: SourceConfig(source, f"{SERVER}/{name}")},
                            role="admin")
            ws = Workspace(config=config)
            create_production_schema(ws.engine(source), source)
            upgrade_sql_source(ws.engine(source), source)
            ws.close()
            configs[mode] = config
            run_simulation(config, source, mode, args.workers, 100, processes=args.processes, seed=1)  # warm-up

        totals = {m: {"events": 0, "attempts": 0, "seconds": 0.0, "produced": 0, "duplicates": 0, "errors": 0}
                  for m in MODES}
        print(f"{source}: MariaDB {version}, {os.cpu_count()} CPUs: {args.workers} workers, "
              f"{args.processes} process(es), {args.events} events x {attempts_per_event} concurrent attempts, "
              f"{args.rounds} rounds")
        for rnd in range(args.rounds):
            order = MODES if rnd % 2 == 0 else MODES[::-1]
            for mode in order:
                r = run_simulation(configs[mode], source, mode, args.workers, args.events,
                                   processes=args.processes, seed=1000 + rnd)
                t = totals[mode]
                for key in ("events", "attempts", "produced", "duplicates", "errors"):
                    t[key] += getattr(r, key)
                t["seconds"] += r.seconds
                print(f"  round {rnd + 1} {mode:<7} {r.events / r.seconds:8.0f} events/s "
                      f"{r.attempts / r.seconds:8.0f} attempts/s  produced {r.produced:6d}  "
                      f"duplicates {r.duplicates:6d}  failed attempts {r.errors}")
        rate = {m: totals[m]["events"] / totals[m]["seconds"] for m in MODES}
        print()
        for mode in MODES:
            t = totals[mode]
            print(f"{mode:<7} {rate[mode]:8.0f} events/s {t['attempts'] / t['seconds']:8.0f} attempts/s  "
                  f"produced {t['produced']}  duplicates {t['duplicates']}  failed attempts {t['errors']}")
        ratio = rate["guarded"] / rate["naive"]
        ok = ratio >= TARGET and totals["guarded"]["duplicates"] == 0
        print(f"{source}: ratio guarded/naive {ratio:.2f} (target >= {TARGET} with 0 guarded duplicates: "
              f"{'met' if ok else 'NOT met'})")
        return ok
    finally:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
