"""The one place that imports PySide6. Everything in ``ui/`` takes Qt names from here.

Also routes Qt's own messages (warnings from widgets, plugins, fonts) into the ``ui`` logger.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import (
    QLocale,
    QObject,
    QRect,
    QSize,
    Qt,
    QTimer,
    QtMsgType,
    Signal,
    Slot,
    qInstallMessageHandler,
)
from PySide6.QtGui import QAction, QBrush, QColor, QFont, QIcon, QImage, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractButton,
    QApplication,
    QCheckBox,
    QComboBox,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSystemTrayIcon,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from station import logs

__all__ = [
    "QAbstractButton", "QAction", "QApplication", "QBrush", "QCheckBox", "QColor", "QComboBox", "QFont", "QFrame",
    "QGridLayout", "QGroupBox", "QHBoxLayout", "QIcon", "QImage", "QLabel", "QLineEdit", "QLocale",
    "QMainWindow", "QMenu", "QObject", "QPainter", "QPixmap", "QProgressBar", "QPushButton", "QRect",
    "QSize", "QSizePolicy", "QSystemTrayIcon", "QTextEdit", "QTimer", "QVBoxLayout", "QWidget", "Qt",
    "Signal", "Slot", "install_message_handler",
]

_LEVELS = {QtMsgType.QtDebugMsg: 10, QtMsgType.QtInfoMsg: 20, QtMsgType.QtWarningMsg: 30,
           QtMsgType.QtCriticalMsg: 40, QtMsgType.QtFatalMsg: 50}


def _handler(kind: QtMsgType, context: Any, message: str) -> None:
    where = f" ({context.file}:{context.line})" if getattr(context, "file", None) else ""
    logs.get("ui").log(_LEVELS.get(kind, 30), "Qt: %s%s", message, where)


def install_message_handler() -> None:
    """Send Qt's messages to the ``ui`` logger (call once, before the QApplication)."""
    qInstallMessageHandler(_handler)


def application(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if app is None:
        install_message_handler()
        app = QApplication(argv or ["station"])
    assert isinstance(app, QApplication)
    return app


# --- review window and player (ui/review_window.py, ui/player_widget.py) ---------------------------
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPointF, QRectF
from PySide6.QtGui import QPen, QPolygonF
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDoubleSpinBox,
    QFileDialog,
    QHeaderView,
    QInputDialog,
    QMessageBox,
    QSplitter,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
)

__all__ += [
    "QAbstractItemView", "QAbstractTableModel", "QDoubleSpinBox", "QFileDialog", "QHeaderView",
    "QInputDialog", "QMessageBox", "QModelIndex", "QPen", "QPointF", "QPolygonF", "QRectF", "QSplitter",
    "QTableView", "QTableWidget", "QTableWidgetItem",
]
