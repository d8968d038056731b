"""The trust anchor, attacked the way a storage operator would (docs/security.md, A2).

Storage alone must never introduce or replace trust: station keys are trusted through approvals
countersigned by a site enrolment authority that the reviewer's policy pins, never through what
the bucket holds on its own. The main attack runs against SeaweedFS with Object Lock in
COMPLIANCE mode, where the attacker can add new object versions and delete markers but not
remove old versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nacl.public
import nacl.signing
import pytest

from station import cli, enrolment
from station.crypto import keys
from station.crypto.manifest import sign
from station.crypto.sealed import canonical_json
from station.crypto.verify import DirSource, verify_session
from station.secrets import STORAGE_ACCESS_KEY, STORAGE_SECRET_KEY, SecretStore
from tests import reviewkit as kit
from uploader.stores import LocalFolderStore


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    rc = cli.main(list(argv))
    out, _ = capsys.readouterr()
    return rc, (json.loads(out) if out.strip().startswith("{") else {})


def _policy(path: Path, authorities: list[str], **storage: object) -> Path:
    lines = ["[station]", 'id = "reviewer-pc"', "[crypto]",
             f"site_authorities = {json.dumps(authorities)}", "[storage]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in storage.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _request(store, sk: nacl.signing.SigningKey, station: str) -> enrolment.Enrolment:
    rec = enrolment.make_record(sk, station, site="sh-01", enrolled_utc="2026-12-07T00:00:00Z",
                                station_version="t")
    enrolment.register(store, rec)
    return enrolment.parse_record(canonical_json(rec), "test")


def test_storage_alone_gives_no_trust_and_every_other_key_has_a_reason(tmp_path: Path) -> None:
    """Requests, forged approvals and revocations in a local folder store, judged by
    site_trust: only an authority-signed, unrevoked approval makes a key trusted."""
    store = LocalFolderStore(tmp_path / "store", prefix="p")
    authority, rogue_authority = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    auth_pub = keys.station_text(authority.verify_key)
    good, pending, stolen, attacker = (nacl.signing.SigningKey.generate() for _ in range(4))
    enrolment.approve(store, authority, _request(store, good, "seat-good"), "t")
    _request(store, pending, "seat-pending")
    enrolment.approve(store, authority, _request(store, stolen, "seat-stolen"), "t")
    enrolment.revoke(store, authority, "seat-stolen", keys.station_text(stolen.verify_key),
                     "laptop stolen", "2026-12-07T10:00:00Z")
    # an approval by an authority the policy does not pin, for the attacker's key
    req = _request(store, attacker, "seat-evil")
    enrolment.approve(store, rogue_authority, req, "t")
    # no authority in the policy: nothing in storage is trusted
    assert list(enrolment.site_trust(store, []).trusted()) == []
    trusted = enrolment.site_trust(store, [auth_pub]).trusted()
    assert list(trusted) == [f"seat-good={keys.station_text(good.verify_key)}"]
    reasons = trusted.reasons
    assert "pending" in reasons[keys.station_text(pending.verify_key)]
    assert "revoked" in reasons[keys.station_text(stolen.verify_key)]
    assert "laptop stolen" in reasons[keys.station_text(stolen.verify_key)]
    assert "not a site authority of this policy" in reasons[keys.station_text(attacker.verify_key)]
    # the reason reaches verify's report
    d = kit.make_session(tmp_path / "spool", [nacl.public.PrivateKey.generate().public_key],
                         attacker, segments=1, seg_s=1.0)
    res = verify_session(DirSource(d), trusted)
    assert res["verdict"] == "untrusted" and res["intact"] is False
    assert any("not a site authority of this policy" in p["detail"] for p in res["problems"])


def test_seat_request_is_approved_in_bulk_only_when_its_fingerprint_matches(
        tmp_path: Path, station_home: Path, keyring_service: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """IT's bulk approval: `station site approve --expect` countersigns the requests whose
    fingerprints match the list collected at deployment and refuses a swapped one."""
    central = tmp_path / "central"
    assert _run(capsys, "site", "init", "--out", str(tmp_path / "it"), "--json")[0] == 0
    auth_pub = (tmp_path / "it" / "site-authority.pub").read_text().split("\n")[1]
    policy = _policy(tmp_path / "policy.toml", [auth_pub], kind="local", local_dir=str(central))
    store = LocalFolderStore(central)
    genuine = {f"seat-{i}": nacl.signing.SigningKey.generate() for i in range(3)}
    for sid, sk in genuine.items():
        _request(store, sk, sid)
    expected = tmp_path / "fingerprints.txt"
    expected.write_text("".join(f"{sid} {keys.fingerprint(keys.station_text(sk.verify_key))}\n"
                                for sid, sk in genuine.items()))
    # the storage operator swaps seat-2's request before IT approves
    swapped = nacl.signing.SigningKey.generate()
    (central / "enrolment" / "seat-2.json").unlink()
    _request(store, swapped, "seat-2")
    rc, res = _run(capsys, "site", "approve", "--policy", str(policy), "--authority",
                   str(tmp_path / "it" / "site-authority.key"), "--expect", str(expected), "--json")
    assert rc == 0, res
    assert sorted(r["station"] for r in res["approved"]) == ["seat-0", "seat-1"]
    assert [r["station"] for r in res["skipped"]] == ["seat-2"]
    assert "swapped" in res["skipped"][0]["reason"]
    rc, res = _run(capsys, "site", "requests", "--policy", str(policy), "--json")
    assert {r["station"]: r["state"] for r in res["stations"]} == {
        "seat-0": "approved", "seat-1": "approved", "seat-2": "pending"}
    # --all approves pending requests, but never a replacement of an approved key
    rc, res = _run(capsys, "site", "approve", "--policy", str(policy), "--authority",
                   str(tmp_path / "it" / "site-authority.key"), "--all", "--json")
    assert [r["station"] for r in res["approved"]] == ["seat-2"]   # IT chose to trust it
    (central / "enrolment" / "seat-0.json").unlink()
    _request(store, nacl.signing.SigningKey.generate(), "seat-0")
    rc, res = _run(capsys, "site", "approve", "--policy", str(policy), "--authority",
                   str(tmp_path / "it" / "site-authority.key"), "--all", "--json")
    assert res["approved"] == [] and [r["station"] for r in res["skipped"]] == ["seat-0"]
    assert "--replace" in res["skipped"][0]["reason"]
    # the private authority key never went to storage or the data dir
    secret = (tmp_path / "it" / "site-authority.key").read_text().split("ed25519-authority:")[1].strip()
    for p in [*central.rglob("*"), *station_home.rglob("*")]:
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p


def _s3_store(s3, bucket: str, prefix: str):  # type: ignore[no-untyped-def]
    from uploader.stores import S3Settings, S3Store

    return S3Store(S3Settings(bucket=bucket, prefix=prefix, endpoint=s3.endpoint),
                   s3.access_key, s3.secret_key)


@pytest.mark.integration
def test_enrolment_swap_in_object_locked_s3_is_untrusted_everywhere(
        tmp_path: Path, station_home: Path, keyring_service: str, s3, s3_lock_bucket: str,
        display: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The attack of issue 16: with bucket write access only, PUT a new version of the seat's
    enrolment object signed by the attacker's key, delete the last segment (delete markers),
    re-sign session.json with the attacker's key. verify --remote, the catalog, the review
    window and export must all refuse to call it intact, naming the reason."""
    from uploader.layout import session_key

    prefix, station = "site1", "seat-a"
    client = s3.client()
    authority_dir = tmp_path / "it"
    assert cli.main(["site", "init", "--out", str(authority_dir)]) == 0
    capsys.readouterr()
    auth_pub = (authority_dir / "site-authority.pub").read_text().split("\n")[1]
    policy = _policy(tmp_path / "policy.toml", [auth_pub], kind="s3", s3_endpoint=s3.endpoint,
                     s3_bucket=s3_lock_bucket, s3_prefix=prefix)
    reviewer = SecretStore(keyring_service)
    reviewer.set(STORAGE_ACCESS_KEY, s3.access_key)
    reviewer.set(STORAGE_SECRET_KEY, s3.secret_key)
    ident = nacl.public.PrivateKey.generate()
    keyfile = tmp_path / "archive.key"
    keyfile.write_text(keys.identity_text(ident) + "\n")
    seat_key = nacl.signing.SigningKey.generate()
    store = _s3_store(s3, s3_lock_bucket, prefix)
    try:
        req = _request(store, seat_key, station)
        enrolment.approve(store, enrolment.read_authority_key(authority_dir / "site-authority.key"),
                          req, "2026-12-07T09:00:00Z")
        sid = kit.new_session_id()
        d = kit.make_session(tmp_path / "spool", [ident.public_key], seat_key, segments=3,
                             seg_s=1.0, session_id=sid, station=station)
        for f in sorted(d.iterdir()):
            if f.is_file() and f.name != "checkpoints.log":
                store.put(session_key(prefix, sid, station, f.name), f)
    finally:
        store.close()
    rc, res = _run(capsys, "verify", "--remote", "--json", "--policy", str(policy), sid)
    assert rc == 0 and res["verdict"] == "intact", res

    # --- the attack, with the bucket's write credentials only --------------------------------
    attacker = nacl.signing.SigningKey.generate()
    forged_req = enrolment.make_record(attacker, station, site="sh-01",
                                       enrolled_utc="2026-12-07T11:00:00Z", station_version="t")
    client.put_object(Bucket=s3_lock_bucket, Key=f"{prefix}/enrolment/{station}.json",
                      Body=canonical_json(forged_req) + b"\n")       # a new current version
    seg_keys = [session_key(prefix, sid, station, f.name) for f in d.glob("seg-000003.*")]
    for key in seg_keys:
        client.delete_object(Bucket=s3_lock_bucket, Key=key)         # delete markers
    man2 = json.loads((d / "seg-000002.manifest.json").read_bytes())
    sess = {k: v for k, v in json.loads((d / "session.json").read_bytes()).items()
            if k not in ("sig", "signer")}
    sess.update(segments=2, last_hash=hashlib.sha256(canonical_json(man2)).hexdigest())
    forged_sess = sign(sess, attacker)
    client.put_object(Bucket=s3_lock_bucket, Key=session_key(prefix, sid, station, "session.json"),
                      Body=canonical_json(forged_sess) + b"\n")
    # the versions Object Lock kept are still there: the attack did not need to remove them
    versions = client.list_object_versions(Bucket=s3_lock_bucket,
                                           Prefix=f"{prefix}/enrolment/{station}.json")
    assert len(versions.get("Versions", [])) == 2

    # --- every reader refuses it ---------------------------------------------------------------
    rc, res = _run(capsys, "verify", "--remote", "--json", "--policy", str(policy), sid)
    assert rc == 3 and res["intact"] is False and res["verdict"] == "untrusted", res
    details = " ".join(p["detail"] for p in res["problems"])
    assert "enrolment record was replaced" in details
    rc, res = _run(capsys, "verify", "--remote", "--policy", str(policy), sid)
    assert rc == 3

    rc, res = _run(capsys, "sessions", "--remote", "--json", "--policy", str(policy),
                   "--verify")
    rows = {r["id"]: r for r in res["sessions"]}
    assert rows[sid]["verdict"] != "intact" and "untrusted" in rows[sid]["verdict"], rows[sid]

    out_dir = tmp_path / "handover"
    rc, res = _run(capsys, "export", sid, "--remote", "--json", "--policy", str(policy),
                   "--identity", str(keyfile), "--out", str(out_dir), "--reason", "complaint 7")
    assert rc != 0 and "untrusted" in json.dumps(res), res
    assert not any(out_dir.glob("*.mkv"))

    env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb",
           "STATION_KEYRING_SERVICE": keyring_service, "STATION_HOME": str(station_home)}
    r = subprocess.run([sys.executable, "-m", "station.cli", "review", "--json", "--policy",
                        str(policy), "--identity", str(keyfile), "--no-audio", "--no-qc",
                        "--smoke", "smoke test"], capture_output=True, text=True, timeout=180,
                       env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    shown = json.loads(r.stdout)
    assert shown["session"] == sid and shown["intact"] is False
    assert "INTACT" not in shown["banner"].replace("NOT INTACT", "") and "untrusted" in shown["banner"]


def test_an_enrolled_site_keeps_working_after_the_migration_steps(
        tmp_path: Path, station_home: Path, keyring_service: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """docs/deploy.md, migration: a seat enrolled before site authorities existed (its request is
    in storage, its session uploaded). Without an authority its sessions are untrusted, and the
    reason says what to do; after `site init`, the policy line, and `site approve --expect` with
    the fingerprint the seat prints (`station keys show`), they verify intact again, with no
    step on the seat."""
    central = tmp_path / "central"
    central.mkdir()
    seat_policy = _policy(tmp_path / "seat.toml", [], kind="local", local_dir=str(central))
    seat_policy.write_text(seat_policy.read_text().replace('id = "reviewer-pc"', 'id = "seat-9"'))
    assert cli.main(["enroll", "--policy", str(seat_policy)]) == 0        # the old enrolment
    capsys.readouterr()
    sk = keys.load_signing_key(SecretStore(keyring_service))
    assert sk is not None
    d = kit.make_session(tmp_path / "spool", [nacl.public.PrivateKey.generate().public_key], sk,
                         segments=1, seg_s=1.0, station="seat-9")
    kit.upload(d, LocalFolderStore(central), station="seat-9")
    rc, shown = _run(capsys, "keys", "--policy", str(seat_policy), "show", "--json")
    fingerprint = shown["fingerprint"]
    # the reviewer: another machine (no station key), storage only
    review_env = keyring_service + "-r"
    os.environ["STATION_KEYRING_SERVICE"] = review_env
    try:
        policy = _policy(tmp_path / "reviewer.toml", [], kind="local", local_dir=str(central))
        rc, res = _run(capsys, "verify", "--json", "--policy", str(policy), d.name)
        assert rc == 3 and res["verdict"] == "untrusted"
        assert "no site authority" in json.dumps(res) and "migration" in json.dumps(res)
        # the migration steps, as docs/deploy.md gives them
        assert cli.main(["site", "init", "--out", str(tmp_path / "it")]) == 0
        capsys.readouterr()
        auth_pub = (tmp_path / "it" / "site-authority.pub").read_text().split("\n")[1]
        policy = _policy(tmp_path / "reviewer.toml", [auth_pub], kind="local", local_dir=str(central))
        (tmp_path / "fingerprints.txt").write_text(f"seat-9 {fingerprint}\n")
        rc, res = _run(capsys, "site", "approve", "--policy", str(policy), "--authority",
                       str(tmp_path / "it" / "site-authority.key"), "--expect",
                       str(tmp_path / "fingerprints.txt"), "--json")
        assert [r["station"] for r in res["approved"]] == ["seat-9"], res
        rc, res = _run(capsys, "verify", "--json", "--policy", str(policy), d.name)
        assert rc == 0 and res["verdict"] == "intact", res
    finally:
        os.environ["STATION_KEYRING_SERVICE"] = keyring_service


@pytest.mark.integration
def test_a_revocation_deleted_or_overwritten_in_object_locked_s3_still_revokes(
        tmp_path: Path, s3, s3_lock_bucket: str) -> None:
    """Withdrawn trust cannot be restored by storage: a delete marker on, or a new version of,
    the revocation object leaves the older version, which still counts; a policy-pinned
    revocation (crypto.revoked_stations) holds whatever storage says, pinned keys included."""
    prefix = "site1"
    authority, seat = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    auth_pub, seat_pub = (keys.station_text(k.verify_key) for k in (authority, seat))
    store = _s3_store(s3, s3_lock_bucket, prefix)
    client = s3.client()
    try:
        enrolment.approve(store, authority, _request(store, seat, "seat-r"), "t")
        assert list(enrolment.site_trust(store, [auth_pub]).trusted()) == [f"seat-r={seat_pub}"]
        key, _ = enrolment.revoke(store, authority, "seat-r", seat_pub, "seat stolen", "t")
        assert list(enrolment.site_trust(store, [auth_pub]).trusted()) == []
        client.delete_object(Bucket=s3_lock_bucket, Key=key)                  # a delete marker
        assert store.head(key) is None
        trust = enrolment.site_trust(store, [auth_pub]).trusted()
        assert list(trust) == [] and "seat stolen" in trust.reasons[seat_pub]
        assert any("older version" in p for p in trust.problems)
        client.put_object(Bucket=s3_lock_bucket, Key=key, Body=b'{"format": "garbage"}')
        assert list(enrolment.site_trust(store, [auth_pub]).trusted([seat_pub])) == []
    finally:
        store.close()
    pinned = enrolment.apply_revoked(enrolment.SiteTrust([]).trusted([seat_pub]), [seat_pub])
    assert list(pinned) == [] and "crypto.revoked_stations" in pinned.reasons[seat_pub]
