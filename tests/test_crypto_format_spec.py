"""docs/format.md is enough to write a reader: an independent reader written from the spec alone
(PyNaCl bindings, no station.crypto code) agrees with every vector, and an independent manifest
check agrees on signatures, hashes and the chain."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path

import nacl.bindings as nb
import nacl.exceptions
import nacl.public
import nacl.signing

from tests.test_crypto_vectors import VECTORS, parse_vec

MAGIC = b"DRSEG\x00\r\n"  # 44 52 53 45 47 00 0D 0A


class Stop(Exception):
    pass


def spec_read(data: bytes, identity_text: str) -> tuple[str, bytes]:
    """Section 2.5 step by step. Returns (category, plaintext released)."""
    out = b""
    if len(data) < 8 and MAGIC.startswith(data):
        return "truncated", out
    if data[:8] != MAGIC:
        return "bad header", out
    if len(data) < 10:
        return "truncated", out
    if struct.unpack(">H", data[8:10])[0] != 1:
        return "unsupported format", out
    if len(data) < 14:
        return "truncated", out
    h = struct.unpack(">I", data[10:14])[0]
    if not 1 <= h <= 65536:
        return "bad header", out
    if len(data) < 38 + h:
        return "truncated", out
    try:
        hdr = json.loads(data[14:14 + h].decode("utf-8"))
        assert isinstance(hdr, dict) and hdr.get("format") == 1
        assert isinstance(hdr["recipients"], list) and hdr["recipients"]
        assert all(isinstance(r["fp"], str) and isinstance(r["wrapped"], str)
                   for r in hdr["recipients"])
    except (ValueError, AssertionError, KeyError, TypeError):
        return "bad header", out
    prefix = data[:38 + h]
    sk = nacl.public.PrivateKey(base64.b64decode(identity_text.split(":", 1)[1]))
    fp = hashlib.sha256(b"x25519:" + base64.b64encode(bytes(sk.public_key))).hexdigest()[:32]
    entries = [r for r in hdr["recipients"] if r["fp"] == fp]
    if not entries:
        return "no recipient", out
    key = None
    for e in entries:
        try:
            k = nacl.public.SealedBox(sk).decrypt(base64.b64decode(e["wrapped"]))
        except (nacl.exceptions.CryptoError, ValueError):
            continue
        if len(k) == 32:
            key = k
            break
    if key is None:
        return "wrong key", out
    st = nb.crypto_secretstream_xchacha20poly1305_state()
    nb.crypto_secretstream_xchacha20poly1305_init_pull(st, prefix[-24:], key)
    o, i, final = len(prefix), 0, False
    while True:
        if final:
            return ("bad tag" if o < len(data) else "ok"), out
        if len(data) - o < 4:
            return "truncated", out
        w = struct.unpack(">I", data[o:o + 4])[0]
        c, flag = w & 0x7FFFFFFF, bool(w >> 31)
        if i == 0 and w != 17:
            return "bad header", out
        if not 17 <= c <= 1048593:
            return "bad tag", out
        if len(data) - o - 4 < c:
            return "truncated", out
        ad = prefix if i == 0 else data[o:o + 4]
        try:
            m, tag = nb.crypto_secretstream_xchacha20poly1305_pull(st, data[o + 4:o + 4 + c], ad)
        except nacl.exceptions.CryptoError:
            return ("bad header" if i == 0 else "bad tag"), out
        if i == 0 and (m or tag != 0):
            return "bad header", out
        if tag not in (0, 3) or (tag == 3) != flag:
            return "bad tag", out
        out += m
        final = tag == 3
        o += 4 + c
        i += 1


def test_a_reader_written_from_the_spec_agrees_with_every_segment_vector() -> None:
    vecs = sorted((VECTORS / "segment").glob("*.vec"))
    assert len(vecs) >= 15
    for vec in vecs:
        meta, body = parse_vec(vec)
        cat, released = spec_read(body, meta["identity"])
        assert cat == meta["expect"], vec.name
        assert hashlib.sha256(released).hexdigest() == meta["payload-sha256"], vec.name


def canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


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
