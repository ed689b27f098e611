"""What every list page shares: a filter bar, a paged table, a detail pane, keys and CSV export.

A subclass names its columns and three plain functions that run in tasks:
``query(workspace, filters, cursor) -> (rows, next cursor or None)``, the
first page when ``cursor`` is None; ``export_rows(workspace, filters)`` for
CSV (every row the filter selects, not only the loaded ones); and
``detail(row) -> dict`` for the detail pane. Filtering happens in the query:
a new filter resets the model, scrolling fetches the next keyset page.

Keys: Ctrl+F puts the focus in the filter box, Enter there applies the
filter and moves the focus to the list; Ctrl+A selects every row shown;
Ctrl+E exports to CSV; F5 refreshes.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QItemSelectionModel, Qt, QTimer
from PySide6.QtGui import QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.jsontext import json_default
from app.registry import NAMES, SOURCES
from app.services.roles import ROLE_PERMISSIONS, allowed

from .pages.base import Page
from .table_model import Column, RowTableModel
from .tasks import TaskError

PAGE_SIZE = 200
EXPORT_LIMIT = 1_000_000


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
    """Write rows to ``path`` (runs in a task); returns the number written."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(header)
        for r in rows:
            out.writerow(["" if v is None else v for v in r])
    return len(rows)


def chosen_sources(workspace, filters: dict[str, Any]) -> list[str]:
    """The configured sources a page's source filter selects, in the console's order."""
    chosen = filters.get("source")
    return [s for s in NAMES if workspace.has(s) and (chosen is None or s == chosen)]


def titled_panel(title: str, top: int = 6) -> tuple[QWidget, QVBoxLayout]:
    """A panel with a section title on top, for the widgets beside or below a list."""
    panel = QWidget()
    v = QVBoxLayout(panel)
    v.setContentsMargins(0, top, 0, 0)
    v.setSpacing(6)
    label = QLabel(title)
    label.setObjectName("sectionTitle")
    v.addWidget(label)
    return panel, v


