"""Review window (pytest-qt, real Xvfb, real LocalFolderStore, real sealed sessions)."""

from __future__ import annotations

import os
from pathlib import Path

import nacl.public
import nacl.signing
import pytest

from station.crypto.keys import station_text
from station.logs import AuditLog
from station.review import qc as qcmod
from station.review.audit import ReviewAudit
from station.review.catalog import Catalog
from tests import reviewkit as kit
from uploader.stores import LocalFolderStore

pytestmark = pytest.mark.gui


@pytest.fixture
def window(qtbot, display: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    from ui.review_window import ReviewSetup, ReviewWindow

    ident, sk = nacl.public.PrivateKey.generate(), nacl.signing.SigningKey.generate()
    store = LocalFolderStore(tmp_path / "store")
    good = kit.make_session(tmp_path / "spool", [bytes(ident.public_key)], sk, segments=3, seg_s=3.0,
                            agent="alice")
    bad = kit.make_session(tmp_path / "spool", [bytes(ident.public_key)], sk, segments=3, seg_s=3.0,
                           agent="mallory", camera="black", steps=kit.STEPS[:3])
    kit.upload(good, store)
    bad_folder = kit.upload(bad, store)
    media = store.root / bad_folder / "seg-000002.media.drseg"
    data = bytearray(media.read_bytes())
    data[-100] ^= 0x40
    os.chmod(media, 0o600)
    media.write_bytes(bytes(data))
    audit = ReviewAudit(store, "", AuditLog(tmp_path / "audit.log"), "carol@review")
    setup = ReviewSetup(store=store, catalog=Catalog.for_store(store, tmp_path / "data"), identities=[ident],
                        trusted=[station_text(sk.verify_key)], audit=audit,
                        thresholds=qcmod.Thresholds(required_steps=tuple(kit.STEPS)), tmp_dir=tmp_path / "tmp")
    w = ReviewWindow(setup, audio=False)
    w.resize(1280, 900)
    qtbot.addWidget(w)
    w.show()
    w.good, w.bad, w.audit_ = good.name, bad.name, audit
    with qtbot.waitSignal(w.refreshed, timeout=20000):
        w.refresh()
    return w


def _open(qtbot, w, sid: str):  # type: ignore[no-untyped-def]
    row = w.setup.catalog.get(sid)
    with qtbot.waitSignal(w.opened, timeout=20000) as blocker:
        w.open_session(row, reason="quality review")
    return blocker.args[0]


def test_catalog_lists_the_stored_sessions_and_qc_flags_the_bad_one(qtbot, window) -> None:  # type: ignore[no-untyped-def]
    w = window
    assert sorted(r.session_id for r in w.model.rows) == sorted([w.good, w.bad])
    qtbot.waitUntil(lambda: all(r.qc_state != "none" for r in w.model.rows), timeout=30000)
    flags = {r.agent: r.qc_flags for r in w.model.rows}
    assert flags["alice"] == []
    assert {qcmod.CAMERA_COVERED, qcmod.MISSING_STEP, qcmod.NOT_INTACT} <= set(flags["mallory"])
    w.filters.flag.setCurrentIndex(w.filters.flag.findData(qcmod.CAMERA_COVERED))
    assert [r.agent for r in w.model.rows] == ["mallory"]
    assert w.model.data(w.model.index(0, 7), 0).startswith("camera-covered") or "camera-covered" in \
        w.model.data(w.model.index(0, 7), 0)


def test_opening_an_intact_session_shows_intact_and_marker_click_seeks_within_a_second(qtbot, window) -> None:  # type: ignore[no-untyped-def]
    w = window
    report = _open(qtbot, w, w.good)
    assert report["intact"]
    assert "INTACT" in w.verdict.banner.text() and "NOT" not in w.verdict.banner.text()
    assert [r[1] for r in w.verdict.segment_rows()] == ["ok", "ok", "ok"]
    assert w.player.isEnabled() and w.player.screen_pane.pixmap() is not None
    tl = w.player.timeline
    markers = [i for i in tl.items if i.kind == "marker"]
    assert len(markers) == 5
    target = markers[3]
    from PySide6.QtCore import QPoint

    qtbot.mouseClick(tl, __import__("PySide6.QtCore", fromlist=["Qt"]).Qt.MouseButton.LeftButton,
                     pos=QPoint(int(tl.x_of(target.start_s)) + 2, tl.height() // 2))
    assert abs(w.player.position_s() - target.start_s) < 1e-6        # snapped onto the marker
    frame = w.player.player.frame_at("screen", w.player.position_s())
    assert abs(kit.read_counter(frame.rgb()) / 10 - target.start_s) <= 1.0
    assert [r["action"] for r in w.audit_.records(w.good)] == ["open", "play"]


def test_tampered_session_names_the_altered_segment_and_refuses_to_play_it(qtbot, window) -> None:  # type: ignore[no-untyped-def]
    w = window
    report = _open(qtbot, w, w.bad)
    assert not report["intact"]
    assert "NOT INTACT" in w.verdict.banner.text() and "Segment(s) 2 refused" in w.verdict.banner.text()
    rows = w.verdict.segment_rows()
    assert [r[1] for r in rows[:3]] == ["ok", "altered", "ok"]
    w.player.seek(4.5)
    assert w.player.screen_pane.pixmap() is None or w.player.screen_pane.pixmap().isNull()
    assert "segment 2 failed verification" in w.player.screen_pane.text()
    w.player.seek(7.0)
    assert w.player.screen_pane.pixmap() is not None and not w.player.screen_pane.pixmap().isNull()
    assert w.setup.catalog.get(w.bad).verdict.startswith("not-intact")


def test_export_without_a_reason_is_refused_and_with_one_is_audited(qtbot, window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w = window
    _open(qtbot, w, w.good)
    w.ask_reason = lambda prompt: None
    w.ask_export_dir = lambda: tmp_path / "handover"
    with qtbot.waitSignal(w.open_failed, timeout=5000) as refused:
        w.player.export_button.click()
    assert "reason" in refused.args[0] and not (tmp_path / "handover").exists()
    w.ask_reason = lambda prompt: "regulator request 12"
    with qtbot.waitSignal(w.exported, timeout=20000):
        w.player.export_button.click()
    assert (tmp_path / "handover" / "seg-000001.mkv").exists()
    recs = w.audit_.records(w.good)
    assert [(r["action"], r["reason"]) for r in recs][-1] == ("export", "regulator request 12")


def test_play_pause_and_speed_move_the_position(qtbot, window) -> None:  # type: ignore[no-untyped-def]
    w = window
    _open(qtbot, w, w.good)
    w.player.set_speed(2.0)
    w.player.play()
    qtbot.waitUntil(lambda: w.player.position_s() > 1.0, timeout=5000)
    w.player.pause()
    at = w.player.position_s()
    qtbot.wait(200)
    assert w.player.position_s() == at
    assert w.player.camera_pane.pixmap() is not None and not w.player.camera_pane.pixmap().isNull()


def test_review_window_speaks_simplified_chinese_when_asked(qtbot, display: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ui.review_window import ReviewSetup, ReviewWindow

    store = LocalFolderStore(tmp_path / "store")
    setup = ReviewSetup(store=store, catalog=Catalog.for_store(store, tmp_path / "d"), identities=[], trusted=[],
                        audit=ReviewAudit(store, "", None), thresholds=qcmod.Thresholds())
    w = ReviewWindow(setup, audio=False, language="zh_CN")
    qtbot.addWidget(w)
    try:
        assert w.refresh_button.text() == "刷新" and w.player.play_button.text() == "▶ 播放"
        assert w.model.headerData(6, __import__("PySide6.QtCore", fromlist=["Qt"]).Qt.Orientation.Horizontal, 0) \
            == "完整性"
    finally:
        from ui.review_window import set_language

        set_language("en")


def test_window_over_seaweedfs_lists_opens_and_audits_in_the_bucket(qtbot, display: str, s3, s3_bucket: str,  # type: ignore[no-untyped-def]
                                                                    tmp_path: Path) -> None:
    from ui.review_window import ReviewSetup, ReviewWindow
    from uploader.stores import S3Settings, S3Store

    ident, sk = nacl.public.PrivateKey.generate(), nacl.signing.SigningKey.generate()
    store = S3Store(S3Settings(bucket=s3_bucket, prefix="dualrec", endpoint=s3.endpoint, region=s3.region),
                    s3.access_key, s3.secret_key)
    d = kit.make_session(tmp_path / "spool", [bytes(ident.public_key)], sk, segments=2, seg_s=2.0, agent="sam")
    kit.upload(d, store, prefix="dualrec")
    setup = ReviewSetup(store=store, catalog=Catalog.for_store(store, tmp_path / "data"), identities=[ident],
                        trusted=[station_text(sk.verify_key)],
                        audit=ReviewAudit(store, "dualrec", None, "dora@review"),
                        thresholds=qcmod.Thresholds(required_steps=tuple(kit.STEPS)), compute_qc=False)
    w = ReviewWindow(setup, audio=False)
    qtbot.addWidget(w)
    with qtbot.waitSignal(w.refreshed, timeout=20000):
        w.refresh()
    assert [(r.session_id, r.agent) for r in w.model.rows] == [(d.name, "sam")]
    with qtbot.waitSignal(w.opened, timeout=20000) as opened:
        w.open_session(w.model.rows[0], reason="remote check")
    assert opened.args[0]["intact"] and "INTACT" in w.verdict.banner.text()
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=s3_bucket, Prefix="dualrec/audit/")["Contents"]]
    assert sorted(k.rsplit("/", 1)[1].split("-")[1] for k in keys) == ["open", "play"]


def test_a_recovered_session_is_shown_as_recovered_not_intact_and_plays(
        qtbot, display: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A station killed mid-segment and recovered: the banner and the catalog say RECOVERED
    (complete up to the crash, seconds lost), never INTACT, and the kept part plays."""
    from station.crypto import SessionSealer, recover_session
    from ui.review_window import ReviewSetup, ReviewWindow

    ident, sk = nacl.public.PrivateKey.generate(), nacl.signing.SigningKey.generate()
    sid = kit.new_session_id()
    d = tmp_path / "spool" / sid
    sealer = SessionSealer(d, sid, "seat-01", [bytes(ident.public_key)], sk, meta={"agent": "kim"})
    kit.encode_segment(kit._WriteOnly(sealer.open_segment(1, "media")), start_s=0.0, dur_s=3.0)
    sealer.close_segment(1, {"start_pts_ms": 0})
    kit.encode_segment(kit._WriteOnly(sealer.open_segment(2, "media")), start_s=3.0, dur_s=3.0)
    sealer.abandon()                                                       # the crash
    assert recover_session(d, sk) is not None
    store = LocalFolderStore(tmp_path / "store")
    kit.upload(d, store)
    audit = ReviewAudit(store, "", AuditLog(tmp_path / "audit.log"), "carol@review")
    setup = ReviewSetup(store=store, catalog=Catalog.for_store(store, tmp_path / "data"),
                        identities=[ident], trusted=[station_text(sk.verify_key)], audit=audit,
                        thresholds=qcmod.Thresholds(required_steps=()), tmp_dir=tmp_path / "tmp")
    w = ReviewWindow(setup, audio=False)
    qtbot.addWidget(w)
    w.show()
    with qtbot.waitSignal(w.refreshed, timeout=20000):
        w.refresh()
    report = _open(qtbot, w, sid)
    assert report["verdict"] == "recovered" and not report["intact"]
    text = w.verdict.banner.text()
    assert "RECOVERED" in text and "INTACT" not in text and report["recovery"]["until_utc"] in text
    assert w.setup.catalog.get(sid).verdict == "recovered"
    assert w.player.isEnabled() and w.player.screen_pane.pixmap() is not None
    qtbot.waitUntil(lambda: w.setup.catalog.get(sid).qc_state != "none", timeout=30000)
    flags = w.setup.catalog.get(sid).qc_flags
    assert qcmod.CRASH_RECOVERED in flags and qcmod.NOT_INTACT not in flags, flags


def test_window_export_shows_a_session_mkv_that_could_not_be_joined_in_its_language(
        qtbot, display: str, tmp_path: Path, station_home: Path, keyring_service: str) -> None:  # type: ignore[no-untyped-def]
    """Segment 2 was recorded at another screen size: `station export` writes every segment but
    cannot join session.mkv (exit 5). The window used to say only "exported to ..."; it must
    show the warning (first) in the status bar and in a label that stays, in Chinese here."""
    from station.context import Context
    from station.crypto import SessionSealer
    from station.crypto.keys import identity_text
    from ui.review_window import ReviewSetup, ReviewWindow, set_language

    ident, sk = nacl.public.PrivateKey.generate(), nacl.signing.SigningKey.generate()
    keyfile = tmp_path / "archive.key"
    keyfile.write_text(identity_text(ident) + "\n")
    sid = kit.new_session_id()
    sealer = SessionSealer(tmp_path / "spool" / sid, sid, "seat-01", [bytes(ident.public_key)], sk,
                           meta={"agent": "lee"})
    for seq, size in ((1, (640, 360)), (2, (320, 180))):
        kit.encode_segment(kit._WriteOnly(sealer.open_segment(seq, "media")), start_s=(seq - 1) * 2.0,
                           dur_s=2.0, screen_size=size)
        sealer.close_segment(seq, {"start_pts_ms": (seq - 1) * 2000})
    sealer.finish("normal", {"duration_s": 4.0})
    store = LocalFolderStore(tmp_path / "store")
    kit.upload(tmp_path / "spool" / sid, store)
    setup = ReviewSetup(store=store, catalog=Catalog.for_store(store, tmp_path / "data"), identities=[ident],
                        trusted=[f"seat-01={station_text(sk.verify_key)}"],
                        audit=ReviewAudit(store, "", AuditLog(tmp_path / "audit.log"), "carol@review"),
                        thresholds=qcmod.Thresholds(), identity_paths=[keyfile],
                        ctx=Context(data_dir=station_home), compute_qc=False)
    w = ReviewWindow(setup, audio=False, language="zh_CN")
    qtbot.addWidget(w)
    w.show()
    try:
        with qtbot.waitSignal(w.refreshed, timeout=20000):
            w.refresh()
        _open(qtbot, w, sid)
        w.ask_reason = lambda prompt: "complaint 21"
        w.ask_export_dir = lambda: tmp_path / "handover"
        with qtbot.waitSignal(w.exported, timeout=60000) as done:
            w.player.export_button.click()
        res = done.args[0]
        assert res["session_mkv"]["written"] is False and res["warnings"][0].startswith("session.mkv NOT written")
        assert (tmp_path / "handover" / "seg-000002.mkv").is_file()
        assert not (tmp_path / "handover" / "session.mkv").exists()
        text = w.export_status.text()
        assert w.export_status.isVisible() and "警告" in text and "1 条警告" in text
        assert w.export_lines[1] == "警告 WARNING: " + res["warnings"][0]
        assert "session.mkv NOT written" in text and "有 1 条警告" in w.statusBar().currentMessage()
    finally:
        set_language("en")
