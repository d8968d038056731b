"""The session catalog: listed from real stores, cached in SQLite, refreshed incrementally, filtered."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import nacl.public
import nacl.signing
import pytest

from station.review.catalog import INCOMPLETE, Catalog, Filter, SessionRow
from tests import reviewkit as kit
from uploader.stores import LocalFolderStore, S3Settings, S3Store


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    ident, sk = nacl.public.PrivateKey.generate(), nacl.signing.SigningKey.generate()
    spool = tmp_path_factory.mktemp("spool")
    return [kit.make_session(spool, [bytes(ident.public_key)], sk, segments=1, seg_s=2.0, agent=agent,
                             station=station)
            for agent, station in (("alice", "seat-01"), ("bob", "seat-02"), ("carol", "seat-01"))]


def _check_listing(cat: Catalog, sessions: list[Path]) -> None:
    rows = cat.query(sort="agent", descending=False)
    assert [r.session_id for r in rows] == [s.name for s in sessions]
    assert [(r.agent, r.station) for r in rows] == [("alice", "seat-01"), ("bob", "seat-02"),
                                                    ("carol", "seat-01")]
    assert all(abs(r.duration_s - 2.0) < 1e-6 and r.segments == 1 and r.end_reason == "normal" for r in rows)
    assert all(r.start_utc.startswith(dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")) for r in rows)


def test_catalog_lists_sessions_of_a_local_folder_store_and_refreshes_incrementally(
        sessions: list[Path], tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "store")
    for s in sessions[:2]:
        kit.upload(s, store, station="seat-01" if s is not sessions[1] else "seat-02")
    cat = Catalog.for_store(store, tmp_path / "data")
    assert cat.refresh()["added"] == 2
    kit.upload(sessions[2], store, station="seat-01")
    # a session still recording: manifests uploaded, no session.json yet
    open_id = kit.new_session_id()
    store.put(f"{dt.datetime.now(dt.UTC):%Y/%m/%d}/seat-09/{open_id}/seg-000001.manifest.json", b"{}")
    again = cat.refresh()
    assert (again["added"], again["total"]) == (2, 4)
    assert cat.refresh()["added"] == 0                      # nothing new: nothing fetched
    assert cat.get(open_id).verdict == INCOMPLETE
    rows = [r for r in cat.query(sort="agent", descending=False) if r.verdict != INCOMPLETE]
    assert [(r.agent, r.station) for r in rows] == [("alice", "seat-01"), ("bob", "seat-02"),
                                                    ("carol", "seat-01")]
    # the cache survives a restart of the review app
    cat.close()
    assert Catalog.for_store(store, tmp_path / "data").count() == 4


def test_catalog_lists_sessions_in_seaweedfs(sessions: list[Path], s3: object, s3_bucket: str,
                                             tmp_path: Path) -> None:
    store = S3Store(S3Settings(endpoint=s3.endpoint, region=s3.region, bucket=s3_bucket, prefix="dualrec"),
                    s3.access_key, s3.secret_key)
    for s, st in list(zip(sessions, ("seat-01", "seat-02", "seat-01"), strict=True))[:2]:
        kit.upload(s, store, prefix="dualrec", station=st)
    store.put("dualrec/audit/review/x.json", b"{}")          # not a session
    cat = Catalog.for_store(store, tmp_path / "data")
    assert cat.refresh()["total"] == 2
    kit.upload(sessions[2], store, prefix="dualrec", station="seat-01")
    listed: list[str] = []
    real_list = store.list
    store.list = lambda prefix="": listed.append(prefix) or real_list(prefix)  # type: ignore[method-assign]
    again = cat.refresh()
    assert (again["added"], again["total"]) == (1, 3)
    # incremental: only the recent day folders are listed, never the whole bucket
    assert listed and all(p.count("/") == 4 and p.startswith("dualrec/20") for p in listed)
    _check_listing(cat, sessions)
    assert [r.agent for r in cat.query(Filter(station="seat-02"))] == ["bob"]


def test_unreadable_session_manifest_is_listed_not_fatal(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "store")
    sid = kit.new_session_id()
    store.put(f"{sid[:4]}/{sid[4:6]}/{sid[6:8]}/seat-01/{sid}/session.json", b"{not json")
    cat = Catalog.for_store(store, tmp_path / "data")
    cat.refresh()
    row = cat.get(sid)
    assert row is not None and row.verdict == "unreadable-manifest"


def _rows(n: int) -> list[SessionRow]:
    rng = random.Random(7)
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    out = []
    for i in range(n):
        start = base + dt.timedelta(minutes=47 * i)
        sid = f"{start:%Y%m%dT%H%M%SZ}-{i:08x}"
        flags = rng.sample(["no-face", "silence", "camera-covered", "missing-step"], rng.randint(0, 2))
        missing = ["risk_disclosure_read"] if "missing-step" in flags else []
        out.append(SessionRow(sid, f"seat-{i % 40:02d}", f"agent-{i % 300}", "hq",
                              start.isoformat().replace("+00:00", "Z"), float(rng.randint(30, 3600)), 1,
                              f"{start:%Y/%m/%d}/seat-{i % 40:02d}/{sid}",
                              verdict=rng.choice(["intact", "intact", "unverified", "not-intact:altered"]),
                              qc_flags=flags, missing_steps=missing, qc_state="stored"))
    return out


def test_filters_and_sort_over_ten_thousand_sessions(tmp_path: Path) -> None:
    rows = _rows(10_000)
    cat = Catalog(LocalFolderStore(tmp_path / "s"), tmp_path / "c.sqlite")
    cat.add_rows(rows)
    assert cat.count() == 10_000
    flt = Filter(date_from="2026-03-01", date_to="2026-03-31", station="seat-07", min_duration_s=600,
                 qc_flag="no-face")
    got = cat.query(flt, sort="duration", descending=True)
    want = sorted((r for r in rows if "2026-03-01" <= r.start_utc[:10] <= "2026-03-31"
                   and r.station == "seat-07" and r.duration_s >= 600 and "no-face" in r.qc_flags),
                  key=lambda r: (-r.duration_s, r.session_id))
    assert [r.session_id for r in got] == [r.session_id for r in want] and want
    assert len(cat.query(Filter(missing_step="risk_disclosure_read"))) == sum(bool(r.missing_steps) for r in rows)
    assert len(cat.query(Filter(verdict="intact", agent="agent-12"))) == sum(
        r.verdict == "intact" and "agent-12" in r.agent for r in rows)
    assert len(cat.query(Filter(max_duration_s=60))) == sum(r.duration_s <= 60 for r in rows)
    with pytest.raises(ValueError, match="cannot sort by"):
        cat.query(sort="customer_name")
