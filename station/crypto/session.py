"""A session's sealed files and their signed manifest chain, and crash recovery.

``SessionSealer`` opens sealed writers per segment and kind, signs a manifest when a segment
closes (chained to the previous one) and closes the chain with ``session.json``. Before every
message of every sealed file reaches the disk it signs a **checkpoint** (file, messages, bytes,
running SHA-256) into ``checkpoints.log``, a hash chain of signed lines (docs/format.md 6).

``recover_spool`` closes sessions a crash left open, and vouches only for what the station
itself wrote: each file up to its last checkpoint that matches, its cleartext header checked
against its place. Anything else it finds (a session the station had finished, a file replaced,
cut, or with bytes appended after its last checkpoint, a checkpointed file gone) is signed into
``session.json`` as a recovery finding, which ``station verify`` reports as tampering. Nothing is
re-encrypted, shortened or deleted.

While a sealer is alive it holds an exclusive ``flock`` on the session folder, so recovery run
by another process skips sessions that are still recording.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import nacl.exceptions
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
from station.crypto.sealed import KINDS, SealedWriter, SealError, b64, canonical_json, scan_frames, unb64
from station.diskio import Reserve, append_whole, is_disk_full
from station.errors import StopCode

log = logs.get("seal")
SESSION_MANIFEST = "session.json"
CHECKPOINTS = "checkpoints.log"
# space held from the start of a recording until it is closed out: on a full disk it is given
# back so the last manifests and session.json still fit (docs/format.md 6)
RESERVE = ".reserve"
RESERVE_BYTES = 512 * 1024
SEG_RE = re.compile(r"seg-(\d{6})\.(media|oplog|masklog)\.drseg")
MANIFEST_RE = re.compile(r"seg-(\d{6})\.manifest\.json")
END_REASONS = tuple(str(c) for c in StopCode)


def seg_name(seq: int, kind: str) -> str:
    return f"seg-{seq:06d}.{kind}.drseg"


def manifest_name(seq: int) -> str:
    return f"seg-{seq:06d}.manifest.json"


class SessionBusy(SealError):
    """session folder {} is in use by another sealer"""


def _new_session_reserve(session_dir: Path, nbytes: int) -> Reserve:
    """Create the session folder with its reserve; on failure remove what was made."""
    made = not session_dir.exists()
    session_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        return Reserve(session_dir / RESERVE, nbytes)
    except OSError:
        if made:
            try:
                session_dir.rmdir()
            except OSError:
                pass
        raise


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


class Checkpoints:
    """``checkpoints.log``: signed, hash-chained lines, one per sealed message, written *before*
    the message's bytes (write-ahead), so a file on disk never holds more than its last checkpoint
    vouches for; a ``finished`` line before ``session.json``. Each line is the canonical JSON of
    ``{"n", "prev", "session", ...}`` plus ``sig`` (Ed25519 by the station key over the line
    without ``sig``); ``prev`` is the SHA-256 of the previous line's bytes (GENESIS for n = 0).
    The station resumes an existing log (recovery appends its own ``finished`` line)."""

    def __init__(self, path: Path, key: nacl.signing.SigningKey, session_id: str,
                 fsync: bool) -> None:
        self.path = path
        self._key, self._session, self._fsync = key, session_id, fsync
        self._lock = threading.Lock()
        self._n, self._prev = 0, GENESIS
        if path.exists():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):  # a line the crash cut: it vouched for nothing
                os.truncate(path, data.rfind(b"\n") + 1)  # (its message was never written)
            for rec, raw in _log_lines(path):
                if _line_ok(rec, raw, self._n, self._prev, self._key.verify_key):
                    self._n, self._prev = self._n + 1, hashlib.sha256(raw).hexdigest()
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    @property
    def lines(self) -> int:
        return self._n

    def write(self, body: Mapping[str, Any]) -> None:
        with self._lock:
            if self._fd is None:
                raise SealError("checkpoint log closed")
            rec = {"n": self._n, "prev": self._prev, "session": self._session, **body}
            rec["sig"] = b64(self._key.sign(canonical_json(rec)).signature)
            raw = canonical_json(rec)
            append_whole(self._fd, raw + b"\n")  # never a torn line, even on a full disk
            if self._fsync:  # before the data it vouches for: power loss keeps the order too
                os.fsync(self._fd)
            self._n, self._prev = self._n + 1, hashlib.sha256(raw).hexdigest()

    def on_message(self, writer: SealedWriter, messages: int, nbytes: int, sha256: str,
                   final: bool) -> None:
        """The :class:`SealedWriter` checkpoint hook."""
        self.write({"t": "file", "file": writer.path.name, "messages": messages,
                    "bytes": nbytes, "sha256": sha256, "final": final, "utc": utc_now_iso(),
                    "mono_ns": time.monotonic_ns()})

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _log_lines(path: Path) -> Iterator[tuple[dict[str, Any] | None, bytes]]:
    """(record or None if unparsable, raw line bytes) per complete line; a last line without its
    newline is a write cut by the crash and is not yielded."""
    data = path.read_bytes()
    for raw in data.split(b"\n")[:-1]:
        try:
            rec = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            rec = None
        yield (rec if isinstance(rec, dict) else None), raw


def _line_ok(rec: dict[str, Any] | None, raw: bytes, n: int, prev: str,
             vk: nacl.signing.VerifyKey) -> bool:
    if rec is None or rec.get("n") != n or rec.get("prev") != prev or not isinstance(rec.get("sig"), str):
        return False
    body = {k: v for k, v in rec.items() if k != "sig"}
    if canonical_json(rec) != raw:
        return False
    try:
        vk.verify(canonical_json(body), unb64(rec["sig"], "signature"))
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


def read_checkpoints(path: Path, vk: nacl.signing.VerifyKey
                     ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any] | None, list[str]]:
    """``(file name -> its checkpoints in order, the finished line or None, problems)``; the
    ``start`` line, if valid, is in ``files[""]``. Reading stops at the first line that is not
    the next valid signed link of the chain (a problem)."""
    files: dict[str, list[dict[str, Any]]] = {}
    finished: dict[str, Any] | None = None
    problems: list[str] = []
    n, prev = 0, GENESIS
    for rec, raw in _log_lines(path):
        if not _line_ok(rec, raw, n, prev, vk):
            problems.append(f"{CHECKPOINTS} line {n + 1} is not a valid signed link of the chain "
                            "(edited, inserted, reordered or not signed by this station); "
                            "later lines ignored")
            break
        assert rec is not None
        n, prev = n + 1, hashlib.sha256(raw).hexdigest()
        if rec.get("t") == "file" and isinstance(rec.get("file"), str):
            files.setdefault(rec["file"], []).append(rec)
        elif rec.get("t") == "finished":
            finished = rec
        elif rec.get("t") == "start" and n == 1:
            files[""] = [rec]
    return files, finished, problems


class SessionSealer:
    """Seal one session's segments into ``session_dir`` and sign their manifest chain.

    Writers fsync at every flush by default (``fsync_on_flush``), so a flushed message survives
    a power cut as well as a killed process."""

    def __init__(self, session_dir: str | os.PathLike[str], session_id: str,
                 station_id: str, recipients: Iterable[Any],
                 signing_key: nacl.signing.SigningKey | bytes,
                 meta: Mapping[str, Any] | None = None, *, fsync_on_flush: bool = True,
                 checkpoints: bool = True, reserve_bytes: int = 0) -> None:
        """``reserve_bytes``: for a new recording, hold that much disk for closing it out; if
        the disk has not that much, raise OSError (ENOSPC) and leave nothing behind."""
        self.dir = Path(session_dir)
        self._reserve: Reserve | None = None
        if reserve_bytes:
            self._reserve = _new_session_reserve(self.dir, reserve_bytes)
        else:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.session_id = session_id
        self.station_id = station_id
        self.recipients = list(recipients)
        self._key = signing_key_of(signing_key)
        self.meta = dict(meta or {})
        self.meta.setdefault("started_utc", utc_now_iso())
        self._fsync = fsync_on_flush
        self.checkpoints: Checkpoints | None = None
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
        self.checkpoints = (Checkpoints(self.dir / CHECKPOINTS, self._key, session_id, fsync_on_flush)
                            if checkpoints else None)
        if self.checkpoints is not None and self.last_seq == 0 and self.checkpoints.lines == 0:
            # what is known at start survives a crash in the first segment (recovery reads it)
            self.checkpoints.write({"t": "start", "station": station_id, "meta": self.meta,
                                    "utc": utc_now_iso(), "mono_ns": time.monotonic_ns()})
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

    def finish(self, end_reason: str = "normal", summary: Mapping[str, Any] | None = None,
               recovery: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Close any open segments, then write the signed session manifest (session.json);
        ``recovery``: what crash recovery found (only recovery passes it)."""
        with self._lock:
            return self._finish(end_reason, summary, recovery)

    def _open_segment(self, seq: int, kind: str) -> SealedWriter:
        if self.finished is not None:
            raise SealError("session already finished")
        if self._reserve is not None and not self._reserve.held:
            # the disk filled (a manifest needed the reserve): what is left of it is for
            # closing the session out, not for recording on
            raise OSError(errno.ENOSPC, "disk full: the session is closing out on its reserve",
                          str(self.dir))
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
            fsync_on_flush=self._fsync,
            checkpoint=self.checkpoints.on_message if self.checkpoints is not None else None)
        writers[kind] = w
        return w

    def _close_segment(self, seq: int, stats: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if seq != self.last_seq + 1:
            raise SealError(f"segments close in order: expected {self.last_seq + 1}, got {seq}")
        writers = self._open.pop(seq, {})
        files: dict[str, Any] = {}
        truncated: dict[str, Any] = {}
        if any(is_disk_full(w.failed) for w in writers.values()):
            self._give_back_reserve()  # the FINAL messages and the manifest need a little space
        for kind, w in sorted(writers.items()):
            w.close()
            if w.messages == 0:  # its header never reached the disk (e.g. disk full): no file
                w.path.unlink(missing_ok=True)
                log.warning("segment %s/%06d %s: nothing written (%s)", self.session_id, seq,
                            kind, w.failed)
                continue
            files[kind] = {"name": w.path.name, "sha256": w.sha256, "size": w.bytes_written,
                           "messages": w.messages, "final": w.failed is None}
            if w.failed is not None:  # e.g. disk full: the file ends at its last whole message
                truncated[kind] = {"at_message": w.messages, "note": f"truncated at message "
                                   f"{w.messages} (write failed: {w.failed.strerror or w.failed})"}
        started_utc, started_ns = self._times.pop(seq, (utc_now_iso(), time.monotonic_ns()))
        if not files:  # opened, but not one of its files got onto the disk: no segment
            return {}
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
        self._with_space(lambda: write_manifest(self.dir / manifest_name(seq), man))
        self.last_seq, self.last_hash, self.segments = seq, manifest_hash(man), seq
        if truncated:
            self.truncated.append(seq)
        log.info("sealed segment %s/%06d (%s)", self.session_id, seq,
                 "truncated" if truncated else "complete")
        return man

    def _finish(self, end_reason: str, summary: Mapping[str, Any] | None,
                recovery: Mapping[str, Any] | None = None) -> dict[str, Any]:
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
        if recovery is not None:
            body["recovery"] = dict(recovery)
        man = sign(body, self._key)
        self._with_space(lambda: write_manifest(self.dir / SESSION_MANIFEST, man))
        if self.checkpoints is not None:  # after session.json: a crash in between loses nothing,
            # and session.json deleted later is then detectable (recovery-session-finished)
            ckpts = self.checkpoints
            self._with_space(lambda: ckpts.write({
                "t": "finished", "segments": self.segments, "last_hash": self.last_hash,
                "end_reason": str(end_reason), "utc": utc_now_iso()}))
        self.finished = man
        if self._reserve is not None:
            self._reserve.release()  # done with it
        (self.dir / RESERVE).unlink(missing_ok=True)  # one a crashed recording left
        self._release()
        return man

    def abandon(self) -> None:
        """Drop the lock without finishing (tests, or a process about to exit uncleanly)."""
        self._release()

    def write_error(self) -> OSError | None:
        """The first write error of an open sealed file (the recorder's stop code reads it)."""
        with self._lock:
            for writers in self._open.values():
                for w in writers.values():
                    if w.failed is not None:
                        return w.failed
        return None

    def _give_back_reserve(self) -> bool:
        if self._reserve is not None and self._reserve.release():
            log.warning("session %s: disk full, closing it out from the space reserved at start",
                        self.session_id)
            return True
        return False

    def _with_space(self, write: Any) -> None:
        """Run ``write``; if the disk is full, give back the reserve and try once more."""
        try:
            write()
        except OSError as exc:
            if not is_disk_full(exc) or not self._give_back_reserve():
                raise
            write()

    def _release(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> SessionSealer:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.finished is None and self._lock_fd is not None:
            self.finish("normal" if exc_type is None else "encoder-error")


def _vouch(path: Path, cps: list[dict[str, Any]]) -> dict[str, Any]:
    """How much of ``path`` its checkpoints vouch for: hash the file up to each checkpoint's
    byte count in turn. Returns ``vouched`` (the last matching checkpoint or None), ``size``,
    ``finding`` (code, detail) or None."""
    size = path.stat().st_size
    h = hashlib.sha256()
    done = 0
    vouched: dict[str, Any] | None = None
    finding: tuple[str, str] | None = None
    with path.open("rb") as fh:
        for i, cp in enumerate(cps):
            want = cp.get("bytes")
            if not isinstance(want, int) or want < done:
                finding = ("recovery-bad-checkpoint", f"checkpoint {i + 1} of {path.name} goes back")
                break
            if want > size:
                if i < len(cps) - 1:  # shorter than a checkpoint older than the last one
                    finding = ("recovery-cut", f"{path.name} is {size} bytes, but checkpoint "
                               f"{i + 1} of {len(cps)} already vouched for {want}: cut")
                break
            while done < want:
                chunk = fh.read(min(1 << 20, want - done))
                if not chunk:
                    break
                h.update(chunk)
                done += len(chunk)
            if h.hexdigest() != cp.get("sha256"):
                finding = ("recovery-checkpoint-mismatch", f"{path.name}: its first {want} bytes "
                           f"are not the ones checkpoint {i + 1} vouched for (replaced or altered)")
                break
            vouched = cp
    if finding is None and cps and vouched is cps[-1] and size > cps[-1]["bytes"]:
        with path.open("rb") as fh:
            fh.seek(cps[-1]["bytes"])
            tail_zero = not fh.read().strip(b"\0")
        if not tail_zero:  # zeros are what a power cut leaves in blocks allocated but not written
            finding = ("recovery-appended", f"{path.name}: {size - cps[-1]['bytes']} bytes after "
                       "its last checkpoint, which the station never wrote")
    return {"vouched": vouched, "size": size, "finding": finding}


def recover_session(session_dir: Path, signing_key: nacl.signing.SigningKey | bytes,
                    station_id: str | None = None,
                    finished_elsewhere: str | None = None) -> dict[str, Any] | None:
    """Close out one crashed session folder. None if it is finished or in use.

    ``finished_elsewhere``: what the station's audit log or upload journal says if they record
    this session as finished; recovery then closes out what it finds as usual but signs the
    finding ``recovery-session-finished`` into session.json, which makes the verdict altered."""
    session_dir = Path(session_dir)
    if (session_dir / SESSION_MANIFEST).exists():
        return None
    lock = _lock_dir(session_dir, blocking=False)
    if lock is None:
        return None
    try:
        if (session_dir / SESSION_MANIFEST).exists():
            return None
        key = signing_key_of(signing_key)
        last_seq, _, first = _existing_chain(session_dir)
        findings: list[dict[str, Any]] = []

        def find(code: str, detail: str, seq: int | None = None, kind: str | None = None) -> None:
            findings.append({"code": code, "seq": seq, "kind": kind, "detail": detail})

        ck_path = session_dir / CHECKPOINTS
        have_log = ck_path.exists()  # before the sealer below starts one
        if have_log:
            cps, fin, problems = read_checkpoints(ck_path, key.verify_key)
            for pr in problems:
                find("recovery-bad-checkpoint", pr)
        else:
            cps, fin = {}, None
            if any(SEG_RE.fullmatch(p.name) for p in session_dir.iterdir()):
                find("recovery-unvouched", f"no {CHECKPOINTS}: the station never checkpointed "
                     "these files (written by someone else, or the log was deleted)")
        start_lines = cps.pop("", [])
        start: dict[str, Any] | None = start_lines[0] if start_lines else None
        first_cp = next((c for lst in cps.values() for c in lst), None)
        session_id = ((first or {}).get("session") or (first_cp or {}).get("session")
                      or session_dir.name)
        pending: dict[int, dict[str, Path]] = {}
        for p in session_dir.iterdir():
            m = SEG_RE.fullmatch(p.name)
            if p.is_symlink() or not p.is_file():  # never sign (or upload) what a link points at
                continue
            if m and int(m.group(1)) > last_seq:
                pending.setdefault(int(m.group(1)), {})[m.group(2)] = p
        headers = {}
        for seq in sorted(pending):
            for kind in sorted(pending[seq]):
                headers[(seq, kind)] = scan_frames(pending[seq][kind])
        any_hdr: dict[str, Any] = next((sc["header"] for sc in headers.values() if sc["header"]), {})
        station = ((first or {}).get("station") or (start or {}).get("station")
                   or any_hdr.get("station") or station_id or "?")
        if fin is not None:
            find("recovery-session-finished", f"{CHECKPOINTS} records that the station finished "
                 f"this session at {fin.get('utc')} with {fin.get('segments')} segments "
                 f"({fin.get('end_reason')}); its session.json is gone")
        if finished_elsewhere:
            find("recovery-session-finished", finished_elsewhere)
        for name in sorted(cps):
            m = SEG_RE.fullmatch(name)
            f = session_dir / name
            if m and int(m.group(1)) > last_seq and (f.is_symlink() or not f.is_file()):
                find("recovery-missing-file", f"{name} was checkpointed by the station and is "
                     "gone", int(m.group(1)), m.group(2))
                pending.setdefault(int(m.group(1)), {})
        meta = dict((first or {}).get("meta") or (start or {}).get("meta") or {})
        meta.setdefault("started_utc", (first_cp or {}).get("utc") or any_hdr.get("created_utc"))
        os.close(lock)
        lock = None
        sealer = SessionSealer(session_dir, session_id, station, [], key, meta)
        until: dict[str, Any] | None = None
        try:
            for seq in sorted(pending):
                files, trunc = {}, {}
                for kind, path in sorted(pending[seq].items()):
                    sc = headers[(seq, kind)]
                    hdr = sc["header"]
                    want = {"station": station, "session": session_id, "seq": seq, "kind": kind}
                    wrong = {k: hdr.get(k) for k, v in want.items() if hdr.get(k) != v}
                    file_cps = cps.get(path.name, [])
                    if not hdr and file_cps and sc["size"] < file_cps[0]["bytes"]:
                        wrong = {}  # the crash cut the very first write: nothing to compare
                    if wrong:
                        find("recovery-header-mismatch", f"{path.name}: its sealed header says "
                             + ", ".join(f"{k} {v!r}" for k, v in wrong.items())
                             + " (a file put in another's place)", seq, kind)
                    # a file in another's place is not vouched for at all (one finding, not two)
                    v = (_vouch(path, file_cps) if not wrong else
                         {"vouched": None, "size": sc["size"], "finding": None})
                    if not file_cps and have_log and not wrong:
                        find("recovery-unvouched", f"{path.name} has no checkpoint: the station "
                             "never wrote it", seq, kind)
                    if v["finding"] is not None:
                        find(v["finding"][0], v["finding"][1], seq, kind)
                    vc = v["vouched"] or {"messages": 0, "bytes": 0, "final": False}
                    complete = bool(vc.get("final")) and v["size"] == vc["bytes"]
                    files[kind] = {"name": path.name, "sha256": sc["sha256"], "size": sc["size"],
                                   "messages": sc["messages"], "final": complete and sc["final"]}
                    if not files[kind]["final"]:
                        n = int(vc["messages"])
                        trunc[kind] = {"at_message": n, "good_bytes": vc["bytes"],
                                       "trailing_bytes": v["size"] - vc["bytes"],
                                       "vouched_utc": vc.get("utc"),
                                       "note": f"truncated at message {n} (recovered: "
                                       f"{vc['bytes']} bytes vouched by the checkpoint of "
                                       f"{vc.get('utc')}"
                                       + (f", {v['size'] - vc['bytes']} bytes after it"
                                          if v["size"] > vc["bytes"] else "") + ")"}
                    if kind == "media" and v["vouched"] is not None and (
                            until is None or v["vouched"]["mono_ns"] > until["mono_ns"]):
                        until = v["vouched"]
                hdr0: dict[str, Any] = next(
                    (headers[(seq, k)]["header"] for k in sorted(pending[seq])), {})
                sealer._append(seq, files, started_utc=hdr0.get("created_utc") or "",
                               started_ns=hdr0.get("created_mono_ns"), ended_utc=(until or {}).get(
                                   "utc") or utc_now_iso(), ended_ns=None,
                               stats={"recovered": True}, truncated=trunc or None)
            recovery = _recovery_record(cps, until, findings, sorted(pending))
            man = sealer.finish(StopCode.CRASH_RECOVERED, {"recovered_segments": sorted(pending)},
                                recovery=recovery)
        finally:
            sealer.abandon()
        if findings:
            log.error("session %s: recovery found tampering: %s", session_id,
                      "; ".join(f["detail"] for f in findings))
        else:
            log.warning("recovered crashed session %s: %d segments closed out, complete up to %s",
                        session_id, len(pending), recovery["until_utc"])
        return man
    finally:
        if lock is not None:
            os.close(lock)


def _recovery_record(cps: dict[str, list[dict[str, Any]]], until: dict[str, Any] | None,
                     findings: list[dict[str, Any]], segments: list[int]) -> dict[str, Any]:
    """session.json's ``recovery``: complete up to ``until_utc`` (the last vouched media
    checkpoint), ``kept_s`` since the session's first checkpoint, ``lost_s_max``: the longest
    interval between two media checkpoints of the session (the recorder put media on disk at
    least that often, so a crash lost at most about that much), and the findings."""
    media = sorted((c for name, lst in cps.items() if name.endswith(".media.drseg") for c in lst),
                   key=lambda c: c.get("mono_ns") or 0)
    first = min((c.get("mono_ns") or 0 for lst in cps.values() for c in lst), default=None)
    if until is None and media:  # nothing open at the crash: complete up to the last closed one
        until = media[-1]
    gaps = [(b["mono_ns"] - a["mono_ns"]) / 1e9 for a, b in zip(media, media[1:], strict=False)
            if isinstance(a.get("mono_ns"), int) and isinstance(b.get("mono_ns"), int)]
    return {"recovered_utc": utc_now_iso(), "until_utc": (until or {}).get("utc"),
            "kept_s": round((until["mono_ns"] - first) / 1e9, 3) if until and first else 0.0,
            "lost_s_max": round(max(gaps, default=0.0), 3), "segments": segments,
            "findings": findings}


def finished_sessions(audit: Any) -> dict[str, str]:
    """Sessions the audit log records as stopped: ``{session id: detail}``."""
    out: dict[str, str] = {}
    records: list[dict[str, Any]] = []
    try:
        lines = Path(audit.path).read_bytes().splitlines()
    except FileNotFoundError:
        return out
    except OSError as exc:
        log.warning("audit log not read for recovery: %s", exc)
        return out
    for raw in lines:  # one damaged line must not hide the others
        try:
            rec = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(rec, dict):
            records.append(rec)
    for r in records:
        sid = r.get("session") or r.get("session_id")
        if not isinstance(sid, str) or r.get("sealed") is False:  # finish failed: not finished
            continue
        if r.get("event") in ("recording_stopped", "session-recovered", "session-tampered"):
            out[sid] = (f"the audit log records that the session stopped at {r.get('ts')} "
                        f"({r.get('event')}, code {r.get('code')}, {r.get('segments')} segments); "
                        "its session.json is gone")
    return out


def recover_spool(spool_dir: str | os.PathLike[str],
                  signing_key: nacl.signing.SigningKey | bytes,
                  station_id: str | None = None, audit: Any = None,
                  finished: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Close every crashed session in the spool (callable at station start and by `record`).

    Returns the session manifests written. Sessions in use by a live sealer are skipped.
    ``finished``: sessions known to be finished (``{id: detail}``, e.g. from the upload journal);
    with ``audit`` (a :class:`station.logs.AuditLog`) its stop records count too, and each
    recovery is also an audit record (``session-recovered``, or ``session-tampered`` with the
    findings).
    """
    spool = Path(spool_dir)
    if not spool.is_dir():
        return []
    known = dict(finished or {})
    if audit is not None:
        known.update(finished_sessions(audit))
    out = []
    for d in sorted(spool.iterdir()):
        if d.is_symlink():  # a link in the spool is not a session the station wrote
            log.error("spool entry %s is a symbolic link: not recovered", d.name)
            if audit is not None:
                audit.append("session-recovery-failed", session=d.name, error="symbolic link")
            continue
        if d.is_dir() and not d.name.startswith("."):
            try:
                man = recover_session(d, signing_key, station_id, known.get(d.name))
            except (OSError, ValueError, SealError) as exc:
                # e.g. a manifest in the folder that is not byte-exact: leave the folder as it is
                # for a human (verify reports it), and never let it stop the seat from recording
                log.error("session %s not recovered: %s", d.name, exc)
                if audit is not None:
                    audit.append("session-recovery-failed", session=d.name, error=str(exc))
                continue
            if man is not None:
                out.append(man)
                if audit is not None:
                    rec = man.get("recovery") or {}
                    audit.append("session-tampered" if rec.get("findings") else "session-recovered",
                                 session=man["session"], segments=man["segments"],
                                 truncated_segments=man["truncated_segments"],
                                 until_utc=rec.get("until_utc"), lost_s_max=rec.get("lost_s_max"),
                                 findings=[f["code"] for f in rec.get("findings") or []])
    return out
