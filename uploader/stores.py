"""Central storage backends behind one interface: :class:`LocalFolderStore` and :class:`S3Store`.

Keys are full object keys (``<prefix>/<yyyy>/<mm>/<dd>/<station>/<session>/<file>``, see
:mod:`uploader.layout`); ``store.prefix`` is the policy prefix. Every store guarantees:

* nothing is overwritten: putting a key that exists succeeds only if the stored object is the
  same (size and SHA-256), otherwise :class:`~uploader.errors.ObjectConflict`;
* every object carries our own SHA-256 (S3 metadata ``x-amz-meta-sha256``, or a sidecar file);
* :meth:`Store.head` returns what is needed to verify an upload without downloading it.

S3 specifics: SigV4, path-style addressing for on-premises servers, Content-MD5 on every put and
part, ``If-None-Match: *`` on PutObject and CompleteMultipartUpload, multipart above a threshold
with parts kept on error (an upload is never aborted because something failed), resume from
``ListParts`` through a :class:`Checkpoint`, Object Lock status and per-object retention / legal
hold from policy, and a switch for appliances that reject flexible checksums.
"""

from __future__ import annotations

import abc
import base64
import builtins
import contextlib
import datetime as dt
import hashlib
import io
import os
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from station import logs
from station.secrets import STORAGE_ACCESS_KEY, STORAGE_SECRET_KEY
from uploader.bandwidth import LimitedStream, TokenBucket, register_transfer_signals
from uploader.errors import (
    LocalStoreMissing,
    ObjectConflict,
    ObjectLockRefused,
    ObjectMissing,
    StorageAuthError,
    StorageConfigError,
    StorageDenied,
    StorageError,
    StorageUnavailable,
    VerifyFailed,
)

log = logs.get("upload")
MiB = 1024 * 1024
READ_BYTES = 1 * MiB
S3_MAX_PARTS = 10_000


# --- digests --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Digest:
    """What we know about a local file before sending it.

    ``part_md5s`` are hex MD5s of each ``part_size`` slice (one entry, the whole file, when the
    object goes up in a single put); ``etag`` is the ETag S3 must report for it.
    """

    size: int
    sha256: str
    part_size: int  # 0: single put
    part_md5s: tuple[str, ...]

    @property
    def multipart(self) -> bool:
        return self.part_size > 0

    @property
    def etag(self) -> str:
        return expected_etag(self.part_md5s, self.multipart)


def expected_etag(part_md5s: tuple[str, ...] | list[str], multipart: bool) -> str:
    if not multipart:
        return part_md5s[0]
    joined = hashlib.md5(b"".join(bytes.fromhex(m) for m in part_md5s), usedforsecurity=False)
    return f"{joined.hexdigest()}-{len(part_md5s)}"


def choose_part_size(size: int, part_size: int) -> int:
    """The policy part size, grown if the object would need more than 10,000 parts."""
    while size > part_size * S3_MAX_PARTS:
        part_size *= 2
    return part_size


def digest_file(path: Path, part_size: int = 0) -> Digest:
    """SHA-256 of the whole file and MD5 of each ``part_size`` slice (0: of the whole file), in
    one read."""
    sha = hashlib.sha256()
    md5s: list[str] = []
    size = 0
    with open(path, "rb") as fh:
        md5 = hashlib.md5(usedforsecurity=False)
        in_part = 0
        while True:
            want = READ_BYTES if part_size <= 0 else min(READ_BYTES, part_size - in_part)
            chunk = fh.read(want)
            if not chunk:
                break
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
            in_part += len(chunk)
            if part_size > 0 and in_part == part_size:
                md5s.append(md5.hexdigest())
                md5 = hashlib.md5(usedforsecurity=False)
                in_part = 0
        if in_part or not md5s:
            md5s.append(md5.hexdigest())
    return Digest(size, sha.hexdigest(), max(part_size, 0), tuple(md5s))


def digest_bytes(data: bytes) -> Digest:
    return Digest(len(data), hashlib.sha256(data).hexdigest(), 0,
                  (hashlib.md5(data, usedforsecurity=False).hexdigest(),))


