"""Recording cost: `station record` (sealing on) vs the ffmpeg CLI doing the same capture.

Both capture the same Xvfb screen (1920x1080 @ 15 fps, cursor drawn), the same camera file
(1280x720 @ 25 fps, read in real time, looped), the PulseAudio default source (48 kHz mono) and
encode with the same settings (libx264 veryfast/zerolatency, CRF 28 screen / 26 camera, keyframe
every 2 s, AAC 64 kbit/s) into Matroska. ffmpeg writes to /dev/null; the station seals into its
spool. Prints CPU seconds per second of recording (user + system, whole process incl. start-up),
their ratio (target <= 0.9), dropped frames and peak RSS. The station runs with masking off by
default (the policy default is on; ffmpeg does no masking): ``--masking`` measures it on. The
station also burns in its watermark, which the ffmpeg reference does not draw.

The screen is realistic by default (``--screen scene``): during each measured process a seat at
work is shown on the Xvfb display (tests/mask_scene.py --loop: a CRM window whose customer table
scrolls a row every 0.4 s, a customer card, a notes window raised over the form every 6 s), so
both programs encode, and the station masks, a screen that changes. ``--screen blank`` records the
empty Xvfb root window (the figures before 2026-12-07).

The project's modules are byte-compiled before the runs, as in an installed station (the
PyInstaller build ships bytecode; an editable install under PYTHONDONTWRITEBYTECODE=1 would
otherwise compile ~0.1 CPU s of source at every start).

``--baseline REV`` also runs the station of git revision REV (checked out into a temporary
worktree) in every run, alternated with the current one, to measure a change on the same machine
in the same period (e.g. the signed checkpoints: ``--baseline f031470``).

Run with the test services:  ./dev bench record_vs_ffmpeg [--seconds 60] [--runs N] [--baseline REV]
Numbers on a machine shared with other work are indicative only: ffmpeg alone varies by +-6 % run to
run here, so ``--runs N`` alternates the two N times and prints the median of the N ratios.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def run_measured(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
                 ) -> tuple[int, float, float, float, str, str]:
    """(returncode, cpu_s, wall_s, peak_rss_mib, stdout, stderr) of one child process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (proc.returncode, ru.ru_utime + ru.ru_stime, wall, ru.ru_maxrss / 1024,
                out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def make_camera(path: Path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=1280x720:rate=25:duration=10", "-c:v", "libx264", "-preset",
                    "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)


def station(seconds: float, cam: Path, home: Path, masking: bool = False,
            code: Path | None = None) -> dict[str, float | str]:
    """One `station record`; ``code``: run the station package found there (a worktree)."""
    import nacl.public
    import nacl.signing

    from station.crypto.keys import recipient_text
    from station.secrets import SIGNING_KEY, SecretStore

    ident = nacl.public.PrivateKey.generate()
    (home / "policy.toml").write_text(
        f'[crypto]\nrecipients = ["{recipient_text(ident.public_key)}"]\n'
        f'[masking]\nenabled = {str(masking).lower()}\n[spool]\nmin_free_mb = 64\n', encoding="utf-8")
    env = dict(os.environ, STATION_KEYRING_SERVICE="dualrec-bench-" + uuid.uuid4().hex[:8])
    if code is not None:
        env["PYTHONPATH"] = str(code)
        where = subprocess.run([sys.executable, "-c", "import station; print(station.__file__)"],
                               env=env, cwd=code, capture_output=True, text=True, check=True)
        if not where.stdout.strip().startswith(str(code)):
            raise SystemExit(f"baseline imports {where.stdout.strip()}, not the worktree {code}")
    store = SecretStore(env["STATION_KEYRING_SERVICE"])
    store.set_bytes(SIGNING_KEY, bytes(nacl.signing.SigningKey.generate()))
    try:
        rc, cpu, wall, rss, out, err = run_measured(
            [sys.executable, "-m", "station.cli", "record", "--json", "--policy", str(home / "policy.toml"),
             "--data-dir", str(home), "--duration", str(seconds), "--monitor", "1", "--camera", str(cam),
             "--mic", "pulse"], env, cwd=code)
    finally:
        store.delete(SIGNING_KEY)
    if rc != 0:
        raise SystemExit(f"station record failed: {err[-2000:]}")
    r = json.loads(out)
    drops = sum(s["dropped"] for s in r["streams"].values())
    spool = sum(f.stat().st_size for f in (home / "spool").rglob("*.drseg"))
    checkpoints = sum(f.read_bytes().count(b"\n") for f in (home / "spool").rglob("checkpoints.log"))
    return {"cpu_s": cpu, "wall_s": wall, "rss_mib": rss, "dropped": drops,
            "mbit_s": spool * 8 / 1e6 / seconds, "checkpoints_s": checkpoints / seconds,
            "detail": ", ".join(f"{n} {s['frames']} (drop {s['dropped']})" for n, s in r["streams"].items())
            + f"; {checkpoints / seconds:.1f} signed checkpoints/s"}


def ffmpeg(seconds: float, cam: Path) -> dict[str, float | str]:
    display = os.environ["DISPLAY"]
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-stats",
           "-f", "x11grab", "-framerate", "15", "-video_size", "1920x1080", "-draw_mouse", "1",
           "-thread_queue_size", "64", "-i", display,
           "-re", "-stream_loop", "-1", "-thread_queue_size", "64", "-i", str(cam),
           "-f", "pulse", "-thread_queue_size", "64", "-sample_rate", "48000", "-channels", "1",
           "-i", "default",
           "-map", "0:v", "-map", "1:v", "-map", "2:a",
           "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
           "-crf:v:0", "28", "-g:v:0", "30", "-keyint_min:v:0", "30",
           "-crf:v:1", "26", "-g:v:1", "50", "-keyint_min:v:1", "50", "-sc_threshold", "0",
           "-c:a", "aac", "-b:a", "64k", "-ar", "48000", "-ac", "1",
           "-t", str(seconds), "-f", "matroska", "/dev/null"]
    rc, cpu, wall, rss, _out, err = run_measured(cmd)
    if rc != 0:
        raise SystemExit(f"ffmpeg failed: {err[-2000:]}")
    drops = re.findall(r"drop=\s*(\d+)", err)
    frames = re.findall(r"frame=\s*(\d+)", err)
    return {"cpu_s": cpu, "wall_s": wall, "rss_mib": rss, "dropped": int(drops[-1]) if drops else 0,
            "mbit_s": float("nan"), "detail": f"frames {frames[-1] if frames else '?'} (first output stream)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--runs", type=int, default=1, help="station/ffmpeg pairs, alternated (default 1)")
    ap.add_argument("--baseline", metavar="REV", help="also run the station of this git revision "
                    "in every run (same machine, same period)")
    ap.add_argument("--screen", choices=("scene", "blank"), default="scene",
                    help="what the screen shows while recording (default: a seat at work)")
    ap.add_argument("--masking", action="store_true",
                    help="station with screen masking on (policy default; ffmpeg has no equivalent, so "
                         "the fair ratio is without it)")
    args = ap.parse_args()
    if "DISPLAY" not in os.environ or not shutil.which("ffmpeg"):
        raise SystemExit("needs the test services (./dev bench record_vs_ffmpeg) and the ffmpeg CLI")
    if args.runs < 1:
        raise SystemExit("--runs takes a whole number >= 1")
    for package in ("station", "recorder", "uploader", "ui"):
        compileall.compile_dir(REPO / package, quiet=1)
    ratios, vs_base = [], []
    with tempfile.TemporaryDirectory(prefix="bench-rec-") as tmp:
        base = None
        if args.baseline:
            base = Path(tmp) / "baseline"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base),
                            args.baseline], check=True, capture_output=True)
            for package in ("station", "recorder", "uploader", "ui"):
                compileall.compile_dir(base / package, quiet=1)
        cam = Path(tmp) / "camera.mp4"
        make_camera(cam)
        try:
            for run in range(1, args.runs + 1):
                print(f"run {run}/{args.runs}: standard profile, {args.seconds:g} s, screen "
                      f"{args.screen}, masking {'on' if args.masking else 'off'}, load average "
                      f"before: {os.getloadavg()[0]:.2f}")
                with _scene(args):
                    st = _station_run(Path(tmp) / f"home{run}", args, cam, None)
                bs = None
                if base:
                    with _scene(args):
                        bs = _station_run(Path(tmp) / f"base{run}", args, cam, base)
                with _scene(args):
                    ff = ffmpeg(args.seconds, cam)
                print(f"load average after: {os.getloadavg()[0]:.2f}")
                ratios.append(report(st, ff, args.seconds, bs, args.baseline))
                if bs is not None:
                    vs_base.append(float(st["cpu_s"]) / float(bs["cpu_s"]))
        finally:
            if base is not None:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)],
                               check=False, capture_output=True)
    if len(ratios) > 1:
        print(f"ratios: {', '.join(f'{r:.3f}' for r in sorted(ratios))}; "
              f"median {statistics.median(ratios):.3f} (target <= 0.9)")
    if vs_base:
        print(f"station / station@{args.baseline}: {', '.join(f'{r:.3f}' for r in sorted(vs_base))}; "
              f"median {statistics.median(vs_base):.3f}")


