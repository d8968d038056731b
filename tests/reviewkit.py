"""Synthetic sealed sessions for the review tests (real PyAV encoders, real SealedWriter).

Video frames carry their frame number as a row of black/white blocks (survives H.264), so a
decoded frame tells which capture instant it shows; the audio carries a 1 kHz tone burst at
every whole second of session time, so frame counters and tone onsets can be compared.
"""

from __future__ import annotations

import fractions
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

BITS = 12
RATE_HZ = 48000


def draw_counter(img: np.ndarray, n: int) -> None:
    h, w = img.shape[:2]
    bw = w // (BITS + 2)
    for b in range(BITS):
        on = (n >> b) & 1
        img[: h // 4, (b + 1) * bw:(b + 2) * bw] = 255 if on else 0


def read_counter(rgb: np.ndarray) -> int:
    h, w = rgb.shape[:2]
    bw = w // (BITS + 2)
    gray = rgb.mean(axis=2) if rgb.ndim == 3 else rgb
    n = 0
    for b in range(BITS):
        block = gray[h // 16: h // 4 - h // 16, (b + 1) * bw + bw // 4:(b + 2) * bw - bw // 4]
        if block.mean() > 128:
            n |= 1 << b
    return n


def face_image(h: int, w: int) -> np.ndarray:
    """A drawn frontal face that OpenCV's Haar cascade detects (BGR)."""
    img = np.full((h, w, 3), (60, 70, 80), np.uint8)
    cx, cy, s = w // 2, h // 2 + h // 10, h / 360
    cv2.ellipse(img, (cx, cy), (int(70 * s), int(95 * s)), 0, 0, 360, (140, 170, 215), -1)
    for dx in (-28, 28):
        cv2.ellipse(img, (cx + int(dx * s), cy - int(22 * s)), (int(16 * s), int(8 * s)), 0, 0, 360,
                    (40, 40, 40), -1)
        cv2.line(img, (cx + int((dx - 18) * s), cy - int(40 * s)), (cx + int((dx + 18) * s), cy - int(40 * s)),
                 (30, 30, 30), max(1, int(5 * s)))
    cv2.line(img, (cx, cy - int(15 * s)), (cx, cy + int(20 * s)), (110, 140, 190), 3)
    cv2.ellipse(img, (cx, cy + int(45 * s)), (int(28 * s), int(9 * s)), 0, 0, 360, (60, 60, 150), -1)
    cv2.ellipse(img, (cx, cy - int(80 * s)), (int(72 * s), int(30 * s)), 0, 180, 360, (20, 20, 20), -1)
    return cv2.GaussianBlur(img, (5, 5), 0)


def tone_audio(t0_s: float, n: int, rate_hz: int = RATE_HZ, burst_s: float = 0.2, amp: float = 0.4,
               silent: bool = False, clip: bool = False) -> np.ndarray:
    """Samples of session time [t0_s, t0_s + n/rate): 1 kHz bursts at each whole second."""
    t = t0_s + np.arange(n) / rate_hz
    if silent:
        return np.zeros(n, np.float32)
    x = amp * np.sin(2 * np.pi * 1000 * t)
    x = np.where((t % 1.0) < burst_s, x, 0.02 * np.sin(2 * np.pi * 180 * t))
    if clip:
        x = np.clip(x * 10, -1, 1)
    return x.astype(np.float32)


def encode_segment(out: Any, start_s: float, dur_s: float, *, screen_fps: int = 10, camera_fps: int = 25,
                   screen_size: tuple[int, int] = (640, 360), camera_size: tuple[int, int] = (320, 240),
                   camera: str = "face", audio: str = "tone", gop_s: float = 1.0) -> None:
    """Encode one segment (Matroska, session-time pts) into the writable ``out``.

    camera: "face" | "black" | "plain"; audio: "tone" | "silent" | "clip".
    """
    c = av.open(out, mode="w", format="matroska")
    vs = c.add_stream("libx264", rate=screen_fps)
    vs.width, vs.height, vs.pix_fmt = *screen_size, "yuv420p"
    vs.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(int(gop_s * screen_fps))}
    vs.metadata["title"] = "screen"
    vs.codec_context.time_base = fractions.Fraction(1, 1000)
    cs = c.add_stream("libx264", rate=camera_fps)
    cs.width, cs.height, cs.pix_fmt = *camera_size, "yuv420p"
    cs.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(int(gop_s * camera_fps))}
    cs.metadata["title"] = "camera"
    cs.codec_context.time_base = fractions.Fraction(1, 1000)
    aus = c.add_stream("aac", rate=RATE_HZ)
    aus.layout = "mono"
    aus.metadata["title"] = "microphone"
    face = face_image(camera_size[1], camera_size[0])
    events: list[tuple[float, int, Callable[[], None]]] = []

    def video(stream: Any, fps: int, size: tuple[int, int], kind: str) -> None:
        n0 = int(round(start_s * fps))
        for n in range(n0, n0 + int(round(dur_s * fps))):
            t = n / fps

            def emit(n: int = n, t: float = t) -> None:
                if kind == "screen":
                    img = np.full((size[1], size[0], 3), 200, np.uint8)
                elif camera == "black":
                    img = np.full((size[1], size[0], 3), 4, np.uint8)
                elif camera == "face":
                    img = face.copy()
                else:
                    img = np.full((size[1], size[0], 3), 120, np.uint8)
                if not (kind == "camera" and camera == "black"):
                    draw_counter(img, n)
                fr = av.VideoFrame.from_ndarray(img, format="bgr24")
                fr.pts = int(round(t * 1000))
                fr.time_base = fractions.Fraction(1, 1000)
                for p in stream.encode(fr):
                    c.mux(p)
            events.append((t, 0 if kind == "screen" else 1, emit))

    video(vs, screen_fps, screen_size, "screen")
    video(cs, camera_fps, camera_size, "camera")
    block = 1024
    s0 = int(round(start_s * RATE_HZ))
    total = int(round(dur_s * RATE_HZ))
    for off in range(0, total, block):
        n = min(block, total - off)

        def emit_audio(off: int = off, n: int = n) -> None:
            x = tone_audio((s0 + off) / RATE_HZ, n, silent=audio == "silent", clip=audio == "clip")
            fr = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="flt", layout="mono")
            fr.sample_rate = RATE_HZ
            fr.pts = s0 + off
            fr.time_base = fractions.Fraction(1, RATE_HZ)
            for p in aus.encode(fr):
                c.mux(p)
        events.append(((s0 + off) / RATE_HZ, 2, emit_audio))
    for _, _, emit in sorted(events, key=lambda e: (e[0], e[1])):
        emit()
    for s in (vs, cs, aus):
        for p in s.encode(None):
            c.mux(p)
    c.close()


