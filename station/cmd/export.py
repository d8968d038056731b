"""station export SESSION --identity KEYFILE --out DIR --reason TEXT

The one place where plaintext is written to disk on purpose: a reviewer's audited hand-over.
The session is verified first; an audit record (reviewer, session, reason) is appended before
anything is decrypted, and another when the export completed or failed.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from station import logs
from station.cmd.verify import SESSION_ID_RE, BadSessionId, find_source, trusted_keys
from station.context import Context
from station.crypto import keys
from station.crypto.sealed import SealedReader, SealError, Truncated
from station.crypto.verify import MisplacedFile, check_binding, verify_session
from station.errors import UsageError

HELP = "decrypt a session to playable media, operation log and masking ledger (audited)"
log = logs.get("review")

# Problems that do not stop an export: the data that exists is authentic, just incomplete.
BENIGN = {"truncated", "session-open", "crash-recovered"}


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("session_id", metavar="SESSION")
    p.add_argument("--identity", metavar="KEYFILE", action="append", default=[],
                   help="reviewer identity file (archive.key); default: identities in keyring")
    p.add_argument("--out", metavar="DIR", required=True, help="empty or new folder")
    p.add_argument("--reason", metavar="TEXT", help="why (required; goes into the audit log)")
    p.add_argument("--reviewer", metavar="NAME", help="who (default: the OS user)")
    p.add_argument("--allow-damaged", action="store_true",
                   help="export even when verification found altered, missing or untrusted parts")
    p.add_argument("--trust", metavar="ed25519:KEY", action="append", default=[],
                   help="also trust this station key")
    p.add_argument("--no-concat", action="store_true", help="skip the joined session.mkv")
    from uploader.remote import REMOTE_OPTION

    p.add_argument(*REMOTE_OPTION[0], **REMOTE_OPTION[1])


def _create(path: Path, data: bytes | None = None) -> Any:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    fh = os.fdopen(fd, "wb")
    if data is not None:
        with fh:
            fh.write(data)
        return None
    return fh


def _decrypt_to(src: Any, name: str, ids: list[Any], out: Any,
                place: dict[str, Any]) -> dict[str, Any]:
    """Copy a sealed file's plaintext into out; returns bytes and truncation note. A file whose
    authenticated header names another ``place`` (station, session, seq, kind) is refused."""
    n = 0
    with src.open(name) as fh, SealedReader(fh, ids, name=name) as rd:
        check_binding(name, rd.header, **place)
        try:
            for msg in rd.messages():
                out.write(msg)
                n += len(msg)
        except Truncated as exc:
            return {"bytes": n, "truncated": str(exc)}
    return {"bytes": n, "truncated": None}


def _concat(parts: list[Path], dest: Path) -> str | None:
    """Join per-segment Matroska files into one by stream copy; None on success, else why not.

    Works for the recorder's streams (continuous pts across segments, no B-frames); anything
    the muxer rejects leaves only the per-segment files, with the reason in the result's notes.
    """
    import av

    try:
        with _create(dest) as fh:
            out = av.open(fh, "w", format="matroska")
            first = av.open(str(parts[0]))
            streams = {s.index: out.add_stream_from_template(s) for s in first.streams}
            first.close()
            for part in parts:
                with av.open(str(part)) as inp:
                    if len(inp.streams) != len(streams):
                        raise ValueError(f"{part.name}: stream layout differs")
                    for pkt in inp.demux():
                        if pkt.size == 0:  # demuxer flush packet
                            continue
                        pkt.stream = streams[pkt.stream.index]
                        out.mux(pkt)
            out.close()
        return None
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        dest.unlink(missing_ok=True)
        return str(exc)


def run(args: argparse.Namespace, ctx: Context) -> Any:
    if not SESSION_ID_RE.fullmatch(args.session_id):  # before anything is read, written or audited
        raise BadSessionId(args.session_id)
    reason = (args.reason or "").strip()
    if not reason:
        raise UsageError("--reason is required: say why this session is exported "
                         "(it goes into the audit log)")
    out_dir = Path(args.out)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UsageError(f"{out_dir} is not empty; export into a new or empty folder")
    ids = keys.load_identities([Path(p) for p in args.identity], ctx.secrets)
    src = find_source(args, ctx, args.session_id)
    report = verify_session(src, trusted_keys(args, ctx), session_id=args.session_id)
    serious = sorted({p["code"] for p in report["problems"]} - BENIGN)
    if serious and not args.allow_damaged:
        raise UsageError(f"session {args.session_id} failed verification ({', '.join(serious)}); "
                         "run `station verify` for details, or pass --allow-damaged")
    reviewer = args.reviewer or None
    id_fps = [keys.fingerprint(keys.recipient_text(k.public_key)) for k in ids]
    ctx.audit.append("export-started", session=args.session_id, reviewer=reviewer,
                     reason=reason, out=str(out_dir.absolute()), identities=id_fps,
                     verified_intact=report["intact"], problems=sorted(
                         {p["code"] for p in report["problems"]}))
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    written: list[str] = []
    notes: list[str] = []
    try:
        media: list[Path] = []
        logs_out = {"oplog": _create(out_dir / "oplog.jsonl"),
                    "masklog": _create(out_dir / "masklog.jsonl")}
        written += ["oplog.jsonl", "masklog.jsonl"]
        try:
            for seg in report["segments"]:
                seq = seg["seq"]
                for kind, info in sorted(seg["files"].items()):
                    if info["status"] not in ("ok", "truncated"):
                        notes.append(f"segment {seq} {kind}: skipped ({info['status']})")
                        continue
                    place = {"station": report.get("station"), "session": args.session_id,
                             "seq": seq, "kind": kind}
                    if kind == "media":
                        dest = out_dir / f"seg-{seq:06d}.mkv"
                        try:
                            with _create(dest) as fh:
                                res = _decrypt_to(src, info["name"], ids, fh, place)
                        except MisplacedFile as exc:
                            dest.unlink(missing_ok=True)
                            notes.append(f"segment {seq} {kind}: skipped ({exc})")
                            continue
                        media.append(dest)
                        written.append(dest.name)
                    else:
                        try:
                            res = _decrypt_to(src, info["name"], ids, logs_out[kind], place)
                        except MisplacedFile as exc:
                            notes.append(f"segment {seq} {kind}: skipped ({exc})")
                            continue
                    if res["truncated"]:
                        notes.append(f"segment {seq} {kind}: {res['truncated']}")
        finally:
            for fh in logs_out.values():
                fh.close()
        if media and not args.no_concat:
            why = _concat(media, out_dir / "session.mkv")
            if why is None:
                written.append("session.mkv")
            else:
                notes.append(f"session.mkv not written: {why}")
        _create(out_dir / "verify.json", json.dumps(report, ensure_ascii=False, indent=2)
                .encode("utf-8"))
        written.append("verify.json")
    except (SealError, OSError) as exc:
        # plaintext of the part that failed is not left behind unlisted: remove every file the
        # export did not finish, and say which finished files remain
        removed = []
        for f in sorted(out_dir.iterdir()) if out_dir.is_dir() else []:
            if f.name not in written and f.is_file():
                f.unlink()
                removed.append(f.name)
        ctx.audit.append("export-failed", session=args.session_id, reviewer=reviewer,
                         error=str(exc), written=written, removed=removed)
        raise
    ctx.audit.append("export-completed", session=args.session_id, reviewer=reviewer,
                     files=written)
    log.info("exported %s to %s", args.session_id, out_dir)
    return {"session": args.session_id, "out": str(out_dir), "files": written, "notes": notes,
            "intact": report["intact"], "problems": report["problems"]}


def human(result: dict[str, Any]) -> str:
    lines = [f"exported session {result['session']} to {result['out']}"
             + ("" if result["intact"] else " (verification: NOT INTACT, see verify.json)")]
    lines += [f"  {f}" for f in result["files"]]
    lines += [f"  note: {n}" for n in result["notes"]]
    return "\n".join(lines)
