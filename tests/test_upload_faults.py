"""Fault tests of the uploader against real SeaweedFS: each ends with every object present exactly
once, verified, and nothing purged that was not verified.

* the uploader process SIGKILLed in the middle of a multipart upload, then restarted;
* the S3 server stopped for 30 s in the middle of an upload, then restarted;
* a loopback proxy that drops connections, cuts requests mid-body and answers 500 at random.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from station.policy import Policy
from station.secrets import STORAGE_ACCESS_KEY, STORAGE_SECRET_KEY, SecretStore
from tests.services import REPO, S3Server, SeaweedServer
from tests.uploadkit import MiB, all_versions, s3_policy, sealed_session, write_policy
from uploader.bandwidth import TokenBucket
from uploader.journal import PURGED, Journal
from uploader.service import Uploader
from uploader.stores import S3Store, s3_settings

pytestmark = pytest.mark.integration


def _make_uploader(server: S3Server, pol: Policy, home: Path) -> Uploader:
    store = S3Store(s3_settings(pol), server.access_key, server.secret_key)
    return Uploader(store, Journal(home / "journal.sqlite"), home / "spool", pol)


def _assert_all_stored_once_and_purged(server: S3Server, bucket: str, home: Path,
                                       sessions: list[Path], expected_objects: int) -> None:
    versions = all_versions(server, bucket)
    assert len(versions) == expected_objects and set(versions.values()) == {1}
    j = Journal(home / "journal.sqlite")
    try:
        assert {e.state for e in j.entries()} == {PURGED}
        for e in j.entries():  # every purged object is in storage with its size and hash
            head = server.client().head_object(Bucket=bucket, Key=e.key)
            assert head["ContentLength"] == e.size and head["Metadata"]["sha256"] == e.sha256
    finally:
        j.close()
    assert not any(s.exists() for s in sessions)
    assert not server.client().list_multipart_uploads(Bucket=bucket).get("Uploads")


def _journal_row(db: Path, suffix: str) -> dict[str, Any] | None:
    if not db.exists():
        return None
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        con.row_factory = sqlite3.Row
        row = con.execute("SELECT * FROM objects WHERE key LIKE ?", ("%" + suffix,)).fetchone()
        return dict(row) if row else None
    except sqlite3.OperationalError:
        return None
    finally:
        con.close()


def test_uploader_killed_mid_multipart_resumes_sending_only_missing_parts(
        s3: S3Server, s3_lock_bucket: str, keyring_service: str, station_home: Path) -> None:
    sd = sealed_session(station_home / "spool", segments=1, media_bytes=30 * MiB)
    pol = s3_policy(s3, s3_lock_bucket, upload__bandwidth_kbps=40_000, upload__concurrency=2)
    policy_file = write_policy(station_home.parent / "policy.toml", pol)
    SecretStore().set(STORAGE_ACCESS_KEY, s3.access_key)
    SecretStore().set(STORAGE_SECRET_KEY, s3.secret_key)
    env = {**os.environ, "STATION_HOME": str(station_home), "STATION_POLICY": str(policy_file)}
    proc = subprocess.Popen([sys.executable, "-m", "station.cli", "upload", "--drain", "--quiet"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = station_home / "journal.sqlite"
    deadline = time.monotonic() + 60
    row = None
    while time.monotonic() < deadline and proc.poll() is None:
        row = _journal_row(db, "media.drseg")
        if row and row["state"] == "UPLOADING" and len(eval_parts(row)) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert row is not None
    key, upload_id = row["key"], row["upload_id"]
    held = s3.client().list_parts(Bucket=s3_lock_bucket, Key=key, UploadId=upload_id).get("Parts", [])
    total_parts = len(eval_md5s(row))
    journaled = set(eval_parts(_journal_row(db, "media.drseg") or {}))
    assert total_parts == -(-row["size"] // (5 * MiB)) and 2 <= len(held) < total_parts
    assert journaled <= {p["PartNumber"] for p in held}  # the journal never claims more than the server

    # restart behind a counting proxy (no faults): what reaches the server is observed on the wire
    proxy = FaultyProxy(int(s3.endpoint.rsplit(":", 1)[1]), seed=0, max_faults=0)
    via = S3Server(f"http://127.0.0.1:{proxy.port}", s3.access_key, s3.secret_key)
    try:
        up = _make_uploader(via, pol.replace(upload__bandwidth_kbps=0,
                                             storage__s3_endpoint=via.endpoint), station_home)
        result = up.drain()
        assert result["error"] is None
    finally:
        proxy.close()
    missing = set(range(1, total_parts + 1)) - {p["PartNumber"] for p in held}
    assert sorted(proxy.part_numbers) == sorted(missing)  # only the missing parts were sent
    counters = up.store.counters  # type: ignore[attr-defined]
    assert counters["upload_part"] == len(missing)
    assert counters["create_multipart"] == 0 and counters["list_parts"] >= 1
    up.close()
    _assert_all_stored_once_and_purged(s3, s3_lock_bucket, station_home, [sd], 5)


def eval_parts(row: dict[str, Any]) -> dict[int, str]:
    return {int(k): v for k, v in json.loads(row.get("parts") or "{}").items()}


def eval_md5s(row: dict[str, Any]) -> list[str]:
    return list(json.loads(row.get("md5s") or "[]"))


def test_s3_server_down_for_30_s_mid_upload_then_back_loses_and_duplicates_nothing(
        private_s3: SeaweedServer, station_home: Path) -> None:
    server = private_s3.info()
    bucket = "outage"
    server.client().create_bucket(Bucket=bucket)
    sessions = [sealed_session(station_home / "spool", segments=2, media_bytes=8 * MiB)
                for _ in range(2)]
    pol = s3_policy(server, bucket, upload__bandwidth_kbps=40_000, storage__object_lock="ignore")
    store = S3Store(s3_settings(pol), server.access_key, server.secret_key,
                    limiter=TokenBucket(lambda: 5e6))  # slow enough to be mid-upload at the cut
    events: list[dict[str, Any]] = []
    up = Uploader(store, Journal(station_home / "journal.sqlite"), station_home / "spool", pol,
                  on_event=events.append)
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.update(up.drain(timeout_s=150)))
    t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(e["event"] == "verified" for e in events):
        time.sleep(0.05)
    assert t.is_alive(), out
    private_s3.stop()
    stopped_at = time.monotonic()
    time.sleep(30)
    failures_during_outage = sum(1 for e in events if e["event"] == "failed")
    private_s3.start()
    t.join(160)
    assert not t.is_alive()
    assert out["error"] is None, out
    assert failures_during_outage >= 1 and time.monotonic() - stopped_at >= 30
    up.close()
    _assert_all_stored_once_and_purged(server, bucket, station_home, sessions, 2 * 9)


PART_RE = re.compile(rb"^PUT /[^ ]*[?&]partNumber=(\d+)[& ]", re.MULTILINE)


class FaultyProxy:
    """A loopback TCP proxy that, for a bounded number of connections, drops them at once, cuts
    them after a random number of request bytes, or answers HTTP 500."""

    def __init__(self, target_port: int, seed: int, max_faults: int = 12, p_fault: float = 0.5) -> None:
        self.target_port = target_port
        self.rng = random.Random(seed)
        self.max_faults = max_faults
        self.p_fault = p_fault
        self.faults: Counter[str] = Counter()
        self.connections = 0
        self.part_numbers: list[int] = []  # UploadPart requests seen on the wire
        self._first = ["500", "drop", "cut", "500", "cut"]
        self._lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self.sock.close()

    def _decide(self) -> tuple[str, int]:
        with self._lock:
            self.connections += 1
            if sum(self.faults.values()) >= self.max_faults:
                return "pass", 0
            if self._first:  # every kind at least once, then at random
                kind = self._first.pop(0)
            elif self.rng.random() >= self.p_fault:
                return "pass", 0
            else:
                kind = self.rng.choice(["drop", "cut", "500"])
            self.faults[kind] += 1
            return kind, self.rng.randint(200, 3 * MiB)

    def _serve(self) -> None:
        while not self._closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        kind, cut = self._decide()
        if kind == "drop":
            client.close()
            return
        if kind == "500":
            client.settimeout(5)
            buf = b""
            try:
                while b"\r\n\r\n" not in buf:
                    chunk = client.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                body = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
                client.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n"
                               b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            client.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            client.close()
            return
        limit = cut if kind == "cut" else None

        def pump(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
            sent = 0
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    if src is client:
                        for m in PART_RE.finditer(data):
                            with self._lock:
                                self.part_numbers.append(int(m.group(1)))
                    if limit is not None and sent + len(data) >= limit:
                        break
                    dst.sendall(data)
                    sent += len(data)
            except OSError:
                pass
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

        threading.Thread(target=pump, args=(client, upstream, limit), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client, None), daemon=True).start()


def test_proxy_dropping_connections_and_answering_500_at_random_loses_and_duplicates_nothing(
        s3: S3Server, s3_lock_bucket: str, station_home: Path) -> None:
    port = int(s3.endpoint.rsplit(":", 1)[1])
    proxy = FaultyProxy(port, seed=int(os.environ.get("STATION_TEST_PROXY_SEED", "5")), max_faults=14,
                        p_fault=0.6)
    try:
        sessions = [sealed_session(station_home / "spool", segments=2, media_bytes=size)
                    for size in (11 * MiB, 300_000)]
        via_proxy = S3Server(f"http://127.0.0.1:{proxy.port}", s3.access_key, s3.secret_key)
        pol = s3_policy(via_proxy, s3_lock_bucket, upload__concurrency=3)
        up = _make_uploader(via_proxy, pol, station_home)
        result = up.drain(timeout_s=120)
        assert result["error"] is None, result
        up.close()
    finally:
        proxy.close()
    assert set(proxy.faults) == {"drop", "cut", "500"} and proxy.connections > sum(proxy.faults.values())
    _assert_all_stored_once_and_purged(s3, s3_lock_bucket, station_home, sessions, 2 * 9)
