"""Helpers for the recording tests: a station with recipients and a signing key, and a reviewer's
decrypt-and-decode of sealed segments in memory (plaintext never goes to disk)."""

from __future__ import annotations

import io
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import nacl.public
import numpy as np

from recorder.encoders import AudioSpec, VideoSpec
from recorder.pipeline import Pipeline, PipelineConfig
from station.crypto import SealedReader, Truncated
from station.crypto.keys import recipient_text
from station.secrets import SIGNING_KEY, SecretStore


@dataclass
class Station:
    home: Path
    policy_path: Path
    identity: nacl.public.PrivateKey
    env: dict[str, str] = field(default_factory=dict)


def make_station(home: Path, **capture: Any) -> Station:
    """Policy with a fresh recipient (whose private key the test keeps) + a signing key in the
    (test-isolated) keyring. ``capture`` overrides policy keys given as 'section.key'."""
    import nacl.signing

    identity = nacl.public.PrivateKey.generate()
    values: dict[str, Any] = {"crypto.recipients": [recipient_text(identity.public_key)],
                              "masking.enabled": False, "spool.min_free_mb": 64}
    values.update(capture)
    sections: dict[str, dict[str, Any]] = {}
    for k, v in values.items():
        sec, key = k.split(".", 1)
        sections.setdefault(sec, {})[key] = v
    lines = []
    for sec, kv in sections.items():
        lines.append(f"[{sec}]")
        for k, v in kv.items():
            lines.append(f"{k} = {json.dumps(v)}")
    home.mkdir(parents=True, exist_ok=True)
    policy_path = home / "policy.toml"
    policy_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    store = SecretStore()
    if store.get(SIGNING_KEY) is None:
        store.set_bytes(SIGNING_KEY, bytes(nacl.signing.SigningKey.generate()))
    return Station(home, policy_path, identity)


def plaintext(path: Path, identity: Any) -> tuple[bytes, bool]:
    """(decrypted bytes, complete): every authenticated message; complete=False if truncated."""
    out = bytearray()
    reader = SealedReader(path, [identity])
    try:
        for msg in reader.messages():
            out += msg
        return bytes(out), True
    except Truncated:
        return bytes(out), False
    finally:
        reader.close()


@dataclass
class Decoded:
    screen_pts_ms: list[int] = field(default_factory=list)
    camera_pts_ms: list[int] = field(default_factory=list)
    audio: list[np.ndarray] = field(default_factory=list)
    audio_start_ms: list[float] = field(default_factory=list)
    screen_frames: list[np.ndarray] = field(default_factory=list)
    keyframe_first: list[bool] = field(default_factory=list)

    @property
    def audio_samples(self) -> int:
        return sum(a.shape[0] for a in self.audio)


def decode_media(data: bytes, out: Decoded | None = None, *, keep_screen: Any = None,
                 keep_audio: bool = True) -> Decoded:
    """Decode one segment's Matroska bytes (in memory). ``keep_screen(frame) -> ndarray|None``
    extracts what to keep from each screen frame."""
    out = out or Decoded()
    with av.open(io.BytesIO(data)) as c:
        titles = {s.index: s.metadata.get("title") for s in c.streams}
        first: dict[str, bool] = {}
        try:
            for packet in c.demux():
                name = titles.get(packet.stream.index)
                if packet.size == 0:
                    continue
                if name in ("screen", "camera") and name not in first:
                    first[name] = bool(packet.is_keyframe)
                for frame in packet.decode():
                    ms = round(float(frame.pts * frame.time_base) * 1000)
                    if name == "screen":
                        out.screen_pts_ms.append(ms)
                        if keep_screen is not None:
                            out.screen_frames.append(keep_screen(frame))
                    elif name == "camera":
                        out.camera_pts_ms.append(ms)
                    elif keep_audio:
                        out.audio.append(frame.to_ndarray().mean(axis=0))
                        out.audio_start_ms.append(float(frame.pts * frame.time_base) * 1000)
        except av.error.InvalidDataError:
            pass  # a cut-off cluster at the end of a crashed segment: decoded up to the cut
        out.keyframe_first.extend(first.values())
    return out


def session_segments(session_dir: Path) -> list[int]:
    return sorted(int(p.name[4:10]) for p in session_dir.glob("seg-*.manifest.json"))


def oplog_events(session_dir: Path, identity: Any) -> list[dict[str, Any]]:
    events = []
    for seq in session_segments(session_dir):
        data, _ = plaintext(session_dir / f"seg-{seq:06d}.oplog.drseg", identity)
        events += [json.loads(x) for x in data.decode().splitlines() if x.strip()]
    return events


def onsets_ms(decoded: Decoded, rate_hz: int = 48000, threshold: float = 0.1,
              min_gap_ms: float = 300) -> list[float]:
    """Times (ms on the session timeline) where the decoded audio rises above ``threshold``."""
    out: list[float] = []
    for start_ms, a in zip(decoded.audio_start_ms, decoded.audio, strict=True):
        idx = np.flatnonzero(np.abs(a) > threshold)
        for i in idx:
            t = start_ms + i * 1000 / rate_hz
            if not out or t - out[-1] > min_gap_ms:
                out.append(t)
    return out


class MemWriter:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.flushes = 0

    def write(self, b: bytes) -> int:
        self.buf += b
        return len(b)

    def flush(self) -> None:
        self.flushes += 1


class MemSealer:
    """Call-sequence stand-in for SessionSealer (unit tests only; sealing is proven elsewhere)."""

    def __init__(self) -> None:
        self.files: dict[tuple[int, str], MemWriter] = {}
        self.closed: list[tuple[int, dict[str, Any]]] = []

    def open_segment(self, seq: int, kind: str) -> MemWriter:
        w = self.files[(seq, kind)] = MemWriter()
        return w

    def close_segment(self, seq: int, stats: dict[str, Any]) -> dict[str, Any]:
        self.closed.append((seq, stats))
        return {"seq": seq}

    def write_error(self) -> OSError | None:
        return None


def small_config(**kw: Any) -> PipelineConfig:
    base: dict[str, Any] = {"screen": VideoSpec(320, 240, 10, preset="ultrafast"),
                            "camera": VideoSpec(320, 240, 10, preset="ultrafast"),
                            "audio": AudioSpec(), "segment_s": 60, "holdback_ms": 50}
    base.update(kw)
    return PipelineConfig(**base)


def run_pipeline(p: Pipeline, seconds: float) -> None:
    p.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not p.done.is_set():
        time.sleep(0.02)
    p.stop()


H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")


def make_video(path: Path, *, size: str = "1280x720", rate: int = 25, frames: int = 250,
               codec: tuple[str, ...] = H264) -> Path:
    """A camera file (ffmpeg's testsrc2 pattern): what tests bring instead of a webcam."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
                    "-frames:v", str(frames), *codec, str(path)], check=True)
    return path