@contextlib.contextmanager
def _scene(args: argparse.Namespace) -> Iterator[None]:
    """The seat's screen for one measured process (its own process: counted in neither)."""
    if args.screen != "scene":
        yield
        return
    from tests.masklive import start_scene

    proc, _info = start_scene(args.seconds + 30, loop=True)
    try:
        time.sleep(1.0)  # windows mapped and painted
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def _station_run(home: Path, args: argparse.Namespace, cam: Path, code: Path | None
                 ) -> dict[str, float | str]:
    home.mkdir()
    try:
        return station(args.seconds, cam, home, args.masking, code)
    finally:
        shutil.rmtree(home)


def report(st: dict[str, float | str], ff: dict[str, float | str], seconds: float,
           base: dict[str, float | str] | None = None, rev: str | None = None) -> float:
    print(f"{'':8} {'CPU s':>7} {'CPU s/s':>8} {'peak RSS':>9} {'dropped':>8}  detail")
    rows = [("station", st), *([(f"@{rev}"[:8], base)] if base else []), ("ffmpeg", ff)]
    for name, r in rows:
        print(f"{name:8} {r['cpu_s']:7.1f} {float(r['cpu_s']) / seconds:8.3f} {r['rss_mib']:7.0f}MB "
              f"{r['dropped']:8}  {r['detail']}")
    ratio = (float(st["cpu_s"]) / float(ff["cpu_s"])) if ff["cpu_s"] else float("nan")
    print(f"ratio station/ffmpeg: {ratio:.3f} (target <= 0.9, sealing on); "
          f"station sealed output {st['mbit_s']:.2f} Mbit/s", flush=True)
    return ratio


if __name__ == "__main__":
    main()
