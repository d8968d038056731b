"""Writing when the disk may fill up: whole lines or nothing, and space reserved for closing.

A real "no space left on device" can strike any write. Two rules keep what was written usable:

* an appended line (checkpoint log, audit log) is written whole or not at all: a short write is
  cut back, so a hash chain never ends in a torn line;
* a recording reserves a little space when it starts (:class:`Reserve`) and gives it back when
  the disk is full, so the segment manifests and ``session.json`` that close it out still fit.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException | None) -> bool:
    """True when ``exc`` or an exception it was raised from is ENOSPC / EDQUOT."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def append_whole(fd: int, data: bytes) -> None:
    """Append ``data`` to an O_APPEND file: all of it, or nothing (a short write is undone)."""
    start = os.fstat(fd).st_size
    off = 0
    try:
        while off < len(data):
            n = os.write(fd, data[off:])
            if n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            off += n
    except OSError:
        if off:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
        raise


class Reserve:
    """``nbytes`` of disk held in ``path`` until :meth:`release`.

    Allocation fails with OSError (ENOSPC) when the space is not there: that is the moment to
    refuse a recording, before anything else was written."""

    def __init__(self, path: Path, nbytes: int) -> None:
        self.path = Path(path)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, nbytes)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                append_whole(fd, b"\0" * nbytes)  # a file system without fallocate
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise
        os.close(fd)
        self.held = True

    def release(self) -> bool:
        """Give the space back; True if it was still held."""
        if not self.held:
            return False
        self.held = False
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        return True
