"""The player's audio goes out through PortAudio (PulseAudio null sink here) and drives the clock."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import nacl.public
import nacl.signing
import numpy as np
import pytest

from station.crypto.keys import station_text
from station.review.audit import ReviewAudit
from station.review.player import PlaybackClock
from station.review.session import ReviewSession
from tests import reviewkit as kit
from uploader.stores import LocalFolderStore

pytestmark = pytest.mark.integration


def _play(clock: PlaybackClock, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        clock.pump()
        time.sleep(0.01)


def test_audio_output_carries_the_tones_at_the_chosen_speed_and_drives_the_position(
        audio_sink: object, tmp_path: Path) -> None:
    import sounddevice as sd

    ident, sk = nacl.public.PrivateKey.generate(), nacl.signing.SigningKey.generate()
    d = kit.make_session(tmp_path / "spool", [bytes(ident.public_key)], sk, segments=2, seg_s=4.0)
    store = LocalFolderStore(tmp_path / "store")
    rs = ReviewSession(store, kit.upload(d, store), [ident], [station_text(sk.verify_key)],
                       ReviewAudit(store, "", None))
    rs.verify()
    player = rs.player(audit=False)
    clock = PlaybackClock(player, audio=True)
    assert clock.has_audio, clock.audio_error
    heard: list[np.ndarray] = []
    first = threading.Event()

    def cb(indata: np.ndarray, frames: int, _t: object, _s: object) -> None:
        heard.append(indata[:, 0].copy())
        first.set()

    mic = sd.InputStream(device="pulse", samplerate=48000, channels=1, dtype="float32", callback=cb)
    mic.start()
    try:
        assert first.wait(5)
        heard.clear()
        clock.seek(0.5)
        clock.play()
        t0 = time.monotonic()
        _play(clock, 2.6)
        pos1, wall1 = clock.position_s(), time.monotonic() - t0
        n1 = sum(len(h) for h in heard)
        clock.set_speed(2.0)
        t1 = time.monotonic()
        _play(clock, 2.0)
        pos2, wall2 = clock.position_s(), time.monotonic() - t1
        clock.pause()
    finally:
        mic.stop()
        mic.close()
        clock.close()
        player.close()
    # the position follows the device: 1x then 2x of the wall time (output latency aside)
    assert abs((pos1 - 0.5) - wall1) < 0.35, (pos1, wall1)
    assert abs((pos2 - pos1) - 2 * wall2) < 0.5, (pos2, pos1, wall2)
    rec = np.concatenate(heard)
    at_1x = kit.onsets_s(rec[:n1])
    at_2x = kit.onsets_s(rec[n1:])
    assert len(at_1x) >= 2 and np.allclose(np.diff(at_1x), 1.0, atol=0.05), at_1x
    assert len(at_2x) >= 3 and np.allclose(np.diff(at_2x)[:3], 0.5, atol=0.05), at_2x
