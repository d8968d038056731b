#!/usr/bin/env python3
"""Generate the sealed-segment and session test vectors (tests/vectors/).

    python tests/vectors/make_vectors.py [OUT_DIR]

Keys are deterministic (derived from fixed labels) so the vector keys stay stable; ciphertexts
differ per run because secretstream and sealed boxes draw fresh randomness. Each vector names
its expected category on an ``expect:`` line:

* segment vectors ``segment/<name>.vec``: text lines ``key: value`` up to the first empty line,
  then the raw segment bytes. ``expect`` is one of ok, truncated, bad tag, bad header,
  wrong key, no recipient, unsupported format. ``identity`` is the identity to read with,
  ``payload-sha256``/``payload-bytes`` describe the plaintext released before the end or the
  error.
* session vectors ``session/<name>/`` (the files of a session folder) plus ``expect.txt`` with
  ``expect:`` (ok, truncated, reordered, missing segment, bad signature) and ``trusted:`` lines.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import nacl.public
import nacl.signing

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from station.crypto.keys import identity_text, recipient_text, station_text  # noqa: E402
from station.crypto.manifest import sign  # noqa: E402
from station.crypto.sealed import MAGIC, SealedWriter, canonical_json  # noqa: E402
from station.crypto.session import SessionSealer, recover_session  # noqa: E402


def seed(label: str) -> bytes:
    return hashlib.sha256(b"dualrec test vector: " + label.encode()).digest()


ARCHIVE = nacl.public.PrivateKey(seed("archive"))
ESCROW = nacl.public.PrivateKey(seed("escrow"))
OTHER = nacl.public.PrivateKey(seed("other reviewer"))
STATION = nacl.signing.SigningKey(seed("station"))
ROGUE = nacl.signing.SigningKey(seed("rogue station"))
HEADER = {"station": "vec-station", "session": "20261124T062500Z-0000abcd", "seq": 1,
          "kind": "media", "created_utc": "2026-11-24T06:25:00.000Z", "created_mono_ns": 1}
MESSAGES = [b"", b"first message", bytes(range(256)) * 40, b"last words"]


def _frames(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of every frame incl. its word; offset 0 is the first frame word."""
    hlen = struct.unpack(">I", data[10:14])[0]
    pos = 14 + hlen + 24
    out = []
    while pos < len(data):
        clen = struct.unpack(">I", data[pos:pos + 4])[0] & 0x7FFF_FFFF
        out.append((pos, 4 + clen))
        pos += 4 + clen
    return out


def sealed(tmp: Path, name: str, messages: list[bytes], recipients: list[str], *,
           header: dict[str, object] | None = None, final: bool = True) -> bytes:
    path = tmp / name
    w = SealedWriter(path, recipients, header or HEADER)
    for m in messages:
        w.write(m)
        w.flush()
    if final:
        w.close()
    else:
        w._fh.close()  # simulate a crash: no FINAL
    return path.read_bytes()


def write_vec(out: Path, name: str, expect: str, data: bytes,
              identity: nacl.public.PrivateKey, payload: bytes, comment: str) -> None:
    head = (f"expect: {expect}\nidentity: {identity_text(identity)}\n"
            f"payload-bytes: {len(payload)}\npayload-sha256: {hashlib.sha256(payload).hexdigest()}\n"
            f"comment: {comment}\n\n")
    (out / f"{name}.vec").write_bytes(head.encode("utf-8") + data)


