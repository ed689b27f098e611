"""Duplicates: the groups that break an "only once" rule, why they probably happened, and cleanup.

Clean up (Delete for the selected groups, or every group shown) first runs
the service's preview for exactly those groups (identified by their kept
member), shows the counts per source with sample rows, and on Enter
archives the extra copies through the service layer (a child process for
the SQL sources). Every archived row can be put back from the Audit page.
"""
from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTextBrowser,
)

from app import registry
from app.read.duplicates import scan_duplicates
from app.read.models import DuplicateGroup
from app.read.why import explain
from app.services.cleanup import cleanup
from app.services.ledger import ledger_for

from ..action_process import ActionProcess
from ..list_page import PAGE_SIZE, ListPage, chosen_sources, muted, titled_panel
from ..table_model import Column
from ..tasks import TaskError
from .notifications import RANGES

SAMPLE_GROUPS = 5


@dataclass(frozen=True)
class DupRow:
    group: DuplicateGroup
    why: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group.source, self.group.rule, str(self.group.keep_id))


def _key_text(g: DuplicateGroup) -> str:
    return ", ".join(f"{k}={v}" for k, v in g.key.items() if k != "event_detail" and v is not None)


def _when(value) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else ""


COLUMNS = [
    Column("source", "Source", lambda r: registry.source(r.group.source).label, width=72),
    Column("why", "Why (likely cause)", lambda r: r.why, width=400, tooltip=lambda r: r.why),
    Column("count", "Copies", lambda r: r.group.count, width=62, align=Qt.AlignRight | Qt.AlignVCenter),
    Column("extra", "Extra", lambda r: r.group.count - 1, width=54, align=Qt.AlignRight | Qt.AlignVCenter),
    Column("key", "Key", lambda r: _key_text(r.group), width=200, tooltip=lambda r: _key_text(r.group)),
    Column("last", "Last (UTC)", lambda r: _when(r.group.last_at), width=140),
    Column("first", "First (UTC)", lambda r: _when(r.group.first_at), width=140),
    Column("rule", "Rule", lambda r: r.group.rule, width=170),
    Column("_mark", "Result", lambda r: "", width=90),
]


def _console_retries(workspace, groups: list[DuplicateGroup]) -> dict[tuple[str, str], str]:
    """Members (cart rows; for orders the copies of a retried order's email) the console's retry sent."""
    out: dict[tuple[str, str], str] = {}
    by_source: dict[str, dict[str, list[str]]] = {}
    for g in groups:
        if not registry.source(g.source).sends_mail:
            continue
        if registry.source(g.source).is_sql:   # the members are the retried rows themselves
            for m in g.member_ids:
                by_source.setdefault(g.source, {})[str(m)] = [str(m)]
        else:                                   # the retried item is the order; its later emails are the copies
            later = [str(m) for m in g.member_ids[1:]]
            by_source.setdefault(g.source, {}).setdefault(str(g.key.get("order_id")), []).extend(later)
    for source, items in by_source.items():
        try:
            last = ledger_for(workspace, source).last_retries(list(items))
        except Exception:  # noqa: BLE001 - the Why column falls back to the timing evidence
            continue
        for item, lr in last.items():
            for member in items[item]:
                out[(source, member)] = f"{lr.action_id} by {lr.operator}"
    return out


def query_groups(workspace, filters: dict[str, Any], cursor: int | None) -> tuple[list[DupRow], int | None]:
    shown = cursor or 0
    groups: list[DuplicateGroup] = []
    for source in chosen_sources(workspace, filters):
        groups += scan_duplicates(workspace, source, since=filters.get("since"), filter_text=filters.get("text"),
                                  limit=shown + PAGE_SIZE + 1)
    groups.sort(key=lambda g: (g.last_at is not None, g.last_at), reverse=True)
    page = groups[shown:shown + PAGE_SIZE]
    retried = _console_retries(workspace, page)
    window = dt.timedelta(minutes=workspace.config.thresholds.cart_in_progress_minutes)
    rows = []
    per_source: dict[str, dict[str, str]] = {}
    for (source, member), action in retried.items():
        per_source.setdefault(source, {})[member] = action
    for g in page:
        rows.append(DupRow(g, explain(g, in_progress=window, console_retries=per_source.get(g.source, {}))))
    return rows, (shown + len(page) if len(groups) > shown + PAGE_SIZE else None)


