"""The uploader end to end against the real SeaweedFS (auth enforced, Object Lock buckets), with
real sealed sessions from SessionSealer."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from station import cli
from station.crypto import SealedReader
from station.crypto.keys import station_text
from station.crypto.session import SessionSealer
from station.policy import Policy
from station.secrets import STORAGE_ACCESS_KEY, STORAGE_SECRET_KEY, SecretStore
from tests.recordkit import decode_media, make_station
from tests.services import S3Server, free_port
from tests.uploadkit import MiB, all_versions, s3_policy, sealed_session, spool_files, write_policy
from uploader.bandwidth import TokenBucket
from uploader.journal import PURGED, SEALED, VERIFIED, Journal
from uploader.remote import find_session_folder
from uploader.service import Uploader, backlog, upload_rate_bytes_s
from uploader.stores import LocalFolderStore, S3Store, open_store, s3_settings

pytestmark = pytest.mark.integration


def _uploader(s3: S3Server, bucket: str, home: Path, pol: Policy | None = None,
              events: list[dict[str, Any]] | None = None, **kw: Any) -> Uploader:
    pol = pol or s3_policy(s3, bucket)
    store = S3Store(s3_settings(pol), s3.access_key, kw.pop("secret", s3.secret_key),
                    limiter=kw.pop("limiter", None))
    return Uploader(store, Journal(home / "journal.sqlite"), home / "spool", pol,
                    on_event=(events.append if events is not None else None), **kw)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, json.loads(out) if out.strip().startswith("{") else out, err


def test_recorded_session_uploads_verifies_purges_and_verifies_remotely(
        s3: S3Server, s3_lock_bucket: str, keyring_service: str, station_home: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    signer = nacl.signing.SigningKey.generate()
    sd = sealed_session(station_home / "spool", segments=2, media_bytes=11 * MiB, signing_key=signer)
    sid = sd.name
    policy_file = station_home.parent / "policy.toml"
    assert cli.main(["policy", "init", "--store", f"s3://{s3_lock_bucket}/dualrec", "--endpoint", s3.endpoint,
                     "--set", "storage.object_lock=refuse", "--set", "upload.multipart_threshold_mb=5",
                     "--set", "upload.part_size_mb=5", "--out", str(policy_file)]) == 0
    monkeypatch.setenv("STATION_POLICY", str(policy_file))
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(f"{s3.access_key}\n{s3.secret_key}\n"))
    assert cli.main(["keys", "storage-set"]) == 0
    capsys.readouterr()
    assert backlog(station_home)["count"] == 9  # visible before the uploader ever ran

    rc, result, err = _cli(capsys, "upload", "--drain", "--json")
    assert rc == 0, err
    assert result["error"] is None and result["object_lock"]["compliant"]
    assert result["backlog"]["count"] == 0 and set(result["backlog"]["states"]) == {PURGED}
    versions = all_versions(s3, s3_lock_bucket)
    folder = f"dualrec/2026/11/24/seat-07/{sid}/"
    assert sorted(k for k in versions if k.startswith(folder)) == sorted(folder + n for n in
                                      [f"seg-00000{s}.{k}" for s in (1, 2) for k in
                                       ("media.drseg", "oplog.drseg", "masklog.drseg", "manifest.json")]
                                      + ["session.json"])
    assert set(versions.values()) == {1}
    assert not sd.exists()
    # order: a segment's files before its manifest, session.json last
    events = [e for e in (json.loads(ln) for ln in err.splitlines() if ln.startswith("{")) if "event" in e]
    uploaded = [e["key"].rsplit("/", 1)[1] for e in events
                if e["event"] == "uploaded" and "/audit/" not in e["key"]]
    for seq in (1, 2):
        m = uploaded.index(f"seg-00000{seq}.manifest.json")
        assert all(uploaded.index(f"seg-00000{seq}.{k}.drseg") < m for k in ("media", "oplog", "masklog"))
    assert uploaded[-1] == "session.json"
    assert any(r["event"] == "spool_purged" and r["session"] == sid
               for r in map(json.loads, (station_home / "audit" / "audit.log").read_text().splitlines()))

    audit_keys = [k for k in versions if k.startswith("dualrec/audit/station/")]
    assert audit_keys  # the station's audit lines went to storage too
    shipped = b"".join(s3.client().get_object(Bucket=s3_lock_bucket, Key=k)["Body"].read()
                       for k in sorted(audit_keys))
    assert b'"spool_purged"' in shipped and sid.encode() in shipped
    assert not list((station_home / "audit" / "outbox").iterdir())

    rc, report, err = _cli(capsys, "verify", sid, "--remote", "--json",
                           "--trust", station_text(signer.verify_key))
    assert rc == 0, err
    assert report["intact"] is True and "seat-07" in json.dumps(report)


def test_session_is_purged_only_after_session_json_is_uploaded(
        s3: S3Server, s3_bucket: str, station_home: Path) -> None:
    signer = nacl.signing.SigningKey.generate()
    sd = sealed_session(station_home / "spool", segments=1, finish=False, signing_key=signer)
    up = _uploader(s3, s3_bucket, station_home)
    assert up.drain()["error"] is None
    assert spool_files(sd) == ["seg-000001.manifest.json", "seg-000001.masklog.drseg",
                               "seg-000001.media.drseg", "seg-000001.oplog.drseg"]
    assert {e.state for e in up.journal.entries()} == {VERIFIED}
    SessionSealer(sd, sd.name, "seat-07", [b"\x01" * 32], signer).finish("normal")
    result = up.drain()
    assert result["error"] is None and not sd.exists()
    assert {e.state for e in up.journal.entries()} == {PURGED}
    assert len(all_versions(s3, s3_bucket)) == 5


def test_wrong_secret_key_gives_a_clear_error_keeps_the_spool_and_shows_the_backlog(
        s3: S3Server, s3_lock_bucket: str, keyring_service: str, station_home: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    sd = sealed_session(station_home / "spool", segments=1)
    before = spool_files(sd)
    policy_file = write_policy(station_home.parent / "policy.toml", s3_policy(s3, s3_lock_bucket))
    SecretStore().set(STORAGE_ACCESS_KEY, s3.access_key)
    SecretStore().set(STORAGE_SECRET_KEY, "wrong" + s3.secret_key[5:])
    rc, result, _ = _cli(capsys, "upload", "--drain", "--json", "--policy", str(policy_file))
    assert rc == 1
    assert "rejected the credentials" in result["error"] and "storage-set" in result["error"]
    assert spool_files(sd) == before
    b = backlog(station_home)
    assert b["count"] == 5 and b["bytes"] > 0 and "credentials" in b["last_error"]
    assert all_versions(s3, s3_lock_bucket) == {}


def test_bucket_without_object_lock_warns_or_refuses_per_policy(
        s3: S3Server, s3_bucket: str, station_home: Path, tmp_path: Path) -> None:
    sd = sealed_session(station_home / "spool", segments=1)
    up = _uploader(s3, s3_bucket, station_home, s3_policy(s3, s3_bucket, storage__object_lock="refuse"))
    result = up.drain()
    assert "no Object Lock" in result["error"] and "refuse" in result["error"]
    assert sd.exists() and all_versions(s3, s3_bucket) == {}
    assert result["backlog"]["count"] == 5

    events: list[dict[str, Any]] = []
    up = _uploader(s3, s3_bucket, station_home, s3_policy(s3, s3_bucket, storage__object_lock="warn"),
                   events=events)
    result = up.drain()
    assert result["error"] is None and "no Object Lock" in result["object_lock"]["warning"]
    assert [e for e in events if e["event"] == "warning"] and not sd.exists()


def test_spool_file_that_does_not_match_its_manifest_is_never_uploaded_or_purged(
        s3: S3Server, s3_bucket: str, station_home: Path) -> None:
    sd = sealed_session(station_home / "spool", segments=1)
    media = sd / "seg-000001.media.drseg"
    raw = bytearray(media.read_bytes())
    raw[5000] ^= 0x01
    media.write_bytes(bytes(raw))
    up = _uploader(s3, s3_bucket, station_home)
    result = up.drain()
    assert result["error"] is None and "does not match its manifest" in result["quarantined"][0]["reason"]
    keys = all_versions(s3, s3_bucket)
    assert not any(k.endswith("media.drseg") or k.endswith("manifest.json") or k.endswith("session.json")
                   for k in keys)
    assert len(spool_files(sd)) == 5


def test_pause_during_a_call_uploads_nothing_until_the_call_ends(
        s3: S3Server, s3_bucket: str, station_home: Path) -> None:
    sd = sealed_session(station_home / "spool", segments=1)
    in_call = [True]
    up = _uploader(s3, s3_bucket, station_home, s3_policy(s3, s3_bucket, upload__during_call="pause"),
                   call_active=lambda: in_call[0])
    up.drain(wait_retries=False)
    assert all_versions(s3, s3_bucket) == {} and sd.exists()
    assert {e.state for e in up.journal.entries()} == {SEALED}  # not even hashed during the call
    in_call[0] = False
    assert up.drain()["error"] is None and not sd.exists()


def test_throttle_during_a_call_holds_the_call_rate_on_an_injected_clock(
        s3: S3Server, s3_bucket: str, station_home: Path) -> None:
    sealed_session(station_home / "spool", segments=1, media_bytes=6 * MiB)
    fake = {"t": 0.0}

    def sleep(s: float) -> None:
        fake["t"] += s

    pol = s3_policy(s3, s3_bucket, upload__during_call="throttle", upload__call_kbps=8000)
    limiter = TokenBucket(lambda: upload_rate_bytes_s(pol, True), clock=lambda: fake["t"], sleep=sleep)
    up = _uploader(s3, s3_bucket, station_home, pol, limiter=limiter, call_active=lambda: True)
    assert up.drain()["error"] is None
    sent = sum(v for k, v in up.store.counters.items() if k == "part_bytes")  # type: ignore[attr-defined]
    total = sum(e.size or 0 for e in up.journal.entries())
    assert sent > 6 * MiB
    # 8000 kbit/s = 1 MB/s: the injected clock advanced by about total bytes / rate
    assert 0.9 * total / 1e6 <= fake["t"] <= 1.2 * total / 1e6 + 0.5


def test_spool_file_changed_after_hashing_is_refused_by_the_server_via_content_md5(
        s3: S3Server, s3_bucket: str, station_home: Path) -> None:
    sd = sealed_session(station_home / "spool", segments=1, media_bytes=7 * MiB)
    up = _uploader(s3, s3_bucket, station_home)
    up.scan()
    for e in up.journal.entries():
        up._hash(e)  # QUEUED with SHA-256 and part MD5s taken now
    media = sd / "seg-000001.media.drseg"
    raw = bytearray(media.read_bytes())
    raw[-100] ^= 0x01  # last part changes after hashing (same size)
    media.write_bytes(bytes(raw))
    result = up.drain()
    assert "BadDigest" in result["error"]
    assert not any(k.endswith("media.drseg") for k in all_versions(s3, s3_bucket))
    assert media.exists() and result["backlog"]["failed"] >= 1


def test_background_loop_uploads_sessions_sealed_while_it_runs_and_stops_promptly(
        s3: S3Server, s3_lock_bucket: str, station_home: Path) -> None:
    (station_home / "spool").mkdir()
    up = _uploader(s3, s3_lock_bucket, station_home, poll_s=0.1)
    stop = threading.Event()
    t = threading.Thread(target=up.run_forever, args=(stop,), kwargs={"rescan_s": 0.2})
    t.start()
    try:
        time.sleep(0.5)
        sd = sealed_session(station_home / "spool", segments=1)
        deadline = time.monotonic() + 30
        while sd.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not sd.exists()
        assert backlog(station_home)["count"] == 0
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()
    assert len(all_versions(s3, s3_lock_bucket)) == 5


def test_unreachable_storage_at_start_is_retried_until_the_timeout_and_purges_nothing(
        station_home: Path) -> None:
    sd = sealed_session(station_home / "spool", segments=1)
    dead = S3Server(f"http://127.0.0.1:{free_port()}", "ak", "sk")
    events: list[dict[str, Any]] = []
    up = _uploader(dead, "bucket", station_home, events=events)
    result = up.drain(timeout_s=2.0)
    assert "unreachable" in result["error"]
    assert len([e for e in events if e["event"] == "failed"]) >= 2  # retried with backoff
    assert len(spool_files(sd)) == 5 and result["backlog"]["count"] == 5
    assert up.drain(wait_retries=False)["error"]  # without --drain: one try, then report


def test_two_uploaders_on_one_journal_store_each_object_once(
        s3: S3Server, s3_lock_bucket: str, station_home: Path) -> None:
    sessions = [sealed_session(station_home / "spool", segments=2, media_bytes=6 * MiB) for _ in range(2)]
    ups = [_uploader(s3, s3_lock_bucket, station_home) for _ in range(2)]  # the app and a CLI run
    results: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda u=u: results.append(u.drain(timeout_s=60))) for u in ups]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert [r["error"] for r in results] == [None, None]
    versions = all_versions(s3, s3_lock_bucket)
    assert len(versions) == 18 and set(versions.values()) == {1}
    assert not any(s.exists() for s in sessions)
    assert not s3.client().list_multipart_uploads(Bucket=s3_lock_bucket).get("Uploads")


def test_embedded_local_store_takes_the_same_path_and_verify_reads_it(
        station_home: Path, keyring_service: str, capsys: pytest.CaptureFixture[str]) -> None:
    signer = nacl.signing.SigningKey.generate()
    sd = sealed_session(station_home / "spool", segments=1, signing_key=signer)
    rc, out, err = _cli(capsys, "upload", "--drain")
    assert rc == 0, err
    assert "uploaded 6, verified 6; backlog: 0 files" in out  # 5 of the session + 1 audit object
    assert "no Object Lock" in out
    stored = station_home / "store" / "2026" / "11" / "24" / "seat-07" / sd.name
    assert sorted(p.name for p in stored.iterdir() if not p.name.endswith(".sha256")) == [
        "seg-000001.manifest.json", "seg-000001.masklog.drseg", "seg-000001.media.drseg",
        "seg-000001.oplog.drseg", "session.json"]
    assert not sd.exists()
    rc, report, err = _cli(capsys, "verify", sd.name, "--json", "--trust", station_text(signer.verify_key))
    assert rc == 0 and report["intact"] is True, err


def test_a_second_uploader_waits_for_the_data_dir_lock_instead_of_duplicating_work(
        station_home: Path) -> None:
    sd = sealed_session(station_home / "spool", segments=1)
    lock = station_home / "journal.lock"
    up = Uploader(LocalFolderStore(station_home / "store"), Journal(station_home / "journal.sqlite"),
                  station_home / "spool", Policy.defaults().replace(storage__object_lock="ignore"),
                  lock_path=lock)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the running station's uploader
    try:
        busy = up.drain(wait_retries=False)
        assert "another uploader" in busy["busy"] and busy["backlog"]["count"] == 5
        assert up.drain(timeout_s=0.5)["busy"] and sd.exists()
    finally:
        os.close(fd)
    result = up.drain()
    assert result["error"] is None and "busy" not in result and not sd.exists()


def test_verify_remote_reads_only_central_storage_never_the_spool(
        station_home: Path, keyring_service: str, capsys: pytest.CaptureFixture[str]) -> None:
    sd = sealed_session(station_home / "spool", segments=1)
    rc, out, _ = _cli(capsys, "verify", sd.name, "--remote", "--json")
    assert rc == 1 and "not in central storage" in out["error"]
    rc, report, _ = _cli(capsys, "verify", sd.name, "--json")  # without --remote: the spool copy
    assert "intact" in report


@pytest.mark.e2e
def test_session_recorded_by_station_record_reaches_locked_bucket_and_decodes_from_it(
        s3: S3Server, s3_lock_bucket: str, keyring_service: str, station_home: Path,
        capsys: pytest.CaptureFixture[str], display: str) -> None:
    st = make_station(station_home, **{
        "capture.segment_seconds": 2, "capture.profile": "low", "storage.kind": "s3",
        "storage.s3_endpoint": s3.endpoint, "storage.s3_bucket": s3_lock_bucket,
        "storage.object_lock": "refuse", "upload.during_call": "run"})
    SecretStore().set(STORAGE_ACCESS_KEY, s3.access_key)
    SecretStore().set(STORAGE_SECRET_KEY, s3.secret_key)
    rec = subprocess.run([sys.executable, "-m", "station.cli", "record", "--json", "--policy",
                          str(st.policy_path), "--data-dir", str(station_home), "--duration", "4",
                          "--fake-devices"], capture_output=True, timeout=120, check=False)
    assert rec.returncode == 0, rec.stderr.decode()[-2000:]
    (sd,) = [p for p in (station_home / "spool").iterdir() if p.is_dir()]
    rc, result, err = _cli(capsys, "upload", "--drain", "--json", "--policy", str(st.policy_path),
                           "--data-dir", str(station_home))
    assert rc == 0 and result["error"] is None, err
    assert not sd.exists() and result["object_lock"]["compliant"]
    rc, report, err = _cli(capsys, "verify", sd.name, "--remote", "--json", "--policy",
                           str(st.policy_path), "--data-dir", str(station_home))
    assert rc == 0 and report["intact"] is True, err
    # a reviewer reads a segment straight from the bucket: decrypts and decodes (in memory)
    store = open_store(s3_policy(s3, s3_lock_bucket), SecretStore(), station_home)
    folder = find_session_folder(store, sd.name)
    assert folder is not None
    with store.open(f"{folder}/seg-000001.media.drseg") as fh:
        reader = SealedReader(fh, [st.identity])
        data = reader.read()
    decoded = decode_media(data)
    assert decoded.screen_pts_ms and decoded.camera_pts_ms and decoded.audio_samples > 0
