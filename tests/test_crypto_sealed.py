"""Sealed segments: round trips, every failure its own error class, truncation, PyAV reads."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import av
import nacl.public
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from station.crypto.keys import recipient_text
from station.crypto.sealed import (
    Altered,
    BadHeader,
    NoMatchingRecipient,
    SealedReader,
    SealedWriter,
    SealError,
    Truncated,
    UnsupportedFormat,
    WrongKey,
    canonical_json,
    scan_frames,
)

ID = nacl.public.PrivateKey(bytes(range(32)))
RCPT = recipient_text(ID.public_key)
HDR = {"station": "st", "session": "s1", "seq": 1, "kind": "media"}


def seal(path: Path, chunks: list[bytes], flush_each: bool = True, close: bool = True,
         **kw: object) -> SealedWriter:
    w = SealedWriter(path, [RCPT], HDR, **kw)  # type: ignore[arg-type]
    for c in chunks:
        w.write(c)
        if flush_each:
            w.flush()
    if close:
        w.close()
    return w


def read_all(data: bytes | Path, ident: object = ID) -> tuple[bytes, Exception | None]:
    """Plaintext released and the error that stopped reading (None at a clean end)."""
    out = bytearray()
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with SealedReader(src, [ident]) as rd:
            for m in rd.messages():
                out += m
    except SealError as exc:
        return bytes(out), exc
    return bytes(out), None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(st.binary(max_size=3000), max_size=8), small=st.booleans(),
       flush_each=st.booleans())
def test_round_trip_returns_exactly_the_bytes_written(chunks: list[bytes], small: bool,
                                                      flush_each: bool) -> None:
    with tempfile.TemporaryDirectory() as t:
        p = Path(t) / "s.drseg"
        w = seal(p, chunks, flush_each, max_message_bytes=97 if small else 1 << 20)
        assert w.bytes_written == p.stat().st_size
        assert w.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
        got, err = read_all(p)
        assert err is None and got == b"".join(chunks)
        with SealedReader(p, ID) as rd:  # read(n) path too
            parts = []
            while chunk := rd.read(1000):
                parts.append(chunk)
        assert b"".join(parts) == b"".join(chunks)


def test_round_trip_of_200_mb_is_identical(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    block = rng.integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()
    src_hash = hashlib.sha256()
    p = tmp_path / "big.drseg"
    with SealedWriter(p, [RCPT], HDR) as w:
        for i in range(50):  # 50 x 4 MiB = 200 MiB, flushed every 64 KiB-ish write
            data = block[i:] + block[:i]
            src_hash.update(data)
            for off in range(0, len(data), 1 << 16):
                w.write(data[off: off + (1 << 16)])
                w.flush()
    dst_hash = hashlib.sha256()
    n = 0
    with SealedReader(p, [ID]) as rd:
        for m in rd.messages():
            dst_hash.update(m)
            n += len(m)
    assert n == 200 << 20
    assert dst_hash.hexdigest() == src_hash.hexdigest()


def test_empty_segment_round_trips_and_close_is_idempotent(tmp_path: Path) -> None:
    w = seal(tmp_path / "e.drseg", [])
    size = w.bytes_written
    w.close()
    assert w.bytes_written == size == (tmp_path / "e.drseg").stat().st_size
    assert read_all(tmp_path / "e.drseg") == (b"", None)


def test_flush_fsyncs_only_what_was_written_since_the_last_fsync(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    w = SealedWriter(tmp_path / "f.drseg", [RCPT], HDR, fsync_on_flush=True)
    w.flush()  # the header
    w.flush()  # nothing new
    w.write(b"x" * 10)
    w.flush()
    w.flush()  # nothing new
    assert len(synced) == 2
    w.close()  # the final message is always synced
    assert len(synced) == 3
    assert read_all(tmp_path / "f.drseg") == (b"x" * 10, None)


def test_writer_refuses_to_overwrite_and_to_seal_for_nobody(tmp_path: Path) -> None:
    seal(tmp_path / "a.drseg", [b"x"])
    with pytest.raises(FileExistsError):
        seal(tmp_path / "a.drseg", [b"y"])
    assert read_all(tmp_path / "a.drseg") == (b"x", None)
    with pytest.raises(SealError, match="no recipients"):
        SealedWriter(tmp_path / "b.drseg", [], HDR)
    assert (tmp_path / "a.drseg").stat().st_mode & 0o777 == 0o600


def _small() -> bytes:
    with tempfile.TemporaryDirectory() as t:
        p = Path(t) / "s.drseg"
        seal(p, [b"alpha" * 5, b"beta" * 7, b"gamma"])
        return p.read_bytes()


SMALL = _small()
PLAIN = b"alpha" * 5 + b"beta" * 7 + b"gamma"


@settings(max_examples=300, deadline=None)
@given(pos=st.integers(0, len(SMALL) * 8 - 1))
def test_any_single_bit_flip_raises_a_seal_error_and_releases_only_genuine_bytes(pos: int) -> None:
    b = bytearray(SMALL)
    b[pos // 8] ^= 1 << (pos % 8)
    got, err = read_all(bytes(b))
    assert err is not None, f"bit {pos} flipped went unnoticed"
    assert PLAIN.startswith(got)


def test_every_cut_raises_truncated_after_releasing_only_complete_messages() -> None:
    full = scan_frames(io.BytesIO(SMALL))
    assert full["final"] and full["messages"] == 5  # header message, 3 messages, FINAL
    for cut in range(len(SMALL)):
        got, err = read_all(SMALL[:cut])
        assert isinstance(err, Truncated), (cut, err)
        assert PLAIN.startswith(got)
        assert err.offset <= cut


def test_a_cut_states_n_and_o_and_the_keyless_walk_states_the_same() -> None:
    """docs/format.md 2.5: N messages verified and o the start of message N's frame; before
    message 0 verified (a cut anywhere in the prefix or in message 0) N = 0 and o = 0. 2.6: the
    keyless walk of a cut file stops at the same N and o."""
    hl = int.from_bytes(SMALL[10:14], "big")
    starts, pos = [], 38 + hl
    while pos < len(SMALL):
        starts.append(pos)
        pos += 4 + (int.from_bytes(SMALL[pos:pos + 4], "big") & 0x7FFF_FFFF)
    for cut in range(len(SMALL)):
        _got, err = read_all(SMALL[:cut])
        n = sum(1 for s in starts[1:] if s <= cut)  # frames complete at this cut
        want = (n, starts[n] if n else 0)
        assert isinstance(err, Truncated) and (err.at_message, err.offset) == want, (cut, err)
        assert err.messages == err.at_message
        sc = scan_frames(io.BytesIO(SMALL[:cut]))
        assert (sc["status"], sc["messages"], sc["good_bytes"]) == ("truncated", *want), cut
        assert sc["trailing"] == cut - want[1] and not sc["final"]


def test_scan_frames_stops_where_the_structure_breaks_and_never_raises() -> None:
    hl = int.from_bytes(SMALL[10:14], "big")
    m1 = 38 + hl + 21  # message 1's frame word
    sc = scan_frames(io.BytesIO(SMALL))
    assert (sc["status"], sc["final"], sc["good_bytes"], sc["anomaly"]) == ("ok", True,
                                                                            len(SMALL), None)
    assert sc["header"]["kind"] == "media"
    # a zero-filled tail (what a power cut can leave): C = 0 is out of range -> bad tag at N, o
    sc = scan_frames(io.BytesIO(SMALL[:m1] + bytes(64)))
    assert (sc["status"], sc["messages"], sc["good_bytes"], sc["trailing"]) == ("bad tag", 1,
                                                                                m1, 64)
    assert "length 0 invalid" in sc["anomaly"]
    _got, err = read_all(SMALL[:m1] + bytes(64))  # the reader with the key: the same point
    assert isinstance(err, Altered) and (err.at_message, err.offset) == (1, m1)
    # bytes after FINAL; a header message word other than 00 00 00 11; a header with "seq": true
    sc = scan_frames(io.BytesIO(SMALL + b"\x00"))
    assert (sc["status"], sc["messages"], sc["good_bytes"], sc["final"]) == ("bad tag", 5,
                                                                             len(SMALL), False)
    sc = scan_frames(io.BytesIO(SMALL[:38 + hl] + b"\x80" + SMALL[39 + hl:]))
    assert (sc["status"], sc["messages"], sc["good_bytes"]) == ("bad header", 0, 0)
    hdr = json.loads(SMALL[14:14 + hl])
    hdr["seq"] = True
    hj = canonical_json(hdr)
    mistyped = SMALL[:10] + len(hj).to_bytes(4, "big") + hj + SMALL[14 + hl:]
    sc = scan_frames(io.BytesIO(mistyped))
    assert (sc["status"], sc["header"], sc["size"]) == ("bad header", {}, len(mistyped))
    assert "seq True" in sc["anomaly"]
    for data in (b"", b"DRS", b"PK\x03\x04", SMALL[:8] + b"\x00\x07" + SMALL[10:]):
        sc = scan_frames(io.BytesIO(data))
        assert sc["status"] in ("truncated", "bad header", "unsupported format")
        assert sc["good_bytes"] == 0 and sc["trailing"] == len(data)


def test_truncated_error_names_the_message_and_offset(tmp_path: Path) -> None:
    p = tmp_path / "t.drseg"
    w = seal(p, [b"one", b"two", b"three"], close=False)
    w.write(b"never flushed")
    got, err = read_all(p)
    assert got == b"onetwothree"
    assert isinstance(err, Truncated) and err.messages == 4 and err.offset == p.stat().st_size
    assert "after 4 complete messages" in str(err)


def test_wrong_identity_and_damaged_header_have_distinct_errors(tmp_path: Path) -> None:
    other = nacl.public.PrivateKey.generate()
    assert isinstance(read_all(SMALL, other)[1], NoMatchingRecipient)
    assert isinstance(read_all(b"NOTASEG!" + SMALL[8:])[1], BadHeader)
    assert isinstance(read_all(SMALL[:8] + b"\x00\x09" + SMALL[10:])[1], UnsupportedFormat)
    # header of one segment with the body of another: the header message fails
    p2 = tmp_path / "2.drseg"
    seal(p2, [b"alpha" * 5, b"beta" * 7, b"gamma"])
    other_seg = p2.read_bytes()
    hl = int.from_bytes(SMALL[10:14], "big")
    got, err = read_all(other_seg[:14 + hl + 24] + SMALL[14 + hl + 24:])
    assert isinstance(err, BadHeader) and got == b""
    # the right fingerprint, but the wrapped key was made for someone else
    hdr = json.loads(SMALL[14:14 + hl])
    hdr2 = json.loads(other_seg[14:14 + hl])
    hdr["recipients"][0]["wrapped"] = hdr2["recipients"][0]["wrapped"][:-8] + "AAAAAAA="
    hj = canonical_json(hdr)
    got, err = read_all(SMALL[:10] + len(hj).to_bytes(4, "big") + hj + SMALL[14 + hl:])
    assert isinstance(err, WrongKey)


def test_rotation_any_of_several_recipients_opens_the_segment(tmp_path: Path) -> None:
    old, new = nacl.public.PrivateKey.generate(), nacl.public.PrivateKey.generate()
    p = tmp_path / "r.drseg"
    with SealedWriter(p, [recipient_text(old.public_key), recipient_text(new.public_key)],
                      HDR) as w:
        w.write(b"payload")
    for ids in ([old], [new], [nacl.public.PrivateKey.generate(), old]):
        with SealedReader(p, ids) as rd:
            assert rd.read() == b"payload"


def _encode_matroska(sink: object, frames: int, flush: object) -> None:
    out = av.open(sink, "w", format="matroska")
    vs = out.add_stream("libx264", rate=15)
    vs.width, vs.height, vs.pix_fmt = 160, 120, "yuv420p"
    vs.options = {"g": "15"}
    for i in range(frames):
        img = np.full((120, 160, 3), (i * 7) % 255, np.uint8)
        for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            out.mux(pkt)
        if i % 15 == 14:
            flush()  # type: ignore[operator]
    for pkt in vs.encode(None):
        out.mux(pkt)
    out.close()


class _Sink:
    def __init__(self, w: SealedWriter) -> None:
        self.w = w

    def write(self, b: bytes) -> int:
        return self.w.write(b)


class _NonSeekable(SealedReader):
    def seekable(self) -> bool:
        return False

    def seek(self, *a: object) -> int:
        raise OSError("not seekable")


@pytest.mark.parametrize("reader", [SealedReader, _NonSeekable])
def test_pyav_decodes_matroska_straight_from_the_sealed_reader(tmp_path: Path,
                                                               reader: type) -> None:
    p = tmp_path / "m.drseg"
    w = SealedWriter(p, [RCPT], HDR)
    _encode_matroska(_Sink(w), 45, w.flush)
    w.close()
    assert w.messages >= 4  # header message, 3 flushes, ..., FINAL
    with open(p, "rb") as fh, reader(fh, [ID]) as rd, av.open(rd, format="matroska") as c:
        frames = [f.to_ndarray(format="gray")[60, 80] for f in c.decode(video=0)]
    assert len(frames) == 45
    assert abs(int(frames[20]) - int((20 * 7) % 255 * 0.86 + 16)) < 12  # grey level survived


def test_seek_backwards_re_decrypts_from_the_message_start(tmp_path: Path) -> None:
    p = tmp_path / "s.drseg"
    data = os.urandom(5000)
    seal(p, [data[i:i + 700] for i in range(0, 5000, 700)])
    with SealedReader(p, [ID]) as rd:
        assert rd.read(4000) == data[:4000]
        for pos in (3999, 10, 701, 0, 4999):
            assert rd.seek(pos) == pos
            assert rd.read(50) == data[pos:pos + 50]
        assert rd.seek(0, io.SEEK_END) == 5000


def test_one_huge_write_is_split_into_bounded_messages(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    p = tmp_path / "h.drseg"
    with SealedWriter(p, [RCPT], HDR) as w:
        w.write(b"ab")
        w.write(memoryview(data))
    assert w.messages == 1 + 3 + 1  # header message, three full 1 MiB messages, FINAL with the rest
    assert read_all(p) == (b"ab" + data, None)


def test_seek_to_end_learns_the_size_without_decrypting(tmp_path: Path) -> None:
    p = tmp_path / "s.drseg"
    data = os.urandom(9000)
    seal(p, [data[i:i + 1000] for i in range(0, 9000, 1000)])
    with SealedReader(p, [ID]) as rd:
        assert rd.seek(0, io.SEEK_END) == 9000 and rd.tell() == 9000
        assert rd._msg_index == 1  # only the header message was decrypted so far
        assert rd.seek(-10, io.SEEK_END) == 8990
        assert rd.read() == data[-10:]
        rd.seek(123)
        assert rd.read(5) == data[123:128]


def test_playback_of_a_cut_matroska_ends_cleanly_and_keeps_the_truncation(tmp_path: Path) -> None:
    p = tmp_path / "m.drseg"
    w = SealedWriter(p, [RCPT], HDR)
    _encode_matroska(_Sink(w), 45, w.flush)
    w.close()
    raw = p.read_bytes()
    cut = tmp_path / "cut.drseg"
    cut.write_bytes(raw[: len(raw) * 2 // 3])
    with open(cut, "rb") as fh, SealedReader(fh, [ID], truncated_as_eof=True) as rd:
        with av.open(rd, format="matroska") as c:
            n = sum(1 for _ in c.decode(video=0))
        assert 0 < n < 45
        assert isinstance(rd.truncated, Truncated)
    with pytest.raises(Truncated), SealedReader(cut, [ID]) as rd:  # the default still raises
        rd.read()


_MODEL = os.urandom(7000)


def _model_file() -> Path:
    d = Path(tempfile.mkdtemp(prefix="sealmodel"))
    p = d / "m.drseg"
    seal(p, [_MODEL[i:i + 900] for i in range(0, 7000, 900)])
    return p


_MODEL_FILE = _model_file()


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.one_of(
    st.tuples(st.just("read"), st.integers(-1, 3000)),
    st.tuples(st.just("seek"), st.integers(0, 7500)),
    st.tuples(st.just("end"), st.integers(-7000, 0)),
    st.tuples(st.just("cur"), st.integers(-500, 500))), max_size=12))
def test_reader_behaves_like_a_plain_file_under_any_reads_and_seeks(
        ops: list[tuple[str, int]]) -> None:
    model = io.BytesIO(_MODEL)
    with SealedReader(_MODEL_FILE, [ID]) as rd:
        for op, arg in ops:
            if op == "read":
                assert rd.read(arg) == model.read(arg)
            elif op == "seek":
                assert rd.seek(arg) == model.seek(arg)
            elif op == "end":
                assert rd.seek(arg, io.SEEK_END) == model.seek(arg, io.SEEK_END)
            elif model.tell() + arg >= 0:
                assert rd.seek(arg, io.SEEK_CUR) == model.seek(arg, io.SEEK_CUR)
            assert rd.tell() == model.tell()
