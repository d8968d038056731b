"""Verify a session without any private key: signatures, trust, chain, order, hashes, sizes.

The verifier reads a session through a :class:`SessionSource` (list names, read small files,
open big ones as binary streams), so the same code checks the local spool, the local folder
store or central storage: a new place to read from is a new source class, nothing else.

Per segment the status is one of ``ok``, ``truncated``, ``missing``, ``altered``, ``reordered``,
``unsigned``, ``untrusted``. Problems carry a code: ``truncated``, ``missing-segment``,
``missing-file``, ``altered``, ``bad-signature``, ``unsigned``, ``untrusted``, ``reordered``,
``chain-broken``, ``session-open``. The session is intact only when there is no problem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from station.crypto.manifest import GENESIS, check_signature, manifest_hash, parse_manifest
from station.crypto.sealed import KINDS, SealError, scan_frames
from station.crypto.session import MANIFEST_RE, SEG_RE, SESSION_MANIFEST

# status precedence: the worst problem of a segment decides its status
_RANK = ["ok", "truncated", "untrusted", "unsigned", "reordered", "altered", "missing"]
_CODE_STATUS = {"truncated": "truncated", "untrusted": "untrusted", "unsigned": "unsigned",
                "bad-signature": "altered", "altered": "altered", "chain-broken": "altered",
                "reordered": "reordered", "missing-segment": "missing",
                "missing-file": "missing"}


@runtime_checkable
class SessionSource(Protocol):
    """Where a session's files are read from. ``label`` says where (shown in reports)."""

    label: str

    def list(self) -> list[str]:
        """File names of the session (no folders)."""

    def read_bytes(self, name: str) -> bytes:
        """A small file (manifests) whole."""

    def open(self, name: str) -> BinaryIO:
        """A binary stream of a (possibly large) file; the caller closes it."""


