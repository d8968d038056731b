"""Storage backends against the real things: a local folder and SeaweedFS with auth enforced."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path

import pytest

from station.secrets import STORAGE_ACCESS_KEY, STORAGE_SECRET_KEY, SecretStore
from tests.services import S3Server
from tests.uploadkit import MiB, all_versions, s3_policy
from uploader.errors import (
    ObjectConflict,
    ObjectLockRefused,
    StorageAuthError,
    StorageConfigError,
    VerifyFailed,
)
from uploader.stores import (
    Digest,
    LocalFolderStore,
    S3Store,
    digest_bytes,
    digest_file,
    open_store,
    s3_settings,
)

pytestmark = pytest.mark.integration


def _store(s3: S3Server, bucket: str, **over: object) -> S3Store:
    return S3Store(s3_settings(s3_policy(s3, bucket, **over)), s3.access_key, s3.secret_key)


# --- local folder -----------------------------------------------------------------------------
def test_local_store_puts_atomically_with_sidecar_and_never_overwrites(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "store")
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(100_000))
    info = store.put("2026/11/24/s/x/a.bin", src)
    assert info.size == 100_000 and info.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert store.get("2026/11/24/s/x/a.bin") == src.read_bytes()
    assert store.put("2026/11/24/s/x/a.bin", src).sha256 == info.sha256  # same content: fine
    with pytest.raises(ObjectConflict, match="already exists"):
        store.put("2026/11/24/s/x/a.bin", b"other bytes")
    assert store.get("2026/11/24/s/x/a.bin") == src.read_bytes()
    assert [i.key for i in store.list("2026/")] == ["2026/11/24/s/x/a.bin"]
    leftovers = [p.name for p in (tmp_path / "store").rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == [] and not store.immutable
    with store.open("2026/11/24/s/x/a.bin") as fh:
        fh.seek(50_000)
        assert fh.read(10) == src.read_bytes()[50_000:50_010]
    store.verify("2026/11/24/s/x/a.bin", digest_file(src))
    with pytest.raises(VerifyFailed, match="sha256"):
        store.verify("2026/11/24/s/x/a.bin", digest_bytes(b"y" * 100_000))
    with pytest.raises(Exception, match="invalid object key"):
        store.put("../escape", b"x")


# --- S3 ---------------------------------------------------------------------------------------
def test_s3_put_carries_md5_and_sha256_and_head_verifies_it(s3: S3Server, s3_bucket: str) -> None:
    store = _store(s3, s3_bucket)
    data = os.urandom(300_000)
    info = store.put("p/a", data)
    head = store.head("p/a")
    assert head is not None and head.size == len(data)
    assert head.sha256 == hashlib.sha256(data).hexdigest()
    assert head.etag == hashlib.md5(data, usedforsecurity=False).hexdigest() == info.etag
    store.verify("p/a", digest_bytes(data))
    assert store.get("p/a") == data
    with store.open("p/a") as fh:
        fh.seek(123_456)
        assert fh.read(1000) == data[123_456:124_456]
    assert store.head("p/missing") is None and not store.exists("p/missing")


def test_s3_never_overwrites_a_different_object_and_accepts_an_identical_retry(
        s3: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    store = _store(s3, s3_bucket)
    data = os.urandom(50_000)
    store.put("p/a", data)
    store.put("p/a", data)  # a retried request whose first answer was lost
    with pytest.raises(ObjectConflict, match="not overwritten"):
        store.put("p/a", os.urandom(50_000))
    big = tmp_path / "big"
    big.write_bytes(os.urandom(11 * MiB))
    store.put("p/m", big)
    with pytest.raises(ObjectConflict):
        other = tmp_path / "other"
        other.write_bytes(os.urandom(11 * MiB))
        store.put("p/m", other)
    assert store.get("p/a") == data
    assert all_versions(s3, s3_bucket, "p/") == {"p/a": 1, "p/m": 1}


def test_s3_multipart_etag_is_the_md5_of_part_md5s(s3: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    store = _store(s3, s3_bucket, upload__concurrency=3)
    src = tmp_path / "f"
    src.write_bytes(os.urandom(12 * MiB + 17))
    digest = digest_file(src, store.plan_part_size(src.stat().st_size))
    assert digest.multipart and len(digest.part_md5s) == 3
    store.put("p/f", src, digest=digest)
    head = store.verify("p/f", digest)
    assert head.etag == digest.etag and head.etag.endswith("-3")  # type: ignore[union-attr]
    assert store.counters["upload_part"] == 3
    # a lying digest (another file's parts) does not pass verification
    fake = Digest(digest.size, digest.sha256, digest.part_size, tuple(reversed(digest.part_md5s)))
    with pytest.raises(VerifyFailed, match="etag"):
        store.verify("p/f", fake)


def test_s3_with_flexible_checksums_off_still_sends_content_md5(s3: S3Server, s3_bucket: str,
                                                               tmp_path: Path) -> None:
    store = _store(s3, s3_bucket, storage__s3_flexible_checksums=False)
    src = tmp_path / "f"
    src.write_bytes(os.urandom(6 * MiB))
    store.put("p/f", src)
    store.verify("p/f", digest_file(src, store.plan_part_size(src.stat().st_size)))


def test_wrong_secret_key_is_a_clear_credentials_error(s3: S3Server, s3_bucket: str) -> None:
    store = S3Store(s3_settings(s3_policy(s3, s3_bucket)), s3.access_key, "wrong" + s3.secret_key[5:])
    with pytest.raises(StorageAuthError, match="rejected the credentials"):
        store.put("p/a", b"data")
    with pytest.raises(StorageAuthError):
        store.object_lock_status()
    assert all_versions(s3, s3_bucket) == {}


def test_object_lock_bucket_reports_compliance_and_sets_retention_and_legal_hold(
        s3: S3Server, s3_lock_bucket: str) -> None:
    store = _store(s3, s3_lock_bucket, storage__retention_days=3, storage__legal_hold=True,
                   storage__object_lock="refuse")
    status = store.check_object_lock("refuse")
    assert status["compliant"] and status["mode"] == "COMPLIANCE" and status["days"] == 1
    assert store.immutable
    store.put("p/a", b"locked bytes")
    head = store.head("p/a")
    assert head is not None and head.extra["ObjectLockMode"] == "COMPLIANCE"
    assert head.extra["ObjectLockLegalHoldStatus"] == "ON"
    until = head.extra["ObjectLockRetainUntilDate"]
    assert dt.timedelta(days=2.9) < until - dt.datetime.now(dt.UTC) < dt.timedelta(days=3.1)
    client = s3.client()
    with pytest.raises(Exception):  # noqa: B017 - the server refuses; any error class will do
        client.delete_object(Bucket=s3_lock_bucket, Key="p/a", VersionId=head.extra["VersionId"])


def test_bucket_without_object_lock_warns_or_refuses_per_policy(s3: S3Server, s3_bucket: str) -> None:
    store = _store(s3, s3_bucket)
    assert store.object_lock_status()["object_lock"] is False
    warned = store.check_object_lock("warn")
    assert "no Object Lock" in warned["warning"] and not store.immutable
    with pytest.raises(ObjectLockRefused, match="refuse"):
        store.check_object_lock("refuse")
    assert "warning" not in store.check_object_lock("ignore")


def test_open_store_reads_policy_and_keyring(s3: S3Server, s3_bucket: str, keyring_service: str,
                                             tmp_path: Path) -> None:
    secrets = SecretStore()
    pol = s3_policy(s3, s3_bucket)
    with pytest.raises(Exception, match="storage-set"):
        open_store(pol, secrets, tmp_path)
    secrets.set(STORAGE_ACCESS_KEY, s3.access_key)
    secrets.set(STORAGE_SECRET_KEY, s3.secret_key)
    store = open_store(pol, secrets, tmp_path)
    assert isinstance(store, S3Store) and store.prefix == "dualrec"
    store.put(store.key("audit", "x.json"), b"{}")
    assert [i.key for i in store.list("dualrec/audit/")] == ["dualrec/audit/x.json"]
    local = open_store(pol.replace(storage__kind="local"), secrets, tmp_path)
    assert isinstance(local, LocalFolderStore) and local.root == tmp_path / "store"


def test_missing_bucket_is_a_hard_configuration_error(s3: S3Server) -> None:
    store = _store(s3, "no-such-bucket-here")
    with pytest.raises(StorageConfigError, match="NoSuchBucket"):
        store.check_object_lock("warn")  # the uploader checks this before any put