def _b64(md5_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(md5_hex)).decode("ascii")


# --- interface ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str | None  # our own SHA-256 (metadata or sidecar); None if absent
    etag: str | None = None
    last_modified: dt.datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Checkpoint(Protocol):
    """Where a multipart upload's progress is persisted (the journal); lets a restarted process
    continue with the same upload id."""

    upload_id: str | None
    part_size: int | None

    def started(self, upload_id: str, part_size: int) -> None: ...

    def part_done(self, part_number: int, md5_hex: str) -> None: ...

    def forgotten(self) -> None: ...


class Store(abc.ABC):
    """Central storage. See the module docstring for the guarantees."""

    kind: str = "?"
    prefix: str = ""

    @property
    def immutable(self) -> bool:
        """True when stored objects cannot be altered or deleted before their retention ends."""
        return False

    def plan_part_size(self, size: int) -> int:
        """Part size for an object of ``size`` bytes; 0 means a single put."""
        return 0

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/"))

    @abc.abstractmethod
    def put(self, key: str, src: Path | bytes, *, digest: Digest | None = None,
            checkpoint: Checkpoint | None = None) -> ObjectInfo:
        """Store ``src`` under ``key`` unless an identical object is already there."""

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size, SHA-256 and ETag of ``key``; None if absent."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A readable, seekable file-like over the stored object."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]: ...

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def object_lock_status(self) -> dict[str, Any]:
        return {"object_lock": False, "mode": None, "days": None, "years": None, "compliant": False}

    def check_object_lock(self, mode: str) -> dict[str, Any]:
        """Apply policy ``storage.object_lock`` (warn | refuse | ignore) to the store's status."""
        status = self.object_lock_status()
        if not status.get("compliant") and mode != "ignore":
            detail = ("Object Lock not enabled" if not status.get("object_lock")
                      else f"default retention {status.get('mode') or 'none'}")
            if mode == "refuse":
                raise ObjectLockRefused(self.describe(), detail)
            status["warning"] = (f"{self.describe()} has no Object Lock with a COMPLIANCE default "
                                 f"retention ({detail}): stored recordings can be altered or deleted")
            log.warning("%s", status["warning"])
        return status

    def verify(self, key: str, digest: Digest) -> ObjectInfo:
        """HEAD ``key`` and compare size, our SHA-256 and (when the store has ETags) the ETag."""
        info = self.head(key)
        if info is None:
            raise ObjectMissing(key)
        problems = []
        if info.size != digest.size:
            problems.append(f"size {info.size} != {digest.size}")
        if info.sha256 != digest.sha256:
            problems.append(f"sha256 {info.sha256} != {digest.sha256}")
        if info.etag is not None and info.etag != digest.etag:
            problems.append(f"etag {info.etag} != {digest.etag}")
        if problems:
            raise VerifyFailed(key, "; ".join(problems))
        return info

    def describe(self) -> str:
        return self.kind

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


def _same(info: ObjectInfo, digest: Digest) -> bool:
    return info.size == digest.size and info.sha256 == digest.sha256


