"""The window under load (offscreen): first data, a 200,000-row failed list, scrolling, GUI stalls.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/ui.py [--rows 200000] [--retry 10000]

Cases, each printed with its figure and target:

  first-window      process start of the window to the Failed & Stuck page showing
                    the demo workspace's data                             (no target; seconds)
  failed-open       a 200,000-row failed list on MariaDB: Ctrl+4 to the   target <= 1 s
                    first screen of rows, and the memory it took (RSS)
  scroll            frame time while paging down through the loaded rows  target <= 16 ms
                    (a synchronous repaint per step), mean and max
  live-refresh      max GUI stall while 200 new failed rows/s arrive and  target <= 50 ms
                    the list refreshes in place every second (20 s)
  retry-10000       max GUI stall during a retry of all 10,000 matching   target <= 50 ms
                    items (count, confirm, progress, results)
  feed-1m           a 1,000,000-row notification feed on MariaDB: Ctrl+2  target <= 1 s
                    to the first screen, its memory, and the max GUI stall
                    while 200 new rows/s arrive for 20 s (live, 1 s polls) target <= 50 ms
  charts-1m         a 1,000,000-point series at 1280x720: first frame and  target <= 30 ms
                    redraw (setData + repaint) with peak downsampling and
                    clip-to-view, and without them (for comparison)
  charts-7d         7 days of 1-minute buckets over 5,000,000 dispatch     target <= 500 ms
                    rows (rollup caught up): range change to drawn, and
                    the max GUI stall meanwhile

The stall probe (``ui.stall.StallProbe``) is a 5 ms timer on the GUI thread;
its lateness is the stall a person feels. The server is NC_BENCH_MARIADB_URL
(default mysql+pymysql://root@127.0.0.1:3306); databases are created with
unique names and dropped at the end.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import uuid
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, func, insert, select, text  # noqa: E402

from app.bootstrap import Workspace  # noqa: E402
from app.config import Config, MailConfig, SourceConfig, Thresholds  # noqa: E402
from app.schema import dispatch_log, dispatch_users, issue_watchers, issues, notifications  # noqa: E402
from app.schema_setup import create_production_schema, upgrade_sql_source  # noqa: E402
from app.sqlutil import db_now  # noqa: E402

SERVER = os.environ.get("NC_BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306")
ISSUES = 500


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fresh_database(label: str) -> str:
    name = f"nc_bench_ui_{label}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(SERVER + "/")
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    admin.dispose()
    DATABASES.append(name)
    return f"{SERVER}/{name}"


DATABASES: list[str] = []


def drop_databases() -> None:
    admin = create_engine(SERVER + "/")
    with admin.begin() as conn:
        for name in DATABASES:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


def url_workspace(url: str, tmp: Path) -> Workspace:
    return Workspace(config=Config(path=None, sources={"dispatch": SourceConfig("dispatch", url)}, role="admin",
                                   thresholds=Thresholds(),
                                   mail=MailConfig(transport="outbox", outbox_dir=str(tmp / "outbox"))))


def dispatch_workspace(rows: int, tmp: Path) -> Workspace:
    url = fresh_database("dispatch")
    ws = url_workspace(url, tmp)
    engine = ws.engine("dispatch")
    create_production_schema(engine, "dispatch")
    upgrade_sql_source(engine, "dispatch")
    with engine.begin() as conn:
        conn.execute(insert(dispatch_users), [{"id": i, "email": f"u{i}@example.com", "display_name": f"U{i}"}
                                              for i in range(1, 5)])
        conn.execute(insert(issues), [{"id": i, "issue_key": f"NC-{i}", "title": f"Issue {i}", "reporter_id": 1,
                                       "assignee_id": 2} for i in range(1, ISSUES + 1)])
        conn.execute(insert(issue_watchers), [{"issue_id": i, "user_id": 3} for i in range(1, ISSUES + 1)])
    add_failed(engine, rows, start=0)
    settle_server()
    return ws


def add_failed(engine, n: int, start: int, error: str = "Deadlock found when trying to get lock") -> None:
    with engine.begin() as conn:
        now = db_now(conn)
        for lo in range(0, n, 10_000):
            conn.execute(insert(dispatch_log), [
                {"dispatch_id": f"comment_added:{1 + i % ISSUES}:{start + i}:4", "dispatch_type": "comment_added",
                 "issue_id": 1 + i % ISSUES, "comment_id": start + i, "actor_user_id": 4, "status": "failed",
                 "error_message": error, "created_at": now} for i in range(lo, min(n, lo + 10_000))])


def add_notifications(engine, n: int, start: int, spread: dt.timedelta = dt.timedelta(0)) -> None:
    with engine.begin() as conn:
        now = db_now(conn)
        step = spread / max(1, n)
        for lo in range(0, n, 20_000):
            conn.execute(insert(notifications), [
                {"user_id": 3, "type": "comment_added", "issue_id": 1 + i % ISSUES, "comment_id": start + i,
                 "actor_user_id": 4, "message": f"comment #{start + i}", "created_at": now - spread + step * i,
                 "dispatch_id": f"comment_added:{1 + i % ISSUES}:{start + i}:4"}
                for i in range(lo, min(n, lo + 20_000))])


def settle_server(limit: float = 120.0) -> None:
    """Wait until the server has flushed what the seeding wrote (its background work would take the
    processor from the window being measured): until InnoDB's dirty pages stop falling, at most ``limit`` s."""
    admin = create_engine(SERVER + "/")
    end = time.perf_counter() + limit
    last = None
    with admin.connect() as conn:
        while time.perf_counter() < end:
            dirty = conn.execute(text("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")).one()[1]
            if last is not None and int(dirty) >= int(last) and int(dirty) < 1000:
                break
            last = dirty
            time.sleep(2)
    admin.dispose()


