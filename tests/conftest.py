"""Fixtures that hand tests the real services started by ./dev test.

* ``display``: the Xvfb display (DISPLAY is exported for the whole run).
* ``audio_sink``: the PulseAudio null sink; play into it, record from its monitor.
* ``s3``: the shared SeaweedFS server (auth enforced); ``s3_bucket``: a fresh bucket per test,
  ``s3_lock_bucket``: a fresh bucket with Object Lock (COMPLIANCE default retention).
* ``private_s3``: a SeaweedFS instance of the test's own, for stop/restart tests.
* ``keyring_service``: an isolated keyring service name on the real Secret Service.
* ``station_home``: a fresh data dir exported as STATION_HOME.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import AudioSink, S3Server, SeaweedServer, require_services, shared_s3


@pytest.fixture(scope="session")
def display() -> str:
    require_services()
    return os.environ["DISPLAY"]


@pytest.fixture(scope="session")
def audio_sink() -> AudioSink:
    require_services()
    return AudioSink(os.environ["STATION_TEST_PULSE_SINK"])


@pytest.fixture(scope="session")
def s3() -> S3Server:
    return shared_s3()


def _new_bucket(server: S3Server, object_lock: bool) -> str:
    name = "t-" + uuid.uuid4().hex[:20]
    client = server.client()
    if object_lock:
        client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        client.put_object_lock_configuration(
            Bucket=name, ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    else:
        client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_bucket(s3: S3Server) -> str:
    return _new_bucket(s3, object_lock=False)


@pytest.fixture
def s3_lock_bucket(s3: S3Server) -> str:
    return _new_bucket(s3, object_lock=True)


@pytest.fixture
def private_s3(tmp_path: Path) -> Iterator[SeaweedServer]:
    server = SeaweedServer(tmp_path / "weed")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def keyring_service(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    require_services()
    import keyring

    service = "dualrec-test-" + uuid.uuid4().hex[:12]
    monkeypatch.setenv("STATION_KEYRING_SERVICE", service)
    yield service
    for name in ("station-signing-key", "storage-access-key-id", "storage-secret-access-key",
                 "local-api-token", "reviewer-identity", "customer-hash-salt"):
        try:
            keyring.delete_password(service, name)
        except keyring.errors.PasswordDeleteError:
            pass


@pytest.fixture
def station_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("STATION_HOME", str(home))
    monkeypatch.delenv("STATION_POLICY", raising=False)
    return home
