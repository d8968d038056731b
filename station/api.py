"""Local HTTP API for the softphone / CRM (CTI) and the ``station api`` CLI.

Served on 127.0.0.1 only, port ``api.port``; every request carries
``Authorization: Bearer <token>`` with the token from the keyring
(:meth:`~station.secrets.SecretStore.api_token`). Requests and responses are JSON (UTF-8).

========  ================================  =====================================================
method    path                              body -> result
========  ================================  =====================================================
GET       /status                           -> state, session id, masked customer, elapsed, ...
POST      /sessions                         ``{"customer": {"number", "name", "id_number"},
                                            "business_ref", "agent"}`` (all optional)
                                            -> 201 ``{"session_id", "state", "customer"}``
POST      /sessions/{id}/consent            ``{"agreed": true|false}``
POST      /sessions/{id}/steps              ``{"step": "risk_disclosure_read"}``
POST      /sessions/{id}/markers            ``{"kind": "crm", "label": "...", "fields": {...}}``
POST      /sessions/{id}/pause              ``{"reason": "customer reads card number"}``
POST      /sessions/{id}/resume             -
POST      /sessions/{id}/stop               -> the recording's summary
========  ================================  =====================================================

``{id}`` may be ``current``. Errors: 400 malformed body (with a message that never repeats a
customer value), 401 wrong or missing token (and an ``api_unauthorized`` audit line), 404
unknown path or session, 405 wrong method, 409 not allowed in the current state, 413 body too
large. Customer details are shielded (:mod:`station.shield`) before anything else sees them.

Example for a softphone hook (shell)::

    TOKEN=$(python -c 'from station.secrets import SecretStore; print(SecretStore().api_token())')
    curl -s -X POST http://127.0.0.1:8765/sessions -H "Authorization: Bearer $TOKEN" \\
         -d '{"customer": {"number": "13812345678"}, "business_ref": "CRM-4711"}'
"""

from __future__ import annotations

import hmac
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from station import logs
from station.errors import StationError, StopCode
from station.flow import BadRequest, SessionFlow
from station.shield import ShieldError, redact, shield

log = logs.get("api")
MAX_BODY_BYTES = 16 * 1024
_ID = r"(?P<sid>[A-Za-z0-9_.-]{1,80})"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"/status"), "status"),
    ("POST", re.compile(r"/sessions"), "start"),
    ("POST", re.compile(rf"/sessions/{_ID}/consent"), "consent"),
    ("POST", re.compile(rf"/sessions/{_ID}/steps"), "step"),
    ("POST", re.compile(rf"/sessions/{_ID}/markers"), "marker"),
    ("POST", re.compile(rf"/sessions/{_ID}/pause"), "pause"),
    ("POST", re.compile(rf"/sessions/{_ID}/resume"), "resume"),
    ("POST", re.compile(rf"/sessions/{_ID}/stop"), "stop"),
]


class ApiPortBusy(StationError, OSError):
    """cannot serve the local API on 127.0.0.1:{}: {} (is another station running? policy api.port)"""


class ApiError(StationError):
    """{}"""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = status


def _str(body: dict[str, Any], key: str, limit: int = 200, required: bool = False) -> str:
    value = body.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise BadRequest(f"{key!r} must be a string")
    if required and not value.strip():
        raise BadRequest(f"{key!r} is required")
    if len(value) > limit:
        raise BadRequest(f"{key!r} is longer than {limit} characters")
    return value


