"""Audit: every action from any console, newest first, its per-item outcomes, and Undo for cleanups.

Undo (Ctrl+Z or the button; admin) asks first, then restores what the
selected cleanup archived through the service layer (a child process for
the SQL sources), which refuses anything that cannot be undone with one
sentence shown as a banner.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QPushButton,
    QSplitter,
)

from app import registry
from app.services.audit import audit_entries, audit_position, find_action
from app.services.ledger import AuditEntry, AuditPosition

from ..action_process import ActionProcess
from ..list_page import EXPORT_LIMIT, PAGE_SIZE, ListPage, muted, plain_table, titled_panel
from ..table_model import Column, RowTableModel
from ..tasks import TaskError

KINDS = ("retry", "cleanup", "undo", "simulate")


def _counts(e: AuditEntry) -> str:
    # What happened, in words: "retried 12, skipped 3" (zero counts and the snapshot size say nothing here).
    return ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in e.counts().items() if v and k != "snapshot")


COLUMNS = [
    Column("started", "Started (UTC)", lambda e: f"{e.started_at:%Y-%m-%d %H:%M:%S}" if e.started_at else "",
           width=150),
    Column("kind", "Action", lambda e: e.kind, width=80),
    Column("source", "Source", lambda e: registry.source(e.source).label, width=80),
    Column("operator", "Operator", lambda e: e.operator, width=170),
    Column("role", "Role", lambda e: e.role, width=70),
    Column("status", "Status", lambda e: e.status, width=80, tooltip=lambda e: e.message),
    Column("counts", "Counts", _counts, width=250, tooltip=lambda e: e.message or _counts(e)),
    Column("action_id", "Action id", lambda e: e.action_id, width=220),
]

ITEM_COLUMNS = [
    Column("item", "Item", lambda i: i["item_id"], width=110, align=Qt.AlignRight | Qt.AlignVCenter),
    Column("outcome", "Outcome", lambda i: i["outcome"], width=90),
    Column("detail", "Detail", lambda i: i.get("detail") or "", width=600, tooltip=lambda i: i.get("detail")),
]


def query_audit(workspace, filters: dict[str, Any], cursor: AuditPosition | None
                ) -> tuple[list[AuditEntry], AuditPosition | None]:
    """A page of entries, filtered and paged (keyset on time and id) in each ledger's query."""
    entries, _problems = audit_entries(workspace, source=filters.get("source"), limit=PAGE_SIZE + 1,
                                       text=filters.get("text"), kind=filters.get("kind"), before=cursor)
    page = entries[:PAGE_SIZE]
    more = len(entries) > PAGE_SIZE
    return page, (audit_position(page[-1]) if more and page else None)