def export_groups(workspace, filters: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    header = ["source", "rule", "key", "count", "keep_id", "remove_ids", "first_at", "last_at"]
    rows: list[list[Any]] = []
    for source in chosen_sources(workspace, filters):
        for g in scan_duplicates(workspace, source, since=filters.get("since"), filter_text=filters.get("text")):
            rows.append([g.source, g.rule, _key_text(g), g.count, g.keep_id, " ".join(map(str, g.remove_ids)),
                         g.first_at, g.last_at])
    return header, rows


def preview(workspace, keep: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    """The service's dry run for exactly the chosen groups, per source."""
    return {source: cleanup(workspace, source, dry_run=True, keep_ids=ids) for source, ids in keep.items()}


def apply_cleanup(workspace, keep: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for source, ids in keep.items():
        if registry.source(source).is_sql:
            out[source] = ActionProcess().run(workspace.config, "cleanup", source, ids)
        else:
            out[source] = ActionProcess().run_here(workspace, "cleanup", source, ids)
    return out


def members_html(g: DuplicateGroup) -> str:
    """The members side by side: one column per member, differing fields highlighted, the kept one marked."""
    fields: list[str] = []
    for m in g.evidence:
        fields += [k for k in m if k not in fields]
    head = "".join(
        f"<th>{'kept' if str(m.get('id')) == str(g.keep_id) else 'a cleanup archives'}<br>{html.escape(str(m.get('id')))}</th>"
        for m in g.evidence)
    body = []
    for f in fields:
        values = [str(m.get(f, "")) for m in g.evidence]
        differs = len(set(values)) > 1
        cells = "".join(f"<td style='{'background:#fef3c7;' if differs else ''}'>{html.escape(v)}</td>" for v in values)
        body.append(f"<tr><th align='left'>{html.escape(f)}</th>{cells}</tr>")
    key = html.escape(_key_text(g))
    return (f"<p><b>{html.escape(g.rule)}</b> · {key}</p><table border='1' cellspacing='0' cellpadding='4'>"
            f"<tr><th></th>{head}</tr>{''.join(body)}</table>")


class DuplicatesPage(ListPage):
    key = "duplicates"
    title = "Duplicates"
    subtitle = "Sends that broke an \"only once\" rule, grouped by business key, with the likely cause."
    icon_name = "duplicates"
    filter_hint = "Filter by key or member (literal, on the server) — Ctrl+F"
    columns = COLUMNS
    row_key = staticmethod(lambda r: r.key)
    noun = "groups"
    query = staticmethod(query_groups)
    export_rows = staticmethod(export_groups)

    def build_filters(self, row: QHBoxLayout) -> None:
        self.source_box = self.add_source_filter(row)
        self.range_box = self.add_choice(row, "rangeFilter", RANGES, index=2)   # the last 24 hours

    def show_filtered(self, source: str | None = None, since: dt.timedelta | None = None) -> None:
        """The groups of one source over ``since``, as the Overview's links open them."""
        self.set_choices({self.source_box: source, self.range_box: since})

    def build_actions(self, row: QHBoxLayout) -> None:
        self.clean_button = QPushButton("Clean up selected…")
        self.clean_button.setObjectName("primary")
        self.clean_button.clicked.connect(self.clean_selected)
        self.clean_all_button = QPushButton("Clean up all shown…")
        self.clean_all_button.setObjectName("secondary")
        self.clean_all_button.clicked.connect(self.clean_all_shown)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setMaximumWidth(200)
        self.progress.hide()
        row.addWidget(self.clean_button)
        row.addWidget(self.clean_all_button)
        row.addWidget(self.progress)
        self.shortcut(QKeySequence.Delete, self.clean_selected)
        self.busy = False
        self._update_buttons([])

    def build_lower(self, splitter: QSplitter) -> None:
        panel, v = titled_panel("Members of the selected group, side by side (differing fields highlighted)")
        self.summary = muted()
        self.members = QTextBrowser()
        self.members.setObjectName("groupMembers")
        v.addWidget(self.summary)
        v.addWidget(self.members, 1)
        splitter.addWidget(panel)
        splitter.setSizes([430, 290])
        # The members panel shows a group's fields; the JSON pane beside the list would only repeat them.
        self.splitter.widget(1).hide()

    def current_filters(self) -> dict[str, Any]:
        return {"text": self.filter_edit.text().strip() or None, "source": self.source_box.currentData(),
                "since": self.range_box.currentData()}

    def detail_of(self, row: DupRow) -> dict[str, Any]:
        return dict(row.group.to_json(), why=row.why, remove_ids=[str(i) for i in row.group.remove_ids])

    def on_workspace(self, workspace) -> None:
        super().on_workspace(workspace)
        self._update_buttons(self.selected_rows())

    def selection_changed(self, rows: list[DupRow]) -> None:
        self._update_buttons(rows)
        self.members.setHtml(members_html(rows[0].group) if len(rows) == 1 else "")

    # Cleanup ----------------------------------------------------------------------
    def _role_allows(self) -> tuple[bool, str]:
        return self.role_allows("cleanup", "Cleanup")

    @staticmethod
    def _cleanable(rows: list[DupRow]) -> list[DupRow]:
        return [r for r in rows if r.group.rule == registry.source(r.group.source).builtin_rule]

    def _update_buttons(self, rows: list[DupRow]) -> None:
        ok, why = self._role_allows()
        self.clean_button.setEnabled(ok and not self.busy and bool(self._cleanable(rows)))
        self.clean_all_button.setEnabled(ok and not self.busy and self.model.rowCount() > 0)
        self.clean_button.setToolTip(why or "Archive the extra copies of the selected groups (Delete)")
        self.clean_all_button.setToolTip(why or "Archive the extra copies of every group shown")

    def after_load(self) -> None:
        self._update_buttons(self.selected_rows())

    def clean_selected(self) -> None:
        self._clean(self._cleanable(self.selected_rows()), "selected")

    def clean_all_shown(self) -> None:
        self._clean(self._cleanable([self.model.row_at(i) for i in range(self.model.rowCount())]), "shown")

    def _clean(self, rows: list[DupRow], which: str) -> None:
        ok, why = self._role_allows()
        if not ok:
            self.ctx.notify(why, "warning")
            return
        ws = self.ctx.workspace
        if ws is None or not rows or self.busy:
            return
        keep: dict[str, list[Any]] = {}
        for r in rows:
            keep.setdefault(r.group.source, []).append(r.group.keep_id)
        self.summary.setText("Preparing the preview…")

        def previewed(plans: dict[str, dict[str, Any]]) -> None:
            self._ask(keep, plans, which)
        self.ctx.tasks.submit(preview, ws, keep, on_done=previewed, key="dup-preview",
                              on_error=lambda err: self.ctx.notify(err.message, "error"))

    def _ask(self, keep: dict[str, list[Any]], plans: dict[str, dict[str, Any]], which: str) -> None:
        groups = sum(p["group_count"] for p in plans.values())
        archived = sum(p["archived"] for p in plans.values())
        if not archived:
            self.summary.setText("Nothing to clean up: the groups changed since they were listed. Press F5.")
            return
        per_source = "\n".join(f"  {registry.source(s).label}: {p['group_count']:,} groups, archive "
                               f"{p['archived']:,} rows, keep {p['kept']:,}" for s, p in plans.items())
        samples = [f"  {registry.source(s).label} {g['key']}: keep {g['keep_id']}, archive "
                   f"{', '.join(map(str, g['archived_ids']))}" for s, p in plans.items()
                   for g in p["groups"][:SAMPLE_GROUPS]][:SAMPLE_GROUPS]
        info = (f"Per source:\n{per_source}\n\nFor example:\n" + "\n".join(samples) +
                "\n\nThe earliest copy of each group is kept; the archived rows can be put back from the Audit "
                "page (Undo).")
        self.ask("cleanupConfirm", "Clean up duplicates",
                 f"Archive {archived:,} extra copies in {groups:,} {which} groups?", info, "Clean up",
                 lambda: self._apply(keep),
                 lambda: self.summary.setText("Cleanup cancelled before it started; nothing was changed."),
                 icon=QMessageBox.Warning)

    def _apply(self, keep: dict[str, list[Any]]) -> None:
        ws = self.ctx.workspace
        if ws is None:
            return
        self.busy = True
        self.progress.show()
        self._update_buttons(self.selected_rows())
        self.summary.setText("Cleaning up…")

        def done(out: dict[str, dict[str, Any]]) -> None:
            self.busy = False
            self.progress.hide()
            self.last_cleanup = out
            parts = [f"{registry.source(s).label}: archived {o['archived']:,} rows in {o['group_count']:,} groups "
                     f"({o['action_id']})" for s, o in out.items()]
            self.summary.setText("; ".join(parts) + ". Undo from the Audit page.")
            for s, o in out.items():
                self.model.set_mark([(s, registry.source(s).builtin_rule, str(g["keep_id"])) for g in o["groups"]],
                                    "cleaned ✓")
            self._update_buttons(self.selected_rows())

        def failed(err: TaskError) -> None:
            self.busy = False
            self.progress.hide()
            self._update_buttons(self.selected_rows())
            self.summary.setText(f"The cleanup stopped: {err.message}")
            self.ctx.notify(err.message, "error")
        self.ctx.tasks.submit(apply_cleanup, ws, keep, on_done=done, on_error=failed)
