"""Access audit of the review side: every open, play and export leaves a record.

A record names the reviewer, the session, the action, the reason (required for export, and for
open when policy ``review.require_reason`` says so) and the time. It is written twice:

* to central storage under ``<prefix>/audit/review/<yyyy>/<mm>/<dd>/<time>-<action>-<session>-<rand>.json``
  (never overwritten; on an Object Lock bucket it cannot be deleted either), and
* to the reviewer machine's hash-chained local audit log (:class:`station.logs.AuditLog`).

Storage is written first: if it cannot take the record, the action is refused
(:class:`AuditUnavailable`), so nobody watches a session without leaving a trace.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import uuid
from typing import Any, Protocol

from station import logs
from station.clock import utc_now_iso
from station.errors import StationError

log = logs.get("audit")

ACTIONS = ("open", "play", "export", "export-failed", "qc")
AUDIT_FOLDER = "review"


class ReasonRequired(StationError, ValueError):
    """a reason is required to {} a session; say why (e.g. a case or ticket number)"""


class AuditUnavailable(StationError, RuntimeError):
    """cannot write the audit record for {} of session {} to central storage ({}); the action is refused"""


class _PutStore(Protocol):
    def put(self, key: str, src: bytes) -> Any: ...

    def get(self, key: str) -> bytes: ...

    def list(self, prefix: str = "") -> list[Any]: ...


def reviewer_name() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname().split('.')[0]}"


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class ReviewAudit:
    """Write review audit records to storage and the local audit log."""

    def __init__(self, store: _PutStore, prefix: str, local: logs.AuditLog | None,
                 reviewer: str | None = None, identity_fp: str | None = None,
                 require_open_reason: bool = False) -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        self.local = local
        self.reviewer = reviewer or reviewer_name()
        self.identity_fp = identity_fp
        self.require_open_reason = require_open_reason

    def folder(self) -> str:
        return _join(self.prefix, "audit", AUDIT_FOLDER)

    def record(self, action: str, session_id: str, reason: str | None = None,
               **extra: Any) -> dict[str, Any]:
        """Write one record; raises ReasonRequired / AuditUnavailable before anything happens."""
        if action not in ACTIONS:
            raise ValueError(f"unknown review action {action!r}")
        reason = (reason or "").strip() or None
        if reason is None and (action == "export" or (action == "open" and self.require_open_reason)):
            raise ReasonRequired(action)
        now = utc_now_iso()
        rec: dict[str, Any] = {"type": "review-access", "action": action, "session": session_id,
                               "reviewer": self.reviewer, "reason": reason, "time": now,
                               "identity": self.identity_fp, "id": uuid.uuid4().hex, **extra}
        day = now[:10].replace("-", "/")
        stamp = now.replace(":", "").replace("-", "").replace(".", "")
        key = _join(self.folder(), day, f"{stamp}-{action}-{session_id}-{rec['id'][:8]}.json")
        body = json.dumps(rec, ensure_ascii=False, sort_keys=True).encode("utf-8")
        try:
            self.store.put(key, body)
        except Exception as exc:  # any storage failure refuses the action
            log.error("audit record for %s %s not stored: %s", action, session_id, exc)
            raise AuditUnavailable(action, session_id, f"{type(exc).__name__}: {exc}") from exc
        rec["key"] = key
        if self.local is not None:
            self.local.append(f"review_{action}", session_id=session_id, reviewer=self.reviewer,
                              reason=reason, storage_key=key,
                              **{k: v for k, v in extra.items() if isinstance(v, (str, int, float, bool))})
        return rec

    def records(self, session_id: str | None = None) -> list[dict[str, Any]]:
        """The review records in storage (optionally of one session), oldest first."""
        out = []
        for item in self.store.list(self.folder() + "/"):
            key = item if isinstance(item, str) else item.key
            if session_id and f"-{session_id}-" not in key.rsplit("/", 1)[-1]:
                continue
            doc = json.loads(self.store.get(key))
            doc["key"] = key
            out.append(doc)
        return sorted(out, key=lambda r: (r["time"], r["key"]))
