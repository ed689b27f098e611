"""Failed & Stuck: one list over the sources, with retry of one, the selection, or all matching.

Retry all matching counts first: a task takes the snapshot of every
retryable item the filter selects, the confirmation shows the count per
source, and the retry works on exactly those ids (``snapshot_ids``), so the
count is a promise; the results say how many arrived later and were left
alone. Progress and Cancel come from the service's callbacks; the outcomes
per item fill the results panel, and the list marks each row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app import registry
from app.read.failures import error_class, failed_page
from app.read.models import FAILED_KINDS, FailedItem
from app.services.ledger import LastRetry, ledger_for

from ..action_process import ActionProcess
from ..list_page import EXPORT_LIMIT, PAGE_SIZE, ListPage, chosen_sources, muted, plain_table
from ..table_model import Column, RowTableModel
from ..tasks import TaskError

# How often the list looks for new failures while it is shown.
LIVE_REFRESH_MS = 10_000


@dataclass(frozen=True)
class FailedRow:
    item: FailedItem
    last_retry: LastRetry | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.item.source, str(self.item.id))

    @property
    def retryable(self) -> bool:
        return self.item.kind in registry.source(self.item.source).retryable_kinds


def human_age(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 90:
        return f"{s} s"
    if s < 90 * 60:
        return f"{s // 60} min"
    if s < 48 * 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _error_text(r: FailedRow) -> str:
    if r.item.kind == "superseded":   # why it is listed and never retried
        return str(r.item.detail.get("reason") or "superseded")
    return _first_line(r.item.error) or r.item.status


def _last_retry_text(r: FailedRow) -> str:
    lr = r.last_retry
    if lr is None:
        return ""
    return f"{lr.operator} · {lr.at:%Y-%m-%d %H:%M}" if lr.at else lr.operator


COLUMNS = [
    Column("source", "Source", lambda r: registry.source(r.item.source).label, width=76),
    Column("kind", "Kind", lambda r: r.item.kind, width=86),
    Column("id", "Item", lambda r: r.item.id, width=64, align=Qt.AlignRight | Qt.AlignVCenter),
    Column("age", "Age", lambda r: human_age(r.item.age_seconds), sort=lambda r: r.item.age_seconds, width=84,
           align=Qt.AlignRight | Qt.AlignVCenter),
    Column("_mark", "Result", lambda r: "", width=100),
    Column("error", "Error", lambda r: _error_text(r), width=300, tooltip=lambda r: r.item.error),
    Column("attempts", "Tries", lambda r: r.item.attempts, width=50, align=Qt.AlignRight | Qt.AlignVCenter),
    Column("last_retry", "Last retry", _last_retry_text, width=170),
]


def _with_last_retries(workspace, items: list[FailedItem]) -> list[FailedRow]:
    by_source: dict[str, list[str]] = {}
    for i in items:
        by_source.setdefault(i.source, []).append(str(i.id))
    last: dict[tuple[str, str], LastRetry] = {}
    for source, ids in by_source.items():
        try:
            for item_id, lr in ledger_for(workspace, source).last_retries(ids).items():
                last[(source, item_id)] = lr
        except Exception:  # noqa: BLE001 - the list shows without the column rather than not at all
            continue
    return [FailedRow(i, last.get((i.source, str(i.id)))) for i in items]


def _kinds(filters: dict[str, Any]) -> list[str] | None:
    kind = filters.get("kind")
    return [kind] if kind else None


def query_failed(workspace, filters: dict[str, Any], cursor: Any) -> tuple[list[FailedRow], Any]:
    items, nxt = failed_page(workspace, chosen_sources(workspace, filters), kinds=_kinds(filters),
                             filter_text=filters.get("text"), limit=PAGE_SIZE, cursor=cursor)
    return _with_last_retries(workspace, items), nxt


def export_failed(workspace, filters: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    header = ["source", "id", "kind", "status", "age_seconds", "created_at", "attempts", "error"]
    rows: list[list[Any]] = []
    cursor = None
    while len(rows) < EXPORT_LIMIT:
        items, cursor = failed_page(workspace, chosen_sources(workspace, filters), kinds=_kinds(filters),
                                    filter_text=filters.get("text"), limit=5000, cursor=cursor)
        rows += [[i.source, i.id, i.kind, i.status, round(i.age_seconds, 1),
                  i.created_at.isoformat() if i.created_at else None, i.attempts, i.error] for i in items]
        if cursor is None:
            break
    return header, rows


def count_matching(workspace, filters: dict[str, Any]) -> dict[str, list[int]]:
    """The snapshot behind "Retry all matching" (runs in a task): the SQL sources' count in a child process."""
    sources = chosen_sources(workspace, filters)
    sql = [s for s in sources if registry.source(s).is_sql]
    here = [s for s in sources if s not in sql]
    out: dict[str, list[int]] = {}
    if sql:
        out.update(ActionProcess().run(workspace.config, "count_matching",
                                       dict(filters, sources=sql)))
    if here:
        out.update(ActionProcess().run_here(workspace, "count_matching", dict(filters, sources=here)))
    return {s: out[s] for s in sources if s in out}


