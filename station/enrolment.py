"""Station enrolment and the site's trust anchor: which station keys reviewers trust.

Storage alone never introduces or replaces trust (docs/security.md, A2). Three kinds of object
live under ``<prefix>/enrolment/`` (specified in docs/format.md section 10):

* **request** ``enrolment/<station_id>.json``: written by ``station enroll`` on the seat, signed
  by the station key it names (proof of possession). A request confers no trust by itself.
* **approval** ``enrolment/approved/<station_id>/<fp>.json``: the request's station id and key,
  countersigned by a *site enrolment authority* (``station site approve``), whose public key the
  reviewer's policy pins in ``crypto.site_authorities``. The authority key lives with IT, off
  the seats; one bulk command approves thousands of seats (``--expect`` a list of fingerprints
  collected at deployment, or ``--all`` after looking at ``station site requests``).
* **revocation** ``enrolment/revoked/<fp>.json``: the authority withdraws a key (stolen seat,
  compromised key); sessions it signed become ``untrusted``.

A reviewer trusts a station key when the policy pins it (``crypto.trusted_stations``), or when a
valid approval signed by a pinned authority binds it to the station id the manifests name and no
valid revocation withdraws it. Every other key seen in storage gets a reason
(:class:`SiteTrust`): a request replaced by another key, a request not yet approved, an
approval that does not verify (forged or re-versioned object), a revoked key. ``station
verify`` prints that reason next to ``untrusted``.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nacl.signing

from station import logs
from station.crypto import keys
from station.crypto.manifest import check_signature, sign
from station.crypto.sealed import canonical_json
from station.crypto.verify import trust_entry
from station.errors import StationError

if TYPE_CHECKING:
    from uploader.stores import Store

log = logs.get("review")

ENROLMENT_FORMAT = "dualrec-enrolment/1"
APPROVAL_FORMAT = "dualrec-enrolment-approval/1"
REVOCATION_FORMAT = "dualrec-revocation/1"
AUTHORITY_PREFIX = "ed25519-authority:"
APPROVED_DIR, REVOKED_DIR = "approved", "revoked"
ENROLMENT_DIR = "enrolment"
STATION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_RECORD_BYTES = 16 * 1024


class EnrolmentError(StationError, ValueError):
    """enrolment record {}: {}"""


class EnrolmentConflict(StationError, FileExistsError):
    """station {!r} is already enrolled with another key ({}); this station's key is {}. Use another
    station.id in the policy, or have IT retire the old record"""


@dataclass(frozen=True)
class Enrolment:
    station_id: str
    public_key: str
    fingerprint: str
    record: dict[str, Any]


def record_key(store: Store, station_id: str) -> str:
    if not STATION_ID_RE.fullmatch(station_id):
        raise EnrolmentError(station_id, "station id must match " + STATION_ID_RE.pattern)
    return store.key(ENROLMENT_DIR, f"{station_id}.json")


def make_record(signing_key: nacl.signing.SigningKey, station_id: str, *, site: str,
                enrolled_utc: str, station_version: str) -> dict[str, Any]:
    public = keys.station_text(signing_key.verify_key)
    body = {"format": ENROLMENT_FORMAT, "station_id": station_id, "public_key": public,
            "fingerprint": keys.fingerprint(public), "site": site,
            "hostname": socket.gethostname(), "enrolled_utc": enrolled_utc,
            "station_version": station_version}
    return sign(body, signing_key)


def _enrolment_object(data: bytes, where: str, fmt: str) -> tuple[dict[str, Any], str, str]:
    """A small enrolment object of format ``fmt``: ``(object, station_id, public_key)`` once the
    JSON, the format, the station id and the key text are valid, else :class:`EnrolmentError`."""
    if len(data) > MAX_RECORD_BYTES:
        raise EnrolmentError(where, f"larger than {MAX_RECORD_BYTES} bytes")
    try:
        rec = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnrolmentError(where, f"not JSON ({exc})") from None
    if not isinstance(rec, dict):
        raise EnrolmentError(where, "not a JSON object")
    if rec.get("format") != fmt:
        raise EnrolmentError(where, f"unknown format {rec.get('format')!r}, expected {fmt}")
    sid, public = rec.get("station_id"), rec.get("public_key")
    if not isinstance(sid, str) or not STATION_ID_RE.fullmatch(sid):
        raise EnrolmentError(where, f"bad station_id {sid!r}")
    if not isinstance(public, str):
        raise EnrolmentError(where, "no public_key")
    try:
        keys.parse_station(public)
    except keys.KeyFormatError as exc:
        raise EnrolmentError(where, str(exc)) from None
    return rec, sid, public


def parse_record(data: bytes, where: str) -> Enrolment:
    """Validate one record; raise :class:`EnrolmentError` saying what is wrong with it."""
    rec, sid, public = _enrolment_object(data, where, ENROLMENT_FORMAT)
    status, signer = check_signature(rec)
    if status != "valid":
        raise EnrolmentError(where, f"signature {status}")
    if signer != public:
        raise EnrolmentError(where, "signed by another key than the one it enrols")
    return Enrolment(sid, public, keys.fingerprint(public), rec)


def read_enrolments(store: Store) -> tuple[dict[str, Enrolment], list[str]]:
    """Every valid enrolment request in the store, and a problem line per invalid object."""
    found = site_trust(store, ())
    return ({sid: st.request for sid, st in sorted(found.stations.items()) if st.request},
            found.problems)


def enrolled_keys(store: Store) -> dict[str, str]:
    """``{station_id: "ed25519:..."}`` of every valid enrolment *request*. A request is what a
    seat says about itself: it is not trust (see :func:`site_trust`)."""
    found, _ = read_enrolments(store)
    return {sid: e.public_key for sid, e in sorted(found.items())}


def register(store: Store, record: dict[str, Any]) -> tuple[str, bool]:
    """Write ``record`` to the store; ``(key, already)``. Re-enrolling with the same key is a
    no-op; another key under the same station id is an :class:`EnrolmentConflict`."""
    enr = parse_record(canonical_json(record), "to register")
    key = record_key(store, enr.station_id)
    if store.head(key) is not None:
        try:
            old = parse_record(store.get(key), key)
        except EnrolmentError:
            raise EnrolmentConflict(enr.station_id, "an unreadable record", enr.fingerprint) from None
        if old.public_key != enr.public_key:
            raise EnrolmentConflict(enr.station_id, old.fingerprint, enr.fingerprint)
        return key, True
    store.put(key, canonical_json(record) + b"\n")
    return key, False


def trusted_from_storage(ctx: Any) -> list[str]:
    """Trust source for ``station verify`` (its ``TRUST`` table): the station keys that the
    policy's site authorities approved in central storage, with the reason every other key seen
    there is not trusted (a :class:`station.crypto.verify.TrustedKeys`). Storage that cannot be
    read gives no keys and a warning, so the sessions show as untrusted rather than the
    verification failing."""
    from station.crypto.verify import TrustedKeys
    from uploader.stores import open_store

    try:
        store = open_store(ctx.policy, ctx.secrets, ctx.data_dir)
    except StationError as exc:
        log.warning("enrolled stations not read (storage not usable: %s)", exc)
        return TrustedKeys()
    try:
        trusted: list[str] = apply_revoked(
            site_trust(store, ctx.policy.crypto.site_authorities).trusted(),
            ctx.policy.crypto.revoked_stations)
        return trusted
    except StationError as exc:
        log.warning("enrolled stations not read from %s: %s", store.describe(), exc)
        return TrustedKeys()
    finally:
        store.close()


# --- the site enrolment authority ---------------------------------------------------------------
class AuthorityKeyError(StationError, ValueError):
    """site authority key {}: {}"""


def fp_hex(public: str) -> str:
    """The fingerprint as one word (object names)."""
    return keys.fingerprint(public).replace(" ", "")


def new_authority(out_dir: Path) -> dict[str, str]:
    """Write ``site-authority.key`` (0600: IT keeps it off the seats) and ``site-authority.pub``
    into ``out_dir``; never overwrite."""
    key_path, pub_path = out_dir / "site-authority.key", out_dir / "site-authority.pub"
    sk = nacl.signing.SigningKey.generate()
    public = keys.station_text(sk.verify_key)
    fp = keys.fingerprint(public)
    try:
        keys.write_key_pair(
            key_path, f"# DualRec site enrolment authority (private; never on a seat). Public "
            f"{public}\n# fingerprint {fp}\n{AUTHORITY_PREFIX}{keys._b64(bytes(sk))}\n",
            pub_path, f"# DualRec site enrolment authority, fingerprint {fp}: put it in the "
            f"policy's crypto.site_authorities\n{public}\n")
    except keys.KeyFormatError as exc:
        raise AuthorityKeyError(str(key_path.parent), str(exc)) from None
    return {"public_key": public, "fingerprint": fp, "key": str(key_path), "pub": str(pub_path)}


def read_authority_key(path: Path) -> nacl.signing.SigningKey:
    try:
        lines = [ln.strip() for ln in Path(path).read_text("utf-8").splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")]
    except OSError as exc:
        raise AuthorityKeyError(str(path), exc.strerror or str(exc)) from None
    if len(lines) != 1 or not lines[0].startswith(AUTHORITY_PREFIX):
        raise AuthorityKeyError(str(path), f"expected one {AUTHORITY_PREFIX} line")
    import base64
    import binascii

    try:
        seed = base64.b64decode(lines[0][len(AUTHORITY_PREFIX):], validate=True)
    except binascii.Error:
        seed = b""
    if len(seed) != 32:
        raise AuthorityKeyError(str(path), "not a base64 32-byte Ed25519 seed")
    return nacl.signing.SigningKey(seed)


def approval_key(store: Store, station_id: str, public: str) -> str:
    record_key(store, station_id)  # validates the id
    return store.key(ENROLMENT_DIR, APPROVED_DIR, station_id, fp_hex(public) + ".json")


def revocation_key(store: Store, public: str) -> str:
    return store.key(ENROLMENT_DIR, REVOKED_DIR, fp_hex(public) + ".json")


def request_sha256(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(record)).hexdigest()


def make_approval(authority: nacl.signing.SigningKey, request: Enrolment,
                  approved_utc: str) -> dict[str, Any]:
    body = {"format": APPROVAL_FORMAT, "station_id": request.station_id,
            "public_key": request.public_key, "fingerprint": request.fingerprint,
            "site": request.record.get("site"), "request_sha256": request_sha256(request.record),
            "approved_utc": approved_utc}
    return sign(body, authority)


def make_revocation(authority: nacl.signing.SigningKey, station_id: str, public: str,
                    reason: str, revoked_utc: str) -> dict[str, Any]:
    keys.parse_station(public)
    body = {"format": REVOCATION_FORMAT, "station_id": station_id, "public_key": public,
            "fingerprint": keys.fingerprint(public), "reason": reason, "revoked_utc": revoked_utc}
    return sign(body, authority)


def _parse_countersigned(data: bytes, where: str, fmt: str,
                         authorities: set[str]) -> dict[str, Any]:
    """An approval or revocation: JSON object of ``fmt`` with a valid signature by one of
    ``authorities``; :class:`EnrolmentError` naming what is wrong otherwise."""
    rec, _, _ = _enrolment_object(data, where, fmt)
    status, signer = check_signature(rec)
    if status != "valid":
        raise EnrolmentError(where, f"signature {status}: forged, replaced or damaged")
    if signer not in authorities:
        raise EnrolmentError(where, f"signed by {keys.fingerprint(str(signer))}, which is not a "
                             "site authority of this policy (crypto.site_authorities)")
    return rec


@dataclass
class StationState:
    """What storage and the authority say about one station id."""

    station_id: str
    request: Enrolment | None = None
    approved: dict[str, dict[str, Any]] = field(default_factory=dict)   # public key -> approval
    revoked: dict[str, dict[str, Any]] = field(default_factory=dict)    # public key -> revocation

    @property
    def state(self) -> str:
        """``approved`` (the request's key is approved and not revoked), ``pending`` (a request
        no authority approved yet), ``replaced`` (the request names another key than the approved
        one), ``revoked`` or ``no-request`` (approved, request object gone)."""
        live = set(self.approved) - set(self.revoked)
        if self.request is None:
            return "no-request" if live else ("revoked" if self.revoked else "pending")
        if self.request.public_key in self.revoked:
            return "revoked"
        if self.request.public_key in live:
            return "approved"
        return "replaced" if self.approved else "pending"


@dataclass
class SiteTrust:
    """The enrolment objects of a store judged against the policy's site authorities."""

    authorities: list[str]
    stations: dict[str, StationState] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    suspect_keys: dict[str, str] = field(default_factory=dict)   # key named by a bad object -> why

    def _st(self, sid: str) -> StationState:
        return self.stations.setdefault(sid, StationState(sid))

    def trusted(self, pinned: Iterable[str] = ()) -> Any:
        """:class:`~station.crypto.verify.TrustedKeys`: ``STATION=ed25519:KEY`` for every approved,
        unrevoked key, the ``pinned`` entries, and a reason for every other key seen."""
        from station.crypto.verify import TrustedKeys

        reasons: dict[str, str] = dict(self.suspect_keys)  # a forged object says the most
        revoked_keys = {k: r for st in self.stations.values() for k, r in st.revoked.items()}
        # the authority's revocation also withdraws a key the reviewer pinned
        entries = [e for e in pinned if trust_entry(e)[1] not in revoked_keys]
        for sid, st in sorted(self.stations.items()):
            for public in sorted(st.approved):
                if public not in revoked_keys:
                    entries.append(f"{sid}={public}")
            req = st.request
            if req is not None and req.public_key not in st.approved:
                fp = req.fingerprint
                if st.approved:
                    approved = ", ".join(keys.fingerprint(k) for k in sorted(st.approved))
                    reasons.setdefault(req.public_key, (
                        f"the enrolment object of {sid} in storage names key {fp}, but the site "
                        f"authority approved {approved} for {sid}: the enrolment record was "
                        "replaced (not trusted)"))
                elif not self.authorities:
                    reasons.setdefault(req.public_key, (
                        f"key {fp} is enrolled in storage for {sid}, but the policy names no site "
                        "authority (crypto.site_authorities): an enrolment record in storage is "
                        "not trusted on its own (docs/deploy.md, migration)"))
                else:
                    reasons.setdefault(req.public_key, (
                        f"key {fp} is enrolled for {sid} but not approved by the site authority "
                        "(pending: `station site approve`)"))
        for public, rev in revoked_keys.items():
            reasons[public] = (f"key {keys.fingerprint(public)} of {rev.get('station_id')} was "
                               f"revoked by the site authority on {rev.get('revoked_utc')}: "
                               f"{rev.get('reason')}")
        return TrustedKeys(entries, reasons=reasons, problems=list(self.problems))


