"""The review player: camera and screen side by side, audio, transport controls and the timeline.

The widget drives a Qt-free :class:`~station.review.player.Player` from one QTimer in the UI
thread; the position comes from :class:`~station.review.player.PlaybackClock` (the audio device's
clock when there is an output device, the monotonic clock otherwise), so video follows audio.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from station import logs
from station.review.player import CAMERA, SCREEN, PlaybackClock, Player, VideoFrame
from station.review.session import TimelineItem
from ui.qt import (
    QBrush,
    QCheckBox,
    QColor,
    QComboBox,
    QHBoxLayout,
    QImage,
    QLabel,
    QPainter,
    QPen,
    QPixmap,
    QPointF,
    QPolygonF,
    QPushButton,
    QRectF,
    QSizePolicy,
    Qt,
    QTimer,
    QVBoxLayout,
    QWidget,
    Signal,
)

log = logs.get("ui")
SPEEDS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
TICK_MS = 15
SNAP_PX = 6

COLOURS = {
    "ok": "#3a9d5d", "truncated": "#e0a030", "altered": "#d03030", "missing": "#d03030",
    "reordered": "#d03030", "untrusted": "#b05090", "unsigned": "#b05090", "unverified": "#888888",
    "marker": "#1565c0", "consent": "#00897b", "event": "#607d8b", "pause": "#9e9e9e", "gap": "#bdbdbd",
    "masked": "#7e57c2", "pending": "#e91e63", "rule": "#00838f", "qc": "#ef6c00", "playhead": "#111111",
}

# The masking ledger's rules as the reviewer reads them (translated by the review window's table).
RULE_NAMES = {
    "mobile": "mobile number", "landline": "landline number", "id18": "ID number", "id15": "ID number",
    "bank_card": "bank card number", "labelled": "labelled value", "uncertain": "possible number",
    "name": "name", "address": "address", "email": "email address", "window": "window rule",
    "frame_error": "analysis error: whole frame", "clipped": "clipped line (masked whole)",
    "unreadable": "unreadable line (masked whole)",
    "unresolved": "not yet read (evidence gap)", "context_pending": "not yet read (evidence gap)",
}
NON_VALUE_RULES = ("window", "frame_error", "clipped", "unreadable")
MASK_TOLERANCE_S = 0.06  # ledger times vs the shown frame's pts (ms rounding, origin estimate)


def rule_label(rule: str) -> str:
    """The human name of a ledger rule in the review window's language."""
    return _tr(RULE_NAMES.get(rule, rule))


def mask_colour(rule: str, pending: bool) -> str:
    """Outline colour on the frame and the timeline: pending (evidence gap), rule, or value."""
    return COLOURS["pending" if pending else "rule" if rule in NON_VALUE_RULES else "masked"]


def _tr(text: str) -> str:
    from ui.review_window import tr

    return tr(text)


def fmt_time(t_s: float) -> str:
    t = max(0, int(t_s))
    return f"{t // 3600:d}:{t // 60 % 60:02d}:{t % 60:02d}" if t >= 3600 else f"{t // 60:02d}:{t % 60:02d}"


