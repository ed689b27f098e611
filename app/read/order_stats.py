"""Order stage latency (first image of a stage → its first admin email) as per-bucket histograms.

The order store keeps no rollup: each call reads the orders changed since
the window's start (the ``nc_updated_at_id`` index, in keyset pages) and
their ``email_log`` documents. That holds because an order's
``updated_at`` is never earlier than a stage's first image (the first image
moves the status, which stamps ``updated_at``; ``order_reads._orders_missed``
relies on the same). A stage counts in the bucket of its first image:

* emailed: its latency (the earliest email of the stage's event, minus the
  first image) goes into the bucket's histogram (``app.read.histogram``,
  the same bins as the SQL rollups, so the same error bound);
* not emailed, and the first image older than the grace period: missed
  (failed); younger: still in progress, counted nowhere.

The cost grows with the orders changed in the window (one read of each and
of their emails), not with the store's size.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from .common import batched, epoch_seconds
from .histogram import NBINS, bin_index, latency_ms
from .order_docs import STAGES, first_image_at, stage_images

PAGE = 2000


def _pages(db: Any, start: dt.datetime) -> Iterable[list[dict[str, Any]]]:
    """Orders with ``updated_at`` at or after ``start``, oldest change first, a keyset page at a time."""
    projection = {"id": 1, "images": 1, "created_at": 1, "updated_at": 1}
    after: dict[str, Any] | None = None
    while True:
        cond: dict[str, Any] = {"updated_at": {"$gte": start}}
        if after is not None:
            cond = {"$and": [cond, {"$or": [{"updated_at": {"$gt": after["updated_at"]}},
                                             {"updated_at": after["updated_at"], "_id": {"$gt": after["_id"]}}]}]}
        page = list(db["orders"].find(cond, projection=projection, sort=[("updated_at", 1), ("_id", 1)],
                                      limit=PAGE))
        if not page:
            return
        yield page
        if len(page) < PAGE:
            return
        after = page[-1]


def _first_emails(db: Any, ids: list[Any]) -> dict[tuple[Any, str], dt.datetime]:
    """The earliest ``email_log`` time of each (order id, event) of ``ids``."""
    first: dict[tuple[Any, str], dt.datetime] = {}
    for part in batched(ids, 1000):
        for d in db["email_log"].find({"order_id": {"$in": part}}, projection={"order_id": 1, "event": 1,
                                                                               "sent_at": 1}):
            at = d.get("sent_at")
            if not isinstance(at, dt.datetime):
                continue
            key = (d.get("order_id"), str(d.get("event")))
            if key not in first or at < first[key]:
                first[key] = at
    return first


def order_stage_hists(db: Any, start: dt.datetime, end: dt.datetime, bucket_seconds: int, start_b: int, n: int,
                      now: dt.datetime, grace: dt.timedelta
                      ) -> tuple[dict[str, npt.NDArray[np.int64]], dict[str, npt.NDArray[np.int64]]]:
    """({stage: n × NBINS latency histograms}, {stage: n missed counts}) of the stages whose first image
    falls in ``start``..``end``; bucket b holds first images whose epoch second // ``bucket_seconds``
    is ``start_b + b``."""
    values: dict[str, tuple[list[int], list[float]]] = {s: ([], []) for s in STAGES}
    missed: dict[str, npt.NDArray[np.int64]] = {s: np.zeros(n, dtype=np.int64) for s in STAGES}
    for page in _pages(db, start):
        firsts: list[tuple[Any, str, str, dt.datetime]] = []
        for order in page:
            for stage, (event, _before, _after) in STAGES.items():
                images = stage_images(order, stage)
                if not images:
                    continue
                at = first_image_at(order, images)
                if at is not None and start <= at < end:
                    firsts.append((order.get("id"), stage, event, at))
        if not firsts:
            continue
        emails = _first_emails(db, sorted({f[0] for f in firsts}, key=str))
        for oid, stage, event, at in firsts:
            b = epoch_seconds(at) // bucket_seconds - start_b
            if not 0 <= b < n:
                continue
            sent = emails.get((oid, event))
            if sent is not None:
                values[stage][0].append(b)
                values[stage][1].append(max(latency_ms(sent, at), 0.0))
            elif now - at >= grace:
                missed[stage][b] += 1
    hists: dict[str, npt.NDArray[np.int64]] = {}
    for stage, (buckets, ms) in values.items():
        h = np.zeros(n * NBINS, dtype=np.int64)
        if buckets:
            np.add.at(h, np.asarray(buckets, dtype=np.int64) * NBINS + bin_index(ms), 1)
        hists[stage] = h.reshape(n, NBINS)
    return hists, missed