@dataclass(frozen=True)
class RetryPlan:
    """What a confirmed retry works on: ids per source, and whether they are a filter's snapshot."""

    ids: dict[str, list[int]]
    snapshot: bool
    filter_text: str | None = None
    kind: str | None = None          # the kind filter the snapshot was counted under

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.ids.values())


@dataclass(frozen=True)
class OutcomeRow:
    source: str
    id: object
    outcome: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "id": self.id, "outcome": self.outcome, "reason": self.reason}


@dataclass(frozen=True)
class RetryRun:
    """A finished retry, ready to show: built in the task, so the GUI thread only assigns it."""

    results: list[dict[str, Any]]
    summary: str
    rows: list[OutcomeRow]
    marks: dict[str, list[tuple[str, str]]]


class _Relay(QObject):
    """Carries the worker's progress to the GUI thread (a queued signal)."""

    sig_progress = Signal(int, int)


def run_retry(workspace, plan: RetryPlan, proc: ActionProcess, progress) -> RetryRun:
    """The confirmed retry (runs in a task): the SQL sources' items in a child process, the order store's here."""
    in_child = {s: v for s, v in plan.ids.items() if registry.source(s).is_sql}
    here = {s: v for s, v in plan.ids.items() if s not in in_child}
    offset = sum(len(v) for v in in_child.values())
    results: list[dict[str, Any]] = []
    if in_child:
        results += proc.run(workspace.config, "retry_plan", in_child, snapshot=plan.snapshot,
                            filter_text=plan.filter_text, kind=plan.kind,
                            progress=lambda d, _t: progress(d, plan.total))
    if here:
        results += proc.run_here(workspace, "retry_plan", here, snapshot=plan.snapshot,
                                 filter_text=plan.filter_text, kind=plan.kind,
                                 progress=lambda d, _t: progress(offset + d, plan.total))
    text, rows = summarize(results)
    marks: dict[str, list[tuple[str, str]]] = {}
    for r in rows:
        marks.setdefault(r.outcome, []).append((r.source, str(r.id)))
    return RetryRun(results, text, rows, marks)


def summarize(results: list[dict[str, Any]]) -> tuple[str, list[OutcomeRow]]:
    rows: list[OutcomeRow] = []
    retried = skipped = failed = left = not_attempted = 0
    for out in results:
        src = out["source"]
        rows += [OutcomeRow(src, i, "retried", "") for i in out["retried_ids"]]
        rows += [OutcomeRow(src, s["id"], "skipped", s["reason"]) for s in out["skipped"]]
        rows += [OutcomeRow(src, f["id"], "failed", f["error"]) for f in out["failed"]]
        retried += out["retried"]
        skipped += len(out["skipped"])
        failed += len(out["failed"])
        left += out.get("left_alone", 0)
        not_attempted += out.get("not_attempted", 0)
    total = retried + skipped + failed + not_attempted
    text = f"Retried {retried:,}, skipped {skipped:,}, failed {failed:,} of {total:,}."
    if not_attempted:
        text += f" Cancelled: {not_attempted:,} not attempted."
    if left:
        text += f" {left:,} matching items arrived after the count and were left alone."
    return text, rows


OUTCOME_COLUMNS = [
    Column("source", "Source", lambda r: registry.source(r.source).label, width=90),
    Column("id", "Item", lambda r: r.id, width=90, align=Qt.AlignRight | Qt.AlignVCenter),
    Column("outcome", "Outcome", lambda r: r.outcome, width=90),
    Column("reason", "Reason / error", lambda r: r.reason, width=520, tooltip=lambda r: r.reason or None),
]

RESULT_MARKS = {"retried": "retried ✓", "skipped": "skipped", "failed": "failed again"}


