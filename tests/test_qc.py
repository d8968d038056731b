"""Automatic QC: flags are right on sessions made to fail them, and the report is stored sealed."""

from __future__ import annotations

from pathlib import Path

import nacl.public
import nacl.signing
import numpy as np
import pytest

from station.crypto.keys import station_text
from station.errors import StationError
from station.review import qc
from station.review.audit import ReviewAudit
from station.review.catalog import Catalog, Filter
from station.review.session import ReviewSession
from tests import reviewkit as kit
from uploader.stores import LocalFolderStore

THRESHOLDS = qc.Thresholds(required_steps=tuple(kit.STEPS))


@pytest.fixture(scope="module")
def keys() -> tuple[nacl.public.PrivateKey, nacl.signing.SigningKey]:
    return nacl.public.PrivateKey.generate(), nacl.signing.SigningKey.generate()


def _qc_of(tmp_path: Path, keys: tuple, **kw: object) -> qc.QcReport:
    ident, sk = keys
    d = kit.make_session(tmp_path / "spool", [bytes(ident.public_key)], sk, segments=2, seg_s=3.0, **kw)
    store = LocalFolderStore(tmp_path / "store")
    folder = kit.upload(d, store)
    rs = ReviewSession(store, folder, [ident], [station_text(sk.verify_key)], ReviewAudit(store, "", None))
    rs.verify()
    return qc.analyse_session(rs, THRESHOLDS)


def test_good_session_has_no_flags(tmp_path: Path, keys: tuple) -> None:
    r = _qc_of(tmp_path, keys)
    assert r.flags == []
    assert r.metrics["face_share"] >= 0.9 and r.metrics["black_share"] == 0
    assert r.metrics["silent_share"] < 0.1 and r.consent and r.steps["in_order"]
    assert abs(r.metrics["av_offset_ms"]) <= 40


def test_black_camera_is_flagged_covered(tmp_path: Path, keys: tuple) -> None:
    r = _qc_of(tmp_path, keys, camera="black")
    assert qc.CAMERA_COVERED in r.flags
    assert r.metrics["black_share"] == 1.0
    assert any(s.flag == qc.CAMERA_COVERED and s.end_s - s.start_s >= 5 for s in r.spans)


def test_camera_without_a_face_is_flagged_no_face(tmp_path: Path, keys: tuple) -> None:
    r = _qc_of(tmp_path, keys, camera="plain")
    assert qc.NO_FACE in r.flags and qc.CAMERA_COVERED not in r.flags
    assert r.metrics["face_share"] == 0.0


def test_silent_audio_is_flagged(tmp_path: Path, keys: tuple) -> None:
    r = _qc_of(tmp_path, keys, audio="silent")
    assert qc.SILENCE in r.flags and r.metrics["silent_share"] > 0.95
    assert qc.CLIPPING not in r.flags


def test_clipped_audio_is_flagged(tmp_path: Path, keys: tuple) -> None:
    r = _qc_of(tmp_path, keys, audio="clip")
    assert qc.CLIPPING in r.flags and qc.SILENCE not in r.flags


def test_missing_script_step_and_consent_are_flagged(tmp_path: Path, keys: tuple) -> None:
    r = _qc_of(tmp_path, keys, steps=["identity_shown", "terms_explained", "customer_confirmed"],
               consent=False)
    assert qc.MISSING_STEP in r.flags and qc.NO_CONSENT in r.flags
    assert r.steps["missing"] == ["risk_disclosure_read"]


def test_steps_out_of_order_are_flagged() -> None:
    res = qc.check_steps(["b", "a", "c"], ["a", "b", "c"])
    assert res["missing"] == [] and res["in_order"] is False
    assert qc.check_steps(["a", "x", "b", "a", "c"], ["a", "b", "c"])["in_order"] is True


def test_report_is_stored_sealed_beside_the_session_and_flags_reach_the_catalog(tmp_path: Path,
                                                                               keys: tuple) -> None:
    ident, sk = keys
    store = LocalFolderStore(tmp_path / "store")
    good = kit.upload(kit.make_session(tmp_path / "spool", [bytes(ident.public_key)], sk, segments=1), store)
    bad = kit.upload(kit.make_session(tmp_path / "spool", [bytes(ident.public_key)], sk, segments=1,
                                      camera="black", steps=kit.STEPS[:2]), store)
    for folder in (good, bad):
        rs = ReviewSession(store, folder, [ident], [station_text(sk.verify_key)], ReviewAudit(store, "", None))
        rs.verify()
        qc.store_qc(rs, qc.analyse_session(rs, THRESHOLDS), rs.recipients(), tmp_path / "tmp")
    raw = (store.root / bad / qc.QC_FILE).read_bytes()
    assert raw.startswith(b"DRSEG") and b"camera-covered" not in raw   # sealed, not plain JSON
    other = nacl.public.PrivateKey.generate()
    with pytest.raises(StationError):
        qc.load_qc(store, bad, [other])                              # only the recipients can read it
    loaded = qc.load_qc(store, bad, [ident])
    assert loaded is not None and qc.CAMERA_COVERED in loaded.flags
    cat = Catalog(store, tmp_path / "cat.sqlite")
    cat.refresh()
    cat.load_qc_reports([ident])
    flagged = cat.query(Filter(qc_flag=qc.CAMERA_COVERED))
    assert [r.folder for r in flagged] == [bad]
    missing = cat.query(Filter(missing_step="terms_explained"))
    assert [r.folder for r in missing] == [bad]
    assert cat.query(Filter(qc_flag="any")) == flagged


def test_audio_qc_measures_silence_and_clipping_shares() -> None:
    a = qc.AudioQc()
    rate = 48000
    loud = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate).astype(np.float32)
    a.add(loud, rate, 0.0)
    a.add(np.zeros(rate * 3, np.float32), rate, 1.0)
    assert a.silent_share == pytest.approx(0.75, abs=0.02)
    assert a.clipped_share == 0
    assert [(round(s.start_s, 1), round(s.end_s, 1)) for s in a.spans()] == [(1.0, 4.0)]
    b = qc.AudioQc()
    b.add((np.sign(loud) * 32767).astype(np.int16), rate, 0.0)
    assert b.clipped_share > 0.9


def test_camera_qc_samples_at_two_hertz_and_detects_the_drawn_face() -> None:
    c = qc.CameraQc()
    face = kit.face_image(360, 640)
    black = np.full((360, 640, 3), 3, np.uint8)
    for i in range(50):                       # 2 s at 25 fps: 4 samples
        c.add(face if i < 25 else black, i / 25)
    assert c.samples == 4 and c.faces == 2 and c.blacks == 2
