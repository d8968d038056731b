"""One bad spool session must not block the others (issue 17, item 4).

A session whose files do not match its manifest (a ``.drseg`` altered or truncated after sealing,
the manifest replaced) is quarantined with a reason: its files stay untouched in the spool, it is
never purged, it shows in the backlog, ``station upload --status`` and ``station doctor``, and
every other session uploads. Once the files match the manifest again (the original bytes or the
original manifest restored) the next scan lifts the quarantine and the session uploads. Real
sealed sessions, real SeaweedFS (auth, Object Lock) and the local folder store.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from station import cli, logs
from station.context import Context
from station.doctor import WARN, check_backlog
from tests.services import S3Server
from tests.uploadkit import all_versions, new_session_id, s3_policy, sealed_session, spool_files
from uploader.journal import PURGED, Journal
from uploader.service import Uploader, backlog
from uploader.stores import S3Store, s3_settings

pytestmark = pytest.mark.integration

NAMES = ["seg-000001.manifest.json", "seg-000001.masklog.drseg", "seg-000001.media.drseg",
         "seg-000001.oplog.drseg", "session.json"]


def _s3_uploader(s3: S3Server, bucket: str, home: Path,
                 events: list[dict[str, Any]] | None = None) -> Uploader:
    pol = s3_policy(s3, bucket)
    store = S3Store(s3_settings(pol), s3.access_key, s3.secret_key)
    return Uploader(store, Journal(home / "journal.sqlite"), home / "spool", pol,
                    audit=logs.AuditLog(home / "audit" / "audit.log"),
                    on_event=events.append if events is not None else None)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, json.loads(out) if out.strip().startswith("{") else out, err


def _snapshot(session_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(session_dir.iterdir())}


def _audit(home: Path, event: str) -> list[dict[str, Any]]:
    path = home / "audit" / "audit.log"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["event"] == event]


def _s3_folder(sid: str) -> str:
    return f"dualrec/2026/11/24/seat-07/{sid}/"


def _stored_names(versions: dict[str, int], sid: str) -> list[str]:
    folder = _s3_folder(sid)
    return sorted(k[len(folder):] for k in versions if k.startswith(folder))


def _bogus_manifest(manifest: Path, kind: str = "media") -> bytes:
    """Replace a segment manifest by one that names another SHA-256 for ``kind``; returns the
    original bytes."""
    original = manifest.read_bytes()
    doc = json.loads(original)
    doc["files"][kind]["sha256"] = "0" * 64
    manifest.write_bytes(json.dumps(doc).encode())
    return original


def test_tampered_session_is_quarantined_on_s3_while_four_others_upload_then_uploads_once_repaired(
        s3: S3Server, s3_lock_bucket: str, station_home: Path) -> None:
    spool = station_home / "spool"
    good = [sealed_session(spool, segments=1) for _ in range(4)]
    bad = sealed_session(spool, segments=2)
    media = bad / "seg-000002.media.drseg"
    original = media.read_bytes()
    raw = bytearray(original)
    raw[5000] ^= 0x01
    media.write_bytes(bytes(raw))
    before = _snapshot(bad)
    events: list[dict[str, Any]] = []
    up = _s3_uploader(s3, s3_lock_bucket, station_home, events)

    result = up.drain()
    assert result["error"] is None
    (q,) = result["quarantined"]
    assert q["session_id"] == bad.name
    assert "seg-000002.media.drseg" in q["reason"] and "does not match its manifest" in q["reason"]
    versions = all_versions(s3, s3_lock_bucket)
    assert set(versions.values()) == {1}
    for sd in good:  # the four good sessions are stored, verified and purged from the spool
        assert _stored_names(versions, sd.name) == NAMES and not sd.exists()
    stored_bad = _stored_names(versions, bad.name)
    assert not {"seg-000002.media.drseg", "seg-000002.manifest.json", "session.json"} & set(stored_bad)
    assert _snapshot(bad) == before  # nothing deleted, moved or changed; not purged
    assert [e for e in events if e["event"] == "quarantined" and e["session"] == bad.name]

    b = backlog(station_home)
    assert [x["session_id"] for x in b["quarantined"]] == [bad.name] and b["count"] > 0
    check = check_backlog(Context(data_dir=station_home))
    assert check.status == WARN and bad.name in check.reason and "quarantined" in check.reason

    again = up.drain()  # still bad: stays quarantined, audited once, files kept
    assert again["error"] is None and [x["session_id"] for x in again["quarantined"]] == [bad.name]
    assert _snapshot(bad) == before
    assert [r["session"] for r in _audit(station_home, "spool_quarantined")] == [bad.name]

    media.write_bytes(original)  # repaired: the sealed bytes are back
    result = up.drain()
    assert result["error"] is None and result["quarantined"] == []
    assert not bad.exists()
    versions = all_versions(s3, s3_lock_bucket)
    assert set(versions.values()) == {1}
    assert _stored_names(versions, bad.name) == sorted(
        [f"seg-00000{s}.{k}" for s in (1, 2) for k in ("manifest.json", "masklog.drseg", "media.drseg",
                                                        "oplog.drseg")] + ["session.json"])
    head = s3.client().head_object(Bucket=s3_lock_bucket, Key=_s3_folder(bad.name) + media.name)
    assert head["ContentLength"] == len(original)
    assert [r["session"] for r in _audit(station_home, "spool_quarantine_lifted")] == [bad.name]
    assert {e.state for e in up.journal.entries()} == {PURGED}
    up.close()


def test_local_store_drain_quarantines_a_truncated_file_exits_3_and_status_and_doctor_show_it(
        station_home: Path, keyring_service: str, capsys: pytest.CaptureFixture[str]) -> None:
    spool = station_home / "spool"
    good = [sealed_session(spool, segments=1) for _ in range(4)]
    bad = sealed_session(spool, segments=1)
    media = bad / "seg-000001.media.drseg"
    original = media.read_bytes()
    media.write_bytes(original[: len(original) // 2])
    before = _snapshot(bad)

    rc, result, err = _cli(capsys, "upload", "--drain", "--json")
    assert rc == 3, err
    assert result["error"] is None
    (q,) = result["quarantined"]
    assert q["session_id"] == bad.name and "seg-000001.media.drseg" in q["reason"]
    assert f"manifest says {len(original)}" in q["reason"]
    store = station_home / "store" / "2026" / "11" / "24" / "seat-07"
    for sd in good:
        assert sorted(p.name for p in (store / sd.name).iterdir() if not p.name.endswith(".sha256")) == NAMES
        assert not sd.exists()
    assert not (store / bad.name / media.name).exists() and not (store / bad.name / "session.json").exists()
    assert _snapshot(bad) == before

    rc, status, _ = _cli(capsys, "upload", "--status", "--json")
    assert rc == 3 and [x["session_id"] for x in status["backlog"]["quarantined"]] == [bad.name]
    rc, text, _ = _cli(capsys, "upload", "--status")
    assert rc == 3 and f"quarantined: session {bad.name}" in text and "seg-000001.media.drseg" in text
    check = check_backlog(Context(data_dir=station_home))
    assert check.status == WARN and bad.name in check.reason

    media.write_bytes(original)
    rc, result, err = _cli(capsys, "upload", "--drain", "--json")
    assert rc == 0, err
    assert result["error"] is None and result["quarantined"] == []
    assert sorted(p.name for p in (store / bad.name).iterdir() if not p.name.endswith(".sha256")) == NAMES
    assert not bad.exists()
    assert "quarantined" not in check_backlog(Context(data_dir=station_home)).reason


def test_restored_manifest_is_read_again_so_the_repaired_session_uploads(
        s3: S3Server, s3_bucket: str, station_home: Path) -> None:
    spool = station_home / "spool"
    good = sealed_session(spool, segments=1)
    bad = sealed_session(spool, segments=1)
    manifest = bad / "seg-000001.manifest.json"
    original = _bogus_manifest(manifest)  # replaced before the uploader ever saw the session
    up = _s3_uploader(s3, s3_bucket, station_home)

    result = up.drain()
    assert result["error"] is None and not good.exists()
    (q,) = result["quarantined"]
    assert q["session_id"] == bad.name and "seg-000001.media.drseg" in q["reason"]
    assert "manifest says " + "0" * 64 in q["reason"]
    assert len(spool_files(bad)) == 5

    manifest.write_bytes(original)  # the manifest is restored: expectations are read again
    result = up.drain(retry_now=False)  # as the background loop does: the next scan notices
    assert result["error"] is None and result["quarantined"] == [] and not bad.exists()
    (entry,) = [e for e in up.journal.entries(session_id=bad.name) if e.path.endswith("media.drseg")]
    assert entry.expect_sha256 == json.loads(original)["files"]["media"]["sha256"] == entry.sha256
    assert entry.state == PURGED
    assert _stored_names(all_versions(s3, s3_bucket), bad.name) == NAMES
    up.close()


def test_manifest_replaced_after_its_files_were_hashed_is_quarantined_not_uploaded(
        s3: S3Server, s3_bucket: str, station_home: Path) -> None:
    sd = sealed_session(station_home / "spool", segments=1)
    up = _s3_uploader(s3, s3_bucket, station_home)
    up.scan()
    for e in up.journal.entries():
        if e.path.endswith(".drseg"):
            up.hash_entry(e)  # QUEUED against the sealed manifest
    manifest = sd / "seg-000001.manifest.json"
    original = _bogus_manifest(manifest, "oplog")

    result = up.drain()
    assert result["error"] is None
    (q,) = result["quarantined"]
    assert q["session_id"] == sd.name and "seg-000001.manifest.json" in q["reason"]
    stored = _stored_names(all_versions(s3, s3_bucket), sd.name)
    assert "seg-000001.manifest.json" not in stored and "session.json" not in stored
    assert len(spool_files(sd)) == 5

    manifest.write_bytes(original)
    result = up.drain(retry_now=False)
    assert result["error"] is None and result["quarantined"] == [] and not sd.exists()
    assert _stored_names(all_versions(s3, s3_bucket), sd.name) == NAMES
    up.close()


def test_manifest_restored_before_hashing_does_not_leave_the_session_quarantined(
        s3: S3Server, s3_bucket: str, station_home: Path) -> None:
    sd = sealed_session(station_home / "spool", segments=1)
    manifest = sd / "seg-000001.manifest.json"
    original = _bogus_manifest(manifest)
    up = _s3_uploader(s3, s3_bucket, station_home)
    up.scan()  # journaled with the replaced manifest's expectations
    manifest.write_bytes(original)  # restored before any file was hashed

    result = up.drain(retry_now=False)  # hashing fails against the stale expectation, the next scan
    assert result["error"] is None and result["quarantined"] == [] and not sd.exists()
    assert _stored_names(all_versions(s3, s3_bucket), sd.name) == NAMES
    assert [r["session"] for r in _audit(station_home, "spool_quarantine_lifted")] == [sd.name]
    up.close()


def test_background_loop_uploads_a_repaired_session_by_itself(
        s3: S3Server, s3_lock_bucket: str, station_home: Path) -> None:
    spool = station_home / "spool"
    good = sealed_session(spool, segments=1)
    bad = sealed_session(spool, segments=1)
    media = bad / "seg-000001.media.drseg"
    original = media.read_bytes()
    media.write_bytes(original[:-1000])
    up = _s3_uploader(s3, s3_lock_bucket, station_home)
    up.poll_s = 0.1
    stop = threading.Event()
    t = threading.Thread(target=up.run_forever, args=(stop,), kwargs={"rescan_s": 0.2})
    t.start()
    try:
        deadline = time.monotonic() + 30
        while (good.exists() or not backlog(station_home)["quarantined"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not good.exists()
        assert [q["session_id"] for q in backlog(station_home)["quarantined"]] == [bad.name]
        time.sleep(1.0)  # the loop keeps going and leaves the session alone
        assert len(spool_files(bad)) == 5 and media.stat().st_size == len(original) - 1000

        media.write_bytes(original)
        deadline = time.monotonic() + 30
        while bad.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not bad.exists() and backlog(station_home)["quarantined"] == []
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()
    assert _stored_names(all_versions(s3, s3_lock_bucket), bad.name) == NAMES
    up.close()


def test_other_hard_failures_still_stop_the_drain_next_to_a_quarantined_session(
        station_home: Path, keyring_service: str, capsys: pytest.CaptureFixture[str]) -> None:
    spool = station_home / "spool"
    conflict = sealed_session(spool, segments=1)
    bad = sealed_session(spool, segments=1, session_id=new_session_id("20261101"))  # hashed first
    (bad / "seg-000001.oplog.drseg").write_bytes(b"not what was sealed")
    # a different object already stored under the key of the other session's media file
    other = station_home / "store" / "2026" / "11" / "24" / "seat-07" / conflict.name / "seg-000001.media.drseg"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"someone else's bytes")

    rc, result, err = _cli(capsys, "upload", "--drain", "--json")
    assert rc == 1, err
    assert "already exists in storage with different content" in result["error"]
    assert [x["session_id"] for x in result["quarantined"]] == [bad.name]
    assert conflict.exists() and len(spool_files(conflict)) == 5 and len(spool_files(bad)) == 5


def test_an_existing_journal_gains_the_quarantine_table_and_keeps_its_entries(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    j = Journal(path)
    j.add("k", tmp_path / "f", role="segment", session_id="s1")
    j.close()
    con = sqlite3.connect(path)  # what a journal written before quarantine existed looks like
    con.execute("DROP TABLE IF EXISTS quarantine")
    con.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (json.dumps("1"),))
    con.commit()
    con.close()

    j = Journal(path)
    try:
        assert j.get("k") is not None and j.get_meta("schema_version") == "2"
        assert j.quarantine("s1", "spool file 'f' does not match its manifest: size 1", file="f")
        (q,) = j.quarantined()
        assert q["session_id"] == "s1" and "size 1" in q["reason"] and q["file"] == "f"
        assert not j.quarantine("s1", "size 2 now", file="f")  # already quarantined: not new
        (again,) = j.quarantined()
        assert again["reason"] == "size 2 now" and again["since"] == q["since"]
        assert j.lift_quarantine("s1") and j.quarantined() == []
    finally:
        j.close()
