"""Retry: failed or stuck items of one source, by ids or every item matching a filter.

``--all`` takes a fixed snapshot of the matching ids first, then processes
them in bounded batches; each item gets exactly one outcome (retried,
skipped with a reason, failed with the error) and one item's failure never
stops the rest. The per-source work lives in ``app.services.<source>`` as
``retry_item(workspace, item_id, *, operator, action_id) -> (outcome, detail)``
and re-checks every guarantee in the database, so repeating a retry (the same
action taken over after a crash, or two consoles at once) is safe.
"""
from __future__ import annotations

import importlib
from typing import Callable

from ..errors import ConsoleError, UsageError
from ..schema_setup import require_schema
from ..sources import describe_db_error
from .actions import require_role, run_action

BATCH_SIZE = 100
SNAPSHOT_LIMIT = 100_000
HANDLERS = {"dispatch": "app.services.dispatch", "cart": "app.services.cart", "orders": "app.services.orders"}
# What ``--all`` picks up per source (FailedItem.kind values).
RETRYABLE_KINDS = {"dispatch": ("failed", "stuck"), "cart": ("failed", "stuck"), "orders": ("missed",)}


def _handler(source: str):
    if source not in HANDLERS:
        raise UsageError(f"Unknown source '{source}': choose orders, cart or dispatch.")
    return importlib.import_module(HANDLERS[source])


def _item_id(source: str, raw) -> int:
    """Every retryable item is named by an integer key: the log row id, or the order id."""
    text = str(raw).strip()
    what = "order id" if source == "orders" else f"{source} row id"
    if not text.isdigit() or not 0 < int(text) < 2 ** 63:
        raise UsageError(f"The {what} {raw!r} is not a positive whole number.")
    return int(text)


def retry(workspace, source: str, *, ids: list[str] | None = None, all_matching: bool = False,
          filter_text: str | None = None, action_id: str | None = None,
          progress: Callable[[int, int], None] | None = None) -> dict:
    if bool(ids) == bool(all_matching):
        raise UsageError("Give either --id ID (one or more) or --all, not both and not neither.")
    if filter_text and not all_matching:
        raise UsageError("--filter goes with --all.")
    module = _handler(source)
    params = {"ids": [str(i) for i in ids or []]} if ids else {"all": True, "filter": filter_text or ""}
    require_role(workspace, "retry", source, params, action_id)
    ids = [_item_id(source, i) for i in (ids or [])]
    params = {"ids": ids} if ids else params
    require_schema(workspace, source)

    def body(ctx) -> dict:
        if all_matching:
            from ..read.failures import failed_items
            items = failed_items(workspace, source, filter_text=filter_text, limit=SNAPSHOT_LIMIT)
            snapshot = list(dict.fromkeys(int(i.id) for i in items if i.kind in RETRYABLE_KINDS[source]))
        else:
            snapshot = list(dict.fromkeys(ids))
        retried, skipped, failed = [], [], []
        done = 0
        for start in range(0, len(snapshot), BATCH_SIZE):
            batch = snapshot[start:start + BATCH_SIZE]
            records = []
            for item_id in batch:
                try:
                    outcome, detail = module.retry_item(workspace, str(item_id), operator=ctx.operator,
                                                        action_id=ctx.action_id)
                except ConsoleError as exc:
                    outcome, detail = "failed", exc.message
                except Exception as exc:  # one item's failure never stops the rest
                    outcome, detail = "failed", describe_db_error(source, exc) if hasattr(exc, "orig") \
                        else f"{type(exc).__name__}: {exc}"
                records.append({"id": item_id, "outcome": outcome, "detail": detail})
                if outcome == "retried":
                    retried.append(item_id)
                elif outcome == "skipped":
                    skipped.append({"id": item_id, "reason": detail})
                else:
                    failed.append({"id": item_id, "error": detail})
            ctx.record(records)
            ctx.heartbeat()
            done += len(batch)
            if progress:
                progress(done, len(snapshot))
        return {"source": source, "snapshot": len(snapshot), "retried": len(retried), "retried_ids": retried,
                "skipped": skipped, "failed": failed}

    return run_action(workspace, kind="retry", source=source, params=params, action_id=action_id, body=body)
