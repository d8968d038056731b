"""Independent verifier of a DualRec session folder, written from ``docs/format.md`` alone.

Implements section 3 (canonical JSON), 4 and 5 (manifests), 2.6 (the keyless walk, with the
header rules of 2.2 that it needs), 8 (``station verify``: codes, segment status, verdict, exit
code) and, as far as section 8 needs them, the recovery findings of sections 5/6 and the trust
decision of 10.3 for pinned (``ed25519:KEY``) and approved (``STATION=ed25519:KEY``) keys.

It imports nothing from the project (``station``, ``recorder``, ``uploader``, ``ui``): only the
standard library and PyNaCl.

Usage: ``python tests/spec_verify.py FOLDER [--session ID] [--trust KEY ...] [--json]``.
The exit code is the one section 8 defines (0 intact, 4 recovered, 3 any other verdict, 1 when
the folder cannot be read, 2 usage error).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import VerifyKey

ZERO_HASH = "0" * 64
MAGIC = b"DRSEG\x00\r\n"
VERSION = 1
KINDS = ("masklog", "media", "oplog")  # the kinds of a segment manifest, in name ("kind") order
HEADER_KINDS = ("media", "oplog", "masklog", "qc")
MAX_C = 1048576 + 17
MANIFEST_RE = re.compile(r"^seg-([0-9]{6})\.manifest\.json$")
DRSEG_RE = re.compile(r"^seg-([0-9]{6})\.([A-Za-z0-9_-]+)\.drseg$")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

RECOVERY_CODES = frozenset({
    "recovery-session-finished", "recovery-header-mismatch", "recovery-appended",
    "recovery-checkpoint-mismatch", "recovery-cut", "recovery-missing-file",
    "recovery-unvouched", "recovery-bad-checkpoint",
})

# section 8, "Codes and segment status"
STATUS_ORDER = ("ok", "truncated", "untrusted", "unsigned", "reordered", "altered", "missing")
CODE_STATUS = {
    "unsigned": "unsigned",
    "bad-signature": "altered",
    "untrusted": "untrusted",
    "bad-format": "altered",
    "wrong-type": "altered",
    "wrong-station": "altered",
    "reordered": "reordered",
    "missing-segment": "missing",
    "chain-broken": "altered",
    "altered": "altered",
    "wrong-name": "altered",
    "missing-file": "missing",
    "header-mismatch": "reordered",
    "truncated": "truncated",
}
for _c in RECOVERY_CODES:
    CODE_STATUS[_c] = "altered"

EXIT_CODES = {"intact": 0, "recovered": 4}


# --------------------------------------------------------------------------------------------
# section 3: canonical JSON


def canonical(value: Any) -> bytes:
    """The canonical encoding of a JSON value (section 3). Raises ValueError/UnicodeError."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def parse_canonical(data: bytes, trailing: bytes = b"") -> tuple[bool, Any]:
    """Parse ``data`` that MUST be exactly canonical(value) + trailing.

    A reader checks such bytes by parsing, re-encoding and comparing byte for byte (section 3).
    Returns (True, value) on success, (False, None) otherwise.
    """
    if trailing:
        if not data.endswith(trailing):
            return False, None
        data = data[: -len(trailing)]
    try:
        text = data.decode("utf-8")  # strict: no overlong forms, no surrogates
        value = json.loads(text)
        again = canonical(value)
    except (ValueError, UnicodeError, RecursionError):
        return False, None
    if again != data:
        return False, None
    return True, value


def is_int(v: Any) -> bool:
    """An integer where the document asks for one: JSON true/false and 1.0 are not."""
    return isinstance(v, int) and not isinstance(v, bool)


# --------------------------------------------------------------------------------------------
# section 2.2 (header rules) and 2.6 (walk without a key)


def _depth_and_numbers_ok(value: Any, depth: int) -> bool:
    if isinstance(value, dict):
        if depth > 16:
            return False
        return all(_depth_and_numbers_ok(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        if depth > 16:
            return False
        return all(_depth_and_numbers_ok(v, depth + 1) for v in value)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, int):
        return INT64_MIN <= value <= INT64_MAX
    return False  # a float (or anything else) anywhere: rule 4


def _canonical_b64(text: Any, nbytes: int) -> bool:
    if not isinstance(text, str):
        return False
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeError):
        return False
    return len(raw) == nbytes and base64.b64encode(raw).decode("ascii") == text


_HEX32 = re.compile(r"^[0-9a-f]{32}$")


