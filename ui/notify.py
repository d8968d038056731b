"""Desktop notifications through the freedesktop Notifications service on the session D-Bus
(GNOME, KDE, Xfce, ...), for desktops where Qt's tray icon cannot show a message.

Qt-free and best effort: a missing bus or service is logged, never raised. Uses jeepney (already
installed with the keyring's Secret Service backend); sends from a short-lived thread so the UI
never waits for the bus.
"""

from __future__ import annotations

import threading
from typing import Any

from station import logs

log = logs.get("ui")
SERVICE = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"
URGENCY_NORMAL, URGENCY_CRITICAL = 1, 2


def send_notification(title: str, body: str, critical: bool = False, app: str = "DualRec Station",
                      timeout_ms: int = 15000) -> int | None:
    """Send one notification; returns its id, or None when no notification service answered."""
    try:
        from jeepney import DBusAddress, HeaderFields, MessageType, new_method_call
        from jeepney.io.blocking import open_dbus_connection
    except ImportError:
        log.info("no jeepney: desktop notification not sent")
        return None
    address = DBusAddress(PATH, bus_name=SERVICE, interface=SERVICE)
    hints: dict[str, Any] = {"urgency": ("y", URGENCY_CRITICAL if critical else URGENCY_NORMAL)}
    msg = new_method_call(address, "Notify", "susssasa{sv}i",
                          (app, 0, "dialog-warning" if critical else "dialog-information", title, body,
                           [], hints, 0 if critical else timeout_ms))
    try:
        with open_dbus_connection(bus="SESSION") as conn:
            reply = conn.send_and_get_reply(msg, timeout=3)
        if reply.header.message_type != MessageType.method_return:
            raise RuntimeError(f"{reply.header.fields.get(HeaderFields.error_name)}: {reply.body}")
        return int(reply.body[0])
    except Exception as exc:  # no bus, no service, a timeout: the window still shows it all
        log.info("desktop notification not delivered: %s", exc)
        return None


def notify_async(title: str, body: str, critical: bool = False) -> threading.Thread:
    t = threading.Thread(target=send_notification, args=(title, body, critical), name="notify", daemon=True)
    t.start()
    return t
