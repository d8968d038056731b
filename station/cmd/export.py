"""station export SESSION --identity KEYFILE --out DIR --reason TEXT

The one place where plaintext is written to disk on purpose: a reviewer's audited hand-over.
The session is verified first; an audit record (reviewer, session, reason) is appended before
anything is decrypted, and another when the export completed or failed.

What it writes is an evidence pack a third party can check (docs/review.md, "Export"): the
decrypted media (per segment and joined), operation log, masking ledger and verification report,
plus ``evidence/`` (the station-signed manifests and ``session.json`` byte for byte as stored,
the audit record of this export, the station key, a checker script), ``export.json`` (what was
exported, skipped and why), ``README.txt`` and ``SHA256SUMS`` over every file.

Exit code: 0 exported; 5 exported, but the joined ``session.mkv`` could not be written (the
per-segment files are complete; the reason is the first line of the output); 1 refused or failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

from station import logs
from station.cmd.verify import SESSION_ID_RE, BadSessionId, find_source, trusted_keys
from station.context import Context
from station.crypto import keys
from station.crypto.sealed import SealedReader, SealError, Truncated
from station.crypto.session import MANIFEST_RE, SEG_RE, SESSION_MANIFEST
from station.crypto.verify import MisplacedFile, check_binding, verdict_line, verify_session
from station.errors import UsageError

HELP = "decrypt a session to playable media, operation log and masking ledger (audited)"
log = logs.get("review")

# Problems that do not stop an export: the data that exists is authentic, just incomplete.
# "session-open" (no session.json: nothing signed closes the session) needs --allow-incomplete;
# all three are stated in the output, export.json and README.txt, never passed over silently.
BENIGN = {"truncated", "session-open", "crash-recovered"}
EXIT_JOIN_FAILED = 5
EVIDENCE = "evidence"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("session_id", metavar="SESSION")
    p.add_argument("--identity", metavar="KEYFILE", action="append", default=[],
                   help="reviewer identity file (archive.key); default: identities in keyring")
    p.add_argument("--out", metavar="DIR", required=True, help="empty or new folder")
    p.add_argument("--reason", metavar="TEXT", help="why (required; goes into the audit log)")
    p.add_argument("--reviewer", metavar="NAME", help="who (default: the OS user)")
    p.add_argument("--allow-damaged", action="store_true",
                   help="export even when verification found altered, missing or untrusted parts "
                        "(every part left out is listed); implies --allow-incomplete")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="export a session without session.json (still recording or uploading, "
                        "or crashed and not yet recovered)")
    p.add_argument("--with-sealed", action="store_true",
                   help="also copy the sealed (encrypted) segment files into evidence/")
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


# --- the joined session.mkv -------------------------------------------------------------------
class _JoinError(Exception):
    """Why session.mkv cannot be joined."""


class _Cut(Exception):
    """A segment's Matroska data ends in the middle (a truncated segment)."""


def _stream_key(s: Any) -> tuple[Any, ...]:
    """What must be equal in every segment for a stream copy to play: one codec set-up for all."""
    cc = s.codec_context
    if s.type == "video":
        extra: tuple[Any, ...] = (cc.width, cc.height, cc.format.name if cc.format else None)
    elif s.type == "audio":
        extra = (cc.sample_rate, cc.layout.name if cc.layout else None)
    else:
        extra = ()
    return (s.type, cc.name, s.metadata.get("title"), bytes(cc.extradata or b""), *extra)