def _named_key(data: bytes) -> str | None:
    try:
        rec = json.loads(data.decode("utf-8"))
        public = rec.get("public_key") if isinstance(rec, dict) else None
        keys.parse_station(str(public))
        return str(public)
    except Exception:
        return None


def site_trust(store: Store, authorities: Iterable[str]) -> SiteTrust:
    """Read requests, approvals and revocations from ``store`` and judge them against
    ``authorities`` (the policy's pinned site authority keys). Never raises for bad objects:
    each becomes a problem line, and the key it names (if any) a reason."""
    auth = {a.strip() for a in authorities}
    out = SiteTrust(sorted(auth))
    base = store.key(ENROLMENT_DIR) + "/"
    for info in store.list(base):
        rel = info.key[len(base):] if info.key.startswith(base) else info.key
        parts = rel.split("/")
        if not rel.endswith(".json"):
            continue
        try:
            data = store.get(info.key)
        except StationError as exc:
            out.problems.append(f"{info.key}: not readable ({exc})")
            continue
        try:
            if len(parts) == 1:  # request
                enr = parse_record(data, info.key)
                if f"{enr.station_id}.json" != parts[0]:
                    raise EnrolmentError(info.key, f"names station {enr.station_id!r}, not its "
                                         "file name")
                out._st(enr.station_id).request = enr
            elif len(parts) == 3 and parts[0] == APPROVED_DIR:
                rec = _parse_countersigned(data, info.key, APPROVAL_FORMAT, auth)
                if rec["station_id"] != parts[1] or fp_hex(rec["public_key"]) + ".json" != parts[2]:
                    raise EnrolmentError(info.key, "names another station or key than its "
                                         "object name")
                out._st(rec["station_id"]).approved[rec["public_key"]] = rec
            elif len(parts) == 2 and parts[0] == REVOKED_DIR:
                rec = _parse_countersigned(data, info.key, REVOCATION_FORMAT, auth)
                if fp_hex(rec["public_key"]) + ".json" != parts[1]:
                    raise EnrolmentError(info.key, "names another key than its object name")
                out._st(rec["station_id"]).revoked[rec["public_key"]] = rec
            else:
                out.problems.append(f"{info.key}: unexpected object in the enrolment prefix")
        except EnrolmentError as exc:
            out.problems.append(str(exc))
            public = _named_key(data)
            if public is not None and len(parts) > 1:
                out.suspect_keys.setdefault(public, f"{exc} (not trusted)")
    _older_revocations(store, out, auth)
    for p in out.problems:
        log.warning("enrolment: %s", p)
    return out