def write_plain(path: Path, **kw: Any) -> None:
    with open(path, "wb") as fh:
        encode_segment(fh, **kw)


# --- sealed sessions ----------------------------------------------------------------------------

STEPS = ["identity_shown", "risk_disclosure_read", "terms_explained", "customer_confirmed"]


class _WriteOnly:
    """What the recorder hands PyAV: write() only, so the muxer streams (no seeking back)."""

    def __init__(self, w: Any) -> None:
        self.w = w

    def write(self, data: Any) -> int:
        self.w.write(bytes(data))
        self.w.flush()
        return len(data)


def new_session_id(day: str | None = None) -> str:
    import datetime as dt
    import secrets

    now = dt.datetime.now(dt.UTC)
    stamp = (day.replace("-", "") if day else now.strftime("%Y%m%d")) + now.strftime("T%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(4)}"


def make_session(spool: Path, recipients: list[Any], signing_key: Any, *, session_id: str | None = None,
                 station: str = "seat-01", agent: str = "agent-7", segments: int = 2, seg_s: float = 3.0,
                 camera: str = "face", audio: str = "tone", steps: list[str] | None = None,
                 consent: bool = True, extra_events: list[dict[str, Any]] | None = None,
                 screen_size: tuple[int, int] = (640, 360), camera_size: tuple[int, int] = (320, 240),
                 gop_s: float = 1.0) -> Path:
    """A finished sealed session in ``spool/<id>`` with the real SessionSealer."""
    import json

    from station.crypto import SessionSealer

    sid = session_id or new_session_id()
    d = spool / sid
    steps = STEPS if steps is None else steps
    total = segments * seg_s
    events: list[dict[str, Any]] = []
    if consent:
        events.append({"t_ms": 300, "kind": "consent", "label": "agreed"})
    for i, s in enumerate(steps):
        events.append({"t_ms": int((0.5 + i * (total - 1.0) / max(1, len(steps))) * 1000) + 200,
                       "kind": "script_step", "label": s, "index": i + 1})
    events += [{"t_ms": int(t * 1000), "kind": "window", "title": f"app {k}"}
               for k, t in enumerate((0.8, total / 2 + 0.1))]
    events += extra_events or []
    events.sort(key=lambda e: e["t_ms"])
    sealer = SessionSealer(d, sid, station, recipients, signing_key,
                           meta={"agent": agent, "site": "hq"})
    for i in range(segments):
        seq = i + 1
        start = i * seg_s
        media = sealer.open_segment(seq, "media")
        encode_segment(_WriteOnly(media), start_s=start, dur_s=seg_s, camera=camera, audio=audio,
                       screen_size=screen_size, camera_size=camera_size, gop_s=gop_s)
        op = sealer.open_segment(seq, "oplog")
        op.write(b"".join((json.dumps(e) + "\n").encode() for e in events
                          if start * 1000 <= e["t_ms"] < (start + seg_s) * 1000))
        ml = sealer.open_segment(seq, "masklog")
        ml.write((json.dumps({"rule": "phone", "start_ms": int((start + 0.5) * 1000),
                              "end_ms": int((start + 1.5) * 1000), "box": [10, 10, 50, 20]}) + "\n").encode())
        sealer.close_segment(seq, {"start_pts_ms": int(start * 1000),
                                   "streams": {k: {"dropped": 0, "first_pts_ms": int(start * 1000),
                                                   "last_pts_ms": int((start + seg_s) * 1000) - 40}
                                               for k in ("screen", "camera", "audio")},
                                   "gaps": [], "masking": {"enabled": True, "boxes": 1}})
    sealer.finish("normal", {"duration_s": total})
    return d


def upload(session_dir: Path, store: Any, prefix: str = "", day: str | None = None,
           station: str = "seat-01") -> str:
    """Put a spool session into a store under the uploader's layout; returns its folder key."""
    from uploader.layout import session_prefix

    folder = session_prefix(prefix, session_dir.name, station)
    for p in sorted(session_dir.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            store.put(f"{folder}/{p.name}", p)
    return folder


def onsets_s(samples: np.ndarray, rate_hz: int = RATE_HZ, level: float = 0.2, min_gap_s: float = 0.3
             ) -> np.ndarray:
    """Times of rising edges of the tone envelope (at least min_gap_s apart)."""
    env = np.abs(samples) > level
    edges = np.flatnonzero(env[1:] & ~env[:-1]) + 1
    out: list[int] = []
    for e in edges:
        if not out or e - out[-1] > rate_hz * min_gap_s:
            out.append(int(e))
    return np.array(out, dtype=np.float64) / rate_hz