class LocalApi:
    """The HTTP server around a :class:`~station.flow.SessionFlow`."""

    def __init__(self, flow: SessionFlow, token: str, salt: bytes, *, port: int = 0,
                 audit: logs.AuditLog | None = None, host: str = "127.0.0.1") -> None:
        self.flow, self.audit = flow, audit
        self._token = token.encode()
        self._salt = salt
        api = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "DualRecStation"
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                api._handle(self, "GET")

            def do_POST(self) -> None:
                api._handle(self, "POST")

            def do_PUT(self) -> None:
                api._handle(self, "PUT")

            def do_DELETE(self) -> None:
                api._handle(self, "DELETE")

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s %s", self.address_string(), format % args)

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ApiPortBusy(port, exc.strerror or exc) from None
        self._audit_lock = threading.Lock()
        self._last_audit_s = -1e9
        self._suppressed = 0
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalApi:
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="local-api",
                                        daemon=True)
        self._thread.start()
        log.info("local API on %s", self.url)
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(5)
            self._thread = None
        self.server.server_close()

    # --- request handling --------------------------------------------------------------------
    def _authorised(self, req: BaseHTTPRequestHandler) -> bool:
        header = req.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        path = req.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if not self._authorised(req):
                self._drain(req)
                self._audit_unauthorised(req, method, redact(path[:100]))
                raise ApiError(401, "missing or wrong bearer token")
            route, sid = self._route(method, path)
            body = self._body(req) if method == "POST" else {}
            status, result = self._dispatch(route, sid, body)
        except ApiError as exc:
            status, result = exc.http_status, {"error": str(exc)}
        except ShieldError as exc:
            status, result = 400, {"error": str(exc)}
        except StationError as exc:
            status, result = int(getattr(exc, "http_status", 500)), {"error": str(exc)}
        except Exception as exc:
            log.exception("local API %s %s failed", method, path[:100])
            status, result = 500, {"error": f"internal error: {type(exc).__name__}"}
        self._send(req, status, result)

    def _audit_unauthorised(self, req: BaseHTTPRequestHandler, method: str, path: str) -> None:
        """One audit line per refused request, at most one per second: a client hammering the
        API with bad tokens cannot flood the (fsync'ed) audit log; the next line counts the rest."""
        now = time.monotonic()
        with self._audit_lock:
            if now - self._last_audit_s < 1.0:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._last_audit_s = self._suppressed, 0, now
        log.warning("401 %s %s", method, path)
        if self.audit:
            self.audit.append("api_unauthorized", method=method, path=path, remote=req.client_address[0],
                              why="missing token" if not req.headers.get("Authorization") else "wrong token",
                              suppressed_before=suppressed)

    def _route(self, method: str, path: str) -> tuple[str, str | None]:
        allowed = False
        for m, pattern, name in ROUTES:
            match = pattern.fullmatch(path)
            if match:
                if m == method:
                    return name, match.groupdict().get("sid")
                allowed = True
        if allowed:
            raise ApiError(405, f"{method} is not allowed on {path}")
        raise ApiError(404, f"no such endpoint: {redact(path[:100])}")

    def _drain(self, req: BaseHTTPRequestHandler) -> None:
        try:
            n = int(req.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if 0 < n <= MAX_BODY_BYTES:
            req.rfile.read(n)
        elif n:
            req.close_connection = True

    def _body(self, req: BaseHTTPRequestHandler) -> dict[str, Any]:
        raw_len = req.headers.get("Content-Length")
        if raw_len is None:
            if req.headers.get("Transfer-Encoding"):
                req.close_connection = True
                raise ApiError(400, "send the body with a Content-Length (chunked is not supported)")
            return {}
        try:
            n = int(raw_len)
        except ValueError:
            n = -1
        if n < 0:  # a negative length is not "no body": refuse, never act on a default
            req.close_connection = True
            raise ApiError(400, f"bad Content-Length {raw_len[:20]!r}")
        if n > MAX_BODY_BYTES:
            req.close_connection = True
            raise ApiError(413, f"body larger than {MAX_BODY_BYTES} bytes")
        data = req.rfile.read(n) if n > 0 else b""
        if not data.strip():
            return {}
        try:
            body = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise ApiError(400, "body is not UTF-8") from None
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"body is not valid JSON: {exc.msg} at line {exc.lineno} "
                                f"column {exc.colno}") from None
        except RecursionError:
            raise ApiError(400, "body is nested too deeply") from None
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object")
        return body

    def _send(self, req: BaseHTTPRequestHandler, status: int, result: Any) -> None:
        payload = json.dumps(result, ensure_ascii=False, default=str).encode("utf-8")
        try:
            req.send_response(status)
            req.send_header("Content-Type", "application/json; charset=utf-8")
            req.send_header("Content-Length", str(len(payload)))
            req.send_header("Cache-Control", "no-store")
            if status == 401:
                req.send_header("WWW-Authenticate", 'Bearer realm="dualrec-station"')
            req.end_headers()
            req.wfile.write(payload)
        except OSError:
            log.debug("client went away before the answer", exc_info=True)

    def _sid(self, sid: str | None) -> str | None:
        return None if sid in (None, "current") else sid

    def _dispatch(self, route: str, sid: str | None, body: dict[str, Any]) -> tuple[int, Any]:
        flow = self.flow
        if route == "status":
            snap = flow.snapshot()
            snap.pop("consent_text", None)
            snap["health"] = {k: v for k, v in flow.health.items() if k != "camera_thumbnail"}
            return 200, snap
        if route == "start":
            unknown = sorted(set(body) - {"customer", "business_ref", "agent"})
            if unknown:
                raise BadRequest(f"unknown field {unknown[0]!r}; allowed: customer, business_ref, agent")
            customer = shield(body.get("customer"), self._salt)
            ref, agent = _str(body, "business_ref", 128), _str(body, "agent", 64)
            session_id = flow.start(customer=customer, business_ref=ref, agent=agent.strip(), source="api")
            return 201, {"session_id": session_id, "state": str(flow.state), "customer": customer.masked}
        s = self._sid(sid)
        if route == "consent":
            agreed = body.get("agreed")
            if not isinstance(agreed, bool):
                raise BadRequest("'agreed' must be true or false")
            flow._check_id(s)
            if agreed:
                flow.agree()
            else:
                flow.refuse()
        elif route == "step":
            flow._check_id(s)
            flow.tick(_str(body, "step", 64, required=True))
        elif route == "marker":
            fields = body.get("fields") or {}
            if not isinstance(fields, dict) or not all(
                    isinstance(v, (str, int, float, bool)) for v in fields.values()):
                raise BadRequest("'fields' must be an object of strings, numbers or booleans")
            kind = _str(body, "kind", 40) or "marker"
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", kind):
                raise BadRequest("'kind' must be lower-case letters, digits and _ (at most 40)")
            flow.marker(kind, _str(body, "label", 200), session_id=s,
                        **{f"x_{k}"[:40]: v for k, v in fields.items()})
        elif route == "pause":
            flow.pause(_str(body, "reason", 200, required=True), session_id=s)
        elif route == "resume":
            flow.resume(session_id=s)
        elif route == "stop":
            summary = flow.stop(StopCode.NORMAL, session_id=s)
            return 200, {"state": str(flow.state), "summary": summary}
        return 200, {"state": str(flow.state)}
