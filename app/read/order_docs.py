"""How an order document holds its image stages: the stages and their email events, a stage's
images whatever the document's shape, and the stage's first-image time.

Pure functions of one document; the missed list (``order_reads``), the order statistics
(``order_stats``), the feeds and the order services all read documents through them.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

# An order's image stages: stage -> (admin email event, order status before, status after).
STAGES: dict[str, tuple[str, str, str]] = {
    "pickup": ("pickup_images_added", "DRIVER_ARRIVED", "PICKUP_IMAGES_ADDED"),
    "delivery": ("delivery_images_added", "DELIVERY_ARRIVED", "DELIVERY_IMAGES_ADDED"),
}


def stage_images(order: dict[str, Any], stage: str) -> list[dict[str, Any]]:
    """The images of one stage as a list, whatever the document's shape.

    Current documents hold a list; legacy ones a single image object or null.
    """
    images = order.get("images") or {}
    if not isinstance(images, dict):
        return []
    value = images.get(stage)
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if v is not None]
    return []


def first_image_at(order: dict[str, Any], images: list[dict[str, Any]]) -> dt.datetime | None:
    times: list[dt.datetime] = [i["uploaded_at"] for i in images if isinstance(i, dict)
                                and isinstance(i.get("uploaded_at"), dt.datetime)]
    if times:
        return min(times)
    # A legacy image without a time: the order's own last change is the best evidence.
    for f in ("updated_at", "created_at"):
        at = order.get(f)
        if isinstance(at, dt.datetime):
            return at
    return None
