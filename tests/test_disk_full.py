"""A real "no space left on device": the station's data dir on a small tmpfs that fills up.

Crossing the policy's free-space threshold is tested elsewhere (a clean stop before the disk is
full). Here the threshold is 0, so the recorder really meets ENOSPC in the middle of a segment:
it must stop with ``disk-full``, close out what it sealed (manifests, ``session.json``, from the
space it reserved at start), and every sealed second must verify and export. With no space at
all, ``station record`` refuses and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from station.cli import main
from tests.recordkit import decode_media, make_station, plaintext

pytestmark = [pytest.mark.integration]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh tmpfs of 24 MiB mounted for the test (the suite runs as root, as CI does)."""
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(mnt)],
                   check=True, capture_output=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def fill(disk: Path, leave_bytes: int) -> None:
    """Fill the file system until at most ``leave_bytes`` are free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(disk / "ballast", "wb") as fh:
        want = max(0, free - leave_bytes)
        chunk = b"\0" * (1 << 20)
        while want > 0:
            try:
                want -= fh.write(chunk[: min(len(chunk), want)])
            except OSError:
                break


def record_cmd(st, data_dir: Path, *args: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [sys.executable, "-m", "station.cli", "record", "--json", "--policy", str(st.policy_path),
            "--data-dir", str(data_dir), *args]


@pytest.mark.parametrize("segment_s,free_mib", [(4, 2.0), (60, 1.0)],
                         ids=["in-a-later-segment", "in-the-first-segment"])
def test_enospc_mid_recording_stops_disk_full_and_every_sealed_second_verifies_and_exports(
        display: str, keyring_service: str, station_home: Path, small_disk: Path,
        tmp_path: Path, segment_s: int, free_mib: float) -> None:
    st = make_station(station_home, **{"spool.min_free_mb": 0,
                                       "capture.segment_seconds": segment_s,
                                       "capture.screen_crf": 18, "capture.camera_crf": 18})
    # a few MiB free: the fake devices' media fill it in some seconds, mid-segment
    fill(small_disk, int(free_mib * (1 << 20)))
    proc = subprocess.run(record_cmd(st, small_disk, "--duration", "120", "--fake-devices"),
                          capture_output=True, timeout=180, check=False)
    err = proc.stderr.decode()
    assert proc.stdout, err[-3000:]
    out = json.loads(proc.stdout)
    assert out.get("stop_code") == "disk-full", (out, err[-2000:])
    sid = out["session_id"]
    sdir = small_disk / "spool" / sid
    assert (sdir / "session.json").is_file(), sorted(p.name for p in sdir.iterdir())
    session = json.loads((sdir / "session.json").read_text())
    assert session["end_reason"] == "disk-full"
    # no empty or unlisted file is left in the session folder
    listed = {"session.json", "checkpoints.log"}
    for seq in range(1, session["segments"] + 1):
        man = json.loads((sdir / f"seg-{seq:06d}.manifest.json").read_text())
        listed.add(f"seg-{seq:06d}.manifest.json")
        listed.update(f["name"] for f in man["files"].values())
    present = {p.name for p in sdir.iterdir()}
    assert present <= listed, present - listed
    assert all((sdir / n).stat().st_size > 0 for n in present)

    # verify: authentic, cut short by the disk (truncated is not "altered")
    v = subprocess.run([sys.executable, "-m", "station.cli", "verify", sid, "--json",
                        "--policy", str(st.policy_path), "--data-dir", str(small_disk)],
                       capture_output=True, timeout=120, check=False)
    report = json.loads(v.stdout)
    codes = {p["code"] for p in report["problems"]}
    assert codes <= {"truncated"}, report["problems"]
    assert report["verdict"] in ("intact", "truncated"), report["verdict"]

    # every sealed second decodes: the media span equals what the session says was recorded
    spans = []
    for seq in range(1, session["segments"] + 1):
        data, _ = plaintext(sdir / f"seg-{seq:06d}.media.drseg", st.identity)
        if not data and seq == session["segments"] > 1:
            continue  # the disk filled up as the last segment opened: it holds no media yet
        dec = decode_media(data)
        assert dec.screen_pts_ms, f"segment {seq} has no decodable screen frame"
        spans.append((dec.screen_pts_ms[0], dec.screen_pts_ms[-1]))
    recorded_s = (spans[-1][1] - spans[0][0]) / 1000
    assert recorded_s > 2.0, spans
    assert recorded_s >= out["duration_s"] - 1.5, (recorded_s, out["duration_s"])

    # and exports (the reviewer's folder is on another disk)
    ident = tmp_path / "reviewer.key"
    from station.crypto.keys import identity_text

    ident.write_text(identity_text(st.identity) + "\n")
    os.environ["STATION_HOME"] = str(small_disk)
    try:
        os.remove(small_disk / "ballast")  # the audit log of the export needs a few bytes
        rc = main(["export", sid, "--identity", str(ident), "--out", str(tmp_path / "exp"),
                   "--reason", "disk-full test", "--policy", str(st.policy_path)])
    finally:
        os.environ["STATION_HOME"] = str(station_home)
    assert rc == 0
    exported = sorted((tmp_path / "exp").glob("seg-*.mkv"))
    assert len(exported) >= len(spans) and all(p.stat().st_size > 0 for p in exported[:len(spans)])


def test_no_space_at_all_refuses_with_a_clear_message_and_leaves_nothing(
        keyring_service: str, station_home: Path, small_disk: Path) -> None:
    st = make_station(station_home, **{"spool.min_free_mb": 0})
    (small_disk / "spool").mkdir()
    fill(small_disk, 0)
    before = sorted(str(p.relative_to(small_disk)) for p in small_disk.rglob("*"))
    proc = subprocess.run(record_cmd(st, small_disk, "--duration", "5", "--fake-devices"),
                          capture_output=True, timeout=120, check=False)
    err = proc.stderr.decode()
    assert proc.returncode != 0
    assert "Traceback" not in err, err[-3000:]
    assert "disk" in err.lower() and ("full" in err.lower() or "space" in err.lower()), err
    after = sorted(str(p.relative_to(small_disk)) for p in small_disk.rglob("*"))
    assert after == before


def test_sealed_file_and_logs_on_a_full_disk_end_at_a_whole_message_and_a_whole_line(
        keyring_service: str, small_disk: Path, tmp_path: Path) -> None:
    """The low level: the disk fills in the middle of a message. The file ends at its last whole
    message (a reader says truncated, never garbage), the checkpoint log and the audit log end
    at a whole line and their chains still verify once space is back."""
    import nacl.public
    import nacl.signing

    from station.crypto.keys import recipient_text
    from station.crypto.session import CHECKPOINTS, SessionSealer, read_checkpoints
    from station.logs import AuditLog, verify_audit

    ident = nacl.public.PrivateKey.generate()
    key = nacl.signing.SigningKey.generate()
    fill(small_disk, 300 * 1024)
    audit = AuditLog(small_disk / "audit.log")
    audit.append("first", ok=True)
    with pytest.raises(OSError):  # a part of it fits: the part is taken back
        audit.append("x", pad="y" * 400_000)
    assert verify_audit(small_disk / "audit.log") == (True, "intact")
    assert len(audit.records()) == 1
    sdir = small_disk / "s"
    sealer = SessionSealer(sdir, "20261207T000000Z-0badd15c", "st", [recipient_text(ident.public_key)],
                           key, {"agent": "a"}, reserve_bytes=128 * 1024)
    w = sealer.open_segment(1, "media")
    rnd = os.urandom(50_000)
    with pytest.raises(OSError) as err:
        for _ in range(100):
            w.write(rnd)
            w.flush()
    assert err.value.errno == 28
    man = sealer.close_segment(1, {})
    assert man["truncated"]["media"]
    assert (sdir / "seg-000001.media.drseg").stat().st_size == man["files"]["media"]["size"]
    data, complete = plaintext(sdir / "seg-000001.media.drseg", ident)
    assert not complete and len(data) == 50_000 * (man["files"]["media"]["messages"] - 1)
    sealer.finish("disk-full", {})
    assert (sdir / "session.json").is_file() and not (sdir / ".reserve").exists()
    os.remove(small_disk / "ballast")
    _cps, fin, problems = read_checkpoints(sdir / CHECKPOINTS, key.verify_key)
    assert problems == [] and fin is not None
    audit.append("after", ok=True)
    assert verify_audit(small_disk / "audit.log") == (True, "intact")


def test_another_write_error_stops_with_write_error_and_closes_out_what_was_sealed(
        display: str, keyring_service: str, station_home: Path, tmp_path: Path) -> None:
    """A write the kernel refuses for another reason than space (here EFBIG: the process's file
    size limit, as ``ulimit -f`` sets; EIO and a read-only remount take the same path): the
    recorder stops with ``write-error``, not ``encoder-error``, closes the session out and what
    was sealed verifies and decodes."""
    import resource
    import signal

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (900_000, 900_000))  # > the reserve

    st = make_station(station_home, **{"spool.min_free_mb": 0, "capture.segment_seconds": 120,
                                       "capture.screen_crf": 10, "capture.camera_crf": 10})
    data = tmp_path / "data"
    proc = subprocess.run(record_cmd(st, data, "--duration", "120", "--fake-devices"),
                          capture_output=True, timeout=240, check=False, preexec_fn=limit)
    assert proc.stdout, proc.stderr.decode()[-3000:]
    res = json.loads(proc.stdout)
    assert res.get("stop_code") == "write-error", (res, proc.stderr.decode()[-2000:])
    sdir = data / "spool" / res["session_id"]
    session = json.loads((sdir / "session.json").read_text())
    assert session["end_reason"] == "write-error"
    man = json.loads((sdir / "seg-000001.manifest.json").read_text())
    assert "File too large" in man["truncated"]["media"]["note"]
    v = subprocess.run([sys.executable, "-m", "station.cli", "verify", res["session_id"], "--json",
                        "--policy", str(st.policy_path), "--data-dir", str(data)],
                       capture_output=True, timeout=120, check=False)
    report = json.loads(v.stdout)
    assert {p["code"] for p in report["problems"]} <= {"truncated"}, report["problems"]
    plain, complete = plaintext(sdir / "seg-000001.media.drseg", st.identity)
    dec = decode_media(plain)
    assert not complete and (dec.screen_pts_ms[-1] - dec.screen_pts_ms[0]) / 1000 >= res["duration_s"] - 1.5


def test_a_manifest_that_needed_the_reserve_ends_the_recording_so_session_json_still_fits(
        keyring_service: str, small_disk: Path) -> None:
    """The disk fills between two segments: the segment's files are whole, its manifest finds no
    space. The reserve takes the manifest, and the session must stop there: a next segment would
    eat what is left of the reserve and session.json would not fit (seen in a CI run: session.json
    missing, '.session.json.tmp' left). A manifest is never left cut either."""
    import nacl.public
    import nacl.signing

    from station.crypto.keys import recipient_text
    from station.crypto.session import SessionSealer

    ident = nacl.public.PrivateKey.generate()
    sdir = small_disk / "s"
    sealer = SessionSealer(sdir, "20261207T000000Z-0badd15d", "st", [recipient_text(ident.public_key)],
                           nacl.signing.SigningKey.generate(), {"agent": "a"}, reserve_bytes=512 * 1024)
    with sealer.open_segment(1, "media") as w:
        w.write(os.urandom(100_000))
    fill(small_disk, 0)
    man = sealer.close_segment(1, {"pad": "x" * 20_000})  # bigger than any page left over
    assert man["seq"] == 1 and not (sdir / ".seg-000001.manifest.json.tmp").exists()
    with pytest.raises(OSError) as err:
        sealer.open_segment(2, "media")
    assert err.value.errno == 28
    sealer.finish("disk-full", {"pad": "y" * 20_000})
    assert json.loads((sdir / "session.json").read_text())["end_reason"] == "disk-full"
    assert sorted(p.name for p in sdir.iterdir()) == [
        "checkpoints.log", "seg-000001.manifest.json", "seg-000001.media.drseg", "session.json"]
