"""`station sessions [--remote]` over a real local folder store and the real keyring."""

from __future__ import annotations

import json
from pathlib import Path

import nacl.public
import nacl.signing
import pytest

from station.cli import main
from station.crypto.keys import identity_text, recipient_text, station_text
from tests import reviewkit as kit
from uploader.layout import session_prefix
from uploader.stores import LocalFolderStore


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip().startswith("{") else {"text": out}


def test_sessions_remote_lists_verdicts_and_qc_flags_and_filters(station_home: Path, keyring_service: str,
                                                                 tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    ident, sk = nacl.public.PrivateKey.generate(), nacl.signing.SigningKey.generate()
    keyfile = tmp_path / "archive.key"
    keyfile.write_text(identity_text(ident) + "\n")
    store_dir = tmp_path / "central"
    (station_home / "policy.toml").write_text(
        f'[storage]\nkind = "local"\nlocal_dir = "{store_dir}"\n'
        f'[crypto]\nrecipients = ["{recipient_text(ident.public_key)}"]\n'
        f'trusted_stations = ["{station_text(sk.verify_key)}"]\n', encoding="utf-8")
    store = LocalFolderStore(store_dir)
    good = kit.make_session(tmp_path / "spool", [bytes(ident.public_key)], sk, segments=1, agent="ann")
    black = kit.make_session(tmp_path / "spool", [bytes(ident.public_key)], sk, segments=1, agent="ben",
                             camera="black")
    kit.upload(good, store)
    kit.upload(black, store)
    pol = str(station_home / "policy.toml")

    code, res = _cli(capsys, "sessions", "--remote", "--json", "--policy", pol)
    assert code == 0
    assert {(s["id"], s["agent"], s["verdict"], s["qc"]) for s in res["sessions"]} == {
        (good.name, "ann", "unverified", "none"), (black.name, "ben", "unverified", "none")}

    code, res = _cli(capsys, "sessions", "--remote", "--json", "--policy", pol, "--qc", "--identity", str(keyfile))
    assert code == 0
    by_agent = {s["agent"]: s for s in res["sessions"]}
    assert by_agent["ann"]["verdict"] == "intact" and by_agent["ann"]["qc_flags"] == []
    assert "camera-covered" in by_agent["ben"]["qc_flags"]
    assert (store_dir / session_prefix("", black.name, "seat-01") / "qc.json.drseg").exists()

    # a second reviewer machine reads the stored (sealed) QC report instead of recomputing it
    code, res = _cli(capsys, "sessions", "--remote", "--json", "--policy", pol, "--data-dir",
                     str(tmp_path / "other"), "--identity", str(keyfile), "--flag", "camera-covered")
    assert code == 0 and [s["agent"] for s in res["sessions"]] == ["ben"]
    assert res["sessions"][0]["qc"] == "stored"

    code, res = _cli(capsys, "sessions", "--remote", "--policy", pol, "--sort", "agent", "--asc")
    assert code == 0 and res["text"].index("ann") < res["text"].index("ben")


def test_sessions_without_remote_lists_the_spool_and_rejects_review_filters(
        station_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ident, sk = nacl.public.PrivateKey.generate(), nacl.signing.SigningKey.generate()
    d = kit.make_session(station_home / "spool", [bytes(ident.public_key)], sk, segments=1, agent="zoe")
    (station_home / "spool" / kit.new_session_id()).mkdir()       # a session still recording
    code, res = _cli(capsys, "sessions", "--json")
    assert code == 0
    states = {s["id"]: (s["state"], s.get("agent")) for s in res["sessions"]}
    assert states[d.name] == ("finished", "zoe")
    assert sorted(st for st, _ in states.values()) == ["finished", "recording or not recovered"]
    code, res = _cli(capsys, "sessions", "--json", "--flag", "no-face")
    assert code == 1 and "needs --remote" in res["error"]


def test_sessions_remote_with_an_unknown_sort_column_fails_cleanly(station_home: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c").mkdir()
    (station_home / "policy.toml").write_text(f'[storage]\nkind = "local"\nlocal_dir = "{tmp_path / "c"}"\n')
    code, res = _cli(capsys, "sessions", "--remote", "--json", "--policy", str(station_home / "policy.toml"),
                     "--sort", "customer")
    assert code == 1 and "cannot sort by" in json.dumps(res)


def test_station_review_opens_the_newest_session_and_shows_its_verdict(station_home: Path, keyring_service: str,
                                                                     display: str, tmp_path: Path) -> None:
    """`station review` as a subprocess: policy storage, identity file, enrolled trust, audited open."""
    import os
    import subprocess
    import sys

    ident, sk = nacl.public.PrivateKey.generate(), nacl.signing.SigningKey.generate()
    keyfile = tmp_path / "archive.key"
    keyfile.write_text(identity_text(ident) + "\n")
    store_dir = tmp_path / "central"
    policy = station_home / "policy.toml"
    policy.write_text(f'[storage]\nkind = "local"\nlocal_dir = "{store_dir}"\n'
                      f'[crypto]\ntrusted_stations = ["{station_text(sk.verify_key)}"]\n', encoding="utf-8")
    d = kit.make_session(tmp_path / "spool", [bytes(ident.public_key)], sk, segments=2, seg_s=2.0)
    kit.upload(d, LocalFolderStore(store_dir))
    out = subprocess.run([sys.executable, "-m", "station.cli", "review", "--json", "--policy", str(policy),
                          "--identity", str(keyfile), "--no-audio", "--no-qc", "--smoke", "smoke test"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"})
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout)
    assert res["sessions"] == 1 and res["session"] == d.name and res["intact"] is True
    assert "INTACT" in res["banner"] and res["playing_enabled"] is True
    audit_keys = [p.name for p in (store_dir / "audit" / "review").rglob("*.json")]
    assert sorted(k.split("-")[1] for k in audit_keys) == ["open", "play"]
