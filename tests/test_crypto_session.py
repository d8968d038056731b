"""Session sealing: signed chained manifests, crash (SIGKILL) and recovery, nothing readable on
the seat's disk without the reviewer identity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import nacl.public
import nacl.signing
import pytest

from station.cli import main
from station.crypto.keys import load_signing_key, recipient_text, station_text
from station.crypto.manifest import GENESIS, check_signature, manifest_hash
from station.crypto.sealed import SealedReader, SealError, Truncated
from station.crypto.session import SessionBusy, SessionSealer, recover_spool
from station.crypto.verify import DirSource, verify_session
from station.logs import AuditLog

ID = nacl.public.PrivateKey.generate()
RCPT = recipient_text(ID.public_key)
SID = "20261124T062500Z-3fa9c2d1"


def test_manifests_are_signed_chained_and_name_each_file(tmp_path: Path) -> None:
    sk = nacl.signing.SigningKey.generate()
    s = SessionSealer(tmp_path / SID, SID, "st-1", [RCPT], sk, {"agent": "a7", "site": "bj"})
    mans = []
    for seq in (1, 2):
        for kind in ("media", "oplog", "masklog"):
            with s.open_segment(seq, kind) as w:
                w.write(f"{kind}{seq}".encode())
        mans.append(s.close_segment(seq, {"frames": {"screen": 15}, "gaps": [{"kind": "pause"}]}))
    with pytest.raises(SealError, match="in order"):
        s.close_segment(5, {})
    sess = s.finish("normal", {"markers": [{"label": "consent"}]})
    assert [check_signature(m) for m in [*mans, sess]] == [("valid", station_text(sk.verify_key))] * 3
    assert mans[0]["prev"] == GENESIS and mans[1]["prev"] == manifest_hash(mans[0])
    assert sess["last_hash"] == manifest_hash(mans[1]) and sess["segments"] == 2
    assert sess["end_reason"] == "normal" and sess["markers"] == [{"label": "consent"}]
    assert mans[1]["stats"] == {"frames": {"screen": 15}, "gaps": [{"kind": "pause"}]}
    media = tmp_path / SID / "seg-000002.media.drseg"
    assert mans[1]["files"]["media"]["size"] == media.stat().st_size
    on_disk = json.loads((tmp_path / SID / "seg-000002.manifest.json").read_bytes())
    assert manifest_hash(on_disk) == manifest_hash(mans[1])
    result = verify_session(DirSource(tmp_path / SID), [station_text(sk.verify_key)])
    assert result["intact"], result["problems"]
    with pytest.raises(ValueError):
        SessionSealer(tmp_path / "x", "x", "st", [RCPT], sk).finish("exploded")


def test_a_second_sealer_cannot_open_a_live_session(tmp_path: Path) -> None:
    sk = nacl.signing.SigningKey.generate()
    s = SessionSealer(tmp_path / SID, SID, "st", [RCPT], sk)
    with pytest.raises(SessionBusy):
        SessionSealer(tmp_path / SID, SID, "st", [RCPT], sk)
    assert recover_spool(tmp_path, sk) == []  # recovery leaves a live session alone
    s.finish()


WRITER = textwrap.dedent("""
    import sys, time, nacl.signing
    from station.crypto.session import SessionSealer
    sk = nacl.signing.SigningKey(bytes.fromhex(sys.argv[3]))
    s = SessionSealer(sys.argv[1], sys.argv[2], "st-kill", [sys.argv[4]], sk, {"agent": "a"})
    w1 = s.open_segment(1, "media"); w1.write(b"segment one"); s.close_segment(1, {"n": 1})
    w = s.open_segment(2, "media")
    o = s.open_segment(2, "oplog")
    for i in range(6):
        w.write(b"%d:" % i + b"m" * 5000); w.flush()
        o.write(b'{"ev":%d}\\n' % i); o.flush()
        print("flushed", i, flush=True)
    while True:
        w.write(b"never flushed"); time.sleep(0.01)
