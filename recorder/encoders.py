"""PyAV encoders: H.264 (libx264) for screen and camera, AAC or Opus for audio.

Colour conversion is OpenCV's ``cvtColor`` BGR(A) -> I420 (about 7x cheaper than PyAV's
reformat); a camera that already delivers I420 planes is encoded without conversion. Video pts
are capture times in ms since the session origin; audio pts count samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np

from station.errors import EncoderError

MS = Fraction(1, 1000)


@dataclass(frozen=True)
class VideoSpec:
    width: int
    height: int
    fps: float
    crf: int = 28
    preset: str = "veryfast"
    keyframe_interval_s: float = 2.0
    # x264 threads. 1: the stream's own encoder thread does all the work (SegmentWriter runs one
    # per video stream, so screen and camera use both cores); 0 = x264's slice threads, which
    # cost 1-8 % more CPU per frame on a 2-core seat for the same preset/CRF/keyframes.
    threads: int = 1
    thread_type: str = "SLICE"


@dataclass(frozen=True)
class AudioSpec:
    rate_hz: int = 48000
    channels: int = 1
    codec: str = "aac"
    bitrate: int = 64000


class VideoEncoder:
    """One H.264 stream in a container; ``encode(img, pts_ms)`` returns packets to mux."""

    def __init__(self, container: Any, name: str, spec: VideoSpec) -> None:
        self.name, self.spec = name, spec
        keyint = max(1, round(spec.keyframe_interval_s * spec.fps))
        try:
            self.stream = container.add_stream("libx264", rate=Fraction(spec.fps).limit_denominator(1001),
                                               options={"preset": spec.preset, "tune": "zerolatency",
                                                        "crf": str(spec.crf), "g": str(keyint),
                                                        "keyint_min": str(keyint), "sc_threshold": "0"})
            self.stream.width, self.stream.height = spec.width, spec.height
            self.stream.pix_fmt = "yuv420p"
            self.stream.time_base = MS
            self.stream.codec_context.time_base = MS
            self.stream.metadata["title"] = name
            self.stream.codec_context.thread_count = spec.threads
            self.stream.codec_context.thread_type = spec.thread_type
        except (av.error.FFmpegError, ValueError) as exc:
            raise EncoderError(name, exc) from exc
        self.frames = 0
        self.last_pts = -1
        self.first_pts: int | None = None

    def encode(self, img: np.ndarray, pts_ms: int) -> list[Any]:
        """Encode a BGR(A) frame ``(h, w, 3|4)``, or I420 planes ``(h * 3 // 2, w)`` as they are."""
        i420 = img.ndim == 2
        h = img.shape[0] * 2 // 3 if i420 else img.shape[0]
        if h != self.spec.height or img.shape[1] != self.spec.width or (i420 and img.shape[0] != h * 3 // 2):
            raise EncoderError(self.name, f"frame {img.shape[1]}x{h} does not match "
                                          f"{self.spec.width}x{self.spec.height}")
        if pts_ms <= self.last_pts:  # pts strictly increase within a stream
            pts_ms = self.last_pts + 1
        if i420:
            yuv = img
        else:
            code = cv2.COLOR_BGRA2YUV_I420 if img.shape[2] == 4 else cv2.COLOR_BGR2YUV_I420
            yuv = cv2.cvtColor(img, code)
        # wraps the array (no copy here; libavcodec copies it into x264's picture, GIL released)
        frame = av.VideoFrame.from_numpy_buffer(yuv, format="yuv420p")
        frame.pts, frame.time_base = pts_ms, MS
        try:
            packets = self.stream.encode(frame)
        except av.error.FFmpegError as exc:
            raise EncoderError(self.name, exc) from exc
        self.frames += 1
        self.last_pts = pts_ms
        if self.first_pts is None:
            self.first_pts = pts_ms
        return list(packets)

    def flush(self) -> list[Any]:
        try:
            return list(self.stream.encode(None))
        except av.error.FFmpegError as exc:
            raise EncoderError(self.name, exc) from exc


class AudioEncoder:
    """One AAC or Opus stream; ``encode(samples, pts_samples)`` with float32 (n, channels)."""

    def __init__(self, container: Any, spec: AudioSpec) -> None:
        self.spec = spec
        self.layout = "mono" if spec.channels == 1 else "stereo"
        codec = "aac" if spec.codec == "aac" else "libopus"
        try:
            self.stream = container.add_stream(codec, rate=spec.rate_hz)
            self.stream.layout = self.layout
            self.stream.bit_rate = spec.bitrate
            self.stream.time_base = Fraction(1, spec.rate_hz)
            self.stream.metadata["title"] = "audio"
        except (av.error.FFmpegError, ValueError) as exc:
            raise EncoderError("audio", exc) from exc
        self.samples = 0
        self.first_pts: int | None = None
        self.last_pts = -1

    def encode(self, samples: np.ndarray, pts: int) -> list[Any]:
        data = np.ascontiguousarray(samples.T, dtype=np.float32)  # planar (channels, n)
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=self.layout)
        frame.sample_rate = self.spec.rate_hz
        frame.pts, frame.time_base = pts, Fraction(1, self.spec.rate_hz)
        try:
            packets = self.stream.encode(frame)
        except av.error.FFmpegError as exc:
            raise EncoderError("audio", exc) from exc
        if self.first_pts is None:
            self.first_pts = pts
        self.samples += samples.shape[0]
        self.last_pts = pts + samples.shape[0]
        return list(packets)

    def flush(self) -> list[Any]:
        try:
            return list(self.stream.encode(None))
        except av.error.FFmpegError as exc:
            raise EncoderError("audio", exc) from exc
