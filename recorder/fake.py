"""Fake sources for tests and ``--fake-devices``: content that can be checked after decoding.

* video: two rows of 32 black/white blocks (24 px) at the top-left carry the frame counter and
  the capture time in ms since the session origin (``t0``), big enough to survive x264 at any
  CRF the policy allows; :func:`read_stamp` reads them back from a decoded frame.
* audio: a tone burst (1 kHz, 100 ms) starting exactly at every whole ``beep_period_s`` of the
  session clock, timestamped by sample count (an ideal microphone).
"""

from __future__ import annotations

import cv2
import numpy as np

from recorder.items import AudioChunk, VideoFrame
from recorder.sources import PacedSource, Source
from station.clock import Clock

BLOCK = 24
BITS = 32


def draw_stamp(img: np.ndarray, counter: int, ms: int) -> None:
    for row, value in enumerate((counter, ms)):
        for bit in range(BITS):
            on = (value >> (BITS - 1 - bit)) & 1
            y, x = row * BLOCK, bit * BLOCK
            img[y:y + BLOCK, x:x + BLOCK, :3] = 255 if on else 0


def read_stamp(img: np.ndarray) -> tuple[int, int]:
    """(counter, ms) from a decoded BGR/gray frame; inverse of :func:`draw_stamp`."""
    gray = img if img.ndim == 2 else cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2GRAY)
    out = []
    for row in range(2):
        value = 0
        for bit in range(BITS):
            y, x = row * BLOCK + BLOCK // 2, bit * BLOCK + BLOCK // 2
            patch = gray[y - 4:y + 4, x - 4:x + 4]
            value = (value << 1) | int(patch.mean() > 127)
        out.append(value)
    return out[0], out[1]


class _FakeVideo(PacedSource):
    channels = 4

    def __init__(self, clock: Clock, *, fps: float, width: int, height: int, label: str) -> None:
        super().__init__(clock)
        self.fps, self.width, self.height, self.label = float(fps), int(width), int(height), label
        self.info = {"fake": True, "width": width, "height": height, "fps": fps}
        self._base = np.zeros((height, width, self.channels), np.uint8)
        self._base[..., :3] = (60, 40, 20)
        cv2.putText(self._base, f"FAKE {label}", (40, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 2.0,
                    (200, 200, 200, 255), 3)

    def _tick(self, tick: int) -> None:
        capture_ns = self.clock.now_ns()
        img = self._base.copy()
        ms = (capture_ns - self.clock.t0_ns) // 1_000_000
        draw_stamp(img, tick, int(ms))
        # a moving bar so the encoder has motion to code
        x = (tick * 8) % max(1, self.width - 40)
        img[self.height - 60:self.height - 20, x:x + 40, :3] = (0, 200, 255)
        self._push(VideoFrame(capture_ns, img, seq=tick))


class FakeScreenSource(_FakeVideo):
    name = "screen"
    channels = 4

    def __init__(self, clock: Clock, *, fps: float = 15, width: int = 1920, height: int = 1080) -> None:
        super().__init__(clock, fps=fps, width=width, height=height, label="SCREEN")


class FakeCameraSource(_FakeVideo):
    name = "camera"
    channels = 3

    def __init__(self, clock: Clock, *, fps: float = 25, width: int = 1280, height: int = 720) -> None:
        super().__init__(clock, fps=fps, width=width, height=height, label="CAMERA")


class FakeMicrophoneSource(Source):
    """An ideal microphone: 20 ms blocks in real time, a 1 kHz burst of 100 ms at every whole
    ``beep_period_s`` since ``t0``."""

    name = "microphone"

    def __init__(self, clock: Clock, *, rate_hz: int = 48000, channels: int = 1,
                 beep_period_s: float = 1.0, beep_hz: float = 1000.0, amp: float = 0.5) -> None:
        super().__init__(clock)
        self.rate_hz, self.channels = int(rate_hz), int(channels)
        self.beep_period_s, self.beep_hz, self.amp = beep_period_s, beep_hz, amp
        self.overflows = 0
        self.level_dbfs = -120.0
        self.info = {"fake": True, "rate_hz": rate_hz, "channels": channels,
                     "beep_period_s": beep_period_s}

    def _run(self) -> None:
        block = self.rate_hz // 50
        start_ns = self.clock.now_ns()
        # first sample index on the t0 timeline
        n0 = (start_ns - self.clock.t0_ns) * self.rate_hz // 1_000_000_000
        n = 0
        period = int(self.beep_period_s * self.rate_hz)
        burst = int(0.1 * self.rate_hz)
        while not self._stop.is_set():
            end_ns = start_ns + (n + block) * 1_000_000_000 // self.rate_hz
            wait_s = (end_ns - self.clock.now_ns()) / 1e9
            if wait_s > 0 and self._stop.wait(wait_s):
                break
            idx = n0 + n + np.arange(block)
            phase = idx % period
            sig = np.where(phase < burst, self.amp * np.sin(2 * np.pi * self.beep_hz * phase / self.rate_hz),
                           0.0).astype(np.float32)
            samples = np.repeat(sig[:, None], self.channels, axis=1)
            capture_ns = self.clock.t0_ns + (n0 + n) * 1_000_000_000 // self.rate_hz
            rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
            self.level_dbfs = 20 * np.log10(max(rms, 1e-6))
            self._push(AudioChunk(capture_ns, self.rate_hz, samples))
            n += block
