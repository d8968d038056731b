"""Keys: the station's Ed25519 signing key, X25519 recipients and reviewer identities.

Text forms (docs/format.md, section Keys):

* station public key ``ed25519:BASE64`` (32 raw bytes, standard base64 with padding);
* recipient public key ``x25519:BASE64``; the file ``archive.pub`` holds it, ``#`` lines are
  comments;
* reviewer identity ``x25519-identity:BASE64`` (the 32-byte X25519 secret); ``archive.key``
  holds one or more (one per line, for rotation), mode 0600;
* fingerprint: the first 16 bytes of SHA-256 of the text form, in hex, shown in groups of four.

The station signing key lives only in the keyring (``station.secrets.SIGNING_KEY``, the 32-byte
seed). Reviewer identities may live in the keyring (``REVIEWER_IDENTITY``, newline-separated) or
in key files. Several identities side by side allow key rotation.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path

import nacl.public
import nacl.signing

from station.errors import SecretMissing, StationError
from station.secrets import REVIEWER_IDENTITY, SIGNING_KEY, SecretStore

RECIPIENT_PREFIX = "x25519:"
IDENTITY_PREFIX = "x25519-identity:"
STATION_PREFIX = "ed25519:"
_KEY_RE = r"[A-Za-z0-9+/]{43}="
RECIPIENT_RE = re.compile(r"x25519:" + _KEY_RE)
IDENTITY_RE = re.compile(r"x25519-identity:" + _KEY_RE)
STATION_RE = re.compile(r"ed25519:" + _KEY_RE)


class KeyFormatError(StationError, ValueError):
    """{}: {}"""


class NoIdentity(StationError, LookupError):
    """no reviewer identity: {}"""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode(text: str, regex: re.Pattern[str], prefix: str, what: str) -> bytes:
    text = text.strip()
    if not regex.fullmatch(text):
        shown = text[: len(prefix) + 4] + "..." if len(text) > len(prefix) + 4 else text
        raise KeyFormatError(what, f"expected {prefix}BASE64 (44 characters), got {shown!r}")
    return base64.b64decode(text[len(prefix):])


def fingerprint(text_form: str) -> str:
    """Fingerprint of any public key text form: SHA-256(text)[:16] hex, groups of four."""
    h = hashlib.sha256(text_form.strip().encode("ascii")).hexdigest()[:32]
    return " ".join(h[i:i + 4] for i in range(0, 32, 4))


# --- recipients / identities ------------------------------------------------------------------
def parse_recipient(text: str) -> bytes:
    return _decode(text, RECIPIENT_RE, RECIPIENT_PREFIX, "recipient key")


def recipient_text(public_key: bytes | nacl.public.PublicKey) -> str:
    return RECIPIENT_PREFIX + _b64(bytes(public_key))


def parse_identity(text: str) -> nacl.public.PrivateKey:
    return nacl.public.PrivateKey(_decode(text, IDENTITY_RE, IDENTITY_PREFIX, "identity"))


def identity_text(private_key: nacl.public.PrivateKey) -> str:
    return IDENTITY_PREFIX + _b64(bytes(private_key))


def _key_lines(path: Path) -> list[str]:
    try:
        text = Path(path).read_text("utf-8")
    except UnicodeDecodeError:
        raise KeyFormatError(str(path), "not a text key file") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def read_recipient_file(path: Path | str) -> str:
    """The recipient key (``x25519:BASE64``) in an ``archive.pub`` file; validated."""
    lines = _key_lines(Path(path))
    if len(lines) != 1:
        raise KeyFormatError(str(path), f"expected exactly one x25519: key line, found {len(lines)}")
    if lines[0].startswith(IDENTITY_PREFIX):
        raise KeyFormatError(str(path), "this is a private identity (archive.key), not a public key")
    parse_recipient(lines[0])
    return lines[0]


def read_identity_file(path: Path | str) -> list[nacl.public.PrivateKey]:
    """Every identity in a key file (several lines = several keys, for rotation)."""
    lines = _key_lines(Path(path))
    if not lines:
        raise KeyFormatError(str(path), "no x25519-identity: line")
    return [parse_identity(ln) for ln in lines]


def write_key_pair(key_path: Path, key_text: str, pub_path: Path, pub_text: str) -> None:
    """Create a private key file (0600) and its public file (0644); never overwrite either."""
    key_path.parent.mkdir(parents=True, exist_ok=True)
    for p in (pub_path, key_path):
        if p.exists():
            raise KeyFormatError(str(p), "exists; refusing to overwrite a key")
    for path, text, mode in ((key_path, key_text, 0o600), (pub_path, pub_text, 0o644)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)


def new_recipient_pair(out_dir: Path) -> dict[str, str]:
    """Write archive.pub (0644) and archive.key (0600) into out_dir; never overwrite."""
    pub_path, key_path = out_dir / "archive.pub", out_dir / "archive.key"
    sk = nacl.public.PrivateKey.generate()
    pub = recipient_text(sk.public_key)
    fp = fingerprint(pub)
    write_key_pair(key_path, f"# DualRec reviewer identity (private). Recipient {pub}\n"
                   f"# fingerprint {fp}\n{identity_text(sk)}\n",
                   pub_path, f"# DualRec recipient (archive) public key, fingerprint {fp}\n{pub}\n")
    return {"public_key": pub, "fingerprint": fp, "pub": str(pub_path), "key": str(key_path)}


def keyring_identities(store: SecretStore | None = None) -> list[nacl.public.PrivateKey]:
    value = (store or SecretStore()).get(REVIEWER_IDENTITY)
    if not value:
        return []
    return [parse_identity(ln) for ln in value.split() if ln.strip()]


def import_identities(path: Path, store: SecretStore | None = None) -> list[str]:
    """Add the identities of a key file to the keyring (kept alongside older ones)."""
    store = store or SecretStore()
    new = read_identity_file(path)
    old = keyring_identities(store)
    have = {bytes(k) for k in old}
    merged = old + [k for k in new if bytes(k) not in have]
    store.set(REVIEWER_IDENTITY, "\n".join(identity_text(k) for k in merged))
    return [recipient_text(k.public_key) for k in new]


def load_identities(paths: list[Path] | None = None, store: SecretStore | None = None,
                    use_keyring: bool = True) -> list[nacl.public.PrivateKey]:
    ids: list[nacl.public.PrivateKey] = []
    for p in paths or []:
        ids.extend(read_identity_file(p))
    if use_keyring and not paths:
        ids.extend(keyring_identities(store))
    if not ids:
        raise NoIdentity("pass --identity KEYFILE or run `station keys reviewer-import KEYFILE`")
    return ids


# --- station signing key ----------------------------------------------------------------------
def station_text(verify_key: nacl.signing.VerifyKey | bytes) -> str:
    return STATION_PREFIX + _b64(bytes(verify_key))


def parse_station(text: str) -> nacl.signing.VerifyKey:
    return nacl.signing.VerifyKey(_decode(text, STATION_RE, STATION_PREFIX, "station key"))


def load_signing_key(store: SecretStore | None = None, create: bool = False
                     ) -> nacl.signing.SigningKey | None:
    store = store or SecretStore()
    seed = store.get_bytes(SIGNING_KEY)
    if seed is None:
        if not create:
            return None
        sk = nacl.signing.SigningKey.generate()
        store.set_bytes(SIGNING_KEY, bytes(sk))
        seed = store.get_bytes(SIGNING_KEY)
        if seed != bytes(sk):
            raise KeyFormatError(SIGNING_KEY, "keyring did not store the key")
        return sk
    if len(seed) != 32:
        raise KeyFormatError(SIGNING_KEY, "stored signing key is not 32 bytes")
    return nacl.signing.SigningKey(seed)


def require_signing_key(store: SecretStore | None = None) -> nacl.signing.SigningKey:
    sk = load_signing_key(store)
    if sk is None:
        raise SecretMissing(SIGNING_KEY, "run `station keys init` first")
    return sk
