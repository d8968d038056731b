"""station upload [--drain] [--timeout S] [--status] [--json]

Exit codes: 0 no error; 1 an error ended the run (a hard failure: credentials, Object Lock
refused, a different object under a key; storage unreachable until the timeout; without
``--drain`` also a failure left for the retry); 3 no error, but a spool session is quarantined
(its files do not match its manifest: not uploaded, kept in the spool, listed in the output).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from station.context import Context

EXIT_OK, EXIT_ERROR, EXIT_QUARANTINED = 0, 1, 3
HELP = "upload sealed sessions to central storage, verify them, then purge the local spool"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--drain", action="store_true",
                   help="keep going (waiting out retries) until nothing is left or a hard failure "
                        "(quarantined sessions are skipped and listed)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", default=None,
                   help="with --drain: give up after this long")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--status", action="store_true",
                   help="only show the backlog and quarantined sessions (reads the journal; uploads nothing)")


def _progress(as_json: bool, quiet: bool) -> Any:
    def emit(ev: dict[str, Any]) -> None:
        if quiet or (ev["event"] in ("warning", "quarantined", "quarantine_lifted") and not as_json):
            return  # already logged and summarised
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
    from uploader.service import Uploader, backlog

    if args.status:
        b = backlog(ctx.data_dir, ctx.station_id)
        return {"status": True, "error": None, "object_lock": b.get("object_lock"),
                "quarantined": b["quarantined"], "backlog": b}
    up = Uploader.from_context(ctx, on_event=_progress(args.json, args.quiet))
    try:
        return up.drain(wait_retries=args.drain, timeout_s=args.timeout if args.drain else None)
    finally:
        up.close()


def human(result: Any) -> str:
    b = result["backlog"]
    done = "" if result.get("status") else f"uploaded {result['uploaded']}, verified {result['verified']}; "
    lines = [f"{done}backlog: {b['count']} files, {b['bytes']} bytes"
             + (f", oldest {b['oldest_age_s']:.0f} s" if b.get("oldest_age_s") else "")]
    if result.get("status") and b.get("last_error"):
        lines.append("last error: " + b["last_error"])
    for q in result.get("quarantined") or []:
        lines.append(f"quarantined: session {q['session_id']} (files kept, not uploaded until they match "
                     f"the manifest again): {q['reason']}")
    lock = result.get("object_lock") or {}
    if lock.get("warning"):
        lines.append("warning: " + lock["warning"])
    if result.get("busy"):
        lines.append("note: " + result["busy"])
    if result.get("error"):
        lines.append("error: " + result["error"])
    return "\n".join(lines)


def exit_code(result: Any) -> int:
    if result.get("error"):
        return EXIT_ERROR
    return EXIT_QUARANTINED if result.get("quarantined") else EXIT_OK
