"""SIGKILL of `station record` mid-segment: the next start recovers the session and at least
19 s of every stream of a 20 s recording decode from the sealed, truncated segment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.recordkit import decode_media, make_station, oplog_events, plaintext
from tests.test_record_real import make_camera_file, station_cmd

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_sigkill_after_20s_is_recovered_at_restart_and_19s_of_every_stream_decode(
        display: str, audio_sink: object, keyring_service: str, station_home: Path,
        tmp_path: Path) -> None:
    cam = make_camera_file(tmp_path / "camera.mp4", seconds=5)
    st = make_station(station_home, **{"capture.segment_seconds": 60})
    cmd = [a for a in station_cmd(st, "--duration", "60", "--camera", str(cam), "--mic", "pulse",
                                  "--monitor", "1") if a != "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()  # "recording <id> for 60 s" once every stream runs
    assert line.startswith("recording "), (line, proc.stderr.read().decode() if proc.poll() else "")
    session_id = line.split()[1]
    time.sleep(20)
    killed_utc = datetime.now(UTC)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    sdir = station_home / "spool" / session_id
    assert not (sdir / "session.json").exists()

    # restart: `station record` recovers the spool before it records
    again = subprocess.run(station_cmd(st, "--duration", "1", "--fake-devices"), capture_output=True,
                           timeout=60, check=False)
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    out = json.loads(again.stdout)
    assert session_id in out["recovered"] and out["session_id"] != session_id
    assert out["segments"] == 1 and out["stop_code"] == "normal"
    assert set(out["streams"]) == {"screen", "camera", "audio"}
    assert all(s["frames"] > 0 and s["dropped"] == 0 for s in out["streams"].values())
    session = json.loads((sdir / "session.json").read_text())
    assert session["end_reason"] == "crash-recovered" and session["segments"] == 1
    man = json.loads((sdir / "seg-000001.manifest.json").read_text())
    assert man["truncated"] and "media" in man["truncated"]

    data, complete = plaintext(sdir / "seg-000001.media.drseg", st.identity)
    assert not complete  # truncated at the last good message, not silently accepted
    dec = decode_media(data)
    spans = {"screen": (dec.screen_pts_ms[-1] - dec.screen_pts_ms[0]) / 1000,
             "camera": (dec.camera_pts_ms[-1] - dec.camera_pts_ms[0]) / 1000,
             "audio": dec.audio_samples / 48000}
    print(f"\nKILL: decodable after SIGKILL at 20 s: {spans}")
    assert all(v >= 19.0 for v in spans.values()), spans
    assert oplog_events(sdir, st.identity)[0]["kind"] == "session_start"

    # the verdict is its own: recovered, complete up to the last checkpoint, <= ~1 s lost
    ver = subprocess.run([sys.executable, "-m", "station.cli", "verify", "--json", "--policy",
                          str(st.policy_path), "--data-dir", str(st.home), session_id],
                         capture_output=True, text=True, timeout=60)
    res = json.loads(ver.stdout)
    assert ver.returncode == 4 and res["verdict"] == "recovered", res
    rec = res["recovery"]
    until = datetime.fromisoformat(rec["until_utc"].replace("Z", "+00:00"))
    lost = (killed_utc - until).total_seconds()
    print(f"KILL: recovered until {rec['until_utc']}, {lost:.3f} s before the kill; "
          f"kept {rec['kept_s']} s, lost_s_max {rec['lost_s_max']}")
    assert 0 <= lost <= 1.0 + 0.2, lost          # one fragment, plus the kill's own latency
    assert rec["lost_s_max"] <= 1.3 and lost <= rec["lost_s_max"] + 0.2
    assert rec["kept_s"] >= 19.0


def test_record_rejects_a_non_positive_duration_with_a_one_line_error(station_home: Path) -> None:
    r = subprocess.run(["station", "record", "--duration", "0", "--fake-devices", "--json"],
                       capture_output=True, timeout=60, check=False,
                       env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert r.returncode == 1
    assert "--duration 0" in json.loads(r.stdout)["error"] and not (station_home / "spool").exists()


def test_a_recording_lasts_the_duration_asked_even_when_start_is_slow_after_the_gate(
        station_home: Path, keyring_service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from station import logs
    from station.cmd import record
    from station.context import Context

    st = make_station(station_home)
    real_append = logs.AuditLog.append

    def slow_append(self: logs.AuditLog, event: str, **fields: object) -> dict[str, object]:
        if event == "recording_started":  # work start() does after the gate opened
            time.sleep(0.4)
        return real_append(self, event, **fields)

    monkeypatch.setattr(logs.AuditLog, "append", slow_append)
    parser = argparse.ArgumentParser()
    record.configure(parser)
    args = parser.parse_args(["--duration", "1.5", "--fake-devices"])
    args.json = True
    out = record.run(args, Context(data_dir=station_home, policy_path=st.policy_path, json=True))
    assert out["stop_code"] == "normal"
    assert abs(out["duration_s"] - 1.5) <= 0.05, out["duration_s"]
    audio_s = out["streams"]["audio"]["frames"] / 48000
    assert abs(audio_s - 1.5) <= 0.05, audio_s
