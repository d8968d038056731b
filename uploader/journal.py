"""The upload journal: one SQLite row per object to upload, moved through explicit states.

::

    SEALED -> QUEUED -> UPLOADING{upload_id, part_size, parts} -> COMPLETED -> VERIFIED -> PURGED
       any state but PURGED -> FAILED{attempts, retry_at, resume}      FAILED -> resume state

* ``SEALED``: the file is complete on the spool (its segment manifest exists); not hashed yet.
* ``QUEUED``: hashed (``sha256``, ``size``), and the hash matched the segment manifest.
* ``UPLOADING``: a multipart upload exists on the server (``upload_id``); ``parts`` maps part
  numbers to the MD5 of the local bytes the server acknowledged. On resume, ``ListParts`` is the
  truth and ``parts`` only a hint.
* ``COMPLETED``: the server accepted the object (put or CompleteMultipartUpload), ``etag`` noted.
* ``VERIFIED``: HEAD matched size, our SHA-256 metadata and the ETag of the part MD5s.
* ``PURGED``: the local file was deleted (only ever after VERIFIED).
* ``FAILED``: the last attempt failed; ``resume`` is the state to go back to at ``retry_at``.

A spool session whose files do not match its manifest is **quarantined** (table ``quarantine``:
session, reason, file, since, and a fingerprint of the session folder): the uploader leaves its
entries alone and uploads the other sessions; once the files match the manifest again the
quarantine is lifted and its entries go on from where they were. A quarantined session's hashed
but unsent entries go back ``QUEUED -> SEALED`` to be hashed again (the repair may have changed
the file).

Every transition is one transaction guarded by the expected current state (``UPDATE ... WHERE
state = ?``), so two processes or threads can never both move the same entry. The database runs
in WAL mode with ``synchronous=NORMAL``: a killed process loses no committed transition; a power
cut may lose the last few, which is harmless because storage is the truth: a forgotten part is
found by ``ListParts``, a forgotten completion by ``If-None-Match`` + HEAD, a forgotten purge by
the file already being gone. (``FULL`` cost an fsync per part.)
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from station import logs
from uploader.errors import JournalConflict

log = logs.get("upload")

SEALED, QUEUED, UPLOADING, COMPLETED, VERIFIED, PURGED, FAILED = (
    "SEALED", "QUEUED", "UPLOADING", "COMPLETED", "VERIFIED", "PURGED", "FAILED")
STATES = (SEALED, QUEUED, UPLOADING, COMPLETED, VERIFIED, PURGED, FAILED)
PENDING = (SEALED, QUEUED, UPLOADING, COMPLETED, FAILED)  # not yet safely in storage

# allowed moves (FAILED is reachable from every state but PURGED, and leads back to its resume)
TRANSITIONS: dict[str, tuple[str, ...]] = {
    SEALED: (QUEUED,),
    QUEUED: (UPLOADING, COMPLETED, SEALED),     # SEALED: hash again (its session was quarantined)
    UPLOADING: (UPLOADING, COMPLETED, QUEUED),   # QUEUED: the server forgot the upload id
    COMPLETED: (VERIFIED, QUEUED),               # QUEUED: HEAD found nothing (never completed)
    VERIFIED: (PURGED,),
    PURGED: (),
    FAILED: (SEALED, QUEUED, UPLOADING, COMPLETED),
}

FAILABLE = (SEALED, QUEUED, UPLOADING, COMPLETED, FAILED)

SCHEMA_VERSION = 2  # 2: the quarantine table (created in place on an existing journal)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    key         TEXT PRIMARY KEY,   -- object key in the store
    path        TEXT NOT NULL,      -- local file
    session_id  TEXT NOT NULL DEFAULT '',
    role        TEXT NOT NULL,      -- segment | manifest | session | audit | enrolment
    seq         INTEGER NOT NULL DEFAULT 0,
    expect_sha256 TEXT,             -- what the manifest says, if anything
    expect_size INTEGER,
    sha256      TEXT,               -- what we hashed locally
    size        INTEGER,
    state       TEXT NOT NULL,
    resume      TEXT,               -- FAILED: state to go back to
    upload_id   TEXT,
    part_size   INTEGER,
    parts       TEXT NOT NULL DEFAULT '{}',   -- {"1": "md5hex", ...} acknowledged by the server
    md5s        TEXT,               -- JSON list: MD5 of each local part (hash pass)
    etag        TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    retry_at    REAL,
    hard        INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_state ON objects(state);
CREATE INDEX IF NOT EXISTS objects_session ON objects(session_id);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    session_id  TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,      -- the spool file and how it differs from its manifest
    file        TEXT,
    since       REAL NOT NULL,
    fingerprint TEXT                -- names, sizes and change times of the session folder's files
);
"""


