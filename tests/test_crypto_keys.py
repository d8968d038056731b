"""Keys: station key in the keyring, archive key pairs, storage credentials, reviewer identities."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import keyring
import nacl.public
import pytest

from station import policy
from station.cli import main
from station.crypto.keys import (
    KeyFormatError,
    fingerprint,
    identity_text,
    import_identities,
    keyring_identities,
    load_identities,
    read_identity_file,
    read_recipient_file,
    recipient_text,
)
from station.secrets import SIGNING_KEY, STORAGE_ACCESS_KEY, STORAGE_SECRET_KEY, SecretStore


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_keys_init_creates_the_signing_key_once_in_the_keyring(
        keyring_service: str, station_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = run_json(capsys, "keys", "init")
    again = run_json(capsys, "keys", "init")
    assert first["created"] is True and again["created"] is False
    assert first["station_key"] == again["station_key"]
    assert first["station_key"].startswith("ed25519:") and len(first["station_key"]) == 52
    assert first["fingerprint"] == fingerprint(first["station_key"])
    assert keyring.get_password(keyring_service, SIGNING_KEY) is not None
    shown = run_json(capsys, "keys", "show")
    assert shown["station_key"] == first["station_key"]
    # nothing secret on disk
    seed = keyring.get_password(keyring_service, SIGNING_KEY)
    for p in station_home.rglob("*"):
        if p.is_file():
            assert seed not in p.read_text("utf-8", errors="replace")


def test_archive_new_writes_a_public_file_for_the_policy_and_a_private_0600_key(
        keyring_service: str, station_home: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    res = run_json(capsys, "keys", "archive-new", "--out", str(tmp_path / "k"))
    pub, key = tmp_path / "k" / "archive.pub", tmp_path / "k" / "archive.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert read_recipient_file(pub) == res["public_key"]
    [ident] = read_identity_file(key)
    assert recipient_text(ident.public_key) == res["public_key"]
    assert main(["keys", "archive-new", "--out", str(tmp_path / "k")]) == 1  # never overwrites
    assert read_identity_file(key)[0] == ident
    # policy init --recipient names it and the policy validates it
    out = tmp_path / "policy.toml"
    assert main(["policy", "init", "--recipient", str(pub), "--out", str(out)]) == 0
    assert policy.load(out).crypto.recipients == [res["public_key"]]


@pytest.mark.parametrize(("text", "needle"), [
    ("", "found 0"),
    ("x25519:short=\n", "expected x25519:BASE64"),
    ("x25519-identity:" + "A" * 43 + "=\n", "private identity"),
    ("x25519:" + "A" * 43 + "=\nx25519:" + "B" * 43 + "=\n", "found 2"),
])
def test_bad_recipient_files_are_rejected_with_the_reason(tmp_path: Path, text: str,
                                                          needle: str) -> None:
    p = tmp_path / "bad.pub"
    p.write_text(text)
    with pytest.raises(KeyFormatError, match=needle):
        read_recipient_file(p)


def test_storage_set_reads_two_lines_into_the_keyring_and_never_echoes(
        keyring_service: str, station_home: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("AKIDEXAMPLE\nsup3r/s3cret+key\n"))
    assert main(["keys", "storage-set"]) == 0
    out = capsys.readouterr()
    assert "sup3r" not in out.out + out.err and "AKIDEXAMPLE" not in out.out + out.err
    store = SecretStore()
    assert (store.get(STORAGE_ACCESS_KEY), store.get(STORAGE_SECRET_KEY)) == (
        "AKIDEXAMPLE", "sup3r/s3cret+key")
    assert "sup3r" not in (station_home / "audit" / "audit.log").read_text()
    monkeypatch.setattr("sys.stdin", io.StringIO("only-one-line\n"))
    assert main(["keys", "storage-set"]) == 1
    assert store.get(STORAGE_ACCESS_KEY) == "AKIDEXAMPLE"  # bad input loses nothing


def test_reviewer_identities_accumulate_for_rotation(
        keyring_service: str, station_home: Path, tmp_path: Path) -> None:
    old, new = nacl.public.PrivateKey.generate(), nacl.public.PrivateKey.generate()
    (tmp_path / "old.key").write_text(identity_text(old) + "\n")
    (tmp_path / "new.key").write_text("# comment\n" + identity_text(new) + "\n")
    assert main(["keys", "reviewer-import", str(tmp_path / "old.key")]) == 0
    assert main(["keys", "reviewer-import", str(tmp_path / "new.key")]) == 0
    import_identities(tmp_path / "new.key")  # importing twice adds nothing
    assert keyring_identities() == [old, new]
    assert load_identities() == [old, new]
    assert load_identities([tmp_path / "old.key"]) == [old]
