"""Shared by the screenshot scripts: run a shooting function under the current display, or under
an Xvfb of its own when there is none."""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Callable
from pathlib import Path


def start_xvfb(screen: str) -> subprocess.Popen[bytes]:
    r, w = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", screen, "-nolisten", "tcp"],
                            pass_fds=(w,), stderr=subprocess.DEVNULL)
    os.close(w)
    with os.fdopen(r) as fh:
        os.environ["DISPLAY"] = ":" + fh.readline().strip()
    return proc


def main(shoot: Callable[[Path], int], doc: str | None, screen: str, argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    args = ap.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    xvfb = start_xvfb(screen) if not os.environ.get("DISPLAY") else None
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    try:
        return shoot(args.out_dir)
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(10)
