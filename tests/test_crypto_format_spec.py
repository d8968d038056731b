"""docs/format.md is enough to write a reader: an independent reader written from section 2 alone
(PyNaCl bindings, no station.crypto code) agrees with every vector and with SealedReader on
thousands of damaged files (category, message number and offset, released bytes), and an
independent manifest check agrees on signatures, hashes and the chain."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
from pathlib import Path

import nacl.bindings as nb
import nacl.exceptions
import nacl.public
import nacl.signing

from station.crypto.sealed import scan_frames
from tests.test_crypto_vectors import VECTORS, parse_vec, segment_result, vec_expectation

MAGIC = b"DRSEG\x00\r\n"  # 44 52 53 45 47 00 0D 0A
HEX = "0123456789abcdef"
KINDS = ("media", "oplog", "masklog", "qc")
Result = tuple[str, "tuple[int, int] | None", bytes]  # category, (N, o), plaintext released


def canonical(obj: object) -> bytes:
    """Section 3."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def json_ok(v: object, depth: int) -> bool:
    """2.2 rules 3 and 4: nesting at most 16, every number an integer in int64."""
    if depth > 16 and isinstance(v, (list, dict)):  # "arrays and objects nest at most 16 deep"
        return False
    if isinstance(v, float):
        return False
    if is_int(v):
        return -(2 ** 63) <= v < 2 ** 63  # type: ignore[operator]
    if isinstance(v, list):
        return all(json_ok(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return all(json_ok(x, depth + 1) for x in v.values())
    return True


def spec_header(raw: bytes, version: int) -> dict[str, object] | None:
    """Section 2.2 "Valid header", rules 1-7; None when any fails."""
    try:
        obj = json.loads(raw.decode("utf-8"))  # 1 (strict UTF-8; canonical check below)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or not json_ok(obj, 1):  # 1, 3, 4
        return None
    try:
        if canonical(obj) != raw:  # 2
            return None
    except ValueError:  # NaN, a lone surrogate
        return None
    if not is_int(obj.get("format")) or obj["format"] != version:  # 5
        return None
    rs = obj.get("recipients")
    if not isinstance(rs, list) or not rs:  # 6
        return None
    for r in rs:
        if not isinstance(r, dict):
            return None
        fp, w = r.get("fp"), r.get("wrapped")
        if not (isinstance(fp, str) and len(fp) == 32 and all(c in HEX for c in fp)):
            return None
        if not (isinstance(w, str) and len(w) == 108 and w.endswith("=")):
            return None
        try:
            dec = base64.b64decode(w, validate=True)
        except ValueError:
            return None
        if len(dec) != 80 or base64.b64encode(dec).decode() != w:
            return None
    for name in ("station", "session", "created_utc"):  # 7
        if name in obj and not isinstance(obj[name], str):
            return None
    if "seq" in obj and not (is_int(obj["seq"]) and obj["seq"] >= 1):  # type: ignore[operator]
        return None
    if "kind" in obj and obj["kind"] not in KINDS:
        return None
    if "created_mono_ns" in obj and not (is_int(obj["created_mono_ns"])
                                         and obj["created_mono_ns"] >= 0):  # type: ignore
        return None
    return obj


def spec_read(data: bytes, identity_texts: list[str]) -> Result:
    """Section 2.5, steps 1-8, literally. Returns (category, (N, o) or None, plaintext)."""
    n = len(data)
    out = bytearray()
    cut0: Result = ("truncated", (0, 0), b"")
    # 1
    m = min(8, n)
    if data[:m] != MAGIC[:m]:
        return "bad header", None, b""
    if n < 8:
        return cut0
    # 2
    if n < 10:
        return cut0
    v = struct.unpack(">H", data[8:10])[0]
    if v != 1:
        return "unsupported format", None, b""
    # 3
    if n < 14:
        return cut0
    h = struct.unpack(">I", data[10:14])[0]
    if h == 0 or h > 65536:
        return "bad header", None, b""
    # 4
    if n < 14 + h:
        return cut0
    hdr = spec_header(data[14:14 + h], v)
    if hdr is None:
        return "bad header", None, b""
    # 5
    if n < 38 + h:
        return cut0
    prefix = data[:38 + h]
    # 6
    ids: dict[str, tuple[bytes, bytes]] = {}
    for text in identity_texts:
        sk = base64.b64decode(text.split(":", 1)[1])
        pk = nb.crypto_scalarmult_base(sk)
        fp = hashlib.sha256(b"x25519:" + base64.b64encode(pk)).hexdigest()[:32]
        ids.setdefault(fp, (pk, sk))
    entries = [r for r in hdr["recipients"] if r["fp"] in ids]  # type: ignore[attr-defined]
    if not entries:
        return "no recipient", None, b""
    key = None
    for r in entries:
        pk, sk = ids[r["fp"]]
        try:
            key = nb.crypto_box_seal_open(base64.b64decode(r["wrapped"]), pk, sk)
            break
        except nacl.exceptions.CryptoError:
            continue
    if key is None:
        return "wrong key", None, b""
    # 7
    st = nb.crypto_secretstream_xchacha20poly1305_state()
    nb.crypto_secretstream_xchacha20poly1305_init_pull(st, prefix[-24:], key)
    o = 38 + h
    if n < o + 4:
        return cut0
    if data[o:o + 4] != b"\x00\x00\x00\x11":
        return "bad header", None, b""
    if n < o + 21:
        return cut0
    try:
        _m0, tag = nb.crypto_secretstream_xchacha20poly1305_pull(st, data[o + 4:o + 21], prefix)
    except nacl.exceptions.CryptoError:
        return "bad header", None, b""
    if tag != 0:
        return "bad header", None, b""
    big_n, o = 1, o + 21
    # 8
    while True:
        if n < o + 4:  # 8.1
            return "truncated", (big_n, o), bytes(out)
        word = data[o:o + 4]
        w = struct.unpack(">I", word)[0]
        c, flag = w & 0x7FFF_FFFF, bool(w & 0x8000_0000)
        if c < 17 or c > 1048593:  # 8.2
            return "bad tag", (big_n, o), bytes(out)
        if n < o + 4 + c:  # 8.3
            return "truncated", (big_n, o), bytes(out)
        try:  # 8.4
            pt, tag = nb.crypto_secretstream_xchacha20poly1305_pull(st, data[o + 4:o + 4 + c], word)
        except nacl.exceptions.CryptoError:
            return "bad tag", (big_n, o), bytes(out)
        if tag not in (0, 3) or (flag and tag != 3) or (tag == 3 and not flag):  # 8.5
            return "bad tag", (big_n, o), bytes(out)
        out += pt  # 8.6
        o, big_n = o + 4 + c, big_n + 1
        if tag == 3:
            return ("ok", None, bytes(out)) if n == o else ("bad tag", (big_n, o), bytes(out))


def product_read(data: bytes, identity_text: str) -> Result:
    got, released, at = segment_result({"identity": identity_text}, data)
    return got, at, released


def test_a_reader_written_from_the_spec_agrees_with_every_segment_vector() -> None:
    vecs = sorted((VECTORS / "segment").glob("*.vec"))
    assert len(vecs) >= 80
    wrong = []
    for vec in vecs:
        meta, body = parse_vec(vec)
        cat, at, released = spec_read(body, [meta["identity"]])
        if (cat, len(released), hashlib.sha256(released).hexdigest(), at) != vec_expectation(meta):
            wrong.append(f"{vec.name}: spec reader gives {cat} {at} {len(released)} bytes")
    assert not wrong, "\n".join(wrong)


def _frames(data: bytes) -> list[int]:
    h = struct.unpack(">I", data[10:14])[0]
    pos, out = 38 + h, []
    while pos + 4 <= len(data):
        out.append(pos)
        pos += 4 + (struct.unpack(">I", data[pos:pos + 4])[0] & 0x7FFF_FFFF)
    return out


def mutations(ok: bytes) -> list[tuple[str, bytes]]:
    """Damaged copies of a valid file: cuts, bit flips, field values at and past the limits."""
    fr = _frames(ok)
    h = struct.unpack(">I", ok[10:14])[0]
    out: list[tuple[str, bytes]] = []
    # every cut in the prefix and the first two frames, then a sparse set further on
    cuts = [*range(fr[2] + 1), *range(fr[2], len(ok), 97), *range(len(ok) - 40, len(ok) + 1)]
    out += [(f"cut {c}", ok[:c]) for c in cuts]
    # every bit of the prefix, of message 0 and of message 1, and of every frame word
    bits = [*range((fr[2] + 8) * 8), *(f * 8 + i for f in fr[2:] for i in range(32))]
    for bit in bits:
        b = bytearray(ok)
        b[bit // 8] ^= 1 << (bit % 8)
        out.append((f"flip {bit}", bytes(b)))
    # version, header length and frame words at and past their limits, whole and cut after them
    for v in (0, 2, 256, 0xFFFF):
        out.append((f"version {v}", ok[:8] + struct.pack(">H", v) + ok[10:]))
    for hl in (0, 1, h - 1, h + 1, 65536, 65537, 0xFFFF_FFFF):
        d = ok[:10] + struct.pack(">I", hl) + ok[14:]
        out += [(f"H {hl}", d), (f"H {hl} cut 14", d[:14]), (f"H {hl} cut 200", d[:200])]
    for i, f in enumerate(fr[:3] + fr[-1:]):
        c = struct.unpack(">I", ok[f:f + 4])[0] & 0x7FFF_FFFF
        for cv in (0, 16, 17, 18, c - 1, c + 1, 1048593, 1048594, 0x7FFF_FFFF):
            for flag in (0, 0x8000_0000):
                d = ok[:f] + struct.pack(">I", cv | flag) + ok[f + 4:]
                out += [(f"frame {i} word {cv | flag:#x}", d),
                        (f"frame {i} word {cv | flag:#x} cut", d[:f + 4])]
    for extra in (b"\x00", b"\x00\x00\x00", b"\x00\x00\x00\x11", b"\x80\x00\x00\x11" + bytes(17)):
        out.append((f"after FINAL {extra.hex()}", ok + extra))
    return out


def test_the_spec_reader_and_sealed_reader_agree_on_every_mutation() -> None:
    """Category, N and o, and released bytes, on ~5000 damaged files and every vector cut."""
    meta, ok = parse_vec(VECTORS / "segment" / "ok.vec")
    ident = meta["identity"]
    cases = mutations(ok)
    for vec in sorted((VECTORS / "segment").glob("*.vec")):  # the hand-made ones, cut
        m, body = parse_vec(vec)
        if len(body) < 2000 and m["identity"] == ident:
            cases += [(f"{vec.name} cut {c}", body[:c])
                      for c in [*range(0, len(body), 7), *range(max(0, len(body) - 45), len(body))]]
    assert len(cases) > 5000
    wrong = []
    for what, data in cases:
        spec, product = spec_read(data, [ident]), product_read(data, ident)
        if spec != product:
            wrong.append(f"{what}: spec {spec[:2]} {len(spec[2])} bytes, "
                         f"product {product[:2]} {len(product[2])} bytes")
    assert not wrong, f"{len(wrong)} of {len(cases)} disagree:\n" + "\n".join(wrong[:40])


def test_the_keyless_walk_relates_to_the_keyed_reading_as_section_2_6_says() -> None:
    """ok and truncated: the same N and o; any other stop: the same point when the cause is
    structural, else further on (a walker cannot see a failed tag)."""
    meta, ok = parse_vec(VECTORS / "segment" / "ok.vec")
    cases = [(what, data, meta["identity"]) for what, data in mutations(ok)]
    for vec in sorted((VECTORS / "segment").glob("*.vec")):
        m, body = parse_vec(vec)
        cases.append((vec.name, body, m["identity"]))
    wrong = []
    for what, data, ident in cases:
        cat, at, _released = product_read(data, ident)
        sc = scan_frames(io.BytesIO(data))
        walked = (sc["status"], sc["messages"], sc["good_bytes"])
        assert sc["trailing"] == len(data) - sc["good_bytes"] and sc["size"] == len(data)
        assert sc["final"] is (sc["status"] == "ok")
        if cat == "ok":
            good = walked[0] == "ok" and walked[2] == len(data)
        elif cat == "truncated":
            good = walked == ("truncated", *at)  # type: ignore[misc]
        elif cat in ("bad tag", "bad header", "unsupported format"):
            n, o = at or (0, 0)
            good = walked == (cat, n, o) or walked[1] > n
        else:  # no recipient, wrong key: the walker does not stop there
            good = True
        if not good:
            wrong.append(f"{what}: reader {cat} {at}, walker {walked}")
    assert not wrong, f"{len(wrong)} of {len(cases)}:\n" + "\n".join(wrong[:30])


def spec_check_session(d: Path) -> list[str]:
    """Sections 4.1 and 5: signatures, chain, last hash, file hashes (the ok vector)."""
    problems = []
    session = json.loads((d / "session.json").read_bytes())
    prev = "0" * 64
    for k in range(1, session["segments"] + 1):
        man = json.loads((d / f"seg-{k:06d}.manifest.json").read_bytes())
        body = canonical({x: v for x, v in man.items() if x != "sig"})
        vk = nacl.signing.VerifyKey(base64.b64decode(man["signer"].split(":", 1)[1]))
        try:
            vk.verify(body, base64.b64decode(man["sig"]))
        except nacl.exceptions.BadSignatureError:
            problems.append(f"{k}: signature")
        if man["prev"] != prev:
            problems.append(f"{k}: chain")
        for info in man["files"].values():
            raw = (d / info["name"]).read_bytes()
            if hashlib.sha256(raw).hexdigest() != info["sha256"] or len(raw) != info["size"]:
                problems.append(f"{k}: file")
        prev = hashlib.sha256(canonical(man)).hexdigest()
    if session["last_hash"] != prev:
        problems.append("last hash")
    return problems


def test_an_independent_manifest_check_accepts_the_ok_session_and_rejects_a_bad_signature() -> None:
    assert spec_check_session(VECTORS / "session" / "ok") == []
    # the edited manifest fails its signature, and its new hash no longer matches the next prev
    assert spec_check_session(VECTORS / "session" / "bad-signature") == ["2: signature", "3: chain"]
