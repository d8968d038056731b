"""The session catalog: sessions listed from central storage, cached locally in SQLite.

Storage layout (uploader): ``<prefix>/<yyyy>/<mm>/<dd>/<station>/<session>/<file>``. A session is
the folder holding ``session.json`` (the signed session manifest); a folder with segment
manifests but no ``session.json`` is listed as ``incomplete`` (still recording, or cut off).

Refresh is incremental: the first refresh lists every day folder; later ones list only the days
from the last fully listed day on (minus :data:`RESCAN_DAYS`), and fetch a manifest only when its
key is new. Catalog rows hold what a reviewer filters on: id, station, agent, start, duration,
integrity verdict (from the last verification on this reviewer's machine), QC flags and missing
script steps (from the session's sealed QC report). No media and no customer data are cached.

The cache is one SQLite file per storage location under ``<data dir>/review/``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from station import logs

log = logs.get("review")

SESSION_MANIFEST = "session.json"
RESCAN_DAYS = 1
DAY_RE = re.compile(r"(?:^|/)(\d{4})/(\d{2})/(\d{2})/")
SCHEMA_VERSION = 2

# integrity verdicts as shown in the catalog
UNVERIFIED = "unverified"
INTACT = "intact"
INCOMPLETE = "incomplete"


class ListingStore(Protocol):
    """What the catalog needs of a :mod:`uploader.stores` store."""

    def list(self, prefix: str) -> Iterable[Any]: ...

    def get(self, key: str) -> bytes: ...


def _key_of(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, Mapping):
        return str(item.get("key") or item.get("Key"))
    return str(item.key)


@dataclass
class SessionRow:
    session_id: str
    station: str
    agent: str
    site: str
    start_utc: str
    duration_s: float
    segments: int
    folder: str          # object key folder of the session (no trailing slash)
    verdict: str = UNVERIFIED
    verdict_detail: str = ""
    qc_flags: list[str] = field(default_factory=list)
    missing_steps: list[str] = field(default_factory=list)
    qc_state: str = "none"   # none | stored | computed | error
    end_reason: str = ""
    has_qc_object: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"id": self.session_id, "station": self.station, "agent": self.agent, "site": self.site,
                "start": self.start_utc, "duration_s": round(self.duration_s, 3), "segments": self.segments,
                "verdict": self.verdict, "verdict_detail": self.verdict_detail, "qc_flags": self.qc_flags,
                "missing_steps": self.missing_steps, "qc": self.qc_state, "end_reason": self.end_reason,
                "folder": self.folder}


@dataclass
class Filter:
    """Catalog filters; None means 'any'. Dates are ISO strings compared on the start (UTC)."""

    date_from: str | None = None     # YYYY-MM-DD inclusive
    date_to: str | None = None       # YYYY-MM-DD inclusive
    station: str | None = None       # substring
    agent: str | None = None         # substring
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    qc_flag: str | None = None       # sessions carrying this flag; "any" = any flag
    missing_step: str | None = None  # sessions missing this step; "any" = any missing step
    verdict: str | None = None
    text: str | None = None          # substring of id, station or agent


SORT_COLUMNS = {"start": "start_utc", "id": "session_id", "station": "station", "agent": "agent",
                "duration": "duration_s", "verdict": "verdict", "flags": "qc_flags", "segments": "segments"}


def _first(doc: Mapping[str, Any], *paths: str, default: Any = None) -> Any:
    for path in paths:
        cur: Any = doc
        for part in path.split("."):
            if isinstance(cur, Mapping) and part in cur:
                cur = cur[part]
            else:
                cur = None
                break
        if cur not in (None, ""):
            return cur
    return default


def _parse_iso(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None


def start_from_id(session_id: str) -> str:
    """``20261124T062500Z-3fa9c2d1`` -> ``2026-11-24T06:25:00Z`` ('' if the id has another form)."""
    m = re.match(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z", session_id)
    return f"{m[1]}-{m[2]}-{m[3]}T{m[4]}:{m[5]}:{m[6]}Z" if m else ""


def row_from_manifest(doc: Mapping[str, Any], folder: str) -> SessionRow:
    """A catalog row from a parsed ``session.json`` (signed session manifest)."""
    body = doc.get("body") if isinstance(doc.get("body"), Mapping) else doc
    assert isinstance(body, Mapping)
    parts = folder.rstrip("/").split("/")
    sid = str(_first(body, "session_id", "session", "id", default=parts[-1]))
    station = str(_first(body, "station_id", "station", "meta.station",
                         default=parts[-2] if len(parts) > 1 else ""))
    start = str(_first(body, "started_utc", "meta.started_utc", "start_utc", "summary.started_utc",
                       default="") or start_from_id(sid))
    duration = _first(body, "duration_s", "summary.duration_s", "meta.duration_s")
    if duration is None:
        ns = _first(body, "duration_ns", "summary.duration_ns")
        if ns is not None:
            duration = float(ns) / 1e9
        else:
            ended = str(_first(body, "ended_utc", "summary.ended_utc", default=""))
            a, b = _parse_iso(start), _parse_iso(ended)
            duration = (b - a).total_seconds() if a and b else 0.0
    segs = _first(body, "segments", "segment_count", "summary.segments", default=0)
    if isinstance(segs, list):
        segs = len(segs)
    return SessionRow(session_id=sid, station=station,
                      agent=str(_first(body, "agent", "meta.agent", "summary.agent", default="")),
                      site=str(_first(body, "site", "meta.site", default="")), start_utc=start,
                      duration_s=float(duration or 0.0), segments=int(segs or 0), folder=folder.rstrip("/"),
                      end_reason=str(_first(body, "end_reason", "summary.end_reason", default="")))


def _flags_col(flags: Sequence[str]) -> str:
    return " " + " ".join(flags) + " " if flags else ""


def _split(col: str | None) -> list[str]:
    return (col or "").split()


class Catalog:
    """SQLite cache of the sessions in one storage location.

    ``store`` is a :mod:`uploader.stores` store; ``prefix`` is the key prefix sessions live under
    (``''`` for a store whose keys start with the year). Thread-safe: one connection guarded by a
    lock (the review window refreshes in a worker thread).
    """

    def __init__(self, store: ListingStore, db_path: Path, prefix: str = "") -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.db_path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    @classmethod
    def for_store(cls, store: Any, data_dir: Path) -> Catalog:
        """The catalog cache of ``store`` in the reviewer's data dir."""
        location = getattr(store, "describe", lambda: repr(store))() + "|" + getattr(store, "prefix", "")
        return cls(store, cls.db_path_for(data_dir, location), getattr(store, "prefix", ""))

    @staticmethod
    def db_path_for(data_dir: Path, location: str) -> Path:
        """One cache file per storage location (S3 endpoint+bucket+prefix, or local folder)."""
        digest = hashlib.sha256(location.encode("utf-8")).hexdigest()[:16]
        return Path(data_dir) / "review" / f"catalog-{digest}.sqlite"

    def _migrate(self) -> None:
        with self._lock:
            if self._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return
            # a cache: an old layout is simply rebuilt by the next refresh
            self._db.executescript("""
                DROP TABLE IF EXISTS sessions; DROP TABLE IF EXISTS days;
                CREATE TABLE sessions (
                    session_id TEXT PRIMARY KEY, station TEXT, agent TEXT, site TEXT,
                    start_utc TEXT, duration_s REAL, segments INTEGER, folder TEXT,
                    verdict TEXT, verdict_detail TEXT, qc_flags TEXT, missing_steps TEXT,
                    qc_state TEXT, end_reason TEXT, has_qc_object INTEGER, manifest_key TEXT);
                CREATE INDEX sessions_start ON sessions(start_utc);
                CREATE INDEX sessions_station ON sessions(station);
                CREATE INDEX sessions_agent ON sessions(agent);
                CREATE TABLE days (day TEXT PRIMARY KEY, listed_utc TEXT);
            """)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- refresh -----------------------------------------------------------------------------

    def _listed_days(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT day FROM days ORDER BY day")]

    def refresh(self, progress: Callable[[int], None] | None = None,
                today: dt.date | None = None, full: bool = False) -> dict[str, int]:
        """List storage and add new or changed sessions. Returns counts.

        Incremental unless ``full``: only the day folders from the last listed day (minus
        RESCAN_DAYS) to tomorrow are listed; an upload that lands later in an older day folder
        (a seat that was offline for days) is found by a full refresh."""
        base = self.prefix + "/" if self.prefix else ""
        listed = [] if full else self._listed_days()
        since: dt.date | None = None
        prefixes = [base]
        if listed:
            since = (dt.date.fromisoformat(listed[-1]) - dt.timedelta(days=RESCAN_DAYS))
            if getattr(self.store, "kind", "") != "local":
                # object stores list by prefix cheaply; a local folder store walks its whole tree
                # for any prefix, so it is listed once and old days are skipped below
                prefixes = self._day_prefixes(base, since, today or dt.datetime.now(dt.UTC).date())
        known = {r[0]: r[1] for r in self._db.execute("SELECT folder, manifest_key FROM sessions")}
        folders: dict[str, set[str]] = {}
        for p in prefixes:
            for item in self.store.list(p):
                key = _key_of(item)
                rel = key[len(base):] if key.startswith(base) else key
                m = DAY_RE.match(rel) if rel[:4].isdigit() else None
                if not m:
                    continue
                parts = rel.split("/")
                if len(parts) < 6:
                    continue
                if since is not None and "-".join(parts[:3]) < since.isoformat():
                    continue
                folder = base + "/".join(parts[:5])
                folders.setdefault(folder, set()).add(parts[-1] if len(parts) == 6 else "/".join(parts[5:]))
        added = updated = 0
        days_seen: set[str] = set()
        rows: list[tuple[SessionRow, str]] = []
        for n, (folder, names) in enumerate(sorted(folders.items())):
            rel = folder[len(base):]
            days_seen.add(rel[:10].replace("/", "-"))
            has_manifest = SESSION_MANIFEST in names
            manifest_key = folder + "/" + SESSION_MANIFEST if has_manifest else ""
            has_qc = "qc.json.drseg" in names
            prev = known.get(folder)
            if prev is not None and prev == manifest_key:
                if has_qc:
                    self._db.execute("UPDATE sessions SET has_qc_object=1 WHERE folder=? AND has_qc_object=0",
                                     (folder,))
                continue
            if has_manifest:
                try:
                    doc = json.loads(self.store.get(manifest_key))
                    row = row_from_manifest(doc, folder)
                except (ValueError, KeyError, TypeError, OSError) as exc:
                    log.warning("session manifest %s unreadable: %s", manifest_key, exc)
                    row = self._incomplete_row(folder, names)
                    row.verdict, row.verdict_detail = "unreadable-manifest", str(exc)[:200]
            else:
                row = self._incomplete_row(folder, names)
            row.has_qc_object = has_qc
            rows.append((row, manifest_key))
            if prev is None:
                added += 1
            else:
                updated += 1
            if progress and n % 500 == 0:
                progress(n)
        with self._lock:
            self._db.execute("BEGIN")
            for row, mkey in rows:
                self._upsert(row, mkey)
            now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            for day in days_seen:
                self._db.execute("INSERT OR REPLACE INTO days VALUES (?, ?)", (day, now))
            self._db.execute("COMMIT")
        return {"listed_folders": len(folders), "added": added, "updated": updated, "total": self.count()}

    @staticmethod
    def _day_prefixes(base: str, since: dt.date, until: dt.date) -> list[str]:
        days = []
        d = since
        while d <= until + dt.timedelta(days=1):
            days.append(f"{base}{d:%Y/%m/%d}/")
            d += dt.timedelta(days=1)
        return days

    @staticmethod
    def _incomplete_row(folder: str, names: set[str]) -> SessionRow:
        parts = folder.split("/")
        segs = sum(1 for n in names if n.endswith(".manifest.json"))
        sid = parts[-1]
        return SessionRow(session_id=sid, station=parts[-2], agent="", site="", start_utc=start_from_id(sid),
                          duration_s=0.0, segments=segs, folder=folder, verdict=INCOMPLETE,
                          verdict_detail="no session.json: still recording or cut off")

    def _upsert(self, row: SessionRow, manifest_key: str) -> None:
        old = self._db.execute("SELECT verdict, verdict_detail, qc_flags, missing_steps, qc_state "
                               "FROM sessions WHERE session_id=?", (row.session_id,)).fetchone()
        if old and row.verdict == UNVERIFIED:
            # keep what this reviewer already learned (verdict, QC) about an unchanged session
            row.verdict, row.verdict_detail = old[0], old[1]
            row.qc_flags, row.missing_steps, row.qc_state = _split(old[2]), _split(old[3]), old[4]
        self._db.execute(
            "INSERT OR REPLACE INTO sessions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (row.session_id, row.station, row.agent, row.site, row.start_utc, row.duration_s, row.segments,
             row.folder, row.verdict, row.verdict_detail, _flags_col(row.qc_flags),
             _flags_col(row.missing_steps), row.qc_state, row.end_reason, int(row.has_qc_object),
             manifest_key))

    def add_rows(self, rows: Iterable[SessionRow]) -> None:
        """Insert rows directly (tests and benchmarks of the query side)."""
        with self._lock:
            self._db.execute("BEGIN")
            for row in rows:
                self._upsert(row, row.folder + "/" + SESSION_MANIFEST)
            self._db.execute("COMMIT")

    # --- updates from verification and QC ------------------------------------------------------

    def set_verdict(self, session_id: str, verdict: str, detail: str = "") -> None:
        with self._lock:
            self._db.execute("UPDATE sessions SET verdict=?, verdict_detail=? WHERE session_id=?",
                             (verdict, detail[:500], session_id))

    def set_qc(self, session_id: str, flags: Sequence[str], missing_steps: Sequence[str],
               state: str = "stored") -> None:
        with self._lock:
            self._db.execute("UPDATE sessions SET qc_flags=?, missing_steps=?, qc_state=?, has_qc_object=1 "
                             "WHERE session_id=?",
                             (_flags_col(flags), _flags_col(missing_steps), state, session_id))

    def load_qc_reports(self, identities: Sequence[Any]) -> int:
        """Decrypt the stored QC reports of sessions whose flags are not loaded yet. Returns how many."""
        from station.review import qc as qcmod

        n = 0
        rows = self._select("WHERE qc_state='none' AND has_qc_object=1", [])
        for row in rows:
            try:
                report = qcmod.load_qc(self.store, row.folder, identities)
            except Exception as exc:  # a report this reviewer cannot open is shown as such
                log.warning("QC report of %s unreadable: %s", row.session_id, exc)
                self.set_qc(row.session_id, [], [], state="error")
                continue
            if report is not None:
                self.set_qc(row.session_id, report.flags, report.steps.get("missing", []), state="stored")
                n += 1
        return n

    # --- queries -------------------------------------------------------------------------------

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0])

    def get(self, session_id: str) -> SessionRow | None:
        rows = self._select("WHERE session_id=?", [session_id])
        return rows[0] if rows else None

    def needing_qc(self) -> list[SessionRow]:
        """Sessions whose QC report is not loaded yet (state none) and that are complete."""
        return self._select("WHERE qc_state='none' AND verdict!=?", [INCOMPLETE])

    def query(self, flt: Filter | None = None, sort: str = "start", descending: bool = True,
              limit: int | None = None) -> list[SessionRow]:
        flt = flt or Filter()
        where: list[str] = []
        args: list[Any] = []
        if flt.date_from:
            where.append("start_utc >= ?")
            args.append(flt.date_from)
        if flt.date_to:
            where.append("start_utc < ?")
            args.append((dt.date.fromisoformat(flt.date_to) + dt.timedelta(days=1)).isoformat())
        for col, val in (("station", flt.station), ("agent", flt.agent)):
            if val:
                where.append(f"instr(lower({col}), ?) > 0")
                args.append(val.lower())
        if flt.min_duration_s is not None:
            where.append("duration_s >= ?")
            args.append(flt.min_duration_s)
        if flt.max_duration_s is not None:
            where.append("duration_s <= ?")
            args.append(flt.max_duration_s)
        for col, val in (("qc_flags", flt.qc_flag), ("missing_steps", flt.missing_step)):
            if val == "any":
                where.append(f"{col} != ''")
            elif val:
                where.append(f"instr({col}, ?) > 0")
                args.append(f" {val} ")
        if flt.verdict:
            where.append("verdict = ?")
            args.append(flt.verdict)
        if flt.text:
            where.append("(instr(lower(session_id), ?) > 0 OR instr(lower(station), ?) > 0 "
                         "OR instr(lower(agent), ?) > 0)")
            args += [flt.text.lower()] * 3
        col = SORT_COLUMNS.get(sort, "")
        if not col:
            raise ValueError(f"cannot sort by {sort!r}; one of {', '.join(SORT_COLUMNS)}")
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        clause += f" ORDER BY {col} {'DESC' if descending else 'ASC'}, session_id"
        if limit:
            clause += f" LIMIT {int(limit)}"
        return self._select(clause, args)

    def _select(self, clause: str, args: Sequence[Any]) -> list[SessionRow]:
        with self._lock:
            cur = self._db.execute(
                "SELECT session_id, station, agent, site, start_utc, duration_s, segments, folder, verdict, "
                "verdict_detail, qc_flags, missing_steps, qc_state, end_reason, has_qc_object "
                "FROM sessions " + clause,  # clause: fixed column names; every value is a bound parameter
                list(args))
            return [SessionRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], _split(r[10]),
                               _split(r[11]), r[12], r[13], bool(r[14])) for r in cur]

    def __iter__(self) -> Iterator[SessionRow]:
        return iter(self.query())