def muted(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setObjectName("muted")
    label.setWordWrap(True)
    return label


def plain_table(name: str, model: RowTableModel) -> QTableView:
    """A read-only table of a model's columns (a results or items panel)."""
    view = QTableView()
    view.setObjectName(name)
    view.setModel(model)
    view.verticalHeader().hide()
    view.verticalHeader().setDefaultSectionSize(24)
    header = view.horizontalHeader()
    header.setStretchLastSection(True)
    header.setDefaultAlignment(Qt.AlignLeft | Qt.AlignVCenter)
    for i, col in enumerate(model.columns):
        header.resizeSection(i, col.width)
    return view


def pretty(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=2, default=json_default, ensure_ascii=False)


class ListPage(Page):
    scrolls = False
    filter_hint = "Filter…"
    columns: list[Column] = []
    row_key: Callable[[Any], Hashable] = staticmethod(lambda r: r)
    noun = "rows"

    def build(self) -> None:
        self.model = RowTableModel(self.columns, self.row_key, self)
        self.model.sig_fetch_more.connect(self._fetch_more)
        self.cursor: Any = None
        self.generation = 0          # bumps with every new query: late pages of an old one are dropped
        self.filters: dict[str, Any] = {}
        self.loaded_generation = 0
        self.stale = False           # a new workspace opened while hidden: query again when shown
        self.confirm: QMessageBox | None = None

        self.filter_row = QHBoxLayout()
        self.filter_row.setSpacing(8)
        self.filter_edit = QLineEdit()
        self.filter_edit.setObjectName("filterEdit")
        self.filter_edit.setPlaceholderText(self.filter_hint)
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.returnPressed.connect(self._filter_entered)
        self.filter_row.addWidget(self.filter_edit, 1)
        self.build_filters(self.filter_row)
        self.export_button = QPushButton("Export CSV")
        self.export_button.setObjectName("secondary")
        self.export_button.setToolTip("Every row the filter selects, to a CSV file (Ctrl+E)")
        self.export_button.clicked.connect(self.ask_export)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setObjectName("secondary")
        self.refresh_button.setToolTip("Run the query again (F5)")
        self.refresh_button.clicked.connect(self.reload)
        self.filter_row.addWidget(self.refresh_button)
        self.filter_row.addWidget(self.export_button)
        self.body.addLayout(self.filter_row)

        self.action_row = QHBoxLayout()
        self.action_row.setSpacing(8)
        self.build_actions(self.action_row)
        self.count_label = QLabel("")
        self.count_label.setObjectName("muted")
        self.action_row.addStretch(1)
        self.action_row.addWidget(self.count_label)
        self.body.addLayout(self.action_row)

        self.table = QTableView()
        self.table.setObjectName(f"{self.key}Table")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(26)
        self.table.setHorizontalScrollMode(QAbstractItemView.ScrollPerPixel)
        header = self.table.horizontalHeader()
        header.setHighlightSections(False)
        header.setDefaultAlignment(Qt.AlignLeft | Qt.AlignVCenter)
        header.setSectionsMovable(True)
        header.setStretchLastSection(True)
        for i, col in enumerate(self.columns):
            header.resizeSection(i, col.width)
        header.setSectionResizeMode(QHeaderView.Interactive)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)

        self.detail = QPlainTextEdit()
        self.detail.setObjectName("detailPane")
        self.detail.setReadOnly(True)
        self.detail.setPlaceholderText("Select a row to see every field.")
        detail_box, dv = titled_panel("Details", top=0)
        dv.addWidget(self.detail, 1)

        self.splitter = QSplitter(Qt.Horizontal)
        self.splitter.setObjectName(f"{self.key}Splitter")
        self.splitter.addWidget(self.table)
        self.splitter.addWidget(detail_box)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([980, 250])
        self.vsplit = QSplitter(Qt.Vertical)
        self.vsplit.addWidget(self.splitter)
        self.build_lower(self.vsplit)
        self.body.addWidget(self.vsplit, 1)

        self.shortcut(QKeySequence.Find, self.focus_filter)
        self.shortcut("Ctrl+E", self.ask_export)
        self.shortcut("F5", self.reload)
        self.shortcut("Ctrl+A", self.select_all)
        self.shortcut(QKeySequence.Copy, self.copy_selection)

    def shortcut(self, seq: QKeySequence | QKeySequence.StandardKey | str, slot: Callable[[], None]) -> QShortcut:
        """A key of this page: active while the focus is anywhere in it."""
        sc = QShortcut(QKeySequence(seq), self)
        sc.setContext(Qt.WidgetWithChildrenShortcut)
        sc.activated.connect(slot)
        return sc

    # Pieces the pages build with ------------------------------------------------
    def add_choice(self, row: QHBoxLayout, name: str, items: Sequence[tuple[str, Any]], index: int = 0) -> QComboBox:
        """A filter drop-down whose choice runs the query again."""
        box = QComboBox()
        box.setObjectName(name)
        for label, data in items:
            box.addItem(label, data)
        box.setCurrentIndex(index)
        # Its whole text when there is room; a narrow window may squeeze it (the list still shows every choice).
        box.setMinimumWidth(min(box.sizeHint().width(), 72))
        box.currentIndexChanged.connect(self.reload)
        row.addWidget(box)
        return box

    def set_choices(self, choices: dict[QComboBox, Any]) -> None:
        """Choose the entries whose data are the values given (None: the first, "All …"), then query once."""
        for box, value in choices.items():
            # Compared here: findData cannot match every Python value (a timedelta) the boxes hold.
            index = next((i for i in range(box.count()) if value is not None and box.itemData(i) == value), 0)
            box.blockSignals(True)
            box.setCurrentIndex(max(0, index))
            box.blockSignals(False)
        self.reload()

    def add_source_filter(self, row: QHBoxLayout) -> QComboBox:
        return self.add_choice(row, "sourceFilter", [("All sources", None)] + [(s.label, s.name) for s in SOURCES])

    def role_allows(self, kind: str, doing: str) -> tuple[bool, str]:
        """Whether this console's role may ``kind``, and if not one sentence naming the role that may."""
        role = self.ctx.role
        if role is None:
            return False, "No workspace is open."
        if allowed(role, kind):
            return True, ""
        may = " or ".join(sorted(r for r, k in ROLE_PERMISSIONS.items() if kind in k))
        return False, f"{doing} takes the {may} role; this console's role is {role}."

    def ask(self, name: str, title: str, text: str, info: str, accept: str,
            on_accept: Callable[[], None], on_cancel: Callable[[], None] | None = None,
            icon: QMessageBox.Icon = QMessageBox.Question) -> QMessageBox:
        """A confirmation (Enter confirms, Escape cancels), open without blocking: ``self.confirm`` while shown."""
        box = QMessageBox(self)
        box.setObjectName(name)
        box.setIcon(icon)
        box.setWindowTitle(title)
        box.setText(text)
        box.setInformativeText(info)
        go = box.addButton(accept, QMessageBox.AcceptRole)
        box.addButton(QMessageBox.Cancel)
        box.setDefaultButton(go)
        box.setEscapeButton(QMessageBox.Cancel)
        self.confirm = box

        def answered(_result: int) -> None:
            self.confirm = None
            if box.clickedButton() is go:
                on_accept()
            elif on_cancel is not None:
                on_cancel()
        box.finished.connect(answered)
        box.open()
        return box

    # Subclass hooks --------------------------------------------------------
    def build_filters(self, row: QHBoxLayout) -> None:
        """More filter widgets beside the text box."""

    def build_actions(self, row: QHBoxLayout) -> None:
        """Action buttons above the list."""

    def build_lower(self, splitter: QSplitter) -> None:
        """Widgets below the list (a results panel)."""

    def current_filters(self) -> dict[str, Any]:
        return {"text": self.filter_edit.text().strip() or None}

    def query(self, workspace, filters: dict[str, Any], cursor: Any) -> tuple[list[Any], Any]:
        raise NotImplementedError

    def export_rows(self, workspace, filters: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
        raise NotImplementedError

    def detail_of(self, row: Any) -> dict[str, Any]:
        return row.to_json()

    # Loading ----------------------------------------------------------------
    def on_workspace(self, workspace) -> None:
        # A page queries when it is shown: hidden pages cost the window (and the databases) nothing.
        if self.isVisible():
            self.reload()
        else:
            self.stale = True    # another workspace (new connections): its rows, once shown

    def focus_target(self) -> QWidget | None:
        return self.table

    def is_loaded(self) -> bool:
        return self.ctx.workspace is None or (self.generation > 0 and self.loaded_generation == self.generation)

    def _load_once(self) -> None:
        if self.generation == 0 or self.stale:
            self.reload()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        # The window may open on this page before the workspace is ready, or the workspace before the page.
        if self.ctx.workspace is not None and (self.generation == 0 or self.stale):
            QTimer.singleShot(0, self._load_once)

    def reload(self) -> None:
        """Run the query from the top: the filter (or the data) changed."""
        ws = self.ctx.reader
        self.stale = False
        if ws is None:
            return
        self.filters = self.current_filters()
        self.generation += 1
        gen = self.generation
        self.count_label.setText("Loading…")
        self.model.loading = True
        self.ctx.tasks.submit(self.query, ws, dict(self.filters), None,
                              on_done=lambda res: self._first_page(gen, res),
                              on_error=lambda err: self._query_failed(gen, err))

    def _first_page(self, gen: int, result: tuple[list[Any], Any]) -> None:
        if gen != self.generation:
            return
        rows, self.cursor = result
        keys = self.selected_keys()
        self.model.reset(rows, self.has_more(self.cursor))
        self._restore_selection(keys)
        self.update_count()
        self.after_load()
        self.loaded_generation = gen
        self.sig_loaded.emit()

    def _fetch_more(self) -> None:
        ws = self.ctx.reader
        if ws is None or not self.has_more(self.cursor):
            self.model.loading = False
            return
        gen = self.generation
        self.ctx.tasks.submit(self.query, ws, dict(self.filters), self.cursor,
                              on_done=lambda res: self._next_page(gen, res),
                              on_error=lambda err: self._query_failed(gen, err))

    def _next_page(self, gen: int, result: tuple[list[Any], Any]) -> None:
        if gen != self.generation:
            return
        rows, self.cursor = self.carry_cursor(result)
        self.model.append(rows, self.has_more(self.cursor))
        self.update_count()

    def _query_failed(self, gen: int, error: TaskError) -> None:
        if gen != self.generation:
            return
        self.model.loading = False
        self.count_label.setText("Could not load")
        self.ctx.notify(error.message, "error")
        self.loaded_generation = gen
        self.sig_loaded.emit()

    def has_more(self, cursor: Any) -> bool:
        """Whether the query has rows past ``cursor`` (None: the end)."""
        return cursor is not None

    def carry_cursor(self, result: tuple[list[Any], Any]) -> tuple[list[Any], Any]:
        """The next page's (rows, cursor); a page may keep parts of the old cursor (a live feed's)."""
        return result

    def after_load(self) -> None:
        """The first page of a new query is shown."""

    def update_count(self) -> None:
        n = self.model.rowCount()
        more = " · more load as you scroll" if self.model.more else ""
        self.count_label.setText(f"{n:,} {self.noun} shown{more}")

    # Selection and keys --------------------------------------------------------
    def selected_rows(self) -> list[Any]:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [self.model.row_at(r) for r in rows]

    def selected_keys(self) -> list[Hashable]:
        return [self.row_key(r) for r in self.selected_rows()]

    def _restore_selection(self, keys: list[Hashable]) -> None:
        sm = self.table.selectionModel()
        for k in keys:
            pos = self.model.position(k)
            if pos is not None:
                sm.select(self.model.index(pos, 0), QItemSelectionModel.Select | QItemSelectionModel.Rows)

    def _selection_changed(self, *_args) -> None:
        rows = self.selected_rows()
        if len(rows) == 1:
            self.detail.setPlainText(pretty(self.detail_of(rows[0])))
        elif rows:
            self.detail.setPlainText(f"{len(rows):,} {self.noun} selected.")
        else:
            self.detail.clear()
        self.selection_changed(rows)

    def selection_changed(self, rows: list[Any]) -> None:
        """Enable the actions that fit the selection."""

    def focus_filter(self) -> None:
        self.filter_edit.setFocus(Qt.ShortcutFocusReason)
        self.filter_edit.selectAll()

    def _filter_entered(self) -> None:
        self.reload()
        self.table.setFocus(Qt.OtherFocusReason)
        if self.model.rowCount() and not self.table.currentIndex().isValid():
            self.table.setCurrentIndex(self.model.index(0, 0))

    def select_all(self) -> None:
        if self.filter_edit.hasFocus():
            self.filter_edit.selectAll()
            return
        self.table.selectAll()

    def copy_selection(self) -> None:
        """The selected rows as tab-separated text, with a header, to the clipboard (Ctrl+C)."""
        if self.filter_edit.hasFocus():
            self.filter_edit.copy()
            return
        rows = self.selected_rows()
        if not rows:
            return
        cols = [c for c in self.columns if c.key != "_mark"]
        lines = ["\t".join(c.title for c in cols)]
        lines += ["\t".join("" if (v := c.value(r)) is None else str(v).replace("\t", " ") for c in cols)
                  for r in rows]
        QGuiApplication.clipboard().setText("\n".join(lines))
        self.ctx.notify(f"Copied {len(rows):,} {self.noun} to the clipboard.", "info")

    # Export -----------------------------------------------------------------------
    def ask_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Export {self.title} to CSV", f"{self.key}.csv",
                                              "CSV files (*.csv)")
        if path:
            self.export_csv(path)

    def export_csv(self, path: str) -> None:
        ws = self.ctx.reader
        if ws is None:
            return
        filters = self.current_filters()
        self.export_button.setEnabled(False)

        def work() -> int:
            header, rows = self.export_rows(ws, filters)
            return write_csv(path, header, rows)

        def done(n: int) -> None:
            self.export_button.setEnabled(True)
            self.ctx.notify(f"Exported {n:,} {self.noun} to {path}.", "info")
            self.exported = (path, n)

        def failed(err: TaskError) -> None:
            self.export_button.setEnabled(True)
            self.ctx.notify(f"The export to {path} failed: {err.message}", "error")
        self.ctx.tasks.submit(work, on_done=done, on_error=failed, key=f"export-{self.key}")

    def on_activated(self) -> None:
        if self.ctx.workspace is not None and (self.generation == 0 or self.stale):
            QTimer.singleShot(0, self._load_once)
