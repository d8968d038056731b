"""Category loggers and the append-only, hash-chained audit log.

Diagnostic logging goes through ``logging.getLogger("dualrec.<category>")`` with the categories
capture, mask, seal, upload, review, api, ui, policy. Diagnostic logs never contain customer data
or secrets.

The audit log is separate: one JSON object per line, each carrying ``prev``, the SHA-256 of the
previous line (the first line chains to 64 zeros). Lines are appended with O_APPEND and fsync;
:func:`verify_audit` detects any edited, removed or reordered line.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from station.clock import utc_now_iso
from station.diskio import append_whole

CATEGORIES = ("capture", "mask", "seal", "upload", "review", "api", "ui", "policy", "session", "audit")
GENESIS = "0" * 64


def get(category: str) -> logging.Logger:
    return logging.getLogger(f"dualrec.{category}")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": utc_now_iso(), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is when a record is emitted, not as it was at set-up: a
    stderr replaced later (a test's capture, a GUI redirect) and then closed is never written to."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def setup(level: str = "INFO", json_logs: bool = False, log_file: Path | None = None) -> None:
    """Configure the root 'dualrec' logger once: stderr (human or JSON), optionally a file."""
    root = logging.getLogger("dualrec")
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt: logging.Formatter = JsonFormatter() if json_logs else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s")
    stream = StderrHandler()
    stream.setFormatter(fmt)
    stream.setLevel(os.environ.get("STATION_LOG_LEVEL", "WARNING" if not json_logs else level))
    root.addHandler(stream)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file, encoding="utf-8")
        fh.setFormatter(JsonFormatter())
        root.addHandler(fh)
    root.propagate = False


def _line_hash(line: str) -> str:
    return hashlib.sha256(line.encode("utf-8")).hexdigest()


class AuditLog:
    """Append-only hash-chained audit log in a local file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._prev: str | None = None

    def _last_hash(self) -> str:
        if self._prev is not None:
            return self._prev
        last = GENESIS
        if self.path.exists():
            with self.path.open("rb") as fh:
                for raw in fh:
                    if raw.strip():
                        last = _line_hash(raw.decode("utf-8").rstrip("\n"))
        return last

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            record = {"ts": utc_now_iso(), "event": event, "user": _user(), **fields,
                      "prev": self._last_hash()}
            line = json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                append_whole(fd, (line + "\n").encode("utf-8"))  # a full disk: no torn line
                os.fsync(fd)
            finally:
                os.close(fd)
            self._prev = _line_hash(line)
            get("audit").info("%s %s", event, {k: v for k, v in fields.items() if k != "reason"})
            return record

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(x) for x in self.path.read_text("utf-8").splitlines() if x.strip()]


def verify_audit(path: Path) -> tuple[bool, str]:
    """(intact, detail). Detects edited, removed, inserted or reordered lines."""
    prev = GENESIS
    if not path.exists():
        return True, "no audit log"
    for n, raw in enumerate(path.read_text("utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            return False, f"line {n}: not JSON"
        if record.get("prev") != prev:
            return False, f"line {n}: chain broken (prev hash does not match line {n - 1})"
        prev = _line_hash(raw)
    return True, "intact"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
