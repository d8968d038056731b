"""The agent window driven with pytest-qt: a full session through the UI (start, consent, every
script step, pause with reason, resume, stop), the states' banners, language switching, and an
unexpected stop. The done-when test records for real (fake capture devices, real pipeline, real
sealing) and decrypts the operation log with the test's recipient key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from station.app import App
from station.context import Context
from station.errors import StopCode
from station.flow import FakeRecording
from tests.recordkit import make_station, plaintext

pytestmark = [pytest.mark.gui, pytest.mark.qt_log_level_fail("WARNING")]

SMALL = {"capture.profile": "custom", "capture.screen_width": 320, "capture.screen_height": 240,
         "capture.screen_fps": 5, "capture.camera_width": 160, "capture.camera_height": 120,
         "capture.camera_fps": 5, "capture.segment_seconds": 2, "capture.watermark": False,
         "api.enabled": False, "upload.enabled": False}


def make_gui(qtbot, app, language="en"):
    from ui.main import Gui

    gui = Gui(app, language)
    qtbot.addWidget(gui.window)
    gui.window.show()
    qtbot.waitExposed(gui.window)
    return gui


def click(qtbot, widget):
    from PySide6.QtCore import QPoint

    from ui.qt import QCheckBox, Qt

    assert widget.isEnabled() and widget.isVisible(), widget.objectName()
    # a check box reacts on its indicator and text only, not on the stretched rest of it
    pos = QPoint(8, widget.height() // 2) if isinstance(widget, QCheckBox) else widget.rect().center()
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, pos=pos)


def wait_state(qtbot, gui, state, timeout=10000):
    qtbot.waitUntil(lambda: gui.window.snap["state"] == state, timeout=timeout)


def drive_full_session(qtbot, gui, dwell_ms=0):
    w = gui.window
    assert w.banner.property("bannerKind") == "idle" and w.banner.text() == "NOT RECORDING"
    click(qtbot, w.start_button)
    wait_state(qtbot, gui, "consent")
    assert w.consent_box.isVisible() and "Do you agree" in w.consent_text.toPlainText()
    assert not any(b.isEnabled() for b in w.step_boxes.values())
    click(qtbot, w.agree_button)
    wait_state(qtbot, gui, "recording")
    assert w.banner.property("bannerKind") == "recording" and w.banner.text().startswith("Recording 00:")
    for step, box in w.step_boxes.items():
        click(qtbot, box)
        qtbot.waitUntil(lambda s=step: s in w.snap["steps_done"])
    click(qtbot, w.pause_button)  # no reason: refused in the window, nothing happens
    assert w.error_label.text() == "Enter a reason to pause." and w.snap["state"] == "recording"
    qtbot.keyClicks(w.pause_reason, "customer reads card number")
    click(qtbot, w.pause_button)
    wait_state(qtbot, gui, "paused")
    assert w.banner.text() == "PAUSED: customer reads card number"
    click(qtbot, w.resume_button)
    wait_state(qtbot, gui, "recording")
    qtbot.wait(dwell_ms)
    click(qtbot, w.stop_button)
    wait_state(qtbot, gui, "stopped", timeout=60000)
    assert w.banner.property("bannerKind") == "stopped" and w.start_button.isEnabled()


def test_full_session_through_the_window_with_a_fake_recording(qtbot, station_home, keyring_service):
    made = []

    def factory(**kw):
        made.append(FakeRecording(**kw))
        return made[-1]

    ctx = Context(data_dir=station_home)
    app = App(ctx, factory=factory, desktop=False, upload=False, api_port=0)
    gui = make_gui(qtbot, app)
    drive_full_session(qtbot, gui)
    rec = made[0]
    kinds = [(k, d["label"] if k == "marker" else d) for k, d in rec.events if k != "oplog"]
    assert kinds == [("start", None), ("marker", "agreed"), *[("marker", s) for s in app.flow.steps],
                     ("pause", "customer reads card number"), ("resume", None), ("stop", "normal")]


def test_language_switch_and_consent_refusal_show_in_the_banner(qtbot, station_home, keyring_service):
    ctx = Context(data_dir=station_home)
    app = App(ctx, factory=FakeRecording, desktop=False, upload=False, api_port=0)
    gui = make_gui(qtbot, app, language="zh_CN")
    w = gui.window
    assert w.banner.text() == "未在录制" and w.windowTitle() == "双录工作站"
    w.language_box.setCurrentIndex(w.language_box.findData("en"))
    assert w.banner.text() == "NOT RECORDING" and w.start_button.text() == "Start recording"
    assert gui.tray.toolTip().startswith("DualRec Station: NOT RECORDING")
    click(qtbot, w.start_button)
    wait_state(qtbot, gui, "consent")
    w.close()  # closing during a live session only minimises
    assert w.isVisible() and app.flow.state == "consent" and "stop it before closing" in w.error_label.text()
    w.showNormal()
    click(qtbot, w.refuse_button)
    wait_state(qtbot, gui, "stopped")
    assert w.banner.text() == "NOT RECORDING · last session customer refused"


def test_unexpected_stop_turns_the_banner_red_and_notifies(qtbot, station_home, keyring_service):
    made = []

    def factory(**kw):
        made.append(FakeRecording(**kw))
        return made[-1]

    app = App(Context(data_dir=station_home), factory=factory, desktop=False, upload=False, api_port=0)
    gui = make_gui(qtbot, app)
    app.flow.start()
    app.flow.agree()
    wait_state(qtbot, gui, "recording")
    made[0].fail(StopCode.DEVICE_LOST, "camera unplugged.")
    wait_state(qtbot, gui, "stopped")
    qtbot.waitUntil(lambda: bool(gui.tray.notifications))
    assert gui.window.banner.property("bannerKind") == "stopped_error"
    assert gui.window.banner.text() == "RECORDING STOPPED: device lost"
    assert "camera unplugged." in gui.window.hint.text()
    assert gui.tray.notifications[-1][0] == "Recording stopped"


def oplog_events(session_dir: Path, identity) -> list[dict]:
    events = []
    for seg in sorted(session_dir.glob("seg-*.oplog.drseg")):
        data, complete = plaintext(seg, identity)
        assert complete, seg
        events += [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    return events


@pytest.mark.integration
def test_full_ui_session_is_sealed_with_consent_steps_and_pause_in_the_operation_log(
        qtbot, station_home, keyring_service):
    st = make_station(station_home, **SMALL)
    ctx = Context(data_dir=station_home, policy_path=st.policy_path)
    app = App(ctx, fake_devices=True, desktop=False, upload=False)
    gui = make_gui(qtbot, app)
    drive_full_session(qtbot, gui, dwell_ms=1200)
    sid = app.flow.last_session_id
    session_dir = ctx.spool_dir / sid
    assert (session_dir / "session.json").exists()
    events = oplog_events(session_dir, st.identity)
    markers = [(e["marker"], e["label"]) for e in events if e["kind"] == "marker"]
    assert markers == [("consent", "agreed"), *[("script_step", s) for s in app.flow.steps]]
    kinds = [e["kind"] for e in events]
    assert kinds.index("pause") < kinds.index("resume") < kinds.index("session_stop")
    assert [e["reason"] for e in events if e["kind"] == "pause"] == ["customer reads card number"]
    assert [e["t_ms"] for e in events] == sorted(e["t_ms"] for e in events)
    summary = app.flow.last_summary
    assert summary["stop_code"] == "normal" and summary["segments"] >= 1
    assert summary["streams"]["screen"]["frames"] >= 5


def window_texts(gui) -> str:
    from ui.qt import QAbstractButton, QLabel, QLineEdit, QTextEdit

    w = gui.window
    texts = [w.windowTitle(), gui.tray.toolTip()]
    texts += [x.text() for x in w.findChildren(QLabel)]
    texts += [x.text() for x in w.findChildren(QAbstractButton)]
    texts += [x.text() for x in w.findChildren(QLineEdit)]
    texts += [x.toPlainText() for x in w.findChildren(QTextEdit)]
    return "\n".join(texts)


def test_session_started_over_the_api_shows_only_the_masked_customer(qtbot, station_home, keyring_service):
    import http.client

    app = App(Context(data_dir=station_home), factory=FakeRecording, desktop=False, upload=False,
              api_port=0).start()
    try:
        gui = make_gui(qtbot, app)
        conn = http.client.HTTPConnection("127.0.0.1", app.api.port, timeout=10)
        body = {"customer": {"number": "13812345678", "name": "张三丰", "id_number": "110101199003071234"}}
        conn.request("POST", "/sessions", body=json.dumps(body),
                     headers={"Authorization": "Bearer " + app.ctx.secrets.api_token()})
        resp = conn.getresponse()
        assert resp.status == 201 and "13812345678" not in resp.read().decode()
        wait_state(qtbot, gui, "consent")
        shown = window_texts(gui)
        assert "张**  138****5678  110***********1234" in shown
        for full in ("13812345678", "张三丰", "110101199003071234"):
            assert full not in shown
        conn.request("POST", "/sessions", body=b"{}", headers={"Authorization": "Bearer nope"})
        assert conn.getresponse().status == 401
        conn.close()
    finally:
        app.close()


def test_station_window_is_a_masked_window_for_the_screen_recording(qtbot, station_home, keyring_service):
    from recorder.masking.windows import masked_window_boxes
    from station.app import OWN_WINDOW_RULE, OwnWindows, own_window_masker

    app = App(Context(data_dir=station_home), factory=FakeRecording, desktop=False, upload=False)
    gui = make_gui(qtbot, app)
    gui.window.move(100, 80)
    qtbot.waitUntil(lambda: gui.window.own_rect() is not None and gui.window.own_rect()[0] >= 100)
    x, y, w, h = gui.window.own_rect()
    boxes = masked_window_boxes(OwnWindows(app.own_rects), [OWN_WINDOW_RULE], 1920, 1080)
    assert [(b.x0, b.y0, b.x1, b.y1) for b in boxes] == [(x, y, x + w, y + h)]
    assert own_window_masker(app.own_rects) is not None
    gui.window.hide()
    assert app.own_rects() == []


@pytest.mark.no_qt_log
def test_qt_messages_go_to_the_ui_logger(qapp):
    import logging

    from PySide6.QtCore import qInstallMessageHandler, qWarning

    from ui.qt import install_message_handler

    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append
    logger = logging.getLogger("dualrec.ui")
    logger.addHandler(handler)
    install_message_handler()
    try:
        qWarning("font cache is stale")
    finally:
        qInstallMessageHandler(None)
        logger.removeHandler(handler)
    assert any(r.levelno == logging.WARNING and "Qt: font cache is stale" in r.getMessage() for r in seen)


@pytest.mark.integration
def test_camera_lost_mid_session_stops_recording_visibly_and_seals_the_code(qtbot, station_home,
                                                                            keyring_service, tmp_path):
    """A real camera stream (a FIFO fed by ffmpeg, read by OpenCV) ends mid-call: the recording
    stops with device-lost, the banner turns red, the tray notifies, the manifest says why."""
    import os
    import subprocess

    fifo = tmp_path / "camera.ts"
    os.mkfifo(fifo)
    feeder = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
                               "testsrc=size=160x120:rate=10", "-t", "2.5", "-c:v", "mpeg2video",
                               "-f", "mpegts", "-y", str(fifo)])
    try:
        st = make_station(station_home, **{**SMALL, "capture.camera": str(fifo)})
        ctx = Context(data_dir=station_home, policy_path=st.policy_path)
        app = App(ctx, fake_devices=False, desktop=False, upload=False)
        gui = make_gui(qtbot, app)
        click(qtbot, gui.window.start_button)
        wait_state(qtbot, gui, "consent", timeout=20000)
        click(qtbot, gui.window.agree_button)
        wait_state(qtbot, gui, "stopped", timeout=30000)
    finally:
        feeder.kill()
        feeder.wait()
    w = gui.window
    assert app.flow.stop_code == "device-lost"
    assert w.banner.property("bannerKind") == "stopped_error"
    assert w.banner.text() == "RECORDING STOPPED: device lost"
    qtbot.waitUntil(lambda: bool(gui.tray.notifications))
    assert gui.tray.notifications[-1][0] == "Recording stopped"
    manifest = json.loads((ctx.spool_dir / app.flow.last_session_id / "session.json").read_text())
    assert manifest["end_reason"] == "device-lost"


@pytest.mark.integration
def test_no_face_warning_from_the_real_camera_thumbnail_reaches_window_tray_and_sealed_log(
        qtbot, station_home, keyring_service):
    st = make_station(station_home, **{**SMALL, "ui.warn_no_face_s": 1})
    ctx = Context(data_dir=station_home, policy_path=st.policy_path)
    app = App(ctx, fake_devices=True, desktop=False, upload=False).start()
    try:
        gui = make_gui(qtbot, app)
        app.flow.start()
        app.flow.agree()
        qtbot.waitUntil(lambda: gui.window.warnings_label.isVisible(), timeout=15000)
        assert "No face on camera" in gui.window.warnings_label.text()
        assert gui.window.banner.property("bannerKind") == "recording_warning"
        assert "No face on camera" in gui.tray.toolTip()
        preview = gui.window.preview
        qtbot.waitUntil(lambda: preview.pixmap() is not None and not preview.pixmap().isNull())
        app.flow.stop()
    finally:
        app.close()
    events = oplog_events(ctx.spool_dir / app.flow.last_session_id, st.identity)
    assert {"warning": "no_face", "active": True} in [{k: e[k] for k in ("warning", "active")}
                                                      for e in events if e["kind"] == "warning"]


def test_a_start_that_cannot_record_says_why_in_the_window_and_stays_idle(qtbot, station_home,
                                                                          keyring_service):
    # the default policy names no recipients: recording must refuse to start
    app = App(Context(data_dir=station_home), fake_devices=True, desktop=False, upload=False)
    gui = make_gui(qtbot, app)
    click(qtbot, gui.window.start_button)
    qtbot.waitUntil(lambda: "recipient" in gui.window.error_label.text(), timeout=30000)
    assert app.flow.state == "idle" and gui.window.banner.text() == "NOT RECORDING"
    assert gui.window.start_button.isEnabled()


@pytest.mark.parametrize(("env", "expected"), [
    ({"LANG": "zh_CN.UTF-8"}, "zh_CN"), ({"LANG": "en_GB.UTF-8"}, "en"),
    ({"LC_ALL": "zh_TW.UTF-8", "LANG": "en_US.UTF-8"}, "zh_CN")])
def test_language_follows_the_system_locale(monkeypatch, env, expected):
    from ui.i18n import TABLE, Translator

    for var in ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    tr = Translator("auto")
    assert tr.language == expected
    assert all(set(entry) >= {"en", "zh_CN"} for entry in TABLE.values())
    with pytest.raises(ValueError, match="unknown language"):
        tr.set_language("fr")


def test_a_session_held_back_from_upload_is_named_in_the_window_with_its_reason(
        qtbot, station_home, keyring_service):
    """A spool session whose files do not match its manifest is quarantined by the uploader; the
    agent sees it in the backlog line (not only a bare ⚠), the reason in its tooltip, in the
    window's language."""
    from station.cli import main
    from tests.uploadkit import sealed_session

    (station_home / "store").mkdir()
    st = make_station(station_home, **{**SMALL, "storage.kind": "local",
                                       "storage.local_dir": str(station_home / "store")})
    bad = sealed_session(station_home / "spool", segments=1)
    media = bad / "seg-000001.media.drseg"
    media.write_bytes(media.read_bytes()[:1000])
    assert main(["upload", "--drain", "--policy", str(st.policy_path), "--data-dir", str(station_home)]) == 3
    ctx = Context(data_dir=station_home, policy_path=st.policy_path)
    app = App(ctx, factory=FakeRecording, desktop=False, upload=False)
    try:
        gui = make_gui(qtbot, app)
        label = gui.window.backlog_label
        assert "1 session(s) held back" in label.text() and "⚠" in label.text()
        assert bad.name in label.toolTip() and "seg-000001.media.drseg" in label.toolTip()
        gui.tr.set_language("zh_CN")
        gui.window._refresh_backlog()
        assert "个会话被扣留" in label.text() and "已扣留" in label.toolTip()
    finally:
        app.close()
