"""Desktop notifications reach the freedesktop Notifications service over the real session
D-Bus (dbus-daemon of ./dev test). The service here is the test's own small one: the machine has
no notification daemon."""

from __future__ import annotations

import threading

import pytest

from ui.notify import SERVICE, send_notification


@pytest.fixture
def notification_service(display):
    from jeepney import HeaderFields, MessageType, new_method_return
    from jeepney.bus_messages import message_bus
    from jeepney.io.blocking import open_dbus_connection

    conn = open_dbus_connection(bus="SESSION")
    reply = conn.send_and_get_reply(message_bus.RequestName(SERVICE, 4))  # DO_NOT_QUEUE
    if reply.body[0] != 1:
        conn.close()
        pytest.skip("another notification service owns the name")
    received: list[tuple] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                msg = conn.receive(timeout=0.2)
            except TimeoutError:
                continue
            except Exception:
                return
            if msg.header.message_type == MessageType.method_call and \
                    msg.header.fields.get(HeaderFields.member) == "Notify":
                received.append((msg.header.fields.get(HeaderFields.signature), msg.body))
                conn.send(new_method_return(msg, "u", (len(received),)))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield received
    stop.set()
    t.join(2)
    conn.close()


def test_unexpected_stop_notification_goes_over_dbus_with_critical_urgency(notification_service):
    nid = send_notification("Recording stopped", "device lost", critical=True)
    assert nid == 1
    signature, body = notification_service[0]
    assert signature == "susssasa{sv}i"
    assert body[3:5] == ("Recording stopped", "device lost") and body[6]["urgency"] == ("y", 2)


def test_no_notification_bus_or_service_is_logged_not_raised(display, monkeypatch):
    assert send_notification("Recording stopped", "device lost") is None  # bus without the service
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
    assert send_notification("Recording stopped", "device lost") is None