def header_from_bytes(data: bytes) -> dict[str, Any] | None:
    """The header object when ``data`` is a valid header (2.2 rules 1-7), else None."""
    ok, value = parse_canonical(data)
    if not ok or not isinstance(value, dict):  # rules 1, 2
        return None
    if not _depth_and_numbers_ok(value, 1):  # rules 3, 4
        return None
    fmt = value.get("format")
    if not is_int(fmt) or fmt != VERSION:  # rule 5
        return None
    recipients = value.get("recipients")
    if not isinstance(recipients, list) or not recipients:  # rule 6
        return None
    for entry in recipients:
        if not isinstance(entry, dict):
            return None
        fp = entry.get("fp")
        if not isinstance(fp, str) or not _HEX32.match(fp):
            return None
        wrapped = entry.get("wrapped")
        if not (isinstance(wrapped, str) and len(wrapped) == 108 and wrapped.endswith("=")
                and not wrapped.endswith("==") and _canonical_b64(wrapped, 80)):
            return None
    # rule 7: type and range of the optional members, when present
    for name in ("station", "session", "created_utc"):
        if name in value and not isinstance(value[name], str):
            return None
    if "seq" in value and not (is_int(value["seq"]) and value["seq"] >= 1):
        return None
    if "kind" in value and value["kind"] not in HEADER_KINDS:
        return None
    if "created_mono_ns" in value and not (is_int(value["created_mono_ns"]) and value["created_mono_ns"] >= 0):
        return None
    return value


@dataclass
class Walk:
    status: str  # ok, truncated, bad header, unsupported format, bad tag
    messages: int
    good_bytes: int
    final: bool
    trailing: int
    header: dict[str, Any] | None
    size: int
    sha256: str


def walk(data: bytes) -> Walk:
    """Section 2.6: the steps of 2.5 without step 6 and without anything that needs the key."""
    size = len(data)
    digest = hashlib.sha256(data).hexdigest()
    header: dict[str, Any] | None = None

    def done(status: str, n: int, o: int) -> Walk:
        if status == "ok":
            o = size
        return Walk(status, n, o, status == "ok", size - o, header, size, digest)

    # 1. magic, judged byte by byte
    if data[:8] != MAGIC[: min(8, size)]:
        return done("bad header", 0, 0)
    if size < 8:
        return done("truncated", 0, 0)
    # 2. version
    if size < 10:
        return done("truncated", 0, 0)
    if int.from_bytes(data[8:10], "big") != VERSION:
        return done("unsupported format", 0, 0)
    # 3. header length
    if size < 14:
        return done("truncated", 0, 0)
    h = int.from_bytes(data[10:14], "big")
    if h == 0 or h > 65536:
        return done("bad header", 0, 0)
    # 4. header
    if size < 14 + h:
        return done("truncated", 0, 0)
    parsed = header_from_bytes(data[14:14 + h])
    if parsed is None:
        return done("bad header", 0, 0)
    header = parsed
    # 5. secretstream header
    if size < 38 + h:
        return done("truncated", 0, 0)
    # 7. message 0 (keyless: no pull)
    o = 38 + h
    if size < o + 4:
        return done("truncated", 0, 0)
    if data[o:o + 4] != b"\x00\x00\x00\x11":
        return done("bad header", 0, 0)
    if size < o + 21:
        return done("truncated", 0, 0)
    n, o = 1, o + 21
    # 8. messages N >= 1
    while True:
        if size < o + 4:
            return done("truncated", n, o)
        w = int.from_bytes(data[o:o + 4], "big")
        final_flag = bool(w & 0x80000000)
        c = w & 0x7FFFFFFF
        if c < 17 or c > MAX_C:
            return done("bad tag", n, o)
        if size < o + 4 + c:
            return done("truncated", n, o)
        o, n = o + 4 + c, n + 1
        if final_flag:
            if size == o:
                return done("ok", n, o)
            return done("bad tag", n, o)


# --------------------------------------------------------------------------------------------
# trust (section 8 trust rules, 10.3 for pinned and approved keys)


def station_key_raw(text: Any) -> bytes | None:
    """The 32 raw bytes of a station key text ``ed25519:`` + base64(32 bytes), else None."""
    if not isinstance(text, str) or not text.startswith("ed25519:"):
        return None
    b64 = text[len("ed25519:"):]
    if not _canonical_b64(b64, 32):
        return None
    return base64.b64decode(b64)


