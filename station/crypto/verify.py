"""Verify a session without any private key: signatures, trust, chain, order, hashes, sizes.

The verifier reads a session through a :class:`SessionSource` (list names, read small files,
open big ones as binary streams), so the same code checks the local spool, the local folder
store or central storage: a new place to read from is a new source class, nothing else.

Per segment the status is one of ``ok``, ``truncated``, ``missing``, ``altered``, ``reordered``,
``unsigned``, ``untrusted``. Problems carry a code (docs/format.md section 8 lists them all).
The session is intact only when there is no problem; its ``verdict`` is one word: ``intact``,
``recovered`` (closed out by crash recovery, complete up to the crash, nothing else wrong),
``open``, ``untrusted`` or ``altered``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from station.crypto.manifest import (
    GENESIS,
    MANIFEST_FORMAT,
    check_signature,
    manifest_hash,
    parse_manifest,
)
from station.crypto.sealed import KINDS, SealError, scan_frames
from station.crypto.session import MANIFEST_RE, SEG_RE, SESSION_MANIFEST, seg_name

# status precedence: the worst problem of a segment decides its status
_RANK = ["ok", "truncated", "untrusted", "unsigned", "reordered", "altered", "missing"]
_CODE_STATUS = {"truncated": "truncated", "untrusted": "untrusted", "unsigned": "unsigned",
                "bad-signature": "altered", "altered": "altered", "chain-broken": "altered",
                "reordered": "reordered", "header-mismatch": "reordered",
                "missing-segment": "missing", "missing-file": "missing"}
# what recovery found and signed into session.json (station/crypto/session.py); each is a problem
RECOVERY_CODES = ("recovery-session-finished", "recovery-header-mismatch", "recovery-appended",
                  "recovery-checkpoint-mismatch", "recovery-cut", "recovery-missing-file",
                  "recovery-unvouched", "recovery-bad-checkpoint")
# codes that do not make a session "altered": what a verdict of open/untrusted/recovered allows
_SOFT = {"truncated", "session-open", "untrusted", "crash-recovered"}


class TrustedKeys(list[str]):
    """Trusted station keys as :func:`verify_session` takes them (``ed25519:KEY`` or
    ``STATION=ed25519:KEY``), plus ``reasons``: why another key seen in storage is *not*
    trusted (replaced enrolment, pending approval, revoked), shown next to ``untrusted``;
    ``problems``: enrolment objects that were ignored (forged, damaged)."""

    def __init__(self, entries: Iterable[str] = (), *, reasons: dict[str, str] | None = None,
                 problems: list[str] | None = None) -> None:
        super().__init__(dict.fromkeys(e.strip() for e in entries))
        self.reasons: dict[str, str] = dict(reasons or {})
        self.problems: list[str] = list(problems or [])

    def merge(self, other: Iterable[str]) -> TrustedKeys:
        self.extend(e for e in (x.strip() for x in other) if e not in self)
        for k, v in getattr(other, "reasons", {}).items():
            self.reasons.setdefault(k, v)
        self.problems.extend(getattr(other, "problems", []))
        return self


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
           what: str, reasons: dict[str, str]) -> None:
    state, signer = check_signature(man)
    if state == "unsigned":
        rep.add(seq, "unsigned", f"{what} has no signature")
    elif state == "bad":
        rep.add(seq, "bad-signature", f"{what} signature does not verify (signer {signer})")
    elif signer not in trusted:
        why = reasons.get(str(signer)) or "it is neither pinned in the policy nor approved by a site authority"
        rep.add(seq, "untrusted", f"{what} is signed by {signer}, which is not a trusted station: {why}")
    elif (stations := trusted[str(signer)]) is not None and man.get("station") not in stations:
        rep.add(seq, "untrusted", f"{what} names station {man.get('station')!r} but is signed by the key "
                f"enrolled for {', '.join(sorted(stations))}")


def trust_entry(entry: str) -> tuple[str | None, str]:
    """``(station or None, key)`` of a trust entry: ``ed25519:KEY`` (any station) or
    ``STATION=ed25519:KEY`` (an approved key, for that station only)."""
    station, sep, rest = entry.strip().partition("=ed25519:")
    return (station, "ed25519:" + rest) if sep else (None, entry.strip())


def _trust_table(trusted: Iterable[str]) -> dict[str, set[str] | None]:
    """``ed25519:KEY`` trusts the key for any station; ``STATION=ed25519:KEY`` (enrolled keys)
    trusts it only for manifests naming that station."""
    table: dict[str, set[str] | None] = {}
    for entry in trusted:
        station, key = trust_entry(entry)
        if station is None:
            table[key] = None
        elif key not in table or table[key] is not None:
            table[key] = (table.get(key) or set()) | {station}
    return table


class MisplacedFile(SealError):
    """{}: its sealed header says {}, but it stands as {}: not decrypted"""


def check_binding(name: str, header: dict[str, Any], *, station: str | None, session: str | None,
                  seq: int, kind: str) -> None:
    """Every reader (verify, review, export) refuses a sealed file whose authenticated header
    names another station, session, segment or kind than the place it is read as."""
    want = {"station": station, "session": session, "seq": seq, "kind": kind}
    wrong = {k: header.get(k) for k, v in want.items() if v is not None and header.get(k) != v}
    if wrong:
        raise MisplacedFile(name, ", ".join(f"{k} {v!r}" for k, v in wrong.items()),
                            ", ".join(f"{k} {want[k]!r}" for k in wrong))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_kind(rep: _Report, seq: int | None, man: dict[str, Any], what: str, type_: str,
                station: str | None) -> None:
    """``bad-format``, ``wrong-type``, ``wrong-station`` (docs/format.md 8, step 2)."""
    if not (_is_int(man.get("format")) and man["format"] == MANIFEST_FORMAT):
        rep.add(seq, "bad-format", f"{what} has format {man.get('format')!r}, not {MANIFEST_FORMAT}")
    if man.get("type") != type_:
        rep.add(seq, "wrong-type", f"{what} is of type {man.get('type')!r}, not {type_!r}")
    if station is not None and man.get("station") != station:
        rep.add(seq, "wrong-station", f"{what} names station {man.get('station')!r}, the session "
                f"is of {station!r}")


def verify_session(source: SessionSource, trusted: Iterable[str],
                   session_id: str | None = None) -> dict[str, Any]:
    """Check one session read through ``source``; ``trusted`` are ``ed25519:`` station keys, or
    ``STATION=ed25519:`` keys bound to the station they were enrolled for (a
    :class:`TrustedKeys` also says why other keys are not trusted). The steps and codes are
    docs/format.md section 8."""
    trusted_set = _trust_table(trusted)
    reasons: dict[str, str] = getattr(trusted, "reasons", {})
    rep = _Report()
    names = set(source.list())
    man_seqs = sorted(int(m.group(1)) for n in names if (m := MANIFEST_RE.fullmatch(n)))
    seg_files = {n: (int(m.group(1)), m.group(2)) for n in names if (m := SEG_RE.fullmatch(n))}

    # 1. session.json
    session: dict[str, Any] | None = None
    if SESSION_MANIFEST in names:
        try:
            session = parse_manifest(source.read_bytes(SESSION_MANIFEST))
        except (ValueError, UnicodeDecodeError) as exc:
            rep.add(None, "altered", f"session.json unreadable: {exc}")
        if session is not None:
            _trust(rep, None, session, trusted_set, "session.json", reasons)
            _check_kind(rep, None, session, "session.json", "session", None)
    else:
        rep.add(None, "session-open", "no session.json: still recording, or crashed and not "
                "yet recovered")
    sid = session_id or (session or {}).get("session")
    if session is not None and sid is not None and session.get("session") != sid:
        rep.add(None, "reordered", f"session.json belongs to session {session.get('session')}")
    station = (session or {}).get("station")

    # 2. segment manifests
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
        _trust(rep, pos, man, trusted_set, name, reasons)
        sid = sid or man.get("session")
        station = station or man.get("station")
        _check_kind(rep, pos, man, name, "segment", station)
        if not (_is_int(man.get("seq")) and man["seq"] == pos):  # true is not the integer 1
            rep.add(pos, "reordered", f"{name} holds the manifest of segment {man.get('seq')!r}")
        if sid is not None and man.get("session") != sid:
            rep.add(pos, "reordered", f"{name} belongs to session {man.get('session')}")

    # 3. count and chain
    count = max(man_seqs, default=0)
    if session is not None:
        raw_n = session.get("segments")
        n = raw_n if isinstance(raw_n, int) and not isinstance(raw_n, bool) else -1
        if n < 0:
            rep.add(None, "altered", f"session.json segments {raw_n!r} is not a count")
        elif n > count:
            for seq in range(count + 1, n + 1):
                rep.add(seq, "missing-segment", f"segment {seq} listed by session.json is missing")
            count = n
        elif n < count:
            rep.add(None, "altered", f"session.json closes {n} segments, found {count} manifests")
            count = n
    # the chain, in the manifests' own sequence order (renamed files are reported as reordered
    # above; the chain itself may still be whole)
    inner: dict[int, int] = {}
    for pos, man in manifests.items():
        if _is_int(man.get("seq")):
            inner.setdefault(man["seq"], pos)
    for seq in range(1, count + 1):
        if seq not in inner:
            if not any(p["seq"] == seq and p["code"] in ("missing-segment", "altered")
                       for p in rep.problems):
                rep.add(seq, "missing-segment", f"segment {seq} manifest is missing")
            continue
        pos = inner[seq]
        before = inner.get(seq - 1)
        # a link after a missing manifest cannot be checked (missing-segment says why); a broken
        # link right after a manifest already reported as altered is a consequence of that
        # problem, not a second one
        want = GENESIS if seq == 1 else (hashes[before] if before is not None else None)
        if want is not None and manifests[pos].get("prev") != want and (
                before is None or rep.seg(before)["status"] != "altered"):
            rep.add(pos, "chain-broken", "prev does not match the hash of the manifest before")
    if session is not None and count and count in inner and (
            session.get("last_hash") != hashes[inner[count]]
            and rep.seg(inner[count])["status"] != "altered"):
        rep.add(inner[count], "chain-broken",
                "session.json last_hash does not match the last manifest")
    if session is not None and count == 0 and session.get("last_hash") != GENESIS:
        rep.add(None, "chain-broken", "session.json of an empty session has a last_hash")

    # 4. files named by manifests, bound to their place by name and cleartext header
    listed: set[str] = set()
    for pos, man in sorted(manifests.items()):
        if not isinstance(man.get("files"), dict):
            rep.add(pos, "altered", f"seg-{pos:06d}.manifest.json has no files object")
        files: dict[str, Any] = man["files"] if isinstance(man.get("files"), dict) else {}
        trunc = man.get("truncated") if isinstance(man.get("truncated"), dict) else {}
        for kind, info in sorted(files.items()):
            if kind not in KINDS or not isinstance(info, dict):
                rep.add(pos, "altered", f"manifest lists an unknown file kind {kind!r}")
                continue
            name = f"seg-{pos:06d}.{kind}.drseg"
            listed.add(name)
            entry = rep.seg(pos)["files"].setdefault(kind, {"name": name, "status": "ok"})
            # a manifest moved to another position (reported as reordered above) is checked
            # against its own seq: the moved files are then a consequence, not a second problem
            ref = man["seq"] if _is_int(man.get("seq")) else pos
            if info.get("name") != seg_name(ref, kind):
                entry["status"] = "reordered"
                rep.add(pos, "wrong-name", f"manifest lists {info.get('name')!r} as segment {ref} "
                        f"{kind}, whose file is {seg_name(ref, kind)}")
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
            hdr = sc.get("header") or {}
            if sc["sha256"] != info.get("sha256") or sc["size"] != info.get("size"):
                if hdr.get("seq") not in (None, ref) or hdr.get("kind") not in (None, kind):
                    entry["status"] = "reordered"
                    rep.add(pos, "reordered", f"{name} holds segment {hdr.get('seq')} "
                            f"{hdr.get('kind')} (swapped file)")
                else:
                    entry["status"] = "altered"
                    rep.add(pos, "altered", f"{name}: SHA-256/size differ from the signed manifest"
                            + (f" ({sc['error']})" if sc.get("error") else ""))
                continue
            place: dict[str, Any] = {"station": station, "session": sid, "seq": man.get("seq"),
                                     "kind": kind}
            wrong = {k: hdr.get(k) for k, v in place.items()
                     if hdr.get(k) != v or type(hdr.get(k)) is not type(v)}
            cut_in_prefix = ((trunc or {}).get(kind) or {}).get("at_message") == 0
            if not hdr and not cut_in_prefix:  # signed, yet no valid header: not a sealed file
                entry["status"] = "altered"
                rep.add(pos, "altered", f"{name}: no valid sealed header "
                        f"({sc.get('anomaly') or sc.get('error') or 'unreadable'})")
                continue
            if wrong and hdr:  # a file cut in its prefix has no header to compare
                entry["status"] = "reordered"
                rep.add(pos, "header-mismatch", f"{name}: its sealed header says "
                        + ", ".join(f"{k} {v!r}" for k, v in wrong.items())
                        + f", the manifest places it as {place}")
                continue
            # truncated or not is what the signed manifest says; the keyless walk must agree
            says_final = info.get("final") is True and kind not in (trunc or {})
            if says_final != bool(sc["final"]) and says_final:
                entry["status"] = "altered"
                rep.add(pos, "altered", f"{name}: the signed manifest says closed (FINAL), the "
                        f"file's frames say otherwise ({sc.get('anomaly') or 'no FINAL frame'})")
                continue
            if not says_final:
                note = ((trunc or {}).get(kind) or {}).get("note") or "no FINAL message"
                entry["status"] = "truncated"
                rep.add(pos, "truncated", f"{name}: {note}")
    for name in sorted(set(seg_files) - listed):
        seq, _ = seg_files[name]
        if seq > count or seq not in manifests:
            rep.warnings.append(f"{name} is not listed by any manifest")

    # 5. what crash recovery found (signed by the station into session.json)
    recovery = (session or {}).get("recovery") if isinstance((session or {}).get("recovery"),
                                                            dict) else None
    if recovery is not None:
        findings = recovery.get("findings")
        if findings is not None and not isinstance(findings, list):
            rep.add(None, "altered", "session.json recovery findings are not an array")
        for f in findings if isinstance(findings, list) else []:
            code = f.get("code") if isinstance(f, dict) else None
            if code not in RECOVERY_CODES:
                code = "recovery-unvouched"
            fseq = f.get("seq") if isinstance(f, dict) else None
            at = fseq if isinstance(fseq, int) and not isinstance(fseq, bool) else None
            rep.add(at if at in rep.segments else None, str(code),
                    str(f.get("detail")) if isinstance(f, dict) else "")
    if (session or {}).get("end_reason") == "crash-recovered":
        if recovery is None:
            rep.add(None, "recovery-unvouched", "closed out by crash recovery without checkpoints "
                    "(a station version before checkpoints, or a forged close-out)")
        else:  # never intact: the recording ended by a crash, however whole its segments are
            rep.add(None, "crash-recovered", "ended by a crash and closed out by recovery: "
                    f"complete up to {recovery.get('until_utc')}, at most "
                    f"{recovery.get('lost_s_max')} s lost")

    intact = not rep.problems
    codes = {p["code"] for p in rep.problems}
    if intact:
        verdict = "intact"
    elif not codes <= _SOFT:
        verdict = "altered"
    elif "untrusted" in codes:
        verdict = "untrusted"
    elif "session-open" in codes:
        verdict = "open"
    elif (session or {}).get("end_reason") == "crash-recovered":
        verdict = "recovered"
    else:
        verdict = "truncated"   # e.g. disk full: the writer stopped at its last whole message
    segs = [rep.segments[s] for s in sorted(rep.segments)]
    return {
        "session": sid, "source": source.label, "intact": intact, "verdict": verdict,
        "end_reason": (session or {}).get("end_reason"),
        "recovery": _recovery_summary(recovery) if recovery is not None else None,
        "station": station,
        "signer": (session or {}).get("signer"),
        "segments_expected": count, "segments": segs, "problems": rep.problems,
        "warnings": rep.warnings + [f"enrolment: {p}" for p in getattr(trusted, "problems", [])],
        "categories": sorted(codes) or ["ok"],
    }


def _recovery_summary(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: rec.get(k) for k in ("recovered_utc", "until_utc", "kept_s", "lost_s_max",
                                    "segments")}


def format_report(result: dict[str, Any]) -> str:
    lines = [f"session {result['session']} ({result['source']}): " + verdict_line(result)
             + (f", ended {result['end_reason']}" if result.get("end_reason") else "")]
    for s in result["segments"]:
        lines.append(f"  segment {s['seq']:6d}  {s['status']}")
        lines.extend(f"      {p}" for p in s["problems"])
    lines.extend(f"  session: {p['code']}: {p['detail']}" for p in result["problems"]
                 if p["seq"] is None)
    lines.extend(f"  warning: {w}" for w in result["warnings"])
    return "\n".join(lines)


def verdict_line(result: dict[str, Any]) -> str:
    """INTACT / RECOVERED (complete up to T, at most N s lost) / NOT INTACT (verdict)."""
    verdict = result.get("verdict") or ("intact" if result.get("intact") else "altered")
    if verdict == "intact":
        return "INTACT"
    if verdict == "recovered":
        rec = result.get("recovery") or {}
        return (f"RECOVERED after a crash: complete up to {rec.get('until_utc')}, "
                f"{rec.get('kept_s')} s kept, at most {rec.get('lost_s_max')} s lost")
    return f"NOT INTACT ({verdict})"


def dump(result: dict[str, Any]) -> str:
    return json.dumps(result, ensure_ascii=False, indent=2)
