"""The agent's main window: state at a glance, consent, script steps, pause, device health.

Calm (green, small) while recording is fine; a big red banner whenever nothing is recorded.
It never shows a customer's full details: the flow only has the masked forms.

Object names (for tests, screenshots and accessibility): ``agentWindow``, ``stateBanner``,
``stateHint``, ``consentBox``, ``agreeButton``, ``refuseButton``, ``step_<name>``,
``startButton``, ``pauseReason``, ``pauseButton``, ``resumeButton``, ``stopButton``,
``customerLabel``, ``warningsLabel``, ``cameraPreview``, ``micLevel``, ``languageBox``,
``actionError``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from station.flow import FlowState
from ui.bridge import FlowBridge
from ui.i18n import LANGUAGES, Translator
from ui.qt import (
    QCheckBox,
    QComboBox,
    QFont,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QImage,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPixmap,
    QProgressBar,
    QPushButton,
    Qt,
    QTextEdit,
    QTimer,
    QVBoxLayout,
    QWidget,
    Slot,
)

# banner colours: (background, text)
COLOURS = {
    "idle": ("#c62828", "#ffffff"),
    "consent": ("#ef6c00", "#ffffff"),
    "recording": ("#2e7d32", "#ffffff"),
    "recording_warning": ("#ef6c00", "#ffffff"),
    "paused": ("#f9a825", "#212121"),
    "stopped": ("#c62828", "#ffffff"),
    "stopped_error": ("#8e0000", "#ffffff"),
}
PREVIEW_W, PREVIEW_H = 192, 108


W = TypeVar("W", bound=QWidget)


def named(widget: W, name: str) -> W:
    """Give a widget its object name (tests, screenshots and accessibility find it by that)."""
    widget.setObjectName(name)
    return widget


def fmt_elapsed(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def banner_kind(snap: dict[str, Any]) -> str:
    state = snap.get("state", "idle")
    if state == FlowState.STOPPED:
        return "stopped" if snap.get("stop_code") in ("normal", "consent-refused") else "stopped_error"
    return str(state)


class AgentWindow(QMainWindow):
    """The seat's main window over a :class:`~ui.bridge.FlowBridge`."""

    def __init__(self, bridge: FlowBridge, tr: Translator,
                 backlog: Callable[[], dict[str, Any] | None] | None = None) -> None:
        super().__init__()
        self.setObjectName("agentWindow")
        self.bridge, self.flow, self.tr_ = bridge, bridge.flow, tr
        self.backlog = backlog
        self.snap: dict[str, Any] = self.flow.snapshot()
        self._elapsed_at = time.monotonic()
        self._warnings: set[str] = set()
        self._error = ""
        self._build()
        bridge.state_changed.connect(self.on_state)
        bridge.warning_changed.connect(self.on_warning)
        bridge.health_updated.connect(self.on_health)
        bridge.action_failed.connect(self.on_action_failed)
        tr.on_change(self.retranslate)
        self._tick = QTimer(self)
        self._tick.setInterval(1000)
        self._tick.timeout.connect(self._refresh_banner)
        self._tick.start()
        self._slow = QTimer(self)
        self._slow.setInterval(5000)
        self._slow.timeout.connect(self._refresh_backlog)
        self._slow.start()
        self.retranslate()
        self.on_state(self.snap)
        self._refresh_backlog()

    # --- construction ------------------------------------------------------------------------
    def _build(self) -> None:
        central = QWidget(self)
        root = QVBoxLayout(central)
        root.setContentsMargins(12, 12, 12, 12)
        root.setSpacing(10)

        self.banner = named(QLabel(), "stateBanner")
        self.banner.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.banner.setMinimumHeight(84)
        self.banner.setWordWrap(True)
        font = QFont()
        font.setPointSize(22)
        font.setBold(True)
        self.banner.setFont(font)
        self.hint = named(QLabel(), "stateHint")
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setWordWrap(True)
        root.addWidget(self.banner)
        root.addWidget(self.hint)

        self.warnings_label = named(QLabel(), "warningsLabel")
        self.warnings_label.setStyleSheet("background:#fff3e0; color:#bf360c; font-weight:bold;"
                                          "padding:6px; border:2px solid #ef6c00;")
        self.warnings_label.setWordWrap(True)
        self.warnings_label.hide()
        root.addWidget(self.warnings_label)

        top = QHBoxLayout()
        self.session_box = QGroupBox()
        grid = QGridLayout(self.session_box)
        self.k_customer, self.customer_label = QLabel(), named(QLabel(), "customerLabel")
        self.k_ref, self.ref_label = QLabel(), named(QLabel(), "refLabel")
        self.k_agent, self.agent_label = QLabel(), named(QLabel(), "agentLabel")
        self.k_sid, self.sid_label = QLabel(), named(QLabel(), "sessionLabel")
        for row, (k, v) in enumerate(((self.k_customer, self.customer_label), (self.k_ref, self.ref_label),
                                      (self.k_agent, self.agent_label), (self.k_sid, self.sid_label))):
            grid.addWidget(k, row, 0)
            grid.addWidget(v, row, 1)
            v.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        top.addWidget(self.session_box, 3)

        self.health_box = QGroupBox()
        hg = QGridLayout(self.health_box)
        self.preview = named(QLabel(), "cameraPreview")
        self.preview.setFixedSize(PREVIEW_W, PREVIEW_H)
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setStyleSheet("background:#263238; color:#b0bec5;")
        hg.addWidget(self.preview, 0, 0, 5, 1)
        self.k_screen, self.screen_label = QLabel(), named(QLabel("–"), "screenLabel")
        self.k_mic, self.mic_level = QLabel(), named(QProgressBar(), "micLevel")
        self.mic_level.setRange(0, 60)
        self.mic_level.setTextVisible(False)
        self.mic_level.setFixedHeight(12)
        self.k_disk, self.disk_label = QLabel(), named(QLabel("–"), "diskLabel")
        self.k_backlog, self.backlog_label = QLabel(), named(QLabel("–"), "backlogLabel")
        rows: tuple[tuple[QLabel, QWidget], ...] = (
            (self.k_screen, self.screen_label), (self.k_mic, self.mic_level),
            (self.k_disk, self.disk_label), (self.k_backlog, self.backlog_label))
        for row, (key, value) in enumerate(rows):
            hg.addWidget(key, row, 1)
            hg.addWidget(value, row, 2)
        top.addWidget(self.health_box, 4)
        root.addLayout(top)

        self.consent_box = named(QGroupBox(), "consentBox")
        cl = QVBoxLayout(self.consent_box)
        self.consent_text = named(QTextEdit(), "consentText")
        self.consent_text.setReadOnly(True)
        self.consent_text.setMaximumHeight(90)
        cl.addWidget(self.consent_text)
        crow = QHBoxLayout()
        self.agree_button = named(QPushButton(), "agreeButton")
        self.refuse_button = named(QPushButton(), "refuseButton")
        self.agree_button.setStyleSheet("background:#2e7d32; color:white; padding:6px 14px;")
        self.refuse_button.setStyleSheet("background:#c62828; color:white; padding:6px 14px;")
        self.agree_button.clicked.connect(lambda: self.bridge.run(self.flow.agree, "agree"))
        self.refuse_button.clicked.connect(lambda: self.bridge.run(self.flow.refuse, "refuse"))
        crow.addWidget(self.agree_button)
        crow.addWidget(self.refuse_button)
        crow.addStretch(1)
        cl.addLayout(crow)
        root.addWidget(self.consent_box)

        self.steps_box = named(QGroupBox(), "stepsBox")
        sl = QVBoxLayout(self.steps_box)
        self.step_boxes: dict[str, QCheckBox] = {}
        for step in self.flow.steps:
            box = named(QCheckBox(), f"step_{step}")
            box.clicked.connect(lambda checked, s=step: self._tick_step(s, checked))
            self.step_boxes[step] = box
            sl.addWidget(box)
        root.addWidget(self.steps_box)

        root.addStretch(1)
        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        root.addWidget(line)
        controls = QHBoxLayout()
        self.start_button = named(QPushButton(), "startButton")
        self.start_button.setStyleSheet("font-weight:bold; padding:8px 18px;")
        self.start_button.clicked.connect(
            lambda: self.bridge.run(lambda: self.flow.start(source="ui"), "start"))
        self.pause_reason = named(QLineEdit(), "pauseReason")
        self.pause_reason.setMaxLength(200)
        self.pause_button = named(QPushButton(), "pauseButton")
        self.pause_button.clicked.connect(self._pause)
        self.pause_reason.returnPressed.connect(self._pause)
        self.resume_button = named(QPushButton(), "resumeButton")
        self.resume_button.clicked.connect(lambda: self.bridge.run(self.flow.resume, "resume"))
        self.stop_button = named(QPushButton(), "stopButton")
        self.stop_button.clicked.connect(lambda: self.bridge.run(self.flow.stop, "stop"))
        for w in (self.start_button, self.pause_reason, self.pause_button, self.resume_button,
                  self.stop_button):
            controls.addWidget(w)
        root.addLayout(controls)

        bottom = QHBoxLayout()
        self.error_label = named(QLabel(), "actionError")
        self.error_label.setStyleSheet("color:#c62828;")
        self.error_label.setWordWrap(True)
        bottom.addWidget(self.error_label, 1)
        self.k_language = QLabel()
        self.language_box = named(QComboBox(), "languageBox")
        for code, name in LANGUAGES.items():
            self.language_box.addItem(name, code)
        self.language_box.currentIndexChanged.connect(
            lambda i: self.tr_.set_language(self.language_box.itemData(i)))
        bottom.addWidget(self.k_language)
        bottom.addWidget(self.language_box)
        root.addLayout(bottom)
        self.setCentralWidget(central)
        self.resize(760, 720)

    # --- texts -------------------------------------------------------------------------------
    def retranslate(self) -> None:
        t = self.tr_
        self.setWindowTitle(t("app_title"))
        self.session_box.setTitle(t("session_title"))
        self.health_box.setTitle(t("health_title"))
        self.consent_box.setTitle(t("consent_title"))
        self.steps_box.setTitle(t("steps_title"))
        self.k_customer.setText(t("customer"))
        self.k_ref.setText(t("business_ref"))
        self.k_agent.setText(t("agent"))
        self.k_sid.setText(t("session_id"))
        self.k_screen.setText(t("screen"))
        self.k_mic.setText(t("microphone"))
        self.k_disk.setText(t("disk_free"))
        self.k_backlog.setText(t("upload_backlog"))
        self.k_language.setText(t("language"))
        for step, box in self.step_boxes.items():
            box.setText(t(f"step_{step}"))
        self.agree_button.setText(t("btn_agree"))
        self.refuse_button.setText(t("btn_refuse"))
        self.start_button.setText(t("btn_start"))
        self.pause_button.setText(t("btn_pause"))
        self.resume_button.setText(t("btn_resume"))
        self.stop_button.setText(t("btn_stop"))
        self.pause_reason.setPlaceholderText(t("pause_reason"))
        if self.preview.pixmap() is None or self.preview.pixmap().isNull():
            self.preview.setText(t("no_preview"))
        idx = self.language_box.findData(t.language)
        if idx >= 0 and idx != self.language_box.currentIndex():
            self.language_box.blockSignals(True)
            self.language_box.setCurrentIndex(idx)
            self.language_box.blockSignals(False)
        self._refresh_banner()
        self._refresh_warnings()

    def banner_text(self) -> tuple[str, str]:
        t, s = self.tr_, self.snap
        kind = banner_kind(s)
        code = t(f"code_{s.get('stop_code')}") if s.get("stop_code") else ""
        if kind == "recording":
            live = s.get("elapsed_s", 0.0) + (time.monotonic() - self._elapsed_at)
            hint = t("state_recording_warn_hint") if self._warnings else t("state_recording_hint")
            return t("state_recording", elapsed=fmt_elapsed(live)), hint
        if kind == "paused":
            return t("state_paused", reason=s.get("pause_reason", "")), t("state_paused_hint")
        if kind == "stopped":
            return t("state_stopped", code=code), t("state_idle_hint")
        if kind == "stopped_error":
            return (t("state_stopped_error", code=code),
                    t("state_stopped_error_hint", error=s.get("stop_error", "")))
        return t(f"state_{kind}"), t(f"state_{kind}_hint")

    @Slot()
    def _refresh_banner(self) -> None:
        kind = banner_kind(self.snap)
        text, hint = self.banner_text()
        self.banner.setText(text)
        self.hint.setText(hint)
        if kind == "recording" and self._warnings:
            kind = "recording_warning"
        bg, fg = COLOURS.get(kind, COLOURS["idle"])
        calm = kind == "recording"
        style = (f"background:{bg}; color:{fg}; border-radius:6px; padding:{'8px' if calm else '18px'};"
                 f"font-size:{'20pt' if calm else '28pt'};")
        if style != self.banner.styleSheet():  # re-polishing every second would be wasted work
            self.banner.setStyleSheet(style)
        self.banner.setProperty("bannerKind", kind)

    def _refresh_warnings(self) -> None:
        self._refresh_banner()
        if self._warnings:
            names = " · ".join(self.tr_(f"warn_{w}") for w in sorted(self._warnings))
            self.warnings_label.setText("⚠ " + names)
            self.warnings_label.show()
        else:
            self.warnings_label.hide()

    @Slot()
    def _refresh_backlog(self) -> None:
        if self.backlog is None:
            return
        try:
            b = self.backlog()
        except Exception:
            b = None
        if not b:
            self.backlog_label.setText("–")
            self.backlog_label.setToolTip("")
            return
        text = f"{b['count']} ({b['bytes'] / (1 << 20):.1f} MiB)"
        tips = []
        held = b.get("quarantined") or []
        if held:  # a session that does not match its manifest: kept on the seat, not uploaded
            text += " ⚠ " + self.tr_("backlog_held", n=len(held))
            tips += [self.tr_("backlog_held_one", session=q["session_id"], reason=q["reason"])
                     for q in held[:5]]
        if b.get("last_error"):
            text += " ⚠"
            tips.append(self.tr_("backlog_error", error=str(b["last_error"])[:300]))
        self.backlog_label.setText(text)
        self.backlog_label.setToolTip("\n".join(tips))

    # --- reactions ---------------------------------------------------------------------------
    @Slot(dict)
    def on_state(self, snap: dict[str, Any]) -> None:
        self.snap = snap
        self._elapsed_at = time.monotonic()
        state = snap["state"]
        live = state in ("consent", "recording", "paused")
        self.customer_label.setText(snap.get("customer_display") or "–")
        self.ref_label.setText(snap.get("business_ref") or "–")
        self.agent_label.setText(snap.get("agent") or "–")
        self.sid_label.setText(snap.get("session_id") or "–")
        self.consent_box.setVisible(state == "consent")
        self.consent_text.setPlainText(snap.get("consent_text", ""))
        done = set(snap.get("steps_done", []))
        for step, box in self.step_boxes.items():
            box.setChecked(step in done)
            box.setEnabled(state == "recording" and step not in done)
        self.start_button.setEnabled(not live)
        self.pause_button.setVisible(state in ("consent", "recording"))
        self.pause_reason.setVisible(state in ("consent", "recording"))
        self.resume_button.setVisible(state == "paused")
        self.stop_button.setEnabled(live)
        if not live:
            self._warnings.clear()
            self.preview.clear()
            self.preview.setText(self.tr_("no_preview"))
            self.mic_level.setValue(0)
            self.screen_label.setText("–")
        else:
            self._warnings = set(snap.get("warnings", []))
        self._refresh_warnings()
        self._refresh_banner()
        self.error_label.clear()

    @Slot(str, bool)
    def on_warning(self, kind: str, active: bool) -> None:
        (self._warnings.add if active else self._warnings.discard)(kind)
        self._refresh_warnings()

    @Slot(dict)
    def on_health(self, health: dict[str, Any]) -> None:
        thumb = health.get("camera_thumbnail", health.get("camera_thumb"))
        if thumb is not None and getattr(thumb, "ndim", 0) == 3 and thumb.shape[2] == 3:
            h, w = thumb.shape[:2]
            img = QImage(thumb.tobytes(), w, h, 3 * w, QImage.Format.Format_BGR888).copy()
            self.preview.setPixmap(QPixmap.fromImage(img).scaled(
                PREVIEW_W, PREVIEW_H, Qt.AspectRatioMode.KeepAspectRatio))
        level = health.get("mic_dbfs", health.get("mic_level_dbfs"))
        if level is not None:
            self.mic_level.setValue(int(min(max(float(level) + 60, 0), 60)))
        streams = health.get("streams") or {}
        screen = streams.get("screen") if isinstance(streams, dict) else None
        if isinstance(screen, dict) and "fps" in screen:
            fps, dropped = float(screen["fps"]), int(screen.get("dropped", 0))
            self.screen_label.setText(f"{fps:.0f} fps, {dropped} dropped")
        disk = health.get("disk_free_mb", health.get("disk_free_bytes"))
        if disk is not None:
            mb = float(disk) / (1 << 20) if "disk_free_bytes" in health else float(disk)
            self.disk_label.setText(f"{mb / 1024:.1f} GiB")

    def show_notice(self, message: str) -> None:
        """A line for the agent that is not an error of their action (e.g. a recovered crash)."""
        self.error_label.setStyleSheet("color:#e65100;")
        self.error_label.setText(message)

    @Slot(str)
    def on_action_failed(self, message: str) -> None:
        self.error_label.setStyleSheet("color:#c62828;")
        self._error = message
        self.error_label.setText(message)

    def _tick_step(self, step: str, checked: bool) -> None:
        if checked:
            self.step_boxes[step].setEnabled(False)
            self.bridge.run(lambda: self.flow.tick(step), f"tick-{step}")

    def _pause(self) -> None:
        reason = self.pause_reason.text().strip()
        if not reason:
            self.error_label.setText(self.tr_("reason_required"))
            self.pause_reason.setFocus()
            return
        self.pause_reason.clear()
        self.bridge.run(lambda: self.flow.pause(reason), "pause")

    # --- for the recorder: the station's own window on screen --------------------------------
    # cached in the UI thread; read from the recorder's threads (no widget call off the UI thread)
    _rect: tuple[int, int, int, int] | None = None

    def _remember_rect(self) -> None:
        if not self.isVisible() or self.isMinimized():
            self._rect = None
        else:
            g = self.frameGeometry()
            self._rect = (g.x(), g.y(), g.width(), g.height())

    def own_rect(self) -> tuple[int, int, int, int] | None:
        """The window's frame on screen (x, y, w, h), for masking it out of the screen recording."""
        return self._rect

    def moveEvent(self, event: Any) -> None:
        super().moveEvent(event)
        self._remember_rect()

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._remember_rect()

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self._remember_rect()

    def closeEvent(self, event: Any) -> None:
        """Closing the window must not end a call's recording by accident: while a session is
        live the window only minimises and says how to end it."""
        if self.snap.get("state") in ("consent", "recording", "paused"):
            event.ignore()
            self.error_label.setText(self.tr_("close_while_recording"))
            self.showMinimized()
            return
        super().closeEvent(event)

    def hideEvent(self, event: Any) -> None:
        super().hideEvent(event)
        self._rect = None
