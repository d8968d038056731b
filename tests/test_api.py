"""Local API over real HTTP on 127.0.0.1 with the token from the real keyring."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from station.api import LocalApi
from station.flow import FakeRecording, SessionFlow
from station.logs import AuditLog
from station.policy import Policy
from station.secrets import SecretStore


@pytest.fixture
def api(keyring_service, tmp_path):
    secrets = SecretStore()
    made: list[FakeRecording] = []

    def factory(**kw):
        made.append(FakeRecording(**kw))
        return made[-1]

    audit = AuditLog(tmp_path / "audit.log")
    flow = SessionFlow(Policy.defaults(), factory, agent="agent7", audit=audit)
    server = LocalApi(flow, secrets.api_token(), secrets.customer_salt(), audit=audit).start()
    server.made = made
    server.token = secrets.api_token()
    yield server
    server.close()


def call(api, method, path, body=None, token="ok", raw=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = "Bearer " + (api.token if token == "ok" else token)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    out = json.loads(resp.read() or b"null")
    conn.close()
    return resp.status, out


def test_session_over_the_api_returns_only_masked_customer_details(api):
    status, out = call(api, "POST", "/sessions", {"customer": {"number": "13812345678", "name": "张三",
                                                               "id_number": "110101199003071234"},
                                                  "business_ref": "CRM-4711"})
    assert status == 201, out
    assert out["customer"] == {"number": "138****5678", "name": "张*", "id_number": "110***********1234"}
    sid = out["session_id"]
    assert call(api, "POST", f"/sessions/{sid}/consent", {"agreed": True})[0] == 200
    assert call(api, "POST", "/sessions/current/steps", {"step": "identity_shown"})[0] == 200
    assert call(api, "POST", f"/sessions/{sid}/markers", {"kind": "crm", "label": "order 13812345678",
                                                          "fields": {"screen": "quote"}})[0] == 200
    assert call(api, "POST", f"/sessions/{sid}/pause", {"reason": "card number"})[0] == 200
    status, snap = call(api, "GET", "/status")
    assert snap["state"] == "paused" and snap["customer_display"] == "张*  138****5678  110***********1234"
    assert call(api, "POST", f"/sessions/{sid}/resume")[0] == 200
    status, out = call(api, "POST", f"/sessions/{sid}/stop")
    assert status == 200 and out["state"] == "stopped"
    rec = api.made[0]
    everything = json.dumps([rec.customer.as_manifest(), rec.events, snap], ensure_ascii=False)
    for full in ("13812345678", "张三", "110101199003071234"):
        assert full not in everything
    crm = [d for k, d in rec.events if k == "marker" and d["kind"] == "crm"]
    assert crm and crm[0]["label"].startswith("order ") and crm[0]["x_screen"] == "quote"


@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_wrong_or_missing_token_gets_401_and_an_audit_line(api, token):
    status, out = call(api, "POST", "/sessions", {"customer": {"number": "13812345678"}}, token=token)
    assert status == 401 and "token" in out["error"]
    assert api.made == []
    last = api.audit.records()[-1]
    assert last["event"] == "api_unauthorized" and last["path"] == "/sessions"
    assert "13812345678" not in api.audit.path.read_text()


@pytest.mark.parametrize(("raw", "message"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b"\xff\xfe", "not UTF-8"),
    (json.dumps({"customer": {"number": "abc13812345678"}}).encode(), "customer field 'number'"),
    (json.dumps({"customer": "13812345678"}).encode(), "expected an object"),
    (json.dumps({"business_ref": 5}).encode(), "must be a string"),
    (json.dumps({"colour": "red"}).encode(), "unknown field 'colour'"),
])
def test_malformed_bodies_get_400_with_a_message_and_start_nothing(api, raw, message):
    status, out = call(api, "POST", "/sessions", raw=raw)
    assert status == 400 and message in out["error"]
    assert "13812345678" not in out["error"]
    assert api.made == [] and api.flow.state == "idle"


def raw_request(api, head: str, body: bytes = b"") -> tuple[int, dict]:
    import socket

    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1] or b"null")


@pytest.mark.parametrize("length", ["-5", "-1", " -0x10", "+-3"])
def test_a_negative_or_odd_content_length_is_400_and_starts_nothing(api, length):
    head = (f"POST /sessions HTTP/1.1\nHost: x\nAuthorization: Bearer {api.token}\n"
            f"Content-Length: {length}\nConnection: close\n")
    status, out = raw_request(api, head, b'{"business_ref": "x"}')
    assert status == 400 and "Content-Length" in out["error"], out
    assert api.made == [] and api.flow.state == "idle"


def test_deeply_nested_json_is_400_not_500(api):
    body = b'{"customer": ' + b"[" * 8000 + b"]" * 8000 + b"}"  # within the 16 KiB limit
    status, out = call(api, "POST", "/sessions", raw=body)
    assert status == 400 and "nested" in out["error"], out
    assert api.made == [] and api.flow.state == "idle"
    assert call(api, "GET", "/status")[0] == 200  # the server is still there


def test_wrong_state_unknown_path_and_wrong_session_get_their_own_status(api):
    assert call(api, "POST", "/sessions/current/pause", {"reason": "x"})[0] == 409
    assert call(api, "GET", "/nope")[0] == 404
    assert call(api, "GET", "/sessions")[0] == 405
    assert call(api, "POST", "/sessions")[0] == 201
    assert call(api, "POST", "/sessions/20990101T000000Z-deadbeef/stop")[0] == 404
    assert call(api, "POST", "/sessions/current/pause", {})[0] == 400
    assert call(api, "POST", "/sessions/current/markers", {"kind": "Bad Kind"})[0] == 400
    assert call(api, "POST", "/sessions/current/stop", raw=b"x" * 20000)[0] == 413
    assert api.flow.state == "consent"


def test_refused_requests_are_audited_at_most_once_a_second_and_without_customer_data(api):
    for _ in range(20):
        assert call(api, "GET", "/sessions/13812345678/stop", token="bad")[0] == 401
    lines = [r for r in api.audit.records() if r["event"] == "api_unauthorized"]
    assert 1 <= len(lines) <= 3
    assert "13812345678" not in api.audit.path.read_text()
    time.sleep(1.05)
    call(api, "GET", "/status", token="bad")
    last = api.audit.records()[-1]
    assert last["event"] == "api_unauthorized" and last["suppressed_before"] >= 17


def test_a_stopped_session_answers_409_not_404(api):
    status, out = call(api, "POST", "/sessions", {})
    sid = out["session_id"]
    assert call(api, "POST", f"/sessions/{sid}/stop")[0] == 200
    assert call(api, "POST", f"/sessions/{sid}/stop")[0] == 409


def test_a_busy_port_is_a_clear_error(api):
    from station.api import ApiPortBusy

    with pytest.raises(ApiPortBusy, match=f"127.0.0.1:{api.port}.*another station"):
        LocalApi(api.flow, "t", b"s", port=api.port)
