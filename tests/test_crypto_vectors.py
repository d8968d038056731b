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
from station.crypto.verify import RECOVERY_CODES, DirSource, verify_session

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


def segment_result(meta: dict[str, str], body: bytes
                   ) -> tuple[str, bytes, tuple[int, int] | None]:
    """(category, plaintext released, (N, o) for truncated and bad tag) as SealedReader reads it.
    Anything but a SealError is a category of its own ("crash: ..."), so one run lists them all."""
    released = bytearray()
    try:
        with SealedReader(io.BytesIO(body), [parse_identity(meta["identity"])]) as rd:
            for msg in rd.messages():
                released += msg
    except tuple(SEGMENT_CATEGORY) as exc:
        at = (exc.at_message, exc.offset) if isinstance(exc, (Truncated, Altered)) else None
        return SEGMENT_CATEGORY[type(exc)], bytes(released), at
    except Exception as exc:  # a crash is a finding, reported with the others
        return f"crash: {type(exc).__name__}: {exc}"[:120], bytes(released), None
    return "ok", bytes(released), None


def segment_category(meta: dict[str, str], body: bytes) -> tuple[str, bytes]:
    got, released, _at = segment_result(meta, body)
    return got, released


def vec_expectation(meta: dict[str, str]) -> tuple[str, int, str, tuple[int, int] | None]:
    """(category, payload bytes, payload sha256, (at-message, offset) or None) of a vector."""
    at = ((int(meta["at-message"]), int(meta["offset"])) if meta["expect"] in
          ("truncated", "bad tag") else None)
    return meta["expect"], int(meta["payload-bytes"]), meta["payload-sha256"], at


def check_segment_dir(d: Path) -> list[str]:
    """Every vector's category, released plaintext and, for truncated and bad tag, N and o;
    all mismatches are reported together."""
    seen, wrong = [], []
    for vec in sorted(d.glob("*.vec")):
        meta, body = parse_vec(vec)
        expect, nbytes, sha, at = vec_expectation(meta)
        got, released, got_at = segment_result(meta, body)
        actual = (got, len(released), hashlib.sha256(released).hexdigest(), got_at)
        if actual != (expect, nbytes, sha, at):
            wrong.append(f"{vec.name}: expected {expect} {at} {nbytes} bytes, got {got} "
                         f"{got_at} {len(released)} bytes")
        seen.append(got)
    assert not wrong, f"{len(wrong)} vectors:\n" + "\n".join(wrong)
    return seen


def session_expectation(d: Path) -> tuple[str, str, list[str]]:
    meta: dict[str, list[str]] = {}
    for line in (d / "expect.txt").read_text("utf-8").splitlines():
        k, _, v = line.partition(": ")
        meta.setdefault(k, []).append(v)
    return meta["expect"][0], meta["verdict"][0], meta["trusted"]


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
        expect, verdict, trusted = session_expectation(case)
        result = verify_session(_Without(case), trusted)
        codes = sorted(SESSION_CODE.get(c, c) for c in expect.split(", "))
        got = set(result["categories"])
        if any(c.startswith("recovery-") for c in codes):  # the crashed segment is truncated too
            got -= {"truncated", "crash-recovered"}
        assert sorted(got) == codes, (case.name, result["problems"])
        assert result["intact"] is (expect == "ok")
        assert result["verdict"] == verdict, (case.name, result["verdict"])
        seen.extend(codes)
        continue
        seen.append(expect)
    return seen


ALL_SEGMENT = {"ok", "truncated", "bad tag", "bad header", "wrong key", "no recipient",
               "unsupported format"}
# every verify code of docs/format.md section 8 (and ok)
ALL_SESSION = {"ok", "truncated", "reordered", "missing-segment", "bad-signature", "unsigned",
               "untrusted", "session-open", "chain-broken", "missing-file", "altered",
               "header-mismatch", "wrong-name", "bad-format", "wrong-type", "wrong-station",
               "crash-recovered", *RECOVERY_CODES}


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
