"""Masking screen frames: the still-image path and the real-time :class:`MaskFilter`.

Both use the same steps (line detection, OCR, :func:`~recorder.masking.analysis.decide`). A still
image has no delay line and is cleared fully before it is returned; the real-time filter reads
only the lines that changed, holds frames in a short delay line and masks whatever is not cleared
when a frame must leave (fail closed).
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from recorder.masking.analysis import Line, Region, decide
from recorder.masking.ledger import MaskLedger
from recorder.masking.lines import (
    MAX_H,
    RULE_H,
    TILE_H,
    Box,
    as_gray,
    changed_tiles,
    detect_lines,
    ink_map,
    line_key,
)
from recorder.masking.ocr import OcrEngine, Reading, get_engine
from station import logs
from station.policy import DEFAULT_LABELS

log = logs.get("mask")

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


# --- real-time path -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Seen:
    box: Box
    crop_x0: int
    key: bytes


@dataclass(slots=True)
class _Held:
    item: Any
    lines: tuple[_Seen, ...]
    windows: tuple[Box, ...]
    error: str = ""


class MaskFilter:
    """The real-time screen-frame filter (recorder.filters.FrameFilter).

    Per pushed frame, on the caller's thread: 64x24 tile difference against the previous frame;
    text lines re-detected only in bands of changed tiles (lines elsewhere carry over); each line
    keyed by the hash of its binarised pixels. Known keys reuse their OCR reading; new keys go to
    one OCR worker thread (batched, newest lines first, lines no longer on screen skipped).

    Frames wait in a delay line of ``masking.delay_ms``. When a frame leaves, it is masked with
    what is known then: PII of read lines, the whole box of every line not yet read plus the lines
    sharing its row (fail closed), window-rule boxes. If analysing a frame fails, or the OCR
    worker died, the whole frame is masked; the summary and the ledger say so.
    """

    enabled = True

    def __init__(self, labels: Sequence[str] = DEFAULT_LABELS, delay_ms: int = 250,
                 engine: OcrEngine | None = None, style: str = "block",
                 window_source: Any = None, window_rules: Sequence[str] = (),
                 salt: bytes | None = None, max_pending: int = 2000) -> None:
        self.labels = list(labels)
        self.delay_ns = int(delay_ms) * 1_000_000
        self.engine = engine or get_engine("onnx")
        self.style = style
        self.window_source = window_source
        self.window_rules = list(window_rules)
        self.ledger = MaskLedger(salt or os.urandom(32))
        self.max_pending = max_pending
        self._prev: np.ndarray | None = None
        self._lines: list[_Seen] = []
        self._held: collections.deque[_Held] = collections.deque()
        self._cache: collections.OrderedDict[bytes, Reading] = collections.OrderedDict()
        self._crops: dict[bytes, np.ndarray] = {}
        self._queue: collections.deque[bytes] = collections.deque()
        self._active: set[bytes] = set()
        self._cv = threading.Condition()
        self._stop = False
        self._worker_error: BaseException | None = None
        self._decision: tuple[tuple[Any, ...], list[Region]] | None = None
        self.stats = collections.Counter[str]()
        self.capture_cpu_s = 0.0
        self.worker_cpu_s = 0.0
        self._start_worker()

    def _start_worker(self) -> None:
        with self._cv:
            self._stop = False
        self._worker = threading.Thread(target=self._ocr_loop, name="mask-ocr", daemon=True)
        self._worker.start()

    # --- FrameFilter ---------------------------------------------------------------------------
    def push(self, item: Any) -> list[Any]:
        t0 = time.thread_time()
        if self._stop and self._worker_error is None:
            self._start_worker()
        try:
            held = self._analyse(item)
        except Exception as exc:  # fail closed: this frame is masked whole
            log.exception("masking analysis failed; frame masked whole")
            self._prev = None
            self._lines = []
            held = _Held(item, (), (), error=f"{type(exc).__name__}: {exc}")
        self._held.append(held)
        newest = item.capture_ns
        out = []
        while self._held and self._held[0].item.capture_ns + self.delay_ns <= newest:
            out.append(self._release(self._held.popleft()))
        self.capture_cpu_s += time.thread_time() - t0
        return out

    def flush(self) -> list[Any]:
        """Release every held frame (masked with what is known now) and stop the OCR worker;
        a later push starts it again (the pipeline flushes at the end of a session)."""
        out = [self._release(self._held.popleft()) for _ in range(len(self._held))]
        self.close()
        return out

    def ledger_entries(self) -> list[dict[str, Any]]:
        return self.ledger.drain()

    def summary(self) -> dict[str, Any]:
        s = self.ledger.summary()
        s.update(engine=self.engine.name, delay_ms=self.delay_ns // 1_000_000,
                 lines_read=self.stats["read"], cache_hits=self.stats["hits"],
                 frames_failed=self.stats["failed"], worker_ok=self._worker_error is None,
                 worker_error=repr(self._worker_error) if self._worker_error else None)
        return s

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._worker.join(timeout=5)

    # --- analysis on the caller's thread --------------------------------------------------------
    def _analyse(self, item: Any) -> _Held:
        frame = item.image
        h, w = frame.shape[:2]
        if self._prev is None or self._prev.shape != frame.shape:
            bands = [(0, h)]
            self._lines = []
        else:
            tiles = changed_tiles(self._prev, frame)
            bands = _bands(np.asarray(tiles.any(axis=1), dtype=bool), h)
        self._prev = frame.copy()
        if bands:
            gray = as_gray(frame)
            for cy0, cy1 in bands:
                # lines touching the changed rows are re-detected (whole, even where they reach
                # beyond them); lines elsewhere keep their earlier detection and reading
                new, _, _ = _detect_band(frame, cy0, cy1, h, gray)
                new = [b for b in new if b.y1 > cy0 and b.y0 < cy1]
                self._lines = [s for s in self._lines if (s.box.y1 <= cy0 or s.box.y0 >= cy1)
                               and not any(_overlap(s.box, b) for b in new)]
                for b in new:
                    crop, cx = crop_for(frame, b)
                    key = line_key(gray, b)
                    self._lines.append(_Seen(b, cx, key))
                    self._submit(key, crop)
            with self._cv:
                self._active = {s.key for s in self._lines}
        return _Held(item, tuple(self._lines), tuple(self._window_boxes(w, h)))

    def _submit(self, key: bytes, crop: np.ndarray) -> None:
        with self._cv:
            if key in self._cache:
                self._cache.move_to_end(key)
                self.stats["hits"] += 1
                return
            if key in self._crops:
                return
            self._crops[key] = crop.copy()
            self._queue.append(key)
            while len(self._queue) > self.max_pending:
                self._crops.pop(self._queue.popleft(), None)
            self._cv.notify()

    def _window_boxes(self, width: int, height: int) -> list[Box]:
        if self.window_source is None or not self.window_rules:
            return []
        from recorder.masking.windows import masked_window_boxes

        return masked_window_boxes(self.window_source, self.window_rules, width, height)

    # --- release ----------------------------------------------------------------------------------
    def _release(self, held: _Held) -> Any:
        frame = held.item.image
        h, w = frame.shape[:2]
        whole = bool(held.error) or self._worker_error is not None
        if whole:
            self.stats["failed"] += 1
            regions = [Region(Box(0, 0, w, h), "frame_error", 0.0)]
        else:
            try:
                regions = self._regions(held, w, h)
            except Exception:
                log.exception("masking decision failed; frame masked whole")
                self.stats["failed"] += 1
                whole = True
                regions = [Region(Box(0, 0, w, h), "frame_error", 0.0)]
        apply_regions(frame, regions, self.style)
        self.ledger.frame(held.item.capture_ns, regions, w * h, whole)
        return held.item

    def _regions(self, held: _Held, w: int, h: int) -> list[Region]:
        with self._cv:
            readings = [self._cache.get(s.key) for s in held.lines]
        sig = (tuple((s.box, s.key) for s in held.lines), tuple(r is None for r in readings), held.windows)
        if self._decision is not None and self._decision[0] == sig:
            return self._decision[1]
        lines = [Line(s.box, s.crop_x0, r, s.key) for s, r in zip(held.lines, readings, strict=True)]
        regions = [Region(b, "window") for b in held.windows] + decide(lines, w, h, self.labels)
        self._decision = (sig, regions)
        return regions

    # --- OCR worker -------------------------------------------------------------------------------
    def _ocr_loop(self) -> None:
        t_cpu = time.thread_time()
        base = self.worker_cpu_s
        try:
            while True:
                with self._cv:
                    while not self._queue and not self._stop:
                        self._cv.wait(0.5)
                    if self._stop:
                        return
                    batch: list[tuple[bytes, np.ndarray]] = []
                    # newest first, then the oldest (no line waits forever while the screen
                    # keeps changing); skip lines no longer on screen
                    while self._queue and len(batch) < 16:
                        key = self._queue.pop() if len(batch) % 2 == 0 else self._queue.popleft()
                        crop = self._crops.pop(key, None)
                        if crop is not None and key in self._active:
                            batch.append((key, crop))
                if not batch:
                    continue
                readings = self.engine.read([c for _, c in batch])
                with self._cv:
                    for (key, _), r in zip(batch, readings, strict=True):
                        self._cache[key] = r
                    self.stats["read"] += len(batch)
                    while len(self._cache) > 20000:
                        self._cache.popitem(last=False)
                self.worker_cpu_s = base + time.thread_time() - t_cpu
        except BaseException as exc:  # fail closed: every later frame is masked whole
            log.exception("OCR worker died")
            self._worker_error = exc


def _bands(rows_changed: np.ndarray, height: int) -> list[tuple[int, int]]:
    bands: list[tuple[int, int]] = []
    r = 0
    n = len(rows_changed)
    while r < n:
        if not rows_changed[r]:
            r += 1
            continue
        s = r
        while r < n and rows_changed[r]:
            r += 1
        y0, y1 = s * TILE_H, min(height, r * TILE_H)
        if bands and y0 - bands[-1][1] <= 2 * TILE_H:
            bands[-1] = (bands[-1][0], y1)
        else:
            bands.append((y0, y1))
    return bands


def _detect_band(frame: np.ndarray, y0: int, y1: int, height: int,
                 gray: np.ndarray) -> tuple[list[Box], int, int]:
    """Lines in rows y0..y1; a line cut by the band's edge is grown over its own ink to its full
    height (by the ink rows in its x range), so no line is ever read or masked in part."""
    y0, y1 = max(0, y0 - TILE_H // 2), min(height, y1 + TILE_H // 2)
    out = []
    for b in detect_lines(frame, (y0, y1)):
        if (y0 > 0 and b.y0 <= y0 + 1) or (y1 < height and b.y1 >= y1 - 1):
            b = _grow_vertically(gray, b, height)
        out.append(b)
    return out, y0, y1


def _grow_vertically(gray: np.ndarray, b: Box, height: int, reach: int = MAX_H) -> Box:
    """Extend a cut line over the ink rows of its own x range (rules and borders removed), at
    most ``reach`` px each way: a text line is never taller than that."""
    top, bottom = max(0, b.y0 - reach), min(height, b.y1 + reach)
    ink = ink_map(gray[top:bottom, b.x0:b.x1])
    ink &= 1 - cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((RULE_H, 1), np.uint8))
    rows = np.asarray(ink.any(axis=1), dtype=bool)
    y0, y1 = b.y0 - top, b.y1 - top
    while y0 > 0 and rows[y0 - 1] and y1 - (y0 - 1) <= reach:
        y0 -= 1
    while y1 < len(rows) and rows[y1] and (y1 + 1) - y0 <= reach:
        y1 += 1
    return Box(b.x0, top + y0, b.x1, top + y1)


def _overlap(a: Box, b: Box) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1
