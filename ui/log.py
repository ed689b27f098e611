"""The console's log file: the detail behind every banner, under the platform's log directory.

Banners carry one sentence; the traceback, the database's own words and Qt's
warnings go here (``console.log``, rotated at 1 MB, three kept). The About box
and every error banner's "Copy details" name the file.
"""
from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from app.config import log_dir

LOG_NAME = "console.log"
MAX_BYTES = 1_000_000
BACKUPS = 3
FORMAT = "%(asctime)s %(levelname)-7s %(threadName)s %(name)s: %(message)s"

_handler: logging.handlers.RotatingFileHandler | None = None


def log_path() -> Path:
    return log_dir() / LOG_NAME


def setup_logging() -> Path | None:
    """Send the console's log records to the log file (again, if the log directory moved); its path.

    None when the directory cannot be made (a read-only home): the console runs on, without a file.
    """
    global _handler
    path = log_path()
    if _handler is not None and Path(_handler.baseFilename) == path.resolve():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS,
                                                       encoding="utf-8", delay=True)
    except OSError as exc:
        print(f"warning: the log file {path} cannot be written ({exc}); the console runs without it.",
              file=sys.stderr)
        return None
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
        _handler.close()
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    _handler = handler
    return path


def install_qt_messages(quiet_offscreen: bool = False) -> None:
    """Qt's own warnings go to the log file; warnings and worse also to stderr, as Qt prints them."""
    from PySide6.QtCore import QtMsgType, qInstallMessageHandler
    qt_log = logging.getLogger("qt")
    levels = {QtMsgType.QtDebugMsg: logging.DEBUG, QtMsgType.QtInfoMsg: logging.INFO,
              QtMsgType.QtWarningMsg: logging.WARNING, QtMsgType.QtCriticalMsg: logging.ERROR,
              QtMsgType.QtFatalMsg: logging.CRITICAL}

    def handler(mode, _context, message):
        # The offscreen platform warns about window hints it cannot honour; they mean nothing there.
        if quiet_offscreen and "propagateSizeHints" in message:
            return
        level = levels.get(mode, logging.WARNING)
        qt_log.log(level, "%s", message)
        if level >= logging.WARNING:
            print(message, file=sys.stderr)

    qInstallMessageHandler(handler)
