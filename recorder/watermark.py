"""The burned-in watermark: UTC time, station and agent, drawn by the system into screen and
camera frames (双录 rules expect the system, not the agent, to record the time).

The time is drawn to the second, as wall clocks and 双录 review forms show it. A millisecond
counter would change the frame in every picture, and x264 would then code those macroblocks in
every frame of an otherwise still screen: measured with ``bench/record_vs_ffmpeg.py`` it cost
about 10 % of the whole recording's CPU. Frame-exact times are in the container (pts on the
session clock, the UTC anchor in the manifest), and the review player shows them.

The text is rendered once per second into a small coverage mask (cv2's anti-aliased Hershey
font); each frame only darkens the box and lays the mask over it.
"""

from __future__ import annotations

import cv2
import numpy as np

from recorder.items import i420_planes
from station.clock import Clock

FONT = cv2.FONT_HERSHEY_SIMPLEX


class Watermark:
    def __init__(self, clock: Clock, station: str, agent: str, *, scale: float = 0.6) -> None:
        self.clock = clock
        self.label = f"{_ascii(station)} | {_ascii(agent)}"
        self.scale = scale
        # frame shape -> (text, mask, y1, x2): the last rendering for frames of that shape
        self._cache: dict[tuple[int, ...], tuple[str, np.ndarray, int, int]] = {}
        self._second, self._text = -1, ""

    def text(self, capture_ns: int) -> str:
        second = self.clock.utc_ns(capture_ns) // 1_000_000_000
        if second != self._second:  # formatted once a second, not for each of 40 frames
            utc = self.clock.utc(capture_ns).strftime("%Y-%m-%d %H:%M:%S")
            self._second, self._text = second, f"{utc} UTC | {self.label}"
        return self._text

    def _render(self, text: str, h: int, w: int) -> tuple[np.ndarray, int, int]:
        """The text's coverage (0..255) over the box at the bottom-left, and the box's top row
        and right edge in the frame."""
        scale = self.scale * max(0.5, h / 1080) * 1.4
        (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
        x, y = 8, h - 8
        x2, y1 = min(w, x + tw + 8), max(0, y - th - base - 6)
        mask = np.zeros((h - y1, x2), np.uint8)
        cv2.putText(mask, text, (x + 4, y - base - y1), FONT, scale, 255, 1, cv2.LINE_AA)
        return mask, y1, x2

    def apply(self, img: np.ndarray, capture_ns: int) -> np.ndarray:
        """Draw in place (the frame is owned by the pipeline) at the bottom-left; returns img.
        A 2-D image is I420 planes ``(h * 3 // 2, w)``: the text goes into Y and the box's colour
        is taken out of U and V (a neutral dark box, as drawn on BGR)."""
        if img.ndim == 2:
            luma, u, v = i420_planes(img)
            self._draw(luma, capture_ns)
            _, _, y1, x2 = self._cache[luma.shape]
            for plane in (u, v):
                plane[y1 // 2:, :(x2 + 1) // 2] = 128
            return img
        return self._draw(img, capture_ns)

    def _draw(self, img: np.ndarray, capture_ns: int) -> np.ndarray:
        h, w = img.shape[:2]
        text = self.text(capture_ns)
        cached = self._cache.get(img.shape)
        if cached is None or cached[0] != text:
            mask, y1, x2 = self._render(text, h, w)
            if img.ndim == 3:  # one coverage value per channel, as cv2.max wants
                mask = cv2.merge([mask] * img.shape[2])
            cached = self._cache[img.shape] = (text, mask, y1, x2)
        _, mask, y1, x2 = cached
        roi = img[y1:h, 0:x2]
        # darken under the text (readable on any background), then lay the text over it; cv2
        # works on the strided view in place, ~10x faster than numpy's generic uint8 loops here
        cv2.convertScaleAbs(roi, dst=roi, alpha=1 / 3)
        cv2.max(roi, mask, dst=roi)
        return img


def _ascii(text: str) -> str:
    """cv2's Hershey fonts draw ASCII only: keep ids readable, replace the rest."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in str(text))[:48]
