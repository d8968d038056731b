"""One streamable Matroska container per segment, written straight into a SealedWriter.

The container never touches disk in plaintext: PyAV writes into :class:`_SealSink`, which hands
every byte to the sealed writer. Matroska writes a cluster when it closes one (every
0.6 x ``fragment_s``, ``cluster_time_limit``); after every mux that produced bytes the sealed writer is
flushed, which ends one AEAD message, so a killed process loses at most about one fragment.
Each segment has its own encoders, so it starts with a keyframe on every video stream.

Threads: each video stream is converted and encoded on its own thread (:class:`_EncodeWorker`,
x264 with one thread of its own), so the two encoders use both cores of a seat while the
pipeline thread stays free for audio and muxing. x264's slice threads (3 per encoder with
``threads=0`` on 2 cores) cost 1-8 % more CPU per frame for the same settings (8 % in
``bench/record_vs_ffmpeg.py``'s per-thread runs, 1 % in an isolated encode of the same frames).
Packets come back to the pipeline thread, which alone touches the container; the header is
written (every codec opened) before any worker starts, so no two threads ever open a codec or mux
at once.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from typing import Any, Protocol

import av

from recorder.encoders import AudioEncoder, AudioSpec, VideoEncoder, VideoSpec
from station.errors import EncoderError


class ByteSink(Protocol):
    def write(self, data: bytes) -> Any: ...

    def flush(self) -> Any: ...


class _SealSink:
    """The write-only file object PyAV muxes into (no seek: the muxer streams)."""

    def __init__(self, sink: ByteSink) -> None:
        self.sink = sink
        self.bytes = 0
        self.pending = 0

    def write(self, data: Any) -> int:
        b = bytes(data)
        self.sink.write(b)
        self.bytes += len(b)
        self.pending += len(b)
        return len(b)


class _EncodeWorker:
    """Colour conversion and H.264 encoding of one video stream on a thread of its own.

    ``submit`` hands a frame over (it blocks only while ``capacity`` frames wait: the pipeline
    then falls behind and the source queues drop with a count, the devices never block);
    ``take`` returns the packets encoded so far; ``finish`` flushes the encoder and returns
    the rest. An encoder error is stashed and raised on the pipeline thread by the next call.
    """

    def __init__(self, enc: VideoEncoder, capacity: int) -> None:
        self.enc = enc
        self._in: queue.Queue[tuple[Any, int] | None] = queue.Queue(max(1, capacity))
        self._out: deque[Any] = deque()
        self.error: BaseException | None = None
        self._aborted = False
        self._thread = threading.Thread(target=self._run, name=f"enc-{enc.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                item = self._in.get()
                if self._aborted:
                    return
                if item is None:
                    self._out.extend(self.enc.flush())
                    return
                self._out.extend(self.enc.encode(*item))
        except BaseException as exc:  # stashed, raised on the pipeline thread
            self.error = exc

    def _check(self) -> None:
        if self.error is not None:
            err = self.error
            if isinstance(err, EncoderError):
                raise err
            raise EncoderError(self.enc.name, err) from err

    def _put(self, item: tuple[Any, int] | None) -> None:
        """Queue for the thread; a thread that died meanwhile raises here instead of blocking."""
        self._check()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._in.put(item, timeout=0.5)
                return
        self._check()
        raise EncoderError(self.enc.name, "the encoder thread ended")

    def submit(self, img: Any, pts_ms: int) -> None:
        self._put((img, pts_ms))

    def take(self) -> list[Any]:
        self._check()
        out = []
        with contextlib.suppress(IndexError):
            while True:
                out.append(self._out.popleft())
        return out

    def finish(self) -> list[Any]:
        """Flush the encoder and return every packet not yet taken (waits for the thread)."""
        self._put(None)
        self._thread.join()
        return self.take()

    def abort(self, timeout_s: float = 5.0) -> None:
        """Stop without flushing: frames still queued are discarded."""
        self._aborted = True
        with contextlib.suppress(queue.Empty):
            while True:
                self._in.get_nowait()
        with contextlib.suppress(queue.Full):
            self._in.put_nowait(None)
        self._thread.join(timeout_s)


class SegmentWriter:
    """Screen, camera and audio streams of one segment (any of them may be absent)."""

    def __init__(self, sink: ByteSink, *, screen: VideoSpec | None, camera: VideoSpec | None,
                 audio: AudioSpec | None, fragment_s: float = 1.0, encode_queue: int = 8) -> None:
        self.sink = sink
        self._io = _SealSink(sink)
        try:
            # clusters a bit shorter than the fragment: together with the pipeline's hold-back
            # a crash loses at most about ``fragment_s``
            self.container = av.open(self._io, "w", format="matroska", options={
                "cluster_time_limit": str(max(100, int(fragment_s * 600))),
                "cluster_size_limit": str(8 << 20),
                "max_interleave_delta": "1000000", "flush_packets": "1"})
        except av.error.FFmpegError as exc:
            raise EncoderError("container", exc) from exc
        video = {name: VideoEncoder(self.container, name, spec)
                 for name, spec in (("screen", screen), ("camera", camera)) if spec is not None}
        self.audio = AudioEncoder(self.container, audio) if audio is not None else None
        try:  # open every codec and write the header now, before the encoder threads run
            self.container.start_encoding()
        except av.error.FFmpegError as exc:
            raise EncoderError("container", exc) from exc
        self.flushes = 0
        self.closed = False
        self.workers = {name: _EncodeWorker(enc, encode_queue) for name, enc in video.items()}

    def _mux(self, packets: list[Any], name: str) -> None:
        try:
            for p in packets:
                self.container.mux(p)
        except av.error.FFmpegError as exc:
            raise EncoderError(name, exc) from exc
        if self._io.pending:
            self._io.pending = 0
            self.sink.flush()
            self.flushes += 1

    def _mux_ready(self) -> None:
        for name, worker in self.workers.items():
            packets = worker.take()
            if packets:
                self._mux(packets, name)

    def write_video(self, name: str, img: Any, pts_ms: int) -> None:
        """Queue a BGR(A) frame (or I420 planes) for encoding; packets encoded so far are muxed."""
        self.workers[name].submit(img, pts_ms)
        self._mux_ready()

    def write_audio(self, samples: Any, pts: int) -> None:
        assert self.audio is not None
        self._mux(self.audio.encode(samples, pts), "audio")
        self._mux_ready()

    def close(self) -> None:
        """Flush the encoders, write the last cluster and flush the sink (not closed: the
        sealer closes its writers in ``close_segment``)."""
        if self.closed:
            return
        self.closed = True
        try:
            for name, worker in self.workers.items():
                self._mux(worker.finish(), name)
            if self.audio is not None:
                self._mux(self.audio.flush(), "audio")
            self.container.close()
        except av.error.FFmpegError as exc:
            raise EncoderError("container", exc) from exc
        self.sink.flush()

    def abort(self) -> None:
        """Best effort after an error: close the container without raising."""
        if self.closed:
            return
        self.closed = True
        for worker in self.workers.values():
            worker.abort()
        with contextlib.suppress(Exception):  # already failing; what was flushed stands
            self.container.close()
