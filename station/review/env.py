"""Wiring of the review side from a :class:`~station.context.Context` (used by ``station review``
and ``station sessions --remote``): central storage, the catalog cache, the reviewer's identities,
the trusted station keys, the access audit and the QC thresholds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from station import logs
from station.review import qc as qcmod
from station.review.audit import ReviewAudit, reviewer_name
from station.review.catalog import Catalog

log = logs.get("review")


@dataclass
class ReviewSetup:
    """Everything the review window and the catalog command need."""

    store: Any
    catalog: Catalog
    identities: list[Any]
    trusted: list[str]
    audit: ReviewAudit
    thresholds: qcmod.Thresholds
    recipients: list[str] = field(default_factory=list)   # policy crypto.recipients (sealing QC)
    tmp_dir: Path | None = None
    identity_paths: list[Path] = field(default_factory=list)
    ctx: Any = None
    require_open_reason: bool = False
    compute_qc: bool = True


def add_reviewer_options(p: Any) -> None:
    """``--identity`` and ``--trust``, shared by ``station review`` and ``station sessions``."""
    p.add_argument("--identity", metavar="KEYFILE", action="append", default=[],
                   help="reviewer identity file (archive.key); default: identities in the keyring")
    p.add_argument("--trust", metavar="ed25519:KEY", action="append", default=[],
                   help="also trust this station key")


def trusted_keys(ctx: Any, store: Any, extra: list[str] | None = None) -> Any:
    """Policy-pinned keys, the local station's key, ``--trust`` keys and the station keys the
    policy's site authorities approved in the store, with a reason for every other key seen
    there (:class:`station.crypto.verify.TrustedKeys`)."""
    import argparse

    from station.cmd import verify as verify_cmd
    from station.crypto.verify import TrustedKeys
    from station.enrolment import apply_revoked, site_trust

    pinned = verify_cmd.trusted_keys(argparse.Namespace(trust=extra or []), ctx, storage=False)
    try:
        return apply_revoked(site_trust(store, ctx.policy.crypto.site_authorities).trusted(
            sorted(pinned)), ctx.policy.crypto.revoked_stations)
    except Exception as exc:  # unreadable enrolment: sessions show as untrusted, not an error
        log.warning("enrolled stations not read: %s", exc)
        return TrustedKeys(sorted(pinned))


def build(ctx: Any, identity_paths: list[Path] | None = None, trust: list[str] | None = None,
          need_identity: bool = True, reviewer: str | None = None) -> ReviewSetup:
    from station.crypto import keys
    from uploader.stores import open_store

    store = open_store(ctx.policy, ctx.secrets, ctx.data_dir)
    paths = [Path(p) for p in identity_paths or []]
    try:
        identities = keys.load_identities(paths, ctx.secrets)
    except keys.NoIdentity:
        if need_identity:
            raise
        identities = []
    fps = ",".join(keys.fingerprint(keys.recipient_text(i.public_key)) for i in identities)
    audit = ReviewAudit(store, getattr(store, "prefix", ""), ctx.audit, reviewer or reviewer_name(),
                        identity_fp=fps or None,
                        require_open_reason=bool(ctx.policy.review.require_reason))
    return ReviewSetup(store=store, catalog=Catalog.for_store(store, ctx.data_dir), identities=identities,
                       trusted=trusted_keys(ctx, store, trust), audit=audit,
                       thresholds=qcmod.Thresholds.from_policy(ctx.policy),
                       recipients=list(ctx.policy.crypto.recipients), tmp_dir=ctx.data_dir / "review" / "tmp",
                       identity_paths=paths, ctx=ctx,
                       require_open_reason=bool(ctx.policy.review.require_reason))
