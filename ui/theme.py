"""Light and dark looks, and following the desktop's choice (the default).

A theme is a Fusion palette and, where the console's style sheet is loaded
(``resources/style.qss``, light), a dark overlay of the same selectors after
it. "Follow the system" reads ``QStyleHints.colorScheme()`` and changes with
its ``colorSchemeChanged``; a desktop that says nothing (Unknown) is light.
The choice is kept under ``window/theme`` (``ui.settings``).

Widgets painted outside the style sheet (pyqtgraph plots) follow with
``manager().theme_changed`` and ``chart_colours()``.
"""
from __future__ import annotations

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QStyleFactory

THEMES = ("system", "light", "dark")
THEME_WORDS = {"system": "Follow the system", "light": "Light", "dark": "Dark"}
DEFAULT_THEME = "system"

# (role, normal, disabled) per palette; disabled None: the normal colour.
_LIGHT = {
    QPalette.Window: ("#f4f6f9", None), QPalette.WindowText: ("#0f172a", "#94a3b8"),
    QPalette.Base: ("#ffffff", "#f8fafc"), QPalette.AlternateBase: ("#f8fafc", None),
    QPalette.Text: ("#0f172a", "#94a3b8"), QPalette.PlaceholderText: ("#94a3b8", None),
    QPalette.Button: ("#ffffff", "#f8fafc"), QPalette.ButtonText: ("#334155", "#94a3b8"),
    QPalette.BrightText: ("#ffffff", None), QPalette.Highlight: ("#2563eb", "#cbd5e1"),
    QPalette.HighlightedText: ("#ffffff", None), QPalette.ToolTipBase: ("#0f172a", None),
    QPalette.ToolTipText: ("#f8fafc", None), QPalette.Link: ("#1d4ed8", None),
    QPalette.LinkVisited: ("#6d28d9", None), QPalette.Light: ("#ffffff", None),
    QPalette.Midlight: ("#e2e8f0", None), QPalette.Mid: ("#cbd5e1", None), QPalette.Dark: ("#94a3b8", None),
    QPalette.Shadow: ("#475569", None),
}
_DARK = {
    QPalette.Window: ("#0b1220", None), QPalette.WindowText: ("#e2e8f0", "#64748b"),
    QPalette.Base: ("#111a2b", "#0e1626"), QPalette.AlternateBase: ("#16213a", None),
    QPalette.Text: ("#e2e8f0", "#64748b"), QPalette.PlaceholderText: ("#64748b", None),
    QPalette.Button: ("#1e293b", "#172033"), QPalette.ButtonText: ("#e2e8f0", "#64748b"),
    QPalette.BrightText: ("#ffffff", None), QPalette.Highlight: ("#3b82f6", "#334155"),
    QPalette.HighlightedText: ("#ffffff", None), QPalette.ToolTipBase: ("#e2e8f0", None),
    QPalette.ToolTipText: ("#0f172a", None), QPalette.Link: ("#60a5fa", None),
    QPalette.LinkVisited: ("#a78bfa", None), QPalette.Light: ("#334155", None),
    QPalette.Midlight: ("#273449", None), QPalette.Mid: ("#1f2a3d", None), QPalette.Dark: ("#0a0f1a", None),
    QPalette.Shadow: ("#000000", None),
}

# The dark look of every selector of resources/style.qss that sets a colour (the sidebar is dark already).
DARK_MARKER = "\n/* Dark theme: ui/theme.py, after resources/style.qss */\n"
DARK_QSS = DARK_MARKER + """
QWidget { color: #e2e8f0; }
QMainWindow, #content, #pageInner, #pageScroll, QScrollArea > QWidget > QWidget { background: #0b1220; }
#sidebar { background: #070d18; }
#pageTitle { color: #f1f5f9; }
#pageSubtitle, #muted, #cardBlurb, #cardKey { color: #94a3b8; }
#card { background: #111a2b; border: 1px solid #1f2a3d; }
#cardTarget, #plannedPoint { color: #cbd5e1; }
#cardRule { background: #1f2a3d; }
#cardValue, #cardCount { color: #f1f5f9; }
#cardReason { color: #fcd34d; background: #2a1d0a; border: 1px solid #78350f; }
#cardReason[state="down"] { color: #fca5a5; background: #2a1114; border: 1px solid #7f1d1d; }
#pill { background: #1e293b; color: #cbd5e1; }
#pill[state="ok"] { background: #14532d; color: #bbf7d0; }
#pill[state="schema"] { background: #713f12; color: #fde68a; }
#pill[state="down"] { background: #7f1d1d; color: #fecaca; }
#pill[state="checking"] { background: #1e293b; color: #cbd5e1; }
#pill[state="absent"] { background: #1e293b; color: #64748b; }
QPushButton:hover { background: #3b82f6; }
QPushButton:disabled { background: #273449; color: #64748b; }
QPushButton#secondary { background: #cbd5e1; color: #0f172a; border: 1px solid #94a3b8; }
QPushButton#secondary:hover { background: #e2e8f0; }
QPushButton#secondary:disabled { color: #64748b; background: #273449; border: 1px solid #334155; }
#banner { border-bottom: 1px solid #7f1d1d; background: #2a1114; }
#banner[level="warning"] { background: #2a1d0a; border-bottom: 1px solid #78350f; }
#banner[level="info"] { background: #0f1d3a; border-bottom: 1px solid #1e3a8a; }
#bannerTitle { color: #fca5a5; }
#banner[level="warning"] #bannerTitle { color: #fcd34d; }
#banner[level="info"] #bannerTitle { color: #93c5fd; }
#bannerText { color: #e2e8f0; }
#bannerClose:hover { background: rgba(226, 232, 240, 0.12); }
QPushButton#bannerCopy { background: #1e293b; color: #fca5a5; border: 1px solid #7f1d1d; }
QPushButton#bannerCopy:hover { background: #2a1114; }
QStatusBar { background: #111a2b; border-top: 1px solid #1f2a3d; }
QStatusBar QLabel { color: #cbd5e1; }
QStatusBar #indicatorName { color: #f1f5f9; }
#roleBadge { background: #1e293b; color: #cbd5e1; }
#roleBadge[role="admin"] { background: #2e1065; color: #ddd6fe; }
#roleBadge[role="operator"] { background: #1e3a8a; color: #bfdbfe; }
#roleBadge[role="viewer"] { background: #1e293b; color: #cbd5e1; }
QTableView { background: #111a2b; border: 1px solid #1f2a3d; gridline-color: #1a2436;
             selection-background-color: #1e3a8a; selection-color: #f1f5f9; }
QHeaderView::section { background: #16213a; color: #cbd5e1; border-bottom: 1px solid #1f2a3d; }
QScrollBar::handle:vertical { background: #334155; }
QToolTip { background: #e2e8f0; color: #0f172a; }
QBalloonTip, QBalloonTip QLabel { color: #0f172a; }   /* the tray message Qt draws itself: light yellow */
#testResult { background: #1e293b; color: #cbd5e1; }
#testResult[state="ok"] { background: #052e16; color: #bbf7d0; border: 1px solid #166534; }
#testResult[state="down"] { background: #2a1114; color: #fecaca; border: 1px solid #7f1d1d; }
#rangeButtons QPushButton { background: #1e293b; color: #e2e8f0; border: 1px solid #334155; }
#rangeButtons QPushButton:checked { background: #3b82f6; color: #ffffff; border-color: #3b82f6; }
QToolButton#trafficButton { background: #1e293b; color: #e2e8f0; border: 1px solid #334155; }
QToolButton#trafficButton:checked { background: #052e16; color: #86efac; border-color: #166534; }
QToolButton#trafficButton:disabled { color: #64748b; background: #172033; }
"""

