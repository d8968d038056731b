"""The capture pipeline: sources -> (pause, masking hook, watermark) -> encoders -> sealed segments.

One consumer thread takes the items of every source queue, releases them in capture-time order
after a short hold-back (``holdback_ms``) so the muxer receives nearly monotonic timestamps,
and writes them into the current :class:`~recorder.segment_writer.SegmentWriter`. Segments are
rotated every ``segment_s`` on a screen frame: each segment has new encoders, so every video
stream of a segment starts with a keyframe.

Timing: video pts are capture times (ms since the session origin ``clock.t0_ns``); audio pts
count samples and follow the capture clock only where the median drift of the last
``audio_window_s`` leaves +-``audio_snap_ms`` (block timestamps are noisy both ways): the count
ahead is trimmed, behind is filled with silence; a gap the device flags (overflow) is filled at
once; a jump beyond 2 s resets the anchor and is reported.

Errors: a source's stashed exception is re-raised here (``DEVICE_LOST``), an encoder/container
failure stops with ``ENCODER_ERROR`` (``DISK_FULL``/``WRITE_ERROR`` for writes); the segment so far is
sealed and closed either way and ``on_stopped(code, error)`` is called from the consumer thread.
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np

from recorder.encoders import AudioSpec, VideoSpec
from recorder.filters import FrameFilter, PassThroughFilter
from recorder.items import AudioChunk, DropQueue, OpEvent, VideoFrame, i420_planes
from recorder.segment_writer import SegmentWriter
from recorder.sources import OpLogSource, Source
from recorder.watermark import Watermark
from station import logs
from station.clock import Clock
from station.diskio import is_disk_full
from station.errors import DeviceLost, StationError, StopCode

log = logs.get("capture")


class Writer(Protocol):
    def write(self, data: bytes) -> Any: ...

    def flush(self) -> Any: ...


class Sealer(Protocol):
    """What the pipeline needs of :class:`station.crypto.SessionSealer`."""

    def open_segment(self, seq: int, kind: str) -> Writer: ...

    def close_segment(self, seq: int, stats: dict[str, Any]) -> dict[str, Any]: ...

    def write_error(self) -> OSError | None: ...


@dataclass
class StreamStats:
    captured: int = 0
    encoded: int = 0
    dropped: int = 0
    first_pts_ms: int | None = None
    last_pts_ms: int | None = None

    def seen(self, pts_ms: int) -> None:
        if self.first_pts_ms is None:
            self.first_pts_ms = pts_ms
        self.last_pts_ms = pts_ms

    def as_dict(self) -> dict[str, Any]:
        return {"captured": self.captured, "encoded": self.encoded, "dropped": self.dropped,
                "first_pts_ms": self.first_pts_ms, "last_pts_ms": self.last_pts_ms}


AUDIO_QUEUE_MIN_S = 10.0


@dataclass
class PipelineConfig:
    screen: VideoSpec | None
    camera: VideoSpec | None
    audio: AudioSpec | None
    segment_s: float = 60.0
    fragment_s: float = 1.0
    queue_s: float = 2.0
    holdback_ms: int = 150
    audio_snap_ms: int = 15
    audio_window_s: float = 1.0
    pause_audio: str = "mute"
    extra_stats: dict[str, Any] = field(default_factory=dict)


class Pipeline:
    """Run sources into sealed segments until :meth:`stop` (or an error) ends it."""

    def __init__(self, clock: Clock, config: PipelineConfig, sealer: Sealer, *,
                 screen: Source | None = None, camera: Source | None = None,
                 microphone: Source | None = None, oplog: OpLogSource | None = None,
                 screen_filter: FrameFilter | None = None, watermark: Watermark | None = None,
                 on_stopped: Callable[[StopCode, BaseException | None], None] | None = None,
                 on_segment: Callable[[int, dict[str, Any]], None] | None = None) -> None:
        self.clock, self.cfg, self.sealer = clock, config, sealer
        self.sources: dict[str, Source] = {n: s for n, s in (("screen", screen), ("camera", camera),
                                                              ("audio", microphone)) if s is not None}
        self.oplog = oplog or OpLogSource(clock)
        self.filter: FrameFilter = screen_filter or PassThroughFilter()
        self.watermark = watermark
        self.on_stopped, self.on_segment = on_stopped, on_segment
        rates = {"screen": config.screen.fps if config.screen else 1,
                 "camera": config.camera.fps if config.camera else 1,
                 "audio": config.audio.rate_hz / microphone_block(microphone) if config.audio else 1}
        # audio blocks are small (~10 KB): its queue holds AUDIO_QUEUE_MIN_S at least, so a stall
        # of the pipeline (a starved encoder) drops video frames but keeps the conversation whole
        seconds = {n: max(config.queue_s, AUDIO_QUEUE_MIN_S) if n == "audio" else config.queue_s
                   for n in self.sources}
        self.queues: dict[str, DropQueue[Any]] = {
            n: DropQueue(max(4, int(rates[n] * seconds[n]))) for n in self.sources}
        self.totals: dict[str, StreamStats] = {n: StreamStats() for n in self.sources}
        self.seg_stats: dict[str, StreamStats] = {}
        self._drops_at_seg: dict[str, int] = {}
        self.seq = 0
        self.segments: list[dict[str, Any]] = []
        self.writer: SegmentWriter | None = None
        self._side: dict[str, Writer] = {}
        self._seg_start_ns = 0
        self._last_flush_ns = 0
        self._heap: list[tuple[int, int, str, Any]] = []
        self._tie = itertools.count()
        self._stop_evt = threading.Event()
        self._stop_code: StopCode | None = None
        self._stop_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.stop_code: StopCode | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.gate_ns = 0
        self.end_ns = 1 << 62
        # pause
        self._paused = False
        self._pause_started_ms: int | None = None
        self._gaps: list[dict[str, Any]] = []
        self._pause_spans: list[list[Any]] = []
        self._card: np.ndarray | None = None
        # audio timeline
        self._audio_next: int | None = None
        self._drifts: deque[int] = deque()
        self.audio_silence_inserted = 0
        self.audio_trimmed = 0
        self.audio_resets = 0
        self._overflows_at_seg = 0
        # health
        self._recent: dict[str, deque[int]] = {n: deque(maxlen=64) for n in self.sources}
        self.last_camera: VideoFrame | None = None

    # --- control ---------------------------------------------------------------------------
    def start(self, first_item_timeout_s: float = 5.0) -> None:
        """Start every source, wait until each delivered its first item (PulseAudio may take
        ~1.5 s for the first block), then open the gate: the recording covers [gate, stop] on
        every stream; items captured before the gate are discarded (not counted as drops)."""
        # OpenCV's worker pool splits each cvtColor/resize of one frame over every core; on a
        # 2-core seat the hand-offs cost more CPU than they save (0.035 CPU s/s in a recording)
        # while the encoder and capture threads already keep both cores busy. Process-wide.
        cv2.setNumThreads(1)
        try:
            for name, src in self.sources.items():
                src.start(self.queues[name])
            deadline = time.monotonic() + first_item_timeout_s
            for src in self.sources.values():
                while src.captured == 0 and src.error is None and time.monotonic() < deadline:
                    time.sleep(0.005)
                src.check()
                if src.captured == 0:
                    raise DeviceLost(src.name, f"no data within {first_item_timeout_s:g} s")
            # the first segment's codecs are opened (x264 set-up, tens of ms) before the gate, so
            # the recording's length counts from a pipeline that is ready to take frames
            self._open_writer()
        except BaseException:
            for src in self.sources.values():
                src.stop()
            raise
        self.gate_ns = self.clock.now_ns()
        for q in self.queues.values():  # pre-roll items are discarded by the gate in _collect
            q.dropped = q.offered = q.dropped_full = q.dropped_late = 0
        self._begin_segment(self.gate_ns)
        self._thread = threading.Thread(target=self._run, name="pipeline", daemon=True)
        self._thread.start()

    def request_stop(self, code: StopCode = StopCode.NORMAL, error: BaseException | None = None) -> None:
        """Ask the consumer to finish (any thread, never blocks). The first request wins."""
        if self._stop_code is None:
            self._stop_code, self._stop_error = code, error
            self.end_ns = self.clock.now_ns()
        self._stop_evt.set()

    def stop(self, code: StopCode = StopCode.NORMAL, timeout_s: float = 30) -> StopCode:
        self.request_stop(code)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        return self.stop_code or code

    def pause(self, reason: str) -> None:
        """Screen frames captured from now on become a 'paused' card; audio per ``pause_audio``;
        the span is recorded as a gap. Applied by capture time (items are held back briefly)."""
        if not self._paused:
            now = self.clock.now_ns()
            self._pause_started_ms = self._ms(now)
            self._pause_spans.append([now, None])
            self._paused = True

    def resume(self) -> None:
        if self._paused:
            now = self.clock.now_ns()
            self._paused = False
            self._pause_spans[-1][1] = now
            self._gaps.append({"kind": "pause", "start_pts_ms": self._pause_started_ms,
                               "end_pts_ms": self._ms(now)})  # its reason: sealed op log only
            self._pause_started_ms = None

    def _in_pause(self, capture_ns: int) -> bool:
        for start, end in reversed(self._pause_spans):
            if start <= capture_ns and (end is None or capture_ns < end):
                return True
            if end is not None and end <= capture_ns:
                return False
        return False

    @property
    def paused(self) -> bool:
        return self._paused

    # --- consumer --------------------------------------------------------------------------
    def _ms(self, capture_ns: int) -> int:
        return (capture_ns - self.clock.t0_ns) // 1_000_000

    def _run(self) -> None:
        code, error = StopCode.NORMAL, None
        try:
            while not self._stop_evt.is_set():
                for src in self.sources.values():
                    src.check()
                self._collect()
                self._release(self.clock.now_ns() - self.cfg.holdback_ms * 1_000_000)
                self._stop_evt.wait(0.02)
            code, error = self._stop_code or StopCode.NORMAL, self._stop_error
        except StationError as exc:
            code, error = exc.stop_code or StopCode.ENCODER_ERROR, exc
        except Exception as exc:
            code, error = self._failure_code(exc), exc
        if error is not None:
            log.error("recording stops (%s): %s", code, error)
        for src in self.sources.values():
            try:
                src.stop()
            except Exception as exc:  # a device that dies while closing
                log.warning("stopping %s: %s", src.name, exc)
        try:
            if error is None:
                self._collect()
                self._release(None)
                for item in self.filter.flush():
                    self._video_out("screen", item)
            self._close_segment(final=True, error=error)
        except StationError as exc:
            code, error = exc.stop_code or StopCode.ENCODER_ERROR, error or exc
        except Exception as exc:
            if error is None:
                code, error = self._failure_code(exc), exc
        close = getattr(self.filter, "close", None)
        if callable(close):
            try:
                close()
            except Exception as exc:
                log.warning("closing the screen filter: %s", exc)
        self.stop_code, self.error = code, error
        self.done.set()
        if self.on_stopped is not None:
            self.on_stopped(code, error)

    def _failure_code(self, exc: BaseException) -> StopCode:
        """``disk-full`` when a write failed for lack of space (ENOSPC/EDQUOT), whether the
        error reached us directly or through the muxer; ``write-error`` when a sealed file's write
        failed otherwise (EIO, a file system remounted read-only); ``encoder-error`` otherwise."""
        write_error = self.sealer.write_error()
        if is_disk_full(exc) or is_disk_full(write_error):
            return StopCode.DISK_FULL
        if write_error is not None:
            return StopCode.WRITE_ERROR
        return StopCode.ENCODER_ERROR

    def _collect(self) -> None:
        for name, q in self.queues.items():
            for raw in q.drain():
                item = self._gate_audio(raw) if name == "audio" else raw
                if item is None:
                    continue
                if name != "audio" and not self.gate_ns <= item.capture_ns < self.end_ns:
                    continue
                self.totals[name].captured += 1
                heapq.heappush(self._heap, (item.capture_ns, next(self._tie), name, item))

    def _gate_audio(self, chunk: AudioChunk) -> AudioChunk | None:
        """Cut a block to [gate, end): the recording's audio starts and ends with the video."""
        n = chunk.samples.shape[0]
        rate = chunk.rate_hz
        head = max(0, -(-(self.gate_ns - chunk.capture_ns) * rate // 1_000_000_000))
        tail = max(0, min(n, (self.end_ns - chunk.capture_ns) * rate // 1_000_000_000))
        if head >= tail:
            return None
        if head == 0 and tail == n:
            return chunk
        return AudioChunk(chunk.capture_ns + head * 1_000_000_000 // rate, rate, chunk.samples[head:tail],
                          chunk.overflow)

    def _release(self, before_ns: int | None) -> None:
        while self._heap and (before_ns is None or self._heap[0][0] <= before_ns):
            capture_ns, _, name, item = heapq.heappop(self._heap)
            self._write_oplog(capture_ns)
            if name == "screen":
                if self._pause_spans and self._in_pause(capture_ns):
                    item = VideoFrame(capture_ns, self._paused_card(item.image), item.seq, paused=True)
                for out in self.filter.push(item):
                    self._video_out("screen", out)
            elif name == "camera":
                self._video_out("camera", item)
            else:
                self._audio_out(item)
            self._maybe_flush_side(capture_ns)

    def _paused_card(self, like: np.ndarray) -> np.ndarray:
        if self._card is None or self._card.shape != like.shape:
            if like.ndim == 2:  # I420 planes: grey luma, neutral chroma
                card = np.full(like.shape, 128, np.uint8)
                luma = i420_planes(card)[0]
                luma[...] = 48
            else:
                card = luma = np.full(like.shape, 48, np.uint8)
            h, w = luma.shape[:2]
            cv2.putText(luma, "PAUSED", (w // 2 - 150, h // 2), cv2.FONT_HERSHEY_SIMPLEX,
                        2.5, (230,) * (luma.shape[2] if luma.ndim == 3 else 1), 4)
            self._card = card
        return self._card.copy()

    def _video_out(self, name: str, item: VideoFrame) -> None:
        assert self.writer is not None
        lead = "screen" if "screen" in self.sources else "camera"
        if name == lead and item.capture_ns - self._seg_start_ns >= self.cfg.segment_s * 1e9:
            self._rotate(item.capture_ns)
        self.seg_stats[name].captured += 1
        pts = self._ms(item.capture_ns)
        img = item.image
        if self.watermark is not None:
            if not img.flags.writeable:
                img = img.copy()
            self.watermark.apply(img, item.capture_ns)
        if name == "camera":
            self.last_camera = item
        self.writer.write_video(name, img, pts)
        for st in (self.totals[name], self.seg_stats[name]):
            st.encoded += 1
            st.seen(pts)
        self._recent[name].append(item.capture_ns)

    def _audio_out(self, chunk: AudioChunk) -> None:
        assert self.writer is not None
        rate = chunk.rate_hz
        samples = chunk.samples
        self.seg_stats["audio"].captured += 1
        start = (chunk.capture_ns - self.clock.t0_ns) * rate // 1_000_000_000
        if self._audio_next is None:
            self._audio_next = max(0, start)
        drift = start - self._audio_next  # samples: >0 capture is later than the count says
        if abs(drift) > 2 * rate:
            log.warning("audio clock jumped by %.3f s: re-anchored", drift / rate)
            self.audio_resets += 1
            self._audio_next = max(0, start)
            self._drifts.clear()
            self._gaps.append({"kind": "audio-reset", "at_pts_ms": self._ms(chunk.capture_ns),
                               "jump_ms": int(drift * 1000 / rate)})
        else:
            # Block timestamps are noisy both ways (a callback scheduled late; PortAudio's ADC
            # latency report jumping), so the sample count is trusted and only corrected when
            # the median drift of the last ``audio_window_s`` leaves +-``audio_snap_ms``: the
            # count ahead is trimmed, behind (lost samples, a slower device clock) is filled.
            if self._drifts.maxlen is None:
                blocks = max(8, int(self.cfg.audio_window_s * rate / max(1, samples.shape[0])))
                self._drifts = deque(maxlen=blocks)
            self._drifts.append(drift)
            mid = int(np.median(self._drifts))
            snap = self.cfg.audio_snap_ms * rate // 1000
            settled = len(self._drifts) * 2 >= (self._drifts.maxlen or 1)
            fix = 0
            if chunk.overflow and drift > snap:  # the device says input was lost: fill now
                fix = drift
            elif settled and mid < -snap:
                fix = max(mid, -samples.shape[0])
            elif settled and mid > snap:
                fix = mid
            if fix > 0:
                self.audio_silence_inserted += fix
                self._encode_audio(np.zeros((fix, samples.shape[1]), np.float32))
            elif fix < 0:
                self.audio_trimmed += -fix
                samples = samples[-fix:]
            if chunk.overflow and fix > 0:  # blocks before the loss say nothing about after it
                self._drifts = deque([drift - fix], maxlen=self._drifts.maxlen)
            elif fix:  # the count moved: keep the window comparable with what comes next
                self._drifts = deque((d - fix for d in self._drifts), maxlen=self._drifts.maxlen)
        if self.cfg.pause_audio == "mute" and self._pause_spans and self._in_pause(chunk.capture_ns):
            samples = np.zeros_like(samples)
        if samples.shape[0]:
            self._encode_audio(samples)
        self._recent["audio"].append(chunk.capture_ns)

    def _encode_audio(self, samples: np.ndarray) -> None:
        assert self.writer is not None and self._audio_next is not None and self.cfg.audio
        self.writer.write_audio(samples, self._audio_next)
        pts_ms = self._audio_next * 1000 // self.cfg.audio.rate_hz
        for st in (self.totals["audio"], self.seg_stats["audio"]):
            st.encoded += samples.shape[0]
            st.seen(pts_ms)
            st.last_pts_ms = (self._audio_next + samples.shape[0]) * 1000 // self.cfg.audio.rate_hz
        self._audio_next += samples.shape[0]

    # --- segments --------------------------------------------------------------------------
    def _open_segment(self, start_ns: int) -> None:
        self._open_writer()
        self._begin_segment(start_ns)

    def _open_writer(self) -> None:
        """The next segment's sealed files and encoders (codecs opened, header written)."""
        self.seq += 1
        media = self.sealer.open_segment(self.seq, "media")
        self._side = {"oplog": self.sealer.open_segment(self.seq, "oplog"),
                      "masklog": self.sealer.open_segment(self.seq, "masklog")}
        self.writer = SegmentWriter(media, screen=self.cfg.screen if "screen" in self.sources else None,
                                    camera=self.cfg.camera if "camera" in self.sources else None,
                                    audio=self.cfg.audio if "audio" in self.sources else None,
                                    fragment_s=self.cfg.fragment_s)

    def _begin_segment(self, start_ns: int) -> None:
        """The segment's accounting from ``start_ns``: its statistics count from here."""
        self._seg_start_ns = start_ns
        self._last_flush_ns = start_ns
        self.seg_stats = {n: StreamStats() for n in self.sources}
        self._drops_at_seg = {n: q.dropped for n, q in self.queues.items()}
        mic = self.sources.get("audio")
        self._overflows_at_seg = int(getattr(mic, "overflows", 0))
        self._seg_silence0, self._seg_trim0 = self.audio_silence_inserted, self.audio_trimmed

    def _write_oplog(self, upto_ns: int | None) -> None:
        events = self.oplog.drain(upto_ns)
        if not events:
            return
        lines = b"".join(self._event_line(e) for e in events)
        self._side["oplog"].write(lines)

    def _event_line(self, ev: OpEvent) -> bytes:
        rec = {"t_ms": self._ms(ev.capture_ns), "utc": self.clock.utc_iso(ev.capture_ns),
               "kind": ev.kind, **ev.fields}
        return (json.dumps(rec, ensure_ascii=False, default=str) + "\n").encode("utf-8")

    def _maybe_flush_side(self, now_ns: int) -> None:
        if now_ns - self._last_flush_ns < self.cfg.fragment_s * 1e9:
            return
        self._last_flush_ns = now_ns
        ledger = self.filter.ledger_entries()
        if ledger:
            self._side["masklog"].write(b"".join(
                (json.dumps(e, ensure_ascii=False, default=str) + "\n").encode() for e in ledger))
        for w in self._side.values():
            w.flush()

    def _segment_stats(self, error: BaseException | None, end_ns: int) -> dict[str, Any]:
        streams = {}
        for name, st in self.seg_stats.items():
            d = st.as_dict()
            d["dropped"] = self.queues[name].dropped - self._drops_at_seg.get(name, 0)
            streams[name] = d
        if "audio" in streams and self.cfg.audio:
            mic = self.sources["audio"]
            streams["audio"].update(
                rate_hz=self.cfg.audio.rate_hz, samples=self.seg_stats["audio"].encoded,
                overflows=int(getattr(mic, "overflows", 0)) - self._overflows_at_seg,
                silence_inserted=self.audio_silence_inserted - self._seg_silence0,
                trimmed=self.audio_trimmed - self._seg_trim0)
        gaps, self._gaps = self._gaps, []
        if self._paused:  # a pause that spans the segment end is cut at it
            end_ms = self._ms(end_ns)
            gaps.append({"kind": "pause", "start_pts_ms": self._pause_started_ms, "end_pts_ms": end_ms,
                         "continues": True})
            self._pause_started_ms = end_ms
        stats: dict[str, Any] = {"streams": streams, "gaps": gaps,
                                 "start_pts_ms": self._ms(self._seg_start_ns),
                                 "masking": getattr(self.filter, "summary", lambda: {
                                     "enabled": bool(getattr(self.filter, "enabled", False))})(),
                                 **self.cfg.extra_stats}
        if error is not None:
            stats["error"] = f"{type(error).__name__}: {error}"
        return stats

    def _close_segment(self, final: bool, error: BaseException | None = None) -> None:
        if self.writer is None:
            return
        writer, self.writer = self.writer, None
        try:
            if error is None:
                writer.close()
            else:
                writer.abort()
        finally:
            self._write_oplog(None if final else self._seg_start_next)
            ledger = self.filter.ledger_entries()
            if ledger:
                self._side["masklog"].write(b"".join(
                    (json.dumps(e, ensure_ascii=False, default=str) + "\n").encode() for e in ledger))
            stats = self._segment_stats(error, self.clock.now_ns() if final else self._seg_start_next)
            manifest = self.sealer.close_segment(self.seq, stats)
            entry = {"seq": self.seq, "stats": stats}
            self.segments.append(entry)
            if self.on_segment is not None:
                self.on_segment(self.seq, manifest)

    _seg_start_next = 0

    def _rotate(self, at_ns: int) -> None:
        self._seg_start_next = at_ns
        self._close_segment(final=False)
        self._open_segment(at_ns)

    # --- health ----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        now = self.clock.now_ns()
        streams = {}
        for name, src in self.sources.items():
            recent = [t for t in list(self._recent[name]) if now - t < 3_000_000_000]
            if name == "audio":
                fps = len(recent) / 3.0
            else:
                fps = (len(recent) - 1) / ((recent[-1] - recent[0]) / 1e9) if len(recent) > 2 else 0.0
            q = self.queues[name]
            streams[name] = {"fps": round(fps, 2), "frames": self.totals[name].encoded,
                             "captured": src.captured, "dropped": q.dropped,
                             "dropped_full": q.dropped_full, "dropped_late": q.dropped_late}
        thumb = None
        if self.last_camera is not None:
            cam = self.last_camera.image
            if self.last_camera.i420:
                cam = cv2.cvtColor(cam, cv2.COLOR_YUV2BGR_I420)
            thumb = cv2.resize(cam[..., :3], (160, 90), interpolation=cv2.INTER_AREA)
        mic = self.sources.get("audio")
        return {"streams": streams, "segments": self.seq, "paused": self._paused,
                "mic_dbfs": round(float(getattr(mic, "level_dbfs", -120.0)), 1) if mic else None,
                "camera_thumbnail": thumb,
                "audio_overflows": int(getattr(mic, "overflows", 0)) if mic else 0}


def microphone_block(mic: Source | None) -> int:
    return int(getattr(mic, "block_frames", 0) or 960) if mic is not None else 960


def wait_first_audio(mic: Source | None, timeout_s: float = 5.0) -> bool:
    """Block until a real microphone delivered its first callback (PulseAudio may take ~1.5 s)."""
    evt = getattr(mic, "first_callback", None)
    if evt is None:
        return True
    return bool(evt.wait(timeout_s))
