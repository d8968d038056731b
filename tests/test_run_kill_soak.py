"""SIGKILL of the agent station (`station run`) at 5 random moments during sessions.

Each round starts `station run` (window on Xvfb, fake capture devices, upload in the background
to a real S3 server, SeaweedFS), starts a session over the local API as a CTI would, lets it record
for a random 1-7 s (2 s segments, so kills land inside segments and at rotations) and kills the
process with SIGKILL. The next start must recover the killed session before anything else, tell
the agent, and upload it. After the last round, every killed session lies in the bucket, verifies
there as ``recovered`` (signed recovery record), and lost at most 1 s: the time between the kill
and the last second recovery vouched for. The figures are printed (`-s` shows them).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from station.secrets import STORAGE_ACCESS_KEY, STORAGE_SECRET_KEY, SecretStore
from tests.recordkit import make_station
from tests.services import free_port
from tests.test_dev_run import STATION, cli, read_json_line

pytestmark = [pytest.mark.e2e, pytest.mark.gui, pytest.mark.integration]
KILLS = 5


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_five_random_sigkills_of_station_run_are_recovered_uploaded_and_lose_under_a_second(
        display: str, station_home: Path, keyring_service: str, s3, s3_bucket: str) -> None:
    seed = int(os.environ.get("STATION_TEST_SEED") or time.time())
    rnd = random.Random(seed)
    st = make_station(station_home, **{
        "capture.profile": "custom", "capture.screen_width": 640, "capture.screen_height": 360,
        "capture.screen_fps": 10, "capture.camera_width": 320, "capture.camera_height": 240,
        "capture.camera_fps": 10, "capture.segment_seconds": 2, "storage.kind": "s3",
        "storage.s3_endpoint": s3.endpoint, "storage.s3_bucket": s3_bucket,
        "storage.s3_prefix": "soak", "upload.during_call": "run"})
    secrets = SecretStore()
    secrets.set(STORAGE_ACCESS_KEY, s3.access_key)
    secrets.set(STORAGE_SECRET_KEY, s3.secret_key)
    env = {**os.environ, "LANG": "en_US.UTF-8", "STATION_POLICY": str(st.policy_path)}
    port = free_port()
    argv = [STATION, "run", "--devices", "fake", "--announce", "--lang", "en", "--api-port", str(port),
            "--no-desktop-log", "--data-dir", str(station_home)]

    killed: dict[str, datetime] = {}
    notices: list[str | None] = []
    for _round in range(KILLS + 1):
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            info = read_json_line(proc, 90)
            notices.append(info["notice"])
            if _round == KILLS:
                break
            r = cli(station_home, port, "start", "--ref", f"SOAK-{_round}")
            assert r.returncode == 0, r.stderr
            assert cli(station_home, port, "consent", "agree").returncode == 0
            snap = json.loads(cli(station_home, port, "status", json_out=True).stdout)
            assert snap["state"] == "recording", snap
            time.sleep(rnd.uniform(1.0, 7.0))
            killed[snap["session_id"]] = datetime.now(UTC)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
            err = proc.communicate()[1].decode(errors="replace")[-3000:]
            print(f"seed {seed}; station stderr:\n{err}", file=sys.stderr)
            raise
    # the last start: it recovered the fifth session; wait until everything is in the bucket
    client = s3.client()
    try:
        deadline = time.monotonic() + 120
        while True:
            keys = {o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
                    for o in page.get("Contents", [])}
            done = [sid for sid in killed if any(k.endswith(f"/{sid}/session.json") for k in keys)]
            if len(done) == KILLS or time.monotonic() > deadline:
                break
            time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert sorted(done) == sorted(killed), f"seed {seed}: uploaded {done} of {list(killed)}"

    # each restart told the agent about the session killed just before it
    assert notices[0] is None
    for n in notices[1:]:
        assert n and "interrupted at" in n and " kept" in n, notices

    rows = []
    for sid, at in killed.items():
        ver = subprocess.run([STATION, "verify", "--json", "--remote", "--data-dir", str(station_home), sid],
                             capture_output=True, text=True, timeout=120, env=env)
        res = json.loads(ver.stdout)
        assert ver.returncode == 4 and res["verdict"] == "recovered", (seed, sid, res.get("problems"))
        rec = res["recovery"]
        lost = (at - _utc(rec["until_utc"])).total_seconds()
        rows.append((sid, rec["kept_s"], lost, rec["lost_s_max"]))
    print(f"\nseed {seed}: {KILLS} SIGKILLs of `station run`, all recovered by the next start and uploaded")
    for sid, kept, lost, lost_max in rows:
        print(f"  {sid}: kept {kept:.2f} s, lost {lost:.2f} s before the kill (checkpoint gap max {lost_max:.2f} s)")
    assert all(lost <= 1.0 for _s, _k, lost, _m in rows), (seed, rows)
    assert all(kept >= 0.5 for _s, kept, _l, _m in rows), (seed, rows)
