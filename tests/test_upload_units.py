"""Fast unit tests of the uploader's parts: journal, backoff, bandwidth, layout, digests."""

from __future__ import annotations

import hashlib
import io
import itertools
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station.policy import Policy
from uploader import layout
from uploader.bandwidth import Backoff, LimitedStream, TokenBucket
from uploader.errors import JournalConflict
from uploader.journal import (
    COMPLETED,
    FAILED,
    PURGED,
    QUEUED,
    SEALED,
    TRANSITIONS,
    UPLOADING,
    VERIFIED,
    Journal,
)
from uploader.service import Uploader, backlog, upload_rate_bytes_s
from uploader.stores import LocalFolderStore, choose_part_size, digest_file, expected_etag


def test_journal_walks_the_happy_path_and_survives_reopening(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    assert j.add("k/a", tmp_path / "a", role="segment", session_id="s", seq=1, expect_sha256="ab")
    assert not j.add("k/a", tmp_path / "a", role="segment")  # idempotent
    j.transition("k/a", SEALED, QUEUED, sha256="ab", size=10, part_size=5, md5s=["m1", "m2"])
    j.transition("k/a", QUEUED, UPLOADING, upload_id="u1", part_size=5, parts={})
    j.record_part("k/a", 2, "m2")
    j.close()
    j = Journal(tmp_path / "j.sqlite")
    e = j.get("k/a")
    assert e is not None and e.state == UPLOADING and e.upload_id == "u1" and e.parts == {2: "m2"}
    assert e.md5s == ["m1", "m2"]
    for a, b in ((UPLOADING, COMPLETED), (COMPLETED, VERIFIED), (VERIFIED, PURGED)):
        j.transition("k/a", a, b)
    assert j.get("k/a").state == PURGED  # type: ignore[union-attr]


def test_journal_rejects_skipping_states_and_stale_expectations(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    j.add("k", tmp_path / "f", role="segment")
    with pytest.raises(ValueError, match="not a valid transition"):
        j.transition("k", SEALED, VERIFIED)
    with pytest.raises(JournalConflict):
        j.transition("k", QUEUED, UPLOADING)  # it is SEALED, not QUEUED
    assert j.get("k").state == SEALED  # type: ignore[union-attr]
    j.transition("k", SEALED, QUEUED)
    j.transition("k", QUEUED, COMPLETED)
    j.transition("k", COMPLETED, VERIFIED)
    j.transition("k", VERIFIED, PURGED)
    with pytest.raises(ValueError, match="PURGED"):
        j.transition("k", PURGED, FAILED)


def test_only_one_of_two_racing_threads_moves_an_entry(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    j.add("k", tmp_path / "f", role="segment")
    j2 = Journal(tmp_path / "j.sqlite")  # a second connection, like a second process
    wins, losses = [], []
    barrier = threading.Barrier(8)

    def go(journal: Journal) -> None:
        barrier.wait()
        try:
            journal.transition("k", SEALED, QUEUED)
            wins.append(1)
        except JournalConflict:
            losses.append(1)

    threads = [threading.Thread(target=go, args=(j if i % 2 else j2,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 7


def test_failed_entry_remembers_its_resume_state_and_counts_attempts(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    j.add("k", tmp_path / "f", role="segment")
    j.transition("k", SEALED, QUEUED)
    j.transition("k", QUEUED, UPLOADING, upload_id="u", part_size=5, parts={1: "x"})
    e = j.fail(j.get("k"), "boom", hard=False, retry_at=123.0)  # type: ignore[arg-type]
    assert (e.state, e.resume, e.attempts, e.retry_at, e.last_error) == (FAILED, UPLOADING, 1, 123.0, "boom")
    e = j.fail(e, "boom again", hard=True, retry_at=456.0)
    assert (e.resume, e.attempts, e.hard) == (UPLOADING, 2, True)
    e = j.revive(e)
    assert e.state == UPLOADING and e.upload_id == "u" and e.parts == {1: "x"} and not e.hard


@given(st.integers(min_value=1, max_value=60), st.floats(min_value=0, max_value=1))
@settings(max_examples=200, deadline=None)
def test_backoff_grows_by_half_stays_within_jitter_and_cap(attempt: int, r: float) -> None:
    b = Backoff(2.0, 1.5, 900.0, jitter=0.2, rng=lambda: r)
    base = b.base_s(attempt)
    assert base == min(900.0, 2.0 * 1.5 ** (attempt - 1))
    assert b.base_s(attempt + 1) >= base
    d = b.delay_s(attempt)
    assert 0.8 * base - 1e-9 <= d <= min(900.0, 1.2 * base) + 1e-9


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_token_bucket_holds_the_average_rate_without_real_sleeping() -> None:
    ft = FakeTime()
    bucket = TokenBucket(lambda: 100_000.0, clock=ft.clock, sleep=ft.sleep)
    for _ in range(100):
        bucket.consume(10_000)  # 1 MB in total
    assert 9.5 <= ft.t <= 10.5  # 1 MB at 100 kB/s


def test_rate_zero_pauses_until_the_rate_comes_back() -> None:
    ft = FakeTime()
    bucket = TokenBucket(lambda: 0.0 if ft.t < 30 else None, clock=ft.clock, sleep=ft.sleep)
    bucket.consume(1_000_000)
    assert 30 <= ft.t <= 31


def test_limited_stream_charges_only_while_transferring() -> None:
    ft = FakeTime()
    bucket = TokenBucket(lambda: 1000.0, clock=ft.clock, sleep=ft.sleep)
    s = LimitedStream(io.BytesIO(b"x" * 10_000), bucket)
    assert len(s.read()) == 10_000 and ft.t == 0  # checksum pass: free
    s.seek(0)
    s.signal_transferring()
    data = b""
    while chunk := s.read(4096):
        data += chunk
    assert data == b"x" * 10_000 and 9 <= ft.t <= 11


def test_upload_rate_follows_the_call_policy() -> None:
    pol = Policy.defaults().replace(upload__bandwidth_kbps=8000, upload__call_kbps=800)
    assert upload_rate_bytes_s(pol, False) == 1_000_000
    assert upload_rate_bytes_s(pol.replace(upload__during_call="throttle"), True) == 100_000
    assert upload_rate_bytes_s(pol.replace(upload__during_call="pause"), True) == 0
    assert upload_rate_bytes_s(pol.replace(upload__during_call="run"), True) == 1_000_000
    assert upload_rate_bytes_s(Policy.defaults(), False) is None


def test_object_keys_follow_the_bucket_layout() -> None:
    sid = "20261124T062500Z-3fa9c2d1"
    assert layout.session_key("dualrec", sid, "seat-07", "session.json") == \
        "dualrec/2026/11/24/seat-07/20261124T062500Z-3fa9c2d1/session.json"
    assert layout.session_key("", sid, "s", "f") == "2026/11/24/s/20261124T062500Z-3fa9c2d1/f"
    assert layout.audit_key("p/", "x.json") == "p/audit/x.json"
    assert layout.enrolment_key("p", "st.json") == "p/enrolment/st.json"
    with pytest.raises(ValueError, match="session id"):
        layout.session_key("p", "../../etc", "s", "f")
    with pytest.raises(ValueError, match="station"):
        layout.session_key("p", sid, "../x", "f")


def test_spool_files_are_ready_only_once_their_manifest_exists(tmp_path: Path) -> None:
    sd = tmp_path / "20261124T062500Z-3fa9c2d1"
    sd.mkdir()
    (sd / "seg-000001.media.drseg").write_bytes(b"m")
    assert layout.ready_files(sd, "st") == []
    (sd / "seg-000001.manifest.json").write_text(
        '{"station": "seat-1", "files": {"media": {"name": "seg-000001.media.drseg", '
        '"sha256": "aa", "size": 1}}}')
    (sd / "seg-000002.media.drseg").write_bytes(b"n")  # still recording
    names = [(f.filename, f.role, f.station) for f in layout.ready_files(sd, "st")]
    assert names == [("seg-000001.media.drseg", "segment", "seat-1"),
                     ("seg-000001.manifest.json", "manifest", "seat-1")]
    (sd / "session.json").write_text('{"station": "seat-1"}')
    assert [f.filename for f in layout.ready_files(sd, "st")][-1] == "session.json"


def test_digest_gives_the_s3_multipart_etag_of_part_md5s(tmp_path: Path) -> None:
    data = bytes(range(256)) * 50_000  # 12.8 MB
    p = tmp_path / "f"
    p.write_bytes(data)
    part = 5 * 1024 * 1024
    d = digest_file(p, part)
    md5s = [hashlib.md5(data[i:i + part], usedforsecurity=False).hexdigest()
            for i in range(0, len(data), part)]
    assert d.sha256 == hashlib.sha256(data).hexdigest() and list(d.part_md5s) == md5s
    joined = hashlib.md5(b"".join(bytes.fromhex(m) for m in md5s), usedforsecurity=False).hexdigest()
    assert d.etag == f"{joined}-3"
    single = digest_file(p, 0)
    assert single.etag == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert single.etag == expected_etag(single.part_md5s, False)
    assert choose_part_size(10**12, part) * 10_000 >= 10**12


def test_spool_session_with_a_station_id_unusable_in_keys_is_reported_not_fatal(tmp_path: Path) -> None:
    sd = tmp_path / "spool" / "20261124T062500Z-3fa9c2d1"
    sd.mkdir(parents=True)
    (sd / "seg-000001.media.drseg").write_bytes(b"m")
    (sd / "seg-000001.manifest.json").write_text(
        '{"station": "../../etc", "files": {"media": {"name": "seg-000001.media.drseg"}}}')
    up = Uploader(LocalFolderStore(tmp_path / "store"), Journal(tmp_path / "journal.sqlite"),
                  tmp_path / "spool", Policy.defaults().replace(storage__object_lock="ignore"))
    assert up.scan() == 0
    assert "station id" in backlog(tmp_path)["last_error"]
    assert (sd / "seg-000001.media.drseg").exists()


@given(st.lists(st.tuples(st.sampled_from(["SEALED", "QUEUED", "UPLOADING", "COMPLETED", "VERIFIED",
                                           "PURGED", "FAILED", "revive"]),
                          st.booleans()), max_size=40))
@settings(max_examples=60, deadline=None)
def test_no_sequence_of_moves_reaches_purged_without_verified_or_fails_a_stored_entry(
        moves: list[tuple[str, bool]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        j = Journal(Path(d) / "j.sqlite")
        j.add("k", Path(d) / "f", role="segment")
        history = [SEALED]
        for to, hard in moves:
            e = j.get("k")
            assert e is not None
            try:
                if to == "revive":
                    e = j.revive(e) if e.state == FAILED else e
                elif to == FAILED:
                    e = j.fail(e, "x", hard=hard, retry_at=0)
                else:
                    e = j.transition("k", e.state, to)
            except (ValueError, JournalConflict):
                continue
            if e.state != history[-1]:
                history.append(e.state)
        j.close()
    for i, (a, b) in enumerate(itertools.pairwise(history)):
        assert b in TRANSITIONS[a] or b == FAILED
        if b == PURGED:
            assert a == VERIFIED
        if b == FAILED:
            assert a not in (VERIFIED, PURGED)
        if a == FAILED:  # back to exactly where it failed
            assert b == history[i - 1]
