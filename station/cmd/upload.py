"""station upload [--drain] [--timeout S] [--json]"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from station.context import Context

HELP = "upload sealed sessions to central storage, verify them, then purge the local spool"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--drain", action="store_true",
                   help="keep going (waiting out retries) until nothing is left or a hard failure")
    p.add_argument("--timeout", type=float, metavar="SECONDS", default=None,
                   help="with --drain: give up after this long")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _progress(as_json: bool, quiet: bool) -> Any:
    def emit(ev: dict[str, Any]) -> None:
        if quiet or (ev["event"] == "warning" and not as_json):  # already logged and summarised
            return
        if as_json:
            line = json.dumps(ev, ensure_ascii=False)
        elif ev["event"] == "uploaded":
            line = f"uploaded {ev['key']} ({ev.get('bytes') or 0} bytes)"
        elif ev["event"] == "verified":
            line = f"verified {ev['key']}"
        elif ev["event"] == "purged":
            line = f"purged local spool of session {ev['session']} ({ev['objects']} objects)"
        elif ev["event"] == "failed":
            line = (f"failed {ev['key']}: {ev['error']}"
                    + ("" if ev.get("hard") else f" (retry in {ev['retry_in_s']} s)"))
        else:
            line = f"{ev['event']}: {ev.get('message', '')}"
        print(line, file=sys.stderr, flush=True)
    return emit


def run(args: argparse.Namespace, ctx: Context) -> Any:
    from uploader.service import Uploader

    up = Uploader.from_context(ctx, on_event=_progress(args.json, args.quiet))
    try:
        return up.drain(wait_retries=args.drain, timeout_s=args.timeout if args.drain else None)
    finally:
        up.close()


def human(result: Any) -> str:
    b = result["backlog"]
    lines = [f"uploaded {result['uploaded']}, verified {result['verified']}; "
             f"backlog: {b['count']} files, {b['bytes']} bytes"
             + (f", oldest {b['oldest_age_s']:.0f} s" if b.get("oldest_age_s") else "")]
    lock = result.get("object_lock") or {}
    if lock.get("warning"):
        lines.append("warning: " + lock["warning"])
    if result.get("busy"):
        lines.append("note: " + result["busy"])
    if result.get("error"):
        lines.append("error: " + result["error"])
    return "\n".join(lines)


def exit_code(result: Any) -> int:
    return 1 if result.get("error") else 0
