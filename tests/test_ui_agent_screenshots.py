"""scripts/screenshots_agent.py produces a screenshot per state and language, and each shows
its state: the banner colour at the top of the window."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "screenshots_agent.py"
BANNER_BGR = {"idle": (0x28, 0x28, 0xC6), "consent": (0x00, 0x6C, 0xEF), "recording": (0x32, 0x7D, 0x2E),
              "recording-warning": (0x00, 0x6C, 0xEF), "paused": (0x25, 0xA8, 0xF9),
              "stopped-error": (0x00, 0x00, 0x8E)}


def test_screenshot_script_shows_every_state_in_both_languages(display, tmp_path):
    import cv2

    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    for state, bgr in BANNER_BGR.items():
        for lang in ("zh_CN", "en"):
            img = cv2.imread(str(tmp_path / f"agent-{state}-{lang}.png"))
            assert img is not None and img.std() > 20
            banner = img[20:60, 40:-40].reshape(-1, 3).astype(int)
            share = (np.abs(banner - bgr).sum(axis=1) < 30).mean()
            assert share > 0.5, f"{state}/{lang}: banner colour covers {share:.0%}"
