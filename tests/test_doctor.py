"""station doctor reports every check: passes on the real test services, fails clearly when a
service is gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from station.secrets import STORAGE_ACCESS_KEY, STORAGE_SECRET_KEY, SecretStore
from tests.recordkit import make_video
from tests.services import S3Server, SeaweedServer

pytestmark = pytest.mark.integration
CHECKS = {"display", "camera", "microphone", "keyring", "data_dir", "storage", "upload_backlog", "clock",
          "enrolment"}


def doctor(home: Path, policy: Path | None, env_changes: dict[str, str | None] | None = None) -> dict:
    env = dict(os.environ)
    for k, v in (env_changes or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    cmd = [sys.executable, "-m", "station.cli", "doctor", "--json", "--data-dir", str(home)]
    if policy:
        cmd += ["--policy", str(policy)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    out = json.loads(proc.stdout)
    out["_rc"] = proc.returncode
    out["_by"] = {c["name"]: c for c in out["checks"]}
    return out


@pytest.fixture
def camera_file(tmp_path: Path) -> Path:
    return make_video(tmp_path / "cam.mkv", size="320x240", rate=10, frames=10)


def s3_policy(tmp_path: Path, server: S3Server, bucket: str, camera: Path) -> Path:
    from station.cli import main

    out = tmp_path / "policy.toml"
    assert main(["policy", "init", "--out", str(out), "--store", f"s3://{bucket}/site",
                 "--endpoint", server.endpoint, "--set", f"capture.camera='{camera}'",
                 "--set", "capture.microphone='pulse'", "--set", "spool.min_free_mb=1"]) == 0
    return out


def enrol_storage(server: S3Server) -> None:
    store = SecretStore()
    store.set(STORAGE_ACCESS_KEY, server.access_key)
    store.set(STORAGE_SECRET_KEY, server.secret_key)


def test_doctor_passes_on_the_test_services(tmp_path: Path, keyring_service: str, s3: S3Server,
                                            s3_lock_bucket: str, camera_file: Path, display: str) -> None:
    policy = s3_policy(tmp_path, s3, s3_lock_bucket, camera_file)
    enrolled = subprocess.run([sys.executable, "-m", "station.cli", "enroll", "--stdin", "--policy", str(policy),
                               "--data-dir", str(tmp_path / "home")], input=f"{s3.access_key}\n{s3.secret_key}\n",
                              capture_output=True, text=True, timeout=60)
    assert enrolled.returncode == 0, enrolled.stderr
    out = doctor(tmp_path / "home", policy)
    assert set(out["_by"]) == CHECKS
    for name in ("display", "camera", "microphone", "keyring", "data_dir", "storage", "enrolment", "clock"):
        assert out["_by"][name]["status"] == "ok", out["_by"][name]
    assert "COMPLIANCE" in out["_by"]["storage"]["reason"]
    assert out["_rc"] == 0


def test_doctor_fails_clearly_for_a_stopped_s3_server(tmp_path: Path, keyring_service: str,
                                                      private_s3: SeaweedServer, camera_file: Path) -> None:
    info = private_s3.info()
    info.client().create_bucket(Bucket="gone")
    enrol_storage(info)
    private_s3.stop()
    out = doctor(tmp_path / "home", s3_policy(tmp_path, info, "gone", camera_file))
    storage = out["_by"]["storage"]
    assert storage["status"] == "fail" and "unreachable" in storage["reason"]
    assert info.endpoint in storage["reason"]
    assert out["_rc"] == 1


def test_doctor_fails_clearly_without_a_display(tmp_path: Path, keyring_service: str) -> None:
    out = doctor(tmp_path / "home", None, {"DISPLAY": None, "WAYLAND_DISPLAY": None})
    assert out["_by"]["display"]["status"] == "fail"
    assert "no DISPLAY" in out["_by"]["display"]["reason"]
    assert out["status"] == "fail" and out["_rc"] == 1


def test_doctor_fails_clearly_for_a_read_only_data_dir(tmp_path: Path, keyring_service: str) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    # root writes through permission bits, so make the file system itself read-only
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
    try:
        out = doctor(ro, None)
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    data = out["_by"]["data_dir"]
    assert data["status"] == "fail" and "not writable" in data["reason"] and "Read-only" in data["reason"]
