"""Crash recovery abused by whoever holds the seat's disk but no key (docs/security.md, A1).

One real `station record` (fake devices, 2 s segments) is killed with SIGKILL in its third
segment; copies of its spool folder are then altered the ways an attacker would before the
next start recovers them. Recovery must vouch only for what the station wrote: each abuse is
reported with its own code and none verifies intact or recovered; the untouched copy is
`recovered`. A finished session cut before upload is refused the same way, from its checkpoint
log and from the audit log when the log is cut too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from station.crypto.keys import load_signing_key, station_text
from station.crypto.session import recover_spool
from station.crypto.verify import DirSource, verify_session
from station.logs import AuditLog
from tests.recordkit import make_station

pytestmark = [pytest.mark.integration]


def _record(st, *args: str) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    return subprocess.Popen([sys.executable, "-m", "station.cli", "record", "--policy",
                             str(st.policy_path), "--data-dir", str(st.home), "--fake-devices",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _codes(res: dict) -> set[str]:
    return {p["code"] for p in res["problems"]} - {"truncated", "crash-recovered"}


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory, keyring_service_module: str) -> tuple:
    home = tmp_path_factory.mktemp("seat")
    st = make_station(home, **{"capture.segment_seconds": 2})
    proc = _record(st, "--duration", "60")
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert line.startswith("recording "), proc.stderr.read().decode() if proc.poll() else line
    sid = line.split()[1]
    sdir = home / "spool" / sid
    deadline = time.monotonic() + 30
    while not (sdir / "seg-000002.manifest.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)                      # well into segment 3
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert (sdir / "seg-000003.media.drseg").exists() and not (sdir / "session.json").exists()
    sk = load_signing_key()
    assert sk is not None
    # a pristine copy: a later `station record` on this seat recovers the spool's own folder
    pristine = tmp_path_factory.mktemp("crashed") / sid
    shutil.copytree(sdir, pristine)
    return st, pristine, sk


@pytest.fixture(scope="module")
def keyring_service_module() -> object:
    import uuid

    import keyring

    from tests.services import require_services

    require_services()
    service = "dualrec-test-" + uuid.uuid4().hex[:12]
    old = os.environ.get("STATION_KEYRING_SERVICE")
    os.environ["STATION_KEYRING_SERVICE"] = service
    yield service
    with __import__("contextlib").suppress(Exception):
        keyring.delete_password(service, "station-signing-key")
    if old is None:
        os.environ.pop("STATION_KEYRING_SERVICE", None)
    else:
        os.environ["STATION_KEYRING_SERVICE"] = old


def _copy(sdir: Path, root: Path, name: str) -> Path:
    d = root / name / sdir.name
    shutil.copytree(sdir, d)
    return d


def _recover(d: Path, sk) -> dict:  # type: ignore[no-untyped-def]
    audit = AuditLog(d.parent / "audit.log")
    [man] = recover_spool(d.parent, sk, audit=audit)
    res = verify_session(DirSource(d), [station_text(sk.verify_key)])
    events = [r["event"] for r in audit.records()]
    assert events == ["session-tampered" if man["recovery"]["findings"] else "session-recovered"]
    return res


def test_the_genuine_crash_is_recovered(crashed: tuple, tmp_path: Path) -> None:
    _, sdir, sk = crashed
    res = _recover(_copy(sdir, tmp_path, "genuine"), sk)
    assert res["verdict"] == "recovered", res["problems"]
    assert res["categories"] == ["crash-recovered", "truncated"], res["problems"]
    assert res["recovery"]["kept_s"] >= 4.0 and res["recovery"]["lost_s_max"] <= 1.3


@pytest.mark.parametrize(("abuse", "code"), [
    ("replay segment 1's media file as segment 3's", "recovery-header-mismatch"),
    ("replace segment 3's oplog by another session's", "recovery-header-mismatch"),
    ("append bytes after the last checkpoint", "recovery-appended"),
    ("flip a byte the checkpoints vouched for", "recovery-checkpoint-mismatch"),
    ("cut segment 3's media far below its last checkpoints", "recovery-cut"),
    ("delete segment 3's masking ledger", "recovery-missing-file"),
    ("delete the checkpoint log", "recovery-unvouched"),
])
def test_each_abuse_of_a_crashed_session_is_reported_with_its_code(
        crashed: tuple, tmp_path: Path, abuse: str, code: str) -> None:
    _, sdir, sk = crashed
    d = _copy(sdir, tmp_path, "abused")
    media3 = d / "seg-000003.media.drseg"
    if abuse.startswith("replay"):
        shutil.copyfile(d / "seg-000001.media.drseg", media3)
    elif abuse.startswith("replace"):
        other = tmp_path / "other" / "x"
        from station.crypto.sealed import SealedWriter
        from tests.vectors.make_vectors import ARCHIVE  # any sealed file of another session

        other.mkdir(parents=True)
        with SealedWriter(other / "f", [ARCHIVE.public_key], {
                "station": "st", "session": "20260101T000000Z-00000000", "seq": 3,
                "kind": "oplog"}) as w:
            w.write(b"{}\n")
        shutil.copyfile(other / "f", d / "seg-000003.oplog.drseg")
    elif abuse.startswith("append"):
        with media3.open("ab") as fh:
            fh.write(os.urandom(4096))
    elif abuse.startswith("flip"):
        raw = bytearray(media3.read_bytes())
        raw[len(raw) // 2] ^= 0x40
        media3.write_bytes(bytes(raw))
    elif abuse.startswith("cut"):
        media3.write_bytes(media3.read_bytes()[:600])
    elif abuse.startswith("delete segment"):
        (d / "seg-000003.masklog.drseg").unlink()
    else:
        (d / "checkpoints.log").unlink()
    res = _recover(d, sk)
    assert code in _codes(res), (abuse, res["problems"])
    assert res["intact"] is False and res["verdict"] == "altered", (abuse, res["verdict"])


def test_a_finished_session_cut_before_upload_is_refused(
        crashed: tuple, tmp_path: Path) -> None:
    """Delete session.json and the last segment of a *finished* session: the checkpoint log says
    it was finished; with the log cut back too, the audit log still does."""
    st, _, sk = crashed
    done = subprocess.run([sys.executable, "-m", "station.cli", "record", "--json", "--policy",
                           str(st.policy_path), "--data-dir", str(st.home), "--fake-devices",
                           "--duration", "5"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    sid = json.loads(done.stdout)["session_id"]
    sdir = st.home / "spool" / sid
    assert json.loads((sdir / "session.json").read_bytes())["segments"] >= 3
    last = max(int(p.name[4:10]) for p in sdir.glob("seg-*.manifest.json"))
    for cut_log in (False, True):
        d = _copy(sdir, tmp_path, f"cut-{cut_log}")
        (d / "session.json").unlink()
        for p in d.glob(f"seg-{last:06d}.*"):
            p.unlink()
        if cut_log:  # back to the last line before the last segment's files (a line boundary)
            lines = (d / "checkpoints.log").read_bytes().split(b"\n")
            first = next(i for i, ln in enumerate(lines) if f"seg-{last:06d}".encode() in ln)
            (d / "checkpoints.log").write_bytes(b"\n".join(lines[:first]) + b"\n")
        audit = AuditLog(st.home / "audit" / "audit.log")
        [man] = recover_spool(d.parent, sk, audit=audit if cut_log else None)
        res = verify_session(DirSource(d), [station_text(sk.verify_key)])
        assert "recovery-session-finished" in _codes(res), (cut_log, res["problems"])
        assert res["verdict"] == "altered"
        detail = " ".join(p["detail"] for p in res["problems"])
        assert ("audit log" if cut_log else "checkpoints.log") in detail


def test_a_folder_recovery_cannot_read_does_not_stop_the_others_or_the_recording(
        crashed: tuple, tmp_path: Path) -> None:
    """A non-canonical manifest planted in a crashed folder used to raise out of recovery and
    stop `station record` from starting: the disk holder could keep the seat from recording."""
    st, sdir, sk = crashed
    spool = tmp_path / "spool"
    bad = _copy(sdir, tmp_path, "spool")
    good = spool / "20261207T000000Z-0000good"
    shutil.copytree(sdir, good)
    man = json.loads((bad / "seg-000001.manifest.json").read_bytes())
    (bad / "seg-000001.manifest.json").write_text(json.dumps(man, indent=1))
    audit = AuditLog(tmp_path / "audit.log")
    done = recover_spool(spool, sk, audit=audit)
    assert [m["session"] for m in done] == [sdir.name]          # the good copy (same session id)
    events = [r["event"] for r in audit.records()]
    assert sorted(events) == ["session-recovered", "session-recovery-failed"]
    assert not (bad / "session.json").exists()


def test_a_checkpoint_line_cut_by_the_crash_is_dropped_before_recovery_appends(
        crashed: tuple, tmp_path: Path) -> None:
    """The crash cut the last checkpoint line mid-write: that line vouched for nothing (its
    message was never written), and recovery's own `finished` line must not be glued to it."""
    _, sdir, sk = crashed
    d = _copy(sdir, tmp_path, "cutline")
    log = d / "checkpoints.log"
    # (a marker no hash, signature or number of the log can hold by chance: "0123" could)
    log.write_bytes(log.read_bytes() + b'{"n":99999,"prev":"~cut~')
    res = _recover(d, sk)
    assert res["verdict"] == "recovered", res["problems"]
    lines = log.read_bytes().split(b"\n")
    assert lines[-1] == b"" and b'"t":"finished"' in lines[-2] and b"~cut~" not in log.read_bytes()


