"""Still-image masking: find every text line, read it, mask what the detectors flag.

The real-time :class:`~recorder.masking.realtime.MaskFilter` uses the same steps (line detection,
OCR, :func:`~recorder.masking.analysis.decide`) on the lines that changed; a still image has no
delay line and is cleared fully before it is returned.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from recorder.masking.analysis import Line, Region, decide
from recorder.masking.lines import Box, as_gray, detect_lines, line_key
from recorder.masking.ocr import OcrEngine, get_engine
from station.policy import DEFAULT_LABELS

CROP_PAD_X, CROP_PAD_Y = 4, 3


def crop_for(frame: np.ndarray, box: Box) -> tuple[np.ndarray, int]:
    h, w = frame.shape[:2]
    x0, x1 = max(0, box.x0 - CROP_PAD_X), min(w, box.x1 + CROP_PAD_X)
    y0, y1 = max(0, box.y0 - CROP_PAD_Y), min(h, box.y1 + CROP_PAD_Y)
    return frame[y0:y1, x0:x1], x0


def read_lines(frame: np.ndarray, boxes: Sequence[Box], engine: OcrEngine) -> list[Line]:
    gray = as_gray(frame)
    lines = []
    crops = []
    for b in boxes:
        crop, cx = crop_for(frame, b)
        lines.append(Line(b, cx, None, line_key(gray, b)))
        crops.append(crop)
    for ln, reading in zip(lines, engine.read(crops) if crops else [], strict=True):
        ln.reading = reading
    return lines


def apply_regions(frame: np.ndarray, regions: Sequence[Region | Box], style: str = "block") -> np.ndarray:
    """Hide every region in ``frame`` in place; returns ``frame``."""
    for reg in regions:
        b = reg.box if isinstance(reg, Region) else reg
        if b.w <= 0 or b.h <= 0:
            continue
        view = frame[b.y0:b.y1, b.x0:b.x1]
        if style == "blur":
            small = cv2.resize(view, (max(1, b.w // 12), max(1, b.h // 12)), interpolation=cv2.INTER_AREA)
            view[:] = cv2.resize(small, (b.w, b.h), interpolation=cv2.INTER_NEAREST)
        else:
            view[:] = 128
    return frame


def mask_image(image: np.ndarray, labels: Sequence[str] = DEFAULT_LABELS, engine: OcrEngine | None = None,
               style: str = "block", window_boxes: Sequence[Box] = ()) -> tuple[np.ndarray, list[Region]]:
    """Mask a copy of ``image`` (BGR or BGRA); returns it and the masked regions."""
    engine = engine or get_engine("onnx")
    h, w = image.shape[:2]
    lines = read_lines(image, detect_lines(image), engine)
    regions = [Region(b, "window") for b in window_boxes] + decide(lines, w, h, labels)
    out = apply_regions(image.copy(), regions, style)
    return out, regions
