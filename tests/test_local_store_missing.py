"""A local store the policy names must exist: an unmounted share is never replaced by a folder on
the seat's own disk that then "verifies" uploads and gets the spool purged (issue 17, item 5)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.recordkit import make_station

pytestmark = [pytest.mark.integration]


def _station(st, *argv: str) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "station.cli", *argv, "--policy", str(st.policy_path),
                           "--data-dir", str(st.home)], capture_output=True, text=True, timeout=120)


def test_an_unmounted_local_store_keeps_the_spool_and_uploads_once_it_is_there(
        tmp_path: Path, keyring_service: str) -> None:
    share = tmp_path / "mnt" / "dualrec-share"            # the mount point is not there
    st = make_station(tmp_path / "seat", **{"capture.segment_seconds": 2, "storage.kind": "local",
                                            "storage.local_dir": str(share)})
    r = _station(st, "record", "--fake-devices", "--duration", "2", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    sid = json.loads(r.stdout)["session_id"]
    spool = st.home / "spool" / sid
    r = _station(st, "upload", "--drain", "--timeout", "5", "--json")
    assert r.returncode != 0
    assert "does not exist (an unmounted share?)" in r.stdout + r.stderr
    assert not share.exists() and (spool / "session.json").exists()     # nothing lost, no folder
    share.mkdir(parents=True)                                            # the share is mounted
    r = _station(st, "upload", "--drain", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert not spool.exists() and any(share.rglob("session.json"))
    r = _station(st, "verify", "--json", sid)
    assert r.returncode == 0 and json.loads(r.stdout)["verdict"] == "intact", r.stdout[-2000:]


def test_policy_init_creates_the_local_store_it_names(tmp_path: Path) -> None:
    store = tmp_path / "srv" / "store"
    r = subprocess.run([sys.executable, "-m", "station.cli", "policy", "init", "--store",
                        f"local:{store}", "--out", str(tmp_path / "policy.toml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert store.is_dir() and str(store) in (tmp_path / "policy.toml").read_text()


def test_a_damaged_upload_journal_is_kept_aside_and_uploads_go_on(
        tmp_path: Path, keyring_service: str) -> None:
    """Garbage in journal.sqlite used to end `station upload` with a traceback (issue 17, item 7):
    it is moved aside for a human, a new journal re-scans the spool, everything uploads, and the
    objects an earlier journal had already stored are found equal (no conflict)."""
    st = make_station(tmp_path / "seat", **{"capture.segment_seconds": 2})
    for _ in range(2):
        r = _station(st, "record", "--fake-devices", "--duration", "2", "--json")
        assert r.returncode == 0, r.stderr[-2000:]
    r = _station(st, "upload", "--drain", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    r = _station(st, "record", "--fake-devices", "--duration", "2", "--json")
    sid = json.loads(r.stdout)["session_id"]
    journal = st.home / "journal.sqlite"
    journal.write_bytes(b"this is not an SQLite database" * 100)
    r = _station(st, "upload", "--drain", "--json")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "is damaged" in r.stderr
    assert [p.name.startswith("journal.sqlite.damaged-") for p in st.home.glob("journal.sqlite.*")
            if "damaged" in p.name] == [True]
    assert not (st.home / "spool" / sid).exists()
    assert _station(st, "verify", "--json", sid).returncode == 0