def _older_revocations(store: Store, out: SiteTrust, auth: set[str]) -> None:
    """Where the store keeps versions (S3 with Object Lock), a valid revocation counts even when
    its current version was deleted or replaced: withdrawing trust cannot be undone by storage."""
    versions = getattr(store, "all_versions", None)
    if versions is None:
        return
    base = store.key(ENROLMENT_DIR, REVOKED_DIR) + "/"
    try:
        found = versions(base)
    except StationError as exc:
        out.problems.append(f"{base}: older versions not read ({exc})")
        return
    for key, data in found:
        try:
            rec = _parse_countersigned(data, key, REVOCATION_FORMAT, auth)
        except EnrolmentError:
            continue
        st = out._st(rec["station_id"])
        if rec["public_key"] not in st.revoked:
            st.revoked[rec["public_key"]] = rec
            out.problems.append(f"{key}: the current object no longer revokes key "
                                f"{keys.fingerprint(rec['public_key'])}, an older version does "
                                "(deleted or replaced in storage): it stays revoked")


def apply_revoked(trusted: Any, revoked: Iterable[str]) -> Any:
    """Drop the keys the policy revokes (``crypto.revoked_stations``: pinned revocations, which
    no storage operation can undo) from a :class:`~station.crypto.verify.TrustedKeys`."""
    gone = {r.strip() for r in revoked}
    if not gone:
        return trusted
    keep = [e for e in trusted if trust_entry(e)[1] not in gone]
    out = type(trusted)(keep, reasons=trusted.reasons, problems=trusted.problems)
    for public in gone:
        out.reasons[public] = (f"key {keys.fingerprint(public)} is revoked by the policy "
                               "(crypto.revoked_stations)")
    return out


