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
* session vectors ``session/<name>/`` (the files of a session folder as uploaded) plus
  ``expect.txt`` with ``expect:`` (the one verify code, docs/format.md section 8; a few older
  vectors use words: missing segment, bad signature), ``verdict:`` and ``trusted:`` lines.
  The ``recovery-*`` cases are made by altering a crashed session's spool folder (without any
  key) and running recovery on it, as the next station start would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

import nacl.bindings as nb
import nacl.public
import nacl.signing

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from station.crypto.keys import identity_text, recipient_text, station_text  # noqa: E402
from station.crypto.manifest import sign  # noqa: E402
from station.crypto.sealed import (  # noqa: E402
    MAGIC,
    SealedWriter,
    canonical_json,
    recipient_fingerprint,
)
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
              identity: nacl.public.PrivateKey, payload: bytes, comment: str,
              at: tuple[int, int] | None = None) -> None:
    """``at`` = (N, o) of docs/format.md 2.5: required for truncated and bad tag, else None."""
    assert (at is not None) == (expect in ("truncated", "bad tag")), name
    pos = f"at-message: {at[0]}\noffset: {at[1]}\n" if at is not None else ""
    head = (f"expect: {expect}\nidentity: {identity_text(identity)}\n"
            f"payload-bytes: {len(payload)}\npayload-sha256: {hashlib.sha256(payload).hexdigest()}\n"
            f"{pos}comment: {comment}\n\n")
    (out / f"{name}.vec").write_bytes(head.encode("utf-8") + data)


# --- hand-made segments (docs/format.md 2.5 corner cases) ---------------------------------------
# These are built here with the file key in hand, so their message 0 verifies: a header that
# breaks a rule of 2.2 is then refused by that rule, not by a failing tag.
FINAL_BIT = 0x8000_0000
FIRST, LAST = b"first message", b"last words"
PLAIN = [(FIRST, 0), (LAST, 3)]  # (plaintext, tag[, FINAL flag]) after message 0


def wrap(key: bytes, who: nacl.public.PrivateKey = ARCHIVE) -> dict[str, str]:
    """A recipient entry: ``key`` sealed for ``who``, labelled with ``who``'s fingerprint."""
    return {"fp": recipient_fingerprint(bytes(who.public_key)),
            "wrapped": base64.b64encode(nacl.public.SealedBox(who.public_key).encrypt(key))
            .decode("ascii")}


def std(key: bytes, **changes: object) -> dict[str, object]:
    """The header SessionSealer writes, with the file key wrapped for ARCHIVE, then changes."""
    return {**HEADER, "format": 1, "recipients": [wrap(key)], **changes}


def craft(header: Any = None, messages: list[tuple[Any, ...]] | None = None, *,
          word0: int | None = None, tag0: int = 0, plain0: bytes = b"") -> bytes:
    """A segment with header bytes ``header(key)`` (default: canonical ``std``), message 0 as
    given (default: a correct one) and ``messages`` as (plaintext, tag[, flag]); the FINAL flag
    defaults to tag == TAG_FINAL. Every tag verifies: only the rules of 2.2/2.4 are broken."""
    key = nb.crypto_secretstream_xchacha20poly1305_keygen()
    hj = header(key) if header is not None else canonical_json(std(key))
    state = nb.crypto_secretstream_xchacha20poly1305_state()
    ss = nb.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    prefix = MAGIC + struct.pack(">HI", 1, len(hj)) + hj + ss
    w0 = struct.pack(">I", len(plain0) + 17 if word0 is None else word0)
    out = bytearray(prefix + w0)
    out += nb.crypto_secretstream_xchacha20poly1305_push(state, plain0, prefix, tag0)
    for m in PLAIN if messages is None else messages:
        pt, tag = m[0], m[1]
        flag = m[2] if len(m) > 2 else tag == 3
        word = struct.pack(">I", (len(pt) + 17) | (FINAL_BIT if flag else 0))
        out += word + nb.crypto_secretstream_xchacha20poly1305_push(state, pt, word, tag)
    return bytes(out)


