"""Start the seat's GUI around a running :class:`station.app.App`."""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

from station import logs
from station.app import App
from ui.agent_window import AgentWindow
from ui.bridge import FlowBridge
from ui.i18n import Translator
from ui.qt import QApplication, QTimer, application
from ui.tray import StationTray

log = logs.get("ui")


class Gui:
    """The window, the tray and the bridge of one App (also used by tests and screenshots)."""

    def __init__(self, app: App, language: str = "auto") -> None:
        self.app = app
        self.qapp = application(sys.argv[:1])
        self.qapp.setApplicationName("dualrec-station")
        self.qapp.setQuitOnLastWindowClosed(True)
        self.tr = Translator(language)
        self.bridge = FlowBridge(app.flow)
        self.window = AgentWindow(self.bridge, self.tr, backlog=app.backlog_info)
        self.tray = StationTray(self.bridge, self.tr, self.window)
        app.own_rects = lambda: [r for r in (self.window.own_rect(),) if r]
        self.notice = app.recovery_notice()
        if self.notice:  # the agent learns at once that the last call's recording was cut
            self.window.show_notice(self.notice)

    def describe(self) -> dict[str, Any]:
        g = self.window.frameGeometry()
        return {"event": "window_shown", "object": self.window.objectName(),
                "title": self.window.windowTitle(), "banner": self.window.banner.text(),
                "banner_kind": self.window.banner.property("bannerKind"),
                "geometry": [g.x(), g.y(), g.width(), g.height()], "notice": self.notice,
                "api_port": self.app.api.port if self.app.api else None}


def run_gui(app: App, language: str = "auto", announce: bool = False) -> int:
    """Show the window and run the Qt event loop until the window closes or SIGTERM/SIGINT."""
    gui = Gui(app, language)
    gui.window.show()
    qapp: QApplication = gui.qapp
    stop_requested: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stop_requested.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    poll = QTimer()
    poll.setInterval(200)
    poll.timeout.connect(lambda: qapp.quit() if stop_requested else None)
    poll.start()

    def shown() -> None:
        info = gui.describe()
        log.info("window shown: %s", info)
        if announce:
            print(json.dumps(info, ensure_ascii=False), flush=True)
    QTimer.singleShot(300, shown)
    code = qapp.exec()
    poll.stop()
    gui.window.hide()
    return int(code)