def export_audit(workspace, filters: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    entries, _problems = audit_entries(workspace, source=filters.get("source"), limit=EXPORT_LIMIT,
                                       text=filters.get("text"), kind=filters.get("kind"))
    header = ["started_at", "finished_at", "kind", "source", "operator", "role", "status", "counts", "action_id",
              "message"]
    return header, [[e.started_at, e.finished_at, e.kind, e.source, e.operator, e.role, e.status, _counts(e),
                     e.action_id, e.message] for e in entries]


def run_undo(workspace, entry: AuditEntry) -> dict[str, Any]:
    if registry.source(entry.source).is_sql:
        return ActionProcess().run(workspace.config, "undo", entry.action_id)
    return ActionProcess().run_here(workspace, "undo", entry.action_id)


class AuditPage(ListPage):
    key = "audit"
    title = "Audit"
    subtitle = "Every action taken from any console: who, when, what, and what came of it."
    icon_name = "audit"
    filter_hint = "Filter by operator or action id — Ctrl+F"
    columns = COLUMNS
    row_key = staticmethod(lambda e: (e.source, e.action_id))
    noun = "actions"
    query = staticmethod(query_audit)
    export_rows = staticmethod(export_audit)

    def build_filters(self, row: QHBoxLayout) -> None:
        self.source_box = self.add_source_filter(row)
        self.kind_box = self.add_choice(row, "kindFilter", [("All actions", None)] + [(k, k) for k in KINDS])

    def build_actions(self, row: QHBoxLayout) -> None:
        self.undo_button = QPushButton("Undo cleanup…")
        self.undo_button.setObjectName("primary")
        self.undo_button.clicked.connect(self.undo_selected)
        row.addWidget(self.undo_button)
        self.shortcut(QKeySequence.Undo, self.undo_selected)
        self.busy = False
        self._update_buttons([])

    def build_lower(self, splitter: QSplitter) -> None:
        panel, v = titled_panel("Per-item outcomes of the selected action")
        self.items_note = muted("Select an action.")
        v.addWidget(self.items_note)
        self.items = RowTableModel(ITEM_COLUMNS, None, self)
        self.item_table = plain_table("auditItems", self.items)
        v.addWidget(self.item_table, 1)
        splitter.addWidget(panel)
        splitter.setSizes([480, 240])

    def current_filters(self) -> dict[str, Any]:
        return {"text": self.filter_edit.text().strip() or None, "source": self.source_box.currentData(),
                "kind": self.kind_box.currentData()}

    def detail_of(self, row: AuditEntry) -> dict[str, Any]:
        out = row.to_json()
        out.pop("items", None)
        out["outcome"] = row.outcome
        return out

    def on_workspace(self, workspace) -> None:
        super().on_workspace(workspace)
        self._update_buttons(self.selected_rows())

    # Selection: the action's items, read in a task ---------------------------------
    def selection_changed(self, rows: list[AuditEntry]) -> None:
        self._update_buttons(rows)
        if len(rows) != 1 or self.ctx.workspace is None:
            self.items.reset([], False)
            self.items_note.setText("Select an action." if not rows else f"{len(rows)} actions selected.")
            return
        entry = rows[0]
        self.items_note.setText("Loading…")

        def shown(full: AuditEntry | None) -> None:
            if self.selected_rows() != [entry]:
                return
            items = full.items if full is not None else []
            self.items.reset(items, False)
            self.items_note.setText(f"{len(items):,} items" if items else "This action recorded no items.")
        self.ctx.tasks.submit(find_action, self.ctx.reader, entry.action_id, key="audit-items", on_done=shown,
                              on_error=lambda err: self.items_note.setText(err.message))

    # Undo ----------------------------------------------------------------------------
    def _role_allows(self) -> tuple[bool, str]:
        return self.role_allows("undo", "Undo")

    def _undoable(self, rows: list[AuditEntry]) -> AuditEntry | None:
        if len(rows) == 1 and rows[0].kind == "cleanup" and rows[0].status in ("succeeded", "failed"):
            return rows[0]
        return None

    def _update_buttons(self, rows: list[AuditEntry]) -> None:
        ok, why = self._role_allows()
        target = self._undoable(rows)
        self.undo_button.setEnabled(ok and not self.busy and target is not None)
        self.undo_button.setToolTip(why if not ok else
                                    "Restore what the selected cleanup archived (Ctrl+Z)" if target else
                                    "Select one cleanup to undo it")

    def undo_selected(self) -> None:
        ok, why = self._role_allows()
        if not ok:
            self.ctx.notify(why, "warning")
            return
        entry = self._undoable(self.selected_rows())
        if entry is None or self.busy:
            return
        archived = (entry.outcome or {}).get("archived")
        what = f"{archived:,} archived rows" if isinstance(archived, int) else "what it archived"
        self.ask("undoConfirm", "Undo cleanup", f"Undo cleanup {entry.action_id}?",
                 f"{registry.source(entry.source).label}: {what} go back to their tables, with the same ids and "
                 "values. A row whose id was taken since stays archived and is named.", "Undo",
                 lambda: self._run_undo(entry))

    def _run_undo(self, entry: AuditEntry) -> None:
        ws = self.ctx.workspace
        if ws is None:
            return
        self.busy = True
        self._update_buttons(self.selected_rows())
        self.items_note.setText(f"Undoing {entry.action_id}…")

        def done(out: dict[str, Any]) -> None:
            self.busy = False
            self.last_undo = out
            note = " (already undone: the stored outcome)" if out.get("replayed") else ""
            self.ctx.notify(f"Restored {out.get('restored', 0):,} rows archived by {entry.action_id}{note}.", "info")
            self.reload()

        def failed(err: TaskError) -> None:
            self.busy = False
            self._update_buttons(self.selected_rows())
            self.ctx.notify(err.message, "error")
        self.ctx.tasks.submit(run_undo, ws, entry, on_done=done, on_error=failed)
