"""The burned-in watermark: UTC time, station and agent, drawn by the system into screen and
camera frames (双录 rules expect the system, not the agent, to record the time)."""

from __future__ import annotations

import cv2
import numpy as np

from station.clock import Clock


class Watermark:
    def __init__(self, clock: Clock, station: str, agent: str, *, scale: float = 0.6) -> None:
        self.clock = clock
        self.label = f"{_ascii(station)} | {_ascii(agent)}"
        self.scale = scale

    def text(self, capture_ns: int) -> str:
        utc = self.clock.utc(capture_ns).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        return f"{utc} UTC | {self.label}"

    def apply(self, img: np.ndarray, capture_ns: int) -> np.ndarray:
        """Draw in place (the frame is owned by the pipeline) at the bottom-left; returns img."""
        h, w = img.shape[:2]
        scale = self.scale * max(0.5, h / 1080) * 1.4
        text = self.text(capture_ns)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x, y = 8, h - 8
        x2, y1 = min(w, x + tw + 8), max(0, y - th - base - 6)
        roi = img[y1:h, 0:x2]
        roi[...] = (roi // 3)  # darken under the text, keep it readable on any background
        color = (255, 255, 255, 255) if img.shape[2] == 4 else (255, 255, 255)
        cv2.putText(img, text, (x + 4, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
        return img


def _ascii(text: str) -> str:
    """cv2's Hershey fonts draw ASCII only: keep ids readable, replace the rest."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in str(text))[:48]
