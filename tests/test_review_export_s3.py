"""Export from the review window of a session that lives only in central storage (issue 17.6).

Everything real: a SeaweedFS bucket (auth enforced), a site enrolment authority that approved
the seat's key in the bucket (the reviewer's policy names the authority, never the seat's key),
sessions recorded with real encoders, sealed by the real SessionSealer and uploaded by the real
uploader, which purged the seat's spool. The reviewer's window is wired from the policy exactly
as ``station review`` does it (:func:`station.review.env.build`), then drives Export… with its
injectable dialogs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import nacl.public
import nacl.signing
import pytest

from station import cli, enrolment
from station.crypto import keys
from station.crypto.sealed import canonical_json
from station.logs import AuditLog
from station.secrets import STORAGE_ACCESS_KEY, STORAGE_SECRET_KEY, SecretStore
from tests import reviewkit as kit
from tests.uploadkit import s3_policy
from uploader.journal import Journal
from uploader.service import Uploader
from uploader.stores import S3Store, s3_settings

pytestmark = [pytest.mark.gui, pytest.mark.integration]

STATION = "seat-s3"
PREFIX = "dualrec"


class Site:
    """The bucket, the seat's key (approved by the site authority) and the reviewer's policy."""

    def __init__(self, tmp_path: Path, s3: Any, bucket: str) -> None:
        self.tmp, self.s3, self.bucket = tmp_path, s3, bucket
        self.ident = nacl.public.PrivateKey.generate()
        self.keyfile = tmp_path / "archive.key"
        self.keyfile.write_text(keys.identity_text(self.ident) + "\n")
        self.seat_key = nacl.signing.SigningKey.generate()
        self.upload_policy = s3_policy(s3, bucket)
        assert cli.main(["site", "init", "--out", str(tmp_path / "it")]) == 0
        self.auth_pub = (tmp_path / "it" / "site-authority.pub").read_text().split("\n")[1]
        store = self.store()
        try:
            rec = enrolment.make_record(self.seat_key, STATION, site="sh-01",
                                        enrolled_utc="2026-12-07T00:00:00Z", station_version="t")
            enrolment.register(store, rec)
            enrolment.approve(store, enrolment.read_authority_key(tmp_path / "it" / "site-authority.key"),
                              enrolment.parse_record(canonical_json(rec), "test"), "2026-12-07T09:00:00Z")
        finally:
            store.close()
        self.policy = tmp_path / "reviewer.toml"
        self.policy.write_text("\n".join([
            "[station]", 'id = "reviewer-pc"', "[crypto]",
            f"site_authorities = {json.dumps([self.auth_pub])}", "[storage]", 'kind = "s3"',
            f"s3_endpoint = {json.dumps(s3.endpoint)}", f"s3_bucket = {json.dumps(bucket)}",
            f"s3_prefix = {json.dumps(PREFIX)}"]) + "\n")
        reviewer = SecretStore()                     # the reviewer's keyring (keyring_service)
        reviewer.set(STORAGE_ACCESS_KEY, s3.access_key)
        reviewer.set(STORAGE_SECRET_KEY, s3.secret_key)

    def store(self) -> S3Store:
        return S3Store(s3_settings(self.upload_policy), self.s3.access_key, self.s3.secret_key)

    def seat_spool(self) -> Path:
        return self.tmp / "seat" / "spool"

    def upload(self) -> None:
        """The seat's real uploader: upload, verify, purge what session.json closes."""
        home = self.tmp / "seat"
        up = Uploader(self.store(), Journal(home / "journal.sqlite"), home / "spool",
                      self.upload_policy, station_id=STATION)
        try:
            assert up.drain()["error"] is None
        finally:
            up.close()

    def keys_in_bucket(self, prefix: str) -> list[str]:
        client = self.s3.client()
        return [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix) for o in page.get("Contents", [])]


@pytest.fixture
def site(tmp_path: Path, station_home: Path, keyring_service: str, s3: Any, s3_bucket: str) -> Site:
    return Site(tmp_path, s3, s3_bucket)


def _window(qtbot: Any, site: Site, station_home: Path) -> Any:
    from station.context import Context
    from station.review import env
    from ui.review_window import ReviewWindow

    ctx = Context(data_dir=station_home, policy_path=site.policy)
    assert list(ctx.policy.crypto.trusted_stations) == []        # nothing pinned by key
    setup = env.build(ctx, identity_paths=[site.keyfile], reviewer="erin@review")
    setup.compute_qc = False
    assert keys.station_text(site.seat_key.verify_key) in " ".join(setup.trusted)
    w = ReviewWindow(setup, audio=False)
    w.resize(1280, 900)
    qtbot.addWidget(w)
    w.show()
    with qtbot.waitSignal(w.refreshed, timeout=30000):
        w.refresh()
    return w


