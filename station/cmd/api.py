"""station api start|consent|step|marker|pause|resume|stop|status: a client of the local API.

Talks to the running station on 127.0.0.1 (port from policy ``api.port`` or ``--port``) with the
bearer token from the keyring. Customer details can be read from standard input as JSON
(``--customer -``) so they do not show in the process list or the shell history.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
from typing import Any

from station.context import Context
from station.errors import StationError, UsageError

HELP = "control the running station through its local API (start, marker, pause, resume, stop, status)"


class ApiCallFailed(StationError, RuntimeError):
    """local API answered {}: {}"""


class ApiUnreachable(StationError, ConnectionError):
    """the station's local API on 127.0.0.1:{} is not reachable ({}); is `station run` running?"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, help="API port (default: policy api.port)")
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("start", help="start a session")
    s.add_argument("--number", help="customer phone number (shown masked only)")
    s.add_argument("--name", help="customer name (shown masked only)")
    s.add_argument("--id-number", help="customer id number (shown masked only)")
    s.add_argument("--customer", metavar="JSON|-", help="customer details as JSON, '-' reads stdin")
    s.add_argument("--ref", default="", help="business reference")
    s.add_argument("--agent", default="", help="CTI login of the agent")
    c = sub.add_parser("consent", help="record the customer's answer")
    c.add_argument("answer", choices=("agree", "refuse"))
    st = sub.add_parser("step", help="tick a script step")
    st.add_argument("step")
    m = sub.add_parser("marker", help="add a marker")
    m.add_argument("kind")
    m.add_argument("label", nargs="?", default="")
    pa = sub.add_parser("pause", help="pause for privacy")
    pa.add_argument("reason")
    sub.add_parser("resume", help="resume after a pause")
    sub.add_parser("stop", help="stop the session")
    sub.add_parser("status", help="state of the station")


def request(port: int, token: str, method: str, path: str, body: dict[str, Any] | None = None,
            timeout_s: float = 90) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    except OSError as exc:
        raise ApiUnreachable(port, exc.strerror or exc) from None
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw or b"null")
    except json.JSONDecodeError:
        return resp.status, {"error": raw[:200].decode("utf-8", "replace")}


def _customer(args: argparse.Namespace) -> dict[str, str] | None:
    out: dict[str, str] = {}
    if args.customer:
        text = sys.stdin.read() if args.customer == "-" else args.customer
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--customer: not valid JSON ({exc.msg})") from None
        if not isinstance(parsed, dict):
            raise UsageError("--customer: expected a JSON object")
        out.update(parsed)
    for key in ("number", "name", "id_number"):
        if getattr(args, key, None):
            out[key] = getattr(args, key)
    return out or None


def run(args: argparse.Namespace, ctx: Context) -> Any:
    port = args.port or int(ctx.policy.api.port)
    token = ctx.secrets.api_token(create=False)
    a = args.action
    if a == "status":
        call: tuple[str, str, dict[str, Any] | None] = ("GET", "/status", None)
    elif a == "start":
        body: dict[str, Any] = {"business_ref": args.ref, "agent": args.agent}
        cust = _customer(args)
        if cust:
            body["customer"] = cust
        call = ("POST", "/sessions", body)
    elif a == "consent":
        call = ("POST", "/sessions/current/consent", {"agreed": args.answer == "agree"})
    elif a == "step":
        call = ("POST", "/sessions/current/steps", {"step": args.step})
    elif a == "marker":
        call = ("POST", "/sessions/current/markers", {"kind": args.kind, "label": args.label})
    elif a == "pause":
        call = ("POST", "/sessions/current/pause", {"reason": args.reason})
    else:
        call = ("POST", f"/sessions/current/{a}", {})
    status, result = request(port, token, *call)
    if status >= 400:
        raise ApiCallFailed(status, (result or {}).get("error", "") if isinstance(result, dict) else result)
    return result


def human(result: Any) -> str:
    if not isinstance(result, dict):
        return str(result)
    if "summary" in result:
        s = result["summary"] or {}
        return (f"stopped: {s.get('session_id', '')} {s.get('stop_code', '')} "
                f"({s.get('segments', 0)} segments)")
    if "elapsed_s" in result:
        parts = [f"state: {result['state']}"]
        if result.get("session_id"):
            parts.append(f"session: {result['session_id']}")
        if result.get("customer_display"):
            parts.append(f"customer: {result['customer_display']}")
        if result.get("state") in ("consent", "recording", "paused"):
            parts.append(f"elapsed: {result['elapsed_s']:.0f} s")
        if result.get("pause_reason"):
            parts.append(f"paused: {result['pause_reason']}")
        if result.get("stop_code"):
            parts.append(f"last stop: {result['stop_code']}")
        if result.get("warnings"):
            parts.append("warnings: " + ", ".join(result["warnings"]))
        return "\n".join(parts)
    if "session_id" in result:
        cust = "  ".join((result.get("customer") or {}).values())
        return f"started {result['session_id']} ({result['state']})" + (f" customer {cust}" if cust else "")
    return f"ok ({result.get('state', '')})"
