"""Qt-free playback engine: decrypt while reading, decode camera, screen and audio, seek, and
cross segment boundaries without a gap.

Each segment's media file is a sealed Matroska container (screen, camera and audio streams).
The engine reads it through a decrypting file-like object (:class:`station.crypto.SealedReader`
over the store's object stream), demuxes its compressed packets into memory once (a few MiB a
minute; the decrypted *compressed* stream lives only in RAM, never on disk), decodes its audio
into one float32 array, and decodes video on demand:

* :meth:`Player.frame_at` returns the newest frame of a stream at or before a session time,
  decoding forward from where it is, or from the nearest keyframe before that time after a jump.
* :meth:`Player.audio` returns the samples of a time span (silence where there is none).

Session time ``t_s`` is seconds from the session start (pts 0 of the first segment). Segments'
container timestamps are taken as session time when they line up with the manifests' segment
starts; otherwise each segment is shifted to start where the previous one ended.

The next segment is loaded in a background thread when playback nears the end of the current
one, so crossing a boundary does not stall. The engine is not thread-safe: call it from one
thread (the UI's player timer), apart from its own prefetch thread.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from station import logs

log = logs.get("review")

SCREEN, CAMERA, AUDIO = "screen", "camera", "audio"
PREFETCH_S = 8.0             # start loading the next segment this long before the boundary
MAX_FORWARD_DECODE_S = 3.0   # a forward jump further than this seeks to a keyframe instead
ALIGN_TOLERANCE_S = 1.0      # a segment whose pts start below this while the manifests place it
                             # later has segment-relative timestamps and is shifted


class PlaybackError(Exception):
    """A segment could not be read or decoded (the message says which and why)."""


class _Cancelled(Exception):
    """A prefetch nobody needs any more (the reviewer jumped elsewhere) stopped early."""


@dataclass(frozen=True)
class SegmentRef:
    seq: int
    start_s: float       # session time where the segment starts (from the manifests), or -1
    duration_s: float    # from the manifest, or 0 if unknown


@dataclass
class VideoFrame:
    pts_s: float           # session time
    frame: Any             # av.VideoFrame (converted lazily)
    _rgb: np.ndarray | None = None

    def rgb(self) -> np.ndarray:
        if self._rgb is None:
            self._rgb = self.frame.to_ndarray(format="rgb24")
        return self._rgb

    def gray(self) -> np.ndarray:
        arr: np.ndarray = self.frame.to_ndarray(format="gray")
        return arr

    @property
    def width(self) -> int:
        return int(self.frame.width)

    @property
    def height(self) -> int:
        return int(self.frame.height)


@dataclass
class _Track:
    kind: str
    stream: Any
    pts_s: list[float] = field(default_factory=list)
    packets: list[Any] = field(default_factory=list)
    keys: list[int] = field(default_factory=list)      # indices of keyframe packets


class _Loaded:
    """One demuxed segment. Its audio is decoded on first use (a seek needs only video)."""

    def __init__(self, ref: SegmentRef, container: Any, reader: BinaryIO, tracks: dict[str, _Track],
                 start_s: float, end_s: float, load_s: float, offset_s: float) -> None:
        self.ref, self.container, self.reader, self.tracks = ref, container, reader, tracks
        self.start_s, self.end_s, self.load_s, self.offset_s = start_s, end_s, load_s, offset_s
        tr = tracks.get(AUDIO)
        self.audio_rate_hz = int(tr.stream.codec_context.sample_rate or 48000) if tr else 48000
        self._audio: tuple[np.ndarray, float] | None = None
        self._lock = threading.Lock()

    def _decoded(self) -> tuple[np.ndarray, float]:
        with self._lock:
            if self._audio is None:
                tr = self.tracks.get(AUDIO)
                if tr is None or not tr.packets:
                    self._audio = (np.zeros(0, np.float32), self.start_s)
                else:
                    buf, start, self.audio_rate_hz = _decode_audio(tr.stream, tr.packets, self.offset_s)
                    self._audio = (buf, start)
            return self._audio

    @property
    def audio(self) -> np.ndarray:
        return self._decoded()[0]

    @property
    def audio_start_s(self) -> float:
        return self._decoded()[1]

    def close(self) -> None:
        try:
            self.container.close()
        finally:
            self.reader.close()


def _is_truncation(exc: BaseException) -> bool:
    from station.crypto.sealed import Truncated

    return isinstance(exc, Truncated) or isinstance(exc.__cause__ or exc.__context__, Truncated)


def classify_streams(container: Any) -> dict[str, Any]:
    """Map screen / camera / audio to the container's streams (by title, else by size)."""
    out: dict[str, Any] = {}
    videos = []
    for s in container.streams:
        title = " ".join(str(v) for v in (s.metadata or {}).values()).lower()
        if s.type == "audio" and AUDIO not in out:
            out[AUDIO] = s
        elif s.type == "video":
            if SCREEN in title and SCREEN not in out:
                out[SCREEN] = s
            elif CAMERA in title and CAMERA not in out:
                out[CAMERA] = s
            else:
                videos.append(s)
    videos.sort(key=lambda s: -(s.codec_context.width or 0) * (s.codec_context.height or 0))
    for kind in (SCREEN, CAMERA):
        if kind not in out and videos:
            out[kind] = videos.pop(0)
    return out