def canon(**changes: object) -> Any:
    """Header maker: canonical JSON of ``std`` with ``changes`` (a value None drops the member)."""
    def make(key: bytes) -> bytes:
        h = std(key, **changes)
        return canonical_json({k: v for k, v in h.items() if v is not None})
    return make


def raw(edit: Any) -> Any:
    """Header maker: ``edit(canonical bytes, key)`` -> the header bytes."""
    return lambda key: edit(canonical_json(std(key)), key)


def frame_at(data: bytes, n: int) -> int:
    """Offset of message n's frame word (the end of the file if n is one past the last)."""
    fr = _frames(data)
    return fr[n][0] if n < len(fr) else len(data)


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
              "file ends after the last MESSAGE frame; FINAL missing", at=(4, fr[-1][0]))
    cut = fr[3][0] + 20
    write_vec(out, "truncated-mid-message", "truncated", ok[:cut], ARCHIVE,
              b"".join(MESSAGES[:3]), "file cut 16 bytes into message 3's ciphertext",
              at=(3, fr[3][0]))
    crashed = sealed(tmp, "crash", MESSAGES[:2], rcpt, final=False)
    write_vec(out, "truncated-crash", "truncated", crashed, ARCHIVE, b"".join(MESSAGES[:2]),
              "writer stopped after two flushes, never closed", at=(2, len(crashed)))
    # bad tag: flipped bit in message 2, swapped messages, data after FINAL, flag mismatch
    b = bytearray(ok)
    b[fr[2][0] + 10] ^= 0x01
    write_vec(out, "bad-tag-bitflip", "bad tag", bytes(b), ARCHIVE, MESSAGES[1],
              "one bit flipped in message 2's ciphertext", at=(2, fr[2][0]))
    s1, s2 = fr[1], fr[2]
    swapped = ok[:s1[0]] + ok[s2[0]:s2[0] + s2[1]] + ok[s1[0]:s1[0] + s1[1]] + ok[s2[0] + s2[1]:]
    write_vec(out, "bad-tag-reordered", "bad tag", swapped, ARCHIVE, b"",
              "messages 1 and 2 swapped", at=(1, fr[1][0]))
    write_vec(out, "bad-tag-trailing", "bad tag", ok + b"\x00\x00\x00\x11" + b"x" * 17, ARCHIVE,
              full, "a frame after FINAL", at=(5, len(ok)))
    b = bytearray(ok)
    b[fr[-1][0]] &= 0x7F
    write_vec(out, "bad-tag-final-flag", "bad tag", bytes(b), ARCHIVE, b"".join(MESSAGES),
              "FINAL flag cleared in the frame word of the FINAL message", at=(4, fr[-1][0]))
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
    order_vectors(out, ok)
    header_vectors(out)
    tag_vectors(out)


