"""Session flow: what the agent (or the CTI over the local API) does with one recording.

::

    IDLE --start--> CONSENT --agree--> RECORDING <--pause(reason)/resume--> PAUSED
                       |                   |                                  |
                       +--refuse--> STOPPED(consent-refused)   stop ------> STOPPED(code)

* ``start`` opens a recording session at once: the consent notice is read out on the record.
  With ``session.consent_required = false`` the flow goes straight to RECORDING.
* ``agree``/``refuse`` become ``consent`` markers; a refusal ends the session with
  :attr:`~station.errors.StopCode.CONSENT_REFUSED`.
* Each script step from ``session.script_steps`` that the agent ticks becomes a ``script_step``
  marker (in any order; ticking twice is refused).
* ``pause`` needs a reason; the recording session masks the screen and applies the audio policy.
* A session that ends by itself (device lost, disk full ...) moves the flow to STOPPED with its
  code and tells the listeners ``stopped_unexpectedly``.

The flow is thread-safe: the UI thread, the local API's threads and the recording's worker
threads call into it. Listeners are called on the calling thread; the UI adapter
(``ui/bridge.py``) turns them into queued Qt signals.

Listener events (``listener(name, data)``):
    ``state_changed``: data is :meth:`SessionFlow.snapshot`.
    ``warning``: ``{"kind", "active", "since_s"}`` a live warning began or ended.
    ``stopped_unexpectedly``: ``{"session_id", "code", "error"}``.
"""

from __future__ import annotations

import enum
import getpass
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from station import logs
from station.errors import StationError, StopCode
from station.policy import Policy
from station.shield import Customer, redact

log = logs.get("session")


class FlowState(enum.StrEnum):
    IDLE = "idle"
    CONSENT = "consent"
    RECORDING = "recording"
    PAUSED = "paused"
    STOPPED = "stopped"


class FlowError(StationError, RuntimeError):
    """{}"""

    http_status = 409


class NotAllowed(FlowError):
    """cannot {} while the session is {}"""


class BadRequest(StationError, ValueError):
    """{}"""

    http_status = 400


class UnknownSession(FlowError):
    """no session {!r} (the current one is {!r})"""

    http_status = 404


class RecordingLike(Protocol):
    """What the flow needs of ``station.recording.RecordingSession``."""

    session_id: str

    def start(self) -> Any: ...
    def pause(self, reason: str) -> Any: ...
    def resume(self) -> Any: ...
    def marker(self, kind: str, label: str, **fields: Any) -> Any: ...
    def stop(self, code: StopCode) -> Any: ...
    def health(self) -> Any: ...


SessionFactory = Callable[..., RecordingLike]
Listener = Callable[[str, dict[str, Any]], None]


def os_agent() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


@dataclass
class _Current:
    session: RecordingLike
    session_id: str
    agent: str
    customer: Customer
    business_ref: str
    started_ns: int
    steps_done: list[str] = field(default_factory=list)
    pause_reason: str = ""
    paused_ns: int = 0
    paused_total_ns: int = 0