# --- local folder ---------------------------------------------------------------------------
class LocalFolderStore(Store):
    """The embedded default: files under ``root``; temp file, fsync, atomic no-overwrite link,
    ``<file>.sha256`` sidecar. Not immutable (anyone with the disk can change it)."""

    kind = "local"
    SIDECAR = ".sha256"

    def __init__(self, root: Path, prefix: str = "", *, create: bool = True) -> None:
        """``create=False`` (a folder the policy names): the folder must exist, or every call
        fails softly with :class:`LocalStoreMissing` (retried): an unmounted share is never
        replaced by a folder on the seat's own disk that then "verifies" and gets the spool
        purged."""
        self.root = Path(root).absolute()
        self.prefix = prefix.strip("/")
        self._create = create
        if create:
            self.root.mkdir(parents=True, exist_ok=True)

    def _require_root(self) -> None:
        if not self._create and not self.root.is_dir():
            raise LocalStoreMissing(str(self.root))

    def describe(self) -> str:
        return f"local folder {self.root}"

    def _path(self, key: str) -> Path:
        self._require_root()
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) \
                or parts[-1].endswith(self.SIDECAR) or parts[-1].startswith(".tmp-"):
            raise StorageConfigError(f"invalid object key {key!r}")
        return self.root.joinpath(*parts)

    def put(self, key: str, src: Path | bytes, *, digest: Digest | None = None,
            checkpoint: Checkpoint | None = None) -> ObjectInfo:
        final = self._path(key)
        if digest is None:
            digest = digest_bytes(src) if isinstance(src, bytes) else digest_file(Path(src))
        existing = self.head(key)
        if existing is not None:
            if _same(existing, digest):
                return existing
            raise ObjectConflict(key, f"stored sha256 {existing.sha256}, new {digest.sha256}")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{uuid.uuid4().hex}"
        sha = hashlib.sha256()
        try:
            with open(tmp, "xb") as out:
                if isinstance(src, bytes):
                    sha.update(src)
                    out.write(src)
                else:
                    with open(src, "rb") as fh:
                        while chunk := fh.read(READ_BYTES):
                            sha.update(chunk)
                            out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if sha.hexdigest() != digest.sha256:
                raise VerifyFailed(key, f"source changed while copying (sha256 {sha.hexdigest()})")
            side_tmp = final.parent / f".tmp-{uuid.uuid4().hex}"
            with open(side_tmp, "x", encoding="ascii") as out:
                out.write(digest.sha256 + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(side_tmp, final.with_name(final.name + self.SIDECAR))
            try:
                os.link(tmp, final)  # atomic, and never replaces an existing file
            except FileExistsError:
                existing = self.head(key)
                if existing is None or not _same(existing, digest):
                    raise ObjectConflict(key, "written concurrently with different content") from None
            _fsync_dir(final.parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        info = self.head(key)
        assert info is not None
        return info

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        try:
            sha = path.with_name(path.name + self.SIDECAR).read_text("ascii").strip() or None
        except FileNotFoundError:
            sha = None
        return ObjectInfo(key, st.st_size, sha, None,
                          dt.datetime.fromtimestamp(st.st_mtime, tz=dt.UTC))

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        self._require_root()
        out = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.endswith(self.SIDECAR) or name.startswith(".tmp-"):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    info = self.head(key)
                    if info is not None:
                        out.append(info)
        return sorted(out, key=lambda i: i.key)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- S3 -------------------------------------------------------------------------------------
AUTH_CODES = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken",
              "AuthorizationHeaderMalformed", "InvalidSecurity", "TokenRefreshRequired"}
CONFIG_CODES = {"NoSuchBucket", "InvalidBucketName", "PermanentRedirect", "AuthorizationQueryParametersError",
                "InvalidRequest", "MalformedXML", "InvalidArgument", "EntityTooSmall"}
LOCK_ABSENT_CODES = {"ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration",
                     "ObjectLockConfigurationNotFound", "InvalidBucketState"}


def _code(exc: Exception) -> str:
    resp = getattr(exc, "response", None) or {}
    return str(resp.get("Error", {}).get("Code") or "")


def _status(exc: Exception) -> int:
    resp = getattr(exc, "response", None) or {}
    return int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def map_error(exc: Exception, what: str) -> StorageError:
    """Turn a botocore/urllib3 exception into a soft or hard :class:`StorageError`."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, ClientError):
        code, status = _code(exc), _status(exc)
        if code in AUTH_CODES:
            return StorageAuthError(code)
        if code in ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"):
            return VerifyFailed(what, f"{code}: the server received bytes that do not match the "
                                "hash taken from the spool (file changed or corrupted in transit)")
        if code in ("AccessDenied", "Forbidden") or status == 403:
            return StorageDenied(what, code or "403")
        if code in CONFIG_CODES:
            return StorageConfigError(f"{what}: {code}: {exc.response.get('Error', {}).get('Message', '')}")
        return StorageUnavailable(f"{what}: {code or status}")
    if isinstance(exc, BotoCoreError | OSError):
        return StorageUnavailable(f"{what}: {type(exc).__name__}: {exc}")
    return StorageUnavailable(f"{what}: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str = "us-east-1"
    path_style: bool = True
    flexible_checksums: bool = True
    part_size_bytes: int = 8 * MiB
    multipart_threshold_bytes: int = 16 * MiB
    concurrency: int = 2
    retention_days: int = 0
    legal_hold: bool = False
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    botocore_attempts: int = 2  # per request; the uploader's own backoff does the rest


class S3Store(Store):
    """S3-compatible object storage through boto3 (see the module docstring)."""

    kind = "s3"

    def __init__(self, settings: S3Settings, access_key: str, secret_key: str,
                 limiter: TokenBucket | None = None) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix.strip("/")
        self.limiter = limiter
        when = "when_supported" if settings.flexible_checksums else "when_required"
        cfg = Config(signature_version="s3v4", region_name=settings.region,
                     s3={"addressing_style": "path" if settings.path_style else "auto"},
                     retries={"mode": "standard", "max_attempts": settings.botocore_attempts},
                     connect_timeout=settings.connect_timeout_s, read_timeout=settings.read_timeout_s,
                     max_pool_connections=2 * settings.concurrency + 4, tcp_keepalive=True,
                     request_checksum_calculation=when, response_checksum_validation=when)
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=settings.endpoint or None, aws_access_key_id=access_key,
            aws_secret_access_key=secret_key, config=cfg)
        if limiter is not None:
            register_transfer_signals(self.client)
        self._parts_pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="s3-part")
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()  # requests made, by kind (for stats and tests)
        self._lock_status: dict[str, Any] | None = None

    def describe(self) -> str:
        return f"bucket {self.bucket}" + (f" at {self.settings.endpoint}" if self.settings.endpoint else "")

    @property
    def immutable(self) -> bool:
        return bool((self._lock_status or {}).get("compliant"))

    def close(self) -> None:
        self._parts_pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()

    def plan_part_size(self, size: int) -> int:
        if size <= self.settings.multipart_threshold_bytes:
            return 0
        return choose_part_size(size, self.settings.part_size_bytes)

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counters[what] += n

    # --- object lock ------------------------------------------------------------------------
    def object_lock_status(self) -> dict[str, Any]:
        try:
            conf = self.client.get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
        except ClientError as exc:
            if _code(exc) in LOCK_ABSENT_CODES or (_status(exc) == 404 and _code(exc) != "NoSuchBucket"):
                status = {"object_lock": False, "mode": None, "days": None, "years": None,
                          "compliant": False}
                self._lock_status = status
                return dict(status)
            raise map_error(exc, f"reading the Object Lock configuration of {self.bucket}") from None
        except Exception as exc:
            raise map_error(exc, f"reading the Object Lock configuration of {self.bucket}") from None
        retention = (conf.get("Rule") or {}).get("DefaultRetention") or {}
        enabled = conf.get("ObjectLockEnabled") == "Enabled"
        status = {"object_lock": enabled, "mode": retention.get("Mode"), "days": retention.get("Days"),
                  "years": retention.get("Years"),
                  "compliant": enabled and retention.get("Mode") == "COMPLIANCE"}
        self._lock_status = status
        return dict(status)

    def _lock_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.settings.retention_days > 0:
            args["ObjectLockMode"] = "COMPLIANCE"
            args["ObjectLockRetainUntilDate"] = (dt.datetime.now(dt.UTC)
                                                 + dt.timedelta(days=self.settings.retention_days))
        if self.settings.legal_hold:
            args["ObjectLockLegalHoldStatus"] = "ON"
        return args

    # --- reads ------------------------------------------------------------------------------
    def head(self, key: str) -> ObjectInfo | None:
        try:
            r = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _status(exc) == 404 or _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise map_error(exc, f"HEAD {key}") from None
        except Exception as exc:
            raise map_error(exc, f"HEAD {key}") from None
        finally:
            self._count("head")
        extra = {k: r.get(k) for k in ("ObjectLockMode", "ObjectLockRetainUntilDate",
                                       "ObjectLockLegalHoldStatus", "VersionId") if r.get(k)}
        return ObjectInfo(key, int(r["ContentLength"]), (r.get("Metadata") or {}).get("sha256"),
                          str(r.get("ETag", "")).strip('"') or None, r.get("LastModified"), extra)

    def get(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def open(self, key: str) -> BinaryIO:
        info = self.head(key)
        if info is None:
            raise ObjectMissing(key)
        return io.BufferedReader(_RangeReader(self, key, info.size), buffer_size=4 * MiB)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for o in page.get("Contents", []):
                    out.append(ObjectInfo(o["Key"], int(o["Size"]), None,
                                          str(o.get("ETag", "")).strip('"') or None, o.get("LastModified")))
        except Exception as exc:
            raise map_error(exc, f"listing {prefix or '/'}") from None
        return out

    def all_versions(self, prefix: str, max_bytes: int = 64 * 1024,
                     limit: int = 10_000) -> builtins.list[tuple[str, bytes]]:
        """``(key, body)`` of every stored version (not delete markers) of the small objects under
        ``prefix``: with Object Lock, a revocation that was deleted or overwritten by a new
        version is still there, and still counts (station/enrolment.py)."""
        out: builtins.list[tuple[str, bytes]] = []
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for v in page.get("Versions", []):
                    if int(v.get("Size", 0)) > max_bytes or len(out) >= limit:
                        continue
                    r = self.client.get_object(Bucket=self.bucket, Key=v["Key"],
                                               VersionId=v["VersionId"])
                    out.append((v["Key"], r["Body"].read()))
        except Exception as exc:
            raise map_error(exc, f"listing versions of {prefix or '/'}") from None
        return out

    # --- writes -----------------------------------------------------------------------------
    def put(self, key: str, src: Path | bytes, *, digest: Digest | None = None,
            checkpoint: Checkpoint | None = None) -> ObjectInfo:
        if isinstance(src, bytes):
            digest = digest or digest_bytes(src)
            if digest.multipart:
                raise ValueError("bytes are always sent in a single put")
            return self._put_single(key, src, digest)
        path = Path(src)
        if digest is None:
            part = self.plan_part_size(path.stat().st_size)
            if checkpoint is not None and checkpoint.upload_id and checkpoint.part_size:
                part = checkpoint.part_size
            digest = digest_file(path, part)
        if digest.multipart:
            return self._put_multipart(key, path, digest, checkpoint)
        return self._put_single(key, path, digest)

    def _body(self, data: bytes) -> Any:
        return LimitedStream(io.BytesIO(data), self.limiter) if self.limiter is not None else data

    def _put_single(self, key: str, src: Path | bytes, digest: Digest) -> ObjectInfo:
        with contextlib.ExitStack() as stack:
            if isinstance(src, bytes):
                size, body = len(src), self._body(src)
            else:  # streamed from the file (seekable, so botocore can retry), never read whole
                fh = stack.enter_context(open(src, "rb"))
                size = os.fstat(fh.fileno()).st_size
                body = LimitedStream(fh, self.limiter) if self.limiter is not None else fh
            if size != digest.size:
                raise VerifyFailed(key, f"local file is {size} bytes, hashed {digest.size}")
            try:
                self._count("put")
                r = self.client.put_object(Bucket=self.bucket, Key=key, Body=body,
                                           ContentMD5=_b64(digest.part_md5s[0]), IfNoneMatch="*",
                                           ContentLength=size, Metadata={"sha256": digest.sha256},
                                           ContentType="application/octet-stream", **self._lock_args())
            except ClientError as exc:
                if _status(exc) == 412 or _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                    return self._existing(key, digest)
                raise map_error(exc, f"PUT {key}") from None
            except Exception as exc:
                raise map_error(exc, f"PUT {key}") from None
        return ObjectInfo(key, digest.size, digest.sha256, str(r.get("ETag", "")).strip('"') or None)

    def _existing(self, key: str, digest: Digest) -> ObjectInfo:
        """The key exists: fine if it is our object (a retried request), a conflict otherwise."""
        info = self.head(key)
        if info is None:
            raise StorageUnavailable(f"{key}: precondition failed but the object is not visible yet")
        if not _same(info, digest):
            raise ObjectConflict(key, f"stored size {info.size} sha256 {info.sha256}")
        log.info("%s already stored with the same content", key)
        return info

    def _list_parts(self, key: str, upload_id: str) -> dict[int, tuple[str, int]]:
        parts: dict[int, tuple[str, int]] = {}
        marker = 0
        while True:
            self._count("list_parts")
            r = self.client.list_parts(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                       PartNumberMarker=marker)
            for p in r.get("Parts", []):
                parts[int(p["PartNumber"])] = (str(p["ETag"]).strip('"'), int(p["Size"]))
            if not r.get("IsTruncated"):
                return parts
            marker = int(r["NextPartNumberMarker"])

    def _put_multipart(self, key: str, path: Path, digest: Digest,
                       checkpoint: Checkpoint | None) -> ObjectInfo:
        n_parts = len(digest.part_md5s)
        upload_id = checkpoint.upload_id if checkpoint is not None else None
        held: dict[int, tuple[str, int]] = {}
        if upload_id:
            if checkpoint is not None and checkpoint.part_size != digest.part_size:
                raise ValueError(f"{key}: resume with part size {digest.part_size}, "
                                 f"upload has {checkpoint.part_size}")
            try:
                held = self._list_parts(key, upload_id)
            except ClientError as exc:
                if _code(exc) != "NoSuchUpload":
                    raise map_error(exc, f"ListParts {key}") from None
                info = self.head(key)
                if info is not None:
                    return self._existing(key, digest)
                log.warning("%s: upload %s is gone from the server, starting again", key, upload_id)
                upload_id = None
                if checkpoint is not None:
                    checkpoint.forgotten()
            except Exception as exc:
                raise map_error(exc, f"ListParts {key}") from None
        if not upload_id:
            try:
                self._count("create_multipart")
                upload_id = str(self.client.create_multipart_upload(
                    Bucket=self.bucket, Key=key, Metadata={"sha256": digest.sha256},
                    ContentType="application/octet-stream", **self._lock_args())["UploadId"])
            except Exception as exc:
                raise map_error(exc, f"CreateMultipartUpload {key}") from None
            if checkpoint is not None:
                try:
                    checkpoint.started(upload_id, digest.part_size)
                except BaseException:
                    # not journaled (e.g. another uploader took the entry): this empty upload of
                    # ours would be unknown to everyone, so take it back now
                    with contextlib.suppress(Exception):
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                    raise
        sizes = [min(digest.part_size, digest.size - i * digest.part_size) for i in range(n_parts)]
        missing = [n for n in range(1, n_parts + 1)
                   if held.get(n) != (digest.part_md5s[n - 1], sizes[n - 1])]
        if held:
            log.info("%s: resuming upload, server holds %d of %d parts, sending %d",
                     key, n_parts - len(missing), n_parts, len(missing))
        futures: list[Future[None]] = [
            self._parts_pool.submit(self._send_part, key, path, upload_id, n, digest, checkpoint)
            for n in missing]
        done, not_done = wait(futures, return_when=FIRST_EXCEPTION)
        errors = [f.exception() for f in done if f.exception() is not None]
        if errors:
            for f in not_done:
                f.cancel()
            wait(not_done)  # parts in flight finish; they are kept for the resume
            err = errors[0]
            assert isinstance(err, Exception)
            raise map_error(err, f"UploadPart {key}")
        parts = [{"PartNumber": n, "ETag": f'"{digest.part_md5s[n - 1]}"'} for n in range(1, n_parts + 1)]
        try:
            self._count("complete")
            r = self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts},
                IfNoneMatch="*")
        except ClientError as exc:
            if _status(exc) == 412 or _code(exc) in ("PreconditionFailed", "NoSuchUpload"):
                info = self._existing(key, digest)
                if _code(exc) != "NoSuchUpload":
                    with contextlib.suppress(Exception):  # our redundant copy; the object is safe
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                return info
            raise map_error(exc, f"CompleteMultipartUpload {key}") from None
        except Exception as exc:
            raise map_error(exc, f"CompleteMultipartUpload {key}") from None
        return ObjectInfo(key, digest.size, digest.sha256, str(r.get("ETag", "")).strip('"') or None)

    def _send_part(self, key: str, path: Path, upload_id: str, n: int, digest: Digest,
                   checkpoint: Checkpoint | None) -> None:
        with open(path, "rb") as fh:
            fh.seek((n - 1) * digest.part_size)
            data = fh.read(digest.part_size)
        expect = min(digest.part_size, digest.size - (n - 1) * digest.part_size)
        if len(data) != expect:
            raise VerifyFailed(key, f"local part {n} is {len(data)} bytes, hashed {expect}")
        # Content-MD5 is the MD5 from the hash pass: if the file changed since, the server refuses
        # the part (BadDigest) instead of storing bytes that do not match our SHA-256
        md5 = digest.part_md5s[n - 1]
        self._count("upload_part")
        try:
            self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=n,
                                    Body=self._body(data), ContentMD5=_b64(md5), ContentLength=len(data))
        except Exception as exc:
            raise map_error(exc, f"UploadPart {key} #{n}") from None
        self._count("part_bytes", len(data))
        if checkpoint is not None:
            checkpoint.part_done(n, md5)

    def abort_orphans(self, key: str) -> int:
        """Abort leftover multipart uploads of ``key`` once the object itself is verified (uploads
        whose creation answer was lost on the network). Never called on failure."""
        n = 0
        try:
            r = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
            for u in r.get("Uploads", []):
                if u["Key"] == key:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=u["UploadId"])
                    n += 1
        except Exception as exc:
            log.info("could not list or abort leftover uploads of %s: %s", key, exc)
        return n


class _RangeReader(io.RawIOBase):
    """Seekable raw reader over an S3 object using ranged GETs."""

    def __init__(self, store: S3Store, key: str, size: int) -> None:
        self._store, self._key, self._size, self._pos = store, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buf: Any) -> int:
        want = min(len(buf), self._size - self._pos)
        if want <= 0:
            return 0
        try:
            r = self._store.client.get_object(Bucket=self._store.bucket, Key=self._key,
                                              Range=f"bytes={self._pos}-{self._pos + want - 1}")
            data = r["Body"].read()
        except Exception as exc:
            raise map_error(exc, f"GET {self._key}") from None
        n = len(data)
        buf[:n] = data
        self._pos += n
        return n


# --- factory --------------------------------------------------------------------------------
def bandwidth_bytes_s(kbps: int) -> float | None:
    return None if kbps <= 0 else kbps * 1000 / 8


def s3_settings(policy: Any) -> S3Settings:
    st, up = policy.storage, policy.upload
    if not st.s3_bucket:
        raise StorageConfigError("storage.kind is 's3' but storage.s3_bucket is empty "
                                 "(station policy init --store s3://BUCKET/PREFIX --endpoint URL)")
    return S3Settings(bucket=st.s3_bucket, prefix=st.s3_prefix, endpoint=st.s3_endpoint or None,
                      region=st.s3_region, path_style=st.s3_path_style,
                      flexible_checksums=st.s3_flexible_checksums,
                      part_size_bytes=up.part_size_mb * MiB,
                      multipart_threshold_bytes=up.multipart_threshold_mb * MiB,
                      concurrency=up.concurrency, retention_days=st.retention_days,
                      legal_hold=st.legal_hold)


def open_store(policy: Any, secrets: Any, data_dir: Path, *,
               limiter: TokenBucket | None = None) -> Store:
    """The store the policy names: local folder (``storage.local_dir`` or ``<data>/store``) or S3
    with credentials from the keyring."""
    if policy.storage.kind == "local":  # a folder the policy names must exist (a mounted share)
        if policy.storage.local_dir:
            return LocalFolderStore(Path(policy.storage.local_dir), create=False)
        return LocalFolderStore(Path(data_dir) / "store")
    hint = "set it with: station keys storage-set"
    access = secrets.require(STORAGE_ACCESS_KEY, hint)
    secret = secrets.require(STORAGE_SECRET_KEY, hint)
    return S3Store(s3_settings(policy), access, secret, limiter=limiter)


def make_limiter(rate: Callable[[], float | None], **kw: Any) -> TokenBucket:
    return TokenBucket(rate, **kw)