# What a pyqtgraph plot paints with, per theme: background, axes and text, grid.
CHART_COLOURS = {
    "light": {"background": "#ffffff", "title": "#0f172a", "muted": "#64748b", "axis": "#94a3b8",
              "foreground": "#475569"},
    "dark": {"background": "#111a2b", "title": "#f1f5f9", "muted": "#94a3b8", "axis": "#475569",
             "foreground": "#cbd5e1"},
}


def system_theme() -> str:
    """What the desktop says it is: "dark", or "light" (also when it does not say)."""
    hints = QGuiApplication.styleHints()
    return "dark" if hints.colorScheme() == Qt.ColorScheme.Dark else "light"


def resolve(choice: str | None) -> str:
    """The palette a choice stands for: "light" or "dark" (an unknown choice follows the system)."""
    if choice in ("light", "dark"):
        return choice
    return system_theme()


def valid_choice(value: object) -> str:
    """A stored choice as one of THEMES (anything else, e.g. a hand-edited settings file: the default)."""
    return value if isinstance(value, str) and value in THEMES else DEFAULT_THEME


def palette(kind: str) -> QPalette:
    pal = QPalette()
    for role, (normal, disabled) in (_DARK if kind == "dark" else _LIGHT).items():
        pal.setColor(QPalette.All, role, QColor(normal))
        if disabled is not None:
            pal.setColor(QPalette.Disabled, role, QColor(disabled))
    return pal


def chart_colours(kind: str | None = None) -> dict[str, str]:
    """The plot colours of ``kind`` (default: the theme in effect)."""
    return dict(CHART_COLOURS[kind or manager().effective])


class ThemeManager(QObject):
    """The application's theme: one per QApplication (``manager()``)."""

    theme_changed = Signal(str)     # "light" or "dark": the palette now in effect

    def __init__(self, app: QApplication):
        super().__init__(app)
        self.app = app
        self.choice = DEFAULT_THEME
        self.effective: str | None = None
        QGuiApplication.styleHints().colorSchemeChanged.connect(self._system_changed)

    def apply(self, choice: str) -> str:
        """Use ``choice`` (system, light or dark); returns the palette in effect."""
        self.choice = valid_choice(choice)
        kind = resolve(self.choice)
        # The console's own sheet as loaded at start (none in some tests), without an earlier overlay.
        base = self.app.styleSheet().split(DARK_MARKER, 1)[0]
        if self.app.style().name().lower() != "fusion":
            self.app.setStyle(QStyleFactory.create("Fusion"))
        self.app.setPalette(palette(kind))
        sheet = base + (DARK_QSS if kind == "dark" and base.strip() else "")
        if self.app.styleSheet() != sheet:
            self.app.setStyleSheet(sheet)
        changed = kind != self.effective
        self.effective = kind
        if changed:
            self.theme_changed.emit(kind)
        return kind

    def _system_changed(self, _scheme) -> None:
        if self.choice == "system":
            self.apply("system")


_MANAGERS: dict[int, ThemeManager] = {}


def manager() -> ThemeManager:
    app = QApplication.instance()
    assert isinstance(app, QApplication), "a theme needs the QApplication"
    found = _MANAGERS.get(id(app))
    if found is None:
        found = _MANAGERS[id(app)] = ThemeManager(app)
    return found
