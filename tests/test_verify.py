"""station verify: per-segment verdicts, trust, exit codes; no private key needed."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import nacl.public
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station.cli import main
from station.crypto.keys import load_signing_key, recipient_text, station_text
from station.crypto.session import SessionSealer
from station.crypto.verify import DirSource, verify_session

RCPT = recipient_text(nacl.public.PrivateKey.generate().public_key)
SID = "20261124T070000Z-00c0ffee"


def make_session(d: Path, sk: nacl.signing.SigningKey, segments: int = 3) -> Path:
    s = SessionSealer(d, SID, "st-v", [RCPT], sk, {"agent": "a"})
    for seq in range(1, segments + 1):
        for kind in ("media", "oplog"):
            with s.open_segment(seq, kind) as w:
                w.write(b"x" * 100 * seq)
        s.close_segment(seq, {"seq_stats": seq})
    s.finish("normal", {})
    return d


def verify_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["verify", SID, "--json", *args])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def seat(keyring_service: str, station_home: Path) -> tuple[Path, nacl.signing.SigningKey]:
    assert main(["keys", "init"]) == 0
    sk = load_signing_key()
    assert sk is not None
    return make_session(station_home / "spool" / SID, sk), sk


def test_intact_session_on_the_seat_exits_0_with_every_segment_ok(
        seat: tuple[Path, nacl.signing.SigningKey], capsys: pytest.CaptureFixture[str]) -> None:
    code, res = verify_json(capsys)
    assert code == 0 and res["intact"] is True
    assert [s["status"] for s in res["segments"]] == ["ok"] * 3
    assert main(["verify", SID]) == 0
    assert "INTACT" in capsys.readouterr().out


@pytest.mark.parametrize(("damage", "seq", "status", "code"), [
    (lambda d: (d / "seg-000002.media.drseg").write_bytes(
        (d / "seg-000002.media.drseg").read_bytes()[:-1] + b"\x00"), 2, "altered", "altered"),
    (lambda d: (d / "seg-000003.oplog.drseg").unlink(), 3, "missing", "missing-file"),
    (lambda d: [p.unlink() for p in d.glob("seg-000003.*")], 3, "missing", "missing-segment"),
    (lambda d: (d / "seg-000001.media.drseg").write_bytes(
        (d / "seg-000002.media.drseg").read_bytes()), 1, "reordered", "reordered"),
])
def test_each_kind_of_damage_is_named_per_segment_and_exits_3(
        seat: tuple[Path, nacl.signing.SigningKey], capsys: pytest.CaptureFixture[str],
        *, damage, seq: int, status: str, code: str) -> None:  # type: ignore[no-untyped-def]
    damage(seat[0])
    rc, res = verify_json(capsys)
    assert rc == 3 and res["intact"] is False
    assert {s["seq"]: s["status"] for s in res["segments"]}[seq] == status
    assert code in res["categories"]
    assert sum(1 for s in res["segments"] if s["status"] != "ok") == 1


def test_a_valid_signature_by_an_unknown_station_is_untrusted_not_ok(
        keyring_service: str, station_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stranger = nacl.signing.SigningKey.generate()
    make_session(station_home / "spool" / SID, stranger, 2)
    rc, res = verify_json(capsys)  # no local station key at all: needs no private key
    assert rc == 3 and [s["status"] for s in res["segments"]] == ["untrusted"] * 2
    rc, res = verify_json(capsys, "--trust", station_text(stranger.verify_key))
    assert rc == 0 and res["intact"]
    pol = station_home / "p.toml"
    pol.write_text(f'[crypto]\ntrusted_stations = ["{station_text(stranger.verify_key)}"]\n')
    rc, res = verify_json(capsys, "--policy", str(pol))
    assert rc == 0


def test_session_in_the_local_folder_store_is_found_and_unknown_ids_fail_clearly(
        keyring_service: str, station_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "init"]) == 0
    sk = load_signing_key()
    assert sk is not None
    make_session(station_home / "store" / "dualrec" / "2026" / "11" / "24" / "st-v" / SID, sk, 1)
    rc, res = verify_json(capsys)
    assert rc == 0 and "store" in res["source"]
    assert main(["verify", "20991231T000000Z-deadbeef"]) == 1
    assert "not found" in capsys.readouterr().err


def test_unfinished_session_is_reported_open_not_intact(
        keyring_service: str, station_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "init"]) == 0
    sk = load_signing_key()
    assert sk is not None
    s = SessionSealer(station_home / "spool" / SID, SID, "st", [RCPT], sk)
    with s.open_segment(1, "media") as w:
        w.write(b"a")
    s.close_segment(1, {})
    rc, res = verify_json(capsys)
    assert rc == 3 and res["categories"] == ["session-open"]
    assert res["segments"][0]["status"] == "ok"
    s.finish()


def _base_session(root: Path) -> tuple[Path, str]:
    sk = nacl.signing.SigningKey(b"\x01" * 32)
    return make_session(root / SID, sk, 3), station_text(sk.verify_key)


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_any_single_change_to_a_session_is_reported_not_intact_and_never_crashes(
        data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as t:
        d, trusted = _base_session(Path(t))
        assert verify_session(DirSource(d), [trusted])["intact"]
        # every file that leaves the seat (the checkpoint log is the seat's own recovery aid)
        names = sorted(p.name for p in d.iterdir() if p.name != "checkpoints.log")
        name = data.draw(st.sampled_from(names))
        p = d / name
        raw = p.read_bytes()
        op = data.draw(st.sampled_from(["flip", "cut", "delete", "append", "swap"]))
        if op == "flip":
            i = data.draw(st.integers(0, len(raw) - 1))
            bit = data.draw(st.integers(0, 7))
            p.write_bytes(raw[:i] + bytes([raw[i] ^ (1 << bit)]) + raw[i + 1:])
        elif op == "cut":
            p.write_bytes(raw[:data.draw(st.integers(0, len(raw) - 1))])
        elif op == "delete":
            p.unlink()
        elif op == "append":
            p.write_bytes(raw + data.draw(st.binary(min_size=1, max_size=40)).replace(
                b" ", b"x").replace(b"\n", b"y").replace(b"\t", b"z").replace(b"\r", b"w"))
        else:
            other = d / data.draw(st.sampled_from([n for n in names if n != name]))
            other_raw = other.read_bytes()
            if other_raw == raw:
                return
            p.write_bytes(other_raw)
            other.write_bytes(raw)
        result = verify_session(DirSource(d), [trusted])
        assert result["intact"] is False, (op, name)
        assert result["problems"]


def test_key_enrolled_for_one_station_does_not_vouch_for_another_station_id(tmp_path: Path) -> None:
    d, key = _base_session(tmp_path)
    station = json.loads((d / "session.json").read_bytes())["station"]
    assert verify_session(DirSource(d), [f"{station}={key}"])["intact"]
    assert verify_session(DirSource(d), [key])["intact"]  # a pinned key vouches for any station id
    other = verify_session(DirSource(d), [f"seat-999={key}"])
    assert other["intact"] is False
    assert any("enrolled for seat-999" in p["detail"] for p in other["problems"]), other["problems"]


@pytest.mark.parametrize("bad", ["/etc", "..", "../../etc", ".", "a/b", "-x", "x" * 200, ""])
def test_verify_and_export_refuse_what_is_not_a_session_id_in_one_line(
        bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`verify /etc` used to read /etc as a session and `export ..` audited a session '..'."""
    from station.cli import main

    home = tmp_path / "home"
    for argv in (["verify", "--data-dir", str(home), "--", bad],
                 ["export", "--data-dir", str(home), "--out", str(tmp_path / "o"), "--reason", "r",
                  "--identity", str(tmp_path / "none.key"), "--", bad]):
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 1 and "is not a session id" in err and "Traceback" not in err, (argv, err)
    assert not (home / "audit" / "audit.log").exists() or "export-started" not in (
        home / "audit" / "audit.log").read_text()