class DirSource:
    """A session folder on a local disk (the spool or the local folder store)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.label = str(self.path)

    def list(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.is_file())

    def read_bytes(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def open(self, name: str) -> BinaryIO:
        return (self.path / name).open("rb")


def _worse(a: str, b: str) -> str:
    return a if _RANK.index(a) >= _RANK.index(b) else b


class _Report:
    def __init__(self) -> None:
        self.problems: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.segments: dict[int, dict[str, Any]] = {}

    def seg(self, seq: int) -> dict[str, Any]:
        return self.segments.setdefault(seq, {"seq": seq, "status": "ok", "files": {},
                                              "problems": []})

    def add(self, seq: int | None, code: str, detail: str) -> None:
        self.problems.append({"seq": seq, "code": code, "detail": detail})
        if seq is not None:
            s = self.seg(seq)
            s["problems"].append(f"{code}: {detail}")
            s["status"] = _worse(s["status"], _CODE_STATUS.get(code, "altered"))


def _trust(rep: _Report, seq: int | None, man: dict[str, Any], trusted: dict[str, set[str] | None],
           what: str) -> None:
    state, signer = check_signature(man)
    if state == "unsigned":
        rep.add(seq, "unsigned", f"{what} has no signature")
    elif state == "bad":
        rep.add(seq, "bad-signature", f"{what} signature does not verify (signer {signer})")
    elif signer not in trusted:
        rep.add(seq, "untrusted", f"{what} is signed by {signer}, which is not a trusted station")
    elif (stations := trusted[str(signer)]) is not None and man.get("station") not in stations:
        rep.add(seq, "untrusted", f"{what} names station {man.get('station')!r} but is signed by the key "
                f"enrolled for {', '.join(sorted(stations))}")


def _trust_table(trusted: Iterable[str]) -> dict[str, set[str] | None]:
    """``ed25519:KEY`` trusts the key for any station; ``STATION=ed25519:KEY`` (enrolled keys)
    trusts it only for manifests naming that station."""
    table: dict[str, set[str] | None] = {}
    for entry in trusted:
        station, sep, rest = entry.strip().partition("=ed25519:")
        key = "ed25519:" + rest if sep else station
        if not sep:
            table[key] = None
        elif key not in table or table[key] is not None:
            bound = table.get(key) or set()
            table[key] = bound | {station}
    return table


def verify_session(source: SessionSource, trusted: Iterable[str],
                   session_id: str | None = None) -> dict[str, Any]:
    """Check one session read through ``source``; ``trusted`` are ``ed25519:`` station keys, or
    ``STATION=ed25519:`` keys bound to the station they were enrolled for."""
    trusted_set = _trust_table(trusted)
    rep = _Report()
    names = set(source.list())
    man_seqs = sorted(int(m.group(1)) for n in names if (m := MANIFEST_RE.fullmatch(n)))
    seg_files = {n: (int(m.group(1)), m.group(2)) for n in names if (m := SEG_RE.fullmatch(n))}

    session: dict[str, Any] | None = None
    if SESSION_MANIFEST in names:
        try:
            session = parse_manifest(source.read_bytes(SESSION_MANIFEST))
        except (ValueError, UnicodeDecodeError) as exc:
            rep.add(None, "altered", f"session.json unreadable: {exc}")
        if session is not None:
            _trust(rep, None, session, trusted_set, "session.json")
            if session.get("type") != "session":
                rep.add(None, "altered", "session.json is not a session manifest")
    else:
        rep.add(None, "session-open", "no session.json: still recording, or crashed and not "
                "yet recovered")
    sid = session_id or (session or {}).get("session")

    manifests: dict[int, dict[str, Any]] = {}
    hashes: dict[int, str] = {}
    for pos in man_seqs:
        name = f"seg-{pos:06d}.manifest.json"
        try:
            man = parse_manifest(source.read_bytes(name))
        except (ValueError, UnicodeDecodeError) as exc:
            rep.add(pos, "altered", f"{name} unreadable: {exc}")
            continue
        manifests[pos], hashes[pos] = man, manifest_hash(man)
        rep.seg(pos)
        _trust(rep, pos, man, trusted_set, name)
        sid = sid or man.get("session")
        if man.get("seq") != pos:
            rep.add(pos, "reordered", f"{name} holds the manifest of segment {man.get('seq')}")
        if sid is not None and man.get("session") != sid:
            rep.add(pos, "reordered", f"{name} belongs to session {man.get('session')}")

    count = max(man_seqs, default=0)
    if session is not None and isinstance(session.get("segments"), int):
        if session["segments"] > count:
            for seq in range(count + 1, session["segments"] + 1):
                rep.add(seq, "missing-segment", f"segment {seq} listed by session.json is missing")
        elif session["segments"] < count:
            rep.add(None, "altered", f"session.json closes {session['segments']} segments, "
                    f"found {count} manifests")
        count = session["segments"]

    # the chain, in the manifests' own sequence order (renamed files are reported as reordered
    # above; the chain itself may still be whole)
    inner: dict[int, int] = {}
    for pos, man in manifests.items():
        if isinstance(man.get("seq"), int):
            inner.setdefault(man["seq"], pos)
    for seq in range(1, count + 1):
        if seq not in inner:
            if not any(p["seq"] == seq and p["code"] in ("missing-segment", "altered")
                       for p in rep.problems):
                rep.add(seq, "missing-segment", f"segment {seq} manifest is missing")
            continue
        pos = inner[seq]
        before = inner.get(seq - 1)
        want = GENESIS if seq == 1 else (hashes[before] if before is not None else None)
        # a broken link right after a manifest already reported as altered is a consequence of
        # that problem, not a second one
        if want is not None and manifests[pos].get("prev") != want and (
                before is None or rep.seg(before)["status"] != "altered"):
            rep.add(pos, "chain-broken", "prev does not match the hash of the manifest before")
    if session is not None and count and count in inner and (
            session.get("last_hash") != hashes[inner[count]]
            and rep.seg(inner[count])["status"] != "altered"):
        rep.add(inner[count], "chain-broken",
                "session.json last_hash does not match the last manifest")

    # files named by manifests
    listed: set[str] = set()
    for pos, man in sorted(manifests.items()):
        files: dict[str, Any] = man["files"] if isinstance(man.get("files"), dict) else {}
        trunc = man.get("truncated") or {}
        for kind, info in sorted(files.items()):
            if kind not in KINDS or not isinstance(info, dict):
                rep.add(pos, "altered", f"manifest lists an unknown file kind {kind!r}")
                continue
            name = f"seg-{pos:06d}.{kind}.drseg"
            listed.add(name)
            entry = rep.seg(pos)["files"].setdefault(kind, {"name": name, "status": "ok"})
            if name not in names:
                entry["status"] = "missing"
                rep.add(pos, "missing-file", f"{name} is missing")
                continue
            try:
                with source.open(name) as fh:
                    sc = scan_frames(fh, name)
            except SealError as exc:
                sc = {"sha256": None, "size": None, "final": False, "header": {},
                      "error": str(exc)}
            entry.update(size=sc["size"], messages=sc.get("messages"))
            if sc["sha256"] != info.get("sha256") or (sc["size"] is not None
                                                      and sc["size"] != info.get("size")):
                hdr = sc.get("header") or {}
                if hdr.get("seq") not in (None, pos) or hdr.get("kind") not in (None, kind):
                    entry["status"] = "reordered"
                    rep.add(pos, "reordered", f"{name} holds segment {hdr.get('seq')} "
                            f"{hdr.get('kind')} (swapped file)")
                else:
                    entry["status"] = "altered"
                    rep.add(pos, "altered", f"{name}: SHA-256/size differ from the signed manifest"
                            + (f" ({sc['error']})" if sc.get("error") else ""))
                continue
            if kind in trunc or not info.get("final", False) or not sc["final"]:
                note = (trunc.get(kind) or {}).get("note") or "no FINAL message"
                entry["status"] = "truncated"
                rep.add(pos, "truncated", f"{name}: {note}")
    for name in sorted(set(seg_files) - listed):
        seq, _ = seg_files[name]
        if seq > count or seq not in manifests:
            rep.warnings.append(f"{name} is not listed by any manifest")

    intact = not rep.problems
    segs = [rep.segments[s] for s in sorted(rep.segments)]
    return {
        "session": sid, "source": source.label, "intact": intact,
        "end_reason": (session or {}).get("end_reason"),
        "station": (session or {}).get("station") or next(
            (m.get("station") for m in manifests.values()), None),
        "signer": (session or {}).get("signer"),
        "segments_expected": count, "segments": segs, "problems": rep.problems,
        "warnings": rep.warnings,
        "categories": sorted({p["code"] for p in rep.problems}) or ["ok"],
    }


def format_report(result: dict[str, Any]) -> str:
    lines = [f"session {result['session']} ({result['source']}): "
             + ("INTACT" if result["intact"] else "NOT INTACT")
             + (f", ended {result['end_reason']}" if result.get("end_reason") else "")]
    for s in result["segments"]:
        lines.append(f"  segment {s['seq']:6d}  {s['status']}")
        lines.extend(f"      {p}" for p in s["problems"])
    lines.extend(f"  session: {p['code']}: {p['detail']}" for p in result["problems"]
                 if p["seq"] is None)
    lines.extend(f"  warning: {w}" for w in result["warnings"])
    return "\n".join(lines)


def dump(result: dict[str, Any]) -> str:
    return json.dumps(result, ensure_ascii=False, indent=2)
