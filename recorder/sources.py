"""Capture sources: screen (mss), camera (OpenCV), microphone (sounddevice), operation log.

Each source owns its thread (or the PortAudio callback) and pushes timestamped items into a
:class:`~recorder.items.DropQueue`; a full queue drops with a count, never blocking a device.
An exception in a device thread is stashed in ``source.error`` and re-raised by the pipeline on
the consumer side (``source.check()``), never a silent thread death.
"""

from __future__ import annotations

import abc
import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from recorder.items import AudioChunk, DropQueue, OpEvent, VideoFrame, i420_planes
from recorder.packets import PacketDecoder, frame_image, open_packets
from station import logs
from station.clock import Clock
from station.errors import DeviceLost, UsageError

log = logs.get("capture")


class Source(abc.ABC):  # noqa: B024 - template methods with optional hooks
    """A capture device that pushes timestamped items to a queue."""

    name = "source"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.queue: DropQueue[Any] | None = None
        self.error: BaseException | None = None
        self.captured = 0
        self.last_capture_ns = 0
        self.info: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._opened = False
        self._started = False
        self._stopped = False

    def open(self) -> None:
        """Open the device now (idempotent): a missing device fails here, before recording."""
        with self._lock:
            if not self._opened:
                self._open()
                self._opened = True

    def start(self, queue: DropQueue[Any]) -> None:
        with self._lock:
            if self._started:
                return
            self.queue = queue
            if not self._opened:
                self._open()
                self._opened = True
            self._started = True
            self._start_impl()

    def stop(self) -> None:
        """Stop capturing and release the device (idempotent)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._stop.set()
            if self._started:
                self._stop_impl()
            elif self._opened:
                self._close()

    def check(self) -> None:
        """Re-raise on the consumer side what the device thread stashed."""
        if self.error is not None:
            err = self.error
            if isinstance(err, DeviceLost):
                raise err
            raise DeviceLost(self.name, f"{type(err).__name__}: {err}") from err

    def _push(self, item: Any) -> None:
        assert self.queue is not None
        self.captured += 1
        self.last_capture_ns = item.capture_ns
        self.queue.offer(item)

    def _open(self) -> None:  # noqa: B027 - optional hook
        """Open the device (raises on the caller's thread, before anything runs)."""

    def _start_impl(self) -> None:
        self._thread = threading.Thread(target=self._guarded, name=f"src-{self.name}", daemon=True)
        self._thread.start()

    def _stop_impl(self) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._close()

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release the device."""

    def _guarded(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # stashed, re-raised by the consumer
            log.error("%s source failed: %s", self.name, exc)
            self.error = exc

    def _run(self) -> None:
        raise NotImplementedError


class PacedSource(Source):
    """A source that samples on a fixed schedule of ``fps`` ticks per second.

    A thread delayed by the OS (a busy machine) catches up on missed ticks at once, with their real
    capture times; ticks more than ``CATCH_UP_S`` behind are skipped and counted as drops, so
    frame counts stay honest (fps x duration minus drops)."""

    fps: float = 15.0
    CATCH_UP_S = 2.0  # a capture thread delayed by the OS up to this long catches up, no drop

    def _run(self) -> None:
        period_ns = int(1e9 / self.fps)
        start_ns = self.clock.now_ns()
        tick = 0
        while not self._stop.is_set():
            due_ns = start_ns + tick * period_ns
            wait_s = (due_ns - self.clock.now_ns()) / 1e9
            if wait_s > 0 and self._stop.wait(wait_s):
                break
            self._tick(tick)
            tick += 1
            behind = (self.clock.now_ns() - start_ns) // period_ns - tick - int(self.CATCH_UP_S * self.fps)
            if behind > 0:  # ticks missed while capturing (a short delay is caught up instead)
                assert self.queue is not None
                self.queue.count_drop(int(behind))
                tick += int(behind)

    @abc.abstractmethod
    def _tick(self, tick: int) -> None: ...


def parse_monitor(spec: str) -> int | tuple[int, int, int, int] | str:
    spec = str(spec).strip()
    if spec == "all":
        return "all"
    if "," in spec:
        parts = spec.split(",")
        if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
            raise UsageError(f"monitor {spec!r}: expected a number, 'all' or 'x,y,w,h'")
        x, y, w, h = (int(p) for p in parts)
        if w < 16 or h < 16:
            raise UsageError(f"monitor region {spec!r} is too small")
        return (x, y, w, h)
    if not spec.isdigit() or int(spec) < 1:
        raise UsageError(f"monitor {spec!r}: expected a number from 1, 'all' or 'x,y,w,h'")
    return int(spec)


def fit_frame(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale keeping the aspect ratio and letterbox into width x height (no-op if it fits)."""
    h, w = img.shape[:2]
    if (w, h) == (width, height):
        return img
    scale = min(width / w, height / h)
    nw, nh = max(2, int(w * scale)) & ~1, max(2, int(h * scale)) & ~1
    small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.zeros((height, width, img.shape[2]), np.uint8)
    y, x = (height - nh) // 2, (width - nw) // 2
    out[y:y + nh, x:x + nw] = small
    return out


def blend_cursor(img: np.ndarray, bgra: Any, x: int, y: int, w: int, h: int) -> None:
    """Blend a straight-alpha BGRA cursor image (w x h at x, y; may stick out) into a BGRA frame."""
    fh, fw = img.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, fw), min(y + h, fh)
    if x0 >= x1 or y0 >= y1:
        return
    cur = np.frombuffer(bgra, np.uint8).reshape(h, w, 4)[y0 - y:y1 - y, x0 - x:x1 - x]
    alpha = cur[..., 3:4].astype(np.uint16)
    dst = img[y0:y1, x0:x1, :3]
    dst[...] = ((cur[..., :3] * alpha + dst * (255 - alpha) + 127) // 255).astype(np.uint8)


def blend_cursor_i420(yuv: np.ndarray, bgra: np.ndarray, cursor: Any, x: int, y: int, w: int, h: int) -> None:
    """Draw the cursor into I420 planes converted from ``bgra``: the cursor's box, widened to
    even coordinates, is blended in BGRA and converted again, so the planes equal the conversion
    of a frame blended first (each 2x2 chroma block is converted from the same pixels)."""
    fh, fw = bgra.shape[:2]
    x0, y0 = max(x, 0) & ~1, max(y, 0) & ~1
    x1, y1 = min(x + w + (x + w) % 2, fw), min(y + h + (y + h) % 2, fh)
    if x1 - x0 < 2 or y1 - y0 < 2 or (x1 - x0) % 2 or (y1 - y0) % 2:
        return
    patch = bgra[y0:y1, x0:x1].copy()
    blend_cursor(patch, cursor, x - x0, y - y0, w, h)
    sub = i420_planes(cv2.cvtColor(patch, cv2.COLOR_BGRA2YUV_I420))
    full = i420_planes(yuv)
    full[0][y0:y1, x0:x1] = sub[0]
    for plane, part in zip(full[1:], sub[1:], strict=True):
        plane[y0 // 2:y1 // 2, x0 // 2:x1 // 2] = part


def shm_grabber(sct: Any) -> Callable[[dict[str, int]], np.ndarray] | None:
    """A grab without mss's copy: XShmGetImage into mss's own shared segment, returned as a
    read-only view that the next grab overwrites. Uses mss 10.2's XCB backend internals (the
    pinned version); None where they differ or MIT-SHM does not work (then mss.grab is used)."""
    impl: Any = getattr(sct, "_impl", None)
    try:
        from mss.linux import xcb as xcb_module
        from mss.linux.base import ALL_PLANES
        from mss.linux.xshmgetimage import MSSImplXShmGetImage, ShmStatus

        if not isinstance(impl, MSSImplXShmGetImage):
            return None
        shm: Any = impl  # its segment attributes are Optional until set up, as they are by now
        sct.grab({"left": 0, "top": 0, "width": 16, "height": 16})  # settles the shm status
        if shm.shm_status != ShmStatus.AVAILABLE or shm._buf is None:
            return None
        xcb: Any = xcb_module  # its names are not re-exported for type checkers
        get_image, zpixmap = xcb.shm_get_image, xcb.ImageFormat.ZPixmap
    except Exception as exc:  # another mss, no MIT-SHM: the copying grab
        log.info("screen grabs go through mss's copy: %s", exc)
        return None

    def grab(area: dict[str, int]) -> np.ndarray:
        w, h = area["width"], area["height"]
        if w * h * 4 > shm._bufsize:
            raise ValueError(f"the area {w}x{h} exceeds the shared segment (the screen grew)")
        reply = get_image(shm.conn, shm.drawable, area["left"], area["top"], w, h, ALL_PLANES,
                          zpixmap, shm._shmseg, 0)
        if reply.depth != shm.drawable_depth:
            raise ValueError(f"the server returned depth {reply.depth}, expected {shm.drawable_depth}")
        return np.frombuffer(shm._buf, np.uint8, count=w * h * 4).reshape(h, w, 4)

    return grab


class ScreenSource(PacedSource):
    """Screen frames with mss: a monitor (1 = first), ``"all"`` (the virtual screen spanning every
    monitor), or a region ``(x, y, w, h)``. The cursor is drawn in (XFixes). Frames are BGRA,
    scaled/letterboxed to ``width`` x ``height``; with ``i420`` (set when no masker needs BGRA)
    they are I420 planes, converted straight from mss's shared-memory segment where the area has
    the output size: that saves mss's copy of every grab (0.9 ms of 2.6 for grab + conversion at
    1080p here) and carries 3 MB a frame through the queues instead of 8 MB.

    Monitors that appear or disappear are handled: the layout is re-read every few seconds and
    after a failed grab; a chosen monitor that vanished falls back to the first one (reported via
    ``on_change``), and the output size never changes within a session.
    """

    name = "screen"

    def __init__(self, clock: Clock, *, monitor: str = "1", fps: float = 15, width: int = 1920,
                 height: int = 1080, draw_cursor: bool = True, i420: bool = False,
                 on_change: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        super().__init__(clock)
        self.spec = parse_monitor(monitor)
        self.fps, self.width, self.height = float(fps), int(width), int(height)
        self.draw_cursor = draw_cursor
        self.i420 = i420
        self._shm_grab: Callable[[dict[str, int]], np.ndarray] | None = None
        self.on_change = on_change
        self._sct: Any = None
        self._cursor_fn: Callable[[], Any] | None = None
        self._area: dict[str, int] = {}
        self._layout_checked_ns = 0
        self._fail_count = 0

    def _resolve(self) -> dict[str, int]:
        monitors = self._sct.monitors
        if self.spec == "all":
            return dict(monitors[0])
        if isinstance(self.spec, tuple):
            x, y, w, h = self.spec
            return {"left": x, "top": y, "width": w, "height": h}
        if isinstance(self.spec, int) and self.spec < len(monitors):
            return dict(monitors[self.spec])
        return dict(monitors[1] if len(monitors) > 1 else monitors[0])

    def _open(self) -> None:
        import mss

        try:
            self._sct = mss.MSS(with_cursor=False)
        except Exception as exc:
            raise DeviceLost("screen", f"cannot open the display: {exc}") from exc
        # mss blends the cursor in a Python loop over its pixels (0.3-0.45 ms a frame here); its
        # backend's cursor() (XFixes, BGRA) is blended with numpy instead (~0.05 ms). An mss
        # without that backend method draws it itself.
        self._cursor_fn = getattr(getattr(self._sct, "_impl", None), "cursor", None) if self.draw_cursor else None
        if self.draw_cursor and self._cursor_fn is None:
            self._sct.close()
            self._sct = mss.MSS(with_cursor=True)
        self._shm_grab = shm_grabber(self._sct) if self.i420 else None
        monitors = self._sct.monitors
        if isinstance(self.spec, int) and self.spec >= len(monitors):
            self._sct.close()
            raise UsageError(f"monitor {self.spec} does not exist (this display has {len(monitors) - 1})")
        self._area = self._resolve()
        self.info = {"monitors": len(monitors) - 1, "area": dict(self._area),
                     "width": self.width, "height": self.height, "fps": self.fps}

    def _relayout(self) -> None:
        # mss caches the monitor list; drop the cache so a plugged/unplugged monitor shows up
        with contextlib.suppress(AttributeError):
            self._sct._monitors = None
        area = self._resolve()
        if area != self._area:
            log.warning("screen layout changed: %s -> %s", self._area, area)
            old, self._area = self._area, area
            self.info["area"] = dict(area)
            self.info["monitors"] = len(self._sct.monitors) - 1
            if self.on_change:
                self.on_change("screen_layout_changed", {"old": old, "new": area,
                                                         "monitors": self.info["monitors"]})

    def _tick(self, tick: int) -> None:
        now = self.clock.now_ns()
        if now - self._layout_checked_ns > 3_000_000_000:
            self._layout_checked_ns = now
            self._relayout()
        before_ns = self.clock.now_ns()
        try:
            if self._shm_grab is not None:
                view = self._shm_grab(self._area)  # read-only, valid until the next grab
            else:
                shot = self._sct.grab(self._area)
                view = np.frombuffer(shot.raw, np.uint8).reshape(shot.height, shot.width, 4)
        except Exception as exc:  # a monitor vanished under us: re-read the layout once
            self._fail_count += 1
            if self._fail_count > 10:
                raise DeviceLost("screen", str(exc)) from exc
            self._relayout()
            assert self.queue is not None
            self.queue.count_drop()
            return
        # the X server copies the pixels somewhere inside the call; a thread that waited for the
        # GIL before or after it makes either end late, the midpoint halves that error
        capture_ns = (before_ns + self.clock.now_ns()) // 2
        self._fail_count = 0
        h, w = view.shape[:2]
        if self.i420 and (w, h) == (self.width, self.height):
            # no reference to the shared segment may outlive this block, not even in a traceback:
            # mss cannot unmap it while one exists
            error = None
            try:
                yuv = cv2.cvtColor(view, cv2.COLOR_BGRA2YUV_I420)
                cursor = self._cursor()
                if cursor is not None:
                    blend_cursor_i420(yuv, view, *cursor)
            except Exception as exc:
                error = f"converting a grab: {type(exc).__name__}: {exc}"
            del view
            if error is not None:
                raise DeviceLost("screen", error)
            self._push(VideoFrame(capture_ns, yuv, seq=tick))
            return
        img = view if view.flags.writeable else view.copy()
        del view
        cursor = self._cursor()
        if cursor is not None:
            blend_cursor(img, *cursor)
        img = fit_frame(img, self.width, self.height)
        if self.i420:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2YUV_I420)
        self._push(VideoFrame(capture_ns, img, seq=tick))

    def _cursor(self) -> tuple[Any, int, int, int, int] | None:
        """The cursor image (BGRA) and its x, y, w, h relative to the grabbed area, or None."""
        if self._cursor_fn is None:
            return None
        try:
            cur = self._cursor_fn()
        except Exception as exc:  # no XFixes on this server: record without the cursor
            log.warning("the cursor cannot be read (%s): recording without it", exc)
            self._cursor_fn = None
            return None
        if cur is None:
            return None
        return cur.raw, cur.left - self._area["left"], cur.top - self._area["top"], cur.width, cur.height

    def _close(self) -> None:
        if self._sct is not None:
            self._sct.close()
            self._sct = None


class CameraSource(Source):
    """Camera frames with OpenCV ``VideoCapture``: a device index or any URL/file OpenCV opens.

    Requested resolution and fps are negotiated with the device and the actual values reported in
    ``info``. A regular file is played in real time at the requested fps and looped (that is how
    tests and demos bring a camera). Frames are BGR scaled to ``width`` x ``height``, except that
    a file or URL whose pictures are already yuv420p of that size is passed on as I420 planes
    (see :mod:`recorder.packets`: OpenCV demuxes, PyAV decodes, no BGR round trip).
    """

    name = "camera"
    MAX_FAILED_READS = 25

    def __init__(self, clock: Clock, src: str | int, *, width: int = 1280, height: int = 720,
                 fps: float = 25) -> None:
        super().__init__(clock)
        self.src: str | int = int(src) if isinstance(src, str) and src.isdigit() else src
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self._cap: Any = None
        self._packets: PacketDecoder | None = None
        self._is_file = isinstance(self.src, str) and os.path.isfile(self.src)

    def _open(self) -> None:
        cap = None
        if isinstance(self.src, str):
            opened = open_packets(self.src)
            if opened is not None:
                cap, self._packets = opened
        if cap is None and isinstance(self.src, str):
            # a file or stream: FFmpeg decodes it with one thread. Its default (a frame thread
            # per core and one more) costs ~20 % more CPU per frame on a 2-core seat, and the
            # camera thread only needs 25 frames a second, not the fastest decode.
            cap = cv2.VideoCapture(self.src, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
            if not cap.isOpened():
                cap = None
        if cap is None:
            cap = cv2.VideoCapture(self.src)
        if not cap.isOpened():
            raise DeviceLost(str(self.src), "OpenCV cannot open it")
        if not self._is_file:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        self._cap = cap
        self.info = {"source": str(self.src), "file": self._is_file,
                     "device_width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     "device_height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     "device_fps": round(float(cap.get(cv2.CAP_PROP_FPS) or 0), 3),
                     "width": self.width, "height": self.height, "fps": self.fps,
                     "decoder": f"pyav-{self._packets.codec}" if self._packets else "opencv"}

    def _read(self) -> tuple[np.ndarray, bool] | None:
        """(image, is_i420) of the next picture, or None if the device gave none."""
        if self._packets is not None:
            frame = self._packets.next(drain_at_end=self._is_file)
            if frame is None and self._is_file:  # loop a file
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                frame = self._packets.next(drain_at_end=True)
            return None if frame is None else frame_image(frame, self.width, self.height)
        ok, img = self._cap.read()
        if not ok and self._is_file:  # loop a file
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, img = self._cap.read()
        return (img, False) if ok else None

    def _skip(self, n: int) -> None:
        """Pass over n pictures a late thread missed (decoded, as later ones reference them)."""
        for _ in range(n):
            if self._packets is not None:
                self._packets.next(drain_at_end=self._is_file)
            else:
                self._cap.grab()

    def _run(self) -> None:
        period_ns = int(1e9 / self.fps)
        start_ns = self.clock.now_ns()
        tick = failed = 0
        while not self._stop.is_set():
            if self._is_file:  # a file has no clock of its own: pace it
                due_ns = start_ns + tick * period_ns
                wait_s = (due_ns - self.clock.now_ns()) / 1e9
                if wait_s > 0 and self._stop.wait(wait_s):
                    break
            got = self._read()
            capture_ns = self.clock.now_ns()
            if got is None:
                failed += 1
                if failed >= self.MAX_FAILED_READS:
                    raise DeviceLost(str(self.src), f"{failed} reads in a row failed")
                self._stop.wait(0.02)
                continue
            failed = 0
            img, i420 = got
            if not i420:
                if img.ndim == 2:
                    img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
                img = fit_frame(img, self.width, self.height)
            self._push(VideoFrame(capture_ns, img, seq=tick))
            tick += 1
            if self._is_file:
                behind = (self.clock.now_ns() - start_ns) // period_ns - tick \
                    - int(PacedSource.CATCH_UP_S * self.fps)
                if behind > 0:
                    assert self.queue is not None
                    self.queue.count_drop(int(behind))
                    self._skip(int(behind))
                    tick += int(behind)

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
            self._packets = None


class MicrophoneSource(Source):
    """Microphone blocks with sounddevice, timestamped with the time of their FIRST sample.

    PortAudio's ADC time of the block is mapped onto the session clock through the stream's own
    ``currentTime`` (both read in the callback), so capture latency inside the audio stack is
    taken out; if the host API gives no ADC time, now minus the block duration is used.
    Overflows are counted.
    """

    name = "microphone"

    def __init__(self, clock: Clock, device: str | int | None = None, *, rate_hz: int = 48000,
                 channels: int = 1, block_frames: int | None = None) -> None:
        super().__init__(clock)
        if isinstance(device, str):
            device = int(device) if device.isdigit() else (device or None)
        self.device = device
        self.rate_hz, self.channels = int(rate_hz), int(channels)
        self.block_frames = block_frames or self.rate_hz // 20  # 50 ms: fewer wake-ups, same pts
        # PortAudio's default (low) latency on purpose: "high" spent less CPU, but its larger
        # buffer kept a start-up backlog, and ALSA's pulse device stamps blocks "now": 60 ms late
        self.overflows = 0
        self.level_dbfs = -120.0
        self.callbacks = 0
        self.first_callback = threading.Event()
        self._stream: Any = None

    def _open(self) -> None:
        import sounddevice as sd

        try:
            self._stream = sd.InputStream(device=self.device, samplerate=self.rate_hz,
                                          channels=self.channels, dtype="float32",
                                          blocksize=self.block_frames, callback=self._callback,
                                          finished_callback=self._finished)
        except Exception as exc:
            raise DeviceLost(str(self.device or "default input"), str(exc)) from exc
        self.info = {"device": str(self.device or "default"), "rate_hz": self.rate_hz,
                     "channels": self.channels, "latency_s": round(float(self._stream.latency), 4)}

    def _start_impl(self) -> None:
        self._stream.start()

    def _stop_impl(self) -> None:
        try:
            self._stream.stop()
        except Exception as exc:  # pragma: no cover - device already gone
            log.warning("microphone stop: %s", exc)
        self._close()

    def _close(self) -> None:
        try:
            self._stream.close()
        except Exception as exc:  # pragma: no cover - device already gone
            log.warning("microphone close: %s", exc)

    def _finished(self) -> None:
        if not self._stop.is_set() and self.error is None:
            self.error = DeviceLost(str(self.device or "default input"), "the audio stream ended")

    def _callback(self, indata: np.ndarray, frames: int, t: Any, status: Any) -> None:
        now_ns = self.clock.now_ns()
        try:
            overflow = bool(status and status.input_overflow)
            if overflow:
                self.overflows += 1
            latency_s = float(t.currentTime) - float(t.inputBufferAdcTime)
            if float(t.inputBufferAdcTime) > 0 and 0 <= latency_s < 1.0:
                capture_ns = now_ns - int(latency_s * 1e9)
            else:
                capture_ns = now_ns - frames * 1_000_000_000 // self.rate_hz
            samples = indata.copy()
            rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if frames else 0.0
            self.level_dbfs = 20 * np.log10(max(rms, 1e-6))
            self.callbacks += 1
            self._push(AudioChunk(capture_ns, self.rate_hz, samples, overflow))
            self.first_callback.set()
        except BaseException as exc:  # never raise into PortAudio
            self.error = exc


class OpLogSource:
    """Operation-log events on the session clock: ``emit(kind, **fields)``.

    Events are few; they are kept (never dropped) until the pipeline drains them into the sealed
    ``seg-NNNNNN.oplog.drseg`` of the segment they fall in. Listeners (``subscribe``) see each
    event as it is emitted (the UI timeline).
    """

    name = "oplog"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._events: list[OpEvent] = []
        self._lock = threading.Lock()
        self.count = 0
        self._listeners: list[Callable[[OpEvent], None]] = []

    def emit(self, kind: str, **fields: Any) -> OpEvent:
        if not kind or not isinstance(kind, str):
            raise UsageError(f"operation event kind {kind!r}: expected a non-empty string")
        ev = OpEvent(self.clock.now_ns(), kind, fields)
        with self._lock:
            self._events.append(ev)
            self.count += 1
        for fn in list(self._listeners):
            try:
                fn(ev)
            except Exception as exc:
                log.warning("oplog listener failed: %s", exc)
        return ev

    def subscribe(self, fn: Callable[[OpEvent], None]) -> None:
        self._listeners.append(fn)

    def drain(self, before_ns: int | None = None) -> list[OpEvent]:
        with self._lock:
            if before_ns is None:
                out, self._events = self._events, []
            else:
                out = [e for e in self._events if e.capture_ns < before_ns]
                self._events = [e for e in self._events if e.capture_ns >= before_ns]
        return out


def wait_until(pred: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()
