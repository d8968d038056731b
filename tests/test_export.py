"""station export: audited, verified, playable media plus operation log and masking ledger."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from station.cli import main
from station.crypto.keys import load_signing_key, read_identity_file, read_recipient_file
from station.crypto.sealed import SealedReader, Truncated
from station.crypto.session import SessionSealer
from station.logs import verify_audit

SID = "20261124T071500Z-0e0e0e0e"
FPS = 15


class _Sink:
    def __init__(self, w) -> None:  # type: ignore[no-untyped-def]
        self.w = w

    def write(self, b: bytes) -> int:
        return self.w.write(b)


def record(home: Path, recipient: str, segments: int = 2, frames: int = 30,
           sizes: dict[int, tuple[int, int]] | None = None, empty: frozenset[int] = frozenset()
           ) -> Path:
    """A finished session of ``segments`` H.264 segments, 160x120 unless ``sizes[seq]`` says
    (width, height); the media of the segments in ``empty`` hold no bytes (the recording ended
    as they opened: a full disk)."""
    sk = load_signing_key()
    assert sk is not None
    d = home / "spool" / SID
    s = SessionSealer(d, SID, "st-x", [recipient], sk, {"agent": "a"})
    for seq in range(1, segments + 1):
        w = s.open_segment(seq, "media")
        if seq in empty:
            s.close_segment(seq, {"frames": 0})
            continue
        out = av.open(_Sink(w), "w", format="matroska")
        vs = out.add_stream("libx264", rate=FPS)
        w_px, h_px = (sizes or {}).get(seq, (160, 120))
        vs.width, vs.height, vs.pix_fmt = w_px, h_px, "yuv420p"
        vs.time_base = Fraction(1, 1000)
        vs.options = {"tune": "zerolatency", "preset": "veryfast"}  # as the recorder encodes
        for i in range(frames):
            n = (seq - 1) * frames + i
            frame = av.VideoFrame.from_ndarray(np.full((h_px, w_px, 3), n * 3 % 256, np.uint8),
                                               format="rgb24")
            frame.pts, frame.time_base = n * 1000 // FPS, Fraction(1, 1000)
            for pkt in vs.encode(frame):
                out.mux(pkt)
            if i % FPS == FPS - 1:
                w.flush()
        for pkt in vs.encode(None):
            out.mux(pkt)
        out.close()
        with s.open_segment(seq, "oplog") as o:
            o.write(json.dumps({"seg": seq, "ev": "click"}).encode() + b"\n")
        with s.open_segment(seq, "masklog") as m:
            m.write(json.dumps({"seg": seq, "rule": "phone"}).encode() + b"\n")
        s.close_segment(seq, {"frames": frames})
    s.finish("normal", {})
    return d


@pytest.fixture
def seat(keyring_service: str, station_home: Path, tmp_path: Path) -> Path:
    assert main(["keys", "init"]) == 0
    assert main(["keys", "archive-new", "--out", str(tmp_path / "arch")]) == 0
    record(station_home, read_recipient_file(tmp_path / "arch" / "archive.pub"))
    return tmp_path / "arch" / "archive.key"


def test_export_writes_playable_media_logs_and_an_audit_record(
        seat: Path, station_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = main(["export", SID, "--identity", str(seat), "--out", str(out),
               "--reason", "complaint 4711 hand-over", "--reviewer", "qa-lead"])
    assert rc == 0
    for seq in (1, 2):
        with av.open(str(out / f"seg-{seq:06d}.mkv")) as c:
            assert sum(1 for _ in c.decode(video=0)) == 30
    with av.open(str(out / "session.mkv")) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 60
    assert abs(float(frames[-1].time) - 59 / FPS) < 0.01
    assert [json.loads(x)["seg"] for x in (out / "oplog.jsonl").read_text().splitlines()] == [1, 2]
    assert (out / "masklog.jsonl").read_text().count("phone") == 2
    assert json.loads((out / "verify.json").read_text())["intact"] is True
    recs = [r for r in json.loads("[" + ",".join(
        (station_home / "audit" / "audit.log").read_text().splitlines()) + "]")
        if r["event"].startswith("export")]
    assert [r["event"] for r in recs] == ["export-started", "export-completed"]
    assert recs[0]["reason"] == "complaint 4711 hand-over" and recs[0]["reviewer"] == "qa-lead"
    assert recs[0]["session"] == SID
    assert verify_audit(station_home / "audit" / "audit.log")[0]


def test_export_without_reason_fails_clearly_and_writes_nothing(
        seat: Path, station_home: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["export", SID, "--identity", str(seat), "--out", str(out)]) == 1
    assert "--reason is required" in capsys.readouterr().err
    assert main(["export", SID, "--identity", str(seat), "--out", str(out), "--reason", " "]) == 1
    assert not out.exists()
    assert "export" not in (station_home / "audit" / "audit.log").read_text()


def test_export_refuses_an_altered_session_and_a_foreign_identity(
        seat: Path, station_home: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "archive-new", "--out", str(tmp_path / "other")]) == 0
    capsys.readouterr()
    rc = main(["export", SID, "--identity", str(tmp_path / "other" / "archive.key"),
               "--out", str(tmp_path / "o1"), "--reason", "test"])
    assert rc == 1 and "none of the 1 identities" in capsys.readouterr().err
    seg = station_home / "spool" / SID / "seg-000002.media.drseg"
    seg.write_bytes(seg.read_bytes()[:-1] + b"\xff")
    rc = main(["export", SID, "--identity", str(seat), "--out", str(tmp_path / "o2"),
               "--reason", "test"])
    assert rc == 1 and "failed verification (altered)" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_crash_recovered_session_exports_what_was_flushed_with_a_note(
        keyring_service: str, station_home: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from station.crypto import recover_spool

    assert main(["keys", "init"]) == 0
    assert main(["keys", "archive-new", "--out", str(tmp_path / "a")]) == 0
    sk = load_signing_key()
    assert sk is not None
    d = station_home / "spool" / SID
    s = SessionSealer(d, SID, "st-x", [read_recipient_file(tmp_path / "a" / "archive.pub")], sk)
    w = s.open_segment(1, "media")
    out = av.open(_Sink(w), "w", format="matroska")
    vs = out.add_stream("libx264", rate=FPS)
    vs.width, vs.height, vs.pix_fmt = 160, 120, "yuv420p"
    vs.options = {"tune": "zerolatency", "preset": "veryfast", "g": str(FPS)}
    for i in range(3 * FPS):
        for pkt in vs.encode(av.VideoFrame.from_ndarray(np.zeros((120, 160, 3), np.uint8),
                                                        format="rgb24")):
            out.mux(pkt)
        if i == 2 * FPS - 1:
            w.flush()  # two seconds flushed, the third is lost in the "crash"
    s.abandon()
    assert [m["end_reason"] for m in recover_spool(station_home / "spool", sk)] == [
        "crash-recovered"]
    capsys.readouterr()
    rc = main(["export", SID, "--identity", str(tmp_path / "a" / "archive.key"), "--out",
               str(tmp_path / "o"), "--reason", "crash review", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["intact"] is False
    assert any("truncated" in n for n in res["notes"])
    exported = (tmp_path / "o" / "seg-000001.mkv").read_bytes()
    flushed = bytearray()
    with pytest.raises(Truncated), SealedReader(d / "seg-000001.media.drseg",
                                                read_identity_file(tmp_path / "a" /
                                                                   "archive.key")) as rd:
        for m in rd.messages():
            flushed += m
    assert exported == bytes(flushed) and len(exported) > 0
    with av.open(str(tmp_path / "o" / "seg-000001.mkv")) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert 0 < n < 3 * FPS  # what the muxer had handed over by the flush decodes


def test_a_validly_signed_manifest_listing_another_segments_file_is_refused_by_every_reader(
        seat: Path, station_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Header binding: segment 1's media file put in segment 2's place, the manifests re-signed
    with the station key (what a recovery that signs whatever it finds used to do). verify says
    header-mismatch; export refuses it, and with --allow-damaged skips that file instead of
    writing segment 1's pictures as segment 2; the review reader refuses to open it."""
    import io
    import shutil

    from station.crypto.verify import DirSource, MisplacedFile
    from station.review.session import ReviewSession
    from tests.vectors.make_vectors import _file_entry, _rechain

    d = station_home / "spool" / SID
    sk = load_signing_key()
    assert sk is not None
    shutil.copyfile(d / "seg-000001.media.drseg", d / "seg-000002.media.drseg")
    _rechain(d, sk, {2: lambda m: m["files"].update(media=_file_entry(
        d, "seg-000002.media.drseg", m["files"]["media"]))})
    assert main(["verify", SID, "--json"]) == 3
    assert "header-mismatch" in capsys.readouterr().out
    assert main(["export", SID, "--identity", str(seat), "--out", str(tmp_path / "o1"),
                 "--reason", "r"]) == 1
    assert "header-mismatch" in capsys.readouterr().err
    assert main(["export", SID, "--identity", str(seat), "--out", str(tmp_path / "o2"),
                 "--reason", "r", "--allow-damaged", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert "seg-000002.mkv" not in res["files"] and "seg-000001.mkv" in res["files"]
    assert [(s["seq"], s["kind"]) for s in res["skipped"]] == [(2, "media")], res["skipped"]
    assert "header-mismatch" in res["skipped"][0]["why"]
    # and the decrypting copy itself checks the binding, whatever the report said
    from station.cmd.export import _decrypt_to

    with pytest.raises(MisplacedFile, match="seq 1"):
        _decrypt_to(DirSource(d), "seg-000002.media.drseg", read_identity_file(seat), io.BytesIO(),
                    {"station": "st-x", "session": SID, "seq": 2, "kind": "media"})
    from station.crypto.keys import station_text
    from station.logs import AuditLog
    from station.review.audit import ReviewAudit
    from uploader.stores import LocalFolderStore

    store = LocalFolderStore(station_home / "spool")
    audit = ReviewAudit(store, "", AuditLog(tmp_path / "audit.log"), "alice@test")
    rs = ReviewSession(store, SID, read_identity_file(seat), [station_text(sk.verify_key)], audit)
    assert rs.open(reason="case 7")["verdict"] == "altered"
    with pytest.raises(MisplacedFile):
        rs.open_sealed(2, "media")
    rs.open_sealed(1, "media").close()


def test_review_window_export_works_for_an_approved_station_and_audits_a_failure(
        tmp_path: Path, station_home: Path, keyring_service: str) -> None:
    """The review side holds approved keys as STATION=KEY: its export used to fail on them
    ("station key: expected ed25519:BASE64"). A failed export is audited as failed, not only as
    the 'export' it attempted."""
    import nacl.public
    import nacl.signing

    from station.context import Context
    from station.crypto.keys import identity_text, station_text
    from station.crypto.verify import TrustedKeys
    from station.logs import AuditLog
    from station.review.audit import ReviewAudit
    from station.review.session import ReviewSession
    from tests import reviewkit as kit
    from uploader.stores import LocalFolderStore

    ident, sk = nacl.public.PrivateKey.generate(), nacl.signing.SigningKey.generate()
    keyfile = tmp_path / "archive.key"
    keyfile.write_text(identity_text(ident) + "\n")
    d = kit.make_session(tmp_path / "spool", [bytes(ident.public_key)], sk, segments=1, seg_s=1.0,
                         station="seat-01")
    store = LocalFolderStore(tmp_path / "store")
    folder = kit.upload(d, store)
    audit = ReviewAudit(store, "", AuditLog(tmp_path / "audit.log"), "carol@review")
    trusted = TrustedKeys([f"seat-01={station_text(sk.verify_key)}"])
    rs = ReviewSession(store, folder, [ident], trusted, audit)
    assert rs.open(reason="complaint 9")["verdict"] == "intact"
    ctx = Context(data_dir=station_home)
    res = rs.export(tmp_path / "out", "complaint 9", ctx=ctx, identity_paths=[keyfile])
    assert "seg-000001.mkv" in res["files"] and res["intact"] is True
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(Exception, match="not empty"):
        rs.export(tmp_path / "busy", "complaint 9", ctx=ctx, identity_paths=[keyfile])
    actions = [r["action"] for r in audit.records(d.name)]
    assert actions == ["open", "export", "export", "export-failed"], actions


def test_a_failed_export_leaves_no_unlisted_plaintext(
        seat: Path, station_home: Path, tmp_path: Path) -> None:
    """Segment 2's media sealed for another recipient: verify (keyless) passes, decryption fails
    mid-export. The partly written file is removed; the audit record lists what remains."""
    import nacl.public

    from station.crypto.sealed import SealedWriter
    from station.logs import AuditLog

    d = station_home / "spool" / SID
    media = d / "seg-000002.media.drseg"
    sk = load_signing_key()
    assert sk is not None
    other = nacl.public.PrivateKey.generate().public_key
    tmp = tmp_path / "other.drseg"
    with SealedWriter(tmp, [other], {"station": "st-x", "session": SID, "seq": 2, "kind": "media"}) as w:
        w.write(b"\x00" * 5000)
    media.unlink()
    media.write_bytes(tmp.read_bytes())
    from tests.vectors.make_vectors import _file_entry, _rechain

    _rechain(d, sk, {2: lambda m: m["files"].update(media=_file_entry(
        d, "seg-000002.media.drseg", m["files"]["media"]))})
    out = tmp_path / "out"
    rc = main(["export", SID, "--identity", str(seat), "--out", str(out), "--reason", "r"])
    assert rc == 1
    failed = [r for r in AuditLog(station_home / "audit" / "audit.log").records()
              if r["event"] == "export-failed"]
    assert len(failed) == 1
    left = sorted(p.name for p in out.iterdir())
    assert left == sorted(failed[0]["written"]) and "seg-000002.mkv" not in left, (left, failed)
    assert "seg-000002.mkv" in failed[0]["removed"]


def test_a_last_segment_without_media_is_listed_as_left_out_and_the_rest_joins(
        keyring_service: str, station_home: Path, tmp_path: Path) -> None:
    """A full disk can end a recording just as a segment opened: its media file holds only its
    header. The export says so and joins the others (it used to fail the join, exit 5)."""
    assert main(["keys", "init"]) == 0
    assert main(["keys", "archive-new", "--out", str(tmp_path / "arch")]) == 0
    record(station_home, read_recipient_file(tmp_path / "arch" / "archive.pub"), segments=3,
           empty=frozenset({3}))
    out = tmp_path / "out"
    rc = main(["export", SID, "--identity", str(tmp_path / "arch" / "archive.key"), "--out", str(out),
               "--reason", "disk-full session", "--json"])
    assert rc == 0
    assert sorted(p.name for p in out.glob("seg-*.mkv")) == ["seg-000001.mkv", "seg-000002.mkv"]
    with av.open(str(out / "session.mkv")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 60
    exp = json.loads((out / "export.json").read_text())
    assert [(x["seq"], x["kind"]) for x in exp["skipped"]] == [(3, "media")]
    assert "no media" in exp["skipped"][0]["why"]


def test_a_segment_cut_before_one_stream_has_a_frame_still_joins(tmp_path: Path) -> None:
    """The disk can fill when a segment holds frames of one stream but not yet of another: the
    demuxer cannot tell that stream's pixel format (None). That is not another codec set-up: the
    join goes on (it refused: 'segment 2 has other streams than segment 1', exit 5)."""
    from station.cmd.export import _concat

    def segment(path: Path, first: int, frames_b: int) -> None:
        with av.open(str(path), "w", format="matroska") as out:
            streams = []
            for title in ("screen", "camera"):
                vs = out.add_stream("libx264", rate=FPS)
                vs.width, vs.height, vs.pix_fmt = 160, 120, "yuv420p"
                vs.time_base = Fraction(1, 1000)
                vs.options = {"tune": "zerolatency", "preset": "veryfast"}
                vs.metadata["title"] = title
                streams.append(vs)
            for vs, count in zip(streams, (FPS, frames_b), strict=True):
                for n in range(first, first + count):
                    frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), n % 256, np.uint8),
                                                       format="rgb24")
                    frame.pts, frame.time_base = n * 1000 // FPS, Fraction(1, 1000)
                    for pkt in vs.encode(frame):
                        out.mux(pkt)
                for pkt in vs.encode(None):
                    out.mux(pkt)

    segment(tmp_path / "s1.mkv", 0, FPS)
    segment(tmp_path / "s2.mkv", FPS, 0)
    with av.open(str(tmp_path / "s2.mkv")) as c:
        assert c.streams.video[1].codec_context.format is None  # the situation
    why, _notes = _concat([(1, tmp_path / "s1.mkv"), (2, tmp_path / "s2.mkv")], tmp_path / "all.mkv",
                          frozenset({2}))
    assert why is None
    with av.open(str(tmp_path / "all.mkv")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 2 * FPS
