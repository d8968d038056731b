"""The background uploader: scan the spool, journal, upload, verify, purge.

One pass of the loop:

1. **scan** every ``<spool>/<session_id>/`` folder: files whose segment manifest exists are
   journaled ``SEALED`` (a segment's ``.drseg`` files, then its manifest, then ``session.json``);
2. **hash** ``SEALED`` entries (SHA-256 of the whole file and MD5 of each part, one read) and
   compare with the manifest: ``QUEUED``, or a hard failure if the spool file does not match;
3. **upload** eligible entries with bounded concurrency: a segment's files before its manifest,
   ``session.json`` only after everything else of the session is verified. A multipart upload's
   id and acknowledged parts go to the journal as they happen; on restart ``ListParts`` decides
   which parts are still missing;
4. **verify** ``COMPLETED`` entries with HEAD (size, our SHA-256 metadata, ETag of the part MD5s);
5. **purge** a session's local files once every object of it, ``session.json`` included, is
   ``VERIFIED``.

Failures move an entry to ``FAILED`` with ``retry_at`` from :class:`~uploader.bandwidth.Backoff`
(about 2 s x1.5 with jitter, capped at ``upload.retry_max_s``). Soft failures (network, 5xx,
outage) are retried; hard ones (credentials, a different object under the key, Object Lock
refusal) stop ``drain`` and are retried only slowly in the background.

A spool file that does not match its manifest (altered, truncated or missing; the manifest
replaced or unreadable) **quarantines its session**: audited and logged once, shown in the backlog,
never purged, its files left exactly where they are; every other session goes on. Each scan looks
again at a quarantined session whose folder changed (``drain`` with ``retry_now``: at every one):
the manifests are read again, the files not yet sent are hashed again, and a session that
matches its manifest now leaves quarantine and uploads.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from station import logs
from station.crypto.session import CHECKPOINTS
from uploader import layout
from uploader.bandwidth import Backoff, TokenBucket
from uploader.errors import JournalConflict, ManifestChanged, ObjectMissing, SpoolCorrupt, StorageError
from uploader.journal import (
    COMPLETED,
    FAILED,
    PENDING,
    PURGED,
    QUEUED,
    SEALED,
    UPLOADING,
    VERIFIED,
    Entry,
    Journal,
)
from uploader.stores import Digest, Store, bandwidth_bytes_s, digest_file, open_store

log = logs.get("upload")
JOURNAL_NAME = "journal.sqlite"
DONE_STATES = (COMPLETED, VERIFIED, PURGED)
SESSION_ROLES = (layout.SEGMENT, layout.MANIFEST, layout.SESSION)  # what quarantine is about


def journal_path(data_dir: Path) -> Path:
    return Path(data_dir) / JOURNAL_NAME


class _JournalCheckpoint:
    """Persist a multipart upload's id and parts in the journal as they happen."""

    def __init__(self, journal: Journal, entry: Entry) -> None:
        self._journal = journal
        self.key = entry.key
        self.state = entry.state
        self.upload_id = entry.upload_id if entry.state == UPLOADING else None
        self.part_size = entry.part_size if entry.state == UPLOADING else None

    def started(self, upload_id: str, part_size: int) -> None:
        self._journal.transition(self.key, self.state, UPLOADING, upload_id=upload_id,
                                 part_size=part_size, parts={})
        self.state, self.upload_id, self.part_size = UPLOADING, upload_id, part_size

    def part_done(self, part_number: int, md5_hex: str) -> None:
        self._journal.record_part(self.key, part_number, md5_hex)

    def forgotten(self) -> None:
        self._journal.transition(self.key, UPLOADING, QUEUED, upload_id=None, parts={})
        self.state, self.upload_id = QUEUED, None


@dataclass
class Outcome:
    key: str
    state: str
    error: str | None = None
    hard: bool = False
    bytes_sent: int = 0
    quarantined: bool = False  # the entry's session was quarantined (drain goes on with the others)


