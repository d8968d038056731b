"""station sessions [--remote] [--json] [filters]

Without ``--remote``: the sessions in this seat's spool (id, station, agent, start, duration,
whether finished). With ``--remote``: the review catalog of central storage (refreshed
incrementally, cached in the data dir), with integrity verdict and QC flags; ``--verify`` checks
the listed sessions now, ``--qc`` computes QC once for sessions that have none (needs a reviewer
identity: ``--identity KEYFILE`` or the keyring).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from station.context import Context
from station.errors import UsageError

HELP = "list sessions: this seat's spool, or the review catalog of central storage (--remote)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--remote", action="store_true", help="the catalog of central storage")
    from station.review.env import add_reviewer_options

    add_reviewer_options(p)
    p.add_argument("--full", action="store_true", help="list every day folder, not only recent ones")
    p.add_argument("--verify", action="store_true", help="verify the listed sessions now")
    p.add_argument("--qc", action="store_true", help="compute QC for sessions that have none yet")
    p.add_argument("--from", dest="date_from", metavar="YYYY-MM-DD")
    p.add_argument("--to", dest="date_to", metavar="YYYY-MM-DD")
    p.add_argument("--station")
    p.add_argument("--agent")
    p.add_argument("--min-duration", type=float, metavar="S")
    p.add_argument("--max-duration", type=float, metavar="S")
    p.add_argument("--flag", metavar="QC_FLAG", help="only sessions with this QC flag ('any': any flag)")
    p.add_argument("--missing-step", metavar="STEP", help="only sessions missing this step ('any')")
    p.add_argument("--verdict", help="only this integrity verdict (intact, unverified, incomplete, ...)")
    p.add_argument("--sort", default="start", help="start, id, station, agent, duration, verdict")
    p.add_argument("--asc", action="store_true", help="ascending order")
    p.add_argument("--limit", type=int)


def _local(ctx: Context) -> list[dict[str, Any]]:
    from station.review.catalog import row_from_manifest, start_from_id

    out = []
    spool = ctx.spool_dir
    if not spool.is_dir():
        return []
    for d in sorted(spool.iterdir(), reverse=True):
        if not d.is_dir() or d.name.startswith("."):
            continue
        sj = d / "session.json"
        segs = len(list(d.glob("seg-*.manifest.json")))
        if sj.exists():
            try:
                row = row_from_manifest(json.loads(sj.read_bytes()), f"{ctx.station_id}/{d.name}")
                item = row.to_json()
                item["state"] = "finished"
            except (OSError, ValueError) as exc:
                item = {"id": d.name, "state": f"unreadable session.json: {exc}"}
        else:
            item = {"id": d.name, "station": ctx.station_id, "agent": "", "start": start_from_id(d.name),
                    "duration_s": None, "segments": segs, "state": "recording or not recovered"}
        item.pop("folder", None)
        out.append(item)
    return out


def run(args: argparse.Namespace, ctx: Context) -> Any:
    if not args.remote:
        for opt in ("verify", "qc", "flag", "missing_step", "verdict"):
            if getattr(args, opt):
                raise UsageError(f"--{opt.replace('_', '-')} needs --remote (the spool has no review data)")
        return {"source": str(ctx.spool_dir), "sessions": _local(ctx)}
    from station.review import env
    from station.review import qc as qcmod
    from station.review.catalog import Filter
    from station.review.session import ReviewSession

    setup = env.build(ctx, [Path(p) for p in args.identity], args.trust, need_identity=args.qc)
    cat = setup.catalog
    counts = cat.refresh(full=args.full)
    if setup.identities:
        cat.load_qc_reports(setup.identities)
    flt = Filter(date_from=args.date_from, date_to=args.date_to, station=args.station, agent=args.agent,
                 min_duration_s=args.min_duration, max_duration_s=args.max_duration, qc_flag=args.flag,
                 missing_step=args.missing_step, verdict=args.verdict)
    try:
        rows = cat.query(flt, args.sort, not args.asc, args.limit)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.verify or args.qc:
        for row in rows:
            if row.verdict == "incomplete":
                continue
            rs = ReviewSession(setup.store, row.folder, setup.identities, setup.trusted, setup.audit,
                               row.session_id)
            rs.verify()
            cat.set_verdict(row.session_id, rs.verdict(),
                            "; ".join(p["detail"] for p in (rs.report or {}).get("problems", [])[:5]))
            if args.qc and row.qc_state in ("none", "error") and not row.has_qc_object:
                report = qcmod.analyse_session(rs, setup.thresholds)
                recips = rs.recipients(setup.recipients)
                if recips:
                    qcmod.store_qc(rs, report, recips, setup.tmp_dir)
                cat.set_qc(row.session_id, report.flags, report.steps["missing"], state="computed")
        rows = cat.query(flt, args.sort, not args.asc, args.limit)
    return {"source": setup.store.describe(), "refresh": counts,
            "sessions": [r.to_json() for r in rows]}


def human(result: dict[str, Any]) -> str:
    rows = result["sessions"]
    if not rows:
        return f"no sessions in {result['source']}"
    lines = [f"{len(rows)} session(s) in {result['source']}",
             f"{'SESSION':26} {'START (UTC)':20} {'STATION':12} {'AGENT':12} {'DUR':>7} "
             f"{'INTEGRITY':14} QC"]
    for r in rows:
        dur = r.get("duration_s")
        dur_text = f"{int(dur) // 60}:{int(dur) % 60:02d}" if isinstance(dur, (int, float)) else "-"
        verdict = r.get("verdict", r.get("state", ""))
        flags = ",".join(r.get("qc_flags", [])) or ("-" if r.get("qc", "none") != "none" else "")
        lines.append(f"{r['id']:26} {str(r.get('start', ''))[:19]:20} {str(r.get('station', ''))[:12]:12} "
                     f"{str(r.get('agent', ''))[:12]:12} {dur_text:>7} {str(verdict)[:14]:14} {flags}")
    return "\n".join(lines)
