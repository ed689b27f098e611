"""The traffic simulator in the window: a controller on the task pool and its Overview card.

``TrafficController`` runs ``app.simulate.background.TrafficRunner.run`` as one
long task on the context's pool (which grows by a thread while it runs, so
polls never queue behind it). The runner reports after every round from its
own thread; the controller re-emits each ``TrafficReport`` on the GUI thread
as ``sig_report``. Stopping only sets the runner's event: the GUI thread never
waits for a round to end.
"""
from __future__ import annotations

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import (
    QButtonGroup,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QRadioButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.errors import ConsoleError
from app.registry import NAMES
from app.simulate import SOURCES as SIM_SOURCES
from app.simulate import WRITER_ROLES
from app.simulate.background import DEFAULT_EVENTS_PER_ROUND, DEFAULT_INTERVAL_S, TrafficReport, TrafficRunner

from .context import AppContext
from .tasks import TaskError
from .widgets import SOURCE_TITLES, Card, Dot, repolish

MODES = ("guarded", "naive")
MODE_WORDS = {"guarded": "Guarded — the production paths",
              "naive": "Naive — the seeds' races"}
TASK_KEY = "traffic"


class TrafficController(QObject):
    """Starts and stops the background traffic; owns no widgets."""

    sig_report = Signal(object)            # TrafficReport, after every round and once at the end
    sig_state = Signal(str)                # "running" | "stopping" | "stopped"
    _report_from_runner = Signal(object)   # emitted on the runner's thread, delivered queued

    def __init__(self, ctx: AppContext, parent: QObject | None = None, **runner_options):
        super().__init__(parent)
        self.ctx = ctx
        self.options = runner_options
        self.runner: TrafficRunner | None = None
        self.latest: TrafficReport | None = None
        self.state = "stopped"
        self.mode = "guarded"
        self._report_from_runner.connect(self._reported)

    # What the GUI may offer ---------------------------------------------------
    def unavailable_reason(self) -> str | None:
        """Why the simulator cannot run here, as one sentence; None when it can."""
        ws = self.ctx.workspace
        if ws is None:
            return "The workspace is still opening."
        if ws.role not in WRITER_ROLES:
            return (f"The {ws.role} role is read only: the traffic simulator writes to the databases. "
                    "Open an operator or admin configuration to run it.")
        if not any(ws.has(s) for s in SIM_SOURCES):
            return "No source is configured for the traffic simulator to drive."
        return None

    @property
    def running(self) -> bool:
        return self.runner is not None

    # Control -----------------------------------------------------------------------
    def start(self, mode: str | None = None) -> bool:
        """Start the traffic in ``mode``; False (with a banner) when it cannot run."""
        if self.runner is not None:
            return False
        mode = mode or self.mode
        reason = self.unavailable_reason()
        if reason is not None:
            self.ctx.notify(reason, "warning")
            return False
        runner = TrafficRunner(self.ctx.workspace, mode, on_report=self._report_from_runner.emit, **self.options)
        try:
            runner.check()
        except ConsoleError as exc:
            self.ctx.notify(exc.message, "error")
            return False
        self.mode = mode
        self.runner = runner
        self.latest = None
        pool = self.ctx.tasks.pool
        pool.setMaxThreadCount(pool.maxThreadCount() + 1)  # the loop holds one thread until stopped
        self.ctx.tasks.submit(runner.run, key=TASK_KEY, on_done=self._ended, on_error=self._failed)
        self._set_state("running")
        return True

    def stop(self) -> None:
        """Ask the runner to stop; ``sig_state`` says "stopped" once its thread is done."""
        if self.runner is not None and not self.runner.stopping:
            self.runner.request_stop()
            self._set_state("stopping")

    def toggle(self, mode: str | None = None) -> None:
        if self.running:
            self.stop()
        else:
            self.start(mode)

    # From the runner ------------------------------------------------------------------
    def _reported(self, report: TrafficReport) -> None:
        if self.runner is None and report.running:
            return  # a late report of a runner already ended
        self.latest = report
        self.sig_report.emit(report)

    def _ended(self, report: TrafficReport) -> None:
        self._release()
        self.latest = report
        if report.message and report.rounds == 0:
            self.ctx.notify(f"The traffic simulator could not run: {report.message}", "error")
        elif report.message and report.message.startswith("The simulator stopped"):
            self.ctx.notify(report.message, "error")

    def _failed(self, error: TaskError) -> None:
        self._release()
        self.ctx.notify(f"The traffic simulator stopped: {error.message}", "error")

    def _release(self) -> None:
        if self.runner is None:
            return
        self.runner = None
        pool = self.ctx.tasks.pool
        pool.setMaxThreadCount(max(1, pool.maxThreadCount() - 1))
        self._set_state("stopped")

    def _set_state(self, state: str) -> None:
        self.state = state
        self.sig_state.emit(state)


class TrafficPanel(Card):
    """The Overview card: mode, start/stop, and what the traffic has produced so far."""

    COLUMNS = ("Events", "Attempts", "Produced", "Duplicates", "Failed")

    def __init__(self, controller: TrafficController, parent: QWidget | None = None):
        super().__init__(parent)
        self.controller = controller
        lay = QVBoxLayout(self)
        lay.setContentsMargins(18, 16, 18, 16)
        lay.setSpacing(10)

        top = QHBoxLayout()
        top.setSpacing(10)
        self.dot = Dot("absent", 10)
        title = QLabel("Traffic simulator")
        title.setObjectName("cardTitle")
        self.pill = QLabel()
        self.pill.setObjectName("pill")
        self.pill.setMinimumHeight(20)  # the pill's 10 px radius needs the full height to round
        top.addWidget(self.dot, 0, Qt.AlignVCenter)
        top.addWidget(title, 0, Qt.AlignVCenter)
        top.addWidget(self.pill, 0, Qt.AlignVCenter)
        top.addStretch(1)
        self.mode_buttons = QButtonGroup(self)
        self.mode_box = QWidget()
        modes = QHBoxLayout(self.mode_box)
        modes.setContentsMargins(0, 0, 0, 0)
        modes.setSpacing(14)
        for mode in MODES:
            b = QRadioButton(MODE_WORDS[mode])
            b.setProperty("mode", mode)
            b.setChecked(mode == controller.mode)
            self.mode_buttons.addButton(b)
            modes.addWidget(b)
        top.addWidget(self.mode_box)
        top.addSpacing(8)
        self.button = QPushButton("Start")
        self.button.setMinimumWidth(92)
        self.button.clicked.connect(self._clicked)
        top.addWidget(self.button)
        lay.addLayout(top)

        blurb = QLabel(f"Keeps producing traffic so the lists move: every {DEFAULT_INTERVAL_S:g} s, "
                       f"{DEFAULT_EVENTS_PER_ROUND} new events per source, each attempted several times at "
                       "once (a double submit, a retry storm). Counts come from the databases.")
        blurb.setObjectName("cardBlurb")
        blurb.setWordWrap(True)
        lay.addWidget(blurb)
        rule = QFrame()
        rule.setObjectName("cardRule")
        rule.setFixedHeight(1)
        lay.addWidget(rule)

        self.grid = QGridLayout()
        self.grid.setHorizontalSpacing(24)
        self.grid.setVerticalSpacing(4)
        head = QLabel("Source")
        head.setObjectName("cardKey")
        self.grid.addWidget(head, 0, 0)
        for c, name in enumerate(self.COLUMNS, start=1):
            h = QLabel(name)
            h.setObjectName("cardKey")
            h.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
            self.grid.addWidget(h, 0, c)
        self.cells: dict[tuple[str, str], QLabel] = {}
        self.row_widgets: dict[str, list[QLabel]] = {}
        for r, source in enumerate(NAMES, start=1):
            name = QLabel(SOURCE_TITLES[source])
            name.setObjectName("cardValue")
            self.grid.addWidget(name, r, 0)
            self.row_widgets[source] = [name]
            for c, column in enumerate(self.COLUMNS, start=1):
                cell = QLabel("—")
                cell.setObjectName("cardCount")
                cell.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.grid.addWidget(cell, r, c)
                self.cells[(source, column)] = cell
                self.row_widgets[source].append(cell)
        self.grid.setColumnStretch(len(self.COLUMNS) + 1, 1)
        lay.addLayout(self.grid)

        self.summary = QLabel("Not running.")
        self.summary.setObjectName("muted")
        lay.addWidget(self.summary)
        self.message = QLabel()
        self.message.setObjectName("cardReason")
        self.message.setWordWrap(True)
        self.message.hide()
        lay.addWidget(self.message)

        # Duplicates in red, and only when there are some: the number to look at.
        self.setStyleSheet("QLabel[dup=\"true\"] { color: #b91c1c; }")
        controller.sig_report.connect(self.show_report)
        controller.sig_state.connect(self._state_changed)
        controller.ctx.workspace_ready.connect(lambda _ws: self.update_availability())
        controller.ctx.workspace_failed.connect(lambda _err: self.update_availability())
        self._state_changed(controller.state)
        self.update_availability()

    def selected_mode(self) -> str:
        checked = self.mode_buttons.checkedButton()
        return checked.property("mode") if checked else "guarded"

    def set_mode(self, mode: str) -> None:
        for b in self.mode_buttons.buttons():
            b.setChecked(b.property("mode") == mode)

    def update_availability(self) -> None:
        reason = self.controller.unavailable_reason()
        can = reason is None
        self.button.setEnabled(can or self.controller.running)
        self.mode_box.setEnabled(can and not self.controller.running)
        tip = reason or ""
        for w in (self.button, self.mode_box):
            w.setToolTip(tip)
        ws = self.controller.ctx.workspace
        if ws is not None:
            for source, widgets in self.row_widgets.items():  # only the sources it drives
                for w in widgets:
                    w.setVisible(ws.has(source))
        if reason and ws is not None:
            self.summary.setText(reason)

    def _clicked(self) -> None:
        if self.controller.running:
            self.controller.stop()
        else:
            self.controller.start(self.selected_mode())

    def _state_changed(self, state: str) -> None:
        running = state != "stopped"
        self.button.setText({"running": "Stop", "stopping": "Stopping…"}.get(state, "Start"))
        self.button.setObjectName("secondary" if running else "")
        repolish(self.button)
        self.button.setEnabled(state != "stopping" and (running or self.controller.unavailable_reason() is None))
        self.mode_box.setEnabled(not running and self.controller.unavailable_reason() is None)
        if running:
            self.set_mode(self.controller.mode)
        self.pill.setText({"running": f"running · {self.controller.mode}", "stopping": "stopping…"}
                          .get(state, "stopped"))
        self.pill.setProperty("state", {"running": "ok", "stopping": "checking"}.get(state, "absent"))
        repolish(self.pill)
        self.dot.set_state({"running": "ok", "stopping": "checking"}.get(state, "absent"))
        if state == "running" and self.controller.latest is None:
            self.summary.setText("Starting the first round…")
        elif state == "stopped" and self.controller.latest is None:
            self.summary.setText("Not running.")

    def show_report(self, report: TrafficReport) -> None:
        for s in report.sources:
            values = {"Events": s.events, "Attempts": s.attempts, "Produced": s.produced,
                      "Duplicates": s.duplicates, "Failed": s.errors}
            for column, value in values.items():
                cell = self.cells[(s.source, column)]
                cell.setText(f"{value:,}")
                if column == "Duplicates":
                    cell.setProperty("dup", value > 0)
                    repolish(cell)
        rounds = f"{report.rounds:,} round{'s' if report.rounds != 1 else ''}"
        state = "" if report.running else ", stopped"
        self.summary.setText(f"{report.mode.capitalize()} traffic: {rounds} in {report.seconds:.1f} s{state} · "
                             f"{report.events:,} events → {report.produced:,} produced, "
                             f"{report.duplicates:,} duplicates.")
        if report.message:
            self.message.setText(f"Last error: {report.message}")
            self.message.show()
        else:
            self.message.hide()


def traffic_actions(parent: QWidget, controller: TrafficController, panel: TrafficPanel) -> list[QAction]:
    """Menu/toolbar actions that mirror the Overview card: run/stop and the mode."""
    run = QAction("Simulator off", parent)
    run.setCheckable(True)
    run.setShortcut("Ctrl+T")
    run.setToolTip("Start or stop the background traffic simulator")
    group = QActionGroup(parent)
    group.setExclusive(True)
    mode_actions = {}
    for mode in MODES:
        a = QAction(MODE_WORDS[mode], parent)
        a.setCheckable(True)
        a.setChecked(mode == controller.mode)
        a.setData(mode)
        group.addAction(a)
        mode_actions[mode] = a
        a.triggered.connect(lambda _checked=False, m=mode: panel.set_mode(m))
    for b in panel.mode_buttons.buttons():
        mode_of_button = b.property("mode")
        b.toggled.connect(lambda on, m=mode_of_button: on and mode_actions[m].setChecked(True))

    def triggered(_checked: bool) -> None:
        controller.toggle(panel.selected_mode())
        run.setChecked(controller.running)

    def sync(state: str = "") -> None:
        reason = controller.unavailable_reason()
        run.blockSignals(True)
        run.setChecked(controller.running)
        run.blockSignals(False)
        run.setText({"running": f"Simulator on · {controller.mode}", "stopping": "Simulator stopping…"}
                    .get(controller.state, "Simulator off"))
        run.setEnabled(controller.state != "stopping" and (controller.running or reason is None))
        run.setToolTip(reason or "Start or stop the background traffic simulator")
        for a in mode_actions.values():
            a.setEnabled(not controller.running and reason is None)

    run.triggered.connect(triggered)
    controller.sig_state.connect(sync)
    controller.ctx.workspace_ready.connect(lambda _ws: sync())
    sync()
    return [run, *mode_actions.values()]




def traffic_button(parent: QWidget, controller: TrafficController, panel: TrafficPanel) -> QToolButton:
    """A status-bar button: click to start or stop (Ctrl+T), its arrow picks the mode."""
    actions = traffic_actions(parent, controller, panel)
    button = QToolButton()
    button.setObjectName("trafficButton")
    button.setDefaultAction(actions[0])
    menu = QMenu(button)
    menu.addSection("Simulator mode")
    menu.addActions(actions[1:])
    button.setMenu(menu)
    button.setPopupMode(QToolButton.MenuButtonPopup)
    button.setToolButtonStyle(Qt.ToolButtonTextOnly)
    # Styled in resources/style.qss (and its dark overlay in ui/theme.py).
    # Room for the longest label in bold plus the menu arrow, so the bar does not jump.
    bold = button.font()
    bold.setBold(True)
    from PySide6.QtGui import QFontMetrics
    button.setMinimumWidth(QFontMetrics(bold).horizontalAdvance("Simulator on · guarded") + 44)
    return button
