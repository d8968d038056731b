"""Station enrolment: which station keys reviewers trust, registered in central storage.

A station enrols once (``station enroll``): it signs a small record with its Ed25519 key and
writes it to ``<prefix>/enrolment/<station_id>.json`` in central storage. Reviewers build their
trust set from these records (:func:`enrolled_keys`) plus the keys pinned in the policy
(``crypto.trusted_stations``); ``station verify`` trusts only those.

Record (canonical JSON, signed like a manifest, see station/crypto/manifest.py)::

    {"format": "dualrec-enrolment/1", "station_id": "seat-042", "public_key": "ed25519:...",
     "fingerprint": "ab12 ...", "site": "sh-01", "hostname": "seat-042", "enrolled_utc": "...",
     "station_version": "0.1.0", "signer": "ed25519:...", "sig": "BASE64"}

What a record proves, and what it does not:

* its signature proves the writer held the station's private key (a typo or a record copied
  for another station id is rejected), and its name must match ``station_id``;
* stores never overwrite an object with different content, and with Object Lock a record
  cannot be replaced or deleted: a later writer cannot swap an enrolled station's key;
* anyone holding storage write credentials can enrol a *new* station id. Trust in a record is
  trust in whoever may write the enrolment prefix; sites that want more compare the fingerprint
  printed at enrolment with the one reviewers see, or pin keys in ``crypto.trusted_stations``.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nacl.signing

from station import logs
from station.crypto import keys
from station.crypto.manifest import check_signature, sign
from station.crypto.sealed import canonical_json
from station.errors import StationError

if TYPE_CHECKING:
    from uploader.stores import Store

log = logs.get("review")

ENROLMENT_FORMAT = "dualrec-enrolment/1"
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


def parse_record(data: bytes, where: str) -> Enrolment:
    """Validate one record; raise :class:`EnrolmentError` saying what is wrong with it."""
    if len(data) > MAX_RECORD_BYTES:
        raise EnrolmentError(where, f"larger than {MAX_RECORD_BYTES} bytes")
    try:
        rec = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnrolmentError(where, f"not JSON ({exc})") from None
    if not isinstance(rec, dict):
        raise EnrolmentError(where, "not a JSON object")
    if rec.get("format") != ENROLMENT_FORMAT:
        raise EnrolmentError(where, f"unknown format {rec.get('format')!r}")
    sid, public = rec.get("station_id"), rec.get("public_key")
    if not isinstance(sid, str) or not STATION_ID_RE.fullmatch(sid):
        raise EnrolmentError(where, f"bad station_id {sid!r}")
    if not isinstance(public, str):
        raise EnrolmentError(where, "no public_key")
    try:
        keys.parse_station(public)
    except keys.KeyFormatError as exc:
        raise EnrolmentError(where, str(exc)) from None
    status, signer = check_signature(rec)
    if status != "valid":
        raise EnrolmentError(where, f"signature {status}")
    if signer != public:
        raise EnrolmentError(where, "signed by another key than the one it enrols")
    return Enrolment(sid, public, keys.fingerprint(public), rec)


def read_enrolments(store: Store) -> tuple[dict[str, Enrolment], list[str]]:
    """Every valid record in the store's enrolment prefix, and a problem line per invalid one."""
    prefix = store.key(ENROLMENT_DIR) + "/"
    found: dict[str, Enrolment] = {}
    problems: list[str] = []
    for info in store.list(prefix):
        key = info.key
        name = key[len(prefix):] if key.startswith(prefix) else key.rsplit("/", 1)[-1]
        if "/" in name or not name.endswith(".json"):
            continue
        try:
            enr = parse_record(store.get(key), key)
        except EnrolmentError as exc:
            problems.append(str(exc))
            continue
        if f"{enr.station_id}.json" != name:
            problems.append(str(EnrolmentError(key, f"names station {enr.station_id!r}, not its file name")))
            continue
        found[enr.station_id] = enr
    for p in problems:
        log.warning("ignored: %s", p)
    return found, problems


def enrolled_keys(store: Store) -> dict[str, str]:
    """``{station_id: "ed25519:..."}`` of every validly enrolled station (invalid records are
    logged and left out). Pass the values to ``station.crypto.verify`` as trusted keys."""
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
    """Trust source for ``station verify`` (its ``TRUST`` table): the station keys enrolled in the
    policy's central storage. Storage that cannot be read gives no keys and a warning, so the
    sessions show as untrusted rather than the verification failing."""
    from uploader.stores import open_store

    try:
        store = open_store(ctx.policy, ctx.secrets, ctx.data_dir)
    except StationError as exc:
        log.warning("enrolled stations not read (storage not usable: %s)", exc)
        return []
    try:
        return sorted(f"{sid}={key}" for sid, key in enrolled_keys(store).items())
    except StationError as exc:
        log.warning("enrolled stations not read from %s: %s", store.describe(), exc)
        return []
    finally:
        store.close()


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
    return Check("enrolment", OK, f"enrolled as {ctx.station_id}, fingerprint {details['fingerprint']}",
                 details)
