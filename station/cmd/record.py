"""station record: record one session headless (CLI, tests, demos)."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from station.context import Context
from station.errors import UsageError

HELP = "record one session headless for a given duration"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, required=True, metavar="S", help="seconds to record")
    p.add_argument("--fake-devices", action="store_true",
                   help="synthetic screen, camera and microphone with checkable content")
    p.add_argument("--monitor", metavar="N|all|x,y,w,h", help="screen to record (policy capture.monitor)")
    p.add_argument("--camera", metavar="SRC", help="camera index, URL or video file ('' disables)")
    p.add_argument("--mic", metavar="DEVICE", help="microphone name or index")
    p.add_argument("--agent", help="agent id (default: the OS user)")
    p.add_argument("--business-ref", help="business reference of the call")


def run(args: argparse.Namespace, ctx: Context) -> Any:
    from station.crypto import recover_spool
    from station.crypto.keys import require_signing_key
    from station.recording import RecordingSession

    if not args.duration > 0:
        raise UsageError(f"--duration {args.duration}: expected a positive number of seconds")
    ctx.ensure_dirs()
    from uploader.service import finished_in_journal

    recovered = recover_spool(ctx.spool_dir, require_signing_key(ctx.secrets), ctx.station_id,
                              audit=ctx.audit, finished=finished_in_journal(ctx.data_dir))
    rec = RecordingSession(ctx, fake_devices=args.fake_devices, agent=args.agent,
                           business_ref=args.business_ref, camera=args.camera, mic=args.mic,
                           monitor=args.monitor)
    done = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        rec.start()
        print_started = getattr(args, "json", False) is False
        if print_started:
            print(f"recording {rec.session_id} for {args.duration:g} s", flush=True)
        # counted from the gate, not from when start() returned: what start() does after the gate
        # (audit fsync, threads) must not lengthen the recording
        while not done.is_set() and not rec.wait(0):
            left = args.duration - rec.recorded_s()
            if left <= 0:
                break
            done.wait(min(0.25, left))
        summary = rec.stop()
    except KeyboardInterrupt:
        if rec.state == "idle":
            raise
        summary = rec.stop()
    finally:
        signal.signal(signal.SIGTERM, previous)
    out = {"session_id": summary["session_id"], "segments": summary["segments"],
           "stop_code": summary["stop_code"], "duration_s": summary["duration_s"],
           "session_dir": summary["session_dir"],
           "streams": {n: {"frames": s["frames"], "dropped": s["dropped"],
                           "dropped_full": s["dropped_full"], "dropped_late": s["dropped_late"],
                           **({k: s[k] for k in ("duration_s", "overflows", "silence_inserted", "trimmed",
                                                 "resets")} if n == "audio" else {})}
                       for n, s in summary["streams"].items()},
           "errors": summary["errors"],
           "recovered": [m.get("session") for m in recovered]}
    return out


def human(r: dict[str, Any]) -> str:
    lines = [f"session {r['session_id']}: {r['segments']} segment(s), {r['duration_s']:.1f} s, "
             f"stop code {r['stop_code']}"]
    for name, s in r["streams"].items():
        unit = "samples" if name == "audio" else "frames"
        lines.append(f"  {name:<7} {s['frames']} {unit}, {s['dropped']} dropped")
    if r["recovered"]:
        lines.append(f"recovered crashed session(s): {', '.join(r['recovered'])}")
    for e in r["errors"]:
        lines.append(f"  error: {e}")
    return "\n".join(lines)


def exit_code(r: dict[str, Any]) -> int:
    return 0 if r["stop_code"] == "normal" else 1
