"""Sealed segment files: encrypted while written, readable only with a recipient identity.

Wire layout (the normative text is docs/format.md; keep the two in step)::

    offset  size  field
    0       8     MAGIC  b"DRSEG\\x00\\r\\n"
    8       2     format version, uint16 big-endian (FORMAT_V1 = 1)
    10      4     header length H, uint32 big-endian (1 <= H <= MAX_HEADER_BYTES)
    14      H     header: canonical JSON (UTF-8), see below
    14+H    24    secretstream header (libsodium crypto_secretstream_xchacha20poly1305)
    then frames, each:
            4     frame word, uint32 big-endian: bit 31 = FINAL flag, bits 0..30 = C (ciphertext length)
            C     secretstream ciphertext (plaintext length + 17)

The header JSON carries ``format``, ``station``, ``session``, ``seq``, ``kind``, ``created_utc``,
``created_mono_ns``, caller fields and ``recipients`` (``[{"fp": hex, "wrapped": base64}]``, the
32-byte file key in a libsodium sealed box for each X25519 recipient).

Message 0 is always written at open: empty plaintext, tag MESSAGE, additional data = every byte
of the file before its frame word (magic .. secretstream header). It authenticates the header.
Every later message i has additional data = its own 4-byte frame word. The last message carries
tag FINAL and the FINAL flag; nothing may follow it. A reader releases a message's plaintext only
after its tag verified.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import io
import json
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import nacl.bindings as nb
import nacl.exceptions
import nacl.public
from nacl._sodium import ffi  # to snapshot/restore the 52-byte secretstream state for seek()

from station.crypto.keys import parse_identity, parse_recipient
from station.errors import StationError

MAGIC = b"DRSEG\x00\r\n"
FORMAT_V1 = 1
SUPPORTED_FORMATS = (FORMAT_V1,)
MAX_HEADER_BYTES = 64 * 1024
MAX_MESSAGE_BYTES = 1024 * 1024  # plaintext per message; write() splits larger buffers
ABYTES = nb.crypto_secretstream_xchacha20poly1305_ABYTES
SS_HEADER_BYTES = nb.crypto_secretstream_xchacha20poly1305_HEADERBYTES
KEY_BYTES = nb.crypto_secretstream_xchacha20poly1305_KEYBYTES
TAG_MESSAGE = nb.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = nb.crypto_secretstream_xchacha20poly1305_TAG_FINAL
FINAL_FLAG = 0x8000_0000
LEN_MASK = 0x7FFF_FFFF
MAX_FRAME_BYTES = MAX_MESSAGE_BYTES + ABYTES
KINDS = ("media", "oplog", "masklog")
_PREFIX = struct.Struct(">8sHI")


# --- errors -----------------------------------------------------------------------------------
class SealError(StationError, ValueError):
    """sealed segment error: {}"""


class BadHeader(SealError):
    """{}: bad header: {}"""


class UnsupportedFormat(SealError):
    """{}: unsupported segment format version {} (supported: {})"""


class NoMatchingRecipient(SealError, PermissionError):
    """{}: none of the {} identities given is a recipient of this segment (recipients: {})"""


class WrongKey(SealError, PermissionError):
    """{}: identity {} is listed as a recipient but its key does not open the wrapped file key"""


class Altered(SealError):
    """{}: message {} at byte {} failed authentication (altered, reordered or corrupted): {}"""

    @property
    def at_message(self) -> int:
        """N of docs/format.md 2.5: messages 0..N-1 verified, message N failed."""
        return int(self.args[1])

    @property
    def offset(self) -> int:
        """o: file offset of message N's frame word, the end of the verified part."""
        return int(self.args[2])


BadTag = Altered


class WriterFailed(SealError, OSError):
    """{}: an earlier write failed ({}); the file ends at its last complete message"""


