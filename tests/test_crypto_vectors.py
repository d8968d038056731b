"""Every vector in tests/vectors/ gives exactly its expected category (and the generator too)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

from station.crypto.keys import parse_identity
from station.crypto.sealed import (
    Altered,
    BadHeader,
    NoMatchingRecipient,
    SealedReader,
    Truncated,
    UnsupportedFormat,
    WrongKey,
)
from station.crypto.verify import DirSource, verify_session

VECTORS = Path(__file__).parent / "vectors"
SEGMENT_CATEGORY = {Altered: "bad tag", BadHeader: "bad header", Truncated: "truncated",
                    WrongKey: "wrong key", NoMatchingRecipient: "no recipient",
                    UnsupportedFormat: "unsupported format"}
SESSION_CODE = {"ok": "ok", "truncated": "truncated", "reordered": "reordered",
                "missing segment": "missing-segment", "bad signature": "bad-signature"}


def parse_vec(path: Path) -> tuple[dict[str, str], bytes]:
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    meta = dict(line.split(": ", 1) for line in head.decode("utf-8").splitlines())
    return meta, body


def segment_category(meta: dict[str, str], body: bytes) -> tuple[str, bytes]:
    released = bytearray()
    try:
        with SealedReader(io.BytesIO(body), [parse_identity(meta["identity"])]) as rd:
            for msg in rd.messages():
                released += msg
    except tuple(SEGMENT_CATEGORY) as exc:
        return SEGMENT_CATEGORY[type(exc)], bytes(released)
    return "ok", bytes(released)


def check_segment_dir(d: Path) -> list[str]:
    seen = []
    for vec in sorted(d.glob("*.vec")):
        meta, body = parse_vec(vec)
        got, released = segment_category(meta, body)
        assert got == meta["expect"], f"{vec.name}: expected {meta['expect']}, got {got}"
        assert len(released) == int(meta["payload-bytes"]), vec.name
        assert hashlib.sha256(released).hexdigest() == meta["payload-sha256"], vec.name
        seen.append(got)
    return seen


def session_expectation(d: Path) -> tuple[str, list[str]]:
    meta: dict[str, list[str]] = {}
    for line in (d / "expect.txt").read_text("utf-8").splitlines():
        k, _, v = line.partition(": ")
        meta.setdefault(k, []).append(v)
    return meta["expect"][0], meta["trusted"]


class _Without:
    """The session folder as a source, hiding expect.txt."""

    def __init__(self, d: Path) -> None:
        self.inner = DirSource(d)
        self.label = self.inner.label

    def list(self) -> list[str]:
        return [n for n in self.inner.list() if n != "expect.txt"]

    def read_bytes(self, name: str) -> bytes:
        return self.inner.read_bytes(name)

    def open(self, name: str):  # type: ignore[no-untyped-def]
        return self.inner.open(name)


def check_session_dir(d: Path) -> list[str]:
    seen = []
    for case in sorted(p for p in d.iterdir() if p.is_dir()):
        expect, trusted = session_expectation(case)
        result = verify_session(_Without(case), trusted)
        assert result["categories"] == [SESSION_CODE[expect]], (case.name, result["problems"])
        assert result["intact"] is (expect == "ok")
        seen.append(expect)
    return seen


ALL_SEGMENT = {"ok", "truncated", "bad tag", "bad header", "wrong key", "no recipient",
               "unsupported format"}
ALL_SESSION = {"ok", "truncated", "reordered", "missing segment", "bad signature"}


def test_committed_segment_vectors_give_exactly_their_expected_category() -> None:
    assert set(check_segment_dir(VECTORS / "segment")) == ALL_SEGMENT


def test_committed_session_vectors_give_exactly_their_expected_category() -> None:
    assert set(check_session_dir(VECTORS / "session")) == ALL_SESSION


def test_generator_reproduces_every_category(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(VECTORS / "make_vectors.py"), str(tmp_path)], check=True,
                   capture_output=True)
    assert set(check_segment_dir(tmp_path / "segment")) == ALL_SEGMENT
    assert set(check_session_dir(tmp_path / "session")) == ALL_SESSION


@pytest.mark.parametrize("name", ["ok", "truncated-crash"])
def test_vector_segments_decrypt_with_the_committed_identity_only(name: str) -> None:
    _meta, body = parse_vec(VECTORS / "segment" / f"{name}.vec")
    other = (VECTORS / "keys.txt").read_text().split("other-identity: ")[1].split()[0]
    with pytest.raises(NoMatchingRecipient):
        SealedReader(io.BytesIO(body), [parse_identity(other)])
