"""The code stays within the house rules: ruff's selection and mypy strict for the Qt-free core."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_ruff_finds_nothing() -> None:
    proc = subprocess.run([BIN / "ruff", "check", "--output-format", "concise", "."], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_mypy_strict_passes_on_station_recorder_uploader() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy", "station", "recorder", "uploader"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_only_ui_imports_qt() -> None:
    offenders = []
    for pkg in ("station", "recorder", "uploader"):
        for path in (REPO / pkg).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if "import PySide6" in text or "from PySide6" in text:
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