def order_vectors(out: Path, ok: bytes) -> None:
    """2.5 steps 1-5 and 8: which rule wins when a file is both cut and wrong (N, o of a cut)."""
    h = struct.unpack(">I", ok[10:14])[0]
    m0, fr = 38 + h, _frames(ok)
    p1, p2 = MESSAGES[1], b"".join(MESSAGES[:3])

    def vec(name: str, expect: str, data: bytes, comment: str, payload: bytes = b"",
            at: tuple[int, int] | None = None, who: nacl.public.PrivateKey = ARCHIVE) -> None:
        write_vec(out, name, expect, data, who, payload, comment, at)

    vec("truncated-empty-file", "truncated", b"", "0 bytes", at=(0, 0))
    vec("truncated-in-magic", "truncated", ok[:5], "5 bytes, a prefix of the magic", at=(0, 0))
    vec("bad-header-magic-short", "bad header", b"DRSX",
        "4 bytes that are not a prefix of the magic: the magic is judged byte by byte")
    vec("truncated-in-version", "truncated", ok[:9], "cut inside the version word", at=(0, 0))
    vec("unsupported-version-short", "unsupported format", MAGIC + b"\x00\x02\x00\x00",
        "12 bytes, version 2: the version word is complete, so not truncated")
    vec("unsupported-version-zero", "unsupported format", ok[:8] + b"\x00\x00" + ok[10:],
        "version 0")
    vec("truncated-in-header-length", "truncated", ok[:12], "cut inside H", at=(0, 0))
    vec("bad-header-length-zero", "bad header", MAGIC + b"\x00\x01" + bytes(4),
        "H = 0 and the file ends right after it")
    vec("bad-header-length-too-big", "bad header",
        MAGIC + b"\x00\x01" + struct.pack(">I", 65537) + ok[14:114],
        "H = 65537 and the file is far shorter than 14 + H")
    vec("truncated-in-header", "truncated", ok[:14 + h // 2], "cut in the middle of the header",
        at=(0, 0))
    vec("bad-header-json-cut-in-ss-header", "bad header", (ok[:14] + b"[" + ok[15:])[:14 + h + 10],
        "header is not JSON and the file ends inside the secretstream header: the header is "
        "judged first")
    vec("truncated-in-ss-header", "truncated", ok[:14 + h + 10],
        "cut inside the secretstream header", at=(0, 0))
    vec("truncated-in-ss-header-no-recipient", "truncated", ok[:14 + h + 10],
        "cut inside the secretstream header, read by a non-recipient: the prefix is read "
        "before any key is tried", at=(0, 0), who=OTHER)
    vec("truncated-in-message-0-word", "truncated", ok[:m0 + 2],
        "cut inside message 0's frame word", at=(0, 0))
    vec("truncated-in-message-0", "truncated", ok[:m0 + 10],
        "cut inside message 0's ciphertext: nothing verified, offset 0", at=(0, 0))
    vec("truncated-after-message-0", "truncated", ok[:m0 + 21],
        "file ends right after message 0", at=(1, m0 + 21))
    vec("bad-header-message-0-word-cut", "bad header", ok[:m0] + b"\x80\x00\x00\x11",
        "message 0's frame word has the FINAL flag, and the file ends after it")
    vec("truncated-partial-word", "truncated", ok[:fr[2][0] + 3],
        "3 bytes of message 2's frame word", payload=p1, at=(2, fr[2][0]))
    vec("bad-tag-length-too-big-cut", "bad tag", ok[:fr[2][0]] + b"\x7f\xff\xff\xff" + b"x" * 5,
        "message 2's C = 2^31-1 and only 5 bytes follow: out of range wins over the cut",
        payload=p1, at=(2, fr[2][0]))
    vec("bad-tag-length-too-small-cut", "bad tag", ok[:fr[2][0]] + b"\x00\x00\x00\x10",
        "message 2's C = 16 and nothing follows", payload=p1, at=(2, fr[2][0]))
    vec("bad-tag-zero-filled-tail", "bad tag", ok[:fr[3][0]] + bytes(100),
        "100 zero bytes where message 3 should be (C = 0), as a power cut can leave",
        payload=p2, at=(3, fr[3][0]))
    vec("bad-tag-trailing-short", "bad tag", ok + b"\x00\x00\x11",
        "3 bytes after FINAL (fewer than a frame word)", payload=b"".join(MESSAGES),
        at=(5, len(ok)))


def header_vectors(out: Path) -> None:
    """2.2 header rules, on files whose message 0 verifies (made with the key)."""
    body = FIRST + LAST
    other_key = nb.crypto_secretstream_xchacha20poly1305_keygen()

    def bad(name: str, header: Any, comment: str) -> None:
        write_vec(out, name, "bad header", craft(header), ARCHIVE, b"", comment)

    def good(name: str, header: Any, comment: str) -> None:
        write_vec(out, name, "ok", craft(header), ARCHIVE, body, comment)

    def entries(make: Any) -> Any:
        return lambda key: canonical_json(std(key, recipients=make(key)))

    def entry(**changes: object) -> Any:
        return entries(lambda key: [{**wrap(key), **changes}])

    good("ok-crafted", None, "the reference for the hand-made vectors: two messages, FINAL")
    good("ok-minimal-header", lambda key: canonical_json({"format": 1, "recipients": [wrap(key)]}),
         "header with format and recipients only")
    good("ok-kind-qc", lambda key: canonical_json(
        {"format": 1, "kind": "qc", "recipients": [wrap(key)], "session": "s"}),
        "a sealed QC report's header: kind qc, no seq")
    good("ok-unknown-members", canon(extra={"a": [1, -2, True, None, "x", {}]}, zz=-2 ** 63),
         "unknown members of every JSON type but fractions are ignored")
    good("ok-entry-extra-member", entry(note="rotated 2026"),
         "a recipient entry with a member a reader does not know")
    deep: Any = []
    for _ in range(14):
        deep = [deep]
    good("ok-header-depth-16", canon(deep=deep), "arrays nested to depth 16 (the limit)")

    def padded(key: bytes) -> bytes:
        h = std(key, pad="")
        h["pad"] = "p" * (65536 - len(canonical_json(h)))
        return canonical_json(h)
    good("ok-header-65536-bytes", padded, "H = 65536, the largest header")

    # gap 4: types of the members a reader checks
    bad("bad-header-format-true", canon(format=True), "\"format\": true (not the integer 1)")
    bad("bad-header-format-string", canon(format="1"), "\"format\": \"1\"")
    bad("bad-header-format-missing", canon(format=None), "no format member")
    bad("bad-header-seq-true", canon(seq=True), "\"seq\": true")
    bad("bad-header-seq-zero", canon(seq=0), "\"seq\": 0")
    bad("bad-header-kind-unknown", canon(kind="video"), "\"kind\": \"video\"")
    bad("bad-header-created-mono-negative", canon(created_mono_ns=-1), "\"created_mono_ns\": -1")
    bad("bad-header-station-number", canon(station=5), "\"station\": 5")
    # gap 5: recipient entries
    bad("bad-header-recipients-empty", entries(lambda key: []), "\"recipients\": []")
    bad("bad-header-recipient-not-object", entries(lambda key: ["x"]),
        "a recipient entry that is a string")
    bad("bad-header-wrapped-opens-to-31-bytes", entries(lambda key: [wrap(key[:31])]),
        "wrapped is a sealed box of 31 bytes (79 bytes): it opens, but is not 80 bytes")
    bad("bad-header-wrapped-81-bytes", entries(lambda key: [wrap(key + b"\x00")]),
        "wrapped is a sealed box of 33 bytes (81 bytes)")
    bad("bad-header-wrapped-not-base64", entry(wrapped="not base64!"), "wrapped is not base64")

    def loose_b64(key: bytes) -> list[dict[str, str]]:
        e = wrap(key)
        w = e["wrapped"]
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        e["wrapped"] = w[:-2] + alphabet[alphabet.index(w[-2]) ^ 1] + "="
        return [e]
    bad("bad-header-wrapped-noncanonical-base64", entries(loose_b64),
        "wrapped decodes to the right 80 bytes but an unused bit of its last character is set")
    bad("bad-header-fp-upper-case", entries(lambda key: [
        {**wrap(key), "fp": wrap(key)["fp"].upper()}]), "fp in upper-case hex")
    bad("bad-header-fp-short", entries(lambda key: [{**wrap(key), "fp": wrap(key)["fp"][:31]}]),
        "fp of 31 hex characters")
    good("ok-duplicate-fp-first-opens", entries(lambda key: [wrap(key), wrap(other_key)]),
         "two entries for the archive key, the first with the file key: the first that opens "
         "gives the key")
    bad("bad-header-duplicate-fp-first-other-key",
        entries(lambda key: [wrap(other_key), wrap(key)]),
        "two entries for the archive key, the first with another key: it opens, so it is the "
        "file key, and message 0 fails")
    write_vec(out, "wrong-key-two-entries", "wrong key", craft(entries(lambda key: [
        {**wrap(key, OTHER), "fp": wrap(key)["fp"]}] * 2)), ARCHIVE, b"",
        "two entries with the archive fingerprint, both wrapped for another key")
    # gap 6: canonical form, encoding, numbers, nesting
    bad("bad-header-duplicate-member", raw(lambda c, k: c.replace(b'"format":1,',
                                                                    b'"format":1,"format":1,')),
        "member format twice (same value)")
    bad("bad-header-whitespace", lambda key: json.dumps(std(key), sort_keys=True).encode(),
        "JSON with the default separators \", \" and \": \"")
    bad("bad-header-unsorted", lambda key: json.dumps(std(key), separators=(",", ":")).encode(),
        "members not sorted")
    bad("bad-header-bom", raw(lambda c, k: b"\xef\xbb\xbf" + c), "UTF-8 byte order mark first")
    bad("bad-header-trailing-space", raw(lambda c, k: c + b" "),
        "a space after the JSON, inside H")
    bad("bad-header-trailing-nul", raw(lambda c, k: c + b"\x00"), "a NUL after the JSON, inside H")
    bad("bad-header-escaped-ascii", raw(lambda c, k: c.replace(b'"vec-station"',
                                                               b'"\\u0076ec-station"')),
        "station written with an escape section 3 does not use")
    bad("bad-header-lone-surrogate", raw(lambda c, k: c.replace(b'"vec-station"',
                                                                b'"vec-\\ud800station"')),
        "a string with an escaped lone surrogate")
    bad("bad-header-not-utf8", raw(lambda c, k: c.replace(b"vec-station", b"vec-\xffstation")),
        "a string with the byte FF")
    bad("bad-header-nan", raw(lambda c, k: c.replace(b'"recipients"', b'"nan":NaN,"recipients"')),
        "an unknown member NaN")
    bad("bad-header-fraction", canon(ratio=0.5), "an unknown member 0.5")
    bad("bad-header-integer-too-big", canon(big=2 ** 63), "an unknown member 2^63")
    bad("bad-header-depth-17", canon(deep=[deep]), "arrays nested to depth 17")
    bad("bad-header-depth-20000", raw(lambda c, k: c.replace(
        b'"format"', b'"deep":' + b"[" * 20000 + b"]" * 20000 + b',"format"')),
        "arrays nested 20000 deep (a recursive parser runs out of stack)")


def tag_vectors(out: Path) -> None:
    """2.4/2.5 step 7-8: tags and flags, every tag verifying (made with the key)."""
    def vec(name: str, expect: str, data: bytes, comment: str, payload: bytes = b"",
            n: int | None = None) -> None:
        write_vec(out, name, expect, data, ARCHIVE, payload, comment,
                  None if n is None else (n, frame_at(data, n)))

    vec("bad-tag-push", "bad tag", craft(None, [(FIRST, 0), (b"pushed", 1), (LAST, 3)]),
        "message 2 has TAG_PUSH", FIRST, 2)
    vec("bad-tag-rekey", "bad tag", craft(None, [(FIRST, 0), (b"rekeyed", 2), (LAST, 3)]),
        "message 2 has TAG_REKEY", FIRST, 2)
    vec("bad-tag-flag-on-message", "bad tag", craft(None, [(FIRST, 0, True), (LAST, 3)]),
        "message 1 has tag MESSAGE and the FINAL flag (the word verifies as additional data)",
        b"", 1)
    vec("bad-tag-final-without-flag", "bad tag", craft(None, [(FIRST, 0), (LAST, 3, False)]),
        "the last message has TAG_FINAL without the FINAL flag", FIRST, 2)
    vec("bad-tag-after-final-frame", "bad tag",
        craft(None, [(FIRST, 3), (LAST, 3)]), "a second FINAL message after a FINAL", FIRST, 2)
    vec("ok-empty-message", "ok", craft(None, [(FIRST, 0), (b"", 0), (LAST, 3)]),
        "an empty MESSAGE between two others", FIRST + LAST)
    vec("bad-header-final-message-0", "bad header", craft(None, word0=0x8000_0011, tag0=3),
        "message 0 has TAG_FINAL and the FINAL flag")
    vec("bad-header-final-tag-message-0", "bad header", craft(None, tag0=3),
        "message 0 has TAG_FINAL, flag clear (word 00 00 00 11)")
    vec("bad-header-message-0-not-empty", "bad header", craft(None, plain0=b"x"),
        "message 0 carries one byte (word 00 00 00 12)")


def _rechain(d: Path, key: nacl.signing.SigningKey, edit: dict[int, Any] | None = None) -> None:
    """Re-sign every manifest of ``d`` with ``key`` (``None``: strip the signature), applying
    ``edit[seq](manifest)`` first, so the chain and session.json stay consistent: the forgery of
    someone who holds a station key (or of a recovery that signs whatever it finds)."""
    prev = "0" * 64
    seqs = sorted(int(p.name[4:10]) for p in d.glob("seg-*.manifest.json"))
    for seq in seqs:
        p = d / f"seg-{seq:06d}.manifest.json"
        man = {k: v for k, v in json.loads(p.read_bytes()).items() if k not in ("sig", "signer")}
        man["prev"] = prev
        if edit and seq in edit:
            edit[seq](man)
        man = sign(man, key) if key is not None else man
        p.write_bytes(canonical_json(man) + b"\n")
        prev = hashlib.sha256(canonical_json(man)).hexdigest()
    p = d / "session.json"
    if p.exists():
        man = {k: v for k, v in json.loads(p.read_bytes()).items() if k not in ("sig", "signer")}
        man["last_hash"] = prev
        man = sign(man, key) if key is not None else man
        p.write_bytes(canonical_json(man) + b"\n")


def _file_entry(d: Path, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    data = (d / name).read_bytes()
    return dict(entry, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def session_vectors(out: Path, tmp: Path) -> None:
    rcpt = [recipient_text(ARCHIVE.public_key)]
    trusted = station_text(STATION.verify_key)
    sid = "20261124T062500Z-0000beef"

    def make(name: str, segments: int = 3, crash: bool = False, finish: bool = True,
             signer: nacl.signing.SigningKey = STATION) -> Path:
        d = out / name
        if d.exists():
            shutil.rmtree(d)
        s = SessionSealer(d, sid, "vec-station", rcpt, signer,
                          {"agent": "agent-007", "site": "vec-site",
                           "started_utc": "2026-11-24T06:25:00.000Z"})
        for seq in range(1, segments + 1):
            for kind in ("media", "oplog", "masklog"):
                w = s.open_segment(seq, kind)
                for i in range(3):  # three checkpoints per file
                    w.write(f"{kind} {seq} {i} ".encode() * 50)
                    w.flush()
            if crash and seq == segments:
                w.write(b"lost tail")
                s.abandon()
                for ws in s._open[seq].values():
                    ws._fh.close()
                return d
            s.close_segment(seq, {"frames": {"screen": 15 * seq}, "gaps": []})
        if finish:
            s.finish("normal", {"markers": [{"t_ms": 1000, "label": "consent"}]})
        else:
            s.abandon()
        return d

    def recover(d: Path) -> Path:
        recover_session(d, STATION)
        return d

    def expect(d: Path, codes: str, verdict: str, comment: str) -> None:
        (d / "checkpoints.log").unlink(missing_ok=True)  # never leaves the seat
        (d / "expect.txt").write_text(f"expect: {codes}\nverdict: {verdict}\ntrusted: {trusted}\n"
                                      f"comment: {comment}\n", encoding="utf-8")

    expect(make("ok"), "ok", "intact", "three segments, normal end")
    expect(recover(make("truncated", crash=True)), "truncated, crash-recovered", "recovered",
           "crash during segment 3, closed out by recovery (crash-recovered), nothing else wrong")
    d = make("reordered")
    for kind in ("manifest.json", "media.drseg", "oplog.drseg", "masklog.drseg"):
        a, b = d / f"seg-000002.{kind}", d / f"seg-000003.{kind}"
        a.rename(d / "tmp")
        b.rename(a)
        (d / "tmp").rename(b)
    expect(d, "reordered", "altered", "segments 2 and 3 swapped (all their files renamed)")
    d = make("missing-segment")
    for p in d.glob("seg-000002.*"):
        p.unlink()
    expect(d, "missing segment", "altered", "every file of segment 2 removed")
    d = make("bad-signature")
    p = d / "seg-000002.manifest.json"
    man = json.loads(p.read_bytes())
    man["stats"]["frames"]["screen"] = 999
    p.write_bytes(canonical_json(man) + b"\n")
    expect(d, "bad signature", "altered", "segment 2 manifest edited after signing (frame count)")
    d = make("bad-signature-rogue")
    p = d / "seg-000002.manifest.json"
    man = json.loads(p.read_bytes())
    forged = sign(man, ROGUE)
    forged["signer"] = man["signer"]
    p.write_bytes(canonical_json(forged) + b"\n")
    expect(d, "bad signature", "altered", "segment 2 manifest re-signed by another key, signer unchanged")
    d = make("unsigned")
    _rechain(d, None)
    expect(d, "unsigned", "altered", "every manifest without signer/sig, chain consistent")
    expect(make("untrusted", signer=ROGUE), "untrusted", "untrusted",
           "a consistent session signed by a key the verifier does not trust")
    d = make("session-open", finish=False)
    expect(d, "session-open", "open", "no session.json: still recording or not yet recovered")
    d = make("chain-broken")
    _rechain(d, STATION, {2: lambda m: m.update(prev="1" * 64)})
    expect(d, "chain-broken", "altered", "segment 2 re-signed by the station key with another prev")
    d = make("missing-file")
    (d / "seg-000002.oplog.drseg").unlink()
    expect(d, "missing-file", "altered", "segment 2 oplog file removed")
    d = make("altered")
    p = d / "seg-000002.media.drseg"
    raw = bytearray(p.read_bytes())
    raw[-5] ^= 1
    p.write_bytes(bytes(raw))
    expect(d, "altered", "altered", "one bit of segment 2 media flipped")
    d = make("header-mismatch")
    shutil.copyfile(d / "seg-000001.media.drseg", d / "seg-000002.media.drseg")
    _rechain(d, STATION, {2: lambda m: m["files"].update(media=_file_entry(
        d, "seg-000002.media.drseg", m["files"]["media"]))})
    expect(d, "header-mismatch", "altered", "segment 1's media file listed (validly signed) as "
           "segment 2's: its sealed header says seq 1")
    d = make("wrong-name")
    _rechain(d, STATION, {2: lambda m: m["files"]["oplog"].update(name="seg-000009.oplog.drseg")})
    expect(d, "wrong-name", "altered", "segment 2 manifest names its oplog file seg-000009")
    d = make("bad-format")
    _rechain(d, STATION, {2: lambda m: m.update(format=True)})
    expect(d, "bad-format", "altered", "segment 2 manifest with \"format\": true (not the integer 1)")
    d = make("wrong-type")
    _rechain(d, STATION, {2: lambda m: m.update(type="session")})
    expect(d, "wrong-type", "altered", "segment 2 manifest with type session")
    d = make("wrong-station")
    _rechain(d, STATION, {2: lambda m: m.update(station="other-station")})
    expect(d, "wrong-station", "altered", "segment 2 manifest names another station")

    # what recovery finds on a seat's disk altered by someone without the keys
    d = make("recovered-at-boundary", segments=2)
    (d / "session.json").unlink()
    (d / "checkpoints.log").write_bytes(b"".join(  # the crash came before the finished line
        ln + b"\n" for ln in (d / "checkpoints.log").read_bytes().split(b"\n")
        if ln and b'"t":"finished"' not in ln))
    expect(recover(d), "crash-recovered", "recovered", "crash right after segment 2 closed: "
           "every segment whole, still not intact (ended by a crash)")
    d = make("recovery-session-finished", segments=3)
    (d / "session.json").unlink()
    for p in d.glob("seg-000003.*"):
        p.unlink()
    expect(recover(d), "recovery-session-finished, recovery-missing-file", "altered",
           "finished session: session.json and segment 3 deleted before upload, then recovered")
    d = make("recovery-header-mismatch", crash=True)
    shutil.copyfile(d / "seg-000001.oplog.drseg", d / "seg-000003.oplog.drseg")
    expect(recover(d), "recovery-header-mismatch, header-mismatch", "altered",
           "segment 1's oplog file put in place of segment 3's before recovery (recovery does not "
           "vouch for it, and verify sees the header itself)")
    d = make("recovery-appended", crash=True)
    with (d / "seg-000003.media.drseg").open("ab") as fh:
        fh.write(b"\x00\x00\x00\x20" + b"A" * 32)
    expect(recover(d), "recovery-appended", "altered",
           "a frame appended to segment 3 media after the last checkpoint")
    d = make("recovery-checkpoint-mismatch", crash=True)
    p = d / "seg-000003.media.drseg"
    raw = bytearray(p.read_bytes())
    raw[-40] ^= 1
    p.write_bytes(bytes(raw))
    expect(recover(d), "recovery-checkpoint-mismatch", "altered",
           "one bit of segment 3 media flipped before recovery")
    d = make("recovery-cut", crash=True)
    p = d / "seg-000003.media.drseg"
    p.write_bytes(p.read_bytes()[:300])
    expect(recover(d), "recovery-cut", "altered",
           "segment 3 media cut below an older checkpoint before recovery")
    d = make("recovery-missing-file", crash=True)
    (d / "seg-000003.oplog.drseg").unlink()
    expect(recover(d), "recovery-missing-file", "altered",
           "segment 3 oplog deleted before recovery")
    d = make("recovery-unvouched", crash=True)
    (d / "checkpoints.log").unlink()
    expect(recover(d), "recovery-unvouched", "altered",
           "checkpoints.log deleted before recovery")
    d = make("recovery-bad-checkpoint", crash=True)
    with (d / "checkpoints.log").open("ab") as fh:
        fh.write(b'{"n":999,"prev":"forged","sig":"AAAA"}\n')
    expect(recover(d), "recovery-bad-checkpoint", "altered",
           "a line not signed by the station appended to checkpoints.log before recovery")


def main(out: Path, only: str | None = None) -> None:
    if only not in (None, "segment", "session"):
        raise SystemExit("usage: make_vectors.py [OUT] [--only segment|session]")
    if only != "session":
        with tempfile.TemporaryDirectory() as t:
            segment_vectors(out / "segment", Path(t))
    if only == "segment":
        return
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
    args = sys.argv[1:]
    only = None
    if "--only" in args:
        i = args.index("--only")
        only = args[i + 1] if i + 1 < len(args) else ""
        del args[i:i + 2]
    main(Path(args[0]) if args else Path(__file__).resolve().parent, only)
