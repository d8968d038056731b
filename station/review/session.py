"""One stored session opened for review: verify, then play, read its timeline, export.

``StoreSource`` (uploader.remote.RemoteSource) adapts a folder of central storage to the verifier's
:class:`~station.crypto.verify.SessionSource`. :class:`ReviewSession` ties together the verdict
(:func:`station.crypto.verify.verify_session`), the decrypting readers (identities of the
reviewer; :class:`~station.crypto.SealedReader` over :meth:`Store.open`, so plaintext stays in
memory), the timeline (segments, script-step and consent markers, operation-log events, pauses,
masked spans, QC spans) and the access audit.

Segments whose verdict is anything but ``ok`` or ``truncated`` are *refused*: the player shows a
gap there and never decodes them as if they were intact. A truncated segment plays up to its
last authenticated message.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from station import logs
from station.crypto.sealed import SealedReader, SealError
from station.crypto.session import MANIFEST_RE, SESSION_MANIFEST, seg_name
from station.crypto.verify import check_binding, verify_session
from station.errors import StationError
from station.review import qc as qcmod
from station.review.audit import ReviewAudit
from station.review.player import Player, SegmentRef
from uploader.remote import RemoteSource as StoreSource

log = logs.get("review")

PLAYABLE = ("ok", "truncated")


class NotVerified(StationError, RuntimeError):
    """session {} must be verified before it is played"""


class NothingPlayable(StationError, RuntimeError):
    """session {} has no segment that passed verification: {}"""


@dataclass
class TimelineItem:
    """Something on the timeline: kind is segment | marker | event | pause | gap | masked | pending | qc.

    ``masked`` is a value the masker hid (detail: the ledger span of :meth:`ReviewSession.mask_spans`);
    ``pending`` is an area masked because OCR had not read it yet (an evidence gap, not a value)."""

    kind: str
    start_s: float
    end_s: float
    label: str
    detail: dict[str, Any]


def _ms_pair(entry: dict[str, Any]) -> tuple[float, float] | None:
    for a, b in (("start_pts_ms", "end_pts_ms"), ("start_ms", "end_ms"), ("t0_ms", "t1_ms"),
                 ("from_ms", "to_ms")):
        if isinstance(entry.get(a), (int, float)):
            end = entry.get(b)
            return entry[a] / 1000, (end if isinstance(end, (int, float)) else entry[a]) / 1000
    if isinstance(entry.get("t_ms"), (int, float)):
        return entry["t_ms"] / 1000, (entry["t_ms"] + float(entry.get("duration_ms", 0) or 0)) / 1000
    return None


class ReviewSession:
    """A session in storage opened by a reviewer. Call :meth:`verify` before :meth:`player`."""

    def __init__(self, store: Any, folder: str, identities: Sequence[Any], trusted: Iterable[str],
                 audit: ReviewAudit, session_id: str | None = None) -> None:
        self.store = store
        self.source = StoreSource(store, folder)
        self.folder = self.source.folder
        self.session_id = session_id or self.folder.rsplit("/", 1)[-1]
        self.identities = list(identities)
        self.trusted = list(trusted)
        self.audit = audit
        self.report: dict[str, Any] | None = None
        self._manifests: dict[int, dict[str, Any]] | None = None
        self._session_manifest: dict[str, Any] | None = None
        self._events: list[dict[str, Any]] | None = None
        self._masklog: list[dict[str, Any]] | None = None

    # --- verification ----------------------------------------------------------------------
    def open(self, reason: str | None = None) -> dict[str, Any]:
        """Audit the open, then verify; returns the verifier's report (see :meth:`verdict_rows`)."""
        self.audit.record("open", self.session_id, reason)
        return self.verify()

    def verify(self) -> dict[str, Any]:
        self.report = verify_session(self.source, self.trusted, self.session_id)
        return self.report

    @property
    def intact(self) -> bool:
        return bool(self.report and self.report["intact"])

    def verdict(self) -> str:
        """Catalog verdict word: intact, recovered, or the problem categories joined."""
        if self.report is None:
            return "unverified"
        if self.report["intact"]:
            return "intact"
        if self.report.get("verdict") == "recovered":  # complete up to a crash: its own word
            return "recovered"
        return "not-intact:" + ",".join(c for c in self.report["categories"] if c != "ok")

    def segment_status(self) -> dict[int, str]:
        if self.report is None:
            return {}
        return {s["seq"]: s["status"] for s in self.report["segments"]}

    def refused_segments(self) -> list[int]:
        return sorted(seq for seq, st in self.segment_status().items() if st not in PLAYABLE)

    # --- manifests -----------------------------------------------------------------------------
    def manifests(self) -> dict[int, dict[str, Any]]:
        if self._manifests is None:
            out: dict[int, dict[str, Any]] = {}
            for name in self.source.list():
                m = MANIFEST_RE.fullmatch(name)
                if m:
                    try:
                        out[int(m.group(1))] = json.loads(self.source.read_bytes(name))
                    except ValueError:
                        log.warning("%s: %s unreadable", self.session_id, name)
            self._manifests = out
        return self._manifests

    def session_manifest(self) -> dict[str, Any] | None:
        if self._session_manifest is None and SESSION_MANIFEST in self.source.list():
            try:
                self._session_manifest = json.loads(self.source.read_bytes(SESSION_MANIFEST))
            except ValueError:
                self._session_manifest = None
        return self._session_manifest

    def segment_refs(self) -> list[SegmentRef]:
        mans = self.manifests()
        seqs = sorted(mans)
        if self.report is not None:
            seqs = sorted(set(seqs) | {s["seq"] for s in self.report["segments"]})
        refs = []
        for i, seq in enumerate(seqs):
            man = mans.get(seq, {})
            stats = man.get("stats") or {}
            start = stats.get("start_pts_ms")
            start_s = float(start) / 1000 if isinstance(start, (int, float)) else -1.0
            dur = 0.0
            a, b = man.get("started_mono_ns"), man.get("ended_mono_ns")
            if isinstance(a, int) and isinstance(b, int) and b > a:
                dur = (b - a) / 1e9
            nxt = (mans.get(seqs[i + 1], {}).get("stats", {}).get("start_pts_ms")
                   if i + 1 < len(seqs) else None)
            if isinstance(nxt, (int, float)) and start_s >= 0:
                dur = nxt / 1000 - start_s
            lasts: list[float] = [v["last_pts_ms"] for v in (stats.get("streams") or {}).values()
                     if isinstance(v, dict) and isinstance(v.get("last_pts_ms"), (int, float))]
            if not (isinstance(nxt, (int, float)) and start_s >= 0) and lasts and start_s >= 0:
                dur = max(lasts) / 1000 - start_s + 0.04
            if isinstance(stats.get("duration_s"), (int, float)):
                dur = float(stats["duration_s"])
            refs.append(SegmentRef(seq, start_s, dur))
        return refs

    # --- decrypting readers ------------------------------------------------------------------
    def open_sealed(self, seq: int, kind: str) -> SealedReader:
        """A decrypting reader of one file, refused (MisplacedFile) if its authenticated header
        names another place than segment ``seq`` ``kind`` of this session."""
        raw = self.source.open(seg_name(seq, kind))
        try:
            rd = SealedReader(raw, self.identities, name=seg_name(seq, kind))
            rep = self.report or {}
            try:
                check_binding(seg_name(seq, kind), rd.header, station=rep.get("station"),
                              session=self.session_id, seq=seq, kind=kind)
            except SealError:
                rd.close()
                raise
            return rd
        except BaseException:
            raw.close()
            raise

    def _open_media(self, seq: int) -> BinaryIO:
        if self.report is None:
            raise NotVerified(self.session_id)
        if seq in self.refused_segments():
            raise SealError(f"segment {seq} failed verification and is not played")
        reader: BinaryIO = self.open_sealed(seq, "media")  # type: ignore[assignment]
        return reader

    def player(self, reason: str | None = None, audit: bool = True) -> Player:
        """The playback engine over the verified segments (refused ones play as gaps)."""
        if self.report is None:
            raise NotVerified(self.session_id)
        refs = self.segment_refs()
        refused = set(self.refused_segments())
        if not [r for r in refs if r.seq not in refused]:
            details = "; ".join(p["detail"] for p in self.report["problems"][:3])
            raise NothingPlayable(self.session_id, details)
        if audit:
            self.audit.record("play", self.session_id, reason,
                              refused_segments=",".join(map(str, sorted(refused))))
        p = Player(self._open_media, refs)
        for seq in refused:
            p.refuse(seq)
        return p

    def _jsonl(self, kind: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        names = set(self.source.list())
        refused = set(self.refused_segments()) if self.report else set()
        for seq in sorted(self.manifests()):
            if seq in refused or seg_name(seq, kind) not in names:
                continue
            try:
                with self.open_sealed(seq, kind) as r:
                    data = r.read()
            except SealError as exc:
                if getattr(exc, "args", None) and "truncated" in str(exc):
                    log.warning("%s seg %s %s: %s", self.session_id, seq, kind, exc)
                    continue
                raise
            for line in data.splitlines():
                if line.strip():
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(ev, dict):
                        ev.setdefault("_seq", seq)
                        out.append(ev)
        return out

    def events(self) -> list[dict[str, Any]]:
        """Operation-log events of the playable segments (decrypted in memory), in time order."""
        if self._events is None:
            self._events = sorted(self._jsonl("oplog"), key=lambda e: float(e.get("t_ms", 0) or 0))
        return self._events

    def mask_entries(self) -> list[dict[str, Any]]:
        """The masking ledger records of the playable segments, as sealed (decrypted in memory)."""
        if self._masklog is None:
            self._masklog = self._jsonl("masklog")
        return self._masklog

    def mono_t0_ns(self) -> int | None:
        """The recorder's session origin on the monotonic clock (pts 0), estimated.

        Ledger records carry raw monotonic capture times (``start_ns``/``end_ns``); the manifests
        give each segment's ``started_mono_ns`` (when its sealed files were opened) and its
        ``start_pts_ms``; the first segment's difference is taken. Its files are opened just
        before the recording's gate (the encoders' set-up, tens of ms), so the estimate is early by
        that much; later segments are opened after the frame that starts them, as late as the
        pipeline's queue, and are used only when the first has no such fields. Recordings since
        2026-12-07 carry the exact origin in ``meta.mono_t0_ns``; it is used when present."""
        for _seq, man in sorted(self.manifests().items()):
            exact = (man.get("meta") or {}).get("mono_t0_ns")
            if isinstance(exact, int) and not isinstance(exact, bool):
                return exact
        for _seq, man in sorted(self.manifests().items()):
            a = man.get("started_mono_ns")
            st = (man.get("stats") or {}).get("start_pts_ms")
            if isinstance(a, int) and isinstance(st, (int, float)) and not isinstance(st, bool):
                return a - int(st * 1_000_000)
        return None

    def screen_info(self) -> dict[str, Any]:
        """What the manifests say of the screen source (``width``, ``height``, ``fps``), or {}."""
        for _seq, man in sorted(self.manifests().items()):
            src = ((man.get("meta") or {}).get("sources") or {}).get("screen")
            if isinstance(src, dict):
                return {k: src[k] for k in ("width", "height", "fps")
                        if isinstance(src.get(k), (int, float)) and not isinstance(src.get(k), bool)}
        return {}

    def mask_spans(self) -> list[dict[str, Any]]:
        """The ledger records in session time: ``rule``, ``box`` [x0, y0, x1, y1] in screen-frame
        pixels, ``start_s``/``end_s`` (capture times of the first and last frame masked),
        ``frames``, and ``pending`` (a line not yet read by OCR, masked fail-closed: the evidence
        has a gap there, not a protected value). Records in ms (``start_ms``...) are taken as they
        are; records in monotonic ns are placed with :meth:`mono_t0_ns`."""
        out: list[dict[str, Any]] = []
        t0: int | None = None
        for entry in self.mask_entries():
            span = _ms_pair(entry)
            if span is None and isinstance(entry.get("start_ns"), int):
                if t0 is None:
                    t0 = self.mono_t0_ns()
                    if t0 is None:
                        log.warning("%s: masking ledger in ns but no manifest gives the session "
                                    "origin; ledger not placed on the timeline", self.session_id)
                        return out
                a: int = entry["start_ns"]
                end = entry.get("end_ns")
                b: int = end if isinstance(end, int) else a
                span = ((a - t0) / 1e9, (b - t0) / 1e9)
            if span is None:
                continue
            box = entry.get("box")
            if not (isinstance(box, list) and len(box) == 4
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
                box = None
            rule = str(entry.get("rule", "masked"))
            out.append({"rule": rule, "box": box, "start_s": span[0], "end_s": max(span),
                        "frames": entry.get("frames"), "pending": rule in qcmod.PENDING_RULES,
                        "value_hash": entry.get("value_hash")})
        return sorted(out, key=lambda m: (m["start_s"], m["end_s"]))

    # --- timeline ------------------------------------------------------------------------------
    def timeline(self, qc_report: qcmod.QcReport | None = None) -> list[TimelineItem]:
        items: list[TimelineItem] = []
        status = self.segment_status()
        refs = self.segment_refs()
        t = 0.0
        for r in refs:
            start = r.start_s if r.start_s >= 0 else t
            t = start + r.duration_s
            items.append(TimelineItem("segment", start, t, f"segment {r.seq}",
                                      {"seq": r.seq, "status": status.get(r.seq, "unverified")}))
        for ev in self.events():
            at = float(ev.get("t_ms", 0) or 0) / 1000
            kind = qcmod.event_kind(ev)
            step = qcmod.step_name(ev)
            if step or kind in qcmod.CONSENT_KINDS or ev.get("kind") == "marker":
                label = (f"step: {step}" if step else f"consent: {ev.get('label', '')}"
                         if kind in qcmod.CONSENT_KINDS else f"{kind}: {ev.get('label', '')}")
                items.append(TimelineItem("marker", at, at, label, ev))
            else:
                items.append(TimelineItem("event", at, at, kind, ev))
        for _seq, man in sorted(self.manifests().items()):
            for gap in (man.get("stats") or {}).get("gaps") or man.get("gaps") or []:
                if isinstance(gap, dict):
                    span = _ms_pair(gap)
                    if span:
                        items.append(TimelineItem("pause" if gap.get("kind") == "pause" else "gap",
                                                  span[0], span[1], str(gap.get("kind", "gap")), gap))
        for m in self.mask_spans():  # not-yet-read lines (evidence gaps) on their own row
            items.append(TimelineItem("pending" if m["pending"] else "masked", m["start_s"], m["end_s"],
                                      m["rule"], m))
        if qc_report is not None:
            for sp in qc_report.spans:
                items.append(TimelineItem("qc", sp.start_s, sp.end_s, sp.flag, {"flag": sp.flag}))
        return sorted(items, key=lambda i: (i.start_s, i.kind))

    def markers(self) -> list[TimelineItem]:
        return [i for i in self.timeline() if i.kind == "marker"]

    # --- QC ------------------------------------------------------------------------------------
    def recipients(self, candidates: Iterable[Any] = ()) -> list[bytes]:
        """Public keys of the session's recipients that this reviewer knows.

        Sealed headers name recipients by fingerprint only; the keys are found among
        ``candidates`` (the policy's ``crypto.recipients``) and the reviewer's own identities."""
        from station.crypto.sealed import _as_public, recipient_fingerprint

        pubs = [bytes(i.public_key) for i in self.identities]
        for c in candidates:
            try:
                pubs.append(_as_public(c))
            except (TypeError, ValueError):
                continue
        for seq in sorted(self.manifests()):
            try:
                with self.open_sealed(seq, "media") as r:
                    fps = {e["fp"] for e in r.header["recipients"]}
            except SealError:
                continue
            return list(dict.fromkeys(p for p in pubs if recipient_fingerprint(p) in fps))
        return []

    # --- export --------------------------------------------------------------------------------
    def export(self, out_dir: Path, reason: str | None, ctx: Any = None,
               identity_paths: Sequence[Path] = (), allow_incomplete: bool = False) -> dict[str, Any]:
        """Decrypt the verified segments to ``out_dir`` for a legal hand-over (audited; needs a reason).

        With a :class:`~station.context.Context` this runs ``station export`` itself (same files,
        same local audit lines, same result: ``warnings``, ``skipped``, ``notes``,
        ``session_mkv``) over this stored session as storage holds it now; the identities come from ``identity_paths``
        or the keyring, as for the command. A session without ``session.json`` is refused
        (``UsageError`` naming ``--allow-incomplete``) unless ``allow_incomplete``, which the
        caller must have confirmed with the reviewer; the audit record says so. Without a
        context (tests of the review side alone) it writes ``seg-NNNNNN.mkv``, ``oplog.jsonl``
        and ``verify.json``."""
        extra = {"allow_incomplete": True} if allow_incomplete else {}
        self.audit.record("export", self.session_id, reason, out=str(out_dir), **extra)
        if ctx is not None:
            import argparse

            from station.cmd import export as export_cmd

            ns = argparse.Namespace(session_id=self.session_id, identity=[str(p) for p in identity_paths],
                                    out=str(out_dir), reason=reason, reviewer=self.audit.reviewer,
                                    allow_damaged=False, allow_incomplete=allow_incomplete,
                                    trust=self.trusted, no_concat=False,
                                    # listed afresh: the export verifies what storage holds now,
                                    # not the listing of when the session was opened
                                    review_source=StoreSource(self.store, self.folder))
            try:
                result: dict[str, Any] = export_cmd.run(ns, ctx)
            except Exception as exc:  # the "export" record said it was attempted: say it failed
                self.audit.record("export-failed", self.session_id, reason, out=str(out_dir),
                                  error=f"{type(exc).__name__}: {exc}")
                raise
            return result
        if self.report is None:
            self.verify()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        written = []
        for ref in self.segment_refs():
            if ref.seq in self.refused_segments():
                continue
            path = out_dir / f"seg-{ref.seq:06d}.mkv"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh, self.open_sealed(ref.seq, "media") as r:
                for msg in r.messages():
                    fh.write(msg)
            written.append(path.name)
        ev_path = out_dir / "oplog.jsonl"
        with open(ev_path, "x", encoding="utf-8") as fh:
            for ev in self.events():
                fh.write(json.dumps({k: v for k, v in ev.items() if k != "_seq"}, ensure_ascii=False) + "\n")
        written.append(ev_path.name)
        (out_dir / "verify.json").write_text(json.dumps(self.report, ensure_ascii=False, indent=2))
        written.append("verify.json")
        return {"session": self.session_id, "out": str(out_dir), "files": written,
                "refused_segments": self.refused_segments(),
                "exported_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


def _review_source(args: Any, ctx: Any, sid: str) -> Any:
    """``station export`` source hook: the stored session the review window has open."""
    return getattr(args, "review_source", None)


def _register_export_source() -> None:
    from station.cmd import verify as verify_cmd

    if _review_source not in verify_cmd.SOURCES:
        verify_cmd.SOURCES.insert(0, _review_source)


_register_export_source()