def _decode_audio(stream: Any, packets: Sequence[Any], offset_s: float) -> tuple[np.ndarray, float, int]:
    import av

    ctx = stream.codec_context
    rate = int(ctx.sample_rate or 48000)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    pieces: list[tuple[float, np.ndarray]] = []
    for pkt in packets:
        for frame in ctx.decode(pkt):
            t = float(frame.pts * frame.time_base) + offset_s if frame.pts is not None else None
            for out in resampler.resample(frame):
                arr = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                pieces.append((t if t is not None else (pieces[-1][0] + len(pieces[-1][1]) / rate
                                                        if pieces else offset_s), arr))
                t = None
    for frame in ctx.decode(None):
        for out in resampler.resample(frame):
            arr = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            t0 = pieces[-1][0] + len(pieces[-1][1]) / rate if pieces else offset_s
            pieces.append((t0, arr))
    if not pieces:
        return np.zeros(0, np.float32), offset_s, rate
    start = pieces[0][0]
    end = max(t + len(a) / rate for t, a in pieces)
    buf = np.zeros(int(round((end - start) * rate)) + 1, np.float32)
    for t, a in pieces:
        i = int(round((t - start) * rate))
        buf[i: i + len(a)] = a[: max(0, len(buf) - i)]
    return buf, start, rate


