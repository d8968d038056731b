"""Fake devices through the real encoders and the real sealer; decode and check the content."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recorder.fake import read_stamp
from station.context import Context
from station.errors import StopCode
from tests.recordkit import decode_media, make_station, onsets_ms, oplog_events, plaintext, session_segments

pytestmark = pytest.mark.integration


def _stamp(frame):
    img = frame.to_ndarray(format="gray")
    return np.asarray(read_stamp(img))


def test_fake_session_decodes_to_contiguous_counters_keyframe_segments_and_beeps_on_time(
        station_home: Path, keyring_service: str) -> None:
    from station.recording import RecordingSession

    st = make_station(station_home, **{"capture.segment_seconds": 2, "capture.profile": "low"})
    ctx = Context(data_dir=station_home, policy_path=st.policy_path)
    events: list[tuple[str, dict]] = []
    rec = RecordingSession(ctx, fake_devices=True, agent="a-007", business_ref="B-1",
                           on_event=lambda n, d: events.append((n, d)))
    rec.start()
    import time

    time.sleep(1.5)
    rec.marker("step", "risk_disclosure_read")
    rec.pause("customer typing card number")
    time.sleep(1.0)
    rec.resume()
    time.sleep(2.5)
    health = rec.health()
    summary = rec.stop()

    assert summary["stop_code"] == "normal" and rec.state == "stopped"
    assert health["streams"]["screen"]["fps"] > 5 and health["camera_thumbnail"].shape == (90, 160, 3)
    assert [n for n, _ in events][:1] == ["started"] and events[-1][0] == "stopped"
    sdir = Path(summary["session_dir"])
    segs = session_segments(sdir)
    assert len(segs) == summary["segments"] >= 2
    session = json.loads((sdir / "session.json").read_text())
    assert session["end_reason"] == "normal" and session["segments"] == len(segs)

    dec = None
    gaps = []
    for seq in segs:
        data, complete = plaintext(sdir / f"seg-{seq:06d}.media.drseg", st.identity)
        assert complete
        dec = decode_media(data, dec, keep_screen=_stamp)
        man = json.loads((sdir / f"seg-{seq:06d}.manifest.json").read_text())
        gaps += man["body"]["gaps"] if "body" in man else man["gaps"]
    assert dec is not None and all(dec.keyframe_first)
    assert len(dec.keyframe_first) == 2 * len(segs)
    # screen frames: the burned counter increases by one per frame (no frame lost), and the
    # burned capture time equals the pts (the pts is the capture time)
    stamps = np.array(dec.screen_frames)
    unpaused = stamps[stamps.any(axis=1)]  # paused frames show the card (reads as 0, 0)
    counters = unpaused[:, 0]
    assert np.all(np.diff(counters) >= 1)
    pts_by_counter = {int(c): int(t) for c, t in unpaused}
    for c, t in zip(counters, unpaused[:, 1], strict=True):
        assert abs(pts_by_counter[int(c)] - t) <= 1
    assert summary["streams"]["screen"]["dropped"] == 0
    fps = ctx.policy.capture.screen_fps
    assert abs(len(dec.screen_pts_ms) - fps * summary["duration_s"]) <= fps * 0.6
    # the pause replaced ~1 s of screen by the card and muted audio; it is a gap in a manifest
    pause = [g for g in gaps if g["kind"] == "pause"]
    # (its reason is free text: in the sealed operation log, not in the manifest in clear)
    assert 1 <= len(pause) <= 2 and not any("reason" in g for g in pause)
    pause = [{"start_pts_ms": pause[0]["start_pts_ms"], "end_pts_ms": pause[-1]["end_pts_ms"]}]
    assert 800 <= pause[0]["end_pts_ms"] - pause[0]["start_pts_ms"] <= 1500
    missing = set(range(int(counters.min()), int(counters.max()) + 1)) - {int(c) for c in counters}
    assert 10 <= len(missing) <= 20  # ~1 s of a 10 fps screen shows the card
    # the fake mic beeps at every whole second of the session clock
    beeps = [b for b in onsets_ms(dec) if b > dec.audio_start_ms[0] + 150]  # may start mid-burst
    assert len(beeps) >= 3
    for t in beeps:
        assert abs(t - round(t / 1000) * 1000) <= 5, beeps
    p0, p1 = pause[0]["start_pts_ms"], pause[0]["end_pts_ms"]
    assert not any(p0 + 100 <= b <= p1 - 100 for b in beeps)  # muted while paused
    # operation log: session start, marker, pause, resume, stop -- sealed, on the same clock
    kinds = [e["kind"] for e in oplog_events(sdir, st.identity)]
    assert kinds[0] == "session_start" and "marker" in kinds and "pause" in kinds
    assert kinds.index("pause") < kinds.index("resume") < kinds.index("session_stop")


def test_stop_is_idempotent_and_state_transitions_are_checked(station_home: Path,
                                                              keyring_service: str) -> None:
    from station.errors import UsageError
    from station.recording import RecordingSession

    st = make_station(station_home, **{"capture.profile": "low", "capture.camera": ""})
    rec = RecordingSession(Context(data_dir=station_home, policy_path=st.policy_path), fake_devices=True)
    with pytest.raises(UsageError):
        rec.stop()
    rec.start()
    with pytest.raises(UsageError):
        rec.resume()
    s1 = rec.stop(StopCode.NORMAL)
    assert rec.stop() is s1 and "camera" not in s1["streams"]
    with pytest.raises(UsageError):
        rec.pause("x")
