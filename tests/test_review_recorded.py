"""A session recorded by the real pipeline with fake devices, reviewed from a real store.

The fake camera burns its capture time (ms since the session origin) into every frame and the
fake microphone beeps at every whole second of the same clock, so the player's output can be
checked for A/V sync: the camera frame it shows at each decoded tone onset must carry that
onset's time.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from recorder.fake import read_stamp
from station.context import Context
from station.crypto.keys import require_signing_key, station_text
from station.review import qc as qcmod
from station.review.audit import ReviewAudit
from station.review.catalog import Catalog
from station.review.player import CAMERA, SCREEN
from station.review.session import ReviewSession
from tests import reviewkit as kit
from tests.recordkit import make_station
from uploader.stores import LocalFolderStore

pytestmark = pytest.mark.integration


def test_recorded_session_plays_in_sync_and_seeks_to_its_markers(station_home: Path, keyring_service: str,
                                                                tmp_path: Path) -> None:
    from station.recording import RecordingSession

    # custom profile: frames wide enough (>= 768 px) for all 32 bits of the burned-in stamps
    st = make_station(station_home, **{"capture.segment_seconds": 2, "capture.profile": "custom",
                                       "capture.screen_width": 800, "capture.screen_height": 450,
                                       "capture.screen_fps": 10, "capture.camera_width": 800,
                                       "capture.camera_height": 450, "capture.camera_fps": 25})
    ctx = Context(data_dir=station_home, policy_path=st.policy_path)
    rec = RecordingSession(ctx, fake_devices=True, agent="a-042")
    rec.start()
    time.sleep(1.2)
    rec.marker("consent", "agreed")
    time.sleep(1.0)
    rec.marker("script_step", "identity_shown", index=1)
    time.sleep(2.6)
    rec.marker("script_step", "risk_disclosure_read", index=2)
    time.sleep(1.0)
    summary = rec.stop()
    sdir = Path(summary["session_dir"])
    store = LocalFolderStore(tmp_path / "store")
    folder = kit.upload(sdir, store, station=ctx.station_id)

    cat = Catalog.for_store(store, tmp_path / "reviewer")
    cat.refresh()
    row = cat.get(sdir.name)
    assert row is not None and row.agent == "a-042" and row.segments == summary["segments"] >= 3

    trusted = [station_text(require_signing_key(ctx.secrets).verify_key)]
    rs = ReviewSession(store, folder, [st.identity], trusted, ReviewAudit(store, "", None), sdir.name)
    assert rs.open()["intact"]
    player = rs.player()
    try:
        onsets = kit.onsets_s(player.audio(0.0, player.duration_s), rate_hz=player.audio_rate_hz)
        onsets = onsets[onsets > 0.5]                    # the first may start mid-burst
        assert len(onsets) >= 4
        offsets, held = [], []
        for t in onsets:
            fr = player.frame_at(CAMERA, float(t))
            _, stamp_ms = read_stamp(fr.gray())
            # beep heard at t was made at round(t); the frame shown at fr.pts_s was made at stamp_ms
            offsets.append((t - round(t)) - (fr.pts_s - stamp_ms / 1000))
            held.append(t - stamp_ms / 1000)
        assert max(abs(o) for o in offsets) <= 0.040, offsets
        # and the frame on screen at each beep is the one captured then (not older than a frame)
        assert all(-0.040 <= h <= 1 / ctx.policy.capture.camera_fps + 0.040 for h in held), held
        markers = rs.markers()
        assert [m.label for m in markers] == ["consent: agreed", "step: identity_shown",
                                              "step: risk_disclosure_read"]
        for m in reversed(markers):
            fr = player.frame_at(SCREEN, m.start_s)
            _, stamp_ms = read_stamp(fr.gray())
            assert abs(stamp_ms / 1000 - m.start_s) <= 1.0
    finally:
        player.close()
    report = qcmod.analyse_session(rs, qcmod.Thresholds(required_steps=("identity_shown", "terms_explained")))
    assert qcmod.MISSING_STEP in report.flags and report.steps["missing"] == ["terms_explained"]
    assert report.consent and qcmod.NO_FACE in report.flags      # the fake camera shows no face
    assert np.isfinite(report.metrics["av_offset_ms"])

