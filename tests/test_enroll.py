"""station enroll and the enrolment trust source, against the real keyring, a local folder store
and the real SeaweedFS (auth enforced)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import nacl.signing
import pytest

from station import cli, enrolment
from station.crypto import keys
from station.crypto.manifest import sign
from station.crypto.sealed import canonical_json
from station.logs import AuditLog
from station.secrets import SIGNING_KEY, STORAGE_ACCESS_KEY, STORAGE_SECRET_KEY, SecretStore
from uploader.stores import LocalFolderStore


def _policy(tmp_path: Path, **storage: object) -> Path:
    lines = ["[station]", 'id = "seat-007"', 'site = "sh-01"', "[storage]"]
    for k, v in storage.items():
        lines.append(f"{k} = {json.dumps(v)}")
    path = tmp_path / "policy.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    data = json.loads(out) if out.strip().startswith("{") else {}
    return rc, data, err


@pytest.fixture
def local_policy(tmp_path: Path) -> Path:
    (tmp_path / "central").mkdir()  # a store the policy names must exist (the mounted share)
    return _policy(tmp_path, kind="local", local_dir=str(tmp_path / "central"))


def test_enrol_file_goes_to_keyring_is_deleted_and_key_is_registered(
        tmp_path: Path, station_home: Path, keyring_service: str, local_policy: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    enrol = tmp_path / "seat-007.enrol.toml"
    enrol.write_text('access_key_id = "AKIASEAT007"\nsecret_access_key = "s3cr3t-from-IT/xyz"\n')
    rc, res, err = _run(capsys, "enroll", "--file", str(enrol), "--policy", str(local_policy), "--json")
    assert rc == 0, err
    assert not enrol.exists()
    secrets = SecretStore(keyring_service)
    assert secrets.get(STORAGE_ACCESS_KEY) == "AKIASEAT007"
    assert secrets.get(STORAGE_SECRET_KEY) == "s3cr3t-from-IT/xyz"
    sk = keys.load_signing_key(secrets)
    assert sk is not None and res["key_created"] is True
    public = keys.station_text(sk.verify_key)
    assert res["public_key"] == public and res["fingerprint"] == keys.fingerprint(public)
    store = LocalFolderStore(tmp_path / "central")
    assert enrolment.enrolled_keys(store) == {"seat-007": public}
    assert res["registered"] == "enrolment/seat-007.json"
    # the secret is nowhere on disk: not in the data dir, not in the store
    for p in [*station_home.rglob("*"), *(tmp_path / "central").rglob("*")]:
        if p.is_file():
            assert b"s3cr3t-from-IT" not in p.read_bytes(), p
    events = [r["event"] for r in AuditLog(station_home / "audit" / "audit.log").records()]
    assert events == ["enrolment-credentials-imported", "station-key-created", "station-enrolled"]


def test_human_output_prints_the_fingerprint(tmp_path: Path, station_home: Path, keyring_service: str,
                                             local_policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["enroll", "--policy", str(local_policy)]) == 0
    out = capsys.readouterr().out
    sk = keys.load_signing_key(SecretStore(keyring_service))
    assert sk is not None
    assert f"fingerprint  {keys.fingerprint(keys.station_text(sk.verify_key))}" in out


@pytest.mark.parametrize(("content", "needle"), [
    ('access_key_id = "AKIA1"\n', "missing secret_access_key"),
    ('access_key_id = "AKIA1"\nsecret_access_key = "short"\n', "8-256 printable"),
    ('access_key_id = "has space"\nsecret_access_key = "long-enough-secret"\n', "access key id"),
    ("access_key_id = AKIA1\n", "not valid TOML"),
    ('{"access_key_id": "AKIA1", "secret_access_key": ', "not valid JSON"),
    ('{"access_key_id": 5, "secret_access_key": "long-enough-secret"}', "must be a string"),
])
def test_bad_enrol_file_changes_nothing_and_keeps_the_file(
        tmp_path: Path, station_home: Path, keyring_service: str, local_policy: Path,
        capsys: pytest.CaptureFixture[str], content: str, needle: str) -> None:
    enrol = tmp_path / "bad.enrol"
    enrol.write_text(content)
    rc, res, _ = _run(capsys, "enroll", "--file", str(enrol), "--policy", str(local_policy), "--json")
    assert rc == 1
    assert needle in res["error"] and "the file is kept" in res["error"]
    assert enrol.read_text() == content
    secrets = SecretStore(keyring_service)
    assert secrets.get(STORAGE_ACCESS_KEY) is None and secrets.get(SIGNING_KEY) is None
    assert list((tmp_path / "central").iterdir()) == []  # nothing registered in the store


def test_missing_enrol_file_is_a_clear_error(tmp_path: Path, station_home: Path, keyring_service: str,
                                             local_policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, res, _ = _run(capsys, "enroll", "--file", str(tmp_path / "nope.toml"), "--policy",
                      str(local_policy), "--json")
    assert rc == 1 and "nope.toml: not found" in res["error"]


def test_stdin_takes_exactly_two_lines(tmp_path: Path, station_home: Path, keyring_service: str,
                                       local_policy: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("AKIAONLYONE\n"))
    rc, res, _ = _run(capsys, "enroll", "--stdin", "--policy", str(local_policy), "--json")
    assert rc == 1 and "two lines" in res["error"]
    assert SecretStore(keyring_service).get(STORAGE_ACCESS_KEY) is None
    monkeypatch.setattr("sys.stdin", io.StringIO("AKIASTDIN\n  stdin-secret-0123456789  \n"))
    rc, res, err = _run(capsys, "enroll", "--stdin", "--policy", str(local_policy), "--json")
    assert rc == 0, err
    assert res["credentials"] == "imported from standard input"
    assert SecretStore(keyring_service).get(STORAGE_SECRET_KEY) == "stdin-secret-0123456789"


def test_re_enrolling_is_a_no_op_and_another_key_under_the_same_id_is_refused(
        tmp_path: Path, station_home: Path, keyring_service: str, local_policy: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    rc, first, _ = _run(capsys, "enroll", "--policy", str(local_policy), "--json")
    assert rc == 0 and first["already_enrolled"] is False
    rc, again, _ = _run(capsys, "enroll", "--policy", str(local_policy), "--json")
    assert rc == 0 and again["already_enrolled"] is True and again["key_created"] is False
    assert again["public_key"] == first["public_key"]
    # a second seat misconfigured with the same station id has another key: refused, record kept
    record = (tmp_path / "central" / "enrolment" / "seat-007.json").read_bytes()
    monkeypatch.setenv("STATION_KEYRING_SERVICE", keyring_service + "-b")
    try:
        rc, res, _ = _run(capsys, "enroll", "--policy", str(local_policy), "--json")
    finally:
        SecretStore(keyring_service + "-b").delete(SIGNING_KEY)
    assert rc == 1
    assert "already enrolled with another key" in res["error"]
    assert first["fingerprint"] in res["error"]
    assert (tmp_path / "central" / "enrolment" / "seat-007.json").read_bytes() == record


def test_enrolled_keys_ignores_forged_misnamed_and_garbage_records(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "store", prefix="dualrec")
    good, other = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    rec = enrolment.make_record(good, "seat-1", site="s", enrolled_utc="2026-11-24T00:00:00Z",
                                station_version="t")
    assert enrolment.register(store, rec) == ("dualrec/enrolment/seat-1.json", False)
    # forged: claims good's public key but is signed by another key
    forged = dict(rec, station_id="seat-2")
    forged = sign({k: v for k, v in forged.items() if k not in ("sig", "signer")}, other)
    forged["public_key"] = keys.station_text(good.verify_key)
    store.put("dualrec/enrolment/seat-2.json", canonical_json(forged))
    # misnamed: a valid record of seat-3 stored as seat-4.json
    rec3 = enrolment.make_record(other, "seat-3", site="s", enrolled_utc="x", station_version="t")
    store.put("dualrec/enrolment/seat-4.json", canonical_json(rec3))
    # tampered: valid record with a changed field
    rec5 = enrolment.make_record(other, "seat-5", site="s", enrolled_utc="x", station_version="t")
    store.put("dualrec/enrolment/seat-5.json", canonical_json(dict(rec5, site="evil")))
    store.put("dualrec/enrolment/seat-6.json", b"\x00garbage")
    found, problems = enrolment.read_enrolments(store)
    assert list(found) == ["seat-1"]
    assert enrolment.enrolled_keys(store) == {"seat-1": keys.station_text(good.verify_key)}
    assert len(problems) == 4
    assert any("seat-2.json" in p and "signed by another key" in p for p in problems)
    assert any("seat-4.json" in p and "not its file name" in p for p in problems)
    assert any("seat-5.json" in p and "signature bad" in p for p in problems)
    assert any("seat-6.json" in p and "not JSON" in p for p in problems)


@pytest.mark.integration
def test_enrol_over_stdin_registers_in_s3_with_object_lock(
        tmp_path: Path, station_home: Path, keyring_service: str, s3, s3_lock_bucket: str,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    policy = _policy(tmp_path, kind="s3", s3_endpoint=s3.endpoint, s3_bucket=s3_lock_bucket,
                     s3_prefix="site1")
    # no credentials yet: a clear error that says how to give them
    rc, res, _ = _run(capsys, "enroll", "--policy", str(policy), "--json")
    assert rc == 1 and "station enroll --file ENROLFILE, or --stdin" in res["error"]
    # wrong credentials: key and credentials saved, registration failed, rerun advised
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{s3.access_key}\nwrong-secret-0000000000\n"))
    rc, res, _ = _run(capsys, "enroll", "--stdin", "--policy", str(policy), "--json")
    assert rc == 1 and "registering in storage failed" in res["error"]
    assert "station enroll` again" in res["error"]
    assert SecretStore(keyring_service).get(SIGNING_KEY) is not None
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{s3.access_key}\n{s3.secret_key}\n"))
    rc, res, err = _run(capsys, "enroll", "--stdin", "--policy", str(policy), "--json")
    assert rc == 0, err
    assert res["registered"] == "site1/enrolment/seat-007.json" and res["key_created"] is False
    body = s3.client().get_object(Bucket=s3_lock_bucket, Key=res["registered"])["Body"].read()
    assert enrolment.parse_record(body, "s3").public_key == res["public_key"]
    from uploader.stores import S3Settings, S3Store

    store = S3Store(S3Settings(bucket=s3_lock_bucket, prefix="site1", endpoint=s3.endpoint),
                    s3.access_key, s3.secret_key)
    try:
        assert enrolment.enrolled_keys(store) == {"seat-007": res["public_key"]}
    finally:
        store.close()


def test_undeletable_enrol_file_is_reported_after_the_credentials_are_safe(
        tmp_path: Path, station_home: Path, keyring_service: str, local_policy: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    enrol = tmp_path / "ro.enrol.json"
    enrol.write_text('{"access_key_id": "AKIARO", "secret_access_key": "ro-secret-123456"}')
    real_unlink = Path.unlink

    def refuse(self: Path, missing_ok: bool = False) -> None:
        if self == enrol:
            raise PermissionError(13, "Read-only file system")
        real_unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    rc, res, _ = _run(capsys, "enroll", "--file", str(enrol), "--policy", str(local_policy), "--json")
    assert rc == 1
    assert "could not be deleted (Read-only file system): delete it now" in res["error"]
    assert SecretStore(keyring_service).get(STORAGE_SECRET_KEY) == "ro-secret-123456"


def _sealed_session(root: Path, sid: str, station_id: str, sk: nacl.signing.SigningKey) -> None:
    import nacl.public

    from station.crypto.session import SessionSealer

    recipient = nacl.public.PrivateKey.generate().public_key
    sealer = SessionSealer(root / sid, session_id=sid, station_id=station_id,
                           recipients=[recipient], signing_key=sk)
    w = sealer.open_segment(1, "media")
    w.write(b"sealed test payload")
    sealer.close_segment(1, {})
    sealer.finish("normal", {})


def _with_authority(policy: Path, authority: nacl.signing.SigningKey) -> None:
    text = policy.read_text().replace("[storage]", "[crypto]\nsite_authorities = "
                                      f'["{keys.station_text(authority.verify_key)}"]\n[storage]', 1)
    policy.write_text(text)


def test_reviewer_verify_trusts_approved_stations_only(
        tmp_path: Path, station_home: Path, keyring_service: str, local_policy: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A reviewer (no station key of its own) verifies sessions in central storage: the one
    signed by an enrolled station is intact once the site authority approved it (not before),
    the one signed by an unknown key is untrusted."""
    store = LocalFolderStore(tmp_path / "central")
    enrolled, stranger = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    record = enrolment.make_record(enrolled, "seat-007", site="sh-01", enrolled_utc="x",
                                   station_version="t")
    enrolment.register(store, record)
    day = tmp_path / "central" / "2026" / "11" / "24"
    _sealed_session(day / "seat-007", "20261124T080000Z-0000aaaa", "seat-007", enrolled)
    _sealed_session(day / "seat-666", "20261124T080000Z-0000bbbb", "seat-666", stranger)
    # enrolled (a request in storage) but not approved: not trusted, and verify says why
    rc, res, err = _run(capsys, "verify", "--json", "--policy", str(local_policy),
                        "20261124T080000Z-0000aaaa")
    assert rc == 3 and res["verdict"] == "untrusted", err
    assert "not trusted on its own" in json.dumps(res)
    authority = nacl.signing.SigningKey.generate()
    _with_authority(local_policy, authority)
    rc, res, err = _run(capsys, "verify", "--json", "--policy", str(local_policy),
                        "20261124T080000Z-0000aaaa")
    assert rc == 3 and "not approved by the site authority" in json.dumps(res), err
    enrolment.approve(store, authority, enrolment.parse_record(canonical_json(record), "t"), "t")
    rc, res, err = _run(capsys, "verify", "--json", "--policy", str(local_policy),
                        "20261124T080000Z-0000aaaa")
    assert rc == 0 and res["intact"] is True, err
    rc, res, _ = _run(capsys, "verify", "--json", "--policy", str(local_policy), "20261124T080000Z-0000bbbb")
    assert rc == 3 and res["intact"] is False
    assert "untrusted" in json.dumps(res)


