"""Helpers for the real-time masking test and bench/masking.py --live: run the scripted scene,
grab it with mss at a fixed rate through a FrameFilter, and check frames for legible PII with
Tesseract (an engine independent of the masker's PP-OCR)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from recorder.items import VideoFrame

HERE = Path(__file__).resolve().parent


@dataclass
class LiveRun:
    frames_out: list[VideoFrame] = field(default_factory=list)
    raw_samples: list[np.ndarray] = field(default_factory=list)
    ticks: int = 0
    late: int = 0
    push_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0


def start_scene(seconds: float, loop: bool = False) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    env = dict(os.environ, QT_QPA_PLATFORM="xcb")
    proc = subprocess.Popen([sys.executable, str(HERE / "mask_scene.py"), str(seconds),
                             *(["--loop"] if loop else [])], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    info = json.loads(line)
    return proc, info


def type_into(field_xy: list[int], text: str, delay_ms: int = 90) -> subprocess.Popen[bytes]:
    x, y = field_xy
    subprocess.run(["xdotool", "mousemove", str(x), str(y), "click", "1"], check=True)
    return subprocess.Popen(["xdotool", "type", "--delay", str(delay_ms), text])


def grab_through(filt: Any, seconds: float, fps: int, keep_raw_every: int = 0,
                 on_tick: Any = None) -> LiveRun:
    import mss

    run = LiveRun()
    period = 1.0 / fps
    t_start = time.monotonic()
    cpu0 = time.process_time()
    with (mss.MSS() if hasattr(mss, "MSS") else mss.mss()) as sct:
        mon = sct.monitors[1]
        nxt = t_start
        while time.monotonic() - t_start < seconds:
            now = time.monotonic()
            if now < nxt:
                time.sleep(nxt - now)
            elif now - nxt > period:
                missed = int((now - nxt) / period)
                run.late += missed
                nxt += missed * period
            nxt += period
            cap_ns = time.monotonic_ns()
            shot = sct.grab(mon)
            img = np.frombuffer(shot.raw, np.uint8).reshape(shot.height, shot.width, 4).copy()
            if keep_raw_every and run.ticks % keep_raw_every == 0:
                run.raw_samples.append(img.copy())
            t0 = time.perf_counter()
            run.frames_out += filt.push(VideoFrame(cap_ns, img, run.ticks))
            run.push_ms.append(1000 * (time.perf_counter() - t0))
            run.ticks += 1
            if on_tick:
                on_tick(run.ticks)
    run.frames_out += filt.flush()
    run.wall_s = time.monotonic() - t_start
    run.cpu_s = time.process_time() - cpu0
    return run


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def tesseract_text(img: np.ndarray, langs: str = "eng+chi_sim") -> str:
    big = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    ok, png = cv2.imencode(".png", big)
    proc = subprocess.run(["tesseract", "stdin", "stdout", "-l", langs, "--psm", "11"], input=png.tobytes(),
                          capture_output=True, timeout=120, check=False, env=dict(os.environ, OMP_THREAD_LIMIT="1"))
    return proc.stdout.decode("utf-8", "replace")


def legible(text: str, planted: dict[str, Any], window: int = 8) -> list[str]:
    """Planted values legible in OCR text: any ``window`` consecutive digits of a number,
    an e-mail, or a name."""
    runs = [_digits(r) for r in re.findall(r"\d[\d \-]*\d", text)]
    flat = re.sub(r"\s", "", text)
    hits = []
    numbers = list(planted["mobiles"]) + list(planted["cards"]) + [planted["id"], planted["typed"],
                                                                      planted["card_mobile"]]
    for num in numbers:
        d = _digits(num)
        if any(d[k:k + window] in r for r in runs for k in range(0, len(d) - window + 1)):
            hits.append(num)
    if planted["email"].split("@")[0] in flat:
        hits.append(planted["email"])
    for name in planted["names"]:
        if name in flat:
            hits.append(name)
    return hits


class Distinct:
    """Keeps a frame only if it visibly differs from the last kept one (8x8 block means differing
    by more than ``tol`` somewhere): encoder noise is not a new frame, a mask appearing or
    disappearing over a text cell is."""

    def __init__(self, tol: float = 24.0) -> None:
        self.tol = tol
        self.kept: list[tuple[int, np.ndarray]] = []
        self._last: np.ndarray | None = None

    def offer(self, seq: int, img: np.ndarray) -> bool:
        h, w = img.shape[:2]
        small = cv2.resize(img[..., :3], (w // 8, h // 8), interpolation=cv2.INTER_AREA).astype(np.int16)
        if self._last is not None and np.abs(small - self._last).max() <= self.tol:
            return False
        self._last = small
        self.kept.append((seq, img[..., :3].copy()))
        return True


def unique_frames(frames: list[VideoFrame], crop: tuple[int, int, int, int]) -> list[tuple[int, np.ndarray]]:
    x0, y0, x1, y1 = crop
    seen: set[bytes] = set()
    out = []
    for f in frames:
        c = f.image[y0:y1, x0:x1]
        h = hashlib.blake2b(np.ascontiguousarray(c).tobytes(), digest_size=16).digest()
        if h not in seen:
            seen.add(h)
            out.append((f.seq, c[..., :3].copy()))
    return out


def leaks(frames: list[VideoFrame], planted: dict[str, Any], crop: tuple[int, int, int, int],
          workers: int = 2) -> tuple[int, dict[int, list[str]]]:
    """(unique frames checked, {seq: legible values}) by Tesseract on each distinct frame."""
    uniq = unique_frames(frames, crop)
    with ThreadPoolExecutor(workers) as pool:
        texts = list(pool.map(lambda sc: tesseract_text(sc[1]), uniq))
    found = {}
    for (seq, _), text in zip(uniq, texts, strict=True):
        hits = legible(text, planted)
        if hits:
            found[seq] = hits
    return len(uniq), found