def _same_layout(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    """Stream keys equal, where a field the demuxer could not fill (None: e.g. the pixel format
    of a stream cut before its first frame) matches anything."""
    return len(a) == len(b) and all(
        len(x) == len(y) and all(u is None or v is None or u == v for u, v in zip(x, y, strict=True))
        for x, y in zip(a, b, strict=True))


def _describe(key: tuple[Any, ...]) -> str:
    return f"{key[2] or key[0]} {key[1]}" + (f" {key[4]}x{key[5]}" if key[0] == "video" else "")


def _demux(inp: Any) -> Any:
    import av

    it = iter(inp.demux())
    while True:
        try:
            pkt = next(it)
        except StopIteration:
            return
        except av.error.FFmpegError as exc:
            raise _Cut(str(exc)) from exc
        yield pkt


def _probe(path: Path) -> tuple[list[tuple[Any, ...]], Fraction | None]:
    """(stream keys, session time where the segment's real audio starts). An AAC stream starts
    with the encoder's priming frame (``delay`` samples the decoder drops), so the audio of
    segment k begins ``delay`` after its first packet."""
    import av

    with av.open(str(path)) as c:
        streams = [_stream_key(s) for s in c.streams]
        audio = next((s for s in c.streams if s.type == "audio"), None)
        start = None
        if audio is not None:
            cc: Any = audio.codec_context
            delay = Fraction(cc.delay or (1024 if cc.name == "aac" else 0), cc.sample_rate or 48000)
            try:
                for pkt in _demux(c):
                    if pkt.stream.index == audio.index and pkt.size and pkt.pts is not None:
                        start = pkt.pts * pkt.time_base + delay
                        break
            except _Cut:
                pass
    return streams, start


def _concat(parts: list[tuple[int, Path]], dest: Path, cut: frozenset[int] = frozenset()
            ) -> tuple[str | None, list[str]]:
    """Join per-segment Matroska files into one by stream copy: (None, notes) on success, else
    (why not, notes); on failure ``dest`` is removed.

    Timestamps are the session clock in every segment, so no shifting is needed. Each segment
    has its own encoders: video starts with a keyframe, but each AAC stream starts with a priming
    frame and ends with padding, so the audio of neighbouring segments overlaps by about two
    frames (the muxer refused that: "Invalid argument", non-monotonic dts). The priming frame of
    every later segment and each segment's padding past the next segment's first real audio are
    left out (at most one 21 ms frame per boundary decodes without its predecessor's overlap).
    Segments whose codec set-up differs (another resolution, other stream layout) cannot be
    stream-copied: that is a failure, as are video timestamps that go back. A segment listed in
    ``cut`` (truncated) is joined up to its cut, with a note.
    """
    import av

    notes: list[str] = []
    try:
        probes: list[tuple[int, Path, list[tuple[Any, ...]], Fraction | None]] = []
        for seq, path in parts:
            try:
                probes.append((seq, path, *_probe(path)))
            except av.error.FFmpegError as exc:
                if seq not in cut:
                    raise _JoinError(f"segment {seq} cannot be read: {exc}") from exc
                notes.append(f"session.mkv: segment {seq} left out (truncated before its "
                             f"first readable data: {exc})")
        if not probes:
            raise _JoinError("no segment has readable media")
        seq0, _, layout, _ = probes[0]
        for seq, _, streams, _ in probes[1:]:
            if not _same_layout(streams, layout):
                raise _JoinError(
                    f"segment {seq} has other streams than segment {seq0} "
                    f"({', '.join(map(_describe, streams))} vs {', '.join(map(_describe, layout))}), "
                    "so they cannot be joined by stream copy; play the segment files in order")
        dropped = 0
        with _create(dest) as fh, av.open(fh, "w", format="matroska") as out:
            with av.open(str(probes[0][1])) as first:
                ostreams = {}
                for s in first.streams:  # the titles name the streams for players (screen, ...)
                    ostreams[s.index] = o = out.add_stream_from_template(s)
                    o.metadata.update({k: v for k, v in s.metadata.items()
                                       if k.upper() != "DURATION"})
                kinds = {s.index: (s.type, s.metadata.get("title") or s.type) for s in first.streams}
            last: dict[int, Fraction] = {}
            for i, (seq, path, _, start) in enumerate(probes):
                nxt = probes[i + 1][3] if i + 1 < len(probes) else None
                with av.open(str(path)) as inp:
                    try:
                        for pkt in _demux(inp):
                            if pkt.size == 0 or (pkt.dts is None and pkt.pts is None):
                                continue  # the demuxer's flush packets
                            idx = pkt.stream.index
                            t = Fraction(pkt.dts if pkt.dts is not None else pkt.pts) * pkt.time_base
                            if kinds[idx][0] == "audio":
                                half = Fraction(pkt.duration or 0) * pkt.time_base / 2
                                if i > 0 and start is not None and t < start - half:
                                    continue  # this segment's priming frame
                                if nxt is not None and t + half > nxt:
                                    continue  # padding past the next segment's first audio
                                if idx in last and t <= last[idx]:
                                    dropped += 1
                                    continue
                            elif idx in last and t <= last[idx]:
                                raise _JoinError(
                                    f"segment {seq}: {kinds[idx][1]} timestamps go back "
                                    f"({float(t):.3f} s after {float(last[idx]):.3f} s)")
                            last[idx] = t
                            pkt.stream = ostreams[idx]
                            out.mux(pkt)
                    except _Cut as exc:
                        if seq not in cut:
                            raise _JoinError(f"segment {seq} is unreadable after "
                                             f"{float(max(last.values(), default=0)):.3f} s: "
                                             f"{exc}") from exc
                        notes.append(f"session.mkv: segment {seq} joined up to its cut ({exc})")
                    else:  # a cut at a message boundary ends the Matroska data cleanly
                        if seq in cut:
                            notes.append(f"session.mkv: segment {seq} joined up to its cut")
        if dropped:
            notes.append(f"session.mkv: {dropped} audio packet(s) left out whose timestamps "
                         "overlapped the packet before (the segment files keep them)")
        return None, notes
    except (_JoinError, av.error.FFmpegError, ValueError, OSError) as exc:
        dest.unlink(missing_ok=True)
        return str(exc) or type(exc).__name__, notes


# --- the evidence pack ------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _skips(report: dict[str, Any], names: list[str]) -> tuple[list[dict[str, Any]],
                                                                  list[dict[str, Any]]]:
    """(segments to export, parts left out). Every segment the chain or session.json counts and
    every sealed file in the folder is either exported or listed as left out with the reason."""
    by_seq = {s["seq"]: s for s in report["segments"]}
    skipped: list[dict[str, Any]] = []
    todo = []
    for seq in range(1, max([report.get("segments_expected") or 0, *by_seq]) + 1):
        seg = by_seq.get(seq)
        if seg is None or not seg["files"]:
            why = "; ".join(seg["problems"]) if seg and seg["problems"] else "no segment manifest"
            skipped.append({"seq": seq, "kind": None, "file": None, "why": why})
            continue
        todo.append(seg)
        for kind, info in sorted(seg["files"].items()):
            if info["status"] not in ("ok", "truncated"):
                why = "; ".join(p for p in seg["problems"] if info["name"] in p) or info["status"]
                skipped.append({"seq": seq, "kind": kind, "file": info["name"],
                                "why": f"{info['status']}: {why}"})
    listed = {info["name"] for s in report["segments"] for info in s["files"].values()}
    for name in names:
        m = SEG_RE.fullmatch(name)
        if m and name not in listed:
            skipped.append({"seq": int(m.group(1)), "kind": m.group(2), "file": name,
                            "why": "not listed by any signed manifest"})
    skipped.sort(key=lambda s: (s["seq"], s["kind"] or ""))
    return todo, skipped