def segment_vectors(out: Path, tmp: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rcpt = [recipient_text(ARCHIVE.public_key)]
    full = b"".join(MESSAGES)
    ok = sealed(tmp, "ok", MESSAGES, rcpt)
    write_vec(out, "ok", "ok", ok, ARCHIVE, full, "four messages, FINAL")
    empty = sealed(tmp, "empty", [], rcpt)
    write_vec(out, "ok-empty", "ok", empty, ARCHIVE, b"", "no payload at all, only FINAL")
    two = sealed(tmp, "two", MESSAGES, [*rcpt, recipient_text(ESCROW.public_key)])
    write_vec(out, "ok-second-recipient", "ok", two, ESCROW, full,
              "two recipients (rotation); read with the second")
    fr = _frames(ok)
    # truncated: drop FINAL; cut inside a message
    write_vec(out, "truncated-no-final", "truncated", ok[:fr[-1][0]], ARCHIVE, full,
              "file ends after the last MESSAGE frame; FINAL missing")
    cut = fr[3][0] + 20
    write_vec(out, "truncated-mid-message", "truncated", ok[:cut], ARCHIVE,
              b"".join(MESSAGES[:3]), "file cut 16 bytes into message 3's ciphertext")
    crashed = sealed(tmp, "crash", MESSAGES[:2], rcpt, final=False)
    write_vec(out, "truncated-crash", "truncated", crashed, ARCHIVE, b"".join(MESSAGES[:2]),
              "writer stopped after two flushes, never closed")
    # bad tag: flipped bit in message 2, swapped messages, data after FINAL, flag mismatch
    b = bytearray(ok)
    b[fr[2][0] + 10] ^= 0x01
    write_vec(out, "bad-tag-bitflip", "bad tag", bytes(b), ARCHIVE, MESSAGES[1],
              "one bit flipped in message 2's ciphertext")
    s1, s2 = fr[1], fr[2]
    swapped = ok[:s1[0]] + ok[s2[0]:s2[0] + s2[1]] + ok[s1[0]:s1[0] + s1[1]] + ok[s2[0] + s2[1]:]
    write_vec(out, "bad-tag-reordered", "bad tag", swapped, ARCHIVE, b"",
              "messages 1 and 2 swapped")
    write_vec(out, "bad-tag-trailing", "bad tag", ok + b"\x00\x00\x00\x11" + b"x" * 17, ARCHIVE,
              full, "a frame after FINAL")
    b = bytearray(ok)
    b[fr[-1][0]] &= 0x7F
    write_vec(out, "bad-tag-final-flag", "bad tag", bytes(b), ARCHIVE, b"".join(MESSAGES),
              "FINAL flag cleared in the frame word of the FINAL message")
    # bad header: field changed, header swapped from another segment, magic
    hlen = struct.unpack(">I", ok[10:14])[0]
    hdr = json.loads(ok[14:14 + hlen])
    hdr["seq"] = 7
    hj = canonical_json(hdr)
    edited = ok[:10] + struct.pack(">I", len(hj)) + hj + ok[14 + hlen:]
    write_vec(out, "bad-header-edited", "bad header", edited, ARCHIVE, b"",
              "header seq changed from 1 to 7")
    other = sealed(tmp, "other", MESSAGES, rcpt, header=dict(HEADER, seq=2))
    ohlen = struct.unpack(">I", other[10:14])[0]
    swapped_hdr = other[:14 + ohlen + 24] + ok[14 + hlen + 24:]
    write_vec(out, "bad-header-swapped", "bad header", swapped_hdr, ARCHIVE, b"",
              "header (and key) of segment 2 on the body of segment 1")
    write_vec(out, "bad-header-magic", "bad header", b"DRSEX" + ok[5:], ARCHIVE, b"",
              "magic damaged")
    write_vec(out, "bad-header-json", "bad header", ok[:14] + b"[" + ok[15:], ARCHIVE, b"",
              "header is not JSON")
    write_vec(out, "unsupported-version", "unsupported format", ok[:8] + b"\x00\x02" + ok[10:],
              ARCHIVE, b"", "format version 2")
    # wrong key: the entry for ARCHIVE's fingerprint holds a key wrapped for OTHER
    entry_other = json.loads(sealed(tmp, "o2", [], [recipient_text(OTHER.public_key)])[14:][
        :struct.unpack(">I", sealed(tmp, "o3", [], [recipient_text(OTHER.public_key)])[10:14])[0]])
    hdr = json.loads(ok[14:14 + hlen])
    hdr["recipients"][0]["wrapped"] = entry_other["recipients"][0]["wrapped"]
    hj = canonical_json(hdr)
    write_vec(out, "wrong-key", "wrong key", ok[:10] + struct.pack(">I", len(hj)) + hj
              + ok[14 + hlen:], ARCHIVE, b"",
              "recipient entry labelled with the archive fingerprint but wrapped for another key")
    write_vec(out, "no-recipient", "no recipient", ok, OTHER, b"",
              "read with an identity that is not a recipient")
    assert ok.startswith(MAGIC)


def session_vectors(out: Path, tmp: Path) -> None:
    rcpt = [recipient_text(ARCHIVE.public_key)]
    trusted = station_text(STATION.verify_key)
    sid = "20261124T062500Z-0000beef"

    def make(name: str, segments: int = 3, crash: bool = False) -> Path:
        d = out / name
        if d.exists():
            shutil.rmtree(d)
        s = SessionSealer(d, sid, "vec-station", rcpt, STATION,
                          {"agent": "agent-007", "site": "vec-site",
                           "started_utc": "2026-11-24T06:25:00.000Z"})
        for seq in range(1, segments + 1):
            for kind in ("media", "oplog", "masklog"):
                w = s.open_segment(seq, kind)
                w.write(f"{kind} {seq} ".encode() * 50)
                w.flush()
            if crash and seq == segments:
                w.write(b"lost tail")
                s.abandon()
                for ws in s._open[seq].values():
                    ws._fh.close()
                recover_session(d, STATION)
                return d
            s.close_segment(seq, {"frames": {"screen": 15 * seq}, "gaps": []})
        s.finish("normal", {"markers": [{"t_ms": 1000, "label": "consent"}]})
        return d

    def expect(d: Path, category: str, comment: str) -> None:
        (d / "expect.txt").write_text(f"expect: {category}\ntrusted: {trusted}\n"
                                      f"comment: {comment}\n", encoding="utf-8")

    expect(make("ok"), "ok", "three segments, normal end")
    expect(make("truncated", crash=True), "truncated",
           "crash during segment 3, closed out by recovery (crash-recovered)")
    d = make("reordered")
    for kind in ("manifest.json", "media.drseg", "oplog.drseg", "masklog.drseg"):
        a, b = d / f"seg-000002.{kind}", d / f"seg-000003.{kind}"
        a.rename(d / "tmp")
        b.rename(a)
        (d / "tmp").rename(b)
    expect(d, "reordered", "segments 2 and 3 swapped (all their files renamed)")
    d = make("missing-segment")
    for p in d.glob("seg-000002.*"):
        p.unlink()
    expect(d, "missing segment", "every file of segment 2 removed")
    d = make("bad-signature")
    p = d / "seg-000002.manifest.json"
    man = json.loads(p.read_bytes())
    man["stats"]["frames"]["screen"] = 999
    p.write_bytes(canonical_json(man) + b"\n")
    expect(d, "bad signature", "segment 2 manifest edited after signing (frame count)")
    d = make("bad-signature-rogue")
    p = d / "seg-000002.manifest.json"
    man = json.loads(p.read_bytes())
    forged = sign(man, ROGUE)
    forged["signer"] = man["signer"]
    p.write_bytes(canonical_json(forged) + b"\n")
    expect(d, "bad signature", "segment 2 manifest re-signed by another key, signer unchanged")


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as t:
        segment_vectors(out / "segment", Path(t))
    (out / "session").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        session_vectors(out / "session", Path(t))
    (out / "keys.txt").write_text(
        "# deterministic test keys (never use outside tests)\n"
        f"archive-identity: {identity_text(ARCHIVE)}\n"
        f"archive-recipient: {recipient_text(ARCHIVE.public_key)}\n"
        f"escrow-identity: {identity_text(ESCROW)}\n"
        f"other-identity: {identity_text(OTHER)}\n"
        f"station: {station_text(STATION.verify_key)}\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
