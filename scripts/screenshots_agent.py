"""Screenshots of the agent window in each state, in Simplified Chinese and English.

    .venv/bin/python scripts/screenshots_agent.py OUT_DIR

Uses the running X display, or starts a private Xvfb when there is none. The sessions are fake
recordings (nothing is captured); health values are synthetic so the device panel shows a camera
preview and a level. Files: ``OUT_DIR/agent-<state>-<lang>.png`` for the states idle, consent,
recording, recording-warning, paused and stopped-error. The customer shown is masked like every
customer the station shows.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import shotkit  # noqa: E402


def synthetic_camera(face: bool) -> object:
    import cv2
    import numpy as np

    img = np.full((90, 160, 3), (70, 90, 110), np.uint8)
    cv2.rectangle(img, (0, 60), (160, 90), (60, 60, 60), -1)
    if face:
        cv2.ellipse(img, (80, 42), (18, 24), 0, 0, 360, (150, 180, 220), -1)
        cv2.rectangle(img, (55, 66), (105, 90), (120, 60, 40), -1)
    return img


def main(argv: list[str] | None = None) -> int:
    return shotkit.main(shoot, __doc__, "1280x900x24", argv)


def shoot(out: Path) -> int:
    from station.app import App
    from station.context import Context
    from station.errors import StopCode
    from station.flow import FakeRecording
    from station.shield import shield
    from ui.main import Gui

    made: list[FakeRecording] = []

    def factory(**kw: object) -> FakeRecording:
        made.append(FakeRecording(**kw))
        return made[-1]

    home = Path(tempfile.mkdtemp(prefix="dualrec-shots-"))
    app = App(Context(data_dir=home), factory=factory, desktop=False, upload=False)
    app.flow.default_agent = "agent-0815"
    app.backlog_info = lambda: {  # type: ignore[method-assign]
        "count": 3, "bytes": int(42.7 * (1 << 20)), "last_error": None, "quarantined": []}
    gui = Gui(app, "en")
    gui.window.show()
    qapp = gui.qapp
    customer = shield({"number": "13812345678", "name": "张三丰", "id_number": "110101199003071234"},
                      os.urandom(32))
    real_now = time.monotonic_ns
    written: list[Path] = []

    def settle(ms: int = 250) -> None:
        end = time.monotonic() + ms / 1000
        while time.monotonic() < end:
            qapp.processEvents()
            time.sleep(0.01)

    from station.flow import HealthWatch

    def health(face: bool, level: float) -> None:
        # the cartoon face is no face to the Haar cascade: warn at once only where wanted
        watch = HealthWatch(no_face_s=0 if not face else 3600, silence_s=0)
        made[-1].next_health = {"errors": [], "camera_thumbnail": synthetic_camera(face), "mic_dbfs": level,
                                "streams": {"screen": {"fps": 15.0, "frames": 11310, "dropped": 0}},
                                "disk_free_mb": 48213}
        app.flow.check_health(watch)

    def snap(state: str) -> None:
        for lang in ("zh_CN", "en"):
            gui.tr.set_language(lang)
            settle()
            path = out / f"agent-{state}-{lang}.png"
            gui.window.grab().save(str(path))
            written.append(path)

    flow = app.flow
    snap("idle")
    flow.start(customer=customer, business_ref="CRM-2026-4711", source="api")
    flow._now = lambda: real_now() + 12 * 1_000_000_000
    health(True, -18)
    snap("consent")
    flow.agree()
    flow.tick(flow.steps[0])
    flow.tick(flow.steps[1])
    flow._now = lambda: real_now() + 754 * 1_000_000_000
    health(True, -22)
    snap("recording")
    health(False, -75)
    snap("recording-warning")
    health(True, -20)
    flow.pause("隐私信息录入 / privacy entry")
    snap("paused")
    flow.resume()
    made[-1].fail(StopCode.DEVICE_LOST, "Camera 0 stopped responding.")
    deadline = time.monotonic() + 5
    while flow.state != "stopped" and time.monotonic() < deadline:
        settle(50)
    snap("stopped-error")
    gui.window.close()
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
