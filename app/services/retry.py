"""Retry: failed or stuck items of one source, by ids or every item matching a filter.

``--all`` takes a fixed snapshot of the matching ids first, then processes
them on a bounded pool of ``[actions] pool_size`` workers (default 4), each
item on its own connection with its own guard, recording outcomes in
batches of 100 in snapshot order; each item gets exactly one outcome (retried,
skipped with a reason, failed with the error) and one item's failure never
stops the rest. The per-source work is the source's ``retry_item`` (and
``retry_items`` for chunks; ``app.services.by_source``): ``(outcome, detail)``
per item, re-checking every guarantee in the database, so repeating a retry
(the same action taken over after a crash, or two consoles at once) is safe.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, cast

from .. import registry
from ..errors import ConsoleError, UsageError
from ..schema_setup import require_schema
from ..sources import describe_db_error
from ..sqlutil import utcnow
from .actions import ActionContext, run_action
from .by_source import actions_for
from .ledger import ledger_for
from .mail import transport_from_config
from .roles import require_role
from .tokens import ids_digest

if TYPE_CHECKING:
    from ..bootstrap import Workspace

BATCH_SIZE = 100
SNAPSHOT_LIMIT = 100_000
# Items handed to the pool ahead of the one being recorded, per worker.
AHEAD_PER_WORKER = 4


class _Workers:
    """The bounded pool a retry runs its items on.

    Each worker thread works on its own pooled connection (``retry_item``
    opens one per item from the engine, sized for the pool) and, for the
    sources that send email, keeps one mail session for all its items (one
    SMTP connection instead of one per email; the session reconnects when
    the server drops it). Results come back in snapshot order, so the audit
    log and the progress callback read exactly as a sequential run would.
    """

    def __init__(self, workspace: Workspace, source: str, size: int):
        self.workspace = workspace
        self.source = source
        self.size = size
        self._local = threading.local()
        self._sessions = ExitStack()
        self._lock = threading.Lock()

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] | None = getattr(self._local, "kwargs", None)
        if kw is None:
            kw = {}
            if registry.source(self.source).sends_mail:
                opening = transport_from_config(self.workspace).session()
                kw["transport"] = opening.__enter__()
                with self._lock:
                    self._sessions.push(opening.__exit__)
            self._local.kwargs = kw
        return kw

    def ordered(self, fn: Callable[[list[int]], list[dict[str, Any]]], items: list[int],
                chunk: int, stop: Callable[[], bool] | None = None) -> Iterator[dict[str, Any]]:
        """``fn(chunk of items)`` on the pool for every chunk; the records yielded in the items' order.

        Once ``stop()`` holds, no chunk starts any more: the chunks already
        running finish and their records are yielded (each item done gets its
        outcome recorded), the queued ones are dropped.
        """
        chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]
        with ExitStack() as stack:
            stack.callback(self._sessions.close)
            pool = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix=f"retry-{self.source}")
            # On the way out (done, or the action taken over): start nothing new, wait for what runs.
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)
            pending: deque[Future[list[dict[str, Any]]]] = deque()
            it = iter(chunks)
            ahead = self.size * AHEAD_PER_WORKER
            for part in it:
                pending.append(pool.submit(fn, part))
                if len(pending) >= ahead:
                    break
            while pending:
                if stop is not None and stop():
                    # Drop what has not started; what runs is waited for, in order.
                    pending = deque(f for f in pending if not f.cancel())
                    it = iter(())
                if not pending:
                    break
                records = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(fn, nxt))
                yield from records


def retry(workspace: Workspace, source: str, *, ids: list[str] | None = None, all_matching: bool = False,
          filter_text: str | None = None, action_id: str | None = None,
          progress: Callable[[int, int], None] | None = None, snapshot_ids: list[int] | None = None,
          cancel: Callable[[], bool] | None = None, kind: str | None = None) -> dict[str, Any]:
    """Retry ``ids``, or every retryable item matching ``filter_text`` (``all_matching``).

    ``snapshot_ids``: every item matching the filter, as the caller counted
    them when it asked the operator (the window's confirmation): exactly
    those are worked on, whatever arrived since. The ledger keeps their
    count and digest, not the ids (the items' outcomes name each one).
    ``cancel()``: checked between chunks; once it holds no further item
    starts, the items in hand finish, and the outcome says how many were
    not attempted. With a filter (``--all`` or a snapshot) the outcome also
    counts the matching items the retry left alone (``left_alone``: they
    arrived after the snapshot). ``kind``: with a snapshot, the one failed-list
    kind the window's filter chose (the items left alone are counted in it).
    """
    if snapshot_ids is not None:
        if ids:
            raise UsageError("Give either item ids or a snapshot of the matching items, not both.")
        all_matching = True
    if bool(ids) == bool(all_matching):
        raise UsageError("Give either --id ID (one or more) or --all, not both and not neither.")
    if filter_text and not all_matching:
        raise UsageError("--filter goes with --all.")
    src = registry.source(source)
    hooks = actions_for(src.name)
    params: dict[str, Any] = ({"ids": [str(i) for i in ids or []]} if ids
                              else {"all": True, "filter": filter_text or ""})
    require_role(workspace, "retry", source, params, action_id)
    item_ids = [src.parse_item_id(i) for i in (ids or [])]
    params = {"ids": item_ids} if item_ids else params
    counted: list[int] | None = None
    if snapshot_ids is not None:
        counted = list(dict.fromkeys(src.parse_item_id(i) for i in snapshot_ids))
        params = dict(params, snapshot=ids_digest(counted))
        if kind is not None:
            params["kind"] = kind
    require_schema(workspace, source)

    def matching_now() -> list[int]:
        return _retryable_ids(workspace, source, kind, filter_text)

    def body(ctx: ActionContext) -> dict[str, Any]:
        if counted is not None:
            snapshot = counted
        elif all_matching:
            snapshot = matching_now()
        else:
            snapshot = list(dict.fromkeys(item_ids))
        workers = _Workers(workspace, source, workspace.config.actions.pool_size)

        def failure(exc: Exception) -> tuple[str, str]:
            if isinstance(exc, ConsoleError):
                return "failed", exc.message
            return "failed", describe_db_error(source, exc) if hasattr(exc, "orig") \
                else f"{type(exc).__name__}: {exc}"

        def one(item_id: int) -> tuple[str, str | None]:
            try:
                return hooks.retry_item(workspace, str(item_id), operator=ctx.operator, action_id=ctx.action_id,
                                        **workers.kwargs())
            except Exception as exc:  # one item's failure never stops the rest
                return failure(exc)

        def chunk_of(items: list[int]) -> list[dict[str, Any]]:
            """A source that retries many items together (each still with its own guard and
            outcome) gets them in chunks; an error of the whole chunk sends each item alone."""
            if cancel is not None and cancel():
                return []   # cancelled before this chunk began: its items are not attempted
            outcomes: list[tuple[str, str | None]] | None = None
            if len(items) > 1 and hooks.retry_items is not None:
                try:
                    outcomes = hooks.retry_items(workspace, [str(i) for i in items], operator=ctx.operator,
                                                 action_id=ctx.action_id, **workers.kwargs())
                except Exception:  # noqa: BLE001 - each item again on its own, below
                    outcomes = None
            if outcomes is None:
                outcomes = [one(i) for i in items]
            return [{"id": i, "outcome": o, "detail": d} for i, (o, d) in zip(items, outcomes)]

        retried: list[int] = []
        skipped: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        records: list[dict[str, Any]] = []
        done = 0

        def flush() -> None:
            nonlocal done, records
            _name_earlier_retries(workspace, source, records, ctx.action_id)
            for record in records:
                item_id, outcome, detail = record["id"], record["outcome"], record["detail"]
                if outcome == "retried":
                    retried.append(item_id)
                elif outcome == "skipped":
                    skipped.append({"id": item_id, "reason": detail})
                else:
                    failed.append({"id": item_id, "error": detail})
            ctx.record(records)
            ctx.heartbeat()
            done += len(records)
            records = []
            if progress:
                progress(done, len(snapshot))

        for record in workers.ordered(chunk_of, snapshot, hooks.retry_batch, stop=cancel):
            records.append(record)
            if len(records) == BATCH_SIZE or done + len(records) == len(snapshot):
                flush()
        if records:  # cancelled inside a batch: what was done is recorded all the same
            flush()
        result: dict[str, Any] = {
            "source": source, "snapshot": len(snapshot), "retried": len(retried), "retried_ids": retried,
            "skipped": skipped, "failed": failed, "cancelled": done < len(snapshot),
            "not_attempted": len(snapshot) - done}
        if all_matching:
            taken = set(snapshot)
            result["left_alone"] = sum(1 for i in matching_now() if i not in taken)
        return result

    return run_action(workspace, kind="retry", source=source, params=params, action_id=action_id, body=body)


def _retryable_ids(workspace: Workspace, source: str, kind: str | None, filter_text: str | None) -> list[int]:
    """Ids of every item a retry --all may pick up (of ``kind`` when given), newest first."""
    from ..read.failures import failed_items
    src = registry.source(source)
    # Never "superseded" (the cart was already emailed) nor anything else not to send again.
    kinds = [k for k in src.retryable_kinds if kind is None or k == kind]
    if not kinds:
        return []
    items = failed_items(workspace, source, kinds=kinds, filter_text=filter_text, limit=SNAPSHOT_LIMIT)
    # FailedItem.id is typed object; the retryable items are log rows and orders, with integer ids.
    return list(dict.fromkeys(int(cast(int, i.id)) for i in items if i.kind in kinds))


def _name_earlier_retries(workspace: Workspace, source: str, records: list[dict[str, Any]], action_id: str) -> None:
    """A skipped item that an earlier console retry sent says who did it and when.

    Two consoles retrying the same items: the second one's items are skipped
    by the guards ("already completed", "already sent"); the ledger names
    the console that sent them, so the operator (and the audit) reads
    "already retried by ana@ws2 at 10:42 UTC (already completed)".
    """
    skipped = [r for r in records if r["outcome"] == "skipped"]
    if not skipped:
        return
    try:
        earlier = ledger_for(workspace, source).last_retries([str(r["id"]) for r in skipped], exclude_action=action_id)
    except Exception:  # noqa: BLE001 - the plain reason stands when the ledger cannot be read
        return
    for record in skipped:
        last = earlier.get(str(record["id"]))
        if last is not None:
            when = ""
            if last.at is not None:
                same_day = last.at.date() == utcnow().date()
                when = f" at {last.at:%H:%M} UTC" if same_day else f" at {last.at:%Y-%m-%d %H:%M} UTC"
            record["detail"] = f"already retried by {last.operator}{when} ({record['detail']})"


# Ids per action when retrying a selection (the ledger keeps a selection's ids in its parameters).
SELECTION_CHUNK = 2000


def retry_plan(workspace: Workspace, ids: dict[str, list[int]], *, snapshot: bool, filter_text: str | None = None,
               kind: str | None = None, progress: Callable[[int, int], None] | None = None,
               cancel: Callable[[], bool] | None = None) -> list[dict[str, Any]]:
    """Retry several sources' items one source after the other: the window's Retry.

    ``snapshot``: ``ids`` are the items a filter selected when the operator
    was asked (``retry(snapshot_ids=...)``); otherwise a selection, retried
    by ids in actions of at most ``SELECTION_CHUNK``. ``progress(done,
    total)`` counts over all sources; after ``cancel()`` holds, the sources
    not begun report every item as not attempted.
    """
    total = sum(len(v) for v in ids.values())
    results: list[dict[str, Any]] = []
    base = 0

    def step_from(offset: int) -> Callable[[int, int], None]:
        return lambda done, _total: progress(offset + done, total) if progress else None

    for source, items in ids.items():
        if cancel is not None and cancel():
            results.append({"source": source, "snapshot": len(items), "retried": 0, "retried_ids": [],
                            "skipped": [], "failed": [], "cancelled": True, "not_attempted": len(items)})
        elif snapshot:
            results.append(retry(workspace, source, snapshot_ids=items, filter_text=filter_text, kind=kind,
                                 progress=step_from(base), cancel=cancel))
        else:
            for i in range(0, len(items), SELECTION_CHUNK):
                part = items[i:i + SELECTION_CHUNK]
                results.append(retry(workspace, source, ids=[str(x) for x in part], progress=step_from(base + i),
                                     cancel=cancel))
        base += len(items)
    return results


def retryable_snapshot(workspace: Workspace, sources: list[str] | None = None, *, kind: str | None = None,
                       filter_text: str | None = None) -> dict[str, list[int]]:
    """Every retryable item the filter selects, per source: the count the window's Retry all promises."""
    names = sources if sources is not None else [s for s in registry.NAMES if workspace.has(s)]
    found = {name: _retryable_ids(workspace, name, kind, filter_text) for name in names}
    return {name: ids for name, ids in found.items() if ids}