def _open(qtbot: Any, w: Any, sid: str) -> dict[str, Any]:
    row = w.setup.catalog.get(sid)
    assert row is not None, [r.session_id for r in w.model.rows]
    with qtbot.waitSignal(w.opened, timeout=30000) as blocker:
        w.open_session(row, reason="complaint 12")
    report: dict[str, Any] = blocker.args[0]
    return report


def _audit(station_home: Path, sid: str) -> list[dict[str, Any]]:
    return [r for r in AuditLog(station_home / "audit" / "audit.log").records()
            if r.get("session") == sid and str(r.get("event", "")).startswith("export")]


def test_window_exports_an_s3_only_session_of_an_approved_station(
        qtbot: Any, display: str, site: Site, station_home: Path, tmp_path: Path) -> None:
    d = kit.make_session(site.seat_spool(), [site.ident.public_key], site.seat_key, segments=2,
                         seg_s=2.0, station=STATION, agent="sam")
    sid = d.name
    site.upload()
    assert not d.exists()                                # the seat's copy is gone: S3 only
    w = _window(qtbot, site, station_home)
    report = _open(qtbot, w, sid)
    assert report["verdict"] == "intact", report
    out = tmp_path / "handover" / sid
    w.ask_reason = lambda prompt: "complaint 12 hand-over"
    w.ask_export_dir = lambda: out
    with qtbot.waitSignal(w.exported, timeout=120000) as done:
        w.player.export_button.click()
    res = done.args[0]
    assert res["warnings"] == [] and res["skipped"] == [], res
    assert "session.mkv" in res["files"] and res["session_mkv"]["written"] is True
    with av.open(str(out / "session.mkv")) as c:
        kinds = sorted(s.type for s in c.streams)
        frames = sum(1 for _ in c.decode(video=0))
    assert kinds == ["audio", "video", "video"] and frames >= 35, (kinds, frames)
    for seq in (1, 2):
        with av.open(str(out / f"seg-{seq:06d}.mkv")) as c:
            assert sum(1 for _ in c.decode(video=0)) >= 18
    assert (out / "evidence" / "session.json").is_file() and (out / "SHA256SUMS").is_file()
    chk = subprocess.run([sys.executable, str(out / "evidence" / "check_evidence.py")],
                         capture_output=True, text=True, timeout=60)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    assert keys.station_text(site.seat_key.verify_key) in (out / "evidence" / "station-keys.txt").read_text()
    # the window says so, and it stays visible
    assert str(out) in w.statusBar().currentMessage()
    assert w.export_status.isVisible() and str(out) in w.export_status.text()
    # audit: the review record in the bucket, export-started/completed on the reviewer's machine
    assert [r["action"] for r in w.setup.audit.records(sid)] == ["open", "play", "export"]
    assert any("-export-" in k for k in site.keys_in_bucket(f"{PREFIX}/audit/review/"))
    assert [r["event"] for r in _audit(station_home, sid)] == ["export-started", "export-completed"]


def test_window_asks_before_exporting_a_session_without_session_json_and_shows_the_warnings(
        qtbot: Any, display: str, site: Site, station_home: Path, tmp_path: Path) -> None:
    """An incomplete session (the seat crashed, never recovered: no session.json) in S3 only. The
    window says why and asks; declined, nothing is written; confirmed, it exports with
    allow_incomplete and shows the export's warnings (not just "exported to ...")."""
    from station.crypto import SessionSealer

    sid = kit.new_session_id()
    d = site.seat_spool() / sid
    sealer = SessionSealer(d, sid, STATION, [site.ident.public_key], site.seat_key, meta={"agent": "kim"})
    for seq in (1, 2):
        kit.encode_segment(kit._WriteOnly(sealer.open_segment(seq, "media")), start_s=(seq - 1) * 2.0,
                           dur_s=2.0)
        sealer.close_segment(seq, {"start_pts_ms": (seq - 1) * 2000})
    sealer.abandon()                                     # no session.json
    site.upload()
    shutil.rmtree(d)                                     # not purged (not closed): gone anyway
    w = _window(qtbot, site, station_home)
    report = _open(qtbot, w, sid)
    assert report["verdict"] == "open", report
    out = tmp_path / "handover"
    asked: list[str] = []
    w.ask_reason = lambda prompt: "crash review 3"
    w.ask_export_dir = lambda: out

    def decline(prompt: str) -> bool:
        asked.append(prompt)
        return False

    w.ask_confirm = decline
    with qtbot.waitSignal(w.open_failed, timeout=30000) as refused:
        w.player.export_button.click()
    assert len(asked) == 1 and "session.json" in asked[0] and sid in asked[0]
    assert "session.json" in refused.args[0]
    assert not out.exists() and _audit(station_home, sid) == []
    assert "export" not in [r["action"] for r in w.setup.audit.records(sid)]

    def confirm(prompt: str) -> bool:
        asked.append(prompt)
        return True

    w.ask_confirm = confirm
    with qtbot.waitSignal(w.exported, timeout=120000) as done:
        w.player.export_button.click()
    res = done.args[0]
    assert len(asked) == 2
    assert any("no session.json" in x for x in res["warnings"]), res["warnings"]
    assert (out / "seg-000001.mkv").is_file() and (out / "seg-000002.mkv").is_file()
    shown = w.export_status.text()
    assert w.export_status.isVisible() and "no session.json" in shown and "WARNING" in shown.upper()
    assert "warning" in w.statusBar().currentMessage().lower()
    exp = [r for r in w.setup.audit.records(sid) if r["action"] == "export"]
    assert len(exp) == 1 and exp[0].get("allow_incomplete") is True
    started = _audit(station_home, sid)[0]
    assert started["event"] == "export-started" and "session-open" in started["problems"]