class TimelineWidget(QWidget):
    """Segments, markers, operation-log events, pauses, masked spans and QC flags on one axis.

    Signals:
        seek_requested: the reviewer clicked; arg: session time in seconds (snapped to the
            nearest marker or event within a few pixels).
    """

    seek_requested = Signal(float)
    ROWS = ("segment", "marker", "event", "pause", "masked", "pending", "qc")
    ROW_NAMES: ClassVar[dict[str, str]] = {"segment": "segments", "marker": "markers", "event": "op-log",
                                           "pause": "pauses", "masked": "masked", "pending": "not yet read",
                                           "qc": "QC"}

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.items: list[TimelineItem] = []
        self.duration_s = 1.0
        self.position_s = 0.0
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMouseTracking(True)

    def set_items(self, items: list[TimelineItem], duration_s: float) -> None:
        self.items = list(items)
        self.duration_s = max(duration_s, max((i.end_s for i in items), default=0.0), 0.001)
        self.update()

    def set_position(self, t_s: float) -> None:
        self.position_s = t_s
        self.update()

    def x_of(self, t_s: float) -> float:
        return 8 + (self.width() - 16) * min(max(t_s / self.duration_s, 0.0), 1.0)

    def t_of(self, x: float) -> float:
        return min(max((x - 8) / max(1, self.width() - 16), 0.0), 1.0) * self.duration_s

    def _row_rect(self, row: str) -> QRectF:
        h = (self.height() - 6) / len(self.ROWS)
        i = self.ROWS.index(row if row in self.ROWS else "pause")
        return QRectF(0, 3 + i * h, self.width(), h - 2)

    def paintEvent(self, _event: Any) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor("#fafafa"))
        font = p.font()
        font.setPointSize(7)
        p.setFont(font)
        for row in self.ROWS:
            r = self._row_rect(row)
            p.setPen(QColor("#e0e0e0"))
            p.drawLine(QPointF(8, r.bottom()), QPointF(self.width() - 8, r.bottom()))
            p.setPen(QColor("#9e9e9e"))
            p.drawText(QRectF(self.width() - 90, r.top(), 82, r.height()),
                       int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight),
                       _tr(self.ROW_NAMES[row]))
        for it in self.items:
            row = "pause" if it.kind == "gap" else it.kind
            r = self._row_rect(row)
            x0, x1 = self.x_of(it.start_s), self.x_of(it.end_s)
            if it.kind == "segment":
                colour = QColor(COLOURS.get(it.detail.get("status", "unverified"), "#888888"))
                p.fillRect(QRectF(x0, r.top() + 2, max(2.0, x1 - x0 - 1), r.height() - 4), colour)
                p.setPen(QColor("white"))
                p.drawText(QRectF(x0 + 3, r.top(), max(2.0, x1 - x0 - 4), r.height()),
                           int(Qt.AlignmentFlag.AlignVCenter),
                           f"{it.detail.get('seq')} {it.detail.get('status')}")
            elif it.kind == "marker":
                colour = QColor(COLOURS["consent" if it.label.startswith("consent") else "marker"])
                p.setBrush(QBrush(colour))
                p.setPen(Qt.PenStyle.NoPen)
                p.drawPolygon(QPolygonF([QPointF(x0 - 5, r.top() + 2), QPointF(x0 + 5, r.top() + 2),
                                         QPointF(x0, r.bottom() - 2)]))
                p.setPen(colour)
                p.drawText(QRectF(x0 + 7, r.top() - 1, 170, r.height() + 2),
                           int(Qt.AlignmentFlag.AlignVCenter), it.label.split(": ", 1)[-1])
            elif it.kind == "event":
                p.setPen(QPen(QColor(COLOURS["event"]), 1.5))
                p.drawLine(QPointF(x0, r.top() + 3), QPointF(x0, r.bottom() - 3))
            else:
                colour = QColor(COLOURS.get(it.kind, "#999999"))
                if it.kind == "masked":
                    colour = QColor(mask_colour(it.label, False))
                colour.setAlpha(170)
                p.fillRect(QRectF(x0, r.top() + 3, max(2.0, x1 - x0), r.height() - 6), colour)
        x = self.x_of(self.position_s)
        p.setPen(QPen(QColor(COLOURS["playhead"]), 2))
        p.drawLine(QPointF(x, 0), QPointF(x, self.height()))
        p.end()

    def item_near(self, x: float) -> TimelineItem | None:
        best, best_d = None, SNAP_PX + 0.1
        for it in self.items:
            if it.kind in ("marker", "event"):
                d = abs(self.x_of(it.start_s) - x)
                if d < best_d:
                    best, best_d = it, d
        return best

    def mousePressEvent(self, event: Any) -> None:
        x = float(event.position().x())
        it = self.item_near(x)
        self.seek_requested.emit(it.start_s if it is not None else self.t_of(x))


def to_pixmap(frame: VideoFrame, width: int, height: int) -> QPixmap:
    rgb = np.ascontiguousarray(frame.rgb())
    h, w = rgb.shape[:2]
    img = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    pm = QPixmap.fromImage(img.copy())
    return pm.scaled(width, height, Qt.AspectRatioMode.KeepAspectRatio,
                     Qt.TransformationMode.SmoothTransformation)


def draw_masks(pm: QPixmap, frame_w: int, frame_h: int, masks: list[tuple[Any, ...]]) -> None:
    """Outline and label each (box [x0, y0, x1, y1] in frame pixels, label, colour) on ``pm``,
    the frame scaled to ``pm``'s size."""
    if not masks or frame_w <= 0 or frame_h <= 0:
        return
    sx, sy = pm.width() / frame_w, pm.height() / frame_h
    p = QPainter(pm)
    font = p.font()
    font.setPointSize(7)
    p.setFont(font)
    fm_h = p.fontMetrics().height()
    for box, label, colour in masks:
        x0, y0, x1, y1 = box
        r = QRectF(x0 * sx, y0 * sy, max(1.0, (x1 - x0) * sx), max(1.0, (y1 - y0) * sy))
        pen = QPen(QColor(colour), 2)
        pen.setJoinStyle(Qt.PenJoinStyle.MiterJoin)
        p.setPen(pen)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(r)
        tw = p.fontMetrics().horizontalAdvance(label) + 6
        ty = r.top() - fm_h - 1 if r.top() >= fm_h + 1 else r.bottom() + 1
        tag = QRectF(r.left(), ty, tw, fm_h)
        p.fillRect(tag, QColor(colour))
        p.setPen(QColor("white"))
        p.drawText(tag, int(Qt.AlignmentFlag.AlignCenter), label)
    p.end()


