"""No customer data in anything written in clear, on any path (issue: nothing leaked).

Sessions are started the three ways agents start them, each carrying a customer's mobile number,
ID number and name wherever a value can be typed: from the CLI (``--business-ref``), over the
local API (customer, business reference, CRM marker label and fields, pause reason) and from the
agent window (pause reason). Everything is recorded for real (fake capture devices, the real
pipeline), uploaded to a real S3 server (SeaweedFS), and then every byte the station wrote in
clear is searched: every file in the data dir (spool, manifests, session.json, checkpoints,
journal, audit, logs), the command's output, and in the bucket every object key, every object's
metadata and every object's bytes. The sealed operation logs must still carry the masked forms
(the values did go through, masked).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path

import pytest

from station.app import App
from station.cli import main
from station.context import Context
from station.secrets import STORAGE_ACCESS_KEY, STORAGE_SECRET_KEY, SecretStore
from tests.recordkit import make_station, plaintext
from tests.test_ui_agent import SMALL, click, make_gui, wait_state

pytestmark = [pytest.mark.e2e, pytest.mark.gui, pytest.mark.integration]

NUMBER, ID_NUMBER, NAME = "13812345678", "110101199003074578", "张三丰"
NEEDLES = [NUMBER.encode(), ID_NUMBER.encode(), NAME.encode("utf-8"),
           json.dumps(NAME).strip('"').encode(),  # JSON with ensure_ascii
           NAME.encode("utf-16-le"), NUMBER.encode("utf-16-le")]
LOADED = f"客户 {NAME} 手机 {NUMBER} 身份证 {ID_NUMBER}"


def hits(data: bytes) -> list[str]:
    """Each needle found, with the text around it (to name the field that leaks)."""
    found = []
    for n in NEEDLES:
        i = data.find(n)
        if i >= 0:
            found.append(data[max(0, i - 80): i + len(n) + 20].decode("utf-8", "replace"))
    return found


def api_call(app: App, method: str, path: str, body: object = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", app.api.port, timeout=30)
    conn.request(method, path, body=None if body is None else json.dumps(body, ensure_ascii=False).encode(),
                 headers={"Authorization": "Bearer " + app.ctx.secrets.api_token()})
    resp = conn.getresponse()
    out = json.loads(resp.read() or b"null")
    conn.close()
    return resp.status, out


def test_sessions_from_cli_api_and_window_leave_no_customer_value_in_clear_on_seat_or_bucket(
        qtbot, display: str, station_home: Path, keyring_service: str, s3, s3_bucket: str) -> None:
    st = make_station(station_home, **{**SMALL, "api.enabled": True, "storage.kind": "s3",
                                       "storage.s3_endpoint": s3.endpoint,
                                       "storage.s3_bucket": s3_bucket, "storage.s3_prefix": "site1"})
    secrets = SecretStore()
    secrets.set(STORAGE_ACCESS_KEY, s3.access_key)
    secrets.set(STORAGE_SECRET_KEY, s3.secret_key)
    outputs = b""

    # 1. the CLI
    cli = subprocess.run([sys.executable, "-m", "station.cli", "record", "--json", "--fake-devices",
                          "--duration", "2", "--policy", str(st.policy_path), "--data-dir",
                          str(station_home), "--business-ref", LOADED],
                         capture_output=True, timeout=120, check=False)
    assert cli.returncode == 0, cli.stderr.decode()[-3000:]
    outputs += cli.stdout + cli.stderr
    cli_sid = json.loads(cli.stdout)["session_id"]

    # 2. the local API and 3. the window, in the running station
    ctx = Context(data_dir=station_home, policy_path=st.policy_path)
    app = App(ctx, fake_devices=True, desktop=False, upload=False, api_port=0).start()
    try:
        gui = make_gui(qtbot, app)
        status, out = api_call(app, "POST", "/sessions", {
            "customer": {"number": NUMBER, "name": NAME, "id_number": ID_NUMBER},
            "business_ref": f"保单 {ID_NUMBER} {NUMBER}"})
        assert status == 201, out
        api_sid = out["session_id"]
        assert api_call(app, "POST", f"/sessions/{api_sid}/consent", {"agreed": True})[0] == 200
        wait_state(qtbot, gui, "recording")
        assert api_call(app, "POST", f"/sessions/{api_sid}/markers", {
            "kind": "crm", "label": f"回拨 {NUMBER}", "fields": {"id": ID_NUMBER, "who": NAME}})[0] == 200
        assert api_call(app, "POST", f"/sessions/{api_sid}/pause", {"reason": LOADED})[0] == 200
        assert api_call(app, "POST", f"/sessions/{api_sid}/resume")[0] == 200
        qtbot.wait(1200)
        assert api_call(app, "POST", f"/sessions/{api_sid}/stop")[0] == 200
        wait_state(qtbot, gui, "stopped", timeout=60000)

        w = gui.window
        click(qtbot, w.start_button)
        wait_state(qtbot, gui, "consent")
        click(qtbot, w.agree_button)
        wait_state(qtbot, gui, "recording")
        w.pause_reason.setText(LOADED)  # typed through an input method (QTest types Latin only)
        click(qtbot, w.pause_button)
        wait_state(qtbot, gui, "paused")
        click(qtbot, w.resume_button)
        wait_state(qtbot, gui, "recording")
        qtbot.wait(1200)
        click(qtbot, w.stop_button)
        wait_state(qtbot, gui, "stopped", timeout=60000)
        ui_sid = app.flow.last_session_id
    finally:
        app.close()
    sids = [cli_sid, api_sid, ui_sid]
    assert len(set(sids)) == 3

    # the values went in, masked, to the sealed operation logs only
    oplog = b"".join(plaintext(f, st.identity)[0]
                     for sid in sids for f in sorted((ctx.spool_dir / sid).glob("*.oplog.drseg")))
    # (numbers are masked everywhere; a name typed in free text is not recognisable as one, and may
    # stay in the sealed log, which only reviewers open; it must not reach anything in clear)
    assert b"138****5678" in oplog and NUMBER.encode() not in oplog and ID_NUMBER.encode() not in oplog

    assert main(["upload", "--drain", "--policy", str(st.policy_path), "--data-dir", str(station_home)]) == 0

    # every file the station wrote on the seat (the spool is purged after upload; what is left:
    # journal, audit, logs, policy, any leftovers)
    seen = 0
    for f in station_home.rglob("*"):
        if f.is_file():
            seen += 1
            assert not hits(f.read_bytes()), (f, hits(f.read_bytes()))
    assert seen >= 3 and (station_home / "journal.sqlite").is_file()
    assert not hits(outputs), hits(outputs)

    # the bucket: keys, metadata, bytes
    client = s3.client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
            for o in page.get("Contents", [])]
    for sid in sids:
        assert any(f"{sid}/session.json" in k for k in keys), (sid, keys)
    for key in keys:
        assert not hits(key.encode()), key
        obj = client.get_object(Bucket=s3_bucket, Key=key)
        meta = json.dumps(obj["Metadata"], ensure_ascii=False).encode()
        assert not hits(meta), (key, obj["Metadata"])
        body = obj["Body"].read()
        assert not hits(body), (key, hits(body))