def _skip_line(s: dict[str, Any]) -> str:
    what = f"segment {s['seq']}" + (f" {s['kind']} ({s['file']})" if s["kind"] else " (all files)")
    return f"{what}: {s['why']}"


FILE_INFO = [  # (name or pattern, English, Chinese)
    ("session.mkv", "all exported segments joined into one file (screen, camera and audio "
     "streams; stream copy, no re-encoding)",
     "所有导出分段合并的完整录像（屏幕、摄像头、音频，直接复制码流，未重新编码）"),
    ("seg-NNNNNN.mkv", "the media of segment NNNNNN exactly as decrypted (Matroska: screen, "
     "camera, audio)", "第 NNNNNN 段解密后的原始媒体（Matroska：屏幕、摄像头、音频）"),
    ("oplog.jsonl", "operation log (JSON lines: session steps, consent, markers, windows, "
     "clicks), all segments in order", "操作日志（JSON Lines：流程步骤、同意、标记、窗口、点击），按分段顺序"),
    ("masklog.jsonl", "masking ledger (what was masked on screen, when, by which rule)",
     "脱敏记录（屏幕上何时按何规则遮蔽了什么）"),
    ("verify.json", "the verification report at export time (signatures, chain, hashes, "
     "verdict)", "导出时的校验报告（签名、哈希链、哈希值、结论）"),
    ("export.json", "this export: who, why, when, verdict, files, parts left out, warnings",
     "本次导出说明：导出人、原因、时间、结论、文件、未导出部分、警告"),
    ("README.txt", "this file", "本说明文件"),
    ("SHA256SUMS", "SHA-256 of every other file of this folder (`sha256sum -c` format)",
     "本文件夹内其他所有文件的 SHA-256（`sha256sum -c` 格式）"),
    (f"{EVIDENCE}/session.json", "the session manifest signed by the station, byte for byte as "
     "stored (closes the hash chain)", "工作站签名的会话清单，与存储内容逐字节一致（哈希链的终点）"),
    (f"{EVIDENCE}/seg-NNNNNN.manifest.json", "the signed segment manifests, byte for byte as "
     "stored (SHA-256 and size of each sealed file, hash chain)",
     "工作站签名的分段清单，与存储内容逐字节一致（各加密文件的 SHA-256 与大小、哈希链）"),
    (f"{EVIDENCE}/seg-NNNNNN.*.drseg", "the sealed (encrypted) files as stored (only with "
     "--with-sealed)", "存储中的加密原文件（仅在使用 --with-sealed 时）"),
    (f"{EVIDENCE}/audit-export-started.json", "the audit record written before anything was "
     "decrypted, exactly the line of the exporter's audit log",
     "解密前写入的审计记录，与导出方审计日志中的该行完全一致"),
    (f"{EVIDENCE}/station-keys.txt", "the station key that signed the manifests, and the keys "
     "the exporter trusted", "签署清单的工作站公钥，以及导出方信任的公钥"),
    (f"{EVIDENCE}/check_evidence.py", "checker for SHA256SUMS, signatures and hash chain "
     "(Python 3 + PyNaCl)", "核验脚本：SHA256SUMS、签名、哈希链（需 Python 3 与 PyNaCl）"),
]


