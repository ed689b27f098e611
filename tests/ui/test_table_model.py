"""The list model without a view: pages append, refreshes change rows in place, nothing resets but a new query."""
from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt

from ui.table_model import Column, RowTableModel


@dataclass(frozen=True)
class Row:
    id: int
    text: str


def model() -> RowTableModel:
    return RowTableModel([Column("id", "Id", lambda r: r.id), Column("text", "Text", lambda r: r.text),
                          Column("_mark", "Result", lambda r: "")], key=lambda r: r.id)


def test_scrolling_asks_for_the_next_page_once_and_appends_it(qtbot):
    m = model()
    m.reset([Row(3, "c"), Row(2, "b")], more=True)
    with qtbot.waitSignal(m.sig_fetch_more, timeout=1000):
        assert m.canFetchMore()
        m.fetchMore()
    assert not m.canFetchMore()          # one page at a time
    with qtbot.waitSignal(m.rowsInserted, timeout=1000):
        m.append([Row(2, "b"), Row(1, "a")], more=False)   # a row already shown is not shown twice
    assert [m.row_at(i).id for i in range(m.rowCount())] == [3, 2, 1] and not m.canFetchMore()


def test_a_refresh_changes_rows_in_place_inserts_new_ones_on_top_and_never_resets(qtbot):
    m = model()
    m.reset([Row(5, "e"), Row(4, "d"), Row(3, "c"), Row(1, "a")], more=True)
    resets, changed, inserted, removed = [], [], [], []
    m.modelReset.connect(lambda: resets.append(1))
    m.dataChanged.connect(lambda a, b: changed.append(a.row()))
    m.rowsInserted.connect(lambda _p, a, b: inserted.append((a, b)))
    m.rowsRemoved.connect(lambda _p, a, b: removed.append((a, b)))
    # 7 and 6 are new; 4 changed; 3 is gone from the refreshed range (retried), which reaches down to 1.
    assert m.merge_top([Row(7, "g"), Row(6, "f"), Row(5, "e"), Row(4, "D"), Row(1, "a")]) == 2
    assert [m.row_at(i) for i in range(m.rowCount())] == [Row(7, "g"), Row(6, "f"), Row(5, "e"), Row(4, "D"),
                                                          Row(1, "a")]
    assert resets == [] and changed == [1] and inserted == [(0, 1)] and removed == [(2, 2)]
    assert m.position(4) == 3 and m.index(3, 1).data() == "D"


def test_marks_show_per_row_and_survive_a_refresh(qtbot):
    m = model()
    m.reset([Row(2, "b"), Row(1, "a")], more=False)
    m.set_mark([1], "retried ✓")
    assert m.index(1, 2).data() == "retried ✓" and m.index(0, 2).data() == ""
    m.merge_top([Row(3, "c"), Row(2, "b"), Row(1, "a")], complete=True)
    assert m.index(m.position(1), 2).data() == "retried ✓"
    assert m.headerData(0, Qt.Horizontal) == "Id"


def test_rows_older_than_the_refreshed_page_are_kept_as_they_are(qtbot):
    m = model()
    m.reset([Row(3, "c"), Row(2, "b"), Row(1, "a")], more=True)
    m.merge_top([Row(4, "d"), Row(3, "c")])          # a page of two: 2 and 1 lie below it, unknown
    assert [m.row_at(i).id for i in range(m.rowCount())] == [4, 3, 2, 1]
