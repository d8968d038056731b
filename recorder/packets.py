"""Compressed camera streams decoded straight into the encoder's I420.

OpenCV's FFmpeg backend decodes a file or URL camera and converts every picture to BGR; the
encoder then converts it back to I420 for x264. For a 1280x720 H.264 camera that round trip
cost about 1.2-2 ms of CPU a frame (30-50 ms a second at 25 fps) and bought nothing.

So for a file or URL the camera still opens through ``cv2.VideoCapture`` (FFmpeg backend, which
demuxes and negotiates), but in raw mode (``CAP_PROP_FORMAT = -1``): ``read()`` returns the
compressed packet, H.264/HEVC already in Annex B, and PyAV's libavcodec decodes it. A yuv420p
picture of the recording's size goes to the encoder as it is; any other pixel format or size is
converted to BGR and fitted as before. Device indices (V4L2 webcams) keep OpenCV's own path.
"""

from __future__ import annotations

import collections
from typing import Any

import av
import cv2
import numpy as np
from av.video.codeccontext import VideoCodecContext

from station import logs

log = logs.get("capture")

# OpenCV reports the stream's codec as a FOURCC; these are the ones PyAV is asked to decode.
FOURCC_CODECS = {
    "h264": "h264", "avc1": "h264", "x264": "h264",
    "hevc": "hevc", "hev1": "hevc", "hvc1": "hevc", "h265": "hevc",
    "mjpg": "mjpeg", "vp80": "vp8", "vp90": "vp9",
    "mp4v": "mpeg4", "fmp4": "mpeg4", "xvid": "mpeg4", "divx": "mpeg4",
}
MAX_BAD_PACKETS = 25  # in a row: then the read counts as failed (the camera's own error count)


class PacketDecoder:
    """Decodes the packets of a raw-mode ``VideoCapture`` with PyAV, one picture per ``next()``."""

    def __init__(self, cap: Any) -> None:
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("latin-1")
        codec = FOURCC_CODECS.get(fourcc.strip("\0 ").lower())
        if codec is None:
            raise ValueError(f"no PyAV decoder chosen for FOURCC {fourcc!r}")
        self.codec = codec
        self.cap = cap
        self.ctx: VideoCodecContext = av.CodecContext.create(codec, "r")  # type: ignore[assignment]
        self.ctx.thread_count = 1  # 25 frames a second on the camera thread: the cheapest decode
        ok, extra = cap.retrieve(flag=int(cap.get(cv2.CAP_PROP_CODEC_EXTRADATA_INDEX)))
        if ok and extra is not None and extra.size:
            self.ctx.extradata = extra.tobytes()
        self._ready: collections.deque[Any] = collections.deque()

    def next(self, *, drain_at_end: bool = False) -> Any | None:
        """The next decoded ``av.VideoFrame``; None when no packet came (end of a file, a dead
        stream) or too many packets in a row failed to decode. ``drain_at_end`` returns the
        pictures the decoder still holds at the end of a file and resets it for a rewind."""
        bad = 0
        while not self._ready:
            ok, pkt = self.cap.read()
            if not ok:
                if not drain_at_end:
                    return None
                self._decode(None)
                self.ctx.flush_buffers()
                if not self._ready:
                    return None
                break
            if not self._decode(pkt):
                bad += 1
                if bad >= MAX_BAD_PACKETS:
                    return None
        return self._ready.popleft()

    def prime(self) -> bool:
        """Decode the first picture now and keep it for ``next``: proves the stream decodes."""
        first = self.next(drain_at_end=True)
        if first is not None:
            self._ready.appendleft(first)
        return first is not None

    def _decode(self, pkt: np.ndarray | None) -> bool:
        try:
            self._ready.extend(self.ctx.decode(None if pkt is None else av.Packet(pkt.tobytes())))
            return True
        except av.error.FFmpegError as exc:
            log.warning("camera packet not decodable (%s): %s", self.codec, exc)
            return False


def frame_image(frame: Any, width: int, height: int) -> tuple[np.ndarray, bool]:
    """(image, is_i420): a yuv420p picture of the recording's size as its I420 planes
    ``(height * 3 // 2, width)``, anything else as BGR (the caller fits it)."""
    if frame.format.name == "yuv420p" and (frame.width, frame.height) == (width, height):
        return frame.to_ndarray(), True
    return frame.to_ndarray(format="bgr24"), False


def open_packets(src: str) -> tuple[Any, PacketDecoder] | None:
    """A raw-mode capture of ``src`` and its decoder, or None when OpenCV cannot give packets
    for it or PyAV cannot decode them (the caller then uses OpenCV's BGR path)."""
    cap = cv2.VideoCapture(src, cv2.CAP_FFMPEG, [cv2.CAP_PROP_FORMAT, -1])
    if not cap.isOpened():
        return None
    try:
        dec = PacketDecoder(cap)
        primed = dec.prime()
    except (ValueError, av.error.FFmpegError, cv2.error) as exc:
        log.info("camera %s: packets not decodable here (%s); OpenCV decodes", src, exc)
        cap.release()
        return None
    if not primed:
        cap.release()
        return None
    return cap, dec