def test_a_failed_window_export_from_s3_leaves_no_unlisted_plaintext_and_says_so(
        qtbot: Any, display: str, site: Site, station_home: Path, tmp_path: Path) -> None:
    """Segment 2's media is damaged in the middle of its ciphertext and the manifests signed over
    it (what a broken station would store): verification passes, decryption fails mid-way
    through the export. The partly written plaintext is removed, the window shows the failure
    and the audit says what remains."""
    from tests.vectors.make_vectors import _file_entry, _rechain

    d = kit.make_session(site.seat_spool(), [site.ident.public_key], site.seat_key, segments=2,
                         seg_s=2.0, station=STATION)
    sid = d.name
    media = d / "seg-000002.media.drseg"
    data = bytearray(media.read_bytes())
    data[len(data) * 2 // 3] ^= 0x55
    media.write_bytes(bytes(data))
    _rechain(d, site.seat_key, {2: lambda m: m["files"].update(media=_file_entry(
        d, "seg-000002.media.drseg", m["files"]["media"]))})
    site.upload()
    assert not d.exists()
    w = _window(qtbot, site, station_home)
    assert _open(qtbot, w, sid)["verdict"] == "intact"
    out = tmp_path / "handover"
    w.ask_reason = lambda prompt: "complaint 13"
    w.ask_export_dir = lambda: out
    with qtbot.waitSignal(w.open_failed, timeout=120000) as failed:
        w.player.export_button.click()
    assert "export failed" in failed.args[0]
    (rec,) = [r for r in _audit(station_home, sid) if r["event"] == "export-failed"]
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert left == sorted(rec["written"]) and "seg-000002.mkv" not in left, (left, rec)
    assert "seg-000002.mkv" in rec["removed"]
    assert "export failed" in w.statusBar().currentMessage()
    assert w.export_status.isVisible() and "failed" in w.export_status.text().lower()
    assert [r["action"] for r in w.setup.audit.records(sid)][-2:] == ["export", "export-failed"]


def test_session_json_gone_since_opening_is_asked_for_too(
        qtbot: Any, display: str, site: Site, station_home: Path, tmp_path: Path) -> None:
    """The export verifies again: session.json removed from the bucket after the session was
    opened intact. The refusal is turned into the same question, then one export into the same
    (still empty) folder."""
    d = kit.make_session(site.seat_spool(), [site.ident.public_key], site.seat_key, segments=1,
                         seg_s=2.0, station=STATION)
    sid = d.name
    site.upload()
    w = _window(qtbot, site, station_home)
    assert _open(qtbot, w, sid)["verdict"] == "intact"
    (key,) = [k for k in site.keys_in_bucket(f"{PREFIX}/") if k.endswith(f"{sid}/session.json")]
    site.s3.client().delete_object(Bucket=site.bucket, Key=key)
    asked: list[str] = []
    w.ask_reason = lambda prompt: "complaint 14"
    w.ask_export_dir = lambda: tmp_path / "handover"
    w.ask_confirm = lambda prompt: asked.append(prompt) or True
    with qtbot.waitSignal(w.exported, timeout=120000) as done:
        w.player.export_button.click()
    assert len(asked) == 1 and "session.json" in asked[0]
    assert any("no session.json" in x for x in done.args[0]["warnings"])
    assert (tmp_path / "handover" / "seg-000001.mkv").is_file()
    assert [r["event"] for r in _audit(station_home, sid)] == ["export-started", "export-completed"]
