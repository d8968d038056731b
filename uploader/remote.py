"""Read sessions back from central storage: the ``station verify --remote`` session source.

:class:`RemoteSource` implements ``station.crypto.verify.SessionSource`` over any
:class:`~uploader.stores.Store`; :func:`find_session_folder` locates a session by its id under
``<prefix>/<yyyy>/<mm>/<dd>/`` (the station part of the key is not known in advance).
"""

from __future__ import annotations

import argparse
from typing import Any, BinaryIO

from station.errors import StationError
from uploader import layout
from uploader.stores import Store, open_store

REMOTE_OPTION: tuple[tuple[str, ...], dict[str, Any]] = (
    ("--remote",), {"action": "store_true",
                    "help": "read the session only from the policy's central storage"})


class RemoteSessionNotFound(StationError, LookupError):
    """session {!r} is not in central storage ({})"""


class RemoteSource:
    """A session folder in a store, read-only."""

    def __init__(self, store: Store, folder: str) -> None:
        self.store = store
        self.folder = folder.rstrip("/")
        self.label = f"{store.describe()}:{self.folder}"
        self._names: list[str] | None = None

    def list(self) -> list[str]:
        if self._names is None:
            base = self.folder + "/"
            self._names = sorted(i.key[len(base):] for i in self.store.list(base)
                                 if "/" not in i.key[len(base):])
        return list(self._names)

    def read_bytes(self, name: str) -> bytes:
        return self.store.get(f"{self.folder}/{name}")

    def open(self, name: str) -> BinaryIO:
        return self.store.open(f"{self.folder}/{name}")


def find_session_folder(store: Store, session_id: str) -> str | None:
    m = layout.SESSION_ID_RE.fullmatch(session_id)
    if not m:
        raise ValueError(f"not a session id: {session_id!r}")
    day = layout._join(store.prefix, m.group(1), m.group(2), m.group(3)) + "/"
    for info in store.list(day):
        parts = info.key[len(day):].split("/")
        if len(parts) == 3 and parts[1] == session_id:
            return day + parts[0] + "/" + session_id
    return None


def remote_source(args: argparse.Namespace, ctx: Any, session_id: str) -> RemoteSource | None:
    """``station verify`` SOURCES hook: with ``--remote``, the session from central storage only."""
    if not getattr(args, "remote", False):
        return None
    store = open_store(ctx.policy, ctx.secrets, ctx.data_dir)
    folder = find_session_folder(store, session_id)
    if folder is None:
        raise RemoteSessionNotFound(session_id, store.describe())
    return RemoteSource(store, folder)
