"""Errors of the uploader and the storage backends.

Same convention as :mod:`station.errors`: the docstring is the message template. ``hard`` says
whether retrying without a human changing something (credentials, policy, the bucket) is pointless;
soft errors (network, 5xx, outages) are retried with backoff.
"""

from __future__ import annotations

from station.errors import StationError


class StorageError(StationError, OSError):
    """storage error: {}"""

    hard = False


class StorageUnavailable(StorageError, ConnectionError):
    """storage unreachable or failing, will retry: {}"""


class LocalStoreMissing(StorageUnavailable):
    """local store {} does not exist (an unmounted share?): nothing was written and the spool is
    kept; mount or create it (`station policy init --store local:DIR` creates it), or fix
    storage.local_dir"""


class StorageAuthError(StorageError, PermissionError):
    """storage rejected the credentials ({}): check the keyring entries (station keys storage-set)"""

    hard = True


class StorageDenied(StorageError, PermissionError):
    """storage denied {}: {}"""

    hard = True


class StorageConfigError(StorageError, ValueError):
    """storage is not usable as configured: {}"""

    hard = True


class ObjectConflict(StorageError, FileExistsError):
    """object {!r} already exists in storage with different content ({}); it was not overwritten"""

    hard = True


class ObjectMissing(StorageError, FileNotFoundError):
    """object {!r} is not in storage"""

    hard = True


class VerifyFailed(StorageError, ValueError):
    """stored object {!r} does not match what was sent: {}"""

    hard = True


class ObjectLockRefused(StorageError, PermissionError):
    """{} has no Object Lock with COMPLIANCE default retention ({}); storage.object_lock = refuse"""

    hard = True


class SpoolCorrupt(StationError, ValueError):
    """spool file {!r} does not match its manifest: {}

    The uploader quarantines the file's session (the other sessions go on) until its files match
    the manifest again."""

    hard = True


class ManifestChanged(SpoolCorrupt):
    """spool manifest {!r} changed after its files were checked against it: {}"""


class JournalConflict(StationError, RuntimeError):
    """journal entry {!r} is in state {}, not {} as expected"""