def _readme(info: dict[str, Any], files: list[str]) -> str:
    present = set(files) | {"README.txt", "SHA256SUMS", "export.json"}

    def shown(pattern: str) -> bool:
        import fnmatch

        return any(fnmatch.fnmatch(f, pattern.replace("NNNNNN", "[0-9]" * 6)) for f in present)

    lines = [
        "DualRec Station - evidence pack / 双录证据包",
        "=" * 44,
        "",
        f"Session / 会话:          {info['session']}",
        f"Station / 工作站:        {info['station']}",
        f"Exported (UTC) / 导出时间: {info['exported_utc']}",
        f"Reviewer / 导出人:       {info['reviewer'] or info['user']}",
        f"Reason / 原因:           {info['reason']}",
        f"Verification / 校验结论: {info['verdict_line']}",
        "",
        "This folder was written by `station export`, the audited hand-over of a recorded",
        "session. It holds DECRYPTED recordings of customers: keep it as confidential as the",
        "recording itself.",
        "本文件夹由 `station export`（经审计的导出）生成，含解密后的客户录音录像，",
        "请按原始录制同等保密级别保管。",
        "",
    ]
    if info["warnings"]:
        lines += ["WARNINGS / 警告", "---------------"]
        lines += [f"! {w}" for w in info["warnings"]] + [""]
    lines += ["PARTS LEFT OUT / 未导出部分", "--------------------------"]
    if info["skipped"]:
        lines += [f"- {_skip_line(s)}" for s in info["skipped"]]
    else:
        lines.append("none: every segment the session's signed manifests list was exported. / 无：已导出全部分段。")
    lines += ["", "FILES / 文件", "------------"]
    for pattern, en, zh in FILE_INFO:
        if shown(pattern):
            lines += [pattern, f"    {en}", f"    {zh}"]
    key = info["signer"] or "(none)"
    lines += [
        "",
        "HOW TO CHECK / 如何核验",
        "----------------------",
        "1. In this folder / 在本文件夹中运行:  sha256sum -c SHA256SUMS",
        "   Every file is unchanged since the export. / 确认所有文件自导出后未被改动。",
        "2. python3 evidence/check_evidence.py      (pip install pynacl)",
        "   Checks SHA256SUMS (and that no file was added), that every manifest and session.json",
        "   is exactly its canonical JSON and carries a valid Ed25519 signature of the station",
        "   key, the hash chain (prev of each manifest, last_hash and segment count of",
        "   session.json) and, with sealed copies, their SHA-256 and size. Exit code 0: all hold.",
        "   校验 SHA256SUMS（且无新增文件）、每个清单及 session.json 为规范 JSON 且带有效的工作站",
        "   Ed25519 签名、哈希链（prev、last_hash、分段数），以及加密副本的 SHA-256 与大小。",
        f"3. Confirm the station key with the site (its enrolment approval): {key}",
        f"   fingerprint / 指纹: {keys.fingerprint(key) if info['signer'] else '-'}",
        "   `check_evidence.py --key ed25519:...` checks against a key you obtained yourself.",
        "   请向站点（工作站登记审批记录）核实该工作站公钥。",
        "4. The media here is the decryption of the sealed files the manifests sign; the manifests",
        "   sign the ciphertext, so this link is what the exporter attests (audit record in",
        "   evidence/audit-export-started.json; the export-completed record of the same audit",
        "   log carries the SHA-256 of SHA256SUMS). A holder of the site's archive key can",
        "   re-check it: decrypt the sealed files (evidence/*.drseg with --with-sealed, or from",
        "   central storage) and compare with seg-NNNNNN.mkv byte for byte.",
        "   明文媒体与签名清单之间的对应由导出方的解密（审计记录）证明；持有归档私钥者可",
        "   解密加密文件并与 seg-NNNNNN.mkv 逐字节比对。",
        "",
        "Format: docs/format.md of DualRec Station (sections 3-5, 8). / 格式见 docs/format.md。",
    ]
    return "\n".join(lines) + "\n"


