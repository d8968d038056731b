"""Opening stored sessions for review: verdict first, verified playback, sync, seek, audit, export.

Sessions are sealed with the real SessionSealer, stored in a real LocalFolderStore or SeaweedFS
(S3Store), and read back through SealedReader; nothing here is stubbed.
"""

from __future__ import annotations

import os
from pathlib import Path

import nacl.public
import nacl.signing
import numpy as np
import pytest

from station.crypto.keys import station_text
from station.logs import AuditLog
from station.review.audit import AuditUnavailable, ReasonRequired, ReviewAudit
from station.review.player import CAMERA, SCREEN
from station.review.session import NothingPlayable, ReviewSession
from tests import reviewkit as kit
from uploader.stores import LocalFolderStore, S3Settings, S3Store


@pytest.fixture(scope="module")
def keys() -> tuple[nacl.public.PrivateKey, nacl.signing.SigningKey]:
    return nacl.public.PrivateKey.generate(), nacl.signing.SigningKey.generate()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, keys: tuple) -> Path:
    ident, sk = keys
    return kit.make_session(tmp_path_factory.mktemp("spool"), [bytes(ident.public_key)], sk,
                            segments=3, seg_s=3.0)


def _open(store: object, folder: str, keys: tuple, tmp_path: Path) -> tuple[ReviewSession, ReviewAudit]:
    ident, sk = keys
    audit = ReviewAudit(store, getattr(store, "prefix", ""), AuditLog(tmp_path / "audit.log"), "alice@test")
    return ReviewSession(store, folder, [ident], [station_text(sk.verify_key)], audit), audit


def test_intact_session_verifies_then_plays_every_segment_and_audits_open_and_play(
        recorded: Path, keys: tuple, tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "store")
    folder = kit.upload(recorded, store)
    rs, audit = _open(store, folder, keys, tmp_path)
    report = rs.open(reason="case 42")
    assert report["intact"] and rs.verdict() == "intact"
    assert [s["status"] for s in report["segments"]] == ["ok", "ok", "ok"]
    player = rs.player()
    try:
        for t in (0.0, 3.5, 8.0):   # one time in each segment
            fr = player.frame_at(SCREEN, t)
            assert fr is not None and abs(fr.pts_s - t) <= 0.1
            assert kit.read_counter(fr.rgb()) == round(fr.pts_s * 10)
    finally:
        player.close()
    actions = [(r["action"], r["reason"], r["reviewer"]) for r in audit.records(rs.session_id)]
    assert actions == [("open", "case 42", "alice@test"), ("play", None, "alice@test")]
    local = [r["event"] for r in AuditLog(tmp_path / "audit.log").records()]
    assert local == ["review_open", "review_play"]


