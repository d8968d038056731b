"""Object keys in central storage and what in the spool is ready to upload.

Bucket layout (docs/design.md)::

    <prefix>/<yyyy>/<mm>/<dd>/<station>/<session>/seg-000001.media.drseg
                                                  seg-000001.oplog.drseg
                                                  seg-000001.masklog.drseg
                                                  seg-000001.manifest.json
                                                  session.json
    <prefix>/audit/<...>
    <prefix>/enrolment/<...>

The date comes from the session id (``<yyyymmdd>T<hhmmss>Z-<8 hex>``), the station from the
segment manifest. A spool file is ready once its segment's manifest exists (the sealer writes the
manifest after closing the segment's files); ``session.json`` comes last.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SESSION_ID_RE = re.compile(r"(\d{4})(\d{2})(\d{2})T\d{6}Z-[0-9a-f]{8}")
MANIFEST_RE = re.compile(r"seg-(\d{6})\.manifest\.json")
SEG_RE = re.compile(r"seg-(\d{6})\.(media|oplog|masklog)\.drseg")
SESSION_MANIFEST = "session.json"
STATION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# roles, in upload order within a segment
SEGMENT, MANIFEST, SESSION, AUDIT, ENROLMENT = "segment", "manifest", "session", "audit", "enrolment"
SESSION_SEQ = 10**9  # session.json sorts after every segment


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def session_prefix(prefix: str, session_id: str, station: str) -> str:
    m = SESSION_ID_RE.fullmatch(session_id)
    if not m:
        raise ValueError(f"not a session id: {session_id!r} (expected yyyymmddThhmmssZ-8hex)")
    if not STATION_RE.fullmatch(station):
        raise ValueError(f"not a station id usable in object keys: {station!r}")
    return _join(prefix, m.group(1), m.group(2), m.group(3), station, session_id)


def session_key(prefix: str, session_id: str, station: str, filename: str) -> str:
    return _join(session_prefix(prefix, session_id, station), filename)


def audit_key(prefix: str, name: str) -> str:
    return _join(prefix, "audit", name)


def enrolment_key(prefix: str, name: str) -> str:
    return _join(prefix, "enrolment", name)


@dataclass(frozen=True)
class ReadyFile:
    path: Path
    filename: str
    session_id: str
    station: str
    role: str
    seq: int
    sha256: str | None
    size: int | None


class ManifestUnreadable(ValueError):
    pass


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ManifestUnreadable(f"{path}: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestUnreadable(f"{path}: not a JSON object")
    return doc


def _files_of(manifest: dict[str, Any]) -> list[tuple[str, str | None, int | None]]:
    """(name, sha256, size) of each file a segment manifest lists."""
    files = manifest.get("files") or {}
    items = files.values() if isinstance(files, dict) else files
    out = []
    for f in items:
        if isinstance(f, dict) and isinstance(f.get("name"), str):
            out.append((f["name"], f.get("sha256"), f.get("size")))
    return out


def ready_files(session_dir: Path, default_station: str) -> list[ReadyFile]:
    """Files of one spool session folder that may be uploaded now, in upload order."""
    session_id = session_dir.name
    if not SESSION_ID_RE.fullmatch(session_id):
        return []
    out: list[ReadyFile] = []
    station: str | None = None
    manifests = sorted((int(m.group(1)), p) for p in session_dir.iterdir()
                       if (m := MANIFEST_RE.fullmatch(p.name)))
    for seq, mpath in manifests:
        man = _read_json(mpath)
        st = str(man.get("station") or default_station)
        station = station or st
        for name, sha, size in _files_of(man):
            if not SEG_RE.fullmatch(name) or int(SEG_RE.fullmatch(name).group(1)) != seq:  # type: ignore[union-attr]
                raise ManifestUnreadable(f"{mpath}: lists unexpected file {name!r}")
            out.append(ReadyFile(session_dir / name, name, session_id, station, SEGMENT, seq, sha, size))
        out.append(ReadyFile(mpath, mpath.name, session_id, station, MANIFEST, seq, None, None))
    spath = session_dir / SESSION_MANIFEST
    if spath.exists():
        man = _read_json(spath)
        station = station or str(man.get("station") or default_station)
        out.append(ReadyFile(spath, SESSION_MANIFEST, session_id, station, SESSION, SESSION_SEQ, None, None))
    return out
