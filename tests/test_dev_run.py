"""`./dev run`'s entry point, `station run --demo`, as a real subprocess on the test display:
the window opens and is visible on a screenshot; the CLI drives a session with a customer number
through the local API; nothing under the data dir, in the logs or in the decrypted operation log
holds the full number or name."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from station.crypto.keys import read_identity_file
from tests.recordkit import plaintext
from tests.services import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.gui]
STATION = str(Path(sys.executable).parent / "station")
NUMBER, NAME, ID_NUMBER = "13812345678", "张三丰", "110101199003071234"


def read_json_line(proc: subprocess.Popen, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            for line in buf.splitlines():
                if line.startswith(b"{"):
                    return json.loads(line)
        if proc.poll() is not None:
            break
    err = proc.stderr.read().decode(errors="replace")[-3000:] if proc.poll() is not None else ""
    raise AssertionError(f"no window announcement; exit {proc.poll()}; stderr: {err}")


def ocr(img_bgr: np.ndarray) -> str:
    import cv2

    big = cv2.resize(img_bgr, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    ok, png = cv2.imencode(".png", big)
    assert ok
    out = subprocess.run(["tesseract", "stdin", "stdout", "-l", "eng", "--psm", "7"], input=png.tobytes(),
                         capture_output=True, timeout=60, check=True)
    return out.stdout.decode("utf-8", "replace")


def cli(home: Path, port: int, *args: str, stdin: str | None = None,
        json_out: bool = False) -> subprocess.CompletedProcess:
    flags = ["--json"] if json_out else []
    return subprocess.run([STATION, "api", *flags, "--data-dir", str(home), "--port", str(port), *args],
                          input=stdin, capture_output=True, text=True, timeout=120)


def test_station_run_demo_opens_a_visible_window_and_keeps_customer_identifiers_off_disk(
        display, station_home, keyring_service, tmp_path):
    import mss

    port = free_port()
    env = {**os.environ, "LANG": "en_US.UTF-8"}
    proc = subprocess.Popen([STATION, "run", "--demo", "--announce", "--lang", "en", "--api-port", str(port),
                             "--no-desktop-log"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        info = read_json_line(proc, 60)
        assert info["object"] == "agentWindow" and info["title"] == "DualRec Station"
        assert info["banner"] == "NOT RECORDING" and info["api_port"] == port
        # the demo set itself up: archive key pair and a policy naming it
        demo = station_home / "demo"
        assert (demo / "archive.key").stat().st_mode & 0o077 == 0
        assert read_identity_file(demo / "archive.key")
        demo_policy = (demo / "policy.toml").read_text()
        assert "crypto" in demo_policy and "DEMO ONLY" in demo_policy

        x, y, w, h = info["geometry"]
        time.sleep(0.5)
        with mss.MSS() as sct:
            shot = sct.grab({"left": x, "top": y, "width": w, "height": h})
        img = np.frombuffer(shot.raw, np.uint8).reshape(shot.height, shot.width, 4)[..., :3]
        assert img.std() > 20, "the screenshot of the window is blank"
        redmask = np.abs(img.astype(int) - [0x28, 0x28, 0xC6]).sum(axis=2) < 40  # BGR of #c62828
        red = redmask.mean()
        assert red > 0.04, f"the red idle banner covers only {red:.1%} of the window"
        ys, xs = np.nonzero(redmask)
        banner = img[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        # white text on the red banner -> black on white for the OCR
        binary = np.where((banner.min(axis=2) > 200)[..., None], 0, 255).astype(np.uint8).repeat(3, axis=2)
        text = ocr(binary)
        assert "NOT RECORDING" in text.upper(), text

        r = cli(station_home, port, "start", "--customer", "-", "--ref", "CRM-4711",
                stdin=json.dumps({"number": NUMBER, "name": NAME, "id_number": ID_NUMBER}))
        assert r.returncode == 0, r.stderr
        assert "138****5678" in r.stdout and NUMBER not in r.stdout
        assert cli(station_home, port, "consent", "agree").returncode == 0
        assert cli(station_home, port, "marker", "crm", f"callback {NUMBER}").returncode == 0
        status = cli(station_home, port, "status", json_out=True)
        snap = json.loads(status.stdout)
        assert snap["state"] == "recording"
        assert snap["customer_display"] == "张**  138****5678  110***********1234"
        time.sleep(1.0)
        r = cli(station_home, port, "stop")
        assert r.returncode == 0 and "normal" in r.stdout, r.stderr
        bad = subprocess.run([STATION, "api", "--data-dir", str(station_home), "--port", str(port), "status"],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "STATION_KEYRING_SERVICE": keyring_service + "-other"})
        assert bad.returncode != 0 and ("401" in bad.stderr or "local-api-token" in bad.stderr)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]

    # grep everything: data dir (spool, store, journal, audit, logs), process output, and the
    # decrypted operation log
    identity = read_identity_file(station_home / "demo" / "archive.key")[0]
    needles = [s.encode("utf-8") for s in (NUMBER, NAME, ID_NUMBER)]
    oplogs = []
    for f in station_home.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert not any(n in data for n in needles), f"full identifier found in {f}"
            if f.name.endswith(".oplog.drseg"):
                oplogs.append(plaintext(f, identity)[0])
    assert not any(n in out + err for n in needles)
    assert oplogs and b"138****5678" in b"".join(oplogs)
    assert not any(n in b"".join(oplogs) for n in needles)
    assert b'"marker": "crm"' in b"".join(oplogs)
    manifests = [json.loads(f.read_text()) for f in station_home.rglob("session.json")]
    assert manifests, "no sealed session manifest"
    import getpass

    for m in manifests:
        assert m["agent"] == getpass.getuser() and "business_ref" not in m["meta"]
        assert m["meta"]["business_ref_hash"].startswith("hs256:")  # CRM-4711: in the sealed op log
        # clear-text manifest: only the salted link hash (the masked forms are in the sealed op log)
        assert m["meta"]["customer"]["hash"].startswith("hs256:")
        assert "138****5678" not in json.dumps(m, ensure_ascii=False)


def test_station_run_without_a_display_fails_with_a_message_and_creates_nothing(station_home):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    out = subprocess.run([STATION, "run", "--demo"], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 1 and "no display" in out.stderr
    assert not (station_home / "demo").exists()


def test_station_run_killed_mid_session_recovers_it_at_the_next_start_and_tells_the_agent(
        display, station_home, keyring_service, tmp_path):
    """SIGKILL `station run` during a call: the next start recovers the session before anything
    records or uploads, writes the audit event, says so in the window, and the session verifies
    as recovered (not intact, not open) wherever it now lies (spool or the local store)."""
    port = free_port()
    env = {**os.environ, "LANG": "en_US.UTF-8"}
    argv = [STATION, "run", "--demo", "--announce", "--lang", "en", "--api-port", str(port),
            "--no-desktop-log"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        info = read_json_line(proc, 60)
        assert info["notice"] is None
        assert cli(station_home, port, "start", "--ref", "CRM-1").returncode == 0
        assert cli(station_home, port, "consent", "agree").returncode == 0
        snap = json.loads(cli(station_home, port, "status", json_out=True).stdout)
        assert snap["state"] == "recording"
        sid = snap["session_id"]
        time.sleep(4.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert not (station_home / "spool" / sid / "session.json").exists()

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        info = read_json_line(proc, 60)
        assert info["notice"] and "interrupted at" in info["notice"] and " kept" in info["notice"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    events = [json.loads(x) for x in (station_home / "audit" / "audit.log").read_text().splitlines()]
    assert [e["session"] for e in events if e["event"] == "session-recovered"] == [sid]
    ver = subprocess.run([STATION, "verify", "--json", "--data-dir", str(station_home), "--policy",
                          str(station_home / "demo" / "policy.toml"), sid],
                         capture_output=True, text=True, timeout=60, env=env)
    res = json.loads(ver.stdout)
    assert ver.returncode == 4 and res["verdict"] == "recovered", (ver.returncode, res.get("problems"))
    assert res["recovery"]["kept_s"] >= 2.0
