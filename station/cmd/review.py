"""station review [--identity KEYFILE]: the supervisor's review window (GUI)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from station.context import Context

HELP = "open the review window: catalog, verified playback, timeline, QC, audited export"


def configure(p: argparse.ArgumentParser) -> None:
    from station.review.env import add_reviewer_options

    add_reviewer_options(p)
    p.add_argument("--reviewer", metavar="NAME", help="name in the audit records (default: OS user@host)")
    p.add_argument("--no-audio", action="store_true", help="play video only")
    p.add_argument("--no-qc", action="store_true", help="do not compute missing QC reports")
    p.add_argument("--smoke", metavar="REASON", help=argparse.SUPPRESS)  # installer/test smoke run


def run(args: argparse.Namespace, ctx: Context) -> Any:
    from station.review import env
    from ui.qt import application
    from ui.review_window import ReviewWindow

    setup = env.build(ctx, [Path(p) for p in args.identity], args.trust, reviewer=args.reviewer)
    setup.compute_qc = not args.no_qc
    app = application()
    win = ReviewWindow(setup, audio=not args.no_audio, language=str(ctx.policy.ui.language))
    win.resize(1400, 950)
    win.show()
    if args.smoke:
        return _smoke(app, win, args.smoke)
    win.refresh()
    code = app.exec()
    return {"exit": int(code)} if ctx.json else None


def _smoke(app: Any, win: Any, reason: str, timeout_s: float = 60) -> dict[str, Any]:
    """Refresh, open the newest session with ``reason``, report what the window showed, quit."""
    import time

    out: dict[str, Any] = {}
    win.refreshed.connect(lambda counts: out.__setitem__("refresh", counts))
    win.opened.connect(lambda report: out.__setitem__("opened", report))
    win.open_failed.connect(lambda msg: out.__setitem__("open_failed", msg))

    def wait(cond: Any) -> None:
        end = time.monotonic() + timeout_s
        while not cond() and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.01)

    win.refresh()
    wait(lambda: "refresh" in out)
    rows = win.model.rows
    result: dict[str, Any] = {"sessions": len(rows), "refresh": out.get("refresh")}
    if rows:
        win.open_session(rows[0], reason=reason)
        wait(lambda: "opened" in out or "open_failed" in out)
        rep = out.get("opened")
        result.update(session=rows[0].session_id, intact=rep["intact"] if rep else None,
                      banner=win.verdict.banner.text(), playing_enabled=win.player.isEnabled(),
                      error=out.get("open_failed"))
    win.close()
    return result