class Truncated(SealError, EOFError):
    """{}: truncated: stream ends without FINAL after {} complete messages at byte {} ({})"""

    @property
    def messages(self) -> int:
        """N of docs/format.md 2.5: complete, verified messages (0..N-1); N is the first missing."""
        return int(self.args[1])

    at_message = messages

    @property
    def offset(self) -> int:
        """o: where message N's frame starts, the end of the verified part (0 while N = 0: a
        cut anywhere in the prefix or in message 0 leaves nothing verified)."""
        return int(self.args[2])


# --- helpers ----------------------------------------------------------------------------------
def canonical_json(obj: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8, finite numbers only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str = "value") -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise ValueError(f"{what} is not base64") from None


def recipient_fingerprint(public_key: bytes) -> str:
    """Fingerprint of an X25519 recipient key: hex of SHA-256("x25519:" + base64)[:16]."""
    return hashlib.sha256(("x25519:" + b64(public_key)).encode("ascii")).hexdigest()[:32]


def _as_public(recipient: Any) -> bytes:
    if isinstance(recipient, nacl.public.PublicKey):
        return bytes(recipient)
    if isinstance(recipient, bytes) and len(recipient) == 32:
        return recipient
    if isinstance(recipient, str):
        return parse_recipient(recipient)
    raise TypeError(f"not a recipient key: {type(recipient).__name__}")


def _as_private(identity: Any) -> nacl.public.PrivateKey:
    if isinstance(identity, nacl.public.PrivateKey):
        return identity
    if isinstance(identity, bytes) and len(identity) == 32:
        return nacl.public.PrivateKey(identity)
    if isinstance(identity, str):
        return parse_identity(identity)
    raise TypeError(f"not an identity: {type(identity).__name__}")


def _frame_word(length: int, final: bool) -> bytes:
    return struct.pack(">I", length | (FINAL_FLAG if final else 0))