@dataclass
class Entry:
    key: str
    path: str
    session_id: str
    role: str
    seq: int
    state: str
    expect_sha256: str | None = None
    expect_size: int | None = None
    sha256: str | None = None
    size: int | None = None
    resume: str | None = None
    upload_id: str | None = None
    part_size: int | None = None
    parts: dict[int, str] = field(default_factory=dict)
    md5s: list[str] | None = None
    etag: str | None = None
    attempts: int = 0
    retry_at: float | None = None
    hard: bool = False
    last_error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Entry:
        d = dict(row)
        d["parts"] = {int(k): v for k, v in json.loads(d["parts"] or "{}").items()}
        d["hard"] = bool(d["hard"])
        d["md5s"] = json.loads(d["md5s"]) if d.get("md5s") else None
        return cls(**d)

    @property
    def effective_state(self) -> str:
        """The state work continues from (a FAILED entry's resume state)."""
        return (self.resume or SEALED) if self.state == FAILED else self.state


class Journal:
    """The SQLite upload journal (``<data>/journal.sqlite``). Thread-safe; several processes may
    open it (transitions are guarded by the expected state)."""

    def __init__(self, path: Path, wall: Any = time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wall = wall
        self._lock = threading.RLock()
        self.moved_aside: Path | None = None
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            # a damaged journal (disk error, garbage) never stops uploads: it is kept for a human,
            # and a new one re-scans the spool; objects already stored are found equal and kept
            if str(self.path) == ":memory:":
                raise
            with contextlib.suppress(Exception):
                self._db.close()
            self.moved_aside = self.path.with_name(
                f"{self.path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(self.path, self.moved_aside)
            for side in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}{side}", f"{self.moved_aside}{side}")
            log.error("upload journal %s is damaged (%s): kept as %s, a new one re-scans the spool",
                      self.path, exc, self.moved_aside.name)
            self._open()

    def _open(self) -> None:
        self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            self._db.executescript(_SCHEMA)
        version = self.get_meta("schema_version")
        if version is None or int(version) < SCHEMA_VERSION:  # once: readers (backlog) then never write
            self.set_meta("schema_version", str(SCHEMA_VERSION))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- meta ---------------------------------------------------------------------------------
    def set_meta(self, name: str, value: Any) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO meta(name, value) VALUES(?, ?) ON CONFLICT(name) DO UPDATE "
                       "SET value = excluded.value", (name, json.dumps(value)))

    def get_meta(self, name: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return default if row is None else json.loads(row[0])

    # --- entries ------------------------------------------------------------------------------
    def add(self, key: str, path: Path | str, *, role: str, session_id: str = "", seq: int = 0,
            expect_sha256: str | None = None, expect_size: int | None = None) -> bool:
        """Journal a new object as SEALED; False if the key is already journaled."""
        now = self._wall()
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO objects(key, path, session_id, role, seq, expect_sha256, "
                "expect_size, state, created_at, updated_at) VALUES(?,?,?,?,?,?,?,?,?,?)",
                (key, str(path), session_id, role, seq, expect_sha256, expect_size, SEALED, now, now))
            return cur.rowcount == 1

    def get(self, key: str) -> Entry | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM objects WHERE key = ?", (key,)).fetchone()
        return None if row is None else Entry.from_row(row)

    def entries(self, states: Iterable[str] | None = None, session_id: str | None = None) -> list[Entry]:
        sql, args = "SELECT * FROM objects", []
        where = []
        if states is not None:
            states = list(states)
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += states
        if session_id is not None:
            where.append("session_id = ?")
            args.append(session_id)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY session_id, seq, role = 'manifest', key"
        with self._lock:
            return [Entry.from_row(r) for r in self._db.execute(sql, args).fetchall()]

    def known_paths(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT path FROM objects").fetchall()}

    def transition(self, key: str, expect: str, to: str, **fields: Any) -> Entry:
        """Move ``key`` from ``expect`` to ``to`` and set ``fields`` in one transaction."""
        if to != FAILED and to not in TRANSITIONS[expect]:
            raise ValueError(f"journal: {expect} -> {to} is not a valid transition")
        if to == FAILED and expect not in FAILABLE:
            raise ValueError(f"journal: a {expect} entry cannot fail (it is safely stored)")
        if "parts" in fields:
            fields["parts"] = json.dumps({str(k): v for k, v in sorted(fields["parts"].items())})
        if "md5s" in fields and fields["md5s"] is not None:
            fields["md5s"] = json.dumps(list(fields["md5s"]))
        if "hard" in fields:
            fields["hard"] = int(bool(fields["hard"]))
        if to != FAILED:
            fields.setdefault("resume", None)
        fields["updated_at"] = self._wall()
        sets = ", ".join(f"{k} = ?" for k in fields)
        # a FAILED entry only goes back to the state it failed in (its resume state)
        guard = " AND resume = ?" if expect == FAILED and to != FAILED else ""
        args = (to, *fields.values(), key, expect) + ((to,) if guard else ())
        with self._tx() as db:
            cur = db.execute(f"UPDATE objects SET state = ?, {sets} WHERE key = ? AND state = ?{guard}",  # noqa: S608
                             args)
            if cur.rowcount != 1:
                row = db.execute("SELECT state FROM objects WHERE key = ?", (key,)).fetchone()
                raise JournalConflict(key, row[0] if row else "absent", expect)
            row = db.execute("SELECT * FROM objects WHERE key = ?", (key,)).fetchone()
        return Entry.from_row(row)

    def record_part(self, key: str, part_number: int, md5_hex: str) -> None:
        """Note one acknowledged part of an UPLOADING entry (read-modify-write in one transaction)."""
        with self._tx() as db:
            row = db.execute("SELECT parts, state FROM objects WHERE key = ?", (key,)).fetchone()
            if row is None or row["state"] != UPLOADING:
                raise JournalConflict(key, row["state"] if row else "absent", UPLOADING)
            parts = json.loads(row["parts"] or "{}")
            parts[str(part_number)] = md5_hex
            db.execute("UPDATE objects SET parts = ?, updated_at = ? WHERE key = ?",
                       (json.dumps(parts, sort_keys=True), self._wall(), key))

    def fail(self, entry: Entry, error: str, *, hard: bool, retry_at: float) -> Entry:
        """Move an entry to FAILED, remembering where to resume; counts the attempt. An entry that
        another uploader has meanwhile VERIFIED or PURGED is left alone (JournalConflict)."""
        current = self.get(entry.key)
        if current is None or current.state not in FAILABLE:
            raise JournalConflict(entry.key, current.state if current else "absent", entry.state)
        resume = current.resume if current.state == FAILED else current.state
        return self.transition(entry.key, current.state, FAILED, resume=resume,
                               attempts=current.attempts + 1, retry_at=retry_at, hard=hard,
                               last_error=error)

    def revive(self, entry: Entry) -> Entry:
        """FAILED -> its resume state (keeps upload_id and parts: resume goes through ListParts)."""
        return self.transition(entry.key, FAILED, entry.resume or SEALED, retry_at=None, hard=False)

    def retry_all_now(self, session_id: str | None = None) -> int:
        """Make every FAILED entry (of ``session_id``) due now (an operator asked for an upload)."""
        sql, args = "UPDATE objects SET retry_at = 0 WHERE state = ?", [FAILED]
        if session_id is not None:
            sql += " AND session_id = ?"
            args.append(session_id)
        with self._tx() as db:
            return db.execute(sql, args).rowcount

    def expect(self, key: str, sha256: str | None, size: int | None) -> Entry:
        """Take the expected SHA-256 and size of a not yet hashed (SEALED) entry from its manifest
        again (the manifest was restored or replaced since the entry was journaled)."""
        with self._tx() as db:
            cur = db.execute("UPDATE objects SET expect_sha256 = ?, expect_size = ?, updated_at = ? "
                             "WHERE key = ? AND state = ?", (sha256, size, self._wall(), key, SEALED))
            row = db.execute("SELECT * FROM objects WHERE key = ?", (key,)).fetchone()
            if cur.rowcount != 1:
                raise JournalConflict(key, row["state"] if row else "absent", SEALED)
        return Entry.from_row(row)

    # --- quarantine ---------------------------------------------------------------------------
    def quarantine(self, session_id: str, reason: str, *, file: str | None = None,
                   fingerprint: str | None = None) -> bool:
        """Quarantine a spool session; True if it was not quarantined before (a session already
        quarantined keeps its ``since`` and takes the new reason and fingerprint)."""
        with self._tx() as db:
            cur = db.execute("INSERT OR IGNORE INTO quarantine(session_id, reason, file, since, fingerprint) "
                             "VALUES(?,?,?,?,?)", (session_id, reason, file, self._wall(), fingerprint))
            if cur.rowcount == 1:
                return True
            db.execute("UPDATE quarantine SET reason = ?, file = ?, fingerprint = ? WHERE session_id = ?",
                       (reason, file, fingerprint, session_id))
            return False

    def lift_quarantine(self, session_id: str) -> bool:
        """End a session's quarantine; False if it was not quarantined (e.g. another uploader
        lifted it)."""
        with self._tx() as db:
            return db.execute("DELETE FROM quarantine WHERE session_id = ?", (session_id,)).rowcount == 1

    def quarantined(self) -> list[dict[str, Any]]:
        """Quarantined sessions, oldest first: ``session_id``, ``reason``, ``file``, ``since``,
        ``fingerprint``."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM quarantine ORDER BY since, session_id").fetchall()
        return [dict(r) for r in rows]

    def quarantined_ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT session_id FROM quarantine").fetchall()}

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM objects GROUP BY state").fetchall()
        return {r[0]: r[1] for r in rows}