class SessionFlow:
    """One seat's session flow around a recording-session factory."""

    def __init__(self, policy: Policy, factory: SessionFactory, *, agent: str | None = None,
                 audit: logs.AuditLog | None = None,
                 monotonic_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.policy = policy
        self.factory = factory
        self.default_agent = agent or os_agent()
        self.audit = audit
        self._now = monotonic_ns
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self.state = FlowState.IDLE
        self.cur: _Current | None = None
        self.last_session_id = ""
        self.stop_code: StopCode | str | None = None
        self.stop_error = ""
        self.last_summary: Any = None
        self._stopping = False
        self._resume_to = FlowState.RECORDING  # consent or recording: where a pause returns to
        self.warnings: dict[str, float] = {}  # active live warnings -> seconds since they began
        self.health: dict[str, Any] = {}

    # --- listeners ---------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _notify(self, name: str, data: dict[str, Any]) -> None:
        for fn in list(self._listeners):
            try:
                fn(name, data)
            except Exception:
                log.exception("flow listener failed on %s", name)

    def _changed(self) -> None:
        self._notify("state_changed", self.snapshot())

    # --- queries -----------------------------------------------------------------------------
    @property
    def steps(self) -> list[str]:
        return list(self.policy.session.script_steps)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            c = self.cur
            out: dict[str, Any] = {
                "state": str(self.state), "session_id": c.session_id if c else self.last_session_id,
                "agent": c.agent if c else self.default_agent,
                "customer": c.customer.masked if c else {},
                "customer_display": c.customer.display() if c else "",
                "business_ref": c.business_ref if c else "",
                "elapsed_s": 0.0, "pause_reason": "", "steps": self.steps,
                "steps_done": list(c.steps_done) if c else [],
                "stop_code": str(self.stop_code) if self.stop_code else None,
                "stop_error": self.stop_error, "warnings": sorted(self.warnings),
                "consent_text": self.policy.session.consent_text,
            }
            if c:
                now = self._now()
                out["elapsed_s"] = round((now - c.started_ns) / 1e9, 3)
                out["pause_reason"] = c.pause_reason
            return out

    def _require(self, action: str, *states: FlowState) -> _Current:
        if self.state not in states or self.cur is None:
            raise NotAllowed(action, self.state)
        return self.cur

    def _check_id(self, session_id: str | None) -> None:
        current = self.cur.session_id if self.cur else None
        if session_id is not None and session_id != current:
            if current is None and session_id == self.last_session_id:
                raise NotAllowed(f"change session {session_id}", "stopped")
            raise UnknownSession(session_id, current)

    # --- actions -----------------------------------------------------------------------------
    def start(self, *, customer: Customer | None = None, business_ref: str = "", agent: str = "",
              source: str = "ui") -> str:
        """Open a recording session; returns its id. Refused while one is running."""
        with self._lock:
            if self.state not in (FlowState.IDLE, FlowState.STOPPED):
                raise NotAllowed("start a session", self.state)
            customer = customer or Customer({}, "")
            business_ref = redact(business_ref.strip())[:128]
            if self.policy.station.agent_source == "cti" and agent:
                who = agent
            else:
                who = self.default_agent
            session = self.factory(agent=who, customer=customer if customer.masked else None,
                                   business_ref=business_ref or None, on_event=self._on_session_event)
            self._stopping = False
            session.start()
            sid = str(session.session_id)
            self.cur = _Current(session, sid, who, customer, business_ref, self._now())
            self.stop_code, self.stop_error, self.last_summary = None, "", None
            self.warnings, self.health = {}, {}
            self._emit("session_opened", source=source)
            if self.policy.session.consent_required:
                self.state = FlowState.CONSENT
                self._emit("consent_requested")
            else:
                self.state = FlowState.RECORDING
            if self.audit:
                self.audit.append("session_started", session_id=sid, agent=who, source=source)
            log.info("session %s started by %s (%s)", sid, who, source)
        self._changed()
        return sid

    def agree(self) -> None:
        with self._lock:
            c = self._require("confirm consent", FlowState.CONSENT)
            c.session.marker("consent", "agreed")
            self.state = FlowState.RECORDING
        self._changed()

    def refuse(self) -> Any:
        with self._lock:
            c = self._require("record a refusal", FlowState.CONSENT)
            c.session.marker("consent", "refused")
            return self._stop(StopCode.CONSENT_REFUSED)

    def tick(self, step: str) -> None:
        with self._lock:
            c = self._require("tick a script step", FlowState.RECORDING)
            if step not in self.steps:
                raise BadRequest(f"unknown script step {step!r}; steps: {', '.join(self.steps)}")
            if step in c.steps_done:
                raise NotAllowed(f"tick {step!r} twice", "already past it")
            c.session.marker("script_step", step, index=self.steps.index(step) + 1)
            c.steps_done.append(step)
        self._changed()

    def marker(self, kind: str, label: str = "", session_id: str | None = None, **fields: Any) -> None:
        """A marker from outside (API, CLI). Free text passes through the PII detectors."""
        with self._lock:
            self._check_id(session_id)
            c = self._require("add a marker", FlowState.CONSENT, FlowState.RECORDING, FlowState.PAUSED)
            clean = {k: redact(v) if isinstance(v, str) else v for k, v in fields.items()}
            c.session.marker(kind, redact(label), **clean)

    def pause(self, reason: str, session_id: str | None = None) -> None:
        reason = " ".join((reason or "").split())
        with self._lock:
            self._check_id(session_id)
            c = self._require("pause", FlowState.RECORDING, FlowState.CONSENT)
            if not reason:
                raise BadRequest("a pause needs a reason")
            reason = redact(reason)[:200]
            c.session.pause(reason)
            c.pause_reason, c.paused_ns = reason, self._now()
            self.warnings = {}  # live warnings do not apply while paused; they restart on resume
            self._resume_to = self.state
            self.state = FlowState.PAUSED
        self._changed()

    def resume(self, session_id: str | None = None) -> None:
        with self._lock:
            self._check_id(session_id)
            c = self._require("resume", FlowState.PAUSED)
            c.session.resume()
            c.paused_total_ns += self._now() - c.paused_ns
            c.pause_reason = ""
            self.state = self._resume_to
        self._changed()

    def stop(self, code: StopCode = StopCode.NORMAL, session_id: str | None = None) -> Any:
        with self._lock:
            self._check_id(session_id)
            self._require("stop", FlowState.CONSENT, FlowState.RECORDING, FlowState.PAUSED)
            return self._stop(code)

    def _stop(self, code: StopCode) -> Any:
        c = self.cur
        assert c is not None
        self._stopping = True
        try:
            summary = c.session.stop(code)
        finally:
            self._finish(code)
        self.last_summary = summary
        self._changed()
        return summary

    def _finish(self, code: StopCode | str, error: str = "") -> None:
        c = self.cur
        if c is None:
            return
        self.last_session_id = c.session_id
        self.stop_code, self.stop_error = code, error
        self.state = FlowState.STOPPED
        self.cur = None
        if self.audit:
            self.audit.append("session_stopped", session_id=c.session_id, code=str(code))
        log.info("session %s stopped: %s %s", c.session_id, code, error)

    def _emit(self, kind: str, **fields: Any) -> None:
        """Write an operation-log event into the current session."""
        c = self.cur  # one read: another thread may end the session meanwhile
        if c is None:
            return
        emit = getattr(c.session, "emit", None)
        try:
            if callable(emit):
                emit(kind, **fields)
            else:
                c.session.marker(kind, kind, **fields)
        except Exception:
            log.exception("could not write %s to the operation log", kind)

    def oplog(self, kind: str, **fields: Any) -> None:
        """Operation-log events from the desktop watcher; dropped when no session records.

        Lock-free on purpose: the event is stamped when it is written, so it must not wait for
        a slow flow action (opening devices, sealing at stop); the recording session's own
        operation log is thread-safe."""
        if self.state in (FlowState.CONSENT, FlowState.RECORDING, FlowState.PAUSED):
            self._emit(kind, **fields)

    # --- events from the recording's worker threads ------------------------------------------
    def _on_session_event(self, name: str, data: Any) -> None:
        """Called on the recording's worker threads: never block them on the flow's lock (the
        flow may be inside ``session.stop()`` joining that very thread)."""
        data = data if isinstance(data, dict) else {"value": data}
        code = data.get("code") or data.get("stop_code")
        # any end the flow did not ask for (device lost, disk full, even a normal end such as
        # session.max_minutes) must reach the agent: the flow no longer records
        if name in ("stopped", "failed", "error") and code:
            if self._stopping:
                return
            err = str(data.get("error") or data.get("message") or "")
            threading.Thread(target=self._stopped_by_itself, args=(str(code), err),
                             name="flow-unexpected-stop", daemon=True).start()
        else:
            self._notify("session_event", {"name": name, "data": data})

    def _stopped_by_itself(self, code: str, err: str) -> None:
        with self._lock:
            if self._stopping or self.cur is None:
                return
            self._stopping = True
            sid = self.cur.session_id
            try:
                stop_code: StopCode | str = StopCode(code)
            except ValueError:
                stop_code = code
            try:
                self.last_summary = self.cur.session.stop(stop_code)  # type: ignore[arg-type]
            except Exception:
                log.debug("stop after an unexpected end raised", exc_info=True)
            self._finish(stop_code, err)
        log.warning("session %s stopped unexpectedly: %s %s", sid, code, err)
        self._notify("stopped_unexpectedly", {"session_id": sid, "code": code, "error": err})
        self._changed()

    # --- live warnings -----------------------------------------------------------------------
    def check_health(self, watch: HealthWatch) -> list[tuple[str, bool]]:
        """Poll the recording's health once and update the live warnings (call a few times a
        second). Returns the warnings that began (True) or ended (False)."""
        with self._lock:
            c = self.cur
            if c is None or self.state not in (FlowState.CONSENT, FlowState.RECORDING):
                watch.rest()
                return []
            session = c.session
        try:
            health = session.health() or {}
        except Exception as exc:
            health = {"errors": [str(exc)]}
        changes = watch.update(health if isinstance(health, dict) else vars(health), self._now())
        with self._lock:
            self.health = watch.summary
            for kind, active in changes:
                if active:
                    self.warnings[kind] = 0.0
                else:
                    self.warnings.pop(kind, None)
                self._emit("warning", warning=kind, active=active)
        self._notify("health", {**(health if isinstance(health, dict) else {}), "summary": watch.summary})
        for kind, active in changes:
            self._notify("warning", {"kind": kind, "active": active})
        if changes:
            self._changed()
        return changes


class HealthWatch:
    """Live warnings from a recording's health, cheap enough to run all day.

    * ``no_face``: the camera thumbnail shows no face (OpenCV Haar cascade) for ``no_face_s``;
    * ``camera_black``: the camera is black or covered (dark and flat) for 2 s;
    * ``mic_silent``: the microphone level stays below ``silence_dbfs`` for ``silence_s``;
    * ``device_lost``: the recording reports an error or a stream stops delivering frames.
    """

    BLACK_MEAN = 18.0
    FLAT_STD = 6.0

    def __init__(self, no_face_s: float = 20, silence_s: float = 30, silence_dbfs: float = -50,
                 black_s: float = 2.0, stall_s: float = 3.0) -> None:
        self.limits_s = {"no_face": no_face_s, "camera_black": black_s, "mic_silent": silence_s,
                         "device_lost": 0.0}
        self.silence_dbfs = silence_dbfs
        self.stall_s = stall_s
        self._since: dict[str, int] = {}
        self.active: set[str] = set()
        self.summary: dict[str, Any] = {}
        self._frames: dict[str, tuple[int, int]] = {}
        self._cascade: Any = None

    @classmethod
    def from_policy(cls, policy: Policy) -> HealthWatch:
        return cls(no_face_s=policy.ui.warn_no_face_s, silence_s=policy.ui.warn_silence_s)

    def _faces(self, thumb: Any) -> int:
        import cv2

        if self._cascade is None:
            self._cascade = cv2.CascadeClassifier(cv2.data.haarcascades  # type: ignore[attr-defined]
                                                  + "haarcascade_frontalface_default.xml")
        gray = cv2.cvtColor(thumb, cv2.COLOR_BGR2GRAY) if thumb.ndim == 3 else thumb
        if gray.shape[1] > 320:
            scale = 320 / gray.shape[1]
            gray = cv2.resize(gray, (320, int(gray.shape[0] * scale)))
        found = self._cascade.detectMultiScale(gray, scaleFactor=1.2, minNeighbors=4, minSize=(24, 24))
        return len(found)

    def rest(self) -> None:
        """Not recording (paused, stopped): warnings and their clocks restart on resume."""
        self._frames.clear()
        self._since.clear()
        self.active.clear()

    def update(self, health: dict[str, Any], now_ns: int) -> list[tuple[str, bool]]:
        raw: dict[str, bool] = {}
        thumb = health.get("camera_thumbnail", health.get("camera_thumb"))
        summary: dict[str, Any] = {}
        if thumb is not None and int(getattr(thumb, "size", 0)):
            mean, std = float(thumb.mean()), float(thumb.std())
            black = mean < self.BLACK_MEAN or std < self.FLAT_STD
            raw["camera_black"] = black
            summary.update(camera_mean=round(mean, 1))
            if not black:  # a black camera is its own warning; the face clock keeps running
                faces = self._faces(thumb)
                raw["no_face"] = faces == 0
                summary["faces"] = faces
        level = health.get("mic_dbfs", health.get("mic_level_dbfs"))
        if level is not None:
            raw["mic_silent"] = float(level) < self.silence_dbfs
            summary["mic_dbfs"] = float(level)
        lost = bool(health.get("errors"))
        for name, st in (health.get("streams") or {}).items():
            st = st if isinstance(st, dict) else {}
            frames = int(st.get("captured", st.get("frames", 0)) or 0)
            prev = self._frames.get(name)
            if prev is None or frames != prev[0]:
                self._frames[name] = (frames, now_ns)
            elif (now_ns - prev[1]) / 1e9 > self.stall_s:
                lost = True
        raw["device_lost"] = lost
        summary["errors"] = list(health.get("errors") or [])
        self.summary = summary
        changes: list[tuple[str, bool]] = []
        for kind, bad in raw.items():
            if bad:
                since = self._since.setdefault(kind, now_ns)
                if kind not in self.active and (now_ns - since) / 1e9 >= self.limits_s[kind]:
                    self.active.add(kind)
                    changes.append((kind, True))
            else:
                self._since.pop(kind, None)
                if kind in self.active:
                    self.active.discard(kind)
                    changes.append((kind, False))
        return changes


class FakeRecording:
    """A recording session that records nothing but behaves like one (same methods, same
    events): for flow and UI tests and for screenshots. ``events`` lists what it was told."""

    _n = 0

    def __init__(self, ctx: Any = None, *, agent: str | None = None, customer: Any = None,
                 business_ref: str | None = None, on_event: Callable[[str, Any], None] | None = None,
                 **_: Any) -> None:
        FakeRecording._n += 1
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.session_id = f"{stamp}-{os.getpid() & 0xFFFF:04x}{FakeRecording._n:04x}"
        self.agent, self.customer, self.business_ref = agent, customer, business_ref
        self.on_event = on_event
        self.state = "new"
        self.stop_code: StopCode | None = None
        self.events: list[tuple[str, Any]] = []
        self.next_health: dict[str, Any] = {"errors": []}

    def start(self) -> None:
        self.state = "recording"
        self.events.append(("start", None))

    def pause(self, reason: str) -> None:
        self.state = "paused"
        self.events.append(("pause", reason))

    def resume(self) -> None:
        self.state = "recording"
        self.events.append(("resume", None))

    def marker(self, kind: str, label: str, **fields: Any) -> None:
        self.events.append(("marker", {"kind": kind, "label": label, **fields}))

    def emit(self, kind: str, **fields: Any) -> None:
        self.events.append(("oplog", {"kind": kind, **fields}))

    def stop(self, code: StopCode = StopCode.NORMAL) -> dict[str, Any]:
        if self.stop_code is None:
            self.state, self.stop_code = "stopped", code
            self.events.append(("stop", str(code)))
        return {"session_id": self.session_id, "stop_code": str(self.stop_code), "segments": 0}

    def health(self) -> dict[str, Any]:
        return self.next_health

    def fail(self, code: StopCode, error: str) -> None:
        """Act as a worker thread that lost its device: report the end through on_event."""
        def run() -> None:
            if self.on_event:
                self.on_event("stopped", {"code": str(code), "error": error})
        t = threading.Thread(target=run)
        t.start()
        t.join()