# --- writer -----------------------------------------------------------------------------------
class SealedWriter:
    """Encrypt bytes into a sealed segment file as they are written.

    ``write`` buffers; ``flush`` ends a secretstream message (everything written so far survives a
    crash); ``close`` writes the FINAL message and fsyncs. ``close`` is idempotent.
    After close, ``bytes_written`` and ``sha256`` describe the ciphertext file.
    """

    def __init__(self, path: str | os.PathLike[str], recipients: Iterable[Any],
                 header_fields: Mapping[str, Any] | None = None, *, fsync_on_flush: bool = False,
                 max_message_bytes: int = MAX_MESSAGE_BYTES,
                 checkpoint: Callable[[SealedWriter, int, int, str, bool], None] | None = None
                 ) -> None:
        self.path = Path(path)
        # called before each message's bytes are written: (writer, messages, bytes, sha256,
        # final) as the file will be once they are (SessionSealer signs it: checkpoints.log)
        self._checkpoint = checkpoint
        pubs = [_as_public(r) for r in recipients]
        if not pubs:
            raise SealError("no recipients: the policy must name at least one (crypto.recipients)")
        if not 0 < max_message_bytes <= MAX_MESSAGE_BYTES:
            raise ValueError("max_message_bytes out of range")
        self._max = max_message_bytes
        self._fsync_on_flush = fsync_on_flush
        self._synced_bytes = -1
        self._lock = threading.Lock()
        key = nb.crypto_secretstream_xchacha20poly1305_keygen()
        header = dict(header_fields or {})
        header["format"] = FORMAT_V1
        header["recipients"] = [
            {"fp": recipient_fingerprint(p), "wrapped": b64(nacl.public.SealedBox(
                nacl.public.PublicKey(p)).encrypt(key))} for p in pubs]
        hjson = canonical_json(header)
        if len(hjson) > MAX_HEADER_BYTES:
            raise SealError("header too large")
        check_header(hjson, FORMAT_V1)  # never write a file that every reader refuses (2.2)
        self._state = nb.crypto_secretstream_xchacha20poly1305_state()
        ss_header = nb.crypto_secretstream_xchacha20poly1305_init_push(self._state, key)
        del key
        self.header = header
        prefix = _PREFIX.pack(MAGIC, FORMAT_V1, len(hjson)) + hjson + ss_header
        self._hash = hashlib.sha256()
        self._buf = bytearray()
        self.messages = 0
        self.bytes_written = 0
        self.sha256: str | None = None
        self.closed = False
        self.failed: OSError | None = None
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._fh: BinaryIO = os.fdopen(fd, "wb", buffering=0)
        try:
            self._push(b"", ad=prefix, final=False, lead=prefix)  # one checkpointed write
            self._fh.flush()
            if fsync_on_flush:  # like every flushed message: a power cut keeps what was vouched
                os.fsync(self._fh.fileno())
                self._synced_bytes = self.bytes_written
        except BaseException:
            self._fh.close()
            self.path.unlink(missing_ok=True)  # its header never got whole onto the disk
            raise

    def _emit(self, data: bytes) -> None:
        """Write all of data (looping over short writes); after an OSError the writer is failed."""
        if self.failed is not None:
            raise WriterFailed(self.path, self.failed)
        mv = memoryview(data)
        off = 0
        try:
            while off < len(mv):
                n = self._fh.write(mv[off:])
                if not n:
                    raise OSError(errno.EIO, "short write", str(self.path))
                off += n
        except OSError as exc:
            self.failed = exc
            if off:  # never leave a torn message: the file ends at its last whole one
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fh.fileno(), self.bytes_written)
            raise
        self._hash.update(mv)
        self.bytes_written += len(mv)

    def _push(self, plaintext: bytes, ad: bytes | None, final: bool, lead: bytes = b"") -> None:
        """Encrypt one message and write it (after ``lead``: the prefix, for message 0)."""
        word = lead + _frame_word(len(plaintext) + ABYTES, final)
        ct = nb.crypto_secretstream_xchacha20poly1305_push(
            self._state, plaintext, ad if ad is not None else word,
            TAG_FINAL if final else TAG_MESSAGE)
        if self._checkpoint is not None:  # write-ahead: the file never holds more than vouched
            h = self._hash.copy()
            h.update(word)
            h.update(ct)
            try:
                self._checkpoint(self, self.messages + 1, self.bytes_written + len(word) + len(ct),
                                 h.hexdigest(), final)
            except OSError as exc:  # e.g. disk full: the same as a failed write of the message
                self.failed = exc
                raise
        self._emit(word + ct)
        self.messages += 1

    def write(self, data: bytes | bytearray | memoryview) -> int:
        with self._lock:
            if self.closed:
                raise ValueError("write to a closed SealedWriter")
            if self.failed is not None:
                raise WriterFailed(self.path, self.failed)
            mv = memoryview(data).cast("B")
            off, n = 0, len(mv)
            if self._buf:
                off = min(self._max - len(self._buf), n)
                self._buf += mv[:off]
                if len(self._buf) == self._max:
                    self._push(bytes(self._buf), None, final=False)
                    self._buf.clear()
            while n - off >= self._max:
                self._push(bytes(mv[off: off + self._max]), None, final=False)
                off += self._max
            self._buf += mv[off:]
            return n

    def flush(self) -> None:
        """End the current message: all bytes written so far are recoverable after a crash."""
        with self._lock:
            if self.closed:
                return
            if self._buf:
                self._push(bytes(self._buf), None, final=False)
                self._buf.clear()
            if self._fsync_on_flush and self.bytes_written != self._synced_bytes:
                os.fsync(self._fh.fileno())  # only when bytes were written since the last one
                self._synced_bytes = self.bytes_written

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            try:
                if self.failed is None:  # a failed writer is closed without FINAL: truncated
                    self._push(bytes(self._buf), None, final=True)
                    self._buf.clear()
                    os.fsync(self._fh.fileno())
            finally:
                self._fh.close()
                self.closed = True
                self.sha256 = self._hash.hexdigest()

    def writable(self) -> bool:
        return not self.closed

    def __enter__(self) -> SealedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- reader -----------------------------------------------------------------------------------
