"""The installer end to end: build the bundle and the .deb, preseed a site policy, install with
dpkg on this machine, run `station doctor --json` and the smoke test from the installed files,
leave an unuploaded recording in a user's data dir, remove and purge the package, and check that
the recording survived and the administrator's policy was left alone.

Installs a real package into the system (root only) and takes about 1.5-3 minutes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import build_installer as bi

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.e2e]

PKG = "dualrec-station"
POLICY = Path("/etc/dualrec/policy.toml")
AUTOSTART = Path("/etc/xdg/autostart/dualrec-station.desktop")


def _installed() -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", PKG], capture_output=True, text=True)
    return "install ok installed" in r.stdout


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): _sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def _system_lock() -> Iterator[None]:
    """One installer test per machine at a time (it installs into the real system)."""
    with open("/tmp/dualrec-installer-test.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _env(keyring_service: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATION_")}
    env["STATION_KEYRING_SERVICE"] = keyring_service
    env.update(extra)
    return env


@pytest.fixture
def system_install() -> Iterator[None]:
    if os.geteuid() != 0 or not shutil.which("dpkg"):
        pytest.skip("installs a .deb into the system: needs root and dpkg")
    with _system_lock():
        if _installed():
            pytest.fail(f"{PKG} is already installed on this machine; remove it first (dpkg --purge {PKG})")
        if POLICY.exists():
            pytest.skip(f"{POLICY} exists on this machine: the installer test will not touch it")
        try:
            yield
        finally:
            if _installed() or subprocess.run(["dpkg-query", "-W", PKG], capture_output=True).returncode == 0:
                subprocess.run(["dpkg", "--purge", PKG], capture_output=True)


def test_deb_installs_runs_smoke_test_and_removal_keeps_unuploaded_recordings(
        tmp_path: Path, display: str, keyring_service: str, system_install: None) -> None:
    dist, figures = tmp_path / "dist", {}
    t0 = time.monotonic()
    rc = bi.main(["--dist", str(dist), "--work", str(bi.ROOT / "build")])
    figures["build_s"] = round(time.monotonic() - t0, 1)
    assert rc == 0
    version, arch = bi.project_version(), bi.deb_arch()
    deb = dist / f"{PKG}_{version}_{arch}.deb"
    iss = dist / f"{PKG}-{version}-windows.iss"
    mac = dist / f"{PKG}-{version}-macos.tar.gz"
    for art in (deb, iss, mac):
        line = (art.parent / (art.name + ".sha256")).read_text()
        assert line == f"{_sha(art)}  {art.name}\n"
    iss_text = iss.read_text()
    assert f'#define AppVersion "{version}"' in iss_text and not re.search(r"@[A-Z_]+@", iss_text)
    with tarfile.open(mac) as tar:
        names = sorted(tar.getnames())
        script = tar.extractfile(f"macos-{version}/build_pkg.sh").read().decode()  # type: ignore[union-attr]
    assert f"macos-{version}/postinstall" in names and f"VERSION={version}" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    bundle_mb = bi.dir_size_bytes(dist / "bundle" / "station") / 1e6
    figures.update({"bundle_mb": round(bundle_mb), "deb_mb": round(deb.stat().st_size / 1e6)})

    # preseed: IT drops the site policy before installing (here world-writable by mistake). The
    # system-wide file exists only while dpkg runs: other test runs on this machine would read it.
    from station.crypto.keys import new_recipient_pair

    user_home = tmp_path / "agent-home"          # an agent's data dir (STATION_HOME)
    store = tmp_path / "central"
    store.mkdir()                                # the site's store (a mounted share) exists
    recipient = new_recipient_pair(tmp_path / "archive")["public_key"]
    site_policy = tmp_path / "site-policy.toml"
    site_policy.write_text(f'[station]\nid = "deb-seat"\n[storage]\nkind = "local"\nlocal_dir = "{store}"\n'
                           f'[crypto]\nrecipients = ["{recipient}"]\n')
    created_dir = not POLICY.parent.exists()

    def place_policy(mode: int = 0o644) -> None:
        POLICY.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(site_policy, POLICY)
        POLICY.chmod(mode)

    place_policy(0o666)
    try:
        t0 = time.monotonic()
        # --force-unsafe-io: no fsync per file (test speed; IT installs without it)
        r = subprocess.run(["dpkg", "--force-unsafe-io", "-i", str(deb)], capture_output=True, text=True,
                           env=_env(keyring_service))
        figures["dpkg_install_s"] = round(time.monotonic() - t0, 1)
        assert r.returncode == 0, r.stderr
        assert _installed()
        for p in ("/opt/dualrec/station", "/usr/bin/station", str(AUTOSTART),
                  "/usr/share/applications/dualrec-station.desktop",
                  "/usr/share/doc/dualrec-station/policy.example.toml"):
            assert Path(p).exists(), p
        assert "Exec=/usr/bin/station run" in AUTOSTART.read_text()
        assert "using the site policy /etc/dualrec/policy.toml" in r.stdout
        mode = stat.S_IMODE(POLICY.stat().st_mode)
        assert mode & 0o022 == 0, oct(mode)  # read-only to the agent
        assert POLICY.stat().st_uid == 0

        # upgrade (here: reinstall of the same version) keeps the administrator's changes: the
        # autostart conffile disabled on this seat, and the site policy
        AUTOSTART.write_text(AUTOSTART.read_text() + "Hidden=true\n")
        policy_before = _sha(POLICY)
        t0 = time.monotonic()
        r = subprocess.run(["dpkg", "--force-unsafe-io", "--force-confold", "-i", str(deb)],
                           capture_output=True, text=True, env=_env(keyring_service))
        figures["dpkg_upgrade_s"] = round(time.monotonic() - t0, 1)
        assert r.returncode == 0, r.stderr
        assert AUTOSTART.read_text().endswith("Hidden=true\n")
        assert _sha(POLICY) == policy_before
        # an invalid site policy fails the configuration step, naming the key
        POLICY.write_text(site_policy.read_text() + "[upload]\nconcurrency = 99\n")
        r = subprocess.run(["sh", "/var/lib/dpkg/info/dualrec-station.postinst", "configure"],
                           capture_output=True, text=True, env=_env(keyring_service))
        assert r.returncode == 1
        assert "upload.concurrency" in r.stderr and "dpkg --configure -a" in r.stderr
        POLICY.unlink()  # from here on the seat's programs get the same policy via STATION_POLICY

        # IT enrols the seat with the installed program, then checks it remotely with doctor:
        # the frozen program finds its keyring backend (Secret Service), display and policy
        env = _env(keyring_service, STATION_HOME=str(user_home), STATION_POLICY=str(site_policy))
        enrol = tmp_path / "seat.enrol.toml"
        enrol.write_text('access_key_id = "AKIADEBSEAT"\nsecret_access_key = "deb-seat-secret-42"\n')
        r = subprocess.run(["/usr/bin/station", "enroll", "--json", "--file", str(enrol)],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        assert not enrol.exists()
        fingerprint = json.loads(r.stdout)["fingerprint"]
        assert f'"fingerprint":"{fingerprint}"' in (store / "enrolment" / "deb-seat.json").read_text()
        r = subprocess.run(["/usr/bin/station", "doctor", "--json"], capture_output=True, text=True,
                           env=env, timeout=120)
        checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
        assert checks["keyring"]["status"] == "ok", checks["keyring"]
        assert "SecretService" in json.dumps(checks["keyring"])
        assert checks["display"]["status"] == "ok", checks["display"]
        assert checks["enrolment"]["status"] == "ok", checks["enrolment"]

        # smoke test of the installed files (window, record, seal, upload, verify, export)
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, str(bi.ROOT / "build_installer.py"), "--smoke", "--no-build",
                            "--exe", "/usr/bin/station", "--json"], capture_output=True, text=True,
                           env=_env(keyring_service), timeout=600)
        figures["smoke_s"] = round(time.monotonic() - t0, 1)
        assert r.returncode == 0, r.stderr[-6000:]
        smoke = json.loads(r.stdout)["smoke"]
        assert smoke["ok"] is True

        # an agent's recording that was not uploaded yet
        spool_files: dict[str, str] = {}
        if "record" in bi.offered_commands(Path("/usr/bin/station"), env):
            t0 = time.monotonic()
            r = subprocess.run(["/usr/bin/station", "record", "--json", "--duration", "2", "--fake-devices"],
                               capture_output=True, text=True, env=env, timeout=300)
            figures["record_s"] = round(time.monotonic() - t0, 1)
            assert r.returncode == 0, r.stderr[-4000:]
        else:  # recording not offered yet: what a crashed session would leave
            sdir = user_home / "spool" / "20261124T070000Z-deadbeef"
            sdir.mkdir(parents=True)
            (sdir / "seg-000001.media.drseg").write_bytes(os.urandom(4096))
        spool_files = _tree_hashes(user_home / "spool")
        assert any(name.endswith(".drseg") for name in spool_files)

        t0 = time.monotonic()
        r = subprocess.run(["dpkg", "-r", PKG], capture_output=True, text=True)
        figures["dpkg_remove_s"] = round(time.monotonic() - t0, 1)
        assert r.returncode == 0, r.stderr
        assert not Path("/opt/dualrec/station").exists() and not Path("/usr/bin/station").exists()
        assert AUTOSTART.exists()  # a conffile: kept until purge
        assert _tree_hashes(user_home / "spool") == spool_files

        place_policy()
        r = subprocess.run(["dpkg", "--purge", PKG], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "NOT deleted" in r.stdout
        assert not AUTOSTART.exists()
        assert _tree_hashes(user_home / "spool") == spool_files
        assert POLICY.read_text() == site_policy.read_text()  # the administrator's, never the package's
    finally:
        print(f"\ninstaller figures: {figures}")
        POLICY.unlink(missing_ok=True)
        if created_dir:
            with contextlib.suppress(OSError):
                POLICY.parent.rmdir()
        shutil.rmtree(dist, ignore_errors=True)
