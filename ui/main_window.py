"""The main window: sidebar of pages, an error banner, and a status bar of sources."""
from __future__ import annotations

import logging
from argparse import Namespace

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QMessageBox,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.bootstrap import bootstrap
from app.cli import open_workspace
from app.config import SOURCE_NAMES, default_config_path, load_config
from app.status import effective_role, role_line

from .about import AboutDialog
from .action_process import cancel_running, running_actions
from .alerts import AlertsDialog, AlertWatcher
from .connections import ConnectionsDialog
from .context import AppContext
from .icons import icon
from .log import setup_logging
from .pages import PAGES, Page
from .settings import save_window, saved_theme, settings
from .status_monitor import SourceMonitor, source_named
from .theme import THEME_WORDS, THEMES, valid_choice
from .theme import manager as theme_manager
from .traffic import traffic_button
from .welcome import WelcomePage
from .widgets import SOURCE_TITLES, Banner, SourceIndicator, repolish

log = logging.getLogger(__name__)
LOG_LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO}
# While the window waits for a running action to reach a safe point before it closes.
CLOSE_POLL_MS = 200


class MainWindow(QMainWindow):
    # The first round of connection checks is over (or the workspace could not
    # open): the window shows what it will keep showing until the next change.
    status_settled = Signal()

    def __init__(self, ctx: AppContext | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctx = ctx or AppContext(self)
        self.monitor = SourceMonitor(self.ctx, self)
        self.settled = False
        self.log_file = setup_logging()
        self.close_question: QMessageBox | None = None
        self.closing_after_actions = False
        self.about: AboutDialog | None = None
        self.remember = False      # save geometry, pages, filters on close (the launched console does)
        self.connections: ConnectionsDialog | None = None
        self.setWindowTitle("Notification Console")
        self.setWindowIcon(icon("app"))
        self.resize(1280, 800)

        root = QWidget()
        root.setObjectName("root")
        h = QHBoxLayout(root)
        h.setContentsMargins(0, 0, 0, 0)
        h.setSpacing(0)
        h.addWidget(self._build_sidebar())
        content = QWidget()
        content.setObjectName("content")
        v = QVBoxLayout(content)
        v.setContentsMargins(0, 0, 0, 0)
        v.setSpacing(0)
        self.banner = Banner()
        v.addWidget(self.banner)
        self.stack = QStackedWidget()
        self.pages: dict[str, Page] = {}
        for cls in PAGES:
            page = cls(self.ctx)
            self.pages[cls.key] = page
            self.stack.addWidget(page)
        self.welcome = WelcomePage()
        self.welcome.sig_open_demo.connect(self.open_demo)
        self.welcome.sig_add_connection.connect(self.add_connection)
        self.stack.addWidget(self.welcome)
        v.addWidget(self.stack, 1)
        h.addWidget(content, 1)
        self.setCentralWidget(root)
        self._build_status_bar()

        self.ctx.notice_detail.connect(self.show_notice)
        self.ctx.workspace_ready.connect(self._workspace_ready)
        self.ctx.workspace_failed.connect(self._workspace_failed)
        self.monitor.checks_started.connect(self._checks_started)
        self.monitor.source_checked.connect(self._source_checked)
        self.monitor.checks_finished.connect(self._checks_finished)
        self.monitor.source_down.connect(self._source_down)
        self.monitor.source_back.connect(self._source_back)
        self.dropped_banner: str | None = None     # the source the banner is about, while it is down
        overview = self.pages["overview"]
        overview.refresh_button.clicked.connect(self.monitor.refresh)
        # While traffic runs, every round re-polls the counts (skipped while a poll still runs).
        self.traffic = overview.traffic
        self.traffic.sig_report.connect(self._traffic_reported)
        # Start/stop from anywhere: a status-bar button (Ctrl+T) whose menu picks the mode.
        self.traffic_button = traffic_button(self, self.traffic, overview.traffic_panel)
        self.traffic_action = self.traffic_button.defaultAction()
        self.addAction(self.traffic_action)
        self.statusBar().insertPermanentWidget(1, self.traffic_button)  # after the indicators, before the role
        # Ctrl+1 … Ctrl+6 open the pages in the sidebar's order, from anywhere in the window.
        for n, cls in enumerate(PAGES, start=1):
            sc = QShortcut(QKeySequence(f"Ctrl+{n}"), self)
            sc.setContext(Qt.WindowShortcut)
            sc.activated.connect(lambda key=cls.key: self.show_page(key))
        # Ctrl+Q quits from anywhere in the application (a dialog in front included).
        self.quit_action = QAction("Quit", self)
        self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        self.quit_action.setShortcutContext(Qt.ApplicationShortcut)
        self.quit_action.triggered.connect(self.close)
        self.addAction(self.quit_action)
        self.about_action = QAction("About", self)
        self.about_action.setShortcut(QKeySequence("F1"))
        self.about_action.setShortcutContext(Qt.ApplicationShortcut)
        self.about_action.triggered.connect(self.show_about)
        self.addAction(self.about_action)
        self._build_theme_actions()
        # Desktop alerts (Ctrl+Shift+A): the threshold and each source's switch.
        self.alerts_action = QAction("Desktop alerts…", self)
        self.alerts_action.setShortcut(QKeySequence("Ctrl+Shift+A"))
        self.alerts_action.setShortcutContext(Qt.WindowShortcut)
        self.alerts_action.triggered.connect(self.show_alerts)
        self.addAction(self.alerts_action)
        self.alerts_button.setDefaultAction(self.alerts_action)
        self.alerts_button.setText("Alerts…")
        self.alerts_button.setToolTip("Desktop alerts: the threshold and each source's switch (Ctrl+Shift+A)")
        self.alerts = AlertWatcher(self)
        self.alerts_dialog: AlertsDialog | None = None
        self.nav.setCurrentRow(0)

    # Layout ----------------------------------------------------------------
    def _build_sidebar(self) -> QWidget:
        side = QFrame()
        side.setObjectName("sidebar")
        side.setFixedWidth(228)
        v = QVBoxLayout(side)
        v.setContentsMargins(14, 18, 14, 14)
        v.setSpacing(14)
        brand = QHBoxLayout()
        logo = QLabel()
        logo.setPixmap(icon("app").pixmap(30, 30))
        name = QLabel("Notification<br>Console")
        name.setObjectName("brand")
        brand.addWidget(logo)
        brand.addWidget(name, 1)
        v.addLayout(brand)
        self.nav = QListWidget()
        self.nav.setObjectName("nav")
        self.nav.setIconSize(QSize(18, 18))
        self.nav.setFocusPolicy(Qt.NoFocus)
        for cls in PAGES:
            item = QListWidgetItem(icon(cls.icon_name, "#94a3b8", active="#ffffff"), cls.title)
            item.setData(Qt.UserRole, cls.key)
            item.setSizeHint(QSize(190, 38))
            self.nav.addItem(item)
        self.nav.currentRowChanged.connect(self._page_changed)
        v.addWidget(self.nav, 1)
        self.workspace_label = QLabel("Opening workspace…")
        self.workspace_label.setObjectName("sideFoot")
        self.workspace_label.setWordWrap(True)
        v.addWidget(self.workspace_label)
        foot = QHBoxLayout()
        foot.setSpacing(6)
        self.connections_button = QToolButton()
        self.connections_button.setObjectName("sideButton")
        self.connections_button.setText("Connections…")
        self.connections_button.setToolTip("The databases this console watches, their users and passwords")
        self.connections_button.clicked.connect(self.add_connection)
        self.about_button = QToolButton()
        self.about_button.setObjectName("sideButton")
        self.about_button.setText("About")
        self.about_button.setToolTip("Versions and the log file (F1)")
        self.about_button.clicked.connect(self.show_about)
        foot.addWidget(self.connections_button)
        foot.addWidget(self.about_button)
        foot.addStretch(1)
        v.addLayout(foot)
        looks = QHBoxLayout()
        looks.setSpacing(6)
        self.alerts_button = QToolButton()
        self.alerts_button.setObjectName("sideButton")
        self.theme_button = QToolButton()
        self.theme_button.setObjectName("sideButton")
        self.theme_button.setText("Theme")
        self.theme_button.setPopupMode(QToolButton.InstantPopup)
        looks.addWidget(self.alerts_button)
        looks.addWidget(self.theme_button)
        looks.addStretch(1)
        v.addLayout(looks)
        return side

    def _build_theme_actions(self) -> None:
        """Light, dark or the system's (the default); the menu of the sidebar's Theme button, and Ctrl+Shift+T."""
        self.theme = theme_manager()
        self.theme_choice = valid_choice(saved_theme())
        group = QActionGroup(self)
        group.setExclusive(True)
        self.theme_actions: dict[str, QAction] = {}
        menu = QMenu(self)
        for choice in THEMES:
            action = QAction(THEME_WORDS[choice], self, checkable=True)
            action.setData(choice)
            action.triggered.connect(lambda _checked=False, c=choice: self.set_theme(c))
            group.addAction(action)
            menu.addAction(action)
            self.theme_actions[choice] = action
        menu.addSeparator()
        self.next_theme_action = QAction("Next theme", self)
        self.next_theme_action.setShortcut(QKeySequence("Ctrl+Shift+T"))
        self.next_theme_action.setShortcutContext(Qt.WindowShortcut)
        self.next_theme_action.triggered.connect(self.next_theme)
        menu.addAction(self.next_theme_action)
        self.addAction(self.next_theme_action)
        self.theme_menu = menu
        self.theme_button.setMenu(menu)
        self.set_theme(self.theme_choice, save=False)

    def set_theme(self, choice: str, save: bool = True) -> str:
        """Use ``choice`` (system, light, dark); a launched console keeps it for the next start."""
        self.theme_choice = valid_choice(choice)
        effective = self.theme.apply(self.theme_choice)
        self.theme_actions[self.theme_choice].setChecked(True)
        shown = THEME_WORDS[self.theme_choice] + (f" (now {effective})" if self.theme_choice == "system" else "")
        self.theme_button.setToolTip(f"Theme: {shown}. Ctrl+Shift+T switches to the next one")
        if save and self.remember:
            settings().setValue("window/theme", self.theme_choice)
        return effective

    def next_theme(self) -> str:
        return self.set_theme(THEMES[(THEMES.index(self.theme_choice) + 1) % len(THEMES)])

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        bar.setSizeGripEnabled(False)
        holder = QWidget()
        row = QHBoxLayout(holder)
        row.setContentsMargins(4, 0, 0, 0)
        row.setSpacing(10)
        self.indicators = {name: SourceIndicator(name) for name in SOURCE_NAMES}
        for name in SOURCE_NAMES:
            row.addWidget(self.indicators[name])
        row.addStretch(1)
        bar.addWidget(holder, 1)
        self.role_label = QLabel("role: —")
        self.role_label.setObjectName("roleBadge")
        bar.addPermanentWidget(self.role_label)

    # Navigation -------------------------------------------------------------
    def show_page(self, key: str) -> None:
        keys = [cls.key for cls in PAGES]
        self.nav.setCurrentRow(keys.index(key))

    def current_page(self) -> str:
        return self.stack.currentWidget().key

    def show_welcome(self, config_path=None) -> None:
        """No configuration and no demo: the first start's page, instead of an error."""
        self.welcome.set_config_path(config_path)
        self.nav.setCurrentRow(-1)
        self.stack.setCurrentWidget(self.welcome)
        self.workspace_label.setText("No workspace open")
        self.welcome.focus_target().setFocus(Qt.OtherFocusReason)
        self._settle()

    def open_demo(self) -> None:
        self.workspace_label.setText("Opening the demo workspace…")
        self.show_page("overview")
        self.ctx.open_workspace(lambda: open_workspace(Namespace(demo=True, reset=False)))

    def add_connection(self) -> ConnectionsDialog:
        """The Connections dialog; once saved, the console reopens on the configuration written."""
        ws = self.ctx.workspace
        path = ws.config.path if ws is not None and not ws.config.demo and ws.config.path else None
        dialog = ConnectionsDialog(self.ctx, path or default_config_path(), self)
        dialog.sig_saved.connect(self._connections_saved)
        self.connections = dialog
        dialog.open()
        return dialog

    def _connections_saved(self, config) -> None:
        self.workspace_label.setText("Opening workspace…")
        if self.current_page() == "welcome":
            self.show_page("overview")
        for ind in self.indicators.values():
            ind.set_state("checking")
        self.ctx.replace_workspace(lambda: bootstrap(load_config(config.path)))

    def _page_changed(self, row: int) -> None:
        if row < 0:
            return
        self.stack.setCurrentIndex(row)
        page = self.stack.currentWidget()
        page.on_activated()
        target = page.focus_target()
        if target is not None:
            target.setFocus(Qt.OtherFocusReason)

    # Events ------------------------------------------------------------------
    def show_notice(self, level: str, text: str, detail: str = "") -> None:
        log.log(LOG_LEVELS.get(level, logging.INFO), "banner: %s%s", text, f"\n{detail}" if detail else "")
        if level != "info" and self.dropped_banner is not None and source_named(text) in self.monitor.down:
            return   # the banner already says that source is not answering and is being reconnected
        self.banner.show_message(text, level, detail)

    def _workspace_ready(self, ws) -> None:
        cfg = ws.config
        where = "Demo workspace" if cfg.demo else (f"Config: {cfg.path}" if cfg.path else "Configured workspace")
        self.workspace_label.setText(where)
        self.role_label.setText(f"role: {ws.role}")
        self.role_label.setProperty("role", ws.role)
        repolish(self.role_label)
        for name, ind in self.indicators.items():
            ind.set_state("checking" if ws.has(name) else "absent")
        if not ws.config.sources:
            self.show_notice("warning", "No sources are configured: add [sources.orders], [sources.cart] "
                                        "or [sources.dispatch] to the configuration file.")

    def _workspace_failed(self, error) -> None:
        self.workspace_label.setText("No workspace open")
        for card in self.pages["overview"].cards.values():
            card.set_absent()
        self._settle()

    def _checks_started(self, names: list) -> None:
        self.pages["overview"].on_checks_started(names)

    def _source_checked(self, status) -> None:
        self.indicators[status.name].set_state(status.state, status.reason or "")
        for page in self.pages.values():
            page.on_source_status(status)

    def _checks_finished(self, results: list) -> None:
        self.pages["overview"].on_checks_finished(results)
        self._show_role(results)
        problems = [s for s in results if not s.reachable or not s.ok or s.replica_reachable is False]
        if problems:
            first = problems[0]
            more = f" ({len(problems) - 1} more on the Overview)" if len(problems) > 1 else ""
            level = "error" if not first.reachable else "warning"
            reason = first.reason or first.replica_reason or f"The {first.name} source has a problem."
            self.show_notice(level, reason + more)
        elif self.banner.property("level") in ("error", "warning") and self.ctx.error is None \
                and not self.monitor.down:
            self.banner.hide()
        self._settle()

    def _source_down(self, name: str, reason: str, delay_s: float) -> None:
        self.dropped_banner = name
        text = (f"{SOURCE_TITLES.get(name, name)} is not answering: {reason} The rest of the console carries "
                f"on; it reconnects by itself (next try in {max(1, round(delay_s))} s).")
        log.warning("banner: %s", text)
        self.banner.show_message(text, "error", self.ctx.tasks.detail_for(reason) if reason else "")

    def _source_back(self, name: str) -> None:
        if self.dropped_banner == name:
            self.dropped_banner = next(iter(self.monitor.down), None)
            if self.dropped_banner is None:
                self.show_notice("info", f"{SOURCE_TITLES.get(name, name)} is back: reconnected.")

    def _show_role(self, results: list) -> None:
        """The effective role in the status bar; the pages' buttons follow it."""
        ws = self.ctx.workspace
        if ws is None:
            return
        role, _note = effective_role(ws.role, results)
        changed = role != self.ctx.role
        self.ctx.database_role = role
        self.role_label.setText(role_line(ws.role, results))
        # Why each source allows what it does, where it said (or why it could not say).
        notes = [f"{SOURCE_TITLES.get(s.name, s.name)}: {s.database_role_reason}." for s in results
                 if s.database_role_reason]
        self.role_label.setToolTip("\n".join(["What the database users may do:"] + notes) if notes else "")
        self.role_label.setProperty("role", role)
        repolish(self.role_label)
        if changed:
            for page in self.pages.values():
                if hasattr(page, "selected_rows"):     # a list page: its action buttons
                    page.selection_changed(page.selected_rows())

    def _settle(self) -> None:
        if not self.settled:
            self.settled = True
            self.status_settled.emit()

    def _traffic_reported(self, report) -> None:
        # Not after closing (the monitor's timer stops then): the final report arrives late.
        if report.running and self.monitor.timer.isActive():
            self.monitor.refresh()

    def show_about(self) -> AboutDialog:
        if self.about is None:
            self.about = AboutDialog(self)
        self.about.show()
        self.about.raise_()
        return self.about

    def show_alerts(self) -> AlertsDialog:
        """The Alerts dialog; where the desktop has no system tray it says so, and alerts stay off."""
        dialog = AlertsDialog(self.alerts.settings, self.alerts.available, self)
        dialog.sig_saved.connect(self.alerts.set_settings)
        self.alerts_dialog = dialog
        dialog.open()
        return dialog

    def closeEvent(self, event) -> None:
        running = running_actions()
        if running:
            event.ignore()
            if not self.closing_after_actions and self.close_question is None:
                self._ask_close(running)
            return
        if self.remember:
            save_window(self)
        self.alerts.close()
        self.monitor.timer.stop()
        self.traffic.stop()
        self.ctx.close()
        super().closeEvent(event)

    def _ask_close(self, running: list[str]) -> None:
        """An action runs: quit only once it has reached its next safe point and recorded itself."""
        what = " and ".join(dict.fromkeys(running))
        box = QMessageBox(self)
        box.setObjectName("closeWhileRunning")
        box.setIcon(QMessageBox.Warning)
        box.setWindowTitle("An action is running")
        box.setText(f"A {what} is running. Quit when it has stopped?")
        box.setInformativeText("It stops at its next safe point (the items in hand finish) and the audit "
                               "log records what it did; the window closes right after.")
        go = box.addButton("Stop it and quit", QMessageBox.AcceptRole)
        box.addButton("Keep working", QMessageBox.RejectRole)
        box.setDefaultButton(go)
        self.close_question = box

        def answered(_result: int) -> None:
            self.close_question = None
            if box.clickedButton() is go:
                self.close_after_actions()
        box.finished.connect(answered)
        box.open()

    def close_after_actions(self) -> None:
        self.closing_after_actions = True
        cancel_running()
        self.show_notice("warning", "Stopping the running action at its next safe point; the console quits "
                                    "once it has recorded what it did.")
        timer = QTimer(self)
        timer.setInterval(CLOSE_POLL_MS)

        def check() -> None:
            # The action's own task delivers its outcome first (the page records it), then the window goes.
            if not running_actions() and not self.ctx.tasks.busy:
                timer.stop()
                self.close()
        timer.timeout.connect(check)
        timer.start()