def open_on_page(app, ws: Workspace, key: str, digit):
    """The window on ``ws``; then Ctrl+digit to ``key`` timed to its first screen of rows.

    Returns (window, page, seconds to the first rows, RSS in MB before the key)."""
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    from ui.main_window import MainWindow
    window = MainWindow()
    window.resize(1280, 800)
    window.show()
    window.ctx.open_workspace(lambda: ws)
    wait(app, lambda: window.ctx.workspace is not None)
    pump(app, 0.5)
    page = window.pages[key]
    before = rss_mb()
    t0 = time.perf_counter()
    QTest.keyClick(window, digit, Qt.ControlModifier)
    wait(app, lambda: page.is_loaded() and page.model.rowCount() > 0)
    app.processEvents()
    return window, page, time.perf_counter() - t0, before


def feed_case(app, rows: int, tmp: Path, results: list) -> None:
    from PySide6.QtCore import Qt

    from ui.stall import StallProbe
    print(f"seeding {rows:,} notifications …", flush=True)
    ws = dispatch_workspace(0, tmp)
    engine = ws.engine("dispatch")
    add_notifications(engine, rows, start=0, spread=dt.timedelta(days=7))
    settle_server()
    window, page, opened, before = open_on_page(app, ws, "notifications", Qt.Key_2)
    stop, feeder = start_feeder(engine, "notifications", 50_000_000)
    pump(app, 3)            # the writer process is up and writing before the probe starts
    shown = page.model.rowCount()
    probe = StallProbe().start()
    pump(app, 20)
    stop_feeder(app, stop, feeder)
    pump(app, 2)
    stall = probe.stop()
    arrived = page.model.rowCount() - shown
    results.append(("feed-1m", f"{opened * 1000:.0f} ms to the first screen of {rows:,} rows, "
                    f"+{rss_mb() - before:.0f} MB RSS; max GUI stall {stall:.1f} ms (GUI thread busy at most "
                    f"{probe.max_busy_ms:.1f} ms) while {arrived:,} new rows arrived at 200/s", "<= 1 s; <= 50 ms"))
    print(f"feed-1m: {opened * 1000:.0f} ms, stall {stall:.1f} ms, {arrived} arrived; worst stall: GUI thread ran "
          f"{probe.worst[1]:.1f} ms, the process {probe.worst[2]:.1f} ms", flush=True)
    window.close()
    pump(app, 0.5)
    ws.close()


def _feed_process(url: str, kind: str, stop, start: int) -> None:
    """200 new rows/s from a process of their own, as production writers are (not a thread of the window)."""
    engine = create_engine(url)
    n = 0
    while not stop.is_set():
        if kind == "notifications":
            add_notifications(engine, 20, start=start + n)
        else:
            add_failed(engine, 20, start=start + n)
        n += 20
        time.sleep(0.1)
    engine.dispose()