@dataclass
class Trust:
    pinned: set[str] = field(default_factory=set)
    approved: dict[str, set[str]] = field(default_factory=dict)  # key text -> stations

    @classmethod
    def from_entries(cls, entries: list[str]) -> Trust:
        t = cls()
        for e in entries:
            if "=" in e.split(":", 1)[0]:
                station, key = e.split("=", 1)
                t.approved.setdefault(key.strip(), set()).add(station.strip())
            else:
                t.pinned.add(e.strip())
        return t


def trust_code(obj: dict[str, Any], trust: Trust) -> tuple[str, str] | None:
    """Section 8 trust rules for one manifest: (code, detail) or None when trusted."""
    if "sig" not in obj or "signer" not in obj:
        return "unsigned", "no sig or no signer"
    signer = obj["signer"]
    raw = station_key_raw(signer)
    if raw is None:
        return "bad-signature", "signer is not a station key text"
    sig = obj["sig"]
    sig_raw = None
    if isinstance(sig, str):
        try:
            sig_raw = base64.b64decode(sig.encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeError):
            sig_raw = None
    if sig_raw is None or len(sig_raw) != 64:
        return "bad-signature", "sig is not base64 of 64 bytes"
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    try:
        VerifyKey(raw).verify(canonical(unsigned), sig_raw)
    except (BadSignatureError, ValueError, TypeError, UnicodeError, CryptoError):
        return "bad-signature", "the signature does not verify"
    if signer in trust.pinned:
        return None
    stations = trust.approved.get(signer)
    if stations is None:
        return "untrusted", "neither pinned in the policy nor approved by a site authority"
    if obj.get("station") not in stations:
        return "untrusted", f"key approved only for {sorted(stations)}"
    return None


# --------------------------------------------------------------------------------------------
# section 8


@dataclass
class Problem:
    code: str
    seq: int | None  # the segment (position) or None for the session
    detail: str


@dataclass
class Report:
    session: str | None
    station: Any
    problems: list[Problem]
    segments: dict[int, str]
    warnings: list[str]
    verdict: str
    exit_code: int
    end_reason: Any

    @property
    def codes(self) -> set[str]:
        return {p.code for p in self.problems}

    def to_json(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "station": self.station,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "codes": sorted(self.codes),
            "segments": {str(k): v for k, v in sorted(self.segments.items())},
            "problems": [{"code": p.code, "seq": p.seq, "detail": p.detail} for p in self.problems],
            "warnings": self.warnings,
        }


def verdict_of(codes: set[str], end_reason: Any) -> str:
    if not codes:
        return "intact"
    if codes - {"truncated", "session-open", "untrusted", "crash-recovered"}:
        return "altered"
    if "untrusted" in codes:
        return "untrusted"
    if "session-open" in codes:
        return "open"
    if end_reason == "crash-recovered":
        return "recovered"
    return "truncated"


def _hash(obj: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(obj)).hexdigest()


