"""A session's sealed files and their signed manifest chain, and crash recovery.

``SessionSealer`` opens sealed writers per segment and kind, signs a manifest when a segment
closes (chained to the previous one) and closes the chain with ``session.json``.
``recover_spool`` closes sessions a crash left open: nothing is re-encrypted or deleted.

While a sealer is alive it holds an exclusive ``flock`` on the session folder, so recovery run
by another process skips sessions that are still recording.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nacl.signing

from station import logs
from station.clock import utc_now_iso
from station.crypto.manifest import (
    GENESIS,
    MANIFEST_FORMAT,
    manifest_hash,
    parse_manifest,
    sign,
    signing_key_of,
    write_manifest,
)
from station.crypto.sealed import KINDS, SealedWriter, SealError, scan_frames
from station.errors import StopCode

log = logs.get("seal")
SESSION_MANIFEST = "session.json"
SEG_RE = re.compile(r"seg-(\d{6})\.(media|oplog|masklog)\.drseg")
MANIFEST_RE = re.compile(r"seg-(\d{6})\.manifest\.json")
END_REASONS = tuple(str(c) for c in StopCode)


def seg_name(seq: int, kind: str) -> str:
    return f"seg-{seq:06d}.{kind}.drseg"


def manifest_name(seq: int) -> str:
    return f"seg-{seq:06d}.manifest.json"


class SessionBusy(SealError):
    """session folder {} is in use by another sealer"""


def _lock_dir(path: Path, blocking: bool) -> int | None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _existing_chain(session_dir: Path) -> tuple[int, str, dict[str, Any] | None]:
    """(last seq, last manifest hash, first manifest) from the manifests already on disk."""
    last_seq, last_hash, first = 0, GENESIS, None
    for seq in sorted(int(m.group(1)) for p in session_dir.iterdir()
                      if (m := MANIFEST_RE.fullmatch(p.name))):
        man = parse_manifest((session_dir / manifest_name(seq)).read_bytes())
        last_seq, last_hash = seq, manifest_hash(man)
        first = first or man
    return last_seq, last_hash, first


class SessionSealer:
    """Seal one session's segments into ``session_dir`` and sign their manifest chain.

    Writers fsync at every flush by default (``fsync_on_flush``), so a flushed message survives
    a power cut as well as a killed process."""

    def __init__(self, session_dir: str | os.PathLike[str], session_id: str,
                 station_id: str, recipients: Iterable[Any],
                 signing_key: nacl.signing.SigningKey | bytes,
                 meta: Mapping[str, Any] | None = None, *, fsync_on_flush: bool = True) -> None:
        self.dir = Path(session_dir)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.session_id = session_id
        self.station_id = station_id
        self.recipients = list(recipients)
        self._key = signing_key_of(signing_key)
        self.meta = dict(meta or {})
        self.meta.setdefault("started_utc", utc_now_iso())
        self._fsync = fsync_on_flush
        self._lock = threading.RLock()  # media, oplog and masklog may be driven from threads
        lock = _lock_dir(self.dir, blocking=False)
        if lock is None:
            raise SessionBusy(str(self.dir))
        self._lock_fd: int | None = lock
        if (self.dir / SESSION_MANIFEST).exists():
            self._release()
            raise SealError(f"session {session_id} is already finished")
        self.last_seq, self.last_hash, _ = _existing_chain(self.dir)
        self.segments = self.last_seq
        self.truncated: list[int] = []
        self._open: dict[int, dict[str, SealedWriter]] = {}
        self._times: dict[int, tuple[str, int]] = {}
        self.finished: dict[str, Any] | None = None

    def open_segment(self, seq: int, kind: str) -> SealedWriter:
        """A sealed writer for segment ``seq`` of ``kind`` (media, oplog, masklog)."""
        with self._lock:
            return self._open_segment(seq, kind)

    def close_segment(self, seq: int, stats: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Close the segment's writers (FINAL), sign and write its manifest; return it."""
        with self._lock:
            return self._close_segment(seq, stats)

    def finish(self, end_reason: str = "normal",
               summary: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Close any open segments, then write the signed session manifest (session.json)."""
        with self._lock:
            return self._finish(end_reason, summary)

    def _open_segment(self, seq: int, kind: str) -> SealedWriter:
        if self.finished is not None:
            raise SealError("session already finished")
        if not self.recipients:
            raise SealError("no recipients: the policy must name at least one (crypto.recipients)")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        if seq <= self.last_seq:
            raise SealError(f"segment {seq} is already closed (last closed: {self.last_seq})")
        writers = self._open.setdefault(seq, {})
        if kind in writers:
            raise SealError(f"segment {seq} {kind} is already open")
        self._times.setdefault(seq, (utc_now_iso(), time.monotonic_ns()))
        created_utc, created_ns = utc_now_iso(), time.monotonic_ns()
        w = SealedWriter(self.dir / seg_name(seq, kind), self.recipients, {
            "station": self.station_id, "session": self.session_id, "seq": seq, "kind": kind,
            "created_utc": created_utc, "created_mono_ns": created_ns},
            fsync_on_flush=self._fsync)
        writers[kind] = w
        return w

    def _close_segment(self, seq: int, stats: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if seq != self.last_seq + 1:
            raise SealError(f"segments close in order: expected {self.last_seq + 1}, got {seq}")
        writers = self._open.pop(seq, {})
        files: dict[str, Any] = {}
        truncated: dict[str, Any] = {}
        for kind, w in sorted(writers.items()):
            w.close()
            files[kind] = {"name": w.path.name, "sha256": w.sha256, "size": w.bytes_written,
                           "messages": w.messages, "final": w.failed is None}
            if w.failed is not None:  # e.g. disk full: the file ends at its last whole message
                truncated[kind] = {"at_message": w.messages, "note": f"truncated at message "
                                   f"{w.messages} (write failed: {w.failed.strerror or w.failed})"}
        started_utc, started_ns = self._times.pop(seq, (utc_now_iso(), time.monotonic_ns()))
        return self._append(seq, files, started_utc=started_utc, started_ns=started_ns,
                            ended_utc=utc_now_iso(), ended_ns=time.monotonic_ns(),
                            stats=dict(stats or {}), truncated=truncated or None)

    def _append(self, seq: int, files: dict[str, Any], *, started_utc: str,
                started_ns: int | None, ended_utc: str, ended_ns: int | None,
                stats: dict[str, Any], truncated: dict[str, Any] | None) -> dict[str, Any]:
        body = {
            "type": "segment", "format": MANIFEST_FORMAT, "session": self.session_id,
            "station": self.station_id, "seq": seq, "files": files,
            "started_utc": started_utc, "ended_utc": ended_utc,
            "started_mono_ns": started_ns, "ended_mono_ns": ended_ns,
            "stats": stats, "gaps": stats.get("gaps", []), "masking": stats.get("masking", {}),
            "truncated": truncated, "meta": self.meta, "prev": self.last_hash,
        }
        man = sign(body, self._key)
        write_manifest(self.dir / manifest_name(seq), man)
        self.last_seq, self.last_hash, self.segments = seq, manifest_hash(man), seq
        if truncated:
            self.truncated.append(seq)
        log.info("sealed segment %s/%06d (%s)", self.session_id, seq,
                 "truncated" if truncated else "complete")
        return man

    def _finish(self, end_reason: str, summary: Mapping[str, Any] | None) -> dict[str, Any]:
        if self.finished is not None:
            return self.finished
        if str(end_reason) not in END_REASONS:
            raise ValueError(f"end_reason must be one of {END_REASONS}, not {end_reason!r}")
        for seq in sorted(self._open):
            self.close_segment(seq, {"closed_by": "finish"})
        summary = dict(summary or {})
        body = {
            "type": "session", "format": MANIFEST_FORMAT, "session": self.session_id,
            "station": self.station_id, "segments": self.segments, "last_hash": self.last_hash,
            "end_reason": str(end_reason), "started_utc": self.meta.get("started_utc"),
            "ended_utc": utc_now_iso(), "agent": self.meta.get("agent"),
            "site": self.meta.get("site"), "meta": self.meta, "summary": summary,
            "markers": summary.get("markers"), "truncated_segments": self.truncated,
        }
        man = sign(body, self._key)
        write_manifest(self.dir / SESSION_MANIFEST, man)
        self.finished = man
        self._release()
        return man

    def abandon(self) -> None:
        """Drop the lock without finishing (tests, or a process about to exit uncleanly)."""
        self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> SessionSealer:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.finished is None and self._lock_fd is not None:
            self.finish("normal" if exc_type is None else "encoder-error")


def recover_session(session_dir: Path, signing_key: nacl.signing.SigningKey | bytes,
                    station_id: str | None = None) -> dict[str, Any] | None:
    """Close out one crashed session folder. None if it is finished or in use."""
    session_dir = Path(session_dir)
    if (session_dir / SESSION_MANIFEST).exists():
        return None
    lock = _lock_dir(session_dir, blocking=False)
    if lock is None:
        return None
    try:
        if (session_dir / SESSION_MANIFEST).exists():
            return None
        last_seq, _, first = _existing_chain(session_dir)
        pending: dict[int, list[str]] = {}
        for p in session_dir.iterdir():
            m = SEG_RE.fullmatch(p.name)
            if m and int(m.group(1)) > last_seq:
                pending.setdefault(int(m.group(1)), []).append(m.group(2))
        headers: dict[str, Any] = {}
        scans: dict[int, dict[str, dict[str, Any]]] = {}
        for seq in sorted(pending):
            for kind in sorted(pending[seq]):
                sc = scan_frames(session_dir / seg_name(seq, kind))
                scans.setdefault(seq, {})[kind] = sc
                headers = headers or sc["header"]
        session_id = (first or {}).get("session") or headers.get("session") or session_dir.name
        # the station recorded in the files wins over the caller's idea of the current id
        station = (first or {}).get("station") or headers.get("station") or station_id or "?"
        meta = dict((first or {}).get("meta") or {})
        meta.setdefault("started_utc", headers.get("created_utc"))
        os.close(lock)
        lock = None
        sealer = SessionSealer(session_dir, session_id, station, [], signing_key, meta)
        try:
            for seq in sorted(scans):
                files, trunc = {}, {}
                for kind, sc in scans[seq].items():
                    # message 0 authenticates the header; user messages are counted from 1
                    files[kind] = {"name": seg_name(seq, kind), "sha256": sc["sha256"],
                                   "size": sc["size"], "messages": sc["messages"],
                                   "final": sc["final"]}
                    if not sc["final"]:
                        n = max(sc["messages"], 0)
                        trunc[kind] = {"at_message": n, "good_bytes": sc["good_bytes"],
                                       "trailing_bytes": sc["trailing"],
                                       "note": f"truncated at message {n}"
                                       + (f" ({sc['anomaly']})" if sc.get("anomaly") else "")}
                hdr = next(iter(scans[seq].values()))["header"]
                stats = {"recovered": True}
                sealer._append(seq, files, started_utc=hdr.get("created_utc") or "",
                               started_ns=hdr.get("created_mono_ns"), ended_utc=utc_now_iso(),
                               ended_ns=None, stats=stats, truncated=trunc or None)
            man = sealer.finish(StopCode.CRASH_RECOVERED, {"recovered_segments": sorted(scans)})
        finally:
            sealer.abandon()
        log.warning("recovered crashed session %s: %d segments closed out", session_id,
                    len(scans))
        return man
    finally:
        if lock is not None:
            os.close(lock)


def recover_spool(spool_dir: str | os.PathLike[str],
                  signing_key: nacl.signing.SigningKey | bytes,
                  station_id: str | None = None, audit: Any = None) -> list[dict[str, Any]]:
    """Close every crashed session in the spool (callable at station start and by `record`).

    Returns the session manifests written. Sessions in use by a live sealer are skipped.
    With ``audit`` (a :class:`station.logs.AuditLog`), each recovery is also an audit record.
    """
    spool = Path(spool_dir)
    if not spool.is_dir():
        return []
    out = []
    for d in sorted(spool.iterdir()):
        if d.is_dir() and not d.name.startswith("."):
            man = recover_session(d, signing_key, station_id)
            if man is not None:
                out.append(man)
                if audit is not None:
                    audit.append("session-recovered", session=man["session"],
                                 segments=man["segments"],
                                 truncated_segments=man["truncated_segments"])
    return out