def start_feeder(engine, kind: str, start: int):
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    proc = ctx.Process(target=_feed_process, args=(engine.url.render_as_string(hide_password=False), kind, stop,
                                                   start), daemon=True)
    proc.start()
    return stop, proc


def stop_feeder(app, stop, proc) -> None:
    """Stop the writer process, the window's event loop running meanwhile (a join would block it)."""
    stop.set()
    wait(app, lambda: not proc.is_alive(), timeout=60)
    proc.join()


def wait(app, cond, timeout: float = 600.0) -> None:
    end = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > end:
            raise TimeoutError("the window did not get there in time")
        app.processEvents()
        time.sleep(0.001)


def pump(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.001)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--retry", type=int, default=10_000)
    p.add_argument("--feed", type=int, default=1_000_000)
    p.add_argument("--only", choices=("feed", "charts"), help="run only the 1,000,000-row feed case, or only the "
                                                              "two chart cases")
    p.add_argument("--chart-rows", type=int, default=5_000_000)
    p.add_argument("--chart-db", metavar="URL", help="a dispatch database an earlier run seeded and rolled up "
                                                     "(its URL is printed): the 7-day case skips seeding")
    args = p.parse_args()
    import tempfile

    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    from ui.launch import make_application
    from ui.main_window import MainWindow
    from ui.stall import StallProbe

    tmp = Path(tempfile.mkdtemp(prefix="nc-bench-ui-"))
    os.environ.setdefault("NC_DATA_DIR", str(tmp / "data"))
    results: list[tuple[str, str, str]] = []
    t_start = time.perf_counter()
    app = make_application()
    if args.only == "feed":
        try:
            feed_case(app, args.feed, tmp, results)
        finally:
            drop_databases()
        return report(results)
    if args.only == "charts":
        try:
            chart_points_case(app, results)
            chart_range_case(app, args.chart_rows, tmp, results, args.chart_db)
        finally:
            drop_databases()
        return report(results)
    try:
        # first-window -------------------------------------------------------------
        from app.cli import build_parser, open_workspace
        window = MainWindow()
        window.resize(1280, 800)
        window.show()
        window.show_page("failed")
        demo_args = build_parser().parse_args(["--demo"])
        window.ctx.open_workspace(lambda: open_workspace(demo_args))
        page = window.pages["failed"]
        wait(app, lambda: window.ctx.workspace is not None and page.is_loaded() and page.model.rowCount() > 0)
        first = time.perf_counter() - t_start
        results.append(("first-window", f"{first:.2f} s to the demo's Failed & Stuck rows", "—"))
        print(f"first-window: {first:.2f} s", flush=True)
        window.close()
        pump(app, 0.5)

        # failed-open / scroll / live-refresh / retry on MariaDB --------------------------
        print(f"seeding {args.rows:,} failed dispatches …", flush=True)
        ws = dispatch_workspace(args.rows, tmp)
        window, page, opened, before = open_on_page(app, ws, "failed", Qt.Key_4)
        results.append(("failed-open", f"{opened * 1000:.0f} ms to the first screen of {args.rows:,} rows; "
                        f"+{rss_mb() - before:.0f} MB RSS", "<= 1 s"))
        print(f"failed-open: {opened * 1000:.0f} ms, RSS {before:.0f} -> {rss_mb():.0f} MB", flush=True)

        # Load 2,000 rows, then page down through them with a repaint per step.
        while page.model.rowCount() < 2000 and page.model.more:
            page.model.fetchMore()
            wait(app, lambda: not page.model.loading)
        bar = page.table.verticalScrollBar()
        frames = []
        bar.setValue(0)
        for _ in range(60):
            t = time.perf_counter()
            bar.setValue(bar.value() + bar.pageStep())
            page.table.viewport().repaint()
            frames.append((time.perf_counter() - t) * 1000)
        results.append(("scroll", f"mean {sum(frames) / len(frames):.1f} ms, max {max(frames):.1f} ms per frame",
                        "<= 16 ms"))
        print(f"scroll: mean {sum(frames) / len(frames):.1f} ms, max {max(frames):.1f} ms", flush=True)
        bar.setValue(0)

        # Live: 200 new failed rows/s for 20 s, the list refreshed in place every second.
        engine = ws.engine("dispatch")
        stop, feeder = start_feeder(engine, "failed", 10_000_000)
        pump(app, 3)        # the writer process is up and writing before the probe starts
        probe = StallProbe().start()
        end = time.perf_counter() + 20
        while time.perf_counter() < end:  # 20 s of 200 new rows/s, the list refreshed every second
            page.refresh_top()
            pump(app, 1.0)
        stop_feeder(app, stop, feeder)
        live = probe.stop()
        results.append(("live-refresh", f"max GUI stall {live:.1f} ms (busy at most {probe.max_busy_ms:.1f} ms) "
                        "at 200 new failed rows/s", "<= 50 ms"))
        print(f"live-refresh: max stall {live:.1f} ms ({probe.ticks} ticks)", flush=True)

        # Retry all matching, limited to --retry items by the filter of one error text.
        add_failed(engine, args.retry, start=20_000_000, error="Lock wait timeout exceeded (bench)")
        page.filter_edit.setText("(bench)")
        page.reload()
        wait(app, page.is_loaded)
        probe = StallProbe().start()
        t0 = time.perf_counter()
        page.retry_all()
        wait(app, lambda: page.confirm is not None)
        QTest.keyClick(page.confirm, Qt.Key_Return)
        wait(app, lambda: page.running is None and page.summary.text().startswith("Retried"))
        took = time.perf_counter() - t0
        stall = probe.stop()
        results.append((f"retry-{args.retry}", f"max GUI stall {stall:.1f} ms (busy at most {probe.max_busy_ms:.1f} "
                        f"ms); {took:.1f} s from the click to the "
                        f"results ({page.summary.text().split(' Press')[0]})", "<= 50 ms"))
        print(f"retry: max stall {stall:.1f} ms, {took:.1f} s: {page.summary.text()}", flush=True)
        window.close()
        pump(app, 0.5)
        ws.close()
        feed_case(app, args.feed, tmp, results)
        chart_points_case(app, results)
        chart_range_case(app, args.chart_rows, tmp, results, args.chart_db)
    finally:
        drop_databases()
    return report(results)