def test_symbolic_links_in_the_spool_are_never_followed_or_signed(
        crashed: tuple, tmp_path: Path) -> None:
    """A link in the spool pointing at a crashed folder elsewhere: recovery must not write a
    signed session.json into the link's target. A segment file replaced by a link to another
    file is not signed either (the station checkpointed a real file: recovery-missing-file)."""
    _, sdir, sk = crashed
    target = tmp_path / "elsewhere" / sdir.name
    shutil.copytree(sdir, target)
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / sdir.name).symlink_to(target, target_is_directory=True)
    audit = AuditLog(tmp_path / "audit.log")
    assert recover_spool(spool, sk, audit=audit) == []
    assert not (target / "session.json").exists()
    assert [r["event"] for r in audit.records()] == ["session-recovery-failed"]
    d = _copy(sdir, tmp_path, "linked-file")
    outside = tmp_path / "outside.bin"
    shutil.copyfile(d / "seg-000003.oplog.drseg", outside)
    (d / "seg-000003.oplog.drseg").unlink()
    (d / "seg-000003.oplog.drseg").symlink_to(outside)
    res = _recover(d, sk)
    assert "recovery-missing-file" in _codes(res), res["problems"]


def test_a_crash_in_the_first_segment_keeps_what_was_known_at_start(tmp_path: Path) -> None:
    """Agent, site and the start time come from the signed `start` line of the checkpoint log
    when no manifest was closed yet; the segment ends at its last vouched checkpoint, not at the
    time recovery ran."""
    import nacl.public
    import nacl.signing

    from station.crypto.session import SessionSealer

    sk = nacl.signing.SigningKey.generate()
    d = tmp_path / "spool" / "20261207T101500Z-00000001"
    s = SessionSealer(d, d.name, "seat-5", [nacl.public.PrivateKey.generate().public_key], sk,
                      {"agent": "agent-9", "site": "sh-01"})
    w = s.open_segment(1, "media")
    w.write(b"x" * 1000)
    w.flush()
    s.abandon()
    time.sleep(1.2)
    [man] = recover_spool(d.parent, sk)
    assert man["agent"] == "agent-9" and man["site"] == "sh-01" and man["station"] == "seat-5"
    seg = json.loads((d / "seg-000001.manifest.json").read_bytes())
    assert seg["meta"]["agent"] == "agent-9"
    assert seg["ended_utc"] == man["recovery"]["until_utc"] < man["recovery"]["recovered_utc"]