class Player:
    """Decode a session's segments for playback. ``open_media(seq)`` returns a decrypting
    file-like object over the segment's media (the caller decides where it comes from)."""

    def __init__(self, open_media: Callable[[int], BinaryIO], segments: Sequence[SegmentRef],
                 cache_segments: int = 3) -> None:
        if not segments:
            raise PlaybackError("the session has no segments to play")
        self._open_media = open_media
        self.segments = sorted(segments, key=lambda s: s.seq)
        self._cache: OrderedDict[int, _Loaded] = OrderedDict()
        self._cache_max = max(2, cache_segments)
        self._lock = threading.Lock()
        self._prefetching: dict[int, threading.Thread] = {}
        self._prefetched: dict[int, _Loaded | BaseException] = {}
        self._cancels: dict[int, threading.Event] = {}
        self._starts = self._planned_starts()
        # per video kind: (segment seq, next packet index, last decoded frame)
        self._cursor: dict[str, tuple[int, int, VideoFrame | None]] = {}
        self._ahead: dict[str, list[VideoFrame]] = {}
        self.refused: set[int] = set()
        self.truncated: dict[int, str] = {}   # seq -> why (played up to the cut)

    # --- layout ----------------------------------------------------------------------------
    def _planned_starts(self) -> list[float]:
        starts, t = [], 0.0
        for ref in self.segments:
            if ref.start_s >= 0:
                t = ref.start_s
            starts.append(t)
            t += max(ref.duration_s, 0.0)
        return starts

    @property
    def duration_s(self) -> float:
        last = self.segments[-1]
        loaded = self._cache.get(last.seq)
        if loaded is not None:
            return loaded.end_s
        return self._starts[-1] + max(last.duration_s, 0.0)

    def segment_index_at(self, t_s: float) -> int:
        i = bisect.bisect_right(self._starts, t_s) - 1
        return min(max(i, 0), len(self.segments) - 1)

    def segment_start_s(self, seq: int) -> float:
        return self._starts[[s.seq for s in self.segments].index(seq)]

    def refuse(self, seq: int) -> None:
        """Never decode this segment (it failed verification); it plays as a gap."""
        self.refused.add(seq)
        self._drop(seq)

    # --- loading ---------------------------------------------------------------------------
    def _load(self, idx: int, cancel: threading.Event | None = None) -> _Loaded:
        import av

        ref = self.segments[idx]
        t0 = time.perf_counter()
        reader = self._open_media(ref.seq)
        try:
            # the Matroska header carries every codec parameter: no probing (saves ~25 ms a segment)
            container = av.open(reader, mode="r", format="matroska",
                                options={"probesize": "32", "analyzeduration": "0"})
        except Exception as exc:
            reader.close()
            raise PlaybackError(f"segment {ref.seq}: cannot open media: {exc}") from exc
        try:
            streams = classify_streams(container)
            by_index = {s.index: kind for kind, s in streams.items()}
            tracks = {kind: _Track(kind, s) for kind, s in streams.items()}
            raw: dict[str, list[tuple[float, Any, bool]]] = {k: [] for k in tracks}
            tbs = {s.index: float(s.time_base) for s in streams.values()}
            try:
                for n, pkt in enumerate(container.demux(*streams.values())):
                    if cancel is not None and not n % 256 and cancel.is_set():
                        raise _Cancelled(ref.seq)
                    if pkt.size == 0 or pkt.pts is None:
                        continue
                    si = pkt.stream_index
                    kind = by_index.get(si)
                    if kind is None:
                        continue
                    raw[kind].append((pkt.pts * tbs[si], pkt, pkt.is_keyframe))
            except _Cancelled:
                raise
            except Exception as exc:
                # a segment cut by a crash plays up to its last authenticated message
                if not _is_truncation(exc) or not any(raw.values()):
                    raise
                self.truncated[ref.seq] = str(exc)
                log.warning("segment %s is truncated; playing what authenticated: %s", ref.seq, exc)
        except Exception as exc:
            container.close()
            reader.close()
            if isinstance(exc, _Cancelled):
                raise
            raise PlaybackError(f"segment {ref.seq}: {exc}") from exc
        firsts = [v[0][0] for v in raw.values() if v]
        first = min(firsts) if firsts else 0.0
        planned = self._starts[idx]
        if idx > 0 and first < ALIGN_TOLERANCE_S < planned:
            # container timestamps restart at 0 in this segment: place it where the manifests say
            offset = planned - first
        elif idx == 0 and first > ALIGN_TOLERANCE_S and ref.start_s < 0:
            offset = -first
        else:
            offset = 0.0
        end = first
        for kind, items in raw.items():
            tr = tracks[kind]
            running = -1e18
            for t, pkt, key in items:   # decode order; pts_s made monotone for lookups
                running = max(running, t + offset)
                tr.pts_s.append(running)
                tr.packets.append(pkt)
                if key:
                    tr.keys.append(len(tr.packets) - 1)
            if items:
                dur = float((items[-1][1].duration or 0) * items[-1][1].time_base)
                end = max(end, max(x[0] for x in items) + dur)
        loaded = _Loaded(ref, container, reader, tracks, first + offset, end + offset,
                         time.perf_counter() - t0, offset)
        if ref.start_s < 0:   # no start in the manifest: the container's timestamps say where it is
            self._starts[idx] = min(self._starts[idx], loaded.start_s) if idx == 0 else loaded.start_s
        # a segment that started later than planned moves its successors
        if (idx + 1 < len(self._starts) and self.segments[idx + 1].start_s < 0
                and loaded.end_s > self._starts[idx + 1] + ALIGN_TOLERANCE_S):
            self._starts[idx + 1] = loaded.end_s
        log.debug("segment %s loaded in %.3f s (%s)", ref.seq, loaded.load_s,
                  {k: len(t.packets) for k, t in tracks.items()})
        return loaded

    def _get(self, idx: int) -> _Loaded | None:
        ref = self.segments[idx]
        if ref.seq in self.refused:
            return None
        loaded = self._cache.get(ref.seq)
        if loaded is not None:
            self._cache.move_to_end(ref.seq)
            return loaded
        th = self._prefetching.pop(ref.seq, None)
        self._cancels.pop(ref.seq, None)
        if th is not None:
            th.join()
            got = self._prefetched.pop(ref.seq)
            if isinstance(got, BaseException):
                raise got
            loaded = got
        else:
            # a jump elsewhere: prefetches for the old position would only compete for the CPU
            # (they doubled the latency of the seeks they overlapped) and hold memory
            self._cancel_prefetches()
            loaded = self._load(idx)
        self._cache[ref.seq] = loaded
        while len(self._cache) > self._cache_max:
            _, old = self._cache.popitem(last=False)
            self._forget(old.ref.seq)
            old.close()
        return loaded

    def _drop(self, seq: int) -> None:
        old = self._cache.pop(seq, None)
        self._forget(seq)
        if old is not None:
            old.close()

    def _forget(self, seq: int) -> None:
        for kind, cur in list(self._cursor.items()):
            if cur[0] == seq:
                del self._cursor[kind]

    def _cancel_prefetches(self) -> None:
        """Stop the prefetches running and drop the ones done (nobody waits for them)."""
        with self._lock:
            for seq in list(self._prefetching):
                self._prefetching.pop(seq)
                self._cancels.pop(seq).set()
            stale = list(self._prefetched.values())
            self._prefetched.clear()
        for got in stale:
            if isinstance(got, _Loaded):
                got.close()

    def prefetch(self, idx: int) -> None:
        if idx >= len(self.segments):
            return
        seq = self.segments[idx].seq
        if seq in self._cache or seq in self._prefetching or seq in self.refused:
            return

        cancel = threading.Event()

        def work() -> None:
            try:
                loaded = self._load(idx, cancel)
            except _Cancelled:
                return
            except BaseException as exc:  # re-raised in the caller's thread by _get
                with self._lock:
                    if not cancel.is_set():
                        self._prefetched[seq] = exc
                return
            if not cancel.is_set():
                loaded.audio  # noqa: B018 - decode the audio ahead too: playback is about to need it
            with self._lock:   # _cancel_prefetches sets the event before it clears _prefetched
                if cancel.is_set():
                    loaded.close()
                else:
                    self._prefetched[seq] = loaded

        th = threading.Thread(target=work, name=f"prefetch-{seq}", daemon=True)
        self._prefetching[seq] = th
        self._cancels[seq] = cancel
        th.start()

    # --- video -----------------------------------------------------------------------------
    def frame_at(self, kind: str, t_s: float) -> VideoFrame | None:
        """The newest ``kind`` frame shown at session time t_s (None: nothing to show)."""
        idx = self.segment_index_at(t_s)
        seg = self._get(idx)
        if seg is None or kind not in seg.tracks:
            return None
        tr = seg.tracks[kind]
        if not tr.packets:
            return None
        target = bisect.bisect_right(tr.pts_s, t_s) - 1   # packet index of the frame to show
        target = max(target, 0)
        ctx = tr.stream.codec_context
        cur = self._cursor.get(kind)
        restart = (cur is None or cur[0] != seg.ref.seq or cur[2] is None or t_s < cur[2].pts_s
                   or t_s - cur[2].pts_s > MAX_FORWARD_DECODE_S)
        if t_s > seg.end_s - PREFETCH_S and not restart:
            # playing on towards the boundary; after a jump the next tick asks (a prefetch started
            # by the jump itself would compete with decoding the frames the reviewer waits for)
            self.prefetch(idx + 1)
        ahead: list[VideoFrame] = []
        if restart:
            k = bisect.bisect_right(tr.keys, target) - 1
            nxt = tr.keys[k] if k >= 0 else 0
            last: VideoFrame | None = None
            self._ahead.pop(kind, None)
            ctx.flush_buffers()
        else:
            assert cur is not None
            nxt, last = cur[1], cur[2]
            ahead = self._ahead.pop(kind, [])
        while True:
            while ahead:
                if last is None or ahead[0].pts_s <= t_s:
                    last = ahead.pop(0)
                else:
                    self._ahead[kind] = ahead
                    self._cursor[kind] = (seg.ref.seq, nxt, last)
                    return last
            if nxt >= len(tr.packets):
                break
            pkt = tr.packets[nxt]
            nxt += 1
            try:
                decoded = ctx.decode(pkt)
            except Exception as exc:  # av.error.InvalidDataError and friends
                log.warning("segment %s %s packet %d does not decode: %s", seg.ref.seq, kind, nxt - 1, exc)
                continue
            ahead = [VideoFrame(float(fr.pts * fr.time_base) + seg.offset_s if fr.pts is not None
                                else tr.pts_s[nxt - 1], fr) for fr in decoded]
        self._cursor[kind] = (seg.ref.seq, nxt, last)
        return last

    # --- audio -----------------------------------------------------------------------------
    def audio(self, t0_s: float, t1_s: float) -> np.ndarray:
        """Mono float32 samples for [t0_s, t1_s) in session time; silence where there is none."""
        rate = self.audio_rate_hz
        n = max(0, int(round((t1_s - t0_s) * rate)))
        out = np.zeros(n, np.float32)
        idx = self.segment_index_at(t0_s)
        while n and idx < len(self.segments) and (idx == 0 or self._starts[idx] < t1_s):
            seg = self._get(idx)
            if seg is not None and seg.audio.size:
                if t1_s > seg.end_s - PREFETCH_S:
                    self.prefetch(idx + 1)
                i0 = int(round((t0_s - seg.audio_start_s) * seg.audio_rate_hz))
                lo, hi = max(i0, 0), min(i0 + n, seg.audio.size)
                if hi > lo:
                    out[lo - i0: hi - i0] = seg.audio[lo:hi]
            idx += 1
        return out

    def first_pts(self) -> dict[str, float]:
        """Session time of the first packet of each stream in the first playable segment."""
        for idx, ref in enumerate(self.segments):
            if ref.seq in self.refused:
                continue
            seg = self._get(idx)
            if seg is None:
                continue
            out = {k: tr.pts_s[0] for k, tr in seg.tracks.items() if k != AUDIO and tr.pts_s}
            if AUDIO in seg.tracks and seg.audio.size:
                out[AUDIO] = seg.audio_start_s
            return out
        return {}

    @property
    def audio_rate_hz(self) -> int:
        for seg in self._cache.values():
            return seg.audio_rate_hz
        return 48000

    def first_load_s(self) -> float | None:
        for seg in self._cache.values():
            return seg.load_s
        return None

    def close(self) -> None:
        for th in list(self._prefetching.values()):
            th.join()
        for got in self._prefetched.values():
            if isinstance(got, _Loaded):
                got.close()
        self._prefetched.clear()
        self._prefetching.clear()
        for seg in self._cache.values():
            seg.close()
        self._cache.clear()
        self._cursor.clear()


