"""System tray icon whose colour and tooltip follow the recording state, and the desktop
notification when recording stops unexpectedly (or a live warning begins)."""

from __future__ import annotations

from typing import Any

from station import logs
from ui.agent_window import COLOURS, AgentWindow, banner_kind
from ui.bridge import FlowBridge
from ui.i18n import Translator
from ui.notify import notify_async
from ui.qt import QAction, QBrush, QColor, QIcon, QMenu, QPainter, QPixmap, QSystemTrayIcon, Qt, Slot

log = logs.get("ui")


def state_icon(colour: str, size: int = 32) -> QIcon:
    pix = QPixmap(size, size)
    pix.fill(Qt.GlobalColor.transparent)
    p = QPainter(pix)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setBrush(QBrush(QColor(colour)))
    p.setPen(QColor("#212121"))
    p.drawEllipse(2, 2, size - 4, size - 4)
    p.end()
    return QIcon(pix)


class StationTray(QSystemTrayIcon):
    """The tray icon of the seat. ``notifications`` keeps what was shown (title, body)."""

    def __init__(self, bridge: FlowBridge, tr: Translator, window: AgentWindow) -> None:
        super().__init__(window)
        self.tr_, self.window = tr, window
        self.kind = "idle"
        self.notifications: list[tuple[str, str]] = []
        self._warnings: set[str] = set()
        menu = QMenu(window)
        self.show_action = QAction(menu)
        self.show_action.triggered.connect(self._show_window)
        menu.addAction(self.show_action)
        self.setContextMenu(menu)
        self.activated.connect(lambda _reason: self._show_window())
        bridge.state_changed.connect(self.on_state)
        bridge.warning_changed.connect(self.on_warning)
        bridge.stopped_unexpectedly.connect(self.on_stopped_unexpectedly)
        tr.on_change(self.retranslate)
        self.on_state(bridge.flow.snapshot())
        if QSystemTrayIcon.isSystemTrayAvailable():
            self.show()
        else:
            log.info("no system tray on this desktop; the window carries the state alone")

    def retranslate(self) -> None:
        self.show_action.setText(self.tr_("tray_show"))
        self._update()

    def _update(self) -> None:
        kind = "recording_warning" if self.kind == "recording" and self._warnings else self.kind
        self.setIcon(state_icon(COLOURS.get(kind, COLOURS["idle"])[0]))
        text, _hint = self.window.banner_text()
        warn = " · ".join(self.tr_(f"warn_{w}") for w in sorted(self._warnings))
        self.setToolTip(f"{self.tr_('app_title')}: {text}" + (f"\n⚠ {warn}" if warn else ""))

    @Slot(dict)
    def on_state(self, snap: dict[str, Any]) -> None:
        self.kind = banner_kind(snap)
        if snap.get("state") not in ("consent", "recording", "paused"):
            self._warnings.clear()
        self._update()

    @Slot(str, bool)
    def on_warning(self, kind: str, active: bool) -> None:
        (self._warnings.add if active else self._warnings.discard)(kind)
        if active:
            self.notify(self.tr_(f"warn_{kind}"), self.tr_("app_title"), critical=False)
        self._update()

    @Slot(dict)
    def on_stopped_unexpectedly(self, data: dict[str, Any]) -> None:
        code = self.tr_(f"code_{data.get('code')}")
        self.notify(self.tr_("notify_stopped_title"),
                    self.tr_("notify_stopped_body", code=code, error=data.get("error", "")), critical=True)
        self._show_window()

    def notify(self, title: str, body: str, critical: bool) -> None:
        self.notifications.append((title, body))
        log.warning("notification: %s: %s", title, body)
        icon = QSystemTrayIcon.MessageIcon.Critical if critical else QSystemTrayIcon.MessageIcon.Warning
        if self.isVisible():
            self.showMessage(title, body, icon, 15000 if critical else 5000)
        else:  # no tray on this desktop: ask the notification service directly
            notify_async(title, body, critical)

    def _show_window(self) -> None:
        self.window.showNormal()
        self.window.raise_()
        self.window.activateWindow()
