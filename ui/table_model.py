"""One table model for every list page: rows page in, live refreshes update in place.

The model holds plain read-model objects (``FailedItem``, ``FeedItem``, …)
and never queries: when the view wants more rows (``canFetchMore`` /
``fetchMore``) it emits ``sig_fetch_more`` and the page runs the next keyset
query in a task, then calls ``append``. A live refresh hands the newest page
to ``merge_top``: rows already shown change in place (``dataChanged``), new
ones are inserted at the top (``beginInsertRows``), rows gone from that range
are removed; the model resets only when the query itself changes
(``reset``), so selection and scroll position survive every refresh.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal

ROW_ROLE = Qt.UserRole + 1        # the row object behind a cell
SORT_ROLE = Qt.UserRole + 2       # a value that sorts (numbers stay numbers)


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    value: Callable[[Any], Any]                   # the shown text (str() is applied)
    align: Qt.AlignmentFlag = Qt.AlignLeft | Qt.AlignVCenter
    tooltip: Callable[[Any], str | None] | None = None
    sort: Callable[[Any], Any] | None = None
    width: int = 120


class RowTableModel(QAbstractTableModel):
    sig_fetch_more = Signal()          # the view scrolled near the end: the page loads the next page

    def __init__(self, columns: Sequence[Column], key: Callable[[Any], Hashable] | None, parent=None):
        """``key`` names a row across refreshes; None for a list that is only shown (no lookups, no cost per row)."""
        super().__init__(parent)
        self.columns = list(columns)
        self.key = key
        self.rows: list[Any] = []
        # A row's position is its sequence number minus the top's: rows inserted at the top take
        # numbers below it, appended rows numbers above, so neither renumbers the rows already there
        # (a live feed inserts at the top every second over thousands of loaded rows).
        self._seq: dict[Hashable, int] = {}
        self._top = 0
        self.more = False              # the query has more rows than are loaded
        self.loading = False           # a page is on its way
        self.marks: dict[Hashable, str] = {}   # per-row notes shown in the last column (e.g. "retried")

    # Qt's interface ------------------------------------------------------
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.columns)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        col = self.columns[index.column()]
        if role == Qt.DisplayRole:
            if col.key == "_mark":
                return self.marks.get(self.key(row), "") if self.key is not None else ""
            value = col.value(row)
            return "" if value is None else str(value)
        if role == Qt.ToolTipRole:
            if col.tooltip is not None:
                return col.tooltip(row)
            return None
        if role == Qt.TextAlignmentRole:
            return int(col.align)
        if role == ROW_ROLE:
            return row
        if role == SORT_ROLE:
            return (col.sort or col.value)(row)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.DisplayRole) -> Any:
        if orientation == Qt.Horizontal and role == Qt.DisplayRole and 0 <= section < len(self.columns):
            return self.columns[section].title
        return None

    def canFetchMore(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> bool:  # noqa: B008
        return not parent.isValid() and self.more and not self.loading

    def fetchMore(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> None:  # noqa: B008
        if self.canFetchMore(parent):
            self.loading = True
            self.sig_fetch_more.emit()

    # What the page calls -------------------------------------------------
    def row_at(self, i: int) -> Any:
        return self.rows[i]

    def position(self, key: Hashable) -> int | None:
        seq = self._seq.get(key)
        return None if seq is None else seq - self._top

    def reset(self, rows: Iterable[Any], more: bool) -> None:
        """The query changed (filter, sort): show its first page."""
        self.beginResetModel()
        self.rows = list(rows)
        self._reindex()
        self.more = more
        self.loading = False
        self.marks = {}
        self.endResetModel()

    def append(self, rows: Iterable[Any], more: bool) -> None:
        """The next page of the same query, below the loaded rows."""
        new = list(rows) if self.key is None else [r for r in rows if self.key(r) not in self._seq]
        self.loading = False
        self.more = more
        if not new:
            return
        first = len(self.rows)
        self.beginInsertRows(QModelIndex(), first, first + len(new) - 1)
        self.rows.extend(new)
        if self.key is not None:
            for i, r in enumerate(new, start=self._top + first):
                self._seq[self.key(r)] = i
        self.endInsertRows()

    def merge_top(self, fresh: Sequence[Any], *, complete: bool = False) -> int:
        """A refresh of the query's first rows: returns how many rows are new.

        Rows shown and still there change in place; rows shown within the
        fresh page's range but no longer in it are removed (retried, deleted);
        rows newer than every shown row are inserted at the top. ``complete``:
        the fresh rows are the whole result, so anything else shown goes.
        """
        fresh_keys = {self.key(r): r for r in fresh}
        # 1. In place.
        for k, r in fresh_keys.items():
            i = self.position(k)
            if i is not None and self.rows[i] != r:
                self.rows[i] = r
                self.dataChanged.emit(self.index(i, 0), self.index(i, len(self.columns) - 1))
        # 2. Gone from the refreshed range (everything shown down to the oldest fresh row).
        if fresh or complete:
            span = len(self.rows) if complete or not fresh else self._covered(fresh)
            gone = [i for i in range(span) if self.key(self.rows[i]) not in fresh_keys]
            for first, last in reversed(_runs(gone)):   # one removal per run of adjacent rows
                self.beginRemoveRows(QModelIndex(), first, last)
                del self.rows[first:last + 1]
                self.endRemoveRows()
            if gone:
                self._reindex()
        # 3. New at the top, in the fresh order.
        new = [r for k, r in fresh_keys.items() if k not in self._seq]
        if new:
            self.beginInsertRows(QModelIndex(), 0, len(new) - 1)
            self.rows[0:0] = new
            self._top -= len(new)
            for i, r in enumerate(new, start=self._top):
                self._seq[self.key(r)] = i
            self.endInsertRows()
        return len(new)

    def set_mark(self, keys: Iterable[Hashable], text: str) -> None:
        col = next((c for c, column in enumerate(self.columns) if column.key == "_mark"), None)
        for k in keys:
            self.marks[k] = text
            i = self.position(k)
            if i is not None and col is not None:
                idx = self.index(i, col)
                self.dataChanged.emit(idx, idx)

    # ---------------------------------------------------------------------
    def _covered(self, fresh: Sequence[Any]) -> int:
        """Shown rows down to (and with) the last shown row that the fresh page holds."""
        shown = [p for p in (self.position(self.key(r)) for r in fresh) if p is not None]
        return max(shown) + 1 if shown else 0

    def _reindex(self) -> None:
        self._seq = {}
        self._top = 0
        if self.key is None:
            return
        for i, r in enumerate(self.rows):
            self._seq[self.key(r)] = i


def _runs(positions: list[int]) -> list[tuple[int, int]]:
    """Ascending positions as (first, last) runs of adjacent ones."""
    runs: list[tuple[int, int]] = []
    for p in positions:
        if runs and runs[-1][1] == p - 1:
            runs[-1] = (runs[-1][0], p)
        else:
            runs.append((p, p))
    return runs
