"""Signed, hash-chained manifests (segment and session).

A manifest is a JSON object. Its signature covers the canonical JSON encoding (sorted keys, no
whitespace, UTF-8, no NaN/Infinity) of the object without the ``sig`` member; ``signer`` (the
station key ``ed25519:BASE64``) is inside the signed part. A manifest's hash is SHA-256 of the
canonical encoding of the whole object including ``sig``; the next manifest names it in
``prev``. The first segment manifest's ``prev`` is GENESIS (64 zeros). Files on disk hold
exactly the canonical encoding followed by one newline.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing

from station.crypto.keys import parse_station, station_text
from station.crypto.sealed import b64, canonical_json, unb64

MANIFEST_FORMAT = 1
GENESIS = "0" * 64


def signing_key_of(key: nacl.signing.SigningKey | bytes) -> nacl.signing.SigningKey:
    if isinstance(key, nacl.signing.SigningKey):
        return key
    return nacl.signing.SigningKey(bytes(key))


def sign(body: dict[str, Any], key: nacl.signing.SigningKey | bytes) -> dict[str, Any]:
    sk = signing_key_of(key)
    out = {k: v for k, v in body.items() if k != "sig"}
    out["signer"] = station_text(sk.verify_key)
    out["sig"] = b64(sk.sign(canonical_json(out)).signature)
    return out


def manifest_hash(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(manifest)).hexdigest()


def check_signature(manifest: dict[str, Any]) -> tuple[str, str | None]:
    """('valid' | 'unsigned' | 'bad', signer text or None). Trust is decided by the caller."""
    sig, signer = manifest.get("sig"), manifest.get("signer")
    if not sig or not signer:
        return "unsigned", None
    try:
        vk = parse_station(str(signer))
        if station_text(vk) != signer:  # one text per key: base64 with stray padding bits is not
            return "bad", str(signer)
        vk.verify(canonical_json({k: v for k, v in manifest.items() if k != "sig"}),
                  unb64(str(sig), "signature"))
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return "bad", str(signer)
    return "valid", str(signer)


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Write atomically (temp file, fsync, rename) with mode 0600; never overwrite."""
    if path.exists():
        raise FileExistsError(f"manifest exists: {path}")
    tmp = path.with_name("." + path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        data = canonical_json(manifest) + b"\n"
        off = 0
        while off < len(data):  # a full disk can take part of it: never rename a cut manifest
            n = os.write(fd, data[off:])
            if n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
            off += n
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.rename(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def parse_manifest(data: bytes) -> dict[str, Any]:
    """Parse a stored manifest. Its bytes must be exactly the canonical encoding followed by one
    newline (docs/format.md): evidence files are compared byte for byte, so a re-encoded,
    re-indented or cut manifest is reported as altered even where its content still parses."""
    obj = json.loads(data.decode("utf-8"))
    if not isinstance(obj, dict):
        raise ValueError("manifest is not a JSON object")
    if data != canonical_json(obj) + b"\n":
        raise ValueError("manifest bytes are not its canonical encoding plus one newline")
    return obj