""")


def test_sigkilled_writer_keeps_flushed_messages_and_recovery_marks_it_truncated(
        tmp_path: Path, keyring_service: str, station_home: Path) -> None:
    assert main(["keys", "init"]) == 0
    sk = load_signing_key(create=False)
    assert sk is not None
    sdir = station_home / "spool" / SID
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(sdir), SID, bytes(sk).hex(), RCPT],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for i in range(6):
        assert proc.stdout.readline().split() == ["flushed", str(i)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    media = sdir / "seg-000002.media.drseg"
    got = []
    with pytest.raises(Truncated) as exc, SealedReader(media, [ID]) as rd:
        got.extend(rd.messages())
    assert got == [b"%d:" % i + b"m" * 5000 for i in range(6)]
    assert exc.value.messages == 7  # header message + 6 flushed
    size_before = media.stat().st_size
    # verify before recovery: open session, not intact
    assert main(["verify", SID]) == 3
    audit = AuditLog(station_home / "audit" / "audit.log")
    recovered = recover_spool(station_home / "spool", sk, audit=audit)
    assert [m["end_reason"] for m in recovered] == ["crash-recovered"]
    assert [(r["event"], r["truncated_segments"]) for r in audit.records()
            if r["event"] == "session-recovered"] == [("session-recovered", [2])]
    assert recovered[0]["truncated_segments"] == [2]
    man = json.loads((sdir / "seg-000002.manifest.json").read_bytes())
    assert man["truncated"]["media"]["note"].startswith("truncated at message 7")
    assert man["truncated"]["oplog"]["at_message"] == 7
    assert media.stat().st_size == size_before  # nothing cut, nothing re-encrypted
    assert recover_spool(station_home / "spool", sk) == []  # idempotent
    assert main(["verify", SID, "--json"]) == 4  # recovered: its own exit code
    res = verify_session(DirSource(sdir), [station_text(sk.verify_key)])
    assert res["categories"] == ["crash-recovered", "truncated"] and res["verdict"] == "recovered"
    assert [s["status"] for s in res["segments"]] == ["ok", "truncated"]
    # the last vouched media checkpoint is the 6th flush, the writer lived on < 1 s after it
    assert res["recovery"]["until_utc"] == man["truncated"]["media"]["vouched_utc"]
    assert 0 <= res["recovery"]["lost_s_max"] < 1.0


def test_nothing_on_the_seat_decrypts_without_the_identity_or_holds_plaintext(
        keyring_service: str, station_home: Path) -> None:
    assert main(["keys", "init"]) == 0
    sk = load_signing_key()
    assert sk is not None
    marker = os.urandom(48)
    phone = b"13812345678"
    s = SessionSealer(station_home / "spool" / SID, SID, "st", [RCPT], sk, {"agent": "a"})
    for seq in (1, 2):
        for kind in ("media", "oplog", "masklog"):
            w = s.open_segment(seq, kind)
            for _ in range(20):
                w.write(marker + phone)
                w.flush()
        s.close_segment(seq, {"frames": 20})
    s.finish("normal", {})
    seat_keys = [nacl.public.PrivateKey.generate(), sk.to_curve25519_private_key()]
    files = [p for p in station_home.rglob("*") if p.is_file()]
    sealed = [p for p in files if p.suffix == ".drseg"]
    assert len(sealed) == 6 and len(files) > 6
    for p in files:
        data = p.read_bytes()
        assert marker not in data and phone not in data and marker[:16] not in data, p
        for key in seat_keys:
            with pytest.raises(SealError), SealedReader(p, [key]) as rd:
                rd.read()
        assert p.stat().st_mode & 0o077 == 0, f"{p} is readable by others"
    # the test could fail: the reviewer identity does open them
    with SealedReader(sealed[0], [ID]) as rd:
        assert rd.read().startswith(marker + phone)


def test_recovery_closes_complete_files_as_ok_and_files_cut_in_the_header_as_truncated(
        tmp_path: Path) -> None:
    sk = nacl.signing.SigningKey.generate()
    d = tmp_path / "spool" / SID
    s = SessionSealer(d, SID, "st", [RCPT], sk, {"agent": "a"})
    w1 = s.open_segment(1, "media")
    w1.write(b"complete")
    w1.close()  # FINAL written, but the process died before the manifest
    w2 = s.open_segment(2, "media")
    w2.flush()
    s.abandon()
    seg2 = d / "seg-000002.media.drseg"
    seg2.write_bytes(seg2.read_bytes()[:20])  # died while writing the header
    (tmp_path / "spool" / "empty-session").mkdir()
    done = recover_spool(tmp_path / "spool", sk)
    assert sorted(m["session"] for m in done) == [SID, "empty-session"]
    m1 = json.loads((d / "seg-000001.manifest.json").read_bytes())
    m2 = json.loads((d / "seg-000002.manifest.json").read_bytes())
    assert m1["truncated"] is None and m1["files"]["media"]["final"] is True
    assert m2["truncated"]["media"]["at_message"] == 0 and m2["files"]["media"]["size"] == 20
    res = verify_session(DirSource(d), [station_text(sk.verify_key)])
    assert [s["status"] for s in res["segments"]] == ["ok", "truncated"]
    assert res["end_reason"] == "crash-recovered"
    with SealedReader(d / "seg-000001.media.drseg", [ID]) as rd:
        assert rd.read() == b"complete"


FILLER = textwrap.dedent("""
    import resource, signal, sys, nacl.signing
    from station.crypto.session import SessionSealer
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))  # the disk "fills" at 20 kB
    sk = nacl.signing.SigningKey(bytes.fromhex(sys.argv[3]))
    s = SessionSealer(sys.argv[1], sys.argv[2], "st-full", [sys.argv[4]], sk)
    w = s.open_segment(1, "media")
    i = 0
    try:
        while True:
            w.write(b"%04d" % i + b"d" * 996); w.flush(); i += 1
    except OSError as exc:
        print("failed", exc.errno, i, flush=True)
    man = s.close_segment(1, {})
    s.finish("disk-full", {})
    print(man["truncated"]["media"]["at_message"], flush=True)
""")


def test_a_full_disk_keeps_every_whole_message_and_the_manifest_says_where_it_stopped(
        tmp_path: Path) -> None:
    import errno

    sk = nacl.signing.SigningKey.generate()
    d = tmp_path / SID
    out = subprocess.run([sys.executable, "-c", FILLER, str(d), SID, bytes(sk).hex(), RCPT],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    tag, err, written = out[0].split()
    assert tag == "failed" and int(err) == errno.EFBIG
    got = []
    with pytest.raises(Truncated) as exc, SealedReader(d / "seg-000001.media.drseg", [ID]) as rd:
        got.extend(rd.messages())
    assert got == [b"%04d" % i + b"d" * 996 for i in range(int(written))]
    assert int(out[1]) == exc.value.messages == int(written) + 1
    res = verify_session(DirSource(d), [station_text(sk.verify_key)])
    assert res["categories"] == ["truncated"] and res["end_reason"] == "disk-full"
