"""Screenshots of the review window: the catalog, the player with its timeline, and the verdict
of a tampered session.

    .venv/bin/python scripts/screenshots_review.py OUT_DIR

Uses the running X display, or starts a private Xvfb when there is none. The sessions are
synthetic but real: sealed with the real SessionSealer into a local folder store, verified and
decrypted by the review code. Files: ``OUT_DIR/review-catalog.png``, ``review-player.png`` and
``review-tampered.png``.
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


def main(argv: list[str] | None = None) -> int:
    return shotkit.main(shoot, __doc__, "1600x1000x24", argv)


def shoot(out: Path) -> int:
    import nacl.public
    import nacl.signing

    from station.crypto.keys import station_text
    from station.logs import AuditLog
    from station.review import qc as qcmod
    from station.review.audit import ReviewAudit
    from station.review.catalog import Catalog
    from station.review.env import ReviewSetup
    from tests import reviewkit as kit
    from ui.qt import application
    from ui.review_window import ReviewWindow
    from uploader.stores import LocalFolderStore

    tmp = Path(tempfile.mkdtemp(prefix="dualrec-review-shots-"))
    ident, sk = nacl.public.PrivateKey.generate(), nacl.signing.SigningKey.generate()
    store = LocalFolderStore(tmp / "store")
    spool = tmp / "spool"
    people = [("agent-0815", "seat-01", "face", "tone", kit.STEPS, True),
              ("agent-0420", "seat-02", "black", "tone", kit.STEPS, True),
              ("agent-0007", "seat-03", "face", "silent", kit.STEPS[:2] + kit.STEPS[3:], True),
              ("agent-1024", "seat-01", "plain", "tone", kit.STEPS, False),
              ("agent-0815", "seat-01", "face", "tone", kit.STEPS, True)]
    folders = []
    for agent, station, camera, audio, steps, consent in people:
        d = kit.make_session(spool, [bytes(ident.public_key)], sk, segments=3, seg_s=4.0, agent=agent,
                             station=station, camera=camera, audio=audio, steps=steps, consent=consent,
                             screen_size=(960, 540), camera_size=(480, 360),
                             extra_events=[{"t_ms": 6500, "kind": "app_focus", "title": "CRM"},
                                           {"t_ms": 9100, "kind": "clipboard", "chars": 11}])
        folders.append((d.name, kit.upload(d, store, station=station)))
    tampered_id, tampered_folder = folders[-1]
    media = store.root / tampered_folder / "seg-000002.media.drseg"
    data = bytearray(media.read_bytes())
    data[len(data) // 2] ^= 0x10
    os.chmod(media, 0o600)
    media.write_bytes(bytes(data))

    app = application()
    audit = ReviewAudit(store, "", AuditLog(tmp / "audit.log"), "supervisor-li@review")
    setup = ReviewSetup(store=store, catalog=Catalog.for_store(store, tmp / "data"), identities=[ident],
                        trusted=[station_text(sk.verify_key)], audit=audit,
                        thresholds=qcmod.Thresholds(required_steps=tuple(kit.STEPS)), tmp_dir=tmp / "tmp")
    win = ReviewWindow(setup, audio=False)
    win.resize(1500, 980)
    win.show()

    def settle(ms: int = 300, until: object = None, timeout_s: float = 60) -> None:
        end = time.monotonic() + (timeout_s if until else ms / 1000)
        while time.monotonic() < end:
            app.processEvents()
            if until is not None and until():  # type: ignore[operator]
                break
            time.sleep(0.01)
        app.processEvents()

    done: list[object] = []
    win.refreshed.connect(done.append)
    win.refresh()
    settle(until=lambda: done)
    settle(until=lambda: all(r.qc_state != "none" for r in win.model.rows))
    written = []
    path = out / "review-catalog.png"
    win.grab().save(str(path))
    written.append(path)

    opened: list[object] = []
    win.opened.connect(opened.append)
    first_id = folders[0][0]
    win.select_session(first_id)
    win.open_session(setup.catalog.get(first_id), reason="weekly quality sample")
    settle(until=lambda: opened)
    marker = [i for i in win.player.timeline.items if i.kind == "marker"][2]
    win.player.seek(marker.start_s + 0.4)
    settle(400)
    path = out / "review-player.png"
    win.grab().save(str(path))
    written.append(path)

    opened.clear()
    win.select_session(tampered_id)
    win.open_session(setup.catalog.get(tampered_id), reason="integrity check")
    settle(until=lambda: opened)
    win.player.seek(5.5)
    settle(400)
    path = out / "review-tampered.png"
    win.grab().save(str(path))
    written.append(path)
    win.close()
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
