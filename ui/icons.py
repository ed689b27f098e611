"""Icons drawn in code, so the console ships no image files and scales crisply."""
from __future__ import annotations

from functools import cache

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPainterPath, QPen, QPixmap

SIZE = 64


def _pen(color: QColor, width: float = 5.0) -> QPen:
    pen = QPen(color, width)
    pen.setCapStyle(Qt.RoundCap)
    pen.setJoinStyle(Qt.RoundJoin)
    return pen


def _draw(name: str, p: QPainter, color: QColor) -> None:
    p.setPen(_pen(color))
    p.setBrush(Qt.NoBrush)
    if name == "overview":
        for x, y in ((10, 10), (36, 10), (10, 36), (36, 36)):
            p.drawRoundedRect(QRectF(x, y, 18, 18), 4, 4)
    elif name == "notifications":
        path = QPainterPath()
        path.moveTo(14, 44)
        path.lineTo(50, 44)
        path.cubicTo(44, 38, 46, 30, 46, 26)
        path.cubicTo(46, 17, 40, 11, 32, 11)
        path.cubicTo(24, 11, 18, 17, 18, 26)
        path.cubicTo(18, 30, 20, 38, 14, 44)
        p.drawPath(path)
        p.drawArc(QRectF(26, 44, 12, 10), 180 * 16, 180 * 16)
    elif name == "duplicates":
        p.drawRoundedRect(QRectF(20, 8, 34, 38), 5, 5)
        p.drawPolyline([QPointF(14, 18), QPointF(10, 18), QPointF(10, 56), QPointF(40, 56), QPointF(40, 52)])
    elif name == "failed":
        path = QPainterPath()
        path.moveTo(32, 9)
        path.lineTo(57, 53)
        path.lineTo(7, 53)
        path.closeSubpath()
        p.drawPath(path)
        p.drawLine(QPointF(32, 25), QPointF(32, 38))
        p.setBrush(color)
        p.drawEllipse(QPointF(32, 46), 1.5, 1.5)
    elif name == "charts":
        p.drawLine(QPointF(10, 54), QPointF(54, 54))
        for x, h in ((16, 18), (28, 34), (40, 26), (52, 40)):
            p.drawLine(QPointF(x, 48), QPointF(x, 48 - h))
    elif name == "audit":
        p.drawRoundedRect(QRectF(14, 10, 36, 46), 5, 5)
        for y in (24, 33, 42):
            p.drawLine(QPointF(22, y), QPointF(42, y))
    elif name == "refresh":
        p.drawArc(QRectF(14, 14, 36, 36), 40 * 16, 280 * 16)
        p.setBrush(color)
        path = QPainterPath()
        path.moveTo(48, 10)
        path.lineTo(50, 24)
        path.lineTo(36, 22)
        path.closeSubpath()
        p.drawPath(path)
    elif name == "close":
        p.drawLine(QPointF(18, 18), QPointF(46, 46))
        p.drawLine(QPointF(46, 18), QPointF(18, 46))
    elif name == "database":
        p.drawEllipse(QRectF(12, 8, 40, 14))
        p.drawLine(QPointF(12, 15), QPointF(12, 49))
        p.drawLine(QPointF(52, 15), QPointF(52, 49))
        p.drawArc(QRectF(12, 24, 40, 14), 180 * 16, 180 * 16)
        p.drawArc(QRectF(12, 42, 40, 14), 180 * 16, 180 * 16)
    elif name == "app":
        p.setPen(Qt.NoPen)
        p.setBrush(QColor("#2563eb"))
        p.drawRoundedRect(QRectF(2, 2, 60, 60), 14, 14)
        p.setPen(_pen(QColor("white"), 5))
        p.setBrush(Qt.NoBrush)
        path = QPainterPath()
        path.moveTo(18, 42)
        path.lineTo(46, 42)
        path.cubicTo(42, 38, 42, 32, 42, 28)
        path.cubicTo(42, 21, 38, 16, 32, 16)
        path.cubicTo(26, 16, 22, 21, 22, 28)
        path.cubicTo(22, 32, 22, 38, 18, 42)
        p.drawPath(path)
        p.drawLine(QPointF(28, 48), QPointF(36, 48))


@cache
def pixmap(name: str, color: str = "#cbd5e1", size: int = SIZE) -> QPixmap:
    pm = QPixmap(SIZE, SIZE)
    pm.fill(Qt.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.Antialiasing)
    _draw(name, p, QColor(color))
    p.end()
    if size != SIZE:
        pm = pm.scaled(size, size, Qt.KeepAspectRatio, Qt.SmoothTransformation)
    return pm


def icon(name: str, color: str = "#cbd5e1", active: str | None = None) -> QIcon:
    """An icon; ``active`` colours the selected state (sidebar)."""
    ic = QIcon()
    ic.addPixmap(pixmap(name, color), QIcon.Normal, QIcon.Off)
    if active:
        ic.addPixmap(pixmap(name, active), QIcon.Selected, QIcon.Off)
        ic.addPixmap(pixmap(name, active), QIcon.Active, QIcon.Off)
    return ic
