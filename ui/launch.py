"""Open the window: ``python main.py [--config F | --demo] [--simulate [MODE]] [--screenshot FILE.png --page NAME]``."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from app.cli import build_parser, open_workspace
from app.errors import EXIT_USAGE, ConsoleError

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
SCREENSHOT_TIMEOUT_MS = 60_000


def load_style(app) -> None:
    qss = RESOURCES / "style.qss"
    if qss.exists():
        app.setStyleSheet(qss.read_text(encoding="utf-8"))


def make_application():
    from PySide6.QtGui import QFont
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "notification-console"])
    app.setApplicationName("Notification Console")
    app.setOrganizationName("notification-console")
    font = QFont(app.font())
    font.setPointSizeF(10)
    app.setFont(font)
    load_style(app)
    return app


def build_window(args):
    """The window, with the workspace opening in the background."""
    from .main_window import MainWindow
    from .settings import restore_window
    window = MainWindow()
    window.show_page(args.page or "overview")
    if not args.screenshot:    # a screenshot shows what was asked, not what was left
        window.remember = True
        restore_window(window)
    if getattr(args, "simulate", None):
        mode = args.simulate

        def start(_ws):
            if not window.traffic.start(mode):
                reason = window.traffic.unavailable_reason() or "the banner in the window says why."
                print(f"warning: the traffic simulator did not start: {reason}", file=sys.stderr)
        window.ctx.workspace_ready.connect(start)
    if first_start(args):
        from app.config import default_config_path
        window.show_welcome(default_config_path())
    else:
        window.ctx.open_workspace(lambda: open_workspace(args))
    return window


def first_start(args) -> bool:
    """No --demo, no --config, and no configuration file where the console looks for one."""
    from app.config import default_config_path
    return not args.demo and not args.config and not default_config_path().exists()


def wait_for(signals, done, timeout_ms: int = SCREENSHOT_TIMEOUT_MS) -> bool:
    """Run the event loop until ``done()`` holds, checked whenever one of ``signals`` fires."""
    from PySide6.QtCore import QEventLoop, QTimer
    if done():
        return True
    loop = QEventLoop()
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)

    def check(*_args):
        if done():
            loop.quit()
    for signal in signals:
        signal.connect(check)
    timer.start(timeout_ms)
    loop.exec()
    timer.stop()
    for signal in signals:
        signal.disconnect(check)
    return done()


def wait_for_traffic(window, timeout_ms: int = SCREENSHOT_TIMEOUT_MS) -> bool:
    """Until the simulator has reported a round and the counts have been polled after it."""
    traffic, monitor = window.traffic, window.monitor
    if not wait_for([traffic.sig_report, traffic.sig_state],
                    lambda: traffic.latest is not None or not traffic.running, timeout_ms):
        return False
    if traffic.latest is None:
        return False  # it could not run: the banner says why
    # The report asked for a poll; if one was already under way, ask again once it ends.
    wait_for([monitor.checks_finished], lambda: not monitor.busy, timeout_ms)
    monitor.refresh()
    return wait_for([monitor.checks_finished], lambda: not monitor.busy, timeout_ms)


def wait_until_settled(window, timeout_ms: int = SCREENSHOT_TIMEOUT_MS) -> bool:
    """Run the event loop until the status checks have finished (or the timeout)."""
    from PySide6.QtCore import QEventLoop, QTimer
    if window.settled:
        return True
    loop = QEventLoop()
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)
    window.status_settled.connect(loop.quit)
    timer.start(timeout_ms)
    loop.exec()
    timer.stop()
    return window.settled


def take_screenshot(window, path: str, simulate: bool = False) -> int:
    from PySide6.QtWidgets import QApplication
    window.show()
    settled = wait_until_settled(window)
    if simulate and settled and not wait_for_traffic(window) and window.traffic.running:
        print("warning: the traffic simulator did not report in time; the screenshot shows it starting.",
              file=sys.stderr)
    page = window.pages.get(window.current_page())
    if page is not None and settled and window.ctx.workspace is not None and not wait_for([page.sig_loaded, window.ctx.notice],
                                                                     page.is_loaded):
        print(f"warning: the {page.title} page did not load in time; the screenshot shows it loading.",
              file=sys.stderr)
    for _ in range(3):  # let posted layout requests run before the grab
        QApplication.sendPostedEvents()
        QApplication.processEvents()
    target = Path(path).expanduser()
    if target.parent and not target.parent.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
    ok = window.grab().save(str(target), "PNG")
    window.close()
    if not ok:
        print(f"error: the screenshot cannot be written to {target}.", file=sys.stderr)
        return 1
    if not settled:
        print("warning: the connection checks did not finish in time; the screenshot shows them in progress.",
              file=sys.stderr)
    print(f"screenshot written to {target}")
    return 0


def launch(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except ConsoleError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    if args.screenshot and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from .log import install_qt_messages, setup_logging
    setup_logging()
    install_qt_messages(quiet_offscreen=bool(args.screenshot))
    # Before the QApplication: Qt aborts the process when its platform plugin cannot load.
    from .platform_check import platform_problem
    problem = platform_problem()
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    app = make_application()
    window = build_window(args)
    if args.screenshot:
        return take_screenshot(window, args.screenshot, simulate=bool(args.simulate))
    window.show()
    return app.exec()