def _station_keys(signers: list[str], trusted: Any) -> str:
    lines = ["# Station key(s) that signed this session's manifests / 签署清单的工作站公钥"]
    lines += [f"signer: {s}" for s in signers]
    lines += [f"# fingerprint {s}: {keys.fingerprint(s)}" for s in signers]
    lines.append("# Keys the exporter trusted when it verified (STATION=KEY: bound to that station)"
                 " / 导出方校验时信任的公钥")
    lines += [f"trusted: {t}" for t in trusted]
    lines += [f"# not trusted: {k}: {why}" for k, why in sorted(getattr(trusted, "reasons",
                                                                          {}).items())]
    return "\n".join(lines) + "\n"


def _write_evidence(src: Any, out_dir: Path, names: list[str], report: dict[str, Any],
                    trusted: Any, started: dict[str, Any], with_sealed: bool,
                    written: list[str]) -> list[str]:
    """Copy the signed cleartext (and, asked for, the sealed files) byte for byte into
    evidence/, with the audit record, station keys and checker; returns the signers seen."""
    ev = out_dir / EVIDENCE
    ev.mkdir(mode=0o700)
    signers: list[str] = []
    for name in names:
        if name == SESSION_MANIFEST or MANIFEST_RE.fullmatch(name):
            data = src.read_bytes(name)
            _create(ev / name, data)
            written.append(f"{EVIDENCE}/{name}")
            try:
                signer = json.loads(data).get("signer")
            except (ValueError, AttributeError):
                signer = None
            if isinstance(signer, str) and signer not in signers:
                signers.append(signer)
        elif with_sealed and SEG_RE.fullmatch(name):
            with src.open(name) as fh, _create(ev / name) as dst:
                shutil.copyfileobj(fh, dst, 1 << 20)
            written.append(f"{EVIDENCE}/{name}")
    line = json.dumps(started, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    _create(ev / "audit-export-started.json", (line + "\n").encode("utf-8"))
    written.append(f"{EVIDENCE}/audit-export-started.json")
    if report.get("signer") and report["signer"] in signers:  # session.json's signer first
        signers.remove(report["signer"])
        signers.insert(0, report["signer"])
    _create(ev / "station-keys.txt", _station_keys(signers, trusted).encode("utf-8"))
    written.append(f"{EVIDENCE}/station-keys.txt")
    _create(ev / "check_evidence.py", CHECKER.encode("utf-8"))
    written.append(f"{EVIDENCE}/check_evidence.py")
    return signers


# --- the command ------------------------------------------------------------------------------
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
    allow_damaged = bool(getattr(args, "allow_damaged", False))
    allow_incomplete = bool(getattr(args, "allow_incomplete", False)) or allow_damaged
    ids = keys.load_identities([Path(p) for p in args.identity], ctx.secrets)
    src = find_source(args, ctx, args.session_id)
    trusted = trusted_keys(args, ctx)
    report = verify_session(src, trusted, session_id=args.session_id)
    codes = sorted({p["code"] for p in report["problems"]})
    serious = sorted(set(codes) - BENIGN)
    if serious and not allow_damaged:
        raise UsageError(f"session {args.session_id} failed verification ({', '.join(serious)}); "
                         "run `station verify` for details, or pass --allow-damaged")
    if "session-open" in codes and not allow_incomplete:
        raise UsageError(f"session {args.session_id} has no session.json: it is still being "
                         "recorded or uploaded, or crashed and was not recovered yet, so nothing "
                         "signed says where it ends (segments at its end may be missing "
                         "unnoticed); export it once it is closed, or pass --allow-incomplete")
    names = src.list()
    segments, skipped = _skips(report, names)
    reviewer = args.reviewer or None
    id_fps = [keys.fingerprint(keys.recipient_text(k.public_key)) for k in ids]
    started = ctx.audit.append("export-started", session=args.session_id, reviewer=reviewer,
                               reason=reason, out=str(out_dir.absolute()), identities=id_fps,
                               verified_intact=report["intact"], verdict=report["verdict"],
                               problems=codes, skipped=[_skip_line(s) for s in skipped])
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    written: list[str] = []
    notes: list[str] = []
    warnings: list[str] = []
    if not report["intact"]:
        warnings.append(f"verification: {verdict_line(report)} ({', '.join(codes)}; "
                        "see verify.json)")
    if "session-open" in codes:
        warnings.append("no session.json: the session was not closed; segments after the last "
                        "one exported may exist and are unknown to this export")
    if skipped:
        warnings.append(f"{len(skipped)} part(s) of the session left out, listed under "
                        "'skipped' (export.json, README.txt)")
    joined: dict[str, Any] | None = None
    digest = None
    try:
        media: list[tuple[int, Path]] = []
        cut: set[int] = set()
        logs_out = {"oplog": _create(out_dir / "oplog.jsonl"),
                    "masklog": _create(out_dir / "masklog.jsonl")}
        written += ["oplog.jsonl", "masklog.jsonl"]
        try:
            for seg in segments:
                seq = seg["seq"]
                for kind, info in sorted(seg["files"].items()):
                    if info["status"] not in ("ok", "truncated"):
                        continue  # listed in skipped
                    place = {"station": report.get("station"), "session": args.session_id,
                             "seq": seq, "kind": kind}
                    if kind == "media":
                        dest = out_dir / f"seg-{seq:06d}.mkv"
                        try:
                            with _create(dest) as fh:
                                res = _decrypt_to(src, info["name"], ids, fh, place)
                        except MisplacedFile as exc:
                            dest.unlink(missing_ok=True)
                            skipped.append({"seq": seq, "kind": kind, "file": info["name"],
                                            "why": f"refused while decrypting: {exc}"})
                            continue
                        if res["bytes"] == 0:  # e.g. the disk filled as the segment opened
                            dest.unlink()
                            skipped.append({"seq": seq, "kind": kind, "file": info["name"],
                                            "why": "it holds no media (the recording ended as "
                                                   "this segment opened)"})
                            continue
                        media.append((seq, dest))
                        written.append(dest.name)
                        if res["truncated"]:
                            cut.add(seq)
                    else:
                        try:
                            res = _decrypt_to(src, info["name"], ids, logs_out[kind], place)
                        except MisplacedFile as exc:
                            skipped.append({"seq": seq, "kind": kind, "file": info["name"],
                                            "why": f"refused while decrypting: {exc}"})
                            continue
                    if res["truncated"]:
                        notes.append(f"segment {seq} {kind}: {res['truncated']}")
        finally:
            for fh in logs_out.values():
                fh.close()
        skipped.sort(key=lambda s: (s["seq"], s["kind"] or ""))
        if media and not args.no_concat:
            why, join_notes = _concat(media, out_dir / "session.mkv", frozenset(cut))
            notes += join_notes
            joined = {"written": why is None, "error": why}
            if why is None:
                written.append("session.mkv")
                gaps = sorted(set(range(media[0][0], media[-1][0] + 1)) - {s for s, _ in media})
                if gaps:
                    warnings.append("session.mkv has gaps where segment(s) "
                                    f"{', '.join(map(str, gaps))} are left out")
            else:
                warnings.insert(0, f"session.mkv NOT written: {why}. The segment files "
                                "seg-NNNNNN.mkv are complete; play them in order")
        _create(out_dir / "verify.json", json.dumps(report, ensure_ascii=False, indent=2)
                .encode("utf-8"))
        written.append("verify.json")
        signers = _write_evidence(src, out_dir, names, report, trusted, started,
                                  bool(getattr(args, "with_sealed", False)), written)
        info = {"session": args.session_id, "station": report.get("station"),
                "exported_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "reviewer": reviewer, "user": started.get("user"), "reason": reason,
                "out": str(out_dir.absolute()), "identities": id_fps,
                "verdict": report["verdict"], "verdict_line": verdict_line(report),
                "intact": report["intact"], "problems": codes,
                "signer": signers[0] if signers else None, "session_mkv": joined,
                "skipped": skipped, "warnings": warnings, "notes": notes,
                "audit_started_sha256": hashlib.sha256(json.dumps(
                    started, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
                    .encode("utf-8")).hexdigest()}
        _create(out_dir / "export.json", json.dumps(
            {**info, "files": [*written, "export.json", "README.txt", "SHA256SUMS"]},
            ensure_ascii=False, indent=2).encode("utf-8"))
        written.append("export.json")
        _create(out_dir / "README.txt", _readme(info, written).encode("utf-8"))
        written.append("README.txt")
        sums = "".join(f"{_sha256(out_dir / f)}  {f}\n" for f in sorted(written))
        _create(out_dir / "SHA256SUMS", sums.encode("utf-8"))
        written.append("SHA256SUMS")
        digest = hashlib.sha256(sums.encode("utf-8")).hexdigest()
    except (SealError, OSError) as exc:
        # plaintext of the part that failed is not left behind unlisted: remove every file the
        # export did not finish, and say which finished files remain
        removed = []
        if out_dir.is_dir():
            for f in sorted(out_dir.rglob("*"), reverse=True):
                rel = f.relative_to(out_dir).as_posix()
                if f.is_file() and rel not in written:
                    f.unlink()
                    removed.append(rel)
                elif f.is_dir() and not any(f.iterdir()):
                    f.rmdir()
        ctx.audit.append("export-failed", session=args.session_id, reviewer=reviewer,
                         error=str(exc), written=written, removed=sorted(removed))
        raise
    ctx.audit.append("export-completed", session=args.session_id, reviewer=reviewer,
                     files=written, sha256sums=digest, session_mkv=joined,
                     skipped=[_skip_line(s) for s in skipped], warnings=warnings)
    log.info("exported %s to %s", args.session_id, out_dir)
    return {"session": args.session_id, "out": str(out_dir), "files": written, "notes": notes,
            "warnings": warnings, "skipped": skipped, "session_mkv": joined,
            "intact": report["intact"], "verdict": report["verdict"],
            "verdict_line": verdict_line(report), "problems": report["problems"],
            "sha256sums": digest}


def human(result: dict[str, Any]) -> str:
    lines = [f"WARNING: {w}" for w in result.get("warnings", [])]
    lines.append(f"exported session {result['session']} to {result['out']} (verification: "
                 f"{result.get('verdict_line') or ('INTACT' if result['intact'] else 'NOT INTACT')})")
    if result.get("skipped"):
        lines.append("  LEFT OUT (not exported):")
        lines += [f"    {_skip_line(s)}" for s in result["skipped"]]
    lines += [f"  {f}" for f in result["files"]]
    lines += [f"  note: {n}" for n in result["notes"]]
    if result.get("sha256sums"):
        lines.append(f"  check: cd {result['out']} && sha256sum -c SHA256SUMS && "
                     "python3 evidence/check_evidence.py (see README.txt)")
    return "\n".join(lines)


def exit_code(result: dict[str, Any]) -> int:
    """0 exported; 5 exported, but the joined session.mkv could not be written."""
    joined = result.get("session_mkv")
    return EXIT_JOIN_FAILED if joined and not joined.get("written") else 0


# The checker copied into every pack (evidence/check_evidence.py): standalone, Python 3 + PyNaCl.
CHECKER = r'''#!/usr/bin/env python3
"""Check a DualRec Station evidence pack (a folder written by `station export`).

Usage:  python3 evidence/check_evidence.py [--key ed25519:KEY] [PACK_FOLDER]
Needs Python 3.8+ and PyNaCl (pip install pynacl). Checks, with the format of DualRec
Station's docs/format.md (sections 3, 4, 4.1 and 5):
  1. SHA256SUMS: every file of the pack is listed, present and unchanged;
  2. evidence/session.json and evidence/seg-NNNNNN.manifest.json: each is exactly its canonical
     JSON plus one newline and carries a valid Ed25519 signature by the station key (--key, else
     the signer in evidence/station-keys.txt: confirm that key with the site);
  3. the hash chain: manifest 1's prev is 64 zeros, manifest k's prev the SHA-256 of manifest
     k-1, session.json's last_hash that of the last manifest and its segment count theirs;
  4. sealed copies evidence/seg-NNNNNN.KIND.drseg, if present: SHA-256 and size as signed.
Exit code 0 when every check holds, 1 otherwise.
"""
import base64
import hashlib
import json
import re
import sys
from pathlib import Path


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main(argv):
    args = list(argv)
    key = None
    if "--key" in args:
        i = args.index("--key")
        key = args[i + 1].strip()
        del args[i:i + 2]
    pack = Path(args[0]) if args else Path(__file__).resolve().parent.parent
    ev = pack / "evidence"
    bad, good = [], []

    sums = pack / "SHA256SUMS"
    if not sums.is_file():
        bad.append("SHA256SUMS is missing")
    else:
        listed = set()
        for n, line in enumerate(sums.read_text("utf-8").splitlines(), 1):
            m = re.fullmatch(r"([0-9a-f]{64})  (.+)", line)
            if not m:
                bad.append("SHA256SUMS line %d is not 'sha256  path'" % n)
                continue
            digest, name = m.groups()
            listed.add(name)
            p = pack / name
            if ".." in Path(name).parts or not p.is_file():
                bad.append("%s: listed in SHA256SUMS, missing" % name)
            elif sha256_file(p) != digest:
                bad.append("%s: changed since the export (SHA-256 differs from SHA256SUMS)" % name)
        present = {p.relative_to(pack).as_posix() for p in pack.rglob("*") if p.is_file()}
        for name in sorted(present - listed - {"SHA256SUMS"}):
            bad.append("%s: not in SHA256SUMS (added after the export)" % name)
        good.append("SHA256SUMS: %d files" % len(listed))

    if key is None:
        keys_txt = ev / "station-keys.txt"
        for line in keys_txt.read_text("utf-8").splitlines() if keys_txt.is_file() else []:
            if line.startswith("signer: "):
                key = line.split(": ", 1)[1].strip()
                break
    try:
        from nacl.exceptions import BadSignatureError
        from nacl.signing import VerifyKey
    except ImportError:
        print("PyNaCl is needed for the signature checks: pip install pynacl")
        return 2

    def load(name):
        data = (ev / name).read_bytes()
        try:
            obj = json.loads(data.decode("utf-8"))
        except ValueError as exc:
            bad.append("%s: not JSON (%s)" % (name, exc))
            return None
        if not isinstance(obj, dict):
            bad.append("%s: not a JSON object" % name)
            return None
        if data != canonical(obj) + b"\n":
            bad.append("%s: not exactly its canonical JSON plus one newline" % name)
        signer, sig = str(obj.get("signer")), str(obj.get("sig"))
        try:
            raw = base64.b64decode(signer[8:], validate=True)
            if not signer.startswith("ed25519:") or len(raw) != 32 or (
                    base64.b64encode(raw).decode() != signer[8:]):
                raise ValueError("signer is not an ed25519: key text")
            VerifyKey(raw).verify(canonical({k: v for k, v in obj.items() if k != "sig"}),
                                  base64.b64decode(sig, validate=True))
        except (BadSignatureError, ValueError, TypeError) as exc:
            bad.append("%s: signature does not verify (%s)" % (name, exc))
        if key is None or signer != key:
            bad.append("%s: signed by %s, not by the station key %s" % (name, signer, key))
        return obj

    prev, count, n_man, sealed, sid = "0" * 64, 0, 0, 0, None
    for path in sorted(ev.glob("seg-*.manifest.json")):
        seq = int(path.name[4:10])
        n_man += 1
        m = load(path.name)
        if m is None:
            prev, count = None, seq
            continue
        sid = sid or m.get("session")
        if m.get("seq") != seq or m.get("session") != sid:
            bad.append("%s: holds segment %r of session %r" % (path.name, m.get("seq"),
                                                               m.get("session")))
        if seq != count + 1:
            bad.append("segment %s: no manifest (the chain cannot be checked there)"
                       % (count + 1 if seq == count + 2 else "%d..%d" % (count + 1, seq - 1)))
        elif prev is not None and m.get("prev") != prev:
            bad.append("%s: prev is not the hash of the manifest before (chain broken)" % path.name)
        prev, count = hashlib.sha256(canonical(m)).hexdigest(), seq
        files = m.get("files") if isinstance(m.get("files"), dict) else {}
        for kind, f in sorted(files.items()):
            p = ev / ("seg-%06d.%s.drseg" % (seq, kind))
            if isinstance(f, dict) and p.is_file():
                sealed += 1
                if p.stat().st_size != f.get("size") or sha256_file(p) != f.get("sha256"):
                    bad.append("%s: SHA-256/size differ from the signed manifest" % p.name)
    good.append("%d segment manifest(s), %d sealed file(s) checked" % (n_man, sealed))
    if (ev / "session.json").is_file():
        s = load("session.json")
        if s is not None:
            if s.get("session") != (sid or s.get("session")):
                bad.append("session.json belongs to session %r" % s.get("session"))
            if s.get("segments") != count:
                bad.append("session.json closes %r segments, found %d" % (s.get("segments"), count))
            if s.get("last_hash") != (prev or "0" * 64):
                bad.append("session.json last_hash is not the hash of the last manifest")
            good.append("session.json closes the chain (end reason %s)" % s.get("end_reason"))
    else:
        print("NOTE: no session.json: the session was exported before it was closed; nothing "
              "signed says where it ends")
    fp = hashlib.sha256((key or "").encode("ascii")).hexdigest()[:32]
    print("station key: %s (fingerprint %s): confirm it with the site"
          % (key, " ".join(fp[i:i + 4] for i in range(0, 32, 4))))
    for g in good:
        print("ok:   " + g)
    for b in bad:
        print("FAIL: " + b)
    print("RESULT: " + ("all checks hold" if not bad else "%d problem(s)" % len(bad)))
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''