def chart_points_case(app, results: list) -> None:
    """A 1,000,000-point curve in a 1280x720 plot: first frame and redraw, downsampled and clipped or not."""
    import numpy as np
    import pyqtgraph as pg

    from ui.charts import light_curve
    n = 1_000_000
    x = np.arange(n, dtype=np.float64)
    rng = np.random.default_rng(1)
    figures = {}
    for mode in ("downsampled", "plain"):
        widget = pg.PlotWidget()
        widget.resize(1280, 720)
        widget.show()
        pump(app, 0.3)
        y = np.cumsum(rng.normal(size=n))
        t = time.perf_counter()
        if mode == "downsampled":   # as the Charts page's curves are
            curve = light_curve(widget.getPlotItem(), x, y, pen=pg.mkPen("#2563eb", width=1))
        else:
            curve = widget.plot(x, y, pen=pg.mkPen("#2563eb", width=1))
        widget.viewport().repaint()
        first = (time.perf_counter() - t) * 1000
        redraws = []
        for _ in range(10):
            y[-1000:] += 1.0          # the newest points change, as a live refresh changes them
            t = time.perf_counter()
            curve.setData(x, y)
            widget.viewport().repaint()
            redraws.append((time.perf_counter() - t) * 1000)
        figures[mode] = (first, sorted(redraws)[len(redraws) // 2], max(redraws))
        widget.close()
        pump(app, 0.2)
    d, p = figures["downsampled"], figures["plain"]
    results.append(("charts-1m", f"downsampled + clip-to-view: first frame {d[0]:.1f} ms, redraw median {d[1]:.1f} ms "
                    f"(max {d[2]:.1f}); plain: first frame {p[0]:.1f} ms, redraw median {p[1]:.1f} ms "
                    f"(max {p[2]:.1f})", "<= 30 ms"))
    print(f"charts-1m: {figures}", flush=True)


def add_completed(engine, n: int, span: dt.timedelta) -> None:
    """``n`` completed dispatches spread over ``span`` back from now, latencies lognormal (~200 ms median)."""
    import numpy as np
    rng = np.random.default_rng(7)
    kinds = ("comment_added", "status_changed", "other")
    with engine.begin() as conn:
        now = db_now(conn)
    step = span / n
    for lo in range(0, n, 20_000):
        hi = min(n, lo + 20_000)
        ms = rng.lognormal(5.3, 0.8, size=hi - lo)
        with engine.begin() as conn:
            conn.execute(insert(dispatch_log), [
                {"dispatch_id": f"{kinds[i % 3]}:{1 + i % ISSUES}:{i}:4", "dispatch_type": kinds[i % 3],
                 "issue_id": 1 + i % ISSUES, "comment_id": i, "actor_user_id": 4, "status": "completed",
                 "created_at": now - span + step * i,
                 "completed_at": now - span + step * i + dt.timedelta(milliseconds=float(ms[i - lo])),
                 "error_message": None} for i in range(lo, hi)])


def chart_range_case(app, rows: int, tmp: Path, results: list, reuse: str | None = None) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    from app.read.rollup import catch_up
    from ui.stall import StallProbe
    t0 = time.perf_counter()
    if reuse:
        ws = url_workspace(reuse, tmp)
        seeded = 0.0
        with ws.engine("dispatch").connect() as conn:
            rows = int(conn.execute(select(func.count()).select_from(dispatch_log)).scalar_one())
        print(f"reusing {reuse} ({rows:,} dispatches)", flush=True)
    else:
        print(f"seeding {rows:,} completed dispatches over 7 days …", flush=True)
        ws = dispatch_workspace(0, tmp)
        add_completed(ws.engine("dispatch"), rows, dt.timedelta(days=7))
        seeded = time.perf_counter() - t0
        print(f"seeded {ws.config.source('dispatch').url} in {seeded:.0f} s", flush=True)
    t0 = time.perf_counter()
    read = catch_up(ws, "dispatch", max_seconds=3600)
    rolled = time.perf_counter() - t0
    print(f"rollup caught up on {read:,} rows in {rolled:.0f} s", flush=True)
    settle_server()
    from ui.main_window import MainWindow
    window = MainWindow()
    window.resize(1280, 800)
    window.show()
    window.ctx.open_workspace(lambda: ws)
    wait(app, lambda: window.ctx.workspace is not None)
    QTest.keyClick(window, Qt.Key_5, Qt.ControlModifier)
    page = window.pages["charts"]
    wait(app, page.is_loaded)
    page.bucket_box.setCurrentIndex(page.bucket_box.findData(60))
    wait(app, page.is_loaded)
    figures = []
    for key in ("7d", "24h", "7d", "1h", "7d"):
        probe = StallProbe().start()
        gen = page.generation
        t = time.perf_counter()
        QTest.mouseClick(page.range_button[key], Qt.LeftButton)
        # Drawn: the load's first step (latency, settled, failures, stuck) is on every plot.
        wait(app, lambda g=gen: page.drawn_generation > g)
        drawn = (time.perf_counter() - t) * 1000
        wait(app, page.is_loaded)
        done = (time.perf_counter() - t) * 1000
        probe.stop()
        if key == "7d":
            figures.append((drawn, done, probe.max_stall_ms, probe.max_busy_ms))
    med = sorted(f[0] for f in figures)[len(figures) // 2]
    results.append(("charts-7d", f"7 d at 1-minute buckets (10,080 per series, 3 series) over {rows:,} rows: range "
                    f"change to drawn median {med:.0f} ms (runs: {', '.join(f'{f[0]:.0f}' for f in figures)} ms; "
                    f"with the duplicate scan {', '.join(f'{f[1]:.0f}' for f in figures)} ms); max GUI stall "
                    f"{max(f[2] for f in figures):.1f} ms (busy at most {max(f[3] for f in figures):.1f} ms); "
                    f"{'a reused database' if reuse else f'seeding {seeded:.0f} s'}, rollup catch-up {rolled:.0f} s", "<= 500 ms"))
    print(f"charts-7d: {figures}", flush=True)
    window.close()
    pump(app, 0.5)
    ws.close()


def report(results: list[tuple[str, str, str]]) -> int:
    print("\n| case | figure | target |\n|---|---|---|")
    for name, figure, target in results:
        print(f"| {name} | {figure} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
