"""The Charts page and the Overview in the window, on MariaDB (and the order store): ranges, series,
the crosshair, the exports against ``stats --json``, live refresh without stalls, and the Overview's links.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QImage

from app.read import series as S
from tests.chart_data import seed_cart, seed_dispatch, seed_orders
from tests.helpers import open_console
from tests.ui.pdf_text import pdf_text
from ui.charts import format_ms, format_rate, format_value
from ui.stall import StallProbe

ROOT = Path(__file__).resolve().parents[2]
WAIT = 60_000


@pytest.fixture
def ws(workspace_factory, mariadb_database):
    ws = workspace_factory(cart=mariadb_database("cart"), dispatch=mariadb_database("dispatch"))
    seed_dispatch(ws.engine("dispatch"))
    seed_cart(ws.engine("cart"))
    return ws


def stats_json(ws, tmp_path, *args) -> list[dict]:
    body = "".join(f'[sources.{s}]\nurl = "{ws.config.source(s).url}"\n' for s in ("cart", "dispatch"))
    cfg = tmp_path / "console.toml"
    cfg.write_text(body, encoding="utf-8")
    env = {**os.environ, "NC_DATA_DIR": str(tmp_path / "cli-data"), "NC_NO_KEYRING": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "--config", str(cfg), "stats", *args, "--json"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def busy(points) -> dict[tuple[str, str, str], dict]:
    """The buckets that hold anything, by (source, series, start): windows read a minute apart agree on them."""
    return {(p["source"], p["series"], p["bucket_start"]): p for p in points
            if p["count"] or p["failed"] or p["stuck"] or p["duplicates"]}


def loaded(qtbot, page) -> None:
    qtbot.waitUntil(page.is_loaded, timeout=WAIT)


def test_ranges_pick_their_bucket_and_series_toggle_from_the_list_and_the_legend(qtbot, ws):
    window, page = open_console(qtbot, ws, "charts", timeout=WAIT)
    assert (page.window.n, page.window.bucket_seconds) == (288, 300)          # 24 h of 5 minutes
    qtbot.mouseClick(page.range_button["1h"], Qt.LeftButton)
    loaded(qtbot, page)
    assert (page.window.n, page.window.bucket_seconds) == (60, 60)
    qtbot.mouseClick(page.range_button["7d"], Qt.LeftButton)
    loaded(qtbot, page)
    assert (page.window.n, page.window.bucket_seconds) == (168, 3600)
    page.bucket_box.setCurrentIndex(page.bucket_box.findData(60))           # 7 days of minutes, on request
    loaded(qtbot, page)
    assert (page.window.n, page.window.bucket_seconds) == (10080, 60)
    page.bucket_box.setCurrentIndex(0)
    qtbot.mouseClick(page.range_button["1h"], Qt.LeftButton)
    loaded(qtbot, page)

    chart = page.chart
    key = ("dispatch", "other")
    p95 = chart.curves[(*key, "p95_ms")]
    assert p95.isVisible() and chart.legend.getLabel(chart.toggles[key]) is not None
    assert not chart.curves[(*key, "p50_ms")].isVisible()
    page.pct_boxes["p50_ms"].setChecked(True)
    assert chart.curves[(*key, "p50_ms")].isVisible()
    # The series list takes the series out of every plot and out of the legend.
    page.items[key].setCheckState(0, Qt.Unchecked)
    assert not p95.isVisible() and not chart.curves[(*key, "count")].isVisible()
    assert chart.legend.getLabel(chart.toggles[key]) is None
    page.items[key].setCheckState(0, Qt.Checked)
    assert p95.isVisible()
    # A click on the series' legend entry hides it (the entry stays, greyed), a second shows it again.
    sample = next(s for s, label in chart.legend.items if s.item is chart.toggles[key])
    view = chart.widget
    pos = view.mapFromScene(sample.mapToScene(sample.boundingRect().center()))
    qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=pos)
    qtbot.waitUntil(lambda: not p95.isVisible(), timeout=5000)
    assert chart.legend.getLabel(chart.toggles[key]) is not None and not chart.curves[(*key, "stuck")].isVisible()
    qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=pos)
    qtbot.waitUntil(p95.isVisible, timeout=5000)


def test_the_crosshair_reads_every_visible_series_at_the_bucket_under_the_mouse(qtbot, ws, tmp_path):
    window, page = open_console(qtbot, ws, "charts", timeout=WAIT)
    qtbot.mouseClick(page.range_button["1h"], Qt.LeftButton)
    loaded(qtbot, page)
    page.select_series({("dispatch", "comment_added"), ("cart", "cart")})
    buf = page.chart.buffers[("cart", "cart")]
    i = int(next(j for j in range(buf.n) if buf.ys("count")[j] > 0))
    x = float(buf.xs()[i]) + 30
    # The mouse over the latency plot at that bucket.
    vb = page.chart.plots["latency"].getViewBox()
    y = sum(vb.viewRange()[1]) / 2
    view = page.chart.widget
    pos = view.mapFromScene(vb.mapViewToScene(QPointF(x, y)))
    qtbot.mouseMove(view.viewport(), pos)
    qtbot.waitUntil(lambda: bool(page.chart.readout), timeout=5000)
    rows = dict(page.chart.readout)
    start = S.EPOCH + dt.timedelta(seconds=float(buf.xs()[i]))
    assert rows["bucket"] == f"{start:%Y-%m-%d %H:%M} UTC · 1 min"
    qtbot.waitUntil(lambda: f"{start:%Y-%m-%d %H:%M}" in page.readout_label.text(), timeout=5000)
    # Every visible curve of both series is read out, with the numbers stats --json gives for that bucket.
    points = busy(stats_json(ws, tmp_path, "--range", "1h"))
    cart = points[("cart", "cart", start.isoformat())]
    assert rows["Cart p95"] == format_ms(cart["p95_ms"])
    assert rows["Cart settled"] == format_value("count", cart["count"])
    assert rows["Cart failure rate"] == ("–" if cart["failure_rate"] is None else
                                         format_value("failure_pct", cart["failure_rate"] * 100))
    assert rows["Cart duplicates"] == format_value("duplicates", cart["duplicates"])
    names = {k for k in rows if k != "bucket"}
    assert names == {f"{s} {m}" for s in ("Cart", "Dispatch comment_added")
                     for m in ("p95", "settled", "failure rate", "stuck", "duplicates")}
    # Out of the window: no crosshair.
    assert page.crosshair_at(page.window.end + dt.timedelta(hours=1)) == []


def test_png_csv_and_pdf_exports_hold_the_numbers_stats_json_gives(qtbot, ws, tmp_path):
    window, page = open_console(qtbot, ws, "charts", timeout=WAIT)
    qtbot.mouseClick(page.range_button["1h"], Qt.LeftButton)
    loaded(qtbot, page)
    png, csv_path, pdf = tmp_path / "c.png", tmp_path / "c.csv", tmp_path / "c.pdf"
    page.export_png(str(png))
    qtbot.waitUntil(lambda: page.exported == ("PNG", str(png)), timeout=WAIT)
    img = QImage(str(png))
    assert not img.isNull() and img.width() >= 600 and img.height() >= 400
    page.export_csv(str(csv_path))
    qtbot.waitUntil(lambda: page.exported == ("CSV", str(csv_path)), timeout=WAIT)
    page.export_pdf(str(pdf))
    qtbot.waitUntil(lambda: page.exported == ("PDF", str(pdf)), timeout=WAIT)
    cli = stats_json(ws, tmp_path, "--range", "1h")

    with csv_path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(S.POINT_FIELDS)
    assert len(rows) == 4 * 60       # every bucket of the four selected series
    drawn = busy([{**r, **{k: (None if r[k] == "" else float(r[k])) for k in
                           ("count", "p50_ms", "p95_ms", "p99_ms", "failed", "failure_rate", "stuck", "duplicates")}}
                  for r in rows])
    want = busy(cli)
    assert set(drawn) == set(want) and len(want) > 40
    for k, p in want.items():
        for f in ("count", "p50_ms", "p95_ms", "p99_ms", "failed", "failure_rate", "stuck", "duplicates"):
            assert drawn[k][f] == p[f], (k, f, drawn[k][f], p[f])

    text = pdf_text(pdf)
    assert "Notification delivery report" in text and "UTC" in text
    for source, label in (("cart", "Cart"), ("dispatch", "Dispatch")):
        pts = [p for p in cli if p["source"] == source]
        settled, failed = sum(p["count"] for p in pts), sum(p["failed"] for p in pts)
        dups = sum(p["duplicates"] for p in pts)
        summary = S.range_stats(ws, [source], dt.timedelta(hours=1), 60)[0].summary()
        assert (summary.settled, summary.failed, summary.duplicates) == (settled, failed, dups)
        row = text.split(f"\n{label}\n", 1)[1].split("\n")[:9]
        assert row == [f"{settled:,}", format_ms(summary.p50_ms), format_ms(summary.p95_ms),
                       format_ms(summary.p99_ms), f"{failed:,}", format_rate(failed / (settled + failed)),
                       f"{sum(p['stuck'] for p in pts):,}", f"{dups:,}", format_rate(dups / settled)]


def test_range_changes_and_live_refreshes_never_stall_the_window(qtbot, ws):
    window, page = open_console(qtbot, ws, "charts", timeout=WAIT)
    probe = StallProbe().start()
    for key in ("1h", "7d", "24h", "1h"):
        qtbot.mouseClick(page.range_button[key], Qt.LeftButton)
        loaded(qtbot, page)
    before = page.window
    for _ in range(4):
        ticks = page.live_label.text()
        page.refresh_live()
        qtbot.waitUntil(lambda t=ticks: page.live_label.text() != t and not page.ctx.tasks.is_running("charts-live")
                        and not page.chart.drawing(), timeout=WAIT)
    probe.stop()
    assert page.window.bucket_seconds == before.bucket_seconds and page.window.n == before.n
    assert probe.ticks > 50 and probe.max_busy_ms <= 50, \
        f"the GUI thread was busy {probe.max_busy_ms:.1f} ms (answered {probe.max_stall_ms:.1f} ms late)"
    print(f"charts: GUI thread busy at most {probe.max_busy_ms:.1f} ms, stall {probe.max_stall_ms:.1f} ms")


def test_pan_loads_the_range_in_view_as_a_fixed_range(qtbot, ws):
    window, page = open_console(qtbot, ws, "charts", timeout=WAIT)
    qtbot.mouseClick(page.range_button["1h"], Qt.LeftButton)
    loaded(qtbot, page)
    x0, x1 = page.chart.x_range()
    gen = page.generation
    page.chart.plots["throughput"].setXRange(x0 - 3 * 3600, x1 - 3 * 3600, padding=0)   # as a drag would
    qtbot.waitUntil(lambda: page.generation > gen and page.is_loaded(), timeout=WAIT)
    assert not page.follow and page.range_button["custom"].isChecked()
    assert abs((page.window.start - S.EPOCH).total_seconds() - (x0 - 3 * 3600)) < 60
    assert page.chart.buffers[("cart", "cart")].ys("count").sum() == 0     # nothing was sent 3 h ago
    assert page.live_label.text() == "Fixed range"
    # Every plot shows the same time (linked by hand, not by screen position).
    ranges = {k: tuple(round(v) for v in p.getViewBox().viewRange()[0]) for k, p in page.chart.plots.items()}
    assert len(set(ranges.values())) == 1


def test_overview_cards_show_the_last_24_hours_and_their_numbers_open_filtered_pages(qtbot, workspace_factory,
                                                                                    mariadb_database, order_store_url):
    ws = workspace_factory(cart=mariadb_database("cart"), dispatch=mariadb_database("dispatch"),
                           orders=order_store_url)
    seed_dispatch(ws.engine("dispatch"))
    seed_cart(ws.engine("cart"))
    seed_orders(ws.orders())
    window, page = open_console(qtbot, ws, "overview", timeout=WAIT)
    qtbot.waitUntil(lambda: all(c.health is not None for c in page.cards.values()), timeout=WAIT)
    want = {s.source: s.summary() for s in S.range_stats(ws, ["orders", "cart", "dispatch"], dt.timedelta(hours=24),
                                                         300)}
    for source, card in page.cards.items():
        s = want[source]
        shown = card.figures()
        assert shown["failed"] == f"{s.failed:,}" and shown["duplicates"] == f"{s.duplicates:,}"
        assert shown["latency"] == format_ms(s.p95_ms)
        assert shown["stuck"] == (f"{s.stuck:,}" if card.kinds["stuck"] else "–")
    assert page.cards["dispatch"].figures()["failed"] == "6" and page.cards["cart"].figures()["stuck"] == "2"
    assert page.cards["orders"].figures()["failed"] == "2"        # missed stage emails
    # In place: a refresh changes the text of the same labels.
    label = page.cards["cart"].links["failed"]
    page.refresh_health()
    qtbot.waitUntil(lambda: page.health_loaded == page.health_generation, timeout=WAIT)
    assert page.cards["cart"].links["failed"] is label

    page.cards["cart"].links["failed"].linkActivated.emit("failed")
    failed = window.pages["failed"]
    assert window.current_page() == "failed"
    qtbot.waitUntil(failed.is_loaded, timeout=WAIT)
    assert failed.current_filters()["source"] == "cart" and failed.current_filters()["kind"] == "failed"
    assert failed.model.rowCount() == 5 and {r.item.source for r in failed.model.rows} == {"cart"}

    page.cards["orders"].links["failed"].linkActivated.emit("failed")
    qtbot.waitUntil(failed.is_loaded, timeout=WAIT)
    assert failed.current_filters()["kind"] == "missed" and failed.model.rowCount() == 2

    window.show_page("overview")
    page.cards["dispatch"].links["duplicates"].linkActivated.emit("duplicates")
    dups = window.pages["duplicates"]
    assert window.current_page() == "duplicates"
    qtbot.waitUntil(dups.is_loaded, timeout=WAIT)
    assert dups.source_box.currentData() == "dispatch" and dups.range_box.currentData() == dt.timedelta(days=1)

    window.show_page("overview")
    page.cards["orders"].links["latency"].linkActivated.emit("latency")
    charts = window.pages["charts"]
    assert window.current_page() == "charts"
    qtbot.waitUntil(charts.is_loaded, timeout=WAIT)
    assert charts.chart.selected == {("orders", "pickup"), ("orders", "delivery")}
    assert charts.range_key == "24h" and charts.window.bucket_seconds == 300
