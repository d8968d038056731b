"""station export of sessions recorded by `station record` (screen + camera + audio in Matroska
segments): the joined session.mkv plays, and the export is an evidence pack a third party can
check (SHA256SUMS, the signed manifests byte for byte, the audit record, a checker). Sessions
without session.json are refused unless --allow-incomplete; --allow-damaged lists every part it
leaves out; a join that fails says so and exits 5."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from station.cli import main
from station.crypto.keys import identity_text, load_signing_key, read_recipient_file, station_text
from station.logs import AuditLog
from tests.recordkit import Decoded, decode_media, make_station, make_video, onsets_ms
from tests.test_export import SID, record

pytestmark = pytest.mark.integration


def _record(station_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
            devices: Any = None, seconds: float = 5.0) -> tuple[Any, Path, Path]:
    """`station record` with 2 s segments: fake devices in process, or (``devices`` = the
    audio sink) the Xvfb screen, a camera file and the PulseAudio microphone in a subprocess,
    as tests/test_record_real.py records. Returns (station, session folder, archive key file)."""
    st = make_station(station_home, **{"capture.segment_seconds": 2})
    if devices is None:
        capsys.readouterr()
        assert main(["record", "--duration", str(seconds), "--fake-devices", "--json",
                     "--policy", str(st.policy_path)]) == 0
        result = json.loads(capsys.readouterr().out)
    else:
        from tests.services import tone

        cam = make_video(tmp_path / "camera.mp4", frames=25 * 10)
        beeps = np.zeros(int(48000 * (seconds + 3)), np.float32)
        for k in range(int(seconds / 0.7) + 4):  # a short tone every 0.7 s, across the boundaries
            i = int(48000 * (0.5 + 0.7 * k))
            t = tone(1000, 0.1)
            beeps[i:i + len(t)] = t[:max(0, len(beeps) - i)]
        import threading

        # play_array writes all samples into pacat's pipe: it returns when they were played
        player = threading.Thread(target=devices.play_array, args=(beeps,), daemon=True)
        player.start()
        proc = subprocess.run(
            [sys.executable, "-m", "station.cli", "record", "--json", "--policy",
             str(st.policy_path), "--data-dir", str(st.home), "--duration", str(seconds),
             "--monitor", "1", "--camera", str(cam), "--mic", "pulse"],
            capture_output=True, timeout=seconds + 90)
        player.join(30)
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
        result = json.loads(proc.stdout)
    assert result["segments"] >= 3, result
    key = tmp_path / "archive.key"
    key.write_text(identity_text(st.identity) + "\n")
    return st, Path(result["session_dir"]), key


def _export(sdir: Path, key: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str
            ) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    rc = main(["export", sdir.name, "--identity", str(key), "--out", str(out), "--reason",
               "complaint 2026-118", "--json", *extra])
    return rc, json.loads(capsys.readouterr().out)


def _packets(path: Path) -> dict[str, list[int]]:
    """dts (ms) of every packet, per stream title."""
    out: dict[str, list[int]] = {}
    with av.open(str(path)) as c:
        titles = {s.index: s.metadata.get("title") or s.type for s in c.streams}
        for p in c.demux():
            if p.size:
                out.setdefault(titles[p.stream.index], []).append(int(p.dts * p.time_base * 1000))
    return out


@pytest.mark.parametrize("devices", [False, True], ids=["fake-devices", "xvfb-pulse-camera-file"])
def test_session_mkv_of_a_recording_is_written_and_plays_like_its_segments(
        devices: bool, station_home: Path, keyring_service: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest) -> None:
    """Every export of a real recording said "session.mkv not written: Invalid argument" and
    exited 0: each segment's AAC stream starts with a priming frame that overlaps the segment
    before, and the muxer refuses timestamps that go back."""
    sink = None
    if devices:
        request.getfixturevalue("display")
        sink = request.getfixturevalue("audio_sink")
    _, sdir, key = _record(station_home, tmp_path, capsys, sink)
    out = tmp_path / "out"
    rc, res = _export(sdir, key, out, capsys)
    assert rc == 0 and "session.mkv" in res["files"], res["notes"]
    assert res["warnings"] == [] and res["session_mkv"] == {"written": True, "error": None}, res
    segs = sorted(out.glob("seg-*.mkv"))
    assert len(segs) >= 3
    with av.open(str(out / "session.mkv")) as c:
        assert [s.metadata.get("title") for s in c.streams] == ["screen", "camera", "audio"]
    # timestamps strictly increase in every stream
    joined = _packets(out / "session.mkv")
    assert all(all(b > a for a, b in zip(v, v[1:], strict=False)) for v in joined.values()), joined
    # every video frame of every segment, at its own time; audio over the same span, same tones
    per_seg = Decoded()
    spans = []
    for p in segs:
        one = decode_media(p.read_bytes())
        per_seg = decode_media(p.read_bytes(), per_seg)
        spans.append((one.audio_start_ms[0], one.audio_start_ms[-1] + len(one.audio[-1]) / 48)
                     if one.audio else None)
    whole = decode_media((out / "session.mkv").read_bytes())
    assert whole.screen_pts_ms == per_seg.screen_pts_ms and len(whole.screen_pts_ms) > 20
    assert whole.camera_pts_ms == per_seg.camera_pts_ms and len(whole.camera_pts_ms) > 20
    assert all(s is not None for s in spans)
    first, last = spans[0][0], spans[-1][1]  # type: ignore[index]
    assert abs(whole.audio_samples / 48 - (last - first)) < 30, (whole.audio_samples / 48, first,
                                                                 last)
    assert abs(whole.audio_start_ms[0] - first) < 2
    tones_joined, tones_segs = onsets_ms(whole), onsets_ms(per_seg)
    assert len(tones_joined) >= 4 and len(tones_joined) == len(tones_segs), (tones_joined,
                                                                             tones_segs)
    assert max(abs(a - b) for a, b in zip(tones_joined, tones_segs, strict=True)) < 3
    with av.open(str(out / "session.mkv")) as c:  # the container knows its length
        assert abs(float(c.duration / 1e6) - (last - first) / 1000) < 0.3


def test_export_is_an_evidence_pack_a_third_party_can_check(
        station_home: Path, keyring_service: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, sdir, key = _record(station_home, tmp_path, capsys, seconds=4.5)
    out = tmp_path / "pack"
    rc, res = _export(sdir, key, out, capsys, "--with-sealed")
    assert rc == 0, res
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert sorted(res["files"]) == names
    stored = sorted(p.name for p in sdir.iterdir() if p.is_file() and p.name != "checkpoints.log")
    assert sorted(n[len("evidence/"):] for n in names if n.startswith("evidence/seg-")
                  or n == "evidence/session.json") == stored
    for name in stored:  # signed manifests, session.json and sealed files byte for byte
        assert (out / "evidence" / name).read_bytes() == (sdir / name).read_bytes(), name
    for top in ("README.txt", "SHA256SUMS", "export.json", "verify.json", "session.mkv",
                "oplog.jsonl", "masklog.jsonl", "evidence/audit-export-started.json",
                "evidence/station-keys.txt", "evidence/check_evidence.py"):
        assert top in names, top
    # the audit record, exactly the line of the audit log; the completed record names the pack
    audit_lines = (station_home / "audit" / "audit.log").read_text("utf-8").splitlines()
    started = [x for x in audit_lines if '"event":"export-started"' in x]
    assert (out / "evidence" / "audit-export-started.json").read_text("utf-8") == started[-1] + "\n"
    done = [r for r in AuditLog(station_home / "audit" / "audit.log").records()
            if r["event"] == "export-completed"][-1]
    sums = (out / "SHA256SUMS").read_bytes()
    assert done["sha256sums"] == hashlib.sha256(sums).hexdigest() == res["sha256sums"]
    # the station key that signed, with the keys trusted
    sk = load_signing_key()
    assert sk is not None
    assert f"signer: {station_text(sk.verify_key)}" in (
        out / "evidence" / "station-keys.txt").read_text()
    readme = (out / "README.txt").read_text("utf-8")
    for word in ("证据包", "evidence pack", "sha256sum -c SHA256SUMS", "check_evidence.py",
                 "session.mkv", "seg-NNNNNN.mkv", "evidence/session.json", sdir.name, "INTACT",
                 "complaint 2026-118"):
        assert word in readme, word
    exp = json.loads((out / "export.json").read_text())
    assert exp["reason"] == "complaint 2026-118" and exp["skipped"] == [] and exp["intact"]
    # SHA256SUMS covers every other file, in sha256sum's format
    assert sorted(line.split("  ", 1)[1] for line in sums.decode().splitlines()) == [
        n for n in names if n != "SHA256SUMS"]
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=out).returncode == 0
    # the checker: all holds; another station key, a re-signed-looking manifest, an added file fail
    checker = [sys.executable, str(out / "evidence" / "check_evidence.py")]
    ok = subprocess.run(checker, capture_output=True, text=True)
    assert ok.returncode == 0 and "RESULT: all checks hold" in ok.stdout, ok.stdout + ok.stderr
    assert "sealed file(s) checked" in ok.stdout and " 0 sealed" not in ok.stdout
    other = "ed25519:" + "A" * 43 + "="
    assert subprocess.run([*checker, "--key", other], capture_output=True).returncode == 1
    man = out / "evidence" / "seg-000002.manifest.json"
    obj = json.loads(man.read_bytes())
    obj["stats"] = {"edited": True}
    man.write_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False).encode() + b"\n")
    new_sums = b"".join(
        (hashlib.sha256((out / n).read_bytes()).hexdigest() + "  " + n + "\n").encode()
        for n in names if n != "SHA256SUMS")
    (out / "SHA256SUMS").write_bytes(new_sums)  # even with SHA256SUMS made to match
    bad = subprocess.run(checker, capture_output=True, text=True)
    assert bad.returncode == 1 and "seg-000002.manifest.json: signature does not verify" in (
        bad.stdout), bad.stdout
    (out / "SHA256SUMS").write_bytes(sums)
    man.write_bytes((sdir / man.name).read_bytes())
    (out / "notes.txt").write_text("added later")
    added = subprocess.run(checker, capture_output=True, text=True)
    assert added.returncode == 1 and "notes.txt: not in SHA256SUMS" in added.stdout


@pytest.fixture
def archive(keyring_service: str, station_home: Path, tmp_path: Path) -> tuple[Path, str]:
    assert main(["keys", "init"]) == 0
    assert main(["keys", "archive-new", "--out", str(tmp_path / "arch")]) == 0
    return tmp_path / "arch" / "archive.key", read_recipient_file(tmp_path / "arch" / "archive.pub")


def test_a_session_without_session_json_is_refused_unless_allow_incomplete(
        archive: tuple[Path, str], station_home: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    key, recipient = archive
    d = record(station_home, recipient)
    (d / "session.json").unlink()  # still uploading, or crashed and not recovered
    capsys.readouterr()
    rc = main(["export", SID, "--identity", str(key), "--out", str(tmp_path / "o1"),
               "--reason", "r"])
    err = capsys.readouterr().err
    assert rc == 1 and "no session.json" in err and "--allow-incomplete" in err, err
    assert not (tmp_path / "o1").exists()
    assert "export-started" not in (station_home / "audit" / "audit.log").read_text()
    rc = main(["export", SID, "--identity", str(key), "--out", str(tmp_path / "o2"),
               "--reason", "r", "--allow-incomplete"])
    text = capsys.readouterr().out
    assert rc == 0 and text.startswith("WARNING: verification: NOT INTACT (open)"), text
    assert "WARNING: no session.json" in text
    out = tmp_path / "o2"
    assert (out / "seg-000002.mkv").exists() and not (out / "evidence" / "session.json").exists()
    assert json.loads((out / "verify.json").read_text())["verdict"] == "open"
    assert "no session.json" in (out / "README.txt").read_text()
    chk = subprocess.run([sys.executable, str(out / "evidence" / "check_evidence.py")],
                         capture_output=True, text=True)
    assert chk.returncode == 0 and "NOTE: no session.json" in chk.stdout, chk.stdout


def test_allow_damaged_lists_every_part_it_leaves_out(
        archive: tuple[Path, str], station_home: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A missing segment (manifest and files gone) used to vanish from the export without a
    word; an altered file and a file no manifest lists are left out too, and all three are
    listed: in the result, the human output, export.json, README.txt and the audit record."""
    key, recipient = archive
    d = record(station_home, recipient, segments=4, frames=15)
    for p in d.glob("seg-000002.*"):
        p.unlink()
    media3 = d / "seg-000003.media.drseg"
    media3.write_bytes(media3.read_bytes()[:-1] + b"\xff")
    (d / "seg-000007.oplog.drseg").write_bytes((d / "seg-000001.oplog.drseg").read_bytes())
    capsys.readouterr()
    args = ["export", SID, "--identity", str(key), "--reason", "r", "--allow-damaged"]
    rc = main([*args, "--out", str(tmp_path / "o"), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0
    left = [(s["seq"], s["kind"]) for s in res["skipped"]]
    assert left == [(2, None), (3, "media"), (7, "oplog")], res["skipped"]
    assert "missing" in res["skipped"][0]["why"] and "altered" in res["skipped"][1]["why"]
    assert "not listed" in res["skipped"][2]["why"]
    assert sorted(f for f in res["files"] if f.endswith(".mkv") and "/" not in f) == [
        "seg-000001.mkv", "seg-000004.mkv", "session.mkv"]
    assert any("3 part(s)" in w for w in res["warnings"])
    assert any("gaps" in w and "2, 3" in w for w in res["warnings"]), res["warnings"]
    out = tmp_path / "o"
    assert json.loads((out / "export.json").read_text())["skipped"] == res["skipped"]
    readme = (out / "README.txt").read_text()
    for line in ("segment 2 (all files)", "segment 3 media (seg-000003.media.drseg)",
                 "segment 7 oplog (seg-000007.oplog.drseg)"):
        assert line in readme, line
    recs = AuditLog(station_home / "audit" / "audit.log").records()
    done = [r for r in recs if r["event"] == "export-completed"][-1]
    assert len(done["skipped"]) == 3
    assert len([r for r in recs if r["event"] == "export-started"][-1]["skipped"]) == 3
    rc = main([*args, "--out", str(tmp_path / "o-human")])
    text = capsys.readouterr().out
    assert rc == 0 and "LEFT OUT (not exported):" in text
    for line in ("segment 2 (all files): ", "segment 3 media (seg-000003.media.drseg): altered",
                 "segment 7 oplog (seg-000007.oplog.drseg): not listed"):
        assert line in text, text


def test_a_join_that_fails_says_so_and_exits_5(
        archive: tuple[Path, str], station_home: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Segments that cannot be stream-copied into one file (here: another picture size) leave
    the per-segment files, a warning first in the output, and exit code 5; never a silent 0."""
    key, recipient = archive
    record(station_home, recipient, segments=2, sizes={2: (176, 144)})
    out = tmp_path / "o"
    capsys.readouterr()
    rc = main(["export", SID, "--identity", str(key), "--out", str(out), "--reason", "r"])
    text = capsys.readouterr().out
    assert rc == 5, text
    first = text.splitlines()[0]
    assert first.startswith("WARNING: session.mkv NOT written: segment 2 has other streams"), first
    assert not (out / "session.mkv").exists()
    assert (out / "seg-000001.mkv").exists() and (out / "seg-000002.mkv").exists()
    exp = json.loads((out / "export.json").read_text())
    assert exp["session_mkv"]["written"] is False and "other streams" in exp["session_mkv"]["error"]
    assert "session.mkv NOT written" in (out / "README.txt").read_text()
    done = [r for r in AuditLog(station_home / "audit" / "audit.log").records()
            if r["event"] == "export-completed"][-1]
    assert done["session_mkv"]["written"] is False
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=out).returncode == 0


def test_a_crash_recovered_recording_exports_with_session_mkv_joined_up_to_the_cut(
        station_home: Path, keyring_service: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`station record` killed (SIGKILL) in its third 2 s segment, recovered at the next start:
    the export says RECOVERED first, and session.mkv holds every segment, the last up to its
    cut, with the same frames as the segment files."""
    import os
    import signal
    import time

    st = make_station(station_home, **{"capture.segment_seconds": 2})
    base = [sys.executable, "-m", "station.cli", "record", "--policy", str(st.policy_path),
            "--data-dir", str(st.home), "--fake-devices"]
    proc = subprocess.Popen([*base, "--duration", "60"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert line.startswith("recording "), line
    sid = line.split()[1]
    sdir = station_home / "spool" / sid
    deadline = time.monotonic() + 30
    while not (sdir / "seg-000003.media.drseg").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    again = subprocess.run([*base, "--duration", "1", "--json"], capture_output=True, timeout=60)
    assert sid in json.loads(again.stdout)["recovered"], again.stderr.decode()[-2000:]
    key = tmp_path / "archive.key"
    key.write_text(identity_text(st.identity) + "\n")
    out = tmp_path / "o"
    capsys.readouterr()
    rc = main(["export", sid, "--identity", str(key), "--out", str(out), "--reason", "crash"])
    text = capsys.readouterr().out
    assert rc == 0 and text.startswith("WARNING: verification: RECOVERED after a crash"), text
    assert "session.mkv" in text and "joined up to its cut" in text, text
    segs = sorted(out.glob("seg-*.mkv"))
    assert len(segs) >= 3
    per_seg = Decoded()
    for p in segs:
        per_seg = decode_media(p.read_bytes(), per_seg)
    whole = decode_media((out / "session.mkv").read_bytes())
    assert whole.screen_pts_ms == per_seg.screen_pts_ms and whole.screen_pts_ms[-1] > 4000
    assert whole.camera_pts_ms == per_seg.camera_pts_ms
    joined = _packets(out / "session.mkv")
    assert all(all(b > a for a, b in zip(v, v[1:], strict=False)) for v in joined.values())
    exp = json.loads((out / "export.json").read_text())
    assert exp["verdict"] == "recovered" and "RECOVERED" in (out / "README.txt").read_text()