class PlaybackClock:
    """The playback position, driven by the audio device when there is one.

    The UI thread calls :meth:`pump` every tick: it keeps about ``lead_s`` of audio queued for the
    output callback (taken from the player at the current speed, resampled to the device rate,
    so 2x plays twice as much session time per second). The position is the session time of
    the sample the device is playing now, so video follows what is heard. Without an audio
    device (or ``audio=False``) the position follows the monotonic clock.
    """

    def __init__(self, player: Player, audio: bool = True, device: Any = None, lead_s: float = 0.25,
                 block: int = 960) -> None:
        self.player = player
        self.rate_hz = player.audio_rate_hz
        self.lead_s = lead_s
        self.block = block
        self.speed = 1.0
        self.playing = False
        self._anchor_s = 0.0          # session time at the anchor
        self._anchor_mono = time.monotonic()
        self._fed_s = 0.0             # session time up to which audio has been queued
        self._queue: list[np.ndarray] = []
        self._qlock = threading.Lock()
        self._played = 0              # device frames played since the anchor
        self._queued = 0              # device frames queued since the anchor
        self._stream: Any = None
        self.audio_error: str | None = None
        if audio:
            try:
                import sounddevice as sd

                self._stream = sd.OutputStream(samplerate=self.rate_hz, channels=1, dtype="float32",
                                               blocksize=block, device=device, callback=self._callback)
            except Exception as exc:  # no PortAudio device: video runs on the wall clock
                self.audio_error = str(exc)
                log.warning("no audio output (%s); playing video on the wall clock", exc)

    @property
    def has_audio(self) -> bool:
        return self._stream is not None

    def _callback(self, out: np.ndarray, frames: int, _time: Any, _status: Any) -> None:
        filled = 0
        with self._qlock:
            while filled < frames and self._queue:
                head = self._queue[0]
                take = min(frames - filled, head.size)
                out[filled:filled + take, 0] = head[:take]
                filled += take
                if take == head.size:
                    self._queue.pop(0)
                else:
                    self._queue[0] = head[take:]
            self._played += filled
        if filled < frames:
            out[filled:, 0] = 0.0

    def position_s(self) -> float:
        if not self.playing:
            return self._anchor_s
        if self._stream is not None:
            with self._qlock:
                played = self._played
            return self._anchor_s + played / self.rate_hz * self.speed
        return self._anchor_s + (time.monotonic() - self._anchor_mono) * self.speed

    def seek(self, t_s: float) -> None:
        self._reanchor(max(0.0, min(t_s, self.player.duration_s)))

    def set_speed(self, speed: float) -> None:
        if not 0.5 <= speed <= 2.0:
            raise ValueError("speed must be from 0.5 to 2")
        pos = self.position_s()
        self.speed = speed
        self._reanchor(pos)

    def _reanchor(self, t_s: float) -> None:
        with self._qlock:
            self._queue.clear()
            self._played = 0
        self._queued = 0
        self._anchor_s = t_s
        self._anchor_mono = time.monotonic()
        self._fed_s = t_s

    def play(self) -> None:
        if self.playing:
            return
        self._reanchor(self._anchor_s)
        self.playing = True
        if self._stream is not None:
            try:
                self._stream.start()
            except Exception as exc:
                self.audio_error = str(exc)
                self._stream = None
                log.warning("audio output failed to start (%s); wall clock", exc)
        self.pump()

    def pause(self) -> None:
        if not self.playing:
            return
        pos = self.position_s()
        self.playing = False
        if self._stream is not None:
            self._stream.stop()
        self._reanchor(pos)

    def pump(self) -> None:
        """Queue audio up to ``lead_s`` ahead of the device (call from the UI thread)."""
        if not self.playing or self._stream is None:
            return
        while (self._queued - self._played) / self.rate_hz < self.lead_s:
            n_out = self.block
            span = n_out / self.rate_hz * self.speed
            src = self.player.audio(self._fed_s, self._fed_s + span)
            if self.speed != 1.0 and src.size:
                src = np.interp(np.linspace(0, src.size - 1, n_out), np.arange(src.size),
                                src).astype(np.float32)
            if src.size != n_out:
                src = np.resize(src, n_out) if src.size else np.zeros(n_out, np.float32)
            with self._qlock:
                self._queue.append(src)
            self._queued += n_out
            self._fed_s += span
            if self._fed_s >= self.player.duration_s:
                break

    def close(self) -> None:
        self.playing = False
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            except Exception as exc:  # closing a stream whose device went away
                log.debug("audio output close: %s", exc)
            self._stream = None