def approve(store: Store, authority: nacl.signing.SigningKey, request: Enrolment,
            approved_utc: str) -> tuple[str, bool]:
    """Write the approval of ``request``; ``(key, already)``."""
    key = approval_key(store, request.station_id, request.public_key)
    if store.head(key) is not None:
        return key, True
    store.put(key, canonical_json(make_approval(authority, request, approved_utc)) + b"\n")
    return key, False


def revoke(store: Store, authority: nacl.signing.SigningKey, station_id: str, public: str,
           reason: str, revoked_utc: str) -> tuple[str, bool]:
    key = revocation_key(store, public)
    if store.head(key) is not None:
        return key, True
    rec = make_revocation(authority, station_id, public, reason, revoked_utc)
    store.put(key, canonical_json(rec) + b"\n")
    return key, False


def doctor_check(ctx: Any) -> Any:
    """``station doctor`` check "enrolment": is this station's key registered in central storage
    (what reviewers trust)? ok: registered; warn: no key yet, not registered, or storage not
    readable (the storage check says why); fail: the station id is enrolled with another key."""
    from station.crypto.keys import fingerprint, load_signing_key, station_text
    from station.doctor import FAIL, OK, WARN, Check
    from uploader.stores import open_store

    sk = load_signing_key(ctx.secrets)
    if sk is None:
        return Check("enrolment", WARN, "no station key yet: run `station enroll`")
    public = station_text(sk.verify_key)
    details: dict[str, Any] = {"station_id": ctx.station_id, "fingerprint": fingerprint(public)}
    try:
        store = open_store(ctx.policy, ctx.secrets, ctx.data_dir)
    except StationError as exc:
        return Check("enrolment", WARN, f"not checked, storage not usable: {exc}", details)
    try:
        key = record_key(store, ctx.station_id)
        details["key"] = key
        if store.head(key) is None:
            return Check("enrolment", WARN, f"station {ctx.station_id} is not enrolled in "
                         f"{store.describe()}: reviewers will not trust its sessions; run `station enroll`",
                         details)
        try:
            enr = parse_record(store.get(key), key)
        except EnrolmentError as exc:
            return Check("enrolment", FAIL, str(exc), details)
    except StationError as exc:
        return Check("enrolment", WARN, f"not checked: {exc}", details)
    finally:
        store.close()
    if enr.public_key != public:
        return Check("enrolment", FAIL, str(EnrolmentConflict(ctx.station_id, enr.fingerprint,
                                                              details["fingerprint"])), details)
    text = f"enrolled as {ctx.station_id}, fingerprint {details['fingerprint']}"
    authorities = list(ctx.policy.crypto.site_authorities)
    if not authorities:
        return Check("enrolment", OK, text, details)
    try:
        store = open_store(ctx.policy, ctx.secrets, ctx.data_dir)
        try:
            st = site_trust(store, authorities).stations.get(ctx.station_id)
        finally:
            store.close()
    except StationError as exc:
        return Check("enrolment", WARN, f"{text}; approval not checked: {exc}", details)
    details["approval"] = st.state if st else "pending"
    if details["approval"] == "approved":
        return Check("enrolment", OK, f"{text}, approved by the site authority", details)
    return Check("enrolment", WARN, f"{text}, approval {details['approval']}: reviewers do not "
                 "trust this seat's sessions until IT runs `station site approve`", details)