def _read_exact(fh: BinaryIO, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = fh.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


HEADER_KINDS = (*KINDS, "qc")  # qc: a sealed QC report (station/review/qc.py)
MAX_HEADER_DEPTH = 16
WRAPPED_BYTES = 80  # crypto_box_seal of the 32-byte file key: ephemeral key 32 + box 48
_INT64 = 1 << 63
_HEX = frozenset("0123456789abcdef")


def _is_int(value: Any, least: int) -> bool:
    """An integer of docs/format.md 2.2 (JSON true/false are not, though Python's bool is an int)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _json_problem(value: Any, depth: int) -> str | None:
    """Header rules 3-4: nesting depth, and integers only, so that no reader has to reproduce
    Python's float formatting to check the canonical form."""
    if depth > MAX_HEADER_DEPTH and isinstance(value, (dict, list)):  # containers nest, not values
        return f"nested deeper than {MAX_HEADER_DEPTH}"
    if isinstance(value, float):
        return f"number {value!r} is not an integer"
    if isinstance(value, int) and not -_INT64 <= value < _INT64:
        return f"integer {value} out of range"
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) \
        else ()
    for child in children:
        problem = _json_problem(child, depth + 1)
        if problem:
            return problem
    return None


def _wrapped_box(text: str) -> bytes | None:
    """The sealed box in a ``wrapped`` member; None unless it is the one canonical base64 of
    exactly 80 bytes (a lenient decoder would accept the same key in several spellings)."""
    if len(text) != 108 or not text.isascii():
        return None
    try:
        box = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    return box if len(box) == WRAPPED_BYTES and b64(box) == text else None