def test_tampered_segment_is_named_in_the_verdict_and_never_decoded(recorded: Path, keys: tuple,
                                                                     tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "store")
    folder = kit.upload(recorded, store)
    media = store.root / folder / "seg-000002.media.drseg"
    data = bytearray(media.read_bytes())
    data[len(data) // 2] ^= 0x01                      # one bit flipped by a storage admin
    os.chmod(media, 0o600)
    media.write_bytes(bytes(data))
    rs, _ = _open(store, folder, keys, tmp_path)
    report = rs.open(reason="audit check")
    assert not report["intact"]
    status = {s["seq"]: s["status"] for s in report["segments"]}
    assert status == {1: "ok", 2: "altered", 3: "ok"}
    assert rs.refused_segments() == [2] and rs.verdict().startswith("not-intact")
    player = rs.player()
    try:
        assert player.frame_at(SCREEN, 1.0) is not None
        assert player.frame_at(SCREEN, 4.5) is None       # the altered segment plays as a gap
        assert player.frame_at(CAMERA, 4.5) is None
        assert not player.audio(3.2, 5.8).any()
        assert player.frame_at(SCREEN, 7.0) is not None
    finally:
        player.close()


def test_session_with_every_segment_altered_refuses_to_play(recorded: Path, keys: tuple, tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "store")
    folder = kit.upload(recorded, store)
    for seq in (1, 2, 3):
        p = store.root / folder / f"seg-{seq:06d}.media.drseg"
        os.chmod(p, 0o600)
        p.write_bytes(p.read_bytes()[:-10])
    rs, _ = _open(store, folder, keys, tmp_path)
    rs.open(reason="x")
    with pytest.raises(NothingPlayable):
        rs.player()


def test_frames_advance_in_step_with_tone_onsets_across_segments(recorded: Path, keys: tuple,
                                                                  tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "store")
    rs, _ = _open(store, kit.upload(recorded, store), keys, tmp_path)
    rs.verify()
    player = rs.player(audit=False)
    try:
        audio = player.audio(0.0, 9.0)
        onsets = kit.onsets_s(audio)
        assert len(onsets) == 9                        # a burst at every whole second, none lost
        for onset in onsets:
            fr = player.frame_at(CAMERA, onset)
            assert fr is not None
            # the camera frame shown at the tone onset carries the counter of that instant
            frame_time_s = kit.read_counter(fr.rgb()) / 25
            assert abs(frame_time_s - onset) <= 0.040 + 1 / 25
            assert abs(onset - round(onset)) <= 0.040
    finally:
        player.close()


def test_seek_to_each_marker_lands_within_one_second(recorded: Path, keys: tuple, tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "store")
    rs, _ = _open(store, kit.upload(recorded, store), keys, tmp_path)
    rs.verify()
    markers = rs.markers()
    assert [m.label for m in markers] == ["consent: agreed"] + [f"step: {s}" for s in kit.STEPS]
    player = rs.player(audit=False)
    try:
        for m in reversed(markers):                     # backwards: every seek is a jump
            fr = player.frame_at(SCREEN, m.start_s)
            assert fr is not None
            assert abs(kit.read_counter(fr.rgb()) / 10 - m.start_s) <= 1.0
    finally:
        player.close()


def test_export_needs_a_reason_and_is_audited(recorded: Path, keys: tuple, tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "store")
    rs, audit = _open(store, kit.upload(recorded, store), keys, tmp_path)
    rs.verify()
    out = tmp_path / "handover"
    with pytest.raises(ReasonRequired):
        rs.export(out, reason="  ")
    assert not out.exists()
    assert audit.records(rs.session_id) == []
    result = rs.export(out, reason="court order 7/2026")
    assert sorted(result["files"])[:3] == ["oplog.jsonl", "seg-000001.mkv", "seg-000002.mkv"]
    import av

    with av.open(str(out / "seg-000001.mkv")) as c:
        assert {s.type for s in c.streams} == {"video", "audio"}
    recs = audit.records(rs.session_id)
    assert [(r["action"], r["reason"]) for r in recs] == [("export", "court order 7/2026")]


def test_open_and_play_on_seaweedfs_are_audited_in_the_bucket(recorded: Path, keys: tuple, s3: object,
                                                                s3_bucket: str, tmp_path: Path) -> None:
    store = S3Store(S3Settings(endpoint=s3.endpoint, region=s3.region, bucket=s3_bucket, prefix="dualrec"),
                    s3.access_key, s3.secret_key)
    folder = kit.upload(recorded, store, prefix="dualrec")
    rs, _ = _open(store, folder, keys, tmp_path)
    assert rs.open(reason="spot check")["intact"]
    player = rs.player()
    try:
        fr = player.frame_at(CAMERA, 5.0)
        assert fr is not None and kit.read_counter(fr.rgb()) == round(fr.pts_s * 25)
    finally:
        player.close()
    keys_in_bucket = [o["Key"] for o in s3.client().list_objects_v2(
        Bucket=s3_bucket, Prefix="dualrec/audit/")["Contents"]]
    assert len(keys_in_bucket) == 2
    assert any("-open-" in k for k in keys_in_bucket) and any("-play-" in k for k in keys_in_bucket)


def test_open_is_refused_when_the_audit_record_cannot_be_stored(recorded: Path, keys: tuple,
                                                                 tmp_path: Path) -> None:
    from tests.services import SeaweedServer, require_services

    require_services()
    (tmp_path / "weed").mkdir()
    private_s3 = SeaweedServer(tmp_path / "weed")
    private_s3.start()
    try:
        info = private_s3.info()
        info.client().create_bucket(Bucket="rev")
        store = S3Store(S3Settings(endpoint=info.endpoint, region=info.region, bucket="rev", prefix="p"),
                        info.access_key, info.secret_key)
        folder = kit.upload(recorded, store, prefix="p")
        rs, _ = _open(store, folder, keys, tmp_path)
        private_s3.stop()
        with pytest.raises(AuditUnavailable):
            rs.open(reason="after hours")
    finally:
        private_s3.cleanup()
    assert rs.report is None                       # nothing was verified or shown
    assert AuditLog(tmp_path / "audit.log").records() == []


def test_plaintext_never_reaches_disk_while_reviewing(recorded: Path, keys: tuple, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file opened for writing during open + play + QC is the audit log or sealed data."""
    import builtins

    store = LocalFolderStore(tmp_path / "store")
    folder = kit.upload(recorded, store)
    rs, _ = _open(store, folder, keys, tmp_path)
    written: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file: object, mode: str = "r", *a: object, **kw: object) -> object:
        if any(c in mode for c in "wax+"):
            written.append(str(file))
        return real_open(file, mode, *a, **kw)

    def spy_os_open(path: object, flags: int, *a: object, **kw: object) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR):
            written.append(str(path))
        return real_os_open(path, flags, *a, **kw)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    rs.open(reason="privacy check")
    player = rs.player()
    for t in np.arange(0, 9, 0.5):
        player.frame_at(SCREEN, float(t))
        player.frame_at(CAMERA, float(t))
    player.audio(0, 9)
    player.close()
    from station.review import qc

    qc.analyse_session(rs, qc.Thresholds())
    monkeypatch.undo()
    assert written, "the spy saw no writes at all (audit records are expected)"
    allowed = (str(tmp_path / "audit.log"), str(store.root / "audit") + "/")
    assert [w for w in written if not w.startswith(allowed)] == []


def test_export_from_the_review_side_runs_station_export_on_the_stored_session(
        recorded: Path, keys: tuple, tmp_path: Path) -> None:
    from station.context import Context
    from station.crypto.keys import identity_text

    ident, _ = keys
    keyfile = tmp_path / "archive.key"
    keyfile.write_text(identity_text(ident) + "\n")
    store = LocalFolderStore(tmp_path / "store")
    rs, audit = _open(store, kit.upload(recorded, store), keys, tmp_path)
    rs.verify()
    ctx = Context(data_dir=tmp_path / "reviewer")
    result = rs.export(tmp_path / "out", "ticket 99", ctx=ctx, identity_paths=[keyfile])
    assert {"seg-000001.mkv", "seg-000003.mkv", "oplog.jsonl"} <= set(result["files"]) and result["intact"]
    assert [r["action"] for r in audit.records(rs.session_id)] == ["export"]
    assert [r["event"] for r in ctx.audit.records()][-2:] == ["export-started", "export-completed"]


def test_crossing_a_segment_boundary_loses_no_frame_and_no_audio(recorded: Path, keys: tuple,
                                                                  tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "store")
    rs, _ = _open(store, kit.upload(recorded, store), keys, tmp_path)
    rs.verify()
    player = rs.player(audit=False)
    try:
        counters = [kit.read_counter(player.frame_at(SCREEN, 2.5 + k / 10 + 0.01).rgb()) for k in range(10)]
        assert counters == list(range(25, 35))              # 2.5 s .. 3.4 s, through the 3.0 s boundary
        hum = player.audio(2.9, 3.1)                         # the quiet hum between beeps never stops
        windows = np.abs(hum).reshape(-1, 480).max(axis=1)   # 10 ms windows
        assert windows.min() > 0.01
    finally:
        player.close()


def test_truncated_segment_is_played_up_to_its_last_authenticated_message(keys: tuple, tmp_path: Path) -> None:
    """A station killed mid-segment: recovery closes the chain, the verdict says truncated, and the
    player shows what was sealed before the cut instead of refusing the segment."""
    from station.crypto import SessionSealer, recover_session

    ident, sk = keys
    sid = kit.new_session_id()
    d = tmp_path / "spool" / sid
    sealer = SessionSealer(d, sid, "seat-01", [bytes(ident.public_key)], sk, meta={"agent": "kim"})
    kit.encode_segment(kit._WriteOnly(sealer.open_segment(1, "media")), start_s=0.0, dur_s=3.0)
    sealer.close_segment(1, {"start_pts_ms": 0})
    media = sealer.open_segment(2, "media")
    kit.encode_segment(kit._WriteOnly(media), start_s=3.0, dur_s=3.0)   # never closed: no FINAL
    size = media.path.stat().st_size
    sealer.abandon()
    with open(media.path, "r+b") as fh:          # the crash cut the message being written
        fh.truncate(size - 10)
    assert recover_session(d, sk) is not None
    store = LocalFolderStore(tmp_path / "store")
    rs, _ = _open(store, kit.upload(d, store), keys, tmp_path)
    report = rs.open(reason="crash review")
    assert [s["status"] for s in report["segments"]] == ["ok", "truncated"]
    assert rs.refused_segments() == []
    player = rs.player()
    try:
        fr = player.frame_at(SCREEN, 3.5)
        assert fr is not None and kit.read_counter(fr.rgb()) == 35
        last = player.frame_at(SCREEN, 5.99)
        assert last is not None and 3.5 <= last.pts_s <= 5.9              # stops where the cut is
    finally:
        player.close()


def test_a_jump_starts_no_prefetch_and_drops_the_prefetch_of_the_old_neighbour_which_still_plays_later(
        recorded: Path, keys: tuple, tmp_path: Path) -> None:
    """A prefetch nobody needs after a jump stops and its decrypted segment is released (it only
    competed with the seek for the CPU and held memory until the player closed)."""
    import threading

    from station.review.player import Player

    store = LocalFolderStore(tmp_path / "store")
    rs, _ = _open(store, kit.upload(recorded, store), keys, tmp_path)
    rs.verify()
    opened: list[tuple[int, object]] = []

    def open_media(seq: int) -> object:
        reader = rs._open_media(seq)
        opened.append((seq, reader))
        return reader

    player = Player(open_media, rs.segment_refs())   # type: ignore[arg-type]
    try:
        assert kit.read_counter(player.frame_at(SCREEN, 0.5).rgb()) == 5   # type: ignore[union-attr]
        second = player.segments[1].seq
        assert not player._prefetching                        # a jump itself does not prefetch
        player.frame_at(SCREEN, 0.6)                          # playing on, near the end of a 3 s segment
        assert second in player._prefetching
        fr = player.frame_at(SCREEN, 7.2)                     # jump to the third segment
        assert fr is not None and kit.read_counter(fr.rgb()) == 72
        assert second not in player._prefetching and second not in player._prefetched
        for th in threading.enumerate():
            if th.name == f"prefetch-{second}":
                th.join(10)
        assert all(r.closed for s, r in opened if s == second)   # type: ignore[attr-defined]
        back = player.frame_at(SCREEN, 3.5)                   # the dropped neighbour still plays
        assert back is not None and kit.read_counter(back.rgb()) == 35
    finally:
        player.close()