class VideoPane(QLabel):
    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(240, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setStyleSheet("background: #202020; color: #bbbbbb;")
        self.shown_pts: float | None = None
        self.frame_size: tuple[int, int] | None = None  # (width, height) of the shown frame
        self.shown_masks: list[tuple[Any, ...]] = []
        self._key: tuple[Any, ...] | None = None
        self.blank(f"{title}: —")

    def blank(self, text: str) -> None:
        self.shown_pts = None
        self.frame_size = None
        self.shown_masks = []
        self._key = None
        self.clear()
        self.setText(text)

    def show_frame(self, frame: VideoFrame | None, gap_text: str,
                   masks: Any = None) -> None:
        """Show ``frame`` scaled to the pane; ``masks(pts_s)`` gives the (box, label, colour)
        outlines to draw over it (boxes in the frame's pixels)."""
        if frame is None:
            if self.shown_pts is not None or not self.text():
                self.blank(gap_text)
            return
        shown = list(masks(frame.pts_s)) if masks is not None else []
        key = (frame.pts_s, self.width(), self.height(), tuple((tuple(b), lb, c) for b, lb, c in shown))
        if key == self._key:
            return
        self._key = key
        self.shown_pts = frame.pts_s
        pm = to_pixmap(frame, max(1, self.width()), max(1, self.height()))
        w, h = frame.width, frame.height  # the screen stream's own size: ledger boxes are in it
        self.frame_size = (w, h)
        self.shown_masks = shown
        draw_masks(pm, w, h, shown)
        self.setPixmap(pm)

    def frame_rect(self) -> QRectF | None:
        """Where the shown frame lies in the pane (the pixmap is centred, aspect kept)."""
        pm = self.pixmap()
        if self.frame_size is None or pm is None or pm.isNull():
            return None
        return QRectF((self.width() - pm.width()) / 2, (self.height() - pm.height()) / 2,
                      pm.width(), pm.height())

    def map_box(self, box: list[float]) -> QRectF | None:
        """A box in frame pixels mapped to pane coordinates."""
        r = self.frame_rect()
        if r is None or self.frame_size is None:
            return None
        sx, sy = r.width() / self.frame_size[0], r.height() / self.frame_size[1]
        return QRectF(r.left() + box[0] * sx, r.top() + box[1] * sy,
                      (box[2] - box[0]) * sx, (box[3] - box[1]) * sy)


class PlayerWidget(QWidget):
    """Camera and screen side by side, transport controls and the timeline.

    Signals:
        position_changed: the shown position moved. arg: session time in seconds.
        export_requested: the reviewer pressed Export.
    """

    position_changed = Signal(float)
    export_requested = Signal()

    def __init__(self, parent: QWidget | None = None, audio: bool = True) -> None:
        super().__init__(parent)
        self.player: Player | None = None
        self.clock: PlaybackClock | None = None
        self.refused: set[int] = set()
        self._audio = audio
        self.camera_pane = VideoPane("camera")
        self.screen_pane = VideoPane("screen")
        panes = QHBoxLayout()
        panes.addWidget(self.camera_pane, 2)
        panes.addWidget(self.screen_pane, 3)
        self.play_button = QPushButton(_tr("▶ Play"))
        self.play_button.clicked.connect(self.toggle)
        self.speed = QComboBox()
        for s in SPEEDS:
            self.speed.addItem(f"{s:g}x", s)
        self.speed.setCurrentIndex(SPEEDS.index(1.0))
        self.speed.currentIndexChanged.connect(self._speed_changed)
        self.time_label = QLabel("00:00 / 00:00")
        self.status = QLabel("")
        self.export_button = QPushButton(_tr("Export…"))
        self.export_button.clicked.connect(self.export_requested.emit)
        self.masks: list[TimelineItem] = []
        self.show_masking = QCheckBox(_tr("show masking"))
        self.show_masking.setChecked(True)
        self.show_masking.toggled.connect(self._rerender)
        controls = QHBoxLayout()
        for w in (self.play_button, QLabel(_tr("Speed")), self.speed, self.time_label, self.show_masking):
            controls.addWidget(w)
        controls.addWidget(self.status, 1)
        controls.addWidget(self.export_button)
        self.timeline = TimelineWidget()
        self.timeline.seek_requested.connect(self.seek)
        lay = QVBoxLayout(self)
        lay.addLayout(panes, 1)
        lay.addLayout(controls)
        lay.addWidget(self.timeline)
        self.timer = QTimer(self)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)

    # --- session -------------------------------------------------------------------------------
    def load(self, player: Player, items: list[TimelineItem]) -> None:
        self.unload()
        self.player = player
        self.refused = set(player.refused)
        self.clock = PlaybackClock(player, audio=self._audio)
        if self._audio and not self.clock.has_audio:
            self.status.setText("no audio output device: video only")
        self.masks = [i for i in items if i.kind in ("masked", "pending") and i.detail.get("box")]
        self.timeline.set_items(items, player.duration_s)
        self.seek(0.0)

    def unload(self) -> None:
        self.timer.stop()
        if self.clock is not None:
            self.clock.close()
        if self.player is not None:
            self.player.close()
        self.player, self.clock = None, None
        self.masks = []
        self.play_button.setText(_tr("▶ Play"))
        self.camera_pane.blank("camera: —")
        self.screen_pane.blank("screen: —")

    # --- transport -------------------------------------------------------------------------------
    @property
    def playing(self) -> bool:
        return bool(self.clock and self.clock.playing)

    def toggle(self) -> None:
        if self.playing:
            self.pause()
        else:
            self.play()

    def play(self) -> None:
        if self.clock is None:
            return
        self.clock.play()
        self.play_button.setText(_tr("❚❚ Pause"))
        self.timer.start()

    def pause(self) -> None:
        if self.clock is None:
            return
        self.clock.pause()
        self.timer.stop()
        self.play_button.setText(_tr("▶ Play"))
        self._render(self.clock.position_s())

    def set_speed(self, speed: float) -> None:
        self.speed.setCurrentIndex(SPEEDS.index(speed))

    def _speed_changed(self, _index: int) -> None:
        if self.clock is not None:
            self.clock.set_speed(float(self.speed.currentData()))

    def seek(self, t_s: float) -> None:
        if self.clock is None:
            return
        self.clock.seek(t_s)
        self._render(self.clock.position_s())

    def position_s(self) -> float:
        return self.clock.position_s() if self.clock else 0.0

    # --- rendering ---------------------------------------------------------------------------------
    def masks_at(self, pts_s: float) -> list[tuple[list[float], str, str]]:
        """The ledger boxes over the screen frame captured at ``pts_s``: (box, label, colour),
        evidence gaps (not yet read) drawn last, on top. Empty when "show masking" is off."""
        if not self.show_masking.isChecked():
            return []
        tol = MASK_TOLERANCE_S
        on = [m for m in self.masks if m.start_s - tol <= pts_s <= m.end_s + tol]
        on.sort(key=lambda m: bool(m.detail.get("pending")))
        return [(list(m.detail["box"]), rule_label(m.label), mask_colour(m.label, bool(m.detail.get("pending"))))
                for m in on]

    def _rerender(self, *_args: Any) -> None:
        if self.clock is not None:
            self._render(self.clock.position_s())

    def _tick(self) -> None:
        if self.clock is None or self.player is None:
            return
        try:
            self.clock.pump()
            t = self.clock.position_s()
            if t >= self.player.duration_s:
                self.pause()
                self.seek(self.player.duration_s)
                return
            self._render(t)
        except Exception as exc:  # a decode failure stops playback with a visible message
            log.exception("playback failed")
            self.pause()
            self.status.setText(f"playback stopped: {exc}")

    def _render(self, t_s: float) -> None:
        if self.player is None:
            return
        seq = self.player.segments[self.player.segment_index_at(t_s)].seq
        gap = f"segment {seq} failed verification: not played" if seq in self.refused else "no video"
        self.camera_pane.show_frame(self.player.frame_at(CAMERA, t_s), gap)
        self.screen_pane.show_frame(self.player.frame_at(SCREEN, t_s), gap, self.masks_at)
        self.timeline.set_position(t_s)
        self.time_label.setText(f"{fmt_time(t_s)} / {fmt_time(self.player.duration_s)}")
        self.position_changed.emit(t_s)

    def closeEvent(self, event: Any) -> None:
        self.unload()
        super().closeEvent(event)