def verify_files(files: dict[str, bytes], session_id: str | None, trust: Trust) -> Report:
    """Verify a session given its files (name -> bytes), section 8 steps 1-5."""
    files = {k: v for k, v in files.items() if not k.startswith(".")}  # hidden temporaries (section 1)
    problems: list[Problem] = []
    status: dict[int, str] = {}
    warnings: list[str] = []

    def add(code: str, seq: int | None, detail: str = "") -> None:
        problems.append(Problem(code, seq, detail))
        if seq is not None:
            status.setdefault(seq, "ok")
            new = CODE_STATUS.get(code)
            if new and STATUS_ORDER.index(new) > STATUS_ORDER.index(status[seq]):
                status[seq] = new

    def seg_has(seq: int, code: str) -> bool:
        return any(p.seq == seq and p.code == code for p in problems)

    # step 1: session.json
    sess: dict[str, Any] | None = None
    sid = session_id
    station: Any = None
    if "session.json" not in files:
        add("session-open", None, "no session.json")
    else:
        ok, value = parse_canonical(files["session.json"], b"\n")
        if not ok or not isinstance(value, dict):
            add("altered", None, "session.json is not byte-exact canonical JSON + LF")
        else:
            sess = value
            t = trust_code(sess, trust)
            if t:
                add(t[0], None, "session.json: " + t[1])
            if not (is_int(sess.get("format")) and sess.get("format") == 1):
                add("bad-format", None, "session.json format is not the integer 1")
            if sess.get("type") != "session":
                add("wrong-type", None, "session.json type is not session")
            if session_id is not None and sess.get("session") != session_id:
                add("reordered", None, "session.json names another session")
            if sid is None and isinstance(sess.get("session"), str):
                sid = sess["session"]
            # "the session's station is session.json's station" (8 step 1); a session.json that
            # "names none" (section 4: member absent or null) leaves it to the first manifest
            if sess.get("station") is not None:
                station = sess["station"]

    # step 2: segment manifests, ascending position
    positions: dict[int, str] = {}
    for name in files:
        m = MANIFEST_RE.match(name)
        if m:
            positions[int(m.group(1))] = name
    readable: dict[int, dict[str, Any]] = {}
    for pos in sorted(positions):
        status.setdefault(pos, "ok")
        ok, value = parse_canonical(files[positions[pos]], b"\n")
        if not ok or not isinstance(value, dict):
            add("altered", pos, f"{positions[pos]} is not byte-exact canonical JSON + LF")
            continue
        man = value
        readable[pos] = man
        t = trust_code(man, trust)
        if t:
            add(t[0], pos, t[1])
        if sid is None and isinstance(man.get("session"), str):
            sid = man["session"]
        if station is None and man.get("station") is not None:
            station = man["station"]
        if not (is_int(man.get("format")) and man.get("format") == 1):
            add("bad-format", pos, "format is not the integer 1")
        if man.get("type") != "segment":
            add("wrong-type", pos, "type is not segment")
        if station is None or man.get("station") != station:
            add("wrong-station", pos, "names another station")
        if not (is_int(man.get("seq")) and man.get("seq") == pos):
            add("reordered", pos, "seq is not the file name's number")
        if man.get("session") != sid or sid is None:
            add("reordered", pos, "names another session")

    # step 3: count and chain
    n = max(positions) if positions else 0
    if sess is not None:
        segs = sess.get("segments")
        if not (is_int(segs) and segs >= 0):
            add("altered", None, "segments is not an integer >= 0")
        elif segs > n:
            for k in range(n + 1, segs + 1):
                add("missing-segment", k, "no manifest")
            n = segs
        elif segs < n:
            add("altered", None, "segments is smaller than the highest manifest number")
            n = segs

    def manifest_of(k: int) -> int | None:
        for pos in sorted(readable):
            s = readable[pos].get("seq")
            if is_int(s) and s == k:
                return pos
        return None

    for k in range(1, n + 1):
        pos = manifest_of(k)
        if pos is None:
            if not (seg_has(k, "missing-segment") or seg_has(k, "altered")):
                add("missing-segment", k, "no manifest")
            continue
        if k == 1:
            expected: str | None = ZERO_HASH
            prev_status = None
        else:
            prev_pos = manifest_of(k - 1)
            if prev_pos is None:
                continue  # link not checked after a missing manifest
            expected = _hash(readable[prev_pos])
            prev_status = status.get(prev_pos, "ok")
        if readable[pos].get("prev") != expected and prev_status != "altered":
            add("chain-broken", pos, f"prev of segment {k} does not match")
    if sess is not None:
        last = sess.get("last_hash")
        if n == 0:
            if last != ZERO_HASH:
                add("chain-broken", None, "last_hash is not 64 zeros with no segment")
        else:
            pos = manifest_of(n)
            if pos is not None and last != _hash(readable[pos]) and status.get(pos, "ok") != "altered":
                add("chain-broken", pos, "last_hash does not match the last manifest")

    # step 4: files
    listed: set[tuple[int, str]] = set()
    for pos in sorted(readable):
        man = readable[pos]
        seq = man.get("seq")
        name_seq = seq if is_int(seq) else pos
        entries = man.get("files")
        if not isinstance(entries, dict):
            # not specified by section 8 step 4: a files member that is not an object
            add("altered", pos, "files is not an object")
            continue
        truncated = man.get("truncated")
        for kind in sorted(entries):
            entry = entries[kind]
            if kind not in KINDS or not isinstance(entry, dict):
                add("altered", pos, f"files[{kind!r}] is not a known kind with an object")
                continue
            listed.add((pos, kind))
            if entry.get("name") != f"seg-{name_seq:06d}.{kind}.drseg":
                add("wrong-name", pos, f"{kind} file named {entry.get('name')!r}")
            fname = f"seg-{pos:06d}.{kind}.drseg"
            if fname not in files:
                add("missing-file", pos, f"{fname} is absent")
                continue
            w = walk(files[fname])
            esize = entry.get("size")
            if entry.get("sha256") != w.sha256 or not is_int(esize) or esize != w.size:
                hdr = w.header or {}
                swapped = ("seq" in hdr and hdr["seq"] != seq) or ("kind" in hdr and hdr["kind"] != kind)
                add("reordered" if swapped else "altered", pos, f"{fname}: SHA-256 or size differ")
                continue
            has_tentry = isinstance(truncated, dict) and kind in truncated
            tentry = truncated[kind] if has_tentry else None
            if w.header is None:
                cut_in_prefix = isinstance(tentry, dict) and is_int(tentry.get("at_message")) \
                    and tentry.get("at_message") == 0
                if not cut_in_prefix:
                    add("altered", pos, f"{fname}: no valid header ({w.status})")
                    continue
            else:
                hdr = w.header
                if ("station" not in hdr or hdr["station"] != station
                        or "session" not in hdr or hdr["session"] != sid
                        or "seq" not in hdr or not is_int(seq) or hdr["seq"] != seq
                        or "kind" not in hdr or hdr["kind"] != kind):
                    add("header-mismatch", pos, f"{fname}: its header names another place")
                    continue
            if entry.get("final") is not True or has_tentry:
                note = tentry.get("note") if isinstance(tentry, dict) else None
                add("truncated", pos, f"{fname}: {note or 'final false'}")
            elif not (w.status == "ok" and w.final):
                add("altered", pos, f"{fname}: signed as closed but the walk says {w.status}")

    for name in sorted(files):
        m = DRSEG_RE.match(name)
        if m and (int(m.group(1)), m.group(2)) not in listed:
            warnings.append(f"{name} is listed by no manifest")

    for k in range(1, n + 1):
        status.setdefault(k, "ok")

    # step 5: crash recovery
    end_reason = sess.get("end_reason") if sess is not None else None
    if sess is not None:
        rec = sess.get("recovery")
        if isinstance(rec, dict):
            findings = rec.get("findings")
            if findings is not None and not isinstance(findings, list):
                add("altered", None, "recovery findings are not an array")
            if isinstance(findings, list):
                for f in findings:
                    code = f.get("code") if isinstance(f, dict) else None
                    if code not in RECOVERY_CODES:
                        code = "recovery-unvouched"
                    fseq = f.get("seq") if isinstance(f, dict) else None
                    on = fseq if is_int(fseq) and fseq in status else None
                    add(code, on, str(f.get("detail")) if isinstance(f, dict) else "")
        if end_reason == "crash-recovered":
            if isinstance(rec, dict):
                add("crash-recovered", None, "closed out by crash recovery")
            else:
                add("recovery-unvouched", None, "crash-recovered without a recovery object")

    codes = {p.code for p in problems}
    verdict = verdict_of(codes, end_reason)
    return Report(sid, station, problems, status, warnings, verdict, EXIT_CODES.get(verdict, 3), end_reason)


