"""Notifications: the unified live feed of every source, newest first.

New entries arrive by polling the read side's live cursor every second
(``poll_notification_feed``: late commits included, nothing repeated) and
are inserted at the top in place: the selection stays on its row, and a
list scrolled down keeps its position while a "N new" marker offers the way
up. Older entries page in as the list scrolls (``notification_feed`` with
the oldest position per source). Pause stops the polling, Resume catches
up from the same cursor.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QHBoxLayout, QPushButton

from app import registry
from app.read.feeds import (
    FEED_TYPES,
    KIND_WORDS,
    LIVE_ORDER,
    notification_feed,
    oldest_positions,
    poll_notification_feed,
    raw_record,
)
from app.read.models import FeedItem

from ..list_page import EXPORT_LIMIT, PAGE_SIZE, ListPage, chosen_sources, pretty
from ..table_model import Column
from ..tasks import TaskError

POLL_MS = 1000
# Entries per live poll; more waiting means poll again at once.
POLL_LIMIT = 500

RANGES = (("Any time", None), ("Last hour", dt.timedelta(hours=1)), ("Last 24 hours", dt.timedelta(days=1)),
          ("Last 7 days", dt.timedelta(days=7)))
TYPES = [("Any type", None)] + [(words, kind) for kind, (_source, words) in FEED_TYPES.items()]
# The orders the list offers (the Sort box, or a click on a column's header); the database sorts.
SORTS = [("Newest first", LIVE_ORDER), ("Oldest first", ("at", False))] + [
    (f"{label} {way}", (key, desc)) for key, label in (("source", "Source"), ("kind", "Kind"),
                                                        ("recipient", "Recipient"), ("subject", "Subject"),
                                                        ("status", "Status"))
    for way, desc in (("A–Z", False), ("Z–A", True))] + [("Row, lowest first", ("id", False)),
                                                          ("Row, highest first", ("id", True))]


@dataclass(frozen=True)
class FeedCursor:
    before: dict[str, Any]        # oldest position per source shown: the next older page
    more: bool                    # older entries remain
    live: dict[str, Any]          # the live poll's cursor (newer entries)


def _at(item: FeedItem) -> str:
    return f"{item.at:%Y-%m-%d %H:%M:%S}" if item.at else ""


COLUMNS = [
    Column("at", "Time (UTC)", _at, width=150),
    Column("source", "Source", lambda i: registry.source(i.source).label, width=80),
    Column("kind", "Kind", lambda i: KIND_WORDS.get(i.kind, i.kind), width=130),
    Column("recipient", "Recipient", lambda i: i.recipient, width=190),
    Column("subject", "Subject", lambda i: i.subject, width=330, tooltip=lambda i: i.subject),
    Column("status", "Status", lambda i: i.status, width=80),
    Column("id", "Row", lambda i: i.id, width=80, align=Qt.AlignRight | Qt.AlignVCenter),
]


def is_live(filters: dict[str, Any]) -> bool:
    """New entries arrive at the top only in the newest-first order."""
    return filters.get("order", LIVE_ORDER) == LIVE_ORDER


def query_feed(workspace, filters: dict[str, Any], cursor: FeedCursor | None) -> tuple[list[FeedItem], FeedCursor]:
    sources = chosen_sources(workspace, filters)
    if cursor is None and is_live(filters):   # the first page, with the live cursor that follows it
        page = poll_notification_feed(workspace, None, sources=sources, filter_text=filters.get("text"),
                                      limit=PAGE_SIZE, since=filters.get("since"), kind=filters.get("type"))
        return page.items, FeedCursor(oldest_positions(page.items), len(page.items) >= PAGE_SIZE,
                                      dict(page.cursor))
    older = notification_feed(workspace, sources=sources, before=cursor.before if cursor else None,
                              since=filters.get("since"), filter_text=filters.get("text"), limit=PAGE_SIZE,
                              kind=filters.get("type"), order=filters.get("order"))
    return older.items, FeedCursor(dict(older.cursor), older.has_more, cursor.live if cursor else {})


def poll_feed(workspace, filters: dict[str, Any], live: dict[str, Any]):
    return poll_notification_feed(workspace, live, sources=chosen_sources(workspace, filters),
                                  filter_text=filters.get("text"), limit=POLL_LIMIT, kind=filters.get("type"))


def export_feed(workspace, filters: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    header = ["at", "source", "kind", "id", "recipient", "subject", "status"]
    rows: list[list[Any]] = []
    before: dict[str, Any] | None = None
    while len(rows) < EXPORT_LIMIT:
        page = notification_feed(workspace, sources=chosen_sources(workspace, filters), before=before,
                                 since=filters.get("since"), filter_text=filters.get("text"), limit=5000,
                                 kind=filters.get("type"), order=filters.get("order"))
        rows += [[i.at.isoformat() if i.at else None, i.source, i.kind, i.id, i.recipient, i.subject, i.status]
                 for i in page.items]
        if not page.has_more or not page.items:
            break
        before = dict(page.cursor)
    return header, rows


class NotificationsPage(ListPage):
    key = "notifications"
    title = "Notifications"
    subtitle = "Every notification and email the three sources sent, newest first, live."
    icon_name = "notifications"
    filter_hint = "Filter by recipient or subject (literal, on the server) — Ctrl+F"
    columns = COLUMNS
    row_key = staticmethod(lambda i: (i.source, str(i.id)))
    noun = "entries"
    query = staticmethod(query_feed)
    export_rows = staticmethod(export_feed)

    def build_filters(self, row: QHBoxLayout) -> None:
        self.source_box = self.add_source_filter(row)
        self.type_box = self.add_choice(row, "typeFilter", TYPES)
        self.range_box = self.add_choice(row, "rangeFilter", RANGES)

    def build_lower(self, splitter) -> None:
        # Called once the table exists: its header sorts (in the database) and shows the order.
        header = self.table.horizontalHeader()
        header.setSectionsClickable(True)
        header.setSortIndicatorShown(True)
        self._sync_indicator()
        header.sortIndicatorChanged.connect(self._header_sorted)

    def _sync_indicator(self) -> None:
        column, desc = self.sort_box.currentData()
        index = next(i for i, c in enumerate(COLUMNS) if c.key == column)
        header = self.table.horizontalHeader()
        header.blockSignals(True)
        header.setSortIndicator(index, Qt.DescendingOrder if desc else Qt.AscendingOrder)
        header.blockSignals(False)

    def _header_sorted(self, index: int, order: Qt.SortOrder) -> None:
        wanted = (COLUMNS[index].key, order == Qt.DescendingOrder)
        at = next((i for i in range(self.sort_box.count()) if tuple(self.sort_box.itemData(i)) == wanted), None)
        if at is None:
            self._sync_indicator()
            return
        self.sort_box.setCurrentIndex(at)   # runs the query in the new order

    def build_actions(self, row: QHBoxLayout) -> None:
        self.pause_button = QPushButton("Pause")
        self.pause_button.setObjectName("secondary")
        self.pause_button.setCheckable(True)
        self.pause_button.setToolTip("Stop adding new entries; Resume catches up without losing any")
        self.pause_button.toggled.connect(self._paused)
        self.new_button = QPushButton("")
        self.new_button.setObjectName("newMarker")
        self.new_button.setToolTip("Scroll to the newest entries")
        self.new_button.clicked.connect(self.scroll_to_newest)
        self.new_button.hide()
        # The order sits with the live controls: only newest first is live.
        self.sort_box = self.add_choice(row, "sortChoice", SORTS)
        self.sort_box.setToolTip("The order the database returns the entries in; a click on a column's header "
                                 "sorts by it too. New entries arrive live in the newest-first order.")
        self.sort_box.currentIndexChanged.connect(self._sync_indicator)
        row.addWidget(self.pause_button)
        row.addWidget(self.new_button)
        self.unseen = 0
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)

    def current_filters(self) -> dict[str, Any]:
        return {"text": self.filter_edit.text().strip() or None, "source": self.source_box.currentData(),
                "type": self.type_box.currentData(), "since": self.range_box.currentData(),
                "order": tuple(self.sort_box.currentData())}

    def has_more(self, cursor: FeedCursor | None) -> bool:
        return cursor is not None and cursor.more

    def carry_cursor(self, result):
        rows, nxt = result
        # A live poll may have moved the cursor on while the older page was read: keep the newest.
        if self.cursor is not None:
            nxt = FeedCursor(nxt.before, nxt.more, self.cursor.live)
        return rows, nxt

    def after_load(self) -> None:
        self._clear_marker()
        live = is_live(self.filters)
        self.pause_button.setEnabled(live)
        self.pause_button.setToolTip("Stop adding new entries; Resume catches up without losing any" if live else
                                     "New entries arrive live in the newest-first order: choose it in the "
                                     "Sort box to follow them")
        if live and not self.pause_button.isChecked():
            self.timer.start()
        else:
            self.timer.stop()

    # Live ---------------------------------------------------------------------
    def poll(self) -> None:
        ws = self.ctx.reader
        if ws is None or self.cursor is None or self.pause_button.isChecked() or self.model.loading \
                or not is_live(self.filters):
            return
        if not self.isVisible():   # another page is open: catch up from the same cursor when this one is back
            return
        gen = self.generation
        self.ctx.tasks.submit(poll_feed, ws, dict(self.filters), self.cursor.live, key="feed-live",
                              on_done=lambda page: self._arrived(gen, page),
                              on_error=lambda err: self._poll_failed(gen, err))

    def _arrived(self, gen: int, page) -> None:
        if gen != self.generation or self.cursor is None:
            return
        self.cursor = FeedCursor(self.cursor.before, self.cursor.more, dict(page.cursor))
        if page.items:
            bar = self.table.verticalScrollBar()
            scrolled = bar.value() > 0
            keep = bar.value()
            n = self.model.merge_top(page.items)
            if scrolled:   # stay on the rows the admin is reading
                bar.setValue(keep + n)
                self.unseen += n
                self.new_button.setText(f"↑ {self.unseen:,} new")
                self.new_button.show()
            self.update_count()
        if page.has_more:
            QTimer.singleShot(0, self.poll)

    def _poll_failed(self, gen: int, error: TaskError) -> None:
        if gen == self.generation:
            self.ctx.notify(error.message, "warning")

    def _paused(self, paused: bool) -> None:
        self.pause_button.setText("Resume" if paused else "Pause")
        if paused:
            self.timer.stop()
        else:
            self.timer.start()
            self.poll()

    def scroll_to_newest(self) -> None:
        self.table.scrollToTop()
        self._clear_marker()

    def _clear_marker(self) -> None:
        self.unseen = 0
        self.new_button.hide()

    def on_activated(self) -> None:
        super().on_activated()
        if self.cursor is not None and not self.pause_button.isChecked() and is_live(self.filters):
            self.timer.start()

    # Detail: the entry, then the stored row or document behind it ------------------------------
    def selection_changed(self, rows: list[FeedItem]) -> None:
        if len(rows) != 1 or self.ctx.workspace is None:
            return
        item = rows[0]

        def shown(raw) -> None:
            if self.selected_rows() == [item]:
                self.detail.setPlainText(pretty({"entry": item.to_json(), "stored": raw}))
        self.ctx.tasks.submit(raw_record, self.ctx.reader, item.link, key="feed-raw", on_done=shown,
                              on_error=lambda _e: None)
