"""Policy: one schema, clear errors, starter file that round-trips."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from station import policy
from station.cli import main
from station.errors import PolicyError


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_are_the_embedded_standard_profile() -> None:
    pol = policy.load(None)
    assert pol.storage.kind == "local"
    assert (pol.capture.screen_width, pol.capture.screen_height, pol.capture.screen_fps) == (1920, 1080, 15)
    assert (pol.capture.camera_width, pol.capture.camera_height, pol.capture.camera_fps) == (1280, 720, 25)
    assert pol.capture.audio_rate_hz == 48000 and pol.capture.audio_channels == 1


def test_shipped_default_policy_file_loads_and_matches_defaults() -> None:
    shipped = Path(__file__).parent.parent / "resources" / "default_policy.toml"
    pol = policy.load(shipped)
    assert pol.storage.kind == "local" and pol.capture.profile == "standard"


@pytest.mark.parametrize(("text", "needle"), [
    ("[capture]\nscreen_fpz = 15\n", "unknown key 'capture.screen_fpz'"),
    ("[captur]\nscreen_fps = 15\n", "unknown section [captur]"),
    ("[capture]\nscreen_fps = 'fast'\n", "capture.screen_fps = 'fast': wrong type, expected an integer from 1 to 60"),
    ("[capture]\nscreen_fps = 0\n", "capture.screen_fps = 0: out of range"),
    ("[capture]\nscreen_fps = true\n", "wrong type"),
    ("[storage]\nkind = 'ftp'\n", "storage.kind = 'ftp': not allowed, expected one of 'local', 's3'"),
    ("[crypto]\nrecipients = ['not-a-key']\n", "does not match"),
    ("[capture\nscreen_fps = 1\n", "not valid TOML"),
])
def test_bad_policy_names_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(PolicyError) as err:
        policy.load(write(tmp_path, text))
    assert needle in str(err.value)
    assert str(tmp_path / "p.toml") in str(err.value)


def test_unreadable_and_missing_policy_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="policy file not found"):
        policy.load(tmp_path / "nope.toml")
    p = write(tmp_path, "[capture]\n")
    p.chmod(0)
    if os.geteuid() == 0:  # root reads anything: use a directory, which no one can read as a file
        p = tmp_path / "dir.toml"
        p.mkdir()
    with pytest.raises(PolicyError, match="cannot read policy file"):
        policy.load(p)
    with pytest.raises(PolicyError, match="not UTF-8"):
        policy.load(_binary(tmp_path))


def _binary(tmp_path: Path) -> Path:
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\xff\xfe\x00[capture]")
    return p


def test_station_file_may_set_station_keys_only(tmp_path: Path) -> None:
    site = write(tmp_path, "[capture]\ncamera = '2'\n", "site.toml")
    ok = write(tmp_path, "[capture]\ncamera = 'file.mp4'\n[ui]\nlanguage = 'en'\n", "station.toml")
    pol = policy.load(site, ok)
    assert pol.capture.camera == "file.mp4" and pol.ui.language == "en"
    assert pol.sources["capture.camera"] == str(ok)
    bad = write(tmp_path, "[crypto]\nrecipients = []\n", "station2.toml")
    with pytest.raises(PolicyError, match="may only be set by the site policy"):
        policy.load(site, bad)


def test_starter_policy_lists_every_key_and_round_trips(tmp_path: Path) -> None:
    text = policy.render()
    for key in policy.SCHEMA:
        assert f"{key.field} = " in text, key.name
    out = tmp_path / "starter.toml"
    assert main(["policy", "init", "--out", str(out)]) == 0
    assert policy.load(out).as_dict() == policy.load(None).as_dict()
    assert main(["policy", "init", "--out", str(out)]) == 1  # refuses to overwrite


def test_policy_init_with_store_writes_a_loadable_s3_policy(tmp_path: Path) -> None:
    out = tmp_path / "s3.toml"
    assert main(["policy", "init", "--out", str(out), "--store", "s3://bkt/site-a",
                 "--endpoint", "http://127.0.0.1:8333", "--region", "cn-north-1"]) == 0
    pol = policy.load(out)
    assert (pol.storage.kind, pol.storage.s3_bucket, pol.storage.s3_prefix) == ("s3", "bkt", "site-a")
    assert pol.storage.s3_endpoint == "http://127.0.0.1:8333" and pol.storage.s3_region == "cn-north-1"


def test_policy_check_cli_exits_nonzero_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "[upload]\nconcurrency = 99\n")
    assert main(["policy", "check", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "upload.concurrency = 99: out of range" in err[0]


@given(st.integers(min_value=-10**6, max_value=10**6))
def test_int_keys_accept_exactly_their_range(value: int) -> None:
    key = policy.KEYS["capture.screen_fps"]
    if 1 <= value <= 60:
        assert key.check(value, "t") == value
    else:
        with pytest.raises(PolicyError):
            key.check(value, "t")


def test_reference_markdown_has_a_row_per_key() -> None:
    table = policy.reference_markdown()
    for key in policy.SCHEMA:
        assert f"`{key.name}`" in table
    assert tomllib.loads(policy.render())  # sanity: starter is valid TOML


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_float_key_that_is_not_finite_is_refused_by_policy_check(value: str, tmp_path: Path) -> None:
    """NaN compares false with every bound, so it passed `policy check` and crashed `record`."""
    path = tmp_path / "p.toml"
    path.write_text(f"[capture]\nfragment_seconds = {value}\n")
    with pytest.raises(policy.PolicyError, match="not a finite number"):
        policy.load(path)
