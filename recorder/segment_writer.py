"""One streamable Matroska container per segment, written straight into a SealedWriter.

The container never touches disk in plaintext: PyAV writes into :class:`_SealSink`, which hands
every byte to the sealed writer. Matroska writes a cluster when it closes one (every
0.6 x ``fragment_s``, ``cluster_time_limit``); after every mux that produced bytes the sealed writer is
flushed, which ends one AEAD message, so a killed process loses at most about one fragment.
Each segment has its own encoders, so it starts with a keyframe on every video stream.
"""

from __future__ import annotations

import contextlib
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


class SegmentWriter:
    """Screen, camera and audio streams of one segment (any of them may be absent)."""

    def __init__(self, sink: ByteSink, *, screen: VideoSpec | None, camera: VideoSpec | None,
                 audio: AudioSpec | None, fragment_s: float = 1.0) -> None:
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
        self.video: dict[str, VideoEncoder] = {}
        if screen is not None:
            self.video["screen"] = VideoEncoder(self.container, "screen", screen)
        if camera is not None:
            self.video["camera"] = VideoEncoder(self.container, "camera", camera)
        self.audio = AudioEncoder(self.container, audio) if audio is not None else None
        self.flushes = 0
        self.closed = False

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

    def write_video(self, name: str, img: Any, pts_ms: int) -> None:
        enc = self.video[name]
        self._mux(enc.encode(img, pts_ms), name)

    def write_audio(self, samples: Any, pts: int) -> None:
        assert self.audio is not None
        self._mux(self.audio.encode(samples, pts), "audio")

    def close(self) -> None:
        """Flush the encoders, write the last cluster and flush the sink (not closed: the
        sealer closes its writers in ``close_segment``)."""
        if self.closed:
            return
        self.closed = True
        try:
            for name, enc in self.video.items():
                self._mux(enc.flush(), name)
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
        with contextlib.suppress(Exception):  # already failing; what was flushed stands
            self.container.close()