def read_folder(folder: str) -> dict[str, bytes]:
    """The session's files: every regular file of the folder except hidden ones (``.*.tmp``)."""
    out: dict[str, bytes] = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith(".") or not os.path.isfile(path):
            continue
        with open(path, "rb") as fh:
            out[name] = fh.read()
    return out


def verify_folder(folder: str, session_id: str | None = None, trusted: list[str] | None = None) -> Report:
    return verify_files(read_folder(folder), session_id, Trust.from_entries(trusted or []))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="verify a DualRec session folder (docs/format.md 8)")
    ap.add_argument("folder")
    ap.add_argument("--session", help="the session id asked for (default: session.json's)")
    ap.add_argument("--trust", action="append", default=[], help="ed25519:KEY or STATION=ed25519:KEY")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.folder):
        print(f"no such session folder: {args.folder}", file=sys.stderr)
        return 1
    rep = verify_folder(args.folder, args.session, args.trust)
    if args.json:
        print(json.dumps(rep.to_json(), indent=2, sort_keys=True))
    else:
        print(f"{rep.session}: {rep.verdict}")
        for k, v in sorted(rep.segments.items()):
            print(f"  segment {k:06d}: {v}")
        for p in rep.problems:
            where = "session" if p.seq is None else f"segment {p.seq:06d}"
            print(f"  {p.code} ({where}): {p.detail}")
        for w in rep.warnings:
            print(f"  warning: {w}")
    return rep.exit_code


if __name__ == "__main__":
    sys.exit(main())