def test_the_running_station_recovers_sessions_left_open_by_another_process(
        crashed: tuple, station_home: Path, keyring_service: str) -> None:
    """`station run` recovers at start and then from time to time (a `station record` killed
    while the window runs)."""
    from station.app import App
    from station.context import Context
    from station.crypto.keys import load_signing_key as load
    from station.secrets import SIGNING_KEY, SecretStore

    _, sdir, sk = crashed
    SecretStore(keyring_service).set_bytes(SIGNING_KEY, bytes(sk))
    assert load() is not None
    ctx = Context(data_dir=station_home)
    app = App(ctx, desktop=False, upload=False, api_port=0, recover_every_s=0.2).start()
    try:
        assert app.recovered == [] and app.recovery_notice() is None
        shutil.copytree(sdir, ctx.spool_dir / sdir.name)             # appears while it runs
        deadline = time.monotonic() + 10
        while not app.recovered_later and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [m["session"] for m in app.recovered_later] == [sdir.name]
    finally:
        app.close()
    res = verify_session(DirSource(ctx.spool_dir / sdir.name), [station_text(sk.verify_key)])
    assert res["verdict"] == "recovered", res["problems"]


def test_a_business_reference_given_on_the_command_line_reaches_no_cleartext_file(
        tmp_path: Path, keyring_service_module: str) -> None:
    """`station record --business-ref` with a phone and an ID number: manifests, session.json,
    the checkpoint log, the audit and diagnostic logs hold them masked, never in clear (the API
    and window paths masked them already; the command line did not)."""
    home = tmp_path / "seat"
    st = make_station(home, **{"capture.segment_seconds": 2})
    phone, id_number = "13812345678", "110101199003074578"
    proc = _record(st, "--duration", "3", "--json", "--business-ref",
                   f"客户 {phone} 身份证 {id_number}")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    sid = json.loads(out)["session_id"]
    session = json.loads((home / "spool" / sid / "session.json").read_bytes())
    # in clear only its salted hash; the masked text is in the sealed operation log
    assert "business_ref" not in session["meta"] and session["meta"]["business_ref_hash"].startswith("hs256:")
    hits = [p for p in home.rglob("*") if p.is_file() and not p.name.endswith(".drseg")
            and (phone.encode() in p.read_bytes() or id_number.encode() in p.read_bytes())]
    assert hits == []
    assert phone not in out.decode() + err.decode()


def test_everything_a_recording_and_its_upload_write_is_private_to_the_user(
        tmp_path: Path, keyring_service_module: str) -> None:
    """docs/security.md 2.8: files 0600 and folders 0700 everywhere the station writes (the
    journal and logs were 0644, the data dir, audit/ and logs/ 0755), under a permissive umask."""
    home = tmp_path / "seat"
    st = make_station(home, **{"capture.segment_seconds": 2})
    old = os.umask(0o022)
    try:
        for argv in (["record", "--fake-devices", "--duration", "2"], ["upload", "--drain"]):
            r = subprocess.run([sys.executable, "-m", "station.cli", *argv, "--policy",
                                str(st.policy_path), "--data-dir", str(home)],
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr[-2000:]
    finally:
        os.umask(old)
    loose = [f"{oct(p.stat().st_mode & 0o777)} {p.relative_to(home)}" for p in [home, *home.rglob("*")]
             if p.name != "policy.toml" and p.stat().st_mode & 0o077]
    assert loose == []
    assert (home / "journal.sqlite").exists() and any((home / "store").rglob("session.json"))
