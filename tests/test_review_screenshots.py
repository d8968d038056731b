"""scripts/screenshots_review.py writes the catalog, player and tampered-verdict screenshots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "screenshots_review.py"


def test_script_writes_three_screenshots_and_the_tampered_one_shows_the_red_verdict(display: str,
                                                                                    tmp_path: Path) -> None:
    import cv2

    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True,
                         timeout=180, env={**os.environ, "DISPLAY": display})
    assert out.returncode == 0, out.stderr[-2000:]
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == ["review-catalog.png", "review-player.png", "review-tampered.png"]

    def red_share(name: str) -> float:
        img = cv2.imread(str(tmp_path / name))
        b, g, r = (img[..., i].astype(int) for i in range(3))
        return float(np.mean((r > 170) & (g < 80) & (b < 80)))

    # the tampered verdict banner and the altered segment are red; the intact player is not
    assert red_share("review-tampered.png") > red_share("review-player.png") + 0.001
    player = cv2.imread(str(tmp_path / "review-player.png"))
    assert player.shape[0] >= 900 and player.std() > 20