class Uploader:
    """Journal-driven uploader for one data dir and one store.

    ``call_active`` tells whether a call is being recorded (policy ``upload.during_call``:
    run, pause, throttle to ``upload.call_kbps``). ``wall``/``sleep`` are injectable.
    ``on_event`` receives progress dicts (uploaded, verified, purged, failed).
    """

    def __init__(self, store: Store, journal: Journal, spool_dir: Path, policy: Any, *,
                 station_id: str = "station", call_active: Callable[[], bool] = lambda: False,
                 on_event: Callable[[dict[str, Any]], None] | None = None,
                 audit: Any = None, wall: Callable[[], float] = time.time,
                 backoff: Backoff | None = None, poll_s: float = 1.0,
                 lock_path: Path | None = None) -> None:
        self.store = store
        self.journal = journal
        self.spool_dir = Path(spool_dir)
        self.policy = policy
        self.station_id = station_id
        self.call_active = call_active
        self.on_event = on_event or (lambda ev: None)
        self.audit = audit
        self.wall = wall
        up = policy.upload
        self.backoff = backoff or Backoff(up.retry_initial_s, 1.5, up.retry_max_s)
        self.concurrency = int(up.concurrency)  # parallel part uploads (the store's part pool)
        # objects in progress: one more than the part pool, so that while one object waits for
        # its HEAD, complete or journal, the parts of the others keep the pool busy
        self.objects_in_flight = self.concurrency + 1
        self.poll_s = poll_s
        self.lock_path = lock_path  # one active uploader per data dir (the app or a CLI run)
        self.prefix = store.prefix
        self.object_lock: dict[str, Any] | None = None
        self.stats: dict[str, int] = defaultdict(int)
        self._stats_lock = threading.Lock()
        self._working: dict[str, int] = defaultdict(int)  # session -> entries being hashed or sent

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_context(cls, ctx: Any, **kw: Any) -> Uploader:
        """Wire journal, bandwidth limiter and store from a :class:`station.context.Context`."""
        call_active = kw.pop("call_active", lambda: False)
        limiter = TokenBucket(lambda: upload_rate_bytes_s(ctx.policy, call_active()))
        store = open_store(ctx.policy, ctx.secrets, ctx.data_dir, limiter=limiter)
        ctx.ensure_dirs()
        journal = Journal(journal_path(ctx.data_dir))
        return cls(store, journal, ctx.spool_dir, ctx.policy, station_id=ctx.station_id,
                   call_active=call_active, audit=ctx.audit,
                   lock_path=journal_path(ctx.data_dir).with_suffix(".lock"), **kw)

    def close(self) -> None:
        self.store.close()
        self.journal.close()

    # --- steps --------------------------------------------------------------------------------
    def check_store(self) -> dict[str, Any]:
        """Object Lock status per policy (raises ObjectLockRefused / auth errors); journaled."""
        try:
            status = self.store.check_object_lock(self.policy.storage.object_lock)
        except StorageError as exc:
            self._note_error(str(exc))
            raise
        self.object_lock = status
        self.journal.set_meta("object_lock", status)
        self.journal.set_meta("store", self.store.describe())
        if status.get("warning"):
            self._emit({"event": "warning", "message": status["warning"]})
        return status

    def scan(self) -> int:
        """Journal every ready spool file not journaled yet; returns how many were added.
        Quarantined sessions are left alone here, except that those whose folder changed are
        checked again first (:meth:`recheck_quarantined`)."""
        if not self.spool_dir.is_dir():
            return 0
        if not self.paused():  # no hashing during a call
            self.recheck_quarantined()
        quarantined = self.journal.quarantined_ids()
        known = self.journal.known_paths()
        added = 0
        for session_dir in sorted(p for p in self.spool_dir.iterdir() if p.is_dir()):
            if session_dir.name in quarantined:
                continue
            try:
                markers = [str(session_dir / n) for n in os.listdir(session_dir)
                           if n == layout.SESSION_MANIFEST or layout.MANIFEST_RE.fullmatch(n)]
            except OSError:
                continue
            if all(m in known for m in markers):
                continue  # nothing new since the last scan (manifests are written last)
            try:
                files = layout.ready_files(session_dir, self.station_id)
            except layout.ManifestUnreadable as exc:
                if layout.SESSION_ID_RE.fullmatch(session_dir.name):
                    self._quarantine_session(session_dir.name, f"spool manifest unreadable: {exc}")
                else:
                    self._note_error(f"spool session {session_dir.name}: {exc}")
                continue
            for f in files:
                if str(f.path) in known:
                    continue
                try:
                    key = layout.session_key(self.prefix, f.session_id, f.station, f.filename)
                except ValueError as exc:  # e.g. a station id unusable in object keys
                    self._note_error(f"spool session {session_dir.name}: {exc}")
                    break
                if self.journal.add(key, f.path, role=f.role, session_id=f.session_id, seq=f.seq,
                                    expect_sha256=f.sha256, expect_size=f.size):
                    added += 1
        return added

    def enqueue(self, key: str, path: Path, role: str = layout.AUDIT) -> bool:
        """Journal any other file (audit records, enrolment) for upload under ``key``."""
        return self.journal.add(key, path, role=role)

    def ship_audit(self) -> int:
        """Copy audit lines written since the last call into an outbox file and journal it for
        ``<prefix>/audit/station/<station>/...`` (the local log stays; the copy goes to storage
        where Object Lock keeps it). Returns the number of bytes newly queued."""
        path = getattr(self.audit, "path", None)
        if path is None or not Path(path).exists():
            return 0
        shipped = int(self.journal.get_meta("audit_shipped_bytes", 0) or 0)
        size = Path(path).stat().st_size
        if size < shipped:  # the log was replaced: start over
            shipped = 0
        if size == shipped:
            return 0
        with open(path, "rb") as fh:
            fh.seek(shipped)
            data = fh.read(size - shipped)
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            return 0
        outbox = Path(path).parent / "outbox"
        outbox.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(self.wall()))}-{shipped:012d}.jsonl"
        tmp = outbox / f".{name}.tmp"
        with open(tmp, "wb") as out:
            out.write(data[:cut])
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, outbox / name)
        self.journal.add(layout.audit_key(self.prefix, f"station/{self.station_id}/{name}"),
                         outbox / name, role=layout.AUDIT)
        self.journal.set_meta("audit_shipped_bytes", shipped + cut)
        return cut

    def _hash(self, e: Entry) -> Entry:
        path = Path(e.path)
        try:
            size = path.stat().st_size
            digest = digest_file(path, self.store.plan_part_size(size))
        except FileNotFoundError:
            raise SpoolCorrupt(e.path, "the file is missing") from None
        if e.expect_size is not None and digest.size != e.expect_size:
            raise SpoolCorrupt(e.path, f"size {digest.size}, manifest says {e.expect_size}")
        if e.expect_sha256 is not None and digest.sha256 != e.expect_sha256:
            raise SpoolCorrupt(e.path, f"sha256 {digest.sha256}, manifest says {e.expect_sha256}")
        if e.role == layout.MANIFEST and e.session_id:
            self._check_manifest(e)
        return self.journal.transition(e.key, SEALED, QUEUED, sha256=digest.sha256, size=digest.size,
                                       part_size=digest.part_size, md5s=list(digest.part_md5s))

    def _check_manifest(self, e: Entry) -> None:
        """A segment manifest about to be hashed must still list each of its segment's files with
        the size and SHA-256 the file was (or will be) checked against: a manifest replaced after
        the scan is not uploaded next to files it does not describe."""
        try:
            listed = {name: (sha, size) for name, sha, size in
                      layout._files_of(layout._read_json(Path(e.path)))}
        except layout.ManifestUnreadable as exc:
            raise ManifestChanged(e.path, f"it is unreadable now ({exc})") from None
        for s in self.journal.entries(session_id=e.session_id):
            if s.role != layout.SEGMENT or s.seq != e.seq:
                continue
            name = Path(s.path).name
            if name not in listed:
                raise ManifestChanged(e.path, f"it no longer lists {name}")
            sha, size = listed[name]
            if (sha, size) != (s.expect_sha256, s.expect_size):
                raise ManifestChanged(e.path, f"it lists {name} with size {size}, sha256 {sha}; the file "
                                      f"was checked against size {s.expect_size}, sha256 {s.expect_sha256}")

    @contextlib.contextmanager
    def _work_on(self, e: Entry) -> Iterator[None]:
        """Mark ``e``'s session busy (a quarantined session is not checked again meanwhile)."""
        with self._stats_lock:
            self._working[e.session_id] += 1
        try:
            yield
        finally:
            with self._stats_lock:
                self._working[e.session_id] -= 1

    def hash_entry(self, e: Entry) -> Outcome:
        """SEALED -> QUEUED; if the spool file does not match its manifest, FAILED and its session
        quarantined."""
        with self._work_on(e):
            return self._hash_entry(e)

    def _hash_entry(self, e: Entry) -> Outcome:
        try:
            e = self._hash(e)
            return Outcome(e.key, e.state)
        except SpoolCorrupt as exc:
            return self._spool_corrupt(e, exc)
        except JournalConflict:
            return Outcome(e.key, "?")
        except OSError as exc:
            return self._failed(e, f"{e.path}: {exc.strerror or exc}", True)

    @staticmethod
    def _digest(e: Entry) -> Digest:
        assert e.sha256 is not None and e.size is not None and e.md5s
        return Digest(e.size, e.sha256, e.part_size or 0, tuple(e.md5s))

    def process(self, e: Entry) -> Outcome:
        """Take one entry as far as VERIFIED. Never raises for storage or spool problems."""
        with self._work_on(e):
            return self._process(e)

    def _process(self, e: Entry) -> Outcome:
        fresh = self.journal.get(e.key)  # another uploader may have moved it meanwhile
        if fresh is None or fresh.state != e.state:
            return Outcome(e.key, fresh.state if fresh else "?")
        try:
            if e.state == SEALED:
                e = self._hash(e)
            sent = 0
            if e.state in (QUEUED, UPLOADING):
                digest = self._digest(e)
                cp = _JournalCheckpoint(self.journal, e)
                before = self._part_bytes()
                info = self.store.put(e.key, Path(e.path), digest=digest, checkpoint=cp)
                sent = self._part_bytes() - before if digest.multipart else digest.size
                e = self.journal.transition(e.key, cp.state, COMPLETED, etag=info.etag)
                self._bump("uploaded")
                self._emit({"event": "uploaded", "key": e.key, "bytes": e.size})
            if e.state == COMPLETED:
                try:
                    self.store.verify(e.key, self._digest(e))
                except ObjectMissing:
                    self.journal.transition(e.key, COMPLETED, QUEUED, upload_id=None, parts={})
                    raise
                e = self.journal.transition(e.key, COMPLETED, VERIFIED, last_error=None)
                if (e.part_size or 0) > 0 and hasattr(self.store, "abort_orphans"):
                    self.store.abort_orphans(e.key)
                self._bump("verified")
                self._emit({"event": "verified", "key": e.key})
            return Outcome(e.key, e.state, bytes_sent=sent)
        except SpoolCorrupt as exc:
            return self._spool_corrupt(e, exc)
        except StorageError as exc:
            return self._failed(e, str(exc), exc.hard)
        except JournalConflict as exc:  # another process moved it; look again next pass
            log.info("%s", exc)
            return Outcome(e.key, "?")
        except OSError as exc:
            return self._failed(e, f"{e.path}: {exc.strerror or exc}", True)

    def _failed(self, e: Entry, message: str, hard: bool) -> Outcome:
        cur = self.journal.get(e.key)
        if cur is not None and cur.state in (VERIFIED, PURGED):  # another uploader finished it
            log.info("%s failed here but is already %s: %s", e.key, cur.state, message)
            return Outcome(e.key, cur.state)
        attempts = (cur.attempts if cur else e.attempts) + 1
        delay = self.backoff.delay_s(attempts) if not hard else self.backoff.max_s
        with contextlib.suppress(Exception):
            self.journal.fail(cur or e, message, hard=hard, retry_at=self.wall() + delay)
        self._note_error(message)
        self._bump("failed")
        self._emit({"event": "failed", "key": e.key, "error": message, "hard": hard,
                    "retry_in_s": round(delay, 2)})
        log.warning("upload of %s failed (%s, attempt %d, retry in %.1f s): %s", e.key,
                    "hard" if hard else "soft", attempts, delay, message)
        return Outcome(e.key, FAILED, message, hard)

    # --- quarantine ---------------------------------------------------------------------------
    def _spool_corrupt(self, e: Entry, exc: SpoolCorrupt) -> Outcome:
        """A spool file does not match its manifest: FAILED, and its session quarantined (an
        audit or enrolment file has no session: a hard failure as before)."""
        if not e.session_id or e.role not in SESSION_ROLES:
            return self._failed(e, str(exc), True)
        message = str(exc)
        cur = self.journal.get(e.key)
        if cur is not None and cur.state in (VERIFIED, PURGED):  # another uploader finished it
            return Outcome(e.key, cur.state)
        with contextlib.suppress(Exception):
            self.journal.fail(cur or e, message, hard=True, retry_at=self.wall() + self.backoff.max_s)
        self._bump("failed")
        self._quarantine_session(e.session_id, message, file=e.path)
        return Outcome(e.key, FAILED, message, hard=True, quarantined=True)

    def _quarantine_session(self, session_id: str, reason: str, *, file: str | None = None,
                            fingerprint: str = "") -> None:
        """Quarantine a spool session (its files stay where they are); audited, logged and
        reported once per quarantine. ``fingerprint``: of the folder as :meth:`recheck_quarantined`
        found it; "" (not checked against the folder as it is now: the journaled expectations may
        be older than the manifest) makes the next scan check the session again."""
        self._note_error(reason)
        if not self.journal.quarantine(session_id, reason, file=file, fingerprint=fingerprint):
            log.debug("spool session %s stays quarantined: %s", session_id, reason)
            return
        log.error("spool session %s quarantined, not uploaded until its files match its manifest again "
                  "(nothing deleted; the other sessions go on): %s", session_id, reason)
        if self.audit is not None:
            with contextlib.suppress(Exception):
                self.audit.append("spool_quarantined", session=session_id, file=file, reason=reason)
        self._emit({"event": "quarantined", "session": session_id, "file": file, "error": reason})

    def recheck_quarantined(self, *, force: bool = False) -> list[str]:
        """Look again at each quarantined session whose spool folder changed since (every one:
        ``force``): read its manifests again (a restored manifest's sizes and SHA-256 replace the
        journaled ones), hash its files not yet sent again, and lift the quarantine of a session
        that matches its manifest now (audited). Returns the sessions lifted."""
        lifted = []
        for q in self.journal.quarantined():
            sid = q["session_id"]
            session_dir = self.spool_dir / sid
            fingerprint = _fingerprint(session_dir)
            if not force and fingerprint == q["fingerprint"]:
                continue
            with self._stats_lock:
                if self._working[sid] > 0:
                    continue  # a file of it is being hashed or sent right now: next scan
            try:
                self._recheck(session_dir)
            except SpoolCorrupt as exc:
                self._quarantine_session(sid, str(exc), file=str(exc.args[0]), fingerprint=fingerprint)
                continue
            except layout.ManifestUnreadable as exc:
                self._quarantine_session(sid, f"spool manifest unreadable: {exc}", fingerprint=fingerprint)
                continue
            except OSError as exc:
                self._quarantine_session(sid, f"spool session {sid}: {exc.strerror or exc}"
                                         + (f": {exc.filename}" if exc.filename else ""),
                                         fingerprint=fingerprint)
                continue
            except JournalConflict as exc:  # another uploader moved an entry: look again next scan
                log.info("%s", exc)
                continue
            if not self.journal.lift_quarantine(sid):
                continue  # another uploader lifted it
            self.journal.retry_all_now(sid)
            log.warning("spool session %s matches its manifest again: quarantine lifted, it uploads now", sid)
            if self.audit is not None:
                with contextlib.suppress(Exception):
                    self.audit.append("spool_quarantine_lifted", session=sid, reason=q["reason"])
            self._emit({"event": "quarantine_lifted", "session": sid})
            lifted.append(sid)
        return lifted

    def _recheck(self, session_dir: Path) -> None:
        """Raise SpoolCorrupt (or ManifestUnreadable, OSError) unless every file of a quarantined
        session matches its manifest as it is now. Files not sent yet are hashed again and end
        ``QUEUED``; expectations come from the manifest again."""
        if not session_dir.is_dir():
            raise SpoolCorrupt(str(session_dir), "the session folder is missing")
        ready = layout.ready_files(session_dir, self.station_id)
        journaled = {e.path: e for e in self.journal.entries(session_id=session_dir.name)}
        for f in ready:
            e = journaled.get(str(f.path))
            if e is None:
                continue  # new since the quarantine: the scan journals it and hashing checks it
            if e.state == FAILED and e.resume in (SEALED, QUEUED):
                e = self.journal.revive(e)
            if e.state == QUEUED:  # hashed but nothing sent: the repair may have changed the file
                e = self.journal.transition(e.key, QUEUED, SEALED, sha256=None, size=None, md5s=None,
                                            part_size=None)
            if e.state == SEALED:
                if (e.expect_sha256, e.expect_size) != (f.sha256, f.size):
                    e = self.journal.expect(e.key, f.sha256, f.size)  # the manifest changed
                try:
                    self._hash(e)
                except (SpoolCorrupt, OSError) as exc:
                    with contextlib.suppress(Exception):
                        self.journal.fail(e, str(exc), hard=True, retry_at=self.wall() + self.backoff.max_s)
                    raise
            elif f.role == layout.SEGMENT and (f.sha256, f.size) != (e.expect_sha256, e.expect_size):
                raise ManifestChanged(str(session_dir / f"seg-{f.seq:06d}.manifest.json"),
                                      f"it lists {f.filename} with size {f.size}, sha256 {f.sha256}; the "
                                      f"file was sent as size {e.expect_size}, sha256 {e.expect_sha256}")

    def purge_ready(self) -> list[str]:
        """Delete local files of sessions whose every object, session.json included, is VERIFIED
        (never of a quarantined session)."""
        purged = []
        sessions: set[str] = set()
        quarantined = self.journal.quarantined_ids()
        for e in self.journal.entries([VERIFIED]):
            if e.role == layout.SESSION:
                sessions.add(e.session_id)
            elif e.role == layout.AUDIT:  # outbox copies of the audit log
                with contextlib.suppress(FileNotFoundError, JournalConflict):
                    Path(e.path).unlink()
                    self.journal.transition(e.key, VERIFIED, PURGED)
        for sid in sorted(sessions - quarantined):
            entries = [e for e in self.journal.entries(session_id=sid)
                       if e.role in (layout.SEGMENT, layout.MANIFEST, layout.SESSION)]
            live = [e for e in entries if e.state != PURGED]
            if not live or not any(e.role == layout.SESSION for e in live):
                continue
            if not all(e.state == VERIFIED for e in live):
                continue
            session_dir = Path(live[0].path).parent
            for e in sorted(live, key=lambda x: x.role == layout.SESSION):  # session.json last
                with contextlib.suppress(FileNotFoundError):
                    Path(e.path).unlink()
                with contextlib.suppress(JournalConflict):  # another uploader purged it too
                    self.journal.transition(e.key, VERIFIED, PURGED)
            with contextlib.suppress(FileNotFoundError):  # the seat's own recovery aid
                (session_dir / CHECKPOINTS).unlink()
            with contextlib.suppress(OSError):
                session_dir.rmdir()  # only if empty: anything unexpected stays for a human
            if session_dir.exists():
                log.warning("spool %s: purged uploaded files, other files remain", session_dir)
            if self.audit is not None:
                with contextlib.suppress(Exception):
                    self.audit.append("spool_purged", session=sid, objects=len(live),
                                      store=self.store.describe())
            purged.append(sid)
            self._emit({"event": "purged", "session": sid, "objects": len(live)})
        return purged

    # --- scheduling ---------------------------------------------------------------------------
    def _eligible(self, entries: list[Entry]) -> list[Entry]:
        """Entries that may start now, respecting the order rules."""
        by_seg: dict[tuple[str, int], list[Entry]] = defaultdict(list)
        by_session: dict[str, list[Entry]] = defaultdict(list)
        for e in entries:
            by_seg[(e.session_id, e.seq)].append(e)
            by_session[e.session_id].append(e)
        out = []
        for e in entries:
            state = e.effective_state
            if state not in (SEALED, QUEUED, UPLOADING, COMPLETED):
                continue
            if e.role == layout.MANIFEST and state != COMPLETED:
                segs = [x for x in by_seg[(e.session_id, e.seq)] if x.role == layout.SEGMENT]
                if not all(x.state in DONE_STATES for x in segs):
                    continue
            if e.role == layout.SESSION and state != COMPLETED:
                others = [x for x in by_session[e.session_id] if x.key != e.key]
                if not all(x.state in (VERIFIED, PURGED) for x in others):
                    continue
            out.append(e)
        return out

    def paused(self) -> bool:
        return self.policy.upload.during_call == "pause" and bool(self.call_active())

    def drain(self, *, wait_retries: bool = True, timeout_s: float | None = None,
              stop: threading.Event | None = None, retry_now: bool = True,
              check: bool = True) -> dict[str, Any]:
        """See :meth:`_drain`; first takes the data dir's uploader lock (``lock_path``): while
        another uploader holds it, wait (``wait_retries``) or report ``busy``."""
        if self.lock_path is None:
            return self._drain(wait_retries=wait_retries, timeout_s=timeout_s, stop=stop,
                               retry_now=retry_now, check=check)
        stop = stop or threading.Event()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        busy = "another uploader (the running station) is uploading this spool"
        try:
            waited = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waited and wait_retries:
                        self._emit({"event": "waiting", "message": busy})
                        waited = True
                    if not wait_retries or stop.is_set() or (
                            deadline is not None and time.monotonic() > deadline):
                        summary = self._summary(None)
                        summary["busy"] = busy
                        return summary
                    stop.wait(0.2)
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            return self._drain(wait_retries=wait_retries, timeout_s=left, stop=stop,
                               retry_now=retry_now, check=check)
        finally:
            os.close(fd)  # releases the lock

    def _drain(self, *, wait_retries: bool, timeout_s: float | None,
               stop: threading.Event | None, retry_now: bool, check: bool) -> dict[str, Any]:
        """Upload until nothing is pending (``wait_retries``: also wait out soft-failure backoffs),
        a hard failure, ``timeout_s`` or ``stop``. Returns a summary. Quarantined sessions do not
        count as pending: the summary lists them (``quarantined``).

        ``retry_now``: failed entries are due at once and every quarantined session is checked
        again (an operator asked); ``check``: read the bucket's Object Lock status first and apply
        the policy."""
        stop = stop or threading.Event()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if retry_now:
            self.journal.retry_all_now()
            if not self.paused():
                self.recheck_quarantined(force=True)
        hard: list[str] = []
        inflight: dict[str, Future[Outcome]] = {}
        self.scan()
        error: str | None = None
        attempt = 0
        while check or self.object_lock is None:
            try:
                self.check_store()
                break
            except StorageError as exc:  # unreachable at start: soft errors wait like uploads do
                attempt += 1
                delay = self.backoff.delay_s(attempt)
                if exc.hard or not wait_retries or stop.is_set() or (
                        deadline is not None and time.monotonic() + delay > deadline):
                    return self._summary(str(exc))
                self._emit({"event": "failed", "key": "(storage)", "error": str(exc), "hard": False,
                            "retry_in_s": round(delay, 2)})
                stop.wait(delay)
        hashing: dict[str, Future[Outcome]] = {}
        with ThreadPoolExecutor(self.objects_in_flight, thread_name_prefix="upload") as pool, \
                ThreadPoolExecutor(1, thread_name_prefix="upload-hash") as hash_pool:
            while not stop.is_set():
                self.scan()
                with contextlib.suppress(OSError):
                    self.ship_audit()
                now = self.wall()
                quarantined = self.journal.quarantined_ids()
                for e in self.journal.entries([FAILED]):
                    if e.key not in inflight and (e.retry_at or 0) <= now and e.session_id not in quarantined:
                        with contextlib.suppress(JournalConflict):
                            self.journal.revive(e)
                entries = [e for e in self.journal.entries(PENDING) if e.session_id not in quarantined]
                pending_keys = {e.key for e in entries}
                # hash ahead in their own thread, so that upload threads only upload
                for e in entries:
                    if len(hashing) >= 2 or hard or self.paused():  # no CPU taken during a call
                        break
                    if e.state == SEALED and e.key not in hashing and e.key not in inflight:
                        hashing[e.key] = hash_pool.submit(self.hash_entry, e)
                eligible = [e for e in self._eligible(entries)
                            if e.key not in inflight and e.state not in (FAILED, SEALED)]
                if not hard and not self.paused():
                    for e in eligible:
                        if len(inflight) >= self.objects_in_flight:
                            break
                        inflight[e.key] = pool.submit(self.process, e)
                if self.purge_ready():
                    with contextlib.suppress(OSError):
                        self.ship_audit()  # the purge records go up in the same drain
                    continue
                if not inflight and not hashing:
                    if hard:
                        error = hard[0]
                        break
                    if not pending_keys:
                        break
                    waiting = [e for e in self.journal.entries([FAILED]) if e.session_id not in quarantined]
                    if not wait_retries and (not eligible or self.paused()):
                        error = waiting[0].last_error if waiting else None
                        break
                    if deadline is not None and time.monotonic() > deadline:
                        error = "timed out with uploads pending" + (
                            f"; last error: {waiting[0].last_error}" if waiting else "")
                        break
                    next_at = min((e.retry_at or now for e in waiting), default=now + self.poll_s)
                    stop.wait(min(max(next_at - self.wall(), 0.02), self.poll_s))
                    continue
                done, _ = wait([*inflight.values(), *hashing.values()], timeout=self.poll_s,
                               return_when=FIRST_COMPLETED)
                for f in done:
                    out = f.result()
                    if inflight.get(out.key) is f:
                        inflight.pop(out.key)
                    else:
                        hashing.pop(out.key, None)
                    if out.hard and out.error and not out.quarantined:
                        hard.append(out.error)
                if deadline is not None and time.monotonic() > deadline and not hard:
                    hard.append("timed out with uploads pending")
            for f in [*inflight.values(), *hashing.values()]:
                f.result()
        self.purge_ready()
        if error is None and not self.journal.entries(PENDING):
            self.journal.set_meta("last_error", None)
        return self._summary(error)

    def run_forever(self, stop: threading.Event, rescan_s: float = 5.0) -> None:
        """The background loop of the running app: upload whatever is ready, wait for new sealed
        files, back off (up to ``upload.retry_max_s``) while storage is unusable. Returns soon
        after ``stop`` is set (an upload in flight is finished or left for the resume)."""
        errors = 0
        while not stop.is_set():
            try:
                result = self.drain(wait_retries=True, stop=stop, retry_now=False,
                                    check=errors > 0 or self.object_lock is None)
                errors = errors + 1 if result.get("error") else 0
            except Exception:  # the loop must survive anything; it is logged
                log.exception("upload loop error")
                errors += 1
            stop.wait(self.backoff.delay_s(errors) if errors else rescan_s)

    # --- helpers ------------------------------------------------------------------------------
    def _part_bytes(self) -> int:
        counters = getattr(self.store, "counters", None)
        return int(counters["part_bytes"]) if counters is not None else 0

    def _bump(self, name: str) -> None:
        with self._stats_lock:
            self.stats[name] += 1

    def _emit(self, event: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            self.on_event(event)

    def _note_error(self, message: str) -> None:
        with contextlib.suppress(Exception):
            self.journal.set_meta("last_error", {"at": self.wall(), "message": message})

    def _summary(self, error: str | None) -> dict[str, Any]:
        b = backlog_of(self.journal, self.spool_dir, self.station_id, self.wall())
        return {"error": error, "uploaded": self.stats["uploaded"], "verified": self.stats["verified"],
                "failed": self.stats["failed"], "object_lock": self.object_lock,
                "quarantined": b["quarantined"], "backlog": b}


def upload_rate_bytes_s(policy: Any, call_active: bool) -> float | None:
    """Current bandwidth cap in bytes/s (None: unlimited, 0: paused) for the policy and call state."""
    cap = bandwidth_bytes_s(int(policy.upload.bandwidth_kbps))
    if call_active:
        mode = policy.upload.during_call
        if mode == "pause":
            return 0.0
        if mode == "throttle":
            call = float(policy.upload.call_kbps) * 1000 / 8
            return call if cap is None else min(cap, call)
    return cap


def backlog_of(journal: Journal, spool_dir: Path, station_id: str = "station",
               now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    count, size, oldest = 0, 0, None
    for e in journal.entries(PENDING):
        count += 1
        size += int(e.size if e.size is not None else e.expect_size or _size(Path(e.path)))
        oldest = e.created_at if oldest is None else min(oldest, e.created_at)
    known = journal.known_paths()
    if Path(spool_dir).is_dir():
        for session_dir in Path(spool_dir).iterdir():
            if not session_dir.is_dir():
                continue
            with contextlib.suppress(OSError):
                if all(str(session_dir / n) in known for n in os.listdir(session_dir)
                       if n == layout.SESSION_MANIFEST or layout.MANIFEST_RE.fullmatch(n)):
                    continue  # everything ready there is journaled (and counted above)
            with contextlib.suppress(layout.ManifestUnreadable, OSError):
                for f in layout.ready_files(session_dir, station_id):
                    if str(f.path) not in known:
                        count += 1
                        size += _size(f.path)
                        mtime = f.path.stat().st_mtime
                        oldest = mtime if oldest is None else min(oldest, mtime)
    last = journal.get_meta("last_error")
    failed = journal.entries([FAILED])
    return {"count": count, "bytes": size,
            "oldest_age_s": None if oldest is None else round(max(now - oldest, 0.0), 1),
            "last_error": (last or {}).get("message") if last else None,
            "failed": len(failed), "object_lock": journal.get_meta("object_lock"),
            "states": journal.counts(),
            "quarantined": [{"session_id": q["session_id"], "reason": q["reason"], "file": q["file"],
                             "since": q["since"]} for q in journal.quarantined()]}


def _fingerprint(session_dir: Path) -> str:
    """Names, sizes, inodes and change times of a spool session folder's files: a quarantined
    session is checked again when this changes (a file or the manifest restored)."""
    try:
        with os.scandir(session_dir) as it:
            items = sorted((d.name, st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
                           for d in it for st in (d.stat(follow_symlinks=False),))
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def finished_in_journal(data_dir: Path) -> dict[str, str]:
    """Sessions whose session.json the upload journal has seen: ``{session id: detail}`` (crash
    recovery treats such a session, found again without its session.json, as tampered with)."""
    path = journal_path(Path(data_dir))
    if not path.exists():
        return {}
    j = Journal(path)
    try:
        return {e.session_id: f"the upload journal holds this session's session.json ({e.key}, "
                f"{e.state}); the spool copy is gone"
                for e in j.entries() if e.role == layout.SESSION and e.session_id}
    finally:
        j.close()


def backlog(data_dir: Path, station_id: str = "station") -> dict[str, Any]:
    """Backlog for the UI and ``station doctor``: count, bytes, oldest_age_s, last_error,
    object_lock (last known), quarantined (``session_id``, ``reason``, ``file``, ``since`` of each
    quarantined session; its files are counted in ``count``). Reads the journal; never contacts
    storage."""
    data_dir = Path(data_dir)
    path = journal_path(data_dir)
    # no journal yet (the uploader never ran): an in-memory one still counts the ready spool files
    j = Journal(path if path.exists() else Path(":memory:"))
    try:
        return backlog_of(j, data_dir / "spool", station_id)
    finally:
        j.close()
