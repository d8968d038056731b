"""station verify SESSION_ID [--json]

Needs no private key. Extension points (kept as tables so other parts plug in without editing
the command's logic):

* ``SOURCES``: functions ``(args, ctx, session_id) -> SessionSource | None`` tried in order; the
  first that returns a source wins. The uploader adds central storage (``--remote``) by adding
  an option to ``OPTIONS`` and a function here.
* ``TRUST``: functions ``(ctx) -> iterable of 'ed25519:...'`` station keys to trust: the local
  station's own key, the policy's pinned keys, the keys a site authority of the policy approved
  in storage (with the reason any other key seen there is not trusted).

Exit code: 0 intact, 4 recovered after a crash, 3 anything else (altered, open, untrusted).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from station.cli import EXIT_NOT_INTACT, EXIT_OK
from station.context import Context
from station.crypto import keys
from station.crypto.verify import (
    DirSource,
    SessionSource,
    TrustedKeys,
    format_report,
    trust_entry,
    verify_session,
)
from station.errors import StationError

HELP = "check a session's signatures, chain, order, hashes and sizes (no private key needed)"


class SessionNotFound(StationError, LookupError):
    """session {!r} not found (looked in: {})"""


OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--trust",), {"metavar": "ed25519:KEY", "action": "append", "default": [],
                    "help": "also trust this station key (repeatable)"}),
]


def store_root(ctx: Context) -> Path:
    local = str(ctx.policy.storage.local_dir or "")
    return Path(local) if local else ctx.data_dir / "store"


def _spool(args: argparse.Namespace, ctx: Context, sid: str) -> SessionSource | None:
    d = ctx.spool_dir / sid
    return DirSource(d) if d.is_dir() else None


def _local_store(args: argparse.Namespace, ctx: Context, sid: str) -> SessionSource | None:
    root = store_root(ctx)
    if not root.is_dir():
        return None
    for d in sorted(root.rglob(sid)):
        if d.is_dir():
            return DirSource(d)
    return None


SOURCES: list[Callable[[argparse.Namespace, Context, str], SessionSource | None]] = [
    _spool, _local_store]

# central storage (--remote, owned by the uploader): first, and exclusive when the flag is given
from uploader.remote import REMOTE_OPTION, remote_source  # noqa: E402

OPTIONS.append(REMOTE_OPTION)
SOURCES.insert(0, remote_source)


def _local_station(ctx: Context) -> Iterable[str]:
    try:
        sk = keys.load_signing_key(ctx.secrets)
    except StationError:
        return []
    return [keys.station_text(sk.verify_key)] if sk is not None else []


def _policy_trusted(ctx: Context) -> Iterable[str]:
    return list(ctx.policy.crypto.trusted_stations)


def _enrolled(ctx: Context) -> Iterable[str]:  # the stations enrolled in central storage
    from station.enrolment import trusted_from_storage

    return trusted_from_storage(ctx)


TRUST: list[Callable[[Context], Iterable[str]]] = [_local_station, _policy_trusted, _enrolled]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("session_id", metavar="SESSION_ID")
    for flags, kw in OPTIONS:
        p.add_argument(*flags, **kw)


SESSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


class BadSessionId(StationError, ValueError):
    """{!r} is not a session id (letters, digits, '-' and '_', e.g. 20261124T062500Z-3fa9c2d1)"""


def find_source(args: argparse.Namespace, ctx: Context, sid: str) -> SessionSource:
    """Where session ``sid`` is read from; a path or anything that is not a session id is
    refused before any file is touched (``verify /etc`` read /etc as a session)."""
    if not SESSION_ID_RE.fullmatch(sid):
        raise BadSessionId(sid)
    for fn in SOURCES:
        src = fn(args, ctx, sid)
        if src is not None:
            return src
    raise SessionNotFound(sid, f"{ctx.spool_dir}, {store_root(ctx)}")


def trusted_keys(args: argparse.Namespace, ctx: Context, storage: bool = True) -> TrustedKeys:
    """Every ``TRUST`` source (``storage=False``: all but the enrolment objects in storage) and
    the ``--trust`` keys, with the reasons the storage source gives for keys it does not trust."""
    out = TrustedKeys()
    for fn in TRUST:
        if storage or fn is not _enrolled:
            out.merge(fn(ctx))
    extra = getattr(args, "trust", None) or []
    for t in extra:  # a key, or STATION=KEY as the review side holds them
        keys.parse_station(trust_entry(t)[1])
        out.merge([t.strip()])
    for k, v in getattr(extra, "reasons", {}).items():  # a TrustedKeys passed on keeps its reasons
        out.reasons.setdefault(k, v)
    from station.enrolment import apply_revoked

    revoked: TrustedKeys = apply_revoked(out, ctx.policy.crypto.revoked_stations)
    return revoked


def run(args: argparse.Namespace, ctx: Context) -> Any:
    src = find_source(args, ctx, args.session_id)
    result = verify_session(src, trusted_keys(args, ctx), session_id=args.session_id)
    return result


def human(result: dict[str, Any]) -> str:
    return format_report(result)


EXIT_RECOVERED = 4


def exit_code(result: dict[str, Any]) -> int:
    """0 intact, 4 recovered after a crash (complete up to the crash, nothing else wrong),
    3 anything else."""
    if result.get("intact"):
        return EXIT_OK
    return EXIT_RECOVERED if result.get("verdict") == "recovered" else EXIT_NOT_INTACT