def check_header(raw: bytes, version: int) -> dict[str, Any]:
    """The header object (docs/format.md 2.2, "Valid header"), or ValueError naming the rule.

    Needs no key, so scan_frames applies it too: a keyless walker, a reader and verify parse the
    same bytes into the same object (canonical form leaves no duplicate names or escapes that
    parsers read differently), and nothing after it meets a mistyped member."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except RecursionError:  # json's parser recurses; a deep header must not crash a reader
        raise ValueError(f"nested deeper than {MAX_HEADER_DEPTH}") from None
    if not isinstance(header, dict):
        raise ValueError("not a JSON object")
    problem = _json_problem(header, 1)
    if problem:
        raise ValueError(problem)
    try:
        canonical = canonical_json(header)
    except ValueError as exc:  # NaN or an infinity, an escaped lone surrogate
        raise ValueError(f"not canonical JSON ({exc})") from None
    if canonical != raw:
        raise ValueError("not canonical JSON (whitespace, member order, a duplicate name, an "
                         "escape or a byte order mark)")
    if not _is_int(header.get("format"), 0) or header["format"] != version:
        raise ValueError(f"format member {header.get('format')!r} is not the version word "
                         f"{version}")
    recips = header.get("recipients")
    if not isinstance(recips, list) or not recips:
        raise ValueError("no recipients")
    for r in recips:
        if not isinstance(r, dict):
            raise ValueError("a recipient entry is not an object")
        fp, wrapped = r.get("fp"), r.get("wrapped")
        if not isinstance(fp, str) or len(fp) != 32 or not set(fp) <= _HEX:
            raise ValueError(f"recipient fp {fp!r} is not 32 lower-case hex characters")
        if not isinstance(wrapped, str) or _wrapped_box(wrapped) is None:
            raise ValueError(f"recipient {fp}: wrapped is not the base64 of {WRAPPED_BYTES} bytes")
    for member in ("station", "session", "created_utc"):
        if member in header and not isinstance(header[member], str):
            raise ValueError(f"{member} is not a string")
    if "seq" in header and not _is_int(header["seq"], 1):
        raise ValueError(f"seq {header['seq']!r} is not an integer >= 1")
    if "kind" in header and header["kind"] not in HEADER_KINDS:
        raise ValueError(f"kind {header['kind']!r} is not one of {', '.join(HEADER_KINDS)}")
    if "created_mono_ns" in header and not _is_int(header["created_mono_ns"], 0):
        raise ValueError(f"created_mono_ns {header['created_mono_ns']!r} is not an integer >= 0")
    return header


def parse_prefix(fh: BinaryIO, name: str) -> tuple[dict[str, Any], bytes]:
    """Steps 1-5 of docs/format.md 2.5; returns (header dict, prefix bytes incl. ss header).

    Each field is judged as soon as its bytes are read, before anything after it, so a complete
    but wrong field wins over a cut further on. A cut anywhere here is Truncated at message 0,
    offset 0: nothing has verified yet."""
    magic = _read_exact(fh, len(MAGIC))
    if magic != MAGIC[:len(magic)]:  # judged byte by byte: a short non-segment is no segment
        raise BadHeader(name, "not a DualRec sealed segment (magic)")
    if len(magic) < len(MAGIC):
        raise Truncated(name, 0, 0, f"{len(magic)} bytes, inside the magic")
    vword = _read_exact(fh, 2)
    if len(vword) < 2:
        raise Truncated(name, 0, 0, "inside the version word")
    version = struct.unpack(">H", vword)[0]
    if version not in SUPPORTED_FORMATS:  # its layout is unknown: a short file is not "cut"
        raise UnsupportedFormat(name, version, ", ".join(map(str, SUPPORTED_FORMATS)))
    hword = _read_exact(fh, 4)
    if len(hword) < 4:
        raise Truncated(name, 0, 0, "inside the header length")
    hlen = struct.unpack(">I", hword)[0]
    if not 1 <= hlen <= MAX_HEADER_BYTES:
        raise BadHeader(name, f"header length {hlen} out of range")
    hraw = _read_exact(fh, hlen)
    if len(hraw) < hlen:
        raise Truncated(name, 0, 0, f"inside the header ({len(hraw)} of {hlen} bytes)")
    try:
        header = check_header(hraw, version)
    except ValueError as exc:
        raise BadHeader(name, f"header JSON: {exc}") from None
    ss = _read_exact(fh, SS_HEADER_BYTES)
    if len(ss) < SS_HEADER_BYTES:
        raise Truncated(name, 0, 0, "inside the secretstream header")
    return header, magic + vword + hword + hraw + ss


class SealedReader(io.RawIOBase):
    """Decrypt a sealed segment while reading: a read-only, file-like object (PyAV can read it).

    Plaintext of a message is released only after its tag verified. At the end of the data,
    a stream without FINAL raises :class:`Truncated` (after every complete message was returned).
    Seeking is supported: the reader remembers, per message, the file offset and the stream
    state, and re-decrypts from the nearest message start. ``seek(0, SEEK_END)`` learns the size
    from the frame lengths without decrypting (reads still verify every message).

    With ``truncated_as_eof=True`` (playback of crash-recovered segments) a stream cut short ends
    like a file and the error is kept in ``truncated``; altered data still raises.
    """

    def __init__(self, source: str | os.PathLike[str] | BinaryIO,
                 identities: Iterable[Any] | Any, *, name: str | None = None,
                 truncated_as_eof: bool = False) -> None:
        super().__init__()
        self.truncated_as_eof = truncated_as_eof
        self.truncated: Truncated | None = None  # set when a cut stream ended as EOF
        self._lazy: int | None = None  # a position seek() promised but did not reach yet
        self._plain_size: int | None = None
        if isinstance(source, (str, os.PathLike)):
            self._fh: BinaryIO = open(source, "rb")  # noqa: SIM115 - closed in close()
            self._owns = True
            self.name_ = name or os.fspath(source)
        else:
            self._fh = source
            self._owns = False
            self.name_ = name or str(getattr(source, "name", "<stream>"))
        try:
            self._open(identities)
        except BaseException:
            if self._owns:
                self._fh.close()
            raise

    def _open(self, identities: Iterable[Any] | Any) -> None:
        if isinstance(identities, (str, bytes, nacl.public.PrivateKey)):
            identities = [identities]
        given = [_as_private(i) for i in identities]
        ids: dict[str, nacl.public.PrivateKey] = {}
        for ident in given:
            ids.setdefault(recipient_fingerprint(bytes(ident.public_key)), ident)
        header, prefix = parse_prefix(self._fh, self.name_)
        self.header = header
        # step 6: the entries that name one of our identities, in file order (several may, even
        # for one key); the first that opens gives the key, so the result does not depend on
        # the order the identities were given in. check_header made every box 80 bytes.
        matching = [r for r in header["recipients"] if r["fp"] in ids]
        if not matching:
            raise NoMatchingRecipient(self.name_, len(given), ", ".join(
                sorted({r["fp"] for r in header["recipients"]})))
        key: bytes | None = None
        for r in matching:
            try:
                key = nacl.public.SealedBox(ids[r["fp"]]).decrypt(base64.b64decode(r["wrapped"]))
            except nacl.exceptions.CryptoError:
                continue
            break
        if key is None:
            raise WrongKey(self.name_, matching[0]["fp"])
        self._state = nb.crypto_secretstream_xchacha20poly1305_state()
        nb.crypto_secretstream_xchacha20poly1305_init_pull(
            self._state, prefix[-SS_HEADER_BYTES:], key)
        self._offset = len(prefix)  # file offset of the next frame
        self._data_start = len(prefix)
        self._msg_index = 0
        self._final = False
        self._done = False
        self._pending: Exception | None = None
        self._buf = b""
        self._bufpos = 0
        self._pos = 0  # plaintext position of the start of _buf
        # per message: (plaintext start, file offset of frame, state snapshot before pull)
        self._index: list[tuple[int, int, bytes, int]] = []
        body = self._next_frame(ad=prefix)
        if body is None:
            raise self._pending  # type: ignore[misc]
        if body:
            raise BadHeader(self.name_, "message 0 is not empty")

    # -- frames --
    def _snapshot(self) -> bytes:
        return bytes(ffi.buffer(self._state.statebuf))

    def _restore(self, snap: bytes) -> None:
        ffi.memmove(self._state.statebuf, snap, len(snap))

    def _next_frame(self, ad: bytes | None = None) -> bytes | None:
        """Decrypt the next message; None at the end (setting _pending to Truncated if no FINAL)."""
        n = self._msg_index
        start = self._offset
        if self._final:
            extra = self._fh.read(1)
            if extra:
                self._pending = Altered(self.name_, n, start, "data after the FINAL message")
            self._done = True
            return None
        word = _read_exact(self._fh, 4)
        if len(word) < 4:  # 0 to 3 bytes left: cut (2.5 step 8.1); before message 0 verified, o = 0
            self._done = True
            self._pending = Truncated(self.name_, n, start if n else 0,
                                      "end of file" if not word else "partial frame word")
            return None
        value = struct.unpack(">I", word)[0]
        clen = value & LEN_MASK
        flag = bool(value & FINAL_FLAG)
        if n == 0 and value != ABYTES:
            self._done = True
            self._pending = BadHeader(self.name_, f"header message frame word {value:#x} is not "
                                      f"{ABYTES:#x}")
            return None
        if clen < ABYTES or clen > MAX_FRAME_BYTES:  # judged before the bytes it announces
            self._done = True
            self._pending = Altered(self.name_, n, start, f"frame length {clen} invalid")
            return None
        ct = _read_exact(self._fh, clen)
        if len(ct) < clen:
            self._done = True
            self._pending = Truncated(self.name_, n, start if n else 0,
                                      f"partial message: {len(ct)} of {clen} bytes")
            return None
        snap = self._snapshot()
        try:
            pt, tag = nb.crypto_secretstream_xchacha20poly1305_pull(
                self._state, ct, ad if ad is not None else word)
        except nacl.exceptions.CryptoError:
            self._done = True
            self._pending = (BadHeader(self.name_, "header does not authenticate with its key "
                                       "(altered or swapped header)") if n == 0 else
                             Altered(self.name_, n, start, "tag does not verify"))
            return None
        if n == 0 and (tag != TAG_MESSAGE or flag):
            self._done = True
            self._pending = BadHeader(self.name_, "header message is not a plain MESSAGE")
            return None
        if (tag == TAG_FINAL) != flag or tag not in (TAG_FINAL, TAG_MESSAGE):
            self._done = True
            self._pending = Altered(self.name_, n, start, "tag is not MESSAGE/FINAL or does "
                                    "not match the FINAL flag")
            return None
        if n > 0:
            self._index.append((self._pos + len(self._buf), start, snap, n))
        self._final = tag == TAG_FINAL
        self._msg_index = n + 1
        self._offset = start + 4 + clen
        return pt

    # -- io.RawIOBase --
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return bool(getattr(self._fh, "seekable", lambda: False)())

    def tell(self) -> int:
        return self._lazy if self._lazy is not None else self._pos + self._bufpos

    def _size_from_frames(self) -> int:
        """Plaintext size by walking frame words (no decryption); complete frames only."""
        if self._plain_size is None:
            here = self._fh.tell()
            try:
                self._fh.seek(self._data_start)
                total = 0
                end = self._fh.seek(0, io.SEEK_END)
                pos = self._data_start
                while pos + 4 <= end:
                    self._fh.seek(pos)
                    word = _read_exact(self._fh, 4)
                    clen = struct.unpack(">I", word)[0] & LEN_MASK
                    if clen < ABYTES or pos + 4 + clen > end:
                        break
                    total += clen - ABYTES
                    pos += 4 + clen
                    if struct.unpack(">I", word)[0] & FINAL_FLAG:
                        break
                self._plain_size = total
            finally:
                self._fh.seek(here)
        return self._plain_size

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def read(self, size: int | None = -1) -> bytes:
        if self._lazy is not None:
            target, self._lazy = self._lazy, None
            self.seek(target)
        if size is None or size < 0:
            return self.readall()
        parts: list[bytes] = []
        want = size
        while want > 0:
            if self._bufpos >= len(self._buf):
                try:
                    if not self._advance():
                        break
                except SealError:
                    if parts:  # hand out what verified; the error comes on the next call
                        break
                    raise
                continue
            piece = self._buf[self._bufpos: self._bufpos + want]
            self._bufpos += len(piece)
            want -= len(piece)
            parts.append(piece)
        return b"".join(parts)

    def readall(self) -> bytes:
        if self._lazy is not None:
            target, self._lazy = self._lazy, None
            self.seek(target)
        parts = [self._buf[self._bufpos:]]
        self._bufpos = len(self._buf)
        while self._advance():
            parts.append(self._buf)
            self._bufpos = len(self._buf)
        return b"".join(parts)

    def _advance(self) -> bool:
        """Load the next message into _buf; False at a clean end; raise the pending error."""
        if self._done:
            if self._pending is not None:
                if self.truncated_as_eof and isinstance(self._pending, Truncated):
                    self.truncated = self._pending
                    return False
                raise self._pending
            return False
        self._pos += len(self._buf)
        self._buf, self._bufpos = b"", 0
        pt = self._next_frame()
        if pt is None:
            return self._advance()
        self._buf = pt
        return True

    def messages(self) -> Iterator[bytes]:
        """Yield each message's plaintext (message 0 excluded); errors as in read()."""
        if self._bufpos < len(self._buf):
            yield self._buf[self._bufpos:]
            self._bufpos = len(self._buf)
        while self._advance():
            self._bufpos = len(self._buf)
            yield self._buf

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self.tell()
        elif whence == io.SEEK_END:
            if not self.seekable():
                raise io.UnsupportedOperation("underlying stream is not seekable")
            offset += self._size_from_frames()
            if offset < 0:
                raise ValueError("negative seek position")
            self._lazy = offset  # reached (and verified) on the next read
            return offset
        elif whence != io.SEEK_SET:
            raise ValueError("bad whence")
        if offset < 0:
            raise ValueError("negative seek position")
        self._lazy = None
        if self._pos <= offset <= self._pos + len(self._buf):
            self._bufpos = offset - self._pos
            return offset
        if offset < self._pos:
            # restore the newest message start at or before offset
            best = None
            for entry in self._index:
                if entry[0] <= offset:
                    best = entry
                else:
                    break
            if best is None:
                raise ValueError("cannot seek before the first message")
            pstart, fpos, snap, n = best
            self._fh.seek(fpos)
            self._restore(snap)
            self._index = [e for e in self._index if e[3] < n]
            self._offset, self._msg_index = fpos, n
            self._final = self._done = False
            self._pending = None
            self._pos, self._buf, self._bufpos = pstart, b"", 0
        while offset > self._pos + len(self._buf):
            if not self._advance():
                break
        if offset > self._pos + len(self._buf):  # past the end, as files allow; reads give b""
            self._bufpos = len(self._buf)
            self._lazy = offset
            return offset
        self._bufpos = offset - self._pos
        return offset

    def close(self) -> None:
        if not self.closed and self._owns:
            self._fh.close()
        super().close()


