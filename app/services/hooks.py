"""What a source's services do, as one record: ``SourceActions``.

The registry (``app.registry``) states what the console knows of a source;
this record adds what the service layer does with it, so retry and cleanup
look a source's work up (``app.services.by_source.actions_for``) instead of
naming sources. Each per-source module (``app.services.cart``,
``.dispatch``, ``.orders``) builds its own record as ``ACTIONS``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection

from .. import registry

if TYPE_CHECKING:
    from ..bootstrap import Workspace
    from ..read.models import DuplicateGroup

Outcome = tuple[str, "str | None"]


# retry_item(workspace, item_id, *, operator, action_id[, transport]) -> (outcome, detail); a failure raises
# its sentence. retry_items: the same for a list of ids, one (outcome, detail) each, a failure as
# ("failed", sentence). The sources that send mail (registry: sends_mail) also take ``transport``.
RetryItem = Callable[..., Outcome]
RetryItems = Callable[..., list[Outcome]]


# The rows (documents) a cleanup holds, grouped again by the source's built-in rule;
# SQL sources regroup on the cleanup's own connection, inside its transaction.
Regroup = Callable[["Workspace", list[dict[str, Any]], "Connection | None"], "list[DuplicateGroup]"]


@dataclass(frozen=True)
class SourceActions:
    source: registry.Source
    retry_item: RetryItem                 # one item: (outcome, detail); a failure raises its sentence
    regroup: Regroup
    retry_items: RetryItems | None = None  # a chunk of items at once, one (outcome, detail) each
    retry_batch: int = 1                   # the chunk size retry hands ``retry_items``
    archive_table: Table | None = None     # where cleanup archives duplicates from (SQL sources)
    archive_collection: str | None = None  # the same, in the order store
    # Kept in step with rows a cleanup archived / an undo restored (the console's own indexes).
    on_archived: Callable[[Connection, list[dict[str, Any]]], object] | None = None
    on_restored: Callable[[Connection, list[Any]], object] | None = None