def test_doctor_reports_enrolment_missing_then_ok_then_conflict(
        tmp_path: Path, station_home: Path, keyring_service: str, local_policy: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def enrolment_check() -> dict:
        cli.main(["doctor", "--json", "--policy", str(local_policy), "--only", "enrolment"])
        return json.loads(capsys.readouterr().out)["checks"][0]

    assert enrolment_check()["status"] == "warn"  # no key yet
    assert cli.main(["keys", "--policy", str(local_policy), "init"]) == 0
    capsys.readouterr()
    check = enrolment_check()
    assert check["status"] == "warn" and "not enrolled" in check["reason"]
    assert cli.main(["enroll", "--policy", str(local_policy)]) == 0
    capsys.readouterr()
    check = enrolment_check()
    assert check["status"] == "ok" and "seat-007" in check["reason"]
    # this seat's key replaced (e.g. keyring reset): the record names another key
    monkeypatch.setenv("STATION_KEYRING_SERVICE", keyring_service + "-c")
    try:
        assert cli.main(["keys", "--policy", str(local_policy), "init"]) == 0
        capsys.readouterr()
        check = enrolment_check()
    finally:
        SecretStore(keyring_service + "-c").delete(SIGNING_KEY)
    assert check["status"] == "fail" and "already enrolled with another key" in check["reason"]


@pytest.mark.integration
def test_remote_verify_in_s3_trusts_approved_stations_only(
        tmp_path: Path, station_home: Path, keyring_service: str, s3, s3_lock_bucket: str,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Against SeaweedFS with Object Lock: a reviewer with only storage credentials (no station
    key of its own) verifies two sessions read from central storage; only the enrolled and
    approved station's is intact."""
    from uploader.layout import session_key
    from uploader.stores import S3Settings, S3Store

    policy = _policy(tmp_path, kind="s3", s3_endpoint=s3.endpoint, s3_bucket=s3_lock_bucket,
                     s3_prefix="site1")
    store = S3Store(S3Settings(bucket=s3_lock_bucket, prefix="site1", endpoint=s3.endpoint),
                    s3.access_key, s3.secret_key)
    enrolled, stranger = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    authority = nacl.signing.SigningKey.generate()
    _with_authority(policy, authority)
    try:
        record = enrolment.make_record(enrolled, "seat-a", site="sh-01", enrolled_utc="x",
                                       station_version="t")
        enrolment.register(store, record)
        enrolment.approve(store, authority, enrolment.parse_record(canonical_json(record), "t"), "t")
        for sid, station, sk in (("20261124T090000Z-0000aaaa", "seat-a", enrolled),
                                 ("20261124T090000Z-0000bbbb", "seat-b", stranger)):
            _sealed_session(tmp_path / "spool", sid, station, sk)
            for f in sorted((tmp_path / "spool" / sid).iterdir()):
                if f.is_file() and not f.name.startswith("."):
                    store.put(session_key("site1", sid, station, f.name), f)
    finally:
        store.close()
    reviewer = SecretStore(keyring_service)
    reviewer.set(STORAGE_ACCESS_KEY, s3.access_key)
    reviewer.set(STORAGE_SECRET_KEY, s3.secret_key)
    assert reviewer.get(SIGNING_KEY) is None
    rc, res, err = _run(capsys, "verify", "--json", "--remote", "--policy", str(policy),
                        "20261124T090000Z-0000aaaa")
    assert rc == 0 and res["intact"] is True, err
    rc, res, _ = _run(capsys, "verify", "--json", "--remote", "--policy", str(policy),
                      "20261124T090000Z-0000bbbb")
    assert rc == 3 and res["intact"] is False and "untrusted" in json.dumps(res)
