"""RecordingSession: the composition from policy -> sources -> pipeline -> SessionSealer.

Used by ``station record`` and by the agent UI (through ``station.flow``). One object records
one session::

    rec = RecordingSession(ctx, agent="a123", on_event=callback)
    rec.start(); rec.marker("step", "risk_disclosure_read"); rec.pause("customer data"); ...
    summary = rec.stop()

``on_event(name, data)`` is called from worker threads: ``started``, ``paused``, ``resumed``,
``marker``, ``segment`` (a sealed segment), ``stopped`` (``data["code"]`` is the stop code; a
code other than ``normal`` is an unexpected stop: device lost, disk full, encoder error).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from station import logs
from station.clock import Clock
from station.context import Context
from station.diskio import is_disk_full
from station.errors import DeviceLost, DiskFull, StationError, StopCode, UsageError

log = logs.get("session")

EventCallback = Callable[[str, dict[str, Any]], None]


class NoRecipients(StationError, LookupError):
    """no recipients: the policy must name at least one recipient key (crypto.recipients); {}"""


def new_session_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def folder_size_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):  # a file removed while we walk
                total += os.stat(os.path.join(root, f)).st_size
    return total


def check_disk(spool: Path, min_free_mb: int, quota_mb: int) -> tuple[bool, str, int]:
    """(ok, reason, free_mb): free space above the minimum and the spool within its quota."""
    free_mb = shutil.disk_usage(spool).free // (1 << 20)
    if free_mb < min_free_mb:
        return False, f"{free_mb} MiB free, policy spool.min_free_mb = {min_free_mb}", free_mb
    used_mb = folder_size_bytes(spool) / (1 << 20)
    if used_mb > quota_mb:
        return False, f"spool holds {used_mb:.0f} MiB, policy spool.quota_mb = {quota_mb}", free_mb
    return True, "", free_mb


class RecordingSession:
    """One recorded session (see the module docstring)."""

    def __init__(self, ctx: Context, *, fake_devices: bool = False, agent: str | None = None,
                 customer: Any = None, business_ref: str | None = None, camera: str | None = None,
                 mic: str | None = None, monitor: str | None = None,
                 on_event: EventCallback | None = None,
                 masker_factory: Callable[..., Any] | None = None) -> None:
        self.ctx = ctx
        self.policy = ctx.policy
        self.fake_devices = fake_devices
        self.agent = agent or _os_user()
        self.customer = customer
        # free text that may hold customer data: masked whichever path started the session (the
        # API and the window mask it too), and kept only in the sealed operation log; manifests
        # (in clear, on the seat and in storage) get its salted hash (business_ref_hash)
        self._business_ref_raw = " ".join((business_ref or "").split())
        if business_ref:
            from station.shield import redact

            business_ref = redact(business_ref.strip())[:128]
        self.business_ref = business_ref
        cap = self.policy.capture
        self.camera_src = cap.camera if camera is None else camera
        self.mic_device = cap.microphone if mic is None else mic
        self.monitor = cap.monitor if monitor is None else monitor
        self.on_event = on_event
        self.masker_factory = masker_factory
        self.session_id = new_session_id()
        self.session_dir = ctx.spool_dir / self.session_id
        self.state = "idle"
        self.stop_code: StopCode | None = None
        self.error: BaseException | None = None
        self.errors: list[str] = []
        self.summary: dict[str, Any] | None = None
        self.markers: list[dict[str, Any]] = []
        self.clock: Clock | None = None
        self.pipeline: Any = None
        self.sealer: Any = None
        self.oplog: Any = None
        self._lock = threading.RLock()
        self._finished = threading.Event()
        self._watch_stop = threading.Event()
        self._watch: threading.Thread | None = None
        self._free_mb = -1
        self._source_info: dict[str, Any] = {}

    # --- lifecycle ---------------------------------------------------------------------------
    def _emit_event(self, name: str, data: dict[str, Any]) -> None:
        if self.on_event is not None:
            try:
                self.on_event(name, data)
            except Exception as exc:  # a listener must not break recording
                log.warning("on_event(%s) failed: %s", name, exc)

    def _recipients(self) -> list[str]:
        recipients = list(self.policy.crypto.recipients)
        if not recipients:
            raise NoRecipients("create a reviewer key pair (`station keys recipient`) and add it "
                               "with `station policy init --recipient archive.pub`")
        return recipients

    def _business_ref_hash(self) -> str | None:
        if not self._business_ref_raw:
            return None
        from station.shield import business_ref_hash

        return business_ref_hash(self.ctx.secrets.customer_salt(), self._business_ref_raw)

    def _customer_meta(self) -> dict[str, Any] | None:
        c = self.customer
        if c is None:
            return None
        if hasattr(c, "as_manifest"):
            return dict(c.as_manifest())
        from station.shield import shield

        return dict(shield(c, self.ctx.secrets.customer_salt()).as_manifest())

    def _build_sources(self, clock: Clock) -> dict[str, Any]:
        from recorder import fake, sources

        cap = self.policy.capture
        if self.fake_devices:
            return {"screen": fake.FakeScreenSource(clock, fps=cap.screen_fps, width=cap.screen_width,
                                                    height=cap.screen_height),
                    "camera": None if self.camera_src == "" else fake.FakeCameraSource(
                        clock, fps=cap.camera_fps, width=cap.camera_width, height=cap.camera_height),
                    "microphone": fake.FakeMicrophoneSource(clock, rate_hz=cap.audio_rate_hz,
                                                            channels=cap.audio_channels)}
        return {"screen": sources.ScreenSource(clock, monitor=self.monitor, fps=cap.screen_fps,
                                               width=cap.screen_width, height=cap.screen_height,
                                               draw_cursor=cap.draw_cursor, on_change=self._device_event,
                                               # no masker needs BGRA: I420 from the grab on
                                               i420=not self.policy.masking.enabled),
                "camera": sources.CameraSource(clock, self.camera_src, width=cap.camera_width,
                                               height=cap.camera_height, fps=cap.camera_fps)
                if self.camera_src != "" else None,
                "microphone": sources.MicrophoneSource(
                    clock, self.mic_device or None, rate_hz=cap.audio_rate_hz, channels=cap.audio_channels)}

    def _device_event(self, kind: str, fields: dict[str, Any]) -> None:
        if self.oplog is not None:
            self.oplog.emit(kind, **fields)
        self._emit_event(kind, fields)

    def start(self) -> str:
        """Open the devices and the sealer and start recording; returns the session id."""
        from recorder.encoders import AudioSpec, VideoSpec
        from recorder.filters import make_screen_filter
        from recorder.pipeline import Pipeline, PipelineConfig
        from recorder.sources import OpLogSource
        from recorder.watermark import Watermark
        from station.crypto import SessionSealer
        from station.crypto.keys import require_signing_key
        from station.crypto.session import RESERVE_BYTES

        with self._lock:
            if self.state != "idle":
                raise UsageError(f"session {self.session_id} was already started")
            pol = self.policy
            recipients = self._recipients()
            signing_key = require_signing_key(self.ctx.secrets)
            self.ctx.ensure_dirs()
            ok, reason, self._free_mb = check_disk(self.ctx.spool_dir, pol.spool.min_free_mb,
                                                   pol.spool.quota_mb)
            if not ok:
                raise DiskFull(str(self.ctx.spool_dir), self._free_mb, reason)
            clock = self.clock = Clock()
            self.oplog = OpLogSource(clock)
            srcs = self._build_sources(clock)
            opened: list[Any] = []
            cap = pol.capture
            try:
                for s in srcs.values():  # open devices first: a missing device fails here, cleanly
                    if s is not None:
                        s.open()
                        opened.append(s)
            except BaseException:
                for s in opened:
                    s.stop()
                raise
            self._source_info = {n: dict(s.info) for n, s in srcs.items() if s is not None}
            meta: dict[str, Any] = {"agent": self.agent, "site": pol.station.site,
                                    "started_utc": clock.utc_iso(clock.t0_ns),
                                    "utc_at_t0_ns": clock.utc_at_t0_ns,
                                    # the session origin on the monotonic clock: masking ledger
                                    # times are on it (review places them exactly)
                                    "mono_t0_ns": clock.t0_ns,
                                    "business_ref_hash": self._business_ref_hash(),
                                    "profile": cap.profile,
                                    "fake_devices": self.fake_devices,
                                    "sources": self._source_info}
            cust = self._customer_meta()
            if cust is not None:
                # manifests are stored in clear in central storage: only the salted hash that links
                # sessions of one customer goes there; the masked forms stay in the sealed op log
                meta["customer"] = {"hash": cust.get("hash", "")}
            try:  # first thing on disk: the space to close the session out if the disk fills
                self.sealer = SessionSealer(self.session_dir, self.session_id, self.ctx.station_id,
                                            recipients, signing_key, meta,
                                            reserve_bytes=RESERVE_BYTES)
            except OSError as exc:
                for s in opened:
                    s.stop()
                if is_disk_full(exc):
                    raise DiskFull(str(self.ctx.spool_dir), self._free_mb,
                                   "no space left on the device; free some space or ask IT") from None
                raise
            screen_spec = VideoSpec(cap.screen_width, cap.screen_height, cap.screen_fps, cap.screen_crf,
                                    cap.video_preset, cap.keyframe_interval_s)
            camera_spec = VideoSpec(cap.camera_width, cap.camera_height, cap.camera_fps, cap.camera_crf,
                                    cap.video_preset, cap.keyframe_interval_s)
            audio_spec = AudioSpec(cap.audio_rate_hz, cap.audio_channels, cap.audio_codec)
            config = PipelineConfig(screen=screen_spec, camera=camera_spec, audio=audio_spec,
                                    segment_s=cap.segment_seconds, fragment_s=cap.fragment_seconds,
                                    queue_s=cap.queue_seconds, pause_audio=pol.session.pause_audio)
            screen_filter = make_screen_filter(pol, self.masker_factory, clock=clock,
                                               salt=self.ctx.secrets.customer_salt()) \
                if pol.masking.enabled else make_screen_filter(pol)
            watermark = Watermark(clock, self.ctx.station_id, self.agent) if cap.watermark else None
            self.pipeline = Pipeline(clock, config, self.sealer, screen=srcs["screen"],
                                     camera=srcs["camera"], microphone=srcs["microphone"],
                                     oplog=self.oplog, screen_filter=screen_filter, watermark=watermark,
                                     on_stopped=self._pipeline_stopped, on_segment=self._segment_done)
            self.oplog.emit("session_start", session_id=self.session_id, agent=self.agent,
                            business_ref=self.business_ref, customer=cust, sources=self._source_info)
            try:
                self.pipeline.start()
            except BaseException:
                self.sealer.finish(StopCode.DEVICE_LOST, {"error": "start failed"})
                raise
            self.state = "recording"
            self.ctx.audit.append("recording_started", session=self.session_id, agent=self.agent)
            self._watch = threading.Thread(target=self._watchdog, name="rec-watch", daemon=True)
            self._watch.start()
        self._emit_event("started", {"session_id": self.session_id})
        return self.session_id

    def pause(self, reason: str) -> None:
        with self._lock:
            if self.state != "recording":
                raise UsageError(f"cannot pause: session is {self.state}")
            self.oplog.emit("pause", reason=reason)
            self.pipeline.pause(reason)
            self.state = "paused"
        self._emit_event("paused", {"reason": reason})

    def resume(self) -> None:
        with self._lock:
            if self.state != "paused":
                raise UsageError(f"cannot resume: session is {self.state}")
            self.pipeline.resume()
            self.oplog.emit("resume")
            self.state = "recording"
        self._emit_event("resumed", {})

    def marker(self, kind: str, label: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            if self.state not in ("recording", "paused"):
                raise UsageError(f"cannot add a marker: session is {self.state}")
            ev = self.oplog.emit("marker", marker=kind, label=label, **fields)
            assert self.clock is not None
            rec = {"kind": kind, "label": label, "t_ms": (ev.capture_ns - self.clock.t0_ns) // 1_000_000,
                   "utc": self.clock.utc_iso(ev.capture_ns), **fields}
            self.markers.append(rec)
        self._emit_event("marker", rec)
        return rec

    def emit(self, kind: str, **fields: Any) -> None:
        """Operation-log events (desktop watcher, local API, consent) on the session clock."""
        if self.oplog is not None and self.state in ("recording", "paused"):
            self.oplog.emit(kind, **fields)

    def stop(self, code: StopCode = StopCode.NORMAL) -> dict[str, Any]:
        """Stop (idempotent), seal the last segment, write session.json; return the summary."""
        with self._lock:
            if self.state == "idle":
                raise UsageError("cannot stop: session was never started")
            if self.summary is not None:
                return self.summary
            if self.state != "stopped" and self.pipeline is not None and not self.pipeline.done.is_set():
                self.oplog.emit("session_stop", code=str(code))
                self.pipeline.request_stop(code)
        self._finished.wait(60)
        self._watch_stop.set()
        if self._watch is not None and self._watch is not threading.current_thread():
            self._watch.join(5)
        assert self.summary is not None, "pipeline did not finish within 60 s"
        return self.summary

    # --- worker-thread callbacks -------------------------------------------------------------
    def _segment_done(self, seq: int, manifest: dict[str, Any]) -> None:
        self._emit_event("segment", {"seq": seq, "session_id": self.session_id})

    def _pipeline_stopped(self, code: StopCode, error: BaseException | None) -> None:
        p = self.pipeline
        streams: dict[str, dict[str, Any]] = {}
        for name, tot in p.totals.items():
            d = tot.as_dict()
            d["frames"] = tot.encoded  # audio: samples
            d["dropped"] = p.queues[name].dropped
            d["dropped_full"] = p.queues[name].dropped_full
            d["dropped_late"] = p.queues[name].dropped_late
            streams[name] = d
        if "audio" in streams:
            mic = p.sources["audio"]
            streams["audio"].update(samples=p.totals["audio"].encoded,
                                    duration_s=round(p.totals["audio"].encoded / p.cfg.audio.rate_hz, 3),
                                    overflows=int(getattr(mic, "overflows", 0)),
                                    silence_inserted=p.audio_silence_inserted, trimmed=p.audio_trimmed,
                                    resets=p.audio_resets)
        if error is not None:
            self.errors.append(f"{type(error).__name__}: {error}")
        assert self.clock is not None
        summary = {"session_id": self.session_id, "session_dir": str(self.session_dir),
                   "stop_code": str(code), "segments": p.seq, "streams": streams,
                   # session.json is in clear: when and what kind of marker, never its label
                   # or fields (free text, in the sealed operation log)
                   "markers": [{k: m.get(k) for k in ("kind", "t_ms", "utc")} for m in self.markers],
                   "errors": list(self.errors),
                   "duration_s": round((min(p.end_ns, self.clock.now_ns()) - p.gate_ns) / 1e9, 3),
                   "start_pts_ms": (p.gate_ns - self.clock.t0_ns) // 1_000_000,
                   "sources": self._source_info}
        sealed = False
        try:
            self.sealer.finish(code, summary)
            sealed = True
        except Exception as exc:
            log.error("sealing the session manifest failed: %s", exc)
            summary["errors"].append(f"finish: {exc}")
        self.stop_code, self.error = code, error
        with self._lock:
            self.state = "stopped"
            self.summary = summary
        try:
            self.ctx.audit.append("recording_stopped", session=self.session_id, code=str(code),
                                  segments=p.seq, sealed=sealed)
        except Exception as exc:  # the recording is sealed; the audit line is best effort here
            log.error("audit: %s", exc)
        self._finished.set()
        self._emit_event("stopped", {"session_id": self.session_id, "code": str(code),
                                     "error": str(error) if error else ""})

    def _watchdog(self) -> None:
        """About once per second, off the capture threads: disk, quota, stalled microphone,
        session length."""
        pol = self.policy
        assert self.clock is not None
        max_ns = pol.session.max_minutes * 60 * 1_000_000_000
        while not self._watch_stop.wait(1.0):
            if self.pipeline.done.is_set():
                return
            try:
                ok, reason, self._free_mb = check_disk(self.ctx.spool_dir, pol.spool.min_free_mb,
                                                       pol.spool.quota_mb)
            except OSError as exc:
                ok, reason = False, str(exc)
            if not ok:
                log.error("disk: %s; stopping", reason)
                self.errors.append(f"disk: {reason}")
                self.oplog.emit("disk_full", detail=reason)
                self.pipeline.request_stop(StopCode.DISK_FULL, DiskFull(str(self.ctx.spool_dir),
                                                                       self._free_mb, reason))
                return
            mic = self.pipeline.sources.get("audio")
            now = self.clock.now_ns()
            if mic is not None and mic.captured and now - mic.last_capture_ns > 3_000_000_000:
                err = DeviceLost(getattr(mic, "device", None) or "microphone", "no audio for 3 s")
                self.pipeline.request_stop(StopCode.DEVICE_LOST, err)
                return
            if now - self.clock.t0_ns > max_ns:
                self.oplog.emit("max_duration_reached", minutes=pol.session.max_minutes)
                self.pipeline.request_stop(StopCode.NORMAL)
                return

    # --- status ------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        if self.pipeline is None:
            return {"state": self.state, "streams": {}, "errors": list(self.errors)}
        h: dict[str, Any] = self.pipeline.health()
        h.update(state=self.state, session_id=self.session_id, disk_free_mb=self._free_mb,
                 errors=list(self.errors), stop_code=str(self.stop_code) if self.stop_code else None)
        return h

    def recorded_s(self) -> float:
        """Seconds on every stream so far: from the pipeline's gate (0 before it opened)."""
        gate_ns: int = self.pipeline.gate_ns if self.pipeline is not None else 0
        if not gate_ns or self.clock is None:
            return 0.0
        return (self.clock.now_ns() - gate_ns) / 1e9

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the recording ended (by stop() or by itself)."""
        return self._finished.wait(timeout_s)


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
