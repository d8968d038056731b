"""station review [--identity KEYFILE]: the supervisor's review window (GUI)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from station.context import Context

HELP = "open the review window: catalog, verified playback, timeline, QC, audited export"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--identity", metavar="KEYFILE", action="append", default=[],
                   help="reviewer identity file (archive.key); default: identities in the keyring")
    p.add_argument("--trust", metavar="ed25519:KEY", action="append", default=[],
                   help="also trust this station key")
    p.add_argument("--reviewer", metavar="NAME", help="name in the audit records (default: OS user@host)")
    p.add_argument("--no-audio", action="store_true", help="play video only")
    p.add_argument("--no-qc", action="store_true", help="do not compute missing QC reports")


def run(args: argparse.Namespace, ctx: Context) -> Any:
    from station.review import env
    from ui.qt import application
    from ui.review_window import ReviewWindow

    setup = env.build(ctx, [Path(p) for p in args.identity], args.trust, reviewer=args.reviewer)
    setup.compute_qc = not args.no_qc
    app = application()
    win = ReviewWindow(setup, audio=not args.no_audio)
    win.resize(1400, 950)
    win.show()
    win.refresh()
    code = app.exec()
    return {"exit": int(code)} if ctx.json else None
