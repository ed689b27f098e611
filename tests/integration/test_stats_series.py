"""``stats`` on real MariaDB through the real entry point, and the order store's stage latency.

Every bucket's count, failed, stuck and duplicates are exact; its percentiles are within the
histograms' stated error of numpy's inverted-CDF percentiles of the seeded latencies.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from app.read import series as S
from app.read.histogram import HIST_ABSOLUTE_ERROR_MS, HIST_RELATIVE_ERROR
from tests.chart_data import seed_cart, seed_dispatch, seed_orders

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"source", "series", "bucket_start", "count", "p50_ms", "p95_ms", "p99_ms", "failed", "failure_rate",
          "stuck", "duplicates"}


def run_main(args, tmp_path):
    env = {**os.environ, "NC_DATA_DIR": str(tmp_path / "data"), "NC_NO_KEYRING": "1"}
    env.pop("NC_CONFIG", None)
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=ROOT)


def write_config(tmp_path, ws) -> Path:
    body = "".join(f'[sources.{s}]\nurl = "{ws.config.source(s).url}"\n' for s in ("cart", "dispatch"))
    path = tmp_path / "console.toml"
    path.write_text(body, encoding="utf-8")
    return path


@pytest.fixture
def seeded(workspace_factory, mariadb_database):
    ws = workspace_factory(cart=mariadb_database("cart"), dispatch=mariadb_database("dispatch"))
    return ws, seed_dispatch(ws.engine("dispatch")), seed_cart(ws.engine("cart"))


def _exact_by_minute(pairs):
    per: dict[str, list[float]] = defaultdict(list)
    for created, ms in pairs:
        per[created.replace(second=0, microsecond=0).isoformat()].append(ms)
    return per


def _check_percentiles(points, exact):
    for p in points:
        values = exact.get(p["bucket_start"], [])
        assert p["count"] == len(values), p
        if not values:
            assert p["p50_ms"] is None and p["p95_ms"] is None and p["p99_ms"] is None
            continue
        want = np.percentile(values, [50, 95, 99], method="inverted_cdf")
        for got, w in zip((p["p50_ms"], p["p95_ms"], p["p99_ms"]), want):
            assert abs(got - w) <= max(HIST_RELATIVE_ERROR * w, HIST_ABSOLUTE_ERROR_MS) + 1e-6, (p, want)


def test_stats_json_gives_every_bucket_of_every_series_with_the_chart_numbers(seeded, tmp_path):
    ws, dispatch, cart = seeded
    cfg = write_config(tmp_path, ws)
    proc = run_main(["--config", str(cfg), "stats", "--range", "1h", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    points = json.loads(proc.stdout)
    assert all(set(p) == FIELDS for p in points)
    by = defaultdict(list)
    for p in points:
        by[(p["source"], p["series"])].append(p)
    assert sorted(by) == [("cart", "cart"), ("dispatch", "comment_added"), ("dispatch", "other"),
                          ("dispatch", "status_changed")]
    assert all(len(v) == 60 for v in by.values())       # 1 h of 1-minute buckets, empty ones too
    for kind, pairs in dispatch.items():
        _check_percentiles(by[("dispatch", kind)], _exact_by_minute(pairs))
    _check_percentiles(by[("cart", "cart")], _exact_by_minute(cart))

    def total(key, field):
        return sum(p[field] for p in by[key])
    assert total(("dispatch", "comment_added"), "failed") == 6
    assert total(("dispatch", "status_changed"), "stuck") == 3
    assert total(("dispatch", "comment_added"), "duplicates") == 2      # three copies of one notification
    assert (total(("cart", "cart"), "failed"), total(("cart", "cart"), "stuck")) == (5, 2)
    assert total(("cart", "cart"), "duplicates") == 3
    for p in points:
        rate = p["failed"] / (p["count"] + p["failed"]) if p["count"] + p["failed"] else None
        assert p["failure_rate"] == rate

    # --csv: the same rows; text: a summary per source.
    proc = run_main(["--config", str(cfg), "stats", "--range", "1h", "--csv", "--source", "cart"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    busy = [r for r in rows if r["count"] != "0"]
    want = {p["bucket_start"]: p for p in by[("cart", "cart")] if p["count"]}
    assert {r["bucket_start"] for r in busy} == set(want)
    for r in busy:
        assert float(r["p95_ms"]) == want[r["bucket_start"]]["p95_ms"]
    proc = run_main(["--config", str(cfg), "stats", "--range", "24h"], tmp_path)
    assert proc.returncode == 0 and "dispatch: 150 settled" in proc.stdout and "cart: 93 settled" in proc.stdout


@pytest.mark.parametrize("args, sentence", [
    (["--range", "2h"], "error: --range takes 1h, 24h or 7d, not '2h'."),
    (["--bucket", "10s"], "error: --bucket takes 1m, 5m or 1h, not '10s'."),
    (["--range", "7d", "--bucket", "1m", "--source", "cart", "--json", "--csv"], None),
])
def test_a_bad_range_or_bucket_is_one_sentence_and_exit_2(seeded, tmp_path, args, sentence):
    ws, _d, _c = seeded
    proc = run_main(["--config", str(write_config(tmp_path, ws)), "stats", *args], tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    if sentence:
        assert lines[0] == sentence
    else:
        assert "not allowed with argument" in lines[0]


def test_order_stage_latency_counts_the_first_email_after_the_first_image(workspace_factory, order_store_url):
    ws = workspace_factory(orders=order_store_url)
    stages = seed_orders(ws.orders())
    now = ws.orders().now()
    st = S.source_stats(ws, "orders", S.Window.ending(now, dt.timedelta(hours=1), 60))
    assert list(st.series) == ["pickup", "delivery"]
    pts = [p.to_json() for p in st.points()]
    for stage, pairs in stages.items():
        _check_percentiles([p for p in pts if p["series"] == stage], _exact_by_minute(pairs))
    s = st.summary()
    assert (s.settled, s.failed, s.stuck) == (len(stages["pickup"]) + len(stages["delivery"]), 2, 0)
    assert s.duplicates == 2 and st.series["pickup"].duplicates.sum() == 2
    exact = np.percentile([ms for pairs in stages.values() for _t, ms in pairs], 95, method="inverted_cdf")
    assert abs(s.p95_ms - exact) <= HIST_RELATIVE_ERROR * exact