# --- keyless structure scan -------------------------------------------------------------------
_PREFIX_CATEGORY = {Truncated: "truncated", BadHeader: "bad header",
                    UnsupportedFormat: "unsupported format"}


def scan_frames(source: str | os.PathLike[str] | BinaryIO, name: str | None = None
                ) -> dict[str, Any]:
    """Walk the frame structure without any key (recovery and verify on the seat): docs/format.md
    2.6, i.e. 2.5 without the recipient step and without anything that needs the key (tags).

    Returns status (the category reached: ok, truncated, bad header, unsupported format,
    bad tag), messages and good_bytes (N and o of 2.5 where the walk stopped: a reader with the
    key whose tags all verify stops at exactly this N and o), final (status is ok), header ({}
    if the prefix failed), size, sha256, trailing (size - good_bytes) and anomaly (why the walk
    stopped on damage, None when it ended cleanly or cut). Never raises for damaged content.
    Nothing here is authenticated: a FINAL flag or a length can be edited without the key.
    """
    if isinstance(source, (str, os.PathLike)):
        own, label = True, name or os.fspath(source)
        fh: BinaryIO = open(source, "rb")  # noqa: SIM115 - closed in the finally below
    else:
        own, label, fh = False, name or str(getattr(source, "name", "<stream>")), source
    hasher = hashlib.sha256()
    total = [0]

    class _Tee:
        def read(self, n: int) -> bytes:
            data = fh.read(n)
            hasher.update(data)
            total[0] += len(data)
            return data

    tee: Any = _Tee()

    def result(header: dict[str, Any], status: str, messages: int, good: int,
               anomaly: str | None) -> dict[str, Any]:
        while _read_exact(tee, 1 << 20):  # hash the whole file as found, whatever stopped us
            pass
        return {"header": header, "status": status, "messages": messages,
                "final": status == "ok", "good_bytes": good, "size": total[0],
                "trailing": total[0] - good, "sha256": hasher.hexdigest(), "anomaly": anomaly}

    try:
        try:
            header, prefix = parse_prefix(tee, label)
        except SealError as exc:  # steps 1-5: cut or damaged before the first frame
            return result({}, _PREFIX_CATEGORY.get(type(exc), "bad header"), 0, 0, str(exc))
        n, o, final = 0, len(prefix), False
        while True:
            word = _read_exact(tee, 4)
            if final:  # nothing may follow FINAL, however few bytes
                return result(header, "bad tag" if word else "ok", n, o,
                              "data after the FINAL frame" if word else None)
            if len(word) < 4:
                return result(header, "truncated", n, o if n else 0, None)
            value = struct.unpack(">I", word)[0]
            clen = value & LEN_MASK
            if n == 0 and value != ABYTES:
                return result(header, "bad header", 0, 0,
                              f"header message frame word {value:#x} is not {ABYTES:#x}")
            if clen < ABYTES or clen > MAX_FRAME_BYTES:
                return result(header, "bad tag", n, o, f"frame {n} length {clen} invalid")
            if len(_read_exact(tee, clen)) < clen:
                return result(header, "truncated", n, o if n else 0, None)
            n, o, final = n + 1, o + 4 + clen, bool(value & FINAL_FLAG)
    finally:
        if own:
            fh.close()
