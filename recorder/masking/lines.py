"""Cheap image steps before OCR: tile differences and text-line detection.

* :func:`changed_tiles` compares two frames as 32-bit words per pixel in 64x24 tiles (about
  1.4 ms on 1080p) and returns a boolean tile map.
* :func:`detect_lines` finds text lines with OpenCV morphology: a morphological gradient marks
  glyph edges whatever the background colour, a horizontal closing joins the glyphs of a line,
  connected components give the boxes. Rules and box borders (long and thin) are dropped; blocks
  taller than a line are cut at empty rows.
* :func:`line_key` hashes a line's binarised pixels: the same text on another background or at
  another place on the screen gets the same key, so OCR results are reused while scrolling.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

TILE_W, TILE_H = 64, 24
GRAD_THRESHOLD = 48
MIN_H, MAX_H = 6, 64
JOIN_PX = 9
RULE_W, RULE_H = 40, 24


@dataclass(frozen=True, slots=True)
class Box:
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def w(self) -> int:
        return self.x1 - self.x0

    @property
    def h(self) -> int:
        return self.y1 - self.y0

    def pad(self, px: int, py: int, width: int, height: int) -> Box:
        return Box(max(0, self.x0 - px), max(0, self.y0 - py), min(width, self.x1 + px), min(height, self.y1 + py))

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]


def as_gray(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return frame
    code = cv2.COLOR_BGRA2GRAY if frame.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(frame, code)


def changed_tiles(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Boolean map (rows, cols) of 64x24 tiles where any pixel differs."""
    h, w = cur.shape[:2]
    if prev.shape != cur.shape:
        return np.ones(((h + TILE_H - 1) // TILE_H, (w + TILE_W - 1) // TILE_W), bool)
    if cur.ndim == 3 and cur.shape[2] == 4 and cur.flags.c_contiguous and prev.flags.c_contiguous:
        ne = cur.view(np.uint32)[..., 0] != prev.view(np.uint32)[..., 0]
    else:
        ne = (cur != prev).reshape(h, w, -1).any(axis=2)
    ph, pw = (-h) % TILE_H, (-w) % TILE_W
    if ph or pw:
        ne = np.pad(ne, ((0, ph), (0, pw)))
    return np.asarray(ne.reshape(ne.shape[0] // TILE_H, TILE_H, ne.shape[1] // TILE_W, TILE_W).any(axis=(1, 3)),
                      dtype=bool)


def ink_map(gray: np.ndarray) -> np.ndarray:
    grad = cv2.morphologyEx(gray, cv2.MORPH_GRADIENT, np.ones((2, 2), np.uint8))
    return (grad >= GRAD_THRESHOLD).astype(np.uint8)


def _split_tall(ink: np.ndarray, x0: int, y0: int, x1: int, y1: int, out: list[Box]) -> None:
    rows = np.asarray(ink[y0:y1, x0:x1].any(axis=1), dtype=bool)
    start = None
    for k, on in enumerate(list(rows) + [False]):
        if on and start is None:
            start = k
        elif not on and start is not None:
            if k - start >= MIN_H - 2:
                out.append(Box(x0, y0 + start, x1, y0 + k))
            start = None


def detect_lines(frame: np.ndarray, band: tuple[int, int] | None = None) -> list[Box]:
    """Text-line boxes in ``frame`` (BGR/BGRA/gray), optionally only rows ``band`` = (y0, y1)."""
    gray = as_gray(frame)
    oy = 0
    if band is not None:
        oy = max(0, band[0])
        gray = gray[oy:max(oy, band[1])]
    if gray.size == 0:
        return []
    ink = ink_map(gray)
    # drop rules and box borders so that text inside a box is not joined to its frame
    rules = np.asarray(cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((1, RULE_W), np.uint8)), np.uint8)
    rules = rules | np.asarray(cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((RULE_H, 1), np.uint8)), np.uint8)
    ink = ink & (1 - rules)
    joined = cv2.morphologyEx(ink, cv2.MORPH_CLOSE, np.ones((1, JOIN_PX), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    out: list[Box] = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if h < MIN_H - 2 and not (h >= 2 and w >= 20):
            continue  # keeps broken slivers: text clipped at a viewport edge (masked whole)
        if w < 3:
            continue
        if w <= 4 and h > 3 * w and h > 20:
            continue  # a vertical rule or box border
        if area < 0.12 * w * h and h > MAX_H:
            continue  # an outline (box, frame)
        if h > MAX_H or (h > 30 and area > 0.5 * w * h and w > 200):
            _split_tall(ink, x, y, x + w, y + h, out)
            continue
        out.append(Box(x, y, x + w, y + h))
    if oy:
        out = [Box(b.x0, b.y0 + oy, b.x1, b.y1 + oy) for b in out]
    return out


def line_key(gray: np.ndarray, box: Box) -> bytes:
    """Hash of the line's binarised pixels (position and background colour independent)."""
    crop = gray[box.y0:box.y1, box.x0:box.x1]
    bits = np.packbits(ink_map(crop))
    return hashlib.blake2b(bits.tobytes() + box.w.to_bytes(4, "little") + box.h.to_bytes(4, "little"),
                           digest_size=16).digest()
