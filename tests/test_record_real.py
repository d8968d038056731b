"""`station record` on real devices: Xvfb + a real Qt window, the PulseAudio null sink, a video
file as camera. One long recording (``STATION_TEST_LONG_S``, default 300 s) serves the counts,
durations, drops and the flash/beep sync assertions.

Stimulus: every 2 s a beep enters the null sink at a chosen instant ``T_k`` of the (system-wide)
monotonic clock, scheduled through PortAudio's DAC time; at the same instant a Qt window at the
top-left of the screen flashes white and burns ``k`` and the ms elapsed since ``T_k`` into its
pixels (repainted every 2 ms around each flash). After decoding, the flash onset in a screen frame is
``pts - elapsed`` (no 67 ms frame quantisation), the beep onset is where the decoded audio rises.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recorder.fake import BITS, BLOCK, draw_stamp, read_stamp
from tests.recordkit import Decoded, decode_media, make_station, make_video, onsets_ms, plaintext, session_segments

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]

LONG_S = float(os.environ.get("STATION_TEST_LONG_S", "300"))
BEEP_EVERY_S = 2.0
FLASH_S = 0.3
REPAINT_LEAD_S, REPAINT_TAIL_S = 0.02, 0.05  # repaint window around each flash


def make_camera_file(path: Path, seconds: int = 10) -> Path:
    return make_video(path, frames=25 * seconds)


class Stimulus:
    """Beeps through PortAudio (to the null sink) and flashes in a Qt window, same instants."""

    def __init__(self, first_s: float, count: int) -> None:
        from PySide6.QtCore import Qt
        from PySide6.QtGui import QImage, QPainter
        from PySide6.QtWidgets import QApplication, QWidget

        self.app = QApplication.instance() or QApplication([])
        with contextlib.suppress(OSError):  # a precise stimulus on a busy machine (root only)
            os.setpriority(os.PRIO_PROCESS, 0, -5)
        t0 = time.monotonic() + first_s
        self.beeps = [t0 + k * BEEP_EVERY_S for k in range(count)]
        beeps = self.beeps
        w, h = BLOCK * BITS + 32, BLOCK * 2 + 200
        self.buf = np.zeros((h, w, 4), np.uint8)
        buf = self.buf

        class Flash(QWidget):
            def paintEvent(self, _ev: object) -> None:
                now = time.monotonic()
                k = next((i for i, b in enumerate(beeps) if b <= now < b + FLASH_S), None)
                buf[...] = 255 if k is not None else 0
                draw_stamp(buf, 0 if k is None else k + 1,
                           0 if k is None else int((now - beeps[k]) * 1000))
                img = QImage(buf.data, w, h, w * 4, QImage.Format.Format_RGB32)
                with QPainter(self) as p:
                    p.drawImage(0, 0, img)

        self.win = Flash()
        self.win.setWindowFlags(Qt.WindowType.FramelessWindowHint | Qt.WindowType.WindowStaysOnTopHint)
        self.win.setGeometry(0, 0, w, h)
        self.win.show()
        self._start_audio()

    def _start_audio(self) -> None:
        import sounddevice as sd

        rate = 48000
        beeps = self.beeps

        def cb(out: np.ndarray, frames: int, t: object, status: object) -> None:
            now = time.monotonic()
            dac = now + (t.outputBufferDacTime - t.currentTime)  # type: ignore[attr-defined]
            ts = dac + np.arange(frames) / rate
            sig = np.zeros(frames, np.float32)
            for b in beeps:
                if b - 0.1 < dac < b + 0.2:
                    m = (ts >= b) & (ts < b + 0.1)
                    sig[m] = 0.5 * np.sin(2 * np.pi * 1000 * (ts[m] - b))
            out[:, 0] = sig

        # 'high' latency: no underruns on a busy machine; the DAC time accounts for it
        self.stream = sd.OutputStream(device="pulse", samplerate=rate, channels=1, blocksize=480,
                                      latency="high", callback=cb)
        self.stream.start()

    def run_until(self, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
        """Repaint every 2 ms from just before a flash until just after it, and idle between
        flashes: the window is black then, and painting it 500 times a second for the whole
        recording loaded the 2-core machine (this process and Xvfb) as much as the recorder."""
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            now = time.monotonic()
            k = bisect.bisect_right(self.beeps, now + REPAINT_LEAD_S) - 1
            if k >= 0 and now < self.beeps[k] + FLASH_S + REPAINT_TAIL_S:
                self.win.repaint()
                self.app.processEvents()
                time.sleep(0.002)
            else:
                self.app.processEvents()
                upcoming = self.beeps[k + 1] - REPAINT_LEAD_S - now if k + 1 < len(self.beeps) else 0.01
                time.sleep(min(0.01, max(0.0005, upcoming)))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, 0)
        self.stream.stop()
        self.stream.close()
        self.win.close()


def _screen_stamp(frame) -> np.ndarray:
    y = frame.planes[0]
    gray = np.frombuffer(y, np.uint8).reshape(-1, y.line_size)[:BLOCK * 2 + 8, :BLOCK * BITS + 8]
    return np.asarray(read_stamp(gray))


def station_cmd(st, *args: str) -> list[str]:
    return [sys.executable, "-m", "station.cli", "record", "--json", "--policy", str(st.policy_path),
            "--data-dir", str(st.home), *args]


def test_long_real_recording_counts_durations_no_drops_and_flash_beep_sync(
        display: str, audio_sink: object, keyring_service: str, station_home: Path,
        tmp_path: Path) -> None:
    cam = make_camera_file(tmp_path / "camera.mp4")
    st = make_station(station_home, **{"capture.segment_seconds": 60})
    proc = subprocess.Popen(station_cmd(st, "--duration", f"{LONG_S:g}", "--monitor", "1", "--camera",
                                        str(cam), "--mic", "pulse"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stim = Stimulus(first_s=3.0, count=int(LONG_S / BEEP_EVERY_S) + 3)
    try:
        stim.run_until(proc, LONG_S + 60)
    finally:
        stim.close()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-3000:]
    result = json.loads(out)
    dur = result["duration_s"]
    checks: dict[str, bool] = {}  # everything is measured and printed, then asserted together
    checks["duration"] = abs(dur - LONG_S) < 1.0
    streams = result["streams"]
    drops = {n: (s["dropped"], s["dropped_full"], s["dropped_late"]) for n, s in streams.items()}
    checks["0 drops"] = all(d[0] == 0 for d in drops.values())

    sdir = Path(result["session_dir"])
    segs = session_segments(sdir)
    assert len(segs) == result["segments"] == int(np.ceil(dur / 60 - 0.01))
    dec = Decoded()
    for seq in segs:
        data, complete = plaintext(sdir / f"seg-{seq:06d}.media.drseg", st.identity)
        assert complete
        dec = decode_media(data, dec, keep_screen=_screen_stamp)
    assert all(dec.keyframe_first)
    # frame counts within 1 % of fps x duration, audio within 50 ms of the duration
    n_screen, n_camera = len(dec.screen_pts_ms), len(dec.camera_pts_ms)
    checks["screen frames"] = abs(n_screen - 15 * LONG_S) <= 0.01 * 15 * LONG_S
    checks["camera frames"] = abs(n_camera - 25 * LONG_S) <= 0.01 * 25 * LONG_S
    audio_s = streams["audio"]["frames"] / 48000  # audio "frames" are samples
    checks["audio duration"] = abs(audio_s - dur) <= 0.05 and abs(audio_s - LONG_S) <= 0.05
    decoded_audio_s = dec.audio_samples / 48000
    checks["decoded audio"] = abs(decoded_audio_s - audio_s) <= 0.05 + 0.03 * len(segs)  # AAC padding

    # sync: flash onset (from the burned elapsed ms) vs beep onset (decoded audio)
    stamps = np.array(dec.screen_frames)
    flash_pts: dict[int, float] = {}
    for (k, elapsed), pts in zip(stamps, dec.screen_pts_ms, strict=True):
        if 0 < k < 100_000 and elapsed < FLASH_S * 1000 and k not in flash_pts:
            flash_pts[int(k)] = pts - elapsed
    beeps = onsets_ms(dec, threshold=0.1, min_gap_ms=500)
    offsets = []  # (flash time ms, beep - flash ms)
    for _k, f in sorted(flash_pts.items()):
        near = [b for b in beeps if abs(b - f) < 500]
        if near:
            offsets.append((f, near[0] - f))
    assert len(offsets) >= 0.9 * (LONG_S / BEEP_EVERY_S) - 3, (len(offsets), len(flash_pts), len(beeps))
    start = [o for t, o in offsets if t < 30_000]
    end = [o for t, o in offsets if t > offsets[-1][0] - 30_000]
    every = np.abs([o for _, o in offsets])
    checks["sync start/end <= 40 ms"] = np.max(np.abs(start)) <= 40 and np.max(np.abs(end)) <= 40
    print(f"\nSYNC {LONG_S:g}s: n={len(offsets)} start mean {np.mean(start):+.1f} ms "
          f"max|{np.max(np.abs(start)):.1f}| end mean {np.mean(end):+.1f} ms max|{np.max(np.abs(end)):.1f}| "
          f"all: median |{np.median(every):.1f}| p95 |{np.percentile(every, 95):.1f}| "
          f"max |{np.max(every):.1f}| ms; "
          f"screen {n_screen} camera {n_camera} audio {audio_s:.3f} s (decoded {decoded_audio_s:.3f} s) "
          f"duration {dur} s; drops (all, queue full, late) {drops}; audio fixes "
          f"{ {k: streams['audio'].get(k) for k in ('silence_inserted', 'trimmed', 'overflows')} }; "
          f"outliers {[(round(t / 1000, 1), round(o, 1)) for t, o in offsets if abs(o) > 20]}; "
          f"load {os.getloadavg()}")
    assert all(checks.values()), {k: v for k, v in checks.items() if not v}