class FailedPage(ListPage):
    key = "failed"
    title = "Failed & Stuck"
    subtitle = "What did not go out: failed sends, dispatches stuck in pending, stage emails that never left."
    icon_name = "failed"
    filter_hint = "Filter by error text (literal, on the server) — Ctrl+F"
    columns = COLUMNS
    row_key = staticmethod(lambda r: r.key)
    noun = "items"
    query = staticmethod(query_failed)
    export_rows = staticmethod(export_failed)

    def build_filters(self, row: QHBoxLayout) -> None:
        self.source_box = self.add_source_filter(row)
        self.kind_box = self.add_choice(row, "kindFilter", [("All kinds", None)] + [(k, k) for k in FAILED_KINDS])

    def build_actions(self, row: QHBoxLayout) -> None:
        self.retry_button = QPushButton("Retry selected")
        self.retry_button.setObjectName("primary")
        self.retry_button.clicked.connect(self.retry_selected)
        self.retry_all_button = QPushButton("Retry all matching…")
        self.retry_all_button.setObjectName("secondary")
        self.retry_all_button.clicked.connect(self.retry_all)
        row.addWidget(self.retry_button)
        row.addWidget(self.retry_all_button)
        self.shortcut(QKeySequence("Ctrl+R"), self.retry_selected)
        self.running: ActionProcess | None = None
        self.relay = _Relay(self)
        self.relay.sig_progress.connect(self._progress)
        self.live = QTimer(self)
        self.live.setInterval(LIVE_REFRESH_MS)
        self.live.timeout.connect(self.refresh_top)
        self._update_buttons([])

    def build_lower(self, splitter: QSplitter) -> None:
        panel = QWidget()
        panel.setObjectName("resultsPanel")
        v = QVBoxLayout(panel)
        v.setContentsMargins(0, 6, 0, 0)
        v.setSpacing(6)
        top = QHBoxLayout()
        title = QLabel("Results")
        title.setObjectName("sectionTitle")
        self.progress = QProgressBar()
        self.progress.setObjectName("retryProgress")
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("secondary")
        self.cancel_button.setToolTip("Stop after the items in hand; what was done is recorded")
        self.cancel_button.clicked.connect(self.cancel_retry)
        self.cancel_button.hide()
        self.summary = muted("No retry yet in this session.")
        top.addWidget(title)
        top.addWidget(self.progress, 1)
        top.addWidget(self.cancel_button)
        v.addLayout(top)
        v.addWidget(self.summary)
        # Outcomes are only shown, never looked up by key (10,000 of them reset in one step).
        self.outcomes = RowTableModel(OUTCOME_COLUMNS, None, self)
        self._pending_outcomes: list[OutcomeRow] = []
        self.outcomes.sig_fetch_more.connect(self._more_outcomes)
        self.outcome_table = plain_table("outcomeTable", self.outcomes)
        v.addWidget(self.outcome_table, 1)
        splitter.addWidget(panel)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([520, 200])

    def current_filters(self) -> dict[str, Any]:
        return {"text": self.filter_edit.text().strip() or None, "source": self.source_box.currentData(),
                "kind": self.kind_box.currentData()}

    def show_filtered(self, source: str | None = None, kind: str | None = None) -> None:
        """The list of one source (and kind), as the Overview's links open it."""
        self.set_choices({self.source_box: source, self.kind_box: kind})

    def detail_of(self, row: FailedRow) -> dict[str, Any]:
        out = row.item.to_json()
        out["error_class"] = error_class(row.item.error)
        out["retryable"] = row.retryable
        out["last_retry"] = row.last_retry.to_json() if row.last_retry else None
        return out

    # Roles ------------------------------------------------------------------------
    def on_workspace(self, workspace) -> None:
        super().on_workspace(workspace)
        self._update_buttons(self.selected_rows())

    def _role_allows(self) -> tuple[bool, str]:
        return self.role_allows("retry", "Retrying")

    def selection_changed(self, rows: list[FailedRow]) -> None:
        self._update_buttons(rows)

    def _update_buttons(self, rows: list[FailedRow]) -> None:
        ok, why = self._role_allows()
        busy = self.running is not None
        retryable = [r for r in rows if r.retryable]
        self.retry_button.setEnabled(ok and not busy and bool(retryable))
        self.retry_all_button.setEnabled(ok and not busy)
        if not ok:
            tip = why
            self.retry_button.setToolTip(tip)
            self.retry_all_button.setToolTip(tip)
        else:
            self.retry_button.setToolTip("Retry the selected items (Ctrl+R)" if retryable or not rows else
                                         "The selected items cannot be retried (superseded: already emailed)")
            self.retry_all_button.setToolTip("Count every retryable item the filter selects, then retry exactly those")

    # Live -------------------------------------------------------------------------
    def on_activated(self) -> None:
        super().on_activated()
        self.live.start()

    def refresh_top(self) -> None:
        """New failures appear at the top; shown rows change in place (selection and scroll stay)."""
        ws = self.ctx.reader
        if ws is None or not self.isVisible() or self.model.loading:
            return
        gen = self.generation
        self.ctx.tasks.submit(query_failed, ws, dict(self.filters), None, key="failed-live",
                              on_done=lambda res: self._merge(gen, res), on_error=lambda _e: None)

    def _merge(self, gen: int, result: tuple[list[FailedRow], Any]) -> None:
        if gen != self.generation:
            return
        rows, cursor = result
        self.model.merge_top(rows, complete=cursor is None)
        self.update_count()

    # Retry --------------------------------------------------------------------------
    def retry_selected(self) -> None:
        ok, why = self._role_allows()
        if not ok:
            self.ctx.notify(why, "warning")
            return
        rows = [r for r in self.selected_rows() if r.retryable]
        if not rows or self.running is not None:
            return
        ids: dict[str, list[int]] = {}
        for r in rows:
            ids.setdefault(r.item.source, []).append(int(r.item.id))  # type: ignore[call-overload]
        skipped = len(self.selected_rows()) - len(rows)
        note = f"\n{skipped:,} selected items cannot be retried (superseded) and are left out." if skipped else ""
        self._ask(RetryPlan(ids, snapshot=False), f"Retry {len(rows):,} selected items?", note)

    def retry_all(self) -> None:
        ok, why = self._role_allows()
        if not ok:
            self.ctx.notify(why, "warning")
            return
        ws = self.ctx.workspace
        if ws is None or self.running is not None:
            return
        filters = self.current_filters()
        self.retry_all_button.setEnabled(False)
        self.summary.setText("Counting the items the filter selects…")

        def counted(snapshot: dict[str, list[int]]) -> None:
            self._update_buttons(self.selected_rows())
            plan = RetryPlan(snapshot, snapshot=True, filter_text=filters.get("text"), kind=filters.get("kind"))
            if not plan.total:
                self.summary.setText("Nothing to retry: no retryable item matches the filter.")
                return
            what = f" matching “{filters['text']}”" if filters.get("text") else ""
            self._ask(plan, f"Retry all {plan.total:,} items{what}?",
                      "\nExactly these items are retried; items that fail after this count are left alone.")

        def failed(err: TaskError) -> None:
            self._update_buttons(self.selected_rows())
            self.summary.setText("The count failed.")
            self.ctx.notify(err.message, "error")
        self.ctx.tasks.submit(count_matching, ws, filters, on_done=counted, on_error=failed, key="failed-count")

    def _ask(self, plan: RetryPlan, question: str, note: str) -> None:
        per_source = "\n".join(f"  {registry.source(s).label}: {len(ids):,}" for s, ids in plan.ids.items())
        self.ask("retryConfirm", "Retry", question, f"Per source:\n{per_source}{note}", "Retry",
                 lambda: self.start_retry(plan),
                 lambda: self.summary.setText("Retry cancelled before it started; nothing was changed."))

    def start_retry(self, plan: RetryPlan) -> None:
        ws = self.ctx.workspace
        if ws is None:
            return
        self.running = ActionProcess()
        self._update_buttons(self.selected_rows())
        self.progress.setRange(0, max(1, plan.total))
        self.progress.setValue(0)
        self.progress.setFormat(f"%v of {plan.total:,}")
        self.progress.show()
        self.cancel_button.setEnabled(True)
        self.cancel_button.show()
        self.summary.setText(f"Retrying {plan.total:,} items…")
        self.outcomes.reset([], False)
        self.ctx.tasks.submit(run_retry, ws, plan, self.running, self.relay.sig_progress.emit,
                              on_done=self._retry_done, on_error=self._retry_failed)

    def cancel_retry(self) -> None:
        if self.running is not None:
            self.running.cancel()
            self.cancel_button.setEnabled(False)
            self.summary.setText("Cancelling: the items in hand finish, then the retry stops…")

    def _progress(self, done: int, total: int) -> None:
        self.progress.setMaximum(max(1, total))
        self.progress.setValue(done)

    def _finish_run(self) -> None:
        self.running = None
        self.progress.hide()
        self.cancel_button.hide()
        self._update_buttons(self.selected_rows())

    def _retry_done(self, run: RetryRun) -> None:
        self._finish_run()
        self.summary.setText(run.summary + " Press F5 to refresh the list.")
        self.last_results = run.results
        # 10,000 outcomes are shown a page at a time as the panel scrolls (one reset of all of them
        # held the GUI thread); the rest wait here.
        self._pending_outcomes = run.rows[PAGE_SIZE:]
        self.outcomes.reset(run.rows[:PAGE_SIZE], bool(self._pending_outcomes))
        for outcome, keys in run.marks.items():
            self.model.set_mark(keys, RESULT_MARKS[outcome])

    def _more_outcomes(self) -> None:
        part, self._pending_outcomes = self._pending_outcomes[:PAGE_SIZE], self._pending_outcomes[PAGE_SIZE:]
        self.outcomes.append(part, bool(self._pending_outcomes))

    def all_outcomes(self) -> list[OutcomeRow]:
        """Every outcome of the last retry, shown or waiting to be shown."""
        return self.outcomes.rows + self._pending_outcomes

    def _retry_failed(self, err: TaskError) -> None:
        self._finish_run()
        self.summary.setText(f"The retry stopped: {err.message}")
        self.ctx.notify(err.message, "error")
